use super::*;

use std::sync::OnceLock;

use bluewire_proto::v1::Content;
use proptest::prelude::*;

use crate::pki::{FederationCa, OrgRequest};
use crate::routing::Router;

// ---------------------------------------------------------------------------
// Fixture: one federation CA and five certified organisations, built once
// (certificate generation is the slow part) and shared by every test.
// ---------------------------------------------------------------------------

pub(crate) const ORGS: [&str; 5] = ["org-a", "org-b", "org-c", "org-d", "org-e"];
pub(crate) const A: usize = 0;
pub(crate) const B: usize = 1;
pub(crate) const C: usize = 2;
pub(crate) const D: usize = 3;
pub(crate) const E: usize = 4;
/// Every cluster in these tests is created by org-a with this name.
const NAME: &str = "ops";

struct Org {
    key: SigningKey,
    cert: Vec<u8>,
}

struct Fixture {
    root: Vec<u8>,
    orgs: Vec<Org>,
    /// org-a's and org-b's node after `pki rotate` (new certificate and keys).
    rotated: Vec<Org>,
}

fn org_of(key_pem: &str, cert_pem: &str, org: &str) -> Org {
    let key = SigningKey::from_pkcs8_pem(org, key_pem).expect("signing key");
    let cert = pki::load_certs_pem(cert_pem)
        .expect("node cert")
        .remove(0)
        .as_ref()
        .to_vec();
    Org { key, cert }
}

fn fx() -> &'static Fixture {
    static FX: OnceLock<Fixture> = OnceLock::new();
    FX.get_or_init(|| {
        let mut ca = FederationCa::generate("cluster tests").expect("federation CA");
        let orgs: Vec<Org> = ORGS
            .iter()
            .map(|&org| {
                let bundle = ca
                    .issue_org(&OrgRequest {
                        profile: OrgProfile {
                            org: org.into(),
                            country: "BE".into(),
                            org_type: "csirt".into(),
                            levels: vec![pki::Level::Technical, pki::Level::Operational],
                            sectors: vec![],
                            accreditations: vec![],
                            endpoint: "https://127.0.0.1:7443".into(),
                            signing_keys: vec![],
                            encryption_keys: vec![],
                            // Lets the case tests' evidence bundles carry real authority.
                            functions: vec!["csirts-network".into()],
                        },
                        validity_days: 30,
                    })
                    .expect("issue org");
                let o = org_of(
                    &bundle.node.signing_key_pkcs8_pem,
                    &bundle.node.cert_pem,
                    org,
                );
                assert_eq!(o.key.key_id(), bundle.node.signing_key.key_id);
                o
            })
            .collect();
        let rotated = [A, B]
            .into_iter()
            .map(|i| {
                let next = ca.rotate_node(&orgs[i].cert, 30, 3600).expect("rotate");
                org_of(&next.signing_key_pkcs8_pem, &next.cert_pem, ORGS[i])
            })
            .collect();
        Fixture {
            root: ca.cert_der().as_ref().to_vec(),
            orgs,
            rotated,
        }
    })
}

pub(crate) fn root() -> &'static [u8] {
    &fx().root
}
pub(crate) fn key(i: usize) -> &'static SigningKey {
    &fx().orgs[i].key
}

/// `sealed` (the envelope of message `original_id`), re-shared by organisation `by` into
/// `st`'s cluster at its head, attested at `at_ms`.
pub(crate) fn reshared(
    by: usize,
    original_id: &str,
    sealed: &bluewire_proto::v1::Envelope,
    st: &ClusterState,
    at_ms: i64,
) -> bluewire_proto::v1::Envelope {
    let a = bluewire_proto::v1::ForwardAttestation {
        message_id: original_id.to_string(),
        forwarder_org: ORGS[by].into(),
        to_cluster: st.id.clone(),
        cluster_index: st.head_index,
        at_ms,
        content_hash: crate::envelope::content_hash(&sealed.content),
    };
    crate::envelope::attest(key(by), sealed, &a, Vec::new())
}
pub(crate) fn cert(i: usize) -> Vec<u8> {
    fx().orgs[i].cert.clone()
}
/// org-a's (`A`) or org-b's (`B`) node after a key rotation.
fn rotated(i: usize) -> &'static Org {
    &fx().rotated[[A, B]
        .iter()
        .position(|&r| r == i)
        .expect("only org-a and org-b rotate")]
}
fn pos(org: &str) -> usize {
    ORGS.iter()
        .position(|o| *o == org)
        .unwrap_or_else(|| panic!("unknown org {org}"))
}
pub(crate) fn all_orgs() -> Vec<String> {
    ORGS.iter().map(|s| s.to_string()).collect()
}
pub(crate) fn cid() -> String {
    cluster_id(ORGS[A], NAME)
}

// Op bodies.
pub(crate) fn invite(org: usize, role: ClusterRole) -> Op {
    invite_raw(org, role as i32)
}
fn invite_raw(org: usize, role: i32) -> Op {
    Op::Invite(pb::InviteMember {
        org: ORGS[org].into(),
        role,
        node_cert: cert(org),
    })
}
pub(crate) fn accept(org: usize) -> Op {
    Op::Accept(pb::AcceptInvitation {
        node_cert: cert(org),
    })
}
fn decline() -> Op {
    Op::Decline(pb::DeclineInvitation {})
}
pub(crate) fn leave() -> Op {
    Op::Leave(pb::LeaveCluster {})
}
pub(crate) fn remove(org: usize) -> Op {
    Op::Remove(pb::RemoveMember {
        org: ORGS[org].into(),
        reason: "test".into(),
    })
}
pub(crate) fn set_role(org: usize, role: ClusterRole) -> Op {
    set_role_raw(org, role as i32)
}
fn set_role_raw(org: usize, role: i32) -> Op {
    Op::SetRole(pb::SetMemberRole {
        org: ORGS[org].into(),
        role,
    })
}
fn transfer(org: usize) -> Op {
    Op::Transfer(pb::TransferConvener {
        to: ORGS[org].into(),
    })
}
fn create_body(creator: usize, name: &str) -> Op {
    Op::Create(pb::CreateCluster {
        name: name.into(),
        purpose: "testing".into(),
        levels: vec![pb::Level::Technical as i32],
        max_tlp: pb::Tlp::Amber as i32,
        history: HistoryRule::SinceJoin as i32,
        node_cert: cert(creator),
        exercise: false,
    })
}

fn err<T: std::fmt::Debug>(r: Result<T>) -> ClusterError {
    r.expect_err("expected an error")
}

/// The convener's side of one cluster: its state and the log it sequenced.
pub(crate) struct Log {
    pub(crate) st: ClusterState,
    entries: Vec<ClusterEntry>,
    pub(crate) clock: i64,
    n: u64,
    /// The key each organisation's node signs with now (after a rotation, the new one).
    keys: [&'static SigningKey; 5],
}

impl Log {
    /// org-a creates "org-a/ops".
    pub(crate) fn new() -> Self {
        let op = ClusterOp {
            cluster_id: cid(),
            base_hash: String::new(),
            op_id: "op-0".into(),
            actor_org: ORGS[A].into(),
            at_ms: 1,
            op: Some(create_body(A, NAME)),
        };
        let entry = sequence(None, sign_op(key(A), &op), key(A), 2);
        let (st, applied) = ClusterState::genesis(&entry, root()).expect("genesis");
        assert_eq!(applied.index, 0);
        Log {
            st,
            entries: vec![entry],
            clock: 2,
            n: 0,
            keys: std::array::from_fn(key),
        }
    }

    pub(crate) fn tick(&mut self) -> i64 {
        self.clock += 1;
        self.clock
    }

    fn conv_key(&self) -> &'static SigningKey {
        self.keys[pos(&self.st.convener)]
    }

    /// An op by `actor` based on the current head, with a fresh op id.
    fn op(&mut self, actor: usize, body: Op) -> ClusterOp {
        self.n += 1;
        ClusterOp {
            cluster_id: self.st.id.clone(),
            base_hash: self.st.head_hash.clone(),
            op_id: format!("op-{}", self.n),
            actor_org: ORGS[actor].into(),
            at_ms: self.tick(),
            op: Some(body),
        }
    }

    fn signed(&mut self, actor: usize, body: Op) -> SignedClusterOp {
        let op = self.op(actor, body);
        sign_op(self.keys[actor], &op)
    }

    /// Sequence without verifying (what a careless or malicious convener would do).
    fn seq(&mut self, signed: SignedClusterOp) -> ClusterEntry {
        let now = self.tick();
        sequence(Some(&self.st), signed, self.conv_key(), now)
    }

    /// What the convener does: verify, sequence, apply to itself.
    fn submit_signed(&mut self, signed: SignedClusterOp) -> Result<Applied> {
        self.st.verify_op(&signed, root())?;
        let entry = self.seq(signed);
        let applied = self.st.apply(&entry, root())?;
        self.entries.push(entry);
        Ok(applied)
    }

    fn submit(&mut self, actor: usize, body: Op) -> Result<Applied> {
        let s = self.signed(actor, body);
        self.submit_signed(s)
    }

    pub(crate) fn ok(&mut self, actor: usize, body: Op) -> Applied {
        let what = format!(
            "{} by {}",
            describe(&ClusterOp {
                op: Some(body.clone()),
                ..Default::default()
            }),
            ORGS[actor]
        );
        self.submit(actor, body)
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    fn encoded(&self) -> Vec<Vec<u8>> {
        self.entries.iter().map(|e| e.encode_to_vec()).collect()
    }

    /// A replica that has applied everything so far.
    fn replica(&self) -> ClusterState {
        replay(&self.encoded(), root()).expect("replay").0
    }

    /// org-b, org-c, org-d members (org-c admin), org-e not involved.
    pub(crate) fn with_members() -> Self {
        let mut l = Log::new();
        l.ok(A, invite(B, ClusterRole::Member));
        l.ok(A, invite(C, ClusterRole::Admin));
        l.ok(A, invite(D, ClusterRole::Observer));
        l.ok(B, accept(B));
        l.ok(C, accept(C));
        l.ok(D, accept(D));
        l
    }
}

/// Entry with a hand-made body, signed by `signer`.
fn entry_with(body: &ClusterEntryBody, signer: &SigningKey) -> ClusterEntry {
    let body = body.encode_to_vec();
    ClusterEntry {
        signature: signer.sign(ENTRY_CONTEXT, &body),
        key_id: signer.key_id().to_string(),
        body,
    }
}

fn body_of(e: &ClusterEntry) -> ClusterEntryBody {
    ClusterEntryBody::decode(e.body.as_slice()).unwrap()
}

// ---------------------------------------------------------------------------
// Genesis
// ---------------------------------------------------------------------------

#[test]
fn create_makes_a_valid_genesis() {
    let l = Log::new();
    let s = &l.st;
    assert_eq!(s.id, "org-a/ops");
    assert_eq!(s.name, NAME);
    assert_eq!(s.convener, ORGS[A]);
    assert_eq!(s.head_index, 0);
    assert_eq!(s.head_hash, entry_hash(&l.entries[0].encode_to_vec()));
    assert_eq!(s.current_members(), vec![ORGS[A].to_string()]);
    assert_eq!(s.role_of(ORGS[A]), Some(ClusterRole::Convener));
    assert_eq!(s.member_at(ORGS[A], 0), Some(None));
    assert_eq!(s.history, HistoryRule::SinceJoin);
    assert_eq!(s.created_at_ms, 2);
    assert_eq!(entry_index(&l.entries[0]).unwrap(), 0);
}

#[test]
fn genesis_refusals() {
    let base = ClusterOp {
        cluster_id: cid(),
        op_id: "g".into(),
        actor_org: ORGS[A].into(),
        op: Some(create_body(A, NAME)),
        ..Default::default()
    };
    let gen_ = |op: &ClusterOp, signer: usize, seq_key: usize| {
        ClusterState::genesis(
            &sequence(None, sign_op(key(signer), op), key(seq_key), 1),
            root(),
        )
    };
    assert!(gen_(&base, A, A).is_ok());
    // Entry or op signed by someone else.
    assert!(matches!(
        err(gen_(&base, A, B)),
        ClusterError::BadSignature(_)
    ));
    assert!(matches!(
        err(gen_(&base, B, A)),
        ClusterError::BadSignature(_)
    ));
    // The creator's certificate must be its own.
    let mut o = base.clone();
    o.op = Some(create_body(B, NAME));
    assert!(matches!(err(gen_(&o, A, A)), ClusterError::Certificate(_)));
    // Id must be "<creator>/<name>", in the op and in the entry the convener sequenced.
    let mut o = base.clone();
    o.cluster_id = "org-b/ops".into();
    assert!(
        matches!(err(gen_(&o, A, A)), ClusterError::Malformed(m) if m.contains("must be \"org-a/ops\""))
    );
    let relabelled = entry_with(
        &ClusterEntryBody {
            cluster_id: "org-a/other".into(),
            index: 0,
            prev_hash: String::new(),
            op: Some(sign_op(key(A), &base)),
            sequenced_at_ms: 1,
        },
        key(A),
    );
    assert!(matches!(
        err(ClusterState::genesis(&relabelled, root())),
        ClusterError::Malformed(m) if m.contains("must be \"org-a/ops\"")
    ));
    // The size limit is inclusive: an entry of exactly MAX_ENTRY_BYTES is judged on its
    // merits (here: its padded signature), one byte more is refused unread.
    let good = sequence(None, sign_op(key(A), &base), key(A), 1);
    assert!(matches!(
        err(ClusterState::genesis(
            &padded_to(&good, MAX_ENTRY_BYTES),
            root()
        )),
        ClusterError::BadSignature(_)
    ));
    assert!(matches!(
        err(ClusterState::genesis(&padded_to(&good, MAX_ENTRY_BYTES + 1), root())),
        ClusterError::Malformed(m) if m.contains("size limit")
    ));
    // Bad name.
    let mut o = base.clone();
    o.op = Some(create_body(A, "Bad Name"));
    o.cluster_id = cluster_id(ORGS[A], "Bad Name");
    assert!(matches!(err(gen_(&o, A, A)), ClusterError::Malformed(_)));
    // A cluster works at one or more valid levels: none, or an unknown one, is refused.
    for levels in [vec![], vec![pb::Level::Technical as i32, 9]] {
        let mut o = base.clone();
        let Some(Op::Create(mut c)) = o.op.clone() else {
            unreachable!()
        };
        c.levels = levels.clone();
        o.op = Some(Op::Create(c));
        assert!(
            matches!(err(gen_(&o, A, A)), ClusterError::Malformed(m) if m.contains("valid levels")),
            "levels {levels:?}"
        );
    }
    // A create has no base.
    let mut o = base.clone();
    o.base_hash = "ab".into();
    assert!(matches!(err(gen_(&o, A, A)), ClusterError::Malformed(_)));
    // The first entry must be a create.
    let mut o = base.clone();
    o.op = Some(invite(B, ClusterRole::Member));
    assert!(matches!(err(gen_(&o, A, A)), ClusterError::Malformed(_)));
    // A genesis entry at index 1 is out of order.
    let signed = sign_op(key(A), &base);
    let e = entry_with(
        &ClusterEntryBody {
            cluster_id: cid(),
            index: 1,
            prev_hash: String::new(),
            op: Some(signed),
            sequenced_at_ms: 1,
        },
        key(A),
    );
    assert_eq!(
        err(ClusterState::genesis(&e, root())),
        ClusterError::OutOfOrder {
            expected: 0,
            got: 1
        }
    );
    // A second create in an existing cluster is refused.
    let mut l = Log::new();
    let c = l.signed(A, create_body(A, NAME));
    assert!(matches!(err(l.submit_signed(c)), ClusterError::State(_)));
}

// ---------------------------------------------------------------------------
// Happy paths
// ---------------------------------------------------------------------------

#[test]
fn membership_happy_paths() {
    let mut l = Log::new();
    let a = l.ok(A, invite(B, ClusterRole::Member));
    assert_eq!((a.index, a.sequenced_by.as_str()), (1, ORGS[A]));
    assert_eq!(a.hash, l.st.head_hash);
    assert_eq!(l.st.standing(ORGS[B]), Some(Standing::Invited));
    assert!(!l.st.is_member(ORGS[B]));
    l.ok(A, invite(C, ClusterRole::Admin));
    l.ok(A, invite(D, ClusterRole::Observer));
    l.ok(B, accept(B));
    assert_eq!(l.st.role_of(ORGS[B]), Some(ClusterRole::Member));
    assert_eq!(l.st.member_at(ORGS[B], l.st.head_index), Some(None));
    l.ok(D, decline());
    assert_eq!(l.st.standing(ORGS[D]), Some(Standing::Declined));
    l.ok(C, accept(C));
    assert_eq!(l.st.role_of(ORGS[C]), Some(ClusterRole::Admin));
    // An admin invites a member and an observer; a declined org can be re-invited.
    l.ok(C, invite(E, ClusterRole::Member));
    l.ok(C, invite(D, ClusterRole::Observer));
    l.ok(E, accept(E));
    l.ok(D, accept(D));
    assert_eq!(
        l.st.current_members(),
        vec!["org-a", "org-b", "org-c", "org-d", "org-e"]
    );
    // An admin changes member <-> observer.
    l.ok(C, set_role(B, ClusterRole::Observer));
    assert_eq!(l.st.role_of(ORGS[B]), Some(ClusterRole::Observer));
    l.ok(C, set_role(B, ClusterRole::Member));
    // The convener grants and withdraws admin.
    l.ok(A, set_role(B, ClusterRole::Admin));
    assert_eq!(l.st.role_of(ORGS[B]), Some(ClusterRole::Admin));
    l.ok(A, set_role(B, ClusterRole::Member));
    // Leave and remove.
    l.ok(B, leave());
    assert_eq!(l.st.standing(ORGS[B]), Some(Standing::Left));
    assert!(!l.st.is_member(ORGS[B]));
    l.ok(C, remove(E));
    assert_eq!(l.st.standing(ORGS[E]), Some(Standing::Removed));
    // Removing a pending invitation.
    l.ok(A, invite(B, ClusterRole::Member));
    l.ok(C, remove(B));
    assert_eq!(l.st.standing(ORGS[B]), Some(Standing::Removed));
    assert_eq!(l.st.member_at(ORGS[B], l.st.head_index), None);
    // Transfer the convener role: the old convener becomes an admin and the
    // new one sequences from the next entry on.
    l.ok(A, transfer(C));
    assert_eq!(l.st.convener, ORGS[C]);
    assert_eq!(l.st.role_of(ORGS[C]), Some(ClusterRole::Convener));
    assert_eq!(l.st.role_of(ORGS[A]), Some(ClusterRole::Admin));
    let a = l.ok(C, invite(B, ClusterRole::Admin));
    assert_eq!(a.sequenced_by, ORGS[C]);
    // The former convener can now leave.
    l.ok(A, leave());
    assert_eq!(l.st.standing(ORGS[A]), Some(Standing::Left));
    // Every replica reproduces the same state.
    assert_eq!(l.replica(), l.st);
}

#[test]
fn describe_names_every_op() {
    let d = |o: Op| {
        describe(&ClusterOp {
            op: Some(o),
            ..Default::default()
        })
    };
    assert_eq!(d(invite(B, ClusterRole::Admin)), "invite org-b as admin");
    assert_eq!(d(accept(B)), "accept invitation");
    assert_eq!(d(decline()), "decline invitation");
    assert_eq!(d(leave()), "leave");
    assert_eq!(d(remove(B)), "remove org-b (test)");
    let no_reason = Op::Remove(pb::RemoveMember {
        org: ORGS[B].into(),
        reason: String::new(),
    });
    assert_eq!(d(no_reason), "remove org-b");
    assert_eq!(
        d(set_role(B, ClusterRole::Observer)),
        "set role of org-b to observer"
    );
    assert_eq!(d(transfer(B)), "transfer convener to org-b");
    assert!(d(create_body(A, NAME)).starts_with("create ops"));
}

// ---------------------------------------------------------------------------
// Authority and state refusals
// ---------------------------------------------------------------------------

fn authority(e: ClusterError, needle: &str) {
    match &e {
        ClusterError::Authority(m) if m.contains(needle) => {}
        _ => panic!("expected Authority({needle:?}), got {e:?}"),
    }
}
fn state_err(e: ClusterError, needle: &str) {
    match &e {
        ClusterError::State(m) if m.contains(needle) => {}
        _ => panic!("expected State({needle:?}), got {e:?}"),
    }
}

#[test]
fn authority_refusals() {
    let mut l = Log::with_members(); // a convener, b member, c admin, d observer
    let before = l.st.clone();
    // A member or observer cannot invite, remove or set roles.
    authority(
        err(l.submit(B, invite(E, ClusterRole::Member))),
        "not the convener or an admin",
    );
    authority(
        err(l.submit(D, invite(E, ClusterRole::Member))),
        "not the convener or an admin",
    );
    authority(err(l.submit(B, remove(D))), "not the convener or an admin");
    authority(
        err(l.submit(B, set_role(D, ClusterRole::Member))),
        "not the convener or an admin",
    );
    // An admin cannot invite an admin, grant or withdraw admin, or remove an admin.
    authority(
        err(l.submit(C, invite(E, ClusterRole::Admin))),
        "only the convener can invite an admin",
    );
    authority(
        err(l.submit(C, set_role(B, ClusterRole::Admin))),
        "admin role",
    );
    authority(
        err(l.submit(C, set_role(C, ClusterRole::Member))),
        "admin role",
    );
    l.ok(A, set_role(B, ClusterRole::Admin));
    authority(
        err(l.submit(C, remove(B))),
        "only the convener can remove an admin",
    );
    l.ok(A, set_role(B, ClusterRole::Member));
    // Nobody removes the convener, not even itself; its role changes only by transfer.
    authority(
        err(l.submit(C, remove(A))),
        "the convener cannot be removed",
    );
    authority(
        err(l.submit(A, remove(A))),
        "the convener cannot be removed",
    );
    authority(
        err(l.submit(C, set_role(A, ClusterRole::Member))),
        "transfer-convener",
    );
    // Only the convener transfers, and only to another current member.
    authority(err(l.submit(C, transfer(B))), "only the convener");
    state_err(err(l.submit(A, transfer(A))), "not another current member");
    state_err(err(l.submit(A, transfer(E))), "not another current member");
    // The convener cannot leave.
    state_err(
        err(l.submit(A, leave())),
        "transfer the convener role first",
    );
    // An org the log has never mentioned can do nothing but accept, and it has no invitation.
    authority(
        err(l.submit(E, invite(E, ClusterRole::Member))),
        "does not appear",
    );
    authority(err(l.submit(E, leave())), "does not appear");
    state_err(err(l.submit(E, accept(E))), "no pending invitation");
    authority(err(l.submit(E, decline())), "does not appear");
    // A member accepting again, a non-member leaving, inviting a member.
    state_err(err(l.submit(B, accept(B))), "already a member");
    state_err(
        err(l.submit(A, invite(B, ClusterRole::Member))),
        "already a member",
    );
    l.ok(A, invite(E, ClusterRole::Member));
    state_err(
        err(l.submit(A, invite(E, ClusterRole::Member))),
        "already invited",
    );
    state_err(err(l.submit(E, leave())), "not a member");
    state_err(
        err(l.submit(A, set_role(E, ClusterRole::Member))),
        "not a member",
    );
    // Roles that cannot be given.
    assert!(matches!(
        err(l.submit(A, invite_raw(D, ClusterRole::Convener as i32))),
        ClusterError::Malformed(_) | ClusterError::State(_)
    ));
    assert!(matches!(
        err(l.submit(A, set_role(B, ClusterRole::Convener))),
        ClusterError::Malformed(_)
    ));
    assert!(matches!(
        err(l.submit(A, set_role_raw(B, 42))),
        ClusterError::Malformed(_)
    ));
    l.ok(E, decline());
    assert!(matches!(
        err(l.submit(A, invite_raw(E, ClusterRole::Unspecified as i32))),
        ClusterError::Malformed(_)
    ));
    assert!(matches!(
        err(l.submit(A, invite_raw(E, 42))),
        ClusterError::Malformed(_)
    ));
    // A former member cannot act.
    l.ok(B, leave());
    state_err(err(l.submit(B, leave())), "not a member");
    state_err(err(l.submit(B, accept(B))), "no pending invitation");
    authority(
        err(l.submit(B, invite(E, ClusterRole::Member))),
        "not the convener or an admin",
    );
    // Nothing refused changed anything but what succeeded.
    assert_eq!(before.convener, l.st.convener);
    assert_eq!(l.replica(), l.st);
}

#[test]
fn op_without_body_is_malformed() {
    let mut l = Log::new();
    let mut op = l.op(A, leave());
    op.op = None;
    assert!(matches!(
        err(l.submit_signed(sign_op(key(A), &op))),
        ClusterError::Malformed(_)
    ));
}

// ---------------------------------------------------------------------------
// Forgery, replay, ordering, links, conflicts, tampering
// ---------------------------------------------------------------------------

#[test]
fn forged_op_signature_is_rejected() {
    let mut l = Log::with_members();
    // Claims to be org-a, signed with org-b's key (and org-b's key id).
    let op = l.op(A, invite(E, ClusterRole::Member));
    let forged = sign_op(key(B), &op);
    assert!(
        matches!(err(l.st.verify_op(&forged, root())), ClusterError::BadSignature(m) if m.contains("not certified"))
    );
    // Same, but carrying org-a's key id.
    let mut forged2 = forged.clone();
    forged2.key_id = key(A).key_id().to_string();
    assert!(matches!(
        err(l.st.verify_op(&forged2, root())),
        ClusterError::BadSignature(_)
    ));
    // A genuine signature over different bytes.
    let mut tampered = sign_op(key(A), &op);
    let mut op2 = op.clone();
    op2.op = Some(invite(E, ClusterRole::Admin));
    tampered.op = op2.encode_to_vec();
    assert!(matches!(
        err(l.st.verify_op(&tampered, root())),
        ClusterError::BadSignature(_)
    ));
    // An accept signed by someone else than the invitee, with the invitee's certificate.
    l.ok(A, invite(E, ClusterRole::Member));
    let op = l.op(E, accept(E));
    assert!(matches!(
        err(l.st.verify_op(&sign_op(key(B), &op), root())),
        ClusterError::BadSignature(_)
    ));
    // An accept carrying another org's certificate.
    let op = l.op(E, accept(B));
    assert!(matches!(
        err(l.st.verify_op(&sign_op(key(E), &op), root())),
        ClusterError::Certificate(_)
    ));
    // A convener that sequences a forged op anyway: every replica rejects the entry.
    let mut replica = l.replica();
    let before = replica.clone();
    let e = l.seq(forged);
    assert!(matches!(
        err(replica.apply(&e, root())),
        ClusterError::BadSignature(_)
    ));
    assert_eq!(
        replica, before,
        "a rejected entry must not change the state"
    );
}

#[test]
fn invite_with_a_foreign_certificate_is_rejected() {
    let mut l = Log::new();
    let mut op = l.op(A, invite(B, ClusterRole::Member));
    op.op = Some(Op::Invite(pb::InviteMember {
        org: ORGS[B].into(),
        role: ClusterRole::Member as i32,
        node_cert: cert(C),
    }));
    let s = sign_op(key(A), &op);
    // NOTE: verify_op does not look at the invitee's certificate (apply does,
    // in transition); the convener's own apply catches it before storing.
    let before = l.st.clone();
    assert!(matches!(
        err(l.submit_signed(s)),
        ClusterError::Certificate(_)
    ));
    assert_eq!(l.st, before);
    let mut op = l.op(A, invite(B, ClusterRole::Member));
    op.op = Some(Op::Invite(pb::InviteMember {
        org: ORGS[B].into(),
        role: ClusterRole::Member as i32,
        node_cert: b"junk".to_vec(),
    }));
    assert!(matches!(
        err(l.submit_signed(sign_op(key(A), &op))),
        ClusterError::Certificate(_)
    ));
}

#[test]
fn entry_signed_by_a_non_convener_is_rejected() {
    let mut l = Log::with_members();
    let mut replica = l.replica();
    let s = l.signed(C, invite(E, ClusterRole::Member));
    assert!(l.st.verify_op(&s, root()).is_ok(), "the op itself is fine");
    // The admin org-c sequences it itself.
    let e = sequence(Some(&l.st), s.clone(), key(C), 99);
    assert!(
        matches!(err(replica.apply(&e, root())), ClusterError::BadSignature(m) if m.contains("not a key of the convener"))
    );
    // Convener's key id, someone else's signature.
    let mut e2 = e.clone();
    e2.key_id = key(A).key_id().to_string();
    assert!(matches!(
        err(replica.apply(&e2, root())),
        ClusterError::BadSignature(_)
    ));
    // After a transfer, the former convener can no longer sequence.
    l.ok(A, transfer(C));
    let mut replica = l.replica();
    let s = l.signed(C, invite(E, ClusterRole::Member));
    let e = sequence(Some(&l.st), s.clone(), key(A), 99);
    assert!(matches!(
        err(replica.apply(&e, root())),
        ClusterError::BadSignature(_)
    ));
    let e = sequence(Some(&l.st), s, key(C), 99);
    assert!(replica.apply(&e, root()).is_ok());
}

#[test]
fn replayed_op_id_is_rejected() {
    let mut l = Log::with_members();
    let first = l.ok(C, invite(E, ClusterRole::Member));
    l.ok(E, decline());
    // The same op id, re-signed on the fresh head.
    let mut op = l.op(C, invite(E, ClusterRole::Member));
    op.op_id = first.op.op_id.clone();
    let s = sign_op(key(C), &op);
    assert_eq!(
        err(l.st.verify_op(&s, root())),
        ClusterError::Replay(first.op.op_id.clone())
    );
    // A convener sequencing it anyway: replicas refuse it as a replay.
    let mut replica = l.replica();
    let e = l.seq(s);
    assert_eq!(
        err(replica.apply(&e, root())),
        ClusterError::Replay(first.op.op_id.clone())
    );
    // Re-submitting the very same signed op is stale.
    let old = body_of(&l.entries[first.index as usize]).op.unwrap();
    assert!(matches!(
        err(l.st.verify_op(&old, root())),
        ClusterError::Conflict { .. }
    ));
    // The genesis op id is taken too.
    let mut op = l.op(A, invite(E, ClusterRole::Member));
    op.op_id = "op-0".into();
    assert!(matches!(
        err(l.st.verify_op(&sign_op(key(A), &op), root())),
        ClusterError::Replay(_)
    ));
    // Re-delivering an entry already applied is out of order.
    let mut replica = l.replica();
    let old_entry = l.entries[3].clone();
    assert_eq!(
        err(replica.apply(&old_entry, root())),
        ClusterError::OutOfOrder {
            expected: replica.head_index + 1,
            got: 3
        }
    );
}

#[test]
fn out_of_order_entry_is_rejected() {
    let mut l = Log::new();
    let mut replica = l.replica();
    l.ok(A, invite(B, ClusterRole::Member));
    l.ok(A, invite(C, ClusterRole::Member));
    assert_eq!(
        err(replica.apply(&l.entries[2], root())),
        ClusterError::OutOfOrder {
            expected: 1,
            got: 2
        }
    );
    // An index from the far future, otherwise well-formed and linked to the head.
    let s = body_of(&l.entries[1]);
    let e = entry_with(&ClusterEntryBody { index: 7, ..s }, key(A));
    assert_eq!(
        err(replica.apply(&e, root())),
        ClusterError::OutOfOrder {
            expected: 1,
            got: 7
        }
    );
    // In order, both apply.
    replica.apply(&l.entries[1], root()).unwrap();
    replica.apply(&l.entries[2], root()).unwrap();
    assert_eq!(replica, l.st);
}

/// An entry from after a pending transfer-convener is out of order for a
/// replica that has not applied the transfer yet, and should say so.
///
/// An entry checks position (index, link) before the sequencer's signature,
/// so a replica that has not applied a transfer yet learns it is behind
/// instead of taking the next legitimate entry for a forgery.
#[test]
fn future_entry_after_a_transfer_is_out_of_order() {
    let mut l = Log::with_members();
    let mut replica = l.replica();
    let h = replica.head_index;
    l.ok(A, transfer(C));
    l.ok(C, invite(E, ClusterRole::Member));
    assert_eq!(
        err(replica.apply(&l.entries[h as usize + 2], root())),
        ClusterError::OutOfOrder {
            expected: h + 1,
            got: h + 2
        }
    );
}

#[test]
fn broken_hash_link_is_rejected() {
    let mut l = Log::new();
    let mut replica = l.replica();
    let s = l.signed(A, invite(B, ClusterRole::Member));
    let bogus = "00".repeat(32);
    let e = entry_with(
        &ClusterEntryBody {
            cluster_id: cid(),
            index: 1,
            prev_hash: bogus.clone(),
            op: Some(s),
            sequenced_at_ms: 5,
        },
        key(A),
    );
    assert_eq!(
        err(replica.apply(&e, root())),
        ClusterError::HashLink {
            index: 1,
            expected: l.st.head_hash.clone(),
            got: bogus
        }
    );
    // Entries of two different logs do not chain, even with the right index.
    let mut other = Log::new();
    other.ok(A, invite(C, ClusterRole::Member));
    other.ok(A, invite(B, ClusterRole::Member));
    l.ok(A, invite(B, ClusterRole::Member));
    let mut r = l.replica();
    assert!(matches!(
        err(r.apply(&other.entries[2], root())),
        ClusterError::HashLink { index: 2, .. }
    ));
    // An entry for another cluster.
    let s = l.signed(A, invite(C, ClusterRole::Member));
    let e = entry_with(
        &ClusterEntryBody {
            cluster_id: "org-a/other".into(),
            index: r.head_index + 1,
            prev_hash: r.head_hash.clone(),
            op: Some(s),
            sequenced_at_ms: 5,
        },
        key(A),
    );
    assert!(matches!(
        err(r.apply(&e, root())),
        ClusterError::Malformed(_)
    ));
    // An op for another cluster, sequenced into this one.
    let mut op = l.op(A, invite(C, ClusterRole::Member));
    op.cluster_id = "org-a/other".into();
    let e = l.seq(sign_op(key(A), &op));
    assert!(matches!(
        err(r.apply(&e, root())),
        ClusterError::Malformed(_)
    ));
}

#[test]
fn conflicting_op_is_rejected_not_merged() {
    let mut l = Log::with_members();
    let base = l.st.head_hash.clone();
    // Two admins act concurrently on the same head.
    let s1 = l.signed(A, invite(E, ClusterRole::Member));
    let s2 = l.signed(C, remove(D));
    assert_eq!(l.st.verify_op(&s2, root()).unwrap().base_hash, base);
    l.submit_signed(s1).unwrap();
    let before = l.st.clone();
    let e = err(l.submit_signed(s2.clone()));
    assert_eq!(
        e,
        ClusterError::Conflict {
            base: base.clone(),
            head: l.st.head_hash.clone()
        }
    );
    assert!(e.to_string().contains("re-read the cluster"));
    assert_eq!(l.st, before);
    // A convener sequencing the stale op anyway: replicas refuse it too.
    let mut replica = l.replica();
    let entry = l.seq(s2);
    assert!(matches!(
        err(replica.apply(&entry, root())),
        ClusterError::Conflict { .. }
    ));
    // Re-based on the new head, it goes through.
    l.ok(C, remove(D));
}

#[test]
fn tampered_entry_is_rejected() {
    let mut l = Log::with_members();
    let s = l.signed(A, invite(E, ClusterRole::Member));
    let e = l.seq(s);
    let replica = l.replica();
    assert!(replica.clone().apply(&e, root()).is_ok());
    // Flip each byte of the body (every 3rd, to keep it quick) and of the signature.
    for i in (0..e.body.len()).step_by(3) {
        let mut t = e.clone();
        t.body[i] ^= 0x01;
        let mut r = replica.clone();
        // Usually the entry signature; a flip in the index, link or cluster id
        // may be reported as such if those are checked first.
        let e = err(r.apply(&t, root()));
        assert!(
            matches!(
                e,
                ClusterError::BadSignature(_)
                    | ClusterError::Malformed(_)
                    | ClusterError::OutOfOrder { .. }
                    | ClusterError::HashLink { .. }
            ),
            "body byte {i}: {e:?}"
        );
        assert_eq!(r, replica);
    }
    for i in 0..e.signature.len() {
        let mut t = e.clone();
        t.signature[i] ^= 0x80;
        assert!(
            matches!(
                err(replica.clone().apply(&t, root())),
                ClusterError::BadSignature(_)
            ),
            "sig byte {i}"
        );
    }
    // A convener that alters the signed op and re-signs the entry: the op
    // signature catches it.
    let mut body = body_of(&e);
    let mut signed = body.op.take().unwrap();
    let mut op = ClusterOp::decode(signed.op.as_slice()).unwrap();
    op.op = Some(invite(E, ClusterRole::Admin));
    signed.op = op.encode_to_vec();
    body.op = Some(signed);
    let t = entry_with(&body, key(A));
    assert!(
        matches!(err(replica.clone().apply(&t, root())), ClusterError::BadSignature(m) if m.contains("operation"))
    );
    // An entry over the size limit is refused unread; one at the limit is judged.
    assert!(matches!(
        err(replica.clone().apply(&padded_to(&e, MAX_ENTRY_BYTES + 1), root())),
        ClusterError::Malformed(m) if m.contains("over the limit")
    ));
    assert!(matches!(
        err(replica
            .clone()
            .apply(&padded_to(&e, MAX_ENTRY_BYTES), root())),
        ClusterError::BadSignature(_)
    ));
}

/// `e` with its signature replaced by zeros so that it encodes to exactly `len` bytes.
fn padded_to(e: &ClusterEntry, len: usize) -> ClusterEntry {
    let mut p = e.clone();
    let mut n = len.saturating_sub(e.encoded_len());
    for _ in 0..8 {
        p.signature = vec![0; n];
        let l = p.encoded_len();
        if l == len {
            return p;
        }
        n = if l > len {
            n - (l - len)
        } else {
            n + (len - l)
        };
    }
    panic!("cannot pad an entry to exactly {len} bytes");
}

// ---------------------------------------------------------------------------
// member_at, routing across membership changes, replay
// ---------------------------------------------------------------------------

/// The former-member grace the model-based tests run with (ms of the log's
/// clock, which ticks 1 ms per operation), short enough to be crossed.
const SIM_GRACE_MS: i64 = 25;

pub(crate) fn publication(origin: usize, st: &ClusterState, created_at_ms: i64) -> Content {
    Content {
        id: format!("msg-{created_at_ms}"),
        origin_org: ORGS[origin].into(),
        created_at_ms,
        cluster: st.id.clone(),
        cluster_index: st.head_index,
        level: pb::Level::Technical as i32,
        marking: Some(pb::Marking {
            tlp: pb::Tlp::Green as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn member_at_across_leave_and_rejoin() {
    let mut l = Log::new();
    let i_inv = l.ok(A, invite(B, ClusterRole::Member)).index;
    let i_join = l.ok(B, accept(B)).index;
    let snap_member = l.st.clone();
    l.ok(A, invite(C, ClusterRole::Member));
    let left = l.ok(B, leave());
    let (i_left, t_left) = (left.index, left.sequenced_at_ms);
    let i_reinv = l.ok(A, invite(B, ClusterRole::Observer)).index;
    let i_rejoin = l.ok(B, accept(B)).index;
    let s = &l.st;
    assert_eq!(s.member_at(ORGS[B], 0), None);
    assert_eq!(s.member_at(ORGS[B], i_inv), None, "invited is not a member");
    assert_eq!(s.member_at(ORGS[B], i_join), Some(Some(t_left)));
    assert_eq!(s.member_at(ORGS[B], i_left - 1), Some(Some(t_left)));
    assert_eq!(s.member_at(ORGS[B], i_left), None);
    assert_eq!(s.member_at(ORGS[B], i_reinv), None);
    assert_eq!(s.member_at(ORGS[B], i_rejoin), Some(None));
    assert_eq!(s.member_at(ORGS[B], i_rejoin + 100), Some(None));
    assert_eq!(s.member_at(ORGS[E], i_rejoin), None);
    assert_eq!(s.role_of(ORGS[B]), Some(ClusterRole::Observer));
    // Removal ends a period too.
    let rm = l.ok(A, remove(B));
    assert_eq!(
        l.st.member_at(ORGS[B], i_rejoin),
        Some(Some(rm.sequenced_at_ms))
    );
    assert_eq!(l.st.member_at(ORGS[B], rm.index), None);
    assert_eq!(l.st.member_at(ORGS[B], i_join), Some(Some(t_left)));

    // Ingress at org-a (up to date): what org-b sent while a member is
    // accepted; anything it sent after its membership ended is not.
    let r = Router::new();
    let me = ORGS[A];
    let ok = publication(B, &snap_member, t_left - 1);
    assert!(r.ingress(&ok, me, Some(&l.st), ok.created_at_ms).allowed);
    let late = publication(B, &snap_member, t_left + 1);
    let d = r.ingress(&late, me, Some(&l.st), late.created_at_ms);
    assert!(
        !d.allowed && !d.retry && d.reason.contains("after its membership"),
        "{d:?}"
    );
    let between = Content {
        cluster_index: i_left,
        ..ok.clone()
    };
    assert!(
        !r.ingress(&between, me, Some(&l.st), between.created_at_ms)
            .allowed
    );
    // A receiver that is behind the origin is told to retry later.
    let d = r.ingress(&ok, me, Some(&l.replica_at(i_join - 1)), ok.created_at_ms);
    assert!(!d.allowed && d.retry, "{d:?}");
    // A non-member receiver refuses, and egress never picks it.
    assert!(
        !r.ingress(
            &publication(A, &l.st, l.clock),
            ORGS[B],
            Some(&l.st),
            l.clock
        )
        .allowed
    );
    let eg = r.egress(
        &publication(A, &l.st, l.clock),
        &all_orgs(),
        Some(&l.st),
        l.clock,
    );
    let allowed: Vec<_> = eg
        .iter()
        .filter(|d| d.allowed)
        .map(|d| d.org.as_str())
        .collect();
    assert!(
        allowed.is_empty(),
        "org-b was removed and org-c is only invited: {allowed:?}"
    );
}

#[test]
fn publishing_periods_follow_roles_and_the_origin_rules_hold_both_ways() {
    let mut l = Log::new();
    l.ok(A, invite(B, ClusterRole::Observer));
    let i_obs = l.ok(B, accept(B)).index;
    let as_observer = l.st.clone();
    // An observer is a member but never a publisher.
    assert_eq!(l.st.member_at(ORGS[B], i_obs), Some(None));
    assert_eq!(l.st.publisher_at(ORGS[B], i_obs), None);
    let promoted = l.ok(A, set_role(B, ClusterRole::Member));
    let as_member = l.st.clone();
    assert_eq!(l.st.publisher_at(ORGS[B], promoted.index), Some(None));
    // Promoting again (admin) keeps the same open period.
    l.ok(A, set_role(B, ClusterRole::Admin));
    assert_eq!(
        l.st.members[ORGS[B]].publishing,
        vec![(promoted.index, None)]
    );
    let demoted = l.ok(A, set_role(B, ClusterRole::Observer));
    let t_demoted = demoted.sequenced_at_ms;
    assert_eq!(
        l.st.publisher_at(ORGS[B], promoted.index),
        Some(Some(t_demoted))
    );
    assert_eq!(l.st.publisher_at(ORGS[B], demoted.index), None);
    assert_eq!(l.st.member_at(ORGS[B], demoted.index), Some(None));
    // The convener publishes from genesis; a transfer keeps both publishing.
    assert_eq!(l.st.publisher_at(ORGS[A], 0), Some(None));

    let grace = 10;
    let r = Router::new().with_former_member_grace_ms(grace);
    let me = ORGS[A];
    let rule = |d: &crate::routing::Decision| (d.allowed, d.rule);
    // Published as an observer: refused by cluster-role, at ingress and egress alike.
    let obs = publication(B, &as_observer, l.clock);
    let d = r.ingress(&obs, me, Some(&l.st), l.clock);
    assert_eq!(rule(&d), (false, "cluster-role"), "{d:?}");
    assert!(d.reason.contains("observer"), "{d:?}");
    let d = r
        .egress(&obs, &[me.to_string()], Some(&l.st), l.clock)
        .remove(0);
    assert_eq!(rule(&d), (false, "cluster-role"), "{d:?}");
    assert_eq!(
        r.check_origin(&obs, &l.st, l.clock).map_err(|e| e.0),
        Err("cluster-role")
    );
    // Published as a member before the demotion: accepted within the grace,
    // refused after it, by the deciding node's clock.
    let ok = publication(B, &as_member, t_demoted);
    for now in [t_demoted, t_demoted + grace] {
        assert!(r.ingress(&ok, me, Some(&l.st), now).allowed, "at {now}");
        assert!(r.check_origin(&ok, &l.st, now).is_ok(), "at {now}");
    }
    let d = r.ingress(&ok, me, Some(&l.st), t_demoted + grace + 1);
    assert_eq!(rule(&d), (false, "cluster-membership"), "{d:?}");
    assert!(d.reason.contains("former_member_grace_secs"), "{d:?}");
    let d = r.egress(&ok, &[me.to_string()], Some(&l.st), t_demoted + grace + 1);
    assert_eq!(rule(&d[0]), (false, "cluster-membership"), "{d:?}");
    // Backdating does not help: created after the demotion is refused at once.
    let late = publication(B, &as_member, t_demoted + 1);
    let d = r.ingress(&late, me, Some(&l.st), t_demoted + 1);
    assert_eq!(rule(&d), (false, "cluster-membership"), "{d:?}");
    assert!(d.reason.contains("after its membership"), "{d:?}");
    // A current publisher is never limited by the grace.
    let now = l.clock + 1_000_000;
    let fresh = publication(A, &l.st, l.clock);
    let d = r
        .egress(&fresh, &[ORGS[B].to_string()], Some(&l.st), now)
        .remove(0);
    assert!(d.allowed, "{d:?}");
    assert!(r.check_origin(&fresh, &l.st, now).is_ok());
    // A non-member is refused under cluster-membership before anything else.
    let outsider = publication(C, &l.st, l.clock);
    assert_eq!(
        r.check_origin(&outsider, &l.st, l.clock).map_err(|e| e.0),
        Err("cluster-membership")
    );
}

#[test]
fn check_origin_applies_the_clusters_levels_and_maximum_tlp() {
    let l = Log::new();
    let r = Router::new();
    let ok = publication(A, &l.st, l.clock);
    assert!(r.check_origin(&ok, &l.st, l.clock).is_ok());
    let mut political = ok.clone();
    political.level = pb::Level::Political as i32;
    let e = r.check_origin(&political, &l.st, l.clock).unwrap_err();
    assert_eq!(e.0, "levels", "{e:?}");
    let mut red = ok.clone();
    red.marking = Some(pb::Marking {
        tlp: pb::Tlp::Red as i32,
        ..Default::default()
    });
    assert!(red.marking.as_ref().unwrap().tlp > l.st.max_tlp);
    let e = r.check_origin(&red, &l.st, l.clock).unwrap_err();
    assert_eq!(e.0, "tlp", "{e:?}");
    // At the cluster's maximum exactly: allowed.
    let mut max = ok.clone();
    max.marking = Some(pb::Marking {
        tlp: l.st.max_tlp,
        ..Default::default()
    });
    assert!(r.check_origin(&max, &l.st, l.clock).is_ok());
}

impl Log {
    /// A replica that applied entries 0..=index.
    fn replica_at(&self, index: u64) -> ClusterState {
        replay(&self.encoded()[..=index as usize], root())
            .expect("replay")
            .0
    }
}

#[test]
fn replay_reproduces_the_head() {
    let mut l = Log::with_members();
    l.ok(C, invite(E, ClusterRole::Member));
    l.ok(E, accept(E));
    l.ok(B, leave());
    l.ok(A, transfer(C));
    l.ok(C, remove(E));
    let enc = l.encoded();
    let (s, applied) = replay(&enc, root()).unwrap();
    assert_eq!(s.head_hash, l.st.head_hash);
    assert_eq!(s, l.st);
    assert_eq!(applied.len(), enc.len());
    for (i, (a, raw)) in applied.iter().zip(&enc).enumerate() {
        assert_eq!(a.index, i as u64);
        assert_eq!(a.hash, entry_hash(raw));
    }
    // Each entry links to the previous one.
    for w in applied.windows(2) {
        assert_eq!(
            body_of(&l.entries[w[1].index as usize]).prev_hash,
            w[0].hash
        );
    }
    // A gap or an empty log fails.
    let mut gap = enc.clone();
    gap.remove(3);
    assert!(matches!(
        err(replay(&gap, root())),
        ClusterError::OutOfOrder {
            expected: 3,
            got: 4
        }
    ));
    assert!(matches!(
        err(replay(&[], root())),
        ClusterError::Malformed(_)
    ));
    assert!(matches!(
        err(replay(&[b"\xff\xff".to_vec()], root())),
        ClusterError::Malformed(_)
    ));
    // A log that does not start with its genesis fails.
    assert_eq!(
        err(replay(&enc[1..], root())),
        ClusterError::OutOfOrder {
            expected: 0,
            got: 1
        }
    );
}

// ---------------------------------------------------------------------------
// Property test: random membership operations and publications.
// ---------------------------------------------------------------------------

const REPLICAS: usize = 3;

#[derive(Debug, Clone)]
enum Kind {
    Invite(usize, i32),
    Accept,
    Decline,
    Leave,
    Remove(usize),
    SetRole(usize, i32),
    Transfer(usize),
    Create,
}

#[derive(Debug, Clone)]
enum Twist {
    None,
    /// Based on an older head.
    Stale(usize),
    /// Fresh op reusing an applied op id.
    ReplayId(usize),
    /// An already sequenced signed op, verbatim.
    Resubmit(usize),
    /// Signed with another org's key.
    Forged(usize),
    /// For another cluster.
    WrongCluster,
}

#[derive(Debug, Clone)]
enum Step {
    Propose {
        actor: usize,
        smart: bool,
        kind: Kind,
        twist: Twist,
        /// 0-1 nothing; 2: the convener sequences the op even if invalid;
        /// 3: a non-convener org sequences it with its own key.
        inject: u8,
        /// Per replica: 0 dropped, 1 once, 2 duplicated, 3 once.
        fate: [u8; REPLICAS],
    },
    /// A replica processes its inbox in some order.
    Deliver { replica: usize, seed: u64 },
    /// A current member publishes.
    Publish {
        who: usize,
        explicit: Option<Vec<usize>>,
        replica: usize,
        lag: usize,
    },
    /// An earlier publication arrives late at some org.
    Late { pick: usize, org: usize },
    /// A former member publishes with its stale view of the log.
    Stale { who: usize, at: usize },
}

fn role_strategy() -> impl Strategy<Value = i32> {
    prop_oneof![
        3 => Just(ClusterRole::Member as i32),
        2 => Just(ClusterRole::Admin as i32),
        2 => Just(ClusterRole::Observer as i32),
        1 => Just(ClusterRole::Convener as i32),
        1 => Just(ClusterRole::Unspecified as i32),
        6 => Just(ClusterRole::Member as i32),
        1 => Just(42),
    ]
}

fn kind_strategy() -> impl Strategy<Value = Kind> {
    prop_oneof![
        6 => (0..5usize, role_strategy()).prop_map(|(t, r)| Kind::Invite(t, r)),
        5 => Just(Kind::Accept),
        1 => Just(Kind::Decline),
        3 => Just(Kind::Leave),
        2 => (0..5usize).prop_map(Kind::Remove),
        2 => (0..5usize, role_strategy()).prop_map(|(t, r)| Kind::SetRole(t, r)),
        1 => (0..5usize).prop_map(Kind::Transfer),
        1 => Just(Kind::Create),
    ]
}

fn twist_strategy() -> impl Strategy<Value = Twist> {
    prop_oneof![
        20 => Just(Twist::None),
        1 => any::<usize>().prop_map(Twist::Stale),
        1 => any::<usize>().prop_map(Twist::ReplayId),
        1 => any::<usize>().prop_map(Twist::Resubmit),
        1 => (1..5usize).prop_map(Twist::Forged),
        1 => Just(Twist::WrongCluster),
    ]
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        10 => (0..5usize, prop::bool::weighted(0.85), kind_strategy(), twist_strategy(), 0..4u8, prop::array::uniform3(0..4u8))
            .prop_map(|(actor, smart, kind, twist, inject, fate)| Step::Propose { actor, smart, kind, twist, inject, fate }),
        2 => (0..REPLICAS, any::<u64>()).prop_map(|(replica, seed)| Step::Deliver { replica, seed }),
        4 => (any::<usize>(), prop::option::weighted(0.3, prop::collection::vec(0..5usize, 0..4)), 0..REPLICAS, any::<usize>())
            .prop_map(|(who, explicit, replica, lag)| Step::Publish { who, explicit, replica, lag }),
        1 => (any::<usize>(), 0..5usize).prop_map(|(pick, org)| Step::Late { pick, org }),
        2 => (0..5usize, any::<usize>()).prop_map(|(who, at)| Step::Stale { who, at }),
    ]
}

/// Independent model of standings and roles, for cross-checking `check` and
/// `transition`.
#[derive(Debug, Clone, Default)]
struct Model {
    orgs: BTreeMap<String, (Standing, i32)>,
    convener: String,
}

impl Model {
    fn standing(&self, o: &str) -> Option<Standing> {
        self.orgs.get(o).map(|x| x.0)
    }
    fn member_role(&self, o: &str) -> Option<i32> {
        self.orgs
            .get(o)
            .filter(|x| x.0 == Standing::Member)
            .map(|x| x.1)
    }
    fn orgs_where(&self, f: impl Fn(Standing, i32) -> bool) -> Vec<usize> {
        (0..5)
            .filter(|&i| self.orgs.get(ORGS[i]).is_some_and(|x| f(x.0, x.1)))
            .collect()
    }

    /// Should `kind` by `actor` be allowed (ignoring signature/base/replay)?
    fn allows(&self, actor: &str, kind: &Kind) -> bool {
        const CONV: i32 = ClusterRole::Convener as i32;
        const ADM: i32 = ClusterRole::Admin as i32;
        let assignable = |r: i32| {
            r == ADM || r == ClusterRole::Member as i32 || r == ClusterRole::Observer as i32
        };
        let role = self.member_role(actor);
        let manager = matches!(role, Some(CONV | ADM));
        let is_conv = role == Some(CONV);
        match kind {
            Kind::Create => false,
            Kind::Invite(t, r) => {
                manager
                    && assignable(*r)
                    && (*r != ADM || is_conv)
                    && !matches!(
                        self.standing(ORGS[*t]),
                        Some(Standing::Member | Standing::Invited)
                    )
            }
            Kind::Accept | Kind::Decline => self.standing(actor) == Some(Standing::Invited),
            Kind::Leave => role.is_some() && !is_conv,
            Kind::Remove(t) => match self.orgs.get(ORGS[*t]) {
                Some((Standing::Member | Standing::Invited, r)) => {
                    manager && *r != CONV && (*r != ADM || is_conv)
                }
                _ => false,
            },
            Kind::SetRole(t, r) => match self.member_role(ORGS[*t]) {
                Some(cur) => {
                    manager
                        && assignable(*r)
                        && cur != CONV
                        && ((cur != ADM && *r != ADM) || is_conv)
                }
                None => false,
            },
            Kind::Transfer(t) => {
                is_conv && ORGS[*t] != actor && self.member_role(ORGS[*t]).is_some()
            }
        }
    }

    fn apply(&mut self, actor: &str, kind: &Kind) {
        let actor = actor.to_string();
        match kind {
            Kind::Invite(t, r) => {
                self.orgs.insert(ORGS[*t].into(), (Standing::Invited, *r));
            }
            Kind::Accept => self.orgs.get_mut(&actor).unwrap().0 = Standing::Member,
            Kind::Decline => self.orgs.get_mut(&actor).unwrap().0 = Standing::Declined,
            Kind::Leave => self.orgs.get_mut(&actor).unwrap().0 = Standing::Left,
            Kind::Remove(t) => self.orgs.get_mut(ORGS[*t]).unwrap().0 = Standing::Removed,
            Kind::SetRole(t, r) => self.orgs.get_mut(ORGS[*t]).unwrap().1 = *r,
            Kind::Transfer(t) => {
                self.orgs.get_mut(&self.convener).unwrap().1 = ClusterRole::Admin as i32;
                self.orgs.get_mut(ORGS[*t]).unwrap().1 = ClusterRole::Convener as i32;
                self.convener = ORGS[*t].into();
            }
            Kind::Create => unreachable!(),
        }
    }

    fn assert_matches(&self, st: &ClusterState) {
        assert_eq!(self.convener, st.convener, "convener");
        assert_eq!(self.orgs.len(), st.members.len(), "orgs in the log");
        for (o, (standing, role)) in &self.orgs {
            let m = &st.members[o];
            assert_eq!(m.standing, *standing, "standing of {o}");
            assert_eq!(m.role as i32, *role, "role of {o}");
        }
    }
}

fn body_for(kind: &Kind, actor: usize) -> Op {
    match kind {
        Kind::Invite(t, r) => invite_raw(*t, *r),
        Kind::Accept => accept(actor),
        Kind::Decline => decline(),
        Kind::Leave => leave(),
        Kind::Remove(t) => remove(*t),
        Kind::SetRole(t, r) => set_role_raw(*t, *r),
        Kind::Transfer(t) => transfer(*t),
        Kind::Create => create_body(actor, NAME),
    }
}

/// A deterministic shuffle driven by `seed`.
fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let j = (seed >> 33) as usize % (i + 1);
        v.swap(i, j);
    }
}

struct Sim {
    log: Log,
    model: Model,
    /// Hash of log entry i, and the convener's state after it.
    hashes: Vec<String>,
    snapshots: Vec<ClusterState>,
    signed_history: Vec<SignedClusterOp>,
    op_ids: Vec<String>,
    replicas: Vec<ClusterState>,
    inboxes: Vec<Vec<ClusterEntry>>,
    published: Vec<Content>,
    router: Router,
    stats: [usize; 4],
}

impl Sim {
    fn new() -> Self {
        let log = Log::new();
        let mut model = Model {
            convener: ORGS[A].into(),
            ..Default::default()
        };
        model.orgs.insert(
            ORGS[A].into(),
            (Standing::Member, ClusterRole::Convener as i32),
        );
        let genesis = body_of(&log.entries[0]).op.unwrap();
        Sim {
            hashes: vec![log.st.head_hash.clone()],
            snapshots: vec![log.st.clone()],
            signed_history: vec![genesis],
            op_ids: vec!["op-0".into()],
            replicas: vec![log.st.clone(); REPLICAS],
            inboxes: vec![Vec::new(); REPLICAS],
            published: Vec::new(),
            router: Router::new().with_former_member_grace_ms(SIM_GRACE_MS),
            stats: [0; 4],
            log,
            model,
        }
    }

    fn pick_actor(&self, actor: usize, smart: bool, kind: &Kind) -> usize {
        if !smart {
            return actor;
        }
        let m = &self.model;
        const CONV: i32 = ClusterRole::Convener as i32;
        const ADM: i32 = ClusterRole::Admin as i32;
        let set = match kind {
            Kind::Invite(..) | Kind::Remove(_) | Kind::SetRole(..) => {
                m.orgs_where(|s, r| s == Standing::Member && (r == CONV || r == ADM))
            }
            Kind::Transfer(_) | Kind::Create => vec![pos(&m.convener)],
            Kind::Accept | Kind::Decline => m.orgs_where(|s, _| s == Standing::Invited),
            Kind::Leave => m.orgs_where(|s, r| s == Standing::Member && r != CONV),
        };
        if set.is_empty() {
            actor
        } else {
            set[actor % set.len()]
        }
    }

    /// With `smart`, aim the target at an org for which the op can make sense.
    fn pick_target(&self, smart: bool, kind: &Kind) -> Kind {
        let m = &self.model;
        let conv = pos(&m.convener);
        let pick = |t: usize, set: Vec<usize>| {
            if set.is_empty() {
                t
            } else {
                set[t % set.len()]
            }
        };
        let not_in = || {
            (0..5)
                .filter(|&i| {
                    !matches!(
                        m.standing(ORGS[i]),
                        Some(Standing::Member | Standing::Invited)
                    )
                })
                .collect()
        };
        let members_but_convener = || {
            m.orgs_where(|s, _| s == Standing::Member)
                .into_iter()
                .filter(|&i| i != conv)
                .collect()
        };
        let in_but_convener = || {
            m.orgs_where(|s, _| matches!(s, Standing::Member | Standing::Invited))
                .into_iter()
                .filter(|&i| i != conv)
                .collect()
        };
        match (smart, kind) {
            (false, k) => k.clone(),
            (_, Kind::Invite(t, r)) => Kind::Invite(pick(*t, not_in()), *r),
            (_, Kind::Remove(t)) => Kind::Remove(pick(*t, in_but_convener())),
            (_, Kind::SetRole(t, r)) => Kind::SetRole(pick(*t, members_but_convener()), *r),
            (_, Kind::Transfer(t)) => Kind::Transfer(pick(*t, members_but_convener())),
            (_, k) => k.clone(),
        }
    }

    fn propose(
        &mut self,
        actor: usize,
        smart: bool,
        kind: &Kind,
        twist: &Twist,
        inject: u8,
        fate: [u8; REPLICAS],
    ) {
        let kind = &self.pick_target(smart, kind);
        let actor = self.pick_actor(actor, smart, kind);
        let actor_org = ORGS[actor];
        let body = body_for(kind, actor);
        let mut op = self.log.op(actor, body);
        match twist {
            Twist::Stale(k) => op.base_hash = self.hashes[k % self.hashes.len()].clone(),
            Twist::ReplayId(k) => op.op_id = self.op_ids[k % self.op_ids.len()].clone(),
            Twist::WrongCluster => op.cluster_id = cluster_id(ORGS[B], NAME),
            _ => {}
        }
        let signed = match twist {
            Twist::Forged(f) => sign_op(key((actor + f) % 5), &op),
            Twist::Resubmit(k) => self.signed_history[k % self.signed_history.len()].clone(),
            _ => sign_op(key(actor), &op),
        };
        let st = &self.log.st;
        let verdict = st.verify_op(&signed, root());

        // What must happen.
        let appears = self.model.orgs.contains_key(actor_org) || matches!(kind, Kind::Accept);
        let ctx = format!(
            "{actor_org} {kind:?} {twist:?} at head {}: {verdict:?}",
            st.head_index
        );
        match twist {
            Twist::Resubmit(_) => assert!(
                matches!(verdict, Err(ClusterError::Conflict { .. })),
                "{ctx}"
            ),
            Twist::Forged(_) if appears => assert!(
                matches!(verdict, Err(ClusterError::BadSignature(_))),
                "{ctx}"
            ),
            _ if !appears => assert!(matches!(verdict, Err(ClusterError::Authority(_))), "{ctx}"),
            Twist::WrongCluster => {
                assert!(matches!(verdict, Err(ClusterError::Malformed(_))), "{ctx}")
            }
            Twist::Stale(_) if op.base_hash != st.head_hash => {
                assert!(
                    matches!(verdict, Err(ClusterError::Conflict { .. })),
                    "{ctx}"
                )
            }
            Twist::ReplayId(_) => assert!(matches!(verdict, Err(ClusterError::Replay(_))), "{ctx}"),
            _ => {
                let allowed = self.model.allows(actor_org, kind);
                assert_eq!(verdict.is_ok(), allowed, "model disagrees: {ctx}");
                if let Err(e) = &verdict {
                    assert!(
                        matches!(
                            e,
                            ClusterError::Authority(_)
                                | ClusterError::State(_)
                                | ClusterError::Malformed(_)
                        ),
                        "{ctx}"
                    );
                }
            }
        }

        // A rogue entry, sequenced by a non-convener, regardless of the verdict.
        if inject == 3 {
            let conv = pos(&st.convener);
            let rogue = (conv + 1 + actor % 4) % 5;
            let e = sequence(Some(st), signed.clone(), key(rogue), self.log.clock);
            assert!(
                st.clone().apply(&e, root()).is_err(),
                "entry sequenced by non-convener {} applied",
                ORGS[rogue]
            );
            for ib in &mut self.inboxes {
                ib.push(e.clone());
            }
        }

        match verdict {
            Ok(_) => {
                let e = self.log.seq(signed.clone());
                let a = self
                    .log
                    .st
                    .apply(&e, root())
                    .unwrap_or_else(|err| panic!("verified op fails to apply: {err} ({ctx})"));
                self.log.entries.push(e.clone());
                self.model.apply(actor_org, kind);
                self.model.assert_matches(&self.log.st);
                assert_eq!(a.index as usize, self.hashes.len());
                self.hashes.push(a.hash);
                self.snapshots.push(self.log.st.clone());
                self.signed_history.push(signed);
                self.op_ids.push(a.op.op_id);
                for (ib, f) in self.inboxes.iter_mut().zip(fate) {
                    for _ in 0..[0, 1, 2, 1][f as usize] {
                        ib.push(e.clone());
                    }
                }
                self.stats[0] += 1;
            }
            Err(_) => {
                self.stats[1] += 1;
                if inject == 2 {
                    // A misbehaving convener sequences the refused op anyway.
                    let e = self.log.seq(signed);
                    assert!(
                        self.log.st.clone().apply(&e, root()).is_err(),
                        "refused op applied: {ctx}"
                    );
                    for ib in &mut self.inboxes {
                        ib.push(e.clone());
                    }
                }
            }
        }
    }

    /// Apply whatever verifies, in the order it arrives; keep what may fit
    /// later, drop the rest.
    fn deliver(&mut self, r: usize, seed: u64) {
        let mut inbox = std::mem::take(&mut self.inboxes[r]);
        shuffle(&mut inbox, seed);
        loop {
            let mut progress = false;
            let mut keep = Vec::new();
            for e in inbox {
                let rep = &mut self.replicas[r];
                match rep.apply(&e, root()) {
                    Ok(a) => {
                        assert_eq!(
                            a.hash, self.hashes[a.index as usize],
                            "replica {r} applied a foreign entry at {}",
                            a.index
                        );
                        assert_eq!(
                            *rep, self.snapshots[a.index as usize],
                            "replica {r} state at {}",
                            a.index
                        );
                        progress = true;
                    }
                    Err(ClusterError::OutOfOrder { expected, got }) if got > expected => {
                        keep.push(e)
                    }
                    Err(_) => {}
                }
            }
            inbox = keep;
            if !progress {
                break;
            }
        }
        self.inboxes[r] = inbox;
    }

    /// Catch-up pull from the convener's log.
    fn catch_up(&mut self, r: usize) {
        let rep = &mut self.replicas[r];
        for i in rep.head_index + 1..self.log.entries.len() as u64 {
            rep.apply(&self.log.entries[i as usize], root())
                .unwrap_or_else(|e| panic!("replica {r} catch-up at {i}: {e}"));
        }
        assert_eq!(*rep, self.log.st);
    }

    fn publish(&mut self, who: usize, explicit: Option<Vec<usize>>, r: usize, lag: usize) {
        let st = self.log.st.clone();
        let members = st.current_members();
        let origin = pos(&members[who % members.len()]);
        let now = self.log.tick();
        let mut content = publication(origin, &st, now);
        if let Some(x) = &explicit {
            content.recipients = x.iter().map(|&i| ORGS[i].to_string()).collect();
        }
        let wanted =
            |o: &str| content.recipients.is_empty() || content.recipients.iter().any(|x| x == o);
        let egress = self.router.egress(&content, &all_orgs(), Some(&st), now);
        assert_eq!(egress.len(), ORGS.len());
        self.catch_up(r);
        let rep = &self.replicas[r];
        for d in &egress {
            let expected = st.is_member(&d.org)
                && d.org != ORGS[origin]
                && wanted(&d.org)
                && st.publisher_at(ORGS[origin], st.head_index).is_some();
            assert_eq!(d.allowed, expected, "egress {d:?} for {content:?}");
            if d.allowed {
                assert!(st.is_member(&d.org), "delivered to non-member {}", d.org);
                self.stats[2] += 1;
            }
            let i = self.router.ingress(&content, &d.org, Some(rep), now);
            assert_eq!(i.allowed, expected, "ingress {i:?} for {content:?}");
            if !st.is_member(&d.org) {
                assert!(!i.allowed);
            }
            // A receiver that is behind is told to retry, never to accept.
            if st.head_index > 0 && d.org != ORGS[origin] {
                let behind = &self.snapshots[lag % st.head_index as usize];
                let i = self.router.ingress(&content, &d.org, Some(behind), now);
                assert!(!i.allowed && i.retry, "lagging ingress {i:?}");
            }
            // A receiver that does not know the cluster refuses.
            assert!(!self.router.ingress(&content, &d.org, None, now).allowed);
        }
        self.published.push(content);
    }

    /// A publication reaching `org` late: allowed iff it is still a member
    /// (and a wanted recipient).
    fn late(&mut self, pick: usize, org: usize) {
        if self.published.is_empty() {
            return;
        }
        let c = &self.published[pick % self.published.len()];
        let st = &self.log.st;
        let o = ORGS[org];
        let now = self.log.clock;
        // The origin could publish at the index it claims, created the message
        // before that right ended, and it ended no more than the grace ago.
        let origin_ok = match st.publisher_at(&c.origin_org, c.cluster_index) {
            None => false,
            Some(None) => true,
            Some(Some(ended)) => c.created_at_ms <= ended && now <= ended + SIM_GRACE_MS,
        };
        let expected = o != c.origin_org
            && st.is_member(o)
            && origin_ok
            && (c.recipients.is_empty() || c.recipients.iter().any(|x| x == o));
        let d = self.router.ingress(c, o, Some(st), now);
        assert_eq!(d.allowed, expected, "late ingress {d:?} of {c:?}");
        let d = self
            .router
            .egress(c, &[o.to_string()], Some(st), now)
            .remove(0);
        assert_eq!(d.allowed, expected, "late egress {d:?} of {c:?}");
    }

    /// A former member publishes now with the view it had while a member.
    fn stale(&mut self, who: usize, at: usize) {
        let o = ORGS[who];
        let points: Vec<usize> = (0..self.snapshots.len())
            .filter(|&i| {
                self.snapshots[i].is_member(o)
                    && matches!(self.log.st.member_at(o, i as u64), Some(Some(_)))
            })
            .collect();
        if points.is_empty() {
            return;
        }
        let view = self.snapshots[points[at % points.len()]].clone();
        let now = self.log.tick();
        let content = publication(who, &view, now);
        for r in &all_orgs() {
            let d = self.router.ingress(&content, r, Some(&self.log.st), now);
            assert!(
                !d.allowed,
                "stale publication by former member {o} accepted at {r}: {d:?}"
            );
        }
        self.stats[3] += 1;
    }

    fn finish(&mut self) {
        for r in 0..REPLICAS {
            self.deliver(r, r as u64);
            self.catch_up(r);
            assert_eq!(self.replicas[r].head_hash, self.log.st.head_hash);
            assert_eq!(
                self.replicas[r].current_members(),
                self.log.st.current_members()
            );
        }
        let (s, _) = replay(&self.log.encoded(), root()).expect("replay of the whole log");
        assert_eq!(s, self.log.st);
    }
}

fn run(steps: &[Step]) -> [usize; 4] {
    let mut sim = Sim::new();
    for s in steps {
        match s.clone() {
            Step::Propose {
                actor,
                smart,
                kind,
                twist,
                inject,
                fate,
            } => sim.propose(actor, smart, &kind, &twist, inject, fate),
            Step::Deliver { replica, seed } => sim.deliver(replica, seed),
            Step::Publish {
                who,
                explicit,
                replica,
                lag,
            } => sim.publish(who, explicit, replica, lag),
            Step::Late { pick, org } => sim.late(pick, org),
            Step::Stale { who, at } => sim.stale(who, at),
        }
    }
    sim.finish();
    sim.stats
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Replicas receiving the convener's entries duplicated, reordered,
    /// dropped and mixed with forged/refused ones converge on the convener's
    /// head; only current members are ever sent or accept a publication.
    #[test]
    fn replicas_converge_and_only_members_receive(steps in prop::collection::vec(step_strategy(), 1..40)) {
        run(&steps);
    }
}

/// The random sequences must actually exercise the interesting paths.
#[test]
fn property_generator_covers_accepts_refusals_and_deliveries() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut total = [0; 4];
    for _ in 0..24 {
        let steps = prop::collection::vec(step_strategy(), 30..40)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let s = run(&steps);
        for i in 0..4 {
            total[i] += s[i];
        }
    }
    let [applied, refused, delivered, stale] = total;
    assert!(
        applied > 60 && refused > 60 && delivered > 10 && stale > 0,
        "coverage {total:?}"
    );
}

#[test]
fn an_entry_signed_or_sequenced_with_a_key_revoked_by_then_is_refused_and_earlier_ones_stay() {
    let mut l = Log::new();
    l.ok(A, invite(B, ClusterRole::Member));
    l.ok(B, accept(B));
    let entries = l.entries.clone();
    // entries[1]: invite, signed and sequenced by A; entries[2]: accept, signed by B,
    // sequenced by A. Their sequencing times are the fixture's clock.
    let at = |e: &ClusterEntry| {
        ClusterEntryBody::decode(e.body.as_slice())
            .unwrap()
            .sequenced_at_ms
    };
    let (a, b) = (key(A).key_id().to_string(), key(B).key_id().to_string());
    let none = |_: &str| None;
    for e in &entries {
        assert!(check_signers(e, none).is_ok());
    }
    // B's key distrusted from the accept's sequencing time: the accept is refused, the
    // invite (A's) is not.
    let since = at(&entries[2]);
    let b_revoked = |k: &str| (k == b).then_some(since);
    let err = check_signers(&entries[2], b_revoked)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("signed with key") && err.contains("revoked"),
        "{err}"
    );
    assert!(check_signers(&entries[1], b_revoked).is_ok());
    // Distrusted only from later: what B signed before stays.
    let later = |k: &str| (k == b).then_some(since + 1);
    assert!(check_signers(&entries[2], later).is_ok());
    // The convener's key: everything it sequenced from then on.
    let a_revoked = |k: &str| (k == a).then_some(at(&entries[1]));
    let err = check_signers(&entries[2], a_revoked)
        .unwrap_err()
        .to_string();
    assert!(err.contains("sequenced with key"), "{err}");
    assert!(check_signers(&entries[0], a_revoked).is_ok());
    // Not an entry at all.
    let junk = ClusterEntry {
        body: vec![0xff; 4],
        ..Default::default()
    };
    assert!(matches!(
        check_signers(&junk, none),
        Err(ClusterError::Malformed(_))
    ));
}

#[test]
fn a_log_entry_is_never_sequenced_before_the_head() {
    let mut l = Log::new();
    l.ok(A, invite(B, ClusterRole::Member));
    let head_at = l.st.head_at_ms;
    // A convener (or a thief of its key) dating an entry before the head: refused.
    let signed = l.signed(B, accept(B));
    let body = ClusterEntryBody {
        cluster_id: l.st.id.clone(),
        index: l.st.head_index + 1,
        prev_hash: l.st.head_hash.clone(),
        op: Some(signed.clone()),
        sequenced_at_ms: head_at - 1,
    }
    .encode_to_vec();
    let backdated = ClusterEntry {
        signature: key(A).sign(ENTRY_CONTEXT, &body),
        key_id: key(A).key_id().to_string(),
        body,
    };
    let err =
        l.st.clone()
            .apply(&backdated, root())
            .unwrap_err()
            .to_string();
    assert!(err.contains("never go back"), "{err}");
    // `sequence` never dates before the head, whatever the clock says; the same time is fine.
    let entry = sequence(Some(&l.st), signed, key(A), head_at - 1_000);
    let applied =
        l.st.clone()
            .apply(&entry, root())
            .expect("sequenced at the head's time");
    assert_eq!(applied.sequenced_at_ms, head_at);
}

// ---------------------------------------------------------------------------
// Key rotation: a member's new certificate in the log (rekey)
// ---------------------------------------------------------------------------

fn rekey(cert: Vec<u8>) -> Op {
    Op::Rekey(pb::RekeyMember { node_cert: cert })
}

#[test]
fn a_rotated_member_rekeys_and_then_acts_with_its_new_key_only() {
    let mut l = Log::with_members();
    let new = rotated(B);
    // Before its rekey, the log does not know the new key.
    l.keys[B] = &new.key;
    let before = l.submit(B, leave()).unwrap_err();
    assert!(
        matches!(&before, ClusterError::BadSignature(m) if m.contains("not certified for org-b")),
        "{before}"
    );
    let applied = l.ok(B, rekey(new.cert.clone()));
    assert!(matches!(applied.op.op, Some(Op::Rekey(_))));
    let m = &l.st.members[ORGS[B]];
    assert_eq!(m.cert_der, new.cert);
    assert_eq!(m.profile.signing_keys[0].key_id, new.key.key_id());
    // Standing, role and periods are untouched.
    assert_eq!(m.standing, Standing::Member);
    assert_eq!(m.role, ClusterRole::Member);
    assert_eq!(m.since_index, 4);
    assert_eq!(m.periods, vec![(4, None)]);
    // The old key no longer speaks for org-b in this log; the new one does.
    l.keys[B] = key(B);
    assert!(matches!(
        l.submit(B, leave()).unwrap_err(),
        ClusterError::BadSignature(_)
    ));
    l.keys[B] = &new.key;
    l.ok(B, leave());
    // A replica (or a new member catching up) verifies the whole log: entries before the
    // rekey with the certificate org-b had then, after it with the new one.
    assert_eq!(l.replica(), l.st);
}

#[test]
fn a_rotated_convener_sequences_its_own_rekey_with_the_new_key() {
    let mut l = Log::with_members();
    let new = rotated(A);
    l.keys[A] = &new.key;
    l.ok(A, rekey(new.cert.clone()));
    assert_eq!(l.st.members[ORGS[A]].cert_der, new.cert);
    assert_eq!(l.st.convener, ORGS[A]);
    // Entries the convener sequences from now on carry the new key; replicas follow.
    l.ok(A, remove(D));
    l.ok(C, set_role(B, ClusterRole::Observer));
    assert_eq!(l.replica(), l.st);
    let op = l.op(A, remove(B));
    assert_eq!(
        describe(&l.st.verify_op(&sign_op(&new.key, &op), root()).unwrap()),
        "remove org-b (test)"
    );
    // An entry the convener sequences with its old key is no longer its own.
    let signed = l.signed(A, remove(B));
    let old_seq = sequence(Some(&l.st), signed, key(A), l.clock + 1);
    assert!(matches!(
        l.st.clone().apply(&old_seq, root()).unwrap_err(),
        ClusterError::BadSignature(m) if m.contains("not a key of the convener org-a")
    ));
}

#[test]
fn the_convener_own_rekey_entry_needs_the_new_key_and_is_the_only_swap() {
    let (new_a, new_b) = (rotated(A), rotated(B));
    let mut l2 = Log::with_members();
    // The convener's rekey sequenced with its old key: the entry is refused.
    let op = l2.op(A, rekey(new_a.cert.clone()));
    let signed = sign_op(&new_a.key, &op);
    let e = sequence(Some(&l2.st), signed.clone(), key(A), l2.clock + 1);
    assert!(matches!(
        l2.st.clone().apply(&e, root()).unwrap_err(),
        ClusterError::BadSignature(_)
    ));
    // With the new key it is applied.
    let e = sequence(Some(&l2.st), signed, &new_a.key, l2.clock + 1);
    l2.st.apply(&e, root()).expect("convener rekey");
    // A member's rekey does not let that member sequence: the entry must be the convener's.
    let mut l3 = Log::with_members();
    let op = l3.op(B, rekey(new_b.cert.clone()));
    let e = sequence(
        Some(&l3.st),
        sign_op(&new_b.key, &op),
        &new_b.key,
        l3.clock + 1,
    );
    assert!(matches!(
        l3.st.clone().apply(&e, root()).unwrap_err(),
        ClusterError::BadSignature(m) if m.contains("convener org-a")
    ));
    // Nor is the new certificate of the convener accepted for anyone else's entry signature.
    let op = l3.op(B, leave());
    let e = sequence(Some(&l3.st), sign_op(key(B), &op), &new_a.key, l3.clock + 1);
    assert!(matches!(
        l3.st.clone().apply(&e, root()).unwrap_err(),
        ClusterError::BadSignature(_)
    ));
}

#[test]
fn rekey_refusals() {
    let mut l = Log::with_members();
    let new_b = rotated(B);
    let mut try_as = |actor: usize, signer: &'static SigningKey, cert: Vec<u8>| {
        let op = l.op(actor, rekey(cert));
        l.st.verify_op(&sign_op(signer, &op), root()).unwrap_err()
    };
    // Someone else's certificate (org-a's new one) for org-b.
    let e = try_as(B, &rotated(A).key, rotated(A).cert.clone());
    assert!(
        matches!(&e, ClusterError::Certificate(m) if m.contains("org-a")),
        "{e}"
    );
    // The new certificate, signed with the old key.
    let e = try_as(B, key(B), new_b.cert.clone());
    assert!(matches!(e, ClusterError::BadSignature(_)), "{e}");
    // The certificate the log already holds.
    let e = try_as(B, key(B), cert(B));
    assert!(
        matches!(&e, ClusterError::State(m) if m.contains("already this one")),
        "{e}"
    );
    // An organisation that does not appear in the cluster.
    let e = try_as(E, key(E), cert(E));
    assert!(matches!(e, ClusterError::Authority(_)), "{e}");
    // Not a certificate at all.
    let e = try_as(B, key(B), vec![0x30, 0x03, 0x02, 0x01, 0x01]);
    assert!(matches!(e, ClusterError::Certificate(_)), "{e}");
    // Back to an older certificate after a rotation: never.
    l.keys[B] = &new_b.key;
    l.ok(B, rekey(new_b.cert.clone()));
    let op = l.op(B, rekey(cert(B)));
    let e = l.st.verify_op(&sign_op(key(B), &op), root()).unwrap_err();
    assert!(
        matches!(&e, ClusterError::Authority(m) if m.contains("never back")),
        "{e}"
    );
    // A member that left has no slot to rekey.
    l.ok(B, leave());
    let new_b2 = rotated(B);
    let op = l.op(B, rekey(new_b2.cert.clone()));
    let e =
        l.st.verify_op(&sign_op(&new_b2.key, &op), root())
            .unwrap_err();
    assert!(
        matches!(&e, ClusterError::State(m) if m.contains("not a member")),
        "{e}"
    );
    // An invitee (not yet a member) accepts with its current certificate instead.
    let mut l = Log::new();
    l.ok(A, invite(B, ClusterRole::Member));
    let op = l.op(B, rekey(new_b.cert.clone()));
    let e =
        l.st.verify_op(&sign_op(&new_b.key, &op), root())
            .unwrap_err();
    assert!(
        matches!(&e, ClusterError::State(m) if m.contains("not a member")),
        "{e}"
    );
    l.keys[B] = &new_b.key;
    l.ok(
        B,
        Op::Accept(pb::AcceptInvitation {
            node_cert: new_b.cert.clone(),
        }),
    );
    assert_eq!(l.st.members[ORGS[B]].cert_der, new_b.cert);
}

#[test]
fn a_rekey_whose_new_key_is_revoked_is_refused_and_describes_itself() {
    let mut l = Log::with_members();
    let new_b = rotated(B);
    l.keys[B] = &new_b.key;
    l.ok(B, rekey(new_b.cert.clone()));
    let entry = l.entries.last().unwrap().clone();
    let new_id = new_b.key.key_id().to_string();
    let revoked = |k: &str| (k == new_id).then_some(0);
    assert!(matches!(
        check_signers(&entry, revoked),
        Err(ClusterError::Revoked(_))
    ));
    let serial = pki::serial_hex(&new_b.cert).unwrap();
    let op = ClusterOp {
        op: Some(rekey(new_b.cert.clone())),
        ..Default::default()
    };
    assert_eq!(
        describe(&op),
        format!("new node certificate {serial} (key rotation)")
    );
    assert_eq!(
        describe(&ClusterOp {
            op: Some(rekey(vec![1, 2])),
            ..Default::default()
        }),
        "new node certificate (key rotation)"
    );
}

#[test]
fn a_thief_with_the_convener_old_key_cannot_move_the_log_back() {
    let mut l = Log::with_members();
    let new_a = rotated(A);
    l.keys[A] = &new_a.key;
    l.ok(A, rekey(new_a.cert.clone()));
    // The old key signs a rekey back to the old certificate, and sequences it: the entry's
    // signature checks out against the certificate it carries, but the move back does not.
    let op = l.op(A, rekey(cert(A)));
    let entry = sequence(Some(&l.st), sign_op(key(A), &op), key(A), l.clock + 1);
    let e = l.st.clone().apply(&entry, root()).unwrap_err();
    assert!(
        matches!(&e, ClusterError::Authority(m) if m.contains("never back")),
        "{e}"
    );
    // Nor can it sequence anything else any more.
    let op = l.op(B, leave());
    let entry = sequence(Some(&l.st), sign_op(key(B), &op), key(A), l.clock + 1);
    assert!(matches!(
        l.st.clone().apply(&entry, root()).unwrap_err(),
        ClusterError::BadSignature(_)
    ));
}
