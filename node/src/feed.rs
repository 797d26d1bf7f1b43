//! Feeds: what a node's users read — a subscription from a cursor with
//! filters, a single message by reference. Owns the filter rules, the feed
//! item a stored message becomes (with the marking in force; retracted
//! messages leave feeds), message references ("ID" or "ORIGIN/ID"), and the
//! subscription loop with its bounded per-subscriber buffer ([`buffer`]),
//! slow-subscriber disconnection and shutdown. Each subscription reads the
//! store itself, so a subscriber that stops reading never slows the others,
//! the store's writer or delivery. Never decides routing (what is stored here
//! was already admitted) and never returns `tonic::Status`.

pub mod buffer;
pub mod forms;

use std::sync::Arc;

use bluewire_proto::v1 as pb;
use prost::Message;
use thiserror::Error;
use tracing::{debug, warn};

use crate::markings::{self, Standing};
use crate::state::NodeState;
use crate::store::{Store, StoreError, StoredMessage};

/// Why a message reference found nothing usable.
#[derive(Debug, Error)]
pub enum LookupError {
    #[error("no message {0} on this node")]
    NotFound(String),
    #[error(
        "id {id} is used by several organisations ({origins}): name the one you mean as ORIGIN/{id}"
    )]
    Ambiguous { id: String, origins: String },
    #[error("message {0} was retracted by its origin")]
    Retracted(String),
    #[error("stored message {0} cannot be decoded: {1}")]
    Corrupt(String, prost::DecodeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Split a reference into (origin, id): "ORIGIN/ID", or a bare "ID" (origin "").
pub fn parse_reference(reference: &str) -> (&str, &str) {
    reference.split_once('/').unwrap_or(("", reference))
}

/// The message `origin` published as `id`; with no origin, the only message
/// with that id (`id` may also be written "ORIGIN/ID").
pub fn find(store: &Store, origin: &str, id: &str) -> Result<StoredMessage, LookupError> {
    let (origin, id) = match (origin.is_empty(), parse_reference(id)) {
        (true, (o, i)) if !o.is_empty() => (o, i),
        _ => (origin, id),
    };
    if !origin.is_empty() {
        return store
            .get(origin, id)?
            .ok_or_else(|| LookupError::NotFound(format!("{origin}/{id}")));
    }
    let mut found = store.find_by_id(id)?;
    match found.len() {
        0 => Err(LookupError::NotFound(format!("with id {id}"))),
        1 => Ok(found.remove(0)),
        _ => Err(LookupError::Ambiguous {
            id: id.to_string(),
            origins: found
                .iter()
                .map(|m| m.origin.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// A stored message by reference ("ID" or "ORIGIN/ID"), decoded.
pub fn find_content(
    store: &Store,
    reference: &str,
) -> Result<(StoredMessage, pb::Envelope, pb::Content), LookupError> {
    let m = find(store, "", reference)?;
    let (env, content) = decode(&m)?;
    Ok((m, env, content))
}

/// A stored message's envelope and content; undecodable bytes are `Corrupt`.
pub(crate) fn decode(m: &StoredMessage) -> Result<(pb::Envelope, pb::Content), LookupError> {
    let corrupt = |e| LookupError::Corrupt(format!("{}/{}", m.origin, m.id), e);
    let env = pb::Envelope::decode(m.envelope.as_slice()).map_err(corrupt)?;
    let content = pb::Content::decode(&env.content[..]).map_err(corrupt)?;
    Ok((env, content))
}

/// As [`decode`], taking the envelope's bytes out of `m`: the envelope's content and
/// signature are then views of those bytes, not copies. `signature`: the batch signature
/// [`Store::read_after_apart`] left out of them, put back.
fn decode_taken(
    m: &mut StoredMessage,
    signature: Option<bytes::Bytes>,
) -> Result<(pb::Envelope, pb::Content), LookupError> {
    let corrupt = |e| LookupError::Corrupt(format!("{}/{}", m.origin, m.id), e);
    let env =
        crate::store::decode_apart(std::mem::take(&mut m.envelope), signature).map_err(corrupt)?;
    let content = pb::Content::decode(&env.content[..]).map_err(corrupt)?;
    Ok((env, content))
}

/// What a subscriber asked to see.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub kinds: Vec<i32>,
    pub levels: Vec<i32>,
    pub origins: Vec<String>,
    /// Cluster ids, or names (matching `CONVENER/NAME`).
    pub clusters: Vec<String>,
}

impl Filter {
    pub fn from_request(r: &pb::SubscribeRequest) -> Self {
        Self {
            kinds: r.kinds.clone(),
            levels: r.levels.clone(),
            origins: r.origins.clone(),
            clusters: r.clusters.clone(),
        }
    }

    /// Whether a stored message passes the filters: kind, level, origin and cluster are stored
    /// beside the message, so nothing is decoded. A cluster filter names a full cluster id or
    /// its name (ids end in `/NAME`).
    pub fn admits(&self, m: &StoredMessage) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&m.kind))
            && (self.levels.is_empty() || self.levels.contains(&m.level))
            && (self.origins.is_empty() || self.origins.contains(&m.origin))
            && (self.clusters.is_empty()
                || self.clusters.iter().any(|f| {
                    *f == m.cluster
                        || m.cluster
                            .strip_suffix(f.as_str())
                            .is_some_and(|rest| rest.ends_with('/'))
                }))
    }
}

/// The feed item a stored message becomes, given what control messages made of it:
/// `None` once its origin retracted it. `me` signs what was published here. Pure.
pub fn item(
    m: StoredMessage,
    env: pb::Envelope,
    content: pb::Content,
    standing: Standing,
    me: &str,
) -> Option<pb::FeedItem> {
    if standing.retracted.is_some() {
        return None;
    }
    let signer_org = if m.received_from.is_empty() {
        me.to_string()
    } else {
        content.origin_org.clone()
    };
    Some(pb::FeedItem {
        seq: m.seq,
        end_to_end: false,
        suspect: String::new(),
        content: Some(content),
        verified: true,
        signer_org,
        received_from: m.received_from,
        received_at_ms: m.received_at_ms,
        effective_marking: standing.marking,
        forwarded: env
            .forwarding
            .as_ref()
            .and_then(|f| pb::ForwardAttestation::decode(f.attestation.as_slice()).ok()),
        envelope: Some(env),
        signature_as_previous: false,
    })
}

/// `m` as a feed item at this node (`None`: retracted).
/// A body encrypted end to end is shown decrypted when this node holds a key it was
/// encrypted to (it was validated so at ingress); otherwise it stays sealed.
pub fn item_for(st: &NodeState, m: StoredMessage) -> Result<Option<pb::FeedItem>, LookupError> {
    item_with(st, m, None)
}

/// [`item_for`], for `m` read with its batch signature apart (`signature`).
fn item_with(
    st: &NodeState,
    mut m: StoredMessage,
    signature: Option<bytes::Bytes>,
) -> Result<Option<pb::FeedItem>, LookupError> {
    let (env, content) = decode_taken(&mut m, signature)?;
    let standing = markings::standing(&st.store, &content);
    let opened = crate::e2e::open_body_with(&st.decryptors, &content);
    let end_to_end = matches!(content.body, Some(pb::content::Body::Sealed(_)));
    let suspect =
        crate::known::suspect(st, &env.key_id, &content, m.received_at_ms).unwrap_or_default();
    let content = match opened {
        Some(Ok(plain)) => plain,
        _ => content,
    };
    Ok(
        item(m, env, content, standing, st.org()).map(|i| pb::FeedItem {
            end_to_end,
            suspect,
            ..i
        }),
    )
}

/// One message for a user, by reference.
pub fn get(st: &NodeState, reference: &str) -> Result<pb::FeedItem, LookupError> {
    let m = find(&st.store, "", reference)?;
    let key = format!("{}/{}", m.origin, m.id);
    item_for(st, m)?.ok_or(LookupError::Retracted(key))
}

/// Why a subscription ended early (a clean end means "nothing more to come").
#[derive(Debug, Error)]
pub enum FeedEnd {
    #[error(
        "the node is shutting down; subscribe again with after_seq = the last seq you \
         received (or your durable name) to resume without a gap"
    )]
    ShuttingDown,
    #[error(
        "subscriber too slow: its buffer ({max_items} items / {max_kib} KiB) was full for \
         {full_ms} ms with nothing read (feed.slow_subscriber_ms = {limit_ms}), so the node \
         disconnected it; resume with after_seq = {after_seq}, the last item it was sent (or \
         with your durable name once that seq is committed): nothing after it is skipped"
    )]
    TooSlow {
        full_ms: u64,
        limit_ms: u64,
        max_items: usize,
        max_kib: usize,
        /// The seq of the last item handed to the subscriber's stream.
        after_seq: u64,
    },
    #[error("{0}")]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a durable position could not be kept.
#[derive(Debug, Error)]
pub enum CursorError {
    #[error("durable_name is empty: name the position to keep, e.g. soc-feed")]
    Unnamed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Keeps `seq` as the position of the durable subscription `name` (what a later
/// `subscribe` with that name resumes after).
pub async fn commit_cursor(st: &NodeState, name: &str, seq: u64) -> Result<(), CursorError> {
    if name.is_empty() {
        return Err(CursorError::Unnamed);
    }
    Ok(st.store.set_cursor(name, seq).await?)
}

/// Stored messages a subscription reads at a time. With its buffer, what one subscription
/// holds is bounded: one page of stored messages and [`buffer::MAX_ITEMS`] feed items.
const PAGE: usize = buffer::MAX_ITEMS;

/// Start a subscription for `user`: the backlog after the cursor, then (unless
/// `no_follow`) new messages as they are stored, through a bounded buffer of its own. A
/// subscriber that leaves its buffer full for `feed.slow_subscriber_ms` is disconnected with
/// the reason and the seq to resume after ([`FeedEnd::TooSlow`]); until then it holds only
/// its own task, never past shutdown. The feed's last item says why it ended early.
pub fn subscribe(
    st: Arc<NodeState>,
    user: &str,
    r: pb::SubscribeRequest,
) -> Result<buffer::Receiver, StoreError> {
    let mut cursor = r.after_seq;
    if cursor == 0 && !r.durable_name.is_empty() {
        cursor = st.store.get_cursor(&r.durable_name)?.unwrap_or(0);
    }
    let slow_after = std::time::Duration::from_millis(st.config.feed.slow_subscriber_ms);
    let (tx, rx) = buffer::channel(buffer::Limits::with_slow_after(slow_after), cursor);
    let span = tracing::info_span!(
        "subscribe",
        subscriber = %user,
        durable = %r.durable_name,
        cursor
    );
    // Runs to its end: it watches the stop itself, to tell the subscriber why its feed ended.
    st.tasks.clone().spawn_to_end(span, run(st, r, cursor, tx));
    Ok(rx)
}

/// Counts a subscription in `bluewire_subscribers` while it lives.
struct Open(Arc<crate::metrics::Metrics>);

impl Open {
    fn new(metrics: &Arc<crate::metrics::Metrics>) -> Open {
        metrics.gauge_add(crate::metrics::SUBSCRIBERS, &[], 1.0);
        Open(metrics.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.gauge_add(crate::metrics::SUBSCRIBERS, &[], -1.0);
    }
}

/// How many of `page`'s first messages fit in `max` bytes of envelopes (at least one).
fn within_bytes(page: &[(StoredMessage, Option<bytes::Bytes>)], max: usize) -> usize {
    let mut total = 0usize;
    page.iter()
        .position(|(m, _)| {
            // A batch signature is one allocation for the page, not one per message.
            total += m.envelope.len();
            total > max
        })
        .unwrap_or(page.len())
        .max(1)
}

async fn run(st: Arc<NodeState>, r: pb::SubscribeRequest, mut cursor: u64, tx: buffer::Sender) {
    let _open = Open::new(&st.metrics);
    let filter = Filter::from_request(&r);
    let mut shaper = forms::Shaper::new(r.envelope_form);
    let mut head = st.store.subscribe_head();
    let stopping = st.tasks.stopping();
    loop {
        if stopping.is_cancelled() {
            tx.finish(Some(FeedEnd::ShuttingDown));
            return;
        }
        let mut page = match st.store.read_after_apart(cursor, PAGE) {
            Ok(p) => p,
            Err(e) => {
                tx.finish(Some(e.into()));
                return;
            }
        };
        // Held while the buffer is full: at most MAX_BYTES of envelopes (and always one
        // message); the rest is read again from `cursor` next time.
        page.truncate(within_bytes(&page, buffer::MAX_BYTES));
        if page.is_empty() {
            if r.no_follow {
                tx.finish(None);
                return;
            }
            tokio::select! {
                changed = head.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
                () = stopping.cancelled() => {
                    tx.finish(Some(FeedEnd::ShuttingDown));
                    return;
                },
            }
            continue;
        }
        for (m, signature) in page {
            cursor = m.seq;
            // This node's own re-share copies are outbox records.
            if m.reshare || !filter.admits(&m) {
                continue;
            }
            let item = match item_with(&st, m, signature) {
                Ok(Some(mut i)) => {
                    shaper.shape(&mut i);
                    i
                }
                // Retracted by its origin: it leaves the feed.
                Ok(None) => continue,
                Err(e) => {
                    tx.finish(Some(e.into()));
                    return;
                }
            };
            let sent = tokio::select! {
                sent = tx.send(item) => sent,
                () = stopping.cancelled() => {
                    tx.finish(Some(FeedEnd::ShuttingDown));
                    return;
                }
            };
            match sent {
                Ok(()) => {}
                Err(buffer::Stop::Gone) => {
                    debug!("subscriber went away");
                    return;
                }
                Err(buffer::Stop::TooSlow {
                    full_for,
                    after_seq,
                    dropped,
                }) => {
                    st.metrics
                        .inc(crate::metrics::SLOW_SUBSCRIBERS_DISCONNECTED, &[]);
                    warn!(
                        full_ms = full_for.as_millis() as u64,
                        after_seq,
                        dropped,
                        "slow subscriber disconnected: its buffer stayed full longer than \
                         feed.slow_subscriber_ms; told to resume with after_seq = {after_seq}"
                    );
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(kind: i32, level: i32, origin: &str) -> StoredMessage {
        StoredMessage {
            seq: 7,
            id: "m".into(),
            envelope: Vec::new(),
            origin: origin.into(),
            kind,
            level,
            cluster: "csirt-be/x".into(),
            reshare: false,
            received_from: String::new(),
            received_at_ms: 5,
        }
    }

    #[test]
    fn a_page_held_for_a_subscriber_is_cut_at_its_byte_limit_but_keeps_one_message() {
        // A batch signature read apart is shared by the page, not counted per message.
        let shared = bytes::Bytes::from(vec![0; 3_000]);
        let sized = |n: usize| {
            let m = StoredMessage {
                envelope: vec![0; n],
                ..stored(0, 0, "o")
            };
            (m, Some(shared.clone()))
        };
        let page = vec![sized(400), sized(400), sized(400)];
        assert_eq!(within_bytes(&page, 1000), 2);
        assert_eq!(within_bytes(&page, 800), 2);
        assert_eq!(within_bytes(&page, 799), 1);
        assert_eq!(within_bytes(&page, 1200), 3);
        assert_eq!(within_bytes(&page, 10), 1, "one message always goes");
    }

    #[test]
    fn references_are_id_or_origin_slash_id() {
        assert_eq!(parse_reference("abc"), ("", "abc"));
        assert_eq!(parse_reference("csirt-be/abc"), ("csirt-be", "abc"));
    }

    #[test]
    fn filters_match_what_they_name_and_everything_when_empty() {
        let m = stored(2, 1, "csirt-be");
        assert!(Filter::default().admits(&m));
        let f = |kinds: Vec<i32>, levels: Vec<i32>, origins: Vec<&str>| Filter {
            kinds,
            levels,
            origins: origins.into_iter().map(String::from).collect(),
            clusters: Vec::new(),
        };
        assert!(f(vec![2], vec![], vec![]).admits(&m));
        assert!(!f(vec![1, 3], vec![], vec![]).admits(&m));
        assert!(f(vec![], vec![1], vec![]).admits(&m));
        assert!(!f(vec![], vec![2], vec![]).admits(&m));
        assert!(f(vec![], vec![], vec!["csirt-be"]).admits(&m));
        assert!(!f(vec![], vec![], vec!["cert-eu"]).admits(&m));
        let c = Filter {
            clusters: vec!["x".into(), "cert-eu/y".into()],
            ..Filter::default()
        };
        let in_cluster = |cluster: &str| StoredMessage {
            cluster: cluster.into(),
            ..m.clone()
        };
        assert!(c.admits(&in_cluster("csirt-be/x")));
        assert!(c.admits(&in_cluster("cert-eu/y")));
        assert!(!c.admits(&in_cluster("csirt-be/y")));
        assert!(!c.admits(&in_cluster("csirt-be/xx")));
        assert!(!c.admits(&in_cluster("csirt-bex")));
        assert!(!c.admits(&in_cluster("")));
    }

    #[test]
    fn a_feed_item_shows_the_marking_in_force_and_retracted_ones_leave() {
        let content = pb::Content {
            id: "m".into(),
            origin_org: "csirt-be".into(),
            marking: Some(pb::Marking {
                tlp: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        let raised = Standing {
            retracted: None,
            origin_marking: content.marking.clone(),
            marking: Some(pb::Marking {
                tlp: 4,
                ..Default::default()
            }),
        };
        let mut m = stored(1, 1, "csirt-be");
        let i = item(
            m.clone(),
            pb::Envelope::default(),
            content.clone(),
            raised.clone(),
            "me",
        )
        .expect("not retracted");
        assert_eq!(i.effective_marking.map(|k| k.tlp), Some(4));
        assert_eq!((i.seq, i.signer_org.as_str()), (7, "me"), "published here");
        assert!(i.verified && i.forwarded.is_none());
        m.received_from = "cert-eu".into();
        let i = item(
            m.clone(),
            pb::Envelope::default(),
            content.clone(),
            raised.clone(),
            "me",
        )
        .expect("not retracted");
        assert_eq!(
            (i.signer_org.as_str(), i.received_from.as_str()),
            ("csirt-be", "cert-eu")
        );
        let retracted = Standing {
            retracted: Some("wrong".into()),
            ..raised
        };
        assert!(item(m, pb::Envelope::default(), content, retracted, "me").is_none());
    }
}
