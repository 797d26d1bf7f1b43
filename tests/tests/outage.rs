//! A peer is down while the origin publishes 1,000 messages; when it comes
//! back on the same port it receives every one of them exactly once.

use std::collections::HashSet;

use bluewire_tests::{OrgSpec, TestFederation, assert_eventually, free_text, item_id, pb};
use tokio::task::JoinSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peer_down_during_1000_publishes_receives_all_exactly_once_after_restart() {
    let fed = TestFederation::new(&[
        OrgSpec::csirt("csirt-be", "BE"),
        OrgSpec::csirt("csirt-fr", "FR"),
    ])
    .await;
    fed.stop("csirt-fr").await;

    let client = fed.client("csirt-be", "analyst").client();
    let mut published = Vec::with_capacity(1000);
    for batch in 0..20 {
        let mut set = JoinSet::new();
        for i in 0..50 {
            let mut c = client.clone();
            set.spawn(async move {
                c.publish(free_text(&format!("outage message {batch}-{i}")))
                    .await
                    .map(|r| r.into_inner())
            });
        }
        while let Some(r) = set.join_next().await {
            let r = r
                .expect("publish task")
                .expect("publish while peer is down");
            assert_eq!(r.queued_for, ["csirt-fr"]);
            published.push(r.id);
        }
    }
    let published: HashSet<String> = published.into_iter().collect();
    assert_eq!(published.len(), 1000, "publish returned duplicate ids");

    // While B is down, A keeps everything queued for it.
    let peers = fed.peers("csirt-be").await;
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].outbox_depth, 1000, "{peers:?}");

    fed.restart("csirt-fr").await;

    let fr_admin = fed.client("csirt-fr", "operator").admin();
    assert_eventually!(
        {
            let mut a = fr_admin.clone();
            matches!(a.status(pb::StatusRequest {}).await, Ok(s) if s.get_ref().messages >= 1000)
        },
        "csirt-fr did not receive 1000 messages after restart: {:?}",
        fed.peers("csirt-be").await
    );
    assert_eventually!(
        fed.peers("csirt-be")
            .await
            .iter()
            .all(|p| p.outbox_depth == 0),
        "csirt-be outbox not drained: {:?}",
        fed.peers("csirt-be").await
    );

    let feed = fed.feed("csirt-fr", Some("csirt-be")).await;
    let ids: Vec<String> = feed.iter().map(item_id).collect();
    let distinct: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), 1000, "feed has duplicates or extras");
    assert_eq!(
        distinct, published,
        "feed ids differ from what was published"
    );
    assert!(
        feed.iter()
            .all(|i| i.verified && i.signer_org == "csirt-be")
    );
    let status = fr_admin
        .clone()
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.messages, 1000);
    let be = fed.peers("csirt-be").await;
    assert_eq!(be[0].outbox_depth, 0);
    assert!(be[0].delivered >= 1000, "{be:?}");
}
