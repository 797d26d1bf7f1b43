//! The chaos run of the fault harness: three node processes (csirt-be publishes; csirt-fr
//! and cert-eu receive, each behind a [`FaultProxy`]), a steady publish load, and faults
//! injected while it runs — `kill -9` of a random node (the origin included) and its restart,
//! link cuts (black hole or refusal) and heals, and slow links (a receiver's link capped at
//! 32–256 KiB/s for a while). At the end every acknowledged publish
//! must be at the origin and at each receiver exactly once. Used by `it::chaos` (a short
//! run) and `bw-faults chaos` (a long one).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{FedOptions, OrgSpec, TestFederation, free_text, item_id};

pub const ORIGIN: &str = "csirt-be";
pub const RECEIVERS: [&str; 2] = ["csirt-fr", "cert-eu"];

/// What to do.
#[derive(Clone, Debug)]
pub struct Plan {
    pub messages: usize,
    pub kills: usize,
    pub cuts: usize,
    /// Periods during which a receiver's link is slow (bandwidth-capped).
    pub slow: usize,
    /// Publishes in flight at once.
    pub concurrency: usize,
    pub seed: u64,
}

/// What one node holds of the acknowledged publishes.
#[derive(Clone, Debug)]
pub struct Holding {
    pub org: String,
    pub acknowledged: usize,
    pub lost: usize,
    pub duplicated: usize,
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct Report {
    pub acknowledged: usize,
    /// Publishes that failed (the origin was down); retried as new messages.
    pub refused_publishes: usize,
    pub faults: Vec<String>,
    pub publishing: Duration,
    /// From the end of publishing until every node held everything (or gave up).
    pub settling: Duration,
    pub holdings: Vec<Holding>,
}

impl Report {
    pub fn clean(&self) -> bool {
        self.holdings
            .iter()
            .all(|h| h.lost == 0 && h.duplicated == 0)
    }
}

/// A small deterministic generator (xorshift64*), so a seed replays the same faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from + 1))
    }
}

/// Run `plan` with node processes from `node_bin` (the `bw-test-node` binary); `log`
/// gets a line per fault.
pub async fn run(plan: &Plan, node_bin: &Path, log: impl Fn(&str)) -> Report {
    let mut specs = vec![OrgSpec::csirt(ORIGIN, "BE").external()];
    specs.push(OrgSpec::csirt(RECEIVERS[0], "FR").external());
    specs.push(
        OrgSpec::new(
            RECEIVERS[1],
            "EU",
            "eu-body",
            &[bluewire_node::pki::Level::Technical],
        )
        .external(),
    );
    let fed = TestFederation::with_options(
        &specs,
        FedOptions {
            proxied: RECEIVERS.iter().map(|s| s.to_string()).collect(),
            shipped_delivery: true,
            ..FedOptions::default()
        },
    )
    .await;
    for org in std::iter::once(ORIGIN).chain(RECEIVERS) {
        fed.spawn_process(org, node_bin).await;
    }

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let refused = Arc::new(Mutex::new(0usize));
    let started = Instant::now();
    let publishers = publish_all(&fed, plan, acked.clone(), refused.clone());
    let faults = inject(&fed, plan, node_bin, acked.clone(), &log);
    let ((), faults) = tokio::join!(publishers, faults);
    let publishing = started.elapsed();
    for r in RECEIVERS {
        fed.link(r).heal();
    }

    let acked: Vec<String> = acked.lock().map(|a| a.clone()).unwrap_or_default();
    let settle_from = Instant::now();
    let holdings = settle(&fed, &acked).await;
    Report {
        acknowledged: acked.len(),
        refused_publishes: refused.lock().map(|r| *r).unwrap_or_default(),
        faults,
        publishing,
        settling: settle_from.elapsed(),
        holdings,
    }
}

/// Publish `plan.messages` acknowledged messages at the origin, `plan.concurrency` at a
/// time; a publish the origin could not take (it was down) is tried again as a new one.
async fn publish_all(
    fed: &TestFederation,
    plan: &Plan,
    acked: Arc<Mutex<Vec<String>>>,
    refused: Arc<Mutex<usize>>,
) {
    let client = fed.client(ORIGIN, "analyst").client();
    let next = Arc::new(Mutex::new(0usize));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..plan.concurrency.max(1) {
        let (mut c, next, acked, refused) =
            (client.clone(), next.clone(), acked.clone(), refused.clone());
        let total = plan.messages;
        set.spawn(async move {
            loop {
                let i = {
                    let mut n = next.lock().expect("counter");
                    if *n >= total {
                        return;
                    }
                    *n += 1;
                    *n - 1
                };
                // Bounded: a publish is retried for at most two minutes.
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    match tokio::time::timeout(
                        Duration::from_secs(10),
                        c.publish(free_text(&format!("chaos {i}"))),
                    )
                    .await
                    {
                        Ok(Ok(r)) => {
                            acked.lock().expect("acked").push(r.into_inner().id);
                            break;
                        }
                        _ if Instant::now() < deadline => {
                            *refused.lock().expect("refused") += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        _ => panic!("the origin took no publish for two minutes"),
                    }
                }
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("publisher task");
    }
}

/// The faults, spread over the run: each waits until its share of the publishes is
/// acknowledged, so all of them happen while messages flow.
async fn inject(
    fed: &TestFederation,
    plan: &Plan,
    node_bin: &Path,
    acked: Arc<Mutex<Vec<String>>>,
    log: &impl Fn(&str),
) -> Vec<String> {
    let mut rng = Rng(plan.seed);
    #[derive(Clone, Copy)]
    enum Fault {
        Kill,
        Cut,
        Slow,
    }
    let mut kinds: Vec<Fault> = std::iter::repeat_n(Fault::Kill, plan.kills)
        .chain(std::iter::repeat_n(Fault::Cut, plan.cuts))
        .chain(std::iter::repeat_n(Fault::Slow, plan.slow))
        .collect();
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let total = kinds.len();
    let mut done = Vec::new();
    let nodes: Vec<&str> = std::iter::once(ORIGIN).chain(RECEIVERS).collect();
    for (k, kind) in kinds.into_iter().enumerate() {
        let threshold = plan.messages * (k + 1) / (total + 1);
        let deadline = Instant::now() + Duration::from_secs(300);
        while acked.lock().map(|a| a.len()).unwrap_or(0) < threshold {
            assert!(
                Instant::now() < deadline,
                "publishing stalled before fault {k}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let line = match kind {
            Fault::Kill => {
                let org = nodes[rng.below(nodes.len() as u64) as usize];
                let down = rng.millis(100, 1500);
                fed.kill_process(org);
                tokio::time::sleep(down).await;
                fed.spawn_process(org, node_bin).await;
                format!("kill -9 {org}, restarted after {} ms", down.as_millis())
            }
            Fault::Cut => {
                let org = RECEIVERS[rng.below(RECEIVERS.len() as u64) as usize];
                let cut = rng.millis(500, 4000);
                let refuse = rng.below(2) == 0;
                if refuse {
                    fed.link(org).refuse();
                } else {
                    fed.link(org).cut();
                }
                tokio::time::sleep(cut).await;
                fed.link(org).heal();
                format!(
                    "link to {org} {} for {} ms",
                    if refuse { "refusing" } else { "black-holed" },
                    cut.as_millis()
                )
            }
            Fault::Slow => {
                let org = RECEIVERS[rng.below(RECEIVERS.len() as u64) as usize];
                let kib = 32 << rng.below(4);
                let slow = rng.millis(1000, 5000);
                fed.link(org).slow(kib * 1024);
                tokio::time::sleep(slow).await;
                fed.link(org).fast();
                format!(
                    "link to {org} capped at {kib} KiB/s for {} ms",
                    slow.as_millis()
                )
            }
        };
        log(&format!(
            "fault {}/{total} at {threshold} acknowledged: {line}",
            k + 1
        ));
        done.push(line);
    }
    done
}

/// Wait (at most three minutes) until every node holds every acknowledged id; what each
/// holds then.
async fn settle(fed: &TestFederation, acked: &[String]) -> Vec<Holding> {
    let want: HashSet<&String> = acked.iter().collect();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut holdings = HashMap::new();
    loop {
        let mut all = true;
        for org in std::iter::once(ORIGIN).chain(RECEIVERS) {
            let feed = crate::backlog(&fed.client(org, "analyst"), Some(ORIGIN)).await;
            let ids: Vec<String> = feed.iter().map(item_id).collect();
            let distinct: HashSet<&String> = ids.iter().collect();
            let lost = want.difference(&distinct).count();
            all &= lost == 0;
            holdings.insert(
                org,
                Holding {
                    org: org.to_string(),
                    acknowledged: want.len(),
                    lost,
                    duplicated: ids.len() - distinct.len(),
                },
            );
        }
        if all || Instant::now() > deadline {
            let mut v: Vec<Holding> = holdings.into_values().collect();
            v.sort_by(|a, b| a.org.cmp(&b.org));
            return v;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
