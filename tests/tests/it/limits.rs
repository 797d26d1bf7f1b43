//! Rate limits per peer organisation and per user: a peer or a client that
//! asks too much is slowed down, told why, and loses nothing; others are not
//! affected.

use bluewire_node::envelope::seal;
use bluewire_tests::{OrgSpec, TestFederation, assert_eventually, content, free_text, pb};
use tonic::Code;

const BE: &str = "csirt-be";
const FR: &str = "csirt-fr";

/// csirt-fr's node with tight limits (edited into its node.toml, restarted).
async fn federation_with_tight_limits_at_fr() -> TestFederation {
    let fed = TestFederation::new(&[OrgSpec::csirt(BE, "BE"), OrgSpec::csirt(FR, "FR")]).await;
    fed.stop(FR).await;
    let path = &fed.info(FR).config_path;
    let toml = std::fs::read_to_string(path).unwrap();
    let mut tight = toml.clone();
    for (key, value) in [
        ("peer_rate_per_sec = 20000", "peer_rate_per_sec = 200"),
        ("peer_burst = 40000", "peer_burst = 40"),
        ("client_rate_per_sec = 5000", "client_rate_per_sec = 2"),
        ("client_burst = 10000", "client_burst = 5"),
    ] {
        assert!(
            tight.contains(key),
            "node.toml template lacks `{key}`:\n{toml}"
        );
        tight = tight.replacen(key, value, 1);
    }
    std::fs::write(path, tight).unwrap();
    fed.restart(FR).await;
    fed
}

async fn counter(fed: &TestFederation, org: &str, series: &str) -> u64 {
    fed.metric(org, series).await.unwrap_or(0.0) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_over_its_rate_is_paced_and_loses_nothing() {
    let fed = federation_with_tight_limits_at_fr().await;
    // 300 messages at once: far over csirt-fr's 40-envelope burst.
    let client = fed.client(BE, "analyst").client();
    let mut ids = Vec::new();
    for i in 0..300 {
        let r = client
            .clone()
            .publish(free_text(&format!("burst {i}")))
            .await
            .expect("publish at csirt-be (not limited)")
            .into_inner();
        ids.push(r.id);
    }
    let limited = "bluewire_rate_limited_total{kind=\"peer\",who=\"csirt-be\"}";
    assert_eventually!(
        counter(&fed, FR, limited).await > 0,
        "csirt-fr never deferred anything from csirt-be"
    );
    // Every message arrives, exactly once, in spite of the limit.
    let fr = fed.client(FR, "operator").admin();
    assert_eventually!(
        {
            let mut a = fr.clone();
            matches!(a.status(pb::StatusRequest {}).await, Ok(s) if s.get_ref().messages == 300)
        },
        "csirt-fr did not end with exactly 300 messages: {:?}",
        fed.peers(BE).await
    );
    // (Read from the store: csirt-fr's client API is tightly limited here.)
    let store = fed.node(FR).store.clone();
    for id in &ids {
        assert!(
            store.find_by_id(id).unwrap().len() == 1,
            "{id} missing at csirt-fr"
        );
    }
    drop(store);
    assert_eventually!(
        fed.peers(BE).await.iter().all(|p| p.outbox_depth == 0),
        "csirt-be's outbox never drained: {:?}",
        fed.peers(BE).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn surplus_envelopes_in_one_call_are_answered_retry_later() {
    let fed = federation_with_tight_limits_at_fr().await;
    let key = fed.signing_key(BE);
    let envelopes: Vec<pb::Envelope> = (0..100)
        .map(|i| seal(&key, &content(BE, &format!("crafted {i}"))))
        .collect();
    let results = fed
        .node_conn(BE, FR)
        .federation()
        .deliver(pb::DeliverRequest {
            envelopes,
            ..Default::default()
        })
        .await
        .expect("Deliver answers per envelope")
        .into_inner()
        .results;
    assert_eq!(results.len(), 100);
    let later: Vec<_> = results
        .iter()
        .filter(|r| r.outcome == pb::DeliveryOutcome::RetryLater as i32)
        .collect();
    // The burst (40, less the Deliver call itself and any Hello) went through.
    assert!(
        (50..=70).contains(&later.len()),
        "{} of 100 deferred",
        later.len()
    );
    assert!(
        later[0].reason.contains("limits.peer_rate_per_sec"),
        "{}",
        later[0].reason
    );
    // Deferred ones come last and were not stored.
    let first_later = results
        .iter()
        .position(|r| r.outcome == pb::DeliveryOutcome::RetryLater as i32)
        .unwrap();
    assert!(
        results[first_later..]
            .iter()
            .all(|r| r.outcome == pb::DeliveryOutcome::RetryLater as i32)
    );
    assert!(
        results[..first_later]
            .iter()
            .all(|r| r.outcome == pb::DeliveryOutcome::Accepted as i32),
        "{results:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_over_its_rate_is_refused_with_the_reason_and_others_go_on() {
    let fed = federation_with_tight_limits_at_fr().await;
    let analyst = fed.client(FR, "analyst").client();
    let mut refused = None;
    for i in 0..20 {
        match analyst
            .clone()
            .publish(free_text(&format!("chatty {i}")))
            .await
        {
            Ok(_) => {}
            Err(s) => {
                refused = Some(s);
                break;
            }
        }
    }
    let s = refused.expect("20 publishes at once never hit a 5-request burst");
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert!(
        s.message().contains("limits.client_rate_per_sec"),
        "{}",
        s.message()
    );
    // Another user of the same node has a bucket of its own; admin calls
    // are not limited.
    fed.client(FR, "operator")
        .client()
        .publish(free_text("operator still heard"))
        .await
        .expect("another user is not limited by the analyst's rate");
    for _ in 0..20 {
        fed.admin(FR)
            .status(pb::StatusRequest {})
            .await
            .expect("admin calls are not rate limited");
    }
    // The bucket refills: after a second the analyst may publish again.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    analyst
        .clone()
        .publish(free_text("after a pause"))
        .await
        .expect("the analyst's bucket refilled");
}
