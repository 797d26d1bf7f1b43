//! End-to-end encryption of a message body to its named recipients: the origin's node
//! encrypts to each recipient's CA-certified X25519 + ML-KEM-768 key (and its own), every
//! envelope on the way holds only ciphertext, and a recipient's node opens it, validates it
//! as the origin did, and shows it decrypted. A hostile member's sealed envelopes that do not
//! open, or open to something invalid, are refused with the reason.

use bluewire_node::e2e;
use bluewire_node::envelope::seal;
use bluewire_proto::v1 as pb;
use bluewire_tests::clusters::deliver_as;
use bluewire_tests::{
    TestFederation, assert_eventually, be_fr_eu, content, item_title, sealed_red_for,
};
use prost::Message;

#[tokio::test]
async fn an_encrypted_message_is_ciphertext_on_the_wire_and_clear_at_its_recipient() {
    let fed = TestFederation::new(&be_fr_eu()).await;
    let secret = "RED: the actor's second C2 is 203.0.113.77";
    // The origin's node needs csirt-fr's certificate (learnt when its link comes up).
    let mut published = None;
    assert_eventually!(
        {
            let r = fed
                .client("csirt-be", "analyst")
                .client()
                .publish(sealed_red_for("csirt-fr", secret))
                .await;
            match r {
                Ok(r) => {
                    published = Some(r.into_inner());
                    true
                }
                Err(e) if e.message().contains("never seen csirt-fr's certificate") => false,
                Err(e) => panic!("publish --encrypt: {e}"),
            }
        },
        "csirt-be never learnt csirt-fr's certificate"
    );
    let p = published.expect("published");
    assert_eq!(p.queued_for, vec!["csirt-fr".to_string()]);
    assert_eventually!(
        fed.get("csirt-fr", &p.id).await.is_some(),
        "{} never reached csirt-fr",
        p.id
    );
    // At the recipient: shown decrypted, marked end to end; the signed envelope it holds
    // (and re-serves) is ciphertext.
    let at_fr = fed.get("csirt-fr", &p.id).await.expect("held");
    assert!(at_fr.end_to_end && at_fr.verified);
    assert_eq!(item_title(&at_fr), secret);
    let env = at_fr.envelope.expect("envelope");
    let signed = pb::Content::decode(&env.content[..]).expect("content");
    assert!(matches!(signed.body, Some(pb::content::Body::Sealed(_))));
    assert!(!env.content.windows(11).any(|w| w == b"203.0.113.7"));
    // At the origin: readable too (it encrypted to itself as well).
    let at_be = fed.get("csirt-be", &p.id).await.expect("held");
    assert_eq!(item_title(&at_be), secret);
    // Never at cert-eu (not a recipient).
    assert!(fed.get("cert-eu", &p.id).await.is_none());

    // Refused before signing: a kind every node must read, or no named recipient.
    let mut sitrep = sealed_red_for("csirt-fr", "national situation");
    sitrep.kind = pb::Kind::SituationReport as i32;
    let e = fed
        .client("csirt-be", "analyst")
        .client()
        .publish(sitrep)
        .await
        .unwrap_err();
    assert!(e.message().contains("encrypted end to end"), "{e:?}");
    let e = fed
        .client("csirt-be", "analyst")
        .client()
        .publish(pb::PublishRequest {
            recipients: vec![],
            marking: Some(pb::Marking {
                tlp: pb::Tlp::Amber as i32,
                ..Default::default()
            }),
            ..sealed_red_for("csirt-fr", "x")
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("named recipients"), "{e:?}");
}

#[tokio::test]
async fn a_hostile_members_sealed_envelopes_are_refused_with_the_reason() {
    let fed = TestFederation::new(&be_fr_eu()).await;
    let be = fed.signing_key("csirt-be");
    let fr_key = &fed.info("csirt-fr").bundle.node.encryption_key;
    let fr_public = fr_key.public_key("csirt-fr").expect("certified key");
    let sealed_to = |c: &mut pb::Content, keys: &[(&str, &[u8])]| {
        c.recipients = vec!["csirt-fr".into()];
        e2e::seal_body(c, keys).expect("seal");
    };
    // Sealed to a key csirt-fr's certificate does not certify.
    let stranger = e2e::RecipientKey::generate("csirt-fr").expect("key");
    let mut wrong_key = content("csirt-be", "wrong key");
    let stranger_public = stranger.public_key();
    sealed_to(&mut wrong_key, &[(stranger.key_id(), &stranger_public)]);
    let r = deliver_as(&fed, "csirt-be", "csirt-fr", seal(&be, &wrong_key)).await;
    assert_eq!(r.outcome, pb::DeliveryOutcome::Rejected as i32, "{r:?}");
    assert!(r.reason.contains("does not open"), "{r:?}");
    // Opens, but to an empty free-text body the origin's node would never have signed.
    let mut empty = content("csirt-be", "");
    empty.body = Some(pb::content::Body::FreeText(pb::FreeText::default()));
    sealed_to(&mut empty, &[(fr_key.key_id.as_str(), &fr_public)]);
    let r = deliver_as(&fed, "csirt-be", "csirt-fr", seal(&be, &empty)).await;
    assert_eq!(r.outcome, pb::DeliveryOutcome::Rejected as i32, "{r:?}");
    assert!(r.reason.contains("not valid"), "{r:?}");
    // Lifted: cert-eu's ciphertext for csirt-fr pasted into csirt-be's own message.
    let mut theirs = content("cert-eu", "cert-eu's secret");
    sealed_to(&mut theirs, &[(fr_key.key_id.as_str(), &fr_public)]);
    let mut lifted = content("csirt-be", "x");
    lifted.recipients = vec!["csirt-fr".into()];
    lifted.body = theirs.body.clone();
    let r = deliver_as(&fed, "csirt-be", "csirt-fr", seal(&be, &lifted)).await;
    assert_eq!(r.outcome, pb::DeliveryOutcome::Rejected as i32, "{r:?}");
    assert!(r.reason.contains("does not open"), "{r:?}");
    // A sealed body of a kind every node must read.
    let mut control = content("csirt-be", "x");
    control.kind = pb::Kind::Notice as i32;
    sealed_to(&mut control, &[(fr_key.key_id.as_str(), &fr_public)]);
    let r = deliver_as(&fed, "csirt-be", "csirt-fr", seal(&be, &control)).await;
    assert_eq!(r.outcome, pb::DeliveryOutcome::Rejected as i32, "{r:?}");
    assert!(r.reason.contains("cannot be encrypted end to end"), "{r:?}");
    // The lawful one is accepted.
    let mut fine = content("csirt-be", "fine");
    sealed_to(&mut fine, &[(fr_key.key_id.as_str(), &fr_public)]);
    let r = deliver_as(&fed, "csirt-be", "csirt-fr", seal(&be, &fine)).await;
    assert_eq!(r.outcome, pb::DeliveryOutcome::Accepted as i32, "{r:?}");
    let at_fr = fed.get("csirt-fr", &fine.id).await.expect("held");
    assert_eq!(item_title(&at_fr), "fine");
}
