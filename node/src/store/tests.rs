//! Unit tests of the store: public behaviour through [`Store`], plus the on-disk layout
//! (migration, corruption) through the table definitions.

use super::tables::{MESSAGES, META, META_NEXT_SEQ, MessageRecord, OLD_ANNOTATIONS, OLD_IDS};
use super::*;
use redb::ReadableTableMetadata as _;

fn msg(id: &str, outbox: &[&str]) -> NewMessage {
    NewMessage {
        id: id.to_owned(),
        envelope: format!("env-{id}").into_bytes(),
        batch_signature: None,
        origin: "org-a".into(),
        kind: 1,
        level: 2,
        cluster: "org-a/c".into(),
        reshare: false,
        case: String::new(),
        stix: Vec::new(),
        received_from: String::new(),
        received_at_ms: 42,
        outbox: outbox.iter().map(|s| (*s).to_owned()).collect(),
        audit: Vec::new(),
    }
}

/// `base` carrying `env` as [`NewMessage::of_envelope`] hands it over: a batch's signature
/// apart from the bytes.
fn handed_apart(env: &bluewire_proto::v1::Envelope, base: NewMessage) -> NewMessage {
    let split = NewMessage::of_envelope(&Default::default(), env.clone(), "", 0);
    NewMessage {
        envelope: split.envelope,
        batch_signature: split.batch_signature,
        ..base
    }
}

/// The envelope bytes of up to 10 messages stored after `seq`.
fn envelopes_after(store: &Store, seq: u64) -> Vec<Vec<u8>> {
    store
        .read_after(seq, 10)
        .unwrap()
        .into_iter()
        .map(|m| m.envelope)
        .collect()
}

/// A store in a temporary directory, and a signing key of org-a.
fn store_and_signer() -> (tempfile::TempDir, Store, crate::signing::SigningKey) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = crate::signing::SigningKey::generate("org-a").unwrap();
    (dir, store, key)
}

#[tokio::test]
async fn stix_objects_are_indexed_by_id_with_origin_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    assert!(store.stix_versions("indicator--x").unwrap().is_empty());
    let a = NewMessage {
        stix: vec![
            ("indicator--x".into(), "v1".into()),
            ("ipv4-addr--y".into(), String::new()),
        ],
        ..msg("m1", &[])
    };
    let b = NewMessage {
        origin: "org-b".into(),
        stix: vec![("indicator--x".into(), "v2".into())],
        ..msg("m2", &[])
    };
    let sa = store.insert(a).await.unwrap().seq();
    let sb = store.insert(b).await.unwrap().seq();
    assert_eq!(
        store.stix_versions("indicator--x").unwrap(),
        vec![
            (sa, "org-a".into(), "v1".into()),
            (sb, "org-b".into(), "v2".into())
        ]
    );
    assert_eq!(
        store.stix_versions("ipv4-addr--y").unwrap(),
        vec![(sa, "org-a".into(), String::new())]
    );
    assert!(store.stix_versions("indicator--").unwrap().is_empty());
}

#[tokio::test]
async fn ids_belong_to_their_origin() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut squat = msg("m", &["p"]);
    squat.origin = "org-b".into();
    squat.envelope = b"env-squat".to_vec();
    // The squatter arrives first: the real message is still stored, not a duplicate.
    assert_eq!(
        store.insert(squat.clone()).await.unwrap(),
        InsertOutcome::Inserted(1)
    );
    assert_eq!(
        store.insert(msg("m", &["p"])).await.unwrap(),
        InsertOutcome::Inserted(2)
    );
    assert_eq!(
        store.insert(squat).await.unwrap(),
        InsertOutcome::Duplicate(1)
    );
    assert_eq!(store.get("org-a", "m").unwrap().unwrap().envelope, b"env-m");
    assert_eq!(
        store.get("org-b", "m").unwrap().unwrap().envelope,
        b"env-squat"
    );
    assert!(store.get("org-c", "m").unwrap().is_none());
    let all: Vec<_> = store
        .find_by_id("m")
        .unwrap()
        .into_iter()
        .map(|m| m.origin)
        .collect();
    assert_eq!(all, vec!["org-a", "org-b"]);
    assert!(store.find_by_id("m2").unwrap().is_empty());
    assert!(store.find_by_id("").unwrap().is_empty());
    assert_eq!(store.outbox_depth("p").unwrap(), 2);
}

#[tokio::test]
async fn annotations_keep_the_latest_or_earliest_whatever_the_arrival_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let rec = |at_ms, id: &str, v: &str| AnnotationRecord {
        at_ms,
        by_id: id.into(),
        value: v.as_bytes().to_vec(),
    };
    let put = |kind: &str, r, keep| store.annotate("org-a", "m", kind.to_string(), r, keep);
    assert!(put("k", rec(2, "b", "two"), Keep::Latest).await.unwrap());
    assert!(!put("k", rec(1, "z", "one"), Keep::Latest).await.unwrap());
    assert!(
        !put("k", rec(2, "a", "tie-lower"), Keep::Latest)
            .await
            .unwrap()
    );
    assert!(
        put("k", rec(2, "c", "tie-higher"), Keep::Latest)
            .await
            .unwrap()
    );
    assert!(
        put("r", rec(5, "x", "first"), Keep::Earliest)
            .await
            .unwrap()
    );
    assert!(
        !put("r", rec(6, "y", "second"), Keep::Earliest)
            .await
            .unwrap()
    );
    assert!(
        put("r", rec(4, "w", "earlier"), Keep::Earliest)
            .await
            .unwrap()
    );
    let got = store.annotations("org-a", "m").unwrap();
    let text: Vec<_> = got
        .iter()
        .map(|(k, r)| (k.as_str(), String::from_utf8_lossy(&r.value).into_owned()))
        .collect();
    assert_eq!(
        text,
        vec![
            ("k", "tie-higher".to_string()),
            ("r", "earlier".to_string())
        ]
    );
    // Another origin's message with the same id has none of them.
    assert!(store.annotations("org-b", "m").unwrap().is_empty());
    assert!(store.annotations("org-a", "m2").unwrap().is_empty());
}

/// Past its bound the set of annotated messages says "maybe" for every message (every lookup
/// reads the store), and it never forgets a key it noted.
#[test]
fn the_annotated_set_is_bounded_and_then_sends_every_lookup_to_the_store() {
    let set = super::Annotated::default();
    for i in 0..super::Annotated::MAX_KEYS {
        set.note(&format!("org-a/m{i}"));
    }
    assert!(set.may_have("org-a/m0"));
    assert!(set.may_have(&format!("org-a/m{}", super::Annotated::MAX_KEYS - 1)));
    assert!(!set.may_have("org-b/never"));
    set.note("org-a/one-more");
    assert!(
        set.may_have("org-b/never"),
        "overflowed: every lookup reads"
    );
    assert!(set.may_have("org-a/m0"));
}

/// Lookups skip the store for messages without annotations (`Annotated`): a reopened
/// store still finds every annotation written before, including one the first lookup of
/// which came before it was written.
#[tokio::test]
async fn annotations_are_found_after_a_reopen_and_after_a_lookup_that_found_none() {
    let dir = tempfile::tempdir().unwrap();
    let rec = |v: &str| AnnotationRecord {
        at_ms: 1,
        by_id: "x".into(),
        value: v.as_bytes().to_vec(),
    };
    {
        let store = Store::open(dir.path()).unwrap();
        assert!(store.annotations("org-a", "m").unwrap().is_empty());
        store
            .annotate(
                "org-a",
                "m",
                "retracted".into(),
                rec("gone"),
                Keep::Earliest,
            )
            .await
            .unwrap();
        let got = store.annotations("org-a", "m").unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.value, b"gone");
        store.close().await;
    }
    let store = Store::open(dir.path()).unwrap();
    let got = store.annotations("org-a", "m").unwrap();
    assert_eq!(got.len(), 1, "the annotation is found after a reopen");
    assert_eq!(got[0].0, "retracted");
    assert!(store.annotations("org-a", "n").unwrap().is_empty());
}

#[test]
fn a_store_with_id_only_keys_is_migrated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    {
        // The layout before (origin, id) keys.
        let db = redb::Database::create(&path).unwrap();
        let wtx = db.begin_write().unwrap();
        {
            let mut messages = wtx.open_table(MESSAGES.typed()).unwrap();
            let mut ids = wtx.open_table(OLD_IDS.typed()).unwrap();
            let mut meta = wtx.open_table(META.typed()).unwrap();
            let mut old = wtx.open_table(OLD_ANNOTATIONS.typed()).unwrap();
            for (seq, id, origin) in [(1u64, "m1", "org-a"), (2, "m2", "org-b")] {
                let rec = MessageRecord {
                    id: id.into(),
                    envelope: b"env".to_vec(),
                    origin: origin.into(),
                    ..Default::default()
                };
                messages
                    .insert(seq, rec.encode_to_vec().as_slice())
                    .unwrap();
                ids.insert(id, seq).unwrap();
            }
            meta.insert(META_NEXT_SEQ, 3).unwrap();
            old.insert(("m1", "retracted"), b"org-a\nwrong".as_slice())
                .unwrap();
            old.insert(("m2", "retracted"), b"org-x\nnot the origin".as_slice())
                .unwrap();
            old.insert(("m2", "marking"), b"\x08\x04".as_slice())
                .unwrap();
        }
        wtx.commit().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.get("org-a", "m1").unwrap().unwrap().seq, 1);
    assert_eq!(store.get("org-b", "m2").unwrap().unwrap().seq, 2);
    let a = store.annotations("org-a", "m1").unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(
        (a[0].0.as_str(), a[0].1.value.as_slice()),
        ("retracted", b"wrong".as_slice())
    );
    // A retraction signed by another organisation is about that organisation's own
    // (origin, id), never the real message's.
    let b = store.annotations("org-b", "m2").unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].0, "marking/org-b");
    let x = store.annotations("org-x", "m2").unwrap();
    assert_eq!((x.len(), x[0].0.as_str()), (1, "retracted"));
    // Messages keep flowing with the same seq space, and re-opening is a no-op.
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.head_seq(), 2);
    assert_eq!(store.find_by_id("m1").unwrap().len(), 1);
}

#[tokio::test]
async fn records_from_before_clusters_were_stored_learn_their_cluster_and_reshare_flag_on_open() {
    use bluewire_proto::v1 as pb;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let envelope = |cluster: &str| {
        pb::Envelope {
            content: pb::Content {
                id: "m1".into(),
                origin_org: "org-a".into(),
                cluster: cluster.into(),
                ..Default::default()
            }
            .encode_to_vec()
            .into(),
            ..Default::default()
        }
        .encode_to_vec()
    };
    {
        // Layout 1: records without cluster or re-share flag, and no layout in meta.
        let db = redb::Database::create(&path).unwrap();
        let wtx = db.begin_write().unwrap();
        {
            let mut messages = wtx.open_table(MESSAGES.typed()).unwrap();
            let mut ids = wtx.open_table(super::tables::IDS.typed()).unwrap();
            let mut meta = wtx.open_table(META.typed()).unwrap();
            for (seq, id, env) in [
                (1u64, "m1", envelope("org-a/c")),
                (2, "fwd:m1:org-b/d", envelope("org-a/c")),
                (3, "m3", envelope("")),
                (4, "m4", b"not an envelope".to_vec()),
            ] {
                let rec = MessageRecord {
                    id: id.into(),
                    envelope: env,
                    origin: "org-a".into(),
                    ..Default::default()
                };
                messages
                    .insert(seq, rec.encode_to_vec().as_slice())
                    .unwrap();
                ids.insert((id, "org-a"), seq).unwrap();
            }
            meta.insert(META_NEXT_SEQ, 5).unwrap();
        }
        wtx.commit().unwrap();
    }
    let described = |store: &Store| {
        store
            .read_after(0, 10)
            .unwrap()
            .into_iter()
            .map(|m| (m.seq, m.cluster, m.reshare))
            .collect::<Vec<_>>()
    };
    let store = Store::open(dir.path()).unwrap();
    let want = vec![
        (1, "org-a/c".to_string(), false),
        (2, "org-a/c".to_string(), true),
        (3, String::new(), false),
        (4, String::new(), false),
    ];
    assert_eq!(described(&store), want);
    // Once migrated, never again: a record written now keeps what it was given.
    let odd = NewMessage {
        id: "fwd:m5".into(),
        envelope: envelope("org-a/c"),
        origin: "org-a".into(),
        cluster: String::new(),
        ..msg("m5", &[])
    };
    store.insert(odd).await.unwrap();
    store.close().await;
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let mut want = want;
    want.push((5, String::new(), false));
    assert_eq!(described(&store), want);
}

#[tokio::test]
async fn insert_and_dedup() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.head_seq(), 0);
    let a = store.insert(msg("a", &["p1"])).await.unwrap();
    assert_eq!(a, InsertOutcome::Inserted(1));
    let dup = store.insert(msg("a", &["p1", "p2"])).await.unwrap();
    assert_eq!(dup, InsertOutcome::Duplicate(1));
    assert_eq!(store.outbox_depth("p1").unwrap(), 1);
    assert_eq!(store.outbox_depth("p2").unwrap(), 0);
    assert_eq!(store.message_count().unwrap(), 1);
    let many = store
        .insert_many(vec![
            msg("b", &[]),
            msg("a", &[]),
            msg("b", &[]),
            msg("c", &[]),
        ])
        .await
        .unwrap();
    assert_eq!(
        many,
        vec![
            InsertOutcome::Inserted(2),
            InsertOutcome::Duplicate(1),
            InsertOutcome::Duplicate(2),
            InsertOutcome::Inserted(3)
        ]
    );
    assert_eq!(store.head_seq(), 3);
    let got = store.get("org-a", "b").unwrap().unwrap();
    assert_eq!(got.seq, 2);
    assert_eq!(got.envelope, b"env-b");
    assert_eq!(got.kind, 1);
    assert_eq!(got.level, 2);
    assert_eq!(got.received_at_ms, 42);
    assert_eq!(store.get_by_seq(3).unwrap().unwrap().id, "c");
    assert!(store.get("org-a", "zz").unwrap().is_none());
    assert!(store.get_by_seq(99).unwrap().is_none());
    assert!(matches!(
        store.insert(msg("", &[])).await,
        Err(StoreError::Invalid(_))
    ));
    // A failed op in a group does not poison the store.
    assert_eq!(
        store.insert(msg("d", &[])).await.unwrap(),
        InsertOutcome::Inserted(4)
    );
}

#[tokio::test]
async fn seq_monotonic_across_reopen_and_data_survives() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.insert(msg("a", &["p"])).await.unwrap();
        store.insert(msg("b", &["p"])).await.unwrap();
        store.set_cursor("sub", 1).await.unwrap();
        // dropped without close: releases the lock
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.head_seq(), 2);
    assert_eq!(store.message_count().unwrap(), 2);
    assert_eq!(store.get_by_seq(1).unwrap().unwrap().envelope, b"env-a");
    assert_eq!(store.outbox_depth("p").unwrap(), 2);
    assert_eq!(store.get_cursor("sub").unwrap(), Some(1));
    assert_eq!(
        store.insert(msg("a", &[])).await.unwrap(),
        InsertOutcome::Duplicate(1)
    );
    assert_eq!(
        store.insert(msg("c", &[])).await.unwrap(),
        InsertOutcome::Inserted(3)
    );
    store.close().await;
    assert!(matches!(
        store.insert(msg("d", &[])).await,
        Err(StoreError::Closed)
    ));
    assert_eq!(store.read_after(0, 10).unwrap().len(), 3);
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.head_seq(), 3);
}

#[tokio::test]
async fn outbox_order_ack_depth_drop() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for i in 0..5 {
        store
            .insert(msg(&format!("m{i}"), &["p1", "p2"]))
            .await
            .unwrap();
    }
    store.insert(msg("only-p2", &["p2"])).await.unwrap();
    // A peer whose name is a prefix of another must not see its entries.
    store.insert(msg("x", &["p"])).await.unwrap();
    let batch = store.outbox_batch("p1", 3).unwrap();
    assert_eq!(
        batch.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(batch[0].1, b"env-m0");
    assert_eq!(store.outbox_depth("p1").unwrap(), 5);
    assert_eq!(store.outbox_depth("p2").unwrap(), 6);
    assert_eq!(store.outbox_depth("p").unwrap(), 1);
    assert_eq!(store.outbox_batch("p", 10).unwrap().len(), 1);

    store.ack_outbox("p1", vec![1, 2, 99]).await.unwrap();
    store.ack_outbox("p1", vec![1]).await.unwrap(); // idempotent
    assert_eq!(store.outbox_depth("p1").unwrap(), 3);
    assert_eq!(store.delivered_count("p1").unwrap(), 2);
    let next = store.outbox_batch("p1", 10).unwrap();
    assert_eq!(
        next.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );

    assert_eq!(store.drop_outbox("p2").await.unwrap(), 6);
    assert_eq!(store.outbox_depth("p2").unwrap(), 0);
    assert!(store.outbox_batch("p2", 10).unwrap().is_empty());
    assert_eq!(store.outbox_depth("p1").unwrap(), 3);
    assert_eq!(store.drop_outbox("nobody").await.unwrap(), 0);
    assert!(store.outbox_batch("p1", 0).unwrap().is_empty());
}

#[tokio::test]
async fn read_after_pagination_and_head_watch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut head = store.subscribe_head();
    let msgs: Vec<_> = (0..25).map(|i| msg(&format!("m{i:02}"), &[])).collect();
    store.insert_many(msgs).await.unwrap();
    assert!(head.has_changed().unwrap());
    assert_eq!(*head.borrow_and_update(), 25);
    let mut cursor = 0;
    let mut seen = Vec::new();
    loop {
        let page = store.read_after(cursor, 10).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 10);
        cursor = page.last().unwrap().seq;
        seen.extend(page.into_iter().map(|m| m.seq));
    }
    assert_eq!(seen, (1..=25).collect::<Vec<_>>());
    assert!(store.read_after(u64::MAX, 10).unwrap().is_empty());
    assert!(store.read_after(0, 0).unwrap().is_empty());
    // Writes that add no message do not move the head.
    store.set_cursor("c", 3).await.unwrap();
    assert!(!head.has_changed().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_inserts_are_group_committed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let before = store.commit_count();
    let ops = 1000usize;
    let mut tasks = Vec::new();
    for t in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut inner = Vec::new();
            for i in 0..ops / 50 {
                let store = store.clone();
                inner.push(tokio::spawn(async move {
                    store.insert(msg(&format!("t{t}-{i}"), &["p"])).await
                }));
            }
            let mut seqs = Vec::new();
            for h in inner {
                seqs.push(h.await.unwrap().unwrap());
            }
            seqs
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        for o in t.await.unwrap() {
            match o {
                InsertOutcome::Inserted(s) => seqs.push(s),
                InsertOutcome::Duplicate(_) => panic!("unexpected duplicate"),
            }
        }
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=ops as u64).collect::<Vec<_>>());
    assert_eq!(store.message_count().unwrap(), ops as u64);
    assert_eq!(store.outbox_depth("p").unwrap(), ops as u64);
    assert_eq!(store.head_seq(), ops as u64);
    let commits = store.commit_count() - before;
    println!("{commits} commits for {ops} ops");
    assert!(
        commits < (ops / 4) as u64,
        "{commits} commits for {ops} ops"
    );
}

#[tokio::test]
async fn second_open_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _store = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("locked by another process"), "{text}");
    assert!(text.contains("data_dir"), "{text}");
}

#[tokio::test]
async fn cursors_and_keys_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.get_cursor("s").unwrap(), None);
    store.set_cursor("s", 7).await.unwrap();
    store.set_cursor("s", 9).await.unwrap();
    assert_eq!(store.get_cursor("s").unwrap(), Some(9));
    assert_eq!(store.get_key("k1").unwrap(), None);
    store.put_key("k1", "org-a", &[1, 2, 3]).await.unwrap();
    assert_eq!(
        store.get_key("k1").unwrap(),
        Some(("org-a".to_owned(), vec![1, 2, 3]))
    );
}

#[tokio::test]
async fn rejections_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for i in 0..5 {
        store
            .record_rejection(Rejection {
                at_ms: i,
                from_peer: "p".into(),
                id: format!("m{i}"),
                reason: "bad signature".into(),
            })
            .await
            .unwrap();
    }
    assert_eq!(store.rejection_count().unwrap(), 5);
    let r = store.rejections(3).unwrap();
    assert_eq!(r.iter().map(|r| r.at_ms).collect::<Vec<_>>(), vec![4, 3, 2]);
    assert_eq!(r[0].id, "m4");
    assert_eq!(r[0].reason, "bad signature");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_are_pruned_to_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let total = MAX_REJECTIONS_KEPT + 5;
    let handles: Vec<_> = (0..total)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .record_rejection(Rejection {
                        at_ms: i as i64,
                        from_peer: "p".into(),
                        id: format!("m{i}"),
                        reason: "r".into(),
                    })
                    .await
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap().unwrap();
    }
    assert_eq!(store.rejection_count().unwrap(), total);
    let kept = store.rejections(usize::MAX).unwrap();
    assert_eq!(kept.len() as u64, MAX_REJECTIONS_KEPT);
}

fn entries(range: std::ops::Range<u64>, tag: &str) -> Vec<(u64, Vec<u8>)> {
    range
        .map(|i| (i, format!("{tag}-{i}").into_bytes()))
        .collect()
}

fn invalid_text<T: std::fmt::Debug>(r: Result<T>) -> String {
    match r {
        Err(e @ StoreError::Invalid(_)) => e.to_string(),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[tokio::test]
async fn cluster_log_append_read_and_ids() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        assert!(store.cluster_ids().unwrap().is_empty());
        assert!(store.cluster_entries("c1", 0, 10).unwrap().is_empty());
        store
            .append_cluster_entries("c1", entries(0..3, "a"))
            .await
            .unwrap();
        store
            .append_cluster_entries("c1", entries(3..5, "a"))
            .await
            .unwrap();
        // Ids that are prefixes of each other stay separate.
        store
            .append_cluster_entries("c", entries(0..2, "b"))
            .await
            .unwrap();
        store
            .append_cluster_entries("c2", entries(0..1, "c"))
            .await
            .unwrap();
        store.append_cluster_entries("c1", vec![]).await.unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.cluster_ids().unwrap(), vec!["c", "c1", "c2"]);
    assert_eq!(
        store.cluster_entries("c1", 0, 100).unwrap(),
        entries(0..5, "a")
    );
    assert_eq!(
        store.cluster_entries("c1", 2, 2).unwrap(),
        entries(2..4, "a")
    );
    assert_eq!(
        store.cluster_entries("c1", 4, 10).unwrap(),
        entries(4..5, "a")
    );
    assert!(store.cluster_entries("c1", 5, 10).unwrap().is_empty());
    assert!(store.cluster_entries("c1", 0, 0).unwrap().is_empty());
    assert_eq!(
        store.cluster_entries("c", 0, 10).unwrap(),
        entries(0..2, "b")
    );
    assert!(store.cluster_entries("nope", 0, 10).unwrap().is_empty());
}

#[tokio::test]
async fn cluster_log_refusals_and_idempotency() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // A new cluster starts at 0.
    let t = invalid_text(store.append_cluster_entries("c", entries(1..3, "a")).await);
    assert!(t.contains("gap") && t.contains("must be 0"), "{t}");
    assert!(store.cluster_ids().unwrap().is_empty());
    store
        .append_cluster_entries("c", entries(0..4, "a"))
        .await
        .unwrap();
    // Identical re-append (whole, partial, overlapping the tail) is a no-op / extends.
    store
        .append_cluster_entries("c", entries(0..4, "a"))
        .await
        .unwrap();
    store
        .append_cluster_entries("c", entries(2..3, "a"))
        .await
        .unwrap();
    store
        .append_cluster_entries("c", entries(2..6, "a"))
        .await
        .unwrap();
    assert_eq!(
        store.cluster_entries("c", 0, 100).unwrap(),
        entries(0..6, "a")
    );
    // Different bytes at an existing index.
    let t = invalid_text(store.append_cluster_entries("c", entries(3..4, "x")).await);
    assert!(t.contains("different entry at index 3"), "{t}");
    // Identical prefix, then a conflicting entry: nothing of the request is written.
    let mut mixed = entries(4..6, "a");
    mixed.extend(entries(6..7, "a"));
    mixed[1].1 = b"other".to_vec();
    invalid_text(store.append_cluster_entries("c", mixed).await);
    assert_eq!(
        store.cluster_entries("c", 0, 100).unwrap(),
        entries(0..6, "a")
    );
    // Gap after the end.
    let t = invalid_text(store.append_cluster_entries("c", entries(7..8, "a")).await);
    assert!(t.contains("must be 6"), "{t}");
    // Not consecutive (duplicate, gap, descending).
    for bad in [
        vec![(6, b"a".to_vec()), (6, b"a".to_vec())],
        vec![(6, b"a".to_vec()), (8, b"a".to_vec())],
        vec![(6, b"a".to_vec()), (5, b"a-5".to_vec())],
    ] {
        let t = invalid_text(store.append_cluster_entries("c", bad).await);
        assert!(t.contains("not consecutive"), "{t}");
    }
    invalid_text(store.append_cluster_entries("", entries(0..1, "a")).await);
    assert_eq!(
        store.cluster_entries("c", 0, 100).unwrap(),
        entries(0..6, "a")
    );
    assert_eq!(store.cluster_ids().unwrap(), vec!["c"]);
    // A refused op in a group does not poison the store.
    store
        .append_cluster_entries("c", entries(6..7, "a"))
        .await
        .unwrap();
    assert_eq!(
        store.cluster_entries("c", 6, 1).unwrap(),
        entries(6..7, "a")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_log_queued_appends_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // Queued back to back (likely one group): each must see the previous one's entries.
    let (a, b, c) = tokio::join!(
        store.append_cluster_entries("q", entries(0..2, "q")),
        store.append_cluster_entries("q", entries(2..3, "q")),
        store.append_cluster_entries("q", entries(1..4, "q")),
    );
    a.unwrap();
    b.unwrap();
    c.unwrap();
    assert_eq!(
        store.cluster_entries("q", 0, 10).unwrap(),
        entries(0..4, "q")
    );
    let handles: Vec<_> = (0..20u64)
        .map(|c| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = format!("c{c:02}");
                for i in 0..5u64 {
                    store
                        .append_cluster_entries(&id, entries(i..i + 1, &id))
                        .await?;
                }
                Ok::<_, StoreError>(())
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap().unwrap();
    }
    let ids = store.cluster_ids().unwrap();
    assert_eq!(ids.len(), 21);
    assert_eq!(ids[20], "q");
    for id in ids.into_iter().filter(|id| id != "q") {
        assert_eq!(
            store.cluster_entries(&id, 0, 10).unwrap(),
            entries(0..5, &id)
        );
    }
}

#[tokio::test]
async fn directory_round_trip_and_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        assert!(store.directory().unwrap().is_empty());
        store.put_directory("org-b", &[2, 2]).await.unwrap();
        store.put_directory("org-a", &[1]).await.unwrap();
        store.put_directory("org-b", &[3, 3, 3]).await.unwrap();
        invalid_text(store.put_directory("", &[1]).await);
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.directory().unwrap(),
        vec![
            ("org-a".to_owned(), vec![1]),
            ("org-b".to_owned(), vec![3, 3, 3])
        ]
    );
}

#[tokio::test]
async fn enqueue_existing_messages_and_depth() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for i in 0..4 {
        store.insert(msg(&format!("m{i}"), &["p1"])).await.unwrap();
    }
    assert_eq!(store.outbox_depth("p2").unwrap(), 0);
    assert_eq!(store.enqueue("p2", vec![3, 1]).await.unwrap(), 2);
    // Already queued and repeated seqs are not counted twice.
    assert_eq!(store.enqueue("p2", vec![1, 2, 2, 3]).await.unwrap(), 1);
    assert_eq!(store.outbox_depth("p2").unwrap(), 3);
    assert_eq!(store.enqueue("p1", vec![1, 2, 3, 4]).await.unwrap(), 0);
    assert_eq!(store.outbox_depth("p1").unwrap(), 4);
    assert_eq!(store.enqueue("p2", vec![]).await.unwrap(), 0);
    let batch = store.outbox_batch("p2", 10).unwrap();
    assert_eq!(
        batch,
        vec![
            (1, b"env-m0".to_vec()),
            (2, b"env-m1".to_vec()),
            (3, b"env-m2".to_vec())
        ]
    );
    // A missing seq refuses the whole request.
    let t = invalid_text(store.enqueue("p2", vec![4, 99]).await);
    assert!(t.contains("99"), "{t}");
    invalid_text(store.enqueue("p2", vec![0]).await);
    invalid_text(store.enqueue("", vec![1]).await);
    assert_eq!(store.outbox_depth("p2").unwrap(), 3);
    assert_eq!(store.outbox_batch("p2", 10).unwrap().len(), 3);
    // Depth stays consistent with acks and drops.
    store.ack_outbox("p2", vec![1, 2]).await.unwrap();
    assert_eq!(store.outbox_depth("p2").unwrap(), 1);
    assert_eq!(store.delivered_count("p2").unwrap(), 2);
    assert_eq!(store.enqueue("p2", vec![1, 4]).await.unwrap(), 2);
    assert_eq!(store.outbox_depth("p2").unwrap(), 3);
    assert_eq!(store.drop_outbox("p2").await.unwrap(), 3);
    assert_eq!(store.outbox_depth("p2").unwrap(), 0);
    assert_eq!(store.enqueue("p2", vec![2]).await.unwrap(), 1);
    assert_eq!(store.outbox_depth("p2").unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_appends_chain_in_commit_order_within_mixed_groups() {
    use crate::audit::AuditEvent;
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.audit_head(),
            (0, crate::audit::GENESIS_HASH.to_owned())
        );
        // Audit appends queued with inserts and with refused ops (which make the writer
        // retry the rest of the group): the chain stays contiguous and verifiable.
        let handles: Vec<_> = (0..40u64)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let bad = i % 5 == 0;
                    let id = if bad { String::new() } else { format!("m{i}") };
                    let ins = store.insert(msg(&id, &[])).await;
                    assert_eq!(ins.is_err(), bad);
                    store
                        .append_audit(vec![
                            AuditEvent::published(id.clone(), "u"),
                            AuditEvent::sent(id, "org-b", "tlp"),
                        ])
                        .await
                        .unwrap();
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        let (seq, hash) = store.audit_head();
        assert_eq!(seq, 80);
        let rows = store.audit_records(0, usize::MAX).unwrap();
        assert_eq!(rows.len(), 80);
        assert!(rows.iter().zip(1..).all(|(r, s)| r.seq == s));
        assert_eq!(rows[79].hash, hash);
        assert_eq!(store.audit_records(78, 10).unwrap().len(), 2);
        assert!(store.audit_records(80, 10).unwrap().is_empty());
        assert!(store.audit_records(u64::MAX, 10).unwrap().is_empty());
        // A later durable op makes the (non-durable) audit appends durable.
        store.insert(msg("last", &[])).await.unwrap();
        store.close().await;
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.audit_head().0, 80);
    let v = store.verify_audit().unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.records, 80);
    assert_eq!(v.head_hash, store.audit_head().1);
}

/// The audit values stored, as (key, records in the value).
fn audit_values(store: &Store) -> Vec<(u64, usize)> {
    use super::kv::ReadableTable;
    let rtx = store.read().unwrap();
    let t = rtx.open_table(super::tables::AUDIT).unwrap();
    t.iter()
        .unwrap()
        .map(|e| {
            let (k, v) = e.unwrap();
            (
                k.value(),
                super::audit_blocks::rows(k.value(), v.value())
                    .unwrap()
                    .len(),
            )
        })
        .collect()
}

#[tokio::test]
async fn audit_records_are_stored_one_block_per_transaction_and_read_one_by_one() {
    use crate::audit::AuditEvent;
    let dir = tempfile::tempdir().unwrap();
    let cap = super::audit_blocks::MAX_RECORDS;
    let events = |n: usize, tag: &str| -> Vec<AuditEvent> {
        (0..n)
            .map(|i| AuditEvent::delivered(format!("{tag}-{i}"), "org-b"))
            .collect()
    };
    let store = Store::open(dir.path()).unwrap();
    store.append_audit(events(5, "a")).await.unwrap();
    store.append_audit(events(1, "b")).await.unwrap();
    // More than a block holds, in one transaction: split at the cap.
    store.append_audit(events(2 * cap + 3, "c")).await.unwrap();
    let total = 5 + 1 + 2 * cap + 3;
    assert_eq!(
        audit_values(&store),
        vec![
            (1, 5),
            (6, 1),
            (7, cap),
            (7 + cap as u64, cap),
            (7 + 2 * cap as u64, 3)
        ]
    );
    // Every record is there once, in order, with its own seq, and pages may start and end
    // anywhere inside a block.
    let all = store.audit_records(0, usize::MAX).unwrap();
    assert_eq!(all.len(), total);
    assert!(all.iter().zip(1..).all(|(r, s)| r.seq == s));
    assert_eq!(
        (all[5].msg_id.as_str(), all[6].msg_id.as_str()),
        ("b-0", "c-0")
    );
    for (after, limit) in [(0, 3), (2, 3), (4, 2), (5, 1), (6, cap + 2), (100, 7)] {
        let page = store.audit_records(after, limit).unwrap();
        let want: Vec<u64> = (after + 1..=total as u64).take(limit).collect();
        assert_eq!(
            page.iter().map(|r| r.seq).collect::<Vec<_>>(),
            want,
            "after {after}, limit {limit}"
        );
    }
    assert!(store.audit_records(total as u64, 5).unwrap().is_empty());
    let v = store.verify_audit().unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.records, total as u64);
    // A block written back as bare records (the form of a layout-3 store) reads the same and
    // still verifies, next to the blocks.
    let third = all[2].clone();
    store
        .tamper_audit_for_tests(3, Some(super::encode_audit_row(&third)))
        .await
        .unwrap();
    assert_eq!(
        audit_values(&store)[..6],
        [(1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1)]
    );
    assert_eq!(store.audit_records(0, usize::MAX).unwrap(), all);
    assert!(store.verify_audit().unwrap().ok);
    store.close().await;
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.audit_records(0, usize::MAX).unwrap(), all);
    assert!(store.verify_audit().unwrap().ok);
}

#[tokio::test]
async fn audit_records_commit_with_the_message_and_with_the_ack() {
    use crate::audit::AuditEvent;
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let with_audit = |id: &str| NewMessage {
            audit: vec![AuditEvent::received(id, "org-b")],
            ..msg(id, &["p"])
        };
        let commits = store.commit_count();
        store.insert(with_audit("a")).await.unwrap();
        // One transaction: the record is there as soon as the insert returns.
        assert_eq!(store.commit_count(), commits + 1);
        let rows = store.audit_records(0, 10).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].msg_id.as_str(), rows[0].peer.as_str()),
            ("a", "org-b")
        );
        // A duplicate adds neither a message nor an audit record.
        assert!(matches!(
            store.insert(with_audit("a")).await.unwrap(),
            InsertOutcome::Duplicate(1)
        ));
        assert_eq!(store.audit_head().0, 1);
        store
            .ack_outbox_audited("p", vec![1], vec![AuditEvent::delivered("a", "p")])
            .await
            .unwrap();
        assert_eq!(store.outbox_depth("p").unwrap(), 0);
        assert_eq!(store.audit_head().0, 2);
        store.close().await;
    }
    // Durable with the insert's fsync, verifiable after a reopen.
    let store = Store::open(dir.path()).unwrap();
    let v = store.verify_audit().unwrap();
    assert!(v.ok && v.records >= 1, "{v:?}");
}

#[tokio::test]
async fn held_back_acks_commit_on_their_own_and_before_close() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.insert(msg("a", &["p"])).await.unwrap();
        store.insert(msg("b", &["p"])).await.unwrap();
        // Alone, an ack waits at most LAZY_HOLD for company, then commits anyway.
        let t0 = std::time::Instant::now();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            store.ack_outbox_later("p", vec![1], Vec::new()),
        )
        .await
        .expect("a lone ack is committed, not held forever")
        .unwrap();
        assert!(t0.elapsed() >= LAZY_HOLD / 2, "{:?}", t0.elapsed());
        assert_eq!(store.outbox_depth("p").unwrap(), 1);
        // Queued before Close: committed by it, not dropped.
        let (acked, ()) = tokio::join!(
            store.ack_outbox_later("p", vec![2], Vec::new()),
            store.close()
        );
        acked.unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.outbox_depth("p").unwrap(), 0);
    assert_eq!(store.delivered_count("p").unwrap(), 2);
}

#[tokio::test]
async fn corrupted_record_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.insert(msg("a", &["p"])).await.unwrap();
    {
        // Overwrite the record with garbage through the same database handle.
        let wtx = store.inner.db.get().unwrap().begin_write().unwrap();
        {
            let mut t = wtx.open_table(MESSAGES).unwrap();
            t.insert(1u64, [0xffu8, 0xff, 0xff].as_slice()).unwrap();
        }
        wtx.commit().unwrap();
    }
    assert!(matches!(
        store.get_by_seq(1),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        store.read_after(0, 10),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        store.outbox_batch("p", 10),
        Err(StoreError::Corrupt { .. })
    ));
}

/// The cost of the integrity check at open against the size of the store (not a test of
/// behaviour: run by hand, `cargo test --release -p bluewire-node --lib
/// store::tests::integrity_check_cost -- --ignored --nocapture`; BENCHMARKS.md).
#[tokio::test]
#[ignore]
async fn integrity_check_cost() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let body = "x".repeat(1024);
    for total in [20_000usize, 100_000] {
        {
            let store = Store::open(&path).unwrap();
            let have = store.head_seq();
            for b in (have as usize..total).step_by(1000) {
                let batch = (b..(b + 1000).min(total))
                    .map(|i| NewMessage {
                        envelope: format!("{body}{i}").into_bytes(),
                        ..msg(&format!("m{i}"), &[])
                    })
                    .collect();
                store.insert_many(batch).await.unwrap();
            }
            store.close().await;
        }
        let size = std::fs::metadata(path.join(FILE_NAME)).unwrap().len();
        let t = std::time::Instant::now();
        let mut db = redb::Database::create(path.join(FILE_NAME)).unwrap();
        let opened = t.elapsed();
        let t = std::time::Instant::now();
        assert!(db.check_integrity().unwrap());
        println!(
            "{total} messages, {:.1} MiB: open {opened:?}, integrity check {:?}",
            size as f64 / 1048576.0,
            t.elapsed()
        );
    }
}

/// Time per commit of a receiver's usual write (messages, their ids, a batch signature, two
/// counters, the next seq, an audit block and the audit head) with durable commits against
/// non-durable ones made durable every 100 or 1,000 commits, on the store's own
/// `[store] sync = "interval"` backend (its sync far outside the run). Not a test of
/// behaviour: run by hand, `cargo test --release -p bluewire-node --lib
/// store::tests::commit_cost_by_durability -- --ignored --nocapture`; BENCHMARKS.md.
#[test]
#[ignore]
fn commit_cost_by_durability() {
    use super::kv::ReadableTable as _;
    let dir = tempfile::tempdir().unwrap();
    let body = vec![7u8; 2000];
    for per in [1u64, 3] {
        for durable_every in [1u64, 100, 1000] {
            let sub = dir.path().join(format!("{per}-{durable_every}"));
            std::fs::create_dir(&sub).unwrap();
            let path = sub.join(FILE_NAME);
            let sync = super::sync::SyncMode::Interval(std::time::Duration::from_secs(600));
            let failure = super::sync::SyncFailure::default();
            let backend = super::sync::open_backend(&sub, &path, sync, &failure, false).unwrap();
            let db = redb::Database::builder()
                .create_with_backend(backend)
                .unwrap();
            let db = super::wrap(db, &path, sync, &failure).unwrap();
            let (commits, mut seq) = (5_000u64, 1u64);
            let t = std::time::Instant::now();
            for c in 0..commits {
                let mut w = db.begin_write().unwrap();
                if (c + 1) % durable_every != 0 {
                    w.set_durability(redb::Durability::None);
                }
                {
                    let mut t = super::tables::open_tables(&w, AuditHead::default()).unwrap();
                    for _ in 0..per {
                        t.messages.insert(seq, body.as_slice()).unwrap();
                        let id = format!("{:032x}", seq.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                        t.ids.insert(("csirt-be", id.as_str()), seq).unwrap();
                        seq += 1;
                    }
                    let sig = format!("{:064x}", c.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                    t.signatures
                        .insert(sig.as_bytes(), [1u8; 3400].as_slice())
                        .unwrap();
                    for (name, add) in [("received", per), ("bytes", per * 2000)] {
                        let v = t.counters.get(name).unwrap().map_or(0, |g| g.value());
                        t.counters.insert(name, v + add).unwrap();
                    }
                    t.meta.insert(META_NEXT_SEQ, seq).unwrap();
                    t.audit.insert(c, [3u8; 600].as_slice()).unwrap();
                    t.audit_meta.insert("head", [5u8; 80].as_slice()).unwrap();
                }
                w.commit().unwrap();
            }
            println!(
                "{per} message(s) a commit, durable every {durable_every}: {:.0} µs a commit",
                t.elapsed().as_secs_f64() * 1e6 / commits as f64
            );
        }
    }
}

/// A reopen after an I/O error that finds fewer audit records on disk than the writer had
/// committed (their commits had not reached the disk) says so in the chain, durably, before
/// the lost sequence numbers are used again; the chain still verifies.
#[tokio::test]
async fn a_reopen_that_lost_audit_records_records_it() {
    use crate::audit::{AuditEvent, AuditKind};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .append_audit(vec![AuditEvent::policy("one"), AuditEvent::policy("two")])
        .await
        .unwrap();
    let (kept, hash) = store.audit_head();
    assert_eq!(kept, 2);
    // As if three more records had been committed without reaching the disk, then an I/O
    // error closed the file.
    *lock(&store.inner.audit_head) = (kept + 3, hash);
    store.close_as_after_an_io_error();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    store
        .append_audit(vec![AuditEvent::policy("after")])
        .await
        .unwrap();
    let rows = store.audit_records(0, 100).unwrap();
    let events: Vec<(u64, &str, &str)> = rows
        .iter()
        .map(|r| (r.seq, r.event.as_str(), r.detail.as_str()))
        .collect();
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(events[2].0, 3);
    assert_eq!(events[2].1, AuditKind::Store.as_str());
    assert!(
        events[2]
            .2
            .contains("audit records 3..=5 had not reached the disk"),
        "{events:?}"
    );
    assert_eq!((events[3].0, events[3].2), (4, "after"));
    let v = store.verify_audit().unwrap();
    assert!(v.ok, "{v:?}");
    // Recorded once.
    store
        .append_audit(vec![AuditEvent::policy("later")])
        .await
        .unwrap();
    assert_eq!(store.audit_records(0, 100).unwrap().len(), 5);
}

fn carried(key: &str, bytes: usize) -> (RelayRecord, AuditEvent) {
    (
        RelayRecord {
            key: key.into(),
            taken_at_ms: 7,
            envelope: vec![1; bytes],
        },
        AuditEvent::relayed(key, "org-a", "taken on"),
    )
}

#[tokio::test]
async fn the_relay_queue_keeps_one_copy_per_message_within_its_limits_and_rotates_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    let limits = RelayLimits {
        per_recipient: 3,
        total_bytes: 1_000,
    };
    let before = store.audit_head().0;
    let put = store
        .relay_put(
            "org-c",
            vec![
                carried("a/1", 100),
                carried("a/2", 100),
                carried("a/1", 100),
            ],
            limits,
        )
        .await
        .unwrap();
    assert_eq!(
        put,
        vec![RelayPut::Queued, RelayPut::Queued, RelayPut::Duplicate]
    );
    // Only what was kept is audited.
    assert_eq!(store.audit_head().0, before + 2);
    // Per recipient: a third, then full; another recipient has room, up to the byte cap.
    let put = store
        .relay_put(
            "org-c",
            vec![carried("a/3", 100), carried("a/4", 100)],
            limits,
        )
        .await
        .unwrap();
    assert_eq!(put, vec![RelayPut::Queued, RelayPut::Full]);
    let put = store
        .relay_put(
            "org-d",
            vec![carried("a/1", 600), carried("a/5", 101)],
            limits,
        )
        .await
        .unwrap();
    assert_eq!(
        put,
        vec![RelayPut::Queued, RelayPut::Full],
        "300 + 600 + 101 > 1000 bytes"
    );
    assert_eq!(store.relay_depth("org-c").unwrap(), 3);
    assert_eq!(store.relay_targets().unwrap(), vec!["org-c", "org-d"]);
    // Oldest first; a requeued entry goes to the back.
    let keys = |v: Vec<(u64, RelayRecord)>| v.into_iter().map(|(_, r)| r.key).collect::<Vec<_>>();
    let batch = store.relay_batch("org-c", 10).unwrap();
    assert_eq!(keys(batch.clone()), vec!["a/1", "a/2", "a/3"]);
    store
        .relay_requeue("org-c", vec![batch[0].0])
        .await
        .unwrap();
    assert_eq!(
        keys(store.relay_batch("org-c", 10).unwrap()),
        vec!["a/2", "a/3", "a/1"]
    );
    // Still one copy: the index follows the move.
    let put = store
        .relay_put(
            "org-c",
            vec![carried("a/1", 1)],
            RelayLimits {
                per_recipient: 9,
                ..limits
            },
        )
        .await
        .unwrap();
    assert_eq!(put, vec![RelayPut::Duplicate]);
    // Acknowledged: gone, counted down, its key free again; acks are idempotent.
    let seqs: Vec<u64> = store
        .relay_batch("org-c", 2)
        .unwrap()
        .into_iter()
        .map(|e| e.0)
        .collect();
    store
        .relay_ack("org-c", seqs.clone(), Vec::new())
        .await
        .unwrap();
    store.relay_ack("org-c", seqs, Vec::new()).await.unwrap();
    assert_eq!(store.relay_depth("org-c").unwrap(), 1);
    assert_eq!(keys(store.relay_batch("org-c", 10).unwrap()), vec!["a/1"]);
    let put = store
        .relay_put("org-c", vec![carried("a/2", 100)], limits)
        .await
        .unwrap();
    assert_eq!(put, vec![RelayPut::Queued]);
    // It all survives a restart.
    store.close().await;
    drop(store);
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    assert_eq!(store.relay_depth("org-c").unwrap(), 2);
    assert_eq!(keys(store.relay_batch("org-d", 10).unwrap()), vec!["a/1"]);
}

/// A start after a clean shutdown skips the page check only while the file is exactly as
/// the shutdown left it: a write since (even of the same bytes, in the same clock tick), a
/// missing record (a crash) or an unusable one each mean a full check.
#[tokio::test]
async fn only_a_clean_shutdown_of_an_unchanged_file_skips_the_page_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let file = path.join(FILE_NAME);
    let marker = path.join(CLEAN_MARKER);
    let store = Store::open(&path).unwrap();
    assert!(store.pages_checked_at_open(), "a new store has no record");
    store.insert_many(vec![msg("a", &[])]).await.unwrap();
    store.close().await;
    drop(store);
    assert!(marker.exists(), "a clean shutdown is recorded");

    let store = Store::open(&path).unwrap();
    assert!(!store.pages_checked_at_open());
    assert!(!marker.exists(), "the record is taken away at start");
    assert_eq!(store.head_seq(), 1, "the store serves what it held");
    // Dropped without close: the writer still commits everything and exits normally.
    drop(store);
    assert!(marker.exists());

    // The same bytes written again at once by another program.
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes).unwrap();
    let store = Store::open(&path).unwrap();
    assert!(
        store.pages_checked_at_open(),
        "a file written since is checked"
    );
    drop(store);

    // A crash writes no record.
    std::fs::remove_file(&marker).unwrap();
    let store = Store::open(&path).unwrap();
    assert!(store.pages_checked_at_open());
    drop(store);

    // A record that does not describe this file (e.g. copied with a restored store).
    std::fs::write(
        &marker,
        "bluewire store closed cleanly: len 1 mtime 0.0 ino 0 dev 0\n",
    )
    .unwrap();
    let store = Store::open(&path).unwrap();
    assert!(store.pages_checked_at_open());
    drop(store);

    // A reader holding the file at shutdown: no record (the file was not released).
    let store = Store::open(&path).unwrap();
    let held = store.inner.db.get().unwrap();
    drop(store);
    assert!(!marker.exists(), "no record while the file is still held");
    drop(held);
}

#[tokio::test]
async fn a_batch_signature_is_stored_once_and_every_read_gives_the_envelope_back_whole() {
    use prost::Message as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let key = crate::signing::SigningKey::generate("org-a").unwrap();
    let contents: Vec<Vec<u8>> = (0..5)
        .map(|i| {
            bluewire_proto::v1::Content {
                id: crate::envelope::new_id(),
                origin_org: "org-a".into(),
                author: format!("org-a/u{i}"),
                ..Default::default()
            }
            .encode_to_vec()
        })
        .collect();
    let mut batch = crate::envelope::seal_batch(&key, contents);
    // Fields on both sides of the signature's place (a relay path, a forwarding).
    batch[3].relay = Some(bluewire_proto::v1::Relay {
        instruction: b"to org-c".to_vec(),
        ..Default::default()
    });
    batch[4].forwarding = Some(bluewire_proto::v1::Forwarding {
        attestation: b"forwarded".to_vec(),
        ..Default::default()
    });
    let lone = crate::envelope::seal_batch(&key, vec![b"lone".to_vec()]).remove(0);
    let all: Vec<&bluewire_proto::v1::Envelope> = batch.iter().chain([&lone]).collect();
    let envelopes: Vec<Vec<u8>> = all.iter().map(|e| e.encode_to_vec()).collect();
    let store = Store::open(dir.path()).unwrap();
    // Given whole (the store finds the signature in the bytes) and split by
    // `NewMessage::of_envelope` (handed over apart), alternately, one transaction each.
    for (i, env) in all.iter().enumerate() {
        let base = msg(&format!("m{i}"), &["org-b"]);
        let m = if i % 2 == 1 {
            let m = handed_apart(env, base);
            assert_eq!(m.batch_signature.is_some(), env.batch.is_some());
            m
        } else {
            NewMessage {
                envelope: envelopes[i].clone(),
                ..base
            }
        };
        store.insert(m).await.unwrap();
    }
    let lone_split = NewMessage::of_envelope(&Default::default(), lone.clone(), "", 0);
    assert!(lone_split.batch_signature.is_none(), "not a batch's");
    assert_eq!(
        lone_split.envelope, envelopes[5],
        "a lone envelope is kept whole"
    );
    let check = |store: &Store| {
        assert_eq!(envelopes_after(store, 0), envelopes, "read_after");
        // Read apart: the batch's signature once for the page, the rest as stored.
        let apart = store.read_after_apart(0, 10).unwrap();
        let shared: Vec<_> = apart[..5].iter().map(|(_, s)| s.clone().unwrap()).collect();
        assert!(shared.iter().all(|s| s.as_ptr() == shared[0].as_ptr()));
        assert!(apart[5].1.is_none());
        for ((m, signature), (whole, original)) in apart.into_iter().zip(envelopes.iter().zip(&all))
        {
            assert_eq!(
                m.envelope.len() + signature.as_ref().map_or(0, |s| s.len() + 3),
                whole.len()
            );
            let mut env = bluewire_proto::v1::Envelope::decode(m.envelope.as_slice()).unwrap();
            if let Some(s) = signature {
                env.signature = s;
            }
            assert_eq!(&env, *original, "read_after_apart");
        }
        let queued: Vec<Vec<u8>> = store
            .outbox_batch("org-b", 10)
            .unwrap()
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        assert_eq!(queued, envelopes, "outbox");
        // Read for sending: the batch's signature apart, one allocation for the page.
        let queued = store.outbox_queued_after("org-b", 0, 10).unwrap();
        let shared: Vec<_> = queued[..5]
            .iter()
            .map(|q| q.signature.clone().unwrap())
            .collect();
        assert!(shared.iter().all(|s| s.as_ptr() == shared[0].as_ptr()));
        assert!(queued[5].signature.is_none());
        let decoded: Vec<bluewire_proto::v1::Envelope> =
            queued.into_iter().map(|q| q.decode().unwrap()).collect();
        let expected: Vec<bluewire_proto::v1::Envelope> =
            all.iter().map(|e| (*e).clone()).collect();
        assert_eq!(decoded, expected, "outbox, signatures apart");
        assert_eq!(
            store.get("org-a", "m2").unwrap().unwrap().envelope,
            envelopes[2]
        );
        assert_eq!(store.get_by_seq(1).unwrap().unwrap().envelope, envelopes[0]);
        assert_eq!(store.find_by_id("m4").unwrap()[0].envelope, envelopes[4]);
    };
    check(&store);
    store.close().await;
    drop(store);
    // On disk: one signature row for the batch; batch records without it, the lone one whole.
    {
        let db = redb::Database::open(&path).unwrap();
        let rtx = db.begin_read().unwrap();
        let sigs = rtx.open_table(super::tables::SIGNATURES.typed()).unwrap();
        assert_eq!(sigs.len().unwrap(), 1);
        let messages = rtx.open_table(MESSAGES.typed()).unwrap();
        for seq in 1..=6u64 {
            let v = messages.get(seq).unwrap().unwrap();
            let v = super::kv::raw_value(dir.path(), v.value());
            let rec = MessageRecord::decode(v.as_slice()).unwrap();
            if seq <= 5 {
                assert_eq!(rec.signature_ref.len(), 32);
                assert!(rec.envelope.len() + 3000 < envelopes[seq as usize - 1].len());
            } else {
                assert!(rec.signature_ref.is_empty());
                assert_eq!(rec.envelope, envelopes[5]);
            }
        }
    }
    // Reopened, the same bytes; a dangling reference is reported as corruption.
    let store = Store::open(dir.path()).unwrap();
    check(&store);
    store.close().await;
    drop(store);
    {
        let db = redb::Database::open(&path).unwrap();
        let wtx = db.begin_write().unwrap();
        wtx.open_table(super::tables::SIGNATURES.typed())
            .unwrap()
            .retain(|_, _| false)
            .unwrap();
        wtx.commit().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    // What this thread read lately is kept by digest (never wrong, so never re-read).
    super::signatures::forget_recent();
    let e = store.read_after(0, 10).unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("not in the signatures table"), "{e}");
    assert_eq!(
        store.get("org-a", "m5").unwrap().unwrap().envelope,
        envelopes[5]
    );
}

/// A store at the layout before signatures were kept once (2) is raised to the current
/// layout without its records being rewritten; a store written by a newer binary (a layout
/// above this one's) is refused with what to do, never misread.
#[tokio::test]
async fn a_store_from_a_newer_binary_is_refused_and_an_older_layout_is_raised() {
    use super::tables::{LAYOUT, META_LAYOUT};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let store = Store::open(dir.path()).unwrap();
    store.insert_many(vec![msg("a", &[])]).await.unwrap();
    store.close().await;
    drop(store);
    let set_layout = |layout: u64| {
        let db = redb::Database::create(&path).unwrap();
        let wtx = db.begin_write().unwrap();
        wtx.open_table(META.typed())
            .unwrap()
            .insert(META_LAYOUT, layout)
            .unwrap();
        wtx.commit().unwrap();
    };
    let layout = || {
        let db = redb::Database::create(&path).unwrap();
        let rtx = db.begin_read().unwrap();
        let meta = rtx.open_table(META.typed()).unwrap();
        meta.get(META_LAYOUT).unwrap().map(|v| v.value())
    };
    assert_eq!(layout(), Some(LAYOUT));

    set_layout(2);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.head_seq(), 1);
    drop(store);
    assert_eq!(layout(), Some(LAYOUT), "raised to this binary's layout");

    set_layout(LAYOUT + 1);
    let e = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(e, StoreError::NewerLayout { found, known } if found == LAYOUT + 1 && known == LAYOUT),
        "{e}"
    );
    assert!(
        e.to_string().contains("newer Bluewire") && e.to_string().contains("backup"),
        "{e}"
    );
}

/// The outbox values stored for `peer`, as (key, seqs).
fn outbox_values(store: &Store, peer: &str) -> Vec<(u64, Vec<u64>)> {
    let rtx = store.read().unwrap();
    let t = rtx.open_table(super::tables::OUTBOX).unwrap();
    t.range((peer, 0u64)..=(peer, u64::MAX))
        .unwrap()
        .map(|e| {
            let (k, v) = e.unwrap();
            let key = k.value().1;
            (key, super::outbox_blocks::decode(key, v.value()).unwrap())
        })
        .collect()
}

/// The seqs queued for `peer`, read back page by page from every starting point.
fn queued(store: &Store, peer: &str) -> Vec<u64> {
    let all: Vec<u64> = store
        .outbox_batch(peer, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    for after in 0..=all.last().copied().unwrap_or(0) + 1 {
        for limit in [1, 2, 5] {
            let page: Vec<u64> = store
                .outbox_batch_after(peer, after, limit)
                .unwrap()
                .into_iter()
                .map(|(s, _)| s)
                .collect();
            let want: Vec<u64> = all
                .iter()
                .copied()
                .filter(|&s| s > after)
                .take(limit)
                .collect();
            assert_eq!(page, want, "{peer}: after {after}, limit {limit}");
        }
    }
    all
}

#[tokio::test]
async fn the_outbox_keeps_one_block_per_peer_and_transaction_and_reads_like_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // One transaction: ten messages, each for p1, every other one for p2.
    let ten: Vec<NewMessage> = (1..=10)
        .map(|i| {
            let peers: &[&str] = if i % 2 == 0 { &["p1", "p2"] } else { &["p1"] };
            msg(&format!("m{i}"), peers)
        })
        .collect();
    store.insert_many(ten).await.unwrap();
    assert_eq!(outbox_values(&store, "p1"), vec![(1, (1..=10).collect())]);
    assert_eq!(outbox_values(&store, "p2"), vec![(2, vec![2, 4, 6, 8, 10])]);
    // A second transaction: a block of its own.
    store.insert(msg("m11", &["p1"])).await.unwrap();
    assert_eq!(outbox_values(&store, "p1").len(), 2);
    assert_eq!(queued(&store, "p1"), (1..=11).collect::<Vec<_>>());
    assert_eq!(store.outbox_depth("p1").unwrap(), 11);

    // Acks: from the front (the block is re-keyed), from the middle, across blocks, and
    // of seqs not queued (ignored).
    store.ack_outbox("p1", vec![1, 2]).await.unwrap();
    assert_eq!(outbox_values(&store, "p1")[0].0, 3);
    store.ack_outbox("p1", vec![5, 99, 10, 11]).await.unwrap();
    assert_eq!(
        outbox_values(&store, "p1"),
        vec![(3, vec![3, 4, 6, 7, 8, 9])]
    );
    assert_eq!(store.outbox_depth("p1").unwrap(), 6);
    assert_eq!(store.delivered_count("p1").unwrap(), 5);

    // Enqueue: into a block's range, between blocks, before the first, and again (no-op).
    assert_eq!(store.enqueue("p1", vec![5, 1, 11, 4]).await.unwrap(), 3);
    assert_eq!(queued(&store, "p1"), vec![1, 3, 4, 5, 6, 7, 8, 9, 11]);
    assert_eq!(
        outbox_values(&store, "p1"),
        vec![(1, vec![1]), (3, vec![3, 4, 5, 6, 7, 8, 9]), (11, vec![11])]
    );
    assert_eq!(store.outbox_depth("p1").unwrap(), 9);
    // Acking a whole block removes it.
    store.ack_outbox("p1", vec![1, 11]).await.unwrap();
    assert_eq!(outbox_values(&store, "p1").len(), 1);

    // Dropping a peer's outbox counts its seqs and leaves the other peer's alone.
    assert_eq!(store.drop_outbox("p1").await.unwrap(), 7);
    assert!(outbox_values(&store, "p1").is_empty());
    assert_eq!(queued(&store, "p2"), vec![2, 4, 6, 8, 10]);
    store.close().await;
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(queued(&store, "p2"), vec![2, 4, 6, 8, 10]);
    assert_eq!(store.outbox_depth("p2").unwrap(), 5);
}

#[tokio::test]
async fn a_block_past_its_cap_is_split() {
    let cap = super::outbox_blocks::MAX_SEQS as u64;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let many: Vec<NewMessage> = (1..=cap + 3)
        .map(|i| msg(&format!("m{i}"), &["p"]))
        .collect();
    store.insert_many(many).await.unwrap();
    let blocks = outbox_values(&store, "p");
    assert_eq!(
        blocks
            .iter()
            .map(|(k, s)| (*k, s.len()))
            .collect::<Vec<_>>(),
        vec![(1, cap as usize), (cap + 1, 3)]
    );
    // A seq enqueued into a full block's range splits it.
    store.ack_outbox("p", vec![5]).await.unwrap();
    store.insert(msg("x", &[])).await.unwrap();
    assert_eq!(store.enqueue("p", vec![5]).await.unwrap(), 1);
    let blocks = outbox_values(&store, "p");
    assert!(
        blocks.iter().all(|(_, s)| s.len() <= cap as usize),
        "{:?}",
        blocks.len()
    );
    assert_eq!(
        queued(&store, "p"),
        (1..=cap + 3).collect::<Vec<_>>(),
        "nothing lost or repeated"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
    /// Any mix of inserts, enqueues, acks and drops leaves the outbox holding exactly what a
    /// set of (peer, seq) rows would, with blocks that never overlap.
    #[test]
    fn the_outbox_in_blocks_behaves_like_rows(
        ops in proptest::collection::vec((0u8..4, 0u8..3, proptest::collection::vec(1u64..40, 0..6)), 1..30)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            let peers = ["p0", "p1", "p2"];
            let mut model: std::collections::BTreeSet<(usize, u64)> = Default::default();
            let mut next = 1u64;
            for (i, (kind, peer, seqs)) in ops.iter().enumerate() {
                let p = *peer as usize;
                match kind {
                    0 => {
                        // A transaction of a few new messages for this peer (and p0).
                        let n = seqs.len().max(1);
                        let batch: Vec<NewMessage> = (0..n)
                            .map(|j| msg(&format!("m{i}-{j}"), &[peers[p], "p0"]))
                            .collect();
                        store.insert_many(batch).await.unwrap();
                        for s in next..next + n as u64 {
                            model.insert((p, s));
                            model.insert((0, s));
                        }
                        next += n as u64;
                    }
                    1 => {
                        let stored: Vec<u64> = seqs.iter().copied().filter(|&s| s < next).collect();
                        let fresh = stored
                            .iter()
                            .collect::<std::collections::BTreeSet<_>>()
                            .into_iter()
                            .filter(|&&s| !model.contains(&(p, s)))
                            .count() as u64;
                        assert_eq!(store.enqueue(peers[p], stored.clone()).await.unwrap(), fresh);
                        for s in stored {
                            model.insert((p, s));
                        }
                    }
                    2 => {
                        store.ack_outbox(peers[p], seqs.clone()).await.unwrap();
                        for s in seqs {
                            model.remove(&(p, *s));
                        }
                    }
                    _ => {
                        let want = model.iter().filter(|(q, _)| *q == p).count() as u64;
                        assert_eq!(store.drop_outbox(peers[p]).await.unwrap(), want);
                        model.retain(|(q, _)| *q != p);
                    }
                }
                for (q, peer) in peers.iter().enumerate() {
                    let want: Vec<u64> = model.iter().filter(|(x, _)| *x == q).map(|(_, s)| *s).collect();
                    let got: Vec<u64> = store
                        .outbox_batch(peer, usize::MAX)
                        .unwrap()
                        .into_iter()
                        .map(|(s, _)| s)
                        .collect();
                    assert_eq!(got, want, "after op {i}: {peer}");
                    assert_eq!(store.outbox_depth(peer).unwrap(), want.len() as u64, "depth of {peer}");
                    let blocks = outbox_values(&store, peer);
                    for w in blocks.windows(2) {
                        assert!(w[0].1.last().unwrap() < &w[1].0, "blocks overlap: {blocks:?}");
                    }
                }
            }
        });
    }
}

/// A layout-3 store kept one outbox row per (peer, seq): opening it moves them into blocks.
#[tokio::test]
async fn a_layout_3_outbox_is_moved_into_blocks_at_open() {
    use redb::{ReadableTable, TableHandle};
    let dir = tempfile::tempdir().unwrap();
    let path;
    {
        let store = Store::open(dir.path()).unwrap();
        path = store.path().to_path_buf();
        for i in 1..=5 {
            store
                .insert(msg(&format!("m{i}"), &["p1", "p2"]))
                .await
                .unwrap();
        }
        store.ack_outbox("p2", vec![2]).await.unwrap();
        store.close().await;
    }
    // Rewrite the queue as layout 3 had it.
    {
        let db = redb::Database::open(&path).unwrap();
        let wtx = db.begin_write().unwrap();
        {
            let mut blocks = wtx.open_table(super::tables::OUTBOX.typed()).unwrap();
            let mut old = wtx.open_table(super::tables::OLD_OUTBOX.typed()).unwrap();
            let rows: Vec<(String, u64, Vec<u8>)> = blocks
                .iter()
                .unwrap()
                .map(|e| {
                    let (k, v) = e.unwrap();
                    (k.value().0.to_string(), k.value().1, v.value().to_vec())
                })
                .collect();
            for (peer, key, v) in rows {
                for s in super::outbox_blocks::decode(key, &v).unwrap() {
                    old.insert((peer.as_str(), s), ()).unwrap();
                }
                blocks.remove((peer.as_str(), key)).unwrap();
            }
        }
        wtx.commit().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(queued(&store, "p1"), vec![1, 2, 3, 4, 5]);
    assert_eq!(queued(&store, "p2"), vec![1, 3, 4, 5]);
    assert_eq!(outbox_values(&store, "p1"), vec![(1, vec![1, 2, 3, 4, 5])]);
    store.ack_outbox("p2", vec![1, 3]).await.unwrap();
    assert_eq!(queued(&store, "p2"), vec![4, 5]);
    store.close().await;
    drop(store);
    let db = redb::Database::open(&path).unwrap();
    let rtx = db.begin_read().unwrap();
    assert!(
        rtx.list_tables()
            .unwrap()
            .all(|t| t.name() != super::tables::OLD_OUTBOX.name()),
        "the old outbox table is gone"
    );
}

#[tokio::test]
async fn a_signature_handed_over_apart_from_bytes_that_carry_one_is_refused() {
    use prost::Message as _;
    let (_dir, store, key) = store_and_signer();
    let batch = crate::envelope::seal_batch(&key, vec![b"one".to_vec(), b"two".to_vec()]);
    let e = store
        .insert(NewMessage {
            envelope: batch[0].encode_to_vec(),
            batch_signature: Some(batch[0].signature.clone()),
            ..msg("m0", &[])
        })
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)), "{e}");
    assert!(e.to_string().contains("NewMessage::of_envelope"), "{e}");
    // Nothing of it was stored; the same message handed over right is.
    assert!(store.read_after(0, 10).unwrap().is_empty());
    store
        .insert(handed_apart(&batch[0], msg("m0", &[])))
        .await
        .unwrap();
    assert_eq!(
        store.read_after(0, 10).unwrap()[0].envelope,
        batch[0].encode_to_vec()
    );
}

#[tokio::test]
async fn two_batches_interleaved_in_one_transaction_keep_their_own_signatures() {
    use prost::Message as _;
    let (_dir, store, key) = store_and_signer();
    let a = crate::envelope::seal_batch(&key, vec![b"a1".to_vec(), b"a2".to_vec()]);
    let b = crate::envelope::seal_batch(&key, vec![b"b1".to_vec(), b"b2".to_vec()]);
    assert_ne!(a[0].signature, b[0].signature);
    // A, B, A, B in one insert: whole bytes and handed over apart, alternately.
    let order = [&a[0], &b[0], &a[1], &b[1]];
    let msgs = order
        .iter()
        .enumerate()
        .map(|(i, env)| {
            let base = msg(&format!("m{i}"), &[]);
            if i < 2 {
                NewMessage {
                    envelope: env.encode_to_vec(),
                    ..base
                }
            } else {
                handed_apart(env, base)
            }
        })
        .collect();
    store.insert_many(msgs).await.unwrap();
    let read = envelopes_after(&store, 0);
    let expected: Vec<Vec<u8>> = order.iter().map(|e| e.encode_to_vec()).collect();
    assert_eq!(
        read, expected,
        "each message with its own batch's signature"
    );
}

/// A store with `sync = "interval"` and an interval no test waits for: only the close syncs.
fn open_synced_only_at_close(path: &Path) -> Store {
    Store::open_with(
        path,
        SyncMode::Interval(std::time::Duration::from_secs(3600)),
    )
    .unwrap()
}

/// `[store] sync = "interval"`: commits are acknowledged before the file is synced, the
/// close syncs what is left and is recorded as clean, and the file opens as usual with
/// either setting afterwards.
#[tokio::test]
async fn a_store_synced_every_interval_commits_closes_cleanly_and_reopens_either_way() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let store = open_synced_only_at_close(&path);
    assert_eq!(
        store.sync_mode(),
        SyncMode::Interval(std::time::Duration::from_secs(3600))
    );
    let out = store
        .insert_many(vec![msg("a", &["org-b"]), msg("b", &[])])
        .await
        .unwrap();
    assert_eq!(out.len(), 2);
    store.close().await;
    drop(store);
    assert!(
        path.join(CLEAN_MARKER).exists(),
        "the close is recorded as clean"
    );

    let store = Store::open(&path).unwrap();
    assert_eq!(store.sync_mode(), SyncMode::Always);
    assert!(!store.pages_checked_at_open());
    assert_eq!(store.head_seq(), 2);
    assert_eq!(store.find_by_id("b").unwrap().len(), 1);
    assert_eq!(store.outbox_depth("org-b").unwrap(), 1);
    drop(store);

    let store = Store::open_with(
        &path,
        SyncMode::Interval(std::time::Duration::from_millis(5)),
    )
    .unwrap();
    store.insert_many(vec![msg("c", &[])]).await.unwrap();
    assert_eq!(store.head_seq(), 3);
}

/// After a failed background sync, the store takes no more writes (a reopen of the file
/// included) and the close is not recorded as clean; the next start checks every page.
#[tokio::test]
async fn after_a_failed_background_sync_writes_fail_and_the_close_is_not_recorded_clean() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let store = open_synced_only_at_close(&path);
    store.insert_many(vec![msg("a", &[])]).await.unwrap();
    store.inner.db.sync_failed.fail_for_tests();
    let e = store
        .insert_many(vec![msg("b", &[])])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("restart the node"), "{e}");
    // The file is reopened at most once a second: past that, still refused.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert!(store.insert_many(vec![msg("c", &[])]).await.is_err());
    store.close().await;
    drop(store);
    assert!(!path.join(CLEAN_MARKER).exists());

    let store = Store::open(&path).unwrap();
    assert!(store.pages_checked_at_open(), "every page is checked");
    assert_eq!(store.find_by_id("a").unwrap().len(), 1);
    // "b" may be there: its pages reached the file before its commit was failed (as when
    // redb's own fdatasync fails), and a publish retried with its id is a duplicate.
    drop(store);

    // A failure with no write after it: the close alone must not record a clean shutdown.
    let store = open_synced_only_at_close(&path);
    store.inner.db.sync_failed.fail_for_tests();
    store.close().await;
    drop(store);
    assert!(!path.join(CLEAN_MARKER).exists());
    if cfg!(target_os = "linux") {
        assert!(
            path.join(sync::BOOT_MARKER).exists(),
            "the record stays: a reboot now is refused"
        );
    }
}

/// A store open with `sync = "interval"` when the machine went down refuses the next start
/// until the operator accepts what may be missing; a crash of the node alone does not.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn an_interval_synced_store_the_machine_went_down_with_is_refused_until_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let every = SyncMode::Interval(std::time::Duration::from_millis(50));
    let store = Store::open_with(&path, every).unwrap();
    store.insert_many(vec![msg("a", &[])]).await.unwrap();
    // Another start on the same directory (bluewire-node check, say) while it is open is
    // refused before it touches the record.
    assert!(matches!(Store::open(&path), Err(StoreError::Locked { .. })));
    let record = std::fs::read_to_string(path.join(sync::BOOT_MARKER)).unwrap();
    drop(store);
    assert!(
        !path.join(sync::BOOT_MARKER).exists(),
        "closed with all synced"
    );
    // As after a kill under this boot (no clean close): the page cache had everything.
    std::fs::remove_file(path.join(CLEAN_MARKER)).unwrap();
    std::fs::write(path.join(sync::BOOT_MARKER), &record).unwrap();
    let store = Store::open_with(&path, every).unwrap();
    assert!(store.pages_checked_at_open());
    drop(store);

    // As after a power cut: no clean record, and the record of another boot.
    std::fs::remove_file(path.join(CLEAN_MARKER)).unwrap();
    std::fs::write(
        path.join(sync::BOOT_MARKER),
        "boot 00000000-dead\nsync_interval_ms 50\n",
    )
    .unwrap();
    for _ in 0..2 {
        let e = Store::open_with(&path, every).unwrap_err().to_string();
        assert!(
            e.contains("the machine restarted (boot 00000000-dead"),
            "{e}"
        );
        assert!(e.contains("last sync interval may be missing"), "{e}");
        assert!(e.contains(DAMAGED_MARKER), "{e}");
    }
    std::fs::remove_file(path.join(DAMAGED_MARKER)).unwrap();
    let store = Store::open_with(&path, every).unwrap();
    assert!(store.pages_checked_at_open());
    assert_eq!(store.find_by_id("a").unwrap().len(), 1);
}

/// Set for the second run of the store's tests, with the journal under every mode.
pub(super) const JOURNAL_EVERYWHERE: &str = "BLUEWIRE_TEST_JOURNAL";

/// The store's tests run with `always` unless they say otherwise, where commits go straight
/// into redb: this runs them all again, in a child process of this test binary, with every
/// commit going through the journal.
#[test]
fn the_store_suite_passes_with_the_journal_under_every_mode() {
    const ME: &str = "the_store_suite_passes_with_the_journal_under_every_mode";
    if std::env::var_os(JOURNAL_EVERYWHERE).is_some() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["store::", "--skip", ME, "--test-threads", "2"])
        .env(JOURNAL_EVERYWHERE, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the store's tests failed with the journal on:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passed: u32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("test result: ok. "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 80, "only {passed} store tests ran:\n{stdout}");
}

/// Pins the switch the test above turns: under `always` a commit goes through the journal
/// (a frame past the segment's header) only in the second run.
#[tokio::test]
async fn under_always_commits_go_through_the_journal_only_when_the_tests_ask() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.insert(msg("a", &[])).await.unwrap();
    let journaled: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jnl"))
        .map(|e| e.metadata().unwrap().len().saturating_sub(16))
        .sum();
    assert_eq!(
        journaled > 0,
        journal_everywhere(),
        "{journaled} bytes of frames"
    );
}

/// `outbox_queued_from` as a delivery worker calls it (its position and scan kept between
/// reads), checked against a read from the peer's first key at every step; returns the seqs
/// read and where the scan now starts.
fn read_forward(store: &Store, after: u64, limit: usize, scan: &mut OutboxScan) -> (Vec<u64>, u64) {
    let seqs = |q: Vec<Queued>| q.into_iter().map(|q| q.seq).collect::<Vec<u64>>();
    let walked = seqs(store.outbox_queued_from("p1", after, limit, scan).unwrap());
    let whole = seqs(store.outbox_queued_after("p1", after, limit).unwrap());
    assert_eq!(walked, whole, "after {after}, limit {limit}");
    assert!(
        scan.from <= after + 1,
        "the scan starts at or below the position"
    );
    (walked, scan.from)
}

/// A reader walking the outbox forward finds what one starting from the peer's first key
/// finds, through acks from the front and the middle, new blocks, enqueues below, inside and
/// above its position, and a drop; and its scan start keeps up with it, so a read does not
/// walk the blocks left behind.
#[tokio::test]
async fn a_forward_reader_of_the_outbox_reads_what_a_read_from_the_first_key_reads() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let scan = &mut OutboxScan::default();
    let none: Vec<u64> = Vec::new();
    // One block, 1..=5.
    store
        .insert_many((1..=5).map(|i| msg(&format!("m{i}"), &["p1"])).collect())
        .await
        .unwrap();
    assert_eq!(read_forward(&store, 0, 2, scan), (vec![1, 2], 1));
    // Acked from the front: the block is re-keyed at 3.
    store.ack_outbox("p1", vec![1, 2]).await.unwrap();
    assert_eq!(read_forward(&store, 2, 2, scan), (vec![3, 4], 3));
    // Acked in the middle: the block keyed 3 still holds 5, above the position.
    store.ack_outbox("p1", vec![4]).await.unwrap();
    assert_eq!(
        read_forward(&store, 4, 10, scan),
        (vec![5], 3),
        "the block holding 5 is keyed below the position"
    );
    // New blocks, one per transaction: 6, 7, 8.
    for i in 6..=8 {
        store.insert(msg(&format!("m{i}"), &["p1"])).await.unwrap();
    }
    assert_eq!(read_forward(&store, 5, 2, scan).0, [6, 7]);
    store.ack_outbox("p1", vec![3, 5, 6, 7]).await.unwrap();
    assert_eq!(
        read_forward(&store, 7, 10, scan),
        (vec![8], 8),
        "the scan start moved past the blocks acknowledged"
    );
    // Enqueued again below the position (a block of its own, keyed 2): not read from here,
    // read from the start.
    store.enqueue("p1", vec![2]).await.unwrap();
    assert_eq!(read_forward(&store, 8, 10, scan).0, none);
    assert_eq!(
        read_forward(&store, 0, 10, &mut OutboxScan::default()).0,
        [2, 8]
    );
    // A message stored for another peer, then enqueued for this one above the position.
    store.insert(msg("m9", &["p2"])).await.unwrap();
    store.insert(msg("m10", &["p1"])).await.unwrap();
    assert_eq!(read_forward(&store, 8, 10, scan).0, [10]);
    store.enqueue("p1", vec![9]).await.unwrap();
    assert_eq!(read_forward(&store, 8, 10, scan), (vec![9, 10], 9));
    // Dropped whole, then new messages.
    store.drop_outbox("p1").await.unwrap();
    assert_eq!(read_forward(&store, 8, 10, scan).0, none);
    store.insert(msg("m11", &["p1"])).await.unwrap();
    assert_eq!(read_forward(&store, 10, 10, scan), (vec![11], 11));
}

/// A reopen after an I/O error can bring back a block keyed below where a reader's scan
/// starts that holds seqs above its position (an ack that had not reached the disk). A scan
/// from before the reopen, and a read during which the store reopens (the read is what
/// reopens it here), start again from the peer's first key.
#[tokio::test]
async fn a_forward_reader_starts_from_the_first_key_again_after_the_store_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .insert_many((1..=3).map(|i| msg(&format!("m{i}"), &["p1"])).collect())
        .await
        .unwrap();
    let generation = store.generation();
    // As if the block keyed 1 had been acknowledged up to 2 (re-keyed at 3) and a read had
    // started there: a scan that starts above the block now holding 2 and 3.
    let stale = OutboxScan {
        from: 3,
        generation,
    };
    let seqs = |q: Vec<Queued>| q.into_iter().map(|q| q.seq).collect::<Vec<u64>>();
    assert_eq!(
        seqs(
            store
                .outbox_queued_from("p1", 1, 10, &mut { stale })
                .unwrap()
        ),
        Vec::<u64>::new(),
        "within a generation the scan is trusted (this one misses the block keyed 1)"
    );
    store.close_as_after_an_io_error();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let mut scan = stale;
    assert_eq!(
        seqs(store.outbox_queued_from("p1", 1, 10, &mut scan).unwrap()),
        [2, 3]
    );
    assert_ne!(
        store.generation(),
        generation,
        "the read reopened the store"
    );
    assert_eq!(
        scan,
        OutboxScan {
            from: 1,
            generation: store.generation()
        }
    );
    // A scan from the old generation, read after the reopen.
    let mut scan = stale;
    assert_eq!(
        seqs(store.outbox_queued_from("p1", 1, 10, &mut scan).unwrap()),
        [2, 3]
    );
    assert_eq!(scan.generation, store.generation());
}

/// With `sync = "interval"` an insert's caller commits it itself, without the writer thread;
/// inserts that are ready together (the publishes of one signed batch are woken together) join
/// the first one's group and share its commit.
#[tokio::test]
async fn under_interval_inserts_are_committed_by_their_callers_and_those_ready_together_share_one_commit()
 {
    let dir = tempfile::tempdir().unwrap();
    let store = open_synced_only_at_close(&dir.path().join("s"));
    let (commits, by_caller) = (store.commit_count(), store.commits_by_caller());
    let since = |store: &Store| {
        (
            store.commit_count() - commits,
            store.commits_by_caller() - by_caller,
        )
    };
    store.insert(msg("a", &["org-b"])).await.unwrap();
    assert_eq!(since(&store), (1, 1), "one commit, by the caller");
    let outcomes = futures_util::future::join_all(
        (0..10).map(|i| store.insert(msg(&format!("b{i}"), &["org-b"]))),
    )
    .await;
    let seqs: Vec<u64> = outcomes
        .into_iter()
        .map(|o| match o.unwrap() {
            InsertOutcome::Inserted(s) => s,
            InsertOutcome::Duplicate(_) => panic!("unexpected duplicate"),
        })
        .collect();
    assert_eq!(seqs, (2..=11).collect::<Vec<_>>(), "in the order they came");
    assert_eq!(since(&store), (2, 2), "ten inserts, one more commit");
    assert_eq!(store.head_seq(), 11);
    assert_eq!(store.outbox_depth("org-b").unwrap(), 11);
}

type Inserting<'a> = std::pin::Pin<Box<dyn Future<Output = Result<InsertOutcome>> + 'a>>;

/// Inserts a and b, each polled once: a leads (it yields), b joins its group (it waits).
fn a_leader_and_one_joining(store: &Store) -> [Inserting<'_>; 2] {
    use futures_util::FutureExt as _;
    let mut leading: Inserting<'_> = Box::pin(store.insert(msg("a", &[])));
    let mut joined: Inserting<'_> = Box::pin(store.insert(msg("b", &[])));
    assert!(
        (&mut leading).now_or_never().is_none(),
        "it leads: it yields"
    );
    assert!((&mut joined).now_or_never().is_none(), "it joins: it waits");
    [leading, joined]
}

/// `joined` is answered within 10 s, as the second message of the store.
async fn assert_inserted_as_second(joined: Inserting<'_>) {
    let answered = tokio::time::timeout(std::time::Duration::from_secs(10), joined).await;
    assert!(
        matches!(answered, Ok(Ok(InsertOutcome::Inserted(2)))),
        "{answered:?}"
    );
}

/// A leading insert whose caller stops waiting before the group commits (a cancelled publish)
/// still commits the group: the other callers in it get their answers.
#[tokio::test]
async fn a_leading_insert_dropped_before_its_commit_still_commits_the_inserts_that_joined_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_synced_only_at_close(&dir.path().join("s"));
    let by_caller = store.commits_by_caller();
    let [leading, joined] = a_leader_and_one_joining(&store);
    drop(leading);
    assert_inserted_as_second(joined).await;
    assert_eq!(store.find_by_id("a").unwrap().len(), 1);
    assert_eq!(store.commits_by_caller() - by_caller, 1);
}

/// While a commit is in progress, an insert is not committed by its caller: it goes to the
/// writer thread, which commits it once the commit in progress is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_during_a_commit_in_progress_goes_to_the_writer_thread() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_synced_only_at_close(&dir.path().join("s"));
    let by_caller = store.commits_by_caller();
    let writer = store.inner.writer.clone();
    let (held_tx, held) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let _one = lock(&writer.committing);
        held_tx.send(()).unwrap();
        let _ = release_rx.recv();
    });
    held.recv().unwrap();
    let inserting = tokio::spawn({
        let store = store.clone();
        async move { store.insert(msg("a", &[])).await }
    });
    let taken = std::time::Instant::now();
    while !store.inner.writer.busy.load(Ordering::Acquire) {
        assert!(
            taken.elapsed() < std::time::Duration::from_secs(10),
            "the writer thread never took the insert"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert!(!inserting.is_finished(), "committed during another commit");
    release.send(()).unwrap();
    holder.join().unwrap();
    assert!(matches!(
        inserting.await.unwrap(),
        Ok(InsertOutcome::Inserted(1))
    ));
    assert_eq!(
        store.commits_by_caller(),
        by_caller,
        "the writer thread's commit"
    );
}

/// Under `always` every commit syncs, so no caller commits: every insert goes to the writer
/// thread (but in the suite's second run, where the tests ask for the journal everywhere).
#[tokio::test]
async fn under_always_inserts_go_to_the_writer_thread() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.insert(msg("a", &[])).await.unwrap();
    let expected = u64::from(journal_everywhere());
    assert_eq!(store.commits_by_caller(), expected);
}

/// Lazy acks join those held back only while the group stays under `MAX_GROUP` and the
/// oldest held has waited less than `LAZY_HOLD`; with none held, there is no wait to run out.
#[test]
fn lazy_acks_join_those_held_under_the_group_bound_and_within_the_hold() {
    use super::writer::Held;
    let ack = || {
        let (reply, _) = oneshot::channel();
        Op::Ack {
            peer: "p".into(),
            seqs: vec![1],
            audit: Vec::new(),
            lazy: true,
            reply,
        }
    };
    let t0 = std::time::Instant::now();
    let empty = Held {
        ops: Vec::new(),
        since: t0,
    };
    assert!(
        empty.has_room(1, t0 + LAZY_HOLD * 10),
        "none held: no hold to run out"
    );
    assert!(empty.has_room(MAX_GROUP - 1, t0));
    assert!(
        !empty.has_room(MAX_GROUP, t0),
        "a group of MAX_GROUP is full"
    );
    let one = Held {
        ops: vec![ack()],
        since: t0,
    };
    assert!(one.has_room(MAX_GROUP - 2, t0));
    assert!(!one.has_room(MAX_GROUP - 1, t0));
    let almost = t0 + LAZY_HOLD - std::time::Duration::from_nanos(1);
    assert!(one.has_room(0, almost));
    assert!(
        !one.has_room(0, t0 + LAZY_HOLD),
        "held for LAZY_HOLD: due now"
    );
    let full = Held {
        ops: (0..MAX_GROUP).map(|_| ack()).collect(),
        since: t0,
    };
    assert!(
        !full.has_room(0, t0),
        "a full group takes no more, however fresh"
    );
}

/// An ack of `seq` for peer "p" held back for longer than any test, as the writer thread
/// holds a lazy ack (its own wait is not involved): the receiver gets its answer.
fn hold_an_ack(writer: &Writer, seq: u64) -> oneshot::Receiver<Result<()>> {
    let (reply, answer) = oneshot::channel();
    let mut held = lock(&writer.held);
    held.since = std::time::Instant::now() + std::time::Duration::from_secs(3600);
    held.ops.push(Op::Ack {
        peer: "p".into(),
        seqs: vec![seq],
        audit: Vec::new(),
        lazy: true,
        reply,
    });
    answer
}

/// Lazy acks held back ride along with the next commit, whoever makes it (here an insert's
/// caller), and while some are held back another joins them without the writer thread's queue.
#[tokio::test]
async fn lazy_acks_held_back_ride_along_with_a_commit_made_by_a_caller() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_synced_only_at_close(&dir.path().join("s"));
    store
        .insert_many(vec![msg("a", &["p"]), msg("b", &["p"])])
        .await
        .unwrap();
    let writer = store.inner.writer.clone();
    let first = hold_an_ack(&writer, 1);
    let second = tokio::spawn({
        let store = store.clone();
        async move { store.ack_outbox_later("p", vec![2], Vec::new()).await }
    });
    let started = std::time::Instant::now();
    while lock(&writer.held).ops.len() < 2 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the second lazy ack did not join the one held back"
        );
        tokio::task::yield_now().await;
    }
    let (commits, by_caller) = (store.commit_count(), store.commits_by_caller());
    store.insert(msg("c", &["p"])).await.unwrap();
    assert_eq!(
        (
            store.commit_count() - commits,
            store.commits_by_caller() - by_caller
        ),
        (1, 1),
        "the insert and both acks in one commit, by the insert's caller"
    );
    let ten_s = std::time::Duration::from_secs(10);
    let first = tokio::time::timeout(ten_s, first).await;
    assert!(matches!(first, Ok(Ok(Ok(())))), "{first:?}");
    second.await.unwrap().unwrap();
    assert!(lock(&writer.held).ops.is_empty());
    assert_eq!(
        store.outbox_depth("p").unwrap(),
        1,
        "only c is still queued"
    );
}

/// An ack nobody waits for (`ack_outbox_detached`, as delivery workers acknowledge) is held
/// or queued before the call returns: it joins acks already held without a task of its own,
/// rides along with the next commit, and one made just before a close is committed by it.
#[tokio::test]
async fn detached_acks_are_held_or_queued_at_once_and_committed_by_the_next_commit_or_the_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let store = open_synced_only_at_close(&path);
    store
        .insert_many(vec![msg("a", &["p"]), msg("b", &["p"]), msg("c", &["p"])])
        .await
        .unwrap();
    let writer = store.inner.writer.clone();
    let _first = hold_an_ack(&writer, 1);
    store.ack_outbox_detached("p", vec![2], Vec::new());
    assert_eq!(
        lock(&writer.held).ops.len(),
        2,
        "a detached ack did not join the one held back before returning"
    );
    store.insert(msg("d", &["p"])).await.unwrap();
    assert!(lock(&writer.held).ops.is_empty());
    assert_eq!(
        store.outbox_depth("p").unwrap(),
        2,
        "c and d are still queued"
    );
    // Nothing held now: this one goes to the writer thread, and the close commits it.
    store.ack_outbox_detached("p", vec![3], Vec::new());
    store.close().await;
    drop(store);
    let reopened = open_synced_only_at_close(&path);
    assert_eq!(
        reopened.outbox_depth("p").unwrap(),
        1,
        "an ack made before the close was lost: only d should be queued"
    );
}

/// While the writer's queue is full, a detached ack waits with the held ones (it neither
/// waits for room nor is dropped), and the writer's next commit takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_ack_meeting_a_full_queue_is_held_for_the_next_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_synced_only_at_close(&dir.path().join("s"));
    store.insert(msg("a", &["p"])).await.unwrap();
    let writer = store.inner.writer.clone();
    // The writer thread stalls at its next commit, and its queue fills up behind it.
    let (held_tx, held) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn({
        let writer = writer.clone();
        move || {
            let _one = lock(&writer.committing);
            held_tx.send(()).unwrap();
            let _ = release_rx.recv();
        }
    });
    held.recv().unwrap();
    loop {
        let (reply, _) = oneshot::channel();
        let filler = Op::Ack {
            peer: "q".into(),
            seqs: Vec::new(),
            audit: Vec::new(),
            lazy: false,
            reply,
        };
        if store.inner.tx.try_send(filler).is_err() {
            break;
        }
    }
    store.ack_outbox_detached("p", vec![1], Vec::new());
    assert_eq!(
        lock(&writer.held).ops.len(),
        1,
        "the ack did not wait with the held ones"
    );
    release.send(()).unwrap();
    holder.join().unwrap();
    let started = std::time::Instant::now();
    while store.outbox_depth("p").unwrap() != 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the held ack was never committed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// A group gathering when the store closes is committed by the close, which promises to
/// commit what came before it: its inserts are answered, and readable after the close.
#[tokio::test]
async fn inserts_gathering_when_the_store_closes_are_committed_by_the_close() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_synced_only_at_close(&dir.path().join("s"));
    let [leading, joined] = a_leader_and_one_joining(&store);
    store.close().await;
    assert_inserted_as_second(joined).await;
    drop(leading);
    assert_eq!(store.find_by_id("a").unwrap().len(), 1);
    assert!(matches!(
        store.insert(msg("c", &[])).await,
        Err(StoreError::Closed)
    ));
}
