//! Need-to-know clusters: the membership state machine and its hash-linked,
//! convener-sequenced log of signed operations. Owns who is a member of what,
//! with which role, since which log index, and every authority rule. Pure:
//! no I/O, no network, no clock (times come in as arguments), so replicas,
//! the convener and property tests run the same code. It never merges
//! concurrent operations: an op not based on the current head is refused.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use bluewire_proto::v1::{
    self as pb, ClusterEntry, ClusterEntryBody, ClusterOp, ClusterRole, HistoryRule,
    SignedClusterOp, cluster_op::Op,
};
use prost::Message;
use rustls::pki_types::CertificateDer;
use thiserror::Error;

use crate::pki::{self, OrgProfile, PeerIdentity};
use crate::signing::{self, SigningKey};

/// Signature context of an operation signed by the acting organisation.
pub const OP_CONTEXT: &[u8] = b"bluewire/v1/cluster-op\0";
/// Signature context of a log entry signed by the sequencing convener.
pub const ENTRY_CONTEXT: &[u8] = b"bluewire/v1/cluster-entry\0";
/// Largest encoded entry accepted from a peer.
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ClusterError {
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("signature does not verify: {0}")]
    BadSignature(String),
    #[error("certificate in the log is not valid: {0}")]
    Certificate(String),
    #[error("out of order: expected log index {expected}, got {got}")]
    OutOfOrder { expected: u64, got: u64 },
    #[error(
        "hash link broken at index {index}: previous hash should be {expected}, entry says {got}"
    )]
    HashLink {
        index: u64,
        expected: String,
        got: String,
    },
    #[error(
        "conflict: the operation was based on log head {base} but the head is now {head}; re-read the cluster and try again"
    )]
    Conflict { base: String, head: String },
    #[error("operation {0} was already applied (replay)")]
    Replay(String),
    #[error("not allowed: {0}")]
    Authority(String),
    /// Signed (or sequenced) with a key whose certificate was revoked before the entry was
    /// sequenced.
    #[error("refused (revoked): {0}")]
    Revoked(String),
    #[error("{0}")]
    State(String),
}

type Result<T> = std::result::Result<T, ClusterError>;

/// Where an organisation stands in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Invited,
    Member,
    Declined,
    Left,
    Removed,
}

impl Standing {
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Invited => "invited",
            Standing::Member => "member",
            Standing::Declined => "declined",
            Standing::Left => "left",
            Standing::Removed => "removed",
        }
    }
}

/// One organisation's record in a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    pub org: String,
    pub role: ClusterRole,
    pub standing: Standing,
    /// CA-certified profile from the node certificate in the log.
    pub profile: Arc<OrgProfile>,
    pub cert_der: Vec<u8>,
    /// Index of the entry that last changed its standing.
    pub since_index: u64,
    /// Membership periods: (joined at index, ended at index and time).
    pub periods: Vec<(u64, Option<(u64, i64)>)>,
    /// Publishing periods: membership with a role that may publish (not
    /// observer), as (from index, ended at index and time).
    pub publishing: Vec<(u64, Option<(u64, i64)>)>,
}

/// Where `index` falls in `periods`: `None` outside every period, `Some(None)`
/// in an open one, `Some(Some(ended_at_ms))` in one that ended later.
fn period_at(periods: &[(u64, Option<(u64, i64)>)], index: u64) -> Option<Option<i64>> {
    periods.iter().find_map(|(from, end)| match end {
        _ if index < *from => None,
        None => Some(None),
        Some((to, at_ms)) if index < *to => Some(Some(*at_ms)),
        Some(_) => None,
    })
}

/// Open a period at `index` unless one is open.
fn open_period(periods: &mut Vec<(u64, Option<(u64, i64)>)>, index: u64) {
    if periods.last().is_none_or(|p| p.1.is_some()) {
        periods.push((index, None));
    }
}

/// Close the open period, if any, at `index` and `at_ms`.
fn close_period(periods: &mut [(u64, Option<(u64, i64)>)], index: u64, at_ms: i64) {
    if let Some(p) = periods.last_mut()
        && p.1.is_none()
    {
        p.1 = Some((index, at_ms));
    }
}

impl MemberRecord {
    /// Change the role, opening or closing a publishing period while a member.
    fn set_role(&mut self, role: ClusterRole, index: u64, at_ms: i64) {
        self.role = role;
        if self.standing != Standing::Member {
            return;
        }
        if role == ClusterRole::Observer {
            close_period(&mut self.publishing, index, at_ms);
        } else {
            open_period(&mut self.publishing, index);
        }
    }
}

/// The replicated state of one cluster, as of its log head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterState {
    pub id: String,
    pub name: String,
    pub purpose: String,
    pub levels: Vec<i32>,
    pub max_tlp: i32,
    pub history: HistoryRule,
    pub convener: String,
    /// An exercise cluster: the only place exercise-flagged messages go.
    pub exercise: bool,
    pub members: BTreeMap<String, MemberRecord>,
    pub head_index: u64,
    pub head_hash: String,
    pub created_at_ms: i64,
    /// When the head entry was sequenced: a later entry is never sequenced earlier.
    pub head_at_ms: i64,
    op_ids: HashSet<String>,
}

/// An entry whose signatures, link and authority checked out, with what it did.
#[derive(Debug, Clone)]
pub struct Applied {
    pub index: u64,
    pub hash: String,
    pub op: ClusterOp,
    pub sequenced_at_ms: i64,
    pub sequenced_by: String,
}

/// Hex SHA-256 of an encoded entry: the link to the next one.
pub fn entry_hash(entry_bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, entry_bytes).as_ref())
}

/// Cluster ids are "<creator org>/<name>".
pub fn cluster_id(creator: &str, name: &str) -> String {
    format!("{creator}/{name}")
}

/// Cluster names follow the federation's identifier rule, the one organisation ids follow
/// ([`pki::is_valid_id`]).
pub fn check_name(name: &str) -> Result<()> {
    if pki::is_valid_id(name) {
        Ok(())
    } else {
        Err(ClusterError::Malformed(format!(
            "cluster name {name:?}: use 2-64 characters of a-z, 0-9 and '-', not starting or ending with '-'"
        )))
    }
}

pub fn role_name(r: ClusterRole) -> &'static str {
    match r {
        ClusterRole::Convener => "convener",
        ClusterRole::Admin => "admin",
        ClusterRole::Member => "member",
        ClusterRole::Observer => "observer",
        ClusterRole::Unspecified => "?",
    }
}

/// Sign an operation as `key`'s organisation.
pub fn sign_op(key: &SigningKey, op: &ClusterOp) -> SignedClusterOp {
    let bytes = op.encode_to_vec();
    SignedClusterOp {
        signature: key.sign(OP_CONTEXT, &bytes),
        key_id: key.key_id().to_string(),
        op: bytes,
    }
}

/// A node certificate from the log, verified against the federation root.
fn verify_cert(der: &[u8], root_der: &[u8], expect_org: &str) -> Result<OrgProfile> {
    let chain = [CertificateDer::from(der.to_vec())];
    match pki::identity_from_chain(&chain, root_der) {
        Ok(PeerIdentity::Node { profile, .. }) if profile.org == expect_org => Ok(profile),
        Ok(PeerIdentity::Node { profile, .. }) => Err(ClusterError::Certificate(format!(
            "certificate is for {:?}, not {expect_org:?}",
            profile.org
        ))),
        Ok(_) => Err(ClusterError::Certificate("not a node certificate".into())),
        Err(e) => Err(ClusterError::Certificate(e.to_string())),
    }
}

fn key_in(profile: &OrgProfile, key_id: &str) -> Option<Vec<u8>> {
    profile
        .signing_keys
        .iter()
        .find(|k| k.key_id == key_id)
        .and_then(|k| k.public_key(&profile.org).ok())
}

/// Decode a signed op, verify its signature with `profile`'s certified key.
fn open_op(signed: &SignedClusterOp, profile: &OrgProfile) -> Result<ClusterOp> {
    let pk = key_in(profile, &signed.key_id).ok_or_else(|| {
        ClusterError::BadSignature(format!(
            "key {:?} is not certified for {}",
            signed.key_id, profile.org
        ))
    })?;
    if !signing::verify(&pk, OP_CONTEXT, &signed.op, &signed.signature) {
        return Err(ClusterError::BadSignature(format!(
            "operation signature by {:?}",
            signed.key_id
        )));
    }
    ClusterOp::decode(signed.op.as_slice()).map_err(|e| ClusterError::Malformed(e.to_string()))
}

/// Peek at an op without verifying (to find out who claims to act).
fn peek_op(signed: &SignedClusterOp) -> Result<ClusterOp> {
    ClusterOp::decode(signed.op.as_slice()).map_err(|e| ClusterError::Malformed(e.to_string()))
}

impl ClusterState {
    /// Current role of a current member.
    pub fn role_of(&self, org: &str) -> Option<ClusterRole> {
        self.members
            .get(org)
            .filter(|m| m.standing == Standing::Member)
            .map(|m| m.role)
    }

    pub fn is_member(&self, org: &str) -> bool {
        self.role_of(org).is_some()
    }

    pub fn standing(&self, org: &str) -> Option<Standing> {
        self.members.get(org).map(|m| m.standing)
    }

    /// Current members, sorted.
    pub fn current_members(&self) -> Vec<String> {
        self.members
            .values()
            .filter(|m| m.standing == Standing::Member)
            .map(|m| m.org.clone())
            .collect()
    }

    /// Every organisation the log mentions (members, invitees, former members).
    pub fn known_orgs(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }

    /// Was `org` a member at log index `index`? If its membership ended
    /// later, returns the time it ended too.
    pub fn member_at(&self, org: &str, index: u64) -> Option<Option<i64>> {
        period_at(&self.members.get(org)?.periods, index)
    }

    /// Could `org` publish (a member in a role other than observer) at log
    /// index `index`? If that right ended later, returns when it ended.
    pub fn publisher_at(&self, org: &str, index: u64) -> Option<Option<i64>> {
        period_at(&self.members.get(org)?.publishing, index)
    }

    /// Key lookup for signatures in this cluster's log.
    fn profile(&self, org: &str) -> Option<&OrgProfile> {
        self.members.get(org).map(|m| &*m.profile)
    }

    /// May `op` (by `op.actor_org`) be applied now? Authority and state only.
    pub fn check(&self, op: &ClusterOp) -> Result<()> {
        use ClusterRole as R;
        let actor = op.actor_org.as_str();
        let actor_role = self.role_of(actor);
        let manager = matches!(actor_role, Some(R::Convener | R::Admin));
        let deny = |s: String| Err(ClusterError::Authority(s));
        match &op.op {
            None => Err(ClusterError::Malformed("operation has no body".into())),
            Some(Op::Create(_)) => Err(ClusterError::State(format!("cluster {} already exists", self.id))),
            Some(Op::Invite(i)) => {
                if !manager {
                    return deny(format!("{actor} is not the convener or an admin of {}", self.id));
                }
                if !matches!(R::try_from(i.role), Ok(R::Member | R::Admin | R::Observer)) {
                    return Err(ClusterError::Malformed("invite role must be member, admin or observer".into()));
                }
                if i.role == R::Admin as i32 && actor_role != Some(R::Convener) {
                    return deny("only the convener can invite an admin".into());
                }
                match self.standing(&i.org) {
                    Some(Standing::Member) => Err(ClusterError::State(format!("{} is already a member", i.org))),
                    Some(Standing::Invited) => Err(ClusterError::State(format!("{} is already invited", i.org))),
                    _ => Ok(()),
                }
            }
            Some(Op::Accept(_)) | Some(Op::Decline(_)) => match self.standing(actor) {
                Some(Standing::Invited) => Ok(()),
                Some(Standing::Member) => Err(ClusterError::State(format!("{actor} is already a member of {}", self.id))),
                _ => Err(ClusterError::State(format!("{actor} has no pending invitation to {}", self.id))),
            },
            Some(Op::Leave(_)) => match actor_role {
                None => Err(ClusterError::State(format!("{actor} is not a member of {}", self.id))),
                Some(R::Convener) => Err(ClusterError::State(
                    "the convener cannot leave: transfer the convener role first (cluster transfer-convener)".into(),
                )),
                Some(_) => Ok(()),
            },
            Some(Op::Remove(r)) => {
                if !manager {
                    return deny(format!("{actor} is not the convener or an admin of {}", self.id));
                }
                match (self.standing(&r.org), self.members.get(&r.org).map(|m| m.role)) {
                    (Some(Standing::Member | Standing::Invited), Some(R::Convener)) => {
                        deny("the convener cannot be removed".into())
                    }
                    (Some(Standing::Member | Standing::Invited), Some(R::Admin))
                        if actor_role != Some(R::Convener) =>
                    {
                        deny("only the convener can remove an admin".into())
                    }
                    (Some(Standing::Member | Standing::Invited), _) => Ok(()),
                    _ => Err(ClusterError::State(format!("{} is not a member of {}", r.org, self.id))),
                }
            }
            Some(Op::SetRole(s)) => {
                if !manager {
                    return deny(format!("{actor} is not the convener or an admin of {}", self.id));
                }
                let new = R::try_from(s.role).unwrap_or(R::Unspecified);
                if !matches!(new, R::Admin | R::Member | R::Observer) {
                    return Err(ClusterError::Malformed(
                        "role must be admin, member or observer (use transfer-convener for convener)".into(),
                    ));
                }
                let Some(cur) = self.role_of(&s.org) else {
                    return Err(ClusterError::State(format!("{} is not a member of {}", s.org, self.id)));
                };
                if cur == R::Convener {
                    return deny("the convener's role changes only by transfer-convener".into());
                }
                if (cur == R::Admin || new == R::Admin) && actor_role != Some(R::Convener) {
                    return deny("only the convener can grant or withdraw the admin role".into());
                }
                Ok(())
            }
            Some(Op::Rekey(r)) => self.check_rekey(actor, &r.node_cert),
            Some(Op::Transfer(t)) => {
                if actor_role != Some(R::Convener) {
                    return deny(format!("only the convener of {} can transfer the role", self.id));
                }
                if t.to == actor || !self.is_member(&t.to) {
                    return Err(ClusterError::State(format!("{} is not another current member of {}", t.to, self.id)));
                }
                Ok(())
            }
        }
    }

    /// May `actor` replace its certificate in the log with `new_der`? Only a current
    /// member, only with a different certificate issued after (notBefore) the one the log
    /// holds: a key rotation moves forward. That the certificate is the root's,
    /// for `actor`, is `verify_op`'s check.
    fn check_rekey(&self, actor: &str, new_der: &[u8]) -> Result<()> {
        let Some(m) = self
            .members
            .get(actor)
            .filter(|m| m.standing == Standing::Member)
        else {
            return Err(ClusterError::State(format!(
                "{actor} is not a member of {}: only a member's certificate is replaced (an invitee accepts with its current one)",
                self.id
            )));
        };
        if m.cert_der == new_der {
            return Err(ClusterError::State(format!(
                "{actor}'s certificate in {} is already this one",
                self.id
            )));
        }
        let issued = |d: &[u8]| {
            pki::validity_ms(d)
                .map(|v| v.0)
                .map_err(|e| ClusterError::Certificate(e.to_string()))
        };
        let (held, new) = (issued(&m.cert_der)?, issued(new_der)?);
        if new <= held {
            return Err(ClusterError::Authority(format!(
                "{actor}'s new certificate was issued ({}) no later than the one in {} ({}): a rotation only moves to a newer certificate, never back",
                crate::clock::rfc3339(new),
                self.id,
                crate::clock::rfc3339(held)
            )));
        }
        Ok(())
    }

    /// The profile whose keys sign the entry sequencing `signed`: the convener's, or, when
    /// the convener replaces its own certificate, the new one's (after a rotation its node
    /// holds only the new keys). The op itself is verified fully by `verify_op`.
    fn sequencer_profile(&self, signed: &SignedClusterOp, root_der: &[u8]) -> Result<OrgProfile> {
        if let Ok(ClusterOp {
            actor_org,
            op: Some(Op::Rekey(r)),
            ..
        }) = peek_op(signed)
            && actor_org == self.convener
        {
            return verify_cert(&r.node_cert, root_der, &self.convener);
        }
        self.profile(&self.convener)
            .cloned()
            .ok_or_else(|| ClusterError::State("convener unknown".into()))
    }

    /// Verify `entry` as the next entry of this cluster and apply it.
    pub fn apply(&mut self, entry: &ClusterEntry, root_der: &[u8]) -> Result<Applied> {
        let bytes = entry.encode_to_vec();
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(ClusterError::Malformed(format!(
                "entry of {} bytes is over the limit",
                bytes.len()
            )));
        }
        let body = ClusterEntryBody::decode(entry.body.as_slice())
            .map_err(|e| ClusterError::Malformed(e.to_string()))?;
        if body.cluster_id != self.id {
            return Err(ClusterError::Malformed(format!(
                "entry for {} in log of {}",
                body.cluster_id, self.id
            )));
        }
        if body.index != self.head_index + 1 {
            return Err(ClusterError::OutOfOrder {
                expected: self.head_index + 1,
                got: body.index,
            });
        }
        if body.prev_hash != self.head_hash {
            return Err(ClusterError::HashLink {
                index: body.index,
                expected: self.head_hash.clone(),
                got: body.prev_hash,
            });
        }
        // Times never go back along the log: a key's holder cannot date a new entry before
        // what is already there (see `check_signers`).
        if body.sequenced_at_ms < self.head_at_ms {
            return Err(ClusterError::Malformed(format!(
                "entry {} is sequenced at {}, before entry {} ({}): a log's times never go back",
                body.index,
                crate::clock::rfc3339(body.sequenced_at_ms),
                self.head_index,
                crate::clock::rfc3339(self.head_at_ms)
            )));
        }
        // The sequencer is the convener as of before this entry. Position is
        // checked first so a replica that is behind (e.g. has not applied a
        // transfer yet) learns it is behind rather than seeing a forgery.
        let signed = body
            .op
            .clone()
            .ok_or_else(|| ClusterError::Malformed("entry without op".into()))?;
        let seq_profile = self.sequencer_profile(&signed, root_der)?;
        verify_entry_sig(entry, &seq_profile)?;
        let op = self.verify_op(&signed, root_der)?;
        let mut next = self.clone();
        next.transition(&op, root_der, body.index, body.sequenced_at_ms)?;
        let hash = entry_hash(&bytes);
        next.head_index = body.index;
        next.head_hash = hash.clone();
        next.head_at_ms = body.sequenced_at_ms;
        *self = next;
        Ok(Applied {
            index: body.index,
            hash,
            op,
            sequenced_at_ms: body.sequenced_at_ms,
            sequenced_by: seq_profile.org,
        })
    }

    /// Verify a proposed op against the current head (what the convener
    /// does before sequencing, and replicas do when applying).
    pub fn verify_op(&self, signed: &SignedClusterOp, root_der: &[u8]) -> Result<ClusterOp> {
        let claimed = peek_op(signed)?;
        // Accepting organisations prove themselves with the certificate in the op.
        let profile = match (&claimed.op, self.members.get(&claimed.actor_org)) {
            (Some(Op::Accept(a)), _) => verify_cert(&a.node_cert, root_der, &claimed.actor_org)?,
            // A rotated member signs with the key its new certificate certifies.
            (Some(Op::Rekey(r)), Some(_)) => {
                verify_cert(&r.node_cert, root_der, &claimed.actor_org)?
            }
            (_, Some(m)) => (*m.profile).clone(),
            (_, None) => {
                return Err(ClusterError::Authority(format!(
                    "{} does not appear in {}",
                    claimed.actor_org, self.id
                )));
            }
        };
        let op = open_op(signed, &profile)?;
        if op.cluster_id != self.id {
            return Err(ClusterError::Malformed(format!(
                "op for {} sent to {}",
                op.cluster_id, self.id
            )));
        }
        if op.base_hash != self.head_hash {
            return Err(ClusterError::Conflict {
                base: op.base_hash.clone(),
                head: self.head_hash.clone(),
            });
        }
        if self.op_ids.contains(&op.op_id) {
            return Err(ClusterError::Replay(op.op_id.clone()));
        }
        self.check(&op)?;
        Ok(op)
    }

    fn transition(
        &mut self,
        op: &ClusterOp,
        root_der: &[u8],
        index: u64,
        at_ms: i64,
    ) -> Result<()> {
        use ClusterRole as R;
        self.op_ids.insert(op.op_id.clone());
        let end = |m: &mut MemberRecord, standing: Standing| {
            close_period(&mut m.periods, index, at_ms);
            close_period(&mut m.publishing, index, at_ms);
            m.standing = standing;
            m.since_index = index;
        };
        match &op.op {
            Some(Op::Invite(i)) => {
                let profile = verify_cert(&i.node_cert, root_der, &i.org)?;
                let (periods, publishing) = self
                    .members
                    .get(&i.org)
                    .map(|m| (m.periods.clone(), m.publishing.clone()))
                    .unwrap_or_default();
                self.members.insert(
                    i.org.clone(),
                    MemberRecord {
                        org: i.org.clone(),
                        role: R::try_from(i.role).unwrap_or(R::Member),
                        standing: Standing::Invited,
                        profile: Arc::new(profile),
                        cert_der: i.node_cert.clone(),
                        since_index: index,
                        periods,
                        publishing,
                    },
                );
            }
            Some(Op::Accept(a)) => {
                let profile = verify_cert(&a.node_cert, root_der, &op.actor_org)?;
                let m = self
                    .members
                    .get_mut(&op.actor_org)
                    .ok_or_else(|| ClusterError::State("no invitation".into()))?;
                m.standing = Standing::Member;
                m.profile = Arc::new(profile);
                m.cert_der = a.node_cert.clone();
                m.since_index = index;
                m.periods.push((index, None));
                if m.role != R::Observer {
                    open_period(&mut m.publishing, index);
                }
            }
            Some(Op::Decline(_)) => {
                if let Some(m) = self.members.get_mut(&op.actor_org) {
                    m.standing = Standing::Declined;
                    m.since_index = index;
                }
            }
            Some(Op::Leave(_)) => {
                if let Some(m) = self.members.get_mut(&op.actor_org) {
                    end(m, Standing::Left);
                }
            }
            Some(Op::Remove(r)) => {
                if let Some(m) = self.members.get_mut(&r.org) {
                    end(m, Standing::Removed);
                }
            }
            Some(Op::SetRole(s)) => {
                if let Some(m) = self.members.get_mut(&s.org) {
                    m.set_role(R::try_from(s.role).unwrap_or(R::Member), index, at_ms);
                    m.since_index = index;
                }
            }
            Some(Op::Rekey(r)) => {
                let profile = verify_cert(&r.node_cert, root_der, &op.actor_org)?;
                if let Some(m) = self.members.get_mut(&op.actor_org) {
                    m.profile = Arc::new(profile);
                    m.cert_der = r.node_cert.clone();
                }
            }
            Some(Op::Transfer(t)) => {
                let old = self.convener.clone();
                if let Some(m) = self.members.get_mut(&old) {
                    m.set_role(R::Admin, index, at_ms);
                }
                if let Some(m) = self.members.get_mut(&t.to) {
                    m.set_role(R::Convener, index, at_ms);
                    m.since_index = index;
                }
                self.convener = t.to.clone();
            }
            Some(Op::Create(_)) | None => {
                return Err(ClusterError::Malformed("unexpected operation".into()));
            }
        }
        Ok(())
    }

    /// Verify a genesis entry (index 0, a create op) and build the state.
    pub fn genesis(entry: &ClusterEntry, root_der: &[u8]) -> Result<(Self, Applied)> {
        let bytes = entry.encode_to_vec();
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(ClusterError::Malformed(
                "genesis entry over the size limit".into(),
            ));
        }
        let body = ClusterEntryBody::decode(entry.body.as_slice())
            .map_err(|e| ClusterError::Malformed(e.to_string()))?;
        if body.index != 0 || !body.prev_hash.is_empty() {
            return Err(ClusterError::OutOfOrder {
                expected: 0,
                got: body.index,
            });
        }
        let signed = body
            .op
            .clone()
            .ok_or_else(|| ClusterError::Malformed("entry without op".into()))?;
        let claimed = peek_op(&signed)?;
        let Some(Op::Create(c)) = &claimed.op else {
            return Err(ClusterError::Malformed(
                "the first entry of a log must create the cluster".into(),
            ));
        };
        let profile = verify_cert(&c.node_cert, root_der, &claimed.actor_org)?;
        verify_entry_sig(entry, &profile)?;
        let op = open_op(&signed, &profile)?;
        let Some(Op::Create(c)) = &op.op else {
            return Err(ClusterError::Malformed(
                "create op changed under its signature".into(),
            ));
        };
        check_name(&c.name)?;
        if op.cluster_id != cluster_id(&op.actor_org, &c.name) || body.cluster_id != op.cluster_id {
            return Err(ClusterError::Malformed(format!(
                "cluster id {:?} must be \"{}/{}\"",
                op.cluster_id, op.actor_org, c.name
            )));
        }
        if !op.base_hash.is_empty() {
            return Err(ClusterError::Malformed("a create op has no base".into()));
        }
        if c.levels.is_empty()
            || c.levels.iter().any(|l| {
                !matches!(
                    pb::Level::try_from(*l),
                    Ok(pb::Level::Technical | pb::Level::Operational | pb::Level::Political)
                )
            })
        {
            return Err(ClusterError::Malformed(
                "a cluster needs one or more valid levels".into(),
            ));
        }
        if matches!(
            pb::Tlp::try_from(c.max_tlp),
            Err(_) | Ok(pb::Tlp::Unspecified)
        ) {
            return Err(ClusterError::Malformed(
                "a cluster needs a maximum TLP".into(),
            ));
        }
        let history = match HistoryRule::try_from(c.history) {
            Ok(h @ (HistoryRule::SinceJoin | HistoryRule::Full)) => h,
            _ => {
                return Err(ClusterError::Malformed(
                    "history must be since-join or full".into(),
                ));
            }
        };
        let hash = entry_hash(&bytes);
        let mut members = BTreeMap::new();
        members.insert(
            op.actor_org.clone(),
            MemberRecord {
                org: op.actor_org.clone(),
                role: ClusterRole::Convener,
                standing: Standing::Member,
                profile: Arc::new(profile.clone()),
                cert_der: c.node_cert.clone(),
                since_index: 0,
                periods: vec![(0, None)],
                publishing: vec![(0, None)],
            },
        );
        let state = ClusterState {
            id: op.cluster_id.clone(),
            name: c.name.clone(),
            purpose: c.purpose.clone(),
            levels: c.levels.clone(),
            max_tlp: c.max_tlp,
            history,
            convener: op.actor_org.clone(),
            exercise: c.exercise,
            members,
            head_index: 0,
            head_hash: hash.clone(),
            created_at_ms: body.sequenced_at_ms,
            head_at_ms: body.sequenced_at_ms,
            op_ids: HashSet::from([op.op_id.clone()]),
        };
        Ok((
            state,
            Applied {
                index: 0,
                hash,
                op,
                sequenced_at_ms: body.sequenced_at_ms,
                sequenced_by: profile.org,
            },
        ))
    }
}

fn verify_entry_sig(entry: &ClusterEntry, sequencer: &OrgProfile) -> Result<()> {
    let pk = key_in(sequencer, &entry.key_id).ok_or_else(|| {
        ClusterError::BadSignature(format!(
            "entry key {:?} is not a key of the convener {}",
            entry.key_id, sequencer.org
        ))
    })?;
    if !signing::verify(&pk, ENTRY_CONTEXT, &entry.body, &entry.signature) {
        return Err(ClusterError::BadSignature(format!(
            "entry signed by {:?}",
            entry.key_id
        )));
    }
    Ok(())
}

/// Sequence a verified op as the next entry (the convener's job).
pub fn sequence(
    state: Option<&ClusterState>,
    signed: SignedClusterOp,
    convener_key: &SigningKey,
    now_ms: i64,
) -> ClusterEntry {
    // Never before the head (a clock stepped back sequences at the head's time).
    let now_ms = state.map_or(now_ms, |s| now_ms.max(s.head_at_ms));
    let (cluster_id, index, prev_hash) = match state {
        Some(s) => (s.id.clone(), s.head_index + 1, s.head_hash.clone()),
        None => {
            let id = peek_op(&signed).map(|o| o.cluster_id).unwrap_or_default();
            (id, 0, String::new())
        }
    };
    let body = ClusterEntryBody {
        cluster_id,
        index,
        prev_hash,
        op: Some(signed),
        sequenced_at_ms: now_ms,
    }
    .encode_to_vec();
    ClusterEntry {
        signature: convener_key.sign(ENTRY_CONTEXT, &body),
        key_id: convener_key.key_id().to_string(),
        body,
    }
}

/// The index an entry claims (decodes the body; verification is `apply`'s job).
/// An entry sequenced, or whose operation was signed, with a key that was not trusted at
/// the time the convener sequenced it (`distrusted_since`: from when a key is not trusted,
/// its certificate revoked from a stated compromise or from the revocation) is refused.
/// What such keys did before stays in the log: its history does not change, and a node
/// catching up applies it. The sequencing time is the convener's statement. Pure.
pub fn check_signers(
    entry: &ClusterEntry,
    distrusted_since: impl Fn(&str) -> Option<i64>,
) -> Result<()> {
    let body = ClusterEntryBody::decode(entry.body.as_slice())
        .map_err(|e| ClusterError::Malformed(e.to_string()))?;
    let op_key = body.op.as_ref().map(|o| o.key_id.as_str()).unwrap_or("");
    for (what, key) in [("sequenced", entry.key_id.as_str()), ("signed", op_key)] {
        if let Some(since) = distrusted_since(key)
            && body.sequenced_at_ms >= since
        {
            return Err(ClusterError::Revoked(format!(
                "log entry {} was {what} with key {}, whose certificate was revoked (not trusted since {}); it was sequenced at {}",
                body.index,
                crate::offline::clip(key),
                crate::clock::rfc3339(since),
                crate::clock::rfc3339(body.sequenced_at_ms)
            )));
        }
    }
    Ok(())
}

pub fn entry_index(entry: &ClusterEntry) -> Result<u64> {
    ClusterEntryBody::decode(entry.body.as_slice())
        .map(|b| b.index)
        .map_err(|e| ClusterError::Malformed(e.to_string()))
}

/// Human description of an op, for `cluster log`.
pub fn describe(op: &ClusterOp) -> String {
    match &op.op {
        Some(Op::Create(c)) => format!("create {} ({})", c.name, c.purpose),
        Some(Op::Invite(i)) => format!(
            "invite {} as {}",
            i.org,
            role_name(ClusterRole::try_from(i.role).unwrap_or(ClusterRole::Unspecified))
        ),
        Some(Op::Accept(_)) => "accept invitation".into(),
        Some(Op::Decline(_)) => "decline invitation".into(),
        Some(Op::Leave(_)) => "leave".into(),
        Some(Op::Remove(r)) if r.reason.is_empty() => format!("remove {}", r.org),
        Some(Op::Remove(r)) => format!("remove {} ({})", r.org, r.reason),
        Some(Op::SetRole(s)) => format!(
            "set role of {} to {}",
            s.org,
            role_name(ClusterRole::try_from(s.role).unwrap_or(ClusterRole::Unspecified))
        ),
        Some(Op::Transfer(t)) => format!("transfer convener to {}", t.to),
        Some(Op::Rekey(r)) => match pki::serial_hex(&r.node_cert) {
            Ok(serial) => format!("new node certificate {serial} (key rotation)"),
            Err(_) => "new node certificate (key rotation)".into(),
        },
        None => "?".into(),
    }
}

/// Rebuild a cluster's state from its encoded entries (start-up, catch-up).
pub fn replay(entries: &[Vec<u8>], root_der: &[u8]) -> Result<(ClusterState, Vec<Applied>)> {
    let mut it = entries.iter();
    let first = it
        .next()
        .ok_or_else(|| ClusterError::Malformed("empty log".into()))?;
    let first = ClusterEntry::decode(first.as_slice())
        .map_err(|e| ClusterError::Malformed(e.to_string()))?;
    let (mut state, a) = ClusterState::genesis(&first, root_der)?;
    let mut applied = vec![a];
    for e in it {
        let e = ClusterEntry::decode(e.as_slice())
            .map_err(|e| ClusterError::Malformed(e.to_string()))?;
        applied.push(state.apply(&e, root_der)?);
    }
    Ok((state, applied))
}

/// The cluster test fixture (a federation CA, five certified organisations,
/// a convener's log) is shared with the other pure modules' unit tests.
#[cfg(test)]
pub(crate) mod tests;
