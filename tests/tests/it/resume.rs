//! A subscriber that disconnects and resumes, by sequence number or by a
//! durable cursor, sees exactly the messages it missed: no gap, no duplicate.

use bluewire_tests::{EVENTUALLY, OrgSpec, TestFederation, backlog, item_id, pb, take_items};

async fn publish_n(fed: &TestFederation, from: usize, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in from..from + n {
        ids.push(fed.publish("csirt-be", &format!("msg {i}")).await.id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resume_after_seq_and_durable_cursor_without_gap_or_duplicate() {
    let fed = TestFederation::new(&[OrgSpec::csirt("csirt-be", "BE")]).await;
    let conn = fed.client("csirt-be", "analyst");

    // --- after_seq --------------------------------------------------------
    let mut expected = publish_n(&fed, 0, 10).await;
    let mut s = conn
        .client()
        .subscribe(pb::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = take_items(&mut s, 4, EVENTUALLY).await;
    drop(s);
    let last_seq = first.last().unwrap().seq;
    expected.extend(publish_n(&fed, 10, 6).await);

    let rest = {
        let mut s = conn
            .client()
            .subscribe(pb::SubscribeRequest {
                after_seq: last_seq,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        take_items(&mut s, 12, EVENTUALLY).await
    };
    let seen: Vec<String> = first.iter().chain(&rest).map(item_id).collect();
    assert_eq!(
        seen, expected,
        "resume by after_seq lost or repeated messages"
    );
    assert!(rest.iter().all(|i| i.seq > last_seq));
    // Nothing more beyond those: the backlog after last_seq has exactly 12.
    let tail = {
        let mut s = conn
            .client()
            .subscribe(pb::SubscribeRequest {
                after_seq: last_seq,
                no_follow: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut n = 0;
        while let Some(item) = s.message().await.unwrap() {
            assert!(item.seq > last_seq);
            n += 1;
        }
        n
    };
    assert_eq!(tail, 12);

    // --- durable cursor -----------------------------------------------------
    let durable = "soc-ingest";
    let mut s = conn
        .client()
        .subscribe(pb::SubscribeRequest {
            durable_name: durable.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let part1 = take_items(&mut s, 7, EVENTUALLY).await;
    assert_eq!(
        part1.iter().map(item_id).collect::<Vec<_>>(),
        expected[..7].to_vec(),
        "a new durable cursor starts at the beginning"
    );
    conn.client()
        .commit_cursor(pb::CommitCursorRequest {
            durable_name: durable.into(),
            seq: part1.last().unwrap().seq,
        })
        .await
        .expect("commit cursor");
    drop(s);
    expected.extend(publish_n(&fed, 16, 5).await);

    let mut s = conn
        .client()
        .subscribe(pb::SubscribeRequest {
            durable_name: durable.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let part2 = take_items(&mut s, expected.len() - 7, EVENTUALLY).await;
    let seen: Vec<String> = part1.iter().chain(&part2).map(item_id).collect();
    assert_eq!(
        seen, expected,
        "resume by durable cursor lost or repeated messages"
    );
    // Followers get new messages live, still in order, after the backlog.
    let live = fed.publish("csirt-be", "live").await;
    let next = take_items(&mut s, 1, EVENTUALLY).await;
    assert_eq!(item_id(&next[0]), live.id);
    drop(s);

    // The store's complete feed agrees.
    let all: Vec<String> = backlog(&conn, None).await.iter().map(item_id).collect();
    expected.push(live.id);
    assert_eq!(all, expected);
}
