//! `bluewire demo --scenario blueprint`: a cross-border incident run from detection to
//! lessons learned by seven organisations holding the blueprint's functions, as real node
//! processes on loopback. Every step is the `bluewire case …` / `bluewire reserve …` command
//! a user would type (run as a child process of this binary, printed before it runs). Ends
//! with the case timeline and which organisation holds which step, and exits non-zero if a
//! step went astray (missing where its level reaches, or present where it does not) or if
//! nodes holding the same steps derived different case states.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bluewire_node::pki::{Function, Level};
use bluewire_proto::v1 as pb;

use crate::exercise::{BLUEPRINT, Ran, Scenario, run_steps};
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
        "\n3. The scenario deploy/exercises/blueprint.toml, step by step (each step signed, routed by level, checked by every receiver)"
    );
    let scenario = Scenario::parse(BLUEPRINT, "deploy/exercises/blueprint.toml")?;
    let mut configs = BTreeMap::new();
    for o in &fed.orgs {
        for user in ["analyst", "operator"] {
            configs.insert(
                format!("{}/{user}", o.spec.org),
                o.user_dir(user).join("client.toml"),
            );
        }
    }
    let vars = BTreeMap::from([("name".to_string(), "crisis".to_string())]);
    // Offsets compressed to nothing: each step waits only for what it depends on.
    let (ran, vars) = run_steps(&scenario, &configs, vars, 1e9, false).await?;
    let case = vars
        .get("case")
        .context("the scenario saved no case")?
        .clone();
    let steps: Vec<&Ran> = ran
        .iter()
        .filter(|r| r.what.starts_with("case ") || r.what.starts_with("reserve "))
        .collect();
    // Every step must reach the levels it was sent at before the check below.
    for s in &steps {
        let level = held(fed, s.org.as_str(), &case)
            .await?
            .and_then(|d| {
                d.timeline
                    .iter()
                    .find(|e| e.message.as_ref().is_some_and(|m| m.id == s.id))
                    .and_then(|e| e.level.parse::<Level>().ok())
            })
            .with_context(|| format!("{} ({}) is not in its own node's timeline", s.what, s.id))?;
        let mut want = audience(level);
        want.insert(s.org.clone());
        arrive(fed, &case, &s.id, &want).await?;
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
            row.push(match (want.contains(*o) || *o == s.org.as_str(), has) {
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
