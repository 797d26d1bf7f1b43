//! `bluewire exercise run SCENARIO.toml`: inject a scripted scenario into a running
//! federation at set offsets. Each step is a `bluewire` command (`case …`, `reserve …`,
//! `publish …`) run as the named organisation's user; a step can keep the id it printed for
//! later steps (`save`) and wait until other organisations' nodes hold it (`wait_for`). In an
//! exercise every step is marked `--exercise`, so it can only travel in an exercise cluster
//! and every output shows it as an exercise. `bluewire demo --scenario blueprint` runs the
//! same file (`deploy/exercises/blueprint.toml`) without the exercise marking.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bluewire_proto::v1 as pb;
use clap::{Args, Subcommand};
use serde::Deserialize;

use crate::Output;
use crate::connection::ConnArgs;

/// The blueprint scenario shipped in `deploy/exercises/blueprint.toml`.
pub const BLUEPRINT: &str = include_str!("../../deploy/exercises/blueprint.toml");

#[derive(Debug, Subcommand)]
pub enum ExerciseCommand {
    /// Run a scenario file against a running federation.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The scenario (TOML): organisations, then steps with offsets.
    pub scenario: PathBuf,
    /// ORG=CLIENT.toml: the user each organisation's steps run as (overrides the file's
    /// `[orgs]`; paths there are relative to the scenario file).
    #[arg(long = "org", value_name = "ORG=CLIENT_TOML")]
    pub orgs: Vec<String>,
    /// NAME=VALUE for `{NAME}` in the steps (e.g. cluster=csirt-be/exercise-1).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// A federation directory laid out as `bluewire demo --keep --dir DIR` leaves it: each
    /// organisation's users at DIR/ORG/users/USER/client.toml.
    #[arg(long)]
    pub federation: Option<PathBuf>,
    /// Run the offsets this many times faster (1: as written).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Do not mark the steps as exercise traffic (only for a rehearsal in a real cluster).
    #[arg(long)]
    pub not_an_exercise: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Organisation → client config of the user its steps run as.
    #[serde(default)]
    pub orgs: BTreeMap<String, PathBuf>,
    #[serde(rename = "step")]
    pub steps: Vec<StepSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Offset from the start: "0s", "90s", "5m", "2h".
    pub at: String,
    pub org: String,
    /// The organisation's user the step runs as (its client config); default analyst.
    #[serde(default = "analyst")]
    pub user: String,
    /// The `bluewire` arguments, `{NAME}` replaced by variables and saved ids.
    pub run: Vec<String>,
    /// Retry a failing step for this long ("30s"): for what depends on replication, such as
    /// accepting an invitation that has not arrived yet.
    #[serde(default)]
    pub retry: Option<String>,
    /// Keep the id this step printed as `{NAME}`.
    #[serde(default)]
    pub save: Option<String>,
    /// Organisations whose nodes must hold this step's message before the next step runs.
    #[serde(default)]
    pub wait_for: Vec<String>,
    /// What the step stands for in the exercise (printed).
    #[serde(default)]
    pub note: String,
}

fn analyst() -> String {
    "analyst".into()
}

/// One step as run.
pub struct Ran {
    pub org: String,
    pub what: String,
    pub id: String,
}

impl Scenario {
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Scenario> {
        let s: Scenario =
            toml::from_str(text).with_context(|| format!("scenario {origin} is not valid"))?;
        if s.steps.is_empty() {
            bail!("scenario {origin} has no [[step]]");
        }
        let mut last = Duration::ZERO;
        for (i, st) in s.steps.iter().enumerate() {
            let at = offset(&st.at).with_context(|| format!("step {} ({origin})", i + 1))?;
            if at < last {
                bail!(
                    "step {} ({origin}) is at {} but the step before is later: offsets only grow",
                    i + 1,
                    st.at
                );
            }
            last = at;
            if let Some(r) = &st.retry {
                offset(r).with_context(|| format!("step {} ({origin}): retry", i + 1))?;
            }
            let Some(first) = st.run.first() else {
                bail!("step {} ({origin}) runs nothing: `run` is empty", i + 1);
            };
            if !COMMANDS.contains(&first.as_str()) {
                bail!(
                    "step {} ({origin}) runs `{first}`: a scenario runs only {}",
                    i + 1,
                    COMMANDS.join(", ")
                );
            }
            for name in std::iter::once(&st.org)
                .chain(std::iter::once(&st.user))
                .chain(st.wait_for.iter())
            {
                if !plain_name(name) {
                    bail!(
                        "step {} ({origin}): {name:?} is not an organisation or user name (letters, digits, '-', '_', '.')",
                        i + 1
                    );
                }
            }
        }
        Ok(s)
    }
}

/// What a scenario step may run: the workflow, publishing and cluster membership — never
/// node, PKI or policy administration, and never a leading option (which could point the
/// step at another node).
const COMMANDS: [&str; 6] = ["case", "reserve", "publish", "cluster", "mark", "retract"];

fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// "90s", "5m", "2h", "0" → a duration.
pub fn offset(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .with_context(|| format!("offset {s:?}: write a number and s, m or h (\"90s\")"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("offset {s:?}: the unit is s, m or h"),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn substitute(arg: &str, vars: &BTreeMap<String, String>) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let name = &rest[start + 1..start + len];
        let value = vars.get(name).with_context(|| {
            format!("{{{name}}} is not set: pass --var {name}=VALUE or save it in an earlier step")
        })?;
        out.push_str(&rest[..start]);
        out.push_str(value);
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Run `bluewire --client-config CFG --output json ARGS`, print it, return its JSON.
pub fn bw(cfg: &Path, org: &str, args: &[String]) -> anyhow::Result<serde_json::Value> {
    let shown = args
        .iter()
        .map(|a| {
            if a.contains(' ') || a.is_empty() {
                format!("{a:?}")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    println!("   [{org:>10}] bluewire {shown}");
    let exe = std::env::current_exe().context("locating the bluewire binary")?;
    let out = Command::new(exe)
        .arg("--client-config")
        .arg(cfg)
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

/// The client config `org`'s `user` runs with: "ORG/USER", or "ORG" for its analyst.
fn config_for(
    configs: &BTreeMap<String, PathBuf>,
    org: &str,
    user: &str,
) -> anyhow::Result<PathBuf> {
    configs
        .get(&format!("{org}/{user}"))
        .or_else(|| (user == "analyst").then(|| configs.get(org)).flatten())
        .cloned()
        .with_context(|| {
            format!(
                "no client config for {org}/{user}: pass --federation DIR, or --org {org}{}=CLIENT.toml",
                if user == "analyst" { String::new() } else { format!("/{user}") }
            )
        })
}

fn tracing_free_note(e: &anyhow::Error) {
    println!(
        "      (not yet: {}; retrying)",
        format!("{e:#}").lines().next().unwrap_or("")
    );
}

/// Does the node behind `cfg` hold message `id`?
async fn holds(cfg: &Path, id: &str) -> anyhow::Result<bool> {
    let conn = ConnArgs {
        client_config: Some(cfg.to_path_buf()),
        node: None,
        ca: None,
        cert: None,
        key: None,
    }
    .connect()?;
    match conn
        .client()
        .get(pb::GetRequest { id: id.to_string() })
        .await
    {
        Ok(_) => Ok(true),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
        Err(s) => bail!("asking {} for {id}: {}", conn.endpoint, s.message()),
    }
}

/// Run `scenario`'s steps: `configs` maps each organisation to its client config, `vars`
/// seeds the variables. Offsets are divided by `speed`; `exercise` marks every step.
pub async fn run_steps(
    scenario: &Scenario,
    configs: &BTreeMap<String, PathBuf>,
    mut vars: BTreeMap<String, String>,
    speed: f64,
    exercise: bool,
) -> anyhow::Result<(Vec<Ran>, BTreeMap<String, String>)> {
    let start = Instant::now();
    let mut ran = Vec::new();
    for (i, st) in scenario.steps.iter().enumerate() {
        let due = offset(&st.at)?.div_f64(speed.max(0.001));
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let cfg =
            config_for(configs, &st.org, &st.user).with_context(|| format!("step {}", i + 1))?;
        if !st.note.is_empty() {
            println!("   -- {}", st.note);
        }
        let mut args = st
            .run
            .iter()
            .map(|a| substitute(a, &vars))
            .collect::<anyhow::Result<Vec<_>>>()
            .with_context(|| format!("step {}", i + 1))?;
        let marks = matches!(args[0].as_str(), "case" | "reserve" | "publish")
            || args[..2.min(args.len())] == ["cluster", "create"];
        if exercise
            && marks
            && !matches!(
                args.get(1).map(String::as_str),
                Some("list" | "show" | "timeline")
            )
        {
            args.push("--exercise".into());
        }
        let retry_for = st
            .retry
            .as_deref()
            .map(offset)
            .transpose()?
            .unwrap_or_default();
        let retry_until = Instant::now() + retry_for;
        let out = loop {
            match bw(&cfg, &st.org, &args) {
                Ok(out) => break out,
                Err(e) if Instant::now() < retry_until => {
                    tracing_free_note(&e);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(e.context(format!("step {}", i + 1))),
            }
        };
        let id = out["id"].as_str().unwrap_or_default().to_string();
        if let Some(name) = &st.save {
            vars.insert(name.clone(), id.clone());
        }
        for org in &st.wait_for {
            let other = config_for(configs, org, "analyst")
                .with_context(|| format!("step {}: wait_for", i + 1))?;
            let deadline = Instant::now() + Duration::from_secs(30);
            while !holds(&other, &id).await? {
                if Instant::now() > deadline {
                    bail!("step {}: {id} did not reach {org} within 30 s", i + 1);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        ran.push(Ran {
            org: st.org.clone(),
            what: args.iter().take(2).cloned().collect::<Vec<_>>().join(" "),
            id,
        });
    }
    Ok((ran, vars))
}

/// Client configs for every (organisation, user) a scenario names, in a federation laid out
/// as the demo leaves it.
pub fn federation_configs(dir: &Path, scenario: &Scenario) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for st in &scenario.steps {
        for (org, user) in std::iter::once((&st.org, st.user.as_str()))
            .chain(st.wait_for.iter().map(|o| (o, "analyst")))
        {
            out.insert(
                format!("{org}/{user}"),
                dir.join(org).join("users").join(user).join("client.toml"),
            );
        }
    }
    out
}

pub async fn run(cmd: ExerciseCommand, out: Output) -> anyhow::Result<()> {
    let ExerciseCommand::Run(a) = cmd;
    let text = std::fs::read_to_string(&a.scenario)
        .with_context(|| format!("cannot read scenario {}", a.scenario.display()))?;
    let scenario = Scenario::parse(&text, &a.scenario.display().to_string())?;
    let base = a.scenario.parent().unwrap_or(Path::new("."));
    let mut configs: BTreeMap<String, PathBuf> = scenario
        .orgs
        .iter()
        .map(|(o, p)| (o.clone(), base.join(p)))
        .collect();
    if let Some(dir) = &a.federation {
        configs.extend(federation_configs(dir, &scenario));
    }
    for o in &a.orgs {
        let (org, path) = o
            .split_once('=')
            .with_context(|| format!("--org {o:?}: write ORG=CLIENT.toml"))?;
        configs.insert(org.to_string(), PathBuf::from(path));
    }
    let mut vars = BTreeMap::new();
    for v in &a.vars {
        let (k, val) = v
            .split_once('=')
            .with_context(|| format!("--var {v:?}: write NAME=VALUE"))?;
        vars.insert(k.to_string(), val.to_string());
    }
    vars.entry("name".into()).or_insert_with(|| {
        format!(
            "{}-exercise-{}",
            scenario.name,
            time::OffsetDateTime::now_utc().unix_timestamp()
        )
    });
    let exercise = !a.not_an_exercise;
    println!(
        "== {}{}: {} steps{}",
        if exercise { "EXERCISE " } else { "" },
        scenario.name,
        scenario.steps.len(),
        if scenario.description.is_empty() {
            String::new()
        } else {
            format!(" — {}", scenario.description)
        }
    );
    let (ran, vars) = run_steps(&scenario, &configs, vars, a.speed, exercise).await?;
    match out {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "scenario": scenario.name,
                "exercise": exercise,
                "steps": ran.iter().map(|r| serde_json::json!({"org": r.org, "what": r.what, "id": r.id})).collect::<Vec<_>>(),
                "saved": vars,
            })
        ),
        Output::Table => println!(
            "{} completed: {} steps{}",
            scenario.name,
            ran.len(),
            vars.get("case")
                .map(|c| format!("; bluewire case timeline {c}"))
                .unwrap_or_default()
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_variables() {
        assert_eq!(offset("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(offset("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(offset("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(offset("0").unwrap(), Duration::ZERO);
        assert!(offset("5 days").is_err());
        assert!(offset("soon").is_err());
        let vars = BTreeMap::from([("case".to_string(), "C1".to_string())]);
        assert_eq!(substitute("csirt-be/{case}", &vars).unwrap(), "csirt-be/C1");
        assert_eq!(substitute("plain", &vars).unwrap(), "plain");
        let e = substitute("{nope}", &vars).unwrap_err().to_string();
        assert!(e.contains("--var nope=VALUE"), "{e}");
    }

    #[test]
    fn the_shipped_blueprint_scenario_parses_and_walks_the_whole_chain() {
        let s = Scenario::parse(BLUEPRINT, "blueprint.toml").unwrap();
        let cmds: Vec<String> = s.steps.iter().map(|st| st.run[..2].join(" ")).collect();
        for want in [
            "case open",
            "case escalate",
            "case advise",
            "case assess",
            "case status",
            "case sitrep",
            "reserve request",
            "reserve delivered",
            "case lessons",
        ] {
            assert!(cmds.iter().any(|c| c == want), "{want} missing: {cmds:?}");
        }
        // Every organisation a step names is one of the blueprint demo's, and offsets only grow.
        let demo: Vec<&str> = crate::blueprint::orgs().iter().map(|o| o.org).collect();
        for st in &s.steps {
            assert!(demo.contains(&st.org.as_str()), "{}", st.org);
        }
        let configs = federation_configs(Path::new("/fed"), &s);
        assert_eq!(
            config_for(&configs, "csirt-be", "operator").unwrap(),
            Path::new("/fed/csirt-be/users/operator/client.toml")
        );
        assert!(config_for(&configs, "nobody", "analyst").is_err());
        let bad = BLUEPRINT.replacen("at = \"0s\"", "at = \"99h\"", 1);
        assert!(Scenario::parse(&bad, "x").is_err());
        // Only workflow, publishing and membership commands, and plain names.
        let admin = BLUEPRINT.replacen(
            "run = [\"cluster\", \"create\"",
            "run = [\"pki\", \"create\"",
            1,
        );
        let e = Scenario::parse(&admin, "x").unwrap_err().to_string();
        assert!(e.contains("runs `pki`"), "{e}");
        let option = BLUEPRINT.replacen(
            "run = [\"cluster\", \"create\"",
            "run = [\"--node\", \"create\"",
            1,
        );
        assert!(Scenario::parse(&option, "x").is_err());
        let escape = BLUEPRINT.replacen("org = \"csirt-fr\"", "org = \"../../etc\"", 1);
        let e = Scenario::parse(&escape, "x").unwrap_err().to_string();
        assert!(e.contains("not an organisation or user name"), "{e}");
    }
}
