//! Many subscribers at one node: each has a bounded buffer of its own. A subscriber that
//! stops reading never holds up another: it is disconnected with the reason and the seq to
//! resume after, and resuming there gives every later message exactly once.

use std::time::{Duration, Instant};

use bluewire_node::client::resume_after;
use bluewire_node::metrics::{SLOW_SUBSCRIBERS_DISCONNECTED, SUBSCRIBERS};
use bluewire_tests::{
    ConfigEdit, EVENTUALLY, FedOptions, OrgSpec, TestFederation, assert_eventually, free_text,
    item_id, pb,
};
use tokio::sync::mpsc;
use tonic::Code;

const ORG: &str = "csirt-be";
/// Short, so the test does not wait the shipped 10 s.
const SLOW_MS: u64 = 300;
/// Large messages fill the stalled subscriber's HTTP/2 window (2 MiB) and its 1 MiB buffer
/// in a few dozen messages.
const BODY_BYTES: usize = 64 * 1024;
/// Far more than it takes (a few dozen to fill the subscriber's window and buffer, then what is
/// published during SLOW_MS); the publishing loop never runs unbounded.
const MAX_MESSAGES: usize = 1000;
/// Published after the disconnection: the resumed subscription must get these too.
const AFTER: usize = 5;

fn big(i: usize) -> pb::PublishRequest {
    let mut r = free_text(&format!("bulk {i}"));
    if let Some(pb::publish_request::Body::FreeText(t)) = r.body.as_mut() {
        t.body = "x".repeat(BODY_BYTES);
    }
    r
}

/// Every item of a subscription, until it ends (`Ok`) or fails (`Err` with what came before).
async fn drain(
    s: &mut tonic::Streaming<pb::FeedItem>,
) -> (Vec<pb::FeedItem>, Result<(), tonic::Status>) {
    let mut items = Vec::new();
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.message()).await {
            Ok(Ok(Some(item))) => items.push(item),
            Ok(Ok(None)) => return (items, Ok(())),
            Ok(Err(status)) => return (items, Err(status)),
            Err(_) => panic!("feed neither ended nor failed within {EVENTUALLY:?}"),
        }
    }
}

/// `n` ids from a reader's channel, in order, within [`EVENTUALLY`].
async fn receive(rx: &mut mpsc::UnboundedReceiver<String>, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(EVENTUALLY, rx.recv()).await {
            Ok(Some(id)) => out.push(id),
            Ok(None) => panic!("the reading subscriber's feed ended after {}", out.len()),
            Err(_) => panic!("the reading subscriber got {} of {n} items", out.len()),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_subscriber_is_disconnected_with_a_resume_position_and_others_keep_up() {
    let fed = TestFederation::with_options(
        &[OrgSpec::csirt(ORG, "BE")],
        FedOptions {
            config_edits: vec![ConfigEdit::set("feed", "slow_subscriber_ms", SLOW_MS)],
            ..FedOptions::default()
        },
    )
    .await;
    let node = fed.node(ORG);
    let subscribers = || node.metrics.gauge_value(SUBSCRIBERS, &[]).unwrap_or(0.0);
    let disconnected = || {
        node.metrics
            .counter_value(SLOW_SUBSCRIBERS_DISCONNECTED, &[])
    };

    // Each subscriber on a connection of its own, as separate tools would be.
    let stalled_conn = fed.client(ORG, "analyst");
    let mut stalled = stalled_conn
        .client()
        .subscribe(pb::SubscribeRequest::default())
        .await
        .expect("subscribe")
        .into_inner();
    let reader_conn = fed.client(ORG, "operator");
    let mut reader = reader_conn
        .client()
        .subscribe(pb::SubscribeRequest::default())
        .await
        .expect("subscribe")
        .into_inner();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let reading = tokio::spawn(async move {
        while let Some(item) = reader.message().await.expect("the reader is never cut off") {
            if seen_tx.send(item_id(&item)).is_err() {
                return;
            }
        }
    });
    assert_eventually!(subscribers() == 2.0, "two subscriptions open");

    // Publish until the stalled subscriber's buffer has been full for SLOW_MS. The reader gets
    // each message before the next is published, while the other subscriber reads nothing.
    let mut publisher = fed.client(ORG, "analyst").client();
    let mut published = Vec::new();
    while disconnected() == 0 {
        assert!(
            published.len() < MAX_MESSAGES,
            "{MAX_MESSAGES} messages of {BODY_BYTES} bytes published and the subscriber that \
             reads nothing is still not disconnected"
        );
        let id = publisher
            .publish(big(published.len()))
            .await
            .expect("publish")
            .into_inner()
            .id;
        assert_eq!(
            receive(&mut seen, 1).await[0],
            id,
            "the reading subscriber lost or reordered a message while another one was stalled"
        );
        published.push(id);
    }
    assert_eventually!(
        subscribers() == 1.0,
        "the disconnected subscription is no longer counted (gauge {})",
        subscribers()
    );
    assert_eq!(disconnected(), 1);
    for i in 0..AFTER {
        let r = publisher
            .publish(big(MAX_MESSAGES + i))
            .await
            .expect("publish");
        published.push(r.into_inner().id);
    }
    assert_eq!(
        receive(&mut seen, AFTER).await,
        published[published.len() - AFTER..],
        "the reading subscriber keeps following"
    );

    // The stalled subscriber finally reads: what was already on its way, then the reason.
    let (got, end) = drain(&mut stalled).await;
    let status = end.expect_err("the stalled subscription ends with an error status");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let after_seq = resume_after(&status).expect("the status states the resume position");
    let msg = status.message();
    assert!(msg.contains("too slow"), "{msg}");
    assert!(msg.contains("full for "), "{msg}");
    assert!(
        msg.contains(&format!("resume with after_seq = {after_seq}")),
        "{msg}"
    );
    assert_eq!(
        after_seq,
        got.last().map_or(0, |i| i.seq),
        "the stated position is the last item the subscriber received"
    );
    let got_ids: Vec<String> = got.iter().map(item_id).collect();
    assert_eq!(
        got_ids,
        published[..got.len()],
        "before its disconnection it got the first messages, in order"
    );
    assert!(
        got.len() < published.len() - AFTER,
        "it was disconnected behind: got {} of {}",
        got.len(),
        published.len() - AFTER
    );

    // Resuming there gives every message it had not received, exactly once.
    let mut resumed = stalled_conn
        .client()
        .subscribe(pb::SubscribeRequest {
            after_seq,
            no_follow: true,
            ..Default::default()
        })
        .await
        .expect("subscribe again")
        .into_inner();
    let (rest, end) = drain(&mut resumed).await;
    end.expect("the backlog ends cleanly");
    let all: Vec<String> = got.iter().chain(&rest).map(item_id).collect();
    assert_eq!(
        all, published,
        "the items before the disconnection and after resuming are every message, once"
    );

    drop(seen);
    reading.abort();
    let _ = reading.await;
    assert_eventually!(
        timeout = Duration::from_secs(10),
        subscribers() == 0.0,
        "every subscription ended (gauge {})",
        subscribers()
    );
}

/// A feed that carries each batch signature once (`SIGNATURE_ONCE`) gives back, once
/// restored, exactly the whole-envelope feed, without the bytes of any repeated signature;
/// a feed without envelopes (`NONE`) carries the same content and verdicts. Batches come
/// from publishes made at once, which the origin signs together.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn feed_forms_carry_each_batch_signature_once_or_no_envelope() {
    use prost::Message;
    const N: usize = 100;
    let fed = TestFederation::new(&[
        OrgSpec::csirt("csirt-be", "BE"),
        OrgSpec::csirt("csirt-fr", "FR"),
    ])
    .await;
    let publishes: Vec<_> = (0..N)
        .map(|i| {
            let mut c = fed.client("csirt-be", "analyst").client();
            tokio::spawn(async move { c.publish(free_text(&format!("wave {i}"))).await })
        })
        .collect();
    for p in publishes {
        p.await.unwrap().expect("publish");
    }
    let reader = fed.client("csirt-fr", "analyst");
    assert_eventually!(
        bluewire_tests::backlog(&reader, Some("csirt-be"))
            .await
            .len()
            == N,
        "csirt-fr did not get all {N} messages"
    );
    let feed = |form: pb::EnvelopeForm| {
        let reader = &reader;
        async move {
            let mut s = reader
                .client()
                .subscribe(pb::SubscribeRequest {
                    no_follow: true,
                    envelope_form: form as i32,
                    ..Default::default()
                })
                .await
                .expect("subscribe")
                .into_inner();
            let (items, end) = drain(&mut s).await;
            end.expect("the backlog ends cleanly");
            items
        }
    };
    let whole = feed(pb::EnvelopeForm::Whole).await;
    let once = feed(pb::EnvelopeForm::SignatureOnce).await;
    let none = feed(pb::EnvelopeForm::None).await;
    assert_eq!(whole.len(), N);
    assert_eq!(once.len(), N);
    assert_eq!(none.len(), N);

    let signature = |i: &pb::FeedItem| i.envelope.as_ref().expect("envelope").signature.clone();
    let repeats = (1..N)
        .filter(|&i| signature(&whole[i]) == signature(&whole[i - 1]))
        .count();
    assert!(repeats > 0, "{N} publishes at once were all signed alone");
    for i in 0..N {
        let repeat = i > 0 && signature(&whole[i]) == signature(&whole[i - 1]);
        assert_eq!(once[i].signature_as_previous, repeat, "item {i}");
        assert_eq!(signature(&once[i]).is_empty(), repeat, "item {i}");
    }
    // Each repeated signature is bytes off the wire, and nothing else grows. (How many
    // publishes the origin signs together depends on the machine's load, so the saving is
    // checked item by item, not as a share of the whole.)
    for i in 0..N {
        let (w, o) = (whole[i].encoded_len(), once[i].encoded_len());
        if once[i].signature_as_previous {
            assert!(
                o + signature(&whole[i]).len() <= w,
                "item {i}: {o} bytes with its signature left out, {w} with it"
            );
        } else {
            assert_eq!(o, w, "item {i} carries its signature and should be as long");
        }
    }
    let bytes = |items: &[pb::FeedItem]| items.iter().map(|i| i.encoded_len()).sum::<usize>();
    let saved: usize = (0..N)
        .filter(|&i| once[i].signature_as_previous)
        .map(|i| signature(&whole[i]).len())
        .sum();
    assert!(
        bytes(&once) + saved <= bytes(&whole),
        "{repeats} repeated signatures ({saved} bytes) left out, yet {} of {} bytes",
        bytes(&once),
        bytes(&whole)
    );

    // Restored, it is the whole feed, and every envelope verifies with the origin's key.
    let mut restorer = bluewire_node::feed::forms::Restorer::default();
    let mut restored = once.clone();
    for i in &mut restored {
        restorer.restore(i).expect("restore");
    }
    assert_eq!(restored, whole);
    let key = &fed.info("csirt-be").bundle.node.signing_key;
    let pk = key.public_key("csirt-be").unwrap();
    for i in &restored {
        bluewire_node::envelope::open(
            i.envelope.as_ref().unwrap(),
            |k| (k == key.key_id).then(|| ("csirt-be".to_string(), pk.clone())),
            bluewire_tests::now_ms(),
        )
        .unwrap_or_else(|e| panic!("item {} does not verify: {e}", i.seq));
    }
    // Joined in the middle of a batch, a restorer says so instead of guessing.
    let mid = once.iter().position(|i| i.signature_as_previous).unwrap();
    let err = bluewire_node::feed::forms::Restorer::default()
        .restore(&mut once[mid].clone())
        .unwrap_err();
    assert!(err.contains("none came before"), "{err}");

    // Without envelopes: the same items otherwise.
    for (n, w) in none.iter().zip(&whole) {
        assert_eq!(n.envelope, None);
        assert_eq!(
            n,
            &pb::FeedItem {
                envelope: None,
                ..w.clone()
            }
        );
    }
}
