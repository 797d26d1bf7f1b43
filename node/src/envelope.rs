//! Signed envelopes: sealing content at the origin and opening envelopes at a
//! receiver. Owns the rule "verify before decoding anything else": `open`
//! checks size, key and signature over the exact content bytes first, and only
//! then decodes and validates the content. Never re-encodes content bytes.

use bluewire_proto::v1::{Content, Envelope, Kind, Level, Tlp, content::Body};
use prost::Message;
use thiserror::Error;

use crate::signing::{self, MESSAGE_CONTEXT, SigningKey};

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
    #[error("relayed by {peer:?} but originated by {origin:?}: relaying is not enabled")]
    NotFromOrigin { peer: String, origin: String },
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
}

impl Rejected {
    /// The routing rule (or check) that refused it, for audit and metrics.
    pub fn rule(&self) -> &'static str {
        match self {
            Rejected::Policy { rule, .. } | Rejected::Unroutable { rule, .. } => rule,
            Rejected::TooLarge(_) => "size",
            Rejected::Unsigned | Rejected::UnknownKey(_) | Rejected::BadSignature(_) => "signature",
            Rejected::OriginMismatch { .. }
            | Rejected::NotFromOrigin { .. }
            | Rejected::NotForwarder { .. } => "origin",
            Rejected::Expired(_) | Rejected::FromTheFuture(_) => "freshness",
            Rejected::Malformed(_) | Rejected::Invalid(_) => "content",
            Rejected::Later(_) => "retry",
            Rejected::Author { .. } => "author",
            Rejected::Control(_) => "control-authority",
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
    let bytes = content.encode_to_vec();
    let signature = key.sign(MESSAGE_CONTEXT, &bytes);
    Envelope {
        content: bytes,
        signature,
        key_id: key.key_id().to_string(),
        forwarding: None,
    }
}

/// Verify, then decode and validate. `lookup` maps a key id to the
/// (organisation, raw Ed25519 public key) the federation CA certified.
pub fn open(
    env: &Envelope,
    lookup: impl FnOnce(&str) -> Option<(String, Vec<u8>)>,
    now_ms: i64,
) -> Result<Opened, Rejected> {
    if env.content.len() > MAX_CONTENT_BYTES {
        return Err(Rejected::TooLarge(env.content.len()));
    }
    if env.signature.is_empty() || env.key_id.is_empty() {
        return Err(Rejected::Unsigned);
    }
    let (signer_org, public_key) =
        lookup(&env.key_id).ok_or_else(|| Rejected::UnknownKey(env.key_id.clone()))?;
    if !signing::verify(&public_key, MESSAGE_CONTEXT, &env.content, &env.signature) {
        return Err(Rejected::BadSignature(env.key_id.clone()));
    }
    let content =
        Content::decode(env.content.as_slice()).map_err(|e| Rejected::Malformed(e.to_string()))?;
    if content.origin_org != signer_org {
        return Err(Rejected::OriginMismatch {
            claimed: content.origin_org,
            signer: signer_org,
        });
    }
    validate(&content)?;
    if content.expires_at_ms != 0 && content.expires_at_ms < now_ms {
        return Err(Rejected::Expired(content.expires_at_ms));
    }
    if content.created_at_ms > now_ms + MAX_CLOCK_SKEW_MS {
        return Err(Rejected::FromTheFuture(content.created_at_ms - now_ms));
    }
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
        (Kind::FreeText, Some(Body::FreeText(t))) if !t.title.is_empty() || !t.body.is_empty() => {}
        (Kind::FreeText, _) => return bad("kind free-text needs a free_text body".into()),
        (Kind::IncidentReport, Some(Body::Incident(i))) if !i.title.is_empty() => {}
        (Kind::IncidentReport, _) => {
            return bad("kind incident needs an incident body with a title".into());
        }
        (
            Kind::SituationReport
            | Kind::CrisisStatus
            | Kind::Assessment
            | Kind::PublicCommunication,
            Some(Body::FreeText(t)),
        ) if !t.title.is_empty() => {}
        (
            Kind::SituationReport
            | Kind::CrisisStatus
            | Kind::Assessment
            | Kind::PublicCommunication,
            _,
        ) => {
            return bad(format!(
                "kind {} needs a free_text body with a title",
                kind.as_str_name()
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
                "the political level receives situation reports, crisis status, assessments and public-communication lines, not {}: escalate with a summary instead of raw technical content",
                kind.as_str_name()
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
    if !signing::verify(&pk, FORWARD_CONTEXT, &f.attestation, &f.signature) {
        return Err(Rejected::BadSignature(f.key_id.clone()));
    }
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
        Kind::SituationReport | Kind::CrisisStatus | Kind::Assessment | Kind::PublicCommunication
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
            bad.content[i] ^= 0x01;
            let r = open(&bad, |_| Some(("csirt-be".to_string(), pk.clone())), 2_000);
            assert!(
                matches!(r, Err(Rejected::BadSignature(_))),
                "byte {i}: {r:?}"
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
}
