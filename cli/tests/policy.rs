//! `bluewire policy check` / `bluewire policy test` on the shipped example files, through
//! the real binary: exit codes, the table and JSON a user sees, and errors with file:line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_bluewire");

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/policy")
        .join(file)
}

fn bw(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run the bluewire binary")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_accepts_the_example_and_rejects_a_broken_file() {
    let example = deploy("example.cedar");
    let out = bw(&["policy", "check", example.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("ok: 5 policies, hash "), "{stdout}");

    let out = bw(&[
        "--output",
        "json",
        "policy",
        "check",
        example.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["policies"], 5);
    assert_eq!(v["hash"].as_str().unwrap().len(), 64);
    assert_eq!(v["rules"][0]["name"], "no-political-or-red-to-military");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.cedar");
    std::fs::write(
        &bad,
        "// ok so far\nforbid (principal, action, resource)\nwhen { resource.colour == \"red\" };\n",
    )
    .unwrap();
    let out = bw(&["policy", "check", bad.to_str().unwrap()]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("bad.cedar:3:"), "{stderr}");
    assert!(stderr.contains("colour"), "{stderr}");

    let out = bw(&[
        "policy",
        "check",
        dir.path().join("missing.cedar").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("missing.cedar"), "{out:?}");
}

#[test]
fn test_runs_the_example_cases() {
    let policy = deploy("example.cedar");
    let cases = deploy("cases.toml");
    let out = bw(&[
        "policy",
        "test",
        "--policy",
        policy.to_str().unwrap(),
        cases.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(
        stdout.lines().next().unwrap().starts_with("RESULT"),
        "{stdout}"
    );
    assert!(stdout.contains("PASS"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");

    let out = bw(&[
        "--output",
        "json",
        "policy",
        "test",
        "--policy",
        policy.to_str().unwrap(),
        cases.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["failed"], 0);
    let list = v["cases"].as_array().unwrap();
    assert!(list.len() >= 10);
    let red = list
        .iter()
        .find(|c| c["name"] == "RED to a military partner")
        .unwrap();
    assert_eq!(red["got"], "deny");
    assert!(
        red["reason"]
            .as_str()
            .unwrap()
            .contains("no-political-or-red-to-military (policy0)"),
        "{red}"
    );
}

#[test]
fn test_fails_when_a_case_fails() {
    let dir = tempfile::tempdir().unwrap();
    // Against an empty policy every case is allowed, so the example's deny cases fail.
    let empty = dir.path().join("empty.cedar");
    std::fs::write(&empty, "// nothing forbidden\n").unwrap();
    let cases = deploy("cases.toml");
    let out = bw(&[
        "policy",
        "test",
        "--policy",
        empty.to_str().unwrap(),
        cases.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains("PASS"), "{stdout}");
    assert!(text(&out.stderr).contains("cases failed"), "{out:?}");

    let out = bw(&[
        "--output",
        "json",
        "policy",
        "test",
        "--policy",
        empty.to_str().unwrap(),
        cases.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["failed"].as_u64().unwrap() > 0);

    // A malformed cases file names the case.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[case]]\nname = \"who\"\norigin = \"nobody\"\nrecipient = \"nobody\"\nexpect = \"deny\"\n",
    )
    .unwrap();
    let out = bw(&[
        "policy",
        "test",
        "--policy",
        empty.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("\"who\""),
        "{stderr}"
    );
}
