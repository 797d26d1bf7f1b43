//! Outbound: everything that sends this node's messages — publish, re-share,
//! the backfill page another node asks for, and the re-check the delivery
//! worker makes at send time. The decisions are pure functions of (message,
//! what this node knows, time): [`plan`] (the egress decision for every
//! candidate), [`recheck`] and [`backfill_allows`]; the async functions around
//! them draft, sign, store (message, outbox and audit in one transaction) and
//! wake the delivery workers. Egress routing is decided here and nowhere
//! else. Never returns `tonic::Status`; never sends anything itself (delivery
//! does).

use crate::metrics::Stage;
use bluewire_proto::v1 as pb;
use prost::Message;
use thiserror::Error;
use tracing::{Instrument, debug};

use crate::audit::{AuditEvent, AuditKind};
use crate::cluster::ClusterState;
use crate::envelope::{self, Rejected, level_label, tlp_label};
use crate::feed::{self, LookupError};
use crate::known::{self, Known};
use crate::markings::{self, Effect};
use crate::policy::Direction;
use crate::routing::{Decision, Router};
use crate::state::ClusterRefError;
use crate::state::NodeState;
use crate::store::{InsertOutcome, NewMessage, StoreError};

pub use crate::store::RESHARE_PREFIX;

/// Why a publish or re-share was refused before anything was stored.
#[derive(Debug, Error)]
pub enum OutboundError {
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The draft is not a valid message (which field, and why).
    #[error("{0}")]
    Invalid(Rejected),
    /// A rule about the origin that refuses the message as a whole.
    #[error("refused before signing ({rule}): {reason}")]
    Refused { rule: &'static str, reason: String },
    /// A control message its author has no authority for.
    #[error("{0}")]
    Authority(Rejected),
    #[error(transparent)]
    Cluster(#[from] ClusterRefError),
    #[error(transparent)]
    Case(#[from] crate::workflow::CaseError),
    #[error("retracted by its origin: {0}")]
    Retracted(String),
    #[error("cannot re-share: {0}")]
    Reshare(String),
    #[error("{id} is already in {cluster}")]
    SameCluster { id: String, cluster: String },
    #[error("{org} is not a publishing member of {cluster}")]
    NotPublisher { org: String, cluster: String },
    #[error("{0}")]
    Unreadable(String),
    #[error("not signed, nothing stored: {0}")]
    Sealer(#[from] crate::sealer::SealerStopped),
    #[error("not stored, {what} again: {source}")]
    Store {
        what: &'static str,
        source: StoreError,
    },
}

/// Who a message may go to at all: the cluster's current members, or the
/// configured peers for a message without a cluster; never this node. Pure.
pub fn candidates(cluster: Option<&ClusterState>, me: &str, peers: &[String]) -> Vec<String> {
    match cluster {
        Some(c) => c.current_members(),
        None => peers.to_vec(),
    }
    .into_iter()
    .filter(|o| o != me)
    .collect()
}

/// The egress decision for every candidate: who it is queued for, who routing refused. Pure.
pub fn plan(
    content: &pb::Content,
    candidates: &[String],
    known: &impl Known,
    router: &Router,
    now_ms: i64,
) -> (Vec<String>, Vec<Decision>) {
    let (allowed, refused): (Vec<_>, Vec<_>) = candidates
        .iter()
        .map(|org| known::route(known, router, content, org, Direction::Egress, now_ms))
        .partition(|d| d.allowed);
    (allowed.into_iter().map(|d| d.org).collect(), refused)
}

/// Why a queued envelope is no longer sent: the rule (a routing rule, or
/// `retracted`, `reshare`, `content`, `store`) and the reason.
pub type Withheld = (&'static str, String);

/// May this queued envelope still go to `peer` now? Membership, profiles,
/// markings and policy may have changed since it was queued. Only this node's
/// own messages and re-shares are re-decided. Pure.
pub fn recheck(
    env: &pb::Envelope,
    peer: &str,
    known: &impl Known,
    router: &Router,
    now_ms: i64,
) -> Result<(), Withheld> {
    let Some(view) = egress_view(env, known)? else {
        return Ok(());
    };
    let d = known::route(known, router, &view, peer, Direction::Egress, now_ms);
    if d.allowed {
        Ok(())
    } else {
        Err((d.rule, d.reason))
    }
}

/// How routing sees this node's own queued envelope now: the content (a re-share: as the
/// forwarder into the target cluster) under the marking in force; refused when retracted,
/// or when a re-share is no longer allowed at all under that marking. None: not this node's
/// own message or re-share (not re-decided here). Pure.
pub fn egress_view(
    env: &pb::Envelope,
    known: &impl Known,
) -> Result<Option<pb::Content>, Withheld> {
    let content = pb::Content::decode(&env.content[..])
        .map_err(|e| ("content", format!("stored content undecodable: {e}")))?;
    if env.forwarding.is_none() && content.origin_org != known.me() {
        return Ok(None);
    }
    // What control messages made of it, whether or not the original is held here (the
    // content is the envelope's own: reading the stored copy back cost a store read and two
    // decodes per peer, issue #12).
    let standing = known.standing(&content).map_err(|e| ("store", e))?;
    if let Some(why) = &standing.retracted {
        return Err(("retracted", format!("retracted by its origin: {why}")));
    }
    // A marking raised since queuing applies to what is still queued (`standing` falls back
    // to the signed marking).
    let marking = standing.marking;
    if let Some(f) = &env.forwarding {
        // This node's re-share: allowed at all under the marking in force, and decided
        // as the forwarder into the target cluster.
        envelope::reshare_allowed(&content, &marking.clone().unwrap_or_default())
            .map_err(|why| ("reshare", why))?;
        let a = pb::ForwardAttestation::decode(f.attestation.as_slice())
            .map_err(|e| ("content", format!("stored attestation undecodable: {e}")))?;
        let mut view = envelope::forwarded_view(&content, &a);
        view.marking = marking;
        Ok(Some(view))
    } else {
        Ok(Some(pb::Content { marking, ..content }))
    }
}

/// Does a backfill page for `peer` include this stored message? Only this node's own,
/// not retracted, and what egress routing allows the peer now under the marking in
/// force. Pure.
pub fn backfill_allows(
    content: &pb::Content,
    standing: &markings::Standing,
    peer: &str,
    known: &impl Known,
    router: &Router,
    now_ms: i64,
) -> bool {
    if content.origin_org != known.me() || standing.retracted.is_some() {
        return false;
    }
    let view = pb::Content {
        marking: standing.marking.clone().or_else(|| content.marking.clone()),
        ..content.clone()
    };
    known::route(known, router, &view, peer, Direction::Egress, now_ms).allowed
}

/// The content a publish request would produce (not signed, not stored): the
/// author and origin from the caller's verified identity, a control message's
/// target resolved to (origin, id), validated as every receiver will.
pub fn draft(
    st: &NodeState,
    user: &str,
    r: pb::PublishRequest,
) -> Result<pb::Content, OutboundError> {
    use pb::publish_request::Body as In;
    let body = match r.body {
        None => None,
        Some(In::FreeText(t)) => Some(pb::content::Body::FreeText(t)),
        Some(In::Incident(i)) => Some(pb::content::Body::Incident(i)),
        // A control message names its target by (origin, id): resolve what the user gave.
        Some(In::MarkingChange(mut m)) => {
            let t = feed::find(&st.store, &m.target_origin, &m.target_id)?;
            (m.target_origin, m.target_id) = (t.origin, t.id);
            Some(pb::content::Body::MarkingChange(m))
        }
        Some(In::Retraction(mut x)) => {
            // Only the origin retracts: when a bare id is ambiguous, it means this
            // organisation's message, so a squatter's copy never gets in the way.
            let t = match feed::find(&st.store, &x.target_origin, &x.target_id) {
                Err(LookupError::Ambiguous { .. }) => {
                    feed::find(&st.store, st.org(), &x.target_id)?
                }
                found => found?,
            };
            (x.target_origin, x.target_id) = (t.origin, t.id);
            Some(pb::content::Body::Retraction(x))
        }
        Some(In::CaseOpen(b)) => Some(pb::content::Body::CaseOpen(b)),
        Some(In::Escalation(b)) => Some(pb::content::Body::Escalation(b)),
        Some(In::Advice(b)) => Some(pb::content::Body::Advice(b)),
        Some(In::Assessment(b)) => Some(pb::content::Body::Assessment(b)),
        Some(In::CrisisStatus(b)) => Some(pb::content::Body::CrisisStatus(b)),
        Some(In::SituationReport(b)) => Some(pb::content::Body::SituationReport(b)),
        Some(In::Communication(b)) => Some(pb::content::Body::Communication(b)),
        Some(In::Reserve(b)) => Some(pb::content::Body::Reserve(b)),
        Some(In::Notice(b)) => Some(pb::content::Body::Notice(b)),
        Some(In::Lessons(b)) => Some(pb::content::Body::Lessons(b)),
        Some(In::Reopen(b)) => Some(pb::content::Body::Reopen(b)),
        // The envelope's marking is authoritative: objects without one are given it here,
        // before signing, so every receiver holds the same bytes.
        Some(In::Stix(mut b)) => {
            let tlp = r
                .marking
                .as_ref()
                .and_then(|m| pb::Tlp::try_from(m.tlp).ok())
                .unwrap_or_default();
            if tlp != pb::Tlp::Unspecified {
                b.json = crate::stix::normalise(&b.json, tlp, st.org()).map_err(|e| {
                    OutboundError::Invalid(Rejected::Invalid(format!("STIX bundle refused: {e}")))
                })?;
            }
            Some(pb::content::Body::Stix(b))
        }
    };
    let cluster = if r.cluster.is_empty() {
        None
    } else {
        Some(st.resolve_cluster(&r.cluster)?)
    };
    let mut content = pb::Content {
        id: envelope::new_id(),
        origin_org: st.org().to_string(),
        author: format!("{}/{}", st.org(), user),
        created_at_ms: crate::clock::now_ms(),
        expires_at_ms: r.expires_at_ms,
        kind: r.kind,
        level: r.level,
        marking: r.marking,
        recipients: r.recipients,
        cluster: cluster.as_ref().map(|c| c.id.clone()).unwrap_or_default(),
        cluster_index: cluster.as_ref().map(|c| c.head_index).unwrap_or(0),
        scope_sectors: r.scope_sectors,
        scope_countries: r.scope_countries,
        no_reshare: r.no_reshare,
        body,
    };
    let now = content.created_at_ms;
    crate::workflow::aim(st, &mut content, now)?;
    envelope::validate(&content).map_err(OutboundError::Invalid)?;
    Ok(content)
}

/// Encrypt `content`'s (validated) body end to end to its named recipients and this
/// organisation, under every encryption key their certificates certify as this node knows
/// them (the cluster's log, or certificates it verified); then validate the result as
/// receivers will.
fn seal_for_recipients(
    st: &NodeState,
    content: &mut pb::Content,
    cluster: Option<&ClusterState>,
) -> Result<(), OutboundError> {
    let refused = |reason: String| OutboundError::Refused {
        rule: "e2e",
        reason,
    };
    let kind = pb::Kind::try_from(content.kind).unwrap_or(pb::Kind::Unspecified);
    if !matches!(kind, pb::Kind::FreeText | pb::Kind::IncidentReport) {
        return Err(refused(format!(
            "only free text and incident reports are encrypted end to end; every node on the way reads a {} message",
            envelope::kind_label(content.kind)
        )));
    }
    if content.recipients.is_empty() {
        return Err(refused(
            "encrypting needs named recipients (--to ORG): the body is encrypted to them".into(),
        ));
    }
    let mut orgs: Vec<String> = content.recipients.clone();
    orgs.push(st.org().to_string());
    orgs.sort();
    orgs.dedup();
    let mut keys = Vec::new();
    for org in &orgs {
        // The cluster's log holds the certificate an organisation joined with; the directory
        // may hold a later one (new keys): encrypt to every key either certifies.
        let profiles: Vec<_> = [
            Known::profile(st, org, cluster),
            Known::profile(st, org, None),
        ]
        .into_iter()
        .flatten()
        .collect();
        if profiles.is_empty() {
            return Err(refused(format!(
                "this node has never seen {org}'s certificate, so it has no key of {org}'s to encrypt to: publish once the link to {org} is up, or in a cluster {org} is a member of"
            )));
        }
        let certified = encryption_keys(org, &profiles);
        if certified.is_empty() {
            return Err(refused(format!(
                "{org}'s certificate certifies no encryption key (issued before end-to-end encryption): it receives encrypted messages once it is issued again"
            )));
        }
        // Never to a key whose certificate is revoked or retired (`pki rotate`).
        let certified: Vec<_> = certified
            .into_iter()
            .filter(|(id, _)| st.key_distrusted_since(id).is_none())
            .collect();
        if certified.is_empty() {
            return Err(refused(format!(
                "every encryption key this node knows of {org}'s is certified by a revoked or retired certificate: publish once this node has seen {org}'s current certificate (its link comes up)"
            )));
        }
        keys.extend(certified);
    }
    let refs: Vec<(&str, &[u8])> = keys
        .iter()
        .map(|(id, pk)| (id.as_str(), pk.as_slice()))
        .collect();
    crate::e2e::seal_body(content, &refs).map_err(|e| refused(e.to_string()))?;
    envelope::validate(content).map_err(OutboundError::Invalid)
}

/// Every encryption key of `org` that one of `profiles` (its certificates as this node
/// knows them) certifies, each once, in the order found. Pure.
pub fn encryption_keys(
    org: &str,
    profiles: &[impl std::borrow::Borrow<crate::pki::OrgProfile>],
) -> Vec<(String, Vec<u8>)> {
    let mut keys: Vec<(String, Vec<u8>)> = Vec::new();
    for k in profiles.iter().flat_map(|p| &p.borrow().encryption_keys) {
        if keys.iter().all(|(id, _)| *id != k.key_id)
            && let Ok(pk) = k.public_key(org)
        {
            keys.push((k.key_id.clone(), pk));
        }
    }
    keys
}

/// For a control message: check this organisation's authority with the same
/// rule receivers apply, and aim it at the target's audience.
fn prepare_control(st: &NodeState, content: &mut pb::Content) -> Result<(), OutboundError> {
    let Some((origin, id)) = markings::target_of(content) else {
        return Ok(());
    };
    let (target, _) = st
        .held(origin, id)
        .map_err(OutboundError::Unreadable)?
        .ok_or_else(|| LookupError::NotFound(format!("{origin}/{id}")))?;
    let index = st
        .cluster(&target.cluster)
        .map(|c| c.head_index)
        .unwrap_or(0);
    markings::aim(content, &target, index);
    markings::authority(content, Some(&target), |t| {
        known::in_audience(st, &st.router, t, st.org())
    })
    .map_err(OutboundError::Authority)?;
    Ok(())
}

fn response(
    id: String,
    seq: u64,
    queued_for: Vec<String>,
    refused: Vec<Decision>,
) -> pb::PublishResponse {
    pb::PublishResponse {
        id,
        seq,
        queued_for,
        refused: refused
            .into_iter()
            .map(|d| pb::RoutingDecision {
                org: d.org,
                allowed: false,
                rule: d.rule.to_string(),
                reason: d.reason,
            })
            .collect(),
    }
}

fn count_egress(st: &NodeState, queued: usize, refused: &[Decision]) {
    st.metrics
        .decisions("egress", "allowed", true, queued as u64);
    for d in refused {
        st.metrics.decision("egress", d.rule, false);
    }
}

/// Publish as `user`: draft, check the origin rules, decide every candidate,
/// sign, and store the message with its outbox entries and audit records in one
/// transaction before answering.
pub async fn publish(
    st: &NodeState,
    user: &str,
    r: pb::PublishRequest,
) -> Result<pb::PublishResponse, OutboundError> {
    let now = crate::clock::now_ms();
    let encrypt = r.encrypt;
    let mut content = draft(st, user, r)?;
    prepare_control(st, &mut content)?;
    // The crisis-workflow rules, as every receiver will apply them.
    known::workflow(st, &st.router, &content)
        .map_err(|w| OutboundError::Authority(Rejected::Workflow(w)))?;
    let cluster = st.cluster(&content.cluster);
    // An organisation speaks only at the levels it is certified for (receivers check it too).
    if let Some(me) = Known::profile(st, st.org(), None)
        && let Some(level) = crate::routing::pki_level(content.level)
        && !me.levels.contains(&level)
    {
        return Err(OutboundError::Refused {
            rule: "levels",
            reason: format!(
                "{} is certified for {} only, not the {} level: escalate instead (bluewire case escalate)",
                me.org,
                me.levels
                    .iter()
                    .map(|l| l.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                level.as_str()
            ),
        });
    }
    if let Some(c) = &cluster {
        st.router
            .check_origin(&content, c, now)
            .map_err(|(rule, reason)| OutboundError::Refused { rule, reason })?;
    }
    if encrypt {
        seal_for_recipients(st, &mut content, cluster.as_deref())?;
    }
    let span = tracing::info_span!("publish", msg.id = %content.id, author = %content.author);
    async move {
        let peers: Vec<String> = st.config.peers.iter().map(|p| p.org.clone()).collect();
        let candidates = candidates(cluster.as_deref(), st.org(), &peers);
        let (queued_for, refused) = plan(&content, &candidates, st, &st.router, now);
        // A workflow step that must reach an organisation is refused, not narrowed.
        for (org, why) in known::mandatory_recipients(cluster.as_deref(), &content) {
            if !queued_for.contains(&org) {
                let refusal = refused
                    .iter()
                    .find(|d| d.org == org)
                    .map(|d| format!("{} ({})", d.reason, d.rule))
                    .unwrap_or_else(|| "it is not a candidate".into());
                return Err(OutboundError::Refused {
                    rule: "mandatory-recipients",
                    reason: format!(
                        "{org} must receive this step ({why}), but routing keeps it out: {refusal}"
                    ),
                });
            }
        }
        count_egress(st, queued_for.len(), &refused);
        let sealing = std::time::Instant::now();
        // Held until this returns: the signing thread lingers only while another
        // publish is in progress.
        let (env, _in_progress) = st
            .sealer
            .seal(
                content.encode_to_vec(),
                crate::sealer::audience(&content.cluster, &queued_for),
            )
            .await?;
        st.metrics.stage(Stage::Seal, sealing.elapsed(), 1);
        let mut events = vec![AuditEvent::published(
            &content.id,
            format!(
                "{} by {} in {} at {} {}; queued for [{}]",
                envelope::kind_label(content.kind),
                content.author,
                if content.cluster.is_empty() {
                    "no cluster"
                } else {
                    &content.cluster
                },
                level_label(content.level),
                tlp_label(content.marking.as_ref().map(|m| m.tlp).unwrap_or(0)),
                queued_for.join(", ")
            ),
        )];
        for d in &refused {
            events.push(AuditEvent::rejected(
                &content.id,
                &d.org,
                d.rule,
                format!("egress: {}", d.reason),
            ));
        }
        // The audit records commit with the message: one transaction, one fsync.
        let storing = std::time::Instant::now();
        let outcome = st
            .store
            .insert(NewMessage {
                outbox: queued_for.clone(),
                audit: events,
                ..NewMessage::of_envelope(&content, env, "", crate::clock::now_ms())
            })
            .await
            .map_err(|source| OutboundError::Store {
                what: "publish",
                source,
            })?;
        st.metrics.stage(Stage::PublishCommit, storing.elapsed(), 1);
        let seq = outcome.seq();
        st.notify_peers(&queued_for);
        if let Err(e) = markings::apply(&st.store, &content, Effect::Apply).await {
            // Stored and queued: receivers apply it; only this node's own view lags.
            tracing::warn!(error = %e, "recording a control message's effect here failed");
        }
        // The audit trail records every publish; a log line each cost the origin ~1 % of its
        // CPU under load (issue #12).
        debug!(msg.seq = seq, queued = queued_for.len(), "published");
        st.metrics.inc(crate::metrics::MESSAGES_PUBLISHED, &[]);
        Ok(response(content.id, seq, queued_for, refused))
    }
    .instrument(span)
    .await
}

/// Re-share a message this node holds into another cluster as `user`: the
/// original envelope untouched plus this node's signed forwarding attestation,
/// refused when the markings in force forbid it.
pub async fn reshare(
    st: &NodeState,
    user: &str,
    reference: &str,
    to_cluster: &str,
) -> Result<pb::PublishResponse, OutboundError> {
    let now = crate::clock::now_ms();
    let (_, env, content) = feed::find_content(&st.store, reference)?;
    let standing = markings::standing(&st.store, &content);
    if let Some(why) = standing.retracted {
        return Err(OutboundError::Retracted(why));
    }
    let marking = standing.marking.unwrap_or_default();
    envelope::reshare_allowed(&content, &marking).map_err(OutboundError::Reshare)?;
    let c = st.resolve_cluster(to_cluster)?;
    if c.id == content.cluster {
        return Err(OutboundError::SameCluster {
            id: content.id,
            cluster: c.id.clone(),
        });
    }
    if !matches!(
        c.role_of(st.org()),
        Some(r) if r != pb::ClusterRole::Observer
    ) {
        return Err(OutboundError::NotPublisher {
            org: st.org().to_string(),
            cluster: c.id.clone(),
        });
    }
    let origin_cert = st
        .directory
        .cert(&content.origin_org)
        .or_else(|| (content.origin_org == st.org()).then(|| st.tls.chain[0].to_vec()))
        .unwrap_or_default();
    let a = pb::ForwardAttestation {
        message_id: content.id.clone(),
        forwarder_org: st.org().to_string(),
        to_cluster: c.id.clone(),
        cluster_index: c.head_index,
        at_ms: now,
        content_hash: envelope::content_hash(&env.content),
    };
    // Replaces any attestation the stored copy carried (a re-share of a re-share).
    let fwd = envelope::attest(&st.signer, &env, &a, origin_cert);
    let view = envelope::forwarded_view(&content, &a);
    let (queued_for, refused) = plan(
        &view,
        &candidates(Some(&c), st.org(), &[]),
        st,
        &st.router,
        now,
    );
    count_egress(st, queued_for.len(), &refused);
    let outcome = st
        .store
        .insert(NewMessage {
            id: format!("{RESHARE_PREFIX}{}:{}", content.id, c.id),
            reshare: true,
            case: String::new(),
            outbox: queued_for.clone(),
            audit: vec![
                AuditEvent::new(AuditKind::Sent)
                    .msg(&content.id)
                    .cluster(&c.id)
                    .rule("reshare")
                    .detail(format!(
                        "re-shared by {user} into {} for [{}]",
                        c.id,
                        queued_for.join(", ")
                    )),
            ],
            ..NewMessage::of(&content, fwd.encode_to_vec(), "", now)
        })
        .await
        .map_err(|source| OutboundError::Store {
            what: "re-share",
            source,
        })?;
    st.notify_peers(&queued_for);
    let seq = match outcome {
        InsertOutcome::Inserted(s) | InsertOutcome::Duplicate(s) => s,
    };
    Ok(response(content.id, seq, queued_for, refused))
}

/// One page of what this node originated after `after_seq` that `peer` may
/// have, scanning a bounded window so one call never walks the whole store.
pub fn backfill_page(
    st: &NodeState,
    peer: &str,
    after_seq: u64,
    limit: usize,
) -> Result<pb::BackfillResponse, LookupError> {
    let now = crate::clock::now_ms();
    let mut entries = Vec::new();
    let mut cursor = after_seq;
    for _ in 0..16 {
        let page = st.store.read_after(cursor, 1024)?;
        if page.is_empty() {
            break;
        }
        for m in page {
            cursor = m.seq;
            // Only this node's own messages; never its re-share copies (outbox records).
            if m.origin != st.org() || m.reshare {
                continue;
            }
            let (env, content) = feed::decode(&m)?;
            let standing = markings::standing(&st.store, &content);
            let allowed = backfill_allows(&content, &standing, peer, st, &st.router, now);
            st.metrics.decision(
                "egress",
                if allowed { "allowed" } else { "backfill" },
                allowed,
            );
            if allowed {
                entries.push(pb::BackfillEntry {
                    seq: m.seq,
                    envelope: Some(env),
                });
                if entries.len() >= limit {
                    return Ok(pb::BackfillResponse {
                        entries,
                        more: true,
                    });
                }
            }
        }
    }
    Ok(pb::BackfillResponse {
        entries,
        more: false,
    })
}

/// Every rule step for `content` towards `to` (or every candidate): egress for
/// this node's own messages and drafts, ingress for received ones.
/// One recipient's routing decision, with the blueprint functions its certificate asserts
/// (empty when this node has not seen its certificate).
#[derive(Debug)]
pub struct Explained {
    pub decision: Decision,
    pub functions: Vec<String>,
    /// Why the crisis workflow requires this organisation to receive the message, if it does.
    pub mandatory: Option<&'static str>,
    /// How a message for it would travel now (see [`path_for`]).
    pub path: String,
}

/// How `content` would travel to `org` now: "direct", "via RELAY", "via RELAY (not for
/// this message: why)" when that member may not carry it, or "unreachable"; empty for
/// this node itself or an organisation it has no link to.
pub fn path_for(st: &NodeState, content: &pb::Content, org: &str) -> String {
    let Some(peer) = st.peers.get(org) else {
        return String::new();
    };
    let stats = peer.stats();
    let label = crate::relay::path_label(stats.connected, stats.via.as_deref());
    match stats.via.as_deref().filter(|_| !stats.connected) {
        Some(relay) => {
            match crate::relay::may_carry(st, &st.router, content, relay, crate::clock::now_ms()) {
                Ok(()) => label,
                Err(why) => format!("{label} (not for this message: {})", why.reason()),
            }
        }
        None => label,
    }
}

pub fn explain(st: &NodeState, content: &pb::Content, to: &str) -> Vec<Explained> {
    let direction = if content.origin_org == st.org() {
        Direction::Egress
    } else {
        Direction::Ingress
    };
    let targets: Vec<String> = if !to.is_empty() {
        vec![to.to_string()]
    } else if direction == Direction::Ingress {
        vec![st.org().to_string()]
    } else if let Some(c) = st.cluster(&content.cluster) {
        c.known_orgs()
            .into_iter()
            .filter(|o| o != st.org())
            .collect()
    } else {
        st.config.peers.iter().map(|p| p.org.clone()).collect()
    };
    let cluster = st.cluster(&content.cluster);
    let mandatory = known::mandatory_recipients(cluster.as_deref(), content);
    targets
        .iter()
        .map(|org| Explained {
            mandatory: mandatory
                .iter()
                .find(|(o, _)| o == org)
                .map(|(_, why)| *why),
            decision: st.decide(content, org, direction),
            path: path_for(st, content, org),
            functions: st
                .directory
                .profile(org, cluster.as_deref())
                .map(|p| p.functions.clone())
                .unwrap_or_default(),
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests;
