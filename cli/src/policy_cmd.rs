//! `bluewire policy …`: validate and test the operator's local routing policy,
//! and explain routing decisions.
//!
//! `check` and `test` work offline on files (no node needed); the policy language and its
//! schema are documented in `bluewire_node::policy` and `deploy/policy/example.cedar`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use bluewire_node::policy::{self, LocalPolicy};
use bluewire_proto::v1 as pb;
use clap::Subcommand;
use serde_json::json;

use crate::Output;
use crate::connection::ConnArgs;
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
    /// Why a stored message was (or would be) delivered to an organisation.
    Explain {
        /// Message id (as printed by publish/subscribe).
        #[arg(long)]
        message: String,
        /// Recipient organisation (default: every candidate).
        #[arg(long)]
        to: Option<String>,
    },
    /// Explain a draft before publishing it: takes the same flags as `publish`.
    ExplainDraft {
        /// Recipient organisation to explain (default: every candidate).
        #[arg(long = "for", value_name = "ORG")]
        for_org: Option<String>,
        #[command(flatten)]
        draft: Box<crate::message::PublishCmd>,
    },
    /// Make the node re-read its local policy file now.
    Reload,
}

pub async fn run(c: &ConnArgs, cmd: PolicyCommand, out: Output) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Check { file } => check(&file, out),
        PolicyCommand::Test { policy, cases } => test(&policy, &cases, out),
        PolicyCommand::Explain { message, to } => {
            explain(
                c,
                pb::ExplainRequest {
                    message_id: message,
                    draft: None,
                    to: to.unwrap_or_default(),
                },
                out,
            )
            .await
        }
        PolicyCommand::ExplainDraft { for_org, draft } => {
            explain(
                c,
                pb::ExplainRequest {
                    message_id: String::new(),
                    draft: Some(draft.request()?),
                    to: for_org.unwrap_or_default(),
                },
                out,
            )
            .await
        }
        PolicyCommand::Reload => {
            let conn = c.connect()?;
            let r = conn
                .admin()
                .reload_policy(pb::ReloadPolicyRequest {})
                .await
                .map_err(|s| {
                    anyhow::anyhow!(bluewire_node::client::explain_status(&conn.endpoint, &s))
                })?
                .into_inner();
            match out {
                Output::Json => println!(
                    "{}",
                    json!({"loaded": r.loaded, "hash": r.policy_hash, "policies": r.policies})
                ),
                Output::Table if r.loaded => {
                    println!(
                        "local policy in force: {} policies, sha256 {}",
                        r.policies, r.policy_hash
                    )
                }
                Output::Table => println!("no local policy configured: built-in rules only"),
            }
            Ok(())
        }
    }
}

async fn explain(c: &ConnArgs, req: pb::ExplainRequest, out: Output) -> anyhow::Result<()> {
    let conn = c.connect()?;
    let r = conn
        .admin()
        .explain(req)
        .await
        .map_err(|s| anyhow::anyhow!(bluewire_node::client::explain_status(&conn.endpoint, &s)))?
        .into_inner();
    match out {
        Output::Json => println!(
            "{}",
            serde_json::Value::Array(
                r.recipients
                    .iter()
                    .map(|x| json!({
                        "org": x.org, "functions": x.functions, "allowed": x.allowed, "rule": x.rule, "reason": x.reason,
                        "mandatory": x.mandatory, "path": x.path,
                        "steps": x.steps.iter().map(|s| json!({"rule": s.rule, "allowed": s.allowed, "reason": s.reason})).collect::<Vec<_>>(),
                    }))
                    .collect()
            )
        ),
        Output::Table => {
            for x in &r.recipients {
                let functions = if x.functions.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", x.functions.join(", "))
                };
                println!(
                    "{} {}{functions}: {} (rule {})",
                    if x.allowed { "ALLOW" } else { "DENY " },
                    x.org,
                    x.reason,
                    x.rule
                );
                if !x.mandatory.is_empty() {
                    println!("      mandatory recipient: {}", x.mandatory);
                }
                if !x.path.is_empty() {
                    println!("      path now: {}", x.path);
                }
                for s in &x.steps {
                    println!(
                        "    {} {:<18} {}",
                        if s.allowed { "✔" } else { "✘" },
                        s.rule,
                        s.reason
                    );
                }
            }
        }
    }
    Ok(())
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
