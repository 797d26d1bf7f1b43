//! `bluewire bench floor --sign` through the real binary: floor processes (an origin and two
//! receivers) over mutual TLS, each message signed at the origin with the run's key and
//! checked at every receiver. A message whose signature did not verify never reaches its
//! subscriber, and the bench fails when a feed item arrives without its signature checked
//! (a process that ignored its key), so every message delivered everywhere is every
//! signature checked and accepted.

mod common;

use std::time::Duration;

use common::bw_in;

#[test]
fn the_signed_floor_delivers_every_message_everywhere() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = bw_in(
        tmp.path(),
        &[
            "--output",
            "json",
            "bench",
            "floor",
            "--sign",
            "--receivers",
            "2",
            "--messages",
            "100",
            "--concurrency",
            "8",
            "--rate",
            "100",
            "--seconds",
            "1",
            "--dir",
            "floor",
        ],
        Duration::from_secs(120),
    )
    .expect_ok("bench floor --sign");
    let result = run.json();
    assert_eq!(result["workload"]["signed"], true, "{result}");
    assert!(
        result["floor"]
            .as_str()
            .is_some_and(|f| f.contains("signed at the origin")),
        "{result}"
    );
    assert_eq!(
        result["throughput"]["delivered_everywhere"], 100,
        "{result}"
    );
    assert_eq!(result["paced"][0]["samples"], 100, "{result}");
    // The clients' own CPU is reported beside the nodes', as NATS's side reports its clients'.
    for phase in [&result["throughput"], &result["paced"][0]] {
        assert!(
            phase["client_cpu_us_per_msg"]
                .as_f64()
                .is_some_and(|c| c >= 0.0),
            "{result}"
        );
    }
}
