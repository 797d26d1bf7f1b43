//! What one store commit of a delivery costs in redb (the node's store) and in fjall (an LSM
//! tree with a journal), for issue #12. A measurement, not a test; see bench/README.md.
//!
//! Each commit writes what a receiving node's commit writes for one Deliver call: per message
//! a ~1.2 KB record keyed by sequence number and an id-index entry; once per commit a 3,309-byte
//! batch signature under a random 32-byte digest, the audit block rewritten (it grows by
//! ~250 bytes per message until eight commits fill it), the next sequence number and the audit
//! head. After each commit the newest message is read back, as the feed does.
//!
//! Both engines keep what a commit wrote through `kill -9` when the commit returns: redb's
//! pages and fjall's journal entry are handed to the kernel (`pwrite`/`write`) before it
//! returns. `--sync interval` leaves `fdatasync` out (the node's `[store] sync = "interval"`
//! does it once a second, off the commit path); `--sync always` does one per commit.
//!
//! Run without arguments for the whole comparison: every (engine, messages per commit) case
//! in its own process, alternating, three rounds.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use redb::TableDefinition;

const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
const IDS: TableDefinition<&[u8], u64> = TableDefinition::new("message_ids");
const SIGNATURES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("signatures");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const AUDIT_META: TableDefinition<&str, &[u8]> = TableDefinition::new("audit_meta");

/// The node's redb page cache (`store::CACHE_BYTES`), given to both engines.
const CACHE_BYTES: usize = 48 << 20;
/// fjall's memtable limit per keyspace.
const MEMTABLE_BYTES: u64 = 8 << 20;
const RECORD_BYTES: usize = 1_200;
const SIGNATURE_BYTES: usize = 3_309;
const AUDIT_ROW_BYTES: usize = 250;
const AUDIT_BLOCK_COMMITS: u64 = 8;

/// One case: an engine, a sync mode, messages per commit, messages stored before the
/// measured commits, and how many commits are measured.
struct Case {
    engine: String,
    always: bool,
    per_commit: u64,
    stored: u64,
    commits: u64,
}

/// What one commit cost, in µs: wall time and CPU time of the committing thread, and CPU
/// time of the whole process: the engine's background threads included, until they are idle
/// again after the last commit.
struct Cost {
    wall: f64,
    thread_cpu: f64,
    process_cpu: f64,
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

/// Times `commits` calls of `commit` (each given its commit number), after `stored` messages
/// were written in commits of eight.
fn measure(case: &Case, mut commit: impl FnMut(u64, u64) -> u64) -> Cost {
    for c in 0..case.stored / 8 {
        commit(c, 8);
    }
    let first = case.stored / 8;
    settle();
    let (t0, th0, pr0) = (
        Instant::now(),
        cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID),
        cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID),
    );
    for c in first..first + case.commits {
        commit(c, case.per_commit);
    }
    let wall = t0.elapsed();
    let thread_cpu = cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID) - th0;
    // The background work the measured commits left (fjall's flushes and compactions) counts.
    settle();
    let n = case.commits as f64 * 1_000.0;
    Cost {
        wall: wall.as_nanos() as f64 / n,
        thread_cpu: thread_cpu as f64 / n,
        process_cpu: (cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID) - pr0) as f64 / n,
    }
}

/// Waits (at most 30 s) until the process's background threads are idle: less than 1 ms of
/// CPU in 100 ms.
fn settle() {
    let until = Instant::now() + std::time::Duration::from_secs(30);
    let mut before = cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID);
    while Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID);
        if now - before < 1_000_000 {
            return;
        }
        before = now;
    }
}

/// redb's file backend, with `fdatasync` left out for `--sync interval`.
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

fn run_redb(dir: &Path, case: &Case) -> Result<Cost, Box<dyn std::error::Error>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join("store.redb"))?;
    let backend = Backend {
        file: redb::backends::FileBackend::new(file)?,
        always: case.always,
    };
    let db = redb::Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create_with_backend(backend)?;
    let record = noise(RECORD_BYTES, 1);
    let signature = noise(SIGNATURE_BYTES, 2);
    let mut seq = 0u64;
    let mut write = |c: u64, n: u64| -> Result<u64, Box<dyn std::error::Error>> {
        let w = db.begin_write()?;
        {
            let mut messages = w.open_table(MESSAGES)?;
            let mut ids = w.open_table(IDS)?;
            let mut signatures = w.open_table(SIGNATURES)?;
            let mut audit = w.open_table(AUDIT)?;
            let mut meta = w.open_table(META)?;
            let mut audit_meta = w.open_table(AUDIT_META)?;
            for _ in 0..n {
                seq += 1;
                messages.insert(seq, record.as_slice())?;
                ids.insert(id_key(seq).as_slice(), seq)?;
            }
            signatures.insert(noise(32, c + (1 << 40)).as_slice(), signature.as_slice())?;
            let block = noise(audit_block_len(c, n), c);
            audit.insert(c / AUDIT_BLOCK_COMMITS, block.as_slice())?;
            meta.insert("next_seq", seq + 1)?;
            audit_meta.insert("head", noise(40, c).as_slice())?;
        }
        w.commit()?;
        let r = db.begin_read()?;
        let found = r.open_table(MESSAGES)?.get(seq)?.map(|v| v.value().len());
        assert_eq!(found, Some(RECORD_BYTES), "a committed message reads back");
        Ok(seq)
    };
    Ok(measure(case, |c, n| {
        write(c, n).unwrap_or_else(|e| panic!("redb: {e}"))
    }))
}

fn run_fjall(dir: &Path, case: &Case) -> Result<Cost, Box<dyn std::error::Error>> {
    let db = fjall::Database::builder(dir.join("store.fjall"))
        .cache_size(CACHE_BYTES as u64)
        .open()?;
    // Memtables of 8 MiB (fjall's default is 64 MiB per keyspace), so the process stays
    // near the node's memory budget (issue #12: under 150 MiB with a million messages).
    let opts = || fjall::KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES);
    let messages = db.keyspace("messages", opts)?;
    let ids = db.keyspace("message_ids", opts)?;
    let signatures = db.keyspace("signatures", opts)?;
    let audit = db.keyspace("audit", opts)?;
    let meta = db.keyspace("meta", opts)?;
    let record = noise(RECORD_BYTES, 1);
    let signature = noise(SIGNATURE_BYTES, 2);
    // Without `durability`, a batch is handed to the kernel (`write`) as it commits.
    let mode = case.always.then_some(fjall::PersistMode::SyncData);
    let mut seq = 0u64;
    let mut write = |c: u64, n: u64| -> Result<u64, fjall::Error> {
        let mut b = db.batch().durability(mode);
        for _ in 0..n {
            seq += 1;
            b.insert(&messages, seq.to_be_bytes(), record.as_slice());
            b.insert(&ids, id_key(seq), seq.to_be_bytes());
        }
        b.insert(&signatures, noise(32, c + (1 << 40)), signature.as_slice());
        b.insert(
            &audit,
            (c / AUDIT_BLOCK_COMMITS).to_be_bytes(),
            noise(audit_block_len(c, n), c),
        );
        b.insert(&meta, "next_seq", (seq + 1).to_be_bytes());
        b.insert(&meta, "audit_head", noise(40, c));
        b.commit()?;
        let found = messages.get(seq.to_be_bytes())?.map(|v| v.len());
        assert_eq!(found, Some(RECORD_BYTES), "a committed message reads back");
        Ok(seq)
    };
    Ok(measure(case, |c, n| {
        write(c, n).unwrap_or_else(|e| panic!("fjall: {e}"))
    }))
}

/// The audit block after commit `c` of `n` messages: it grows until it is full.
fn audit_block_len(c: u64, n: u64) -> usize {
    AUDIT_ROW_BYTES * n as usize * (1 + (c % AUDIT_BLOCK_COMMITS) as usize)
}

/// Bytes under `dir`, recursively.
fn bytes_under(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => bytes_under(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// One case in this process; prints one tab-separated line of figures.
fn one(case: &Case) -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("bluewire-store-engines-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cost = match case.engine.as_str() {
        "redb" => run_redb(&dir, case),
        "fjall" => run_fjall(&dir, case),
        other => Err(format!("unknown engine {other:?}: give redb or fjall").into()),
    };
    let disk = bytes_under(&dir);
    std::fs::remove_dir_all(&dir)?;
    let cost = cost?;
    println!(
        "{:.1}\t{:.1}\t{:.1}\t{}\t{}",
        cost.wall,
        cost.thread_cpu,
        cost.process_cpu,
        peak_rss_kib(),
        disk
    );
    Ok(())
}

const USAGE: &str =
    "usage: bluewire-store-engines [--sync interval|always] [--stored N] [--commits N] [--rounds N]
       bluewire-store-engines --one ENGINE PER_COMMIT [--sync ...] [--stored N] [--commits N]

Every (engine, messages per commit 1 and 3) case runs in its own process, alternating, for
--rounds rounds (default 3); defaults: --sync interval --stored 200000 --commits 20000.";

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).map(|i| args.get(i + 1));
    let number = |name: &str, default: u64| -> Result<u64, String> {
        match flag(name) {
            None => Ok(default),
            Some(Some(v)) => v
                .parse()
                .map_err(|_| format!("{name} takes a whole number, not {v:?}\n\n{USAGE}")),
            Some(None) => Err(format!("{name} needs a value\n\n{USAGE}")),
        }
    };
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    let sync = match flag("--sync") {
        None => "interval".to_string(),
        Some(Some(s)) if s == "interval" || s == "always" => s.clone(),
        Some(v) => {
            let v = v.map_or("nothing", String::as_str);
            return Err(format!("--sync is interval or always, not {v:?}\n\n{USAGE}").into());
        }
    };
    let stored = number("--stored", 200_000)?;
    let commits = number("--commits", 20_000)?.max(1);
    if let Some(i) = args.iter().position(|a| a == "--one") {
        let (Some(engine), Some(per)) = (args.get(i + 1), args.get(i + 2)) else {
            return Err(USAGE.into());
        };
        return one(&Case {
            engine: engine.clone(),
            always: sync == "always",
            per_commit: per.parse().map_err(|_| USAGE.to_string())?,
            stored,
            commits,
        });
    }
    let rounds = number("--rounds", 3)?.max(1);
    let me = std::env::current_exe()?;
    println!(
        "store commit cost, µs per commit ({commits} commits after {stored} messages stored; sync {sync}; \
         each case its own process)"
    );
    println!("round  msgs/commit  engine   wall  thread CPU  process CPU  peak RSS MiB  disk MiB");
    for round in 1..=rounds {
        for per in [1u64, 3] {
            let mut process_cpu = Vec::new();
            // Alternate which engine goes first, so drift on a shared machine hits both.
            let order = if (round + per) % 2 == 0 {
                ["redb", "fjall"]
            } else {
                ["fjall", "redb"]
            };
            let mut rows = Vec::new();
            for engine in order {
                let out = Command::new(&me)
                    .args(["--one", engine, &per.to_string(), "--sync", &sync])
                    .args([
                        "--stored",
                        &stored.to_string(),
                        "--commits",
                        &commits.to_string(),
                    ])
                    .output()?;
                if !out.status.success() {
                    return Err(format!(
                        "{engine} failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    )
                    .into());
                }
                let line = String::from_utf8_lossy(&out.stdout);
                let f: Vec<f64> = line
                    .trim()
                    .split('\t')
                    .map(|v| v.parse().unwrap_or(f64::NAN))
                    .collect();
                process_cpu.push((engine, f[2]));
                rows.push((engine, f));
            }
            rows.sort_by_key(|(e, _)| *e != "redb");
            for (engine, f) in rows {
                println!(
                    "{round:>5}  {per:>11}  {engine:<6} {:>6.1}  {:>10.1}  {:>11.1}  {:>12.0}  {:>8.0}",
                    f[0],
                    f[1],
                    f[2],
                    f[3] / 1024.0,
                    f[4] / 1_048_576.0
                );
            }
            let cpu = |e: &str| process_cpu.iter().find(|(n, _)| *n == e).map(|p| p.1);
            if let (Some(r), Some(f)) = (cpu("redb"), cpu("fjall")) {
                println!(
                    "{:>5}  {:>11}  process CPU fjall / redb: {:.2}",
                    "",
                    "",
                    f / r
                );
            }
        }
    }
    Ok(())
}
