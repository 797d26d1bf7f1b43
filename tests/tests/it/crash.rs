//! The origin node is a real process and is SIGKILLed while publishes are in
//! flight. After it restarts on the same port and config, every publish it
//! acknowledged is still in its store and reaches the peer exactly once: with
//! `[store] sync = "always"` (the default), and with `sync = "interval"`, whose
//! commits reach the kernel's page cache before the acknowledgement but not the
//! disk (the interval is longer than the test, so the file is never synced
//! before the kill).

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bluewire_node::metrics::STORE_SYNC_INTERVAL;
use bluewire_tests::{
    ConfigEdit, FedOptions, OrgSpec, TestFederation, assert_eventually, free_text, item_id, pb,
};

const TOTAL: usize = 500;
const KILL_AFTER: usize = 300;
const CONCURRENCY: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_publishes_survive_sigkill_and_reach_the_peer_once() {
    survive_sigkill(FedOptions::default(), 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_store_sync_interval_acknowledged_publishes_survive_sigkill_before_any_sync() {
    const NEVER_IN_THIS_TEST_S: u64 = 600;
    let opts = FedOptions {
        config_edits: vec![
            ConfigEdit::set("store", "sync", "\"interval\""),
            ConfigEdit::set("store", "sync_interval_ms", NEVER_IN_THIS_TEST_S * 1000),
        ],
        ..FedOptions::default()
    };
    survive_sigkill(opts, NEVER_IN_THIS_TEST_S as f64).await;
}

/// Publish from a node process, SIGKILL it mid-stream, restart it: nothing acknowledged is
/// lost, and the peer gets it once. `sync_every_s` is the store sync interval the process
/// must report (0: every commit).
async fn survive_sigkill(opts: FedOptions, sync_every_s: f64) {
    let bin = Path::new(env!("CARGO_BIN_EXE_bw-test-node"));
    let fed = TestFederation::with_options(
        &[
            OrgSpec::csirt("csirt-be", "BE").external(),
            OrgSpec::csirt("csirt-fr", "FR"),
        ],
        opts,
    )
    .await;
    fed.spawn_process("csirt-be", bin).await;
    assert_eq!(
        fed.metric("csirt-be", STORE_SYNC_INTERVAL).await,
        Some(sync_every_s),
        "the node process runs with another store sync setting"
    );

    let client = fed.client("csirt-be", "analyst").client();
    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let mut c = client.clone();
        let next = next.clone();
        let acked = acked.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= TOTAL {
                    return;
                }
                match c.publish(free_text(&format!("crash message {i}"))).await {
                    Ok(r) => acked.lock().unwrap().push(r.into_inner().id),
                    // The node is gone: this publish was never acknowledged.
                    Err(_) => return,
                }
            }
        }));
    }

    assert_eventually!(
        acked.lock().unwrap().len() >= KILL_AFTER,
        "only {} publishes acknowledged",
        acked.lock().unwrap().len()
    );
    fed.kill_process("csirt-be");
    for w in workers {
        tokio::time::timeout(Duration::from_secs(30), w)
            .await
            .expect("publishers stop once the node is gone")
            .expect("publisher task");
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();
    let acked_set: HashSet<String> = acked.iter().cloned().collect();
    assert_eq!(acked.len(), acked_set.len(), "an id was acknowledged twice");
    assert!(
        acked.len() < TOTAL,
        "the kill came after every publish was acknowledged; nothing was in flight"
    );

    // Restart the process on the same port and config.
    fed.spawn_process("csirt-be", bin).await;

    // Every acknowledged id is still in the origin's store.
    let be = fed.client("csirt-be", "analyst").client();
    for id in &acked {
        let r = be.clone().get(pb::GetRequest { id: id.clone() }).await;
        assert!(
            r.is_ok(),
            "acknowledged message {id} lost by the crash: {r:?}"
        );
    }

    // ... and eventually at the peer, exactly once.
    let fr = fed.node("csirt-fr");
    assert_eventually!(
        acked
            .iter()
            .all(|id| fr.store.find_by_id(id).unwrap().len() == 1),
        "{} of {} acknowledged messages reached csirt-fr",
        acked
            .iter()
            .filter(|id| fr.store.find_by_id(id).unwrap().len() == 1)
            .count(),
        acked.len()
    );
    assert_eventually!(
        fed.peers("csirt-be")
            .await
            .iter()
            .all(|p| p.outbox_depth == 0),
        "csirt-be outbox not drained after restart: {:?}",
        fed.peers("csirt-be").await
    );
    let feed = fed.feed("csirt-fr", Some("csirt-be")).await;
    let ids: Vec<String> = feed.iter().map(item_id).collect();
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), distinct.len(), "duplicates in csirt-fr's feed");
    assert!(acked_set.iter().all(|id| distinct.contains(id)));
    // Anything else there was published (stored before the kill) but its
    // acknowledgement was lost with the process; it must still be at the origin.
    for id in ids.iter().filter(|id| !acked_set.contains(*id)) {
        let r = be.clone().get(pb::GetRequest { id: id.clone() }).await;
        assert!(r.is_ok(), "csirt-fr has {id} which the origin does not");
    }
}
