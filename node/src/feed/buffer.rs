//! A subscriber's buffer: the bounded queue between a subscription's task (which reads the
//! store) and the stream that hands feed items to the subscriber's gRPC call.
//!
//! Owns the limits ([`MAX_ITEMS`], [`MAX_BYTES`]), the slow-subscriber decision ([`Queue`],
//! pure: the time is an argument), and the end slot that says why a feed ended. The end slot
//! is kept apart from the queue, so the reason reaches a subscriber whose queue is full; a
//! slow subscriber's queued items are dropped when it is disconnected, and its stated resume
//! position is the last item its stream was actually handed.
//!
//! It must never: wait on anything but its own subscriber (never the store, delivery or
//! another subscriber), hold more than its limits (plus one item larger than the byte limit,
//! alone), or state a resume position past an item the subscriber's stream was not handed.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bluewire_proto::v1 as pb;
use prost::Message;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;

use super::FeedEnd;

/// Most items queued for one subscriber. Enough to ride out a scheduling hiccup or a
/// garbage-collection pause in the subscriber's tool (on top of what HTTP/2 flow control and
/// the TCP socket already hold, typically megabytes), small enough that a thousand stalled
/// subscribers hold a bounded amount: 64 typical items (a few KiB each: the hybrid signature
/// alone is 3.3 KiB) are a few hundred KiB.
pub const MAX_ITEMS: usize = 64;
/// Most encoded bytes queued for one subscriber: with content of up to 1 MiB per message
/// (twice that in a feed item, decoded and signed), the item limit alone would allow 64 MiB
/// per subscriber. An item larger than this is still queued, alone, so every message can be
/// delivered. The subscription's task also holds at most this many bytes of stored
/// envelopes it has read but not yet queued (`feed::run`), so a stalled subscriber holds
/// about 2 MiB plus one oversized message at worst, and a thousand of them about 2 GiB.
/// Counted as encoded: an item whose repeated signature is left out (`SIGNATURE_ONCE`)
/// still holds the stored envelope it is a view of, up to 3.3 KiB more per item (~210 KiB
/// for a full queue).
pub const MAX_BYTES: usize = 1024 * 1024;

/// A subscriber buffer's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_items: usize,
    pub max_bytes: usize,
    /// How long the buffer may stay full, the subscriber taking nothing, before it is
    /// disconnected (`feed.slow_subscriber_ms`).
    pub slow_after: Duration,
}

impl Limits {
    /// [`MAX_ITEMS`] and [`MAX_BYTES`], slow after `slow_after`.
    pub fn with_slow_after(slow_after: Duration) -> Limits {
        Limits {
            max_items: MAX_ITEMS,
            max_bytes: MAX_BYTES,
            slow_after,
        }
    }
}

/// How long a subscriber has been too slow at `now`: its buffer has been full since
/// `full_since`, with nothing taken, for at least `limit` (`None`: not full, or not for that
/// long). Pure.
pub fn too_slow(full_since: Option<Instant>, now: Instant, limit: Duration) -> Option<Duration> {
    let full_for = now.saturating_duration_since(full_since?);
    (full_for >= limit).then_some(full_for)
}

/// What became of an item offered to the queue.
#[derive(Debug, PartialEq)]
pub enum Offer {
    /// Queued for the subscriber.
    Queued,
    /// It does not fit: wait for the subscriber to take something, at most until `deadline`.
    Full {
        item: pb::FeedItem,
        deadline: Instant,
    },
    /// It does not fit, and the subscriber has taken nothing from its full buffer for
    /// `full_for`, at least the limit: disconnect it.
    TooSlow {
        item: pb::FeedItem,
        full_for: Duration,
    },
}

/// The queue of one subscriber, and whether it keeps up. Pure: no clock, no waiting.
#[derive(Debug)]
pub struct Queue {
    limits: Limits,
    items: VecDeque<(pb::FeedItem, usize)>,
    bytes: usize,
    /// The seq of the last item taken (handed to the subscriber's stream); before any, the
    /// cursor the subscription started after.
    handed: u64,
    /// Since when an item has been refused, with nothing taken since.
    full_since: Option<Instant>,
}

impl Queue {
    /// An empty queue for a subscription that starts after `cursor`.
    pub fn new(limits: Limits, cursor: u64) -> Queue {
        Queue {
            limits,
            items: VecDeque::new(),
            bytes: 0,
            handed: cursor,
            full_since: None,
        }
    }

    /// Offers `item` (`size` bytes encoded) at `now`. It is queued when the queue is empty (so
    /// one item larger than the byte limit still passes, alone) or when it stays within both
    /// limits; otherwise the queue is full from `now` on (unless it already was) until the
    /// subscriber takes an item.
    pub fn offer(&mut self, item: pb::FeedItem, size: usize, now: Instant) -> Offer {
        let fits = self.items.is_empty()
            || (self.items.len() < self.limits.max_items
                && self.bytes.saturating_add(size) <= self.limits.max_bytes);
        if fits {
            self.items.push_back((item, size));
            self.bytes += size;
            return Offer::Queued;
        }
        let since = *self.full_since.get_or_insert(now);
        match too_slow(Some(since), now, self.limits.slow_after) {
            Some(full_for) => Offer::TooSlow { item, full_for },
            None => Offer::Full {
                item,
                deadline: since + self.limits.slow_after,
            },
        }
    }

    /// The next item for the subscriber's stream: it counts as handed, and the queue is no
    /// longer full.
    pub fn take(&mut self) -> Option<pb::FeedItem> {
        let (item, size) = self.items.pop_front()?;
        self.bytes -= size;
        self.handed = item.seq;
        self.full_since = None;
        Some(item)
    }

    /// Drops every queued item (the subscriber was disconnected or went away); how many.
    pub fn clear(&mut self) -> usize {
        let n = self.items.len();
        self.items.clear();
        self.bytes = 0;
        n
    }

    /// The seq of the last item handed to the subscriber's stream (the subscription's start
    /// cursor before any): resuming after it loses nothing the subscriber did not receive.
    pub fn handed(&self) -> u64 {
        self.handed
    }

    /// Items and bytes queued.
    pub fn queued(&self) -> (usize, usize) {
        (self.items.len(), self.bytes)
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }
}

/// Why a subscription's task must stop feeding.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// The subscriber went away (its stream was dropped).
    Gone,
    /// The subscriber took nothing from its full buffer for `full_for`: it was disconnected,
    /// its `dropped` queued items with it, and told to resume after `after_seq`.
    TooSlow {
        full_for: Duration,
        after_seq: u64,
        dropped: usize,
    },
}

/// How the feed ends, once it does.
#[derive(Debug)]
enum End {
    Open,
    /// After the queued items: `Some` ends the stream with that error, `None` cleanly.
    Finished(Option<FeedEnd>),
    /// The stream has said so.
    Told,
}

#[derive(Debug)]
struct State {
    queue: Queue,
    end: End,
    /// The stream's task, waiting for an item or the end.
    waker: Option<Waker>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the sender: the subscriber took an item.
    room: Notify,
    /// Cancelled when the subscriber's stream is dropped.
    gone: CancellationToken,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; a poisoned lock still holds a consistent queue.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A subscriber buffer for a subscription that starts after `cursor`: the subscription's
/// task sends, the subscriber's gRPC call reads the [`Receiver`] as a stream.
pub fn channel(limits: Limits, cursor: u64) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: Queue::new(limits, cursor),
            end: End::Open,
            waker: None,
        }),
        room: Notify::new(),
        gone: CancellationToken::new(),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

/// The subscription task's end of a buffer. Dropping it ends the feed cleanly after what is
/// queued, unless it was finished otherwise.
#[derive(Debug)]
pub struct Sender {
    shared: Arc<Shared>,
}

impl Sender {
    /// Queues `item`, waiting while the buffer is full: until the subscriber takes something,
    /// goes away, or has taken nothing for the limit — then the subscriber is disconnected
    /// (its queued items dropped, the stream told why and where to resume) and this says so.
    /// Cancel-safe: cancelled, the item is simply not sent.
    pub async fn send(&self, item: pb::FeedItem) -> Result<(), Stop> {
        let size = item.encoded_len();
        let mut item = item;
        loop {
            let deadline = {
                let mut st = self.shared.lock();
                if self.shared.gone.is_cancelled() {
                    return Err(Stop::Gone);
                }
                match st.queue.offer(item, size, Instant::now()) {
                    Offer::Queued => {
                        let waker = st.waker.take();
                        drop(st);
                        if let Some(w) = waker {
                            w.wake();
                        }
                        return Ok(());
                    }
                    Offer::Full {
                        item: back,
                        deadline,
                    } => {
                        item = back;
                        deadline
                    }
                    Offer::TooSlow { full_for, .. } => {
                        let after_seq = st.queue.handed();
                        let dropped = st.queue.clear();
                        let limits = st.queue.limits();
                        st.end = End::Finished(Some(FeedEnd::TooSlow {
                            full_ms: millis(full_for),
                            limit_ms: millis(limits.slow_after),
                            max_items: limits.max_items,
                            max_kib: limits.max_bytes / 1024,
                            after_seq,
                        }));
                        let waker = st.waker.take();
                        drop(st);
                        if let Some(w) = waker {
                            w.wake();
                        }
                        return Err(Stop::TooSlow {
                            full_for,
                            after_seq,
                            dropped,
                        });
                    }
                }
            };
            // A take between the unlock and here leaves a permit: no wake-up is lost.
            tokio::select! {
                () = self.shared.room.notified() => {}
                () = tokio::time::sleep_until(deadline) => {}
                () = self.shared.gone.cancelled() => return Err(Stop::Gone),
            }
        }
    }

    /// Ends the feed: the subscriber gets what is queued, then `end` (`None`: a clean end).
    pub fn finish(self, end: Option<FeedEnd>) {
        let mut st = self.shared.lock();
        if matches!(st.end, End::Open) {
            st.end = End::Finished(end);
        }
        let waker = st.waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Completes when the subscriber's stream is dropped.
    pub async fn closed(&self) {
        self.shared.gone.cancelled().await;
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if matches!(st.end, End::Open) {
            st.end = End::Finished(None);
        }
        let waker = st.waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The subscriber's end of a buffer: the queued items, then the end (an error item, or the
/// stream's end).
#[derive(Debug)]
pub struct Receiver {
    shared: Arc<Shared>,
}

impl Stream for Receiver {
    type Item = Result<pb::FeedItem, FeedEnd>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut st = self.shared.lock();
        if let Some(item) = st.queue.take() {
            drop(st);
            self.shared.room.notify_one();
            return Poll::Ready(Some(Ok(item)));
        }
        match std::mem::replace(&mut st.end, End::Told) {
            End::Open => {
                st.end = End::Open;
                st.waker = Some(cx.waker().clone());
                Poll::Pending
            }
            End::Finished(Some(end)) => Poll::Ready(Some(Err(end))),
            End::Finished(None) | End::Told => Poll::Ready(None),
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Nobody will read them: free them now, not when the subscription's task notices.
        self.shared.lock().queue.clear();
        self.shared.gone.cancel();
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    fn item(seq: u64) -> pb::FeedItem {
        pb::FeedItem {
            seq,
            ..Default::default()
        }
    }

    const LIMITS: Limits = Limits {
        max_items: 3,
        max_bytes: 100,
        slow_after: Duration::from_millis(500),
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn slow_only_when_full_for_at_least_the_limit() {
        let t0 = Instant::now();
        let limit = ms(500);
        assert_eq!(too_slow(None, t0 + ms(10_000), limit), None, "never full");
        assert_eq!(too_slow(Some(t0), t0, limit), None);
        assert_eq!(too_slow(Some(t0), t0 + ms(499), limit), None);
        assert_eq!(too_slow(Some(t0), t0 + ms(500), limit), Some(ms(500)));
        assert_eq!(too_slow(Some(t0), t0 + ms(750), limit), Some(ms(750)));
        // A clock read before the buffer filled (another thread's) is not "slow".
        assert_eq!(too_slow(Some(t0 + ms(10)), t0, limit), None);
    }

    #[test]
    fn the_queue_holds_at_most_its_items_and_bytes() {
        let t0 = Instant::now();
        let mut q = Queue::new(LIMITS, 0);
        for seq in 1..=3 {
            assert_eq!(q.offer(item(seq), 10, t0), Offer::Queued);
        }
        assert_eq!(
            q.offer(item(4), 10, t0),
            Offer::Full {
                item: item(4),
                deadline: t0 + ms(500)
            },
            "item limit"
        );
        assert_eq!(q.queued(), (3, 30));
        let mut q = Queue::new(LIMITS, 0);
        assert_eq!(q.offer(item(1), 60, t0), Offer::Queued);
        assert!(
            matches!(q.offer(item(2), 41, t0), Offer::Full { .. }),
            "byte limit"
        );
        assert_eq!(q.offer(item(2), 40, t0), Offer::Queued, "exactly at it");
        // Taking an item gives its bytes back: a subscriber that reads keeps room.
        assert_eq!(q.take().map(|i| i.seq), Some(1));
        assert_eq!(q.queued(), (1, 40));
        assert_eq!(
            q.offer(item(3), 60, t0),
            Offer::Queued,
            "room for what was taken"
        );
        assert_eq!(q.queued(), (2, 100));
        // An item larger than the byte limit passes, alone.
        let mut q = Queue::new(LIMITS, 0);
        assert_eq!(q.offer(item(1), 1_000, t0), Offer::Queued);
        assert!(matches!(q.offer(item(2), 1, t0), Offer::Full { .. }));
        assert_eq!(q.take().map(|i| i.seq), Some(1));
        assert_eq!(q.offer(item(2), 1, t0), Offer::Queued);
    }

    #[test]
    fn a_subscriber_that_takes_nothing_from_a_full_queue_is_too_slow() {
        let t0 = Instant::now();
        let mut q = Queue::new(LIMITS, 7);
        assert_eq!(q.handed(), 7, "before any item: the start cursor");
        for seq in 8..=10 {
            assert_eq!(q.offer(item(seq), 10, t0), Offer::Queued);
        }
        // Full from t0 + 100 on: the deadline does not move while it stays full.
        for at in [100, 300, 599] {
            assert_eq!(
                q.offer(item(11), 10, t0 + ms(at)),
                Offer::Full {
                    item: item(11),
                    deadline: t0 + ms(600)
                },
                "at {at} ms"
            );
        }
        assert_eq!(
            q.offer(item(11), 10, t0 + ms(650)),
            Offer::TooSlow {
                item: item(11),
                full_for: ms(550)
            }
        );
        assert_eq!(q.handed(), 7, "nothing was taken");
    }

    #[test]
    fn taking_an_item_restarts_the_clock_and_moves_the_resume_position() {
        let t0 = Instant::now();
        let mut q = Queue::new(LIMITS, 0);
        for seq in 1..=3 {
            q.offer(item(seq), 10, t0);
        }
        assert!(matches!(q.offer(item(4), 10, t0), Offer::Full { .. }));
        assert_eq!(q.take().map(|i| i.seq), Some(1));
        assert_eq!(q.handed(), 1);
        assert_eq!(q.offer(item(4), 10, t0 + ms(400)), Offer::Queued);
        // Full again at 450: a subscriber that keeps taking, however slowly, is not too slow
        // until it stops for the limit.
        assert_eq!(
            q.offer(item(5), 10, t0 + ms(450)),
            Offer::Full {
                item: item(5),
                deadline: t0 + ms(950)
            }
        );
        assert!(matches!(
            q.offer(item(5), 10, t0 + ms(900)),
            Offer::Full { .. }
        ));
        assert!(matches!(
            q.offer(item(5), 10, t0 + ms(950)),
            Offer::TooSlow { .. }
        ));
        assert_eq!(q.clear(), 3);
        assert_eq!((q.queued(), q.handed()), ((0, 0), 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_subscriber_is_told_where_to_resume_even_with_a_full_buffer() {
        let (tx, mut rx) = channel(LIMITS, 4);
        tx.send(item(5)).await.expect("room");
        assert_eq!(rx.next().await.expect("an item").expect("ok").seq, 5);
        for seq in 6..=8 {
            tx.send(item(seq)).await.expect("room");
        }
        // The subscriber stops reading: the fourth item waits for the limit, then the
        // subscriber is disconnected and its three queued items dropped.
        let started = Instant::now();
        let stop = tx.send(item(9)).await.expect_err("too slow");
        assert_eq!(
            stop,
            Stop::TooSlow {
                full_for: ms(500),
                after_seq: 5,
                dropped: 3
            }
        );
        assert_eq!(
            started.elapsed(),
            ms(500),
            "paused clock: exactly the limit"
        );
        drop(tx);
        let end = rx.next().await.expect("the end").expect_err("an error");
        let FeedEnd::TooSlow {
            after_seq, full_ms, ..
        } = &end
        else {
            panic!("{end}");
        };
        assert_eq!((*after_seq, *full_ms), (5, 500));
        let text = end.to_string();
        assert!(text.contains("resume with after_seq = 5"), "{text}");
        assert!(text.contains("full for 500 ms"), "{text}");
        assert!(rx.next().await.is_none(), "nothing after the end");
    }

    #[tokio::test(start_paused = true)]
    async fn a_subscriber_that_reads_is_never_disconnected_and_gets_everything() {
        let (tx, rx) = channel(LIMITS, 0);
        let reader = tokio::spawn(async move {
            let mut rx = rx;
            let mut seen = Vec::new();
            while let Some(i) = rx.next().await {
                seen.push(i.expect("no error").seq);
                // Slower than the sender, but never stalled for the limit.
                tokio::time::sleep(ms(100)).await;
            }
            seen
        });
        for seq in 1..=50 {
            tx.send(item(seq))
                .await
                .expect("a reading subscriber keeps up");
        }
        tx.finish(None);
        assert_eq!(reader.await.unwrap(), (1..=50).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn queued_items_come_before_the_end_and_a_dropped_stream_stops_the_sender() {
        let (tx, mut rx) = channel(LIMITS, 0);
        tx.send(item(1)).await.unwrap();
        tx.send(item(2)).await.unwrap();
        tx.finish(Some(FeedEnd::ShuttingDown));
        assert_eq!(rx.next().await.unwrap().unwrap().seq, 1);
        assert_eq!(rx.next().await.unwrap().unwrap().seq, 2);
        assert!(matches!(rx.next().await, Some(Err(FeedEnd::ShuttingDown))));
        assert!(rx.next().await.is_none());

        let (tx, rx) = channel(LIMITS, 0);
        for seq in 1..=3 {
            tx.send(item(seq)).await.unwrap();
        }
        let blocked = tokio::spawn(async move { tx.send(item(4)).await });
        tokio::task::yield_now().await;
        drop(rx);
        assert_eq!(blocked.await.unwrap(), Err(Stop::Gone));
    }
}
