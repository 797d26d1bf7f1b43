//! The origin's signing thread: publishes hand it their encoded content and it seals
//! whatever has queued up as one batch under one hybrid signature
//! ([`envelope::seal_batch`]), the way the store commits concurrent writes as a group.
//! Under load a signature (ML-DSA-65 signs in ~0.2 ms) covers many messages; a lone
//! message is signed at once. With `[delivery] linger_us` (not 0), a publish that follows the
//! previous one closely, while another publish is still in progress ([`InProgress`]),
//! waits up to that long for company ([`crate::linger`]), whatever its audience (a batch still
//! holds one audience only).
//!
//! Only messages for the same audience (cluster and recipients) share a batch: an inclusion
//! proof holds the hashes of the other messages of its batch, and the batch's size and
//! signature are the same in each, so a recipient learns of no message that went elsewhere.
//!
//! Signing runs on its own thread, so a signature never holds a runtime worker. A panic while
//! signing fails that batch's publishes (`SealerStopped`), not the thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bluewire_proto::v1::Envelope;

use crate::envelope;
use crate::linger::Linger;
use crate::signing::SigningKey;

/// Most envelopes one signature covers (keeps proofs at ≤ 8 hashes).
pub const MAX_BATCH: usize = 256;

struct Job {
    content: Vec<u8>,
    audience: String,
    reply: tokio::sync::oneshot::Sender<Envelope>,
}

/// A handle to the signing thread; the thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct Sealer {
    key: Arc<SigningKey>,
    queue: mpsc::Sender<Job>,
    in_progress: Arc<AtomicUsize>,
    /// Signatures made so far (one per batch).
    signatures: Arc<AtomicU64>,
}

/// A publish in progress, from the call to [`Sealer::seal`] until its caller drops this (the
/// publish handler, when it returns).
#[must_use = "a publish counts as in progress only while its guard is held"]
pub struct InProgress(Arc<AtomicUsize>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Sealer {
    /// Start the signing thread for `key`.
    /// `linger`: how long to wait for more publishes while they arrive quickly and another
    /// publish is in progress ([`crate::linger`]; zero: sign what has queued at once).
    pub fn start(key: Arc<SigningKey>, linger: Duration) -> std::io::Result<Self> {
        let (queue, jobs) = mpsc::channel::<Job>();
        let thread_key = key.clone();
        let in_progress = Arc::new(AtomicUsize::new(0));
        let signatures = Arc::new(AtomicU64::new(0));
        let (counted, signed) = (in_progress.clone(), signatures.clone());
        std::thread::Builder::new()
            .name("bluewire-sealer".into())
            .spawn(move || run(&thread_key, &jobs, Linger::new(linger), &counted, &signed))?;
        Ok(Self {
            key,
            queue,
            in_progress,
            signatures,
        })
    }

    /// Signatures made so far: each covers one batch, so messages sealed per signature is
    /// how many publishes shared one.
    pub fn signatures(&self) -> u64 {
        self.signatures.load(Ordering::Relaxed)
    }

    /// Count a publish as in progress until the returned guard is dropped.
    fn in_progress(&self) -> InProgress {
        self.in_progress.fetch_add(1, Ordering::AcqRel);
        InProgress(self.in_progress.clone())
    }

    /// Seal encoded content, batched with whatever else is waiting for the same `audience`
    /// (any string that is equal exactly when the recipients are: see [`audience`]).
    ///
    /// The publish counts as in progress from the call until the returned guard is dropped:
    /// its caller holds it until the publish is stored and its handler returns. The signing
    /// thread lingers only while some publish other than those it is about to sign is in
    /// progress.
    pub async fn seal(
        &self,
        content: Vec<u8>,
        audience: String,
    ) -> Result<(Envelope, InProgress), SealerStopped> {
        let in_progress = self.in_progress();
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue
            .send(Job {
                content,
                audience,
                reply,
            })
            .map_err(|_| SealerStopped(self.key.key_id().to_string()))?;
        let env = answer
            .await
            .map_err(|_| SealerStopped(self.key.key_id().to_string()))?;
        Ok((env, in_progress))
    }
}

/// Signing failed, by a bug: the signing thread panicked on this batch (it goes on with the
/// next) or is gone. Nothing was signed or stored.
#[derive(Debug, thiserror::Error)]
#[error(
    "signing with key {0} failed (a bug; the node's log says more): publish again, and restart the node if it keeps failing"
)]
pub struct SealerStopped(String);

/// The audience key of a message: its cluster and its recipients, in any order.
pub fn audience(cluster: &str, recipients: &[String]) -> String {
    let mut r: Vec<&str> = recipients.iter().map(String::as_str).collect();
    r.sort_unstable();
    r.dedup();
    format!("{cluster}\n{}", r.join("\n"))
}

/// Whether publishes other than the `drained` ones about to be signed are in progress (being
/// stored or answered, or on their way to the signing thread), of `in_progress` counted.
fn others_in_progress(in_progress: usize, drained: usize) -> bool {
    in_progress > drained
}

/// Add to `queued` what has queued, then what comes before `deadline` (none once it is past),
/// up to [`MAX_BATCH`].
fn take_until(jobs: &mpsc::Receiver<Job>, queued: &mut Vec<Job>, deadline: Instant) {
    while queued.len() < MAX_BATCH {
        let left = deadline.saturating_duration_since(Instant::now());
        let next = if left.is_zero() {
            jobs.try_recv().ok()
        } else {
            jobs.recv_timeout(left).ok()
        };
        match next {
            Some(j) => queued.push(j),
            None => break,
        }
    }
}

fn run(
    key: &SigningKey,
    jobs: &mpsc::Receiver<Job>,
    mut linger: Linger,
    in_progress: &AtomicUsize,
    signatures: &AtomicU64,
) {
    while let Ok(first) = jobs.recv() {
        let mut queued = vec![first];
        take_until(jobs, &mut queued, Instant::now());
        let others = others_in_progress(in_progress.load(Ordering::Acquire), queued.len());
        let now = Instant::now();
        take_until(jobs, &mut queued, now + linger.on_wake(now, others));
        // One batch per audience, in the order each audience first appeared.
        let mut groups: Vec<(String, Vec<Job>)> = Vec::new();
        for job in queued {
            match groups.iter_mut().find(|(a, _)| *a == job.audience) {
                Some((_, g)) => g.push(job),
                None => groups.push((job.audience.clone(), vec![job])),
            }
        }
        for (_, group) in groups {
            let (contents, replies): (Vec<_>, Vec<_>) =
                group.into_iter().map(|j| (j.content, j.reply)).unzip();
            let sealed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                envelope::seal_batch(key, contents)
            }));
            match sealed {
                Ok(envs) => {
                    signatures.fetch_add(1, Ordering::Relaxed);
                    for (env, reply) in envs.into_iter().zip(replies) {
                        // The publish may have been cancelled meanwhile; its envelope is dropped.
                        let _ = reply.send(env);
                    }
                }
                // Dropping the replies answers each waiting publish with SealerStopped.
                Err(_) => tracing::error!(
                    messages = replies.len(),
                    "signing a batch panicked; those publishes failed, the signing thread goes on"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluewire_proto::v1 as pb;
    use prost::Message as _;

    #[tokio::test]
    async fn concurrent_seals_share_signatures_and_each_envelope_verifies() {
        let key = Arc::new(SigningKey::generate("csirt-be").unwrap());
        let sealer = Sealer::start(key.clone(), Duration::ZERO).unwrap();
        let pk = key.public_key();
        let lookup = |_: &str| Some(("csirt-be".to_string(), pk.clone()));
        let contents: Vec<Vec<u8>> = (0..200)
            .map(|i| {
                pb::Content {
                    id: crate::envelope::new_id(),
                    origin_org: "csirt-be".into(),
                    author: "csirt-be/alice".into(),
                    created_at_ms: 1_000,
                    kind: pb::Kind::FreeText as i32,
                    level: pb::Level::Technical as i32,
                    marking: Some(pb::Marking {
                        tlp: pb::Tlp::Green as i32,
                        ..Default::default()
                    }),
                    body: Some(pb::content::Body::FreeText(pb::FreeText {
                        title: format!("message {i}"),
                        body: "x".repeat(100),
                    })),
                    ..Default::default()
                }
                .encode_to_vec()
            })
            .collect();
        let tasks: Vec<_> = contents
            .iter()
            .map(|c| {
                let (sealer, c) = (sealer.clone(), c.clone());
                let audience = audience("csirt-be/ops", &["cert-eu".into(), "csirt-fr".into()]);
                tokio::spawn(async move { sealer.seal(c, audience).await.map(|(env, _)| env) })
            })
            .collect();
        let mut envs = Vec::new();
        for t in tasks {
            envs.push(t.await.unwrap().unwrap());
        }
        let batches = envelope::VerifiedBatches::default();
        let mut signatures = std::collections::HashSet::new();
        for (env, c) in envs.iter().zip(&contents) {
            assert_eq!(&env.content, c, "each job gets its own content back");
            envelope::open_with(env, lookup, crate::clock::now_ms(), Some(&batches))
                .expect("every envelope verifies on its own");
            signatures.insert(env.signature.clone());
        }
        assert!(
            signatures.len() < contents.len(),
            "200 concurrent seals were signed one by one"
        );
        assert_eq!(
            sealer.signatures(),
            signatures.len() as u64,
            "the count is not of the signatures made"
        );
        // A lone seal is an ordinary single signature.
        let made = sealer.signatures();
        let lone = sealer
            .seal(contents[0].clone(), String::new())
            .await
            .unwrap()
            .0;
        assert!(lone.batch.is_none());
        assert_eq!(
            sealer.signatures(),
            made + 1,
            "a lone seal is one signature"
        );
        envelope::open(&lone, lookup, crate::clock::now_ms()).unwrap();
    }

    #[tokio::test]
    async fn only_messages_for_the_same_audience_share_a_batch() {
        assert_eq!(
            audience("c", &["b".into(), "a".into(), "a".into()]),
            audience("c", &["a".into(), "b".into()])
        );
        assert_ne!(audience("c", &["a".into()]), audience("d", &["a".into()]));
        assert_ne!(
            audience("c", &["a".into()]),
            audience("c", &["a".into(), "b".into()])
        );
        let key = Arc::new(SigningKey::generate("csirt-be").unwrap());
        let sealer = Sealer::start(key.clone(), Duration::ZERO).unwrap();
        let tasks: Vec<_> = (0..120u32)
            .map(|i| {
                let sealer = sealer.clone();
                let who = if i % 2 == 0 { "cert-eu" } else { "csirt-fr" };
                let audience = audience("", &[who.to_string()]);
                tokio::spawn(async move {
                    let env = sealer.seal(i.to_be_bytes().to_vec(), audience).await;
                    let env = env.map(|(env, _)| env);
                    (who, env.unwrap())
                })
            })
            .collect();
        let mut by_signature: std::collections::HashMap<bytes::Bytes, Vec<&str>> =
            Default::default();
        for t in tasks {
            let (who, env) = t.await.unwrap();
            by_signature.entry(env.signature).or_default().push(who);
        }
        assert!(by_signature.len() < 120, "nothing was batched");
        assert_eq!(
            sealer.signatures(),
            by_signature.len() as u64,
            "signatures are counted per audience's batch"
        );
        for (_, whos) in by_signature {
            assert!(
                whos.iter().all(|w| *w == whos[0]),
                "a batch mixed audiences: {whos:?}"
            );
        }
    }

    #[test]
    fn only_publishes_outside_the_batch_count_as_others_in_progress() {
        assert!(!others_in_progress(1, 1), "a lone publish");
        assert!(
            !others_in_progress(3, 3),
            "a burst drained whole, nothing else in progress"
        );
        assert!(others_in_progress(2, 1), "one being stored");
        assert!(others_in_progress(4, 3), "one on its way");
        assert!(!others_in_progress(0, 1), "a seal from outside a publish");
    }

    #[tokio::test]
    async fn a_close_publish_waits_for_company_only_while_another_is_in_progress() {
        let key = Arc::new(SigningKey::generate("csirt-be").unwrap());
        async fn bounded<T>(what: impl std::future::Future<Output = T>) -> T {
            tokio::time::timeout(Duration::from_secs(30), what)
                .await
                .expect("a lingering batch never ended")
        }
        // As the publish handler does: the guard is held until the publish returns
        // (here, at once).
        async fn publish(sealer: Sealer, content: &'static [u8]) -> Envelope {
            bounded(sealer.seal(content.to_vec(), String::new()))
                .await
                .unwrap()
                .0
        }
        let lingering = Sealer::start(key.clone(), Duration::from_millis(300)).unwrap();
        // A client that publishes one message at a time, nothing else in progress: each close
        // wake is signed at once, on its own.
        let started = std::time::Instant::now();
        let one = publish(lingering.clone(), b"one").await;
        let two = publish(lingering.clone(), b"two").await;
        let alone = started.elapsed();
        assert!(
            alone < Duration::from_millis(300),
            "a lone publish waited ({alone:?})"
        );
        assert_ne!(one.signature, two.signature);
        // A publish still in progress (its guard held: being stored, say). `first` follows it
        // closely, so it waits, and `second`, sent 100 ms later, joins its batch.
        let (_, storing) = bounded(lingering.seal(b"zero".to_vec(), String::new()))
            .await
            .unwrap();
        let first = tokio::spawn(publish(lingering.clone(), b"first"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let second = publish(lingering.clone(), b"second").await;
        let first = bounded(first).await.unwrap();
        assert!(
            first.signature == second.signature,
            "the second publish did not join the waiting first"
        );
        drop(storing);
        // Off: a publish sent after the previous one was signed is signed on its own, busy or not.
        let off = Sealer::start(key, Duration::ZERO).unwrap();
        let (_, _storing) = bounded(off.seal(b"zero".to_vec(), String::new()))
            .await
            .unwrap();
        let mut signatures = std::collections::HashSet::new();
        for content in [&b"first"[..], b"second", b"third"] {
            signatures.insert(publish(off.clone(), content).await.signature);
        }
        assert_eq!(
            signatures.len(),
            3,
            "with no linger, publishes were batched"
        );
    }
}
