//! `bluewire bundle …`: offline bundles, the emergency channel when two nodes have no
//! network path. `export` asks the node (`Admin.BundleExport`) for its messages that one
//! organisation may receive, signed and (above TLP:GREEN) encrypted to it, and writes them to
//! a file; `import` hands such a file to the receiving node (`Admin.BundleImport`), which
//! verifies it and applies the same ingress rules as a delivery. Operators only.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use bluewire_node::client::explain_status;
use bluewire_proto::v1 as pb;
use clap::Subcommand;

use crate::Output;
use crate::audit_cmd::parse_time;
use crate::connection::ConnArgs;
use crate::output::{table, ts};

/// Bytes per streamed chunk of an imported file.
const CHUNK: usize = 1 << 20;

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Write this node's messages that ORG may receive (the same routing decision as
    /// delivery) into one signed file, encrypted to ORG when anything is above TLP:GREEN.
    Export {
        /// The organisation the bundle is for.
        #[arg(long = "for", value_name = "ORG")]
        for_org: String,
        /// Only messages of this cluster (name or id; repeatable).
        #[arg(long = "cluster")]
        clusters: Vec<String>,
        /// Only messages created at or after this time (RFC 3339, e.g. 2026-12-01T08:00:00Z,
        /// or unix milliseconds).
        #[arg(long)]
        since: Option<String>,
        /// ORG's node certificate (node.crt), when your node has never been connected to it.
        #[arg(long, value_name = "FILE")]
        recipient_cert: Option<PathBuf>,
        /// Encrypt even when nothing is above TLP:GREEN.
        #[arg(long)]
        encrypt: bool,
        /// The file to write (refuses to overwrite one).
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a bundle made for your node and store what it carries (same rules as a
    /// delivery; idempotent: a bundle with nothing new is refused as replayed).
    Import {
        /// The bundle file.
        file: PathBuf,
    },
}

pub async fn run(c: &ConnArgs, cmd: BundleCommand, out: Output) -> anyhow::Result<()> {
    match cmd {
        BundleCommand::Export {
            for_org,
            clusters,
            since,
            recipient_cert,
            encrypt,
            out: file,
        } => {
            let since_ms = since.as_deref().map(parse_time).transpose()?.unwrap_or(0);
            let recipient_cert = match recipient_cert {
                Some(p) => std::fs::read(&p)
                    .with_context(|| format!("cannot read --recipient-cert {}", p.display()))?,
                None => Vec::new(),
            };
            let req = pb::BundleExportRequest {
                for_org,
                clusters,
                since_ms,
                recipient_cert,
                encrypt,
            };
            export(c, req, &file, out).await
        }
        BundleCommand::Import { file } => import(c, &file, out).await,
    }
}

async fn export(
    c: &ConnArgs,
    req: pb::BundleExportRequest,
    file: &Path,
    out: Output,
) -> anyhow::Result<()> {
    if file.exists() {
        bail!(
            "{} exists: choose another --out (a bundle is never overwritten)",
            file.display()
        );
    }
    let conn = c.connect()?;
    let status = |s: tonic::Status| anyhow!(explain_status(&conn.endpoint, &s));
    let mut stream = conn
        .admin()
        .bundle_export(req)
        .await
        .map_err(status)?
        .into_inner();
    let mut bytes = Vec::new();
    let mut summary = None;
    while let Some(chunk) = stream.message().await.map_err(status)? {
        summary = summary.or(chunk.summary);
        bytes.extend_from_slice(&chunk.data);
    }
    let summary = summary.ok_or_else(|| anyhow!("the node sent no bundle"))?;
    if bytes.len() as u64 != summary.bytes {
        bail!(
            "the node announced {} bytes and sent {}: nothing written, export again",
            summary.bytes,
            bytes.len()
        );
    }
    write_new(file, &bytes)?;
    match out {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "file": file.display().to_string(),
                "id": summary.id,
                "from": summary.from_org,
                "for": summary.for_org,
                "created_at": ts(summary.created_at_ms),
                "envelopes": summary.envelopes,
                "encrypted": summary.encrypted,
                "highest_tlp": summary.highest_tlp,
                "bytes": summary.bytes,
            })
        ),
        Output::Table => println!(
            "wrote {}: bundle {} for {}, {} messages (highest {}), {} bytes, {}",
            file.display(),
            summary.id,
            summary.for_org,
            summary.envelopes,
            summary.highest_tlp,
            summary.bytes,
            if summary.encrypted {
                "signed and encrypted to it"
            } else {
                "signed, not encrypted (nothing above TLP:GREEN)"
            }
        ),
    }
    Ok(())
}

/// Write `bytes` to a new file `path` (owner-only), through a temporary name, so an
/// interrupted export never leaves a plausible-looking partial bundle.
fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    // A hard link fails if the name exists: never overwrites, even a file made meanwhile.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked.with_context(|| {
        format!(
            "cannot write {} (it exists, or the directory refuses it): nothing overwritten",
            path.display()
        )
    })
}

async fn import(c: &ConnArgs, file: &Path, out: Output) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(file).with_context(|| format!("cannot read bundle {}", file.display()))?;
    if bytes.is_empty() {
        bail!("{} is empty: not a bundle", file.display());
    }
    let conn = c.connect()?;
    let status = |s: tonic::Status| anyhow!(explain_status(&conn.endpoint, &s));
    let chunks: Vec<pb::BundleChunk> = bytes
        .chunks(CHUNK)
        .map(|c| pb::BundleChunk {
            data: c.to_vec(),
            summary: None,
        })
        .collect();
    let r = conn
        .admin()
        .bundle_import(tokio_stream::iter(chunks))
        .await
        .map_err(|s| anyhow!("{}: {}", file.display(), status(s)))?
        .into_inner();
    let s = r.summary.clone().unwrap_or_default();
    match out {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "file": file.display().to_string(),
                "id": s.id,
                "from": s.from_org,
                "created_at": ts(s.created_at_ms),
                "encrypted": s.encrypted,
                "envelopes": s.envelopes,
                "accepted": r.accepted,
                "duplicate": r.duplicate,
                "rejected": r.rejected,
                "later": r.later,
                "results": r.results.iter().map(|e| serde_json::json!({
                    "id": e.id, "outcome": e.outcome, "reason": e.reason,
                })).collect::<Vec<_>>(),
            })
        ),
        Output::Table => {
            println!(
                "bundle {} from {} ({}, {}): {} new, {} already held, {} refused, {} to retry",
                s.id,
                s.from_org,
                ts(s.created_at_ms),
                if s.encrypted { "encrypted" } else { "signed" },
                r.accepted,
                r.duplicate,
                r.rejected,
                r.later
            );
            let rows: Vec<Vec<String>> = r
                .results
                .iter()
                .filter(|e| e.outcome != "duplicate")
                .map(|e| vec![e.id.clone(), e.outcome.clone(), e.reason.clone()])
                .collect();
            if !rows.is_empty() {
                table(&["ID", "OUTCOME", "REASON"], &rows);
            }
            if r.later > 0 {
                println!(
                    "{} messages could not be decided yet (this node is behind on a cluster): import the same file again later",
                    r.later
                );
            }
        }
    }
    Ok(())
}
