//! The ingress decision in memory: real signatures and a real cluster log
//! (the cluster fixture), no network, no store, the time passed in.

use super::*;
use crate::cluster::tests::{A, B, C, D, E, Log, ORGS, accept, invite, key, leave, reshared};
use crate::envelope::new_id;
use crate::known::testkit::Memory;
use crate::markings::marking_kind;
use crate::store::AnnotationRecord;
use bluewire_proto::v1::ClusterRole;
use pb::content::Body;

const NOW: i64 = 1_000_000;

/// A GREEN free-text message of `origin` at the technical level.
pub(crate) fn content(origin: usize, text: &str) -> pb::Content {
    pb::Content {
        id: new_id(),
        origin_org: ORGS[origin].into(),
        author: format!("{}/analyst", ORGS[origin]),
        created_at_ms: NOW - 10,
        kind: pb::Kind::FreeText as i32,
        level: pb::Level::Technical as i32,
        marking: Some(pb::Marking {
            tlp: pb::Tlp::Green as i32,
            ..Default::default()
        }),
        body: Some(Body::FreeText(pb::FreeText {
            title: text.into(),
            body: String::new(),
        })),
        ..Default::default()
    }
}

fn in_cluster(origin: usize, log: &Log, created_at_ms: i64) -> pb::Content {
    pb::Content {
        cluster: log.st.id.clone(),
        cluster_index: log.st.head_index,
        created_at_ms,
        ..content(origin, "in the cluster")
    }
}

fn seal(origin: usize, c: &pb::Content) -> pb::Envelope {
    envelope::seal(key(origin), c)
}

fn control(origin: usize, body: Body) -> pb::Content {
    let kind = match body {
        Body::Retraction(_) => pb::Kind::Retraction,
        _ => pb::Kind::MarkingChange,
    };
    pb::Content {
        kind: kind as i32,
        body: Some(body),
        ..content(origin, "control")
    }
}

fn retraction(origin: usize, target: &pb::Content) -> pb::Content {
    control(
        origin,
        Body::Retraction(pb::Retraction {
            target_id: target.id.clone(),
            target_origin: target.origin_org.clone(),
            reason: "wrong".into(),
        }),
    )
}

fn raise(origin: usize, target: &pb::Content, tlp: pb::Tlp) -> pb::Content {
    control(
        origin,
        Body::MarkingChange(pb::MarkingChange {
            target_id: target.id.clone(),
            target_origin: target.origin_org.clone(),
            marking: Some(pb::Marking {
                tlp: tlp as i32,
                ..Default::default()
            }),
            reason: String::new(),
        }),
    )
}

/// The rule a verdict refused under (panics on anything but a rejection).
fn refused(v: Verdict) -> &'static str {
    match v {
        Verdict::Reject { why, .. } => why.rule(),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn accepted(v: Verdict) -> Effect {
    match v {
        Verdict::Accept { effect, .. } => effect,
        other => panic!("expected acceptance, got {other:?}"),
    }
}

#[test]
fn a_direct_message_from_its_origin_is_accepted_and_carries_its_id() {
    let known = Memory::new(ORGS[A]);
    let c = content(B, "hello");
    let v = judge(&seal(B, &c), ORGS[B], &known, &Router::new(), NOW);
    assert_eq!(v.rule(), ("allowed", true));
    match v {
        Verdict::Accept { content, effect } => {
            assert_eq!(*content, c);
            assert_eq!(effect, Effect::Apply);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_revoked_key_signs_nothing_new_and_what_it_signed_since_is_suspect() {
    let mut known = Memory::new(ORGS[A]);
    let r = Router::new();
    let since = NOW - 100;
    known.distrusted.insert(key(B).key_id().to_string(), since);
    // Nothing arriving now is accepted, whatever time it claims (its holder chooses it).
    for created in [since - 50, since - 1, since, NOW - 10] {
        let mut c = content(B, "signed with the revoked key");
        c.created_at_ms = created;
        let v = judge(&seal(B, &c), ORGS[B], &known, &r, NOW);
        let Verdict::Reject { why, .. } = &v else {
            panic!("{v:?}")
        };
        assert_eq!(why.rule(), "revoked");
        assert!(why.to_string().contains("nothing new"), "{why}");
    }
    // What is held: suspect when created or received at or after the stated time.
    let held = |created: i64| pb::Content {
        created_at_ms: created,
        ..content(B, "held")
    };
    let suspect = |c: &pb::Content, received: i64| {
        crate::known::suspect(&known, key(B).key_id(), c, received).is_some()
    };
    assert!(!suspect(&held(since - 1), since - 1));
    assert!(suspect(&held(since), since));
    assert!(suspect(&held(since - 1), since), "received after: suspect");
    assert!(
        suspect(&held(since + 5), since - 50),
        "created after: suspect"
    );
    // Another organisation's key is untouched.
    accepted(judge(&seal(C, &content(C, "c")), ORGS[C], &known, &r, NOW));
    assert!(crate::known::refuse_signer(&known, key(C).key_id()).is_none());
}

#[test]
fn signature_origin_and_author_are_checked_before_routing() {
    let known = Memory::new(ORGS[A]);
    let r = Router::new();
    let c = content(B, "x");
    let mut tampered = seal(B, &c);
    tampered.content = {
        let mut b = tampered.content.to_vec();
        b[3] ^= 1;
        b.into()
    };
    assert_eq!(
        refused(judge(&tampered, ORGS[B], &known, &r, NOW)),
        "signature"
    );
    // Signed by org-c but claiming org-b as origin.
    assert_eq!(
        refused(judge(&seal(C, &c), ORGS[C], &known, &r, NOW)),
        "origin"
    );
    // org-b's envelope handed over by org-c without an attestation.
    let v = judge(&seal(B, &c), ORGS[C], &known, &r, NOW);
    assert_eq!(refused(v.clone()), "origin");
    match v {
        Verdict::Reject { id, .. } => assert_eq!(id, c.id, "the refusal names the message"),
        other => panic!("{other:?}"),
    }
    let mut stolen = content(B, "by the head of org-c");
    stolen.author = format!("{}/head", ORGS[C]);
    assert_eq!(
        refused(judge(&seal(B, &stolen), ORGS[B], &known, &r, NOW)),
        "author"
    );
    let mut stale = content(B, "expired");
    stale.expires_at_ms = NOW - 1;
    assert_eq!(
        refused(judge(&seal(B, &stale), ORGS[B], &known, &r, NOW)),
        "freshness"
    );
}

#[test]
fn explicit_recipients_that_leave_out_the_receiver_are_refused() {
    let known = Memory::new(ORGS[A]);
    let mut c = content(B, "for org-c");
    c.recipients = vec![ORGS[C].into()];
    assert_eq!(
        refused(judge(&seal(B, &c), ORGS[B], &known, &Router::new(), NOW)),
        "recipients"
    );
}

#[test]
fn cluster_membership_role_and_the_former_member_grace_are_judged_on_the_receivers_view() {
    let mut log = Log::new();
    log.ok(A, invite(B, ClusterRole::Member));
    log.ok(B, accept(B));
    log.ok(A, invite(C, ClusterRole::Member));
    log.ok(C, accept(C));
    log.ok(A, invite(D, ClusterRole::Observer));
    log.ok(D, accept(D));
    let behind = Memory::new(ORGS[C]).with_cluster(&log.st);
    let as_member = in_cluster(B, &log, log.clock);
    let left = log.ok(B, leave());
    let known = Memory::new(ORGS[C]).with_cluster(&log.st);
    let r = Router::new().with_former_member_grace_ms(100);
    let t_left = left.sequenced_at_ms;

    // Sent while a member, arriving within the grace: accepted; after it: refused.
    let env = seal(B, &as_member);
    assert_eq!(
        accepted(judge(&env, ORGS[B], &known, &r, t_left + 100)),
        Effect::Apply
    );
    assert_eq!(
        refused(judge(&env, ORGS[B], &known, &r, t_left + 101)),
        "cluster-membership"
    );
    // Backdated after leaving: refused at once.
    let mut after = as_member.clone();
    after.created_at_ms = t_left + 1;
    after.id = new_id();
    assert_eq!(
        refused(judge(&seal(B, &after), ORGS[B], &known, &r, t_left + 1)),
        "cluster-membership"
    );
    // An observer never publishes.
    let obs = in_cluster(D, &log, log.clock);
    assert_eq!(
        refused(judge(&seal(D, &obs), ORGS[D], &known, &r, log.clock)),
        "cluster-role"
    );
    // Not in the log at all.
    let outsider = in_cluster(E, &log, log.clock);
    assert_eq!(
        refused(judge(&seal(E, &outsider), ORGS[E], &known, &r, log.clock)),
        "cluster-membership"
    );
    // A receiver whose view is behind the origin's is asked to retry, naming the cluster.
    let ahead = in_cluster(A, &log, log.clock);
    match judge(&seal(A, &ahead), ORGS[A], &behind, &r, log.clock) {
        Verdict::Later { id, cluster, .. } => {
            assert_eq!((id, cluster), (ahead.id.clone(), log.st.id.clone()));
        }
        other => panic!("expected retry-later, got {other:?}"),
    }
    // Unknown cluster: refused, not retried.
    let nowhere = Memory::new(ORGS[C]);
    assert_eq!(
        refused(judge(&seal(A, &ahead), ORGS[A], &nowhere, &r, log.clock)),
        "cluster-membership"
    );
}

#[test]
fn only_the_origin_retracts_and_others_only_raise_what_they_may_see() {
    let r = Router::new();
    let mut known = Memory::new(ORGS[A]);
    let target = content(B, "target");
    // A retraction by its origin applies even before the target arrives.
    assert_eq!(
        accepted(judge(
            &seal(B, &retraction(B, &target)),
            ORGS[B],
            &known,
            &r,
            NOW
        )),
        Effect::Apply
    );
    assert_eq!(
        refused(judge(
            &seal(C, &retraction(C, &target)),
            ORGS[C],
            &known,
            &r,
            NOW
        )),
        "control-authority"
    );
    // A raise by another organisation before the target arrives waits aside.
    let up = raise(C, &target, pb::Tlp::Amber);
    assert_eq!(
        accepted(judge(&seal(C, &up), ORGS[C], &known, &r, NOW)),
        Effect::Pending
    );
    // Once the target is held: applies if it is a raise the signer may see.
    known.hold(&target, vec![]);
    assert_eq!(
        accepted(judge(&seal(C, &up), ORGS[C], &known, &r, NOW)),
        Effect::Apply
    );
    let down = raise(C, &target, pb::Tlp::Clear);
    assert_eq!(
        refused(judge(&seal(C, &down), ORGS[C], &known, &r, NOW)),
        "control-authority"
    );
    // The origin may lower; another's earlier raise does not count as the base.
    let mut held = known;
    held.hold(
        &target,
        vec![(
            marking_kind(ORGS[D]),
            AnnotationRecord {
                at_ms: 1,
                by_id: "x".into(),
                value: prost::Message::encode_to_vec(&pb::Marking {
                    tlp: pb::Tlp::Red as i32,
                    ..Default::default()
                }),
            },
        )],
    );
    assert_eq!(
        accepted(judge(
            &seal(B, &raise(B, &target, pb::Tlp::Clear)),
            ORGS[B],
            &held,
            &r,
            NOW
        )),
        Effect::Apply
    );
    assert_eq!(
        accepted(judge(
            &seal(C, &raise(C, &target, pb::Tlp::Amber)),
            ORGS[C],
            &held,
            &r,
            NOW
        )),
        Effect::Apply
    );
    // A target named for org-d only: org-c may not see it, so may not raise it.
    let mut secret = content(B, "for org-d");
    secret.recipients = vec![ORGS[D].into()];
    let mut k = Memory::new(ORGS[D]);
    k.hold(&secret, vec![]);
    let v = judge(
        &seal(C, &raise(C, &secret, pb::Tlp::Red)),
        ORGS[C],
        &k,
        &r,
        NOW,
    );
    match v {
        Verdict::Reject { why, .. } => {
            assert_eq!(why.rule(), "control-authority");
            assert!(why.to_string().contains("recipients"), "{why}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_reshare_is_judged_as_the_forwarders_and_by_the_markings_in_force() {
    let mut log = Log::new();
    log.ok(A, invite(B, ClusterRole::Member));
    log.ok(B, accept(B));
    log.ok(A, invite(C, ClusterRole::Member));
    log.ok(C, accept(C));
    let r = Router::new();
    let mut known = Memory::new(ORGS[C]).with_cluster(&log.st);
    let original = content(D, "GREEN from org-d");
    let forward = |by: usize, c: &pb::Content| reshared(by, &c.id, &seal(D, c), &log.st, NOW - 5);
    assert_eq!(
        accepted(judge(&forward(B, &original), ORGS[B], &known, &r, NOW)),
        Effect::Apply
    );
    // Handed over by someone other than the forwarder that attested.
    assert_eq!(
        refused(judge(&forward(B, &original), ORGS[A], &known, &r, NOW)),
        "origin"
    );
    // AMBER is never re-shared into another cluster.
    let mut amber = content(D, "AMBER");
    amber.marking = Some(pb::Marking {
        tlp: pb::Tlp::Amber as i32,
        ..Default::default()
    });
    assert_eq!(
        refused(judge(&forward(B, &amber), ORGS[B], &known, &r, NOW)),
        "reshare"
    );
    // Nor a GREEN message someone raised to AMBER since (the receiver holds the raise).
    known.hold(
        &original,
        vec![(
            marking_kind(ORGS[A]),
            AnnotationRecord {
                at_ms: 1,
                by_id: "x".into(),
                value: prost::Message::encode_to_vec(&pb::Marking {
                    tlp: pb::Tlp::Amber as i32,
                    ..Default::default()
                }),
            },
        )],
    );
    assert_eq!(
        refused(judge(&forward(B, &original), ORGS[B], &known, &r, NOW)),
        "reshare"
    );
    // A forwarder that is not a member of the target cluster.
    let mut k = Memory::new(ORGS[C]).with_cluster(&log.st);
    k.held.clear();
    assert_eq!(
        refused(judge(&forward(E, &content(D, "x")), ORGS[E], &k, &r, NOW)),
        "cluster-membership"
    );
}

#[test]
fn verdicts_name_their_rule_for_the_metrics() {
    let later = Verdict::Later {
        id: "m".into(),
        cluster: "c".into(),
        reason: "behind".into(),
    };
    assert_eq!(later.rule(), ("retry", false));
    let rejected = Verdict::Reject {
        id: "m".into(),
        why: Rejected::Author {
            author: "x".into(),
            origin: "y".into(),
        },
    };
    assert_eq!(rejected.rule(), ("author", false));
}

#[test]
fn the_routing_tally_counts_only_what_routing_decided() {
    let known = Memory::new(ORGS[A]);
    let r = Router::new();
    let ok = content(B, "fine");
    assert_eq!(
        judge_routed(&seal(B, &ok), ORGS[B], &known, &r, NOW).1,
        Some(("allowed", true))
    );
    let mut tampered = seal(B, &ok);
    tampered.signature = {
        let mut b = tampered.signature.to_vec();
        b[0] ^= 1;
        b.into()
    };
    assert_eq!(
        judge_routed(&tampered, ORGS[B], &known, &r, NOW).1,
        None,
        "never routed"
    );
    let mut red = content(B, "RED to nobody");
    red.marking = Some(pb::Marking {
        tlp: pb::Tlp::Red as i32,
        ..Default::default()
    });
    assert_eq!(
        judge_routed(&seal(B, &red), ORGS[B], &known, &r, NOW).1,
        Some(("tlp", false)),
        "a rule no recipient could pass counts under its name"
    );
    let mut named = content(B, "for org-c");
    named.recipients = vec![ORGS[C].into()];
    assert_eq!(
        judge_routed(&seal(B, &named), ORGS[B], &known, &r, NOW).1,
        Some(("recipients", false))
    );
    // Routing allowed a retraction by the wrong organisation: the authority rule refuses
    // it, but the routing tally says what routing decided.
    let (v, tally) = judge_routed(&seal(C, &retraction(C, &ok)), ORGS[C], &known, &r, NOW);
    assert_eq!(
        (refused(v), tally),
        ("control-authority", Some(("allowed", true)))
    );
}

#[test]
fn a_reshare_that_cannot_be_decided_yet_names_the_cluster_it_goes_into() {
    let mut log = Log::new();
    log.ok(A, invite(B, ClusterRole::Member));
    log.ok(B, accept(B));
    let ahead = log.st.clone();
    log.ok(A, invite(C, ClusterRole::Member));
    log.ok(C, accept(C));
    // org-c is a member now; the receiver's view stops before that.
    let behind = Memory::new(ORGS[B]).with_cluster(&ahead);
    let original = content(D, "to re-share");
    let fwd = reshared(C, &original.id, &seal(D, &original), &log.st, NOW - 5);
    match judge(&fwd, ORGS[C], &behind, &Router::new(), NOW) {
        Verdict::Later { cluster, .. } => assert_eq!(cluster, log.st.id),
        other => panic!("expected retry-later, got {other:?}"),
    }
}

/// `origin`'s envelope of `c` with its instruction to carry it to `to` (hop limit 2), the
/// path set to `hops`.
fn relayed(origin: usize, to: usize, c: &pb::Content, hops: &[usize]) -> pb::Envelope {
    let mut env = crate::relay::instruct(
        &seal(origin, c),
        (ORGS[origin], b""),
        ORGS[to],
        2,
        key(origin),
        NOW,
    );
    env.relay.as_mut().unwrap().hops = hops.iter().map(|&h| ORGS[h].to_string()).collect();
    env
}

/// The words of a refusal (empty for anything else).
fn said(v: &Verdict) -> String {
    match v {
        Verdict::Reject { why, .. } => why.to_string(),
        _ => String::new(),
    }
}

fn marked(origin: usize, tlp: pb::Tlp, recipients: &[usize]) -> pb::Content {
    pb::Content {
        marking: Some(pb::Marking {
            tlp: tlp as i32,
            ..Default::default()
        }),
        recipients: recipients.iter().map(|&r| ORGS[r].to_string()).collect(),
        ..content(origin, "marked")
    }
}

#[test]
fn a_relayed_message_is_judged_as_if_its_sender_had_handed_it_over() {
    let known = Memory::new(ORGS[A]);
    let r = Router::new();
    let c = content(C, "via B");
    let env = relayed(C, A, &c, &[B]);
    match judge(&env, ORGS[B], &known, &r, NOW) {
        Verdict::Accept { content, .. } => assert_eq!(*content, c),
        other => panic!("{other:?}"),
    }
    // The same envelope without the sender's instruction: B may not hand over C's message.
    let v = judge(&seal(C, &c), ORGS[B], &known, &r, NOW);
    assert_eq!(refused(v.clone()), "origin");
    assert!(said(&v).contains("no relay instruction"), "{v:?}");
    // Handed over by a member that is not the path's last hop.
    assert_eq!(refused(judge(&env, ORGS[D], &known, &r, NOW)), "relay");
    // The relay writes an instruction of its own for C's message: it speaks only for itself.
    let own = relayed(C, A, &c, &[]);
    let mut forged = crate::relay::instruct(&seal(C, &c), (ORGS[B], b""), ORGS[A], 2, key(B), NOW);
    assert_eq!(refused(judge(&forged, ORGS[B], &known, &r, NOW)), "origin");
    // Nor can it borrow the sender's instruction signature under another name.
    forged.relay.as_mut().unwrap().signature = own.relay.as_ref().unwrap().signature.clone();
    assert_eq!(
        refused(judge(&forged, ORGS[B], &known, &r, NOW)),
        "signature"
    );
    // An instruction signed with a revoked key.
    let mut revoked = Memory::new(ORGS[A]);
    revoked
        .distrusted
        .insert(key(C).key_id().to_string(), NOW - 1_000_000);
    assert_eq!(refused(judge(&env, ORGS[B], &revoked, &r, NOW)), "revoked");
}

#[test]
fn a_relay_carries_on_only_what_it_and_the_recipient_may_see() {
    let known = Memory::new(ORGS[B]);
    let r = Router::new();
    let c = content(C, "for A");
    match judge(&relayed(C, A, &c, &[]), ORGS[C], &known, &r, NOW) {
        Verdict::Carry {
            id,
            origin,
            to,
            envelope,
            path,
        } => {
            assert_eq!((id, to), (c.id.clone(), ORGS[A].to_string()));
            assert_eq!(origin, ORGS[C]);
            assert_eq!(envelope.relay.unwrap().hops, vec![ORGS[B].to_string()]);
            assert_eq!(envelope.content, seal(C, &c).content);
            assert_eq!(path, format!("{} via ", ORGS[C]));
        }
        other => panic!("{other:?}"),
    }
    // Named for A only: B may not see it in clear, so it does not carry it.
    let amber = marked(C, pb::Tlp::Amber, &[A]);
    let v = judge(&relayed(C, A, &amber, &[]), ORGS[C], &known, &r, NOW);
    assert_eq!(refused(v.clone()), "relay");
    assert!(said(&v).contains("may not see it"), "{v:?}");
    // RED in clear: never relayed, even by a named recipient.
    let red = marked(C, pb::Tlp::Red, &[A, B]);
    let v = judge(&relayed(C, A, &red, &[]), ORGS[C], &known, &r, NOW);
    assert_eq!(refused(v.clone()), "relay");
    assert!(said(&v).contains("encrypted end to end"), "{v:?}");
    // The recipient may not receive it (named for D only): a relay is nobody's amplifier.
    let for_d = marked(C, pb::Tlp::Amber, &[B, D]);
    let v = judge(&relayed(C, A, &for_d, &[]), ORGS[C], &known, &r, NOW);
    assert_eq!(refused(v.clone()), "recipients");
    assert!(said(&v).contains("may not receive it"), "{v:?}");
    // No hop left: the sender allowed one, D used it.
    let mut one = crate::relay::instruct(&seal(C, &c), (ORGS[C], b""), ORGS[A], 1, key(C), NOW);
    one.relay.as_mut().unwrap().hops = vec![ORGS[D].to_string()];
    let v = judge(&one, ORGS[D], &known, &r, NOW);
    assert_eq!(refused(v.clone()), "relay");
    assert!(said(&v).contains("uses them all"), "{v:?}");
    // A loop back through this node.
    let looped = relayed(C, A, &c, &[B, D]);
    assert_eq!(refused(judge(&looped, ORGS[D], &known, &r, NOW)), "relay");
}

#[test]
fn the_recipient_refuses_what_came_through_a_member_that_may_not_carry_it() {
    let known = Memory::new(ORGS[A]);
    let r = Router::new();
    // Named for A only, carried in clear by B.
    let amber = marked(C, pb::Tlp::Amber, &[A]);
    let v = judge(&relayed(C, A, &amber, &[B]), ORGS[B], &known, &r, NOW);
    assert_eq!(refused(v.clone()), "relay");
    assert!(said(&v).contains("relayed through"), "{v:?}");
    // RED in clear, even through a named recipient.
    let red = marked(C, pb::Tlp::Red, &[A, B]);
    assert_eq!(
        refused(judge(&relayed(C, A, &red, &[B]), ORGS[B], &known, &r, NOW)),
        "relay"
    );
    // Named for A and B: B may carry it.
    let both = marked(C, pb::Tlp::Amber, &[A, B]);
    assert!(matches!(
        judge(&relayed(C, A, &both, &[B]), ORGS[B], &known, &r, NOW),
        Verdict::Accept { .. }
    ));
}

#[test]
fn a_body_encrypted_to_a_key_of_this_organisation_it_does_not_hold_waits_and_a_retired_key_opens_it()
 {
    use crate::e2e::RecipientKey;
    let r = Router::new();
    let old = RecipientKey::generate(ORGS[A]).unwrap();
    let new = RecipientKey::generate(ORGS[A]).unwrap();
    let mut c = pb::Content {
        recipients: vec![ORGS[A].into()],
        ..content(B, "sealed to A's first key")
    };
    let pk = old.public_key();
    crate::e2e::seal_body(&mut c, &[(old.key_id(), pk.as_slice())]).unwrap();
    let env = seal(B, &c);
    // Only the new key installed: a key no certificate of A's certified is refused.
    let mut known = Memory::new(ORGS[A]);
    known.decryptors = vec![RecipientKey::from_pem(ORGS[A], &new.to_pem().unwrap()).unwrap()];
    let v = judge(&env, ORGS[B], &known, &r, NOW);
    assert_eq!(refused(v.clone()), "content");
    assert!(said(&v).contains("does not open"), "{v:?}");
    // One an earlier certificate of A's certified (retired/ not deployed): not refused,
    // not lost.
    known.own_keys = vec![old.key_id().to_string(), new.key_id().to_string()];
    match judge(&env, ORGS[B], &known, &r, NOW) {
        Verdict::Later { reason, .. } => {
            assert!(
                reason.contains("does not hold") && reason.contains("retired/"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    // With the retired key beside the current one: opened and accepted.
    known
        .decryptors
        .push(RecipientKey::from_pem(ORGS[A], &old.to_pem().unwrap()).unwrap());
    assert!(matches!(
        judge(&env, ORGS[B], &known, &r, NOW),
        Verdict::Accept { .. }
    ));
    // No key configured at all: the configuration is what is missing.
    let bare = Memory::new(ORGS[A]);
    match judge(&env, ORGS[B], &bare, &r, NOW) {
        Verdict::Later { reason, .. } => assert!(reason.contains("no decryption key"), "{reason}"),
        other => panic!("{other:?}"),
    }
}
