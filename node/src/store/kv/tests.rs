use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redb::ReadableTableMetadata as _;

use super::super::journal;
use super::*;

const NUMS: TableDefinition<u64, &[u8]> = TableDefinition::new("nums");
const PAIRS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("pairs");
const COUNTS: TableDefinition<&str, u64> = TableDefinition::new("counts");
const OLD: TableDefinition<&str, u64> = TableDefinition::new("old");
/// Its large values are kept in the value log.
const BIGS: TableDefinition<u64, &[u8]> = TableDefinition::spilled("bigs");

fn specs() -> Vec<Spec> {
    vec![
        NUMS.spec(),
        PAIRS.spec(),
        COUNTS.spec(),
        OLD.spec(),
        BIGS.spec(),
    ]
}

/// Nothing applied or rotated on a timer: the tests decide when.
fn policy() -> Policy {
    Policy {
        journal: true,
        always: true,
        sync_every: None,
        apply_every: Duration::from_secs(3600),
        rotate_bytes: u64::MAX,
        rotate_age: Duration::from_secs(3600),
        sync_base: Arc::new(|| Ok(())),
        on_sync_failure: Arc::new(|_| {}),
        poisoned: Arc::new(|| None),
    }
}

fn open_in(dir: &Path, policy: Policy) -> Database {
    let redb = redb::Database::create(dir.join("store.redb")).unwrap();
    Database::open(redb, dir, &specs(), policy).unwrap()
}

/// [`open_in`] with `p`, with or without the journal.
fn open_either(dir: &Path, journal: bool, p: Policy) -> Database {
    open_in(dir, Policy { journal, ..p })
}

fn put(db: &Database, f: impl FnOnce(&WriteTransaction)) {
    let tx = db.begin_write().unwrap();
    f(&tx);
    tx.commit().unwrap();
}

/// Commit one row of `NUMS`.
fn put_num(db: &Database, k: u64, v: &[u8]) {
    put(db, |tx| {
        tx.open_table(NUMS).unwrap().insert(k, v).unwrap();
    });
}

/// The count stored under `key`, as a read sees it.
fn count(db: &Database, key: &str) -> Option<u64> {
    let rtx = db.begin_read().unwrap();
    let t = rtx.open_table(COUNTS).unwrap();
    t.get(key).unwrap().map(|g| g.value())
}

fn nums(db: &Database) -> Vec<(u64, String)> {
    let rtx = db.begin_read().unwrap();
    let t = rtx.open_table(NUMS).unwrap();
    t.iter()
        .unwrap()
        .map(|e| {
            let (k, v) = e.unwrap();
            (k.value(), String::from_utf8(v.value().to_vec()).unwrap())
        })
        .collect()
}

/// A copy of the directory as a crash would leave it (the process gone, the files as the
/// kernel has them).
fn crash_copy(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn reads_see_a_commit_at_once_and_redb_has_it_in_its_own_types_once_applied() {
    let d = tempfile::tempdir().unwrap();
    let db = open_in(d.path(), policy());
    // Tables exist in redb from a first direct transaction (as the store's opening one).
    let tx = db.begin_write_direct().unwrap();
    for _ in [
        tx.open_table(NUMS).map(drop),
        tx.open_table(PAIRS).map(drop),
        tx.open_table(COUNTS).map(drop),
    ] {}
    tx.commit().unwrap();
    put(&db, |tx| {
        let mut t = tx.open_table(NUMS).unwrap();
        // 256 sorts after 2 as a number, before it as little-endian bytes.
        for (k, v) in [(256u64, "big"), (2, "two"), (1, "one")] {
            t.insert(k, v.as_bytes()).unwrap();
        }
        tx.open_table(COUNTS).unwrap().insert("n", 3u64).unwrap();
    });
    let want = vec![
        (1, "one".to_string()),
        (2, "two".into()),
        (256, "big".into()),
    ];
    assert_eq!(nums(&db), want, "pending, in the key type's order");
    put(&db, |tx| {
        tx.open_table(NUMS).unwrap().remove(2u64).unwrap();
    });
    let want = vec![(1, "one".to_string()), (256, "big".into())];
    assert_eq!(nums(&db), want);
    db.apply_now().unwrap();
    assert_eq!(nums(&db), want, "the same after the apply");
    // redb's own typed tables hold it: the file is the one the store has always written.
    let redb = db.redb().unwrap();
    let rtx = redb.begin_read().unwrap();
    let t = rtx
        .open_table(redb::TableDefinition::<u64, &[u8]>::new("nums"))
        .unwrap();
    assert_eq!(t.get(256).unwrap().unwrap().value(), b"big");
    assert!(t.get(2).unwrap().is_none());
    let c = rtx
        .open_table(redb::TableDefinition::<&str, u64>::new("counts"))
        .unwrap();
    assert_eq!(c.get("n").unwrap().unwrap().value(), 3);
}

#[test]
fn a_transaction_reads_its_own_writes_over_what_is_pending_over_redb() {
    let d = tempfile::tempdir().unwrap();
    let db = open_in(d.path(), policy());
    put(&db, |tx| {
        let mut t = tx.open_table(PAIRS).unwrap();
        for (p, s) in [("a", 1u64), ("a", 2), ("a", 3), ("b", 1)] {
            t.insert((p, s), format!("{p}{s}").as_bytes()).unwrap();
        }
    });
    db.apply_now().unwrap();
    put(&db, |tx| {
        let mut t = tx.open_table(PAIRS).unwrap();
        t.remove(("a", 2)).unwrap();
        t.insert(("a", 4), b"a4 pending".as_slice()).unwrap();
    });
    let tx = db.begin_write().unwrap();
    {
        let mut t = tx.open_table(PAIRS).unwrap();
        let old = t.remove(("a", 1)).unwrap().unwrap();
        assert_eq!(old.value(), b"a1");
        t.insert(("a", 3), b"a3 own".as_slice()).unwrap();
        t.insert(("ab", 0), b"ab0".as_slice()).unwrap();
        let a: Vec<(u64, Vec<u8>)> = t
            .range(("a", 0)..=("a", u64::MAX))
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.value().1, v.value().to_vec())
            })
            .collect();
        assert_eq!(
            a,
            vec![(3, b"a3 own".to_vec()), (4, b"a4 pending".to_vec())]
        );
        assert_eq!(t.len().unwrap(), 4, "a3, a4, ab0, b1");
        assert_eq!(t.last().unwrap().unwrap().0.value(), ("b", 1));
        assert_eq!(t.first().unwrap().unwrap().0.value(), ("a", 3));
        assert!(t.get(("a", 2)).unwrap().is_none());
    }
    // Another reader does not see an uncommitted transaction.
    let rtx = db.begin_read().unwrap();
    let r = rtx.open_table(PAIRS).unwrap();
    assert_eq!(r.get(("a", 1)).unwrap().unwrap().value(), b"a1");
    assert_eq!(ReadableTable::len(&r).unwrap(), 4);
    tx.abort().unwrap();
    let rtx = db.begin_read().unwrap();
    assert_eq!(
        rtx.open_table(PAIRS)
            .unwrap()
            .get(("a", 3))
            .unwrap()
            .unwrap()
            .value(),
        b"a3"
    );
}

#[test]
fn a_crash_before_the_apply_loses_nothing_committed() {
    let d = tempfile::tempdir().unwrap();
    let after = tempfile::tempdir().unwrap();
    let db = open_in(d.path(), policy());
    for i in 0..50u64 {
        put_num(&db, i, format!("v{i}").as_bytes());
        if i == 20 {
            db.apply_now().unwrap();
        }
    }
    put(&db, |tx| {
        tx.open_table(NUMS).unwrap().remove(7u64).unwrap();
    });
    let want = nums(&db);
    assert_eq!(want.len(), 49);
    crash_copy(d.path(), after.path());
    drop(db);
    let again = open_in(after.path(), policy());
    assert_eq!(nums(&again), want, "replayed");
    // The replayed segment is gone; commits go on after it.
    put_num(&again, 7u64, b"back");
    assert_eq!(journal::segments(after.path()).unwrap().len(), 1);
}

#[test]
fn a_segment_redb_already_took_is_not_replayed_over_newer_writes() {
    let d = tempfile::tempdir().unwrap();
    let after = tempfile::tempdir().unwrap();
    let mut p = policy();
    p.rotate_bytes = 0;
    let db = open_in(d.path(), p);
    put(&db, |tx| {
        tx.open_table(COUNTS).unwrap().insert("x", 1u64).unwrap();
    });
    let first = journal::segments(d.path()).unwrap()[0];
    let saved = std::fs::read(journal::segment_path(d.path(), first)).unwrap();
    db.apply_now().unwrap();
    put(&db, |tx| {
        tx.open_table(COUNTS).unwrap().insert("x", 2u64).unwrap();
    });
    db.apply_now().unwrap();
    assert!(
        !journal::segment_path(d.path(), first).exists(),
        "deleted once taken"
    );
    drop(db);
    crash_copy(d.path(), after.path());
    // Its deletion did not reach the disk: the old segment is back.
    std::fs::write(journal::segment_path(after.path(), first), saved).unwrap();
    let again = open_in(after.path(), policy());
    assert_eq!(count(&again, "x"), Some(2));
}

#[test]
fn tables_are_dropped_only_in_a_direct_transaction() {
    let d = tempfile::tempdir().unwrap();
    let db = open_in(d.path(), policy());
    let tx = db.begin_write_direct().unwrap();
    tx.open_table(OLD).unwrap().insert("k", 1u64).unwrap();
    tx.commit().unwrap();
    let tx = db.begin_write().unwrap();
    assert!(
        tx.list_tables()
            .unwrap()
            .any(|h| redb::TableHandle::name(&h) == "old")
    );
    let e = tx.delete_table(OLD).unwrap_err();
    assert!(e.to_string().contains("opening transaction"), "{e}");
    drop(tx);
    // Pending writes are taken into redb before a direct transaction starts.
    put_num(&db, 1u64, b"one");
    let tx = db.begin_write_direct().unwrap();
    assert!(tx.delete_table(OLD).unwrap());
    assert_eq!(
        tx.open_table(NUMS)
            .unwrap()
            .get(1u64)
            .unwrap()
            .unwrap()
            .value(),
        b"one"
    );
    tx.commit().unwrap();
    assert!(db.begin_read().unwrap().open_table(OLD).is_err());
}

#[test]
fn a_journal_naming_an_unknown_table_is_refused_at_open() {
    let d = tempfile::tempdir().unwrap();
    let after = tempfile::tempdir().unwrap();
    let db = open_in(d.path(), policy());
    const NEW: TableDefinition<u64, u64> = TableDefinition::new("from_a_newer_build");
    put(&db, |tx| {
        tx.open_table(NEW).unwrap().insert(1u64, 1u64).unwrap();
    });
    crash_copy(d.path(), after.path());
    drop(db);
    let redb = redb::Database::create(after.path().join("store.redb")).unwrap();
    let e = Database::open(redb, after.path(), &specs(), policy())
        .err()
        .unwrap();
    assert!(e.to_string().contains("from_a_newer_build"), "{e}");
}

#[test]
fn close_stops_the_store_threads_and_lets_go_of_the_file_before_it_returns() {
    let d = tempfile::tempdir().unwrap();
    let busy = Policy {
        apply_every: Duration::from_millis(1),
        sync_every: Some(Duration::from_millis(1)),
        rotate_age: Duration::from_millis(1),
        ..policy()
    };
    for round in 0..20u64 {
        let db = open_in(d.path(), busy.clone());
        for i in 0..20u64 {
            put_num(&db, round * 100 + i, b"v");
        }
        db.close();
        // redb's lock is released: the file opens at once, with everything in it.
        let redb = redb::Database::open(d.path().join("store.redb"))
            .unwrap_or_else(|e| panic!("round {round}: the file is still held: {e}"));
        let n = redb
            .begin_read()
            .unwrap()
            .open_table(NUMS.typed())
            .unwrap()
            .len()
            .unwrap();
        assert_eq!(n, (round + 1) * 20, "round {round}");
    }
}

#[test]
fn a_table_in_a_write_transaction_reads_redb_at_its_first_read_and_sees_each_commit_once() {
    let d = tempfile::tempdir().unwrap();
    let db = open_in(d.path(), policy());
    put_num(&db, 1u64, b"one");
    db.apply_now().unwrap();
    put_num(&db, 2u64, b"two");
    let tx = db.begin_write().unwrap();
    let t = tx.open_table(NUMS).unwrap();
    // The applier moves commit 2 into redb after the transaction began and before its
    // table first reads redb: the read sees it once.
    db.apply_now().unwrap();
    let missing = tx.open_table(COUNTS).unwrap();
    assert_eq!(t.get(1u64).unwrap().unwrap().value(), b"one");
    assert_eq!(t.get(2u64).unwrap().unwrap().value(), b"two");
    assert_eq!(t.len().unwrap(), 2);
    assert_eq!(t.iter().unwrap().count(), 2);
    assert!(missing.get("x").unwrap().is_none());
    assert_eq!(missing.len().unwrap(), 0);
    assert_eq!(missing.iter().unwrap().count(), 0);
    drop((t, missing));
    tx.commit().unwrap();
}

#[test]
fn a_table_first_opened_after_the_open_is_applied_into_redb() {
    const LATE: TableDefinition<&str, u64> = TableDefinition::new("late");
    let d = tempfile::tempdir().unwrap();
    let db = open_in(d.path(), policy());
    put(&db, |tx| {
        tx.open_table(LATE).unwrap().insert("k", 7u64).unwrap();
    });
    db.apply_now().unwrap();
    let got = db
        .redb()
        .unwrap()
        .begin_read()
        .unwrap()
        .open_table(LATE.typed())
        .unwrap()
        .get("k")
        .unwrap()
        .map(|g| g.value());
    assert_eq!(got, Some(7));
}

#[test]
fn segments_are_deleted_once_redb_has_taken_them() {
    let d = tempfile::tempdir().unwrap();
    // A new segment at every apply.
    let every_apply = Policy {
        rotate_age: Duration::ZERO,
        ..policy()
    };
    let db = open_in(d.path(), every_apply);
    for i in 0..20u64 {
        put_num(&db, i, b"v");
        db.apply_now().unwrap();
        let left = journal::segments(d.path()).unwrap();
        assert!(left.len() <= 2, "after {i} applies: segments {left:?}");
    }
    assert_eq!(nums(&db).len(), 20);
}

#[test]
fn commits_fail_once_the_applier_has_failed_fifty_times_in_a_row() {
    const BROKEN: TableDefinition<u64, &[u8]> = TableDefinition::new("broken");
    let d = tempfile::tempdir().unwrap();
    let redb = redb::Database::create(d.path().join("store.redb")).unwrap();
    let mut with_broken = specs();
    // Writing this table into redb always fails (a failing disk, as the applier sees it).
    with_broken.push(Spec {
        apply: |_, _, _| Err(other("refused on purpose")),
        ..BROKEN.spec()
    });
    let db = Database::open(redb, d.path(), &with_broken, policy()).unwrap();
    let write = |i: u64| {
        let tx = db.begin_write().unwrap();
        tx.open_table(BROKEN)
            .unwrap()
            .insert(i, b"v".as_slice())
            .unwrap();
        tx.commit()
    };
    write(0).unwrap();
    for _ in 1..MAX_APPLY_FAILURES {
        db.inner.apply_step();
    }
    write(1).expect("commits go on until the fiftieth failure");
    db.inner.apply_step();
    let e = write(2).unwrap_err().to_string();
    assert!(
        e.contains("has not taken the journal in 50 tries") && e.contains("refused on purpose"),
        "{e}"
    );
}

#[test]
fn the_applier_takes_commits_into_redb_on_its_own() {
    let d = tempfile::tempdir().unwrap();
    let db = open_in(
        d.path(),
        Policy {
            apply_every: Duration::from_millis(1),
            ..policy()
        },
    );
    put_num(&db, 1u64, b"v");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while db.pending_commits() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the applier never took the commit"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(nums(&db), vec![(1, "v".to_string())]);
}

/// The scheduling policy in a thread's `/proc/.../stat` (`SCHED_BATCH` is 3): field 41, counting
/// as proc(5) does; the fields after the name's closing parenthesis start at 3.
#[cfg(target_os = "linux")]
fn policy_in(stat: &str) -> Option<u32> {
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(41 - 3))
        .and_then(|p| p.parse().ok())
}

/// The scheduling policy of each of this process's threads named `name`; a thread gone
/// meanwhile is left out.
#[cfg(target_os = "linux")]
fn policies_of(name: &str) -> Vec<(String, Option<u32>)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let path = task.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        if comm.trim_end() != name {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        out.push((path.display().to_string(), policy_in(&stat)));
    }
    out
}

#[cfg(target_os = "linux")]
#[test]
fn the_applier_runs_as_batch_work_and_the_journal_syncer_does_not() {
    const BATCH: Option<u32> = Some(3);
    // Whether a thread here can be made batch work at all, found without the store's code: it
    // starts as an ordinary thread at nice 0 and the kernel takes the call. Otherwise (a test
    // run under `chrt -b` or `nice`, a kernel that refuses) there is nothing to tell apart.
    let can = std::thread::spawn(|| {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityOsValue,
            ThreadSchedulePolicy, set_thread_priority_and_policy, thread_native_id,
        };
        let own = || policy_in(&std::fs::read_to_string("/proc/thread-self/stat").unwrap());
        own() == Some(0)
            && rustix::process::getpriority_process(None).ok() == Some(0)
            && set_thread_priority_and_policy(
                thread_native_id(),
                ThreadPriority::Os(ThreadPriorityOsValue::default()),
                ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch),
            )
            .is_ok()
            && own() == BATCH
    })
    .join()
    .unwrap();
    if !can {
        eprintln!("skipped: a thread of this test process cannot be told apart as batch work");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let db = open_in(
        d.path(),
        Policy {
            apply_every: Duration::from_millis(1),
            sync_every: Some(Duration::from_millis(1)),
            ..policy()
        },
    );
    put_num(&db, 1, b"v");
    // Every applier thread in this process (other tests' too) is batch work once it has
    // started; one that has only just started (a thread takes its name itself, so this
    // store's may not show yet) is given a moment. No syncer is.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let appliers = policies_of(database::APPLIER);
        let syncers = policies_of(database::JOURNAL_SYNCER);
        assert!(
            syncers.iter().all(|(_, p)| *p == Some(0)),
            "the journal's syncer is an ordinary thread: {syncers:?}"
        );
        let not_batch: Vec<_> = appliers.iter().filter(|(_, p)| *p != BATCH).collect();
        if !appliers.is_empty() && !syncers.is_empty() && not_batch.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "applier threads not scheduled as SCHED_BATCH: {not_batch:?} (appliers {appliers:?}, \
             syncers {syncers:?})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(db);
}

#[test]
fn one_write_transaction_at_a_time() {
    let d = tempfile::tempdir().unwrap();
    let db = open_in(d.path(), policy());
    let first = db.begin_write().unwrap();
    let (began, second_began) = std::sync::mpsc::channel();
    let other = db.clone();
    let second = std::thread::spawn(move || {
        let tx = other.begin_write().unwrap();
        began.send(()).unwrap();
        tx.open_table(NUMS)
            .unwrap()
            .insert(2u64, b"second".as_slice())
            .unwrap();
        tx.commit().unwrap();
    });
    assert!(
        second_began
            .recv_timeout(Duration::from_millis(200))
            .is_err(),
        "a second write transaction began while the first was open"
    );
    first
        .open_table(NUMS)
        .unwrap()
        .insert(1u64, b"first".as_slice())
        .unwrap();
    first.commit().unwrap();
    second_began
        .recv_timeout(Duration::from_secs(20))
        .expect("the second begins once the first ends");
    second.join().unwrap();
    assert_eq!(
        nums(&db),
        vec![(1, "first".to_string()), (2, "second".to_string())]
    );
}

#[test]
fn a_segment_is_closed_only_when_due_and_deleted_at_the_apply_that_covers_it() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let d = tempfile::tempdir().unwrap();
    let syncs = Arc::new(AtomicUsize::new(0));
    let counted = syncs.clone();
    let db = open_in(
        d.path(),
        Policy {
            // Past one big commit, not past a small one.
            rotate_bytes: 1000,
            sync_base: Arc::new(move || {
                counted.fetch_add(1, SeqCst);
                Ok(())
            }),
            ..policy()
        },
    );
    let at_open = syncs.load(SeqCst);
    let first = journal::segments(d.path()).unwrap();
    let write = |db: &Database, k: u64, len: usize| put_num(db, k, &vec![0u8; len]);
    write(&db, 1, 10);
    db.apply_now().unwrap();
    assert_eq!(
        journal::segments(d.path()).unwrap(),
        first,
        "small and young: not closed"
    );
    assert_eq!(syncs.load(SeqCst), at_open);
    write(&db, 2, 2000);
    db.apply_now().unwrap();
    let now = journal::segments(d.path()).unwrap();
    assert_eq!(
        now,
        vec![first[0] + 1],
        "closed, and deleted at the apply that took it"
    );
    assert_eq!(
        syncs.load(SeqCst),
        at_open + 1,
        "redb's file synced before the deletion"
    );
    write(&db, 3, 10);
    db.apply_now().unwrap();
    assert_eq!(journal::segments(d.path()).unwrap(), now);
    assert_eq!(
        syncs.load(SeqCst),
        at_open + 1,
        "nothing left to delete: no sync"
    );
}

#[test]
fn a_commit_redb_already_took_is_not_replayed_over_a_later_direct_write() {
    let d = tempfile::tempdir().unwrap();
    let after = tempfile::tempdir().unwrap();
    let db = open_in(d.path(), policy());
    put(&db, |tx| {
        tx.open_table(COUNTS).unwrap().insert("x", 1u64).unwrap();
    });
    // Takes commit 1 into redb (which records it), then writes past the journal.
    let tx = db.begin_write_direct().unwrap();
    tx.open_table(COUNTS).unwrap().insert("x", 2u64).unwrap();
    tx.commit().unwrap();
    assert_eq!(
        journal::segments(d.path()).unwrap().len(),
        1,
        "commit 1's segment is kept"
    );
    crash_copy(d.path(), after.path());
    drop(db);
    let again = open_in(after.path(), policy());
    assert_eq!(count(&again, "x"), Some(2));
}

#[test]
fn the_first_commit_of_a_fresh_store_survives_a_crash_before_any_apply() {
    let d = tempfile::tempdir().unwrap();
    let after = tempfile::tempdir().unwrap();
    let db = open_in(d.path(), policy());
    put_num(&db, 1u64, b"first");
    crash_copy(d.path(), after.path());
    drop(db);
    let again = open_in(after.path(), policy());
    assert_eq!(nums(&again), vec![(1, "first".to_string())]);
}

/// A value for `BIGS`: `n` bytes that say which key they belong to.
fn big(k: u64, n: usize) -> Vec<u8> {
    let mut v = format!("big {k}:").into_bytes();
    v.resize(n, b'a' + (k % 26) as u8);
    v
}

fn put_bigs(db: &Database, rows: &[(u64, usize)]) {
    put(db, |tx| {
        let mut t = tx.open_table(BIGS).unwrap();
        for &(k, n) in rows {
            t.insert(k, big(k, n).as_slice()).unwrap();
        }
    });
}

/// `BIGS` as a read sees it, forwards; checked against a read backwards and each `get`.
fn bigs(db: &Database) -> Vec<(u64, Vec<u8>)> {
    let rtx = db.begin_read().unwrap();
    let t = rtx.open_table(BIGS).unwrap();
    let rows: Vec<(u64, Vec<u8>)> = t
        .iter()
        .unwrap()
        .map(|e| {
            let (k, v) = e.unwrap();
            (k.value(), v.value().to_vec())
        })
        .collect();
    let mut back: Vec<(u64, Vec<u8>)> = t
        .iter()
        .unwrap()
        .rev()
        .map(|e| {
            let (k, v) = e.unwrap();
            (k.value(), v.value().to_vec())
        })
        .collect();
    back.reverse();
    assert_eq!(back, rows, "backwards");
    for (k, v) in &rows {
        assert_eq!(&t.get(k).unwrap().unwrap().value().to_vec(), v, "get {k}");
    }
    rows
}

/// Bytes added at the value log's end behind the store's back, as an apply a crash cut short
/// leaves them.
fn append_to_log(dir: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join(values::FILE))
        .unwrap();
    std::io::Write::write_all(&mut f, bytes).unwrap();
}

fn values_len(dir: &Path) -> u64 {
    std::fs::metadata(dir.join(values::FILE)).unwrap().len()
}

/// The log's end redb's file holds (`values_end`), everything pending taken first.
fn recorded_end(db: &Database) -> Option<u64> {
    let redb = db.redb().unwrap();
    let rtx = redb.begin_read().unwrap();
    let t = rtx.open_table(APPLIED).unwrap();
    t.get(values::END_KEY).unwrap().map(|g| g.value())
}

#[test]
fn only_an_apply_that_puts_values_in_the_log_moves_the_end_redb_holds() {
    let d = tempfile::tempdir().unwrap();
    let db = open_in(d.path(), policy());
    put_num(&db, 1, b"small");
    assert_eq!(recorded_end(&db), None, "nothing in the log yet");
    put_bigs(&db, &[(1, 1000)]);
    assert_eq!(recorded_end(&db), Some(1000));
    drop(db);
    // Bytes past that end, as a process killed between the log's write and its sync leaves.
    append_to_log(d.path(), &[7u8; 500]);
    let db = open_in(d.path(), policy());
    // An apply with nothing for the log leaves the end where it was, not at the log's length.
    put_num(&db, 2, b"small");
    assert_eq!(recorded_end(&db), Some(1000));
    // The next values go after the tail, and the end moves past them.
    put_bigs(&db, &[(2, 200)]);
    assert_eq!(recorded_end(&db), Some(1700));
    assert_eq!(bigs(&db), vec![(1, big(1, 1000)), (2, big(2, 200))]);
}

#[test]
fn a_spilled_tables_large_values_live_in_the_value_log_and_every_read_gets_them_back() {
    let d = tempfile::tempdir().unwrap();
    let db = open_in(d.path(), policy());
    // The opening transaction writes straight into redb, whole.
    let tx = db.begin_write_direct().unwrap();
    tx.open_table(BIGS)
        .unwrap()
        .insert(1u64, big(1, 300).as_slice())
        .unwrap();
    tx.commit().unwrap();
    put_bigs(&db, &[(2, 10), (3, 1000), (4, 3373), (5, 65)]);
    put_num(&db, 9, &big(9, 500));
    let want: Vec<(u64, Vec<u8>)> = [(1, 300), (2, 10), (3, 1000), (4, 3373), (5, 65)]
        .iter()
        .map(|&(k, n)| (k, big(k, n)))
        .collect();
    assert_eq!(bigs(&db), want, "pending");
    db.apply_now().unwrap();
    assert_eq!(bigs(&db), want, "taken into redb");
    assert_eq!(
        values_len(d.path()),
        1000 + 3373 + 65,
        "the values over 64 bytes that went through the journal, and only those"
    );
    {
        // redb holds pointers for those, and everything else whole (`nums` is not spilled).
        let redb = db.redb().unwrap();
        let rtx = redb.begin_read().unwrap();
        let t = rtx.open_table(BIGS.typed()).unwrap();
        let sizes: Vec<usize> = (1..=5u64)
            .map(|k| t.get(k).unwrap().unwrap().value().len())
            .collect();
        assert_eq!(sizes, [300, 10, 20, 20, 20]);
        let n = rtx.open_table(NUMS.typed()).unwrap();
        assert_eq!(n.get(9).unwrap().unwrap().value().len(), 500);
    }
    // A write transaction reads them too, and a removal hands the value back.
    let tx = db.begin_write().unwrap();
    {
        let mut t = tx.open_table(BIGS).unwrap();
        assert_eq!(t.get(4u64).unwrap().unwrap().value(), big(4, 3373));
        let range: Vec<u64> = t
            .range(3u64..=4)
            .unwrap()
            .map(|e| e.unwrap().0.value())
            .collect();
        assert_eq!(range, [3, 4]);
        let old = t.remove(3u64).unwrap().unwrap();
        assert_eq!(old.value(), big(3, 1000));
        t.insert(6u64, big(6, 2000).as_slice()).unwrap();
    }
    tx.commit().unwrap();
    db.apply_now().unwrap();
    // And a direct transaction.
    let tx = db.begin_write_direct().unwrap();
    assert_eq!(
        tx.open_table(BIGS)
            .unwrap()
            .get(6u64)
            .unwrap()
            .unwrap()
            .value(),
        big(6, 2000)
    );
    drop(tx);
    let want: Vec<(u64, Vec<u8>)> = [(1, 300), (2, 10), (4, 3373), (5, 65), (6, 2000)]
        .iter()
        .map(|&(k, n)| (k, big(k, n)))
        .collect();
    assert_eq!(bigs(&db), want);
    drop(db);
    let again = open_in(d.path(), policy());
    assert_eq!(bigs(&again), want, "reopened");
}

#[test]
fn a_crash_between_the_value_log_and_redbs_commit_replays_the_journal_and_reads_the_same() {
    let d = tempfile::tempdir().unwrap();
    let after = tempfile::tempdir().unwrap();
    let db = open_in(d.path(), policy());
    put_bigs(&db, &[(1, 700), (2, 800)]);
    db.apply_now().unwrap();
    let taken = values_len(d.path());
    assert_eq!(taken, 1500);
    put_bigs(&db, &[(2, 900), (3, 1100)]);
    let want = bigs(&db);
    crash_copy(d.path(), after.path());
    drop(db);
    // The applier had written the next values into the log when the process died, before
    // redb's commit: bytes no pointer on disk reaches.
    append_to_log(after.path(), &[0xee; 2000]);
    let again = open_in(after.path(), policy());
    assert_eq!(bigs(&again), want, "replayed");
    assert_eq!(
        values_len(after.path()),
        taken + 2000,
        "the untaken bytes left as they were (the replay writes into redb whole)"
    );
    put_bigs(&again, &[(4, 1200)]);
    again.apply_now().unwrap();
    assert_eq!(
        values_len(after.path()),
        taken + 2000 + 1200,
        "appended after them"
    );
    let mut want = want;
    want.push((4, big(4, 1200)));
    assert_eq!(bigs(&again), want, "taken");
    drop(again);
    let third = open_in(after.path(), policy());
    assert_eq!(bigs(&third), want, "reopened");
}

#[test]
fn a_value_log_shorter_than_redb_says_is_refused_at_open_and_left_as_it_is() {
    let d = tempfile::tempdir().unwrap();
    let db = open_in(d.path(), policy());
    put_bigs(&db, &[(1, 700)]);
    db.apply_now().unwrap();
    drop(db);
    let path = d.path().join(values::FILE);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(699).unwrap();
    drop(f);
    let redb = redb::Database::create(d.path().join("store.redb")).unwrap();
    let e = Database::open(redb, d.path(), &specs(), policy())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("holds 699 bytes"), "{e}");
    assert!(e.contains("up to byte 700"), "{e}");
    assert!(e.contains("Restore the data directory"), "{e}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 699);
}

/// Reads by range while the applier takes commits: a pointer redb shows a read is never past
/// what the log lets it reach (a read that found one would fail as damage).
#[test]
fn range_reads_while_values_move_into_the_log_see_every_value_whole() {
    const COMMITS: u64 = 150;
    let d = tempfile::tempdir().unwrap();
    let mut p = policy();
    p.always = false;
    let db = open_in(d.path(), p);
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for k in 0..COMMITS {
                put_bigs(&db, &[(k, 100 + k as usize)]);
                db.apply_now().unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Release);
        });
        let mut reads = 0;
        while !done.load(std::sync::atomic::Ordering::Acquire) || reads == 0 {
            let rtx = db.begin_read().unwrap();
            if let Ok(t) = rtx.open_table(BIGS) {
                for e in t.range(0u64..).unwrap() {
                    let (k, v) = e.unwrap();
                    let k = k.value();
                    assert_eq!(v.value(), big(k, 100 + k as usize), "row {k}");
                }
            }
            reads += 1;
        }
    });
    assert_eq!(bigs(&db).len(), COMMITS as usize);
}

/// A value that would read as a pointer: through the journal it is kept in the log like a
/// large one, and read back as it was; straight into the file it is refused, never stored
/// as a pointer to bytes it is not.
#[test]
fn a_value_that_reads_as_a_pointer_is_never_stored_as_one() {
    let d = tempfile::tempdir().unwrap();
    let db = open_in(d.path(), policy());
    let mut fake = b"\0BWv".to_vec();
    fake.extend_from_slice(&[0u8; 16]);
    assert!(values::is_pointer(&fake));
    let tx = db.begin_write_direct().unwrap();
    let e = tx
        .open_table(BIGS)
        .unwrap()
        .insert(1u64, fake.as_slice())
        .unwrap_err()
        .to_string();
    assert!(e.contains("reads as a pointer into the value log"), "{e}");
    // Not a spilled table: stored as it is.
    tx.open_table(NUMS)
        .unwrap()
        .insert(1u64, fake.as_slice())
        .unwrap();
    tx.commit().unwrap();
    put(&db, |tx| {
        tx.open_table(BIGS)
            .unwrap()
            .insert(2u64, fake.as_slice())
            .unwrap();
    });
    // Replayed after a crash (the replay writes records whole): still not stored as a pointer.
    let after = tempfile::tempdir().unwrap();
    crash_copy(d.path(), after.path());
    let replayed = open_in(after.path(), policy());
    assert_eq!(bigs(&replayed), vec![(2, fake.clone())]);
    drop(replayed);
    db.apply_now().unwrap();
    assert_eq!(values_len(d.path()), 20, "in the log, small as it is");
    assert_eq!(bigs(&db), vec![(2, fake.clone())]);
    assert_eq!(nums(&db).len(), 1);
    let rtx = db.begin_read().unwrap();
    let n = rtx.open_table(NUMS).unwrap();
    assert_eq!(n.get(1u64).unwrap().unwrap().value(), fake.as_slice());
}

/// Why a commit of one row is refused.
fn refused_commit(db: &Database) -> String {
    let tx = db.begin_write().unwrap();
    tx.open_table(NUMS)
        .unwrap()
        .insert(1u64, &b"x"[..])
        .unwrap();
    tx.commit().unwrap_err().to_string()
}

/// Waits up to 20 s for `done`.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}: never");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// At each sync of redb's file made after `log` is set (the syncs at open come before): what
/// the value log had written and not synced, and when.
type Seen = Arc<std::sync::Mutex<Vec<(u64, std::time::Instant)>>>;
type LogSlot = Arc<std::sync::Mutex<Option<Arc<values::ValueLog>>>>;

fn unsynced_at_syncs(seen: &Seen) -> Vec<u64> {
    seen.lock().unwrap().iter().map(|(u, _)| *u).collect()
}

fn interval_policy(log: &LogSlot, seen: &Seen) -> Policy {
    let (log, seen) = (log.clone(), seen.clone());
    Policy {
        always: false,
        sync_base: Arc::new(move || {
            if let Some(v) = &*log.lock().unwrap() {
                seen.lock()
                    .unwrap()
                    .push((v.unsynced(), std::time::Instant::now()));
            }
            Ok(())
        }),
        ..policy()
    }
}

/// On the store's own `interval` backend, as a node opens it: redb's commits do not sync its
/// file, so the syncs `policy.sync_base` makes (and the backend's last, at close) are the
/// only ones.
fn open_interval(dir: &Path, policy: Policy) -> Database {
    use super::super::sync;
    let path = dir.join("store.redb");
    let backend = sync::open_backend(
        dir,
        &path,
        sync::SyncMode::Interval(Duration::from_secs(3600)),
        &sync::SyncFailure::default(),
        false,
    )
    .unwrap();
    let redb = redb::Database::builder()
        .create_with_backend(backend)
        .unwrap();
    Database::open(redb, dir, &specs(), policy).unwrap()
}

/// [`open_interval`] with [`interval_policy`] as `tune` changes it, recording from here on (the
/// syncs at open are not): the database, its value log, and what each sync of redb's file
/// found unsynced.
fn open_recording(
    dir: &Path,
    tune: impl FnOnce(Policy) -> Policy,
) -> (Database, Arc<values::ValueLog>, Seen) {
    let (slot, seen): (LogSlot, Seen) = Default::default();
    let db = open_interval(dir, tune(interval_policy(&slot, &seen)));
    let log = db.inner.values.clone();
    *slot.lock().unwrap() = Some(log.clone());
    (db, log, seen)
}

/// With `interval`, the applier does not sync the value log for each apply (about fifty a
/// second under load, each a flush of the disk's cache): the log is synced just before each
/// sync of redb's file, with no apply between, and at close.
#[test]
fn with_interval_sync_the_log_is_synced_just_before_redbs_file_and_at_close_not_per_apply() {
    let d = tempfile::tempdir().unwrap();
    let (db, log, seen) = open_recording(d.path(), |p| Policy {
        // Closed by one big commit, not by ten small ones.
        rotate_bytes: 50_000,
        ..p
    });
    for k in 0..10 {
        put_bigs(&db, &[(k, 1000)]);
        db.apply_now().unwrap();
    }
    assert_eq!(log.syncs(), 0, "no sync per apply");
    assert_eq!(log.unsynced(), 10_000);
    assert!(
        seen.lock().unwrap().is_empty(),
        "redb's file not synced yet"
    );
    // Closes the segment: the apply that takes it syncs redb's file before deleting it, the
    // log first.
    put_bigs(&db, &[(10, 60_000)]);
    db.apply_now().unwrap();
    assert_eq!(
        unsynced_at_syncs(&seen),
        vec![0],
        "the log was synced first"
    );
    assert_eq!((log.syncs(), log.unsynced()), (1, 0));
    assert_eq!(journal::segments(d.path()).unwrap().len(), 1);
    // Taken since the last sync, then closed: the close syncs the log (redb's file is the
    // backend's to sync, after this).
    put_bigs(&db, &[(11, 2000)]);
    db.apply_now().unwrap();
    assert_eq!(log.unsynced(), 2000);
    db.close();
    assert_eq!((log.syncs(), log.unsynced()), (2, 0), "synced at close");
    let mut want: Vec<(u64, Vec<u8>)> = (0..10).map(|k| (k, big(k, 1000))).collect();
    want.push((10, big(10, 60_000)));
    want.push((11, big(11, 2000)));
    let db = open_in(d.path(), policy());
    assert_eq!(bigs(&db), want, "everything reads back");
}

/// With `interval`, the applier also syncs redb's file once an interval while it is written
/// to (a quiet node; the store's opening transaction, which writes straight into redb), the
/// log first, and not while nothing is written.
#[test]
fn with_interval_sync_the_applier_syncs_a_written_file_once_an_interval_and_a_quiet_one_never() {
    let d = tempfile::tempdir().unwrap();
    let (db, log, seen) = open_recording(d.path(), |p| Policy {
        apply_every: Duration::from_millis(5),
        sync_every: Some(Duration::from_millis(100)),
        ..p
    });
    let syncs = || seen.lock().unwrap().len();
    put_bigs(&db, &[(1, 3000)]);
    wait_for("a sync after the apply", || syncs() == 1);
    assert_eq!(unsynced_at_syncs(&seen), vec![0], "the log first");
    assert_eq!(log.unsynced(), 0);
    // Nothing written: no sync, interval after interval.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(syncs(), 1, "a quiet file is not synced");
    // A direct commit writes redb's file without the applier: synced all the same.
    let tx = db.begin_write_direct().unwrap();
    tx.open_table(NUMS)
        .unwrap()
        .insert(1u64, &b"x"[..])
        .unwrap();
    tx.commit().unwrap();
    wait_for("a sync after a direct commit", || syncs() == 2);
    // Written again at once: synced an interval after the last sync, not sooner.
    put_bigs(&db, &[(2, 3000)]);
    wait_for("a sync after the second apply", || syncs() == 3);
    assert_eq!(unsynced_at_syncs(&seen), vec![0, 0, 0]);
    let at: Vec<std::time::Instant> = seen.lock().unwrap().iter().map(|(_, t)| *t).collect();
    for w in at.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(100),
            "two syncs {:?} apart",
            w[1] - w[0]
        );
    }
}

/// A failed sync of the value log at close is reported as any failed sync (in a node, the
/// store's backend then leaves redb's file unsynced and the close unrecorded).
#[test]
fn a_failed_sync_of_the_value_log_at_close_is_reported() {
    let d = tempfile::tempdir().unwrap();
    let reported = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let r = reported.clone();
    let db = open_interval(
        d.path(),
        Policy {
            always: false,
            on_sync_failure: Arc::new(move |e| r.lock().unwrap().push(e.to_string())),
            ..policy()
        },
    );
    let log = db.inner.values.clone();
    put_bigs(&db, &[(1, 2000)]);
    db.apply_now().unwrap();
    log.fail_syncs
        .store(true, std::sync::atomic::Ordering::Relaxed);
    db.close();
    let reported = reported.lock().unwrap();
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert!(reported[0].contains(values::FILE), "{reported:?}");
}

/// A failed sync of the value log may have lost pages redb's file points to: it fails the
/// store (reported as a failed sync, commits fail), and nothing is tried again, even once the
/// disk would take it: redb's file is not synced, its segments are not deleted, and the close
/// syncs nothing.
#[test]
fn a_failed_sync_of_the_value_log_fails_the_store_for_good_and_redbs_file_is_never_synced_after() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let d = tempfile::tempdir().unwrap();
    let base = Arc::new(AtomicUsize::new(0));
    let reported = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (b, r) = (base.clone(), reported.clone());
    let db = open_interval(
        d.path(),
        Policy {
            always: false,
            rotate_bytes: 1000,
            sync_base: Arc::new(move || {
                b.fetch_add(1, SeqCst);
                Ok(())
            }),
            on_sync_failure: Arc::new(move |e| r.lock().unwrap().push(e.to_string())),
            ..policy()
        },
    );
    let log = db.inner.values.clone();
    let at_open = base.load(SeqCst);
    put_bigs(&db, &[(1, 2000)]);
    log.fail_syncs
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let e = db.apply_now().unwrap_err().to_string();
    assert!(e.contains(values::FILE), "{e}");
    assert_eq!(
        reported.lock().unwrap().len(),
        1,
        "reported as a failed sync"
    );
    assert_eq!(base.load(SeqCst), at_open, "redb's file not synced");
    assert_eq!(
        journal::segments(d.path()).unwrap().len(),
        2,
        "the closed segment is kept"
    );
    let e = refused_commit(&db);
    assert!(e.contains("a sync of the store failed"), "{e}");
    log.fail_syncs
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let syncs = log.syncs();
    assert!(db.apply_now().is_err(), "not tried again");
    db.close();
    assert_eq!(
        log.syncs(),
        syncs,
        "no sync of the log again, at close either"
    );
    assert_eq!(base.load(SeqCst), at_open);
    assert_eq!(reported.lock().unwrap().len(), 1);
    assert_eq!(journal::segments(d.path()).unwrap().len(), 2);
}

/// After a failed sync of the value log the applier's refusals are not counted as failures of
/// the journal, whose syncer must go on: it alone holds what was acknowledged since the last
/// sync. Commits fail, saying why.
#[test]
fn after_a_failed_sync_of_the_value_log_the_journal_is_not_failed_with_it() {
    let d = tempfile::tempdir().unwrap();
    let db = open_interval(
        d.path(),
        Policy {
            always: false,
            rotate_bytes: 1000,
            ..policy()
        },
    );
    put_bigs(&db, &[(1, 2000)]);
    db.inner
        .values
        .fail_syncs
        .store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(db.apply_now().is_err());
    for _ in 0..MAX_APPLY_FAILURES + 5 {
        db.inner.apply_step();
    }
    assert!(!db.journal_failed(), "the journal's syncer goes on");
    let e = refused_commit(&db);
    assert!(e.contains("a sync of the store failed"), "{e}");
    assert!(e.contains("restart the node"), "{e}");
}

/// Reads share one snapshot of redb's file, with the tables opened in it, until redb commits
/// again: an apply with the journal, any commit without. A read begun after that commit sees
/// what it took into redb (the overlay no longer has it); a read begun before still sees
/// what it saw.
#[test]
fn reads_share_redbs_snapshot_until_redb_commits_again() {
    for journal in [true, false] {
        let d = tempfile::tempdir().unwrap();
        let db = open_either(d.path(), journal, policy());
        put_num(&db, 1, b"one");
        let first = db.begin_read().unwrap();
        let again = db.begin_read().unwrap();
        assert!(
            Arc::ptr_eq(&first.base, &again.base),
            "journal {journal}: two reads with no commit to redb between took two snapshots"
        );
        let (a, b) = (
            first.open_table(NUMS).unwrap(),
            again.open_table(NUMS).unwrap(),
        );
        match (&a.base, &b.base) {
            (Some(a), Some(b)) => assert!(Arc::ptr_eq(a, b), "the table was opened twice"),
            (None, None) => assert!(journal, "redb has the row committed straight into it"),
            _ => {
                panic!("journal {journal}: one snapshot, two answers to whether redb has the table")
            }
        }
        if journal {
            db.apply_now().unwrap();
        }
        put_num(&db, 2, b"two");
        if journal {
            db.apply_now().unwrap();
            assert_eq!(db.pending_commits(), 0);
        }
        assert_eq!(
            nums(&db),
            [(1, "one".to_string()), (2, "two".to_string())],
            "journal {journal}: a read after redb's commit did not see it"
        );
        assert!(!Arc::ptr_eq(&first.base, &db.begin_read().unwrap().base));
        assert_eq!(
            a.len().unwrap(),
            1,
            "journal {journal}: a read begun before the commits changed under it"
        );
    }
}

/// Reads racing commits and applies from other threads: the rows a read sees never fall in
/// number, and a read begun after a commit returned sees it. A snapshot of redb dropped at
/// the wrong moment (before the apply's commit, apart from the runs the apply drops, or
/// before a direct commit instead of after it) shows here as a read that goes back.
#[test]
fn reads_racing_commits_and_applies_never_go_back() {
    use std::sync::atomic::{AtomicBool, Ordering};
    fn rows(db: &Database) -> u64 {
        let rtx = db.begin_read().unwrap();
        match rtx.open_table(NUMS) {
            Ok(t) => t.len().unwrap(),
            Err(redb::TableError::TableDoesNotExist(_)) => 0,
            Err(e) => panic!("{e}"),
        }
    }
    /// Stops the readers however the writer ends (a failed assertion included).
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    // Applied as often as the applier can, with no sync in the way.
    let racing = Policy {
        always: false,
        apply_every: Duration::from_millis(1),
        ..policy()
    };
    for journal in [true, false] {
        let d = tempfile::tempdir().unwrap();
        let db = open_either(d.path(), journal, racing.clone());
        let stop = AtomicBool::new(false);
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    let mut seen = 0;
                    while !stop.load(Ordering::Acquire) {
                        let n = rows(&db);
                        assert!(
                            n >= seen,
                            "journal {journal}: a read saw {n} rows after an earlier one saw {seen}"
                        );
                        seen = n;
                    }
                });
            }
            let _stop = Stop(&stop);
            let mut k = 0;
            while k < 400 && std::time::Instant::now() < deadline {
                k += 1;
                put_num(&db, k, b"x");
                let n = rows(&db);
                assert!(
                    n >= k,
                    "journal {journal}: commit {k} returned, and a read then saw {n} rows"
                );
            }
        });
    }
}
