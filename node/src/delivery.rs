//! Delivery: one worker per peer drains that peer's durable outbox in order,
//! hands batches to the peer's Federation.Deliver (a large batch as two calls at once,
//! so the peer may store the later half first), removes what the peer
//! acknowledged (accepted, duplicate or permanently rejected) and retries the
//! rest with exponential backoff and jitter. A link that fails (timeout, keepalive,
//! transport error) is dropped, never waited on, and redialled on a short cadence
//! ([`Dialing`]) so delivery resumes promptly when the network heals. The outbox lives in the store,
//! so nothing queued is lost across a crash; delivery is at-least-once on the
//! wire and receivers deduplicate by id. Never decides who receives what:
//! that is `routing`'s job, done before a message is queued.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bluewire_proto::v1::federation_client::FederationClient;
use bluewire_proto::v1::{Content, DeliverRequest, DeliveryOutcome, Envelope};
use prost::Message;
use rand::Rng;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use crate::config::DeliveryConfig;
pub use crate::peers::{PeerLink, PeerStats};

use crate::state::NodeState;
use crate::store::Rejection;
use crate::tls::LinkInfo;

mod relaying;

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
    if let Err(e) = connect() {
        warn!(error = %e, "peer endpoint unusable; not delivering to it");
        peer.update(|s| s.last_error = e.to_string());
        return;
    }
    // The link in use; `None` after a transport failure: the next pass dials afresh
    // (a stalled HTTP/2 connection is never waited on again).
    let mut link: Option<FederationClient<Channel>> = None;
    let mut dialing = Dialing::new(&cfg);
    let min = Duration::from_millis(cfg.retry_min_ms);
    let max = Duration::from_millis(cfg.retry_max_ms);
    let mut backoff = min;
    // Highest seq handed to the peer and acknowledged by it. Acks are
    // committed in the background, so reads start after this, not at the
    // outbox head; a restart begins at 0 and may resend what was acked but
    // not yet durable (receivers deduplicate).
    let mut sent_upto = 0u64;
    // Where the last outbox read started (`Store::outbox_queued_from`); from the start again
    // with `sent_upto`.
    let mut scan = crate::store::OutboxScan::default();
    let mut store_generation = store.generation();
    // Envelopes per Deliver call. A call that times out or loses its connection is retried
    // with half as many (a slow link never livelocks on a batch it cannot carry in time);
    // a call that finishes within half the timeout lets it grow back to `batch_size`.
    let mut batch_cap = cfg.batch_size;
    let timeout = Duration::from_millis(cfg.timeout_ms);
    // While the direct link is down (since `down_since`) for longer than `relay_after_ms`,
    // queued envelopes also go through other members (`relaying`); this node keeps its own
    // until the peer acknowledges them directly. `handed`: own seqs a relay took on during
    // this outage (not handed again).
    let mut down_since: Option<tokio::time::Instant> = None;
    let mut handed = std::collections::HashSet::new();
    // Carried envelopes per call: halved after a call that timed out, grown back after quick ones.
    let mut carried_cap = cfg.batch_size;
    let round = relaying::Round {
        state: &state,
        peer: &peer,
        cfg: &cfg,
        max_request_bytes,
    };
    // Whether other workers were last told this link works (they relay through it then).
    let mut shared = false;
    info!(peer.endpoint = %peer.endpoint, "delivery worker started");
    // The DeliverStream on `link`, once one was opened (a peer that serves it), and until
    // when the peer refused one.
    let mut dstream: Option<DeliverStream> = None;
    let mut stream_refused_until: Option<tokio::time::Instant> = None;
    loop {
        if link.is_none() {
            dstream = None;
            stream_refused_until = None;
        }
        if link.is_some() != shared {
            peer.set_client(&link);
            shared = link.is_some();
        }
        if stopping.is_cancelled() {
            break;
        }
        // Routing needs the peer's CA-asserted profile, learnt from the handshake (eagerly,
        // so publishes can decide at once): every new link starts with a Hello.
        if link.is_none() && !state.directory.knows(&peer.org) {
            match dialing.link(&peer, &state, &cfg, &connect, None).await {
                Dial::Up(c) => {
                    link = Some(c);
                    down_since = None;
                    handed.clear();
                }
                Dial::NotYet | Dial::Stopped => break,
            }
        }
        // A store reopened after an I/O error may have lost acknowledgements that were not
        // yet durable: those entries are back in the outbox, below `sent_upto`.
        let generation = store.generation();
        if peer.rescan.swap(false, Ordering::AcqRel) || generation != store_generation {
            sent_upto = 0;
            scan = crate::store::OutboxScan::default();
            store_generation = generation;
        }
        let batch = match store.outbox_queued_from(&peer.org, sent_upto, batch_cap, &mut scan) {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "reading outbox failed");
                if sleep_or_stop(backoff, &stopping).await {
                    break;
                }
                continue;
            }
        };
        // Envelopes this node carries for other members (relay), to this peer.
        let carried = store.relay_depth(&peer.org).unwrap_or(0);
        if batch.is_empty() && carried == 0 {
            if !idle(&peer.notify, &stopping).await {
                break;
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
        // Entries routing still allows, counted once for the batch.
        let mut allowed = 0u64;
        for queued in batch {
            let (seq, len) = (queued.seq, queued.wire_len());
            if size + len + 16 > max_request_bytes && !envelopes.is_empty() {
                break;
            }
            // Content and signature are views of the bytes read, not copies.
            match queued.decode() {
                Ok(env) => {
                    let rechecked = crate::outbound::recheck(
                        &env,
                        &peer.org,
                        state.as_ref(),
                        &state.router,
                        crate::clock::now_ms(),
                    );
                    match &rechecked {
                        Ok(()) => allowed += 1,
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
                                    Content::decode(&env.content[..])
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
                    size += len + 16;
                    envelopes.push(env);
                    seqs.push(seq);
                }
                Err(e) => {
                    warn!(msg.seq = seq, error = %e, "stored envelope undecodable; dropping from outbox");
                    undecodable.push(seq);
                }
            }
        }
        state.metrics.decisions("egress", "allowed", true, allowed);
        if !undecodable.is_empty() {
            let _ = store.ack_outbox(&peer.org, undecodable).await;
        }
        if envelopes.is_empty() && carried == 0 {
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
            link = None;
            if sleep_or_stop(jitter(max), &stopping).await {
                break;
            }
            continue;
        }
        // No link: dial for a while. Queued entries are re-checked (and dropped when no
        // longer routable) between rounds, however long the peer stays unreachable.
        if link.is_none() {
            match dialing
                .link(&peer, &state, &cfg, &connect, Some(jitter(backoff)))
                .await
            {
                Dial::Up(c) => {
                    link = Some(c);
                    down_since = None;
                    handed.clear();
                }
                Dial::Stopped => break,
                Dial::NotYet => {
                    let since = *down_since.get_or_insert_with(tokio::time::Instant::now);
                    let relaying = cfg.relay_after_ms > 0
                        && since.elapsed() >= Duration::from_millis(cfg.relay_after_ms);
                    backoff = (backoff * 2).min(max);
                    if relaying {
                        let took = tokio::select! {
                            n = round.run(sent_upto, &mut handed) => n,
                            () = stopping.cancelled() => break,
                        };
                        // While relaying, new messages go through a relay within a few
                        // seconds, whatever the backoff of the direct link.
                        backoff = if took > 0 {
                            min
                        } else {
                            backoff.min(Duration::from_secs(5))
                        };
                    }
                    continue;
                }
            }
        }
        let Some(client) = link.as_mut() else {
            continue;
        };
        // What this node carries for other members goes in calls of its own, never holding
        // back (or held back by) this node's own messages.
        if carried > 0 {
            let started = tokio::time::Instant::now();
            let outcome = round.hand_on(client, carried_cap).await;
            let quickly = started.elapsed() < timeout / 2;
            let progress = match outcome {
                Err(relaying::HandOn::Link(e)) => {
                    carried_cap =
                        next_batch_cap(carried_cap, carried_cap, cfg.batch_size, true, false);
                    link = None;
                    if let Some(failures) = peer.failed(&e) {
                        warn!(error = %e, failures, "handing on carried envelopes failed; will retry");
                    }
                    continue;
                }
                Err(relaying::HandOn::Answered(e) | relaying::HandOn::Local(e)) => {
                    // The link works: this node's own messages go on regardless.
                    warn!(error = %e, "handing on carried envelopes failed; will retry");
                    false
                }
                Ok(progress) => {
                    carried_cap =
                        next_batch_cap(carried_cap, carried_cap, cfg.batch_size, false, quickly);
                    progress
                }
            };
            if envelopes.is_empty() {
                if !progress {
                    if sleep_or_stop(jitter(backoff), &stopping).await {
                        break;
                    }
                    backoff = (backoff * 2).min(max);
                }
                continue;
            }
        }
        let n = envelopes.len();
        let Some(client) = link.as_mut() else {
            continue;
        };
        // A large batch goes out as two calls at once over the same connection: the peer
        // checks one half while it commits the other, so neither core idles while the
        // other works (catch-up after an outage, bursts). Small batches go as one call.
        let (first, second) = split_batch(envelopes, seqs);
        // Each batch signature once per call, to a peer that puts them back.
        let shares = peer.shares_signatures.load(Ordering::Acquire);
        let call = |envelopes: Vec<Envelope>| {
            let mut c = client.clone();
            let request = deliver_request(envelopes, shares);
            async move { tokio::time::timeout(timeout, c.deliver(request)).await }
        };
        let streamed = second.is_none()
            && peer.streams_deliveries.load(Ordering::Acquire)
            && stream_refused_until.is_none_or(|t| tokio::time::Instant::now() >= t);
        let started = tokio::time::Instant::now();
        let both = async {
            if streamed {
                let (envelopes, seqs) = first;
                let request = deliver_request(envelopes, shares);
                let r = tokio::time::timeout(
                    timeout,
                    over_stream(
                        &mut dstream,
                        &mut stream_refused_until,
                        client.clone(),
                        request,
                    ),
                )
                .await;
                if r.is_err() {
                    // Timed out with a request in flight: its answer must never be read as
                    // the next one's.
                    dstream = None;
                }
                return vec![(r, seqs)];
            }
            let first_call = call(first.0);
            let second_call = second.map(|(e, s)| (call(e), s));
            match second_call {
                Some((c, s)) => {
                    let (a, b) = tokio::join!(first_call, c);
                    vec![(a, first.1), (b, s)]
                }
                None => vec![(first_call.await, first.1)],
            }
        };
        let results = tokio::select! {
            r = both => r,
            () = stopping.cancelled() => break,
        };
        state
            .metrics
            .stage(crate::metrics::Stage::DeliverCall, started.elapsed(), 1);
        // A call the transport gave up on (a timeout, or a keepalive ping that queued
        // behind the batch on a slow link and went unanswered) is retried with fewer.
        let failed_in_flight = results.iter().any(|(result, _)| match result {
            Err(_) => true,
            // Too many envelopes or too many bytes for the peer's limits (a peer whose
            // `limits.max_batch` or `max_request_bytes` is below ours): fewer next time.
            Ok(Err(status)) => {
                link_failed(status)
                    || matches!(
                        status.code(),
                        tonic::Code::ResourceExhausted | tonic::Code::OutOfRange
                    )
            }
            Ok(Ok(_)) => false,
        });
        batch_cap = next_batch_cap(
            batch_cap,
            n,
            cfg.batch_size,
            failed_in_flight,
            started.elapsed() < timeout / 2,
        );
        // The parts in order. `sent_upto` moves only over a prefix of the outbox that went
        // through; what a later part delivered is acknowledged all the same (a resend of it
        // is answered as a duplicate).
        let mut failure = None;
        let mut in_order = true;
        for (result, seqs) in results {
            let n = seqs.len();
            let part_failure = match result {
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
                        if in_order && let Some(last) = done.last() {
                            sent_upto = *last;
                        }
                        let events = delivery_records(&results[..first_retry], &peer.org);
                        let _ = store.ack_outbox_audited(&peer.org, done, events).await;
                        if first_retry > 0 && in_order {
                            // Progress (e.g. a rate limit let part of the batch through): pace
                            // at the shortest delay instead of backing off further.
                            backoff = min;
                        }
                        // The link works: the peer answered.
                        peer.update(|s| {
                            s.connected = true;
                            s.via = None;
                        });
                        down_since = None;
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
                        state.metrics.add(
                            crate::metrics::DELIVERIES,
                            &[("peer", &peer.org)],
                            n as u64,
                        );
                        if in_order {
                            sent_upto = seqs.last().copied().unwrap_or(sent_upto);
                        }
                        let events = delivery_records(&results, &peer.org);
                        // The "delivered" records commit with the acknowledgement (not
                        // fsynced on its own; after a crash the envelope is sent again and
                        // recorded again).
                        // Not waited for: the writer holds it up to 20 ms to commit it
                        // with the next write. If that commit fails (the writer logs it),
                        // these entries are sent again after a restart, and deduplicated.
                        store.ack_outbox_detached(&peer.org, seqs, events);
                        // A later half that went through while the head of the outbox is
                        // stuck is progress, not health: the backoff keeps growing.
                        if in_order {
                            backoff = min;
                            peer.update(|s| {
                                s.connected = true;
                                s.consecutive_failures = 0;
                                s.last_error.clear();
                                s.last_success_ms = crate::clock::now_ms();
                                s.via = None;
                            });
                            down_since = None;
                            handed.clear();
                        }
                        None
                    }
                }
                Ok(Err(status)) => {
                    if link_failed(&status) {
                        link = None;
                    }
                    Some(format!("{}: {}", status.code(), status.message()))
                }
                Err(_) => {
                    // The connection may be stalled (a cut link): replace it. Or the link is
                    // too slow for this batch: the next call carries at most `batch_cap`.
                    link = None;
                    Some(format!(
                        "Deliver of {n} envelopes timed out after {} ms; next call carries at most {batch_cap}",
                        cfg.timeout_ms
                    ))
                }
            };
            if part_failure.is_some() {
                in_order = false;
                failure = failure.or(part_failure);
            }
        }
        if let Some(err) = failure {
            let answered = link.is_some();
            if answered {
                // The peer answered (it is reachable): say why, without marking it down.
                let mut failures = 0;
                peer.update(|s| {
                    s.consecutive_failures += 1;
                    s.last_error.clone_from(&err);
                    failures = s.consecutive_failures;
                });
                if failures == 1 || failures.is_power_of_two() {
                    warn!(error = %err, failures, "delivery failed; will retry");
                }
            } else if let Some(failures) = peer.failed(&err) {
                warn!(error = %err, failures, "delivery failed; will retry");
            }
            // A failed link is redialled at once (`Dialing` paces the attempts); a peer
            // that answered but could not take the batch is given time.
            if link.is_some() {
                if sleep_or_stop(jitter(backoff), &stopping).await {
                    break;
                }
                backoff = (backoff * 2).min(max);
            }
        }
    }
    info!("delivery worker stopped");
}

/// Below this many envelopes a batch goes out as one call.
const SPLIT_FROM: usize = 32;

/// One delivery batch: the envelopes and their outbox seqs.
type Part = (Vec<Envelope>, Vec<u64>);

/// A batch as the Deliver calls that carry it, in outbox order: two halves from
/// [`SPLIT_FROM`] envelopes on, else one.
fn split_batch(mut envelopes: Vec<Envelope>, mut seqs: Vec<u64>) -> (Part, Option<Part>) {
    if envelopes.len() < SPLIT_FROM {
        return ((envelopes, seqs), None);
    }
    let half = envelopes.len().div_ceil(2);
    let later = (envelopes.split_off(half), seqs.split_off(half));
    ((envelopes, seqs), Some(later))
}

/// Envelopes the next Deliver call may carry, after a call of `sent` envelopes that failed
/// in flight (timed out, or its connection broke) or not, and finished `quickly` (within
/// half the timeout) or not: halve what did not get through (never below one), double
/// after a quick call (never above `max`), else keep.
fn next_batch_cap(cap: usize, sent: usize, max: usize, failed: bool, quickly: bool) -> usize {
    if failed {
        (sent / 2).max(1)
    } else if quickly {
        cap.saturating_mul(2).min(max)
    } else {
        cap
    }
}

/// Whether a failed call says the connection itself is gone or unusable (as opposed to
/// the peer answering with a refusal): then the link is replaced.
fn link_failed(status: &tonic::Status) -> bool {
    // A status the peer sent has no source; one made here from a transport error has.
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    ) && std::error::Error::source(status).is_some()
}

/// What [`Dialing::link`] came back with.
enum Dial {
    Up(FederationClient<Channel>),
    /// No link within the time given; attempts still pending go on in the background.
    NotYet,
    Stopped,
}

/// A Deliver request of `envelopes`, each batch signature once when the peer `shares`
/// signatures (puts them back).
fn deliver_request(mut envelopes: Vec<Envelope>, shares: bool) -> DeliverRequest {
    let (signatures, signature_refs) = if shares {
        crate::signature_table::share(&mut envelopes)
    } else {
        (Vec::new(), Vec::new())
    };
    DeliverRequest {
        envelopes,
        signatures,
        signature_refs,
    }
}

/// An open DeliverStream to a peer: one request at a time, each answered in order.
struct DeliverStream {
    requests: tokio::sync::mpsc::Sender<DeliverRequest>,
    responses: tonic::Streaming<bluewire_proto::v1::DeliverResponse>,
}

impl DeliverStream {
    async fn open(client: &mut FederationClient<Channel>) -> Result<Self, tonic::Status> {
        let (requests, rx) = tokio::sync::mpsc::channel(1);
        let responses = client
            .deliver_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Self {
            requests,
            responses,
        })
    }

    /// One request and its answer as a unary Deliver gives it; `Err` when the stream broke
    /// or ended instead (it must not be used again).
    async fn call(&mut self, request: DeliverRequest) -> Result<DeliverAnswer, tonic::Status> {
        self.requests
            .send(request)
            .await
            .map_err(|_| tonic::Status::unavailable("the delivery stream closed"))?;
        match self.responses.message().await? {
            Some(r) if r.code == 0 => Ok(Ok(tonic::Response::new(r))),
            Some(r) => Ok(Err(tonic::Status::new(tonic::Code::from(r.code), r.error))),
            None => Err(tonic::Status::unavailable(
                "the peer ended the delivery stream",
            )),
        }
    }
}

/// What a Deliver call answers.
type DeliverAnswer = Result<tonic::Response<bluewire_proto::v1::DeliverResponse>, tonic::Status>;

/// How long a worker whose peer refused it a delivery stream sends calls before it asks again.
const STREAM_REFUSED_FOR: Duration = Duration::from_secs(30);

/// One request over `stream` (opened first if it is not), the answer as a unary Deliver's.
/// A stream that broke or that the peer ended is dropped, and the request sent once more on
/// a fresh one (a request the old one stored is answered DUPLICATE). A peer that refuses a
/// stream gets the request as a call, and calls for [`STREAM_REFUSED_FOR`].
async fn over_stream(
    stream: &mut Option<DeliverStream>,
    refused_until: &mut Option<tokio::time::Instant>,
    mut client: FederationClient<Channel>,
    request: DeliverRequest,
) -> DeliverAnswer {
    for attempt in 0..2 {
        let open = match stream {
            Some(open) => open,
            None => match DeliverStream::open(&mut client).await {
                Ok(open) => stream.insert(open),
                Err(status) if !link_failed(&status) => {
                    *refused_until = Some(tokio::time::Instant::now() + STREAM_REFUSED_FOR);
                    return client.deliver(request).await;
                }
                Err(status) => return Err(status),
            },
        };
        match open.call(request.clone()).await {
            Ok(answer) => return answer,
            Err(broken) => {
                *stream = None;
                if attempt == 1 || link_failed(&broken) {
                    return Err(broken);
                }
            }
        }
    }
    Err(tonic::Status::unavailable(
        "the delivery stream broke twice",
    ))
}

/// A dialled client, with the features its Hello listed or why it failed.
type Attempt = (FederationClient<Channel>, Result<Vec<String>, String>);

/// Connection attempts to one peer. A new attempt (TCP, TLS, Hello, each bounded by
/// `timeout_ms`) starts every `reconnect_ms` while earlier ones are still pending, so a
/// link that comes back is used within about `reconnect_ms` of its return, however long
/// attempts into a cut network take to time out. Attempts outlive a [`Dialing::link`] call
/// that gave up, so the cadence holds across the worker's re-check rounds.
struct Dialing {
    attempts: tokio::task::JoinSet<Attempt>,
    tick: tokio::time::Interval,
    max_pending: usize,
}

impl Dialing {
    fn new(cfg: &DeliveryConfig) -> Self {
        let mut tick = tokio::time::interval(Duration::from_millis(cfg.reconnect_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            attempts: tokio::task::JoinSet::new(),
            tick,
            // Attempts into a cut network hang until their timeout: enough overlap that one
            // starts every `reconnect_ms` all the same.
            max_pending: (cfg.timeout_ms / cfg.reconnect_ms).clamp(1, 64) as usize,
        }
    }

    /// A link that answered Hello with the identity it must have, waiting at most `patience`
    /// (`None`: until one does or the node stops). Learns the peer's profile for routing.
    async fn link(
        &mut self,
        peer: &Arc<PeerLink>,
        state: &Arc<NodeState>,
        cfg: &DeliveryConfig,
        connect: &impl Fn() -> Result<FederationClient<Channel>, crate::peers::ConnectError>,
        patience: Option<Duration>,
    ) -> Dial {
        let stopping = state.tasks.stopping();
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let give_up = async {
            match patience {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(give_up);
        loop {
            tokio::select! {
                _ = self.tick.tick(), if self.attempts.len() < self.max_pending => {
                    match connect() {
                        Ok(mut c) => {
                            self.attempts.spawn(async move {
                                let r = match tokio::time::timeout(
                                    timeout,
                                    c.hello(bluewire_proto::v1::HelloRequest {}),
                                )
                                .await
                                {
                                    Ok(Ok(hello)) => Ok(hello.into_inner().features),
                                    Ok(Err(s)) => Err(format!("{}: {}", s.code(), s.message())),
                                    Err(_) => Err(format!(
                                        "no answer within {} ms (connect, TLS, Hello)",
                                        timeout.as_millis()
                                    )),
                                };
                                (c, r)
                            });
                        }
                        Err(e) => peer.update(|s| s.last_error = e.to_string()),
                    }
                }
                Some(done) = self.attempts.join_next() => {
                    let Ok((client, r)) = done else { continue };
                    let learned = peer.link.lock().ok().and_then(|l| match &l.peer {
                        Some(crate::pki::PeerIdentity::Node { profile, .. }) => {
                            Some((profile.clone(), l.cert_der.clone()))
                        }
                        _ => None,
                    });
                    let err = match (r, learned) {
                        (Ok(features), Some((profile, der))) => {
                            // The first link wins; the others (finished or not) are dropped, so
                            // none of them can be taken up later in place of a fresh dial.
                            self.attempts = tokio::task::JoinSet::new();
                            // A peer that was issued a new certificate (new keys) since is
                            // learnt again (an older one never replaces a newer: learn).
                            if !state.directory.holds_cert(&der) {
                                state.directory.learn(&state.store, &profile, &der).await;
                            }
                            peer.shares_signatures.store(
                                features.iter().any(|f| f == crate::signature_table::FEATURE),
                                Ordering::Release,
                            );
                            peer.streams_deliveries.store(
                                features.iter().any(|f| f == crate::api::DELIVER_STREAM),
                                Ordering::Release,
                            );
                            peer.update(|s| s.connected = true);
                            return Dial::Up(client);
                        }
                        (Err(e), _) => e,
                        (Ok(_), None) => "peer identity unknown after handshake".to_string(),
                    };
                    if let Some(failures) = peer.failed(&err) {
                        warn!(error = %err, failures, "peer unreachable; dialling again every {} ms", cfg.reconnect_ms);
                    }
                }
                () = &mut give_up => return Dial::NotYet,
                () = stopping.cancelled() => return Dial::Stopped,
            }
        }
    }
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

/// An idle worker waits for its next wake (`notify`) and goes at once: it does not linger
/// (only the signing thread does, [`crate::linger`]). False: stopping.
async fn idle(notify: &tokio::sync::Notify, stopping: &crate::tasks::Stopping) -> bool {
    tokio::select! {
        _ = notify.notified() => true,
        () = stopping.cancelled() => false,
    }
}

/// Sleep, returning true if the node was told to stop meanwhile.
async fn sleep_or_stop(d: Duration, stopping: &crate::tasks::Stopping) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        () = stopping.cancelled() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::{Envelope, next_batch_cap, split_batch};

    /// The worker's idle wait, on tokio's paused clock: every wake goes at once, however
    /// close to the previous one (a worker does not linger), and stopping ends a wait at once.
    #[tokio::test(start_paused = true)]
    async fn an_idle_worker_goes_at_once_on_every_wake_and_stops_at_once() {
        use std::time::Duration;
        use tokio::time::Instant;
        let notify = tokio::sync::Notify::new();
        let stopping = crate::tasks::Stopping::new();
        for i in 0..3 {
            // Notify before waiting stores a permit: the wait that follows returns at once.
            notify.notify_one();
            let started = Instant::now();
            assert!(super::idle(&notify, &stopping).await);
            assert_eq!(started.elapsed(), Duration::ZERO, "wake {i} waited");
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        // Stopping while idle ends the wait at once.
        let waiting = super::idle(&notify, &stopping);
        let stop = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            stopping.cancel();
        };
        let started = Instant::now();
        let (go, ()) = tokio::join!(waiting, stop);
        assert!(!go, "a stopped worker went on");
        assert_eq!(started.elapsed(), Duration::from_millis(50));
    }

    #[test]
    fn a_large_batch_goes_as_two_halves_in_outbox_order_a_small_one_whole() {
        let batch = |n: u64| {
            let envs = (0..n)
                .map(|i| Envelope {
                    key_id: i.to_string(),
                    ..Default::default()
                })
                .collect::<Vec<_>>();
            (envs, (1..=n).collect::<Vec<_>>())
        };
        let (e, s) = batch(31);
        let (first, second) = split_batch(e, s);
        assert_eq!(first.1, (1..=31).collect::<Vec<_>>());
        assert!(second.is_none());
        let (e, s) = batch(33);
        let (first, second) = split_batch(e, s);
        let second = second.expect("33 envelopes go as two calls");
        assert_eq!(first.1, (1..=17).collect::<Vec<_>>());
        assert_eq!(second.1, (18..=33).collect::<Vec<_>>());
        // Each envelope stays with its seq.
        for (env, seq) in first
            .0
            .iter()
            .chain(&second.0)
            .zip(first.1.iter().chain(&second.1))
        {
            assert_eq!(env.key_id, (seq - 1).to_string());
        }
    }

    #[test]
    fn a_batch_that_timed_out_is_halved_and_a_quick_one_grows_back() {
        // Timed out: half of what was sent (not of the cap: a short outbox sent fewer).
        assert_eq!(next_batch_cap(256, 256, 256, true, false), 128);
        assert_eq!(next_batch_cap(256, 40, 256, true, false), 20);
        assert_eq!(next_batch_cap(256, 3, 256, true, true), 1);
        assert_eq!(next_batch_cap(1, 1, 256, true, false), 1);
        // Quick: doubles up to the configured size.
        assert_eq!(next_batch_cap(16, 16, 256, false, true), 32);
        assert_eq!(next_batch_cap(200, 200, 256, false, true), 256);
        assert_eq!(next_batch_cap(256, 256, 256, false, true), 256);
        // Slow but in time: unchanged.
        assert_eq!(next_batch_cap(16, 16, 256, false, false), 16);
    }
}
