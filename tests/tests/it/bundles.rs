//! A hostile member's offline bundle. csirt-be holds a valid certificate and signing key and
//! writes its own bundle file for csirt-fr by hand, ignoring every rule its node would apply:
//! the importing node applies the delivery rules again to each envelope and refuses, with a
//! reason, what csirt-be may not hand over — another organisation's message (a member speaks
//! only for itself), its own RED message for someone else (routing), and a bundle whose signed
//! claims do not match its certificate — while what it may hand over is stored. Importing
//! again changes nothing; a file with nothing new is refused as replayed.

use bluewire_node::envelope::seal;
use bluewire_node::offline;
use bluewire_proto::v1 as pb;
use bluewire_tests::{TestFederation, be_fr_eu, content, now_ms};

fn cert_der(fed: &TestFederation, org: &str) -> Vec<u8> {
    bluewire_node::pki::load_certs_pem(&fed.info(org).bundle.node.cert_pem)
        .expect("node cert")
        .remove(0)
        .to_vec()
}

fn body(from: &str, envelopes: Vec<pb::Envelope>) -> pb::BundleBody {
    pb::BundleBody {
        id: bluewire_node::envelope::new_id(),
        from_org: from.into(),
        for_org: "csirt-fr".into(),
        created_at_ms: now_ms(),
        envelopes,
        ..Default::default()
    }
}

async fn import(
    fed: &TestFederation,
    bytes: Vec<u8>,
) -> Result<pb::BundleImportResponse, tonic::Status> {
    fed.admin("csirt-fr")
        .bundle_import(tokio_stream::iter(vec![pb::BundleChunk {
            data: bytes,
            summary: None,
        }]))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn a_hostile_members_bundle_is_judged_envelope_by_envelope() {
    let fed = TestFederation::new(&be_fr_eu()).await;
    let be = fed.signing_key("csirt-be");
    let lawful = content("csirt-be", "lawful");
    let theirs = content("cert-eu", "cert-eu's words");
    let mut red = content("csirt-be", "for cert-eu only");
    red.marking = Some(pb::Marking {
        tlp: pb::Tlp::Red as i32,
        ..Default::default()
    });
    red.recipients = vec!["cert-eu".into()];
    let envelopes = vec![
        seal(&be, &lawful),
        seal(&fed.signing_key("cert-eu"), &theirs),
        seal(&be, &red),
    ];
    let be_cert = cert_der(&fed, "csirt-be");
    let bytes = offline::pack(&body("csirt-be", envelopes), &be, &be_cert, None).expect("pack");
    let r = import(&fed, bytes.clone()).await.expect("import");
    assert_eq!((r.accepted, r.rejected, r.later), (1, 2, 0), "{r:#?}");
    let reason = |id: &str| {
        r.results
            .iter()
            .find(|x| x.id == id)
            .map(|x| (x.outcome.clone(), x.reason.clone()))
            .unwrap_or_else(|| panic!("no result for {id}: {r:#?}"))
    };
    let (outcome, why) = reason(&theirs.id);
    assert_eq!(outcome, "rejected");
    // Refused as not csirt-be's to hand over, or — when this node has not met cert-eu yet —
    // as signed by a key it does not know: never stored either way.
    assert!(
        why.contains("originated by \"cert-eu\"")
            || why.contains("unknown signing key id \"cert-eu/"),
        "{why}"
    );
    let (outcome, why) = reason(&red.id);
    assert_eq!(outcome, "rejected");
    assert!(why.contains("RED") || why.contains("recipient"), "{why}");
    // Stored: only the lawful message; the refusals are in Admin.Rejections.
    let fr = fed.feed("csirt-fr", None).await;
    assert!(fr.iter().any(|i| bluewire_tests::item_id(i) == lawful.id));
    assert!(!fr.iter().any(|i| bluewire_tests::item_id(i) == theirs.id));
    assert!(!fr.iter().any(|i| bluewire_tests::item_id(i) == red.id));
    let rejections = fed.rejections("csirt-fr").await;
    assert!(rejections.iter().any(|x| x.id == red.id), "{rejections:#?}");
    // The same file again: idempotent — nothing new, the same refusals.
    let again = import(&fed, bytes).await.expect("import again");
    assert_eq!(
        (again.accepted, again.duplicate, again.rejected),
        (0, 1, 2),
        "{again:#?}"
    );
    // A file whose every message is held already is refused as replayed.
    let held = offline::pack(
        &body("csirt-be", vec![seal(&be, &lawful)]),
        &be,
        &be_cert,
        None,
    )
    .expect("pack");
    let e = import(&fed, held).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    assert!(e.message().contains("replayed"), "{e:?}");

    // Signed by csirt-be, claiming to come from cert-eu with cert-eu's certificate.
    let claim = body("cert-eu", vec![seal(&be, &content("csirt-be", "x"))]);
    let eu_cert = cert_der(&fed, "cert-eu");
    let e = import(
        &fed,
        offline::pack(&claim, &be, &eu_cert, None).expect("pack"),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("tampered"), "{e:?}");
    // The node still serves.
    fed.publish("csirt-fr", "still serving").await;
}
