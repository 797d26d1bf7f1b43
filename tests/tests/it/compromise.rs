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
