//! A short run of the fault harness's chaos scenario (`tests/src/chaos.rs`): three node
//! processes, a publish load, kill -9 of random nodes (the origin included), link cuts and
//! a slow link while it runs; every acknowledged publish ends up at every node exactly once. The long
//! run is `bw-faults chaos` (BENCHMARKS.md).

use std::path::Path;

use bluewire_tests::chaos::{Plan, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kills_and_cuts_during_a_publish_run_lose_and_double_nothing() {
    let plan = Plan {
        messages: 400,
        kills: 3,
        cuts: 2,
        slow: 1,
        concurrency: 8,
        seed: 11,
    };
    let report = run(&plan, Path::new(env!("CARGO_BIN_EXE_bw-test-node")), |l| {
        eprintln!("{l}")
    })
    .await;
    eprintln!("{report:?}");
    assert_eq!(report.acknowledged, plan.messages);
    assert_eq!(report.faults.len(), plan.kills + plan.cuts + plan.slow);
    assert_eq!(report.holdings.len(), 3);
    for h in &report.holdings {
        assert_eq!(
            (h.lost, h.duplicated),
            (0, 0),
            "{} lost or doubled acknowledged messages: {report:?}",
            h.org
        );
    }
}
