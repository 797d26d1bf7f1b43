//! The origin's signing thread: publishes hand it their encoded content and it seals
//! whatever has queued up as one batch under one hybrid signature
//! ([`envelope::seal_batch`]), the way the store commits concurrent writes as a group.
//! Under load a signature (ML-DSA-65 signs in ~0.2 ms) covers many messages; a lone
//! message is signed at once, as before, and waits for nothing.
//!
//! Signing runs on its own thread, so a signature never holds a runtime worker.

use std::sync::Arc;
use std::sync::mpsc;

use bluewire_proto::v1::Envelope;

use crate::envelope;
use crate::signing::SigningKey;

/// Most envelopes one signature covers (keeps proofs at ≤ 8 hashes).
pub const MAX_BATCH: usize = 256;

struct Job {
    content: Vec<u8>,
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
    pub fn start(key: Arc<SigningKey>) -> std::io::Result<Self> {
        let (queue, jobs) = mpsc::channel::<Job>();
        let thread_key = key.clone();
        std::thread::Builder::new()
            .name("bluewire-sealer".into())
            .spawn(move || run(&thread_key, &jobs))?;
        Ok(Self { key, queue })
    }

    /// Seal encoded content, batched with whatever else is waiting.
    pub async fn seal(&self, content: Vec<u8>) -> Result<Envelope, SealerStopped> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue
            .send(Job { content, reply })
            .map_err(|_| SealerStopped(self.key.key_id().to_string()))?;
        answer
            .await
            .map_err(|_| SealerStopped(self.key.key_id().to_string()))
    }
}

/// The signing thread is gone (it can only stop by a bug): nothing was signed.
#[derive(Debug, thiserror::Error)]
#[error("the signing thread for key {0} stopped; restart the node")]
pub struct SealerStopped(String);

fn run(key: &SigningKey, jobs: &mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let (contents, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|j| (j.content, j.reply)).unzip();
        for (env, reply) in envelope::seal_batch(key, contents).into_iter().zip(replies) {
            // The publish may have been cancelled meanwhile; its envelope is simply dropped.
            let _ = reply.send(env);
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
        let sealer = Sealer::start(key.clone()).unwrap();
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
                tokio::spawn(async move { sealer.seal(c).await })
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
        let lone = sealer.seal(contents[0].clone()).await.unwrap();
        assert!(lone.batch.is_none());
        envelope::open(&lone, lookup, crate::clock::now_ms()).unwrap();
    }
}
