//! `bluewire demo --scenario blueprint`: a cross-border incident run from detection to
//! lessons learned by seven organisations holding the blueprint's functions, as real node
//! processes on loopback. Every step is the `bluewire case …` / `bluewire reserve …` command
//! a user would type (run as a child process of this binary, printed before it runs). Ends
//! with the case timeline and which organisation holds which step, and exits non-zero if a
//! step went astray (missing where its level reaches, or present where it does not) or if
//! nodes holding the same steps derived different case states.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bluewire_node::pki::{Function, Level};
use bluewire_proto::v1 as pb;

use crate::local::{LocalFederation, OrgSpec};
use crate::output::table;

fn org(
    org: &'static str,
    country: &'static str,
    org_type: &'static str,
    levels: &[Level],
    f: Function,
    what: &'static str,
) -> OrgSpec {
    OrgSpec {
        org,
        country,
        org_type,
        levels: levels.to_vec(),
        functions: vec![f],
        what,
        static_peers: true,
    }
}

pub fn orgs() -> Vec<OrgSpec> {
    use Level::{Operational as O, Political as P, Technical as T};
    vec![
        org(
            "csirt-be",
            "BE",
            "csirt",
            &[T, O],
            Function::CsirtsNetwork,
            "national CSIRT, Belgium",
        ),
        org(
            "csirt-fr",
            "FR",
            "csirt",
            &[T, O],
            Function::CsirtsNetwork,
            "national CSIRT, France",
        ),
        org(
            "cyclone-fr",
            "FR",
            "liaison",
            &[O, P],
            Function::Cyclone,
            "EU-CyCLONe liaison, France",
        ),
        org(
            "presidency",
            "EU",
            "council",
            &[P],
            Function::Presidency,
            "Council Presidency (IPCR)",
        ),
        org(
            "cert-eu",
            "EU",
            "eu-body",
            &[T, O, P],
            Function::CsirtsNetwork,
            "CERT-EU",
        ),
        org(
            "enisa",
            "EU",
            "eu-body",
            &[O],
            Function::ReserveAuthority,
            "ENISA, runs the EU Cybersecurity Reserve",
        ),
        org(
            "commission",
            "EU",
            "eu-body",
            &[O, P],
            Function::Commission,
            "European Commission",
        ),
    ]
}

/// One step: who runs which command, and the id it printed.
struct Step {
    org: &'static str,
    what: String,
    id: String,
}

/// Run `bluewire --client-config ORG-analyst --output json ARGS` and return its JSON.
fn bw(fed: &LocalFederation, org: &str, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let cfg = fed.org(org).user_dir("analyst").join("client.toml");
    let shown = args
        .iter()
        .map(|a| {
            if a.contains(' ') || a.is_empty() {
                format!("{a:?}")
            } else {
                a.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    println!("   [{org:>10}] bluewire {shown}");
    let exe = std::env::current_exe().context("locating the bluewire binary")?;
    let out = Command::new(exe)
        .arg("--client-config")
        .arg(&cfg)
        .args(["--output", "json"])
        .args(args)
        .output()
        .context("running bluewire")?;
    if !out.status.success() {
        bail!(
            "`bluewire {shown}` at {org} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "`bluewire {shown}` printed no JSON: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The messages of `case` that `org`'s node holds: id → (kind, level).
async fn held(
    fed: &LocalFederation,
    org: &str,
    case: &str,
) -> anyhow::Result<Option<pb::CaseDetail>> {
    let conn = fed.connect(org, "analyst")?;
    match conn
        .client()
        .get_case(pb::GetCaseRequest {
            case: case.to_string(),
            at_ms: 0,
        })
        .await
    {
        Ok(r) => Ok(Some(r.into_inner())),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => bail!("case at {org}: {}", s.message()),
    }
}

fn ids(d: &Option<pb::CaseDetail>) -> BTreeSet<String> {
    d.iter()
        .flat_map(|d| d.timeline.iter())
        .filter_map(|e| e.message.as_ref().map(|m| m.id.clone()))
        .collect()
}

/// Which organisations a step at `level` reaches in the crisis cluster: those certified
/// for that level (every organisation is a member, nobody is named).
fn audience(level: Level) -> BTreeSet<String> {
    orgs()
        .into_iter()
        .filter(|o| o.levels.contains(&level))
        .map(|o| o.org.to_string())
        .collect()
}

/// Wait until every organisation in `want` holds `id` of `case` (bounded).
async fn arrive(
    fed: &LocalFederation,
    case: &str,
    id: &str,
    want: &BTreeSet<String>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    for org in want {
        loop {
            if ids(&held(fed, org, case).await?).contains(id) {
                break;
            }
            if Instant::now() > deadline {
                bail!("{id} did not reach {org} within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

pub async fn run(fed: &mut LocalFederation, dir: &Path) -> anyhow::Result<()> {
    println!("\n2. Starting {} node processes…", fed.orgs.len());
    fed.start_all()?;
    fed.wait_ready(Duration::from_secs(30)).await?;

    println!(
        "\n3. The crisis cluster: every organisation a member; operational and political levels"
    );
    let be_op = fed.connect("csirt-be", "operator")?;
    let info = be_op
        .admin()
        .cluster_create(pb::ClusterCreateRequest {
            name: "crisis".into(),
            purpose: "Cross-border ransomware against hospitals".into(),
            levels: vec![
                pb::Level::Technical as i32,
                pb::Level::Operational as i32,
                pb::Level::Political as i32,
            ],
            max_tlp: pb::Tlp::Amber as i32,
            history: pb::HistoryRule::Full as i32,
            exercise: false,
        })
        .await
        .map_err(|s| anyhow::anyhow!("cluster create: {}", s.message()))?
        .into_inner();
    let cid = info.id.clone();
    for o in orgs().iter().skip(1) {
        crate::demo::invite_and_accept(fed, &cid, o.org).await?;
    }

    println!(
        "\n4. The case, step by step (each step signed, routed by level, checked by every receiver)"
    );
    let incident = bw(
        fed,
        "csirt-be",
        &[
            "publish",
            "--cluster",
            &cid,
            "--kind",
            "incident",
            "--level",
            "technical",
            "--tlp",
            "AMBER",
            "--severity",
            "critical",
            "--sector",
            "health",
            "--title",
            "Ransomware in two hospitals",
            "--body",
            "LockBit variant, VPN appliance",
        ],
    )?;
    let incident_id = incident["id"].as_str().unwrap_or_default().to_string();
    let opened = bw(
        fed,
        "csirt-be",
        &[
            "case",
            "open",
            "--cluster",
            &cid,
            "--title",
            "Ransomware against hospitals in BE and FR",
            "--incident",
            &incident_id,
            "--country",
            "BE,FR",
            "--sector",
            "health",
        ],
    )?;
    let case = opened["id"].as_str().unwrap_or_default().to_string();
    let case_ref = format!("csirt-be/{case}");
    let mut steps = vec![Step {
        org: "csirt-be",
        what: "case opened".into(),
        id: case.clone(),
    }];
    arrive(fed, &case, &case, &audience(Level::Operational)).await?;
    let script: Vec<(&'static str, Vec<String>, Level)> = vec![
        (
            "csirt-be",
            args(&[
                "case",
                "escalate",
                &case,
                "--summary",
                "Same strain now in FR hospitals",
                "--country",
                "BE,FR",
                "--sector",
                "health",
                "--report",
                &incident_id,
            ]),
            Level::Operational,
        ),
        (
            "csirt-fr",
            args(&[
                "case",
                "advise",
                &case,
                "--verdict",
                "ongoing",
                "--confidence",
                "high",
                "--rationale",
                "Confirmed in three FR hospitals",
            ]),
            Level::Operational,
        ),
        (
            "cyclone-fr",
            args(&["case", "assess", &case, "--to", "under-assessment"]),
            Level::Operational,
        ),
        (
            "cyclone-fr",
            args(&[
                "case",
                "assess",
                &case,
                "--to",
                "ongoing",
                "--impact",
                "health=surgeries postponed in two member states",
                "--population",
                "emergency care degraded",
                "--cross-border",
                "BE,FR",
                "--outlook",
                "worsening",
                "--rationale",
                "Two member states, critical sector",
            ]),
            Level::Operational,
        ),
        (
            "commission",
            args(&[
                "case",
                "status",
                &case_ref,
                "--in",
                &cid,
                "--mode",
                "information-sharing",
                "--rationale",
                "Sectoral mechanisms linked",
            ]),
            Level::Political,
        ),
        (
            "cyclone-fr",
            args(&[
                "case",
                "sitrep",
                &case,
                "--impact",
                "Hospitals on paper procedures",
                "--consequences",
                "Surgeries postponed",
                "--response",
                "Reserve requested",
            ]),
            Level::Political,
        ),
        (
            "presidency",
            args(&[
                "case",
                "status",
                &case,
                "--crisis",
                "established",
                "--rationale",
                "IPCR full activation",
            ]),
            Level::Political,
        ),
        (
            "csirt-be",
            args(&[
                "reserve",
                "request",
                &case,
                "--service",
                "incident response,forensics",
                "--entity",
                "CHU Liège",
                "--impact",
                "Emergency department closed",
                "--mitigation",
                "Network isolated",
            ]),
            Level::Operational,
        ),
        (
            "enisa",
            args(&["reserve", "ack", &case]),
            Level::Operational,
        ),
        (
            "enisa",
            args(&[
                "reserve",
                "assign",
                &case,
                "--provider",
                "Reserve provider A",
            ]),
            Level::Operational,
        ),
        (
            "enisa",
            args(&["reserve", "delivered", &case]),
            Level::Operational,
        ),
        (
            "cyclone-fr",
            args(&[
                "case",
                "sitrep",
                &case,
                "--impact",
                "Services restored in BE, FR recovering",
                "--recovery",
                "Restore from offline backups",
            ]),
            Level::Political,
        ),
        (
            "presidency",
            args(&[
                "case",
                "status",
                &case,
                "--crisis",
                "ceased",
                "--rationale",
                "Crisis over",
            ]),
            Level::Political,
        ),
        (
            "cyclone-fr",
            args(&[
                "case",
                "lessons",
                &case,
                "--finding",
                "Backups were reachable from the domain",
                "--action",
                "Offline backups in every hospital;csirt-be;2027-06-30",
                "--final",
                "--level",
                "political",
            ]),
            Level::Political,
        ),
    ];
    for (org, a, level) in script {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        let r = bw(fed, org, &refs)?;
        let id = r["id"].as_str().unwrap_or_default().to_string();
        let mut want = audience(level);
        want.insert(org.to_string());
        arrive(fed, &case, &id, &want).await?;
        steps.push(Step {
            org,
            what: format!("{} {}", a[0], a[1]),
            id,
        });
    }
    // Let any stray copy land before checking nothing went where it must not.
    tokio::time::sleep(Duration::from_millis(500)).await;

    println!("\n5. The case timeline at cyclone-fr (`bluewire case timeline {case}`)");
    let cy = held(fed, "cyclone-fr", &case)
        .await?
        .context("case at cyclone-fr")?;
    table(
        &["SIGNER", "LEVEL", "MARKING", "KIND", "WHAT"],
        &cy.timeline
            .iter()
            .map(|e| {
                vec![
                    e.message
                        .as_ref()
                        .map(|m| m.origin.clone())
                        .unwrap_or_default(),
                    e.level.clone(),
                    e.tlp.clone(),
                    e.kind.clone(),
                    e.summary.chars().take(60).collect(),
                ]
            })
            .collect::<Vec<_>>(),
    );

    println!(
        "\n6. Which organisation holds which step (✔ held, · not its level, ✘ missing, LEAK held but not its level)"
    );
    let all: Vec<&'static str> = orgs().iter().map(|o| o.org).collect();
    let mut views: BTreeMap<&str, Option<pb::CaseDetail>> = BTreeMap::new();
    for o in &all {
        views.insert(o, held(fed, o, &case).await?);
    }
    let level_of = |id: &str| -> Option<Level> {
        cy.timeline
            .iter()
            .find(|e| e.message.as_ref().is_some_and(|m| m.id == id))
            .and_then(|e| e.level.parse().ok())
    };
    let (mut missing, mut leaked) = (0, 0);
    let mut rows = Vec::new();
    for s in &steps {
        let Some(level) = level_of(&s.id) else {
            bail!("step {} ({}) is not in cyclone-fr's timeline", s.what, s.id);
        };
        let want = audience(level);
        let mut row = vec![
            format!("{} ({})", s.what, s.org),
            level.as_str().to_string(),
        ];
        for o in &all {
            let has = ids(&views[o]).contains(&s.id);
            row.push(match (want.contains(*o) || *o == s.org, has) {
                (true, true) => "✔".into(),
                (true, false) => {
                    missing += 1;
                    "✘".into()
                }
                (false, false) => "·".into(),
                (false, true) => {
                    leaked += 1;
                    "LEAK".into()
                }
            });
        }
        rows.push(row);
    }
    let mut headers = vec!["STEP", "LEVEL"];
    headers.extend(all.iter().copied());
    table(&headers, &rows);

    println!("\n7. The case as each node derives it (`bluewire case list`)");
    let mut by_held: BTreeMap<BTreeSet<String>, Vec<(&str, pb::CaseSummary)>> = BTreeMap::new();
    let mut srows = Vec::new();
    for o in &all {
        let s = views[o]
            .as_ref()
            .and_then(|d| d.summary.clone())
            .unwrap_or_default();
        srows.push(vec![
            o.to_string(),
            s.phase.clone(),
            s.assessment.clone(),
            crate::case_cmd::political(&s),
            s.sitrep_number.to_string(),
            s.reserve
                .first()
                .and_then(|r| r.due.as_ref())
                .map(|d| d.clock.clone())
                .unwrap_or_else(|| "-".into()),
        ]);
        by_held.entry(ids(&views[o])).or_default().push((o, s));
    }
    table(
        &[
            "ORG",
            "PHASE",
            "ASSESSMENT",
            "POLITICAL",
            "SITREP",
            "RESERVE",
        ],
        &srows,
    );
    let mut disagree = Vec::new();
    for group in by_held.values() {
        let key = |s: &pb::CaseSummary| {
            (
                s.phase.clone(),
                s.assessment.clone(),
                s.political_mode.clone(),
                s.crisis.clone(),
                s.sitrep_number,
            )
        };
        let first = key(&group[0].1);
        for (o, s) in &group[1..] {
            if key(s) != first {
                disagree.push(format!(
                    "{o} derived {:?}, {} derived {first:?}",
                    key(s),
                    group[0].0
                ));
            }
        }
    }
    let full = views["cyclone-fr"]
        .as_ref()
        .and_then(|d| d.summary.clone())
        .unwrap_or_default();
    let want_full = ("closed", "ongoing-large-scale", "monitoring", "ceased", 2);
    if (
        full.phase.as_str(),
        full.assessment.as_str(),
        full.political_mode.as_str(),
        full.crisis.as_str(),
        full.sitrep_number,
    ) != want_full
    {
        disagree.push(format!(
            "cyclone-fr ended at {full:?}, expected {want_full:?}"
        ));
    }
    if missing > 0 || leaked > 0 || !disagree.is_empty() {
        bail!(
            "{missing} steps missing where their level reaches, {leaked} where it does not; {}; logs in {}/*/node.log",
            if disagree.is_empty() {
                "nodes agree".to_string()
            } else {
                disagree.join("; ")
            },
            dir.display()
        );
    }
    println!(
        "\nBlueprint demo OK: detection → escalation → advice → assessment → information-sharing → \
         full activation → situation reports → reserve served inside 24 h → deactivation → lessons \
         learned; every step reached exactly the levels it was for, and nodes holding the same \
         steps derived the same case."
    );
    Ok(())
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}
