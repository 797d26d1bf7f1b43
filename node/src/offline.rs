//! Offline bundles: the emergency channel when no network path exists between two nodes.
//! `bluewire bundle export --for ORG` writes this node's envelopes that delivery would send
//! ORG (the same egress decision, made now) into one file, signed by this node and, when
//! anything in it is above TLP:GREEN, encrypted to ORG's CA-certified encryption key
//! (X25519 + ML-KEM-768, [`crate::e2e`]). `bluewire bundle import FILE` at ORG's node checks
//! the file as a whole ([`open`]: format, addressee, decryption, the exporter's certificate
//! against the federation root and the revocation list, the exporter's signature), then
//! hands every envelope to ingress exactly as if the exporter had delivered it
//! ([`crate::ingress::deliver_bundle`]): the same verification, routing and workflow rules,
//! the same dedupe on (origin, id). Importing twice stores nothing twice; a bundle with
//! nothing new is refused as replayed.
//!
//! [`pack`], [`open`] and [`carries`] are pure; [`export`] and [`import`] are the node glue.

use std::sync::Arc;

use bluewire_proto::v1 as pb;
use prost::Message;
use rustls::pki_types::CertificateDer;
use thiserror::Error;

use crate::audit::AuditEvent;
use crate::e2e::{self, RecipientKey};
use crate::envelope;
use crate::feed::{self, LookupError};
use crate::known::Known;
use crate::markings;
use crate::outbound;
use crate::pki::{self, OrgProfile, PeerIdentity};
use crate::routing::Router;
use crate::signing::{self, SigningKey};
use crate::state::NodeState;

pub const FORMAT: &str = "bluewire-offline-bundle/1";
/// Domain separation of the exporter's signature over the bundle body.
pub const SIGN_CONTEXT: &[u8] = b"bluewire/v1/offline-bundle\0";
/// Domain separation of the encryption to the recipient.
const SEAL_CONTEXT: &[u8] = b"bluewire/v1/offline-bundle/sealed\0";
/// The largest bundle file a node reads or writes.
pub const MAX_BYTES: usize = 256 << 20;

/// Why a bundle file was refused as a whole (nothing in it was imported).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BundleError {
    #[error(
        "not a Bluewire offline bundle ({0}): give the file `bluewire bundle export` wrote, unchanged"
    )]
    NotABundle(String),
    #[error(
        "format {0:?} is not {FORMAT:?}: written by another version of Bluewire, or not an offline bundle"
    )]
    Format(String),
    #[error(
        "foreign bundle: it was exported for {for_org}, and this node is {me}; import it at {for_org}'s node"
    )]
    NotForUs { for_org: String, me: String },
    #[error("this bundle was exported by this node ({0}); import it at the node it was made for")]
    OwnBundle(String),
    #[error(
        "the bundle is encrypted to {0}, but this node has no decryption key: set [tls] encryption_key in the node's configuration to the encryption.key issued with node.crt, and restart it"
    )]
    NoKey(String),
    #[error(
        "the bundle is encrypted to key {named}, not to this node's key {mine}: the exporter used another certificate of this organisation; ask for a new export with `--recipient-cert` and this node's current node.crt"
    )]
    NotOurKey { named: String, mine: String },
    #[error("tampered: {0}; nothing was imported")]
    Tampered(String),
    #[error("foreign bundle: its signer's certificate {0}; nothing was imported")]
    Signer(String),
}

/// A bundle file's bytes and what it holds.
#[derive(Debug, Clone)]
pub struct Packed {
    pub bytes: Vec<u8>,
    pub summary: pb::BundleSummary,
}

/// Sign `body` with `signer` and, given recipient keys ((key id, hybrid public key) of the
/// organisation `body.for_org`), encrypt it to them: the bytes of a bundle file. Pure
/// except for the encryption's randomness.
pub fn pack(
    body: &pb::BundleBody,
    signer: &SigningKey,
    certificate: &[u8],
    seal_to: Option<&[(&str, &[u8])]>,
) -> Result<Vec<u8>, e2e::E2eError> {
    let body_bytes = body.encode_to_vec();
    let signed = pb::SignedBundle {
        signature: signer.sign(SIGN_CONTEXT, &body_bytes),
        key_id: signer.key_id().to_string(),
        body: body_bytes,
        certificate: certificate.to_vec(),
    }
    .encode_to_vec();
    let payload = match seal_to {
        Some(keys) => pb::offline_bundle::Payload::Sealed(e2e::seal(
            keys,
            SEAL_CONTEXT,
            &sealed_aad(&body.for_org),
            &signed,
        )?),
        None => pb::offline_bundle::Payload::Signed(signed),
    };
    Ok(pb::OfflineBundle {
        format: FORMAT.to_string(),
        for_org: body.for_org.clone(),
        payload: Some(payload),
    }
    .encode_to_vec())
}

/// The encryption binds the format and the addressee.
fn sealed_aad(for_org: &str) -> Vec<u8> {
    [FORMAT.as_bytes(), b"\0", for_org.as_bytes()].concat()
}

/// A bundle that checked out as a whole; its envelopes are still to be judged one by one.
#[derive(Debug, Clone)]
pub struct Opened {
    pub body: pb::BundleBody,
    /// The exporting node's verified profile and certificate (DER).
    pub exporter: OrgProfile,
    pub exporter_cert: Vec<u8>,
    pub encrypted: bool,
}

/// Check a bundle file addressed to `me` at `now_ms`: format, addressee, decryption with
/// `key`, the exporter's certificate (chains to the federation root `root_der`, valid now,
/// not `revoked`) and its signature — all before the body is decoded — then the body's
/// size and claims. Pure.
pub fn open(
    bytes: &[u8],
    me: &str,
    root_der: &[u8],
    revoked: impl Fn(&PeerIdentity) -> bool,
    keys: &[RecipientKey],
    now_ms: i64,
) -> Result<Opened, BundleError> {
    if bytes.len() > MAX_BYTES {
        return Err(BundleError::NotABundle(format!(
            "{} bytes, more than the {} MiB a node reads",
            bytes.len(),
            MAX_BYTES >> 20
        )));
    }
    let file =
        pb::OfflineBundle::decode(bytes).map_err(|e| BundleError::NotABundle(e.to_string()))?;
    if file.format != FORMAT {
        return Err(BundleError::Format(clip(&file.format)));
    }
    if file.for_org != me {
        return Err(BundleError::NotForUs {
            for_org: clip(&file.for_org),
            me: me.to_string(),
        });
    }
    let (signed, encrypted) = match file.payload {
        None => return Err(BundleError::NotABundle("it holds nothing".into())),
        Some(pb::offline_bundle::Payload::Signed(s)) => (s, false),
        Some(pb::offline_bundle::Payload::Sealed(sealed)) => {
            let ids = e2e::recipients(&sealed);
            let named = clip(&ids.iter().take(4).copied().collect::<Vec<_>>().join(", "));
            let key =
                e2e::key_for(keys, &sealed).ok_or_else(|| BundleError::NoKey(named.clone()))?;
            let opened = e2e::open(key, SEAL_CONTEXT, &sealed_aad(&file.for_org), &sealed)
                .map_err(|e| match e {
                    e2e::E2eError::NotARecipient(mine) => BundleError::NotOurKey { named, mine },
                    other => BundleError::Tampered(other.to_string()),
                })?;
            (opened, true)
        }
    };
    let signed = pb::SignedBundle::decode(signed.as_slice())
        .map_err(|e| BundleError::Tampered(format!("its signed part does not decode: {e}")))?;
    let exporter = exporter(&signed.certificate, root_der, revoked, now_ms)?;
    let certified = exporter
        .signing_keys
        .iter()
        .find(|k| k.key_id == signed.key_id)
        .and_then(|k| k.public_key(&exporter.org).ok())
        .ok_or_else(|| {
            BundleError::Tampered(format!(
                "it is signed with key {:?}, which {}'s certificate does not certify",
                clip(&signed.key_id),
                exporter.org
            ))
        })?;
    if !signing::verify(&certified, SIGN_CONTEXT, &signed.body, &signed.signature) {
        return Err(BundleError::Tampered(format!(
            "{}'s signature over the bundle does not verify: it was altered after export",
            exporter.org
        )));
    }
    // Signed by a node of the federation from here on; still bounded before decoding.
    let count = count_field(&signed.body, ENVELOPES_FIELD)
        .map_err(|e| BundleError::Tampered(format!("its body does not decode: {e}")))?;
    if count > MAX_ENVELOPES {
        return Err(BundleError::NotABundle(format!(
            "{count} envelopes, more than the {MAX_ENVELOPES} a bundle may carry"
        )));
    }
    let body = pb::BundleBody::decode(signed.body.as_slice())
        .map_err(|e| BundleError::Tampered(format!("its body does not decode: {e}")))?;
    if body.from_org != exporter.org {
        return Err(BundleError::Tampered(format!(
            "the bundle says it is from {:?}, its certificate is {}'s",
            clip(&body.from_org),
            exporter.org
        )));
    }
    if body.for_org != me {
        return Err(BundleError::NotForUs {
            for_org: clip(&body.for_org),
            me: me.to_string(),
        });
    }
    if body.from_org == me {
        return Err(BundleError::OwnBundle(clip(&body.id)));
    }
    Ok(Opened {
        body,
        exporter,
        exporter_cert: signed.certificate,
        encrypted,
    })
}

/// At most this many envelopes in one bundle (a day of heavy traffic is a few thousand).
pub const MAX_ENVELOPES: usize = 200_000;
/// `BundleBody.envelopes`.
const ENVELOPES_FIELD: u32 = 8;

/// How many times top-level field `field` occurs in the encoded message `bytes`, without
/// decoding anything (a body of millions of empty entries must not be materialised).
fn count_field(mut bytes: &[u8], field: u32) -> Result<usize, String> {
    use prost::encoding::{WireType, decode_key, decode_varint};
    let mut n = 0;
    while !bytes.is_empty() {
        let (tag, wire) = decode_key(&mut bytes).map_err(|e| e.to_string())?;
        let skip = match wire {
            WireType::Varint => {
                decode_varint(&mut bytes).map_err(|e| e.to_string())?;
                0
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => decode_varint(&mut bytes)
                .map_err(|e| e.to_string())
                .and_then(|l| usize::try_from(l).map_err(|e| e.to_string()))?,
            WireType::StartGroup | WireType::EndGroup => return Err("a group field".into()),
        };
        if skip > bytes.len() {
            return Err("truncated".into());
        }
        bytes = &bytes[skip..];
        n += usize::from(tag == field);
    }
    Ok(n)
}

/// Attacker-chosen text in an error message: at most 80 characters.
pub(crate) fn clip(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Is the certificate `der` valid at `now_ms`? (Over the network TLS checks it; a file
/// carries it without a handshake.)
fn check_validity(der: &[u8], now_ms: i64) -> Result<(), String> {
    let (not_before, not_after) = pki::validity_ms(der).map_err(|e| e.to_string())?;
    if now_ms < not_before {
        return Err("is not valid yet".into());
    }
    if now_ms > not_after {
        return Err("has expired".into());
    }
    Ok(())
}

/// The exporting node's verified profile: a node certificate chaining to the root, valid
/// now, not revoked.
fn exporter(
    der: &[u8],
    root_der: &[u8],
    revoked: impl Fn(&PeerIdentity) -> bool,
    now_ms: i64,
) -> Result<OrgProfile, BundleError> {
    if der.is_empty() {
        return Err(BundleError::Signer("is missing".into()));
    }
    let id =
        pki::identity_from_chain(&[CertificateDer::from(der.to_vec())], root_der).map_err(|e| {
            BundleError::Signer(format!("does not chain to this federation's root: {e}"))
        })?;
    check_validity(der, now_ms)
        .map_err(|why| BundleError::Signer(format!("({}) {why}", id.org())))?;
    if revoked(&id) {
        return Err(BundleError::Signer(format!(
            "({}) is revoked in this node's revocation list",
            id.org()
        )));
    }
    match id {
        PeerIdentity::Node { profile, .. } => Ok(profile),
        _ => Err(BundleError::Signer(
            "is not a node certificate: only nodes export bundles".into(),
        )),
    }
}

/// What the operator asked a bundle for `org` to hold.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub org: String,
    /// Cluster ids; empty: all.
    pub clusters: Vec<String>,
    pub since_ms: i64,
}

/// Does a bundle for `sel.org` carry this stored envelope? What a backfill would give
/// `sel.org` now: this node's own messages (never re-shares: delivery fixes their recipients
/// when they are made), to a candidate (a current member of its cluster, or a configured
/// peer for a message without a cluster), that [`outbound::recheck`] still allows (not
/// retracted, the marking in force, egress routing); then the operator's cluster and time
/// filters. Pure.
pub fn carries(
    env: &pb::Envelope,
    content: &pb::Content,
    sel: &Selection,
    peers: &[String],
    known: &impl Known,
    router: &Router,
    now_ms: i64,
) -> bool {
    if env.forwarding.is_some()
        || content.origin_org != known.me()
        || content.created_at_ms < sel.since_ms
        || (!sel.clusters.is_empty() && !sel.clusters.contains(&content.cluster))
    {
        return false;
    }
    let cluster = if content.cluster.is_empty() {
        None
    } else {
        match known.cluster(&content.cluster) {
            Some(c) => Some(c),
            None => return false,
        }
    };
    outbound::candidates(cluster.as_deref(), known.me(), peers).contains(&sel.org)
        && outbound::recheck(env, &sel.org, known, router, now_ms).is_ok()
}

/// Must a bundle holding `content` be encrypted? Above TLP:GREEN, unmarked, or classified,
/// under the marking in force — for a retraction or marking change, its target's too (its
/// reason speaks about the target). Pure.
pub fn needs_encryption(content: &pb::Content, known: &impl Known) -> bool {
    let secret = |m: Option<&pb::Marking>| {
        m.is_none_or(|m| m.tlp > pb::Tlp::Green as i32 || !m.classification.is_empty())
    };
    let in_force = |c: &pb::Content| match known.standing(c) {
        Ok(st) => secret(st.marking.as_ref().or(c.marking.as_ref())),
        Err(_) => true,
    };
    if in_force(content) {
        return true;
    }
    match markings::target_of(content) {
        None => false,
        Some((origin, id)) => match known.held(origin, id) {
            Ok(Some((target, _))) => in_force(&target),
            Ok(None) => false,
            Err(_) => true,
        },
    }
}

/// Why a bundle could not be written.
#[derive(Debug, Error)]
pub enum ExportError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "this node has never seen a certificate of {0}: pass --recipient-cert with {0}'s node certificate (node.crt)"
    )]
    UnknownOrg(String),
    #[error("nothing to export: {0}")]
    Empty(String),
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error("cannot encrypt to {org}: {why}")]
    Encrypt { org: String, why: String },
}

/// The bundle for `r.for_org`: see [`carries`]. Audited.
pub async fn export(
    st: &Arc<NodeState>,
    r: &pb::BundleExportRequest,
) -> Result<Packed, ExportError> {
    let org = r.for_org.trim().to_string();
    pki::validate_org(&org).map_err(|e| ExportError::Invalid(format!("--for: {e}")))?;
    if org == st.org() {
        return Err(ExportError::Invalid(format!(
            "{org} is this node: a bundle is for another organisation's node"
        )));
    }
    if !r.recipient_cert.is_empty() {
        learn_recipient(st, &org, &r.recipient_cert).await?;
    }
    let profile = st
        .directory
        .profile(&org, None)
        .ok_or_else(|| ExportError::UnknownOrg(org.clone()))?;
    let mut clusters = Vec::with_capacity(r.clusters.len());
    for c in &r.clusters {
        let c = st
            .resolve_cluster(c)
            .map_err(|e| ExportError::Invalid(format!("--cluster: {e}")))?;
        clusters.push(c.id.clone());
    }
    let sel = Selection {
        org: org.clone(),
        clusters,
        since_ms: r.since_ms,
    };
    let now = crate::clock::now_ms();
    recipient_in_force(st, &org, now)?;
    // The scan reads the store synchronously: off the async workers.
    let scan = {
        let (st, sel) = (st.clone(), sel.clone());
        tokio::task::spawn_blocking(move || select(&st, &sel, now))
            .await
            .map_err(|e| ExportError::Invalid(format!("the export scan failed: {e}")))??
    };
    let Selected {
        envelopes,
        highest,
        secret,
    } = scan;
    if envelopes.is_empty() {
        return Err(ExportError::Empty(format!(
            "no message of this node that {org} may receive matches (check `bluewire policy explain`, --since and --cluster)"
        )));
    }
    // Anything above GREEN, unmarked or classified is never written in clear.
    let encrypt = r.encrypt || secret;
    let keys = if encrypt {
        let keys = outbound::encryption_keys(&org, std::slice::from_ref(&profile));
        if keys.is_empty() {
            return Err(ExportError::Encrypt {
                org,
                why:
                    "its certificate certifies no encryption key (issued by an earlier version?): \
                      the bundle holds messages above TLP:GREEN or classified, and is never \
                      written in clear"
                        .into(),
            });
        }
        keys
    } else {
        Vec::new()
    };
    let body = pb::BundleBody {
        id: envelope::new_id(),
        from_org: st.org().to_string(),
        for_org: org.clone(),
        created_at_ms: now,
        since_ms: r.since_ms,
        clusters: sel.clusters.clone(),
        envelopes,
    };
    let seal_to: Vec<(&str, &[u8])> = keys
        .iter()
        .map(|(id, pk)| (id.as_str(), pk.as_slice()))
        .collect();
    let cert = st.tls.chain.first().map(|c| c.to_vec()).unwrap_or_default();
    let bytes = pack(
        &body,
        &st.signer,
        &cert,
        encrypt.then_some(seal_to.as_slice()),
    )
    .map_err(|e| ExportError::Encrypt {
        org: org.clone(),
        why: e.to_string(),
    })?;
    let summary = pb::BundleSummary {
        id: body.id.clone(),
        from_org: body.from_org.clone(),
        for_org: org.clone(),
        created_at_ms: now,
        envelopes: body.envelopes.len() as u32,
        encrypted: encrypt,
        highest_tlp: envelope::tlp_label(highest).to_string(),
        bytes: bytes.len() as u64,
    };
    st.audit(vec![AuditEvent::bundle(
        &org,
        format!(
            "exported offline bundle {}: {} envelopes, {} bytes, highest {}, {}",
            summary.id,
            summary.envelopes,
            summary.bytes,
            summary.highest_tlp,
            if encrypt {
                "encrypted"
            } else {
                "signed, not encrypted"
            }
        ),
    )])
    .await;
    Ok(Packed { bytes, summary })
}

/// What an export scan found.
struct Selected {
    envelopes: Vec<pb::Envelope>,
    /// The highest TLP in force among them.
    highest: i32,
    /// Something in it must not be written in clear ([`needs_encryption`]).
    secret: bool,
}

/// Scan the whole store for what a bundle for `sel.org` carries (blocking reads). A record
/// that does not decode is skipped and logged, not fatal.
fn select(st: &Arc<NodeState>, sel: &Selection, now: i64) -> Result<Selected, ExportError> {
    let peers: Vec<String> = st.config.peers.iter().map(|p| p.org.clone()).collect();
    let mut out = Selected {
        envelopes: Vec::new(),
        highest: pb::Tlp::Unspecified as i32,
        secret: false,
    };
    let (mut size, mut cursor) = (0usize, 0);
    loop {
        let page = st
            .store
            .read_after(cursor, 1024)
            .map_err(LookupError::from)?;
        let Some(last) = page.last() else { break };
        cursor = last.seq;
        for m in page {
            let (env, content) = match feed::decode(&m) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "export: skipping a stored record that does not decode");
                    continue;
                }
            };
            if !carries(&env, &content, sel, &peers, st.as_ref(), &st.router, now) {
                continue;
            }
            let standing = markings::standing(&st.store, &content);
            let tlp = standing
                .marking
                .as_ref()
                .or(content.marking.as_ref())
                .map(|m| m.tlp)
                .unwrap_or_default();
            out.highest = out.highest.max(tlp);
            out.secret |= needs_encryption(&content, st.as_ref());
            size += m.envelope.len();
            if size > MAX_BYTES - (1 << 20) || out.envelopes.len() >= MAX_ENVELOPES {
                return Err(ExportError::Invalid(format!(
                    "more than {} MiB or {MAX_ENVELOPES} messages for {}: narrow it with --since or --cluster",
                    MAX_BYTES >> 20,
                    sel.org
                )));
            }
            out.envelopes.push(env);
        }
    }
    Ok(out)
}

/// Delivery holds messages for a revoked peer, and TLS refuses an expired one: so does an
/// export.
fn recipient_in_force(st: &NodeState, org: &str, now: i64) -> Result<(), ExportError> {
    let Some(der) = st.directory.cert(org) else {
        return Ok(());
    };
    let refused = |why: String| ExportError::Encrypt {
        org: org.to_string(),
        why,
    };
    let serial = pki::serial_hex(&der).map_err(|e| refused(e.to_string()))?;
    if st.tls.revocations.is_revoked(&serial) {
        return Err(refused(format!(
            "its certificate {serial} is revoked: nothing is exported to it"
        )));
    }
    check_validity(&der, now).map_err(|why| {
        refused(format!(
            "the certificate this node holds for it {why}: pass its current node.crt with --recipient-cert"
        ))
    })
}

/// Verify `cert` (PEM or DER) as `org`'s node certificate and remember it.
async fn learn_recipient(st: &NodeState, org: &str, cert: &[u8]) -> Result<(), ExportError> {
    let bad = |why: String| ExportError::Invalid(format!("--recipient-cert: {why}"));
    let der = if cert.starts_with(b"-----") {
        let pem = std::str::from_utf8(cert).map_err(|e| bad(e.to_string()))?;
        pki::load_certs_pem(pem)
            .map_err(|e| bad(e.to_string()))?
            .remove(0)
            .to_vec()
    } else {
        cert.to_vec()
    };
    let id = pki::identity_from_chain(&[CertificateDer::from(der.clone())], &st.tls.root_der)
        .map_err(|e| bad(format!("does not chain to this federation's root: {e}")))?;
    if st.tls.revocations.identity_revoked(&id) {
        return Err(bad(format!("{}'s certificate is revoked", id.org())));
    }
    let PeerIdentity::Node { profile, .. } = id else {
        return Err(bad(
            "not a node certificate (give the node.crt of that organisation)".into(),
        ));
    };
    if profile.org != org {
        return Err(bad(format!(
            "it is {}'s certificate, not {org}'s",
            profile.org
        )));
    }
    check_validity(&der, crate::clock::now_ms()).map_err(|why| bad(format!("it {why}")))?;
    st.directory.learn(&st.store, &profile, &der).await;
    Ok(())
}

/// Why an import failed as a whole.
#[derive(Debug, Error)]
pub enum ImportError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(
        "replayed: all {count} messages in bundle {id} from {from} are already held here (imported before, or delivered directly); nothing changed"
    )]
    Replayed {
        id: String,
        from: String,
        count: usize,
    },
    #[error(transparent)]
    Ingress(#[from] crate::ingress::IngressError),
}

/// Check the bundle file `bytes` and hand its envelopes to ingress. Audited.
pub async fn import(
    st: &Arc<NodeState>,
    bytes: &[u8],
) -> Result<pb::BundleImportResponse, ImportError> {
    let opened = match open(
        bytes,
        st.org(),
        &st.tls.root_der,
        |id| st.tls.revocations.identity_revoked(id),
        &st.decryptors,
        crate::clock::now_ms(),
    ) {
        Ok(o) => o,
        Err(e) => {
            st.audit(vec![AuditEvent::bundle(
                "",
                format!("refused an offline bundle: {e}"),
            )])
            .await;
            return Err(e.into());
        }
    };
    let Opened {
        body,
        exporter,
        exporter_cert,
        encrypted,
    } = opened;
    let summary = pb::BundleSummary {
        id: body.id.clone(),
        from_org: body.from_org.clone(),
        for_org: body.for_org.clone(),
        created_at_ms: body.created_at_ms,
        envelopes: body.envelopes.len() as u32,
        encrypted,
        highest_tlp: String::new(),
        bytes: bytes.len() as u64,
    };
    let count = body.envelopes.len();
    if count > 0 && all_held(st, &body.envelopes) {
        let e = ImportError::Replayed {
            id: clip(&body.id),
            from: body.from_org,
            count,
        };
        st.audit(vec![AuditEvent::bundle(&exporter.org, e.to_string())])
            .await;
        return Err(e);
    }
    let results =
        crate::ingress::deliver_bundle(st, &exporter, &exporter_cert, body.envelopes, &body.id)
            .await?;
    let mut r = pb::BundleImportResponse {
        summary: Some(summary),
        ..Default::default()
    };
    for d in results {
        let outcome = match pb::DeliveryOutcome::try_from(d.outcome) {
            Ok(pb::DeliveryOutcome::Accepted) => {
                r.accepted += 1;
                continue;
            }
            Ok(pb::DeliveryOutcome::Duplicate) => {
                r.duplicate += 1;
                continue;
            }
            Ok(pb::DeliveryOutcome::RetryLater) => {
                r.later += 1;
                "later"
            }
            _ => {
                r.rejected += 1;
                "rejected"
            }
        };
        if r.results.len() < MAX_LISTED {
            r.results.push(pb::BundleEnvelopeResult {
                id: d.id,
                outcome: outcome.to_string(),
                reason: d.reason,
            });
        }
    }
    st.audit(vec![AuditEvent::bundle(
        &body.from_org,
        format!(
            "imported offline bundle {} ({}): {} new, {} already held, {} refused, {} to retry",
            body.id,
            if encrypted { "encrypted" } else { "signed" },
            r.accepted,
            r.duplicate,
            r.rejected,
            r.later
        ),
    )])
    .await;
    Ok(r)
}

/// Refused or deferred envelopes listed in an import's answer at most (the counts are
/// complete; `bluewire rejections` has every refusal).
const MAX_LISTED: usize = 1000;

/// Does this node already hold every message in `envelopes` (by origin and id)? Then
/// importing them changes nothing.
fn all_held(st: &NodeState, envelopes: &[pb::Envelope]) -> bool {
    envelopes.iter().all(|env| {
        pb::Content::decode(&env.content[..])
            .is_ok_and(|c| matches!(st.store.get(&c.origin_org, &c.id), Ok(Some(_))))
    })
}

#[cfg(test)]
mod tests;
