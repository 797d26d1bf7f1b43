//! The outbound decisions in memory: candidates, the egress plan, the
//! send-time re-check and the backfill filter, with a real cluster log and no
//! network or store.

use super::*;
use crate::cluster::tests::{A, B, C, D, E, Log, ORGS, accept, invite, key, leave, reshared};
use crate::known::testkit::Memory;
use crate::markings::{RETRACTED, Standing, marking_kind};
use crate::store::AnnotationRecord;
use bluewire_proto::v1::ClusterRole;

const NOW: i64 = 1_000_000;

fn log() -> Log {
    let mut log = Log::new();
    for (org, role) in [
        (B, ClusterRole::Member),
        (C, ClusterRole::Member),
        (D, ClusterRole::Observer),
    ] {
        log.ok(A, invite(org, role));
        log.ok(org, accept(org));
    }
    log
}

pub(crate) fn message(origin: usize, log: Option<&Log>) -> pb::Content {
    pb::Content {
        id: envelope::new_id(),
        origin_org: ORGS[origin].into(),
        author: format!("{}/analyst", ORGS[origin]),
        created_at_ms: NOW - 10,
        kind: pb::Kind::FreeText as i32,
        level: pb::Level::Technical as i32,
        marking: Some(pb::Marking {
            tlp: pb::Tlp::Green as i32,
            ..Default::default()
        }),
        cluster: log.map(|l| l.st.id.clone()).unwrap_or_default(),
        cluster_index: log.map(|l| l.st.head_index).unwrap_or_default(),
        body: Some(pb::content::Body::FreeText(pb::FreeText {
            title: "t".into(),
            body: String::new(),
        })),
        ..Default::default()
    }
}

/// `by`'s marking change raising a message to `tlp`, as its annotation.
pub(crate) fn raise(by: usize, tlp: pb::Tlp) -> (String, AnnotationRecord) {
    annotation(
        marking_kind(ORGS[by]),
        prost::Message::encode_to_vec(&pb::Marking {
            tlp: tlp as i32,
            ..Default::default()
        }),
    )
}

pub(crate) fn annotation(kind: String, value: Vec<u8>) -> (String, AnnotationRecord) {
    (
        kind,
        AnnotationRecord {
            at_ms: 1,
            by_id: "c".into(),
            value,
        },
    )
}

#[test]
fn candidates_are_current_members_or_configured_peers_never_this_node() {
    let log = log();
    let mut got = candidates(Some(&log.st), ORGS[A], &[]);
    got.sort();
    assert_eq!(got, vec![ORGS[B], ORGS[C], ORGS[D]]);
    let peers = vec![ORGS[A].to_string(), ORGS[E].to_string()];
    assert_eq!(candidates(None, ORGS[A], &peers), vec![ORGS[E]]);
    assert!(candidates(None, ORGS[A], &[]).is_empty());
}

#[test]
fn the_plan_queues_what_egress_allows_and_explains_the_rest() {
    let log = log();
    let known = Memory::new(ORGS[A]).with_cluster(&log.st);
    let mut m = message(A, Some(&log));
    m.recipients = vec![ORGS[B].into(), ORGS[D].into()];
    let c = candidates(Some(&log.st), ORGS[A], &[]);
    let (queued, refused) = plan(&m, &c, &known, &Router::new(), NOW);
    let mut queued = queued;
    queued.sort();
    assert_eq!(queued, vec![ORGS[B], ORGS[D]], "an observer still receives");
    assert_eq!(refused.len(), 1);
    assert_eq!(
        (refused[0].org.as_str(), refused[0].rule),
        (ORGS[C], "recipients")
    );
}

/// C's message, re-shared by A into the fixture's cluster: the original and A's forwarded
/// envelope.
fn reshared_by_a(log: &Log) -> (pb::Content, pb::Envelope) {
    let original = message(C, None);
    let sealed = envelope::seal(key(C), &original);
    let fwd = reshared(A, &original.id, &sealed, &log.st, NOW - 5);
    (original, fwd)
}

#[test]
fn the_send_time_recheck_applies_retractions_raises_and_membership_changes() {
    let mut log = log();
    let r = Router::new();
    let m = message(A, Some(&log));
    let env = envelope::seal(key(A), &m);
    let mut known = Memory::new(ORGS[A]).with_cluster(&log.st);
    known.hold(&m, vec![]);
    assert_eq!(recheck(&env, ORGS[B], &known, &r, NOW), Ok(()));
    // Raised to RED since it was queued: RED goes to named recipients only.
    known.hold(&m, vec![raise(C, pb::Tlp::Red)]);
    let e = recheck(&env, ORGS[B], &known, &r, NOW).unwrap_err();
    assert_eq!(e.0, "tlp", "{e:?}");
    // Retracted since: never sent.
    known.hold(&m, vec![annotation(RETRACTED.into(), b"wrong".to_vec())]);
    let e = recheck(&env, ORGS[B], &known, &r, NOW).unwrap_err();
    assert!(e.0 == "retracted" && e.1.contains("wrong"), "{e:?}");
    // The recipient left since: dropped.
    log.ok(B, leave());
    let mut known = Memory::new(ORGS[A]).with_cluster(&log.st);
    known.hold(&m, vec![]);
    let e = recheck(&env, ORGS[B], &known, &r, NOW).unwrap_err();
    assert_eq!(e.0, "cluster-membership", "{e:?}");
    // Someone else's message in the outbox (a relay) is not this node's to re-decide.
    let theirs = message(C, Some(&log));
    let env = envelope::seal(key(C), &theirs);
    assert_eq!(recheck(&env, ORGS[B], &known, &r, NOW), Ok(()));
    // A re-share queued while GREEN is not sent once someone raised it to AMBER.
    let (original, fwd) = reshared_by_a(&log);
    known.hold(&original, vec![]);
    assert_eq!(recheck(&fwd, ORGS[C], &known, &r, NOW), Ok(()));
    known.hold(&original, vec![raise(D, pb::Tlp::Amber)]);
    let e = recheck(&fwd, ORGS[C], &known, &r, NOW).unwrap_err();
    assert_eq!(e.0, "reshare", "{e:?}");
    // Undecodable bytes are refused with the reason.
    let junk = pb::Envelope {
        content: vec![0xff; 3].into(),
        ..Default::default()
    };
    let e = recheck(&junk, ORGS[C], &known, &r, NOW).unwrap_err();
    assert!(e.0 == "content" && e.1.contains("undecodable"), "{e:?}");
}

/// The re-check reads what control messages made of a message whether or not the message is
/// held here: a retraction or a raise recorded for a queued message that is not held (a
/// re-share whose original is gone, say) still counts.
#[test]
fn the_send_time_recheck_counts_annotations_of_a_message_not_held_here() {
    let log = log();
    let r = Router::new();
    let m = message(A, Some(&log));
    let env = envelope::seal(key(A), &m);
    let mut known = Memory::new(ORGS[A]).with_cluster(&log.st);
    assert_eq!(recheck(&env, ORGS[B], &known, &r, NOW), Ok(()));
    let k = (m.origin_org.clone(), m.id.clone());
    known.annotated.insert(
        k.clone(),
        vec![annotation(RETRACTED.into(), b"wrong".to_vec())],
    );
    let e = recheck(&env, ORGS[B], &known, &r, NOW).unwrap_err();
    assert!(e.0 == "retracted" && e.1.contains("wrong"), "{e:?}");
    // A re-share of a message not held here, raised to AMBER since: not sent.
    let (original, fwd) = reshared_by_a(&log);
    assert_eq!(recheck(&fwd, ORGS[C], &known, &r, NOW), Ok(()));
    known.annotated.insert(
        (original.origin_org.clone(), original.id.clone()),
        vec![raise(D, pb::Tlp::Amber)],
    );
    let e = recheck(&fwd, ORGS[C], &known, &r, NOW).unwrap_err();
    assert_eq!(e.0, "reshare", "{e:?}");
}

#[test]
fn a_backfill_page_holds_only_own_unretracted_messages_the_peer_may_have() {
    let log = log();
    let r = Router::new();
    let known = Memory::new(ORGS[A]).with_cluster(&log.st);
    let m = message(A, Some(&log));
    let plain = Standing::default();
    let retracted = Standing {
        retracted: Some("wrong".into()),
        ..Standing::default()
    };
    assert!(backfill_allows(&m, &plain, ORGS[B], &known, &r, NOW));
    assert!(
        !backfill_allows(&m, &retracted, ORGS[B], &known, &r, NOW),
        "retracted"
    );
    assert!(
        !backfill_allows(&m, &plain, ORGS[E], &known, &r, NOW),
        "not a member"
    );
    // Raised to RED since: only named recipients may have it now.
    let raised = Standing {
        marking: Some(pb::Marking {
            tlp: pb::Tlp::Red as i32,
            ..Default::default()
        }),
        ..Standing::default()
    };
    assert!(
        !backfill_allows(&m, &raised, ORGS[B], &known, &r, NOW),
        "raised"
    );
    let theirs = message(B, Some(&log));
    assert!(
        !backfill_allows(&theirs, &plain, ORGS[C], &known, &r, NOW),
        "not ours"
    );
    let mut named = message(A, Some(&log));
    named.recipients = vec![ORGS[C].into()];
    assert!(!backfill_allows(&named, &plain, ORGS[B], &known, &r, NOW));
    assert!(backfill_allows(&named, &plain, ORGS[C], &known, &r, NOW));
}

#[test]
fn a_recipient_is_encrypted_to_every_key_its_known_certificates_certify_once() {
    use crate::pki::CertifiedEncryptionKey;
    let key = |org: &str| {
        let k = crate::e2e::RecipientKey::generate(org).unwrap();
        CertifiedEncryptionKey::new(org, &k.public_key())
    };
    let (old, new) = (key("org-b"), key("org-b"));
    let profile = |keys: Vec<CertifiedEncryptionKey>| crate::pki::OrgProfile {
        encryption_keys: keys,
        ..crate::known::testkit::profile("org-b")
    };
    // The cluster log's (joined with the old key) and the directory's (re-issued since).
    let got = encryption_keys(
        "org-b",
        &[profile(vec![old.clone()]), profile(vec![new.clone()])],
    );
    let ids: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, [old.key_id.as_str(), new.key_id.as_str()]);
    // The same certificate known twice: each key once.
    assert_eq!(
        encryption_keys(
            "org-b",
            &[profile(vec![new.clone()]), profile(vec![new.clone()])]
        )
        .len(),
        1
    );
    // A key certified for another organisation, or damaged, is not used.
    assert!(encryption_keys("org-c", &[profile(vec![new.clone()])]).is_empty());
    let mut bad = new.clone();
    bad.ml_kem_768_public_key_hex.pop();
    assert!(encryption_keys("org-b", &[profile(vec![bad])]).is_empty());
    assert!(encryption_keys("org-b", &[] as &[crate::pki::OrgProfile]).is_empty());
}
