//! `bluewire bench catchup`: a receiver that was down while N messages were published
//! starts again and catches up; the rate is N over the time from its start to the moment
//! its store holds all of them. The origin's own publish rate, measured in the same run, is
//! the baseline. A benchmark, not a test: bounded in count and time, asserts nothing.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use super::{bench_orgs, cpu_seconds, held, publish_n, unlimited_client, work_dir};
use crate::Output;
use crate::local::LocalFederation;

#[derive(Debug, Args)]
pub struct CatchupArgs {
    /// Messages published while the receiver is down.
    #[arg(long, default_value_t = 100_000)]
    pub messages: usize,
    /// Publishes in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Where to build the federation (default: a temporary directory, removed after).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

pub async fn run(a: CatchupArgs, out: Output) -> anyhow::Result<()> {
    let specs = bench_orgs(&["pub-a", "recv-b"]);
    let (tmp, _cleanup) = work_dir(a.dir.as_deref(), "bluewire-catchup");
    let mut fed = LocalFederation::create(&tmp, &specs, &unlimited_client())?;
    fed.start_all()?;
    fed.wait_ready(Duration::from_secs(30)).await?;
    let publisher = fed.connect("pub-a", "analyst")?;
    let receiver = fed.connect("recv-b", "operator")?;
    let before = held(&receiver).await?;
    fed.stop("recv-b");

    eprintln!(
        "recv-b is down; publishing {} messages of {} B at pub-a…",
        a.messages, a.size
    );
    let t = Instant::now();
    publish_n(&publisher, a.messages, a.concurrency, a.size).await?;
    let publish_s = t.elapsed().as_secs_f64();

    eprintln!("starting recv-b…");
    let cpu_before = cpu_seconds(&fed);
    let started = Instant::now();
    fed.start("recv-b")?;
    fed.wait_org_ready("recv-b", Duration::from_secs(60))
        .await?;
    let ready = started.elapsed();
    let target = before + a.messages as u64;
    // Bounded: at least 1,000 msg/s, or the benchmark gives up and says so.
    let deadline = Instant::now() + Duration::from_secs(60 + a.messages as u64 / 1000);
    let mut first: Option<Duration> = None;
    let mut have = before;
    while have < target && Instant::now() < deadline {
        have = held(&receiver).await?;
        if have > before && first.is_none() {
            first = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let done = started.elapsed();
    let caught_up = have.saturating_sub(before);
    let cpu: Vec<f64> = cpu_seconds(&fed)
        .iter()
        .zip(&cpu_before)
        .map(|(a, b)| a - b)
        .collect();
    let rss = fed.rss_kib();
    fed.stop_all();

    let first = first.unwrap_or(done);
    let from_start = caught_up as f64 / done.as_secs_f64();
    let from_first = caught_up as f64 / (done - first).as_secs_f64().max(1e-3);
    let publish_rate = a.messages as f64 / publish_s;
    let result = serde_json::json!({
        "workload": {"messages": a.messages, "payload_bytes": a.size, "concurrency": a.concurrency},
        "publish_while_down": {"elapsed_s": publish_s, "msg_per_s": publish_rate.round()},
        "catch_up": {"caught_up": caught_up, "ready_s": ready.as_secs_f64(),
                     "first_arrival_s": first.as_secs_f64(), "done_s": done.as_secs_f64(),
                     "msg_per_s_from_start": from_start.round(),
                     "msg_per_s_from_first_arrival": from_first.round(),
                     "ratio_to_publish_rate": from_start / publish_rate,
                     "cpu_s": {"pub-a": cpu.first(), "recv-b": cpu.get(1)},
                     "cpu_us_per_msg": (cpu.iter().sum::<f64>() * 1e6 / caught_up.max(1) as f64).round()},
        "rss_kib_after": rss.iter().map(|(o, k)| serde_json::json!({"org": o, "kib": k})).collect::<Vec<_>>(),
    });
    match out {
        Output::Json => println!("{result}"),
        Output::Table => {
            println!(
                "published {} messages at pub-a while recv-b was down: {publish_s:.1} s = {publish_rate:.0} msg/s (baseline)",
                a.messages
            );
            println!(
                "recv-b caught up {caught_up} in {:.2} s from its start = {from_start:.0} msg/s ({:.2}x the publish rate); ready after {:.2} s, first message after {:.2} s, {from_first:.0} msg/s from then",
                done.as_secs_f64(),
                from_start / publish_rate,
                ready.as_secs_f64(),
                first.as_secs_f64()
            );
            println!(
                "CPU during catch-up: pub-a {:.1} s, recv-b {:.1} s ({:.0} µs per message)",
                cpu.first().copied().unwrap_or(0.0),
                cpu.get(1).copied().unwrap_or(0.0),
                cpu.iter().sum::<f64>() * 1e6 / caught_up.max(1) as f64
            );
        }
    }
    if caught_up < a.messages as u64 {
        anyhow::bail!(
            "recv-b caught up {caught_up} of {} messages within the time bound",
            a.messages
        );
    }
    Ok(())
}
