//! A peer (or someone holding a peer's node certificate) hands csirt-fr
//! altered, unsigned-by-a-known-key, malformed, oversized and garbage input:
//! each is refused with a reason an operator can read, nothing is stored, and
//! the node keeps serving.

use bluewire_node::envelope::{MAX_CONTENT_BYTES, seal};
use bluewire_node::signing::{MESSAGE_CONTEXT, SigningKey};
use bluewire_tests::clusters::deliver_as;
use bluewire_tests::{OrgSpec, TestFederation, assert_eventually, backlog, content, item_id, pb};
use bytes::{Buf, BufMut};
use prost::Message as _;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// A codec that sends and receives raw message bytes.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut v = vec![0u8; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

fn assert_rejected(r: &pb::DeliveryResult, needle: &str, case: &str) {
    assert_eq!(
        r.outcome,
        pb::DeliveryOutcome::Rejected as i32,
        "{case}: expected REJECTED, got {r:?}"
    );
    assert!(
        r.reason.contains(needle),
        "{case}: reason {:?} should mention {needle:?}",
        r.reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tampered_malformed_and_oversized_input_is_refused_and_node_keeps_serving() {
    let fed = TestFederation::new(&[
        OrgSpec::csirt("csirt-be", "BE"),
        OrgSpec::csirt("csirt-fr", "FR"),
    ])
    .await;
    let be_key = fed.signing_key("csirt-be");
    let fr = fed.client("csirt-fr", "analyst");

    // (a) One flipped content byte.
    let c = content("csirt-be", "tampered");
    let tampered_id = c.id.clone();
    let mut env = seal(&be_key, &c);
    let last = env.content.len() - 1;
    env.content = {
        let mut b = env.content.to_vec();
        b[last] ^= 0x01;
        b.into()
    };
    let r = deliver_as(&fed, "csirt-be", "csirt-fr", env).await;
    assert_rejected(&r, "signature", "flipped byte");
    let got = fr
        .client()
        .get(pb::GetRequest {
            id: tampered_id.clone(),
        })
        .await;
    assert_eq!(
        got.expect_err("tampered message must not be stored").code(),
        tonic::Code::NotFound
    );

    // (b) A key id no certificate ever certified.
    let stranger = SigningKey::generate("csirt-be").unwrap();
    let r = deliver_as(
        &fed,
        "csirt-be",
        "csirt-fr",
        seal(&stranger, &content("csirt-be", "unknown key")),
    )
    .await;
    assert_rejected(&r, "unknown signing key", "unknown key id");

    // (c) Properly signed, but the content is not a Content message.
    let garbage = b"\xff\xff\xff\xff not protobuf at all".to_vec();
    let r = deliver_as(
        &fed,
        "csirt-be",
        "csirt-fr",
        pb::Envelope {
            signature: be_key.sign(MESSAGE_CONTEXT, &garbage).into(),
            content: garbage.into(),
            key_id: be_key.key_id().to_string(),
            ..Default::default()
        },
    )
    .await;
    assert_rejected(&r, "not a valid", "signed garbage content");

    // (c2) An envelope of a batch signed at once, its inclusion proof cut short or pointed at
    // another leaf: refused before anything is decoded.
    let batch = bluewire_node::envelope::seal_batch(
        &be_key,
        vec![
            content("csirt-be", "batch 1").encode_to_vec(),
            content("csirt-be", "batch 2").encode_to_vec(),
            content("csirt-be", "batch 3").encode_to_vec(),
        ],
    );
    let mut cut = batch[0].clone();
    cut.batch
        .as_mut()
        .expect("a batch of three has proofs")
        .path
        .pop();
    let r = deliver_as(&fed, "csirt-be", "csirt-fr", cut).await;
    assert_rejected(&r, "batch proof does not hold", "a cut inclusion proof");
    let mut moved = batch[1].clone();
    moved.batch.as_mut().expect("proof").index = 0;
    let r = deliver_as(&fed, "csirt-be", "csirt-fr", moved).await;
    assert_rejected(
        &r,
        "signature does not verify",
        "a proof read at another leaf",
    );

    // (d) Content over 1 MiB (within the request limit).
    let mut big = content("csirt-be", "big");
    if let Some(pb::content::Body::FreeText(t)) = &mut big.body {
        t.body = "x".repeat(MAX_CONTENT_BYTES + 1);
    }
    let r = deliver_as(&fed, "csirt-be", "csirt-fr", seal(&be_key, &big)).await;
    assert_rejected(&r, "limit", "content over 1 MiB");

    // (e) A request over max_request_bytes (4 MiB): a gRPC error, not a crash.
    let chunk = |i: usize| pb::Envelope {
        content: vec![i as u8; 1024 * 1024].into(),
        signature: vec![0; 64].into(),
        key_id: be_key.key_id().to_string(),
        ..Default::default()
    };
    let huge = pb::DeliverRequest {
        envelopes: (0..5).map(chunk).collect(),
        ..Default::default()
    };
    let err = fed
        .node_conn("csirt-be", "csirt-fr")
        .federation()
        .deliver(huge)
        .await
        .expect_err("a 5 MiB request must be refused");
    assert_ne!(err.code(), tonic::Code::Ok);

    // (f) A Deliver request whose bytes are not protobuf.
    let conn = fed.node_conn("csirt-be", "csirt-fr");
    let mut grpc = tonic::client::Grpc::new(conn.channel.clone());
    grpc.ready().await.expect("channel ready");
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/bluewire.v1.Federation/Deliver");
    let err = grpc
        .unary(
            tonic::Request::new(b"\xff\xff\xff\xff\x0f\x0f garbage frame".to_vec()),
            path,
            RawCodec,
        )
        .await
        .expect_err("undecodable request must be refused");
    assert_ne!(err.code(), tonic::Code::Ok);

    // (g) A signature table that does not add up (a reference past its end) is refused whole,
    // with the reason, and nothing of the call is stored; the same envelope with its
    // signature in a table that adds up is accepted as sealed.
    let tabled = content("csirt-be", "signature sent once per call");
    let mut env = seal(&be_key, &tabled);
    let signature = std::mem::take(&mut env.signature);
    let call = |refs: Vec<u32>| pb::DeliverRequest {
        envelopes: vec![env.clone()],
        signatures: vec![signature.clone()],
        signature_refs: refs,
    };
    let err = fed
        .node_conn("csirt-be", "csirt-fr")
        .federation()
        .deliver(call(vec![2]))
        .await
        .expect_err("a reference past the table is refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("signature table does not add up")
            && err.message().contains("refers to signature 2"),
        "{}",
        err.message()
    );
    assert!(
        fed.node("csirt-fr")
            .store
            .get("csirt-be", &tabled.id)
            .unwrap()
            .is_none(),
        "nothing of a refused call is stored"
    );
    let r = fed
        .node_conn("csirt-be", "csirt-fr")
        .federation()
        .deliver(call(vec![1]))
        .await
        .expect("a table that adds up is taken")
        .into_inner()
        .results;
    assert_eq!(r[0].outcome, pb::DeliveryOutcome::Accepted as i32, "{r:?}");
    let stored = fed
        .node("csirt-fr")
        .store
        .get("csirt-be", &tabled.id)
        .unwrap()
        .expect("stored");
    assert_eq!(
        pb::Envelope::decode(stored.envelope.as_slice()).unwrap(),
        pb::Envelope {
            signature: signature.clone(),
            ..env.clone()
        },
        "stored exactly as sealed, its signature back in place"
    );

    // The node still serves: a well-formed envelope is accepted, then deduplicated.
    let good = content("csirt-be", "good after abuse");
    let good_id = good.id.clone();
    let env = seal(&be_key, &good);
    let r = deliver_as(&fed, "csirt-be", "csirt-fr", env.clone()).await;
    assert_eq!(r.outcome, pb::DeliveryOutcome::Accepted as i32, "{r:?}");
    assert_eq!(r.id, good_id);
    let r = deliver_as(&fed, "csirt-be", "csirt-fr", env).await;
    assert_eq!(r.outcome, pb::DeliveryOutcome::Duplicate as i32, "{r:?}");

    // ... and a normal publish at csirt-be still reaches it.
    let published = arrives_at_fr(
        &fed,
        &fr,
        "normal traffic",
        "published message never reached csirt-fr",
    )
    .await;

    // Nothing refused is in the feed; the good ones are, once each.
    let feed = backlog(&fr, None).await;
    let ids: Vec<String> = feed.iter().map(item_id).collect();
    assert!(
        !ids.contains(&tampered_id),
        "tampered message is in the feed"
    );
    assert_eq!(ids.len(), 3, "feed: {ids:?}");
    assert!(ids.contains(&good_id) && ids.contains(&published.id) && ids.contains(&tabled.id));

    // The operator sees every refused envelope with its reason.
    let rej = fed.rejections("csirt-fr").await;
    for needle in ["signature", "unknown signing key", "not a valid", "limit"] {
        assert!(
            rej.iter()
                .any(|r| r.from_peer == "csirt-be" && r.reason.contains(needle)),
            "no rejection mentioning {needle:?} in {rej:?}"
        );
    }
    assert!(
        rej.iter().any(|r| r.id == tampered_id),
        "the tampered message's id is not in the rejection log: {rej:?}"
    );
}

/// Publish `text` at csirt-be and wait until csirt-fr's `analyst` gets it, or fail with `why`.
async fn arrives_at_fr(
    fed: &TestFederation,
    fr: &bluewire_node::client::Connection,
    text: &str,
    why: &str,
) -> pb::PublishResponse {
    let published = fed.publish("csirt-be", text).await;
    assert_eventually!(
        fr.client()
            .get(pb::GetRequest {
                id: published.id.clone()
            })
            .await
            .is_ok(),
        "{why}"
    );
    published
}

/// `Federation.DeliverStream`: each request is judged as a Deliver call is and answered in
/// order; a request refused whole is answered with its status and the stream goes on;
/// bytes that are not a request end the stream with an error, not the node; and only a
/// node may open one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_stream_judges_each_request_in_order_and_outlives_a_refused_one() {
    let fed = TestFederation::new(&[
        OrgSpec::csirt("csirt-be", "BE"),
        OrgSpec::csirt("csirt-fr", "FR"),
    ])
    .await;
    let be_key = fed.signing_key("csirt-be");
    let hello = fed
        .node_conn("csirt-be", "csirt-fr")
        .federation()
        .hello(pb::HelloRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        hello.features.iter().any(|f| f == "deliver-stream"),
        "{hello:?}"
    );

    let good = content("csirt-be", "over a delivery stream");
    let good_env = seal(&be_key, &good);
    let mut flipped = seal(&be_key, &content("csirt-be", "flipped on the stream"));
    let last = flipped.content.len() - 1;
    flipped.content = {
        let mut b = flipped.content.to_vec();
        b[last] ^= 0x01;
        b.into()
    };
    let mut tabled = seal(
        &be_key,
        &content("csirt-be", "a table that does not add up"),
    );
    let signature = std::mem::take(&mut tabled.signature);
    let one = |env: &pb::Envelope| pb::DeliverRequest {
        envelopes: vec![env.clone()],
        ..Default::default()
    };
    let requests = vec![
        one(&good_env),
        one(&flipped),
        pb::DeliverRequest {
            envelopes: vec![tabled.clone()],
            signatures: vec![signature],
            signature_refs: vec![2],
        },
        one(&good_env),
    ];
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut answers = fed
        .node_conn("csirt-be", "csirt-fr")
        .federation()
        .deliver_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("a node opens a delivery stream")
        .into_inner();
    let mut got = Vec::new();
    // One request at a time, as a delivery worker sends them.
    for r in requests {
        tx.send(r).await.unwrap();
        got.push(
            tokio::time::timeout(std::time::Duration::from_secs(20), answers.message())
                .await
                .expect("answered within 20 s")
                .expect("the stream goes on")
                .expect("one answer per request"),
        );
    }
    drop(tx);
    let outcome = |a: &pb::DeliverResponse| {
        (
            a.code,
            a.results.iter().map(|r| r.outcome).collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        outcome(&got[0]),
        (0, vec![pb::DeliveryOutcome::Accepted as i32]),
        "{got:?}"
    );
    assert_rejected(
        &got[1].results[0],
        "signature",
        "flipped byte, on the stream",
    );
    assert_eq!(got[2].code, tonic::Code::InvalidArgument as i32, "{got:?}");
    assert!(got[2].results.is_empty(), "{got:?}");
    assert!(
        got[2].error.contains("signature table does not add up"),
        "{}",
        got[2].error
    );
    assert_eq!(
        outcome(&got[3]),
        (0, vec![pb::DeliveryOutcome::Duplicate as i32]),
        "the stream went on after the refusal: {got:?}"
    );
    assert!(
        answers.message().await.unwrap().is_none(),
        "the stream ends when the sender closes its side"
    );
    let store = &fed.node("csirt-fr").store;
    assert!(store.get("csirt-be", &good.id).unwrap().is_some());
    assert_eq!(store.find_by_id(&good.id).unwrap().len(), 1);

    // At most MAX_PER_PEER streams per peer organisation: one more is refused with why, and
    // csirt-be's delivery worker, refused a stream of its own, delivers by Deliver calls.
    let fr_node = fed.node("csirt-fr");
    assert_eventually!(
        fr_node.deliver_streams.open("csirt-be") == 0,
        "the streams above are still counted: {}",
        fr_node.deliver_streams.open("csirt-be")
    );
    let mut held = Vec::new();
    for _ in 0..bluewire_node::api::MAX_DELIVER_STREAMS_PER_PEER {
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::DeliverRequest>(1);
        let answers = fed
            .node_conn("csirt-be", "csirt-fr")
            .federation()
            .deliver_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("within the cap");
        held.push((tx, answers));
    }
    let err = fed
        .node_conn("csirt-be", "csirt-fr")
        .federation()
        .deliver_stream(tokio_stream::iter([one(&good_env)]))
        .await
        .expect_err("one stream past the cap");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("delivery streams open"),
        "{}",
        err.message()
    );
    let fr = fed.client("csirt-fr", "analyst");
    arrives_at_fr(
        &fed,
        &fr,
        "sent while the streams are taken",
        "csirt-be's worker did not fall back to Deliver calls",
    )
    .await;
    drop(held);
    assert_eventually!(
        fr_node.deliver_streams.open("csirt-be") <= 1,
        "closed streams are still counted: {}",
        fr_node.deliver_streams.open("csirt-be")
    );
    drop(fr_node);

    // Bytes that are not a request: the stream ends with an error status.
    let conn = fed.node_conn("csirt-be", "csirt-fr");
    let mut grpc = tonic::client::Grpc::new(conn.channel.clone());
    grpc.ready().await.expect("channel ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/bluewire.v1.Federation/DeliverStream",
    );
    let garbage = tokio_stream::iter([b"\xff\xff\xff\xff\x0f\x0f garbage frame".to_vec()]);
    let ended = match grpc
        .streaming(tonic::Request::new(garbage), path, RawCodec)
        .await
    {
        Err(status) => status,
        Ok(answers) => {
            let mut answers = answers.into_inner();
            tokio::time::timeout(std::time::Duration::from_secs(20), answers.message())
                .await
                .expect("ended within 20 s")
                .expect_err("undecodable bytes end the stream with an error")
        }
    };
    assert_ne!(ended.code(), tonic::Code::Ok, "{ended:?}");

    // A user certificate cannot open one.
    let err = fed
        .client("csirt-be", "analyst")
        .federation()
        .deliver_stream(tokio_stream::iter([one(&good_env)]))
        .await
        .expect_err("a user certificate cannot deliver");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");

    // The node still serves, and csirt-be's own traffic arrives (by calls: its worker was
    // refused a stream above and asks again only after 30 s).
    arrives_at_fr(
        &fed,
        &fr,
        "normal traffic after the stream",
        "a publish at csirt-be never reached csirt-fr",
    )
    .await;
}

/// A delivery worker delivers over one stream of its own; a stream held open and idle ends
/// with the node, saying why, and does not hold up its shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_delivers_over_one_stream_and_an_open_stream_ends_with_the_node() {
    let fed = TestFederation::new(&[
        OrgSpec::csirt("csirt-be", "BE"),
        OrgSpec::csirt("csirt-fr", "FR"),
    ])
    .await;
    let fr = fed.client("csirt-fr", "analyst");
    for i in 0..3 {
        let text = format!("over the worker's stream {i}");
        arrives_at_fr(
            &fed,
            &fr,
            &text,
            "a publish at csirt-be never reached csirt-fr",
        )
        .await;
    }
    assert_eq!(
        fed.node("csirt-fr").deliver_streams.open("csirt-be"),
        1,
        "csirt-be's worker delivers over one stream"
    );

    // A stream held open and idle does not hold up the node's shutdown: it ends, saying why.
    let (held_tx, rx) = tokio::sync::mpsc::channel::<pb::DeliverRequest>(1);
    let mut held = fed
        .node_conn("csirt-be", "csirt-fr")
        .federation()
        .deliver_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("a stream to hold")
        .into_inner();
    fed.stop("csirt-fr").await;
    let ended = tokio::time::timeout(std::time::Duration::from_secs(20), held.message())
        .await
        .expect("the held stream ends with the node")
        .expect_err("with a status");
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
    assert!(ended.message().contains("shutting down"), "{ended:?}");
    drop(held_tx);
}
