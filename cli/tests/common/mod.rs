//! What the CLI tests share: running the real `bluewire` binary as a user would, node
//! processes that are killed however a test ends, free loopback ports.
#![allow(dead_code)]

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_bluewire");

/// One finished invocation of the CLI.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Exit 0 or fail the test with everything the user would have seen.
    #[track_caller]
    pub fn expect_ok(self, what: &str) -> Self {
        assert!(self.ok(), "{what} failed: {self:#?}");
        self
    }

    /// stdout as one JSON document.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// stdout as JSON lines (one per feed item).
    #[track_caller]
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("line {l:?} is not JSON ({e}): {self:#?}"))
            })
            .collect()
    }
}

/// Run `bluewire ARGS` in `cwd`, killing it if it outlives `limit`.
pub fn bw_in(cwd: &Path, args: &[&str], limit: Duration) -> Run {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env_remove("BLUEWIRE_CLIENT_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bluewire");
    let reader = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = reader(Box::new(child.stdout.take().expect("stdout")));
    let err = reader(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait().expect("wait for bluewire") {
            Some(st) => break st,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`bluewire {}` still running after {limit:?}",
                    args.join(" ")
                );
            }
            None => thread::sleep(Duration::from_millis(20)),
        }
    };
    Run {
        code: status.code(),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// The node processes; killed and reaped however the test ends. On a panic,
/// their logs are printed to help whoever reads the failure.
pub struct Nodes(pub Vec<(String, Child, PathBuf)>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for (org, child, log) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
            if thread::panicking() {
                let text = std::fs::read_to_string(&*log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("--- last log lines of node {org} ---");
                for l in tail.into_iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

/// Start `bluewire node run` in `dir` (its node.toml), logging to `dir/node.log`.
pub fn spawn_node(nodes: &mut Nodes, org: &str, dir: &Path) {
    let log = dir.join("node.log");
    let log_file = std::fs::File::create(&log).expect("node log");
    let child = Command::new(BIN)
        .args(["node", "run", "--config", "node.toml"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log handle"))
        .stderr(log_file)
        .spawn()
        .expect("spawn node");
    nodes.0.push((org.to_string(), child, log));
}

impl Nodes {
    /// Stop `org`'s node process and start it again in `dir` (same config).
    pub fn restart(&mut self, org: &str, dir: &Path) {
        if let Some(i) = self.0.iter().position(|(o, ..)| o == org) {
            let (_, mut child, _) = self.0.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
        spawn_node(self, org, dir);
    }
}

/// Run `args` in `cwd` until it exits 0 (bounded: 30 s), failing if a node died.
pub fn until_ok(nodes: &mut Nodes, cwd: &Path, args: &[&str]) -> Run {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (org, child, _) in &mut nodes.0 {
            if let Some(st) = child.try_wait().expect("poll node") {
                panic!("node {org} exited early: {st}");
            }
        }
        let r = bw_in(cwd, args, Duration::from_secs(10));
        if r.ok() {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{args:?} never succeeded: {r:#?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}
