//! `Client.PublishStream`: many publishes on one stream. Each request is judged, signed and
//! stored by `outbound::publish`, as a unary Publish is, after the checks the gate makes
//! once per call, made here once per request: the caller's certificate not revoked since
//! the stream opened, and the per-user rate limit. Results go back in request order.
//!
//! Owns: the bound on requests worked on at once ([`IN_FLIGHT`]) and the result of a request.
//! It must never: answer a request out of order, read requests without bound while results
//! are not taken, or let one failed request end the stream.

use std::pin::Pin;
use std::sync::Arc;

use bluewire_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Status, Streaming};

use crate::pki::PeerIdentity;
use crate::state::NodeState;

/// Requests of one stream worked on at once; the node reads no more until one is answered.
pub const IN_FLIGHT: usize = 256;

pub type Results = Pin<Box<dyn Stream<Item = Result<pb::PublishResult, Status>> + Send>>;

/// Starts working on `input` as `user` (whose certificate is `identity`).
pub fn start(
    st: Arc<NodeState>,
    user: String,
    identity: Option<Arc<PeerIdentity>>,
    mut input: Streaming<pb::PublishRequest>,
) -> Results {
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    let span = tracing::info_span!("publish_stream", user = %user);
    let stopping = st.tasks.stopping();
    let tasks = st.tasks.clone();
    tasks.spawn_to_end(span, async move {
        let mut pending = futures_util::stream::FuturesOrdered::new();
        let mut index = 0u64;
        let mut reading = true;
        // The caller closed its side: everything it sent was read.
        let mut input_done = false;
        loop {
            tokio::select! {
                biased;
                Some(result) = pending.next(), if !pending.is_empty() => {
                    if tx.send(Ok(result)).await.is_err() {
                        return;
                    }
                }
                next = input.message(), if reading && pending.len() < IN_FLIGHT && !stopping.is_cancelled() => {
                    match next {
                        Ok(Some(r)) => {
                            pending.push_back(one(st.clone(), user.clone(), identity.clone(), index, r));
                            index += 1;
                        }
                        Ok(None) => {
                            reading = false;
                            input_done = true;
                        }
                        Err(status) => {
                            // What was accepted is answered first, then the reason.
                            while let Some(result) = pending.next().await {
                                if tx.send(Ok(result)).await.is_err() {
                                    return;
                                }
                            }
                            let _ = tx.send(Err(status)).await;
                            return;
                        }
                    }
                }
                () = stopping.cancelled(), if reading => {
                    // Shutting down: finish what was accepted, read nothing more.
                    reading = false;
                }
                else => {
                    if !input_done {
                        let _ = tx
                            .send(Err(Status::unavailable(format!(
                                "the node is shutting down; requests from position {index} on \
                                 were not read: send them again"
                            ))))
                            .await;
                    }
                    return;
                }
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

/// One request: the per-request checks, then the publish.
async fn one(
    st: Arc<NodeState>,
    user: String,
    identity: Option<Arc<PeerIdentity>>,
    index: u64,
    r: pb::PublishRequest,
) -> pb::PublishResult {
    let outcome = async {
        if identity
            .as_deref()
            .is_some_and(|id| st.tls.revocations.identity_revoked(id))
        {
            return Err(Status::permission_denied(
                "your certificate has been revoked by the federation CA",
            ));
        }
        if !st.client_limits.try_take(&user) {
            st.metrics.inc(
                crate::metrics::RATE_LIMITED,
                &[("kind", "client"), ("who", &user)],
            );
            return Err(Status::resource_exhausted(format!(
                "{user} is over its rate limit on this node ({} requests per second, \
                 limits.client_rate_per_sec); slow down and send it again",
                st.client_limits.rate()
            )));
        }
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
