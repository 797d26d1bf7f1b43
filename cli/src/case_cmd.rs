//! `bluewire case …` and `bluewire reserve …`: the crisis workflow through your node. Each
//! step is a signed workflow message; the node fills in the state it moves from and the
//! step it follows, and refuses what the case's state or your organisation's certified
//! functions do not allow. `list`, `show` and `timeline` print the case as your node derives
//! it from the messages it holds (`view`, with `reserve list`, `export` and `verify-bundle`).

use anyhow::{Context, bail};
use bluewire_proto::v1 as pb;
use clap::{Args, Subcommand, ValueEnum};

use crate::Output;
use crate::args::{LevelArg, TlpArg};
use crate::connection::{ConnArgs, status_err};
use crate::message::report_routing;
mod view;

use view::{export, list, reserve_list, show};
pub use view::{political, verify_bundle};

/// How a step is marked and whom it names.
#[derive(Debug, Clone, Args)]
pub struct StepArgs {
    /// The level to send at (default: the step's usual level).
    #[arg(long, value_enum)]
    pub level: Option<LevelArg>,
    #[arg(long, value_enum, default_value_t = TlpArg::Amber)]
    pub tlp: TlpArg,
    /// Only these organisations (comma-separated; TLP:RED needs them).
    #[arg(long, value_delimiter = ',')]
    pub recipients: Vec<String>,
    /// Mark as exercise traffic.
    #[arg(long)]
    pub exercise: bool,
    /// The case's cluster: needed only when your node holds none of the case's messages yet
    /// (then name the case as ORIGIN/ID).
    #[arg(long = "in")]
    pub in_cluster: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VerdictArg {
    #[value(alias = "potential-large-scale")]
    Potential,
    #[value(alias = "ongoing-large-scale")]
    Ongoing,
    #[value(alias = "not")]
    NotLargeScale,
}

impl From<VerdictArg> for pb::AssessmentState {
    fn from(v: VerdictArg) -> Self {
        match v {
            VerdictArg::Potential => pb::AssessmentState::PotentialLargeScale,
            VerdictArg::Ongoing => pb::AssessmentState::OngoingLargeScale,
            VerdictArg::NotLargeScale => pb::AssessmentState::NotLargeScale,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AssessArg {
    UnderAssessment,
    #[value(alias = "potential-large-scale")]
    Potential,
    #[value(alias = "ongoing-large-scale")]
    Ongoing,
    #[value(alias = "not")]
    NotLargeScale,
}

impl From<AssessArg> for pb::AssessmentState {
    fn from(v: AssessArg) -> Self {
        match v {
            AssessArg::UnderAssessment => pb::AssessmentState::UnderAssessment,
            AssessArg::Potential => pb::AssessmentState::PotentialLargeScale,
            AssessArg::Ongoing => pb::AssessmentState::OngoingLargeScale,
            AssessArg::NotLargeScale => pb::AssessmentState::NotLargeScale,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConfidenceArg {
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutlookArg {
    Improving,
    Stable,
    Worsening,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Monitoring,
    InformationSharing,
    FullActivation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CrisisArg {
    Established,
    Ceased,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AxisArg {
    Assessment,
    Political,
    Review,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackToArg {
    Observed,
    Escalated,
    UnderAssessment,
}

#[derive(Debug, Subcommand)]
pub enum CaseCommand {
    /// Open a case in a cluster (csirts-network or cyclone).
    Open {
        /// The cluster the case lives in (id or name).
        #[arg(long)]
        cluster: String,
        #[arg(long)]
        title: String,
        #[arg(long, default_value = "")]
        summary: String,
        /// The incident report it is opened from (ID or ORIGIN/ID).
        #[arg(long)]
        incident: Option<String>,
        /// Affected member states (comma-separated).
        #[arg(long, value_delimiter = ',')]
        country: Vec<String>,
        /// NIS2 sectors (comma-separated).
        #[arg(long, value_delimiter = ',')]
        sector: Vec<String>,
        /// Run the NIS2 Article 23 clocks for your organisation (early warning 24 h,
        /// notification 72 h, final report a month later), met by `publish --kind incident
        /// --case CASE --nis2-stage …`.
        #[arg(long)]
        nis2: bool,
        #[command(flatten)]
        step: StepArgs,
    },
    /// Escalate an observed case to EU-CyCLONe (csirts-network).
    Escalate {
        case: String,
        #[arg(long)]
        summary: String,
        #[arg(long, value_delimiter = ',', required = true)]
        country: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        sector: Vec<String>,
        /// The technical reports behind it (ID or ORIGIN/ID, comma-separated).
        #[arg(long, value_delimiter = ',')]
        report: Vec<String>,
        /// The level proposed.
        #[arg(long, value_enum, default_value_t = LevelArg::Operational)]
        propose: LevelArg,
        #[command(flatten)]
        step: StepArgs,
    },
    /// Advise EU-CyCLONe whether the incident is large-scale (csirts-network).
    Advise {
        case: String,
        #[arg(long, value_enum)]
        verdict: VerdictArg,
        #[arg(long, value_enum)]
        confidence: ConfidenceArg,
        #[arg(long)]
        rationale: String,
        #[command(flatten)]
        step: StepArgs,
    },
    /// Move the assessment: under assessment, then a verdict (cyclone).
    Assess {
        case: String,
        #[arg(long, value_enum)]
        to: AssessArg,
        /// Impact per sector, SECTOR=TEXT (repeatable).
        #[arg(long)]
        impact: Vec<String>,
        #[arg(long, default_value = "")]
        population: String,
        /// Member states it crosses into (comma-separated).
        #[arg(long, value_delimiter = ',')]
        cross_border: Vec<String>,
        #[arg(long, value_enum)]
        outlook: Option<OutlookArg>,
        #[arg(long, default_value = "")]
        rationale: String,
        #[command(flatten)]
        step: StepArgs,
    },
    /// Decide the crisis-response mode and crisis state (presidency; information-sharing
    /// also council-secretariat, commission, eeas).
    Status {
        case: String,
        #[arg(long, value_enum)]
        mode: Option<ModeArg>,
        #[arg(long, value_enum)]
        crisis: Option<CrisisArg>,
        #[arg(long, default_value = "")]
        rationale: String,
        #[command(flatten)]
        step: StepArgs,
    },
    /// Publish the next situation report (the ISAA contribution; cyclone or csirts-network).
    Sitrep {
        case: String,
        #[arg(long)]
        impact: String,
        #[arg(long, default_value = "")]
        consequences: String,
        #[arg(long, default_value = "")]
        response: String,
        #[arg(long, default_value = "")]
        recovery: String,
        #[command(flatten)]
        step: StepArgs,
    },
    /// Draft a public-communication line, or agree one (presidency, council-secretariat).
    Comms {
        case: String,
        #[arg(long)]
        text: String,
        /// Agree a draft (the latest, or the one named with --draft).
        #[arg(long)]
        agree: bool,
        #[arg(long)]
        draft: Option<String>,
        #[arg(long, default_value = "")]
        audience: String,
        #[command(flatten)]
        step: StepArgs,
    },
    /// Notify a space-services impact (cyclone → eeas) or the use of defence-initiative
    /// rapid-response teams.
    Notice {
        case: String,
        #[arg(long, value_enum)]
        about: NoticeArg,
        #[arg(long)]
        summary: String,
        #[command(flatten)]
        step: StepArgs,
    },
    /// Record lessons learned; `--final` closes the case (its opener or cyclone).
    Lessons {
        case: String,
        #[arg(long)]
        finding: Vec<String>,
        /// An action, "TEXT;OWNER[;DUE-DATE YYYY-MM-DD]" (repeatable).
        #[arg(long)]
        action: Vec<String>,
        #[arg(long = "final")]
        is_final: bool,
        #[command(flatten)]
        step: StepArgs,
    },
    /// Take an axis back (the axis owner): assessment, a ceased crisis, or a closed case.
    Reopen {
        case: String,
        #[arg(long, value_enum)]
        axis: AxisArg,
        #[arg(long)]
        reason: String,
        /// Assessment: back to this state (default under-assessment).
        #[arg(long, value_enum)]
        to: Option<BackToArg>,
        /// Political: establish the crisis again at once (default: back to no crisis).
        #[arg(long)]
        establish: bool,
        #[command(flatten)]
        step: StepArgs,
    },
    /// The cases your node holds, with their state and clocks.
    List {
        /// Evaluate clocks at this time (RFC 3339) instead of now.
        #[arg(long)]
        at: Option<String>,
    },
    /// One case: state, advice, situation report, reserve requests, clocks.
    Show {
        case: String,
        #[arg(long)]
        at: Option<String>,
    },
    /// Every message of a case your node holds, in order, with signer, level and marking.
    Timeline { case: String },
    /// Write an evidence bundle for an incident review: every signed envelope of the case
    /// your node holds and its signers' certificates (check it with `bluewire verify-bundle`).
    Export {
        case: String,
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NoticeArg {
    SpaceServices,
    DefenceInitiative,
}

#[derive(Debug, Subcommand)]
pub enum ReserveCommand {
    /// Request the EU Cybersecurity Reserve for a case (csirts-network or cyclone); due in 24 h.
    Request {
        case: String,
        /// Services needed (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        service: Vec<String>,
        #[arg(long)]
        entity: String,
        #[arg(long)]
        impact: String,
        #[arg(long, default_value = "")]
        mitigation: String,
        /// The incident has a military dimension (the Cyber Commanders are informed).
        #[arg(long)]
        military: bool,
        /// Part of a hybrid campaign (the Commission and the EEAS coordinate).
        #[arg(long)]
        hybrid: bool,
        #[command(flatten)]
        step: StepArgs,
    },
    /// Acknowledge a request (reserve-authority).
    Ack(ReserveUpdateArgs),
    /// Assign a provider (reserve-authority).
    Assign {
        #[command(flatten)]
        update: ReserveUpdateArgs,
        #[arg(long)]
        provider: String,
    },
    /// Record the service as delivered (reserve-authority): stops the 24 h clock.
    Delivered(ReserveUpdateArgs),
    /// Close a request (reserve-authority, or its requester).
    Close(ReserveUpdateArgs),
    /// Reserve requests and their clocks, in every case or one.
    List {
        case: Option<String>,
        #[arg(long)]
        at: Option<String>,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ReserveUpdateArgs {
    pub case: String,
    /// The request (ID or ORIGIN/ID); needed when the case has several open.
    #[arg(long)]
    pub request: Option<String>,
    #[arg(long, default_value = "")]
    pub note: String,
    #[command(flatten)]
    pub step: StepArgs,
}

/// "ID" or "ORIGIN/ID" as a reference.
pub(crate) fn mref(s: &str) -> pb::MessageRef {
    let (origin, id) = bluewire_node::feed::parse_reference(s);
    pb::MessageRef {
        origin: origin.to_string(),
        id: id.to_string(),
    }
}

fn link(case: &str, previous: Option<&str>) -> Option<pb::CaseLink> {
    Some(pb::CaseLink {
        case: Some(mref(case)),
        previous: previous.map(mref),
    })
}

fn at_ms(at: Option<&str>) -> anyhow::Result<i64> {
    let Some(at) = at else { return Ok(0) };
    let t = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("--at {at:?} is not an RFC 3339 time (2026-12-02T10:00:00Z)"))?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn day_ms(s: &str) -> anyhow::Result<i64> {
    at_ms(Some(&format!("{s}T00:00:00Z")))
        .with_context(|| format!("due date {s:?} is not YYYY-MM-DD"))
}

fn request(
    kind: pb::Kind,
    level: pb::Level,
    step: &StepArgs,
    cluster: &str,
    body: pb::publish_request::Body,
) -> pb::PublishRequest {
    pb::PublishRequest {
        kind: kind as i32,
        level: step.level.map(pb::Level::from).unwrap_or(level) as i32,
        marking: Some(pb::Marking {
            tlp: pb::Tlp::from(step.tlp) as i32,
            classification: String::new(),
            exercise: step.exercise,
        }),
        recipients: step.recipients.clone(),
        cluster: if cluster.is_empty() {
            step.in_cluster.clone().unwrap_or_default()
        } else {
            cluster.to_string()
        },
        body: Some(body),
        ..Default::default()
    }
}

async fn send(c: &ConnArgs, r: pb::PublishRequest, what: &str, out: Output) -> anyhow::Result<()> {
    let conn = c.connect()?;
    let cluster = r.cluster.clone();
    let resp = conn
        .client()
        .publish(r)
        .await
        .map_err(|s| status_err(&conn, s))?
        .into_inner();
    report_routing(
        &resp,
        &format!("{what}: {} (seq {})", resp.id, resp.seq),
        &cluster,
        out,
    );
    Ok(())
}

pub async fn run(c: &ConnArgs, cmd: CaseCommand, out: Output) -> anyhow::Result<()> {
    use pb::Kind as K;
    use pb::Level as L;
    use pb::publish_request::Body as B;
    let (r, what) = match cmd {
        CaseCommand::List { at } => return list(c, at_ms(at.as_deref())?, out).await,
        CaseCommand::Show { case, at } => {
            return show(c, &case, at_ms(at.as_deref())?, false, out).await;
        }
        CaseCommand::Timeline { case } => return show(c, &case, 0, true, out).await,
        CaseCommand::Export { case, out: file } => return export(c, &case, &file, out).await,
        CaseCommand::Open {
            cluster,
            title,
            summary,
            incident,
            country,
            sector,
            nis2,
            step,
        } => (
            request(
                K::CaseOpen,
                L::Operational,
                &step,
                &cluster,
                B::CaseOpen(pb::CaseOpen {
                    title,
                    summary,
                    incident: incident.as_deref().map(mref),
                    affected_countries: country,
                    sectors: sector,
                    nis2_reporting: nis2,
                }),
            ),
            "case opened",
        ),
        CaseCommand::Escalate {
            case,
            summary,
            country,
            sector,
            report,
            propose,
            step,
        } => (
            request(
                K::Escalation,
                L::Operational,
                &step,
                "",
                B::Escalation(pb::Escalation {
                    link: link(&case, None),
                    summary,
                    technical_reports: report.iter().map(|r| mref(r)).collect(),
                    affected_countries: country,
                    sectors: sector,
                    proposed_level: pb::Level::from(propose) as i32,
                }),
            ),
            "escalated",
        ),
        CaseCommand::Advise {
            case,
            verdict,
            confidence,
            rationale,
            step,
        } => (
            request(
                K::Advice,
                L::Operational,
                &step,
                "",
                B::Advice(pb::Advice {
                    link: link(&case, None),
                    verdict: pb::AssessmentState::from(verdict) as i32,
                    confidence: match confidence {
                        ConfidenceArg::Low => pb::Confidence::Low,
                        ConfidenceArg::Medium => pb::Confidence::Medium,
                        ConfidenceArg::High => pb::Confidence::High,
                    } as i32,
                    rationale,
                }),
            ),
            "advice sent",
        ),
        CaseCommand::Assess {
            case,
            to,
            impact,
            population,
            cross_border,
            outlook,
            rationale,
            step,
        } => {
            let mut sector_impact = Vec::new();
            for i in &impact {
                let Some((sector, text)) = i.split_once('=') else {
                    bail!("--impact {i:?}: write SECTOR=TEXT, e.g. health=surgeries postponed");
                };
                sector_impact.push(pb::SectorImpact {
                    sector: sector.trim().to_string(),
                    impact: text.trim().to_string(),
                });
            }
            (
                request(
                    K::Assessment,
                    L::Operational,
                    &step,
                    "",
                    B::Assessment(pb::LargeScaleAssessment {
                        link: link(&case, None),
                        from: 0,
                        to: pb::AssessmentState::from(to) as i32,
                        sector_impact,
                        population_impact: population,
                        cross_border,
                        outlook: match outlook {
                            None => pb::Outlook::Unspecified,
                            Some(OutlookArg::Improving) => pb::Outlook::Improving,
                            Some(OutlookArg::Stable) => pb::Outlook::Stable,
                            Some(OutlookArg::Worsening) => pb::Outlook::Worsening,
                        } as i32,
                        rationale,
                    }),
                ),
                "assessment sent",
            )
        }
        CaseCommand::Status {
            case,
            mode,
            crisis,
            rationale,
            step,
        } => {
            if mode.is_none() && crisis.is_none() {
                bail!("say what changes: --mode and/or --crisis");
            }
            // Establishing a crisis runs under full activation; ceasing goes back to monitoring.
            let mode = mode.or(match crisis {
                Some(CrisisArg::Established) => Some(ModeArg::FullActivation),
                Some(CrisisArg::Ceased) => Some(ModeArg::Monitoring),
                None => None,
            });
            (
                request(
                    K::CrisisStatus,
                    L::Political,
                    &step,
                    "",
                    B::CrisisStatus(pb::CrisisStatusDecision {
                        link: link(&case, None),
                        to_mode: match mode {
                            None => pb::PoliticalMode::Unspecified,
                            Some(ModeArg::Monitoring) => pb::PoliticalMode::Monitoring,
                            Some(ModeArg::InformationSharing) => {
                                pb::PoliticalMode::InformationSharing
                            }
                            Some(ModeArg::FullActivation) => pb::PoliticalMode::FullActivation,
                        } as i32,
                        to_crisis: match crisis {
                            None => pb::CrisisState::Unspecified,
                            Some(CrisisArg::Established) => pb::CrisisState::Established,
                            Some(CrisisArg::Ceased) => pb::CrisisState::Ceased,
                        } as i32,
                        rationale,
                        ..Default::default()
                    }),
                ),
                "crisis status decided",
            )
        }
        CaseCommand::Sitrep {
            case,
            impact,
            consequences,
            response,
            recovery,
            step,
        } => (
            request(
                K::SituationReport,
                L::Political,
                &step,
                "",
                B::SituationReport(pb::SituationReport {
                    link: link(&case, None),
                    number: 0,
                    impact,
                    consequences,
                    response_measures: response,
                    recovery_measures: recovery,
                }),
            ),
            "situation report published",
        ),
        CaseCommand::Comms {
            case,
            text,
            agree,
            draft,
            audience,
            step,
        } => {
            if draft.is_some() && !agree {
                bail!("--draft names the draft you agree: add --agree");
            }
            (
                request(
                    K::PublicCommunication,
                    if agree { L::Political } else { L::Operational },
                    &step,
                    "",
                    B::Communication(pb::CommunicationLine {
                        link: link(&case, draft.as_deref()),
                        stage: if agree {
                            pb::LineStage::Agreed
                        } else {
                            pb::LineStage::Draft
                        } as i32,
                        text,
                        audience,
                    }),
                ),
                if agree { "line agreed" } else { "line drafted" },
            )
        }
        CaseCommand::Notice {
            case,
            about,
            summary,
            step,
        } => (
            request(
                K::Notice,
                L::Operational,
                &step,
                "",
                B::Notice(pb::Notice {
                    link: link(&case, None),
                    notice: match about {
                        NoticeArg::SpaceServices => pb::NoticeKind::SpaceServices,
                        NoticeArg::DefenceInitiative => pb::NoticeKind::DefenceInitiative,
                    } as i32,
                    summary,
                }),
            ),
            "notice sent",
        ),
        CaseCommand::Lessons {
            case,
            finding,
            action,
            is_final,
            step,
        } => {
            let mut actions = Vec::new();
            for a in &action {
                let parts: Vec<&str> = a.split(';').map(str::trim).collect();
                let (text, owner, due) = match parts.as_slice() {
                    [t, o] => (*t, *o, 0),
                    [t, o, d] => (*t, *o, day_ms(d)?),
                    _ => bail!("--action {a:?}: write TEXT;OWNER or TEXT;OWNER;YYYY-MM-DD"),
                };
                actions.push(pb::LessonAction {
                    action: text.to_string(),
                    owner: owner.to_string(),
                    due_at_ms: due,
                    status: "open".into(),
                });
            }
            (
                request(
                    K::LessonsLearned,
                    L::Operational,
                    &step,
                    "",
                    B::Lessons(pb::LessonsLearned {
                        link: link(&case, None),
                        findings: finding,
                        actions,
                        status: if is_final {
                            pb::ReviewStatus::Final
                        } else {
                            pb::ReviewStatus::Draft
                        } as i32,
                    }),
                ),
                if is_final {
                    "final review published: case closed"
                } else {
                    "lessons learned recorded"
                },
            )
        }
        CaseCommand::Reopen {
            case,
            axis,
            reason,
            to,
            establish,
            step,
        } => {
            let mut b = pb::CaseReopen {
                link: link(&case, None),
                axis: match axis {
                    AxisArg::Assessment => pb::CaseAxis::Assessment,
                    AxisArg::Political => pb::CaseAxis::Political,
                    AxisArg::Review => pb::CaseAxis::Review,
                } as i32,
                reason,
                ..Default::default()
            };
            if let Some(t) = to {
                b.to_assessment = match t {
                    BackToArg::Observed => pb::AssessmentState::Observed,
                    BackToArg::Escalated => pb::AssessmentState::Escalated,
                    BackToArg::UnderAssessment => pb::AssessmentState::UnderAssessment,
                } as i32;
            }
            if establish {
                b.to_mode = pb::PoliticalMode::FullActivation as i32;
                b.to_crisis = pb::CrisisState::Established as i32;
            }
            let level = if axis == AxisArg::Political {
                L::Political
            } else {
                L::Operational
            };
            (
                request(K::CaseReopen, level, &step, "", B::Reopen(b)),
                "reopened",
            )
        }
    };
    send(c, r, what, out).await
}

pub async fn reserve(c: &ConnArgs, cmd: ReserveCommand, out: Output) -> anyhow::Result<()> {
    use pb::publish_request::Body as B;
    let update = |u: &ReserveUpdateArgs, stage: pb::ReserveStage, provider: String| {
        request(
            pb::Kind::Reserve,
            pb::Level::Operational,
            &u.step,
            "",
            B::Reserve(pb::ReserveUpdate {
                link: link(&u.case, u.request.as_deref()),
                stage: stage as i32,
                provider,
                note: u.note.clone(),
                ..Default::default()
            }),
        )
    };
    let (r, what) = match cmd {
        ReserveCommand::List { case, at } => {
            return reserve_list(c, case.as_deref(), at_ms(at.as_deref())?, out).await;
        }
        ReserveCommand::Request {
            case,
            service,
            entity,
            impact,
            mitigation,
            military,
            hybrid,
            step,
        } => (
            request(
                pb::Kind::Reserve,
                pb::Level::Operational,
                &step,
                "",
                B::Reserve(pb::ReserveUpdate {
                    link: link(&case, None),
                    stage: pb::ReserveStage::Requested as i32,
                    services: service,
                    affected_entity: entity,
                    impact,
                    mitigation_taken: mitigation,
                    military_dimension: military,
                    hybrid_campaign: hybrid,
                    ..Default::default()
                }),
            ),
            "reserve requested (due in 24 h)",
        ),
        ReserveCommand::Ack(u) => (
            update(&u, pb::ReserveStage::Acknowledged, String::new()),
            "acknowledged",
        ),
        ReserveCommand::Assign {
            update: u,
            provider,
        } => (update(&u, pb::ReserveStage::Assigned, provider), "assigned"),
        ReserveCommand::Delivered(u) => (
            update(&u, pb::ReserveStage::Delivered, String::new()),
            "service delivered",
        ),
        ReserveCommand::Close(u) => (
            update(&u, pb::ReserveStage::Closed, String::new()),
            "closed",
        ),
    };
    send(c, r, what, out).await
}
