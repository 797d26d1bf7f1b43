//! The fault harness: real nodes on loopback, links through fault proxies, faults injected
//! while messages flow, and a report of what each receiver got.
//!
//!     cargo run --release -p bluewire-tests --bin bw-faults -- heal [--cycles 10] [--cut-secs 16] [--messages 20]
//!     cargo run --release -p bluewire-tests --bin bw-faults -- chaos [--messages 20000] [--kills 20] [--cuts 10] [--slow 5] [--seed N]
//!
//! `heal`: csirt-be reaches csirt-fr through a proxy with the shipped `[delivery]` settings.
//! Each cycle first times a batch on the healthy link (the baseline), then black-holes the
//! link for `--cut-secs` (the open connection freezes for good, as a route that disappears
//! leaves TCP retransmitting into nothing), publishes the batch during the cut, heals, and
//! times the first and the last message's arrival after the heal. It prints each cycle and
//! the medians and maxima, then checks csirt-fr holds every message exactly once; exit
//! status 1 on any loss or duplicate.
//!
//! `chaos`: three node processes (csirt-be publishes, csirt-fr and cert-eu receive behind
//! proxies), `--messages` publishes 16 at a time, and `--kills` kill -9s of random nodes
//! (the origin included, each restarted after 0.1–1.5 s), `--cuts` link cuts (black hole
//! or refusal, 0.5–4 s) and `--slow` slow periods (a receiver's link capped at 32–256 KiB/s
//! for 1–5 s) spread over the run (`tests/src/chaos.rs`). Reports acknowledged /
//! lost / duplicated per node; exit status 1 on any loss or duplicate.

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bluewire_tests::{TestFederation, item_id};

const POLL: Duration = Duration::from_millis(5);

struct Args {
    scenario: Scenario,
    cycles: usize,
    cut: Duration,
    messages: usize,
    kills: usize,
    cuts: usize,
    slow: usize,
    seed: u64,
}

#[derive(PartialEq)]
enum Scenario {
    Heal,
    Chaos,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut it = args.iter();
    let scenario = match it.next().map(String::as_str) {
        Some("heal") => Scenario::Heal,
        Some("chaos") => Scenario::Chaos,
        Some(other) => {
            return Err(format!(
                "unknown scenario {other:?}; the scenarios are: heal, chaos"
            ));
        }
        None => return Err("name a scenario: heal or chaos".into()),
    };
    let chaos = scenario == Scenario::Chaos;
    let mut a = Args {
        scenario,
        cycles: 10,
        cut: Duration::from_secs(16),
        messages: if chaos { 20_000 } else { 20 },
        kills: 20,
        cuts: 10,
        slow: 5,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let n: u64 = value
            .parse()
            .map_err(|_| format!("{flag} {value:?}: expected a whole number"))?;
        match flag.as_str() {
            "--cycles" => a.cycles = n.clamp(1, 1000) as usize,
            "--cut-secs" => a.cut = Duration::from_secs(n.clamp(1, 600)),
            "--messages" => a.messages = n.clamp(1, 1_000_000) as usize,
            "--kills" if chaos => a.kills = n.min(1000) as usize,
            "--cuts" if chaos => a.cuts = n.min(1000) as usize,
            "--slow" if chaos => a.slow = n.min(1000) as usize,
            "--seed" if chaos => a.seed = n,
            _ => {
                return Err(format!(
                    "unknown flag {flag}; flags: heal --cycles --cut-secs --messages, chaos --messages --kills --cuts --slow --seed"
                ));
            }
        }
    }
    Ok(a)
}

/// Wait until csirt-fr holds more than `from` messages (first) and at least `until` (all);
/// the times from `t0`.
async fn arrivals(
    fed: &TestFederation,
    from: u64,
    until: u64,
    t0: Instant,
) -> (Duration, Duration) {
    let deadline = t0 + Duration::from_secs(120);
    let mut first = None;
    loop {
        let n = fed.message_count("csirt-fr").await;
        if n > from && first.is_none() {
            first = Some(t0.elapsed());
        }
        if n >= until {
            return (first.unwrap_or_default(), t0.elapsed());
        }
        if Instant::now() > deadline {
            panic!("csirt-fr has {n} of {until} messages two minutes after the heal");
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn publish(fed: &TestFederation, tag: &str, n: usize, ids: &mut Vec<String>) {
    for i in 0..n {
        ids.push(fed.publish("csirt-be", &format!("{tag} {i}")).await.id);
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

async fn heal(a: Args) -> ExitCode {
    let fed = TestFederation::be_fr_through_a_proxy().await;
    let mut ids = Vec::new();
    let (mut base, mut first, mut all) = (Vec::new(), Vec::new(), Vec::new());
    println!(
        "heal: {} cycles, cut {} s, {} messages per batch; shipped [delivery] settings",
        a.cycles,
        a.cut.as_secs(),
        a.messages
    );
    println!("cycle  healthy-link batch  first after heal  all after heal");
    for cycle in 0..a.cycles {
        let n0 = fed.message_count("csirt-fr").await;
        let t0 = Instant::now();
        publish(&fed, &format!("healthy {cycle}"), a.messages, &mut ids).await;
        let (_, b) = arrivals(&fed, n0, n0 + a.messages as u64, t0).await;

        let n1 = fed.message_count("csirt-fr").await;
        fed.link("csirt-fr").cut();
        publish(&fed, &format!("cut {cycle}"), a.messages, &mut ids).await;
        tokio::time::sleep(a.cut).await;
        fed.link("csirt-fr").heal();
        let healed = Instant::now();
        let (f, l) = arrivals(&fed, n1, n1 + a.messages as u64, healed).await;
        println!("{cycle:>5}  {:>18}  {:>16}  {:>14}", ms(b), ms(f), ms(l));
        base.push(b);
        first.push(f);
        all.push(l);
    }
    let max = |v: &[Duration]| v.iter().max().copied().unwrap_or_default();
    println!(
        "median  {:>18}  {:>16}  {:>14}",
        ms(median(&mut base)),
        ms(median(&mut first)),
        ms(median(&mut all))
    );
    println!(
        "max     {:>18}  {:>16}  {:>14}",
        ms(max(&base)),
        ms(max(&first)),
        ms(max(&all))
    );

    let feed = bluewire_tests::backlog(&fed.client("csirt-fr", "analyst"), Some("csirt-be")).await;
    let got: Vec<String> = feed.iter().map(item_id).collect();
    let distinct: HashSet<&String> = got.iter().collect();
    let want: HashSet<&String> = ids.iter().collect();
    let lost = want.difference(&distinct).count();
    let duplicated = got.len() - distinct.len();
    println!(
        "csirt-fr: acknowledged {} lost {lost} duplicated {duplicated}",
        ids.len()
    );
    if lost > 0 || duplicated > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn chaos(a: Args) -> ExitCode {
    let node_bin = std::env::current_exe()
        .expect("own path")
        .with_file_name("bw-test-node");
    if !node_bin.exists() {
        eprintln!(
            "bw-faults: {} not found: build it with `cargo build -p bluewire-tests --bins` (same profile)",
            node_bin.display()
        );
        return ExitCode::from(2);
    }
    let plan = bluewire_tests::chaos::Plan {
        messages: a.messages,
        kills: a.kills,
        cuts: a.cuts,
        slow: a.slow,
        concurrency: 16,
        seed: a.seed,
    };
    println!(
        "chaos: {} messages, {} kills, {} cuts, {} slow periods, seed {}",
        plan.messages, plan.kills, plan.cuts, plan.slow, plan.seed
    );
    let r = bluewire_tests::chaos::run(&plan, &node_bin, |l| println!("  {l}")).await;
    println!(
        "published {} acknowledged in {:.1} s ({} publishes refused while the origin was down); settled {:.1} s later",
        r.acknowledged,
        r.publishing.as_secs_f64(),
        r.refused_publishes,
        r.settling.as_secs_f64()
    );
    println!("node       acknowledged  lost  duplicated");
    for h in &r.holdings {
        println!(
            "{:<10} {:>12}  {:>4}  {:>10}",
            h.org, h.acknowledged, h.lost, h.duplicated
        );
    }
    if r.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = match parse(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bw-faults: {e}");
            eprintln!(
                "usage: bw-faults heal [--cycles N] [--cut-secs S] [--messages M]\n       bw-faults chaos [--messages M] [--kills K] [--cuts C] [--slow S] [--seed N]"
            );
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match a.scenario {
        Scenario::Heal => rt.block_on(heal(a)),
        Scenario::Chaos => rt.block_on(chaos(a)),
    }
}
