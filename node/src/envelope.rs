//! Signed envelopes: sealing content at the origin and opening envelopes at a
//! receiver. Owns the rule "verify before decoding anything else": `open`
//! checks size, key and signature over the exact content bytes first, and only
//! then decodes and validates the content. Never re-encodes content bytes.

use bluewire_proto::v1::{Content, Envelope, Kind, Level, Tlp, content::Body};
use prost::Message;
use thiserror::Error;

use crate::merkle;
use crate::signing::{self, BATCH_CONTEXT, MESSAGE_CONTEXT, SigningKey};

/// Largest accepted encoded `Content` (documented in README "Limits").
pub const MAX_CONTENT_BYTES: usize = 1024 * 1024;
/// How far in the future a `created_at` may be (clock skew between nodes).
pub const MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// Why an envelope was refused. The text is what operators read in the
/// rejection log and what the sender gets back.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Rejected {
    #[error("envelope content is {0} bytes, over the {MAX_CONTENT_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("envelope has no signature or key id")]
    Unsigned,
    #[error("unknown signing key id {0:?}: not certified in any certificate this node has seen")]
    UnknownKey(String),
    #[error(
        "signature does not verify with key {0:?}: the content was altered or signed by another key"
    )]
    BadSignature(String),
    #[error(
        "signature with key {0:?} is Ed25519 alone, the format before hybrid Ed25519 + ML-DSA-65 signatures: the signer's node must be upgraded and its organisation issued again by the federation CA"
    )]
    OldSignature(String),
    #[error(
        "batch proof does not hold: {0}; the envelope was altered on the way or its origin's node is faulty"
    )]
    BatchProof(merkle::ProofError),
    #[error("content is not a valid bluewire.v1.Content message: {0}")]
    Malformed(String),
    #[error("content claims origin {claimed:?} but is signed by a key of {signer:?}")]
    OriginMismatch { claimed: String, signer: String },
    #[error("invalid content: {0}")]
    Invalid(String),
    #[error("message expired at {0} (unix ms)")]
    Expired(i64),
    #[error("message created {0} ms in the future: check the origin's clock")]
    FromTheFuture(i64),
    #[error("routing refused it ({rule}): {reason}")]
    Policy { rule: &'static str, reason: String },
    /// A routing rule no recipient could pass, caught while validating.
    #[error("routing refused it ({rule}): {reason}")]
    Unroutable { rule: &'static str, reason: String },
    #[error("not decidable yet, retry later: {0}")]
    Later(String),
    #[error(
        "handed over by {peer:?} but originated by {origin:?}, with no relay instruction from {origin:?}: a node hands over only its own messages, or carries others' under their sender's signed instruction"
    )]
    NotFromOrigin { peer: String, origin: String },
    /// A relay instruction that does not hold (signature, envelope, path, hop limit).
    #[error("relay refused (relay): {0}")]
    Relay(String),
    #[error(
        "handed over by {peer:?} but the forwarding attestation is {forwarder:?}'s: a node forwards only under its own attestation"
    )]
    NotForwarder { peer: String, forwarder: String },
    #[error(
        "author {author:?} is not a user of the origin {origin:?}: an author is written ORIGIN/USER, and an organisation speaks only for its own users"
    )]
    Author { author: String, origin: String },
    /// A retraction or marking change its signer has no authority for.
    #[error("control message refused (control-authority): {0}")]
    Control(String),
    /// A crisis-workflow step its signer may not send, or that does not follow the case
    /// as this node holds it.
    #[error("workflow step refused (workflow): {0}")]
    Workflow(String),
}

impl Rejected {
    /// The routing rule (or check) that refused it, for audit and metrics.
    pub fn rule(&self) -> &'static str {
        match self {
            Rejected::Policy { rule, .. } | Rejected::Unroutable { rule, .. } => rule,
            Rejected::TooLarge(_) => "size",
            Rejected::Unsigned
            | Rejected::UnknownKey(_)
            | Rejected::BadSignature(_)
            | Rejected::OldSignature(_)
            | Rejected::BatchProof(_) => "signature",
            Rejected::OriginMismatch { .. }
            | Rejected::NotFromOrigin { .. }
            | Rejected::NotForwarder { .. } => "origin",
            Rejected::Expired(_) | Rejected::FromTheFuture(_) => "freshness",
            Rejected::Malformed(_) | Rejected::Invalid(_) => "content",
            Rejected::Later(_) => "retry",
            Rejected::Author { .. } => "author",
            Rejected::Control(_) => "control-authority",
            Rejected::Workflow(_) => "workflow",
            Rejected::Relay(_) => "relay",
        }
    }
}

/// An envelope whose signature verified and whose content is well formed.
#[derive(Debug, Clone)]
pub struct Opened {
    pub content: Content,
    pub signer_org: String,
    pub key_id: String,
}

/// Sign `content` with the node's key.
pub fn seal(key: &SigningKey, content: &Content) -> Envelope {
    seal_bytes(key, content.encode_to_vec())
}

/// Sign encoded content on its own.
fn seal_bytes(key: &SigningKey, bytes: Vec<u8>) -> Envelope {
    Envelope {
        signature: key.sign(MESSAGE_CONTEXT, &bytes).into(),
        content: bytes.into(),
        key_id: key.key_id().to_string(),
        ..Default::default()
    }
}

/// Sign encoded contents at once: one hybrid signature over the Merkle root of the batch,
/// each envelope carrying its inclusion proof ([`merkle`]), so each still verifies on its
/// own. A batch of one is sealed as [`seal`] seals it.
pub fn seal_batch(key: &SigningKey, contents: Vec<Vec<u8>>) -> Vec<Envelope> {
    let n = u32::try_from(contents.len()).unwrap_or(u32::MAX);
    if !(2..=merkle::MAX_LEAVES).contains(&n) {
        return contents.into_iter().map(|b| seal_bytes(key, b)).collect();
    }
    let leaves: Vec<merkle::Hash> = contents.iter().map(|c| merkle::leaf(c)).collect();
    let Some((root, paths)) = merkle::build(&leaves) else {
        return Vec::new();
    };
    // One allocation for the whole batch: each envelope holds a reference to it.
    let signature = bytes::Bytes::from(key.sign(BATCH_CONTEXT, &merkle::statement(&root, n)));
    contents
        .into_iter()
        .zip(paths)
        .zip(0u32..)
        .map(|((bytes, path), index)| Envelope {
            content: bytes.into(),
            signature: signature.clone(),
            key_id: key.key_id().to_string(),
            batch: Some(bluewire_proto::v1::BatchProof {
                index,
                leaves: n,
                path: path.into_iter().map(|h| h.to_vec()).collect(),
            }),
            ..Default::default()
        })
        .collect()
}

/// A batch's signed statement (root and size).
type Statement = [u8; 36];

/// Batch signatures this node has verified, so the other envelopes of a batch cost a few
/// hashes instead of a hybrid verification each. Per (signing key id, signed statement), the
/// public key and signature that verified it: a hit means exactly these bytes verified
/// before (compared in full, not by a digest). Keyed by the key id too, so a member that signs
/// another organisation's statement with its own key takes a slot of its own instead of
/// replacing that organisation's; an entry is never overwritten. Bounded: the oldest entries
/// go first (a batch's envelopes arrive together, so a few hundred recent batches are plenty;
/// ~5 KiB each).
#[derive(Debug, Default)]
pub struct VerifiedBatches {
    #[allow(clippy::type_complexity)]
    seen: std::sync::Mutex<(
        std::collections::HashMap<(String, Statement), (Vec<u8>, Vec<u8>)>,
        std::collections::VecDeque<(String, Statement)>,
    )>,
}

impl VerifiedBatches {
    /// Batch signatures remembered at most.
    pub const CAPACITY: usize = 256;

    fn contains(
        &self,
        key_id: &str,
        public_key: &[u8],
        statement: &Statement,
        signature: &[u8],
    ) -> bool {
        self.seen.lock().is_ok_and(|s| {
            s.0.get(&(key_id.to_string(), *statement))
                .is_some_and(|(pk, sig)| pk == public_key && sig == signature)
        })
    }

    fn insert(&self, key_id: &str, public_key: &[u8], statement: Statement, signature: &[u8]) {
        if let Ok(mut s) = self.seen.lock() {
            let (map, order) = &mut *s;
            let k = (key_id.to_string(), statement);
            if let std::collections::hash_map::Entry::Vacant(slot) = map.entry(k.clone()) {
                slot.insert((public_key.to_vec(), signature.to_vec()));
                order.push_back(k);
                while order.len() > Self::CAPACITY {
                    if let Some(old) = order.pop_front() {
                        map.remove(&old);
                    }
                }
            }
        }
    }
}

/// Verify an envelope's signature: over its content, or over the batch its proof puts the
/// content in (remembered in `batches`, when given, once it verified).
fn check_envelope_signature(
    env: &Envelope,
    public_key: &[u8],
    batches: Option<&VerifiedBatches>,
) -> Result<(), Rejected> {
    let Some(b) = &env.batch else {
        return check_signature(
            public_key,
            MESSAGE_CONTEXT,
            &env.content,
            &env.signature,
            &env.key_id,
        );
    };
    let root = merkle::root_from_proof(&merkle::leaf(&env.content), b.index, b.leaves, &b.path)
        .map_err(Rejected::BatchProof)?;
    let statement = merkle::statement(&root, b.leaves);
    if batches.is_some_and(|c| c.contains(&env.key_id, public_key, &statement, &env.signature)) {
        return Ok(());
    }
    check_signature(
        public_key,
        BATCH_CONTEXT,
        &statement,
        &env.signature,
        &env.key_id,
    )?;
    if let Some(c) = batches {
        c.insert(&env.key_id, public_key, statement, &env.signature);
    }
    Ok(())
}

/// Verify a hybrid signature; one in the Ed25519-only format of earlier versions (or a key
/// stored in it) is refused with a reason that says so.
pub(crate) fn check_signature(
    public_key: &[u8],
    context: &[u8],
    bytes: &[u8],
    signature: &[u8],
    key_id: &str,
) -> Result<(), Rejected> {
    if signing::verify(public_key, context, bytes, signature) {
        return Ok(());
    }
    let old = signature.len() == signing::ED25519_SIGNATURE_LEN
        || public_key.len() == signing::ED25519_PUBLIC_LEN;
    Err(if old {
        Rejected::OldSignature(key_id.to_string())
    } else {
        Rejected::BadSignature(key_id.to_string())
    })
}

/// Verify, then decode and validate. `lookup` maps a key id to the
/// (organisation, hybrid public key) the federation CA certified.
pub fn open(
    env: &Envelope,
    lookup: impl FnOnce(&str) -> Option<(String, Vec<u8>)>,
    now_ms: i64,
) -> Result<Opened, Rejected> {
    open_with(env, lookup, now_ms, None)
}

/// [`open`], remembering verified batch signatures in `batches` (a receiving node's).
pub fn open_with(
    env: &Envelope,
    lookup: impl FnOnce(&str) -> Option<(String, Vec<u8>)>,
    now_ms: i64,
    batches: Option<&VerifiedBatches>,
) -> Result<Opened, Rejected> {
    let opened = open_verified(env, lookup, batches)?;
    let content = &opened.content;
    if content.expires_at_ms != 0 && content.expires_at_ms < now_ms {
        return Err(Rejected::Expired(content.expires_at_ms));
    }
    if content.created_at_ms > now_ms + MAX_CLOCK_SKEW_MS {
        return Err(Rejected::FromTheFuture(content.created_at_ms - now_ms));
    }
    Ok(opened)
}

/// [`open`] without the freshness checks: for evidence checked long after the fact
/// (`bluewire verify-bundle`), where expiry says nothing about authenticity.
pub fn open_unclocked(
    env: &Envelope,
    lookup: impl FnOnce(&str) -> Option<(String, Vec<u8>)>,
) -> Result<Opened, Rejected> {
    open_verified(env, lookup, None)
}

fn open_verified(
    env: &Envelope,
    lookup: impl FnOnce(&str) -> Option<(String, Vec<u8>)>,
    batches: Option<&VerifiedBatches>,
) -> Result<Opened, Rejected> {
    if env.content.len() > MAX_CONTENT_BYTES {
        return Err(Rejected::TooLarge(env.content.len()));
    }
    if env.signature.is_empty() || env.key_id.is_empty() {
        return Err(Rejected::Unsigned);
    }
    let (signer_org, public_key) =
        lookup(&env.key_id).ok_or_else(|| Rejected::UnknownKey(env.key_id.clone()))?;
    check_envelope_signature(env, &public_key, batches)?;
    let content =
        Content::decode(&env.content[..]).map_err(|e| Rejected::Malformed(e.to_string()))?;
    if content.origin_org != signer_org {
        return Err(Rejected::OriginMismatch {
            claimed: content.origin_org,
            signer: signer_org,
        });
    }
    validate(&content)?;
    Ok(Opened {
        content,
        signer_org,
        key_id: env.key_id.clone(),
    })
}

/// Structural checks shared by publish (before signing) and open.
pub fn validate(c: &Content) -> Result<(), Rejected> {
    let bad = |s: String| Err(Rejected::Invalid(s));
    match uuid::Uuid::parse_str(&c.id) {
        Ok(u) if u.get_version_num() == 7 => {}
        _ => return bad(format!("id {:?} is not a UUIDv7", c.id)),
    }
    if c.origin_org.is_empty() {
        return bad("origin_org is empty".into());
    }
    check_author(c)?;
    let kind = Kind::try_from(c.kind).unwrap_or(Kind::Unspecified);
    let level = Level::try_from(c.level).unwrap_or(Level::Unspecified);
    if level == Level::Unspecified {
        return bad(format!(
            "level {} is not technical, operational or political",
            c.level
        ));
    }
    let tlp = c
        .marking
        .as_ref()
        .and_then(|m| Tlp::try_from(m.tlp).ok())
        .unwrap_or(Tlp::Unspecified);
    if tlp == Tlp::Unspecified {
        return bad("marking has no TLP: every message carries TLP 2.0".into());
    }
    match (kind, &c.body) {
        // Encrypted end to end: what every node can check without opening it. A recipient
        // that opens it validates the decrypted content with this function again.
        (Kind::FreeText | Kind::IncidentReport, Some(Body::Sealed(s))) => {
            crate::e2e::check_sealed(c, s).map_err(Rejected::Invalid)?;
        }
        (_, Some(Body::Sealed(_))) => {
            return bad(format!(
                "kind {} cannot be encrypted end to end: only free text and incident reports are (every node on the way must read the rest)",
                kind_label(c.kind)
            ));
        }
        // The crisis workflow: typed bodies with their own rules (crate::case).
        (_, Some(b)) if crate::case::is_case_body(b) => {
            crate::case::check_fields(c).map_err(Rejected::Invalid)?;
        }
        (
            Kind::CaseOpen
            | Kind::Escalation
            | Kind::Advice
            | Kind::Reserve
            | Kind::Notice
            | Kind::LessonsLearned
            | Kind::CaseReopen,
            _,
        ) => {
            crate::case::check_fields(c).map_err(Rejected::Invalid)?;
        }
        (Kind::FreeText, Some(Body::FreeText(t))) if !t.title.is_empty() || !t.body.is_empty() => {}
        (Kind::FreeText, _) => return bad("kind free-text needs a free_text body".into()),
        (Kind::IncidentReport, Some(Body::Incident(i))) if !i.title.is_empty() => {
            crate::case::check_incident(i).map_err(Rejected::Invalid)?;
        }
        (Kind::IncidentReport, _) => {
            return bad("kind incident needs an incident body with a title".into());
        }
        // Narrative outside a case (a national situation report, a line not tied to one).
        (Kind::SituationReport | Kind::PublicCommunication, Some(Body::FreeText(t)))
            if !t.title.is_empty() => {}
        (Kind::SituationReport | Kind::PublicCommunication, _) => {
            return bad(format!(
                "kind {} needs a {} body for a case, or a free_text body with a title",
                kind_label(c.kind),
                if kind == Kind::SituationReport {
                    "situation_report"
                } else {
                    "communication"
                }
            ));
        }
        // These move a case's state: typed, and sent only by the certified functions.
        (Kind::CrisisStatus | Kind::Assessment, _) => {
            return bad(format!(
                "kind {} needs its typed {} body: it moves a case's state (bluewire case …)",
                kind_label(c.kind),
                if kind == Kind::CrisisStatus {
                    "crisis_status"
                } else {
                    "assessment"
                }
            ));
        }
        // An empty target_origin (signed before targets named their origin) means the
        // signer's own message; see markings::target_of.
        (Kind::MarkingChange, Some(Body::MarkingChange(m)))
            if !m.target_id.is_empty()
                && m.marking
                    .as_ref()
                    .is_some_and(|m| Tlp::try_from(m.tlp).is_ok_and(|t| t != Tlp::Unspecified)) => {
        }
        (Kind::MarkingChange, _) => {
            return bad(
                "a marking change names the target message (target_id, and target_origin) and \
                 its new marking with a TLP 2.0 level"
                    .into(),
            );
        }
        // Threat intelligence: the bundle passes the STIX checks, marked no looser than this.
        (Kind::StixBundle, Some(Body::Stix(b))) => {
            crate::stix::check_bundle(&b.json, tlp, &c.origin_org)
                .map_err(|e| Rejected::Invalid(format!("STIX bundle refused: {e}")))?;
        }
        (Kind::StixBundle, _) => return bad("kind stix-bundle needs a stix body".into()),
        (Kind::Retraction, Some(Body::Retraction(r))) if !r.target_id.is_empty() => {}
        (Kind::Retraction, _) => {
            return bad("a retraction names the target message (target_id)".into());
        }
        (Kind::Unspecified, _) => return bad(format!("unknown kind {}", c.kind)),
    }
    // These two are routing rules that no recipient could pass: refuse the
    // message as a whole, under the rule's name.
    if level == Level::Political && !is_political_kind(kind) && !is_control_kind(kind) {
        return Err(Rejected::Unroutable {
            rule: "levels",
            reason: format!(
                "the political level receives situation reports, crisis status, assessments, public-communication lines, notices, lessons learned and reopens, not {}: escalate with a summary instead of raw technical content",
                kind_label(c.kind)
            ),
        });
    }
    if tlp == Tlp::Red && c.recipients.is_empty() {
        return Err(Rejected::Unroutable {
            rule: "tlp",
            reason: "TLP:RED goes only to explicitly named recipients: name them".into(),
        });
    }
    Ok(())
}

/// The author must be a user of the origin: "ORIGIN/USER", USER non-empty
/// and printable. Checked at the origin and at every receiver.
pub fn check_author(c: &Content) -> Result<(), Rejected> {
    let ok = c.author.split_once('/').is_some_and(|(org, user)| {
        org == c.origin_org && !user.is_empty() && !user.chars().any(char::is_control)
    });
    if ok {
        Ok(())
    } else {
        Err(Rejected::Author {
            author: c.author.clone(),
            origin: c.origin_org.clone(),
        })
    }
}

/// A kind as people, logs, the command line and local policies spell it: the proto name in
/// kebab case (`free-text`, `incident-report`, …).
pub fn kind_label(k: i32) -> &'static str {
    match Kind::try_from(k).unwrap_or(Kind::Unspecified) {
        Kind::FreeText => "free-text",
        Kind::IncidentReport => "incident-report",
        Kind::SituationReport => "situation-report",
        Kind::CrisisStatus => "crisis-status",
        Kind::Assessment => "assessment",
        Kind::PublicCommunication => "public-communication",
        Kind::MarkingChange => "marking-change",
        Kind::Retraction => "retraction",
        Kind::CaseOpen => "case-open",
        Kind::Escalation => "escalation",
        Kind::Advice => "advice",
        Kind::Reserve => "reserve",
        Kind::Notice => "notice",
        Kind::LessonsLearned => "lessons-learned",
        Kind::CaseReopen => "case-reopen",
        Kind::StixBundle => "stix-bundle",
        Kind::Unspecified => "unspecified",
    }
}

/// A TLP level without the `TLP:` prefix (`CLEAR`, …, `AMBER+STRICT`, `RED`), as local
/// policies name it.
pub fn tlp_name(t: i32) -> &'static str {
    tlp_label(t).trim_start_matches("TLP:")
}

/// A TLP as people write it (`AMBER`, `amber+strict`, `TLP:RED`, `WHITE` for CLEAR).
pub fn parse_tlp_name(s: &str) -> Option<Tlp> {
    let up = s.trim().to_ascii_uppercase();
    match up
        .trim_start_matches("TLP:")
        .replace(['_', '-'], "+")
        .as_str()
    {
        "CLEAR" | "WHITE" => Some(Tlp::Clear),
        "GREEN" => Some(Tlp::Green),
        "AMBER" => Some(Tlp::Amber),
        "AMBER+STRICT" => Some(Tlp::AmberStrict),
        "RED" => Some(Tlp::Red),
        _ => None,
    }
}

/// "TLP:AMBER" etc., as people and logs read it.
pub fn tlp_label(t: i32) -> &'static str {
    match Tlp::try_from(t).unwrap_or(Tlp::Unspecified) {
        Tlp::Clear => "TLP:CLEAR",
        Tlp::Green => "TLP:GREEN",
        Tlp::Amber => "TLP:AMBER",
        Tlp::AmberStrict => "TLP:AMBER+STRICT",
        Tlp::Red => "TLP:RED",
        Tlp::Unspecified => "TLP:unspecified",
    }
}

/// "technical", "operational", "political".
pub fn level_label(l: i32) -> &'static str {
    match Level::try_from(l).unwrap_or(Level::Unspecified) {
        Level::Technical => "technical",
        Level::Operational => "operational",
        Level::Political => "political",
        Level::Unspecified => "unspecified",
    }
}

/// Signature context of a forwarding attestation.
pub const FORWARD_CONTEXT: &[u8] = b"bluewire/v1/forward\0";

/// Hex SHA-256 of content bytes.
pub fn content_hash(content: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, content).as_ref())
}

/// May a message with this (effective) marking be re-shared at all?
pub fn reshare_allowed(
    content: &Content,
    marking: &bluewire_proto::v1::Marking,
) -> Result<(), String> {
    if content.no_reshare {
        return Err(format!(
            "{} forbade re-sharing this message",
            content.origin_org
        ));
    }
    match Tlp::try_from(marking.tlp).unwrap_or(Tlp::Unspecified) {
        Tlp::Red => Err("TLP:RED is for the named recipients only and is never re-shared".into()),
        Tlp::AmberStrict => Err("TLP:AMBER+STRICT stays within the recipient organisation and is never re-shared".into()),
        Tlp::Amber => Err("TLP:AMBER goes to the recipient organisation and its own need-to-know constituents, not into another cluster".into()),
        Tlp::Green | Tlp::Clear => Ok(()),
        Tlp::Unspecified => Err("the message has no TLP marking".into()),
    }
}

/// Add this node's signed forwarding attestation to `env` (left untouched otherwise).
pub fn attest(
    key: &SigningKey,
    env: &Envelope,
    attestation: &bluewire_proto::v1::ForwardAttestation,
    origin_cert: Vec<u8>,
) -> Envelope {
    let bytes = attestation.encode_to_vec();
    let mut out = env.clone();
    out.forwarding = Some(bluewire_proto::v1::Forwarding {
        signature: key.sign(FORWARD_CONTEXT, &bytes),
        key_id: key.key_id().to_string(),
        attestation: bytes,
        origin_cert,
    });
    out
}

/// Verify a forwarding attestation on an envelope whose content verified:
/// the forwarder's signature, and that it binds exactly these bytes.
pub fn open_forwarding(
    env: &Envelope,
    content: &Content,
    lookup: impl FnOnce(&str) -> Option<(String, Vec<u8>)>,
) -> Result<bluewire_proto::v1::ForwardAttestation, Rejected> {
    let Some(f) = &env.forwarding else {
        return Err(Rejected::Invalid("no forwarding attestation".into()));
    };
    let (org, pk) = lookup(&f.key_id).ok_or_else(|| Rejected::UnknownKey(f.key_id.clone()))?;
    check_signature(
        &pk,
        FORWARD_CONTEXT,
        &f.attestation,
        &f.signature,
        &f.key_id,
    )?;
    let a = bluewire_proto::v1::ForwardAttestation::decode(f.attestation.as_slice())
        .map_err(|e| Rejected::Malformed(format!("forwarding attestation: {e}")))?;
    if a.forwarder_org != org {
        return Err(Rejected::OriginMismatch {
            claimed: a.forwarder_org,
            signer: org,
        });
    }
    if a.message_id != content.id || a.content_hash != content_hash(&env.content) {
        return Err(Rejected::Invalid(
            "the forwarding attestation is for other content".into(),
        ));
    }
    Ok(a)
}

/// How routing sees a re-shared message: sent by the forwarder into the
/// target cluster, with the origin's markings and scope.
pub fn forwarded_view(content: &Content, a: &bluewire_proto::v1::ForwardAttestation) -> Content {
    let mut v = content.clone();
    v.origin_org = a.forwarder_org.clone();
    v.cluster = a.to_cluster.clone();
    v.cluster_index = a.cluster_index;
    v.created_at_ms = a.at_ms;
    v
}

/// Kinds meant for the political level.
pub fn is_political_kind(k: Kind) -> bool {
    matches!(
        k,
        Kind::SituationReport
            | Kind::CrisisStatus
            | Kind::Assessment
            | Kind::PublicCommunication
            | Kind::Notice
            | Kind::LessonsLearned
            | Kind::CaseReopen
    )
}

/// Origin-signed messages about an earlier message.
pub fn is_control_kind(k: Kind) -> bool {
    matches!(k, Kind::MarkingChange | Kind::Retraction)
}

/// New UUIDv7 message id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluewire_proto::v1::{FreeText, Marking};

    fn content(org: &str) -> Content {
        Content {
            id: new_id(),
            origin_org: org.into(),
            author: format!("{org}/alice"),
            created_at_ms: 1_000,
            kind: Kind::FreeText as i32,
            level: Level::Technical as i32,
            marking: Some(Marking {
                tlp: Tlp::Amber as i32,
                ..Default::default()
            }),
            body: Some(Body::FreeText(FreeText {
                title: "t".into(),
                body: "b".into(),
            })),
            ..Default::default()
        }
    }

    #[test]
    fn seal_open_roundtrip_and_tamper() {
        let k = SigningKey::generate("csirt-be").unwrap();
        let pk = k.public_key();
        let env = seal(&k, &content("csirt-be"));
        let lookup = |_: &str| Some(("csirt-be".to_string(), pk.clone()));
        let o = open(&env, lookup, 2_000).unwrap();
        assert_eq!(o.content.origin_org, "csirt-be");
        for i in 0..env.content.len() {
            let mut bad = env.clone();
            bad.content = {
                let mut b = bad.content.to_vec();
                b[i] ^= 0x01;
                b.into()
            };
            let r = open(&bad, |_| Some(("csirt-be".to_string(), pk.clone())), 2_000);
            assert!(
                matches!(r, Err(Rejected::BadSignature(_))),
                "byte {i}: {r:?}"
            );
        }
        // The Ed25519-only format of earlier versions is refused with a reason that says so:
        // a 64-byte signature, or a 32-byte key remembered from before.
        let mut old = env.clone();
        old.signature.truncate(signing::ED25519_SIGNATURE_LEN);
        let r = open(&old, lookup, 2_000).unwrap_err();
        assert!(matches!(r, Rejected::OldSignature(_)), "{r:?}");
        assert!(r.to_string().contains("upgraded"), "{r}");
        assert_eq!(r.rule(), "signature");
        let r = open(
            &env,
            |_| {
                Some((
                    "csirt-be".to_string(),
                    pk[..signing::ED25519_PUBLIC_LEN].to_vec(),
                ))
            },
            2_000,
        );
        assert!(matches!(r, Err(Rejected::OldSignature(_))), "{r:?}");
    }

    #[test]
    fn the_size_limit_is_one_mebibyte_of_content_inclusive() {
        assert_eq!(MAX_CONTENT_BYTES, 1024 * 1024, "README documents 1 MiB");
        let env = |len: usize| Envelope {
            content: vec![0; len].into(),
            ..Default::default()
        };
        // At the limit, the next check (the signature) is what refuses it.
        let at = open(&env(MAX_CONTENT_BYTES), |_| None, 0);
        assert_eq!(at.unwrap_err(), Rejected::Unsigned);
        let over = open(&env(MAX_CONTENT_BYTES + 1), |_| None, 0).unwrap_err();
        assert_eq!(over, Rejected::TooLarge(MAX_CONTENT_BYTES + 1));
        assert_eq!(
            over.to_string(),
            "envelope content is 1048577 bytes, over the 1048576-byte limit"
        );
    }

    #[test]
    fn an_envelope_needs_both_a_signature_and_a_key_id() {
        let k = SigningKey::generate("csirt-be").unwrap();
        let sealed = seal(&k, &content("csirt-be"));
        let lookup = |_: &str| Some(("csirt-be".to_string(), k.public_key()));
        for env in [
            Envelope {
                signature: bytes::Bytes::new(),
                ..sealed.clone()
            },
            Envelope {
                key_id: String::new(),
                ..sealed.clone()
            },
        ] {
            assert_eq!(open(&env, lookup, 2_000).unwrap_err(), Rejected::Unsigned);
        }
        assert!(open(&sealed, lookup, 2_000).is_ok());
    }

    #[test]
    fn expiry_and_clock_skew_bounds_are_inclusive() {
        assert_eq!(
            MAX_CLOCK_SKEW_MS,
            5 * 60 * 1000,
            "README documents 5 minutes"
        );
        let k = SigningKey::generate("csirt-be").unwrap();
        let lookup = |_: &str| Some(("csirt-be".to_string(), k.public_key()));
        let at = |created: i64, expires: i64, now: i64| {
            let c = Content {
                created_at_ms: created,
                expires_at_ms: expires,
                ..content("csirt-be")
            };
            open(&seal(&k, &c), lookup, now).map(|_| ())
        };
        let now = 10_000_000;
        // Expires at `now`: still good; a millisecond before: expired.
        assert_eq!(at(1_000, now, now), Ok(()));
        assert_eq!(at(1_000, now - 1, now), Err(Rejected::Expired(now - 1)));
        assert_eq!(at(1_000, 0, now), Ok(()), "0: never expires");
        // Created up to the skew ahead of the receiver's clock: good; beyond: refused,
        // saying by how much.
        assert_eq!(at(now + MAX_CLOCK_SKEW_MS, 0, now), Ok(()));
        assert_eq!(
            at(now + MAX_CLOCK_SKEW_MS + 1, 0, now),
            Err(Rejected::FromTheFuture(MAX_CLOCK_SKEW_MS + 1))
        );
    }

    #[test]
    fn every_kind_needs_its_body_and_a_uuidv7_id() {
        use bluewire_proto::v1::{IncidentReport, MarkingChange, Retraction};
        let text = |title: &str, body: &str| {
            Some(Body::FreeText(FreeText {
                title: title.into(),
                body: body.into(),
            }))
        };
        let incident = |title: &str| {
            Some(Body::Incident(IncidentReport {
                title: title.into(),
                ..Default::default()
            }))
        };
        let mark = |target: &str, tlp: Tlp| {
            Some(Body::MarkingChange(MarkingChange {
                target_id: target.into(),
                marking: Some(Marking {
                    tlp: tlp as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }))
        };
        let retract = |target: &str| {
            Some(Body::Retraction(Retraction {
                target_id: target.into(),
                ..Default::default()
            }))
        };
        let cases: Vec<(Kind, Option<Body>, Option<&str>)> = vec![
            (Kind::FreeText, text("t", ""), None),
            (Kind::FreeText, text("", "b"), None),
            (
                Kind::FreeText,
                text("", ""),
                Some("kind free-text needs a free_text body"),
            ),
            (Kind::FreeText, incident("t"), Some("kind free-text needs")),
            (Kind::IncidentReport, incident("t"), None),
            (
                Kind::IncidentReport,
                incident(""),
                Some("needs an incident body with a title"),
            ),
            (
                Kind::IncidentReport,
                text("t", "b"),
                Some("needs an incident body"),
            ),
            (Kind::SituationReport, text("t", ""), None),
            (Kind::PublicCommunication, text("t", ""), None),
            // Crisis status and assessment move a case: typed only.
            (
                Kind::CrisisStatus,
                text("t", ""),
                Some("kind crisis-status needs its typed crisis_status body"),
            ),
            (
                Kind::Assessment,
                text("t", ""),
                Some("kind assessment needs its typed assessment body"),
            ),
            (
                Kind::SituationReport,
                text("", "b"),
                Some(
                    "kind situation-report needs a situation_report body for a case, or a free_text body with a title",
                ),
            ),
            (
                Kind::PublicCommunication,
                incident("t"),
                Some("needs a communication body for a case"),
            ),
            // A workflow kind without its typed body, and a typed body under another kind.
            (
                Kind::Escalation,
                text("t", "b"),
                Some("kind escalation needs its typed workflow body"),
            ),
            (
                Kind::CaseOpen,
                None,
                Some("kind case-open needs its typed body"),
            ),
            (
                Kind::CrisisStatus,
                incident("t"),
                Some("kind crisis-status needs"),
            ),
            (Kind::MarkingChange, mark("m", Tlp::Green), None),
            (
                Kind::MarkingChange,
                mark("", Tlp::Green),
                Some("names the target message"),
            ),
            (
                Kind::MarkingChange,
                mark("m", Tlp::Unspecified),
                Some("a TLP 2.0 level"),
            ),
            (Kind::Retraction, retract("m"), None),
            (
                Kind::Retraction,
                retract(""),
                Some("a retraction names the target"),
            ),
            (Kind::Unspecified, text("t", "b"), Some("unknown kind 0")),
        ];
        for (kind, body, refused) in cases {
            let c = Content {
                kind: kind as i32,
                body: body.clone(),
                ..content("csirt-be")
            };
            match (validate(&c), refused) {
                (Ok(()), None) => {}
                (Err(Rejected::Invalid(why)), Some(want)) => {
                    assert!(why.contains(want), "{kind:?} {body:?}: {why}")
                }
                (got, want) => panic!("{kind:?} {body:?}: got {got:?}, want refusal {want:?}"),
            }
        }
        // Ids are UUIDv7: a v4 id, or none, is refused.
        // A version-4 id (random), and none.
        for id in [
            "9f1c2b7e-3a4d-4e5f-8a6b-7c8d9e0f1a2b".to_string(),
            String::new(),
        ] {
            let c = Content {
                id: id.clone(),
                ..content("csirt-be")
            };
            assert_eq!(
                validate(&c),
                Err(Rejected::Invalid(format!("id {id:?} is not a UUIDv7")))
            );
        }
    }

    #[test]
    fn labels_are_the_one_vocabulary() {
        let kinds: Vec<&str> = (0..=17).map(kind_label).collect();
        assert_eq!(
            kinds,
            [
                "unspecified",
                "free-text",
                "incident-report",
                "situation-report",
                "crisis-status",
                "assessment",
                "public-communication",
                "marking-change",
                "retraction",
                "case-open",
                "escalation",
                "advice",
                "reserve",
                "notice",
                "lessons-learned",
                "case-reopen",
                "stix-bundle",
                "unspecified",
            ]
        );
        for t in 1..=5 {
            assert_eq!(parse_tlp_name(tlp_label(t)).map(|x| x as i32), Some(t));
            assert_eq!(
                parse_tlp_name(&tlp_name(t).to_lowercase()).map(|x| x as i32),
                Some(t)
            );
        }
        assert_eq!(parse_tlp_name("white"), Some(Tlp::Clear));
        assert_eq!(parse_tlp_name("amber-strict"), Some(Tlp::AmberStrict));
        assert_eq!(parse_tlp_name("purple"), None);
        let tlps: Vec<(&str, &str)> = (0..=6).map(|t| (tlp_label(t), tlp_name(t))).collect();
        assert_eq!(
            tlps,
            [
                ("TLP:unspecified", "unspecified"),
                ("TLP:CLEAR", "CLEAR"),
                ("TLP:GREEN", "GREEN"),
                ("TLP:AMBER", "AMBER"),
                ("TLP:AMBER+STRICT", "AMBER+STRICT"),
                ("TLP:RED", "RED"),
                ("TLP:unspecified", "unspecified"),
            ]
        );
        let levels: Vec<&str> = (0..=4).map(level_label).collect();
        assert_eq!(
            levels,
            [
                "unspecified",
                "technical",
                "operational",
                "political",
                "unspecified"
            ]
        );
    }

    #[test]
    fn the_political_level_takes_summaries_and_red_needs_named_recipients() {
        use bluewire_proto::v1::{MarkingChange, Retraction};
        let at_political = |kind: Kind, body: Option<Body>| Content {
            kind: kind as i32,
            level: Level::Political as i32,
            body,
            ..content("csirt-be")
        };
        let summary = || {
            Some(Body::FreeText(FreeText {
                title: "t".into(),
                body: String::new(),
            }))
        };
        for kind in [Kind::SituationReport, Kind::PublicCommunication] {
            assert_eq!(validate(&at_political(kind, summary())), Ok(()), "{kind:?}");
        }
        // Workflow steps: the political kinds pass, raw technical steps do not.
        let case = bluewire_proto::v1::MessageRef {
            origin: "csirt-be".into(),
            id: new_id(),
        };
        let link = Some(bluewire_proto::v1::CaseLink {
            case: Some(case.clone()),
            previous: Some(case),
        });
        let in_case = |kind: Kind, body: Body| Content {
            cluster: "csirt-be/crisis".into(),
            ..at_political(kind, Some(body))
        };
        let status = in_case(
            Kind::CrisisStatus,
            Body::CrisisStatus(bluewire_proto::v1::CrisisStatusDecision {
                link: link.clone(),
                from_mode: 1,
                from_crisis: 1,
                to_mode: 2,
                to_crisis: 1,
                rationale: String::new(),
            }),
        );
        assert_eq!(validate(&status), Ok(()));
        let escalation = in_case(
            Kind::Escalation,
            Body::Escalation(bluewire_proto::v1::Escalation {
                link,
                summary: "s".into(),
                affected_countries: vec!["BE".into()],
                proposed_level: Level::Political as i32,
                ..Default::default()
            }),
        );
        assert!(matches!(
            validate(&escalation),
            Err(Rejected::Unroutable { rule: "levels", .. })
        ));
        let retraction = Some(Body::Retraction(Retraction {
            target_id: "m".into(),
            ..Default::default()
        }));
        assert_eq!(
            validate(&at_political(Kind::Retraction, retraction)),
            Ok(())
        );
        let change = Some(Body::MarkingChange(MarkingChange {
            target_id: "m".into(),
            marking: Some(Marking {
                tlp: Tlp::Green as i32,
                ..Default::default()
            }),
            ..Default::default()
        }));
        assert_eq!(validate(&at_political(Kind::MarkingChange, change)), Ok(()));
        match validate(&at_political(Kind::FreeText, summary())) {
            Err(Rejected::Unroutable { rule, reason }) => {
                assert_eq!(rule, "levels");
                assert!(reason.contains("not free-text: escalate"), "{reason}");
            }
            other => panic!("raw text at the political level: {other:?}"),
        }

        let red = |recipients: &[&str]| Content {
            marking: Some(Marking {
                tlp: Tlp::Red as i32,
                ..Default::default()
            }),
            recipients: recipients.iter().map(|r| r.to_string()).collect(),
            ..content("csirt-be")
        };
        assert_eq!(validate(&red(&["cert-eu"])), Ok(()));
        assert!(matches!(
            validate(&red(&[])),
            Err(Rejected::Unroutable { rule: "tlp", .. })
        ));
    }

    #[test]
    fn content_hash_is_hex_sha256() {
        assert_eq!(
            content_hash(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            content_hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_forwarding_attestation_binds_the_message_id_and_its_exact_bytes() {
        let origin = SigningKey::generate("csirt-be").unwrap();
        let fwd = SigningKey::generate("cert-eu").unwrap();
        let c = content("csirt-be");
        let env = seal(&origin, &c);
        let lookup = |_: &str| Some(("cert-eu".to_string(), fwd.public_key()));
        let attestation = |id: &str, hash: String| bluewire_proto::v1::ForwardAttestation {
            message_id: id.into(),
            forwarder_org: "cert-eu".into(),
            to_cluster: "cert-eu/x".into(),
            cluster_index: 1,
            at_ms: 2_000,
            content_hash: hash,
        };
        let good = attestation(&c.id, content_hash(&env.content));
        let forwarded = attest(&fwd, &env, &good, Vec::new());
        assert_eq!(open_forwarding(&forwarded, &c, lookup), Ok(good));
        for wrong in [
            attestation("another-id", content_hash(&env.content)),
            attestation(&c.id, content_hash(b"other bytes")),
        ] {
            let forwarded = attest(&fwd, &env, &wrong, Vec::new());
            assert_eq!(
                open_forwarding(&forwarded, &c, lookup),
                Err(Rejected::Invalid(
                    "the forwarding attestation is for other content".into()
                ))
            );
        }
    }

    #[test]
    fn origin_must_match_signer() {
        let k = SigningKey::generate("csirt-be").unwrap();
        let pk = k.public_key();
        let env = seal(&k, &content("cert-eu"));
        let r = open(&env, |_| Some(("csirt-be".to_string(), pk)), 2_000);
        assert!(matches!(r, Err(Rejected::OriginMismatch { .. })));
    }

    #[test]
    fn author_must_be_a_user_of_the_origin_at_origin_and_receiver() {
        let k = SigningKey::generate("csirt-fr").unwrap();
        let pk = k.public_key();
        for (author, ok) in [
            ("csirt-fr/alice", true),
            ("cert-eu/head-of-cert", false),
            ("csirt-fr/", false),
            ("csirt-fr", false),
            ("", false),
            ("csirt-frx/alice", false),
            ("csirt-fr/al\nice", false),
        ] {
            let mut c = content("csirt-fr");
            c.author = author.into();
            assert_eq!(validate(&c).is_ok(), ok, "validate {author:?}");
            let r = open(
                &seal(&k, &c),
                |_| Some(("csirt-fr".into(), pk.clone())),
                2_000,
            );
            match r {
                Ok(_) => assert!(ok, "{author:?} accepted"),
                Err(e) => {
                    assert!(!ok, "{author:?}: {e}");
                    assert_eq!(e.rule(), "author");
                    assert!(e.to_string().contains("ORIGIN/USER"), "{e}");
                }
            }
        }
    }

    #[test]
    fn control_messages_name_their_target_and_a_real_tlp() {
        use bluewire_proto::v1::{MarkingChange, Retraction};
        let mut c = content("csirt-be");
        c.kind = Kind::Retraction as i32;
        let retraction = |id: &str, origin: &str| {
            Some(Body::Retraction(Retraction {
                target_id: id.into(),
                target_origin: origin.into(),
                reason: String::new(),
            }))
        };
        c.body = retraction("", "csirt-be");
        assert!(matches!(validate(&c), Err(Rejected::Invalid(ref w)) if w.contains("target_id")));
        // Without target_origin (signed before it existed): the signer's own message.
        c.body = retraction("x", "");
        assert!(validate(&c).is_ok());
        c.body = retraction("x", "csirt-be");
        assert!(validate(&c).is_ok());
        c.kind = Kind::MarkingChange as i32;
        let change = |id: &str, tlp: i32| {
            Some(Body::MarkingChange(MarkingChange {
                target_id: id.into(),
                target_origin: "cert-eu".into(),
                marking: Some(Marking {
                    tlp,
                    ..Default::default()
                }),
                reason: String::new(),
            }))
        };
        c.body = change("", 3);
        assert!(validate(&c).is_err(), "no target");
        c.body = change("x", 0);
        assert!(validate(&c).is_err(), "a marking change needs a TLP");
        c.body = change("x", 42);
        assert!(validate(&c).is_err(), "a TLP 2.0 level, not any number");
        c.body = change("x", Tlp::Red as i32);
        c.recipients = vec!["cert-eu".into()];
        assert!(validate(&c).is_ok());
        c.body = change("x", 3);
        assert!(validate(&c).is_ok());
    }

    #[test]
    fn unknown_key_and_expiry() {
        let k = SigningKey::generate("csirt-be").unwrap();
        let env = seal(&k, &content("csirt-be"));
        assert!(matches!(
            open(&env, |_| None, 0),
            Err(Rejected::UnknownKey(_))
        ));
        let mut c = content("csirt-be");
        c.expires_at_ms = 1_500;
        let env = seal(&k, &c);
        let pk = k.public_key();
        let r = open(&env, |_| Some(("csirt-be".to_string(), pk)), 2_000);
        assert!(matches!(r, Err(Rejected::Expired(1_500))));
    }

    fn batch_of(k: &SigningKey, n: usize) -> Vec<Envelope> {
        seal_batch(
            k,
            (0..n)
                .map(|_| content("csirt-be").encode_to_vec())
                .collect(),
        )
    }

    #[test]
    fn a_batch_shares_one_signature_and_each_envelope_opens_on_its_own() {
        let k = SigningKey::generate("csirt-be").unwrap();
        let pk = k.public_key();
        let lookup = |_: &str| Some(("csirt-be".to_string(), pk.clone()));
        let envs = batch_of(&k, 5);
        for (i, env) in envs.iter().enumerate() {
            assert_eq!(env.signature, envs[0].signature);
            assert_eq!(env.key_id, k.key_id());
            let b = env.batch.as_ref().expect("a batch of five carries proofs");
            assert_eq!((b.index, b.leaves), (i as u32, 5));
            open(env, lookup, 2_000).expect("opens without the others");
        }
        // A batch of one is an ordinary envelope.
        let one = batch_of(&k, 1).pop().unwrap();
        assert!(one.batch.is_none());
        assert!(signing::verify(
            &pk,
            MESSAGE_CONTEXT,
            &one.content,
            &one.signature
        ));
        assert!(seal_batch(&k, Vec::new()).is_empty());
    }

    #[test]
    fn a_batch_envelope_refuses_tampering_with_content_proof_or_signature() {
        let k = SigningKey::generate("csirt-be").unwrap();
        let pk = k.public_key();
        let lookup = |_: &str| Some(("csirt-be".to_string(), pk.clone()));
        let envs = batch_of(&k, 4);
        let refused = |e: &Envelope| open(e, lookup, 2_000).unwrap_err();

        let mut t = envs[1].clone();
        t.content = envs[2].content.clone();
        assert!(
            matches!(refused(&t), Rejected::BadSignature(_)),
            "content of another leaf"
        );
        let mut t = envs[1].clone();
        t.batch.as_mut().unwrap().index = 2;
        assert!(
            matches!(refused(&t), Rejected::BadSignature(_)),
            "another index"
        );
        let mut t = envs[1].clone();
        t.batch.as_mut().unwrap().leaves = 3;
        assert!(
            matches!(refused(&t), Rejected::BadSignature(_)),
            "another tree size"
        );
        let mut t = envs[1].clone();
        t.batch.as_mut().unwrap().path[0][5] ^= 1;
        assert!(
            matches!(refused(&t), Rejected::BadSignature(_)),
            "another sibling"
        );
        let mut t = envs[1].clone();
        t.signature = {
            let mut b = t.signature.to_vec();
            b[3] ^= 1;
            b.into()
        };
        assert!(
            matches!(refused(&t), Rejected::BadSignature(_)),
            "signature"
        );
        let mut t = envs[1].clone();
        t.batch.as_mut().unwrap().path.pop();
        let e = refused(&t);
        assert!(matches!(e, Rejected::BatchProof(_)), "{e}");
        assert_eq!(e.rule(), "signature");
        assert!(e.to_string().contains("needs 2"), "{e}");
        let mut t = envs[1].clone();
        t.batch.as_mut().unwrap().index = 4;
        assert!(matches!(refused(&t), Rejected::BatchProof(_)));
        // The origin's direct signature over a content does not pass as a batch of one (the
        // contexts differ), nor a batch signature as a direct one.
        let direct = seal(&k, &content("csirt-be"));
        let mut t = direct.clone();
        t.batch = Some(bluewire_proto::v1::BatchProof {
            index: 0,
            leaves: 1,
            path: Vec::new(),
        });
        assert!(matches!(refused(&t), Rejected::BadSignature(_)));
        let mut t = envs[0].clone();
        t.batch = None;
        assert!(matches!(refused(&t), Rejected::BadSignature(_)));
        // Another key's batch signature does not verify with this key.
        let other = SigningKey::generate("csirt-be").unwrap();
        let mut t = envs[0].clone();
        t.signature = batch_of(&other, 4)[0].signature.clone();
        assert!(matches!(refused(&t), Rejected::BadSignature(_)));
    }

    #[test]
    fn remembered_batches_skip_the_signature_only_for_the_same_bytes() {
        let k = SigningKey::generate("csirt-be").unwrap();
        let pk = k.public_key();
        let lookup = |_: &str| Some(("csirt-be".to_string(), pk.clone()));
        let batches = VerifiedBatches::default();
        let envs = batch_of(&k, 3);
        open_with(&envs[0], lookup, 2_000, Some(&batches)).unwrap();
        let statement = |e: &Envelope| {
            let b = e.batch.as_ref().unwrap();
            let root =
                merkle::root_from_proof(&merkle::leaf(&e.content), b.index, b.leaves, &b.path)
                    .unwrap();
            merkle::statement(&root, b.leaves)
        };
        let s0 = statement(&envs[0]);
        let kid = k.key_id();
        assert!(
            batches.contains(kid, &pk, &s0, &envs[0].signature),
            "a verified batch is remembered"
        );
        for e in &envs[1..] {
            open_with(e, lookup, 2_000, Some(&batches)).unwrap();
        }
        // Altered bytes miss the cache and fail the full check.
        let mut t = envs[2].clone();
        t.content = content("csirt-be").encode_to_vec().into();
        assert!(matches!(
            open_with(&t, lookup, 2_000, Some(&batches)),
            Err(Rejected::BadSignature(_))
        ));
        let mut t = envs[2].clone();
        t.signature = {
            let mut b = t.signature.to_vec();
            b[SIGNATURE_HALF] ^= 1;
            b.into()
        };
        assert!(matches!(
            open_with(&t, lookup, 2_000, Some(&batches)),
            Err(Rejected::BadSignature(_))
        ));
        // Only the same key id, key and signature hit.
        let other = SigningKey::generate("csirt-be").unwrap();
        assert!(!batches.contains(kid, &other.public_key(), &s0, &envs[0].signature));
        assert!(!batches.contains(other.key_id(), &pk, &s0, &envs[0].signature));
        let mut sig = envs[0].signature.to_vec();
        sig[0] ^= 1;
        assert!(!batches.contains(kid, &pk, &s0, &sig));
        // Another member signing the same statement with its own key gets its own entry and
        // never replaces this one.
        let theirs = other.sign(BATCH_CONTEXT, &s0);
        batches.insert(other.key_id(), &other.public_key(), s0, &theirs);
        assert!(batches.contains(kid, &pk, &s0, &envs[0].signature));
        assert!(batches.contains(other.key_id(), &other.public_key(), &s0, &theirs));
        batches.insert(kid, &other.public_key(), s0, &theirs);
        assert!(
            batches.contains(kid, &pk, &s0, &envs[0].signature),
            "an entry is never overwritten"
        );
        // Bounded: the oldest entries go first.
        let fake = |i: usize| merkle::statement(&merkle::leaf(&i.to_be_bytes()), 2);
        for i in 0..VerifiedBatches::CAPACITY {
            batches.insert(kid, &pk, fake(i), b"sig");
        }
        assert!(!batches.contains(kid, &pk, &s0, &envs[0].signature));
        assert!(batches.contains(kid, &pk, &fake(VerifiedBatches::CAPACITY - 1), b"sig"));
        assert!(batches.contains(kid, &pk, &fake(0), b"sig"));
        assert_eq!(
            batches.seen.lock().unwrap().0.len(),
            VerifiedBatches::CAPACITY
        );
    }

    const SIGNATURE_HALF: usize = signing::ED25519_SIGNATURE_LEN + 10;
}
