//! Ingress: what a node does with envelopes another node delivers. The
//! decision for one envelope is [`judge`], a pure function of (envelope,
//! calling peer, what this node knows, time): verify before decoding
//! (`envelope::open`), check that the peer is the origin or a forwarder that
//! attested for itself, the re-share rule, the routing decision on this
//! node's own view (`Router::decide`, direction ingress), and the
//! control-message authority rule — every rule the origin applied, again,
//! with the same code. [`deliver`] is the service around it: rate limit,
//! store, audit, metrics, control effects, catch-up. It never trusts a field
//! the peer decided, never stores what `judge` did not accept, and never
//! returns `tonic::Status`.

use crate::metrics::Stage;
use std::borrow::Cow;
use std::sync::Arc;

use bluewire_proto::v1 as pb;
use prost::Message;
use thiserror::Error;
use tracing::{debug, warn};

use crate::audit::AuditEvent;
use crate::envelope::{self, Rejected};
use crate::known::{self, Known};
use crate::markings::{self, Effect};
use crate::pki::{OrgProfile, PeerIdentity};
use crate::policy::Direction;
use crate::routing::Router;
use crate::state::NodeState;
use crate::store::{InsertOutcome, NewMessage, Rejection, StoreError};

/// What becomes of one delivered envelope.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Store it (and, for a control message, record its effect).
    Accept {
        content: Box<pb::Content>,
        effect: Effect,
    },
    /// Not decidable yet (this node's view of `cluster` is behind the sender's): the
    /// sender keeps it and tries again.
    Later {
        id: String,
        cluster: String,
        reason: String,
    },
    /// Refused, with the rule that refused it.
    Reject { id: String, why: Rejected },
    /// Not for this node: carry it on to `to` (relay). `envelope` has this node appended
    /// to its relay path, as it is kept and handed on.
    Carry {
        id: String,
        origin: String,
        to: String,
        envelope: Box<pb::Envelope>,
        path: String,
    },
}

impl Verdict {
    /// The routing rule that decided, and whether it allowed (for metrics).
    pub fn rule(&self) -> (&'static str, bool) {
        match self {
            Verdict::Accept { .. } | Verdict::Carry { .. } => ("allowed", true),
            Verdict::Later { .. } => ("retry", false),
            Verdict::Reject { why, .. } => (why.rule(), false),
        }
    }
}

/// The message id in `env` and the cluster routing judged it in (the target cluster of a
/// re-share), for reporting and catch-up only (it may not have verified).
fn claimed_id(env: &pb::Envelope) -> (String, String) {
    let (id, cluster) = pb::Content::decode(&env.content[..])
        .map(|c| (c.id, c.cluster))
        .unwrap_or_default();
    let forwarded_to = env
        .forwarding
        .as_ref()
        .and_then(|f| pb::ForwardAttestation::decode(f.attestation.as_slice()).ok())
        .map(|a| a.to_cluster);
    (id, forwarded_to.unwrap_or(cluster))
}

/// Decide one envelope delivered by `peer`. Pure.
pub fn judge(
    env: &pb::Envelope,
    peer: &str,
    known: &impl Known,
    router: &Router,
    now_ms: i64,
) -> Verdict {
    judge_routed(env, peer, known, router, now_ms).0
}

/// [`judge`], and the routing decision's (rule, allowed) when routing was reached (what
/// the routing metrics count).
pub fn judge_routed(
    env: &pb::Envelope,
    peer: &str,
    known: &impl Known,
    router: &Router,
    now_ms: i64,
) -> (Verdict, Option<(&'static str, bool)>) {
    let mut routed = None;
    let verdict = match admit(env, peer, known, router, now_ms, &mut routed) {
        Ok(Admitted::Here(content, effect)) => Verdict::Accept { content, effect },
        Ok(Admitted::Carry { id, origin, taken }) => {
            let (relay, envelope) = *taken;
            Verdict::Carry {
                id,
                origin,
                path: relay.path(),
                to: relay.to,
                envelope: Box::new(envelope),
            }
        }
        Err(Rejected::Later(reason)) => {
            let (id, cluster) = claimed_id(env);
            Verdict::Later {
                id,
                cluster,
                reason,
            }
        }
        Err(why) => {
            if let Rejected::Unroutable { rule, .. } = &why {
                routed = Some((*rule, false));
            }
            Verdict::Reject {
                id: claimed_id(env).0,
                why,
            }
        }
    };
    (verdict, routed)
}

/// What [`admit`] let through.
enum Admitted {
    /// For this node: store it.
    Here(Box<pb::Content>, Effect),
    /// For another member, handed to this node to carry on: the instruction as checked, and
    /// the envelope with this node on its path.
    Carry {
        id: String,
        origin: String,
        taken: Box<(crate::relay::Checked, pb::Envelope)>,
    },
}

fn admit(
    env: &pb::Envelope,
    peer: &str,
    known: &impl Known,
    router: &Router,
    now_ms: i64,
    routed: &mut Option<(&'static str, bool)>,
) -> Result<Admitted, Rejected> {
    let o = envelope::open_with(env, |k| known.key(k), now_ms, known.verified_batches())?;
    if let Some(why) = known::refuse_signer(known, &env.key_id) {
        return Err(Rejected::Policy {
            rule: "revoked",
            reason: why,
        });
    }
    // A relayed envelope: the sender who signed the instruction stands where the handing
    // peer stands for a direct delivery (every rule below is judged as if it had handed
    // it over itself), and the path is checked on top.
    let relay = match &env.relay {
        None => None,
        Some(_) => {
            let r = crate::relay::check(env, peer, known.me(), |k| known.key(k))?;
            if let Some(why) = known::refuse_signer(known, &r.key_id) {
                return Err(Rejected::Policy {
                    rule: "revoked",
                    reason: why,
                });
            }
            Some(r)
        }
    };
    let carrying = relay.as_ref().is_some_and(|r| r.carry(known.me()));
    let peer = relay.as_ref().map_or(peer, |r| r.from.as_str());
    if !carrying {
        opens_here(&o.content, known)?;
    }
    let view = match &env.forwarding {
        None if o.content.origin_org != peer => {
            return Err(Rejected::NotFromOrigin {
                peer: peer.to_string(),
                origin: o.content.origin_org,
            });
        }
        None => Cow::Borrowed(&o.content),
        Some(_) => {
            let a = envelope::open_forwarding(env, &o.content, |k| known.key(k))?;
            if a.forwarder_org != peer {
                return Err(Rejected::NotForwarder {
                    peer: peer.to_string(),
                    forwarder: a.forwarder_org,
                });
            }
            // A marking raised since (as far as this node knows) counts.
            let marking = known
                .standing(&o.content)
                .map_err(Rejected::Later)?
                .marking
                .or_else(|| o.content.marking.clone())
                .unwrap_or_default();
            envelope::reshare_allowed(&o.content, &marking).map_err(|why| Rejected::Policy {
                rule: "reshare",
                reason: why,
            })?;
            Cow::Owned(envelope::forwarded_view(&o.content, &a))
        }
    };
    if let Some(r) = relay {
        // Whoever carried it (this node too, when asked to carry it on) may see it under the
        // marking in force as this node knows it, or it is encrypted end to end.
        let marking = known.standing(&o.content).map_err(Rejected::Later)?.marking;
        let carried_view = match marking {
            Some(m) => Cow::Owned(pb::Content {
                marking: Some(m),
                ..view.as_ref().clone()
            }),
            None => Cow::Borrowed(view.as_ref()),
        };
        let carriers = r
            .hops
            .iter()
            .map(String::as_str)
            .chain(carrying.then_some(known.me()));
        for hop in carriers {
            if known::org_revoked(known, hop) {
                return Err(Rejected::Policy {
                    rule: "relay",
                    reason: format!("relayed through {hop}, whose certificate is revoked"),
                });
            }
            crate::relay::may_carry(known, router, &carried_view, hop, now_ms).map_err(|why| {
                match why {
                    crate::relay::CarryRefused::Later(r) => Rejected::Later(r),
                    crate::relay::CarryRefused::No(why) => Rejected::Policy {
                        rule: "relay",
                        reason: format!("relayed through {hop}, which may not carry it: {why}"),
                    },
                }
            })?;
        }
        if carrying {
            return carry_on(env, &o.content, &view, r, known, router, now_ms, routed);
        }
    }
    let d = known::route(known, router, &view, known.me(), Direction::Ingress, now_ms);
    *routed = Some((d.rule, d.allowed));
    if d.retry {
        return Err(Rejected::Later(d.reason));
    }
    if !d.allowed {
        return Err(Rejected::Policy {
            rule: d.rule,
            reason: d.reason,
        });
    }
    let effect = control_authority(&o.content, known, router)?;
    known::workflow(known, router, &o.content).map_err(Rejected::Workflow)?;
    Ok(Admitted::Here(Box::new(o.content), effect))
}

/// A relay's judgement of an envelope it is asked to carry on to `r.to`: a hop is left
/// under the sender's limit, the recipient may receive it under the routing rules as this
/// node sees them (a relay is nobody's amplifier), and this node knows where the recipient
/// is. The recipient judges it again in full.
#[allow(clippy::too_many_arguments)]
fn carry_on(
    env: &pb::Envelope,
    content: &pb::Content,
    view: &pb::Content,
    r: crate::relay::Checked,
    known: &impl Known,
    router: &Router,
    now_ms: i64,
    routed: &mut Option<(&'static str, bool)>,
) -> Result<Admitted, Rejected> {
    let taken = crate::relay::take_on(env, &r, known.me(), now_ms)?;
    if known::org_revoked(known, &r.to) {
        return Err(Rejected::Relay(format!(
            "{}'s certificate is revoked: nothing is carried to it",
            r.to
        )));
    }
    let d = known::route(known, router, view, &r.to, Direction::Egress, now_ms);
    *routed = Some((d.rule, d.allowed));
    if d.retry {
        return Err(Rejected::Later(d.reason));
    }
    if !d.allowed {
        return Err(Rejected::Policy {
            rule: d.rule,
            reason: format!("{} may not receive it: {}", r.to, d.reason),
        });
    }
    if known
        .profile(&r.to, None)
        .is_none_or(|p| p.endpoint.is_empty())
    {
        return Err(Rejected::Relay(format!(
            "this node knows no endpoint for {}: try another relay",
            r.to
        )));
    }
    Ok(Admitted::Carry {
        id: content.id.clone(),
        origin: content.origin_org.clone(),
        taken: Box::new((r, taken)),
    })
}

/// A body encrypted end to end to this organisation must open with its certified key, and
/// what it opens to must pass the content rules the origin applied (a node that is not a
/// named recipient cannot open it, and routing refuses it anyway).
fn opens_here(c: &pb::Content, known: &impl Known) -> Result<(), Rejected> {
    if !matches!(c.body, Some(pb::content::Body::Sealed(_)))
        || !c.recipients.iter().any(|r| r == known.me())
    {
        return Ok(());
    }
    let key = match &c.body {
        Some(pb::content::Body::Sealed(sealed)) => {
            // Encrypted to a key a certificate of this organisation certified that the node
            // does not hold (one `pki rotate` retired, not installed beside the current
            // one): not a forgery, and not lost: the sender keeps it until the operator
            // installs the key. A key no certificate of ours certified is refused below.
            let held = |id: &str| known.decryptors().iter().any(|k| k.key_id() == id);
            if let Some(missing) = sealed
                .stanzas
                .iter()
                .map(|s| s.key_id.as_str())
                .find(|id| known.certified_own_key(id) && !held(id))
                .filter(|_| {
                    !known.decryptors().is_empty()
                        && !sealed.stanzas.iter().any(|s| held(&s.key_id))
                })
            {
                return Err(Rejected::Later(format!(
                    "{} is encrypted end to end to {}'s key {}, which this node does not hold: if `pki rotate` retired it, install retired/ beside [tls] encryption_key and restart the node; retry later",
                    c.id,
                    known.me(),
                    crate::offline::clip(missing)
                )));
            }
            crate::e2e::key_for(known.decryptors(), sealed)
        }
        _ => None,
    };
    let Some(key) = key else {
        return Err(Rejected::Later(format!(
            "{} is encrypted end to end to {}, and this node has no decryption key configured ([tls] encryption_key): retry once its operator has set it",
            c.id,
            known.me()
        )));
    };
    match crate::e2e::open_body(key, c) {
        Some(Ok(plain)) => envelope::validate(&plain).map_err(|why| {
            Rejected::Invalid(format!("the body encrypted end to end is not valid: {why}"))
        }),
        Some(Err(e)) => Err(Rejected::Invalid(format!(
            "encrypted end to end to {}, but it does not open with its certified key {}: {e}",
            known.me(),
            key.key_id()
        ))),
        None => Ok(()),
    }
}

/// The control-message authority rule for a received retraction or marking
/// change, with the target as this node holds it (see [`markings::authority`]).
pub fn control_authority(
    control: &pb::Content,
    known: &impl Known,
    router: &Router,
) -> Result<Effect, Rejected> {
    let Some((origin, id)) = markings::target_of(control) else {
        return Ok(Effect::Apply);
    };
    let target = known
        .held(origin, id)
        .map_err(Rejected::Later)?
        .map(|(c, _)| c);
    markings::authority(control, target.as_ref(), |t| {
        known::in_audience(known, router, t, &control.origin_org)
    })
}

/// Why a Deliver call as a whole failed (per-envelope refusals are results, not errors).
#[derive(Debug, Error)]
pub enum IngressError {
    #[error("{sent} envelopes in one Deliver call; the limit is {limit}")]
    TooMany { sent: usize, limit: usize },
    #[error("store write failed, retry later: {0}")]
    Store(#[from] StoreError),
}

fn result(outcome: pb::DeliveryOutcome, id: String, reason: String) -> pb::DeliveryResult {
    pb::DeliveryResult {
        outcome: outcome as i32,
        reason,
        id,
    }
}

/// The ingress service: a batch delivered by `peer` (identified by its verified
/// certificate) → one result per envelope, in order. Accepted envelopes are on disk
/// (with their audit records) before this returns.
pub async fn deliver(
    st: &Arc<NodeState>,
    peer: &OrgProfile,
    peer_cert: &[u8],
    envelopes: Vec<pb::Envelope>,
) -> Result<Vec<pb::DeliveryResult>, IngressError> {
    let limit = st.config.limits.max_batch;
    if envelopes.len() > limit {
        return Err(IngressError::TooMany {
            sent: envelopes.len(),
            limit,
        });
    }
    st.directory.learn(&st.store, peer, peer_cert).await;
    // Envelopes over the peer's rate limit are not even opened: they are answered
    // RETRY_LATER, and the sender backs off and sends them again.
    let granted = st.peer_limits.take_up_to(&peer.org, envelopes.len() as u64) as usize;
    let over_limit = if granted < envelopes.len() {
        st.metrics.add(
            crate::metrics::RATE_LIMITED,
            &[("kind", "peer"), ("who", &peer.org)],
            (envelopes.len() - granted) as u64,
        );
        debug!(
            granted,
            sent = envelopes.len(),
            "peer over its envelope rate limit"
        );
        format!(
            "{} is over its rate limit on this node ({} envelopes per second, \
             limits.peer_rate_per_sec)",
            peer.org,
            st.peer_limits.rate()
        )
    } else {
        String::new()
    };
    admit_all(st, peer, envelopes, granted, &over_limit, None).await
}

/// An offline bundle's envelopes, handed over by `peer` (the organisation that exported and
/// signed the bundle, verified by [`crate::offline::open`]): the same rules as a delivery,
/// in batches of `limits.max_batch`, without the peer rate limit (an operator imports a
/// file), each acceptance audited with the bundle id. The exporter's certificate replaces
/// the one this node holds only when it is not older (a file can be old; see
/// [`crate::directory::Directory::learn`]).
pub async fn deliver_bundle(
    st: &Arc<NodeState>,
    peer: &OrgProfile,
    peer_cert: &[u8],
    envelopes: Vec<pb::Envelope>,
    bundle_id: &str,
) -> Result<Vec<pb::DeliveryResult>, IngressError> {
    st.directory.learn(&st.store, peer, peer_cert).await;
    // A bundle carries its exporter's own messages: nothing in it asks this node to relay.
    let (relayed, envelopes): (Vec<_>, Vec<_>) =
        envelopes.into_iter().partition(|e| e.relay.is_some());
    let mut results = Vec::with_capacity(envelopes.len() + relayed.len());
    for env in relayed {
        let why = Rejected::Relay(
            "an offline bundle carries its exporter's own messages, not envelopes to relay".into(),
        );
        let id = claimed_id(&env).0;
        st.store
            .record_rejection(Rejection {
                at_ms: crate::clock::now_ms(),
                from_peer: peer.org.clone(),
                id: id.clone(),
                reason: why.to_string(),
            })
            .await?;
        results.push(result(pb::DeliveryOutcome::Rejected, id, why.to_string()));
    }
    let mut rest = envelopes.into_iter().peekable();
    while rest.peek().is_some() {
        let batch: Vec<_> = rest.by_ref().take(st.config.limits.max_batch).collect();
        let n = batch.len();
        results.extend(admit_all(st, peer, batch, n, "", Some(bundle_id)).await?);
    }
    Ok(results)
}

/// Judge, store and audit `envelopes` from `peer`; those from index `granted` on are
/// answered RETRY_LATER with `over_limit`. `bundle`: the offline bundle they came in.
async fn admit_all(
    st: &Arc<NodeState>,
    peer: &OrgProfile,
    envelopes: Vec<pb::Envelope>,
    granted: usize,
    over_limit: &str,
    bundle: Option<&str>,
) -> Result<Vec<pb::DeliveryResult>, IngressError> {
    let now = crate::clock::now_ms();
    let started = std::time::Instant::now();
    let mut results = Vec::with_capacity(envelopes.len());
    let mut accepted: Vec<(usize, pb::Content, Effect, NewMessage)> = Vec::new();
    let mut rejected: Vec<(usize, &'static str)> = Vec::new();
    let mut behind: Option<String> = None;
    // Envelopes taken on to carry to another member: (slot, recipient, record, audit).
    let mut carried: Vec<(usize, String, crate::store::RelayRecord, AuditEvent)> = Vec::new();
    // Routing decisions made, as ((rule, allowed), how many).
    let mut decided: Vec<((&'static str, bool), u64)> = Vec::new();
    for (i, env) in envelopes.into_iter().enumerate() {
        if i >= granted {
            results.push(result(
                pb::DeliveryOutcome::RetryLater,
                String::new(),
                over_limit.to_string(),
            ));
            continue;
        }
        learn_forwarded_origin(st, &env).await;
        // A key lookup the store could not answer must not become "unknown key" (a
        // permanent refusal): the sender keeps the envelope and sends it again.
        if let Err(e) = st.directory.readable(&st.store, &env) {
            warn!(error = %e, "could not read signing keys from the store; asking the sender to retry later");
            results.push(result(
                pb::DeliveryOutcome::RetryLater,
                String::new(),
                format!("the receiving node could not read its key directory ({e}); retry later"),
            ));
            continue;
        }
        let (verdict, routed) = judge_routed(&env, &peer.org, st.as_ref(), &st.router, now);
        if let Some(d) = routed {
            // Counted once per (rule, outcome) for the call, not per envelope.
            match decided.iter_mut().find(|(seen, _)| *seen == d) {
                Some((_, n)) => *n += 1,
                None => decided.push((d, 1)),
            }
        }
        match verdict {
            Verdict::Accept { content, effect } => {
                debug!(msg.id = %content.id, "accepted for storage");
                results.push(result(
                    pb::DeliveryOutcome::Accepted,
                    content.id.clone(),
                    String::new(),
                ));
                let received = AuditEvent::received(&content.id, &peer.org);
                let audit = match (bundle, &env.relay) {
                    (Some(b), _) => received.detail(format!("offline bundle {b}")),
                    (None, Some(r)) => received.detail(format!(
                        "relayed: {} via {}",
                        content.origin_org,
                        r.hops.join(", ")
                    )),
                    (None, None) => received,
                };
                // Stored as its sender signed it: the path it took is in the audit trail,
                // not in the envelope (a re-share of it must not carry a stale path).
                let stored = pb::Envelope { relay: None, ..env };
                let msg = NewMessage {
                    audit: vec![audit],
                    ..NewMessage::of_envelope(&content, stored, &peer.org, now)
                };
                accepted.push((i, *content, effect, msg));
            }
            Verdict::Carry {
                id,
                origin,
                to,
                envelope,
                path,
            } => {
                debug!(msg.id = %id, relay.to = %to, "taken on to carry");
                results.push(result(
                    pb::DeliveryOutcome::Accepted,
                    id.clone(),
                    format!("taken on by {} to carry to {to}", st.org()),
                ));
                let audit = AuditEvent::relayed(
                    &id,
                    &peer.org,
                    format!("taken on to carry to {to} ({path})"),
                );
                let record = crate::store::RelayRecord {
                    key: crate::store::message_key(&origin, &id),
                    taken_at_ms: now,
                    envelope: envelope.encode_to_vec(),
                };
                carried.push((i, to, record, audit));
            }
            Verdict::Later {
                id,
                cluster,
                reason,
            } => {
                debug!(msg.id = %id, reason = %reason, "asking the sender to retry later");
                behind = Some(cluster);
                results.push(result(pb::DeliveryOutcome::RetryLater, id, reason));
            }
            Verdict::Reject { id, why } => {
                warn!(msg.id = %id, reason = %why, "envelope rejected");
                st.store
                    .record_rejection(Rejection {
                        at_ms: now,
                        from_peer: peer.org.clone(),
                        id: id.clone(),
                        reason: why.to_string(),
                    })
                    .await?;
                rejected.push((i, why.rule()));
                results.push(result(pb::DeliveryOutcome::Rejected, id, why.to_string()));
            }
        }
    }
    for ((rule, allowed), n) in decided {
        st.metrics.decisions("ingress", rule, allowed, n);
    }
    // Store, then record effects; whatever fails, the refusals are still audited and the
    // catch-up still starts before the error is returned (the sender then delivers the
    // batch again: duplicates are answered as such and effects are idempotent).
    // A store that cannot take them (a full disk, a failing device) answers RETRY_LATER for
    // each: the sender keeps them queued and backs off, and nothing half-written counts.
    st.metrics.stage(Stage::IngressCheck, started.elapsed(), 1);
    if let Err(e) = store_and_apply(st, peer, &accepted, &mut results).await {
        warn!(error = %e, count = accepted.len(), "could not store delivered envelopes; asking the sender to retry later");
        for (slot, ..) in &accepted {
            let r = &mut results[*slot];
            r.outcome = pb::DeliveryOutcome::RetryLater as i32;
            r.reason = format!("the receiving node could not store it ({e}); retry later");
        }
    }
    keep_carried(st, carried, &mut results).await;
    let mut events = Vec::new();
    for (slot, rule) in rejected {
        let r = &results[slot];
        st.metrics.inc(
            crate::metrics::ENVELOPES_REJECTED,
            &[("peer", &peer.org), ("rule", rule)],
        );
        events.push(AuditEvent::rejected(&r.id, &peer.org, rule, &r.reason));
    }
    st.audit(events).await;
    // A bundle's exporter is not reachable (that is why there is a bundle): no catch-up.
    if let Some(cluster) = behind.filter(|_| bundle.is_none()) {
        // Catch up from the sender, which is ahead of us.
        let st2 = st.clone();
        let from = peer.org.clone();
        st.tasks.spawn(
            tracing::debug_span!("catch-up", peer.org = %from, cluster.id = %cluster),
            async move {
                if let Err(e) = st2.pull_from(&from, &cluster).await {
                    debug!(error = %e, "catch-up pull failed");
                }
            },
        );
    }
    Ok(results)
}

/// Keep envelopes taken on as a relay, durably, and wake (or start) the delivery worker
/// of each recipient. A copy already queued for the same recipient is answered DUPLICATE;
/// beyond the relay's limits (`delivery.relay_max_queued`, `relay_max_bytes`), or when the
/// store cannot take them, RETRY_LATER (the sender keeps its own copy either way).
async fn keep_carried(
    st: &Arc<NodeState>,
    carried: Vec<(usize, String, crate::store::RelayRecord, AuditEvent)>,
    results: &mut [pb::DeliveryResult],
) {
    let mut by_to: std::collections::BTreeMap<String, Vec<_>> = Default::default();
    for (slot, to, record, audit) in carried {
        by_to.entry(to).or_default().push((slot, record, audit));
    }
    let limits = crate::store::RelayLimits {
        per_recipient: st.config.delivery.relay_max_queued,
        total_bytes: st.config.delivery.relay_max_bytes,
    };
    for (to, items) in by_to {
        let slots: Vec<usize> = items.iter().map(|i| i.0).collect();
        let items = items.into_iter().map(|(_, r, a)| (r, a)).collect();
        match st.store.relay_put(&to, items, limits).await {
            Ok(outcomes) => {
                let mut queued = 0u64;
                for (slot, outcome) in slots.iter().zip(outcomes) {
                    let r = &mut results[*slot];
                    match outcome {
                        crate::store::RelayPut::Queued => queued += 1,
                        crate::store::RelayPut::Duplicate => {
                            r.outcome = pb::DeliveryOutcome::Duplicate as i32;
                        }
                        crate::store::RelayPut::Full => {
                            r.outcome = pb::DeliveryOutcome::RetryLater as i32;
                            r.reason = format!(
                                "{} carries as much for {to} as it takes (delivery.relay_max_queued, relay_max_bytes): deliver it directly, or later",
                                st.org()
                            );
                        }
                    }
                }
                st.metrics
                    .add(crate::metrics::RELAYED, &[("to", &to)], queued);
                match st.peers.get(&to) {
                    Some(p) => p.notify.notify_one(),
                    None => {
                        if let Some(p) = st.directory.profile(&to, None) {
                            st.ensure_peer(&to, &p.endpoint);
                        }
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, relay.to = %to, "could not keep envelopes to carry; asking the sender to retry later");
                for slot in slots {
                    let r = &mut results[slot];
                    r.outcome = pb::DeliveryOutcome::RetryLater as i32;
                    r.reason = format!("the relay could not keep it ({e}); retry later");
                }
            }
        }
    }
}

/// Insert the accepted envelopes in one transaction, then record what control messages
/// do and settle raises that arrived before their message.
async fn store_and_apply(
    st: &Arc<NodeState>,
    peer: &OrgProfile,
    accepted: &[(usize, pb::Content, Effect, NewMessage)],
    results: &mut [pb::DeliveryResult],
) -> Result<(), IngressError> {
    if accepted.is_empty() {
        return Ok(());
    }
    let msgs = accepted.iter().map(|a| a.3.clone()).collect();
    let started = std::time::Instant::now();
    let outcomes = st.store.insert_many(msgs).await?;
    st.metrics.stage(Stage::IngressCommit, started.elapsed(), 1);
    let in_audience =
        |t: &pb::Content, org: &str| known::in_audience(st.as_ref(), &st.router, t, org);
    for ((slot, content, effect, msg), outcome) in accepted.iter().zip(outcomes) {
        let due = match outcome {
            InsertOutcome::Inserted(_) => {
                st.metrics
                    .inc(crate::metrics::MESSAGES_RECEIVED, &[("peer", &peer.org)]);
                true
            }
            InsertOutcome::Duplicate(_) => {
                results[*slot].outcome = pb::DeliveryOutcome::Duplicate as i32;
                // Effects are idempotent and applied again for the very message that
                // is stored (so one a crash cut short is completed when the sender
                // delivers it again), never for other content under the same id.
                same_content(st, content, &msg.envelope)?
            }
        };
        if !due {
            continue;
        }
        if envelope::is_control_kind(
            pb::Kind::try_from(content.kind).unwrap_or(pb::Kind::Unspecified),
        ) {
            markings::apply(&st.store, content, *effect).await?;
            // Its target may have been stored meanwhile (in this batch, or by a
            // concurrent delivery that settled before this raise was recorded).
            if *effect == Effect::Pending
                && let Some((origin, id)) = markings::target_of(content)
                && let Ok(Some((target, _))) = st.held(origin, id)
            {
                markings::settle(&st.store, &target, in_audience).await?;
            }
        } else {
            // Raises of this message by other organisations may have arrived first.
            markings::settle(&st.store, content, in_audience).await?;
        }
    }
    Ok(())
}

/// Is the stored (origin, id) this very content (not other bytes under the same id)?
fn same_content(
    st: &NodeState,
    content: &pb::Content,
    envelope: &[u8],
) -> Result<bool, StoreError> {
    let (Some(stored), Ok(new)) = (
        st.store.get(&content.origin_org, &content.id)?,
        pb::Envelope::decode(envelope),
    ) else {
        return Ok(false);
    };
    Ok(pb::Envelope::decode(stored.envelope.as_slice()).is_ok_and(|e| e.content == new.content))
}

/// A re-share carries the origin's certificate, a relayed envelope its sender's: learn
/// their keys (after verifying each against the federation root) so the signatures can be
/// checked.
async fn learn_forwarded_origin(st: &NodeState, env: &pb::Envelope) {
    if let Some(f) = &env.forwarding {
        learn_cert(st, &f.origin_cert).await;
    }
    if let Some(r) = &env.relay {
        learn_cert(st, &r.sender_cert).await;
    }
}

async fn learn_cert(st: &NodeState, der: &[u8]) {
    // A certificate this node already holds is not verified again (each verification is an
    // ECDSA and an ML-DSA check, and a batch may carry a thousand of them).
    if der.is_empty() || st.directory.holds_cert(der) {
        return;
    }
    let chain = [rustls::pki_types::CertificateDer::from(der.to_vec())];
    if let Ok(id @ PeerIdentity::Node { .. }) =
        crate::pki::identity_from_chain(&chain, &st.tls.root_der)
        && !st.tls.revocations.identity_revoked(&id)
        && let PeerIdentity::Node { profile, .. } = id
    {
        st.directory.learn(&st.store, &profile, der).await;
    }
}

#[cfg(test)]
pub(crate) mod tests;
