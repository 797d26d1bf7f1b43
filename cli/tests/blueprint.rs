//! `bluewire demo --scenario blueprint` and `bluewire exercise run` through the real binary,
//! as the README tells a new user to run them: seven node processes run a crisis case from
//! detection to lessons learned with `bluewire case …` / `bluewire reserve …` (the demo itself
//! fails if a step went astray or nodes holding the same steps derived different states);
//! then the shipped scenario runs again as an exercise in the same federation, and the
//! exercise case is marked as such everywhere while the real case is untouched.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_bluewire");

#[test]
fn the_blueprint_demo_runs_a_case_from_detection_to_lessons_learned() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("fed");
    let mut child = Command::new(BIN)
        .args(["demo", "--scenario", "blueprint", "--keep", "--dir"])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bluewire demo");
    // Bounded: the demo takes ~15 s here; kill it if it hangs.
    let deadline = Instant::now() + Duration::from_secs(240);
    while child.try_wait().expect("poll demo").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("bluewire demo --scenario blueprint did not finish in 240 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().expect("demo output");
    let _nodes = Nodes(dir.clone());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed: {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    assert!(stdout.contains("Blueprint demo OK"), "{stdout}");
    // The arrivals table has no missing step and no leak, and the political level never
    // held an operational step.
    let step_rows: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            (l.starts_with("case ") || l.starts_with("reserve "))
                && (l.contains(" operational ") || l.contains(" political "))
        })
        .collect();
    assert_eq!(step_rows.len(), 15, "{stdout}");
    assert!(
        step_rows
            .iter()
            .all(|l| !l.contains('✘') && !l.contains("LEAK")),
        "{step_rows:#?}"
    );
    let presidency_rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("presidency "))
        .collect();
    assert!(
        presidency_rows.iter().any(|l| l.contains("closed")
            && l.contains("not-seen-here")
            && l.contains("monitoring / crisis ceased")),
        "{presidency_rows:?}"
    );

    // The same scenario as an exercise, in the same federation.
    let scenario = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/exercises/blueprint.toml"
    );
    let (ok, stdout, stderr) = bw(&[
        "--output",
        "json",
        "exercise",
        "run",
        scenario,
        "--federation",
        dir.to_str().unwrap(),
        "--speed",
        "100000",
        "--var",
        "name=drill-1",
    ]);
    assert!(ok, "exercise run: {stderr}\n{stdout}");
    let last = stdout.lines().last().unwrap_or_default();
    let run: serde_json::Value = serde_json::from_str(last).expect("exercise run JSON");
    assert_eq!(run["exercise"], true);
    let drill = run["saved"]["case"]
        .as_str()
        .expect("saved case")
        .to_string();
    for org in ["csirt-be", "cyclone-fr", "presidency"] {
        let listed = cases(&dir, org);
        assert_eq!(
            listed.len(),
            2,
            "a real case and an exercise case at {org}: {listed:#?}"
        );
        let (ex, real): (Vec<_>, Vec<_>) = listed
            .iter()
            .partition(|c| c["case"].as_str().unwrap_or("").ends_with(&drill));
        assert_eq!(ex.len(), 1, "{listed:#?}");
        assert_eq!(ex[0]["exercise"], true, "at {org}: {listed:#?}");
        assert_eq!(real[0]["exercise"], false, "at {org}: {listed:#?}");
        assert!(
            ex[0]["cluster"]
                .as_str()
                .unwrap_or("")
                .ends_with("/drill-1"),
            "{listed:#?}"
        );
        // The exercise did not move the real case.
        assert_eq!(real[0]["messages"], ex[0]["messages"], "at {org}");
    }
    let cfg = dir.join("cyclone-fr/users/analyst/client.toml");
    let (ok, shown, _) = bw(&[
        "--client-config",
        cfg.to_str().unwrap(),
        "case",
        "show",
        &drill,
    ]);
    assert!(ok && shown.starts_with("=== EXERCISE"), "{shown}");

    // The real case as evidence: exported at cyclone-fr, checked offline against the root.
    let real = cases(&dir, "cyclone-fr")
        .into_iter()
        .find(|c| c["exercise"] == false)
        .expect("the real case");
    let real_case = real["case"].as_str().unwrap().to_string();
    let bundle = dir.join("case.bwb");
    let (ok, _, stderr) = bw(&[
        "--client-config",
        cfg.to_str().unwrap(),
        "case",
        "export",
        &real_case,
        "--out",
        bundle.to_str().unwrap(),
    ]);
    assert!(ok, "case export: {stderr}");
    let root = dir.join("cyclone-fr/users/analyst/ca.crt");
    let (ok, stdout, stderr) = bw(&[
        "--output",
        "json",
        "verify-bundle",
        bundle.to_str().unwrap(),
        "--ca",
        root.to_str().unwrap(),
    ]);
    assert!(ok, "verify-bundle: {stderr}\n{stdout}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("verify-bundle JSON");
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{v:#}");
    assert_eq!(v["phase"], "closed", "{v:#}");
    assert_eq!(v["verified_envelopes"], real["messages"], "{v:#}");
    assert_eq!(v["exercise"], false);
    // One altered byte in a signed title: refused, naming the envelope.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = bytes
        .windows(10)
        .position(|w| w == b"Ransomware")
        .expect("the title is in the bundle");
    bytes[at] = b'r';
    std::fs::write(&bundle, &bytes).unwrap();
    let (ok, stdout, stderr) = bw(&[
        "verify-bundle",
        bundle.to_str().unwrap(),
        "--ca",
        root.to_str().unwrap(),
    ]);
    assert!(!ok, "a tampered bundle verified: {stdout}");
    assert!(
        stdout.contains("PROBLEM: envelope") && stdout.contains("signature does not verify"),
        "{stdout}"
    );
    assert!(stderr.contains("does not prove what it claims"), "{stderr}");
}

/// Stops the nodes a `demo --keep` left running, however the test ends.
struct Nodes(PathBuf);

impl Drop for Nodes {
    fn drop(&mut self) {
        let Ok(dirs) = std::fs::read_dir(&self.0) else {
            return;
        };
        for d in dirs.flatten() {
            if let Ok(pid) = std::fs::read_to_string(d.path().join("node.pid")) {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
        }
    }
}

fn bw(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run bluewire");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cases(dir: &Path, org: &str) -> Vec<serde_json::Value> {
    let cfg = dir.join(org).join("users/analyst/client.toml");
    let (ok, stdout, stderr) = bw(&[
        "--client-config",
        cfg.to_str().unwrap(),
        "--output",
        "json",
        "case",
        "list",
    ]);
    assert!(ok, "case list at {org}: {stderr}");
    serde_json::from_str::<serde_json::Value>(&stdout)
        .expect("case list JSON")
        .as_array()
        .cloned()
        .unwrap_or_default()
}
