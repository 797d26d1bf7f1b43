//! Offline bundles in memory: a real federation root and real certificates, no store, no
//! network. What the importer accepts, and every way it refuses a file.

use std::sync::OnceLock;

use super::*;
use crate::cluster::tests::{A, B, C, D, E, Log, ORGS, accept, invite, key, leave, reshared};
use crate::known::testkit::Memory;
use crate::markings::RETRACTED;
use crate::outbound::tests::{annotation, raise};
use crate::pki::{FederationCa, OrgBundle, OrgRequest};
use bluewire_proto::v1::ClusterRole;

const NOW: i64 = 1_000_000;

struct Org {
    signer: SigningKey,
    decryptor: RecipientKey,
    cert: Vec<u8>,
    bundle: OrgBundle,
}

struct Fed {
    root: Vec<u8>,
    /// org-a, org-b, org-c.
    orgs: Vec<Org>,
    /// A node certificate of org-a and its key, from another federation's root.
    foreign: (SigningKey, Vec<u8>),
}

fn issue(ca: &FederationCa, org: &str) -> Org {
    let bundle = ca
        .issue_org(&OrgRequest {
            profile: crate::known::testkit::profile(org),
            validity_days: 30,
        })
        .expect("issue");
    Org {
        signer: SigningKey::from_pkcs8_pem(org, &bundle.node.signing_key_pkcs8_pem).unwrap(),
        decryptor: RecipientKey::from_pem(org, &bundle.node.encryption_key_pem).unwrap(),
        cert: pki::load_certs_pem(&bundle.node.cert_pem).unwrap()[0].to_vec(),
        bundle,
    }
}

fn fed() -> &'static Fed {
    static FED: OnceLock<Fed> = OnceLock::new();
    FED.get_or_init(|| {
        let ca = FederationCa::generate("offline tests").unwrap();
        let other = FederationCa::generate("another federation").unwrap();
        let f = issue(&other, "org-a");
        Fed {
            root: ca.cert_der().as_ref().to_vec(),
            orgs: ["org-a", "org-b", "org-c"]
                .iter()
                .map(|o| issue(&ca, o))
                .collect(),
            foreign: (f.signer, f.cert),
        }
    })
}

fn envelopes(n: usize) -> Vec<pb::Envelope> {
    (0..n)
        .map(|i| {
            let c = message(A, None, NOW - 10 + i as i64);
            envelope::seal(&fed().orgs[0].signer, &c)
        })
        .collect()
}

fn body(from: &str, to: &str) -> pb::BundleBody {
    pb::BundleBody {
        id: "b-1".into(),
        from_org: from.into(),
        for_org: to.into(),
        created_at_ms: NOW,
        since_ms: 0,
        clusters: vec![],
        envelopes: envelopes(3),
    }
}

/// org-a's bundle for org-b, sealed to org-b's certified key when `sealed`.
fn a_to_b(sealed: bool) -> Vec<u8> {
    let f = fed();
    let b = &f.orgs[1];
    let pk = b.bundle.node.encryption_key.public_key("org-b").unwrap();
    let keys = [(b.bundle.node.encryption_key.key_id.as_str(), pk.as_slice())];
    pack(
        &body("org-a", "org-b"),
        &f.orgs[0].signer,
        &f.orgs[0].cert,
        sealed.then_some(&keys[..]),
    )
    .unwrap()
}

fn open_as(bytes: &[u8], me: usize) -> Result<Opened, BundleError> {
    let f = fed();
    open(
        bytes,
        ORG_NAMES[me],
        &f.root,
        |_| false,
        std::slice::from_ref(&f.orgs[me].decryptor),
        now(),
    )
}

const ORG_NAMES: [&str; 3] = ["org-a", "org-b", "org-c"];

/// The wall clock: the fixture's certificates are valid from their issue for 30 days.
fn now() -> i64 {
    crate::clock::now_ms()
}

#[test]
fn a_signed_bundle_opens_at_its_addressee_with_everything_in_it() {
    for sealed in [false, true] {
        let o = open_as(&a_to_b(sealed), 1).unwrap();
        assert_eq!(o.encrypted, sealed);
        assert_eq!(o.exporter.org, "org-a");
        assert_eq!(o.exporter_cert, fed().orgs[0].cert);
        let want = body("org-a", "org-b");
        assert_eq!(o.body.id, want.id);
        assert_eq!(
            (o.body.from_org.as_str(), o.body.for_org.as_str()),
            ("org-a", "org-b")
        );
        // ML-DSA signatures are randomised: compare what was signed, and that it verifies.
        let ids: Vec<i64> = o
            .body
            .envelopes
            .iter()
            .map(|e| {
                let (org, pk) = ("org-a".to_string(), fed().orgs[0].signer.public_key());
                envelope::open(e, |_| Some((org, pk)), NOW)
                    .unwrap()
                    .content
                    .created_at_ms
            })
            .collect();
        assert_eq!(ids, [NOW - 10, NOW - 9, NOW - 8]);
    }
}

#[test]
fn a_sealed_bundle_is_ciphertext_to_anyone_else() {
    let bytes = a_to_b(true);
    // Nothing of the envelopes' content is readable in the file.
    let content = &envelopes(1)[0].content;
    assert!(
        !bytes.windows(32).any(|w| w == &content[..32]),
        "content visible in a sealed bundle"
    );
    let file = pb::OfflineBundle::decode(bytes.as_slice()).unwrap();
    assert!(matches!(
        file.payload,
        Some(pb::offline_bundle::Payload::Sealed(_))
    ));
}

#[test]
fn a_bundle_for_another_organisation_is_refused_as_foreign() {
    for sealed in [false, true] {
        let e = open_as(&a_to_b(sealed), 2).unwrap_err();
        assert_eq!(
            e,
            BundleError::NotForUs {
                for_org: "org-b".into(),
                me: "org-c".into()
            }
        );
        assert!(e.to_string().contains("import it at org-b's node"), "{e}");
    }
    // Relabelled for org-c: the signed body still says org-b.
    let mut file = pb::OfflineBundle::decode(a_to_b(false).as_slice()).unwrap();
    file.for_org = "org-c".into();
    let e = open_as(&file.encode_to_vec(), 2).unwrap_err();
    assert!(
        matches!(&e, BundleError::NotForUs { for_org, .. } if for_org == "org-b"),
        "{e:?}"
    );
    // Relabelled and sealed: the label is bound to the encryption.
    let mut file = pb::OfflineBundle::decode(a_to_b(true).as_slice()).unwrap();
    file.for_org = "org-c".into();
    let f = fed();
    let e = open(
        &file.encode_to_vec(),
        "org-c",
        &f.root,
        |_| false,
        std::slice::from_ref(&f.orgs[1].decryptor),
        now(),
    )
    .unwrap_err();
    assert!(matches!(e, BundleError::Tampered(_)), "{e:?}");
}

#[test]
fn a_sealed_bundle_needs_the_certified_key() {
    let f = fed();
    let bytes = a_to_b(true);
    let e = open(&bytes, "org-b", &f.root, |_| false, &[], now()).unwrap_err();
    assert!(
        matches!(&e, BundleError::NoKey(named) if named == &f.orgs[1].bundle.node.encryption_key.key_id),
        "{e:?}"
    );
    assert!(e.to_string().contains("encryption_key"), "{e}");
    let other = RecipientKey::generate("org-b").unwrap();
    let e = open(
        &bytes,
        "org-b",
        &f.root,
        |_| false,
        std::slice::from_ref(&other),
        now(),
    )
    .unwrap_err();
    assert!(matches!(e, BundleError::NotOurKey { .. }), "{e:?}");
}

#[test]
fn every_altered_byte_is_refused_never_imported() {
    for sealed in [false, true] {
        let bytes = a_to_b(sealed);
        let step = (bytes.len() / 400).max(1);
        for i in (0..bytes.len()).step_by(step) {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            // The format string's own bytes, flipped, can still decode: then the format,
            // the addressee or the bytes after it are refused; never Ok.
            assert!(
                open_as(&b, 1).is_err(),
                "byte {i} of {} flipped (sealed: {sealed}) and the bundle still opened",
                bytes.len()
            );
        }
        // Truncated anywhere: refused, no panic.
        for cut in [1, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(open_as(&bytes[..cut], 1).is_err());
        }
    }
}

#[test]
fn the_exporters_signature_certificate_and_claims_are_checked() {
    let f = fed();
    let (a, b) = (&f.orgs[0], &f.orgs[1]);
    let with = |body: &pb::BundleBody, signer: &SigningKey, cert: &[u8]| {
        open_as(&pack(body, signer, cert, None).unwrap(), 1)
    };
    // Signed with a key its certificate does not certify.
    let e = with(&body("org-a", "org-b"), &b.signer, &a.cert).unwrap_err();
    assert!(
        matches!(&e, BundleError::Tampered(w) if w.contains("does not certify")),
        "{e:?}"
    );
    // Claims to be from org-c with org-a's certificate.
    let e = with(&body("org-c", "org-b"), &a.signer, &a.cert).unwrap_err();
    assert!(
        matches!(&e, BundleError::Tampered(w) if w.contains("org-a's")),
        "{e:?}"
    );
    // No certificate; another federation's certificate; a revoked one.
    assert!(matches!(
        with(&body("org-a", "org-b"), &a.signer, &[]),
        Err(BundleError::Signer(_))
    ));
    let (fk, fc) = &f.foreign;
    let e = with(&body("org-a", "org-b"), fk, fc).unwrap_err();
    assert!(
        matches!(&e, BundleError::Signer(w) if w.contains("root")),
        "{e:?}"
    );
    let bytes = a_to_b(false);
    let e = open(
        &bytes,
        "org-b",
        &f.root,
        |id| id.org() == "org-a",
        &[],
        now(),
    )
    .unwrap_err();
    assert!(
        matches!(&e, BundleError::Signer(w) if w.contains("revoked")),
        "{e:?}"
    );
    // Not valid at the time of import: expired, or not yet valid.
    for (at, why) in [
        (now() + 31 * 86_400_000, "expired"),
        (now() - 86_400_000, "not valid yet"),
    ] {
        let e = open(&bytes, "org-b", &f.root, |_| false, &[], at).unwrap_err();
        assert!(
            matches!(&e, BundleError::Signer(w) if w.contains(why)),
            "{e:?}"
        );
    }
    // A body whose signature is fine but whose bytes were swapped for another body.
    let mut file = pb::OfflineBundle::decode(bytes.as_slice()).unwrap();
    let Some(pb::offline_bundle::Payload::Signed(s)) = &file.payload else {
        panic!("signed")
    };
    let mut signed = pb::SignedBundle::decode(s.as_slice()).unwrap();
    let mut other = body("org-a", "org-b");
    other.envelopes.truncate(1);
    signed.body = other.encode_to_vec();
    file.payload = Some(pb::offline_bundle::Payload::Signed(signed.encode_to_vec()));
    let e = open_as(&file.encode_to_vec(), 1).unwrap_err();
    assert!(
        matches!(&e, BundleError::Tampered(w) if w.contains("altered")),
        "{e:?}"
    );
    // Its own export is not imported back.
    let own = pack(&body("org-b", "org-b"), &b.signer, &b.cert, None).unwrap();
    assert_eq!(
        open_as(&own, 1).unwrap_err(),
        BundleError::OwnBundle("b-1".into())
    );
    // Not a bundle at all, or another format.
    assert!(matches!(
        open_as(b"hello", 1),
        Err(BundleError::NotABundle(_))
    ));
    let mut wrong = pb::OfflineBundle::decode(bytes.as_slice()).unwrap();
    wrong.format = "bluewire-offline-bundle/0".into();
    assert!(matches!(
        open_as(&wrong.encode_to_vec(), 1),
        Err(BundleError::Format(_))
    ));
    wrong.format = FORMAT.into();
    wrong.payload = None;
    assert!(matches!(
        open_as(&wrong.encode_to_vec(), 1),
        Err(BundleError::NotABundle(_))
    ));
}

// --- what a bundle carries ---

fn log() -> Log {
    let mut log = Log::new();
    for org in [B, C, D] {
        log.ok(A, invite(org, ClusterRole::Member));
        log.ok(org, accept(org));
    }
    log
}

fn message(origin: usize, cluster: Option<&Log>, created: i64) -> pb::Content {
    pb::Content {
        created_at_ms: created,
        ..crate::outbound::tests::message(origin, cluster)
    }
}

fn sel(to: usize) -> Selection {
    Selection {
        org: ORGS[to].into(),
        ..Default::default()
    }
}

#[test]
fn a_bundle_carries_what_delivery_would_send_now_and_nothing_else() {
    let mut log = log();
    let r = Router::new();
    let m = message(A, Some(&log), NOW - 10);
    let env = envelope::seal(key(A), &m);
    let mut known = Memory::new(ORGS[A]).with_cluster(&log.st);
    known.hold(&m, vec![]);
    let carries = |known: &Memory, s: &Selection, env: &pb::Envelope, c: &pb::Content| {
        carries(env, c, s, &[], known, &r, NOW)
    };
    assert!(carries(&known, &sel(B), &env, &m));
    // Not to a non-member, nor to this node itself.
    assert!(!carries(&known, &sel(E), &env, &m));
    assert!(!carries(&known, &sel(A), &env, &m));
    // The operator's filters.
    let since = Selection {
        since_ms: NOW - 9,
        ..sel(B)
    };
    assert!(!carries(&known, &since, &env, &m));
    let at = Selection {
        since_ms: NOW - 10,
        ..sel(B)
    };
    assert!(carries(&known, &at, &env, &m));
    let other_cluster = Selection {
        clusters: vec!["someone/else".into()],
        ..sel(B)
    };
    assert!(!carries(&known, &other_cluster, &env, &m));
    let this_cluster = Selection {
        clusters: vec![log.st.id.clone()],
        ..sel(B)
    };
    assert!(carries(&known, &this_cluster, &env, &m));
    // Another organisation's message this node holds: not this node's to hand on.
    let theirs = message(C, Some(&log), NOW - 10);
    assert!(!carries(
        &known,
        &sel(B),
        &envelope::seal(key(C), &theirs),
        &theirs
    ));
    // Raised to RED since: not to B (RED goes to named recipients only).
    known.hold(&m, vec![raise(C, pb::Tlp::Red)]);
    assert!(!carries(&known, &sel(B), &env, &m));
    // Retracted: never.
    known.hold(&m, vec![annotation(RETRACTED.into(), b"wrong".to_vec())]);
    assert!(!carries(&known, &sel(B), &env, &m));
    // B left the cluster: no longer.
    log.ok(B, leave());
    let mut known = Memory::new(ORGS[A]).with_cluster(&log.st);
    known.hold(&m, vec![]);
    assert!(!carries(&known, &sel(B), &env, &m));
    assert!(carries(&known, &sel(C), &env, &m));
    // A cluster this node does not know (any more): nothing.
    let known = Memory::new(ORGS[A]);
    assert!(!carries(&known, &sel(C), &env, &m));
}

#[test]
fn without_a_cluster_a_bundle_goes_to_configured_peers_only() {
    let r = Router::new();
    let m = message(A, None, NOW - 10);
    let env = envelope::seal(key(A), &m);
    let mut known = Memory::new(ORGS[A]);
    known.hold(&m, vec![]);
    let peers = [ORGS[B].to_string()];
    assert!(carries(&env, &m, &sel(B), &peers, &known, &r, NOW));
    assert!(!carries(&env, &m, &sel(C), &peers, &known, &r, NOW));
    assert!(!carries(&env, &m, &sel(B), &[], &known, &r, NOW));
}

#[test]
fn a_bundle_carries_no_reshares() {
    let log = log();
    let r = Router::new();
    let original = message(C, None, NOW - 10);
    let sealed = envelope::seal(key(C), &original);
    let attest = |by: usize| reshared(by, &original.id, &sealed, &log.st, NOW - 5);
    let mut known = Memory::new(ORGS[A]).with_cluster(&log.st);
    known.hold(&original, vec![]);
    // Delivery fixes a re-share's recipients when it is made (and a backfill never gives
    // one): a bundle carries none, not even this node's own.
    assert!(!carries(
        &attest(A),
        &original,
        &sel(B),
        &[],
        &known,
        &r,
        NOW
    ));
    assert!(!carries(
        &attest(D),
        &original,
        &sel(B),
        &[],
        &known,
        &r,
        NOW
    ));
}

#[test]
fn what_is_above_green_unmarked_or_classified_is_never_written_in_clear() {
    let log = log();
    let mut known = Memory::new(ORGS[A]).with_cluster(&log.st);
    let mark = |tlp: pb::Tlp, classification: &str| {
        let mut m = message(A, Some(&log), NOW - 10);
        m.marking = Some(pb::Marking {
            tlp: tlp as i32,
            classification: classification.into(),
            ..Default::default()
        });
        m
    };
    for (m, secret) in [
        (mark(pb::Tlp::Clear, ""), false),
        (mark(pb::Tlp::Green, ""), false),
        (mark(pb::Tlp::Amber, ""), true),
        (mark(pb::Tlp::AmberStrict, ""), true),
        (mark(pb::Tlp::Red, ""), true),
        (mark(pb::Tlp::Green, "EU RESTRICTED"), true),
        (
            pb::Content {
                marking: None,
                ..mark(pb::Tlp::Green, "")
            },
            true,
        ),
    ] {
        assert_eq!(needs_encryption(&m, &known), secret, "{:?}", m.marking);
    }
    // Raised to AMBER since publication: the marking in force counts.
    let green = mark(pb::Tlp::Green, "");
    known.hold(&green, vec![raise(C, pb::Tlp::Amber)]);
    assert!(needs_encryption(&green, &known));
    // A GREEN retraction of that AMBER message speaks about it: encrypted too.
    let mut retraction = mark(pb::Tlp::Green, "");
    retraction.kind = pb::Kind::Retraction as i32;
    retraction.body = Some(pb::content::Body::Retraction(pb::Retraction {
        target_origin: green.origin_org.clone(),
        target_id: green.id.clone(),
        reason: "the host was a honeypot".into(),
    }));
    assert!(needs_encryption(&retraction, &known));
    let plain = mark(pb::Tlp::Green, "");
    known.hold(&plain, vec![]);
    if let Some(pb::content::Body::Retraction(r)) = &mut retraction.body {
        r.target_id = plain.id.clone();
    }
    assert!(!needs_encryption(&retraction, &known));
}

#[test]
fn an_oversized_body_is_counted_before_it_is_decoded() {
    // A million empty envelopes: two bytes each on the wire, ~170 each decoded.
    let body: Vec<u8> = [0x42u8, 0x00].repeat(1_000_000);
    assert_eq!(count_field(&body, ENVELOPES_FIELD), Ok(1_000_000));
    let real = body_with(3);
    assert_eq!(count_field(&real, ENVELOPES_FIELD), Ok(3));
    assert_eq!(count_field(&real, 1), Ok(1));
    assert!(count_field(&real[..real.len() - 1], ENVELOPES_FIELD).is_err());
    // Signed by a member, still refused before decoding.
    let f = fed();
    let a = &f.orgs[0];
    let signed = pb::SignedBundle {
        signature: a.signer.sign(SIGN_CONTEXT, &body),
        key_id: a.signer.key_id().into(),
        body,
        certificate: a.cert.clone(),
    };
    let file = pb::OfflineBundle {
        format: FORMAT.into(),
        for_org: "org-b".into(),
        payload: Some(pb::offline_bundle::Payload::Signed(signed.encode_to_vec())),
    };
    let e = open_as(&file.encode_to_vec(), 1).unwrap_err();
    assert!(
        matches!(&e, BundleError::NotABundle(w) if w.contains("more than")),
        "{e:?}"
    );
    // Attacker text in errors is clipped.
    let e = open_as(
        &pb::OfflineBundle {
            format: "x".repeat(10_000),
            ..Default::default()
        }
        .encode_to_vec(),
        1,
    )
    .unwrap_err();
    assert!(e.to_string().len() < 400, "{e}");
}

fn body_with(n: usize) -> Vec<u8> {
    let mut b = body("org-a", "org-b");
    b.envelopes.truncate(n);
    b.encode_to_vec()
}
