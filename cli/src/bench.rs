//! `bluewire bench`: the benchmarks (BENCHMARKS.md has their method and figures), and what
//! they share: the workload arguments, the benchmark federation, publishing, counting
//! arrivals at the subscribers, percentiles, and CPU from /proc. Each benchmark is a module:
//! [`fanout`] (1 publisher → 4 nodes), [`floor`] (the fan-out's transport alone), [`stix`],
//! [`catchup`], [`store`] and [`subscribers`].
//! A benchmark, not a test: it asserts nothing and is bounded in count and time.

mod catchup;
mod fanout;
mod floor;
mod stix;
mod store;
mod subscribers;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use bluewire_node::client::Connection;
use bluewire_node::pki::Level;
use bluewire_node::provision::ConfigEdit;
use bluewire_proto::v1 as pb;
use clap::{Args, Subcommand};
use tokio::sync::Semaphore;

use crate::Output;
use crate::local::{LocalFederation, OrgSpec};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// 1 publisher -> 4 nodes (--receivers), 1 KiB messages (--size).
    Fanout(fanout::FanoutArgs),
    /// STIX import, TAXII paging and bundle fan-out, 1 publisher -> 1 node.
    Stix(stix::StixArgs),
    /// A receiver down while messages are published starts again and catches up.
    Catchup(catchup::CatchupArgs),
    /// A node with a million stored messages: size on disk, start-up time, memory.
    Store(store::StoreArgs),
    /// Many subscriber streams at one node (SOC tools) at a paced publish rate.
    Subscribers(subscribers::SubscribersArgs),
    /// The fan-out's transport alone (mutual TLS, gRPC, the same calls and messages) with
    /// no store, no signatures and no routing: what a node could not go below.
    Floor(floor::FloorArgs),
    /// One process of `bench floor` (started by it).
    #[command(hide = true)]
    FloorNode(floor::FloorNodeArgs),
}

/// The fan-out workload, shared by `bench fanout` and `bench floor`.
#[derive(Debug, Args)]
pub struct Workload {
    /// Messages in the throughput phase.
    #[arg(long, default_value_t = 5000)]
    pub messages: usize,
    /// Publishes in flight in the throughput phase.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Paced rate of a latency phase (msg/s); repeat for several phases, run in order.
    #[arg(long = "rate", default_values_t = [1000])]
    pub rates: Vec<u64>,
    /// Length of each latency phase (s).
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Receiving nodes (each with one subscriber), 1 to 16.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub receivers: u16,
    /// Where to build the federation (default: a temporary directory, removed after).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
    /// Threads that run the benchmark's own clients (its publisher and its subscribers, not
    /// the nodes): 1 runs them all on one thread (`bench/compare-nats` runs each NATS client
    /// as a one-thread process of its own); N from 2 to 256, N runtime workers beside the
    /// thread that drives the benchmark; 0, one worker per core.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(0..=256))]
    pub client_threads: u16,
}

impl BenchCommand {
    /// The threads the benchmark's own process should run on (`--client-threads`), for the
    /// benchmarks that take it (`fanout`, `floor`); `None`: the default runtime (every other
    /// benchmark, and a node of `bench floor`).
    pub fn client_threads(&self) -> Option<usize> {
        match self {
            BenchCommand::Fanout(a) => Some(usize::from(a.workload.client_threads)),
            BenchCommand::Floor(a) => Some(usize::from(a.workload.client_threads)),
            _ => None,
        }
    }
}

/// `messages` publishes on one publish stream, which `open` opens with the requests' stream,
/// at most `concurrency` not yet answered.
async fn publish_stream<Open, Opened>(
    open: Open,
    messages: usize,
    concurrency: usize,
    request: &impl Fn() -> pb::PublishRequest,
) -> anyhow::Result<Vec<String>>
where
    Open: FnOnce(tokio_stream::wrappers::ReceiverStream<pb::PublishRequest>) -> Opened,
    Opened: Future<Output = anyhow::Result<tonic::Streaming<pb::PublishResult>>>,
{
    let sem = Arc::new(Semaphore::new(concurrency));
    let (tx, rx) = tokio::sync::mpsc::channel(concurrency.max(1));
    let mut results = open(tokio_stream::wrappers::ReceiverStream::new(rx)).await?;
    let reader = {
        let sem = sem.clone();
        tokio::spawn(async move {
            let read = async {
                let mut ids = Vec::with_capacity(messages);
                while ids.len() < messages {
                    let r = results.message().await?.ok_or_else(|| {
                        anyhow::anyhow!("PublishStream ended after {}", ids.len())
                    })?;
                    match r.published {
                        Some(p) => ids.push(p.id),
                        None => {
                            anyhow::bail!("publish {} failed: {} ({})", r.index, r.error, r.code)
                        }
                    }
                    sem.add_permits(1);
                }
                anyhow::Ok(ids)
            }
            .await;
            // The sender stops waiting for permits that will not come.
            sem.close();
            read
        })
    };
    for _ in 0..messages {
        match sem.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => break,
        }
        if tx.send(request()).await.is_err() {
            break;
        }
    }
    drop(tx);
    reader.await?
}

pub async fn run(cmd: BenchCommand, out: Output) -> anyhow::Result<()> {
    let bench = async {
        match cmd {
            BenchCommand::Fanout(a) => fanout::run(a, out).await,
            BenchCommand::Stix(a) => stix::run(a, out).await,
            BenchCommand::Catchup(a) => catchup::run(a, out).await,
            BenchCommand::Store(a) => store::run(a, out).await,
            BenchCommand::Subscribers(a) => subscribers::run(a, out).await,
            BenchCommand::Floor(a) => floor::run(a, out).await,
            BenchCommand::FloorNode(a) => floor::node(a).await,
        }
    };
    // Interrupted: dropping the benchmark stops the node processes it started and removes
    // its temporary directory (they would outlive a process killed by the signal).
    tokio::select! {
        r = bench => r,
        signal = interrupted() => bail!("benchmark stopped by {signal}; its nodes were stopped"),
    }
}

/// Resolves on SIGINT or SIGTERM, with the signal's name.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        // No signal handling here: never resolves, the benchmark runs as before.
        _ => std::future::pending().await,
    }
}

/// Messages a node's store holds (admin Status, as its operator).
pub(crate) async fn held(conn: &Connection) -> anyhow::Result<u64> {
    let status = tokio::time::timeout(
        Duration::from_secs(30),
        conn.admin().status(pb::StatusRequest {}),
    )
    .await
    .map_err(|_| anyhow::anyhow!("Status took over 30 s"))?
    .map_err(|s| anyhow::anyhow!("Status: {}", s.message()))?;
    Ok(status.into_inner().messages)
}

/// A 1 KiB-style free-text publish of `size` body bytes, TLP:GREEN, technical level.
pub(crate) fn free_text(size: usize) -> pb::PublishRequest {
    pb::PublishRequest {
        kind: pb::Kind::FreeText as i32,
        level: pb::Level::Technical as i32,
        marking: Some(pb::Marking {
            tlp: pb::Tlp::Green as i32,
            ..Default::default()
        }),
        body: Some(pb::publish_request::Body::FreeText(pb::FreeText {
            title: "bench".into(),
            body: "x".repeat(size),
        })),
        ..Default::default()
    }
}

/// Publish `n` messages of `size` bytes with `concurrency` in flight, each call bounded to
/// 60 s; a progress line every 10 s. Fails on the first refused publish.
pub(crate) async fn publish_n(
    conn: &Connection,
    n: usize,
    concurrency: usize,
    size: usize,
) -> anyhow::Result<()> {
    let req = free_text(size);
    let mut set = tokio::task::JoinSet::new();
    let start = Instant::now();
    let mut last = Instant::now();
    let mut done = 0usize;
    let mut join = |r: Option<Result<anyhow::Result<()>, tokio::task::JoinError>>| match r {
        Some(r) => {
            r??;
            done += 1;
            if last.elapsed() > Duration::from_secs(10) {
                last = Instant::now();
                eprintln!(
                    "  {done}/{n} published, {:.0} msg/s",
                    done as f64 / start.elapsed().as_secs_f64()
                );
            }
            anyhow::Ok(())
        }
        None => Ok(()),
    };
    for _ in 0..n {
        if set.len() >= concurrency.max(1) {
            join(set.join_next().await)?;
        }
        let mut c = conn.client();
        let req = req.clone();
        set.spawn(async move {
            tokio::time::timeout(Duration::from_secs(60), c.publish(req))
                .await
                .map_err(|_| anyhow::anyhow!("a publish took over 60 s"))?
                .map_err(|s| anyhow::anyhow!("publish refused: {}", s.message()))?;
            Ok(())
        });
    }
    while !set.is_empty() {
        join(set.join_next().await)?;
    }
    Ok(())
}

/// Removes a directory when dropped.
struct RemoveOnDrop(Option<std::path::PathBuf>);

/// Where a benchmark builds its federation: `dir` when given (kept), else a temporary
/// directory named after `name`, removed when the guard drops. Declare the guard before the
/// federation, so it drops after it: the directory goes once the nodes have stopped,
/// however the benchmark ends (an error, or an interrupt).
fn work_dir(dir: Option<&Path>, name: &str) -> (std::path::PathBuf, RemoveOnDrop) {
    match dir {
        Some(d) => (d.to_path_buf(), RemoveOnDrop(None)),
        None => {
            let tmp = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
            (tmp.clone(), RemoveOnDrop(Some(tmp)))
        }
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

type Arrivals = Arc<Mutex<HashMap<String, (u32, Option<Instant>)>>>;

/// How many of `ids` have reached all `receivers` subscribers.
/// Counted under the lock, not on a copy: with the clients on one thread, a copy of the map
/// every poll would hold back the subscribers' arrival times.
fn all_done(arr: &Arrivals, ids: &[String], receivers: usize) -> usize {
    let Ok(m) = arr.lock() else {
        return 0;
    };
    ids.iter()
        .filter(|id| m.get(*id).is_some_and(|e| e.0 as usize >= receivers))
        .count()
}

/// Waits, at most `bound`, until every one of `ids` has reached all `receivers` subscribers;
/// returns how many have.
async fn wait_for_arrivals(
    arr: &Arrivals,
    ids: &[String],
    receivers: usize,
    bound: Duration,
) -> usize {
    let deadline = Instant::now() + bound;
    loop {
        let done = all_done(arr, ids, receivers);
        if done == ids.len() || Instant::now() >= deadline {
            return done;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// From each publish's start (`sent[i]`, published as `ids[i]`) to its arrival at the last
/// subscriber, in ms, sorted; publishes that did not arrive everywhere are left out.
fn arrival_latencies(arr: &Arrivals, sent: &[Instant], ids: &[String]) -> Vec<f64> {
    let Ok(m) = arr.lock() else {
        return Vec::new();
    };
    let mut lat: Vec<f64> = sent
        .iter()
        .zip(ids)
        .filter_map(|(t0, id)| {
            m.get(id)
                .and_then(|e| e.1)
                .map(|t| (t - *t0).as_secs_f64() * 1000.0)
        })
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    lat
}

/// A subscriber has message `id`: counted, and timed when it is the last of `receivers`.
fn note_arrival(arr: &Arrivals, id: Option<String>, receivers: usize) {
    if let Ok(mut m) = arr.lock() {
        let e = m.entry(id.unwrap_or_default()).or_insert((0, None));
        e.0 += 1;
        if e.0 as usize == receivers {
            e.1 = Some(Instant::now());
        }
    }
}

/// The receiving organisations of a fan-out benchmark (at most 16).
const RECEIVERS: [&str; 16] = [
    "recv-b", "recv-c", "recv-d", "recv-e", "recv-f", "recv-g", "recv-h", "recv-i", "recv-j",
    "recv-k", "recv-l", "recv-m", "recv-n", "recv-o", "recv-p", "recv-q",
];

/// CPU time (user + system) each node process has used so far, in seconds, from /proc.
fn cpu_seconds(fed: &LocalFederation) -> Vec<f64> {
    fed.orgs
        .iter()
        .map(|o| o.pid().map_or(0.0, process_cpu_seconds))
        .collect()
}

/// CPU time (user + system) this process (the benchmark's clients) has used so far, in
/// seconds.
fn own_cpu_seconds() -> f64 {
    process_cpu_seconds(std::process::id())
}

/// CPU time (user + system) process `pid` has used so far, in seconds (0 if it is gone).
fn process_cpu_seconds(pid: u32) -> f64 {
    // Clock ticks per second: 100 on every Linux this runs on (USER_HZ).
    const TICKS: f64 = 100.0;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let user: f64 = f.get(11)?.parse().ok()?;
            let sys: f64 = f.get(12)?.parse().ok()?;
            Some((user + sys) / TICKS)
        })
        .unwrap_or(0.0)
}

/// A benchmark federation: technical-level CSIRTs, the first of `orgs` (the publisher) the
/// only one with static peers, so it delivers to the others.
pub(crate) fn bench_orgs(orgs: &[&'static str]) -> Vec<OrgSpec> {
    orgs.iter()
        .map(|&org| OrgSpec {
            org,
            country: "EU",
            org_type: "csirt",
            levels: vec![Level::Technical],
            functions: Vec::new(),
            what: "bench",
            static_peers: org == orgs[0],
        })
        .collect()
}

/// The load generator is one analyst: lift the per-user rate limit out of its way.
pub(crate) fn unlimited_client() -> Vec<ConfigEdit> {
    vec![
        ConfigEdit::replace(
            "client_rate_per_sec = 5000",
            "client_rate_per_sec = 1000000",
        ),
        ConfigEdit::replace("client_burst = 10000", "client_burst = 1000000"),
    ]
}

/// Reads a paced publish stream's results, which come in request order, until the `n`th:
/// (position, when, id) for each publish stored.
async fn paced_results(
    mut results: tonic::Streaming<pb::PublishResult>,
    n: usize,
) -> Vec<(usize, Instant, String)> {
    let mut stored = Vec::with_capacity(n);
    loop {
        let r = match results.message().await {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                eprintln!(
                    "the paced PublishStream ended early ({e}): this phase counts only the results that came before"
                );
                break;
            }
        };
        let i = r.index as usize;
        if let Some(p) = r.published {
            stored.push((i, Instant::now(), p.id));
        }
        if i + 1 >= n {
            break;
        }
    }
    stored
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    #[test]
    fn cpu_seconds_count_the_work_of_a_live_process() {
        // This process's time only grows (ended threads stay counted), so spinning here must
        // show within the deadline, at the 10 ms resolution of /proc.
        let me = std::process::id();
        let before = super::process_cpu_seconds(me);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut spun = 0u64;
        while super::process_cpu_seconds(me) < before + 0.05 && Instant::now() < deadline {
            for i in 0..100_000u64 {
                spun = std::hint::black_box(spun.wrapping_add(i));
            }
        }
        let after = super::process_cpu_seconds(me);
        assert!(
            after >= before + 0.05,
            "{before} s then {after} s of CPU after spinning ({spun})"
        );
        assert_eq!(super::process_cpu_seconds(u32::MAX), 0.0);
    }
}
