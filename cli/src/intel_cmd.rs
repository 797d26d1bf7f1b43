//! Threat feeds in the formats CSIRT tools speak: `bluewire import stix FILE|DIR`,
//! `bluewire import misp EVENT.json|FEED_DIR`, `bluewire export stix` and `bluewire export
//! misp --out DIR`. Import sends STIX objects in chunks to the node, which checks every
//! object, skips what this organisation already published at the same version and publishes
//! the rest as signed stix-bundle messages (MISP events are converted first, each to its own
//! messages, node/src/misp.rs); export turns the feed this user may read into one STIX 2.1
//! bundle (node/src/stix/export.rs) or a MISP feed directory.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use bluewire_node::{misp, stix};
use bluewire_proto::v1 as pb;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::Output;
use crate::args::{LevelArg, TlpArg};
use crate::connection::{ConnArgs, status_err};

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Publish STIX 2.1 bundles (a .json file, or every .json file in a directory).
    Stix(ImportStixArgs),
    /// Publish MISP events (an event .json file, or a MISP feed directory with manifest.json),
    /// converted to STIX 2.1; marked and routed by their TLP tags and distribution.
    Misp(ImportMispArgs),
    /// Publish indicators from a CSV file: a header row, one indicator per row; --map says
    /// what each column is (e.g. --map ip=ipv4-addr:value,note=description).
    Csv(ImportCsvArgs),
}

#[derive(Debug, Args)]
pub struct ImportCsvArgs {
    /// The CSV file (UTF-8, comma-separated, a header row).
    pub file: PathBuf,
    /// COLUMN=TARGET pairs (comma-separated or repeated): an object path such as
    /// ipv4-addr:value, domain-name:value, url:value, file:hashes.'SHA-256', or one of name,
    /// description, valid_from, valid_until, labels, indicator_types, confidence, tlp.
    #[arg(long, required = true)]
    pub map: Vec<String>,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// The messages you may read, as one STIX 2.1 bundle.
    Stix(ExportStixArgs),
    /// The messages you may read, as a MISP feed directory (manifest.json and UUID.json per
    /// event) that MISP can add as a feed.
    Misp(ExportMispArgs),
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

/// Which messages an export takes.
#[derive(Debug, Args)]
pub struct Scope {
    /// Only messages of these clusters (comma-separated ids or names).
    #[arg(long, value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// Only messages created at or after this time (RFC 3339 or unix milliseconds).
    #[arg(long)]
    pub since: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExportStixArgs {
    #[command(flatten)]
    pub scope: Scope,
    /// Write the bundle here (default: standard output).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ImportMispArgs {
    /// A MISP event file ({"Event": …}, or a list of them), or a MISP feed directory
    /// (manifest.json and UUID.json per event; without a manifest, every .json file in it).
    pub path: PathBuf,
    /// The least strict TLP the import gives: an event's tlp: tag and its distribution may
    /// only make a message stricter. GREEN: MISP's "all communities" is community sharing, not
    /// public (give CLEAR to let a tlp:clear tag publish as CLEAR).
    #[arg(long, value_enum, default_value = "GREEN")]
    pub tlp: TlpArg,
    #[arg(long, value_enum, default_value_t = LevelArg::Technical)]
    pub level: LevelArg,
    /// Publish to this cluster (only its members receive it); needed for events of
    /// distribution 1 (this community only).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Map a MISP sharing group to a cluster, UUID=CLUSTER (repeatable): events of
    /// distribution 4 go to the mapped cluster; an unmapped group's events are refused.
    #[arg(long = "sharing-group", value_name = "UUID=CLUSTER", value_parser = parse_sharing_group)]
    pub sharing_group: Vec<(String, String)>,
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

fn parse_sharing_group(s: &str) -> Result<(String, String), String> {
    let (uuid, cluster) = s.split_once('=').ok_or_else(|| {
        format!("{s:?} is not UUID=CLUSTER (a MISP sharing group's uuid, then a cluster)")
    })?;
    let uuid = uuid::Uuid::try_parse(uuid.trim())
        .map_err(|_| format!("{uuid:?} is not a sharing group uuid"))?;
    let cluster = cluster.trim();
    if cluster.is_empty() {
        return Err(format!("{s:?} names no cluster"));
    }
    Ok((uuid.to_string(), cluster.to_string()))
}

#[derive(Debug, Args)]
pub struct ExportMispArgs {
    #[command(flatten)]
    pub scope: Scope,
    /// The feed directory to write (created if missing): manifest.json and UUID.json per event.
    #[arg(long)]
    pub out: PathBuf,
}

pub async fn import(c: &ConnArgs, cmd: ImportCommand, out: Output) -> anyhow::Result<()> {
    match cmd {
        ImportCommand::Stix(a) => import_stix(c, a, out).await,
        ImportCommand::Csv(a) => import_csv(c, a, out).await,
        ImportCommand::Misp(a) => import_misp(c, a, out).await,
    }
}

pub async fn export(c: &ConnArgs, cmd: ExportCommand, out: Output) -> anyhow::Result<()> {
    match cmd {
        ExportCommand::Stix(a) => export_stix(c, a, out).await,
        ExportCommand::Misp(a) => export_misp(c, a, out).await,
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

/// What an import did, for the summary.
#[derive(Default)]
struct Tally {
    files: usize,
    objects: usize,
    published: usize,
    skipped: usize,
    messages: Vec<String>,
    refused: Vec<(String, String, String)>,
    /// What a conversion left out (source, what, why): listed, not an error.
    not_converted: Vec<(String, String, String)>,
}

/// The objects of one source (a bundle file, a MISP event), sent in chunks, and where they go.
struct Batch {
    /// Where the objects came from, for the summary (a file, an event).
    source: String,
    objects: Vec<Value>,
    tlp: pb::Tlp,
    cluster: Option<String>,
}

/// How every message of an import is published.
struct Route {
    level: pb::Level,
    recipients: Vec<String>,
    no_reshare: bool,
    exercise: bool,
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
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                let why = format!("{}: cannot be read as UTF-8 text: {e}", f.display());
                t.refused
                    .push((f.display().to_string(), String::new(), why));
                continue;
            }
        };
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
    let batches = loaded
        .into_iter()
        .map(|(source, objects)| Batch {
            source,
            objects,
            tlp: pb::Tlp::from(a.target.tlp),
            cluster: a.target.cluster.clone(),
        })
        .collect();
    let route = Route {
        level: pb::Level::from(a.target.level),
        recipients: a.target.to.clone(),
        no_reshare: a.target.no_reshare,
        exercise: a.target.exercise,
    };
    let started = Instant::now();
    send(c, &route, batches, &mut t, quiet).await?;
    summary(
        &t,
        started,
        out,
        "file",
        "object or file was",
        "objects or files were",
    )
}

/// Send every batch to the node in chunks, with progress; a chunk the node refuses as a
/// whole is listed and the rest goes on.
async fn send(
    c: &ConnArgs,
    route: &Route,
    batches: Vec<Batch>,
    t: &mut Tally,
    quiet: bool,
) -> anyhow::Result<()> {
    let conn = c.connect()?;
    let mut client = conn.client();
    let total: usize = batches.iter().map(|b| b.objects.len()).sum();
    let mut progress = Progress::new(total as u64, quiet);
    for Batch {
        source: file,
        objects,
        tlp,
        cluster,
    } in batches
    {
        let mut offset = 0usize;
        for chunk in bluewire_node::intel::chunks(objects) {
            let n = chunk.len();
            let bundle = json!({
                "type": "bundle",
                "id": format!("bundle--{}", uuid::Builder::from_random_bytes(rand::random()).into_uuid()),
                "objects": chunk,
            });
            let r = client
                .import_stix(pb::ImportStixRequest {
                    bundle: bundle.to_string(),
                    level: route.level as i32,
                    marking: Some(pb::Marking {
                        tlp: tlp as i32,
                        classification: String::new(),
                        exercise: route.exercise,
                    }),
                    cluster: cluster.clone().unwrap_or_default(),
                    recipients: route.recipients.clone(),
                    no_reshare: route.no_reshare,
                })
                .await;
            match r {
                Ok(r) => {
                    let r = r.into_inner();
                    t.published += r.objects_published as usize;
                    t.skipped += r.objects_skipped as usize;
                    t.messages.extend(r.published.into_iter().map(|p| p.id));
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
                    eprintln!(
                        "stopped after {} of {total} objects ({} published in {} message(s), {} skipped): run the same import again to finish; what was published is skipped",
                        progress.done,
                        t.published,
                        t.messages.len(),
                        t.skipped
                    );
                    return Err(status_err(&conn, s));
                }
            }
            offset += n;
            progress.add(n as u64, quiet);
        }
    }
    progress.finish();
    Ok(())
}

/// Print what an import did; an error (non-zero exit) when anything was refused. `unit` is
/// what the import read (file, event); `one`/`many` name what can be refused.
fn summary(
    t: &Tally,
    started: Instant,
    out: Output,
    unit: &str,
    one: &str,
    many: &str,
) -> anyhow::Result<()> {
    let secs = started.elapsed().as_secs_f64();
    match out {
        Output::Json => {
            let mut v = json!({
                "files": t.files, "objects": t.objects, "published": t.published,
                "skipped": t.skipped, "messages": t.messages, "seconds": secs,
                "refused": t.refused.iter().map(|(at, id, reason)| json!({"at": at, "id": id, "reason": reason})).collect::<Vec<_>>(),
            });
            if !t.not_converted.is_empty() {
                v["not_converted"] = t
                    .not_converted
                    .iter()
                    .map(|(at, what, why)| json!({"at": at, "what": what, "why": why}))
                    .collect();
            }
            println!("{v}");
        }
        Output::Table => {
            println!(
                "imported {} {unit}(s), {} objects in {:.1} s: {} published in {} message(s), {} already published (skipped), {} refused",
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
            if !t.not_converted.is_empty() {
                println!(
                    "  {} not converted (no STIX form, or MISP did not let it be shared):",
                    t.not_converted.len()
                );
                let mut source = None;
                for (at, what, why) in &t.not_converted {
                    if source != Some(at) {
                        println!("    {at}:");
                        source = Some(at);
                    }
                    println!("      {what}: {why}");
                }
            }
        }
    }
    if !t.refused.is_empty() {
        bail!(
            "{} refused (listed above); everything else was imported: fix those and import again — nothing is published twice",
            plural(t.refused.len(), one, many)
        );
    }
    Ok(())
}

/// MISP events in `path`: a file (one event, or a list of them), a feed directory (the
/// events its manifest.json lists), or a directory of event files. Each with where it came
/// from, or why it could not be read.
fn misp_events(path: &Path) -> anyhow::Result<Vec<(String, Result<Value, String>)>> {
    let read = |p: &Path| -> Result<Value, String> {
        let text = std::fs::read_to_string(p).map_err(|e| format!("reading it: {e}"))?;
        serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))
    };
    let manifest = path.join("manifest.json");
    if path.is_dir() && manifest.is_file() {
        let m = read(&manifest).map_err(|e| anyhow::anyhow!("{}: {e}", manifest.display()))?;
        let uuids =
            misp::feed_events(&m).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        return Ok(uuids
            .into_iter()
            .map(|u| {
                let f = path.join(format!("{u}.json"));
                (f.display().to_string(), read(&f))
            })
            .collect());
    }
    let mut out = Vec::new();
    for f in bundle_files(path)? {
        let source = f.display().to_string();
        match read(&f) {
            // A list of events, or MISP's REST answer {"response": [...]}.
            Ok(Value::Array(events)) => {
                out.extend(events.into_iter().map(|e| (source.clone(), Ok(e))))
            }
            Ok(Value::Object(mut o)) if matches!(o.get("response"), Some(Value::Array(_))) => {
                if let Some(Value::Array(events)) = o.remove("response") {
                    out.extend(events.into_iter().map(|e| (source.clone(), Ok(e))));
                }
            }
            other => out.push((source, other)),
        }
    }
    Ok(out)
}

async fn import_misp(c: &ConnArgs, a: ImportMispArgs, out: Output) -> anyhow::Result<()> {
    let quiet = matches!(out, Output::Json);
    let opts = misp::MispOptions {
        tlp: pb::Tlp::from(a.tlp),
        cluster: a.cluster.clone(),
        sharing_groups: a.sharing_group.iter().cloned().collect(),
    };
    // Convert every event first: an event that may not or cannot be imported is refused
    // before anything is sent.
    let mut t = Tally::default();
    let mut batches = Vec::new();
    for (source, event) in misp_events(&a.path)? {
        let converted = event.and_then(|e| {
            let label = e
                .get("Event")
                .unwrap_or(&e)
                .get("uuid")
                .and_then(Value::as_str)
                .map(|u| format!("event {u}"));
            misp::event_to_stix(&e, &opts).map_err(|why| match label {
                Some(l) => format!("{l}: {why}"),
                None => why,
            })
        });
        match converted {
            Ok(conv) => {
                t.files += 1;
                t.objects += conv.objects.len();
                let label = format!("event {} ({})", conv.event_uuid, conv.info);
                t.not_converted.extend(
                    conv.skipped
                        .into_iter()
                        .map(|(what, why)| (label.clone(), what, why)),
                );
                if !conv.objects.is_empty() {
                    batches.push(Batch {
                        source: label,
                        objects: conv.objects,
                        tlp: conv.tlp,
                        cluster: conv.cluster,
                    });
                }
            }
            Err(why) => t.refused.push((source, String::new(), why)),
        }
    }
    let route = Route {
        level: pb::Level::from(a.level),
        recipients: a.to.clone(),
        no_reshare: a.no_reshare,
        exercise: a.exercise,
    };
    let started = Instant::now();
    send(c, &route, batches, &mut t, quiet).await?;
    summary(
        &t,
        started,
        out,
        "event",
        "object or event was",
        "objects or events were",
    )
}

async fn import_csv(c: &ConnArgs, a: ImportCsvArgs, out: Output) -> anyhow::Result<()> {
    let map = crate::csv_import::parse_map(&a.map).map_err(|e| anyhow::anyhow!(e))?;
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {} (UTF-8 CSV)", a.file.display()))?;
    // Rows without valid_from are dated by the file, so re-importing it skips them.
    let modified = std::fs::metadata(&a.file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(0))
        .unwrap_or(0);
    let rows = crate::csv_import::convert(&text, &map, &stix::export::timestamp(modified))
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.file.display()))?;
    let source = a.file.display().to_string();
    let mut t = Tally {
        files: 1,
        objects: rows.objects.len(),
        ..Tally::default()
    };
    for (row, why) in rows.refused {
        t.refused
            .push((format!("{source} row {row}"), String::new(), why));
    }
    let batches = vec![Batch {
        source,
        objects: rows.objects,
        tlp: pb::Tlp::from(a.target.tlp),
        cluster: a.target.cluster.clone(),
    }];
    let route = Route {
        level: pb::Level::from(a.target.level),
        recipients: a.target.to.clone(),
        no_reshare: a.target.no_reshare,
        exercise: a.target.exercise,
    };
    let started = Instant::now();
    send(c, &route, batches, &mut t, matches!(out, Output::Json)).await?;
    summary(
        &t,
        started,
        out,
        "file",
        "row or object was",
        "rows or objects were",
    )
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// The messages this user may read (of `clusters`, created at or after `since`), each with
/// its marking in force.
async fn read_feed(
    c: &ConnArgs,
    clusters: &[String],
    since: Option<&str>,
) -> anyhow::Result<Vec<(pb::Content, pb::Tlp)>> {
    let since = since.map(crate::audit_cmd::parse_time).transpose()?;
    let conn = c.connect()?;
    let mut stream = conn
        .client()
        .subscribe(pb::SubscribeRequest {
            no_follow: true,
            clusters: clusters.to_vec(),
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
    Ok(messages)
}

async fn export_stix(c: &ConnArgs, a: ExportStixArgs, out: Output) -> anyhow::Result<()> {
    let messages = read_feed(c, &a.scope.cluster, a.scope.since.as_deref()).await?;
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

async fn export_misp(c: &ConnArgs, a: ExportMispArgs, out: Output) -> anyhow::Result<()> {
    let messages = read_feed(c, &a.scope.cluster, a.scope.since.as_deref()).await?;
    let events: Vec<Value> = messages
        .iter()
        .filter_map(|(content, tlp)| misp::message_to_event(content, *tlp))
        .collect();
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("creating the directory {}", a.out.display()))?;
    let mut attributes = 0;
    for e in &events {
        let ev = &e["Event"];
        attributes += ev["Attribute"].as_array().map_or(0, Vec::len);
        let uuid = ev["uuid"].as_str().unwrap_or_default();
        let path = a.out.join(format!("{uuid}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(e)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    // Written last: MISP reads the manifest first, so it never lists an event not yet there.
    let manifest = a.out.join("manifest.json");
    std::fs::write(
        &manifest,
        serde_json::to_vec_pretty(&misp::feed_manifest(&events))?,
    )
    .with_context(|| format!("writing {}", manifest.display()))?;
    match out {
        Output::Json => println!(
            "{}",
            json!({"out": a.out, "messages": messages.len(), "events": events.len(), "attributes": attributes})
        ),
        Output::Table => println!(
            "wrote {} MISP events ({} attributes) from {} messages to {} (manifest.json and one UUID.json per event): add it in MISP as a feed in MISP format",
            events.len(),
            attributes,
            messages.len(),
            a.out.display()
        ),
    }
    Ok(())
}
