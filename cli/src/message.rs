//! Messages through your node: publish (directly or to a cluster), get,
//! retract, mark and re-share.

use bluewire_proto::v1 as pb;
use clap::Args;

use crate::Output;
use crate::args::{KindArg, LevelArg, SeverityArg, TlpArg};
use crate::connection::{ConnArgs, status_err};
use crate::feed::{feed_json, feed_line};

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
    /// Encrypt the body end to end to the --to organisations (and yours): nodes and files
    /// on the way hold only ciphertext. Free text and incident reports.
    #[arg(long)]
    pub encrypt: bool,
    #[command(flatten)]
    pub incident: IncidentArgs,
}

/// How an incident report is classified and what it reports for (incidents only).
#[derive(Debug, Default, Args)]
pub struct IncidentArgs {
    /// ENISA RSIT classification CLASS/TYPE, e.g. intrusions/system-compromise.
    #[arg(long)]
    pub taxonomy: Option<String>,
    /// NIS2 sector codes (comma-separated), e.g. health,energy-electricity.
    #[arg(long, value_delimiter = ',')]
    pub nis2_sector: Vec<String>,
    /// The impact, in words.
    #[arg(long)]
    pub impact: Option<String>,
    /// The earlier report this one replaces (ID or ORIGIN/ID).
    #[arg(long)]
    pub supersedes: Option<String>,
    /// The crisis case this report is for (ID or ORIGIN/ID); published in the case's cluster.
    #[arg(long)]
    pub case: Option<String>,
    /// The NIS2 Article 23 stage this report fulfils (with --case).
    #[arg(long, value_enum)]
    pub nis2_stage: Option<Nis2StageArg>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Nis2StageArg {
    EarlyWarning,
    Notification,
    Intermediate,
    Final,
}

impl IncidentArgs {
    fn is_set(&self) -> bool {
        self.taxonomy.is_some()
            || !self.nis2_sector.is_empty()
            || self.impact.is_some()
            || self.supersedes.is_some()
            || self.case.is_some()
            || self.nis2_stage.is_some()
    }

    fn apply(&self, i: &mut pb::IncidentReport) {
        if let Some(t) = &self.taxonomy {
            let (class, ty) = t.split_once('/').unwrap_or((t, ""));
            (i.taxonomy_class, i.taxonomy_type) = (class.to_string(), ty.to_string());
        }
        i.nis2_sectors = self.nis2_sector.clone();
        i.impact = self.impact.clone().unwrap_or_default();
        i.supersedes = self.supersedes.as_deref().map(crate::case_cmd::mref);
        i.case = self.case.as_deref().map(crate::case_cmd::mref);
        i.nis2_stage = match self.nis2_stage {
            None => pb::Nis2Stage::Unspecified,
            Some(Nis2StageArg::EarlyWarning) => pb::Nis2Stage::EarlyWarning,
            Some(Nis2StageArg::Notification) => pb::Nis2Stage::Notification,
            Some(Nis2StageArg::Intermediate) => pb::Nis2Stage::Intermediate,
            Some(Nis2StageArg::Final) => pb::Nis2Stage::Final,
        } as i32;
    }
}

impl PublishCmd {
    pub fn request(&self) -> anyhow::Result<pb::PublishRequest> {
        let mut r = build_publish_in(&self.args, self.cluster.as_deref().unwrap_or(""));
        r.scope_sectors = self.scope_sector.clone();
        r.scope_countries = self.scope_country.clone();
        r.no_reshare = self.no_reshare;
        r.encrypt = self.encrypt;
        match r.body.as_mut() {
            Some(pb::publish_request::Body::Incident(i)) => self.incident.apply(i),
            _ if self.incident.is_set() => anyhow::bail!(
                "--taxonomy, --nis2-sector, --impact, --supersedes, --case and --nis2-stage describe an incident report: add --kind incident"
            ),
            _ => {}
        }
        Ok(r)
    }
}

pub fn build_publish(a: &PublishArgs) -> pb::PublishRequest {
    build_publish_in(a, "")
}

/// The request for `a`, published to `cluster` ("" for a direct message).
pub fn build_publish_in(a: &PublishArgs, cluster: &str) -> pb::PublishRequest {
    let body = match a.kind {
        KindArg::Text | KindArg::SituationReport | KindArg::PublicCommunication => {
            pb::publish_request::Body::FreeText(pb::FreeText {
                title: a.title.clone(),
                body: a.body.clone(),
            })
        }
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

pub async fn publish(c: &ConnArgs, a: PublishCmd, out: Output) -> anyhow::Result<()> {
    let conn = c.connect()?;
    let r = conn
        .client()
        .publish(a.request()?)
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
pub fn report_routing(r: &pb::PublishResponse, headline: &str, cluster: &str, out: Output) {
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
