//! `Federation.DeliverStream`: many Deliver calls on one stream, answered in order, each
//! request judged as a unary Deliver is (the same handler, [`super::federation`]), after the
//! checks the gate makes once per call, made here once per request: the caller's
//! certificate not revoked since the stream opened (a revoked caller's stream ends), and the
//! per-peer call rate limit.
//!
//! Owns: one request worked on at a time per stream (a sender sends the next when it has
//! the answer to the last), at most [`MAX_PER_PEER`] streams open per peer organisation,
//! and ending a stream, with why: when the node stops, when its caller stops taking answers
//! (after `feed.slow_subscriber_ms`, as a slow subscriber is cut off), after a request over
//! the peer's rate, or after [`IDLE`] without a request.
//!
//! It must never: answer out of order, let a request refused by a rule end the stream, let
//! a peer have more decoded on a stream than its rate admits in calls, or hold up the node's
//! shutdown.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bluewire_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::pki::{OrgProfile, PeerIdentity};
use crate::state::NodeState;

/// Listed in Hello's features by a node that serves DeliverStream.
pub const FEATURE: &str = "deliver-stream";

/// A stream no request arrived on for this long is ended.
pub const IDLE: Duration = Duration::from_secs(300);

/// Delivery streams one peer organisation may hold open at once: its delivery worker uses
/// one; the others cover a worker that reconnected before this node saw the old one close.
pub const MAX_PER_PEER: usize = 4;

/// How many delivery streams each peer organisation holds open.
#[derive(Default)]
pub struct DeliverStreams(std::sync::Mutex<std::collections::HashMap<String, usize>>);

/// One open stream, counted until dropped.
pub struct Counted {
    state: Arc<NodeState>,
    org: String,
}

impl DeliverStreams {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, usize>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Streams `org` holds open now.
    pub fn open(&self, org: &str) -> usize {
        self.lock().get(org).copied().unwrap_or(0)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut open = self.state.deliver_streams.lock();
        if let Some(n) = open.get_mut(&self.org) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.org);
            }
        }
    }
}

/// Counts a new stream of `org`, or refuses it past [`MAX_PER_PEER`].
fn count(st: &Arc<NodeState>, org: &str) -> Result<Counted, Status> {
    let mut open = st.deliver_streams.lock();
    let n = open.entry(org.to_string()).or_insert(0);
    if *n >= MAX_PER_PEER {
        return Err(Status::resource_exhausted(format!(
            "{org} already has {MAX_PER_PEER} delivery streams open on this node; close one \
             (or deliver with Federation.Deliver)"
        )));
    }
    *n += 1;
    Ok(Counted {
        state: st.clone(),
        org: org.to_string(),
    })
}

pub type Responses = Pin<Box<dyn Stream<Item = Result<pb::DeliverResponse, Status>> + Send>>;

/// Starts answering `input`, from `peer` (its verified certificate `cert`, `identity`).
pub fn start(
    st: Arc<NodeState>,
    peer: OrgProfile,
    cert: Arc<Vec<u8>>,
    identity: Arc<PeerIdentity>,
    input: Streaming<pb::DeliverRequest>,
) -> Result<Responses, Status> {
    let counted = count(&st, &peer.org)?;
    let (tx, rx) = mpsc::channel(2);
    let span = tracing::debug_span!("deliver_stream", peer.org = %peer.org);
    let tasks = st.tasks.clone();
    tasks.spawn_to_end(span, async move {
        let _counted = counted;
        run(st, peer, cert, identity, input, tx).await;
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

async fn run(
    st: Arc<NodeState>,
    peer: OrgProfile,
    cert: Arc<Vec<u8>>,
    identity: Arc<PeerIdentity>,
    mut input: Streaming<pb::DeliverRequest>,
    tx: mpsc::Sender<Result<pb::DeliverResponse, Status>>,
) {
    let stopping = st.tasks.stopping();
    let slow = Duration::from_millis(st.config.feed.slow_subscriber_ms);
    // Why the stream ends, after the answers already handed over (dropped if the caller has
    // not taken those: it is not reading anyway).
    let end = |status: Status| {
        let _ = tx.try_send(Err(status));
    };
    let shutting_down = || {
        Status::unavailable(
            "the node is shutting down; send what was not answered again once it is back \
             (what it answered is stored)",
        )
    };
    loop {
        let next = tokio::select! {
            biased;
            () = stopping.cancelled() => return end(shutting_down()),
            next = input.message() => next,
            // The sender opens another when it has something to deliver.
            () = tokio::time::sleep(IDLE) => return,
        };
        let request = match next {
            Ok(Some(r)) => r,
            Ok(None) => return,
            // Not a request (undecodable, over the size limit): the stream ends with why;
            // what came before it stands.
            Err(status) => return end(status),
        };
        if st.tls.revocations.identity_revoked(&identity) {
            return end(Status::permission_denied(
                "your certificate has been revoked by the federation CA",
            ));
        }
        // A request takes a call's worth of the peer's rate, as a Deliver call does at the
        // gate. Over it, the refusal ends the stream: going on takes a new stream, which the
        // gate admits only within the rate, so a stream decodes no more than calls would.
        let (outcome, over_rate) = if st.peer_limits.try_take(&peer.org) {
            let r = super::federation::deliver_one(&st, &peer, &cert, request).await;
            (r, false)
        } else {
            st.metrics.inc(
                crate::metrics::RATE_LIMITED,
                &[("kind", "peer"), ("who", &peer.org)],
            );
            let refused = Status::resource_exhausted(format!(
                "{} is over its rate limit on this node ({} calls and envelopes per second, \
                 limits.peer_rate_per_sec); back off and retry",
                peer.org,
                st.peer_limits.rate()
            ));
            (Err(refused), true)
        };
        let response = match outcome {
            Ok(results) => pb::DeliverResponse {
                results,
                ..Default::default()
            },
            Err(status) => pb::DeliverResponse {
                results: Vec::new(),
                code: status.code() as i32,
                error: status.message().to_string(),
            },
        };
        // Answered even while the node stops, if the caller has room for it: what it
        // answers is stored.
        let permit = tokio::select! {
            biased;
            permit = tokio::time::timeout(slow, tx.reserve()) => permit,
            () = stopping.cancelled() => return end(shutting_down()),
        };
        match permit {
            Ok(Ok(permit)) => permit.send(Ok(response)),
            // The caller went away.
            Ok(Err(_)) => return,
            Err(_) => {
                return end(Status::resource_exhausted(format!(
                    "answers not taken for {} ms (feed.slow_subscriber_ms): the node ended this \
                     stream; what it answered is stored, send the rest again",
                    slow.as_millis()
                )));
            }
        }
        if over_rate {
            return;
        }
    }
}
