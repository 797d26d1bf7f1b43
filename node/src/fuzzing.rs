//! Entry points for coverage-guided fuzzing (`fuzz/`, cargo-fuzz; see docs/FUZZING.md).
//!
//! One function per fuzz target. Each takes arbitrary bytes, feeds them to a real parser or
//! validator of the node and returns; it never panics on its own, so a panic is a bug in the
//! code under test or a broken invariant asserted here (a parsed STIX pattern renders and
//! re-parses equal, a sealed envelope verifies, a normalised bundle passes the receiver's
//! checks, …). The unit tests at the bottom replay every committed corpus file
//! (`fuzz/corpus/<target>/`) through its function, so past crash inputs stay fixed.
//!
//! Signatures: a fuzzer cannot forge signatures (hybrid Ed25519 + ML-DSA-65), so the targets
//! that sit behind a signature check have a mode (chosen by the first input byte) in which
//! the harness signs what the fuzzer wrote with a fixed key ([`fuzz_key`], the same in every run, so corpus envelopes keep verifying)
//! or with the keys of a small federation built once per process ([`fixture`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use bluewire_proto::v1::{
    self as pb, ClusterEntry, ClusterOp, Content, Envelope, Tlp, cluster_op::Op,
};
use prost::Message;
use serde_json::Value;

use crate::cluster::{self, ClusterState};
use crate::envelope::{self, Rejected};
use crate::merkle;
use crate::pki::{self, FederationCa, OrgProfile, OrgRequest};
use crate::signing::{BATCH_CONTEXT, MESSAGE_CONTEXT, SigningKey};
use crate::stix::{self, pattern};
use crate::taxii::query;

/// The clock of every target: fixed, so a run is reproducible (2027-01-15T08:00:00Z).
pub const NOW_MS: i64 = 1_800_000_000_000;

/// The organisation of [`fuzz_key`].
pub const FUZZ_ORG: &str = "fuzz-org";

/// A signing key of [`FUZZ_ORG`] built from a fixed seed: the same key in every run.
pub fn fuzz_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| {
        SigningKey::from_seeds(FUZZ_ORG, &[0x42; 32], &[0x43; 32]).expect("fixed seeds")
    })
}

/// Organisations of the [`fixture`] federation, with the blueprint functions they hold.
pub const FIXTURE_ORGS: [(&str, &[&str]); 3] = [
    ("org-a", &["csirts-network", "cyclone"]),
    ("org-b", &["csirts-network", "presidency", "commission"]),
    ("org-c", &["reserve-authority", "isac"]),
];

/// A federation built once per process: a root, certified organisations, and the genesis of
/// the cluster `org-a/ops` (convener org-a). Random keys, so its signatures do not survive the
/// process: the targets sign with it at run time.
pub struct Fixture {
    pub root: Vec<u8>,
    /// (org, signing key, DER node certificate), in [`FIXTURE_ORGS`] order.
    pub orgs: Vec<(String, SigningKey, Vec<u8>)>,
    pub genesis: Vec<u8>,
    pub cluster: ClusterState,
    /// Each organisation's certified decryption key, in [`FIXTURE_ORGS`] order.
    pub decryptors: Vec<crate::e2e::RecipientKey>,
    /// Each organisation's node after `pki rotate`: (org, new signing key, new certificate).
    pub rotated: Vec<(String, SigningKey, Vec<u8>)>,
}

impl Fixture {
    fn org(&self, org: &str) -> Option<&(String, SigningKey, Vec<u8>)> {
        self.orgs.iter().find(|(o, _, _)| o == org)
    }

    /// The key of `org`, or org-a's for an organisation the fixture does not know.
    fn key_of(&self, org: &str) -> &SigningKey {
        &self.org(org).unwrap_or(&self.orgs[0]).1
    }

    /// The key `org`'s node signs with in `state`: the rotated one when `carried` (the
    /// certificate an op carries) or the certificate `state`'s log holds for `org` is the
    /// rotated certificate, the first one otherwise.
    fn key_in(&self, state: &ClusterState, org: &str, carried: Option<&[u8]>) -> &SigningKey {
        let held = state.members.get(org).map(|m| m.cert_der.as_slice());
        match self.rotated.iter().find(|(o, _, _)| o == org) {
            Some((_, key, cert)) if carried.or(held) == Some(cert.as_slice()) => key,
            _ => self.key_of(org),
        }
    }
}

/// The certificate `op` carries for its actor (an acceptance, a rekey).
fn carried_cert(op: &ClusterOp) -> Option<&[u8]> {
    match &op.op {
        Some(Op::Accept(a)) => Some(&a.node_cert),
        Some(Op::Rekey(r)) => Some(&r.node_cert),
        _ => None,
    }
}

/// Sign `op` as its actor's node would in `state`, and sequence it as the convener's would.
fn sign_and_sequence(
    fx: &Fixture,
    state: &ClusterState,
    op: &ClusterOp,
    now: i64,
) -> (pb::SignedClusterOp, ClusterEntry) {
    let carried = carried_cert(op);
    let signed = cluster::sign_op(fx.key_in(state, &op.actor_org, carried), op);
    let own = (op.actor_org == state.convener)
        .then_some(carried)
        .flatten();
    let entry = cluster::sequence(
        Some(state),
        signed.clone(),
        fx.key_in(state, &state.convener, own),
        now,
    );
    (signed, entry)
}

/// The shared [`Fixture`].
pub fn fixture() -> &'static Fixture {
    static FX: OnceLock<Fixture> = OnceLock::new();
    FX.get_or_init(|| {
        let mut ca = FederationCa::generate("fuzzing").expect("federation CA");
        let orgs: Vec<_> = FIXTURE_ORGS
            .iter()
            .map(|&(org, functions)| {
                let bundle = ca
                    .issue_org(&OrgRequest {
                        profile: OrgProfile {
                            org: org.into(),
                            country: "BE".into(),
                            org_type: "csirt".into(),
                            levels: pki::Level::ALL.to_vec(),
                            sectors: vec![],
                            accreditations: vec![],
                            endpoint: "https://127.0.0.1:7443".into(),
                            signing_keys: vec![],
                            encryption_keys: vec![],
                            functions: functions.iter().map(|f| f.to_string()).collect(),
                        },
                        validity_days: 3650,
                    })
                    .expect("issue org");
                let key = SigningKey::from_pkcs8_pem(org, &bundle.node.signing_key_pkcs8_pem)
                    .expect("signing key");
                let cert = pki::load_certs_pem(&bundle.node.cert_pem)
                    .expect("node cert")
                    .remove(0)
                    .as_ref()
                    .to_vec();
                let decryptor =
                    crate::e2e::RecipientKey::from_pem(org, &bundle.node.encryption_key_pem)
                        .expect("encryption key");
                ((org.to_string(), key, cert), decryptor)
            })
            .collect();
        let (orgs, decryptors): (Vec<_>, Vec<_>) = orgs.into_iter().unzip();
        let rotated = orgs
            .iter()
            .map(|(org, _, cert)| {
                let next = ca.rotate_node(cert, 3650, 86_400).expect("rotate");
                let key = SigningKey::from_pkcs8_pem(org, &next.signing_key_pkcs8_pem)
                    .expect("signing key");
                let cert = pki::load_certs_pem(&next.cert_pem)
                    .expect("node cert")
                    .remove(0)
                    .as_ref()
                    .to_vec();
                (org.clone(), key, cert)
            })
            .collect();
        let root = ca.cert_der().as_ref().to_vec();
        let create = ClusterOp {
            cluster_id: cluster::cluster_id("org-a", "ops"),
            base_hash: String::new(),
            op_id: "op-0".into(),
            actor_org: "org-a".into(),
            at_ms: 1,
            op: Some(Op::Create(pb::CreateCluster {
                name: "ops".into(),
                purpose: "fuzzing".into(),
                levels: vec![pb::Level::Technical as i32, pb::Level::Operational as i32],
                max_tlp: Tlp::Red as i32,
                history: pb::HistoryRule::Full as i32,
                node_cert: orgs[0].2.clone(),
                exercise: false,
            })),
        };
        let entry = cluster::sequence(None, cluster::sign_op(&orgs[0].1, &create), &orgs[0].1, 2);
        let (state, _) = ClusterState::genesis(&entry, &root).expect("genesis");
        Fixture {
            root,
            orgs,
            genesis: entry.encode_to_vec(),
            cluster: state,
            decryptors,
            rotated,
        }
    })
}

/// Splits `data` into records, each a little-endian `u16` length then that many bytes (the
/// last one cut short if the input ends first).
fn records(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 2 {
        let len = u16::from_le_bytes([data[0], data[1]]) as usize;
        let rest = &data[2..];
        let (rec, tail) = rest.split_at(len.min(rest.len()));
        out.push(rec);
        data = tail;
    }
    out
}

/// Joins records the way [`records`] splits them (corpus generation).
pub fn join_records<T: AsRef<[u8]>>(records: &[T]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        let r = r.as_ref();
        let len = u16::try_from(r.len()).expect("record under 64 KiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(r);
    }
    out
}

/// A TLP from a selector byte (never unspecified).
fn tlp_from(b: u8) -> Tlp {
    match b % 5 {
        0 => Tlp::Clear,
        1 => Tlp::Green,
        2 => Tlp::Amber,
        3 => Tlp::AmberStrict,
        _ => Tlp::Red,
    }
}

/// `envelope_open`: opening envelopes as a receiver does ([`envelope::open`],
/// [`envelope::open_unclocked`], [`envelope::open_forwarding`]). First byte, low two bits:
/// - 0: the rest is `Content` bytes, sealed here with [`fuzz_key`]: past the signature, into
///   decoding and [`envelope::validate`]; a sealed envelope must verify (with bit 2 set, it is
///   sealed as the first of a batch of three, [`envelope::seal_batch`]);
/// - 1: the rest is an `Envelope`; its content (over the batch its proof claims, if any) and
///   forwarding attestation are re-signed with [`fuzz_key`] before opening;
/// - 2, 3: the rest is an `Envelope`, opened as it is (keys looked up as [`fuzz_key`]'s).
///
/// Every envelope is opened a second and third time remembering verified batches
/// ([`envelope::open_with`]): the cache must never change a decision.
/// Two openings of an envelope decided alike: the same content, or the same refusal.
fn same_decision(
    a: &Result<envelope::Opened, Rejected>,
    b: &Result<envelope::Opened, Rejected>,
    what: &str,
) {
    assert_eq!(
        a.as_ref().map(|o| &o.content),
        b.as_ref().map(|o| &o.content),
        "{what}"
    );
}

pub fn envelope_open(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = fuzz_key();
    let pk = key.public_key();
    let lookup = |_: &str| Some((FUZZ_ORG.to_string(), pk.clone()));
    let env = match mode & 3 {
        0 if mode & 4 != 0 => {
            envelope::seal_batch(key, vec![rest.to_vec(), Vec::new(), rest.to_vec()]).swap_remove(0)
        }
        0 => Envelope {
            content: rest.to_vec().into(),
            signature: key.sign(MESSAGE_CONTEXT, rest).into(),
            key_id: key.key_id().to_string(),
            ..Default::default()
        },
        1 => {
            let Ok(mut env) = Envelope::decode(rest) else {
                return;
            };
            let proven = env.batch.as_ref().map(|b| {
                merkle::root_from_proof(&merkle::leaf(&env.content), b.index, b.leaves, &b.path)
                    .map(|root| merkle::statement(&root, b.leaves))
            });
            env.signature = match &proven {
                Some(Ok(statement)) => key.sign(BATCH_CONTEXT, statement).into(),
                // No batch, or a proof that does not hold (refused for that before the signature).
                _ => key.sign(MESSAGE_CONTEXT, &env.content).into(),
            };
            env.key_id = key.key_id().to_string();
            if let Some(f) = env.forwarding.as_mut() {
                f.signature = key.sign(envelope::FORWARD_CONTEXT, &f.attestation);
                f.key_id = key.key_id().to_string();
            }
            env
        }
        _ => {
            let Ok(env) = Envelope::decode(rest) else {
                return;
            };
            env
        }
    };
    let unclocked = envelope::open_unclocked(&env, lookup);
    let clocked = envelope::open(&env, lookup, NOW_MS);
    let batches = envelope::VerifiedBatches::default();
    for _ in 0..2 {
        let cached = envelope::open_with(&env, lookup, NOW_MS, Some(&batches));
        same_decision(
            &cached,
            &clocked,
            "remembering verified batches changed a decision",
        );
    }
    // An altered copy (another leaf's content, as far as the proof is concerned), opened against
    // the cache that now holds this envelope's batch, is decided as without the cache.
    if !env.content.is_empty() {
        let mut altered = env.clone();
        let at = data.len() % altered.content.len();
        altered.content = {
            let mut b = altered.content.to_vec();
            b[at] ^= 1;
            b.into()
        };
        let cached = envelope::open_with(&altered, lookup, NOW_MS, Some(&batches));
        let plain = envelope::open(&altered, lookup, NOW_MS);
        same_decision(
            &cached,
            &plain,
            "a cache filled by one envelope changed the decision on an altered one",
        );
    }
    if mode & 3 != 2 && mode & 3 != 3 && env.content.len() <= envelope::MAX_CONTENT_BYTES {
        assert!(
            !matches!(
                unclocked,
                Err(Rejected::BadSignature(_) | Rejected::Unsigned | Rejected::UnknownKey(_))
            ),
            "an envelope sealed with the fuzz key must verify: {unclocked:?}"
        );
    }
    match (&unclocked, &clocked) {
        (Ok(o), _) => {
            assert_eq!(o.signer_org, FUZZ_ORG);
            assert_eq!(envelope::validate(&o.content), Ok(()));
            // The clocks only refuse what verified and is well formed.
            if let Err(e) = &clocked {
                assert!(
                    matches!(e, Rejected::Expired(_) | Rejected::FromTheFuture(_)),
                    "open refused what open_unclocked accepted: {e:?}"
                );
            }
            let _ = envelope::open_forwarding(&env, &o.content, lookup);
            let _ = e_labels(&o.content);
        }
        (Err(e), Ok(_)) => panic!("open accepted what open_unclocked refused: {e:?}"),
        (Err(e), Err(_)) => {
            let _ = e.rule();
            let _ = e.to_string();
            let _ = envelope::open_forwarding(&env, &Content::default(), lookup);
        }
    }
}

/// The labels and lookups a node derives from a valid message (logs, metrics, routing).
fn e_labels(c: &Content) -> usize {
    let mut n = envelope::kind_label(c.kind).len() + envelope::level_label(c.level).len();
    if let Some(m) = &c.marking {
        n += envelope::tlp_label(m.tlp).len();
        let _ = envelope::reshare_allowed(c, m);
    }
    n += stix::index_of(c).len();
    n += crate::case::case_key(c).map_or(0, |k| k.len());
    n += usize::from(crate::case::axis_move(c).is_some());
    n
}

/// `content_validate`: [`envelope::validate`] and [`envelope::check_author`] on a decoded
/// `Content` (every kind and body, case messages, STIX bundles inside content). A valid
/// content stays valid after a protobuf round trip.
pub fn content_validate(data: &[u8]) {
    let Ok(c) = Content::decode(data) else {
        return;
    };
    let author = envelope::check_author(&c);
    let valid = envelope::validate(&c);
    if valid.is_ok() {
        assert!(
            author.is_ok(),
            "validate passed an author check_author refuses"
        );
        let again = Content::decode(c.encode_to_vec().as_slice()).expect("re-encoded content");
        assert_eq!(envelope::validate(&again), Ok(()), "valid only once");
        let _ = e_labels(&c);
    }
    if let Err(e) = valid {
        let _ = (e.rule(), e.to_string());
    }
}

/// `cluster_log`: rebuilding a cluster from its log ([`cluster::replay`],
/// [`ClusterState::apply`], [`cluster::entry_index`]). First byte modulo 3:
/// - 0: the rest is records (see [`records`]) of encoded `ClusterEntry`s, replayed as a log;
/// - 1: the same, after the fixture's valid genesis entry;
/// - 2: the rest is records of encoded `ClusterOp`s, signed by their actor's fixture key
///   (an empty `cluster_id`, `base_hash` or `node_cert` is filled in with the right one),
///   sequenced by the convener and applied one by one; the log so built must replay to the
///   same state.
pub fn cluster_log(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let fx = fixture();
    match mode % 3 {
        0 | 1 => {
            let mut entries: Vec<Vec<u8>> = Vec::new();
            if mode % 3 == 1 {
                entries.push(fx.genesis.clone());
            }
            for r in records(rest) {
                if let Ok(e) = ClusterEntry::decode(r) {
                    let _ = cluster::entry_index(&e);
                    if let Ok(body) = pb::ClusterEntryBody::decode(e.body.as_slice())
                        && let Some(signed) = body.op
                        && let Ok(op) = ClusterOp::decode(signed.op.as_slice())
                    {
                        let _ = cluster::describe(&op);
                    }
                }
                entries.push(r.to_vec());
            }
            if let Ok((state, applied)) = cluster::replay(&entries, &fx.root) {
                assert_eq!(applied.len(), entries.len());
                assert_eq!(state.head_index as usize + 1, entries.len());
                assert_eq!(
                    state.role_of(&state.convener),
                    Some(pb::ClusterRole::Convener)
                );
            }
        }
        _ => {
            let mut state = fx.cluster.clone();
            let mut log = vec![fx.genesis.clone()];
            let mut clock = 10;
            for r in records(rest).into_iter().take(16) {
                let Ok(mut op) = ClusterOp::decode(r) else {
                    continue;
                };
                if op.cluster_id.is_empty() {
                    op.cluster_id = state.id.clone();
                }
                if op.base_hash.is_empty() {
                    op.base_hash = state.head_hash.clone();
                }
                match &mut op.op {
                    Some(Op::Invite(i)) if i.node_cert.is_empty() => {
                        i.node_cert = fx.org(&i.org).map(|o| o.2.clone()).unwrap_or_default();
                    }
                    Some(Op::Accept(a)) if a.node_cert.is_empty() => {
                        a.node_cert = fx
                            .org(&op.actor_org)
                            .map(|o| o.2.clone())
                            .unwrap_or_default();
                    }
                    // A rekey to the actor's rotated certificate, signed with its new key.
                    Some(Op::Rekey(k)) if k.node_cert.is_empty() => {
                        k.node_cert = fx
                            .rotated
                            .iter()
                            .find(|o| o.0 == op.actor_org)
                            .map(|o| o.2.clone())
                            .unwrap_or_default();
                    }
                    _ => {}
                }
                let _ = cluster::describe(&op);
                let check = state.check(&op);
                clock += 1;
                let (signed, entry) = sign_and_sequence(fx, &state, &op, clock);
                let verified = state.verify_op(&signed, &fx.root);
                if verified.is_ok() {
                    assert_eq!(check, Ok(()), "verify_op passed an op check refuses");
                }
                let before = state.head_index;
                match state.apply(&entry, &fx.root) {
                    Ok(applied) => {
                        assert!(verified.is_ok(), "apply took an op verify_op refused");
                        assert_eq!(applied.index, before + 1);
                        assert_eq!(state.head_index, before + 1);
                        log.push(entry.encode_to_vec());
                    }
                    Err(_) => {
                        assert_eq!(state.head_index, before, "a refused entry moved the head")
                    }
                }
            }
            let (replayed, _) =
                cluster::replay(&log, &fx.root).expect("the log just built replays");
            assert_eq!(replayed, state, "replay differs from applying one by one");
        }
    }
}

/// `case_bundle`: checking an evidence bundle offline ([`crate::case::bundle::check`]). First
/// byte, low bit: 0: the rest is a `CaseBundle` checked as it is, against the fixture root;
/// 1: the same, but every envelope is re-signed by the fixture key of its content's origin
/// and, when the bundle has no certificates, the certificates of those origins are added.
pub fn case_bundle(data: &[u8]) {
    let Some((bundle, checked)) = case_bundle_checked(data) else {
        return;
    };
    assert!(checked.verified <= bundle.envelopes.len());
    if checked.problems.is_empty() {
        assert_eq!(checked.verified, bundle.envelopes.len());
        assert!(!bundle.envelopes.is_empty());
    }
}

/// Offline bundle files as org-b's node opens them (`offline::open`). First byte, low bit:
/// 0: the rest is the file as it is; 1: the rest is a `BundleBody` that org-a packs (signed
/// with its fixture key and certificate; bit 1: also encrypted to org-b's certified key)
/// before org-b opens it — then it opens exactly when it is from org-a for org-b, to the
/// very body packed.
pub fn offline_bundle(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let fx = fixture();
    let b_key = &fx.decryptors[1];
    let (bytes, packed) = if mode & 1 == 1 {
        let Ok(body) = pb::BundleBody::decode(rest) else {
            return;
        };
        if body.envelopes.len() > 64 {
            return;
        }
        let pk = b_key.public_key();
        let keys = [(b_key.key_id(), pk.as_slice())];
        let sealed = (mode & 2 == 2).then_some(&keys[..]);
        let bytes =
            crate::offline::pack(&body, &fx.orgs[0].1, &fx.orgs[0].2, sealed).expect("pack");
        (bytes, Some(body))
    } else {
        (rest.to_vec(), None)
    };
    let r = crate::offline::open(
        &bytes,
        "org-b",
        &fx.root,
        |_| false,
        std::slice::from_ref(b_key),
        crate::clock::now_ms(),
    );
    if let Ok(o) = &r {
        assert_eq!(o.body.for_org, "org-b");
        assert_eq!(o.body.from_org, o.exporter.org);
        assert_ne!(o.exporter.org, "org-b");
        assert!(o.body.envelopes.len() <= crate::offline::MAX_ENVELOPES);
    }
    if let Some(body) = packed {
        let lawful = body.from_org == "org-a" && body.for_org == "org-b";
        match &r {
            Ok(o) => {
                assert!(
                    lawful,
                    "opened a bundle from {:?} for {:?}",
                    body.from_org, body.for_org
                );
                assert_eq!(o.body, body);
                assert_eq!(o.encrypted, mode & 2 == 2);
            }
            Err(e) => assert!(!lawful, "org-a's own bundle for org-b refused: {e}"),
        }
    }
}

/// [`case_bundle`]'s input as the bundle checked, and what checking it found.
fn case_bundle_checked(data: &[u8]) -> Option<(pb::CaseBundle, crate::case::bundle::Checked)> {
    let (&mode, rest) = data.split_first()?;
    let mut bundle = pb::CaseBundle::decode(rest).ok()?;
    if bundle.envelopes.len() > 64 {
        return None;
    }
    let fx = fixture();
    if mode & 1 == 1 {
        let mut origins = BTreeMap::new();
        for env in &mut bundle.envelopes {
            let origin = Content::decode(&env.content[..])
                .map(|c| c.origin_org)
                .unwrap_or_default();
            let key = fx.key_of(&origin);
            env.signature = key.sign(MESSAGE_CONTEXT, &env.content).into();
            env.key_id = key.key_id().to_string();
            if let Some(o) = fx.org(&origin) {
                origins.insert(o.0.clone(), o.2.clone());
            }
        }
        if bundle.certificates.is_empty() {
            bundle.certificates = origins.into_values().collect();
        }
    }
    let checked = crate::case::bundle::check(&bundle, &fx.root, NOW_MS);
    Some((bundle, checked))
}

/// `config_file`: a `node.toml` text ([`crate::config::NodeConfig::parse`]); relative paths
/// resolve against a directory that is never touched.
pub fn config_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = crate::config::NodeConfig::parse(
        text,
        Path::new("/nonexistent/bluewire-fuzz"),
        Path::new("node.toml"),
    ) else {
        return;
    };
    assert_eq!(crate::config::check_org(&cfg.org), Ok(()));
    for p in &cfg.peers {
        assert!(crate::config::parse_endpoint(&p.endpoint).is_ok());
        assert_ne!(p.org, cfg.org);
    }
    assert!((1..=10_000).contains(&cfg.taxii.page_size));
    assert!(cfg.data_dir.is_absolute());
}

/// `stix_bundle`: a STIX bundle as a receiver checks it ([`stix::check_bundle`]) and as the
/// origin normalises it ([`stix::normalise`]). First byte: the envelope TLP (modulo 5) and,
/// bit 7, the origin (`csirt-fr` or `org-a`); the rest is the JSON text. What `normalise`
/// returns passes `check_bundle`, with the same object versions.
pub fn stix_bundle(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(json) = std::str::from_utf8(rest) else {
        return;
    };
    let tlp = tlp_from(sel);
    let origin = if sel & 0x80 == 0 { "csirt-fr" } else { "org-a" };
    let checked = stix::check_bundle(json, tlp, origin);
    let normalised = stix::normalise(json, tlp, origin);
    let _ = stix::summary(json);
    if checked.is_ok() {
        assert!(
            normalised.is_ok(),
            "normalise refused what check_bundle accepts: {normalised:?}"
        );
    }
    if let Ok(n) = &normalised {
        let again = stix::check_bundle(n, tlp, origin);
        let again = again.unwrap_or_else(|e| panic!("a normalised bundle is refused: {e}\n{n}"));
        let before = stix::check_value(&stix::parse(json).expect("JSON"), tlp, origin, false)
            .expect("checked by normalise");
        let ids = |v: &[stix::Version]| {
            v.iter()
                .map(|v| (v.id.clone(), v.version.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids(&again),
            ids(&before),
            "normalise changed the object versions"
        );
        for o in stix::parse(n)
            .ok()
            .as_ref()
            .and_then(|b| b.get("objects"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let _ = stix::version_of(o);
            let _ = stix::object_tlp(o.as_object().expect("checked object"));
        }
    }
}

/// `stix_pattern`: the STIX patterning parser ([`pattern::parse`]). A parsed pattern renders
/// to text that parses to the same pattern and renders the same again.
pub fn stix_pattern(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = pattern::parse(text) else {
        return;
    };
    let rendered = p.to_string();
    match pattern::parse(&rendered) {
        Ok(q) => {
            assert_eq!(q, p, "round trip of {text:?} via {rendered:?}");
            assert_eq!(
                q.to_string(),
                rendered,
                "rendering of {text:?} is not stable"
            );
        }
        Err(e) => panic!("{text:?} renders as {rendered:?}, which does not parse: {e}"),
    }
    let _ = p.object_types();
}

/// `taxii_query`: TAXII 2.1 query strings ([`query::parse`]), then applied to a sample object.
pub fn taxii_query(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = query::Cursor::parse(text);
    let Ok(q) = query::parse(Some(text), query::OBJECT_PARAMS, 100, 1000) else {
        return;
    };
    assert!(
        (1..=1000).contains(&q.limit),
        "limit {} out of bounds",
        q.limit
    );
    if let Some(c) = q.next {
        assert_eq!(query::Cursor::parse(&c.token()), Ok(c));
    }
    let sample = serde_json::json!({
        "type": "indicator", "spec_version": "2.1",
        "id": "indicator--0c4d5e6f-1a2b-4c3d-8e9f-000000000001",
        "created": "2026-11-30T08:00:00.000Z", "modified": "2026-11-30T08:00:00.000Z",
    });
    let _ = q.admits(&sample);
    let all = vec!["2026-11-30T08:00:00.000Z".to_string()];
    let _ = q.admits_version("2026-11-30T08:00:00.000Z", &all);
}

/// `misp_event`: importing a MISP event ([`crate::misp::event_to_stix`]) and reading a feed
/// manifest ([`crate::misp::feed_events`]) from the same JSON. Every converted object passes
/// the receiver's object checks at the message's TLP and every pattern parses (what the MISP
/// module's own tests assert).
pub fn misp_event(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let _ = crate::misp::feed_events(&v);
    let opts = crate::misp::MispOptions {
        tlp: Tlp::Clear,
        cluster: Some("org-a/ops".into()),
        sharing_groups: [(
            "5e7b0c1a-2b3c-4d5e-8f9a-5600000000aa".to_string(),
            "org-a/ops".to_string(),
        )]
        .into(),
    };
    let Ok(c) = crate::misp::event_to_stix(&v, &opts) else {
        return;
    };
    for o in &c.objects {
        if let Err(e) = stix::check_object(o, c.tlp) {
            panic!("a converted object is refused: {e}\n{o}");
        }
        if let Some(p) = o.get("pattern").and_then(Value::as_str)
            && let Err(e) = pattern::parse(p)
        {
            panic!("a converted pattern does not parse: {e}\n{p}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Target = fn(&[u8]);

    const TARGETS: [(&str, Target); 10] = [
        ("envelope_open", envelope_open),
        ("content_validate", content_validate),
        ("cluster_log", cluster_log),
        ("case_bundle", case_bundle),
        ("offline_bundle", offline_bundle),
        ("config_file", config_file),
        ("stix_bundle", stix_bundle),
        ("stix_pattern", stix_pattern),
        ("taxii_query", taxii_query),
        ("misp_event", misp_event),
    ];

    fn corpus_dir(target: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target)
    }

    /// Every committed corpus file, past crash inputs included, goes through its target
    /// without a panic.
    #[test]
    fn the_committed_corpus_replays_without_a_panic() {
        let mut total = 0;
        for (name, target) in TARGETS {
            let Ok(dir) = std::fs::read_dir(corpus_dir(name)) else {
                continue;
            };
            let started = std::time::Instant::now();
            let mut files = 0;
            for entry in dir {
                let path = entry.expect("corpus entry").path();
                if !path.is_file() {
                    continue;
                }
                let data = std::fs::read(&path).expect("corpus file");
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "{name}: {} panics", path.display());
                files += 1;
            }
            eprintln!("{name}: {files} files in {:?}", started.elapsed());
            total += files;
        }
        eprintln!("replayed {total} corpus files");
    }

    #[test]
    fn empty_and_tiny_inputs_do_not_panic() {
        for (_, target) in TARGETS {
            for data in [&b""[..], b"\0", b"\x01", b"\x02\x00\x00", b"{}", b"[]"] {
                target(data);
            }
        }
    }

    #[test]
    fn the_fuzz_key_is_the_same_in_every_run() {
        let k = fuzz_key();
        assert_eq!(k.key_id(), "fuzz-org/6da41743d4b7e270");
        assert_eq!(
            hex::encode(&k.public_key()[..crate::signing::ED25519_PUBLIC_LEN]),
            "2152f8d19b791d24453242e15f2eab6cb7cffa7b6a5ed30097960e069881db12"
        );
    }

    // -------------------------------------------------------------------------------------
    // Seed corpus: `cargo test -p bluewire-node --lib fuzzing::tests::write_seed_corpus --
    // --ignored` writes small, valid inputs into fuzz/corpus/<target>/seed-*.
    // -------------------------------------------------------------------------------------

    use bluewire_proto::v1::{FreeText, Kind, Level, Marking, content::Body};
    use serde_json::json;

    fn seed(target: &str, name: &str, bytes: &[u8]) {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed");
    }

    fn with_mode(mode: u8, rest: &[u8]) -> Vec<u8> {
        let mut v = vec![mode];
        v.extend_from_slice(rest);
        v
    }

    const STIX_T: &str = "2026-11-30T08:00:00.000Z";
    const STIX_U: &str = "0c4d5e6f-1a2b-4c3d-8e9f-000000000001";

    fn stix_bundle_json() -> String {
        json!({"type": "bundle", "id": "bundle--0c4d5e6f-1a2b-4c3d-8e9f-0000000000aa", "objects": [
            {"type": "indicator", "spec_version": "2.1", "id": format!("indicator--{STIX_U}"),
             "created": STIX_T, "modified": STIX_T, "name": "C2", "description": "d",
             "pattern": "[ipv4-addr:value = '198.51.100.7']", "pattern_type": "stix",
             "valid_from": STIX_T},
            {"type": "ipv4-addr", "id": format!("ipv4-addr--{STIX_U}"), "value": "198.51.100.7"},
        ]})
        .to_string()
    }

    fn stix_bundle_marked() -> String {
        json!({"type": "bundle", "id": "bundle--0c4d5e6f-1a2b-4c3d-8e9f-0000000000ab", "objects": [
            {"type": "malware", "spec_version": "2.1", "id": format!("malware--{STIX_U}"),
             "created": STIX_T, "modified": STIX_T, "name": "LockBit", "is_family": true,
             "object_marking_refs": [stix::marking_id(Tlp::Green).expect("green")]},
            {"type": "relationship", "spec_version": "2.1",
             "id": "relationship--0c4d5e6f-1a2b-4c3d-8e9f-000000000002",
             "created": STIX_T, "modified": STIX_T, "relationship_type": "indicates",
             "source_ref": format!("indicator--{STIX_U}"), "target_ref": format!("malware--{STIX_U}")},
        ]})
        .to_string()
    }

    fn content(org: &str, kind: Kind, body: Body) -> Content {
        Content {
            id: "01890a5d-ac96-774b-bcce-b302099a8057".into(),
            origin_org: org.into(),
            author: format!("{org}/alice"),
            created_at_ms: NOW_MS - 60_000,
            kind: kind as i32,
            level: Level::Technical as i32,
            marking: Some(Marking {
                tlp: Tlp::Amber as i32,
                ..Default::default()
            }),
            body: Some(body),
            ..Default::default()
        }
    }

    fn contents(org: &str) -> Vec<(&'static str, Content)> {
        let free = content(
            org,
            Kind::FreeText,
            Body::FreeText(FreeText {
                title: "t".into(),
                body: "b".into(),
            }),
        );
        let stix_c = content(
            org,
            Kind::StixBundle,
            Body::Stix(pb::StixBundle {
                json: stix::normalise(&stix_bundle_json(), Tlp::Amber, org).expect("normalise"),
            }),
        );
        let incident = content(
            org,
            Kind::IncidentReport,
            Body::Incident(pb::IncidentReport {
                title: "ransomware at a hospital".into(),
                ..Default::default()
            }),
        );
        let marking = content(
            org,
            Kind::MarkingChange,
            Body::MarkingChange(pb::MarkingChange {
                target_id: "01890a5d-ac96-774b-bcce-b302099a8058".into(),
                marking: Some(Marking {
                    tlp: Tlp::Green as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        );
        let retraction = content(
            org,
            Kind::Retraction,
            Body::Retraction(pb::Retraction {
                target_id: "01890a5d-ac96-774b-bcce-b302099a8058".into(),
                ..Default::default()
            }),
        );
        let case_open = Content {
            level: Level::Operational as i32,
            cluster: "org-a/ops".into(),
            ..content(
                org,
                Kind::CaseOpen,
                Body::CaseOpen(pb::CaseOpen {
                    title: "t".into(),
                    ..Default::default()
                }),
            )
        };
        let red = Content {
            marking: Some(Marking {
                tlp: Tlp::Red as i32,
                ..Default::default()
            }),
            recipients: vec!["org-b".into()],
            ..free.clone()
        };
        vec![
            ("free-text", free),
            ("stix", stix_c),
            ("incident", incident),
            ("marking-change", marking),
            ("retraction", retraction),
            ("case-open", case_open),
            ("red", red),
        ]
    }

    fn op(actor: &str, n: u32, body: Op) -> Vec<u8> {
        ClusterOp {
            cluster_id: String::new(),
            base_hash: String::new(),
            op_id: format!("op-{n}"),
            actor_org: actor.into(),
            at_ms: 10 + i64::from(n),
            op: Some(body),
        }
        .encode_to_vec()
    }

    fn invite(org: &str, role: pb::ClusterRole) -> Op {
        Op::Invite(pb::InviteMember {
            org: org.into(),
            role: role as i32,
            node_cert: vec![],
        })
    }

    fn accept() -> Op {
        Op::Accept(pb::AcceptInvitation { node_cert: vec![] })
    }

    fn set_role(org: &str, role: pb::ClusterRole) -> Op {
        Op::SetRole(pb::SetMemberRole {
            org: org.into(),
            role: role as i32,
        })
    }

    #[test]
    #[ignore = "writes the seed corpus into fuzz/corpus"]
    fn write_seed_corpus() {
        use pb::ClusterRole as R;
        let key = fuzz_key();
        // envelope_open and content_validate.
        for (name, c) in contents(FUZZ_ORG) {
            assert_eq!(envelope::validate(&c), Ok(()), "{name}");
            let bytes = c.encode_to_vec();
            seed("content_validate", name, &bytes);
            seed(
                "envelope_open",
                &format!("sealed-{name}"),
                &with_mode(0, &bytes),
            );
        }
        let sealed = envelope::seal(key, &contents(FUZZ_ORG)[0].1);
        seed(
            "envelope_open",
            "envelope",
            &with_mode(2, &sealed.encode_to_vec()),
        );
        let attestation = pb::ForwardAttestation {
            message_id: contents(FUZZ_ORG)[0].1.id.clone(),
            content_hash: envelope::content_hash(&sealed.content),
            forwarder_org: FUZZ_ORG.into(),
            to_cluster: "org-a/ops".into(),
            cluster_index: 3,
            at_ms: NOW_MS,
        };
        let forwarded = envelope::attest(key, &sealed, &attestation, vec![]);
        let lookup = |_: &str| Some((FUZZ_ORG.to_string(), key.public_key()));
        let opened = envelope::open(&forwarded, lookup, NOW_MS).expect("opens");
        envelope::open_forwarding(&forwarded, &opened.content, lookup).expect("forwarding");
        seed(
            "envelope_open",
            "forwarded",
            &with_mode(1, &forwarded.encode_to_vec()),
        );
        seed(
            "envelope_open",
            "forwarded-raw",
            &with_mode(3, &forwarded.encode_to_vec()),
        );
        // A batch signed at once: each envelope as it is, and one re-signed over its proof.
        let batch = envelope::seal_batch(
            key,
            contents(FUZZ_ORG)
                .iter()
                .take(3)
                .map(|(_, c)| c.encode_to_vec())
                .collect(),
        );
        for (i, env) in batch.iter().enumerate() {
            envelope::open(env, lookup, NOW_MS).expect("a batch envelope opens");
            seed(
                "envelope_open",
                &format!("batch-{i}"),
                &with_mode(2, &env.encode_to_vec()),
            );
        }
        seed(
            "envelope_open",
            "batch-resigned",
            &with_mode(1, &batch[2].encode_to_vec()),
        );

        // cluster_log: signed ops, and the entries such a run sequences.
        let story = [
            op("org-a", 1, invite("org-b", R::Member)),
            op("org-b", 2, accept()),
            op("org-a", 3, set_role("org-b", R::Admin)),
            op("org-b", 4, invite("org-c", R::Observer)),
            op("org-c", 5, accept()),
            op(
                "org-a",
                6,
                Op::Transfer(pb::TransferConvener { to: "org-b".into() }),
            ),
            op("org-a", 7, Op::Leave(pb::LeaveCluster {})),
            op(
                "org-b",
                8,
                Op::Remove(pb::RemoveMember {
                    org: "org-c".into(),
                    reason: "done".into(),
                }),
            ),
            // The convener's keys are rotated; it sequences with the new ones from then on.
            op("org-b", 9, Op::Rekey(pb::RekeyMember { node_cert: vec![] })),
            op("org-b", 10, invite("org-c", R::Member)),
        ];
        seed("cluster_log", "story", &with_mode(2, &join_records(&story)));
        let decline = [
            op("org-a", 1, invite("org-c", R::Admin)),
            op("org-c", 2, Op::Decline(pb::DeclineInvitation {})),
            op("org-a", 3, invite("org-c", R::Member)),
        ];
        seed(
            "cluster_log",
            "decline",
            &with_mode(2, &join_records(&decline)),
        );
        // The same story as a raw log (its signatures verify only in the process that
        // wrote it; the structure is what the fuzzer starts from).
        let fx = fixture();
        let mut state = fx.cluster.clone();
        let mut entries = vec![fx.genesis.clone()];
        for (i, r) in story.iter().enumerate() {
            let mut o = ClusterOp::decode(r.as_slice()).expect("op");
            o.cluster_id = state.id.clone();
            o.base_hash = state.head_hash.clone();
            match &mut o.op {
                Some(Op::Invite(inv)) => inv.node_cert = fx.org(&inv.org).expect("org").2.clone(),
                Some(Op::Accept(a)) => a.node_cert = fx.org(&o.actor_org).expect("org").2.clone(),
                Some(Op::Rekey(k)) => {
                    k.node_cert = fx
                        .rotated
                        .iter()
                        .find(|r| r.0 == o.actor_org)
                        .expect("org")
                        .2
                        .clone()
                }
                _ => {}
            }
            let (_, entry) = super::sign_and_sequence(fx, &state, &o, 20);
            state
                .apply(&entry, &fx.root)
                .unwrap_or_else(|e| panic!("op {i}: {e}"));
            entries.push(entry.encode_to_vec());
        }
        seed(
            "cluster_log",
            "raw-log",
            &with_mode(0, &join_records(&entries[..3])),
        );
        seed(
            "cluster_log",
            "raw-after-genesis",
            &with_mode(1, &join_records(&entries[1..3])),
        );

        // case_bundle: a case opened by org-a and a situation report by org-b.
        let open = Content {
            id: "01890a5d-ac96-774b-bcce-b302099a8001".into(),
            ..contents("org-a")[5].1.clone()
        };
        let report = Content {
            id: "01890a5d-ac96-774b-bcce-b302099a8002".into(),
            level: Level::Operational as i32,
            cluster: "org-a/ops".into(),
            ..content(
                "org-b",
                Kind::SituationReport,
                Body::SituationReport(pb::SituationReport {
                    link: Some(pb::CaseLink {
                        case: Some(pb::MessageRef {
                            origin: "org-a".into(),
                            id: open.id.clone(),
                        }),
                        previous: None,
                    }),
                    number: 1,
                    impact: "i".into(),
                    ..Default::default()
                }),
            )
        };
        let unsigned = |c: &Content| Envelope {
            content: c.encode_to_vec().into(),
            ..Default::default()
        };
        let bundle = pb::CaseBundle {
            format: crate::case::bundle::FORMAT.into(),
            case: Some(pb::MessageRef {
                origin: "org-a".into(),
                id: open.id.clone(),
            }),
            exported_by: "org-b".into(),
            exported_at_ms: NOW_MS,
            exercise: false,
            envelopes: vec![unsigned(&open), unsigned(&report)],
            certificates: vec![],
        };
        let input = with_mode(1, &bundle.encode_to_vec());
        let (_, checked) = case_bundle_checked(&input).expect("decodes");
        assert_eq!(checked.problems, Vec::<String>::new());
        assert_eq!(checked.verified, 2);
        seed("case_bundle", "open-and-report", &input);
        let one = pb::CaseBundle {
            envelopes: vec![unsigned(&open)],
            ..bundle.clone()
        };
        seed("case_bundle", "open", &with_mode(1, &one.encode_to_vec()));

        // offline_bundle: org-a's bundle for org-b with two messages, as a body to pack
        // (signed; signed and encrypted) and as the files themselves.
        let body = pb::BundleBody {
            id: "01a2380b-c495-7242-9335-ecff054f3474".into(),
            from_org: "org-a".into(),
            for_org: "org-b".into(),
            created_at_ms: NOW_MS,
            envelopes: vec![unsigned(&open), unsigned(&report)],
            ..Default::default()
        };
        for mode in [1u8, 3] {
            let input = with_mode(mode, &body.encode_to_vec());
            offline_bundle(&input);
            seed("offline_bundle", &format!("body-{mode}"), &input);
        }
        let fx = fixture();
        let file = crate::offline::pack(&body, &fx.orgs[0].1, &fx.orgs[0].2, None).expect("pack");
        seed("offline_bundle", "file-signed", &with_mode(0, &file));

        // config_file.
        let peers = [crate::config::PeerConfig {
            org: "cert-eu".into(),
            endpoint: "https://cert-eu.example:7444".into(),
        }];
        seed(
            "config_file",
            "template",
            crate::config::template("org-a", "127.0.0.1:7443", &[]).as_bytes(),
        );
        seed(
            "config_file",
            "template-peers",
            crate::config::template("csirt-be", "[::1]:7443", &peers).as_bytes(),
        );
        seed(
            "config_file",
            "minimal",
            b"org = \"org-a\"\nlisten = \"127.0.0.1:7443\"\ndata_dir = \"data\"\n[tls]\nca = \"ca.crt\"\ncert = \"n.crt\"\nkey = \"n.key\"\nsigning_key = \"s.key\"\n",
        );

        // stix_bundle.
        seed(
            "stix_bundle",
            "amber",
            &with_mode(2, stix_bundle_json().as_bytes()),
        );
        seed(
            "stix_bundle",
            "green-marked",
            &with_mode(0x81, stix_bundle_marked().as_bytes()),
        );
        let normalised = stix::normalise(&stix_bundle_json(), Tlp::Red, "csirt-fr").expect("n");
        seed(
            "stix_bundle",
            "red-normalised",
            &with_mode(4, normalised.as_bytes()),
        );

        // stix_pattern.
        for (i, p) in [
            "[ipv4-addr:value = '198.51.100.7']",
            "[file:hashes.'SHA-256' = 'aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f' AND file:mime_type = 'application/x-pdf']",
            "([file:hashes.MD5 = '79054025255fb1a26e4bc422aef54eb4'] FOLLOWEDBY [windows-registry-key:key = 'HKEY_LOCAL_MACHINE\\\\foo\\\\bar']) WITHIN 300 SECONDS",
            "[file:extensions.'windows-pebinary-ext'.sections[*].entropy > 7.0]",
            "[file:mime_type = 'image/bmp' AND file:magic_number_hex = h'ffd8']",
            "[network-traffic:dst_ref.type = 'domain-name' AND network-traffic:dst_ref.value = 'example.com'] REPEATS 5 TIMES WITHIN 1800 SECONDS",
            "[(file:name = 'pdf.exe' OR file:size = '371712') AND file:created = t'2014-01-13T07:03:17Z']",
            "[network-traffic:src_port = 37020 AND user-account:user_id = 'root'] START t'2016-06-01T01:30:00.123Z' STOP t'2016-06-01T02:20:00.123Z' OR [ipv4-addr:value = '192.168.122.83']",
            "[NOT EXISTS file:hashes.MD5 AND file:name = 'setup.exe'] /* c */ // d",
            "[file:name NOT = 'good.exe' AND file:size NOT IN (0, 1) AND file:name NOT LIKE '%.tmp']",
            "[ipv4-addr:value NOT ISSUBSET '10.0.0.0/8' OR ipv4-addr:value ISSUPERSET '198.51.100.0/24'] AND [artifact:payload_bin = b'aGVsbG8=' AND x-a:b = -1.5 AND x-a:c = true]",
        ]
        .iter()
        .enumerate()
        {
            assert!(pattern::parse(p).is_ok(), "{p}");
            seed("stix_pattern", &i.to_string(), p.as_bytes());
        }

        // taxii_query.
        for (i, q) in [
            "added_after=2026-01-31T09:30:00.000Z&limit=10&match[type]=indicator",
            "match%5Bid%5D=indicator--0c4d5e6f-1a2b-4c3d-8e9f-000000000001,malware--x&next=12-3",
            "match[version]=first&match[spec_version]=2.1",
            "match[version]=2026-11-30T08:00:00.000Z,2026-12-01T00:00:00Z&limit=5000",
            "match[version]=all&match[type]=indicator,+malware",
        ]
        .iter()
        .enumerate()
        {
            assert!(
                query::parse(Some(q), query::OBJECT_PARAMS, 100, 1000).is_ok(),
                "{q}"
            );
            seed("taxii_query", &i.to_string(), q.as_bytes());
        }

        // misp_event.
        let t = 1_796_025_600_i64;
        let uuid = |n: usize| format!("5e7b0c1a-2b3c-4d5e-8f9a-{n:012}");
        let attr = |n: usize, ty: &str, value: &str, to_ids: bool| {
            json!({"uuid": uuid(n), "type": ty, "value": value, "to_ids": to_ids,
                   "category": "Network activity", "timestamp": (t + n as i64).to_string(),
                   "distribution": "5", "comment": "",
                   "Tag": if n == 3 { json!([{"name": "tlp:amber"}]) } else { json!([]) }})
        };
        let event = json!({"Event": {
            "uuid": "5e7b0c1a-2b3c-4d5e-8f9a-0b1c2d3e4f50", "info": "LockBit affiliate",
            "date": "2026-11-30", "timestamp": t.to_string(), "published": true,
            "distribution": "3", "sharing_group_id": "0", "threat_level_id": "1",
            "Orgc": {"name": "CIRCL", "uuid": "5e7b0c1a-2b3c-4d5e-8f9a-0000000000ff"},
            "Tag": [{"name": "tlp:green"}, {"name": "rsit:malicious-code=\"ransomware\""}],
            "Attribute": [
                attr(0, "ip-dst", "198.51.100.7", true),
                attr(1, "domain", "evil.example", false),
                attr(2, "md5", "c3fcd3d76192e4007dfb496cca67e13b", true),
                attr(3, "url", "http://evil.example/a", true),
                attr(4, "vulnerability", "CVE-2026-1234", false),
                attr(5, "ip-dst|port", "198.51.100.8|443", true),
                attr(6, "email-src", "ceo@evil.example", false),
            ],
            "Object": [{
                "uuid": uuid(1000), "name": "file", "meta-category": "file",
                "timestamp": (t + 100).to_string(), "distribution": "5",
                "Attribute": [
                    {"uuid": uuid(2000), "object_relation": "filename", "type": "filename",
                     "value": "dropper.exe", "to_ids": false, "timestamp": t.to_string()},
                    {"uuid": uuid(2001), "object_relation": "sha256", "type": "sha256",
                     "value": "f7846f55cf23e14eebeab5b4e1550cad5b509e3348fbc4efa3a1413d393cb650",
                     "to_ids": true, "timestamp": t.to_string()},
                ],
            }],
            "Galaxy": [{
                "type": "threat-actor", "name": "Threat Actor", "uuid": uuid(4000),
                "GalaxyCluster": [{"type": "threat-actor", "value": "Wizard Spider",
                    "uuid": uuid(5002), "description": "d",
                    "tag_name": "misp-galaxy:threat-actor=\"Wizard Spider\"",
                    "meta": {"synonyms": ["UNC1878"]}}],
            }],
        }});
        let c = crate::misp::event_to_stix(&event, &crate::misp::MispOptions::default())
            .expect("converts");
        assert!(c.objects.len() > 5, "{:?}", c.skipped);
        seed("misp_event", "event", event.to_string().as_bytes());
        let mut sg = event.clone();
        sg["Event"]["distribution"] = json!("4");
        sg["Event"]["SharingGroup"] =
            json!({"uuid": "5e7b0c1a-2b3c-4d5e-8f9a-5600000000aa", "name": "ops"});
        let opts = crate::misp::MispOptions {
            cluster: Some("org-a/ops".into()),
            sharing_groups: [(
                "5e7b0c1a-2b3c-4d5e-8f9a-5600000000aa".to_string(),
                "org-a/ops".to_string(),
            )]
            .into(),
            ..Default::default()
        };
        crate::misp::event_to_stix(&sg, &opts).expect("sharing group converts");
        seed("misp_event", "sharing-group", sg.to_string().as_bytes());
        seed(
            "misp_event",
            "manifest",
            json!({"5e7b0c1a-2b3c-4d5e-8f9a-0b1c2d3e4f50": {"timestamp": "1796025600", "info": "x"}})
                .to_string()
                .as_bytes(),
        );
    }
}
