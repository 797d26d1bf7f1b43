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

/// Stopping a node with a subscriber attached ends the subscription and
/// releases the store promptly; the subscriber resumes after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_with_an_open_subscription_is_prompt_and_the_feed_resumes() {
    let fed = TestFederation::new(&[
        OrgSpec::csirt("csirt-be", "BE"),
        OrgSpec::csirt("csirt-fr", "FR"),
    ])
    .await;
    let first = fed.publish("csirt-be", "before the stop").await;
    let mut feed = fed
        .client("csirt-fr", "analyst")
        .client()
        .subscribe(pb::SubscribeRequest::default())
        .await
        .expect("subscribe")
        .into_inner();
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), feed.message())
        .await
        .expect("first item in time")
        .expect("stream ok")
        .expect("an item");
    assert_eq!(item_id(&got), first.id);

    let t0 = std::time::Instant::now();
    fed.stop("csirt-fr").await;
    let stopped_in = t0.elapsed();
    assert!(
        stopped_in < std::time::Duration::from_secs(5),
        "stop took {stopped_in:?} with a subscriber attached"
    );
    // The subscriber sees its stream end (an error or end of stream), not a hang.
    let end = tokio::time::timeout(std::time::Duration::from_secs(5), feed.message())
        .await
        .expect("the stream ends when the node stops");
    assert!(!matches!(end, Ok(Some(_))), "{end:?}");

    fed.restart("csirt-fr").await;
    let second = fed.publish("csirt-be", "after the restart").await;
    let mut feed = fed
        .client("csirt-fr", "analyst")
        .client()
        .subscribe(pb::SubscribeRequest {
            after_seq: got.seq,
            ..Default::default()
        })
        .await
        .expect("subscribe again")
        .into_inner();
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), feed.message())
        .await
        .expect("next item in time")
        .expect("stream ok")
        .expect("an item");
    assert_eq!(item_id(&next), second.id);
}
