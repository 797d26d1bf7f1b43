//! Delivery: one worker per peer drains that peer's durable outbox in order,
//! hands batches to the peer's Federation.Deliver, removes what the peer
//! acknowledged (accepted, duplicate or permanently rejected) and retries the
//! rest with exponential backoff and jitter. The outbox lives in the store,
//! so nothing queued is lost across a crash; delivery is at-least-once on the
//! wire and receivers deduplicate by id. Never decides who receives what:
//! that is `routing`'s job, done before a message is queued.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bluewire_proto::v1::{Content, DeliverRequest, DeliveryOutcome, Envelope};
use prost::Message;
use rand::Rng;
use tracing::{debug, info, warn};

use crate::config::DeliveryConfig;
pub use crate::peers::{PeerLink, PeerStats};

use crate::state::NodeState;
use crate::store::Rejection;
use crate::tls::LinkInfo;

/// Spawn the worker for `peer`; it runs until the node shuts down.
/// The worker watches the stop itself and stops between batches; an acknowledgement it has
/// started committing always finishes.
pub fn spawn_worker(peer: Arc<PeerLink>, state: Arc<NodeState>) {
    let span = tracing::info_span!("delivery", peer.org = %peer.org);
    state
        .tasks
        .clone()
        .spawn_to_end(span, run_worker(peer, state));
}

async fn run_worker(peer: Arc<PeerLink>, state: Arc<NodeState>) {
    let store = state.store.clone();
    let tls = state.tls.clone();
    let cfg: DeliveryConfig = state.config.delivery.clone();
    let max_request_bytes = state.config.limits.max_request_bytes;
    let stopping = state.tasks.stopping();
    let connect = || {
        state.dialer.client(
            &peer.endpoint,
            &peer.org,
            peer.link.clone(),
            Duration::from_millis(cfg.timeout_ms),
        )
    };
    let mut client = match connect() {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "peer endpoint unusable; not delivering to it");
            peer.update(|s| s.last_error = e.to_string());
            return;
        }
    };
    let min = Duration::from_millis(cfg.retry_min_ms);
    let max = Duration::from_millis(cfg.retry_max_ms);
    let mut backoff = min;
    // Highest seq handed to the peer and acknowledged by it. Acks are
    // committed in the background, so reads start after this, not at the
    // outbox head; a restart begins at 0 and may resend what was acked but
    // not yet durable (receivers deduplicate).
    let mut sent_upto = 0u64;
    info!(peer.endpoint = %peer.endpoint, "delivery worker started");
    loop {
        if stopping.is_cancelled() {
            break;
        }
        // Routing needs the peer's CA-asserted profile: learn it from a
        // handshake first (eagerly, so publishes can decide at once).
        if !state.directory.knows(&peer.org) {
            let hello = tokio::select! {
                r = tokio::time::timeout(
                    Duration::from_millis(cfg.timeout_ms),
                    client.hello(bluewire_proto::v1::HelloRequest {}),
                ) => r,
                () = stopping.cancelled() => break,
            };
            let learned = peer.link.lock().ok().and_then(|l| match &l.peer {
                Some(crate::pki::PeerIdentity::Node { profile, .. }) => {
                    Some((profile.clone(), l.cert_der.clone()))
                }
                _ => None,
            });
            match (hello, learned) {
                (Ok(Ok(_)), Some((profile, der))) => {
                    state.directory.learn(&state.store, &profile, &der).await
                }
                (r, _) => {
                    let err = match r {
                        Ok(Err(s)) => format!("{}: {}", s.code(), s.message()),
                        Err(_) => "Hello timed out".to_string(),
                        Ok(Ok(_)) => "peer identity unknown after handshake".to_string(),
                    };
                    peer.update(|s| {
                        s.connected = false;
                        s.consecutive_failures += 1;
                        s.last_error = err.clone();
                    });
                    if sleep_or_stop(jitter(backoff), &stopping).await {
                        break;
                    }
                    backoff = (backoff * 2).min(max);
                    continue;
                }
            }
        }
        if peer.rescan.swap(false, Ordering::AcqRel) {
            sent_upto = 0;
        }
        let batch = match store.outbox_batch_after(&peer.org, sent_upto, cfg.batch_size) {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "reading outbox failed");
                if sleep_or_stop(backoff, &stopping).await {
                    break;
                }
                continue;
            }
        };
        if batch.is_empty() {
            tokio::select! {
                _ = peer.notify.notified() => {}
                () = stopping.cancelled() => break,
            }
            continue;
        }
        let mut envelopes = Vec::with_capacity(batch.len());
        let mut seqs = Vec::with_capacity(batch.len());
        let mut size = 0usize;
        // Entries to remove without sending (undecodable, or no longer routable).
        let mut undecodable = Vec::new();
        // Set when an entry could not be re-checked: send what came before it, retry later.
        let mut stalled = false;
        for (seq, bytes) in batch {
            if size + bytes.len() + 16 > max_request_bytes && !envelopes.is_empty() {
                break;
            }
            match Envelope::decode(bytes.as_slice()) {
                Ok(env) => {
                    let rechecked = crate::outbound::recheck(
                        &env,
                        &peer.org,
                        state.as_ref(),
                        &state.router,
                        crate::clock::now_ms(),
                    );
                    match &rechecked {
                        Ok(()) => state.metrics.decision("egress", "allowed", true),
                        // Not decidable now (the store could not be read): keep it queued.
                        Err(("store", why)) => {
                            warn!(msg.seq = seq, reason = %why, "cannot re-check a queued message; will retry");
                            stalled = true;
                            break;
                        }
                        Err(("retracted" | "content", _)) => {}
                        Err((rule, _)) => state.metrics.decision("egress", rule, false),
                    }
                    if let Err((rule, why)) = rechecked {
                        let why = format!("{rule}: {why}");
                        info!(msg.seq = seq, reason = %why, "queued message no longer routable to this peer; dropped");
                        state
                            .audit(vec![
                                crate::audit::AuditEvent::dropped(
                                    &peer.org,
                                    format!("seq {seq}: {why}"),
                                )
                                .msg(
                                    Content::decode(env.content.as_slice())
                                        .map(|c| c.id)
                                        .unwrap_or_default(),
                                ),
                            ])
                            .await;
                        let _ = store
                            .record_rejection(Rejection {
                                at_ms: crate::clock::now_ms(),
                                from_peer: format!("egress->{}", peer.org),
                                id: String::new(),
                                reason: format!("dropped before sending (seq {seq}): {why}"),
                            })
                            .await;
                        undecodable.push(seq);
                        continue;
                    }
                    size += bytes.len() + 16;
                    envelopes.push(env);
                    seqs.push(seq);
                }
                Err(e) => {
                    warn!(msg.seq = seq, error = %e, "stored envelope undecodable; dropping from outbox");
                    undecodable.push(seq);
                }
            }
        }
        if !undecodable.is_empty() {
            let _ = store.ack_outbox(&peer.org, undecodable).await;
        }
        if envelopes.is_empty() {
            if stalled && sleep_or_stop(backoff, &stopping).await {
                break;
            }
            continue;
        }
        // A revocation loaded after the link was set up must stop delivery
        // over the existing connection too: hold the outbox and reconnect
        // (the new handshake fails while the certificate stays revoked).
        let revoked = peer
            .link
            .lock()
            .ok()
            .and_then(|l| l.peer.clone())
            .is_some_and(|p| tls.revocations.identity_revoked(&p));
        if revoked {
            peer.update(|s| {
                s.connected = false;
                s.consecutive_failures += 1;
                s.last_error =
                    "peer certificate revoked by the federation CA; holding its outbox".into();
            });
            warn!("peer certificate revoked; holding its outbox");
            // Forget the revoked identity: the next attempt handshakes anew
            // and succeeds only with a certificate that is not revoked.
            if let Ok(mut l) = peer.link.lock() {
                *l = LinkInfo::default();
            }
            if let Ok(c) = connect() {
                client = c;
            }
            if sleep_or_stop(jitter(max), &stopping).await {
                break;
            }
            continue;
        }
        let n = envelopes.len();
        let call = client.deliver(DeliverRequest { envelopes });
        let result = tokio::select! {
            r = tokio::time::timeout(Duration::from_millis(cfg.timeout_ms), call) => r,
            () = stopping.cancelled() => break,
        };
        let failure = match result {
            Ok(Ok(resp)) => {
                let results = resp.into_inner().results;
                if results.len() != n {
                    Some(format!(
                        "peer answered {} results for {n} envelopes",
                        results.len()
                    ))
                } else if let Some(first_retry) = results
                    .iter()
                    .position(|r| r.outcome == DeliveryOutcome::RetryLater as i32)
                {
                    // The peer cannot decide yet (its cluster log is behind);
                    // everything from the first such envelope on is resent.
                    let done: Vec<u64> = seqs[..first_retry].to_vec();
                    if let Some(last) = done.last() {
                        sent_upto = *last;
                    }
                    let events = delivery_records(&results[..first_retry], &peer.org);
                    let _ = store.ack_outbox_audited(&peer.org, done, events).await;
                    if first_retry > 0 {
                        // Progress (e.g. a rate limit let part of the batch through): pace
                        // at the shortest delay instead of backing off further.
                        backoff = min;
                    }
                    Some(format!(
                        "peer asked to retry later: {}",
                        results[first_retry].reason
                    ))
                } else {
                    for r in &results {
                        if r.outcome == DeliveryOutcome::Rejected as i32 {
                            warn!(msg.id = %r.id, reason = %r.reason, "peer rejected a message");
                            let _ = store
                                .record_rejection(Rejection {
                                    at_ms: crate::clock::now_ms(),
                                    from_peer: format!("egress->{}", peer.org),
                                    id: r.id.clone(),
                                    reason: format!("rejected by {}: {}", peer.org, r.reason),
                                })
                                .await;
                        }
                    }
                    debug!(count = n, "delivered");
                    state
                        .metrics
                        .add(crate::metrics::DELIVERIES, &[("peer", &peer.org)], n as u64);
                    sent_upto = seqs.last().copied().unwrap_or(sent_upto);
                    let events = delivery_records(&results, &peer.org);
                    // The "delivered" records commit with the acknowledgement (not
                    // fsynced on its own; after a crash the envelope is sent again and
                    // recorded again).
                    let (store, org) = (store.clone(), peer.org.clone());
                    state.tasks.spawn_to_end(tracing::Span::current(), async move {
                        if let Err(e) = store.ack_outbox_later(&org, seqs, events).await {
                            warn!(error = %e, "acknowledging outbox failed; entries will be resent after a restart");
                        }
                    });
                    backoff = min;
                    peer.update(|s| {
                        s.connected = true;
                        s.consecutive_failures = 0;
                        s.last_error.clear();
                        s.last_success_ms = crate::clock::now_ms();
                    });
                    None
                }
            }
            Ok(Err(status)) => Some(format!("{}: {}", status.code(), status.message())),
            Err(_) => Some(format!("Deliver timed out after {} ms", cfg.timeout_ms)),
        };
        if let Some(err) = failure {
            peer.update(|s| {
                s.connected = false;
                s.consecutive_failures += 1;
                s.last_error = err.clone();
            });
            let failures = peer.stats().consecutive_failures;
            if failures == 1 || failures.is_power_of_two() {
                warn!(error = %err, failures, "delivery failed; will retry");
            }
            let jittered = jitter(backoff);
            if sleep_or_stop(jittered, &stopping).await {
                break;
            }
            backoff = (backoff * 2).min(max);
        }
    }
    info!("delivery worker stopped");
}

/// Full jitter between half and all of `d`.
fn jitter(d: Duration) -> Duration {
    let ms = d.as_millis().max(2) as u64;
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
}

/// The audit records of a delivered batch, one per envelope, as the peer answered.
fn delivery_records(
    results: &[bluewire_proto::v1::DeliveryResult],
    peer: &str,
) -> Vec<crate::audit::AuditEvent> {
    results
        .iter()
        .map(|r| {
            if r.outcome == DeliveryOutcome::Rejected as i32 {
                crate::audit::AuditEvent::rejected(&r.id, peer, "peer", &r.reason)
            } else {
                crate::audit::AuditEvent::delivered(&r.id, peer)
            }
        })
        .collect()
}

/// Sleep, returning true if the node was told to stop meanwhile.
async fn sleep_or_stop(d: Duration, stopping: &crate::tasks::Stopping) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        () = stopping.cancelled() => true,
    }
}
