//! `bluewire bench store`: a node holding a million messages. Loads them through the
//! node's own publish path, then measures the store file (bytes per message, redb's page
//! statistics), the time from starting the process to answering its first call (after a
//! clean stop and after `kill -9`), and resident memory idle and after a subscriber has
//! read the whole feed. The baseline is an empty node of the same federation, started and
//! measured in the same run. A benchmark, not a test: bounded in count and time.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bluewire_node::config::StoreSync;
use bluewire_node::provision::ConfigEdit;
use bluewire_proto::v1 as pb;
use clap::Args;

use super::{bench_orgs, held, percentile, publish_n, unlimited_client, work_dir};
use crate::Output;
use crate::local::LocalFederation;

const LOADED: &str = "store-a";
const EMPTY: &str = "empty-b";

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Messages to store.
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: usize,
    /// Publishes in flight while loading.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Clean restarts measured per node.
    #[arg(long, default_value_t = 3)]
    pub restarts: usize,
    /// `[store] sync` of both nodes: with `interval`, the message records and batch
    /// signatures go to the value log beside the file.
    #[arg(long, value_enum, default_value_t = StoreSync::Always)]
    pub store_sync: StoreSync,
    /// Where to build the federation (default: a temporary directory, removed after).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Start `org`'s node: seconds from spawning the process to its first answer.
async fn timed_start(fed: &mut LocalFederation, org: &str) -> anyhow::Result<f64> {
    let t = Instant::now();
    fed.start(org)?;
    fed.wait_org_ready(org, Duration::from_secs(600)).await?;
    Ok(t.elapsed().as_secs_f64())
}

/// Whether `org`'s node skipped the page check at its last start (its log starts afresh
/// with each start): a stop that needed SIGKILL shows as a checked start.
fn check_skipped(fed: &LocalFederation, org: &str) -> bool {
    std::fs::read_to_string(fed.org(org).dir.join("node.log"))
        .is_ok_and(|log| log.contains("page check skipped"))
}

/// Over `n` clean restarts: start-up seconds, idle RSS (KiB, 2 s after the start), whether
/// the page check was skipped.
async fn restarts(
    fed: &mut LocalFederation,
    org: &str,
    n: usize,
) -> anyhow::Result<(Vec<f64>, Vec<u64>, Vec<bool>)> {
    let (mut times, mut rsses, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        fed.stop(org);
        times.push(timed_start(fed, org).await?);
        skipped.push(check_skipped(fed, org));
        tokio::time::sleep(Duration::from_secs(2)).await;
        rsses.push(fed.rss_kib_of(org));
    }
    Ok((times, rsses, skipped))
}

/// Read `org`'s whole feed once as a subscriber (no follow): (items, seconds).
async fn read_feed(fed: &LocalFederation, org: &str) -> anyhow::Result<(u64, f64)> {
    let conn = fed.connect(org, "analyst")?;
    let t = Instant::now();
    let mut stream = conn
        .client()
        .subscribe(pb::SubscribeRequest {
            no_follow: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut n = 0u64;
    let deadline = Instant::now() + Duration::from_secs(1200);
    while let Some(_item) = tokio::time::timeout(Duration::from_secs(60), stream.message())
        .await
        .map_err(|_| anyhow::anyhow!("no feed item for 60 s after {n}"))??
    {
        n += 1;
        if Instant::now() > deadline {
            anyhow::bail!("the feed took over 20 minutes; stopped after {n} items");
        }
    }
    Ok((n, t.elapsed().as_secs_f64()))
}

fn stats_json(times: &[f64], rss: &[u64], skipped: &[bool]) -> serde_json::Value {
    let mut sorted = times.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    serde_json::json!({"start_s": times, "start_s_median": percentile(&sorted, 0.5),
                       "idle_rss_kib": rss, "page_check_skipped": skipped})
}

pub async fn run(a: StoreArgs, out: Output) -> anyhow::Result<()> {
    // Neither node lists the other as a peer: each keeps what it holds.
    let mut specs = bench_orgs(&[LOADED, EMPTY]);
    for s in &mut specs {
        s.static_peers = false;
    }
    let (tmp, _cleanup) = work_dir(a.dir.as_deref(), "bluewire-store");
    let mut edits = unlimited_client();
    edits.push(ConfigEdit::set(
        "store",
        "sync",
        format!("\"{}\"", a.store_sync.name()),
    ));
    let mut fed = LocalFederation::create(&tmp, &specs, &edits)?;
    fed.start_all()?;
    fed.wait_ready(Duration::from_secs(30)).await?;

    eprintln!("baseline: {} restarts of each node, empty…", a.restarts);
    let (empty_before, empty_rss_before, empty_skipped_before) =
        restarts(&mut fed, LOADED, a.restarts).await?;

    eprintln!(
        "loading {} messages of {} B into {LOADED}…",
        a.messages, a.size
    );
    let publisher = fed.connect(LOADED, "analyst")?;
    let t = Instant::now();
    publish_n(&publisher, a.messages, a.concurrency, a.size).await?;
    let load_s = t.elapsed().as_secs_f64();
    let stored = held(&fed.connect(LOADED, "operator")?).await?;
    let rss_after_load = fed.rss_kib_of(LOADED);

    fed.stop(LOADED);
    let stats = bluewire_node::store::file_stats(&fed.org(LOADED).dir.join("data"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let empty_stats = {
        fed.stop(EMPTY);
        let s = bluewire_node::store::file_stats(&fed.org(EMPTY).dir.join("data"))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        timed_start(&mut fed, EMPTY).await?;
        s
    };

    eprintln!("restarts: {} clean of each node, alternating…", a.restarts);
    let (mut loaded_t, mut loaded_rss, mut loaded_skip) = (vec![], vec![], vec![]);
    let (mut empty_t, mut empty_rss, mut empty_skip) = (vec![], vec![], vec![]);
    timed_start(&mut fed, LOADED).await?;
    for _ in 0..a.restarts {
        let (t, r, k) = restarts(&mut fed, EMPTY, 1).await?;
        empty_t.extend(t);
        empty_rss.extend(r);
        empty_skip.extend(k);
        let (t, r, k) = restarts(&mut fed, LOADED, 1).await?;
        loaded_t.extend(t);
        loaded_rss.extend(r);
        loaded_skip.extend(k);
    }
    eprintln!("a crash: kill -9 {LOADED}, then start…");
    fed.kill(LOADED);
    let after_crash = timed_start(&mut fed, LOADED).await?;
    let crash_skipped = check_skipped(&fed, LOADED);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after_crash = fed.rss_kib_of(LOADED);

    eprintln!("a subscriber reads {LOADED}'s whole feed…");
    let (read, read_s) = read_feed(&fed, LOADED).await?;
    let rss_after_read = fed.rss_kib_of(LOADED);
    fed.stop_all();

    let per_msg = (stats.file_bytes + stats.values_bytes) as f64 / stored.max(1) as f64;
    let stored_per_msg = stats.stored_bytes as f64 / stored.max(1) as f64;
    let result = serde_json::json!({
        "workload": {"messages": a.messages, "payload_bytes": a.size, "concurrency": a.concurrency,
                     "restarts": a.restarts, "store_sync": a.store_sync.name()},
        "load": {"elapsed_s": load_s, "msg_per_s": (a.messages as f64 / load_s).round(),
                 "stored": stored, "rss_kib_after_load": rss_after_load},
        "file": {"loaded": stats, "empty": empty_stats, "disk_bytes_per_message": per_msg.round(),
                 "stored_bytes_per_message": stored_per_msg.round()},
        "start": {"loaded": stats_json(&loaded_t, &loaded_rss, &loaded_skip),
                  "empty": stats_json(&empty_t, &empty_rss, &empty_skip),
                  "empty_before_loading": stats_json(&empty_before, &empty_rss_before, &empty_skipped_before),
                  "loaded_after_kill_9_s": after_crash, "rss_kib_after_kill_9": rss_after_crash,
                  "page_check_skipped_after_kill_9": crash_skipped},
        "feed_read": {"items": read, "elapsed_s": read_s, "items_per_s": (read as f64 / read_s).round(),
                      "rss_kib_after": rss_after_read},
    });
    match out {
        Output::Json => println!("{result}"),
        Output::Table => {
            let med = |v: &[f64]| {
                let mut s = v.to_vec();
                s.sort_by(|a, b| a.total_cmp(b));
                percentile(&s, 0.5)
            };
            let mib = |k: u64| k as f64 / 1024.0;
            println!(
                "loaded {stored} messages of {} B in {load_s:.0} s ({:.0} msg/s); RSS after loading {:.1} MiB",
                a.size,
                a.messages as f64 / load_s,
                mib(rss_after_load)
            );
            println!(
                "store file {:.1} MiB and value log {:.1} MiB = {per_msg:.0} B per message; in the file, keys and values {stored_per_msg:.0} B per message, {} leaf + {} branch pages of {} B, {:.1} MiB fragmented (empty store: {:.1} MiB)",
                stats.file_bytes as f64 / 1048576.0,
                stats.values_bytes as f64 / 1048576.0,
                stats.leaf_pages,
                stats.branch_pages,
                stats.page_size,
                stats.fragmented_bytes as f64 / 1048576.0,
                empty_stats.file_bytes as f64 / 1048576.0
            );
            println!(
                "start-up (spawn to first answer), median of {}: loaded {:.2} s {:?} (page check skipped: {:?}), empty {:.2} s {:?} (same run); after kill -9: {after_crash:.2} s (page check skipped: {crash_skipped})",
                a.restarts,
                med(&loaded_t),
                loaded_t,
                loaded_skip,
                med(&empty_t),
                empty_t
            );
            println!(
                "idle RSS 2 s after start: loaded {:?} KiB, empty {:?} KiB; after kill -9 and start {:.1} MiB",
                loaded_rss,
                empty_rss,
                mib(rss_after_crash)
            );
            println!(
                "a subscriber read the whole feed ({read} items) in {read_s:.1} s = {:.0} items/s; RSS after {:.1} MiB",
                read as f64 / read_s,
                mib(rss_after_read)
            );
        }
    }
    Ok(())
}
