//! Key rotation (`pki rotate`): an organisation's node gets a new certificate with fresh TLS,
//! signing and encryption keys. What the old keys signed stays verifiable; what was
//! encrypted to the old key still opens at the node (it keeps the retired key); during the
//! overlap the old certificate is still good, and once it retires (the CRL lists it,
//! reason superseded) its keys sign nothing new — without casting doubt on what they
//! signed before.

use std::time::Duration;

use bluewire_node::envelope::seal;
use bluewire_node::pki::{FederationCa, NodeBundle, RETIRED_DIR, install_staged};
use bluewire_node::signing::SigningKey;
use bluewire_proto::v1 as pb;
use bluewire_tests::clusters::{self, deliver_as};
use bluewire_tests::{
    FedOptions, TestFederation, assert_eventually, be_fr_eu, content, item_title, sealed_red_for,
};

const BE: &str = "csirt-be";
const FR: &str = "csirt-fr";

/// The encryption key ids a sealed message at `org` was encrypted to.
fn sealed_to(env: &pb::Envelope) -> Vec<String> {
    let c = <pb::Content as prost::Message>::decode(&env.content[..]).unwrap();
    match c.body {
        Some(pb::content::Body::Sealed(s)) => s.stanzas.into_iter().map(|s| s.key_id).collect(),
        other => panic!("not sealed: {other:?}"),
    }
}

/// `pki rotate` of `org`'s node with a 1 s overlap, installed, and the node restarted:
/// the new certificate's bundle and the old certificate's serial.
async fn rotate(fed: &TestFederation, org: &str) -> (NodeBundle, String) {
    let dir = fed.info(org).dir.clone();
    let old_cert = std::fs::read_to_string(dir.join("node.crt")).unwrap();
    let old_der = bluewire_node::pki::load_certs_pem(&old_cert)
        .unwrap()
        .remove(0);
    let old_serial = bluewire_node::pki::serial_hex(&old_der).unwrap();
    let mut ca = FederationCa::load(&fed.fed_dir).unwrap();
    let next = ca.rotate_node(&old_der, 30, 1).unwrap();
    next.stage(&dir).unwrap();
    ca.save(&fed.fed_dir).unwrap();
    let retired = install_staged(&dir, &next.serial, &old_serial).unwrap();
    assert_eq!(retired, dir.join(RETIRED_DIR).join(&old_serial));
    fed.stop(org).await;
    fed.restart(org).await;
    (next, old_serial)
}

/// Wait for the overlap of the rotated certificates `serials` to end, then sign the CRL
/// again (`pki crl`): it lists them, reason superseded, and the nodes poll it.
async fn retire(fed: &TestFederation, serials: &[&str]) {
    let mut ca = FederationCa::load(&fed.fed_dir).unwrap();
    let retires_ms = ca
        .issued()
        .into_iter()
        .filter(|c| serials.contains(&c.serial.as_str()))
        .map(|c| c.retires_at.expect("a rotated certificate retires") * 1000)
        .max()
        .expect("rotated certificates");
    let wait = retires_ms + 50 - bluewire_tests::now_ms();
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    ca.refresh_crl().unwrap();
    ca.save(&fed.fed_dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_node_signs_and_opens_with_new_keys_and_keeps_what_the_old_ones_did() {
    let fed = TestFederation::new(&be_fr_eu()).await;
    let old_key_id = fed.info(BE).bundle.node.signing_key.key_id.clone();
    let old_enc_id = fed.info(BE).bundle.node.encryption_key.key_id.clone();
    let before = fed.publish(BE, "signed with the first key").await.id;
    assert_eventually!(
        fed.get(FR, &before).await.is_some(),
        "{before} never arrived"
    );
    // csirt-fr encrypts to csirt-be's first encryption key.
    let mut sealed_old = None;
    assert_eventually!(
        {
            match fed
                .client(FR, "analyst")
                .client()
                .publish(sealed_red_for(BE, "sealed to the first key"))
                .await
            {
                Ok(r) => {
                    sealed_old = Some(r.into_inner().id);
                    true
                }
                Err(e) if e.message().contains("never seen") => false,
                Err(e) => panic!("publish --encrypt: {e}"),
            }
        },
        "csirt-fr never learnt csirt-be's certificate"
    );
    let sealed_old = sealed_old.unwrap();
    assert_eventually!(
        fed.get(BE, &sealed_old).await.is_some(),
        "sealed message never arrived"
    );

    // Rotate, with an overlap the test ends by hand (the CRL is signed again after it).
    let dir = fed.info(BE).dir.clone();
    // The old signing key, as a thief who copied it before the rotation would hold it.
    let old_signing = SigningKey::from_pkcs8_pem(
        BE,
        &std::fs::read_to_string(dir.join("signing.key")).unwrap(),
    )
    .unwrap();
    assert_eq!(old_signing.key_id(), old_key_id);
    let (next, old_serial) = rotate(&fed, BE).await;
    assert_ne!(next.signing_key.key_id, old_key_id);

    // What was encrypted to the old key still opens at csirt-be.
    let got = fed.get(BE, &sealed_old).await.expect("still held");
    assert!(got.end_to_end, "{got:?}");
    assert_eq!(item_title(&got), "sealed to the first key");
    // New messages carry the new key; csirt-fr learns the new certificate and accepts them.
    let after = fed.publish(BE, "signed with the rotated key").await.id;
    assert_eventually!(fed.get(FR, &after).await.is_some(), "{after} never arrived");
    let env = fed.get(FR, &after).await.unwrap().envelope.unwrap();
    assert_eq!(env.key_id, next.signing_key.key_id);
    // csirt-fr encrypts to the new key once it has seen the new certificate.
    let mut sealed_new = None;
    assert_eventually!(
        {
            let r = fed
                .client(FR, "analyst")
                .client()
                .publish(sealed_red_for(BE, "sealed to the rotated key"))
                .await
                .expect("publish --encrypt");
            let id = r.into_inner().id;
            let env = fed.get(FR, &id).await.and_then(|i| i.envelope);
            let to_new = env.is_some_and(|e| sealed_to(&e).contains(&next.encryption_key.key_id));
            if to_new {
                sealed_new = Some(id);
            }
            to_new
        },
        "csirt-fr never encrypted to csirt-be's rotated key"
    );
    let sealed_new = sealed_new.unwrap();
    assert_eventually!(fed.get(BE, &sealed_new).await.is_some(), "never arrived");
    let got = fed.get(BE, &sealed_new).await.unwrap();
    assert_eq!(item_title(&got), "sealed to the rotated key");
    assert!(!sealed_to(got.envelope.as_ref().unwrap()).contains(&old_enc_id));

    // During the overlap the old key is still good: something it signed is accepted.
    let in_overlap = seal(&old_signing, &content(BE, "old key, within the overlap"));
    let r = deliver_as(&fed, BE, FR, in_overlap).await;
    assert_eq!(r.outcome, pb::DeliveryOutcome::Accepted as i32, "{r:?}");
    // The overlap ends: the CRL lists the old certificate (superseded); nodes poll it.
    retire(&fed, &[&old_serial]).await;
    let mut refused = None;
    assert_eventually!(
        timeout = Duration::from_secs(20),
        {
            let late = content(BE, "old key, after its retirement");
            let r = deliver_as(&fed, BE, FR, seal(&old_signing, &late)).await;
            let done = r.outcome == pb::DeliveryOutcome::Rejected as i32;
            if done {
                refused = Some(r);
            }
            done
        },
        "csirt-fr still accepts the retired key"
    );
    let r = refused.unwrap();
    assert!(r.reason.contains("revoked"), "{r:?}");
    // What the old key signed before it retired stays trusted, everywhere.
    for org in [FR, "cert-eu"] {
        let item = fed.get(org, &before).await.expect("held");
        assert_eq!(item.suspect, "", "{org}: {item:?}");
    }
    let own = fed.get(BE, &before).await.unwrap();
    assert_eq!(own.suspect, "", "{own:?}");
    assert!(
        own.verified,
        "csirt-be no longer verifies its own earlier message: {own:?}"
    );
    // The rotated node works on: a new message arrives.
    let last = fed.publish(BE, "after the retirement").await.id;
    assert_eventually!(fed.get(FR, &last).await.is_some(), "{last} never arrived");
}

/// The cluster log lines `org` holds for `id` that record a key rotation, as "actor op".
async fn rekeys(fed: &TestFederation, org: &str, id: &str) -> Vec<String> {
    fed.admin(org)
        .cluster_log_entries(clusters::cref(id))
        .await
        .map(|r| r.into_inner().entries)
        .unwrap_or_default()
        .into_iter()
        .filter(|l| l.op.contains("key rotation"))
        .map(|l| format!("{} {}", l.actor, l.op))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clusters_follow_a_rotation_of_the_convener_and_of_a_member() {
    use pb::{ClusterRole as Role, HistoryRule};
    let fed = TestFederation::with_options(&be_fr_eu(), FedOptions::fast_cluster_sync()).await;
    const EU: &str = "cert-eu";
    let id = clusters::create(&fed, BE, "ops", HistoryRule::SinceJoin)
        .await
        .id;
    for org in [FR, EU] {
        clusters::join(&fed, BE, BE, &id, org, Role::Member, &[BE, FR, EU]).await;
    }
    let first = fed
        .publish_to_cluster(FR, &id, "before the rotations")
        .await
        .unwrap()
        .id;
    assert_eventually!(fed.get(EU, &first).await.is_some(), "{first} never arrived");

    // The convener and a member rotate their keys and restart with the new ones only.
    let (be_next, be_old) = rotate(&fed, BE).await;
    let (fr_next, fr_old) = rotate(&fed, FR).await;
    // Each puts its new certificate in the log by itself: the convener when it starts, the
    // member at its next sync. Every member applies both entries.
    let expected = vec![
        format!(
            "{BE} new node certificate {} (key rotation)",
            be_next.serial
        ),
        format!(
            "{FR} new node certificate {} (key rotation)",
            fr_next.serial
        ),
    ];
    for org in [BE, FR, EU] {
        assert_eventually!(
            rekeys(&fed, org, &id).await == expected,
            "{org}'s log of {id}: {:?}",
            rekeys(&fed, org, &id).await
        );
    }
    fed.await_cluster_head(&id, BE, &[FR, EU]).await;

    // Both act in the cluster with their new keys: the convener sequences, the member's
    // operation is accepted, the member publishes to the cluster.
    clusters::ok(
        clusters::set_role(&fed, BE, &id, EU, Role::Observer).await,
        "the rotated convener sets a role",
    );
    let after = fed
        .publish_to_cluster(FR, &id, "after the rotations")
        .await
        .unwrap()
        .id;
    assert_eventually!(fed.get(EU, &after).await.is_some(), "{after} never arrived");
    let env = fed.get(EU, &after).await.unwrap().envelope.unwrap();
    assert_eq!(env.key_id, fr_next.signing_key.key_id);

    // The overlaps end; the old certificates are listed as superseded. The log (what the old
    // keys did in it included) still verifies, from disk, at a node that starts again.
    retire(&fed, &[&be_old, &fr_old]).await;
    fed.stop(EU).await;
    fed.restart(EU).await;
    assert_eventually!(
        fed.cluster(EU, &id)
            .await
            .is_some_and(|c| c.my_state == "member"),
        "{EU} lost {id} after a restart: {:?}",
        fed.cluster(EU, &id).await
    );
    clusters::ok(
        clusters::leave(&fed, FR, &id).await,
        "the rotated member leaves",
    );
    fed.await_cluster_head(&id, BE, &[EU]).await;
    let c = fed.cluster(EU, &id).await.unwrap();
    let fr = c.members.iter().find(|m| m.org == FR).unwrap();
    assert_eq!(fr.state, "left", "{c:?}");
}
