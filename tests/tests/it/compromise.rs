//! A compromised key, revoked from a stated time (`pki revoke --compromised-since`): what it
//! signed before that time stays trusted, what it signed since is marked suspect in feeds
//! and `get` at every node that holds it, and nothing it signs from then on is accepted.

use std::time::Duration;

use bluewire_node::envelope::{attest, seal};
use bluewire_node::pki::FederationCa;
use bluewire_proto::v1 as pb;
use bluewire_tests::clusters::deliver_as;
use bluewire_tests::{TestFederation, assert_eventually, be_fr_eu, content, now_ms};

#[tokio::test]
async fn what_a_compromised_key_signed_since_the_stated_time_is_suspect_and_refused() {
    let fed = TestFederation::new(&be_fr_eu()).await;
    let before = fed.publish("csirt-be", "before the compromise").await;
    // The CRL states the compromise to the second: leave a clear second between.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let compromised_ms = now_ms();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after = fed.publish("csirt-be", "after the compromise").await;
    for id in [&before.id, &after.id] {
        assert_eventually!(
            fed.get("cert-eu", id).await.is_some() && fed.get("csirt-fr", id).await.is_some(),
            "{id} never arrived"
        );
    }
    assert!(
        fed.get("cert-eu", &after.id)
            .await
            .unwrap()
            .suspect
            .is_empty()
    );

    // Revoked, keys compromised from between the two (nodes poll fed/crl.pem every second).
    let mut ca = FederationCa::load(&fed.fed_dir).unwrap();
    let serials = ca.serials_of_org("csirt-be");
    ca.revoke_compromised(&serials, Some(compromised_ms.div_euclid(1000) + 1))
        .unwrap();
    ca.save(&fed.fed_dir).unwrap();

    for org in ["csirt-fr", "cert-eu"] {
        assert_eventually!(
            !fed.get(org, &after.id).await.unwrap().suspect.is_empty(),
            "{org} never marked the message signed after the compromise as suspect"
        );
        let item = fed.get(org, &after.id).await.unwrap();
        assert!(item.suspect.contains("revoked"), "{}", item.suspect);
        // Before the stated time: still trusted.
        assert_eq!(fed.get(org, &before.id).await.unwrap().suspect, "");
        // The feed says the same.
        let feed = fed.feed(org, Some("csirt-be")).await;
        let suspect: Vec<_> = feed
            .iter()
            .filter(|i| !i.suspect.is_empty())
            .map(bluewire_tests::item_id)
            .collect();
        assert_eq!(suspect, vec![after.id.clone()], "{org}");
    }

    // Whoever holds the key now cannot get anything new accepted: a fresh message signed
    // with it, handed over by cert-eu as a re-share (csirt-be's own links are cut by the
    // CRL), is refused by the revocation rule before anything else.
    let key = fed.signing_key("csirt-be");
    let forged = seal(&key, &content("csirt-be", "signed with the stolen key"));
    let attestation = pb::ForwardAttestation {
        message_id: "x".into(),
        forwarder_org: "cert-eu".into(),
        at_ms: now_ms(),
        content_hash: bluewire_node::envelope::content_hash(&forged.content),
        ..Default::default()
    };
    let reshared = attest(
        &fed.signing_key("cert-eu"),
        &forged,
        &attestation,
        Vec::new(),
    );
    let r = deliver_as(&fed, "cert-eu", "csirt-fr", reshared).await;
    assert_eq!(r.outcome, pb::DeliveryOutcome::Rejected as i32, "{r:?}");
    assert!(r.reason.contains("revoked"), "{r:?}");
    let rejections = fed.rejections("csirt-fr").await;
    assert!(
        rejections.iter().any(|x| x.reason.contains("revoked")),
        "{rejections:#?}"
    );
}

/// A cluster operation signed with a key compromised since a stated time is not sequenced by
/// the convener (nor applied by a member replicating the log); what the key's organisation
/// did in the cluster before stays in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_operation_signed_with_a_compromised_key_is_refused() {
    use bluewire_tests::clusters::{self, join, signed_op};
    let fed = TestFederation::new(&be_fr_eu()).await;
    let all = ["cert-eu", "csirt-be", "csirt-fr"];
    let c = clusters::create(&fed, "cert-eu", "compromise", pb::HistoryRule::SinceJoin).await;
    join(
        &fed,
        "cert-eu",
        "cert-eu",
        &c.id,
        "csirt-be",
        pb::ClusterRole::Member,
        &all,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut ca = FederationCa::load(&fed.fed_dir).unwrap();
    let serials = ca.serials_of_org("csirt-be");
    ca.revoke_compromised(&serials, Some(now_ms().div_euclid(1000)))
        .unwrap();
    ca.save(&fed.fed_dir).unwrap();
    let be_key = fed.signing_key("csirt-be");
    assert_eventually!(
        bluewire_node::known::Known::key_distrusted_since(
            fed.node("cert-eu").as_ref(),
            be_key.key_id()
        )
        .is_some(),
        "cert-eu never loaded the CRL"
    );
    // The stolen key signs csirt-be's departure; the convener refuses to sequence it.
    let head = fed.cluster("cert-eu", &c.id).await.unwrap().head_hash;
    let op = signed_op(
        &fed,
        &c.id,
        &head,
        "csirt-be",
        pb::cluster_op::Op::Leave(pb::LeaveCluster {}),
    );
    let err = fed
        .node("cert-eu")
        .sequence_local(op)
        .await
        .expect_err("sequenced an operation signed with a revoked key");
    assert!(err.to_string().contains("revoked"), "{err}");
    // csirt-be's earlier entries (its invitation and acceptance) stand.
    let info = fed.cluster("cert-eu", &c.id).await.unwrap();
    assert!(
        info.members
            .iter()
            .any(|m| m.org == "csirt-be" && m.state == "member"),
        "{info:?}"
    );
}
