//! Relay through another member: csirt-be reaches csirt-fr through a fault proxy of its own
//! (tests/src/faultproxy.rs), cert-eu reaches both directly. When the proxy black-holes the
//! link, csirt-be's messages go through cert-eu (store and forward, csirt-be's signature
//! untouched), each arrives exactly once, and `peers` and `policy explain` say which way;
//! csirt-be keeps its own copies until csirt-fr acknowledges them directly.
//! What cert-eu may not see in clear waits for the direct link — unless it is encrypted end
//! to end, which cert-eu carries as ciphertext it cannot read. After the heal, delivery is
//! direct again.

use std::collections::HashSet;
use std::time::Duration;

use bluewire_proto::v1 as pb;
use bluewire_tests::clusters::deliver_as;
use bluewire_tests::{
    FedOptions, TestFederation, assert_eventually, audit_export, be_fr_eu, free_text, item_id,
};

const BE: &str = "csirt-be";
const FR: &str = "csirt-fr";
const EU: &str = "cert-eu";

fn marked(title: &str, tlp: pb::Tlp, to: &str, encrypt: bool) -> pb::PublishRequest {
    pb::PublishRequest {
        marking: Some(pb::Marking {
            tlp: tlp as i32,
            ..Default::default()
        }),
        recipients: vec![to.into()],
        encrypt,
        ..free_text(title)
    }
}

async fn publish(fed: &TestFederation, req: pb::PublishRequest) -> String {
    fed.client(BE, "analyst")
        .client()
        .publish(req)
        .await
        .unwrap_or_else(|e| panic!("publish at {BE}: {e}"))
        .into_inner()
        .id
}

async fn path_to_fr(fed: &TestFederation) -> pb::PeerStatus {
    fed.peers(BE)
        .await
        .into_iter()
        .find(|p| p.org == FR)
        .expect("csirt-fr is a peer of csirt-be")
}

/// Ids of csirt-be's messages in csirt-fr's feed, each as often as it is there.
async fn at_fr(fed: &TestFederation) -> Vec<String> {
    fed.feed(FR, Some(BE)).await.iter().map(item_id).collect()
}

/// csirt-fr's audit records of receiving `id`.
async fn received(fed: &TestFederation, id: &str) -> Vec<pb::AuditRecord> {
    audit_export(fed, FR)
        .await
        .into_iter()
        .filter(|r| r.event == "received" && r.msg_id == id)
        .collect()
}

fn relayed_total(fed: &TestFederation) -> u64 {
    fed.node(EU)
        .render_metrics()
        .lines()
        .find(|l| l.starts_with("bluewire_relayed_total{") && l.contains("csirt-fr"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_link_is_bridged_by_a_member_that_reaches_both_and_nothing_arrives_twice() {
    let fed = TestFederation::with_options(
        &be_fr_eu(),
        FedOptions {
            proxied_paths: vec![(BE.into(), FR.into())],
            ..FedOptions::default()
        },
    )
    .await;
    let link = fed.path(BE, FR);
    // Direct first (csirt-be learns csirt-fr's certificate and encryption key).
    let first = fed.publish(BE, "direct, before the cut").await.id;
    assert_eventually!(
        fed.get(FR, &first).await.is_some(),
        "the first message never reached csirt-fr: {:?}",
        fed.peers(BE).await
    );
    assert_eq!(path_to_fr(&fed).await.path, "direct");

    link.cut();
    let mut during = Vec::new();
    for i in 0..40 {
        during.push(fed.publish(BE, &format!("during the cut {i}")).await.id);
    }
    // Named for csirt-fr alone: cert-eu may not see it, so it waits for the direct link.
    let amber = publish(
        &fed,
        marked("AMBER for csirt-fr", pb::Tlp::Amber, FR, false),
    )
    .await;
    // RED encrypted end to end to csirt-fr: cert-eu carries ciphertext.
    let red = publish(
        &fed,
        marked("RED, sealed for csirt-fr", pb::Tlp::Red, FR, true),
    )
    .await;
    assert_eventually!(
        timeout = Duration::from_secs(60),
        {
            let ids: HashSet<String> = at_fr(&fed).await.into_iter().collect();
            during.iter().all(|id| ids.contains(id)) && ids.contains(&red)
        },
        "csirt-fr did not get the messages through cert-eu: {:?} / {:?} / refused at cert-eu: {:?}",
        fed.peers(BE).await,
        fed.peers(EU).await,
        fed.rejections(EU).await
    );
    let p = path_to_fr(&fed).await;
    assert!(!p.connected, "{p:?}");
    assert_eq!(p.path, "via cert-eu", "{p:?}");
    // csirt-be keeps its own copies until csirt-fr acknowledges them itself.
    assert_eq!(p.outbox_depth, 42, "{p:?}");
    let handed: Vec<_> = audit_export(&fed, BE)
        .await
        .into_iter()
        .filter(|r| r.event == "relayed" && r.msg_id == during[0])
        .collect();
    assert_eq!(handed.len(), 1, "{handed:?}");
    assert_eq!(handed[0].peer, EU);
    // The origin's signature is what csirt-fr verified; the path is in its audit trail.
    let r = received(&fed, &during[0]).await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].peer, EU);
    assert_eq!(r[0].detail, "relayed: csirt-be via cert-eu");
    // csirt-fr opens the RED body; cert-eu never stored it as a message of its own.
    let got = fed.get(FR, &red).await.expect("RED at csirt-fr");
    assert!(got.end_to_end, "{got:?}");
    assert!(fed.get(EU, &red).await.is_none());
    assert!(fed.get(EU, &amber).await.is_none());
    assert!(
        fed.get(FR, &amber).await.is_none(),
        "AMBER went through cert-eu"
    );
    // policy explain says which way, and why the AMBER message does not go that way.
    let explained = fed
        .admin(BE)
        .explain(pb::ExplainRequest {
            message_id: amber.clone(),
            draft: None,
            to: FR.into(),
        })
        .await
        .expect("explain")
        .into_inner()
        .recipients;
    assert_eq!(explained.len(), 1);
    assert!(
        explained[0]
            .path
            .starts_with("via cert-eu (not for this message: cert-eu may not see it"),
        "{explained:?}"
    );
    assert_eventually!(
        fed.peers(EU)
            .await
            .iter()
            .any(|p| p.org == FR && p.relay_depth == 0),
        "cert-eu still holds envelopes for csirt-fr: {:?}",
        fed.peers(EU).await
    );
    // A member with a valid certificate hands over csirt-be's message without an
    // instruction from csirt-be: refused, it speaks only for itself.
    let stored = fed.node(EU).store.get(BE, &during[0]).unwrap().unwrap();
    let env = <pb::Envelope as prost::Message>::decode(stored.envelope.as_slice()).unwrap();
    let r = deliver_as(&fed, EU, FR, env).await;
    assert_eq!(r.outcome, pb::DeliveryOutcome::Rejected as i32, "{r:?}");
    assert!(r.reason.contains("no relay instruction"), "{r:?}");

    // Heal: direct again, the AMBER message with it.
    let relayed_before = relayed_total(&fed);
    assert!(relayed_before >= 41, "{relayed_before}");
    link.heal();
    assert_eventually!(
        timeout = Duration::from_secs(30),
        fed.get(FR, &amber).await.is_some(),
        "the AMBER message did not arrive after the heal: {:?}",
        fed.peers(BE).await
    );
    assert_eventually!(
        path_to_fr(&fed).await.path == "direct",
        "csirt-be does not show csirt-fr direct again: {:?}",
        path_to_fr(&fed).await
    );
    let mut after = Vec::new();
    for i in 0..10 {
        after.push(fed.publish(BE, &format!("after the heal {i}")).await.id);
    }
    assert_eventually!(
        {
            let ids: HashSet<String> = at_fr(&fed).await.into_iter().collect();
            after.iter().all(|id| ids.contains(id))
        },
        "messages after the heal did not arrive"
    );
    let r = received(&fed, &after[9]).await;
    assert_eq!((r.len(), r[0].peer.as_str()), (1, BE), "{r:?}");
    assert_eq!(
        relayed_total(&fed),
        relayed_before,
        "relayed after the heal"
    );

    // Exactly once: every message of csirt-be once in csirt-fr's feed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids = at_fr(&fed).await;
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a message arrived twice");
    assert_eq!(ids.len(), 1 + 40 + 2 + 10, "{ids:?}");
}

/// A member has a relay take on what the recipient will answer "retry later" for ever (a
/// cluster message claiming a log index nobody has reached). The relay keeps trying it, in
/// calls of its own, and its own messages still flow; a second copy is not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_a_relay_cannot_hand_on_never_holds_back_its_own_messages() {
    use bluewire_tests::clusters::{self, join};
    let fed = TestFederation::new(&be_fr_eu()).await;
    let c = clusters::create(&fed, BE, "relay-stall", pb::HistoryRule::SinceJoin).await;
    let all = [BE, EU, FR];
    join(&fed, BE, BE, &c.id, EU, pb::ClusterRole::Member, &all).await;
    join(&fed, BE, BE, &c.id, FR, pb::ClusterRole::Member, &all).await;

    let key = fed.signing_key(BE);
    let cert = bluewire_node::pki::load_certs_pem(&fed.info(BE).bundle.node.cert_pem)
        .unwrap()
        .remove(0)
        .to_vec();
    let mut ahead = bluewire_tests::content(BE, "claims a log index nobody has reached");
    ahead.cluster = c.id.clone();
    ahead.cluster_index = 1_000_000_000;
    let env = bluewire_node::relay::instruct(
        &bluewire_node::envelope::seal(&key, &ahead),
        (BE, &cert),
        FR,
        2,
        &key,
        bluewire_tests::now_ms(),
    );
    let r = deliver_as(&fed, BE, EU, env.clone()).await;
    assert_eq!(r.outcome, pb::DeliveryOutcome::Accepted as i32, "{r:?}");
    let again = deliver_as(&fed, BE, EU, env).await;
    assert_eq!(
        again.outcome,
        pb::DeliveryOutcome::Duplicate as i32,
        "{again:?}"
    );

    // cert-eu's own messages reach csirt-fr all the same.
    let mut own = Vec::new();
    for i in 0..5 {
        own.push(fed.publish(EU, &format!("cert-eu's own {i}")).await.id);
    }
    for id in &own {
        assert_eventually!(
            fed.get(FR, id).await.is_some(),
            "cert-eu's message {id} is held back by what it carries: {:?}",
            fed.peers(EU).await
        );
    }
    // It still carries the one csirt-fr keeps deferring (until it gives up on it).
    let p = fed
        .peers(EU)
        .await
        .into_iter()
        .find(|p| p.org == FR)
        .unwrap();
    assert_eq!(p.relay_depth, 1, "{p:?}");
    assert!(fed.get(FR, &ahead.id).await.is_none());
}
