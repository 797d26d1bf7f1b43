//! `bluewire audit …`: verify the node's hash-chained audit trail and export evidence.
//!
//! `verify` asks the node to check its whole log (`Admin.AuditVerify`); `verify --file` checks
//! an export offline, without any node; `export` writes the records of a time window as JSON
//! lines (one `AuditRecord` per line, exactly the hashed fields), which `verify --file` accepts.

use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use bluewire_node::audit;
use bluewire_node::client::explain_status;
use bluewire_proto::v1 as pb;
use clap::Subcommand;

use crate::Output;
use crate::connection::ConnArgs;
use crate::output::ts;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check every record's hash and link against the node's head; reports the first broken
    /// one and exits non-zero. With --file, check an export offline instead.
    Verify {
        /// A JSON-lines export (from `bluewire audit export`) to verify offline.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Write the records of a time window as JSON lines (evidence for an incident review).
    Export {
        /// From this time (RFC 3339, e.g. 2025-01-31T08:00:00Z, or unix milliseconds).
        #[arg(long)]
        since: Option<String>,
        /// Up to (not including) this time (RFC 3339 or unix milliseconds).
        #[arg(long)]
        until: Option<String>,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub async fn run(c: &ConnArgs, cmd: AuditCommand, out: Output) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Verify { file: Some(f) } => verify_file(&f, out),
        AuditCommand::Verify { file: None } => verify_node(c, out).await,
        AuditCommand::Export {
            since,
            until,
            out: file,
        } => {
            let since_ms = since.as_deref().map(parse_time).transpose()?.unwrap_or(0);
            let until_ms = until.as_deref().map(parse_time).transpose()?.unwrap_or(0);
            if until_ms > 0 && until_ms <= since_ms {
                bail!("--until must be later than --since");
            }
            export(c, since_ms, until_ms, file.as_deref()).await
        }
    }
}

/// RFC 3339 or unix milliseconds.
pub(crate) fn parse_time(s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        if ms < 0 {
            bail!("time {s:?} is negative; give unix milliseconds or an RFC 3339 time");
        }
        return Ok(ms);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            anyhow!(
                "time {s:?} is neither RFC 3339 (e.g. 2025-01-31T08:00:00Z) nor unix \
                 milliseconds: {e}"
            )
        })?;
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    i64::try_from(ms)
        .ok()
        .filter(|ms| *ms >= 0)
        .ok_or_else(|| anyhow!("time {s:?} is out of range"))
}

async fn verify_node(c: &ConnArgs, out: Output) -> anyhow::Result<()> {
    let conn = c.connect()?;
    let r = conn
        .admin()
        .audit_verify(pb::AuditVerifyRequest {})
        .await
        .map_err(|s| anyhow!(explain_status(&conn.endpoint, &s)))?
        .into_inner();
    match out {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "ok": r.ok,
                "records": r.records,
                "head_hash": r.head_hash,
                "first_bad_seq": r.first_bad_seq,
                "problem": r.problem,
            })
        ),
        Output::Table if r.ok => {
            println!("ok: {} records, head {}", r.records, r.head_hash)
        }
        Output::Table => println!("TAMPERED at seq {}: {}", r.first_bad_seq, r.problem),
    }
    if !r.ok {
        bail!("the node's audit trail does not verify");
    }
    Ok(())
}

fn verify_file(path: &Path, out: Output) -> anyhow::Result<()> {
    let f = std::fs::File::open(path)
        .with_context(|| format!("cannot open audit export {}", path.display()))?;
    let mut records = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let r = audit::record_from_json(&line).map_err(|e| {
            anyhow!(
                "{} line {}: not an audit record ({e}); the export was edited or is not a \
                 `bluewire audit export` file",
                path.display(),
                i + 1
            )
        })?;
        records.push(r);
    }
    let result = audit::verify_records(&records);
    let (first, last) = (records.first(), records.last());
    match (&result, out) {
        (Ok(()), Output::Json) => println!(
            "{}",
            serde_json::json!({
                "ok": true,
                "records": records.len(),
                "first_seq": first.map(|r| r.seq),
                "last_seq": last.map(|r| r.seq),
                "head_hash": last.map(|r| r.hash.clone()),
            })
        ),
        (Ok(()), Output::Table) => match (first, last) {
            (Some(a), Some(b)) => println!(
                "ok: {} records (seq {}..{}, {} .. {}), head {}",
                records.len(),
                a.seq,
                b.seq,
                ts(a.at_ms),
                ts(b.at_ms),
                b.hash
            ),
            _ => println!("ok: 0 records"),
        },
        (Err((seq, problem)), Output::Json) => println!(
            "{}",
            serde_json::json!({
                "ok": false,
                "records": records.len(),
                "first_bad_seq": seq,
                "problem": problem,
            })
        ),
        (Err((seq, problem)), Output::Table) => println!("TAMPERED at seq {seq}: {problem}"),
    }
    if result.is_err() {
        bail!("{} does not verify", path.display());
    }
    Ok(())
}

async fn export(
    c: &ConnArgs,
    since_ms: i64,
    until_ms: i64,
    file: Option<&Path>,
) -> anyhow::Result<()> {
    let conn = c.connect()?;
    let status = |s: tonic::Status| anyhow!(explain_status(&conn.endpoint, &s));
    let mut stream = conn
        .admin()
        .audit_export(pb::AuditExportRequest { since_ms, until_ms })
        .await
        .map_err(status)?
        .into_inner();
    // Write to a temporary name next to the target and rename at the end, so an interrupted
    // export never leaves a plausible-looking partial file.
    let tmp = file.map(|f| {
        let mut name = f.as_os_str().to_owned();
        name.push(".partial");
        PathBuf::from(name)
    });
    let mut w: Box<dyn Write> = match &tmp {
        Some(t) => Box::new(BufWriter::new(
            std::fs::File::create(t).with_context(|| format!("cannot create {}", t.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let mut n = 0u64;
    let mut span: Option<(u64, u64)> = None;
    while let Some(r) = stream.message().await.map_err(status)? {
        writeln!(w, "{}", audit::record_to_json(&r)).context("cannot write the export")?;
        n += 1;
        span = Some((span.map_or(r.seq, |s| s.0), r.seq));
    }
    w.flush().context("cannot write the export")?;
    drop(w);
    if let (Some(tmp), Some(file)) = (tmp, file) {
        std::fs::rename(&tmp, file)
            .with_context(|| format!("cannot move {} to {}", tmp.display(), file.display()))?;
        match span {
            Some((a, b)) => eprintln!(
                "exported {n} records (seq {a}..{b}) to {}; check it with `bluewire audit verify --file {}`",
                file.display(),
                file.display()
            ),
            None => eprintln!(
                "no records in that window; wrote an empty {}",
                file.display()
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse() {
        assert_eq!(parse_time("0").unwrap(), 0);
        assert_eq!(parse_time("1700000000123").unwrap(), 1_700_000_000_123);
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            parse_time("2023-11-14T23:13:20.5+01:00").unwrap(),
            1_700_000_000_500
        );
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("-5").is_err());
    }

    #[test]
    fn verify_file_accepts_an_export_and_rejects_an_edit() {
        let mut prev = audit::GENESIS_HASH.to_owned();
        let mut lines = Vec::new();
        for seq in 1..=3u64 {
            let mut r = pb::AuditRecord {
                seq,
                at_ms: 1000 + seq as i64,
                event: "sent".into(),
                msg_id: format!("m{seq}"),
                peer: "org-b".into(),
                rule: "tlp".into(),
                prev_hash: prev.clone(),
                ..Default::default()
            };
            r.hash = audit::chain_hash(
                &r.prev_hash,
                r.seq,
                r.at_ms,
                [&r.event, &r.msg_id, &r.peer, &r.cluster, &r.rule, &r.detail],
            );
            prev = r.hash.clone();
            lines.push(audit::record_to_json(&r));
        }
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.jsonl");
        std::fs::write(&good, lines.join("\n") + "\n").unwrap();
        verify_file(&good, Output::Table).unwrap();
        let bad = dir.path().join("bad.jsonl");
        lines[1] = lines[1].replace("\"m2\"", "\"m9\"");
        std::fs::write(&bad, lines.join("\n")).unwrap();
        let e = verify_file(&bad, Output::Json).unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
        let junk = dir.path().join("junk.jsonl");
        std::fs::write(&junk, "{\"seq\":1}\n").unwrap();
        let e = verify_file(&junk, Output::Table).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }
}
