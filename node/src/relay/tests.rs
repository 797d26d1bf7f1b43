//! Relay instructions in memory: real hybrid signatures (the cluster fixture's keys), no
//! network, no store, the time passed in.

use super::*;
use crate::cluster::tests::{A, B, C, D, E, ORGS, key};
use crate::envelope::seal;
use crate::ingress::tests::content;

const NOW: i64 = 1_000_000;

fn envelope(origin: usize) -> pb::Envelope {
    seal(key(origin), &content(origin, "relayed"))
}

/// `origin`'s envelope with its own instruction to carry it to `to`.
fn instructed(origin: usize, to: usize, hop_limit: u32) -> pb::Envelope {
    instruct(
        &envelope(origin),
        (ORGS[origin], b"cert"),
        ORGS[to],
        hop_limit,
        key(origin),
        NOW,
    )
}

/// The fixture's certified keys: key id → (organisation, public key).
fn lookup(key_id: &str) -> Option<(String, Vec<u8>)> {
    (0..ORGS.len())
        .find(|&i| key(i).key_id() == key_id)
        .map(|i| (ORGS[i].to_string(), key(i).public_key()))
}

fn check_at(env: &pb::Envelope, peer: usize, me: usize) -> Result<Checked, Rejected> {
    check(env, ORGS[peer], ORGS[me], lookup)
}

/// The reason of a relay-rule refusal (panics on anything else).
fn relay_refusal(r: Result<Checked, Rejected>) -> String {
    match r {
        Err(Rejected::Relay(why)) => why,
        other => panic!("expected a relay refusal, got {other:?}"),
    }
}

/// Re-sign a changed instruction with `signer`'s key.
fn resigned(
    env: &pb::Envelope,
    signer: usize,
    f: impl FnOnce(&mut pb::RelayInstruction),
) -> pb::Envelope {
    let mut out = env.clone();
    let r = out.relay.as_mut().expect("relay");
    let mut i = pb::RelayInstruction::decode(r.instruction.as_slice()).expect("instruction");
    f(&mut i);
    r.instruction = i.encode_to_vec();
    r.signature = key(signer).sign(RELAY_CONTEXT, &r.instruction);
    r.key_id = key(signer).key_id().to_string();
    out
}

fn with_hops(env: &pb::Envelope, hops: &[usize]) -> pb::Envelope {
    let mut out = env.clone();
    out.relay.as_mut().expect("relay").hops = hops.iter().map(|&h| ORGS[h].to_string()).collect();
    out
}

#[test]
fn an_instruction_holds_at_the_relay_and_at_the_recipient_with_the_relay_on_the_path() {
    let env = instructed(A, C, 2);
    let at_b = check_at(&env, A, B).expect("the relay accepts the sender's instruction");
    assert_eq!(
        at_b,
        Checked {
            from: ORGS[A].into(),
            to: ORGS[C].into(),
            key_id: key(A).key_id().to_string(),
            hop_limit: 2,
            hops: vec![],
            at_ms: NOW,
        }
    );
    assert!(at_b.carry(ORGS[B]));
    let taken = take_on(&env, &at_b, ORGS[B], NOW).expect("a hop is left");
    assert_eq!(
        taken.relay.as_ref().unwrap().hops,
        vec![ORGS[B].to_string()]
    );
    // The origin's signature and content are untouched.
    assert_eq!(
        (&taken.content, &taken.signature),
        (&env.content, &env.signature)
    );
    let at_c = check_at(&taken, B, C).expect("the recipient accepts it from the relay");
    assert!(!at_c.carry(ORGS[C]));
    assert_eq!(at_c.path(), format!("{} via {}", ORGS[A], ORGS[B]));
    // A second relay within the limit, then the recipient.
    let at_d = check_at(&taken, B, D).expect("a second relay");
    let twice = take_on(&taken, &at_d, ORGS[D], NOW).expect("the second hop is within 2");
    let at_c = check_at(&twice, D, C).expect("the recipient accepts two hops");
    assert_eq!(at_c.hops, vec![ORGS[B].to_string(), ORGS[D].to_string()]);
    // No third hop under a limit of two.
    let at_e = check_at(&twice, D, E).expect("the path itself holds");
    assert!(
        relay_refusal(take_on(&twice, &at_e, ORGS[E], NOW).map(|_| at_e.clone()))
            .contains("uses them all")
    );
}

#[test]
fn the_instruction_is_bound_to_its_envelope_and_its_signer() {
    let env = instructed(A, C, 2);
    // Other content under the same instruction.
    let mut other = envelope(A);
    other.relay = env.relay.clone();
    assert!(relay_refusal(check_at(&other, A, B)).contains("another envelope"));
    // A forwarding attestation added afterwards changes the hash too.
    let mut fwd = env.clone();
    fwd.forwarding = Some(pb::Forwarding {
        attestation: b"x".to_vec(),
        ..Default::default()
    });
    assert!(relay_refusal(check_at(&fwd, A, B)).contains("another envelope"));
    assert_ne!(envelope_hash(&fwd), envelope_hash(&env));
    // The relay cannot speak for the sender: its own key on the sender's name.
    let forged = resigned(&env, B, |_| {});
    assert!(matches!(
        check_at(&forged, A, C),
        Err(Rejected::OriginMismatch { .. })
    ));
    // A flipped signature byte, or one instruction byte.
    let mut bad = env.clone();
    bad.relay.as_mut().unwrap().signature[10] ^= 1;
    assert!(matches!(
        check_at(&bad, A, B),
        Err(Rejected::BadSignature(_))
    ));
    let mut bad = env.clone();
    let last = bad.relay.as_ref().unwrap().instruction.len() - 1;
    bad.relay.as_mut().unwrap().instruction[last] ^= 1;
    assert!(matches!(
        check_at(&bad, A, B),
        Err(Rejected::BadSignature(_))
    ));
    // An unknown key.
    let mut unknown = env.clone();
    unknown.relay.as_mut().unwrap().key_id = "nobody/0000".into();
    assert!(matches!(
        check_at(&unknown, A, B),
        Err(Rejected::UnknownKey(_))
    ));
    // Not an instruction at all.
    let mut junk = resigned(&env, A, |_| {});
    let r = junk.relay.as_mut().unwrap();
    r.instruction = vec![0xff; 8];
    r.signature = key(A).sign(RELAY_CONTEXT, &r.instruction);
    assert!(matches!(check_at(&junk, A, B), Err(Rejected::Malformed(_))));
    // No instruction.
    assert!(relay_refusal(check_at(&envelope(A), A, B)).contains("no relay instruction"));
    // The signature is domain-separated: the message context does not verify it.
    let mut ctx = env.clone();
    let r = ctx.relay.as_mut().unwrap();
    r.signature = key(A).sign(crate::signing::MESSAGE_CONTEXT, &r.instruction);
    assert!(matches!(
        check_at(&ctx, A, B),
        Err(Rejected::BadSignature(_))
    ));
}

#[test]
fn hop_limits_outside_one_to_three_and_paths_that_do_not_hold_are_refused() {
    let env = instructed(A, C, 2);
    for limit in [0, MAX_HOPS + 1, u32::MAX] {
        let e = resigned(&env, A, |i| i.hop_limit = limit);
        assert!(
            relay_refusal(check_at(&e, A, B)).contains("hop limit"),
            "{limit}"
        );
    }
    for limit in 1..=MAX_HOPS {
        assert!(check_at(&resigned(&env, A, |i| i.hop_limit = limit), A, B).is_ok());
    }
    // instruct clamps what a node asks for.
    let clamped = instructed(A, C, 9);
    assert_eq!(check_at(&clamped, A, B).unwrap().hop_limit, MAX_HOPS);
    let clamped = instructed(A, C, 0);
    assert_eq!(check_at(&clamped, A, B).unwrap().hop_limit, 1);
    // No usable recipient.
    for to in ["", ORGS[A]] {
        let e = resigned(&env, A, |i| i.to_org = to.into());
        assert!(relay_refusal(check_at(&e, A, B)).contains("no usable recipient"));
    }
    // More hops than the limit.
    let e = with_hops(&resigned(&env, A, |i| i.hop_limit = 1), &[B, D]);
    assert!(relay_refusal(check_at(&e, D, E)).contains("over the sender's hop limit"));
    // A hop twice, the sender or the recipient as a hop, an empty hop.
    for hops in [vec![B, B], vec![A], vec![C]] {
        let e = with_hops(&env, &hops);
        let last = *hops.last().unwrap();
        assert!(
            relay_refusal(check_at(&e, last, E)).contains("not a path"),
            "{hops:?}"
        );
    }
    let mut e = env.clone();
    e.relay.as_mut().unwrap().hops = vec![String::new()];
    assert!(relay_refusal(check(&e, "", ORGS[E], lookup)).contains("not a path"));
    // Handed over by someone else than the path's last hop (or, with no hop, the sender).
    assert!(relay_refusal(check_at(&env, B, C)).contains("carries it last"));
    let e = with_hops(&env, &[B]);
    assert!(relay_refusal(check_at(&e, D, C)).contains("carries it last"));
    assert!(relay_refusal(check_at(&e, A, C)).contains("carries it last"));
    // A loop: this node already carried it, or it is the sender.
    let e = with_hops(&env, &[B, D]);
    assert!(relay_refusal(check_at(&e, D, B)).contains("loop"));
    assert!(relay_refusal(check_at(&with_hops(&env, &[B]), B, A)).contains("loop"));
}

#[test]
fn relay_candidates_are_reachable_members_off_the_path_in_name_order() {
    let reachable = [ORGS[E], ORGS[C], ORGS[A], ORGS[D], ORGS[B], ORGS[D]];
    assert_eq!(
        candidates(reachable, ORGS[A], ORGS[C], &[ORGS[D].to_string()]),
        vec![ORGS[B].to_string(), ORGS[E].to_string()]
    );
    assert!(candidates([ORGS[C], ORGS[A]], ORGS[A], ORGS[C], &[]).is_empty());
    assert_eq!(
        candidates([ORGS[B]], ORGS[A], ORGS[C], &[]),
        vec![ORGS[B].to_string()]
    );
}

#[test]
fn the_path_label_says_direct_via_or_unreachable() {
    assert_eq!(path_label(true, None), "direct");
    assert_eq!(path_label(true, Some("x")), "direct");
    assert_eq!(path_label(false, Some("cert-eu")), "via cert-eu");
    assert_eq!(path_label(false, None), "unreachable");
}

#[test]
fn who_may_carry_a_message() {
    use crate::known::testkit::Memory;
    let known = Memory::new(ORGS[C]);
    let router = Router::new();
    let content = |tlp: pb::Tlp, recipients: &[usize]| pb::Content {
        origin_org: ORGS[A].into(),
        recipients: recipients.iter().map(|&r| ORGS[r].to_string()).collect(),
        marking: Some(pb::Marking {
            tlp: tlp as i32,
            ..Default::default()
        }),
        kind: pb::Kind::FreeText as i32,
        level: pb::Level::Technical as i32,
        ..Default::default()
    };
    // GREEN with no recipients named: any member with a certified profile.
    assert_eq!(
        may_carry(&known, &router, &content(pb::Tlp::Green, &[]), ORGS[B], NOW),
        Ok(())
    );
    // Named recipients only: B is not one of them.
    match may_carry(
        &known,
        &router,
        &content(pb::Tlp::Amber, &[C]),
        ORGS[B],
        NOW,
    ) {
        Err(CarryRefused::No(why)) => assert!(why.contains("may not see it"), "{why}"),
        other => panic!("{other:?}"),
    }
    // RED: never in clear, not even through a named recipient.
    match may_carry(
        &known,
        &router,
        &content(pb::Tlp::Red, &[B, C]),
        ORGS[B],
        NOW,
    ) {
        Err(CarryRefused::No(why)) => assert!(why.contains("encrypted end to end"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Encrypted end to end: anyone carries it, RED included.
    let mut sealed = content(pb::Tlp::Red, &[C]);
    sealed.body = Some(pb::content::Body::Sealed(pb::Sealed::default()));
    assert_eq!(may_carry(&known, &router, &sealed, ORGS[B], NOW), Ok(()));
    // A cluster this node does not know: nobody is shown to be a member, nobody carries it.
    let mut unknown = content(pb::Tlp::Green, &[]);
    unknown.cluster = "cl-unknown".into();
    assert!(matches!(
        may_carry(&known, &router, &unknown, ORGS[B], NOW),
        Err(CarryRefused::No(_))
    ));
}

#[test]
fn a_first_relay_takes_on_only_a_fresh_instruction_and_no_relay_a_stale_one() {
    let env = instructed(A, C, 2);
    let at_b = check_at(&env, A, B).unwrap();
    // Fresh, a little ahead (clock skew): taken.
    for now in [NOW, NOW + FRESH_MS, NOW - SKEW_MS] {
        assert!(take_on(&env, &at_b, ORGS[B], now).is_ok(), "{now}");
    }
    // Replayed to a first relay later, or signed far ahead: refused.
    for now in [NOW + FRESH_MS + 1, NOW - SKEW_MS - 1] {
        let e = take_on(&env, &at_b, ORGS[B], now).map(|_| at_b.clone());
        assert!(relay_refusal(e).contains("signed within"), "{now}");
    }
    // A second relay takes on what the first held for a while, up to the carry limit.
    let taken = take_on(&env, &at_b, ORGS[B], NOW).unwrap();
    let at_d = check_at(&taken, B, D).unwrap();
    assert!(take_on(&taken, &at_d, ORGS[D], NOW + MAX_CARRY_MS).is_ok());
    let e = take_on(&taken, &at_d, ORGS[D], NOW + MAX_CARRY_MS + 1).map(|_| at_d.clone());
    assert!(relay_refusal(e).contains("signed within"));
}

#[test]
fn names_in_an_instruction_and_its_path_are_organisation_ids() {
    let env = instructed(A, C, 2);
    let long = "x".repeat(5000);
    for to in ["Org-C", "org c", long.as_str()] {
        let e = resigned(&env, A, |i| i.to_org = to.into());
        let why = relay_refusal(check_at(&e, A, B));
        assert!(why.contains("no usable recipient"), "{why}");
        assert!(why.len() < 300, "attacker text is clipped: {}", why.len());
    }
    let mut e = env.clone();
    e.relay.as_mut().unwrap().hops = vec![long.clone()];
    let why = relay_refusal(check(&e, &long, ORGS[E], lookup));
    assert!(
        why.contains("not a path") && why.len() < 400,
        "{}",
        why.len()
    );
    let mut unknown = env.clone();
    unknown.relay.as_mut().unwrap().key_id = long;
    match check_at(&unknown, A, B) {
        Err(Rejected::UnknownKey(k)) => assert!(k.len() < 100, "{}", k.len()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_documented_relay_limits() {
    // README: a first hop takes on instructions signed within the last 10 minutes, at most
    // 5 minutes ahead; a relay gives up after 7 days; at most 3 hops.
    assert_eq!(FRESH_MS, 10 * 60 * 1000);
    assert_eq!(SKEW_MS, 5 * 60 * 1000);
    assert_eq!(MAX_CARRY_MS, 7 * 24 * 60 * 60 * 1000);
    assert_eq!(MAX_HOPS, 3);
    assert_eq!(CarryRefused::Later("x".into()).reason(), "x");
}
