//! `bluewire bench subscribers`: many subscriber streams at one node (SOC tools following
//! its feed) while an analyst publishes at a paced rate. Measures deliveries per second,
//! publish-to-subscriber latency, the node's CPU per delivery and per subscriber, and its
//! memory, against the same workload with one subscriber measured first in the same run.
//! A benchmark, not a test: bounded in count and time, asserts nothing.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bluewire_proto::v1 as pb;
use clap::Args;

use super::{bench_orgs, cpu_seconds, free_text, percentile, unlimited_client, work_dir};
use crate::Output;
use crate::local::LocalFederation;

const HUB: &str = "hub-a";

#[derive(Debug, Args)]
pub struct SubscribersArgs {
    /// Subscriber streams in the measured phase.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Subscriber streams per connection (HTTP/2 streams; the node allows 128).
    #[arg(long, default_value_t = 100)]
    pub per_connection: usize,
    /// Paced publish rate (msg/s) in each phase.
    #[arg(long, default_value_t = 20)]
    pub rate: u64,
    /// Length of each phase (s).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Where to build the federation (default: a temporary directory, removed after).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// What one phase measured.
struct Phase {
    subscribers: usize,
    messages: usize,
    deliveries: u64,
    elapsed_s: f64,
    /// Publish start to arrival, per delivery (ms, sorted).
    latency: Vec<f64>,
    node_cpu_s: f64,
    rss_connected_kib: u64,
    rss_after_kib: u64,
    ended_early: u64,
    /// Publishes the node refused (their deliveries are missing from the count).
    refused: usize,
}

impl Phase {
    fn json(&self) -> serde_json::Value {
        let per_delivery_us = self.node_cpu_s * 1e6 / self.deliveries.max(1) as f64;
        serde_json::json!({
            "subscribers": self.subscribers, "messages": self.messages, "deliveries": self.deliveries,
            "expected_deliveries": self.messages * self.subscribers,
            "deliveries_per_s": (self.deliveries as f64 / self.elapsed_s).round(),
            "latency_ms": {"p50": percentile(&self.latency, 0.5), "p99": percentile(&self.latency, 0.99),
                           "max": self.latency.last()},
            "node_cpu_s": self.node_cpu_s, "node_cores_busy": self.node_cpu_s / self.elapsed_s,
            "node_cpu_us_per_delivery": per_delivery_us.round(),
            "rss_kib_connected": self.rss_connected_kib, "rss_kib_after": self.rss_after_kib,
            "streams_ended_early": self.ended_early, "publishes_refused": self.refused,
        })
    }
}

/// `n` subscribers (over connections of `per_connection` streams) follow the feed while
/// `rate` msg/s are published for `seconds`.
async fn phase(
    fed: &LocalFederation,
    n: usize,
    a: &SubscribersArgs,
    offset: &mut usize,
) -> anyhow::Result<Phase> {
    let messages = (a.rate * a.seconds) as usize;
    let start = Instant::now();
    // Nanoseconds after `start` at which message i was handed to the publish call.
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..messages).map(|_| AtomicU64::new(0)).collect());
    let deliveries = Arc::new(AtomicU64::new(0));
    // Every stream's latencies, kept as they arrive: a stream still waiting at the deadline
    // counts with what it got (its slowest deliveries are the ones that matter).
    let latencies: Arc<std::sync::Mutex<Vec<f64>>> = Arc::default();
    let ended_early = Arc::new(AtomicU64::new(0));
    let base = *offset;
    // Subscribers follow from the current head: what earlier phases stored is not replayed.
    let head = fed
        .connect(HUB, "operator")?
        .admin()
        .status(pb::StatusRequest {})
        .await?
        .into_inner()
        .last_seq;
    let mut conns = Vec::new();
    let mut tasks = Vec::with_capacity(n);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(n.max(1));
    for s in 0..n {
        if s % a.per_connection.max(1) == 0 {
            conns.push(fed.connect(HUB, "analyst")?);
        }
        let mut client = conns.last().expect("a connection was just opened").client();
        let (sent, deliveries, ended_early, ready, latencies) = (
            sent.clone(),
            deliveries.clone(),
            ended_early.clone(),
            ready_tx.clone(),
            latencies.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(64);
            let keep = |lat: Vec<f64>| {
                if let Ok(mut all) = latencies.lock() {
                    all.extend(lat);
                }
            };
            let Ok(resp) = client
                .subscribe(pb::SubscribeRequest {
                    after_seq: head,
                    ..Default::default()
                })
                .await
            else {
                ended_early.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let _ = ready.send(()).await;
            let mut stream = resp.into_inner();
            let mut got = 0;
            loop {
                match stream.message().await {
                    Ok(Some(item)) => {
                        let now = start.elapsed().as_nanos() as u64;
                        let i = match item.content.and_then(|c| c.body) {
                            Some(pb::content::Body::FreeText(t)) => t
                                .title
                                .strip_prefix("bench ")
                                .and_then(|n| n.parse::<usize>().ok()),
                            _ => None,
                        };
                        if let Some(i) = i.and_then(|i| i.checked_sub(base))
                            && i < messages
                        {
                            let t0 = sent[i].load(Ordering::Relaxed);
                            lat.push(now.saturating_sub(t0) as f64 / 1e6);
                            deliveries.fetch_add(1, Ordering::Relaxed);
                            got += 1;
                            // Kept in slices, so an aborted stream still counts.
                            if got == messages || lat.len() >= 64 {
                                keep(std::mem::take(&mut lat));
                            }
                            if got == messages {
                                return;
                            }
                        }
                    }
                    _ => {
                        keep(lat);
                        ended_early.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }));
    }
    drop(ready_tx);
    // Every stream is open (or failed) before publishing starts; bounded.
    let mut open = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while open < n && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), ready_rx.recv()).await {
            Ok(Some(())) => open += 1,
            Ok(None) => break,
            Err(_) => {}
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_connected_kib = fed.rss_kib_of(HUB);

    let publisher = fed.connect(HUB, "analyst")?;
    let cpu_before = cpu_seconds(fed);
    let t_phase = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / a.rate.max(1) as f64);
    let mut publishes = Vec::with_capacity(messages);
    for (i, slot) in sent.iter().enumerate() {
        tokio::time::sleep_until((t_phase + interval * i as u32).into()).await;
        let mut req = free_text(a.size);
        if let Some(pb::publish_request::Body::FreeText(t)) = &mut req.body {
            t.title = format!("bench {}", base + i);
        }
        slot.store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let mut c = publisher.client();
        publishes.push(tokio::spawn(async move { c.publish(req).await.is_ok() }));
    }
    let mut refused = 0;
    for p in publishes {
        if !p.await? {
            refused += 1;
        }
    }
    // Wait for every subscriber to have every message, bounded.
    let deadline = Instant::now() + Duration::from_secs(60);
    while deliveries.load(Ordering::Relaxed) < (messages * n) as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed_s = t_phase.elapsed().as_secs_f64();
    let node_cpu_s = cpu_seconds(fed)[0] - cpu_before[0];
    let rss_after_kib = fed.rss_kib_of(HUB);
    for t in tasks {
        t.abort();
    }
    let mut latency = latencies.lock().map(|v| v.clone()).unwrap_or_default();
    latency.sort_by(|a, b| a.total_cmp(b));
    *offset += messages;
    Ok(Phase {
        subscribers: n,
        messages,
        deliveries: deliveries.load(Ordering::Relaxed),
        elapsed_s,
        latency,
        node_cpu_s,
        rss_connected_kib,
        rss_after_kib,
        ended_early: ended_early.load(Ordering::Relaxed),
        refused,
    })
}

pub async fn run(a: SubscribersArgs, out: Output) -> anyhow::Result<()> {
    let mut specs = bench_orgs(&[HUB]);
    specs[0].static_peers = false;
    let (tmp, _cleanup) = work_dir(a.dir.as_deref(), "bluewire-subs");
    let mut fed = LocalFederation::create(&tmp, &specs, &unlimited_client())?;
    fed.start_all()?;
    fed.wait_ready(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = fed.rss_kib_of(HUB);
    let mut offset = 0;
    eprintln!(
        "baseline: 1 subscriber, {} msg/s for {} s…",
        a.rate, a.seconds
    );
    let one = phase(&fed, 1, &a, &mut offset).await?;
    eprintln!(
        "{} subscribers, {} msg/s for {} s…",
        a.subscribers, a.rate, a.seconds
    );
    let many = phase(&fed, a.subscribers, &a, &mut offset).await?;
    fed.stop_all();

    // Cores busy with many subscribers, less with one, per added subscriber.
    let cpu_per_sub = (many.node_cpu_s / many.elapsed_s - one.node_cpu_s / one.elapsed_s)
        / (a.subscribers.saturating_sub(1)).max(1) as f64;
    let mem_per_sub = (many.rss_connected_kib as f64 - one.rss_connected_kib as f64)
        / (a.subscribers.saturating_sub(1)).max(1) as f64;
    let result = serde_json::json!({
        "workload": {"subscribers": a.subscribers, "per_connection": a.per_connection, "rate": a.rate,
                     "seconds": a.seconds, "payload_bytes": a.size},
        "idle_rss_kib": idle_rss,
        "one_subscriber": one.json(),
        "many_subscribers": many.json(),
        "per_added_subscriber": {"node_cpu_ms_per_s": cpu_per_sub * 1e3, "rss_kib": mem_per_sub},
    });
    match out {
        Output::Json => println!("{result}"),
        Output::Table => {
            for p in [&one, &many] {
                println!(
                    "{} subscriber(s) at {} msg/s: {}/{} deliveries, {:.0}/s; latency p50 {:.2} ms, p99 {:.2} ms; node CPU {:.2} cores ({:.0} µs per delivery); RSS {:.1} MiB with the streams open, {:.1} MiB after; {} stream(s) ended early",
                    p.subscribers,
                    a.rate,
                    p.deliveries,
                    p.messages * p.subscribers,
                    p.deliveries as f64 / p.elapsed_s,
                    percentile(&p.latency, 0.5),
                    percentile(&p.latency, 0.99),
                    p.node_cpu_s / p.elapsed_s,
                    p.node_cpu_s * 1e6 / p.deliveries.max(1) as f64,
                    p.rss_connected_kib as f64 / 1024.0,
                    p.rss_after_kib as f64 / 1024.0,
                    p.ended_early
                );
            }
            println!(
                "each added subscriber: {:.2} ms of node CPU per second, {:.0} KiB of node memory (idle node {:.1} MiB)",
                cpu_per_sub * 1e3,
                mem_per_sub,
                idle_rss as f64 / 1024.0
            );
        }
    }
    Ok(())
}
