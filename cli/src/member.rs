//! Member and operator commands against one node: publish (directly or to a
//! cluster), subscribe, get, status, peers, rejections. Which node and which certificate come from
//! flags or a small client config file.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use bluewire_node::client::{Connection, explain_status};
pub use bluewire_node::envelope::{level_label, tlp_label};
use bluewire_proto::v1 as pb;
use clap::{Args, ValueEnum};
use serde::Deserialize;

use crate::Output;
use crate::output::{table, ts};

/// Where the node is and who we are.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// Client config file (TOML: node, ca, cert, key). Default: ./bluewire-client.toml if present.
    #[arg(long, global = true, env = "BLUEWIRE_CLIENT_CONFIG")]
    pub client_config: Option<PathBuf>,
    /// Node endpoint, https://HOST:PORT.
    #[arg(long, global = true)]
    pub node: Option<String>,
    /// Federation root CA certificate.
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,
    /// Your user certificate (issued by `bluewire pki issue-user`).
    #[arg(long, global = true)]
    pub cert: Option<PathBuf>,
    /// Your user key.
    #[arg(long, global = true)]
    pub key: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    node: Option<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

impl ConnArgs {
    pub fn connect(&self) -> anyhow::Result<Connection> {
        let mut node = self.node.clone();
        let mut ca = self.ca.clone();
        let mut cert = self.cert.clone();
        let mut key = self.key.clone();
        let file = match &self.client_config {
            Some(p) => Some(p.clone()),
            None => Some(PathBuf::from("bluewire-client.toml")).filter(|p| p.exists()),
        };
        if let Some(path) = file {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read client config {}", path.display()))?;
            let f: ClientFile = toml::from_str(&text)
                .with_context(|| format!("client config {} is not valid", path.display()))?;
            let base = path.parent().unwrap_or(Path::new("."));
            let abs = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
            node = node.or(f.node);
            ca = ca.or(f.ca.map(abs));
            cert = cert.or(f.cert.map(abs));
            key = key.or(f.key.map(abs));
        }
        let missing = |what: &str| {
            anyhow!(
                "no {what}: pass --{what} or --client-config FILE (written by `bluewire pki issue-user` as client.toml)"
            )
        };
        let node = node.ok_or_else(|| missing("node"))?;
        let ca = ca.ok_or_else(|| missing("ca"))?;
        let cert = cert.ok_or_else(|| missing("cert"))?;
        let key = key.ok_or_else(|| missing("key"))?;
        Connection::open(&node, &ca, &cert, &key).map_err(|e| anyhow!(e))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    Text,
    Incident,
    SituationReport,
    CrisisStatus,
    Assessment,
    PublicCommunication,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LevelArg {
    Technical,
    Operational,
    Political,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlpArg {
    #[value(name = "CLEAR", alias = "clear", alias = "WHITE", alias = "white")]
    Clear,
    #[value(name = "GREEN", alias = "green")]
    Green,
    #[value(name = "AMBER", alias = "amber")]
    Amber,
    #[value(
        name = "AMBER+STRICT",
        alias = "amber+strict",
        alias = "AMBER_STRICT",
        alias = "amber-strict"
    )]
    AmberStrict,
    #[value(name = "RED", alias = "red")]
    Red,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SeverityArg {
    Low,
    Medium,
    High,
    Critical,
}

impl From<KindArg> for pb::Kind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Text => pb::Kind::FreeText,
            KindArg::Incident => pb::Kind::IncidentReport,
            KindArg::SituationReport => pb::Kind::SituationReport,
            KindArg::CrisisStatus => pb::Kind::CrisisStatus,
            KindArg::Assessment => pb::Kind::Assessment,
            KindArg::PublicCommunication => pb::Kind::PublicCommunication,
        }
    }
}
impl From<LevelArg> for pb::Level {
    fn from(l: LevelArg) -> Self {
        match l {
            LevelArg::Technical => pb::Level::Technical,
            LevelArg::Operational => pb::Level::Operational,
            LevelArg::Political => pb::Level::Political,
        }
    }
}
impl From<TlpArg> for pb::Tlp {
    fn from(t: TlpArg) -> Self {
        match t {
            TlpArg::Clear => pb::Tlp::Clear,
            TlpArg::Green => pb::Tlp::Green,
            TlpArg::Amber => pb::Tlp::Amber,
            TlpArg::AmberStrict => pb::Tlp::AmberStrict,
            TlpArg::Red => pb::Tlp::Red,
        }
    }
}
impl From<SeverityArg> for pb::Severity {
    fn from(s: SeverityArg) -> Self {
        match s {
            SeverityArg::Low => pb::Severity::Low,
            SeverityArg::Medium => pb::Severity::Medium,
            SeverityArg::High => pb::Severity::High,
            SeverityArg::Critical => pb::Severity::Critical,
        }
    }
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    #[arg(long, value_enum, default_value_t = KindArg::Text)]
    pub kind: KindArg,
    #[arg(long, value_enum)]
    pub level: LevelArg,
    #[arg(long, value_enum)]
    pub tlp: TlpArg,
    #[arg(long)]
    pub title: String,
    #[arg(long, default_value = "")]
    pub body: String,
    /// Only these organisations (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub to: Vec<String>,
    /// e.g. "EU RESTRICTED".
    #[arg(long, default_value = "")]
    pub classification: String,
    /// Mark as exercise traffic.
    #[arg(long)]
    pub exercise: bool,
    /// Incident severity (incidents only).
    #[arg(long, value_enum)]
    pub severity: Option<SeverityArg>,
    /// Affected sectors (incidents only, comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub sector: Vec<String>,
    /// Expire after this many seconds (0: never).
    #[arg(long, default_value_t = 0)]
    pub expires_in: i64,
}

/// `bluewire publish`: the message flags plus where it goes. Kept apart from
/// [`PublishArgs`] so code that builds messages (the demo) is unaffected.
#[derive(Debug, Args)]
pub struct PublishCmd {
    #[command(flatten)]
    pub args: PublishArgs,
    /// Publish to this cluster (id "<org>/<name>", or name when unambiguous):
    /// only its members receive it.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Only organisations certified for one of these sectors receive it.
    #[arg(long, value_delimiter = ',')]
    pub scope_sector: Vec<String>,
    /// Only organisations of these member states (or EU) receive it.
    #[arg(long, value_delimiter = ',')]
    pub scope_country: Vec<String>,
    /// Forbid re-sharing into other clusters or feeds.
    #[arg(long)]
    pub no_reshare: bool,
}

impl PublishCmd {
    pub fn request(&self) -> pb::PublishRequest {
        let mut r = build_publish_in(&self.args, self.cluster.as_deref().unwrap_or(""));
        r.scope_sectors = self.scope_sector.clone();
        r.scope_countries = self.scope_country.clone();
        r.no_reshare = self.no_reshare;
        r
    }
}

pub fn kind_name(k: i32) -> &'static str {
    match pb::Kind::try_from(k).unwrap_or(pb::Kind::Unspecified) {
        pb::Kind::FreeText => "text",
        pb::Kind::IncidentReport => "incident",
        pb::Kind::SituationReport => "situation-report",
        pb::Kind::CrisisStatus => "crisis-status",
        pb::Kind::Assessment => "assessment",
        pb::Kind::PublicCommunication => "public-communication",
        pb::Kind::MarkingChange => "marking-change",
        pb::Kind::Retraction => "retraction",
        pb::Kind::Unspecified => "?",
    }
}

pub fn build_publish(a: &PublishArgs) -> pb::PublishRequest {
    build_publish_in(a, "")
}

/// The request for `a`, published to `cluster` ("" for a direct message).
pub fn build_publish_in(a: &PublishArgs, cluster: &str) -> pb::PublishRequest {
    let body = match a.kind {
        KindArg::Text
        | KindArg::SituationReport
        | KindArg::CrisisStatus
        | KindArg::Assessment
        | KindArg::PublicCommunication => pb::publish_request::Body::FreeText(pb::FreeText {
            title: a.title.clone(),
            body: a.body.clone(),
        }),
        KindArg::Incident => pb::publish_request::Body::Incident(pb::IncidentReport {
            title: a.title.clone(),
            description: a.body.clone(),
            severity: a
                .severity
                .map(|s| pb::Severity::from(s) as i32)
                .unwrap_or(0),
            sectors: a.sector.clone(),
            ..Default::default()
        }),
    };
    let expires_at_ms = if a.expires_in > 0 {
        time::OffsetDateTime::now_utc().unix_timestamp() * 1000 + a.expires_in * 1000
    } else {
        0
    };
    pb::PublishRequest {
        kind: pb::Kind::from(a.kind) as i32,
        level: pb::Level::from(a.level) as i32,
        marking: Some(pb::Marking {
            tlp: pb::Tlp::from(a.tlp) as i32,
            classification: a.classification.clone(),
            exercise: a.exercise,
        }),
        recipients: a.to.clone(),
        cluster: cluster.to_string(),
        expires_at_ms,
        body: Some(body),
        ..Default::default()
    }
}

fn status_err(conn: &Connection, s: tonic::Status) -> anyhow::Error {
    anyhow!(explain_status(&conn.endpoint, &s))
}

pub async fn publish(c: &ConnArgs, a: PublishCmd, out: Output) -> anyhow::Result<()> {
    let conn = c.connect()?;
    let r = conn
        .client()
        .publish(a.request())
        .await
        .map_err(|s| status_err(&conn, s))?
        .into_inner();
    let headline = match &a.cluster {
        Some(cl) => format!("published {} (seq {}) in cluster {cl}", r.id, r.seq),
        None => format!("published {} (seq {})", r.id, r.seq),
    };
    report_routing(&r, &headline, a.cluster.as_deref().unwrap_or(""), out);
    Ok(())
}

/// Print where a publish or re-share went and where routing refused it.
fn report_routing(r: &pb::PublishResponse, headline: &str, cluster: &str, out: Output) {
    match out {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "id": r.id, "seq": r.seq, "cluster": cluster,
                "queued_for": r.queued_for,
                "refused": r.refused.iter().map(|d| serde_json::json!({"org": d.org, "rule": d.rule, "reason": d.reason})).collect::<Vec<_>>(),
            })
        ),
        Output::Table => {
            println!("{headline}");
            println!(
                "queued for: {}",
                if r.queued_for.is_empty() {
                    "nobody".to_string()
                } else {
                    r.queued_for.join(", ")
                }
            );
            for d in &r.refused {
                println!("not sent to {}: {} ({})", d.org, d.reason, d.rule);
            }
        }
    }
}

#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// Resume after this sequence number.
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    /// Named durable cursor kept by the node; committed after each message printed.
    #[arg(long)]
    pub durable: Option<String>,
    #[arg(long, value_enum, value_delimiter = ',')]
    pub kind: Vec<KindArg>,
    #[arg(long, value_enum, value_delimiter = ',')]
    pub level: Vec<LevelArg>,
    #[arg(long, value_delimiter = ',')]
    pub origin: Vec<String>,
    /// Only messages published to these clusters (comma-separated ids or names).
    #[arg(long, value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// Print the backlog and exit instead of following.
    #[arg(long)]
    pub no_follow: bool,
    /// Stop after this many messages.
    #[arg(long)]
    pub limit: Option<u64>,
}

/// One feed line for people.
pub fn feed_line(item: &pb::FeedItem) -> String {
    let c = item.content.clone().unwrap_or_default();
    let m = item
        .effective_marking
        .clone()
        .or(c.marking.clone())
        .unwrap_or_default();
    let title = match &c.body {
        Some(pb::content::Body::FreeText(t)) => t.title.clone(),
        Some(pb::content::Body::Incident(i)) => i.title.clone(),
        Some(pb::content::Body::MarkingChange(m)) => {
            format!("marking change for {}/{}", m.target_origin, m.target_id)
        }
        Some(pb::content::Body::Retraction(r)) => {
            format!("retraction of {}/{}", r.target_origin, r.target_id)
        }
        None => String::new(),
    };
    let verified = if item.verified {
        format!(
            "verified ({})",
            item.envelope
                .as_ref()
                .map(|e| e.key_id.as_str())
                .unwrap_or("")
        )
    } else {
        "NOT VERIFIED".to_string()
    };
    format!(
        "#{:<5} {}  from {:<11} {:<16} {:<11} {:<8} {}{}{}{}  [{}]",
        item.seq,
        ts(c.created_at_ms),
        c.origin_org,
        tlp_label(m.tlp),
        level_label(c.level),
        kind_name(c.kind),
        if c.cluster.is_empty() {
            String::new()
        } else {
            format!("[cluster {}] ", c.cluster)
        },
        if m.exercise { "[EXERCISE] " } else { "" },
        if m.classification.is_empty() {
            String::new()
        } else {
            format!("[{}] ", m.classification)
        },
        title,
        verified
    )
}

pub fn feed_json(item: &pb::FeedItem) -> serde_json::Value {
    let c = item.content.clone().unwrap_or_default();
    let m = item
        .effective_marking
        .clone()
        .or(c.marking.clone())
        .unwrap_or_default();
    let (title, body) = match &c.body {
        Some(pb::content::Body::FreeText(t)) => (t.title.clone(), t.body.clone()),
        Some(pb::content::Body::Incident(i)) => (i.title.clone(), i.description.clone()),
        Some(pb::content::Body::MarkingChange(m)) => (
            format!("marking change for {}/{}", m.target_origin, m.target_id),
            m.reason.clone(),
        ),
        Some(pb::content::Body::Retraction(r)) => (
            format!("retraction of {}/{}", r.target_origin, r.target_id),
            r.reason.clone(),
        ),
        None => (String::new(), String::new()),
    };
    serde_json::json!({
        "seq": item.seq, "id": c.id, "origin": c.origin_org, "author": c.author,
        "created_at_ms": c.created_at_ms, "kind": kind_name(c.kind), "level": level_label(c.level),
        "tlp": tlp_label(m.tlp), "classification": m.classification, "exercise": m.exercise,
        "recipients": c.recipients, "cluster": c.cluster, "cluster_index": c.cluster_index,
        "title": title, "body": body,
        "verified": item.verified, "signer_org": item.signer_org,
        "key_id": item.envelope.as_ref().map(|e| e.key_id.clone()).unwrap_or_default(),
        "received_from": item.received_from, "received_at_ms": item.received_at_ms,
    })
}

pub async fn subscribe(c: &ConnArgs, a: SubscribeArgs, out: Output) -> anyhow::Result<()> {
    let conn = c.connect()?;
    let req = pb::SubscribeRequest {
        after_seq: a.after,
        durable_name: a.durable.clone().unwrap_or_default(),
        kinds: a.kind.iter().map(|k| pb::Kind::from(*k) as i32).collect(),
        levels: a.level.iter().map(|l| pb::Level::from(*l) as i32).collect(),
        origins: a.origin.clone(),
        no_follow: a.no_follow,
        clusters: a.cluster.clone(),
    };
    let mut client = conn.client();
    let mut stream = client
        .subscribe(req)
        .await
        .map_err(|s| status_err(&conn, s))?
        .into_inner();
    let mut n = 0u64;
    while let Some(item) = stream.message().await.map_err(|s| status_err(&conn, s))? {
        let line = match out {
            Output::Json => feed_json(&item).to_string(),
            Output::Table => feed_line(&item),
        };
        // A closed pipe (`subscribe | head`) ends the subscription quietly.
        if writeln!(std::io::stdout(), "{line}").is_err() {
            return Ok(());
        }
        if let Some(name) = &a.durable {
            client
                .commit_cursor(pb::CommitCursorRequest {
                    durable_name: name.clone(),
                    seq: item.seq,
                })
                .await
                .map_err(|s| status_err(&conn, s))?;
        }
        n += 1;
        if a.limit.is_some_and(|l| n >= l) {
            break;
        }
    }
    Ok(())
}

pub async fn get(c: &ConnArgs, id: &str, out: Output) -> anyhow::Result<()> {
    let conn = c.connect()?;
    let item = conn
        .client()
        .get(pb::GetRequest { id: id.to_string() })
        .await
        .map_err(|s| status_err(&conn, s))?
        .into_inner();
    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(&feed_json(&item))?),
        Output::Table => {
            let j = feed_json(&item);
            println!("{}", feed_line(&item));
            println!("author: {}", j["author"].as_str().unwrap_or(""));
            println!("body:   {}", j["body"].as_str().unwrap_or(""));
        }
    }
    Ok(())
}

fn peer_rows(peers: &[pb::PeerStatus]) -> Vec<Vec<String>> {
    peers
        .iter()
        .map(|p| {
            vec![
                p.org.clone(),
                p.endpoint.clone(),
                if p.connected {
                    "up".into()
                } else if p.consecutive_failures > 0 {
                    "down".into()
                } else {
                    "idle".into()
                },
                p.outbox_depth.to_string(),
                p.delivered.to_string(),
                if p.kx_group.is_empty() {
                    "-".into()
                } else {
                    p.kx_group.clone()
                },
                ts(p.last_success_ms),
                p.last_error.clone(),
            ]
        })
        .collect()
}

fn peers_json(peers: &[pb::PeerStatus]) -> serde_json::Value {
    serde_json::Value::Array(
        peers
            .iter()
            .map(|p| {
                serde_json::json!({
                    "org": p.org, "endpoint": p.endpoint, "connected": p.connected,
                    "outbox_depth": p.outbox_depth, "delivered": p.delivered,
                    "consecutive_failures": p.consecutive_failures, "last_error": p.last_error,
                    "last_success_ms": p.last_success_ms, "kx_group": p.kx_group,
                })
            })
            .collect(),
    )
}

const PEER_HEADERS: [&str; 8] = [
    "PEER",
    "ENDPOINT",
    "LINK",
    "OUTBOX",
    "DELIVERED",
    "KX",
    "LAST OK",
    "LAST ERROR",
];

pub async fn status(c: &ConnArgs, out: Output) -> anyhow::Result<()> {
    let conn = c.connect()?;
    let s = conn
        .admin()
        .status(pb::StatusRequest {})
        .await
        .map_err(|s| status_err(&conn, s))?
        .into_inner();
    match out {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "org": s.org, "version": s.version, "listen": s.listen, "messages": s.messages,
                "last_seq": s.last_seq, "rejected": s.rejected, "started_at_ms": s.started_at_ms,
                "peers": peers_json(&s.peers),
            })
        ),
        Output::Table => {
            println!(
                "node {} v{} on {} — {} messages (last seq {}), {} rejected, up since {}",
                s.org,
                s.version,
                s.listen,
                s.messages,
                s.last_seq,
                s.rejected,
                ts(s.started_at_ms)
            );
            table(&PEER_HEADERS, &peer_rows(&s.peers));
        }
    }
    Ok(())
}

pub async fn peers(c: &ConnArgs, out: Output) -> anyhow::Result<()> {
    let conn = c.connect()?;
    let p = conn
        .admin()
        .peers(pb::PeersRequest {})
        .await
        .map_err(|s| status_err(&conn, s))?
        .into_inner();
    match out {
        Output::Json => println!("{}", peers_json(&p.peers)),
        Output::Table => table(&PEER_HEADERS, &peer_rows(&p.peers)),
    }
    Ok(())
}

pub async fn rejections(c: &ConnArgs, limit: u32, out: Output) -> anyhow::Result<()> {
    let conn = c.connect()?;
    let r = conn
        .admin()
        .rejections(pb::RejectionsRequest { limit })
        .await
        .map_err(|s| status_err(&conn, s))?
        .into_inner();
    match out {
        Output::Json => println!(
            "{}",
            serde_json::Value::Array(
                r.rejections
                    .iter()
                    .map(|x| serde_json::json!({"at_ms": x.at_ms, "from": x.from_peer, "id": x.id, "reason": x.reason}))
                    .collect()
            )
        ),
        Output::Table => table(
            &["AT", "FROM", "ID", "REASON"],
            &r.rejections
                .iter()
                .map(|x| vec![ts(x.at_ms), x.from_peer.clone(), x.id.clone(), x.reason.clone()])
                .collect::<Vec<_>>(),
        ),
    }
    Ok(())
}

pub async fn metrics(c: &ConnArgs) -> anyhow::Result<()> {
    let conn = c.connect()?;
    let m = conn
        .admin()
        .metrics(pb::MetricsRequest {})
        .await
        .map_err(|s| status_err(&conn, s))?
        .into_inner();
    print!("{}", m.text);
    Ok(())
}

async fn publish_control(
    c: &ConnArgs,
    kind: pb::Kind,
    body: pb::publish_request::Body,
    out: Output,
) -> anyhow::Result<()> {
    let conn = c.connect()?;
    let r = conn
        .client()
        .publish(pb::PublishRequest {
            kind: kind as i32,
            // The node aims it at the target's audience and level.
            level: pb::Level::Technical as i32,
            marking: Some(pb::Marking {
                tlp: pb::Tlp::Clear as i32,
                ..Default::default()
            }),
            body: Some(body),
            ..Default::default()
        })
        .await
        .map_err(|s| status_err(&conn, s))?
        .into_inner();
    match out {
        Output::Json => println!(
            "{}",
            serde_json::json!({"id": r.id, "seq": r.seq, "queued_for": r.queued_for})
        ),
        Output::Table => println!(
            "signed and sent as {} to {}",
            r.id,
            if r.queued_for.is_empty() {
                "nobody else".to_string()
            } else {
                r.queued_for.join(", ")
            }
        ),
    }
    Ok(())
}

pub async fn retract(c: &ConnArgs, id: String, reason: String, out: Output) -> anyhow::Result<()> {
    publish_control(
        c,
        pb::Kind::Retraction,
        // ID or ORIGIN/ID; the node resolves the target's origin.
        pb::publish_request::Body::Retraction(pb::Retraction {
            target_id: id,
            reason,
            target_origin: String::new(),
        }),
        out,
    )
    .await
}

pub async fn mark(
    c: &ConnArgs,
    id: String,
    tlp: TlpArg,
    classification: String,
    reason: String,
    out: Output,
) -> anyhow::Result<()> {
    publish_control(
        c,
        pb::Kind::MarkingChange,
        pb::publish_request::Body::MarkingChange(pb::MarkingChange {
            target_id: id,
            marking: Some(pb::Marking {
                tlp: pb::Tlp::from(tlp) as i32,
                classification,
                exercise: false,
            }),
            reason,
            target_origin: String::new(),
        }),
        out,
    )
    .await
}

pub async fn reshare(c: &ConnArgs, id: String, to: String, out: Output) -> anyhow::Result<()> {
    let conn = c.connect()?;
    let r = conn
        .client()
        .reshare(pb::ReshareRequest {
            message_id: id,
            to_cluster: to.clone(),
        })
        .await
        .map_err(|s| status_err(&conn, s))?
        .into_inner();
    let headline = format!("re-shared {} into {to}", r.id);
    report_routing(&r, &headline, &to, out);
    Ok(())
}
