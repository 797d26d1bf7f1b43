//! The origin's signing thread: publishes hand it their encoded content and it seals
//! whatever has queued up as one batch under one hybrid signature
//! ([`envelope::seal_batch`]), the way the store commits concurrent writes as a group.
//! Under load a signature (ML-DSA-65 signs in ~0.2 ms) covers many messages; a lone
//! message is signed at once. With `[delivery] linger_us` set, a publish that follows the
//! previous one closely waits up to that long for company ([`crate::linger`]), whatever its
//! audience (a batch still holds one audience only).
//!
//! Only messages for the same audience (cluster and recipients) share a batch: an inclusion
//! proof holds the hashes of the other messages of its batch, and the batch's size and
//! signature are the same in each, so a recipient learns of no message that went elsewhere.
//!
//! Signing runs on its own thread, so a signature never holds a runtime worker. A panic while
//! signing fails that batch's publishes (`SealerStopped`), not the thread.

use std::sync::Arc;
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
}

impl Sealer {
    /// Start the signing thread for `key`.
    /// `linger`: how long to wait for more publishes while they arrive quickly
    /// ([`crate::linger`]; zero: sign what has queued at once).
    pub fn start(key: Arc<SigningKey>, linger: Duration) -> std::io::Result<Self> {
        let (queue, jobs) = mpsc::channel::<Job>();
        let thread_key = key.clone();
        std::thread::Builder::new()
            .name("bluewire-sealer".into())
            .spawn(move || run(&thread_key, &jobs, Linger::new(linger)))?;
        Ok(Self { key, queue })
    }

    /// Seal encoded content, batched with whatever else is waiting for the same `audience`
    /// (any string that is equal exactly when the recipients are: see [`audience`]).
    pub async fn seal(
        &self,
        content: Vec<u8>,
        audience: String,
    ) -> Result<Envelope, SealerStopped> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue
            .send(Job {
                content,
                audience,
                reply,
            })
            .map_err(|_| SealerStopped(self.key.key_id().to_string()))?;
        answer
            .await
            .map_err(|_| SealerStopped(self.key.key_id().to_string()))
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

fn run(key: &SigningKey, jobs: &mpsc::Receiver<Job>, mut linger: Linger) {
    while let Ok(first) = jobs.recv() {
        let mut queued = vec![first];
        let now = Instant::now();
        let deadline = now + linger.on_wake(now);
        while queued.len() < MAX_BATCH {
            // What has queued, then (while lingering) what comes before the deadline.
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
                tokio::spawn(async move { sealer.seal(c, audience).await })
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
        // A lone seal is an ordinary single signature.
        let lone = sealer
            .seal(contents[0].clone(), String::new())
            .await
            .unwrap();
        assert!(lone.batch.is_none());
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
        for (_, whos) in by_signature {
            assert!(
                whos.iter().all(|w| *w == whos[0]),
                "a batch mixed audiences: {whos:?}"
            );
        }
    }

    #[tokio::test]
    async fn while_publishes_come_quickly_the_next_one_waits_for_company() {
        let key = Arc::new(SigningKey::generate("csirt-be").unwrap());
        async fn bounded<T>(what: impl std::future::Future<Output = T>) -> T {
            tokio::time::timeout(Duration::from_secs(30), what)
                .await
                .expect("a lingering batch never ended")
        }
        // Lingering 300 ms: `first` is the first wake and is signed at once; `second` comes
        // right after it, so it waits, and `third`, sent 100 ms later, joins its batch.
        let lingering = Sealer::start(key.clone(), Duration::from_millis(300)).unwrap();
        let started = std::time::Instant::now();
        let a = bounded(lingering.seal(b"first".to_vec(), String::new()))
            .await
            .unwrap();
        let at_once = started.elapsed();
        let s = lingering.clone();
        let b = tokio::spawn(async move { s.seal(b"second".to_vec(), String::new()).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let c = bounded(lingering.seal(b"third".to_vec(), String::new()))
            .await
            .unwrap();
        let b = bounded(b).await.unwrap().unwrap();
        assert!(
            at_once < Duration::from_millis(300),
            "the first publish waited ({at_once:?})"
        );
        assert_ne!(a.signature, b.signature);
        assert_eq!(
            b.signature, c.signature,
            "the third publish did not join the waiting second"
        );
        // Off: a publish sent after the previous one was signed is signed on its own.
        let off = Sealer::start(key, Duration::ZERO).unwrap();
        let mut signatures = std::collections::HashSet::new();
        for content in [&b"first"[..], b"second", b"third"] {
            let env = bounded(off.seal(content.to_vec(), String::new()))
                .await
                .unwrap();
            signatures.insert(env.signature);
        }
        assert_eq!(
            signatures.len(),
            3,
            "with no linger, publishes were batched"
        );
    }
}
