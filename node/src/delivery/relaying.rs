//! The delivery worker's side of relaying ([`crate::relay`] decides who may carry what):
//! while the direct link to a peer is down, hand what is queued for it to another member
//! that can reach it ([`Round::run`]); while it is up, hand on what this node carries for
//! other members to it ([`Round::hand_on`]).
//!
//! This node's own messages stay in its outbox until the peer acknowledges them directly
//! (a relay is a faster path, never the only copy): after the heal they are sent again and
//! the peer answers "duplicate". What a relay carries it gives up on after
//! [`crate::relay::MAX_CARRY_MS`], or when the signer's certificate is revoked.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bluewire_proto::v1::federation_client::FederationClient;
use bluewire_proto::v1::{Content, DeliverRequest, DeliveryOutcome, Envelope};
use prost::Message;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use super::PeerLink;
use crate::audit::AuditEvent;
use crate::config::DeliveryConfig;
use crate::relay;
use crate::state::NodeState;
use crate::store::Rejection;

/// Most own outbox entries one relay round looks through for what may go through a relay.
const RELAY_SCAN: usize = 4096;

/// One round of relaying for one peer.
pub(super) struct Round<'a> {
    pub state: &'a Arc<NodeState>,
    pub peer: &'a Arc<PeerLink>,
    pub cfg: &'a DeliveryConfig,
    pub max_request_bytes: usize,
}

/// An envelope that could go through a relay: this node's own (by outbox seq), or one it
/// carries (by relay seq), with the view routing judges who may carry it on.
struct Item {
    own: Option<u64>,
    carried: Option<u64>,
    env: Envelope,
    view: Content,
}

impl Round<'_> {
    /// The direct link is down: hand what may go through another member to the first that
    /// has a working link and takes it. Own entries a relay took are remembered in `handed`
    /// (kept in the outbox); carried ones are forgotten (handed on). Returns how many went.
    pub async fn run(&self, after: u64, handed: &mut HashSet<u64>) -> usize {
        let (st, peer) = (self.state, self.peer);
        // A revoked peer's outbox is held, not handed to others.
        if crate::known::org_revoked(st.as_ref(), &peer.org) {
            return 0;
        }
        // Members with a working link now, never one whose certificate is revoked since.
        let links: Vec<(String, FederationClient<Channel>)> = st
            .peers
            .iter()
            .filter(|p| !crate::known::org_revoked(st.as_ref(), &p.org))
            .filter_map(|p| p.working_client().map(|c| (p.org.clone(), c)))
            .collect();
        let names = relay::candidates(
            links.iter().map(|(o, _)| o.as_str()),
            st.org(),
            &peer.org,
            &[],
        );
        if names.is_empty() {
            return 0;
        }
        let items = self.window(after, handed, &names).await;
        let now = crate::clock::now_ms();
        // Own envelopes get this node's instruction once, whichever relay takes them.
        let mut instructed: Vec<Option<Envelope>> = vec![None; items.len()];
        for relay_org in names {
            let Some(mut client) = links
                .iter()
                .find(|(o, _)| *o == relay_org)
                .map(|(_, c)| c.clone())
            else {
                continue;
            };
            let mut batch = Vec::new();
            let mut picked = Vec::new();
            let mut size = 0;
            for (i, item) in items.iter().enumerate() {
                if !self.may_go_through(item, &relay_org, now) {
                    continue;
                }
                let env = match (item.own, &mut instructed[i]) {
                    (Some(_), Some(e)) => e.clone(),
                    (Some(_), slot) => {
                        let e = relay::instruct(
                            &item.env,
                            (st.org(), &st.tls.chain[0]),
                            &peer.org,
                            self.cfg.relay_hop_limit,
                            &st.signer,
                            now,
                        );
                        *slot = Some(e.clone());
                        e
                    }
                    (None, _) => item.env.clone(),
                };
                let len = env.encoded_len() + 16;
                if size + len > self.max_request_bytes && !batch.is_empty() {
                    break;
                }
                size += len;
                batch.push(env);
                picked.push(i);
                if batch.len() >= self.cfg.batch_size {
                    break;
                }
            }
            if batch.is_empty() {
                continue;
            }
            let n = batch.len();
            let call = client.deliver(DeliverRequest {
                envelopes: batch,
                ..Default::default()
            });
            let results = match tokio::time::timeout(
                Duration::from_millis(self.cfg.timeout_ms),
                call,
            )
            .await
            {
                Ok(Ok(r)) if r.get_ref().results.len() == n => r.into_inner().results,
                Ok(Ok(_)) | Err(_) => continue,
                Ok(Err(status)) => {
                    debug!(relay = %relay_org, error = %status, "relay did not take the batch");
                    continue;
                }
            };
            let mut events = Vec::new();
            let mut carried_done = Vec::new();
            for (r, &i) in results.iter().zip(&picked) {
                let took = r.outcome == DeliveryOutcome::Accepted as i32
                    || r.outcome == DeliveryOutcome::Duplicate as i32;
                if !took {
                    debug!(relay = %relay_org, msg.id = %r.id, reason = %r.reason, "relay did not take a message");
                    // Refused: not offered to relays again during this outage (it stays
                    // queued for the direct link).
                    if let (Some(seq), true) =
                        (items[i].own, r.outcome == DeliveryOutcome::Rejected as i32)
                    {
                        handed.insert(seq);
                    }
                    continue;
                }
                let item = &items[i];
                if let Some(seq) = item.own {
                    handed.insert(seq);
                    events.push(AuditEvent::relayed(
                        &r.id,
                        &relay_org,
                        format!(
                            "handed to {relay_org} to carry to {} (direct link down); kept until {} acknowledges it",
                            peer.org, peer.org
                        ),
                    ));
                }
                if let Some(seq) = item.carried {
                    carried_done.push(seq);
                    events.push(AuditEvent::relayed(
                        &r.id,
                        &relay_org,
                        format!("handed on to {relay_org} to carry to {}", peer.org),
                    ));
                }
            }
            let count = events.len();
            if count == 0 {
                continue;
            }
            if let Err(e) = st.store.relay_ack(&peer.org, carried_done, events).await {
                warn!(error = %e, "recording what a relay took failed");
            }
            st.metrics.add(
                crate::metrics::SENT_VIA_RELAY,
                &[("via", &relay_org)],
                count as u64,
            );
            info!(relay = %relay_org, count, "direct link down: handed to a relay");
            peer.update(|s| s.via = Some(relay_org.clone()));
            return count;
        }
        0
    }

    /// What may go through a relay now: envelopes carried for the peer that a hop is left
    /// for, then this node's own queued after `after` and not yet handed (at most
    /// [`RELAY_SCAN`] looked at), each with how routing sees it now (the marking in force).
    async fn window(&self, after: u64, handed: &HashSet<u64>, relays: &[String]) -> Vec<Item> {
        let (st, peer, cfg) = (self.state, self.peer, self.cfg);
        let now = crate::clock::now_ms();
        let some_relay = |item: &Item| relays.iter().any(|r| self.may_go_through(item, r, now));
        let mut items = Vec::new();
        let mut expired = Vec::new();
        for (seq, rec) in st
            .store
            .relay_batch(&peer.org, cfg.batch_size)
            .unwrap_or_default()
        {
            let Ok(env) = Envelope::decode(rec.envelope.as_slice()) else {
                expired.push((seq, String::new(), "undecodable".to_string()));
                continue;
            };
            if let Some(why) = give_up(st, &env, now) {
                let id = Content::decode(&env.content[..])
                    .map(|c| c.id)
                    .unwrap_or_default();
                expired.push((seq, id, why));
                continue;
            }
            let Some(view) = carried_view(st, &env) else {
                continue;
            };
            let item = Item {
                own: None,
                carried: Some(seq),
                env,
                view,
            };
            if some_relay(&item) {
                items.push(item);
            }
        }
        // What this node gives up carrying, it gives up whether or not the link is up.
        if !expired.is_empty() {
            let (seqs, events): (Vec<u64>, Vec<AuditEvent>) = expired
                .into_iter()
                .map(|(seq, id, why)| {
                    warn!(msg.id = %id, reason = %why, "giving up a carried envelope");
                    (
                        seq,
                        AuditEvent::relayed(&id, &peer.org, format!("gave up carrying it: {why}")),
                    )
                })
                .unzip();
            let _ = st.store.relay_ack(&peer.org, seqs, events).await;
        }
        let mut cursor = after;
        let (mut scanned, mut own) = (0, 0);
        while own < cfg.batch_size && scanned < RELAY_SCAN {
            let page = match st.store.outbox_batch_after(&peer.org, cursor, 256) {
                Ok(p) if !p.is_empty() => p,
                _ => break,
            };
            scanned += page.len();
            for (seq, bytes) in page {
                cursor = seq;
                if handed.contains(&seq) {
                    continue;
                }
                let Ok(env) = Envelope::decode(bytes.as_slice()) else {
                    continue;
                };
                // What `outbound::recheck` decides, keeping the view it decides on.
                let Ok(Some(view)) = crate::outbound::egress_view(&env, st.as_ref()) else {
                    continue;
                };
                let routable = crate::known::route(
                    st.as_ref(),
                    &st.router,
                    &view,
                    &peer.org,
                    crate::policy::Direction::Egress,
                    now,
                )
                .allowed;
                let item = Item {
                    own: Some(seq),
                    carried: None,
                    env,
                    view,
                };
                if routable && some_relay(&item) {
                    items.push(item);
                    own += 1;
                }
            }
        }
        items
    }

    /// May `item` go through `relay_org`: it may carry it ([`relay::may_carry`]), and for a
    /// carried envelope, a hop is left and `relay_org` is not on its path yet.
    fn may_go_through(&self, item: &Item, relay_org: &str, now: i64) -> bool {
        if relay::may_carry(
            self.state.as_ref(),
            &self.state.router,
            &item.view,
            relay_org,
            now,
        )
        .is_err()
        {
            return false;
        }
        if item.own.is_some() {
            return true;
        }
        let Some(r) = item.env.relay.as_ref() else {
            return false;
        };
        let Ok(i) = bluewire_proto::v1::RelayInstruction::decode(r.instruction.as_slice()) else {
            return false;
        };
        r.hops.len() < i.hop_limit as usize
            && relay_org != i.from_org
            && !r.hops.iter().any(|h| h == relay_org)
    }

    /// The link to the peer works: hand it what this node carries for it, at most `cap`
    /// envelopes, in a call of its own. Delivered, duplicate or refused: forgotten (a refusal
    /// recorded); "retry later": moved to the back of the queue; past
    /// [`relay::MAX_CARRY_MS`], or signed with a key whose certificate is revoked since:
    /// given up, recorded. `Ok(true)` when something was forgotten or given up.
    pub async fn hand_on(
        &self,
        client: &mut FederationClient<Channel>,
        cap: usize,
    ) -> Result<bool, HandOn> {
        let (st, peer) = (self.state, self.peer);
        let now = crate::clock::now_ms();
        let entries = st
            .store
            .relay_batch(&peer.org, cap.max(1))
            .map_err(|e| HandOn::Local(format!("reading the relay queue: {e}")))?;
        let mut batch = Vec::new();
        let mut seqs = Vec::new();
        let mut given_up = Vec::new();
        let mut events = Vec::new();
        let mut size = 0;
        for (seq, rec) in entries {
            let Ok(env) = Envelope::decode(rec.envelope.as_slice()) else {
                given_up.push(seq);
                events.push(AuditEvent::relayed(
                    "",
                    &peer.org,
                    "gave up carrying an undecodable envelope",
                ));
                continue;
            };
            if let Some(why) = give_up(st, &env, now) {
                let id = Content::decode(&env.content[..])
                    .map(|c| c.id)
                    .unwrap_or_default();
                warn!(msg.id = %id, reason = %why, "giving up a carried envelope");
                given_up.push(seq);
                events.push(AuditEvent::relayed(
                    &id,
                    &peer.org,
                    format!("gave up carrying it: {why}"),
                ));
                continue;
            }
            let len = rec.envelope.len() + 16;
            if size + len > self.max_request_bytes && !batch.is_empty() {
                break;
            }
            size += len;
            batch.push(env);
            seqs.push(seq);
        }
        let mut progress = false;
        if !given_up.is_empty() {
            st.store
                .relay_ack(&peer.org, given_up, events)
                .await
                .map_err(|e| HandOn::Local(format!("recording carried envelopes given up: {e}")))?;
            progress = true;
        }
        if batch.is_empty() {
            return Ok(progress);
        }
        let n = batch.len();
        let call = client.deliver(DeliverRequest {
            envelopes: batch,
            ..Default::default()
        });
        let results =
            match tokio::time::timeout(Duration::from_millis(self.cfg.timeout_ms), call).await {
                Ok(Ok(r)) if r.get_ref().results.len() == n => r.into_inner().results,
                Ok(Ok(r)) => {
                    return Err(HandOn::Answered(format!(
                        "peer answered {} results for {n} carried envelopes",
                        r.get_ref().results.len()
                    )));
                }
                Ok(Err(s)) if super::link_failed(&s) => {
                    return Err(HandOn::Link(format!("{}: {}", s.code(), s.message())));
                }
                Ok(Err(s)) => {
                    return Err(HandOn::Answered(format!("{}: {}", s.code(), s.message())));
                }
                Err(_) => {
                    return Err(HandOn::Link(format!(
                        "handing on {n} carried envelopes timed out after {} ms",
                        self.cfg.timeout_ms
                    )));
                }
            };
        let (mut done, mut later, mut events) = (Vec::new(), Vec::new(), Vec::new());
        for (r, seq) in results.iter().zip(seqs) {
            match DeliveryOutcome::try_from(r.outcome) {
                Ok(DeliveryOutcome::RetryLater) => later.push(seq),
                Ok(DeliveryOutcome::Rejected) => {
                    done.push(seq);
                    let why = format!("carried as a relay; refused by {}: {}", peer.org, r.reason);
                    events.push(AuditEvent::rejected(&r.id, &peer.org, "peer", &why));
                    let _ = st
                        .store
                        .record_rejection(Rejection {
                            at_ms: now,
                            from_peer: format!("relay->{}", peer.org),
                            id: r.id.clone(),
                            reason: why,
                        })
                        .await;
                }
                _ => {
                    done.push(seq);
                    events.push(AuditEvent::relayed(
                        &r.id,
                        &peer.org,
                        "carried as a relay and handed over",
                    ));
                }
            }
        }
        progress |= !done.is_empty();
        st.store
            .relay_ack(&peer.org, done, events)
            .await
            .map_err(|e| HandOn::Local(format!("recording carried envelopes handed over: {e}")))?;
        st.store
            .relay_requeue(&peer.org, later)
            .await
            .map_err(|e| HandOn::Local(format!("moving deferred carried envelopes back: {e}")))?;
        Ok(progress)
    }
}

/// Why [`Round::hand_on`] stopped.
pub(super) enum HandOn {
    /// The link failed (transport, timeout): replace it.
    Link(String),
    /// The peer answered with an error for the call as a whole: the link works.
    Answered(String),
    /// This node's store: nothing to do with the link.
    Local(String),
}

/// Why this node gives up carrying `env` now: past [`relay::MAX_CARRY_MS`] since its
/// sender's instruction, or signed with a key whose certificate is revoked since.
fn give_up(st: &NodeState, env: &Envelope, now: i64) -> Option<String> {
    if let Some(why) = crate::known::refuse_signer(st, &env.key_id) {
        return Some(why);
    }
    let at = env
        .relay
        .as_ref()
        .and_then(|r| bluewire_proto::v1::RelayInstruction::decode(r.instruction.as_slice()).ok())
        .map(|i| i.at_ms);
    match at {
        Some(at) if now.saturating_sub(at) <= relay::MAX_CARRY_MS => None,
        _ => Some(format!(
            "not handed on within {} days of its sender's instruction",
            relay::MAX_CARRY_MS / 86_400_000
        )),
    }
}

/// How routing sees an envelope this node carries (to decide who may carry it on): the
/// content, as the forwarder sent it for a re-share, under the marking in force as this
/// node knows it.
fn carried_view(st: &NodeState, env: &Envelope) -> Option<Content> {
    use crate::known::Known as _;
    let content = Content::decode(&env.content[..]).ok()?;
    let marking = st.standing(&content).ok()?.marking;
    let mut view = match &env.forwarding {
        Some(f) => crate::envelope::forwarded_view(
            &content,
            &bluewire_proto::v1::ForwardAttestation::decode(f.attestation.as_slice()).ok()?,
        ),
        None => content,
    };
    if marking.is_some() {
        view.marking = marking;
    }
    Some(view)
}
