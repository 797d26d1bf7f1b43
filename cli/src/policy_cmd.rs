//! `bluewire policy …`: validate and test the operator's local routing policy,
//! and explain routing decisions.
//!
//! `check` and `test` work offline on files (no node needed); the policy language and its
//! schema are documented in `bluewire_node::policy` and `deploy/policy/example.cedar`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use bluewire_node::policy::{self, LocalPolicy};
use clap::Subcommand;
use serde_json::json;

use crate::Output;
use crate::member::ConnArgs;
use crate::output;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a local policy file (Cedar) against the Bluewire schema.
    Check {
        /// The policy file, e.g. deploy/policy/example.cedar.
        file: PathBuf,
    },
    /// Run table-driven cases (TOML, see deploy/policy/cases.toml) against a policy file.
    Test {
        /// The policy file under test.
        #[arg(long)]
        policy: PathBuf,
        /// The cases file.
        cases: PathBuf,
    },
}

pub async fn run(_c: &ConnArgs, cmd: PolicyCommand, out: Output) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Check { file } => check(&file, out),
        PolicyCommand::Test { policy, cases } => test(&policy, &cases, out),
    }
}

fn load(file: &Path) -> anyhow::Result<LocalPolicy> {
    // The error already names the file, line and column.
    LocalPolicy::load(file).map_err(|e| anyhow::anyhow!("{e}"))
}

fn check(file: &Path, out: Output) -> anyhow::Result<()> {
    let p = load(file)?;
    match out {
        Output::Json => println!(
            "{}",
            json!({
                "ok": true,
                "file": file.display().to_string(),
                "policies": p.len(),
                "hash": p.hash(),
                "rules": p.rules(),
                "warnings": p.warnings(),
            })
        ),
        Output::Table => {
            println!(
                "ok: {} {}, hash {}",
                p.len(),
                if p.len() == 1 { "policy" } else { "policies" },
                p.hash()
            );
            for w in p.warnings() {
                eprintln!("warning: {w}");
            }
        }
    }
    Ok(())
}

fn test(policy_file: &Path, cases_file: &Path, out: Output) -> anyhow::Result<()> {
    let p = load(policy_file)?;
    let text = std::fs::read_to_string(cases_file)
        .with_context(|| format!("cannot read cases file {}", cases_file.display()))?;
    let results = policy::run_cases(&p, &text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", cases_file.display()))?;
    let failed = results.iter().filter(|r| !r.passed()).count();
    let word = |allowed: bool| if allowed { "allow" } else { "deny" };
    match out {
        Output::Json => {
            let cases: Vec<_> = results
                .iter()
                .map(|r| {
                    json!({
                        "name": r.name,
                        "expected": word(r.expected),
                        "got": word(r.got),
                        "passed": r.passed(),
                        "reason": r.reason,
                    })
                })
                .collect();
            println!(
                "{}",
                json!({
                    "policy": policy_file.display().to_string(),
                    "hash": p.hash(),
                    "cases": cases,
                    "passed": results.len() - failed,
                    "failed": failed,
                })
            );
        }
        Output::Table => {
            let rows: Vec<Vec<String>> = results
                .iter()
                .map(|r| {
                    vec![
                        if r.passed() { "PASS" } else { "FAIL" }.to_string(),
                        r.name.clone(),
                        word(r.expected).to_string(),
                        word(r.got).to_string(),
                        r.reason.clone(),
                    ]
                })
                .collect();
            output::table(&["RESULT", "CASE", "EXPECT", "GOT", "REASON"], &rows);
            println!(
                "\n{} passed, {failed} failed ({} policies, hash {})",
                results.len() - failed,
                p.len(),
                p.hash()
            );
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} cases failed", results.len());
    }
    Ok(())
}
