//! Threat feeds in the formats CSIRT tools speak: `bluewire import stix FILE|DIR` and
//! `bluewire export stix`. Import sends bundles in chunks to the node, which checks every
//! object, skips what this organisation already published at the same version and publishes
//! the rest as signed stix-bundle messages; export turns the feed this user may read into one
//! STIX 2.1 bundle (node/src/stix/export.rs).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use bluewire_node::stix;
use bluewire_proto::v1 as pb;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::Output;
use crate::args::{LevelArg, TlpArg};
use crate::connection::{ConnArgs, status_err};

/// Most objects sent in one message (the node accepts up to `stix::MAX_OBJECTS`).
const CHUNK_OBJECTS: usize = 1_000;
/// Most JSON bytes of objects in one message: the node adds markings, and the signed
/// content must stay under the 1 MiB envelope limit.
const CHUNK_BYTES: usize = 640 * 1024;

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Publish STIX 2.1 bundles (a .json file, or every .json file in a directory).
    Stix(ImportStixArgs),
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// The messages you may read, as one STIX 2.1 bundle.
    Stix(ExportStixArgs),
}

/// Where imported intelligence goes, and how it is marked.
#[derive(Debug, Args)]
pub struct Target {
    /// The message's TLP: objects without a TLP marking get it; an object marked looser is
    /// refused.
    #[arg(long, value_enum)]
    pub tlp: TlpArg,
    #[arg(long, value_enum, default_value_t = LevelArg::Technical)]
    pub level: LevelArg,
    /// Publish to this cluster (only its members receive it).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Only these organisations (comma-separated; required for TLP:RED).
    #[arg(long, value_delimiter = ',')]
    pub to: Vec<String>,
    /// Forbid re-sharing into other clusters.
    #[arg(long)]
    pub no_reshare: bool,
    /// Mark as exercise traffic.
    #[arg(long)]
    pub exercise: bool,
}

#[derive(Debug, Args)]
pub struct ImportStixArgs {
    /// A STIX 2.1 bundle file, or a directory of them.
    pub path: PathBuf,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Args)]
pub struct ExportStixArgs {
    /// Only messages of these clusters (comma-separated ids or names).
    #[arg(long, value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// Only messages created at or after this time (RFC 3339 or unix milliseconds).
    #[arg(long)]
    pub since: Option<String>,
    /// Write the bundle here (default: standard output).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub async fn import(c: &ConnArgs, cmd: ImportCommand, out: Output) -> anyhow::Result<()> {
    match cmd {
        ImportCommand::Stix(a) => import_stix(c, a, out).await,
    }
}

pub async fn export(c: &ConnArgs, cmd: ExportCommand, out: Output) -> anyhow::Result<()> {
    match cmd {
        ExportCommand::Stix(a) => export_stix(c, a, out).await,
    }
}

/// The bundle files under `path`: the file itself, or a directory's `*.json`, sorted.
fn bundle_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading the directory {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("{} holds no .json files", path.display());
        }
        Ok(files)
    } else if path.is_file() {
        Ok(vec![path.to_path_buf()])
    } else {
        bail!("{} is neither a file nor a directory", path.display())
    }
}

/// Split `objects` into chunks under the object and byte limits.
fn chunks(objects: Vec<Value>) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut bytes = 0;
    for o in objects {
        let n = o.to_string().len();
        if !cur.is_empty() && (cur.len() >= CHUNK_OBJECTS || bytes + n > CHUNK_BYTES) {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += n;
        cur.push(o);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// What an import did, for the summary.
#[derive(Default)]
struct Tally {
    files: usize,
    objects: usize,
    published: usize,
    skipped: usize,
    messages: Vec<String>,
    refused: Vec<(String, String, String)>,
}

/// Progress as a bar with rate and ETA on a terminal, as plain lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    done: u64,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    fn new(total: u64, quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} objects  {per_sec}  ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        let now = Instant::now();
        Progress {
            bar,
            total,
            done: 0,
            started: now,
            last_line: now,
        }
    }

    fn add(&mut self, n: u64, quiet: bool) {
        self.done += n;
        if let Some(b) = &self.bar {
            b.set_position(self.done);
        } else if !quiet && (self.last_line.elapsed().as_secs() >= 2 || self.done == self.total) {
            self.last_line = Instant::now();
            let secs = self.started.elapsed().as_secs_f64().max(1e-3);
            eprintln!(
                "import: {}/{} objects ({:.0}/s)",
                self.done,
                self.total,
                self.done as f64 / secs
            );
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

async fn import_stix(c: &ConnArgs, a: ImportStixArgs, out: Output) -> anyhow::Result<()> {
    let files = bundle_files(&a.path)?;
    let quiet = matches!(out, Output::Json);
    // Read every file first: a file that is not a bundle is refused before anything is sent.
    let mut loaded = Vec::new();
    let mut t = Tally::default();
    for f in &files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let bundle = stix::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()));
        match bundle.and_then(|mut b| {
            let objects = match b.get_mut("objects") {
                Some(Value::Array(o)) if !o.is_empty() => std::mem::take(o),
                _ => bail!("{}: not a STIX bundle with objects", f.display()),
            };
            if b.get("type").and_then(Value::as_str) != Some("bundle") {
                bail!(
                    "{}: the top-level object's type is not \"bundle\"",
                    f.display()
                );
            }
            Ok(objects)
        }) {
            Ok(objects) => {
                t.objects += objects.len();
                loaded.push((f.display().to_string(), objects));
            }
            Err(e) => t
                .refused
                .push((f.display().to_string(), String::new(), e.to_string())),
        }
    }
    t.files = loaded.len();
    let conn = c.connect()?;
    let mut client = conn.client();
    let mut progress = Progress::new(t.objects as u64, quiet);
    for (file, objects) in loaded {
        let mut offset = 0usize;
        for chunk in chunks(objects) {
            let n = chunk.len();
            let bundle = json!({
                "type": "bundle",
                "id": format!("bundle--{}", uuid::Builder::from_random_bytes(rand::random()).into_uuid()),
                "objects": chunk,
            });
            let r = client
                .import_stix(pb::ImportStixRequest {
                    bundle: bundle.to_string(),
                    level: pb::Level::from(a.target.level) as i32,
                    marking: Some(pb::Marking {
                        tlp: pb::Tlp::from(a.target.tlp) as i32,
                        classification: String::new(),
                        exercise: a.target.exercise,
                    }),
                    cluster: a.target.cluster.clone().unwrap_or_default(),
                    recipients: a.target.to.clone(),
                    no_reshare: a.target.no_reshare,
                })
                .await;
            match r {
                Ok(r) => {
                    let r = r.into_inner();
                    t.published += r.objects_published as usize;
                    t.skipped += r.objects_skipped as usize;
                    if let Some(p) = r.published {
                        t.messages.push(p.id);
                    }
                    for x in r.refused {
                        let at = format!("{file} object {}", offset + x.index as usize);
                        t.refused.push((at, x.id, x.reason));
                    }
                }
                // A refusal of the whole chunk (routing, size): report it, go on with the rest.
                Err(s)
                    if s.code() == tonic::Code::InvalidArgument
                        || s.code() == tonic::Code::PermissionDenied
                        || s.code() == tonic::Code::FailedPrecondition =>
                {
                    let at = format!("{file} objects {offset}..{}", offset + n);
                    t.refused.push((at, String::new(), s.message().to_string()));
                }
                Err(s) => {
                    progress.finish();
                    return Err(status_err(&conn, s));
                }
            }
            offset += n;
            progress.add(n as u64, quiet);
        }
    }
    progress.finish();
    let secs = progress.started.elapsed().as_secs_f64();
    match out {
        Output::Json => println!(
            "{}",
            json!({
                "files": t.files, "objects": t.objects, "published": t.published,
                "skipped": t.skipped, "messages": t.messages, "seconds": secs,
                "refused": t.refused.iter().map(|(at, id, reason)| json!({"at": at, "id": id, "reason": reason})).collect::<Vec<_>>(),
            })
        ),
        Output::Table => {
            println!(
                "imported {} file(s), {} objects in {:.1} s: {} published in {} message(s), {} already published (skipped), {} refused",
                t.files,
                t.objects,
                secs,
                t.published,
                t.messages.len(),
                t.skipped,
                t.refused.len()
            );
            for (at, id, reason) in &t.refused {
                let id = if id.is_empty() {
                    String::new()
                } else {
                    format!(" {id}")
                };
                println!("  refused {at}{id}: {reason}");
            }
        }
    }
    if !t.refused.is_empty() {
        bail!(
            "{} refused (listed above); everything else was imported: fix those and import again — nothing is published twice",
            plural(
                t.refused.len(),
                "object or file was",
                "objects or files were"
            )
        );
    }
    Ok(())
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

async fn export_stix(c: &ConnArgs, a: ExportStixArgs, out: Output) -> anyhow::Result<()> {
    let since = a
        .since
        .as_deref()
        .map(crate::audit_cmd::parse_time)
        .transpose()?;
    let conn = c.connect()?;
    let mut stream = conn
        .client()
        .subscribe(pb::SubscribeRequest {
            no_follow: true,
            clusters: a.cluster.clone(),
            ..Default::default()
        })
        .await
        .map_err(|s| status_err(&conn, s))?
        .into_inner();
    let mut messages = Vec::new();
    while let Some(item) = stream.message().await.map_err(|s| status_err(&conn, s))? {
        let Some(content) = item.content else {
            continue;
        };
        if since.is_some_and(|s| content.created_at_ms < s) {
            continue;
        }
        let tlp = item
            .effective_marking
            .as_ref()
            .or(content.marking.as_ref())
            .and_then(|m| pb::Tlp::try_from(m.tlp).ok())
            .unwrap_or_default();
        messages.push((content, tlp));
    }
    let (bundle, n) = stix::export::export_bundle(&messages);
    let text = serde_json::to_string_pretty(&bundle)?;
    match &a.out {
        Some(path) => {
            std::fs::write(path, text.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            match out {
                Output::Json => println!(
                    "{}",
                    json!({"out": path, "messages": messages.len(), "objects": n})
                ),
                Output::Table => println!(
                    "wrote {} STIX objects from {} messages to {}",
                    n,
                    messages.len(),
                    path.display()
                ),
            }
        }
        None => {
            let mut stdout = std::io::stdout();
            let _ = writeln!(stdout, "{text}");
        }
    }
    Ok(())
}
