//! What one store commit of a delivery costs in redb (the node's store) and in fjall (an LSM
//! tree with a journal), for issue #12. A measurement, not a test; see bench/README.md.
//!
//! Each transaction follows what a receiving node's writer does for one Deliver call
//! (node/src/store/writer.rs): read the next sequence number; per message, look the id up
//! (the duplicate check), then insert a 1.2 KB record under its sequence number and the id
//! index entry; look the batch signature's digest up and insert the 3,309-byte signature; write
//! the transaction's audit records as one new block (250 bytes a message); write the next
//! sequence number and the audit head. redb opens all 19 tables, as the node's writer does in
//! every transaction. After each commit the newest message is read back.
//!
//! Both engines hand a commit to the kernel (`pwrite`, `write`) before it returns, so what it
//! wrote survives `kill -9`. `--sync always` adds one `fdatasync` per commit (the node's
//! default); `--sync interval` has a thread sync the store once a second instead (the node's
//! `[store] sync = "interval"`), in both engines.
//!
//! Run without arguments for the whole comparison: every (engine, messages per commit) case
//! in its own process, alternating, three rounds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redb::{ReadableTable, TableDefinition};

const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
const IDS: TableDefinition<&[u8], u64> = TableDefinition::new("message_ids");
const SIGNATURES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("signatures");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const AUDIT_META: TableDefinition<&str, &[u8]> = TableDefinition::new("audit_meta");
/// The node's other tables, which its writer opens in every transaction too.
const OTHER_TABLES: [&str; 13] = [
    "outbox_blocks",
    "case_messages",
    "stix_objects",
    "counters",
    "keys",
    "cursors",
    "rejections",
    "cluster_log",
    "directory",
    "message_annotations",
    "api_tokens",
    "relay_queue",
    "relay_ids",
];

/// The node's redb page cache (`store::CACHE_BYTES`); fjall's block cache gets the same.
const CACHE_BYTES: usize = 48 << 20;
/// fjall's memtable limit per keyspace (its default is 64 MiB).
const MEMTABLE_BYTES: u64 = 8 << 20;
const RECORD_BYTES: usize = 1_200;
const SIGNATURE_BYTES: usize = 3_309;
const AUDIT_ROW_BYTES: usize = 250;
/// The most messages one measured commit may carry.
const MAX_PER_COMMIT: u64 = 1_024;
/// How often `--sync interval` syncs, as the node's default `sync_interval_ms`.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// `settle`: background threads count as idle below 1 ms of CPU in 100 ms; at most 30 s.
const SETTLE_STEP: Duration = Duration::from_millis(100);
const SETTLE_IDLE_NS: u64 = 1_000_000;
const SETTLE_MAX: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq)]
enum Engine {
    Redb,
    Fjall,
}

impl Engine {
    const ALL: [Engine; 2] = [Engine::Redb, Engine::Fjall];

    fn name(self) -> &'static str {
        match self {
            Engine::Redb => "redb",
            Engine::Fjall => "fjall",
        }
    }
}

/// One case: an engine, a sync mode, messages per commit, messages stored before the
/// measured commits (in commits of eight), how many commits are measured, and where.
struct Case {
    engine: Engine,
    always: bool,
    per_commit: u64,
    stored: u64,
    commits: u64,
    dir: PathBuf,
}

/// What one commit cost: wall time and CPU time of the committing thread, and CPU time of
/// the whole process (µs), bytes handed to `write`/`pwrite` (KiB), all per commit; and how
/// long the background threads took to settle after the last commit.
struct Cost {
    wall_us: f64,
    thread_cpu_us: f64,
    process_cpu_us: f64,
    written_kib: f64,
    settled_s: f64,
    settle_capped: bool,
}

fn cpu_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The number after `key` in a `/proc/self` file of `key: value [unit]` lines; 0 if absent.
fn proc_self(file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/self/{file}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Bytes this process has passed to `write`-family calls.
fn bytes_written() -> u64 {
    proc_self("io", "wchar")
}

/// Deterministic bytes that do not compress (the signatures and records they stand for don't).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The id-index key of message `seq`: a UUIDv7-like id (time-ordered prefix) and the origin.
fn id_key(seq: u64) -> Vec<u8> {
    let mut k = seq.to_be_bytes().to_vec();
    k.extend_from_slice(&noise(8, seq));
    k.extend_from_slice(b"pub-a");
    k
}

/// How many distinct records and signatures the commits cycle through: values as far apart as
/// this share no 4 KiB block, so neither engine can compress one against another.
const POOL: usize = 1_024;

/// `POOL` distinct values of `len` bytes.
fn pool(len: usize, seed: u64) -> Vec<Vec<u8>> {
    (0..POOL as u64).map(|i| noise(len, seed + i)).collect()
}

/// Commit `c`'s batch signature digest: random, as a SHA-256 is.
fn digest(c: u64) -> Vec<u8> {
    noise(32, c + (1 << 40))
}

/// Times `commits` calls of `commit` (each given its commit number and message count), after
/// `stored` messages were written in commits of eight and the background work that left
/// settled; the process CPU runs on until the measured commits' background work settles too.
/// `finish` runs after the last measured commit, inside the window (it ends the interval sync
/// with a last sync); `idle` says whether the engine has background work outstanding. The
/// first failed commit ends it with its error.
fn measure(
    case: &Case,
    mut commit: impl FnMut(u64, u64) -> Result<(), Error>,
    finish: impl FnOnce(),
    idle: impl Fn() -> bool,
) -> Result<Cost, Error> {
    let prefill = case.stored / 8;
    for c in 0..prefill {
        commit(c, 8)?;
    }
    let prefill_settled = settle(&idle);
    let (t0, th0, pr0, w0) = (
        Instant::now(),
        cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID),
        cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID),
        bytes_written(),
    );
    for c in prefill..prefill + case.commits {
        commit(c, case.per_commit)?;
    }
    let wall = t0.elapsed();
    let thread_cpu = cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID) - th0;
    let settling = Instant::now();
    finish();
    let settle_capped = !settle(&idle) || !prefill_settled;
    let n = case.commits as f64;
    Ok(Cost {
        wall_us: wall.as_nanos() as f64 / n / 1e3,
        thread_cpu_us: thread_cpu as f64 / n / 1e3,
        process_cpu_us: (cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID) - pr0) as f64 / n / 1e3,
        written_kib: bytes_written().saturating_sub(w0) as f64 / n / 1024.0,
        settled_s: settling.elapsed().as_secs_f64(),
        settle_capped,
    })
}

/// Waits until the engine says it has no background work outstanding (`idle`) and the
/// process's threads are idle too (less than `SETTLE_IDLE_NS` of CPU in a `SETTLE_STEP`: a
/// thread blocked in `fsync` passes that, `idle` does not), for at most `SETTLE_MAX`. False
/// when it gave up at the limit.
fn settle(idle: &impl Fn() -> bool) -> bool {
    let until = Instant::now() + SETTLE_MAX;
    let mut before = cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID);
    while Instant::now() < until {
        std::thread::sleep(SETTLE_STEP);
        let now = cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID);
        if now - before < SETTLE_IDLE_NS && idle() {
            return true;
        }
        before = now;
    }
    false
}

/// A thread that calls `sync` every `SYNC_EVERY` until dropped (`--sync interval`).
struct Syncer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    fn start(sync: impl Fn() + Send + 'static) -> Syncer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::park_timeout(SYNC_EVERY);
                sync();
            }
        });
        Syncer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// redb's file backend; with `--sync interval` its `sync_data` is left to the `Syncer`.
#[derive(Debug)]
struct Backend {
    file: redb::backends::FileBackend,
    always: bool,
}

impl redb::StorageBackend for Backend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.file.len()
    }
    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, std::io::Error> {
        self.file.read(offset, len)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.file.set_len(len)
    }
    fn sync_data(&self, eventual: bool) -> Result<(), std::io::Error> {
        if self.always {
            self.file.sync_data(eventual)
        } else {
            Ok(())
        }
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.file.write(offset, data)
    }
}

type Error = Box<dyn std::error::Error>;

fn run_redb(case: &Case) -> Result<Cost, Error> {
    let path = case.dir.join("store.redb");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    let for_syncer = file.try_clone()?;
    let backend = Backend {
        file: redb::backends::FileBackend::new(file)?,
        always: case.always,
    };
    let db = redb::Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create_with_backend(backend)?;
    let syncer = (!case.always).then(|| {
        Syncer::start(move || {
            let _ = for_syncer.sync_data();
        })
    });
    let others: Vec<TableDefinition<&[u8], &[u8]>> = OTHER_TABLES
        .iter()
        .map(|n| TableDefinition::new(n))
        .collect();
    let records = pool(RECORD_BYTES, 1 << 20);
    let signatures_pool = pool(SIGNATURE_BYTES, 1 << 30);
    let mut audit_seq = 1u64;
    let write = |c: u64, n: u64| -> Result<(), Error> {
        let w = db.begin_write()?;
        let newest;
        {
            let mut meta = w.open_table(META)?;
            let mut messages = w.open_table(MESSAGES)?;
            let mut ids = w.open_table(IDS)?;
            let mut signatures = w.open_table(SIGNATURES)?;
            let mut audit = w.open_table(AUDIT)?;
            let mut audit_meta = w.open_table(AUDIT_META)?;
            let _others = others
                .iter()
                .map(|t| w.open_table(*t))
                .collect::<Result<Vec<_>, _>>()?;
            let mut seq = meta.get("next_seq")?.map_or(1, |v| v.value());
            for _ in 0..n {
                let id = id_key(seq);
                if ids.get(id.as_slice())?.is_some() {
                    return Err("a fresh id was found in the index".into());
                }
                messages.insert(seq, records[seq as usize % POOL].as_slice())?;
                ids.insert(id.as_slice(), seq)?;
                seq += 1;
            }
            let d = digest(c);
            if signatures.get(d.as_slice())?.is_none() {
                signatures.insert(d.as_slice(), signatures_pool[c as usize % POOL].as_slice())?;
            }
            audit.insert(audit_seq, noise(AUDIT_ROW_BYTES * n as usize, c).as_slice())?;
            audit_seq += n;
            meta.insert("next_seq", seq)?;
            audit_meta.insert("head", noise(40, c).as_slice())?;
            newest = seq - 1;
        }
        w.commit()?;
        let r = db.begin_read()?;
        let found = r
            .open_table(MESSAGES)?
            .get(newest)?
            .map(|v| v.value().len());
        if found != Some(RECORD_BYTES) {
            return Err(format!("message {newest} did not read back after its commit").into());
        }
        Ok(())
    };
    // redb does nothing in the background: idle whenever it is not committing.
    measure(case, write, move || drop(syncer), || true).map_err(|e| format!("redb: {e}").into())
}

fn run_fjall(case: &Case) -> Result<Cost, Error> {
    let db = fjall::Database::builder(case.dir.join("store.fjall"))
        .cache_size(CACHE_BYTES as u64)
        .open()?;
    let opts = || fjall::KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES);
    let messages = db.keyspace("messages", opts)?;
    let ids = db.keyspace("message_ids", opts)?;
    let signatures = db.keyspace("signatures", opts)?;
    let audit = db.keyspace("audit", opts)?;
    let meta = db.keyspace("meta", opts)?;
    let syncer = (!case.always).then(|| {
        let db = db.clone();
        Syncer::start(move || {
            let _ = db.persist(fjall::PersistMode::SyncData);
        })
    });
    // Every batch reaches the kernel (`write`) before its commit returns: `Buffer` flushes
    // the journal's buffer; `SyncData` also syncs it.
    let mode = if case.always {
        fjall::PersistMode::SyncData
    } else {
        fjall::PersistMode::Buffer
    };
    let records = pool(RECORD_BYTES, 1 << 20);
    let signatures_pool = pool(SIGNATURE_BYTES, 1 << 30);
    let mut audit_seq = 1u64;
    let write = |c: u64, n: u64| -> Result<(), Error> {
        let mut seq = match meta.get("next_seq")? {
            Some(v) => u64::from_be_bytes(v.as_ref().try_into()?),
            None => 1,
        };
        let mut b = db.batch().durability(Some(mode));
        for _ in 0..n {
            let id = id_key(seq);
            if ids.get(&id)?.is_some() {
                return Err("a fresh id was found in the index".into());
            }
            b.insert(
                &messages,
                seq.to_be_bytes(),
                records[seq as usize % POOL].as_slice(),
            );
            b.insert(&ids, id, seq.to_be_bytes());
            seq += 1;
        }
        let d = digest(c);
        if signatures.get(&d)?.is_none() {
            b.insert(
                &signatures,
                d,
                signatures_pool[c as usize % POOL].as_slice(),
            );
        }
        b.insert(
            &audit,
            audit_seq.to_be_bytes(),
            noise(AUDIT_ROW_BYTES * n as usize, c),
        );
        audit_seq += n;
        b.insert(&meta, "next_seq", seq.to_be_bytes());
        b.insert(&meta, "audit_head", noise(40, c));
        b.commit()?;
        let newest = seq - 1;
        if messages.get(newest.to_be_bytes())?.map(|v| v.len()) != Some(RECORD_BYTES) {
            return Err(format!("message {newest} did not read back after its commit").into());
        }
        Ok(())
    };
    let idle = || db.outstanding_flushes() == 0 && db.active_compactions() == 0;
    measure(case, write, move || drop(syncer), idle).map_err(|e| format!("fjall: {e}").into())
}

/// Bytes allocated on disk under `dir`, recursively (not sparse lengths: fjall preallocates
/// its journal).
fn bytes_under(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => bytes_under(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

fn peak_rss_kib() -> u64 {
    proc_self("status", "VmHWM")
}

/// Removes the case's directory however the case ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The figures one case prints, tab-separated, in this order.
const FIELDS: usize = 8;

/// One case in this process; prints its figures on one line.
fn one(case: &Case) -> Result<(), Error> {
    std::fs::create_dir(&case.dir).map_err(|e| {
        format!(
            "could not make {} for the case ({e}): it must not exist yet, and its parent must",
            case.dir.display()
        )
    })?;
    let scratch = Scratch(case.dir.clone());
    let cost = match case.engine {
        Engine::Redb => run_redb(case)?,
        Engine::Fjall => run_fjall(case)?,
    };
    let disk = bytes_under(&scratch.0);
    println!(
        "{:.1}\t{:.1}\t{:.1}\t{:.1}\t{}\t{}\t{:.1}\t{}",
        cost.wall_us,
        cost.thread_cpu_us,
        cost.process_cpu_us,
        cost.written_kib,
        peak_rss_kib(),
        disk,
        cost.settled_s,
        u8::from(cost.settle_capped)
    );
    Ok(())
}

const USAGE: &str = "usage: bluewire-store-engines [--sync interval|always] [--stored N] [--commits N] [--rounds N] [--dir DIR]
       bluewire-store-engines --one redb|fjall PER_COMMIT [same options]

Every (engine, messages per commit 1 and 3) case runs in its own process, alternating, for
--rounds rounds. Defaults: --sync interval --stored 200000 --commits 20000 --rounds 3, --dir
the system's temporary directory (each case makes and removes a directory of its own there;
use a directory on the disk you mean to measure, not a tmpfs).";

/// The command line, checked.
struct Args {
    always: bool,
    stored: u64,
    commits: u64,
    rounds: u64,
    dir: PathBuf,
    one: Option<(Engine, u64)>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args {
        always: false,
        stored: 200_000,
        commits: 20_000,
        rounds: 3,
        dir: std::env::temp_dir(),
        one: None,
    };
    let positive = |name: &str, v: Option<&String>| -> Result<u64, String> {
        match v.map(|v| v.parse::<u64>()) {
            Some(Ok(n)) if n > 0 => Ok(n),
            Some(_) => Err(format!(
                "{name} takes a whole number above 0, not {:?}",
                v.map_or("", String::as_str)
            )),
            None => Err(format!("{name} needs a value")),
        }
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--sync" => match it.next().map(String::as_str) {
                Some(s @ ("interval" | "always")) => a.always = s == "always",
                other => {
                    return Err(format!(
                        "--sync is interval or always, not {:?}",
                        other.unwrap_or("")
                    ));
                }
            },
            "--stored" => {
                a.stored = positive("--stored", it.next())?;
                if !a.stored.is_multiple_of(8) {
                    return Err(format!(
                        "--stored is written in commits of eight: give a multiple of 8, not {}",
                        a.stored
                    ));
                }
            }
            "--commits" => a.commits = positive("--commits", it.next())?,
            "--rounds" => a.rounds = positive("--rounds", it.next())?,
            "--dir" => match it.next() {
                Some(d) => a.dir = PathBuf::from(d),
                None => return Err("--dir needs a directory".into()),
            },
            "--one" => {
                let name = it.next().map_or("", String::as_str);
                let Some(engine) = Engine::ALL.into_iter().find(|e| e.name() == name) else {
                    return Err(format!("--one takes redb or fjall, not {name:?}"));
                };
                let per = positive("--one's messages per commit", it.next())?;
                if per > MAX_PER_COMMIT {
                    return Err(format!(
                        "--one's messages per commit is at most {MAX_PER_COMMIT} (a Deliver call \
                         carries at most limits.max_batch), not {per}"
                    ));
                }
                a.one = Some((engine, per));
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(a)
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return std::process::ExitCode::SUCCESS;
    }
    let result = parse(&args)
        .map_err(|e| format!("{e}\n\n{USAGE}").into())
        .and_then(|a| run(&a));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(a: &Args) -> Result<(), Error> {
    if let Some((engine, per)) = &a.one {
        return one(&Case {
            engine: *engine,
            always: a.always,
            per_commit: *per,
            stored: a.stored,
            commits: a.commits,
            dir: a
                .dir
                .join(format!("bluewire-store-engines-{}", std::process::id())),
        });
    }
    let me = std::env::current_exe()?;
    let sync = if a.always { "always" } else { "interval" };
    println!(
        "store commit cost per commit ({} commits after {} messages stored; sync {}; each case its own process)",
        a.commits, a.stored, sync
    );
    println!(
        "round  msgs/commit  engine  wall µs  thread CPU µs  process CPU µs  written KiB  peak RSS MiB  disk MiB"
    );
    let mut case_no = 0u64;
    for round in 1..=a.rounds {
        for per in [1u64, 3] {
            // Alternate which engine goes first, so drift on a shared machine hits both.
            case_no += 1;
            let mut order = Engine::ALL;
            if !case_no.is_multiple_of(2) {
                order.reverse();
            }
            let mut rows = Vec::new();
            for engine in order {
                let out = Command::new(&me)
                    .args(["--one", engine.name(), &per.to_string(), "--sync", sync])
                    .args(["--stored", &a.stored.to_string()])
                    .args(["--commits", &a.commits.to_string()])
                    .arg("--dir")
                    .arg(&a.dir)
                    .output()?;
                let stdout = String::from_utf8_lossy(&out.stdout);
                let f: Vec<f64> = stdout
                    .trim()
                    .split('\t')
                    .filter_map(|v| v.parse().ok())
                    .collect();
                if !out.status.success() || f.len() != FIELDS {
                    return Err(format!(
                        "the {} case ({per} per commit) failed ({}): {} {}",
                        engine.name(),
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim(),
                        stdout.trim()
                    )
                    .into());
                }
                rows.push((engine, f));
            }
            rows.sort_by_key(|(e, _)| *e != Engine::Redb);
            for (engine, f) in &rows {
                println!(
                    "{round:>5}  {per:>11}  {:<6} {:>8.1}  {:>13.1}  {:>14.1}  {:>11.1}  {:>12.0}  {:>8.0}{}",
                    engine.name(),
                    f[0],
                    f[1],
                    f[2],
                    f[3],
                    f[4] / 1024.0,
                    f[5] / 1_048_576.0,
                    if f[7] > 0.0 {
                        format!(
                            "  (a wait for background work hit its {} s limit: process CPU \
                             may be short; the last wait took {:.0} s)",
                            SETTLE_MAX.as_secs(),
                            f[6]
                        )
                    } else {
                        String::new()
                    }
                );
            }
            println!(
                "{:>5}  {:>11}  process CPU, fjall / redb: {:.2}",
                "",
                "",
                rows[1].1[2] / rows[0].1[2]
            );
        }
    }
    Ok(())
}
