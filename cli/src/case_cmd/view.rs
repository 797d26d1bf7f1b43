//! The read side of `bluewire case …` and `bluewire reserve …`: `list`, `show`, `timeline`,
//! `reserve list`, `export` and `verify-bundle`, printing a case as your node derives it from
//! the messages it holds (tables for people, JSON for scripts).

use anyhow::{Context, bail};
use bluewire_proto::v1 as pb;

use crate::Output;
use crate::connection::{ConnArgs, status_err};
use crate::output::{table, ts};

/// The political axis in one cell.
pub fn political(s: &pb::CaseSummary) -> String {
    if s.political_mode == bluewire_node::workflow::NOT_SEEN {
        s.political_mode.clone()
    } else {
        format!("{} / crisis {}", s.political_mode, s.crisis)
    }
}

fn reference(r: &Option<pb::MessageRef>) -> String {
    r.as_ref()
        .map(|r| format!("{}/{}", r.origin, r.id))
        .unwrap_or_default()
}

fn exercise_tag(exercise: bool) -> &'static str {
    if exercise { "EXERCISE " } else { "" }
}

/// The case as JSON (the shape `--output json` prints).
pub fn summary_json(s: &pb::CaseSummary) -> serde_json::Value {
    serde_json::json!({
        "case": reference(&s.case),
        "title": s.title,
        "cluster": s.cluster,
        "exercise": s.exercise,
        "phase": s.phase,
        "assessment": s.assessment,
        "political_mode": s.political_mode,
        "crisis": s.crisis,
        "closed": s.closed,
        "opened_at_ms": s.opened_at_ms,
        "updated_at_ms": s.updated_at_ms,
        "sitrep": s.sitrep_number,
        "sitrep_current": s.sitrep_current,
        "messages": s.messages,
        "advice": s.advice.iter().map(|a| serde_json::json!({"org": a.org, "verdict": a.verdict})).collect::<Vec<_>>(),
        "reserve": s.reserve.iter().map(reserve_json).collect::<Vec<_>>(),
        "due": s.due.iter().map(due_json).collect::<Vec<_>>(),
    })
}

fn due_json(d: &pb::CaseDueItem) -> serde_json::Value {
    serde_json::json!({
        "what": d.what, "ref": reference(&d.r#ref), "due_at_ms": d.due_at_ms,
        "done_at_ms": d.done_at_ms, "clock": d.clock,
    })
}

fn reserve_json(r: &pb::CaseReserveItem) -> serde_json::Value {
    serde_json::json!({
        "request": reference(&r.request), "requested_at_ms": r.requested_at_ms,
        "services": r.services, "stage": r.stage, "provider": r.provider,
        "military_dimension": r.military_dimension, "hybrid_campaign": r.hybrid_campaign,
        "due_at_ms": r.due.as_ref().map(|d| d.due_at_ms), "clock": r.due.as_ref().map(|d| d.clock.clone()),
    })
}

fn clocks(s: &pb::CaseSummary) -> String {
    let open: Vec<&str> = s
        .due
        .iter()
        .filter(|d| matches!(d.clock.as_str(), "on-time" | "due-soon" | "overdue"))
        .map(|d| d.clock.as_str())
        .collect();
    for worst in ["overdue", "due-soon", "on-time"] {
        if open.contains(&worst) {
            return format!("{} ({} open)", worst, open.len());
        }
    }
    "-".into()
}

pub(super) async fn list(c: &ConnArgs, at_ms: i64, out: Output) -> anyhow::Result<()> {
    let conn = c.connect()?;
    let cases = conn
        .client()
        .list_cases(pb::ListCasesRequest { at_ms })
        .await
        .map_err(|s| status_err(&conn, s))?
        .into_inner()
        .cases;
    match out {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&cases.iter().map(summary_json).collect::<Vec<_>>())?
        ),
        Output::Table => {
            if cases.is_empty() {
                println!("no cases on this node");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = cases
                .iter()
                .map(|s| {
                    vec![
                        format!("{}{}", exercise_tag(s.exercise), reference(&s.case)),
                        s.title.clone(),
                        s.phase.clone(),
                        s.assessment.clone(),
                        political(s),
                        if s.sitrep_number == 0 {
                            "-".into()
                        } else {
                            format!(
                                "#{}{}",
                                s.sitrep_number,
                                if s.sitrep_current { "" } else { " (stale)" }
                            )
                        },
                        clocks(s),
                    ]
                })
                .collect();
            table(
                &[
                    "CASE",
                    "TITLE",
                    "PHASE",
                    "ASSESSMENT",
                    "POLITICAL",
                    "SITREP",
                    "DUE",
                ],
                &rows,
            );
        }
    }
    Ok(())
}

async fn fetch(c: &ConnArgs, case: &str, at_ms: i64) -> anyhow::Result<pb::CaseDetail> {
    let conn = c.connect()?;
    Ok(conn
        .client()
        .get_case(pb::GetCaseRequest {
            case: case.to_string(),
            at_ms,
        })
        .await
        .map_err(|s| status_err(&conn, s))?
        .into_inner())
}

fn timeline_json(d: &pb::CaseDetail) -> Vec<serde_json::Value> {
    d.timeline
        .iter()
        .map(|e| {
            serde_json::json!({
                "message": reference(&e.message), "author": e.author, "kind": e.kind,
                "level": e.level, "tlp": e.tlp, "exercise": e.exercise,
                "created_at_ms": e.created_at_ms, "summary": e.summary, "in_effect": e.in_effect,
            })
        })
        .collect()
}

pub(super) async fn show(
    c: &ConnArgs,
    case: &str,
    at_ms: i64,
    timeline: bool,
    out: Output,
) -> anyhow::Result<()> {
    let d = fetch(c, case, at_ms).await?;
    let s = d.summary.clone().unwrap_or_default();
    if out == Output::Json {
        let mut j = summary_json(&s);
        j["timeline"] = serde_json::Value::Array(timeline_json(&d));
        println!("{}", serde_json::to_string_pretty(&j)?);
        return Ok(());
    }
    if s.exercise {
        println!("=== EXERCISE — not a real case ===");
    }
    println!(
        "case {}  {}",
        reference(&s.case),
        if s.title.is_empty() {
            "(opening message not visible at this node's level)"
        } else {
            &s.title
        }
    );
    if timeline {
        print_timeline(&d);
        return Ok(());
    }
    print_summary(&s);
    Ok(())
}

fn print_timeline(d: &pb::CaseDetail) {
    {
        let rows: Vec<Vec<String>> = d
            .timeline
            .iter()
            .map(|e| {
                vec![
                    ts(e.created_at_ms),
                    e.message
                        .as_ref()
                        .map(|m| m.origin.clone())
                        .unwrap_or_default(),
                    e.level.clone(),
                    format!("{}{}", if e.exercise { "EXERCISE " } else { "" }, e.tlp),
                    e.kind.clone(),
                    format!(
                        "{}{}",
                        e.summary,
                        if e.in_effect { "" } else { "  [not in effect]" }
                    ),
                ]
            })
            .collect();
        table(
            &["WHEN", "SIGNER", "LEVEL", "MARKING", "KIND", "WHAT"],
            &rows,
        );
    }
}

fn print_summary(s: &pb::CaseSummary) {
    println!("cluster:     {}", s.cluster);
    println!("phase:       {}", s.phase);
    println!("assessment:  {}", s.assessment);
    println!("political:   {}", political(s));
    for a in &s.advice {
        println!("advice:      {} says {}", a.org, a.verdict);
    }
    if s.sitrep_number > 0 {
        println!(
            "sitrep:      #{}{}",
            s.sitrep_number,
            if s.sitrep_current {
                " (current)"
            } else {
                " (stale: older than 24 h)"
            }
        );
    }
    for r in &s.reserve {
        let due = r.due.clone().unwrap_or_default();
        println!(
            "reserve:     {} [{}] {} — due {} — {}{}",
            reference(&r.request),
            r.services.join(", "),
            r.stage,
            ts(due.due_at_ms),
            due.clock,
            if r.provider.is_empty() {
                String::new()
            } else {
                format!(" — provider {}", r.provider)
            }
        );
    }
    println!(
        "messages:    {} (bluewire case timeline {})",
        s.messages,
        reference(&s.case)
    );
}

pub(super) async fn reserve_list(
    c: &ConnArgs,
    case: Option<&str>,
    at_ms: i64,
    out: Output,
) -> anyhow::Result<()> {
    let summaries = match case {
        Some(case) => vec![fetch(c, case, at_ms).await?.summary.unwrap_or_default()],
        None => {
            let conn = c.connect()?;
            conn.client()
                .list_cases(pb::ListCasesRequest { at_ms })
                .await
                .map_err(|s| status_err(&conn, s))?
                .into_inner()
                .cases
        }
    };
    let items: Vec<(&pb::CaseSummary, &pb::CaseReserveItem)> = summaries
        .iter()
        .flat_map(|s| s.reserve.iter().map(move |r| (s, r)))
        .collect();
    match out {
        Output::Json => {
            let j: Vec<serde_json::Value> = items
                .iter()
                .map(|(s, r)| {
                    let mut j = reserve_json(r);
                    j["case"] = reference(&s.case).into();
                    j["exercise"] = s.exercise.into();
                    j
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&j)?);
        }
        Output::Table => {
            if items.is_empty() {
                println!("no reserve requests");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|(s, r)| {
                    let due = r.due.clone().unwrap_or_default();
                    vec![
                        format!("{}{}", exercise_tag(s.exercise), reference(&r.request)),
                        reference(&s.case),
                        r.services.join(", "),
                        r.stage.clone(),
                        ts(due.due_at_ms),
                        due.clock,
                    ]
                })
                .collect();
            table(
                &["REQUEST", "CASE", "SERVICES", "STAGE", "DUE", "CLOCK"],
                &rows,
            );
        }
    }
    Ok(())
}

pub(super) async fn export(
    c: &ConnArgs,
    case: &str,
    file: &std::path::Path,
    out: Output,
) -> anyhow::Result<()> {
    use prost::Message;
    let conn = c.connect()?;
    let b = conn
        .client()
        .export_case(pb::GetCaseRequest {
            case: case.to_string(),
            at_ms: 0,
        })
        .await
        .map_err(|s| status_err(&conn, s))?
        .into_inner();
    std::fs::write(file, b.encode_to_vec())
        .with_context(|| format!("cannot write {}", file.display()))?;
    match out {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "case": reference(&b.case), "file": file.display().to_string(),
                "envelopes": b.envelopes.len(), "certificates": b.certificates.len(),
                "exercise": b.exercise,
            })
        ),
        Output::Table => println!(
            "{}wrote {}: case {}, {} signed envelopes, {} signer certificates (check: bluewire verify-bundle {} --ca ca.crt)",
            exercise_tag(b.exercise),
            file.display(),
            reference(&b.case),
            b.envelopes.len(),
            b.certificates.len(),
            file.display()
        ),
    }
    Ok(())
}

/// `bluewire verify-bundle FILE --ca ROOT`: offline, no node needed.
pub fn verify_bundle(
    file: &std::path::Path,
    ca: &std::path::Path,
    out: Output,
) -> anyhow::Result<()> {
    use prost::Message;
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let b = pb::CaseBundle::decode(bytes.as_slice())
        .with_context(|| format!("{} is not a Bluewire case bundle", file.display()))?;
    let pem =
        std::fs::read_to_string(ca).with_context(|| format!("cannot read {}", ca.display()))?;
    let root = bluewire_node::pki::load_certs_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{}: {e}", ca.display()))?
        .into_iter()
        .next()
        .with_context(|| format!("{} holds no certificate", ca.display()))?;
    let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let checked = bluewire_node::case::bundle::check(&b, root.as_ref(), now);
    let detail = bluewire_node::workflow::detail_pb(&checked.view, now);
    let summary = detail.summary.clone().unwrap_or_default();
    match out {
        Output::Json => {
            let mut j = summary_json(&summary);
            j["timeline"] = serde_json::Value::Array(timeline_json(&detail));
            j["verified_envelopes"] = checked.verified.into();
            j["signers"] = checked
                .signers
                .iter()
                .map(|(o, serial)| serde_json::json!({"org": o, "serial": serial}))
                .collect::<Vec<_>>()
                .into();
            j["exported_by"] = b.exported_by.clone().into();
            j["exported_at_ms"] = b.exported_at_ms.into();
            j["problems"] = checked.problems.clone().into();
            println!("{}", serde_json::to_string_pretty(&j)?);
        }
        Output::Table => {
            if summary.exercise {
                println!("=== EXERCISE — not a real case ===");
            }
            println!(
                "case {} exported by {} at {}: {} of {} envelopes verified against the federation root",
                reference(&summary.case),
                b.exported_by,
                ts(b.exported_at_ms),
                checked.verified,
                b.envelopes.len()
            );
            println!(
                "signers: {}",
                checked
                    .signers
                    .iter()
                    .map(|(o, s)| format!("{o} (certificate {s})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            println!(
                "state:   {} — assessment {}, {}",
                summary.phase,
                summary.assessment,
                political(&summary)
            );
            print_timeline(&detail);
            for p in &checked.problems {
                println!("PROBLEM: {p}");
            }
        }
    }
    if !checked.problems.is_empty() {
        bail!(
            "{} problem(s): the bundle does not prove what it claims",
            checked.problems.len()
        );
    }
    Ok(())
}
