//! `bluewire demo --scenario blueprint` through the real binary, as the README tells a new
//! user to run it: seven node processes run a crisis case from detection to lessons
//! learned with `bluewire case …` / `bluewire reserve …`; the demo itself fails if a step
//! went astray or nodes holding the same steps derived different states.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_bluewire");

#[test]
fn the_blueprint_demo_runs_a_case_from_detection_to_lessons_learned() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("fed");
    let mut child = Command::new(BIN)
        .args(["demo", "--scenario", "blueprint", "--dir"])
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
}
