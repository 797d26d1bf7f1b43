//! `bluewire bench fanout`: publish → delivered-at-every-subscriber throughput and latency
//! for one publisher and four (`--receivers`, up to 16) receiving nodes, all real processes
//! on loopback, plus the machine's raw hybrid (Ed25519 + ML-DSA-65) sign/verify rates
//! measured in the same run, so results read as a fraction of the signature bound (one
//! signature + one verification per receiver and message), and what each node counted per
//! phase (commits, context switches, CPU, stage timings).
//! A benchmark, not a test: it asserts nothing and is bounded in count and time.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use bluewire_node::client::Connection;
use bluewire_node::config::StoreSync;
use bluewire_node::provision::ConfigEdit;
use bluewire_node::signing::{self, MESSAGE_CONTEXT, SigningKey};
use bluewire_proto::v1 as pb;
use clap::Args;
use tokio::sync::Semaphore;

use super::{
    Arrivals, RECEIVERS, Workload, arrival_latencies, bench_orgs, free_text, note_arrival,
    own_cpu_seconds, paced_results, percentile, process_cpu_seconds, publish_stream,
    unlimited_client, wait_for_arrivals, work_dir,
};
use crate::Output;
use crate::local::LocalFederation;

#[derive(Debug, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub workload: Workload,
    /// Load this Cedar local policy on every node (to measure its cost).
    #[arg(long)]
    pub policy: Option<std::path::PathBuf>,
    /// How much of each signed envelope the subscribers' feed items carry: `none` (the
    /// decoded content and the node's verdict, what these subscribers read), `signature-once`
    /// (each batch signature once per stream), `whole`.
    #[arg(long, value_enum, default_value_t = FeedEnvelope::None)]
    pub feed_envelope: FeedEnvelope,
    /// Publish the throughput phase with one unary Publish call per message instead of one
    /// PublishStream.
    #[arg(long)]
    pub unary_publish: bool,
    /// Publish each paced phase on one PublishStream, each request sent at its paced time,
    /// instead of one unary Publish call per message (the default).
    #[arg(long)]
    pub paced_stream: bool,
    /// `[store] sync` on every node: `always` (fdatasync in every commit, the default) or
    /// `interval` (synced once a second, as NATS JetStream does by default).
    #[arg(long, value_enum, default_value_t = StoreSync::Always)]
    pub store_sync: StoreSync,
    /// `[delivery] linger_us` on every node: a publish that follows the previous one by less
    /// than this (µs), while another is in progress, waits this long for company at signing.
    /// Default: the node's (2000; 0 never waits).
    #[arg(long)]
    pub linger_us: Option<u64>,
}

/// `messages` publishes, `concurrency` in flight, one unary Publish call each.
async fn publish_unary(
    publisher: &Connection,
    messages: usize,
    concurrency: usize,
    request: &impl Fn() -> pb::PublishRequest,
) -> anyhow::Result<Vec<String>> {
    let sem = Arc::new(Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(messages);
    for _ in 0..messages {
        let permit = sem.clone().acquire_owned().await?;
        let mut c = publisher.client();
        let req = request();
        tasks.push(tokio::spawn(async move {
            let r = c.publish(req).await;
            drop(permit);
            r.map(|r| r.into_inner().id)
        }));
    }
    let mut ids = Vec::with_capacity(messages);
    for t in tasks {
        ids.push(t.await??);
    }
    Ok(ids)
}

/// `--feed-envelope`: [`pb::EnvelopeForm`] on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FeedEnvelope {
    Whole,
    SignatureOnce,
    None,
}

impl FeedEnvelope {
    pub fn form(self) -> pb::EnvelopeForm {
        match self {
            FeedEnvelope::Whole => pb::EnvelopeForm::Whole,
            FeedEnvelope::SignatureOnce => pb::EnvelopeForm::SignatureOnce,
            FeedEnvelope::None => pb::EnvelopeForm::None,
        }
    }
}

/// Single-core sign and verify rates (per second) over `size`-byte messages.
#[derive(Clone, Copy)]
struct SigRates {
    sign: f64,
    verify: f64,
}

impl SigRates {
    /// Messages per second one core can sign once and verify `receivers` times.
    fn bound(self, receivers: usize) -> f64 {
        1.0 / (1.0 / self.sign + receivers as f64 / self.verify)
    }
}

/// Operations per second of `op`, run for `dur`.
fn rate(dur: Duration, mut op: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < dur {
        op()?;
        n += 1;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Raw single-core rates over `size`-byte messages, `dur` each: the hybrid Ed25519 +
/// ML-DSA-65 signature every envelope carries, and its Ed25519 half alone (the signature
/// before issue #11) as the baseline measured in the same run.
fn signature_rates(size: usize, dur: Duration) -> anyhow::Result<(SigRates, SigRates)> {
    use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
    let key = SigningKey::generate("bench").map_err(|e| anyhow::anyhow!(e))?;
    let msg = vec![0x5au8; size];
    let mut sig = key.sign(MESSAGE_CONTEXT, &msg);
    let pk = key.public_key();
    let hybrid = SigRates {
        sign: rate(dur, || {
            sig = key.sign(MESSAGE_CONTEXT, &msg);
            Ok(())
        })?,
        verify: rate(dur, || {
            if !signing::verify(&pk, MESSAGE_CONTEXT, &msg, &sig) {
                bail!("benchmark signature failed to verify");
            }
            Ok(())
        })?,
    };
    let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let ed = Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut ed_sig = ed.sign(&msg);
    let ed_only = SigRates {
        sign: rate(dur, || {
            ed_sig = ed.sign(&msg);
            Ok(())
        })?,
        verify: rate(dur, || {
            UnparsedPublicKey::new(&ED25519, ed.public_key().as_ref())
                .verify(&msg, ed_sig.as_ref())
                .map_err(|_| anyhow::anyhow!("benchmark Ed25519 signature failed to verify"))
        })?,
    };
    Ok((hybrid, ed_only))
}

/// Latency (ms, sorted) of a 4 KiB write + `fdatasync` by `writers` threads at once (each on
/// its own file, as each node has its own store), for `dur`, in a scratch directory beside
/// the federation's: the disk baseline of the durable path.
fn fsync_latencies(near: &Path, writers: usize, dur: Duration) -> anyhow::Result<Vec<f64>> {
    let dir = near.with_extension("disk-baseline");
    std::fs::create_dir_all(&dir)?;
    let handles: Vec<_> = (0..writers)
        .map(|i| {
            let path = dir.join(format!("writer-{i}"));
            std::thread::spawn(move || -> std::io::Result<Vec<f64>> {
                use std::io::{Seek, SeekFrom, Write};
                let mut f = std::fs::File::create(&path)?;
                let page = [0x5au8; 4096];
                let mut lat = Vec::new();
                let t = Instant::now();
                let mut n = 0u64;
                while t.elapsed() < dur && n < 200_000 {
                    let t0 = Instant::now();
                    f.seek(SeekFrom::Start((n % 64) * 4096))?;
                    f.write_all(&page)?;
                    f.sync_data()?;
                    lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                    n += 1;
                }
                Ok(lat)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut failed = None;
    for h in handles {
        match h.join() {
            Ok(Ok(lat)) => all.extend(lat),
            Ok(Err(e)) => failed = Some(anyhow::anyhow!("disk baseline in {}: {e}", dir.display())),
            Err(_) => failed = Some(anyhow::anyhow!("disk baseline thread panicked")),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(e) = failed {
        return Err(e);
    }
    all.sort_by(|a, b| a.total_cmp(b));
    Ok(all)
}

/// What a node's metrics say about its work so far: store write transactions, and per stage
/// of the message path (`bluewire_stage_*`) the time spent and the events timed.
#[derive(Clone, Default)]
struct NodeCounts {
    commits: u64,
    /// Of `commits`, those an insert's caller made itself, without the store's writer thread.
    commits_by_caller: u64,
    /// Batch signatures made for the node's own publishes (`None`: a build without the metric).
    signatures: Option<u64>,
    /// Messages in the store (its head seq).
    stored: u64,
    stages: HashMap<String, (f64, u64)>,
    /// Context switches of the process's threads so far (each a thread that slept and was
    /// woken, or was preempted): wake-ups counted rather than timed. Per message they still
    /// move with the load, which decides how much waits to go together in one batch.
    switches: u64,
    /// CPU time (user + system) the process has used so far, in seconds.
    cpu_s: f64,
}

impl NodeCounts {
    fn parse(org: &str, text: &str) -> anyhow::Result<Self> {
        use bluewire_node::metrics::{
            SIGNATURES_MADE, STAGE_EVENTS, STAGE_SECONDS, STORE_COMMITS, STORE_COMMITS_BY_CALLER,
        };
        let counter = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        };
        let commits = counter(STORE_COMMITS)
            .ok_or_else(|| anyhow::anyhow!("{org} reports no store commit count"))?;
        let commits_by_caller = counter(STORE_COMMITS_BY_CALLER).unwrap_or(0);
        let signatures = counter(SIGNATURES_MADE);
        let stored = text
            .lines()
            .find_map(|l| l.strip_prefix("bluewire_store_head_seq "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        let mut stages: HashMap<String, (f64, u64)> = HashMap::new();
        for line in text.lines() {
            let Some((family, rest)) = line.split_once("{stage=\"") else {
                continue;
            };
            let Some((stage, value)) = rest.split_once("\"} ") else {
                continue;
            };
            let e = stages.entry(stage.to_string()).or_default();
            match family {
                STAGE_SECONDS => e.0 = value.trim().parse().unwrap_or(0.0),
                STAGE_EVENTS => e.1 = value.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
        Ok(Self {
            commits,
            commits_by_caller,
            signatures,
            stored,
            stages,
            switches: 0,
            cpu_s: 0.0,
        })
    }

    /// Per stage, (mean milliseconds per event, events) between `before` and `self`.
    fn stage_means(&self, before: &NodeCounts) -> Vec<(String, f64, u64)> {
        let mut out: Vec<(String, f64, u64)> = self
            .stages
            .iter()
            .filter_map(|(stage, (secs, events))| {
                let (s0, e0) = before.stages.get(stage).copied().unwrap_or_default();
                let n = events.saturating_sub(e0);
                (n > 0).then(|| (stage.clone(), (secs - s0) * 1000.0 / n as f64, n))
            })
            .collect();
        let order = |s: &str| {
            bluewire_node::metrics::Stage::ALL
                .iter()
                .position(|x| x.label() == s)
                .unwrap_or(usize::MAX)
        };
        out.sort_by_key(|(s, ..)| order(s));
        out
    }
}

/// Each node's counts so far (from its metrics), in federation order.
async fn counts(fed: &LocalFederation) -> anyhow::Result<Vec<NodeCounts>> {
    let mut out = Vec::with_capacity(fed.orgs.len());
    for o in &fed.orgs {
        let text = fed
            .connect(o.spec.org, "operator")?
            .admin()
            .metrics(pb::MetricsRequest {})
            .await?
            .into_inner()
            .text;
        let mut c = NodeCounts::parse(o.spec.org, &text)?;
        c.switches = o.pid().map_or(0, context_switches);
        c.cpu_s = o.pid().map_or(0.0, process_cpu_seconds);
        out.push(c);
    }
    Ok(out)
}

/// Voluntary and involuntary context switches of every live thread of process `pid`, from
/// /proc (threads that have ended are no longer counted, so a delta is a slight undercount).
fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .map(|status| {
            status
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("voluntary_ctxt_switches:")
                        .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                })
                .filter_map(|v| v.trim().parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

pub async fn run(a: FanoutArgs, out: Output) -> anyhow::Result<()> {
    // The publisher delivers to the receivers only.
    let receivers = usize::from(a.workload.receivers);
    let mut names = vec!["pub-a"];
    names.extend_from_slice(&RECEIVERS[..receivers]);
    let specs = bench_orgs(&names);
    let (tmp, _cleanup) = work_dir(a.workload.dir.as_deref(), "bluewire-bench");
    let mut edits = unlimited_client();
    if let Some(p) = &a.policy {
        let p = std::fs::canonicalize(p)?;
        bluewire_node::policy::LocalPolicy::load(&p).map_err(|e| anyhow::anyhow!("{e}"))?;
        edits.push(ConfigEdit::replace(
            "# file = \"policy.cedar\"",
            format!("file = \"{}\"", p.display()),
        ));
    }
    edits.push(ConfigEdit::set(
        "store",
        "sync",
        format!("\"{}\"", a.store_sync.name()),
    ));
    if let Some(us) = a.linger_us {
        edits.push(ConfigEdit::set("delivery", "linger_us", us.to_string()));
    }
    let linger_us = a
        .linger_us
        .unwrap_or(bluewire_node::config::DeliveryConfig::default().linger_us);
    eprintln!("measuring the disk: 4 KiB write + fdatasync, 1 and 5 writers…");
    let fsync_1 = fsync_latencies(&tmp, 1, Duration::from_secs(2))?;
    let fsync_5 = fsync_latencies(&tmp, 5, Duration::from_secs(2))?;
    let mut fed = LocalFederation::create(&tmp, &specs, &edits)?;
    eprintln!("measuring raw signature rates (hybrid Ed25519 + ML-DSA-65, and Ed25519 alone)…");
    let (hybrid, ed_only) = signature_rates(a.workload.size, Duration::from_secs(2))?;
    let bound = hybrid.bound(receivers);
    fed.start_all()?;
    fed.wait_ready(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = fed.rss_kib();

    let arrivals: Arrivals = Arc::new(Mutex::new(HashMap::new()));
    let mut subs = Vec::new();
    for o in fed.orgs.iter().skip(1) {
        let conn = fed.connect(o.spec.org, "analyst")?;
        let mut stream = conn
            .client()
            .subscribe(pb::SubscribeRequest {
                envelope_form: a.feed_envelope.form() as i32,
                ..Default::default()
            })
            .await?
            .into_inner();
        let arrivals = arrivals.clone();
        subs.push(tokio::spawn(async move {
            // A subscriber that verifies envelopes puts each left-out signature back.
            let mut restorer = bluewire_node::feed::forms::Restorer::default();
            while let Ok(Some(mut item)) = stream.message().await {
                if let Err(e) = restorer.restore(&mut item) {
                    eprintln!("a subscriber's feed does not add up, so it stops: {e}");
                    break;
                }
                note_arrival(&arrivals, item.content.map(|c| c.id), receivers);
            }
        }));
    }
    let publisher = fed.connect("pub-a", "analyst")?;
    // Baseline: one mutual-TLS gRPC round trip on this machine, same run.
    let mut rtt = Vec::with_capacity(2000);
    let mut hello = publisher.federation();
    for _ in 0..2000 {
        let t0 = Instant::now();
        hello.hello(pb::HelloRequest {}).await?;
        rtt.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    rtt.sort_by(|a, b| a.total_cmp(b));
    let template = free_text(a.workload.size);
    let request = move || template.clone();

    // Phase 1: throughput, bounded in count and time.
    eprintln!(
        "throughput phase: {} messages, {} in flight…",
        a.workload.messages, a.workload.concurrency
    );
    let counts_before = counts(&fed).await?;
    let client_before = own_cpu_seconds();
    let start = Instant::now();
    let ids = if a.unary_publish {
        publish_unary(
            &publisher,
            a.workload.messages,
            a.workload.concurrency,
            &request,
        )
        .await?
    } else {
        let open = |rx| async { Ok(publisher.client().publish_stream(rx).await?.into_inner()) };
        publish_stream(open, a.workload.messages, a.workload.concurrency, &request).await?
    };
    let published = start.elapsed();
    let done = wait_for_arrivals(&arrivals, &ids, receivers, Duration::from_secs(120)).await;
    let elapsed = start.elapsed();
    let throughput = done as f64 / elapsed.as_secs_f64();
    // The clients' CPU is read before the nodes' metrics are fetched (which it would count).
    let client_cpu_s = own_cpu_seconds() - client_before;
    let counts_after = counts(&fed).await?;
    // CPU per delivered message, all node processes together (the clients not included).
    let cpu_s: f64 = counts_after
        .iter()
        .zip(&counts_before)
        .map(|(a, b)| a.cpu_s - b.cpu_s)
        .sum();
    let cpu_us_per_msg = cpu_s * 1e6 / done.max(1) as f64;
    let throughput_path = PathCounts::between(&counts_before, &counts_after, client_cpu_s, done);

    // Phase 2: latency at each paced rate.
    let mut paced = Vec::with_capacity(a.workload.rates.len());
    for &rate in &a.workload.rates {
        eprintln!("latency phase: {rate} msg/s for {} s…", a.workload.seconds);
        paced.push(
            paced_phase(
                &fed,
                &publisher,
                &arrivals,
                &request,
                Pace {
                    rate,
                    seconds: a.workload.seconds,
                    stream: a.paced_stream,
                },
                receivers,
            )
            .await?,
        );
    }
    for s in subs {
        s.abort();
    }
    // Bytes on disk per stored message: each store's file and value log over the messages it
    // holds.
    let held = counts(&fed).await?;
    let disk: Vec<serde_json::Value> = fed
        .orgs
        .iter()
        .zip(&held)
        .map(|(o, c)| {
            let size = |name: &str| {
                std::fs::metadata(o.dir.join("data").join(name)).map_or(0, |m| m.len())
            };
            let file = size(bluewire_node::store::FILE_NAME);
            let values = size(bluewire_node::store::VALUES_FILE_NAME);
            let bytes = file + values;
            serde_json::json!({"org": o.spec.org, "file_bytes": file, "values_bytes": values, "messages": c.stored,
                               "bytes_per_message": bytes as f64 / c.stored.max(1) as f64})
        })
        .collect();
    fed.stop_all();
    drop(fed);

    let first = paced.first().cloned().unwrap_or_default();
    let mut result = serde_json::json!({
        "local_policy": a.policy.as_ref().map(|p| p.display().to_string()),
        "workload": {"publishers": 1, "receiving_nodes": receivers, "subscribers": receivers, "payload_bytes": a.workload.size,
                      "messages": a.workload.messages, "concurrency": a.workload.concurrency, "paced_rates": a.workload.rates, "paced_seconds": a.workload.seconds,
                      "feed_envelope": clap::ValueEnum::to_possible_value(&a.feed_envelope).map(|v| v.get_name().to_owned()),
                      "throughput_publish": if a.unary_publish { "unary" } else { "stream" },
                      "paced_publish": if a.paced_stream { "stream" } else { "unary" },
                      "store_sync": a.store_sync.name(),
                      "linger_us": linger_us, "client_threads": a.workload.client_threads},
        "signature": {"hybrid_ed25519_ml_dsa_65": {"sign_per_s": hybrid.sign.round(), "verify_per_s": hybrid.verify.round(),
                                                   "bound_msg_per_s": bound.round()},
                      "ed25519_alone": {"sign_per_s": ed_only.sign.round(), "verify_per_s": ed_only.verify.round(),
                                        "bound_msg_per_s": ed_only.bound(receivers).round()}},
        "throughput": {"delivered_everywhere": done, "elapsed_s": elapsed.as_secs_f64(),
                       "publish_acked_s": published.as_secs_f64(), "msg_per_s": throughput.round(),
                       "fraction_of_bound": throughput / bound,
                       "node_cpu_s": cpu_s, "node_cpu_us_per_msg": cpu_us_per_msg.round()},
        "paced": paced.iter().map(Paced::json).collect::<Vec<_>>(),
        "latency_ms": first.json(),
        "grpc_rtt_ms": {"p50": percentile(&rtt, 0.5), "p99": percentile(&rtt, 0.99)},
        "fsync_ms": {"one_writer": {"p50": percentile(&fsync_1, 0.5), "p99": percentile(&fsync_1, 0.99)},
                     "five_writers": {"p50": percentile(&fsync_5, 0.5), "p99": percentile(&fsync_5, 0.99)}},
        "store_on_disk": disk,
        "idle_rss_kib": idle_rss.iter().map(|(o, k)| serde_json::json!({"org": o, "kib": k})).collect::<Vec<_>>(),
    });
    throughput_path.json_fields(&mut result["throughput"]);
    match out {
        Output::Json => println!("{result}"),
        Output::Table => {
            println!(
                "hybrid Ed25519 + ML-DSA-65 (1 core, {} B): sign {:.0}/s, verify {:.0}/s -> bound {:.0} msg/s (1 sign + {receivers} verify)",
                a.workload.size, hybrid.sign, hybrid.verify, bound
            );
            println!(
                "  Ed25519 alone, same run: sign {:.0}/s, verify {:.0}/s -> bound {:.0} msg/s ({:.2}x the hybrid bound)",
                ed_only.sign,
                ed_only.verify,
                ed_only.bound(receivers),
                ed_only.bound(receivers) / bound
            );
            println!(
                "store sync: {} (`[store] sync` on every node); linger {} µs (`[delivery] linger_us`)",
                a.store_sync.name(),
                linger_us
            );
            println!(
                "throughput: {done}/{} delivered at all {receivers} subscribers in {:.2} s = {:.0} msg/s = {:.2} of bound (publishes acked in {:.2} s); node CPU {:.0} µs per message",
                a.workload.messages,
                elapsed.as_secs_f64(),
                throughput,
                throughput / bound,
                published.as_secs_f64(),
                cpu_us_per_msg
            );
            println!("  {}", throughput_path.lines());
            for p in &paced {
                println!(
                    "latency at {:.0} msg/s paced (asked {}): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples); publish acknowledged p50 {:.2} ms, p99 {:.2} ms; {}",
                    p.achieved_rate,
                    p.rate,
                    p.p50,
                    p.p99,
                    p.max,
                    p.samples,
                    p.ack_p50,
                    p.ack_p99,
                    p.path.lines()
                );
            }
            println!(
                "baseline mTLS gRPC round trip (Hello, idle federation): p50 {:.3} ms, p99 {:.3} ms",
                percentile(&rtt, 0.5),
                percentile(&rtt, 0.99)
            );
            println!(
                "baseline disk (4 KiB write + fdatasync): 1 writer p50 {:.2} ms, p99 {:.2} ms; 5 writers at once p50 {:.2} ms, p99 {:.2} ms",
                percentile(&fsync_1, 0.5),
                percentile(&fsync_1, 0.99),
                percentile(&fsync_5, 0.5),
                percentile(&fsync_5, 0.99)
            );
            let per_msg: Vec<String> = disk
                .iter()
                .map(|d| {
                    format!(
                        "{} {:.0} B ({} messages)",
                        d["org"].as_str().unwrap_or("?"),
                        d["bytes_per_message"].as_f64().unwrap_or(f64::NAN),
                        d["messages"]
                    )
                })
                .collect();
            println!(
                "store bytes on disk (file and value log) per stored message ({} B payload): {}",
                a.workload.size,
                per_msg.join(", ")
            );
            let rss: Vec<String> = idle_rss
                .iter()
                .map(|(o, k)| format!("{o} {:.1} MiB", *k as f64 / 1024.0))
                .collect();
            println!("idle RSS: {}", rss.join(", "));
        }
    }
    if done < a.workload.messages {
        bail!(
            "only {done} of {} messages reached every subscriber within the time bound",
            a.workload.messages
        );
    }
    Ok(())
}

/// What one paced latency phase measured.
#[derive(Clone, Default)]
struct Paced {
    rate: u64,
    achieved_rate: f64,
    samples: usize,
    p50: f64,
    p99: f64,
    max: f64,
    ack_p50: f64,
    ack_p99: f64,
    path: PathCounts,
}

/// What the nodes counted over one phase: write transactions per message, and per stage of
/// the message path (stage, mean ms per event, events) at the origin and the receivers' mean.
#[derive(Clone, Default)]
struct PathCounts {
    origin_commits: f64,
    receiver_commits: f64,
    /// Of those, the share committed by an insert's caller rather than the writer thread.
    origin_by_caller: f64,
    receiver_by_caller: f64,
    /// Messages per batch signature the origin made (how many publishes shared one).
    origin_per_signature: f64,
    /// Context switches per message at the origin and at each receiver (mean).
    origin_switches: f64,
    receiver_switches: f64,
    /// CPU (user + system) per message, µs, at the origin and at each receiver (mean).
    origin_cpu_us: f64,
    receiver_cpu_us: f64,
    /// CPU per message of the benchmark's own process: the publisher and the subscribers.
    client_cpu_us: f64,
    origin_stages: Vec<(String, f64, u64)>,
    receiver_stages: Vec<(String, f64, u64)>,
}

/// The origin's messages stored per signature it made between `before` and `after` (its own
/// publishes: each stored once, under one batch signature); NaN when there is nothing to
/// divide or the build does not count signatures.
fn per_signature(after: &NodeCounts, before: &NodeCounts) -> f64 {
    match (after.signatures, before.signatures) {
        (Some(a), Some(b)) if a > b => {
            after.stored.saturating_sub(before.stored) as f64 / (a - b) as f64
        }
        _ => f64::NAN,
    }
}

impl PathCounts {
    /// Between two snapshots of every node's counts (origin first), over `n` messages;
    /// `client_cpu_s`: what the benchmark's own process spent meanwhile.
    fn between(before: &[NodeCounts], after: &[NodeCounts], client_cpu_s: f64, n: usize) -> Self {
        let receivers = after.len().saturating_sub(1).max(1);
        let per_msg: Vec<f64> = after
            .iter()
            .zip(before)
            .map(|(a, b)| a.commits.saturating_sub(b.commits) as f64 / n.max(1) as f64)
            .collect();
        let by_caller: Vec<f64> = after
            .iter()
            .zip(before)
            .map(|(a, b)| {
                let here = a.commits_by_caller.saturating_sub(b.commits_by_caller);
                here as f64 / a.commits.saturating_sub(b.commits).max(1) as f64
            })
            .collect();
        let switches: Vec<f64> = after
            .iter()
            .zip(before)
            .map(|(a, b)| a.switches.saturating_sub(b.switches) as f64 / n.max(1) as f64)
            .collect();
        let cpu: Vec<f64> = after
            .iter()
            .zip(before)
            .map(|(a, b)| (a.cpu_s - b.cpu_s).max(0.0) * 1e6 / n.max(1) as f64)
            .collect();
        let origin_stages = match (after.first(), before.first()) {
            (Some(a), Some(b)) => a.stage_means(b),
            _ => Vec::new(),
        };
        let mut receiver_stages: Vec<(String, f64, u64)> = Vec::new();
        for (a, b) in after.iter().zip(before).skip(1) {
            for (stage, ms, events) in a.stage_means(b) {
                match receiver_stages.iter_mut().find(|(s, ..)| *s == stage) {
                    Some(e) => {
                        e.1 += ms / receivers as f64;
                        e.2 += events;
                    }
                    None => receiver_stages.push((stage, ms / receivers as f64, events)),
                }
            }
        }
        Self {
            origin_commits: per_msg.first().copied().unwrap_or(f64::NAN),
            receiver_commits: per_msg.iter().skip(1).sum::<f64>() / receivers as f64,
            origin_by_caller: by_caller.first().copied().unwrap_or(f64::NAN),
            origin_per_signature: match (after.first(), before.first()) {
                (Some(a), Some(b)) => per_signature(a, b),
                _ => f64::NAN,
            },
            receiver_by_caller: by_caller.iter().skip(1).sum::<f64>() / receivers as f64,
            origin_switches: switches.first().copied().unwrap_or(f64::NAN),
            receiver_switches: switches.iter().skip(1).sum::<f64>() / receivers as f64,
            origin_cpu_us: cpu.first().copied().unwrap_or(f64::NAN),
            receiver_cpu_us: cpu.iter().skip(1).sum::<f64>() / receivers as f64,
            client_cpu_us: client_cpu_s.max(0.0) * 1e6 / n.max(1) as f64,
            origin_stages,
            receiver_stages,
        }
    }

    /// The JSON fields this adds to a phase's object.
    fn json_fields(&self, into: &mut serde_json::Value) {
        into["store_commits_per_msg_origin"] = self.origin_commits.into();
        into["store_commits_per_msg_receiver"] = self.receiver_commits.into();
        into["store_commits_by_caller_share_origin"] = self.origin_by_caller.into();
        into["store_commits_by_caller_share_receiver"] = self.receiver_by_caller.into();
        into["messages_per_signature_origin"] = self.origin_per_signature.into();
        into["context_switches_per_msg_origin"] = self.origin_switches.into();
        into["context_switches_per_msg_receiver"] = self.receiver_switches.into();
        into["node_cpu_us_per_msg_origin"] = self.origin_cpu_us.round().into();
        into["node_cpu_us_per_msg_receiver"] = self.receiver_cpu_us.round().into();
        into["client_cpu_us_per_msg"] = self.client_cpu_us.round().into();
        into["stages_ms"] = serde_json::json!({"origin": stages_json(&self.origin_stages),
                                               "receivers_mean": stages_json(&self.receiver_stages)});
    }

    /// `store write transactions per message: …` and where the time went, for the text report.
    fn lines(&self) -> String {
        format!(
            "store write transactions per message: origin {:.2}, receivers {:.2} (committed by the caller, without the writer thread: {:.0} %, {:.0} %); messages per signature: {:.2}; context switches per message: origin {:.1}, receivers {:.1}; CPU per message: origin {:.0} µs, each receiver {:.0} µs, the clients (this process) {:.0} µs\n  where the time went (mean per event): origin: {}; receivers: {}",
            self.origin_commits,
            self.receiver_commits,
            self.origin_by_caller * 100.0,
            self.receiver_by_caller * 100.0,
            self.origin_per_signature,
            self.origin_switches,
            self.receiver_switches,
            self.origin_cpu_us,
            self.receiver_cpu_us,
            self.client_cpu_us,
            stages_line(&self.origin_stages),
            stages_line(&self.receiver_stages)
        )
    }
}

impl Paced {
    fn json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"rate": self.rate, "achieved_rate": self.achieved_rate.round(), "samples": self.samples,
                           "p50": self.p50, "p99": self.p99, "max": self.max,
                           "publish_ack_p50": self.ack_p50, "publish_ack_p99": self.ack_p99});
        self.path.json_fields(&mut v);
        v
    }
}

/// Stage timings as `{stage: {"mean_ms": .., "events": ..}}`.
fn stages_json(stages: &[(String, f64, u64)]) -> serde_json::Value {
    stages
        .iter()
        .map(|(s, ms, n)| (s.clone(), serde_json::json!({"mean_ms": ms, "events": n})))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Stage timings as `seal 0.21 ms ×5000, …`.
fn stages_line(stages: &[(String, f64, u64)]) -> String {
    stages
        .iter()
        .map(|(s, ms, n)| format!("{s} {ms:.2} ms ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How a paced phase publishes: `rate` msg/s for `seconds`, one unary call per message or
/// one PublishStream for the phase (`stream`).
#[derive(Clone, Copy)]
struct Pace {
    rate: u64,
    seconds: u64,
    stream: bool,
}

/// Publish at `rate` msg/s for `seconds`; latency = from starting the publish call (or
/// sending the request on the stream) to the moment the last receiver's subscriber has the
/// message.
async fn paced_phase(
    fed: &LocalFederation,
    publisher: &bluewire_node::client::Connection,
    arrivals: &Arrivals,
    request: &(impl Fn() -> pb::PublishRequest + Clone),
    pace: Pace,
    receivers: usize,
) -> anyhow::Result<Paced> {
    let Pace {
        rate,
        seconds,
        stream,
    } = pace;
    let n = (rate * seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let before = counts(fed).await?;
    let client_before = own_cpu_seconds();
    let start2 = Instant::now();
    let mut sent: Vec<Instant> = Vec::with_capacity(n);
    let ids2 = Arc::new(Mutex::new(vec![String::new(); n]));
    let acks = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let mut tasks = Vec::with_capacity(n);
    // On a stream: the requests go through this channel (unbounded, so a slow node never
    // holds the pacing back), and one task reads the results, which come in request order,
    // noting (position, when, id) for each publish stored.
    let (stream_tx, reader) = if stream {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let results = publisher
            .client()
            .publish_stream(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
            .await?
            .into_inner();
        let reader = tokio::spawn(paced_results(results, n));
        (Some(tx), Some(reader))
    } else {
        (None, None)
    };
    for i in 0..n {
        let due = start2 + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let t0 = Instant::now();
        sent.push(t0);
        if let Some(tx) = &stream_tx {
            if tx.send(request()).is_err() {
                break;
            }
            continue;
        }
        let mut c = publisher.client();
        let req = request();
        let ids2 = ids2.clone();
        let acks = acks.clone();
        tasks.push(tokio::spawn(async move {
            if let Ok(r) = c.publish(req).await {
                let acked = t0.elapsed().as_secs_f64() * 1000.0;
                if let Ok(mut a) = acks.lock() {
                    a.push(acked);
                }
                if let Ok(mut v) = ids2.lock() {
                    v[i] = r.into_inner().id;
                }
            }
        }));
    }
    // The rate the publishes were started at (the pacing may fall behind when the node is
    // saturated).
    let achieved_rate = n as f64 / start2.elapsed().as_secs_f64();
    // The stream ends once every request is sent; its reader ends after the last result.
    drop(stream_tx);
    for t in tasks {
        let _ = t.await;
    }
    if let Some(reader) = reader {
        let stored = reader.await.unwrap_or_default();
        if let (Ok(mut a), Ok(mut v)) = (acks.lock(), ids2.lock()) {
            for (i, at, id) in stored {
                if let (Some(t0), Some(slot)) = (sent.get(i), v.get_mut(i)) {
                    a.push((at - *t0).as_secs_f64() * 1000.0);
                    *slot = id;
                }
            }
        }
    }
    let ids2: Vec<String> = ids2.lock().map(|v| v.clone()).unwrap_or_default();
    wait_for_arrivals(arrivals, &ids2, receivers, Duration::from_secs(60)).await;
    // The clients' CPU over the phase, before the figures are worked out.
    let client_cpu_s = own_cpu_seconds() - client_before;
    let lat = arrival_latencies(arrivals, &sent, &ids2);
    let mut ack_lat: Vec<f64> = acks.lock().map(|v| v.clone()).unwrap_or_default();
    ack_lat.sort_by(|a, b| a.total_cmp(b));
    // Write transactions per message: origin, then the receivers' mean.
    let after = counts(fed).await?;
    Ok(Paced {
        rate,
        achieved_rate,
        samples: lat.len(),
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        max: lat.last().copied().unwrap_or(f64::NAN),
        ack_p50: percentile(&ack_lat, 0.50),
        ack_p99: percentile(&ack_lat, 0.99),
        path: PathCounts::between(&before, &after, client_cpu_s, n),
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::{Duration, Instant};

    #[test]
    fn context_switches_count_the_wake_ups_of_a_live_process() {
        // A shell that waits for 20 sleeps one after the other, then for its input: each
        // wait is a switch of its one thread. (This process's own threads would not do: test
        // threads that end meanwhile drop out of the sum.)
        let mut sh = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 20 ]; do sleep 0.01; i=$((i+1)); done; read x",
            ])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = 0;
        while Instant::now() < deadline {
            seen = super::context_switches(sh.id());
            if seen >= 20 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = sh.stdin.take().map(|mut i| i.write_all(b"done\n"));
        let _ = sh.wait();
        assert!(seen >= 20, "{seen} context switches counted for 20 waits");
        // A process that is not there counts nothing.
        assert_eq!(super::context_switches(u32::MAX), 0);
    }
}
