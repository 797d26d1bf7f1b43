//! Real third-party clients for the tests (OASIS stix2-validator, the stix2 library,
//! stix2-patterns, taxii2-client, PyMISP): a virtual environment at `target/pyenv` with
//! `tests/python/requirements.txt`, made on first use (pip from PyPI) and reused. A test
//! that needs it fails, with what to install, when it cannot be made: nothing is skipped.
//! `BLUEWIRE_PYTHON` names an interpreter that already has them instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

static READY: Mutex<Option<PathBuf>> = Mutex::new(None);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{what}: cannot run {cmd:?}: {e} (install python3 and python3-venv)")
    });
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}\n(the tests need python3 with venv and PyPI access; .ci/run sets this up)",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Python interpreter with the test requirements installed.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("BLUEWIRE_PYTHON") {
        return PathBuf::from(p);
    }
    let mut ready = READY.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = ready.as_ref() {
        return p.clone();
    }
    let root = workspace();
    let requirements = root.join("tests/python/requirements.txt");
    let text = std::fs::read_to_string(&requirements).expect("tests/python/requirements.txt");
    let venv = root.join("target/pyenv");
    let python = venv.join("bin/python");
    let stamp = venv.join(format!(
        ".installed-{}",
        &hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            text.as_bytes()
        ))[..16]
    ));
    if !stamp.exists() {
        if !python.exists() {
            run(
                Command::new("python3").args(["-m", "venv"]).arg(&venv),
                "creating target/pyenv",
            );
        }
        run(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    "-r",
                ])
                .arg(&requirements),
            "pip install -r tests/python/requirements.txt",
        );
        std::fs::write(&stamp, b"").expect("write the venv stamp");
    }
    *ready = Some(python.clone());
    python
}

/// The interpreter as a command. `requests` lets `REQUESTS_CA_BUNDLE` / `CURL_CA_BUNDLE`
/// override an explicit `verify=CA` (a known requests behaviour), so they are removed: the
/// clients must trust the federation root they are given, not the system's.
pub fn command() -> Command {
    let mut c = Command::new(python());
    c.env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE");
    c
}

/// Run `python -c SCRIPT ARGS…` with the test requirements; stdin closed.
pub fn script(script: &str, args: &[&str]) -> Output {
    command()
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run python")
}

/// `stix2_validator --strict` on `file`, then `stix2.parse` of it: the failure text, or Ok.
pub fn validate_stix_strict(file: &Path) -> Result<(), String> {
    let out = script(
        r#"
import json, sys
from stix2validator import validate_file, ValidationOptions, print_results
r = validate_file(sys.argv[1], ValidationOptions(strict=True, version="2.1"))
if not r.is_valid:
    print_results(r)
    sys.exit(1)
import stix2
b = stix2.parse(open(sys.argv[1]).read(), allow_custom=True)
print(len(b.objects))
"#,
        &[file.to_str().expect("utf-8 path")],
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
