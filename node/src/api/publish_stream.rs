//! `Client.PublishStream`: many publishes on one stream. Each request is judged, signed and
//! stored by `outbound::publish`, as a unary Publish is, after the checks the gate makes
//! once per call, made here once per request: the caller's certificate not revoked since
//! the stream opened (a revoked caller's stream ends), and the per-user rate limit. Results
//! go back in request order.
//!
//! Owns: the bounds on one stream (requests worked on at once, [`IN_FLIGHT`]; their bytes,
//! [`MAX_PENDING_BYTES`]), and cutting off a caller that stops taking results (after
//! `feed.slow_subscriber_ms`, as a slow subscriber is). The loop keeps working on accepted
//! requests while it waits for the caller, and finishes them before the stream ends, so a
//! request it read is stored (or refused) whatever the caller does next.
//!
//! It must never: answer a request out of order, read requests without bound while results
//! are not taken, let one failed request end the stream, or hold up the node's shutdown.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bluewire_proto::v1 as pb;
use futures_util::FutureExt;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Status, Streaming};

use crate::pki::PeerIdentity;
use crate::state::NodeState;

/// Requests of one stream worked on or answered but not yet taken, at most.
pub const IN_FLIGHT: usize = 256;
/// Bytes of the requests one stream has in flight, at most (one larger request passes alone).
pub const MAX_PENDING_BYTES: usize = 16 << 20;
/// Results handed to the stream and not yet taken by the transport.
const RESULTS_BUFFERED: usize = 64;

pub type Results = Pin<Box<dyn Stream<Item = Result<pb::PublishResult, Status>> + Send>>;

/// Starts working on `input` as `user`, whose verified certificate is `identity`.
pub fn start(
    st: Arc<NodeState>,
    user: String,
    identity: Arc<PeerIdentity>,
    input: Streaming<pb::PublishRequest>,
) -> Results {
    let (tx, rx) = mpsc::channel(RESULTS_BUFFERED);
    // Why the stream ended early, given to the caller after the results it was sent.
    let ended: Arc<Mutex<Option<Status>>> = Arc::default();
    let span = tracing::info_span!("publish_stream", user = %user);
    let tasks = st.tasks.clone();
    tasks.spawn_to_end(span, run(st, user, identity, input, tx, ended.clone()));
    let end = futures_util::stream::once(async move {
        ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .map(Err)
    })
    .filter_map(|e| e);
    Box::pin(ReceiverStream::new(rx).chain(end))
}

async fn run(
    st: Arc<NodeState>,
    user: String,
    identity: Arc<PeerIdentity>,
    mut input: Streaming<pb::PublishRequest>,
    tx: mpsc::Sender<Result<pb::PublishResult, Status>>,
    ended: Arc<Mutex<Option<Status>>>,
) {
    let stopping = st.tasks.stopping();
    let slow = Duration::from_millis(st.config.feed.slow_subscriber_ms);
    let end = |status: Status| {
        *ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(status);
    };
    // Requests being worked on, in order; polled by this loop whatever the caller does.
    let mut pending = futures_util::stream::FuturesOrdered::new();
    // Results done and not yet handed to the caller, in order.
    let mut ready: VecDeque<pb::PublishResult> = VecDeque::new();
    let mut pending_bytes = 0usize;
    let mut index = 0u64;
    let mut reading = true;
    // The caller closed its side: everything it sent was read.
    let mut input_done = false;
    // Why the stream ends once what was accepted is answered (a revoked certificate, a
    // request that could not be read).
    let mut refused: Option<Status> = None;
    // Since when the oldest waiting result has waited for the caller.
    let mut waiting_since = Instant::now();
    loop {
        let in_flight = pending.len() + ready.len();
        let room = in_flight < IN_FLIGHT && (in_flight == 0 || pending_bytes < MAX_PENDING_BYTES);
        let stop = stopping.is_cancelled();
        tokio::select! {
            biased;
            Some((result, bytes)) = pending.next(), if !pending.is_empty() => {
                pending_bytes -= bytes;
                if ready.is_empty() {
                    waiting_since = Instant::now();
                }
                ready.push_back(result);
            }
            permit = tx.reserve(), if !ready.is_empty() && !stop => {
                let Ok(permit) = permit else {
                    // The caller went away: what was read is still stored.
                    while pending.next().await.is_some() {}
                    return;
                };
                if let Some(result) = ready.pop_front() {
                    permit.send(Ok(result));
                }
                waiting_since = Instant::now();
            }
            () = tokio::time::sleep_until((waiting_since + slow).into()), if !ready.is_empty() && !stop => {
                let answered = index - (ready.len() + pending.len()) as u64;
                while pending.next().await.is_some() {}
                end(Status::resource_exhausted(format!(
                    "results not taken for {} ms (feed.slow_subscriber_ms): the node stopped \
                     this stream after {} results. The requests it had read are stored whether \
                     or not their result reached you: look a message up by id before sending \
                     it again",
                    slow.as_millis(),
                    answered
                )));
                return;
            }
            next = input.message(), if reading && room && !stop => {
                match next {
                    Ok(Some(r)) => {
                        if st.tls.revocations.identity_revoked(&identity) {
                            reading = false;
                            refused = Some(Status::permission_denied(format!(
                                "your certificate has been revoked by the federation CA; \
                                 requests from position {index} on were not taken"
                            )));
                            continue;
                        }
                        let bytes = r.encoded_len();
                        pending_bytes += bytes;
                        let work = one(st.clone(), user.clone(), index, r);
                        pending.push_back(work.map(move |result| (result, bytes)));
                        index += 1;
                    }
                    Ok(None) => {
                        reading = false;
                        input_done = true;
                    }
                    Err(status) => {
                        reading = false;
                        refused = Some(status);
                    }
                }
            }
            () = stopping.cancelled(), if reading => reading = false,
            else => {
                // Nothing is being worked on; the caller has all results, or the node stops.
                if stop {
                    while let Some(result) = ready.pop_front() {
                        if tx.try_send(Ok(result)).is_err() {
                            break;
                        }
                    }
                    if !ready.is_empty()
                        || !(input_done
                            || matches!(input.message().now_or_never(), Some(Ok(None))))
                    {
                        end(Status::unavailable(format!(
                            "the node is shutting down; requests from position {} on were not \
                             answered (those it read are stored): look a message up by id \
                             before sending it again",
                            index - (ready.len() as u64)
                        )));
                    }
                } else if let Some(status) = refused {
                    end(status);
                }
                return;
            }
        }
    }
}

/// One request: the per-request rate limit, then the publish.
async fn one(
    st: Arc<NodeState>,
    user: String,
    index: u64,
    r: pb::PublishRequest,
) -> pb::PublishResult {
    let outcome = async {
        super::take_client_token(&st, &user)?;
        crate::outbound::publish(&st, &user, r)
            .await
            .map_err(Status::from)
    }
    .await;
    match outcome {
        Ok(published) => pb::PublishResult {
            index,
            published: Some(published),
            ..Default::default()
        },
        Err(status) => pb::PublishResult {
            index,
            published: None,
            code: status.code() as i32,
            error: status.message().to_string(),
        },
    }
}
