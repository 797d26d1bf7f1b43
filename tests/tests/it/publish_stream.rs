//! `Client.PublishStream`: many publishes on one stream, each checked, signed and stored as a
//! unary Publish is, answered in order; a request that fails gets its own result and the
//! stream goes on; the per-user rate limit counts every request.

use bluewire_tests::{OrgSpec, TestFederation, assert_eventually, backlog, free_text, item_id, pb};
use tonic::Code;

const BE: &str = "csirt-be";
const FR: &str = "csirt-fr";

/// Sends `requests` on one PublishStream at `org` and returns every result, in the order
/// they came.
async fn stream(
    fed: &TestFederation,
    org: &str,
    user: &str,
    requests: Vec<pb::PublishRequest>,
) -> Vec<pb::PublishResult> {
    let n = requests.len();
    let mut results = fed
        .client(org, user)
        .client()
        .publish_stream(tokio_stream::iter(requests))
        .await
        .expect("open PublishStream")
        .into_inner();
    let mut out = Vec::with_capacity(n);
    loop {
        match tokio::time::timeout(bluewire_tests::EVENTUALLY, results.message()).await {
            Ok(Ok(Some(r))) => out.push(r),
            Ok(Ok(None)) => return out,
            Ok(Err(s)) => panic!("PublishStream failed after {} results: {s}", out.len()),
            Err(_) => panic!("PublishStream did not end; {} of {n} results", out.len()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_of_publishes_is_answered_in_order_and_one_refusal_does_not_end_it() {
    const N: usize = 300;
    let fed = TestFederation::new(&[OrgSpec::csirt(BE, "BE"), OrgSpec::csirt(FR, "FR")]).await;
    // More than the node works on at once (256), with one request it must refuse.
    let bad = 117;
    let requests: Vec<pb::PublishRequest> = (0..N)
        .map(|i| {
            let mut r = free_text(&format!("streamed {i}"));
            if i == bad {
                r.cluster = "no-such-cluster".into();
            }
            r
        })
        .collect();
    let results = stream(&fed, BE, "analyst", requests).await;
    assert_eq!(results.len(), N);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.index, i as u64, "results come back in request order");
        if i == bad {
            assert!(r.published.is_none(), "{r:?}");
            assert_ne!(r.code, Code::Ok as i32, "{r:?}");
            assert!(r.error.contains("no-such-cluster"), "{}", r.error);
        } else {
            let p = r.published.as_ref().unwrap_or_else(|| panic!("{i}: {r:?}"));
            assert_eq!(p.queued_for, vec![FR.to_string()], "{i}");
            assert!(r.error.is_empty());
        }
    }
    // Each stored once (requests are worked on at once, like parallel unary calls, so the
    // store's order may differ from the stream's), and delivered like any publish.
    let ids: Vec<String> = results
        .iter()
        .filter_map(|r| r.published.as_ref().map(|p| p.id.clone()))
        .collect();
    let mut seqs: Vec<u64> = results
        .iter()
        .filter_map(|r| r.published.as_ref().map(|p| p.seq))
        .collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), N - 1, "one stored message per accepted request");
    assert_eventually!(
        backlog(&fed.client(FR, "analyst"), Some(BE)).await.len() == N - 1,
        "csirt-fr did not get the {} streamed messages",
        N - 1
    );
    let got: Vec<String> = backlog(&fed.client(FR, "analyst"), Some(BE))
        .await
        .iter()
        .map(item_id)
        .collect();
    let mut want = ids.clone();
    want.sort();
    let mut got_sorted = got.clone();
    got_sorted.sort();
    assert_eq!(got_sorted, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_request_of_a_stream_counts_against_the_users_rate_limit() {
    let fed = TestFederation::new(&[OrgSpec::csirt(BE, "BE"), OrgSpec::csirt(FR, "FR")]).await;
    fed.stop(FR).await;
    let path = &fed.info(FR).config_path;
    let toml = std::fs::read_to_string(path).unwrap();
    let tight = toml
        .replacen("client_rate_per_sec = 5000", "client_rate_per_sec = 2", 1)
        .replacen("client_burst = 10000", "client_burst = 5", 1);
    assert_ne!(tight, toml, "node.toml template lacks the client limits");
    std::fs::write(path, tight).unwrap();
    fed.restart(FR).await;

    let results = stream(
        &fed,
        FR,
        "analyst",
        (0..20).map(|i| free_text(&format!("chatty {i}"))).collect(),
    )
    .await;
    assert_eq!(results.len(), 20, "refusals do not end the stream");
    let refused: Vec<&pb::PublishResult> =
        results.iter().filter(|r| r.published.is_none()).collect();
    assert!(
        refused.len() >= 10,
        "a 5-request burst let {} of 20 through",
        20 - refused.len()
    );
    for r in &refused {
        assert_eq!(r.code, Code::ResourceExhausted as i32, "{r:?}");
        assert!(
            r.error.contains("limits.client_rate_per_sec"),
            "{}",
            r.error
        );
    }
    let text = fed
        .admin(FR)
        .metrics(pb::MetricsRequest {})
        .await
        .expect("metrics")
        .into_inner()
        .text;
    let counted: u64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("bluewire_rate_limited_total{kind=\"client\",who=\"analyst\"} ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(counted >= refused.len() as u64, "{counted}");
}

/// A caller that sends and never takes a result is cut off after `feed.slow_subscriber_ms`
/// with the reason, after the results it was sent; the node reads no more than it can
/// answer. (Refused requests whose error repeats a 60 KB cluster name fill the caller's
/// HTTP/2 window in a few dozen results.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_caller_that_takes_no_results_is_cut_off_with_the_reason() {
    use bluewire_tests::{ConfigEdit, FedOptions};
    const SLOW_MS: u64 = 300;
    const SENT: usize = 1000;
    let fed = TestFederation::with_options(
        &[OrgSpec::csirt(BE, "BE")],
        FedOptions {
            config_edits: vec![ConfigEdit::set("feed", "slow_subscriber_ms", SLOW_MS)],
            ..FedOptions::default()
        },
    )
    .await;
    let (tx, rx) = tokio::sync::mpsc::channel(SENT);
    let long = "c".repeat(60_000);
    for i in 0..SENT {
        let mut r = free_text(&format!("unread {i}"));
        r.cluster = long.clone();
        tx.send(r).await.unwrap();
    }
    let mut results = fed
        .client(BE, "analyst")
        .client()
        .publish_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("open PublishStream")
        .into_inner();
    // Take nothing for well past the limit (the sending side stays open).
    tokio::time::sleep(std::time::Duration::from_millis(SLOW_MS * 5)).await;
    let mut taken = Vec::new();
    let end = loop {
        match tokio::time::timeout(bluewire_tests::EVENTUALLY, results.message()).await {
            Ok(Ok(Some(r))) => taken.push(r),
            Ok(Ok(None)) => panic!("the stream ended without a reason after {}", taken.len()),
            Ok(Err(status)) => break status,
            Err(_) => panic!("the stream was not cut off; {} results", taken.len()),
        }
    };
    assert_eq!(end.code(), Code::ResourceExhausted, "{end:?}");
    assert!(
        end.message().contains("slow_subscriber_ms"),
        "{}",
        end.message()
    );
    assert!(
        !taken.is_empty() && taken.len() < SENT,
        "{} results",
        taken.len()
    );
    for (i, r) in taken.iter().enumerate() {
        assert_eq!(r.index, i as u64);
        assert!(
            r.published.is_none() && r.error.contains("ccc"),
            "{}",
            &r.error[..80.min(r.error.len())]
        );
    }
    // The node kept working: a new call is answered.
    fed.publish(BE, "after the cut-off").await;
    drop(tx);
}
