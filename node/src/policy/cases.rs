//! The table-driven policy test runner behind `bluewire policy test`: reads a cases file
//! (format: `deploy/policy/cases.toml`), builds each case's organisations and message, and
//! evaluates them against a [`LocalPolicy`].
//!
//! Owns: the cases file format, its defaults, and [`CaseResult`].
//!
//! It must never evaluate a case differently from the node (it calls the same
//! [`LocalPolicy::evaluate`]), or skip a malformed case silently (that is an error naming
//! the case).

use std::collections::BTreeMap;
use std::str::FromStr;

use bluewire_proto::v1::{Content, Marking};
use serde::{Deserialize, Serialize};

use super::engine::{parse_kind, parse_level, parse_tlp};
use super::{Direction, LocalPolicy, PolicyError, PolicyInput};
use crate::pki::{Level, OrgProfile};

/// The outcome of one case; it passed when `expected == got`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CaseResult {
    pub name: String,
    /// `true` = the case expects `allow`.
    pub expected: bool,
    pub got: bool,
    pub reason: String,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.expected == self.got
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesFile {
    #[serde(default)]
    orgs: BTreeMap<String, OrgSpec>,
    #[serde(default)]
    defaults: MessageSpec,
    #[serde(default, rename = "case")]
    cases: Vec<CaseSpec>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrgSpec {
    /// Only for inline profiles; `[orgs.<id>]` entries take the key.
    #[serde(default)]
    org: Option<String>,
    country: String,
    #[serde(rename = "type")]
    org_type: String,
    levels: Vec<String>,
    #[serde(default)]
    sectors: Vec<String>,
    #[serde(default)]
    accreditations: Vec<String>,
    /// Blueprint functions (`csirts-network`, `cyclone`, `presidency`, …).
    #[serde(default)]
    functions: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum OrgRef {
    Named(String),
    Inline(OrgSpec),
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageSpec {
    direction: Option<String>,
    kind: Option<String>,
    level: Option<String>,
    tlp: Option<String>,
    classification: Option<String>,
    exercise: Option<bool>,
    cluster: Option<String>,
    recipients: Option<Vec<String>>,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Allow,
    Deny,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseSpec {
    name: String,
    origin: OrgRef,
    recipient: OrgRef,
    expect: Expect,
    direction: Option<String>,
    kind: Option<String>,
    level: Option<String>,
    tlp: Option<String>,
    classification: Option<String>,
    exercise: Option<bool>,
    cluster: Option<String>,
    recipients: Option<Vec<String>>,
}

fn org_profile(
    r: &OrgRef,
    orgs: &BTreeMap<String, OrgSpec>,
    role: &str,
) -> Result<OrgProfile, String> {
    let (id, spec) = match r {
        OrgRef::Named(id) => match orgs.get(id) {
            Some(s) => (id.clone(), s),
            None => {
                return Err(format!(
                    "{role} {id:?} is not defined; add an [orgs.{id}] table (known: {})",
                    orgs.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        },
        OrgRef::Inline(s) => (s.org.clone().unwrap_or_else(|| role.to_string()), s),
    };
    let levels = spec
        .levels
        .iter()
        .map(|l| Level::from_str(l).map_err(|e| format!("{role} {id:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(OrgProfile {
        org: id.clone(),
        country: spec.country.clone(),
        org_type: spec.org_type.clone(),
        levels,
        sectors: spec.sectors.clone(),
        accreditations: spec.accreditations.clone(),
        endpoint: format!("https://{id}.invalid:443"),
        signing_keys: Vec::new(),
        encryption_keys: vec![],
        functions: spec.functions.clone(),
    })
}

fn case_content(
    case: &CaseSpec,
    d: &MessageSpec,
    origin: &OrgProfile,
) -> Result<(Direction, Content), String> {
    fn pick<T: Clone>(a: &Option<T>, b: &Option<T>) -> Option<T> {
        a.clone().or_else(|| b.clone())
    }
    let direction = match pick(&case.direction, &d.direction) {
        Some(s) => Direction::from_str(&s)?,
        None => Direction::Egress,
    };
    let kind = parse_kind(&pick(&case.kind, &d.kind).unwrap_or_else(|| "free-text".into()))?;
    let level = parse_level(&pick(&case.level, &d.level).unwrap_or_else(|| "technical".into()))?;
    let tlp = parse_tlp(&pick(&case.tlp, &d.tlp).unwrap_or_else(|| "GREEN".into()))?;
    Ok((
        direction,
        Content {
            origin_org: origin.org.clone(),
            kind,
            level,
            marking: Some(Marking {
                tlp,
                classification: pick(&case.classification, &d.classification).unwrap_or_default(),
                exercise: pick(&case.exercise, &d.exercise).unwrap_or(false),
            }),
            recipients: pick(&case.recipients, &d.recipients).unwrap_or_default(),
            cluster: pick(&case.cluster, &d.cluster).unwrap_or_default(),
            ..Default::default()
        },
    ))
}

/// Run the table-driven cases in `cases_toml` (format: `deploy/policy/cases.toml`) against
/// `policy`. A malformed file or case is an error naming the case; a failing case is a
/// result with `passed() == false`.
pub fn run_cases(policy: &LocalPolicy, cases_toml: &str) -> Result<Vec<CaseResult>, PolicyError> {
    let file: CasesFile = toml::from_str(cases_toml)
        .map_err(|e| PolicyError::Cases(format!("invalid cases file: {e}")))?;
    if file.cases.is_empty() {
        return Err(PolicyError::Cases(
            "the cases file has no [[case]] entries".into(),
        ));
    }
    let mut out = Vec::with_capacity(file.cases.len());
    for (i, case) in file.cases.iter().enumerate() {
        let ctx = |e: String| PolicyError::Cases(format!("case {} ({:?}): {e}", i + 1, case.name));
        let origin = org_profile(&case.origin, &file.orgs, "origin").map_err(ctx)?;
        let recipient = org_profile(&case.recipient, &file.orgs, "recipient").map_err(ctx)?;
        let (direction, content) = case_content(case, &file.defaults, &origin).map_err(ctx)?;
        let v = policy.evaluate(&PolicyInput {
            direction,
            content: &content,
            origin: &origin,
            recipient: &recipient,
        });
        out.push(CaseResult {
            name: case.name.clone(),
            expected: matches!(case.expect, Expect::Allow),
            got: v.allowed,
            reason: v.reason,
        });
    }
    Ok(out)
}
