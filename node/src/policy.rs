//! The operator's local routing policy, written in [Cedar](https://www.cedarpolicy.com/)
//! (design rule 6 of "Routing policy").
//!
//! # Narrow only
//!
//! The router consults the local policy only after the built-in rules (membership, level,
//! TLP, classification, scoping) allowed a delivery; the final answer is
//! `built-in AND local`. **A local policy is a set of `forbid` rules; `permit` rules cannot
//! widen anything.** Every evaluation runs with an implicit
//! `permit(principal, action, resource);` added to the file, so Cedar's default-deny never
//! bites and only a matching `forbid` turns an allow into a deny. A `permit` written in the
//! file is accepted (and validated) but has no effect; `bluewire policy check` warns about it.
//!
//! Fail closed: if a `forbid` rule cannot be evaluated for a request (Cedar skips erroring
//! policies, which would silently allow), the verdict is a deny naming that rule.
//!
//! # What a rule sees
//!
//! One request per (message, recipient) decision, at the origin (`egress`) and again at the
//! receiver (`ingress`):
//!
//! | Cedar | Bluewire |
//! |-------|----------|
//! | `principal` | `Org::"<origin org>"` — the CA-asserted profile of the origin |
//! | `action` | `Action::"deliver"` (the only action) |
//! | `resource` | `Org::"<recipient org>"` — the CA-asserted profile of the recipient |
//! | `context` | the message's routing fields, see [`SCHEMA`] |
//!
//! `Org` attributes: `country` (`"BE"`, `"EU"`), `type` (`"csirt"`, `"military"`,
//! `"ministry"`, `"eu-body"`, `"liaison"`, `"sectoral"`, …), `levels`, `sectors`,
//! `accreditations` (sets of strings). Context: `direction` (`"egress"`|`"ingress"`),
//! `kind` (the proto `Kind` name in kebab case: `"free-text"`, `"incident-report"`,
//! `"situation-report"`, …), `level` (`"technical"`|`"operational"`|`"political"`), `tlp`
//! (`"CLEAR"`, `"GREEN"`, `"AMBER"`, `"AMBER+STRICT"`, `"RED"`), `classification` (`""` when
//! unclassified), `exercise`, `cluster` (`""` for a direct message), `origin`, `recipient`
//! (org ids) and `recipients` (the explicitly named recipients, often empty).
//!
//! ```cedar
//! @id("no-red-to-military")
//! @reason("RED material never goes to military partners")
//! forbid (principal, action == Action::"deliver", resource)
//! when { context.tlp == "RED" && resource.type == "military" };
//! ```
//!
//! Annotations: `@id("…")` names the rule in verdicts, audit and `bluewire policy test`
//! output; `@reason("…")` is appended to the verdict. A rule without `@id` is named by its
//! Cedar id (`policy0`, `policy1`, … in file order).
//!
//! # Files
//!
//! See `deploy/policy/example.cedar` and `deploy/policy/cases.toml` (the table-driven test
//! format read by [`run_cases`]). [`PolicyHandle`] reloads the file without a restart: a
//! file that fails to parse or validate (or disappears) keeps the previous policy in force.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

use bluewire_proto::v1::{Content, Kind, Level as PbLevel, Marking, Tlp};
use cedar_policy::{
    AuthorizationError, Authorizer, Context, Decision, Effect, Entities, Entity, EntityId,
    EntityTypeName, EntityUid, Policy, PolicyId, PolicySet, Request, RestrictedExpression, Schema,
    ValidationMode, Validator,
};
use miette::Diagnostic;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::pki::{Level, OrgProfile};

/// The Cedar schema every local policy is validated against (strict mode), in Cedar's
/// human-readable schema format.
///
/// Entities and attributes:
/// - `Org` — an organisation, identified by its org id (`Org::"csirt-be"`); both the
///   principal (the message's origin) and the resource (the candidate recipient). All
///   attributes come from the federation CA's certificate, never from the peer:
///   - `country: String` — two uppercase letters, an ISO country code or `"EU"`;
///   - `type: String` — `csirt`, `liaison`, `eu-body`, `ministry`, `military`, `sectoral`, …;
///   - `levels: Set<String>` — subset of `technical`, `operational`, `political`;
///   - `sectors: Set<String>` — e.g. `energy`, `health`;
///   - `accreditations: Set<String>` — e.g. `EU RESTRICTED`.
/// - `Action::"deliver"` — deliver one message to one recipient; `appliesTo` principal
///   `Org`, resource `Org`, with the context record:
///   - `direction: String` — `egress` (decided at the origin node) or `ingress` (decided
///     again at the receiving node);
///   - `kind: String` — message kind, kebab case of the proto name (`free-text`,
///     `incident-report`, `situation-report`, `crisis-status`, `assessment`,
///     `public-communication`, …; `unspecified`/`unknown` otherwise);
///   - `level: String` — `technical`, `operational`, `political` (or `unspecified`);
///   - `tlp: String` — `CLEAR`, `GREEN`, `AMBER`, `AMBER+STRICT`, `RED` (or `UNSPECIFIED`);
///   - `classification: String` — e.g. `EU RESTRICTED`; `""` when unclassified;
///   - `exercise: Bool` — exercise traffic;
///   - `cluster: String` — the cluster id, `""` for a direct message;
///   - `origin: String`, `recipient: String` — the org ids (same as the entity ids);
///   - `recipients: Set<String>` — the explicitly named recipients (empty: whoever routing
///     allows).
pub const SCHEMA: &str = r#"// Bluewire local routing policy schema (see bluewire_node::policy).
entity Org = {
  "country": String,
  "type": String,
  "levels": Set<String>,
  "sectors": Set<String>,
  "accreditations": Set<String>,
};

action "deliver" appliesTo {
  principal: [Org],
  resource: [Org],
  context: {
    "direction": String,
    "kind": String,
    "level": String,
    "tlp": String,
    "classification": String,
    "exercise": Bool,
    "cluster": String,
    "origin": String,
    "recipient": String,
    "recipients": Set<String>,
  },
};
"#;

/// Id of the implicit permit added to every policy set.
const IMPLICIT_PERMIT_ID: &str = "bluewire-implicit-permit";

fn schema() -> &'static Schema {
    static S: OnceLock<Schema> = OnceLock::new();
    S.get_or_init(|| {
        // PANIC SAFETY: SCHEMA is a constant covered by unit tests.
        #[allow(clippy::expect_used)]
        let (s, _warnings) =
            Schema::from_cedarschema_str(SCHEMA).expect("built-in Cedar schema parses");
        s
    })
}

#[derive(Debug, Error)]
pub enum PolicyError {
    #[error("cannot read policy file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Cedar syntax errors, one per line, each `file:line:col: message`.
    #[error("{0}")]
    Parse(String),
    /// Schema validation errors, one per line, each `file:line:col: message`.
    #[error("{0}")]
    Invalid(String),
    /// A malformed test-case file.
    #[error("{0}")]
    Cases(String),
}

/// Where the decision is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// At the origin node, before sending.
    Egress,
    /// At the receiving node, before storing (defence in depth).
    Ingress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Egress => "egress",
            Direction::Ingress => "ingress",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "egress" => Ok(Direction::Egress),
            "ingress" => Ok(Direction::Ingress),
            _ => Err(format!(
                "unknown direction {s:?}; expected \"egress\" or \"ingress\""
            )),
        }
    }
}

/// What the policy sees for one (message, recipient) decision.
#[derive(Clone, Copy, Debug)]
pub struct PolicyInput<'a> {
    pub direction: Direction,
    pub content: &'a Content,
    /// CA-asserted profile of the origin org.
    pub origin: &'a OrgProfile,
    /// CA-asserted profile of the recipient org.
    pub recipient: &'a OrgProfile,
}

/// The local policy's answer for one decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub allowed: bool,
    /// `"allowed"`, or e.g. `"forbidden by local policy no-red-to-military (policy0): …"`.
    pub reason: String,
}

impl Verdict {
    pub fn allow() -> Self {
        Verdict {
            allowed: true,
            reason: "allowed".into(),
        }
    }

    pub fn deny(reason: impl Into<String>) -> Self {
        Verdict {
            allowed: false,
            reason: reason.into(),
        }
    }
}

/// One rule of the file, for listing and explaining.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Cedar policy id: `policy0`, `policy1`, … in file order.
    pub id: String,
    /// The `@id("…")` annotation, if any.
    pub name: Option<String>,
    /// The `@reason("…")` annotation, if any.
    pub reason: Option<String>,
    /// `true` for `forbid`, `false` for a (no-effect) `permit`.
    pub forbid: bool,
    /// 1-based line of the rule's first character in the file.
    pub line: usize,
}

impl Rule {
    /// `name (policyN)` or `policyN (file:line)` when unnamed.
    fn label(&self, source: &str) -> String {
        match &self.name {
            Some(_) => self.short_label(),
            None => format!("{} ({source}:{})", self.id, self.line),
        }
    }

    /// `name (policyN)` or `policyN`.
    fn short_label(&self) -> String {
        match &self.name {
            Some(n) => format!("{n} ({})", self.id),
            None => self.id.clone(),
        }
    }
}

/// A parsed, schema-validated local policy (plus the implicit built-in permit).
#[derive(Debug)]
pub struct LocalPolicy {
    source: String,
    hash: String,
    set: PolicySet,
    rules: Vec<Rule>,
    warnings: Vec<String>,
    /// Verdicts by everything the policy can see (the request is a pure
    /// function of it), so a decision repeated for every message of a
    /// stream costs a lookup, not a Cedar evaluation. Belongs to this
    /// loaded policy: a reload starts empty.
    memo: dashmap::DashMap<String, Verdict>,
}

/// Upper bound on memoised verdicts per loaded policy (then it starts over).
const MEMO_LIMIT: usize = 16_384;

/// Everything `build_request` reads, as one key.
fn memo_key(input: &PolicyInput) -> String {
    let c = input.content;
    let m = c.marking.clone().unwrap_or_default();
    let p = |o: &crate::pki::OrgProfile| {
        format!(
            "{}|{}|{}|{:?}|{:?}|{:?}",
            o.org, o.country, o.org_type, o.levels, o.sectors, o.accreditations
        )
    };
    format!(
        "{}|{}|{}|{}|{}|{}|{}|{:?}|{}|{}",
        input.direction.as_str(),
        c.kind,
        c.level,
        m.tlp,
        m.classification,
        m.exercise,
        c.cluster,
        c.recipients,
        p(input.origin),
        p(input.recipient)
    )
}

impl LocalPolicy {
    /// Parse `text` and validate it against [`SCHEMA`]. `origin_name` names the text in
    /// error messages (normally the file path): every error reads
    /// `origin_name:line:col: what is wrong`.
    pub fn from_text(text: &str, origin_name: &str) -> Result<Self, PolicyError> {
        let parsed = PolicySet::from_str(text).map_err(|errs| {
            PolicyError::Parse(
                errs.iter()
                    .map(|e| located(origin_name, text, e))
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        })?;
        if let Some(t) = parsed.templates().next() {
            let line = find_line(text, &t.to_string());
            return Err(PolicyError::Invalid(format!(
                "{origin_name}:{line}: policy templates (?principal / ?resource slots) are not supported in a local policy; write a concrete forbid rule"
            )));
        }

        let validator = Validator::new(schema().clone());
        let result = validator.validate(&parsed, ValidationMode::Strict);
        let errors: Vec<String> = result
            .validation_errors()
            .map(|e| located(origin_name, text, e))
            .collect();
        if !errors.is_empty() {
            return Err(PolicyError::Invalid(errors.join("\n")));
        }
        let mut warnings: Vec<String> = result
            .validation_warnings()
            .map(|w| located(origin_name, text, w))
            .collect();

        // Rules in file order, with the line each one starts on.
        let mut policies: Vec<&Policy> = parsed.policies().collect();
        policies.sort_by_key(|p| {
            p.id()
                .to_string()
                .strip_prefix("policy")
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(usize::MAX)
        });
        let mut rules = Vec::with_capacity(policies.len());
        let mut cursor = 0;
        for p in policies {
            let src = p.to_string();
            let start = text[cursor..]
                .find(src.as_str())
                .map(|i| cursor + i)
                .unwrap_or(cursor);
            cursor = (start + src.len()).min(text.len());
            let rule = Rule {
                id: p.id().to_string(),
                name: p.annotation("id").map(str::to_string),
                reason: p.annotation("reason").map(str::to_string),
                forbid: p.effect() == Effect::Forbid,
                line: line_col(text, start).0,
            };
            if !rule.forbid {
                warnings.push(format!(
                    "{origin_name}:{}: {} is a permit rule and has no effect: a local policy can only forbid what the built-in rules allow",
                    rule.line,
                    rule.short_label()
                ));
            }
            rules.push(rule);
        }
        let mut seen = HashSet::new();
        for r in &rules {
            if let Some(n) = &r.name
                && !seen.insert(n.as_str())
            {
                warnings.push(format!(
                    "{origin_name}:{}: @id({n:?}) is used by more than one rule",
                    r.line
                ));
            }
        }

        let mut set = parsed;
        let implicit = Policy::parse(
            Some(PolicyId::new(IMPLICIT_PERMIT_ID)),
            "permit(principal, action, resource);",
        )
        .map_err(|e| PolicyError::Invalid(format!("internal: implicit permit: {e}")))?;
        set.add(implicit)
            .map_err(|e| PolicyError::Invalid(format!("internal: implicit permit: {e}")))?;

        Ok(LocalPolicy {
            source: origin_name.to_string(),
            hash: sha256_hex(text),
            set,
            rules,
            warnings,
            memo: dashmap::DashMap::new(),
        })
    }

    /// Read and parse a policy file; errors name the file and line.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_text(&text, &path.display().to_string())
    }

    /// Decide one (message, recipient) delivery. `allowed` unless a `forbid` rule matches
    /// (or a `forbid` rule cannot be evaluated: fail closed).
    pub fn evaluate(&self, input: &PolicyInput) -> Verdict {
        let key = memo_key(input);
        if let Some(v) = self.memo.get(&key) {
            return v.clone();
        }
        let v = self.evaluate_uncached(input);
        if self.memo.len() >= MEMO_LIMIT {
            self.memo.clear();
        }
        self.memo.insert(key, v.clone());
        v
    }

    fn evaluate_uncached(&self, input: &PolicyInput) -> Verdict {
        let (request, entities) = match build_request(input) {
            Ok(r) => r,
            Err(e) => {
                return Verdict::deny(format!(
                    "local policy {} cannot be evaluated for this message ({e}); denied to be safe",
                    self.source
                ));
            }
        };
        let response = Authorizer::new().is_authorized(&request, &self.set, &entities);
        let diag = response.diagnostics();
        let failed: Vec<String> = diag
            .errors()
            .filter_map(|e| {
                let AuthorizationError::PolicyEvaluationError(pe) = e;
                let rule = self.rule(pe.policy_id().as_ref())?;
                rule.forbid
                    .then(|| format!("{}: {}", rule.label(&self.source), pe.inner()))
            })
            .collect();
        if !failed.is_empty() {
            return Verdict::deny(format!(
                "local policy rule failed to evaluate, denied to be safe: {}",
                failed.join("; ")
            ));
        }
        match response.decision() {
            Decision::Allow => Verdict::allow(),
            Decision::Deny => {
                let mut ids: Vec<String> = diag
                    .reason()
                    .map(|id| id.to_string())
                    .filter(|id| id != IMPLICIT_PERMIT_ID)
                    .collect();
                ids.sort_by_key(|id| self.rules.iter().position(|r| &r.id == id));
                let parts: Vec<String> = ids
                    .iter()
                    .map(|id| match self.rule(id) {
                        Some(r) => match &r.reason {
                            Some(why) => format!("{}: {why}", r.label(&self.source)),
                            None => r.label(&self.source),
                        },
                        None => id.clone(),
                    })
                    .collect();
                if parts.is_empty() {
                    Verdict::deny(format!("forbidden by local policy {}", self.source))
                } else {
                    Verdict::deny(format!("forbidden by local policy {}", parts.join("; ")))
                }
            }
        }
    }

    /// Hex SHA-256 of the file text.
    pub fn hash(&self) -> String {
        self.hash.clone()
    }

    /// Number of policies in the file (the implicit permit is not counted).
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The name the policy was loaded under (the file path).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Non-fatal findings: permit rules (which have no effect), duplicate `@id`s, Cedar
    /// validator warnings. Each `file:line: message`.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn rule(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }
}

// ---------------------------------------------------------------------------
// Request building
// ---------------------------------------------------------------------------

/// `KIND_INCIDENT_REPORT` → `incident-report`.
fn kebab(proto_name: &str, prefix: &str) -> String {
    proto_name
        .strip_prefix(prefix)
        .unwrap_or(proto_name)
        .to_ascii_lowercase()
        .replace('_', "-")
}

/// The policy-facing name of a proto `Kind` value (`free-text`, `incident-report`, …).
pub fn kind_name(kind: i32) -> String {
    match Kind::try_from(kind) {
        Ok(k) => kebab(k.as_str_name(), "KIND_"),
        Err(_) => "unknown".into(),
    }
}

/// The policy-facing name of a proto `Level` value (`technical`, …).
pub fn level_name(level: i32) -> String {
    match PbLevel::try_from(level) {
        Ok(l) => kebab(l.as_str_name(), "LEVEL_"),
        Err(_) => "unknown".into(),
    }
}

/// The policy-facing name of a proto `Tlp` value (`CLEAR`, …, `AMBER+STRICT`, `RED`).
pub fn tlp_name(tlp: i32) -> String {
    match Tlp::try_from(tlp) {
        Ok(Tlp::AmberStrict) => "AMBER+STRICT".into(),
        Ok(t) => t
            .as_str_name()
            .strip_prefix("TLP_")
            .unwrap_or(t.as_str_name())
            .to_string(),
        Err(_) => "UNKNOWN".into(),
    }
}

fn parse_kind(s: &str) -> Result<i32, String> {
    let name = format!("KIND_{}", s.trim().to_ascii_uppercase().replace('-', "_"));
    Kind::from_str_name(&name).map(|k| k as i32).ok_or_else(|| {
        let known: Vec<String> = (1..64)
            .filter_map(|i| Kind::try_from(i).ok())
            .map(|k| kebab(k.as_str_name(), "KIND_"))
            .collect();
        format!("unknown kind {s:?}; expected one of: {}", known.join(", "))
    })
}

fn parse_level(s: &str) -> Result<i32, String> {
    let name = format!("LEVEL_{}", s.trim().to_ascii_uppercase());
    PbLevel::from_str_name(&name)
        .filter(|l| *l != PbLevel::Unspecified)
        .map(|l| l as i32)
        .ok_or_else(|| {
            format!("unknown level {s:?}; expected one of: technical, operational, political")
        })
}

fn parse_tlp(s: &str) -> Result<i32, String> {
    let up = s.trim().to_ascii_uppercase().replace('+', "_");
    Tlp::from_str_name(&format!("TLP_{up}"))
        .filter(|t| *t != Tlp::Unspecified)
        .map(|t| t as i32)
        .ok_or_else(|| {
            format!("unknown TLP {s:?}; expected one of: CLEAR, GREEN, AMBER, AMBER+STRICT, RED")
        })
}

fn str_set<'a>(items: impl IntoIterator<Item = &'a str>) -> RestrictedExpression {
    RestrictedExpression::new_set(
        items
            .into_iter()
            .map(|s| RestrictedExpression::new_string(s.to_string())),
    )
}

fn org_uid(org: &str) -> Result<EntityUid, String> {
    let ty = EntityTypeName::from_str("Org").map_err(|e| e.to_string())?;
    Ok(EntityUid::from_type_name_and_id(ty, EntityId::new(org)))
}

fn org_entity(p: &OrgProfile) -> Result<Entity, String> {
    let attrs: HashMap<String, RestrictedExpression> = [
        (
            "country".to_string(),
            RestrictedExpression::new_string(p.country.clone()),
        ),
        (
            "type".to_string(),
            RestrictedExpression::new_string(p.org_type.clone()),
        ),
        (
            "levels".to_string(),
            str_set(p.levels.iter().map(|l| l.as_str())),
        ),
        (
            "sectors".to_string(),
            str_set(p.sectors.iter().map(String::as_str)),
        ),
        (
            "accreditations".to_string(),
            str_set(p.accreditations.iter().map(String::as_str)),
        ),
    ]
    .into_iter()
    .collect();
    Entity::new(org_uid(&p.org)?, attrs, HashSet::new()).map_err(|e| e.to_string())
}

fn build_request(input: &PolicyInput) -> Result<(Request, Entities), String> {
    let c = input.content;
    let marking = c.marking.clone().unwrap_or_default();
    let context = Context::from_pairs([
        (
            "direction".to_string(),
            RestrictedExpression::new_string(input.direction.as_str().into()),
        ),
        (
            "kind".to_string(),
            RestrictedExpression::new_string(kind_name(c.kind)),
        ),
        (
            "level".to_string(),
            RestrictedExpression::new_string(level_name(c.level)),
        ),
        (
            "tlp".to_string(),
            RestrictedExpression::new_string(tlp_name(marking.tlp)),
        ),
        (
            "classification".to_string(),
            RestrictedExpression::new_string(marking.classification.clone()),
        ),
        (
            "exercise".to_string(),
            RestrictedExpression::new_bool(marking.exercise),
        ),
        (
            "cluster".to_string(),
            RestrictedExpression::new_string(c.cluster.clone()),
        ),
        (
            "origin".to_string(),
            RestrictedExpression::new_string(input.origin.org.clone()),
        ),
        (
            "recipient".to_string(),
            RestrictedExpression::new_string(input.recipient.org.clone()),
        ),
        (
            "recipients".to_string(),
            str_set(c.recipients.iter().map(String::as_str)),
        ),
    ])
    .map_err(|e| e.to_string())?;
    let principal = org_uid(&input.origin.org)?;
    let resource = org_uid(&input.recipient.org)?;
    let action = EntityUid::from_str(r#"Action::"deliver""#).map_err(|e| e.to_string())?;
    let mut entities = vec![org_entity(input.origin)?];
    if input.recipient.org != input.origin.org {
        entities.push(org_entity(input.recipient)?);
    }
    let entities = Entities::from_entities(entities, Some(schema())).map_err(|e| e.to_string())?;
    let request = Request::new(principal, action, resource, context, Some(schema()))
        .map_err(|e| e.to_string())?;
    Ok((request, entities))
}

// ---------------------------------------------------------------------------
// Error locations and hashing
// ---------------------------------------------------------------------------

/// `name:line:col: message (help)` from a Cedar diagnostic's first label.
fn located(name: &str, text: &str, d: &(impl Diagnostic + fmt::Display + ?Sized)) -> String {
    let offset = d.labels().and_then(|mut it| it.next()).map(|l| l.offset());
    let mut msg = d.to_string();
    match d.help() {
        Some(help) => msg.push_str(&format!(" (help: {help})")),
        None if msg == "unexpected end of input" => {
            msg.push_str(" (help: the last rule is probably missing a closing `}`, `)` or `;`)")
        }
        None => {}
    }
    match offset {
        Some(off) => {
            let (line, col) = line_col(text, off);
            format!("{name}:{line}:{col}: {msg}")
        }
        None => format!("{name}: {msg}"),
    }
}

/// 1-based (line, column) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut off = offset.min(text.len());
    while !text.is_char_boundary(off) {
        off -= 1;
    }
    let before = &text[..off];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit_once('\n')
        .map_or(before, |(_, tail)| tail)
        .chars()
        .count()
        + 1;
    (line, col)
}

fn find_line(text: &str, needle: &str) -> usize {
    text.find(needle).map_or(1, |i| line_col(text, i).0)
}

fn sha256_hex(text: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes()).as_ref())
}

// ---------------------------------------------------------------------------
// Hot reload
// ---------------------------------------------------------------------------

/// The router's handle on the local policy: hot-reloadable, cheap to read.
#[derive(Debug)]
pub struct PolicyHandle {
    path: Option<PathBuf>,
    current: RwLock<Option<Arc<LocalPolicy>>>,
    /// (mtime, size) of the file when the watcher last looked.
    stamp: Mutex<Option<(SystemTime, u64)>>,
    /// Hash of the policy in force (None: no local policy). For audit hooks.
    changes: tokio::sync::watch::Sender<Option<String>>,
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl PolicyHandle {
    /// `None`: no local policy — everything the built-in rules allow stays allowed.
    /// `Some(path)`: the file must load now (a node must not start with a broken policy).
    pub fn new(path: Option<PathBuf>) -> Result<Self, PolicyError> {
        let (current, stamp) = match &path {
            Some(p) => {
                let stamp = file_stamp(p);
                (Some(Arc::new(LocalPolicy::load(p)?)), stamp)
            }
            None => (None, None),
        };
        let hash = current.as_ref().map(|p| p.hash());
        Ok(PolicyHandle {
            path,
            current: RwLock::new(current),
            stamp: Mutex::new(stamp),
            changes: tokio::sync::watch::channel(hash).0,
        })
    }

    /// The configured file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Re-read the file. `Ok(true)` when a different policy is now in force, `Ok(false)`
    /// when the text is unchanged (or no file is configured). A file that cannot be read,
    /// parsed or validated leaves the previous policy in force and returns the error.
    pub fn reload(&self) -> Result<bool, PolicyError> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        if let Ok(mut s) = self.stamp.lock() {
            *s = file_stamp(path);
        }
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io {
            path: path.clone(),
            source,
        })?;
        let hash = sha256_hex(&text);
        if self.current().is_some_and(|p| p.hash == hash) {
            return Ok(false);
        }
        let policy = Arc::new(LocalPolicy::from_text(&text, &path.display().to_string())?);
        match self.current.write() {
            Ok(mut g) => *g = Some(policy),
            Err(poisoned) => *poisoned.into_inner() = Some(policy),
        }
        self.changes.send_replace(Some(hash));
        Ok(true)
    }

    /// The policy in force, if any.
    pub fn current(&self) -> Option<Arc<LocalPolicy>> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// `allowed` when no policy is loaded; otherwise the policy's verdict.
    pub fn evaluate(&self, input: &PolicyInput) -> Verdict {
        match self.current() {
            Some(p) => p.evaluate(input),
            None => Verdict::allow(),
        }
    }

    /// The hash of the policy in force, updated on every successful change (for audit).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.changes.subscribe()
    }

    /// Poll the file's mtime and size every `every` and reload when they change, until
    /// `shutdown` turns true. Logs each change and each rejected file once. Does nothing
    /// when no file is configured. Must be called inside a tokio runtime.
    pub fn spawn_watcher(
        self: &Arc<Self>,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    r = shutdown.changed() => {
                        if r.is_err() || *shutdown.borrow() {
                            break;
                        }
                        continue;
                    }
                }
                if *shutdown.borrow() {
                    break;
                }
                let now = file_stamp(&path);
                let seen = me.stamp.lock().map(|s| *s).unwrap_or(None);
                if now == seen {
                    continue;
                }
                match me.reload() {
                    Ok(true) => {
                        if let Some(p) = me.current() {
                            tracing::info!(
                                policy.path = %path.display(),
                                policy.hash = %p.hash(),
                                policy.rules = p.len(),
                                "local policy reloaded"
                            );
                        }
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(
                        policy.path = %path.display(),
                        error = %e,
                        "local policy file rejected; the previous policy stays in force"
                    ),
                }
            }
        });
    }
}

// ---------------------------------------------------------------------------
// Table-driven cases
// ---------------------------------------------------------------------------

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

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../deploy/policy/example.cedar");
    const CASES: &str = include_str!("../../deploy/policy/cases.toml");

    fn org(id: &str, ty: &str, levels: &[Level]) -> OrgProfile {
        OrgProfile {
            org: id.into(),
            country: "BE".into(),
            org_type: ty.into(),
            levels: levels.to_vec(),
            sectors: vec![],
            accreditations: vec![],
            endpoint: format!("https://{id}.example:7443"),
            signing_keys: vec![],
        }
    }

    fn content(tlp: Tlp, level: PbLevel, exercise: bool, cluster: &str) -> Content {
        Content {
            origin_org: "csirt-be".into(),
            kind: Kind::IncidentReport as i32,
            level: level as i32,
            marking: Some(Marking {
                tlp: tlp as i32,
                classification: String::new(),
                exercise,
            }),
            cluster: cluster.into(),
            ..Default::default()
        }
    }

    fn eval(p: &LocalPolicy, c: &Content, to: &OrgProfile) -> Verdict {
        let from = org("csirt-be", "csirt", &[Level::Technical]);
        p.evaluate(&PolicyInput {
            direction: Direction::Egress,
            content: c,
            origin: &from,
            recipient: to,
        })
    }

    #[test]
    fn schema_parses_and_names_map() {
        let _ = schema();
        assert_eq!(kind_name(Kind::IncidentReport as i32), "incident-report");
        assert_eq!(kind_name(Kind::FreeText as i32), "free-text");
        assert_eq!(tlp_name(Tlp::AmberStrict as i32), "AMBER+STRICT");
        assert_eq!(tlp_name(Tlp::Red as i32), "RED");
        assert_eq!(level_name(PbLevel::Political as i32), "political");
        assert_eq!(parse_tlp("amber+strict"), Ok(Tlp::AmberStrict as i32));
        assert_eq!(
            parse_kind("incident-report"),
            Ok(Kind::IncidentReport as i32)
        );
        assert!(parse_kind("nope").unwrap_err().contains("free-text"));
    }

    #[test]
    fn parse_error_names_file_line_and_column() {
        let text =
            "// header\n\nforbid (principal, action, resource)\nwhen { context.tlp == \"RED\" \n";
        let e = LocalPolicy::from_text(text, "local.cedar").unwrap_err();
        assert!(matches!(e, PolicyError::Parse(_)), "{e:?}");
        let msg = e.to_string();
        assert!(msg.starts_with("local.cedar:"), "{msg}");
        // The missing `}` is noticed at the end of the last rule, line 4.
        assert!(msg.contains("local.cedar:4:"), "{msg}");
        assert!(msg.contains("missing a closing"), "{msg}");

        let e = LocalPolicy::from_text(
            "\n\nforbid (principal, action, resource) when { context.tlp = \"RED\" };",
            "x.cedar",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("x.cedar:3:45:"), "{e}");
        assert!(e.contains("try using '=='"), "{e}");
    }

    #[test]
    fn unknown_attribute_fails_schema_validation() {
        let text = "permit (principal, action, resource);\n@id(\"typo\")\nforbid (principal, action == Action::\"deliver\", resource)\n  when { resource.kind == \"military\" };\n";
        let e = LocalPolicy::from_text(text, "p.cedar").unwrap_err();
        assert!(matches!(e, PolicyError::Invalid(_)), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("p.cedar:4:"), "{msg}");
        assert!(msg.contains("kind"), "{msg}");
        assert!(msg.contains("policy1"), "{msg}");

        let e = LocalPolicy::from_text(
            "forbid (principal, action, resource) when { context.colour == \"red\" };",
            "q.cedar",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("colour") && e.starts_with("q.cedar:1:"), "{e}");

        let e = LocalPolicy::from_text(
            "forbid (principal == User::\"x\", action, resource);",
            "r.cedar",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("User"), "{e}");
    }

    #[test]
    fn forbid_narrows() {
        let p = LocalPolicy::from_text(
            "@id(\"no-red-to-military\")\n@reason(\"RED never goes to the military\")\nforbid (principal, action == Action::\"deliver\", resource)\n  when { context.tlp == \"RED\" && resource.type == \"military\" };\n",
            "p.cedar",
        )
        .unwrap();
        assert_eq!(p.len(), 1);
        let mil = org("mod-fr", "military", &[Level::Operational]);
        let csirt = org("csirt-fr", "csirt", &[Level::Technical]);
        let red = content(Tlp::Red, PbLevel::Operational, false, "c1");
        let amber = content(Tlp::Amber, PbLevel::Operational, false, "c1");
        let v = eval(&p, &red, &mil);
        assert!(!v.allowed);
        assert_eq!(
            v.reason,
            "forbidden by local policy no-red-to-military (policy0): RED never goes to the military"
        );
        assert_eq!(eval(&p, &amber, &mil), Verdict::allow());
        assert_eq!(eval(&p, &red, &csirt), Verdict::allow());
    }

    #[test]
    fn permit_cannot_widen_and_empty_policy_allows() {
        // An explicit permit for a case a forbid also matches: forbid wins.
        let p = LocalPolicy::from_text(
            "permit (principal, action, resource) when { context.tlp == \"RED\" };\nforbid (principal, action, resource) when { context.tlp == \"RED\" };\n",
            "p.cedar",
        )
        .unwrap();
        assert_eq!(p.len(), 2);
        assert!(
            p.warnings()
                .iter()
                .any(|w| w.contains("policy0") && w.contains("no effect"))
        );
        let to = org("csirt-fr", "csirt", &[Level::Technical]);
        let v = eval(&p, &content(Tlp::Red, PbLevel::Technical, false, "c"), &to);
        assert!(!v.allowed);
        assert_eq!(v.reason, "forbidden by local policy policy1 (p.cedar:2)");

        // A file of nothing but comments: allowed (the implicit permit), not Cedar's
        // default deny.
        let p = LocalPolicy::from_text("// nothing yet\n", "e.cedar").unwrap();
        assert!(p.is_empty());
        assert!(eval(&p, &content(Tlp::Red, PbLevel::Technical, false, "c"), &to).allowed);
        // A permit that matches nothing changes nothing either.
        let p = LocalPolicy::from_text(
            "permit (principal, action, resource) when { false };",
            "f.cedar",
        )
        .unwrap();
        assert!(eval(&p, &content(Tlp::Red, PbLevel::Technical, false, "c"), &to).allowed);
    }

    #[test]
    fn a_forbid_that_errors_fails_closed() {
        // Long overflow is a runtime error that strict validation cannot rule out.
        let p = LocalPolicy::from_text(
            "@id(\"overflow\")\nforbid (principal, action, resource) when { 9223372036854775807 + 1 > 0 };\n",
            "o.cedar",
        )
        .unwrap();
        let to = org("csirt-fr", "csirt", &[Level::Technical]);
        let v = eval(
            &p,
            &content(Tlp::Green, PbLevel::Technical, false, "c"),
            &to,
        );
        assert!(!v.allowed, "{v:?}");
        assert!(
            v.reason.contains("overflow (policy0)") && v.reason.contains("denied to be safe"),
            "{v:?}"
        );
    }

    #[test]
    fn hash_is_sha256_of_text() {
        let p = LocalPolicy::from_text("", "e.cedar").unwrap();
        assert_eq!(
            p.hash(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn reload_keeps_previous_on_bad_file_and_picks_up_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("local.cedar");
        let deny_red = "forbid (principal, action, resource) when { context.tlp == \"RED\" };\n";
        std::fs::write(&path, deny_red).unwrap();
        let h = PolicyHandle::new(Some(path.clone())).unwrap();
        let first = h.current().unwrap().hash();
        let to = org("csirt-fr", "csirt", &[Level::Technical]);
        let from = org("csirt-be", "csirt", &[Level::Technical]);
        let red = content(Tlp::Red, PbLevel::Technical, false, "c");
        let amber = content(Tlp::Amber, PbLevel::Technical, false, "c");
        let input = |c| PolicyInput {
            direction: Direction::Ingress,
            content: c,
            origin: &from,
            recipient: &to,
        };
        assert!(!h.evaluate(&input(&red)).allowed);
        assert!(!h.reload().unwrap(), "unchanged text is not a change");

        // A broken file: error, previous policy stays.
        std::fs::write(&path, "forbid (principal, action, resource) when {").unwrap();
        let e = h.reload().unwrap_err().to_string();
        assert!(e.contains("local.cedar:1:"), "{e}");
        assert_eq!(h.current().unwrap().hash(), first);
        assert!(!h.evaluate(&input(&red)).allowed);
        // An invalid (schema) file: same.
        std::fs::write(
            &path,
            "forbid (principal, action, resource) when { context.nope };",
        )
        .unwrap();
        assert!(matches!(h.reload(), Err(PolicyError::Invalid(_))));
        assert_eq!(h.current().unwrap().hash(), first);
        // A missing file: same.
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(h.reload(), Err(PolicyError::Io { .. })));
        assert_eq!(h.current().unwrap().hash(), first);

        // A good change is picked up.
        let mut rx = h.subscribe();
        std::fs::write(
            &path,
            "forbid (principal, action, resource) when { context.tlp == \"AMBER\" };\n",
        )
        .unwrap();
        assert!(h.reload().unwrap());
        assert_ne!(h.current().unwrap().hash(), first);
        assert!(h.evaluate(&input(&red)).allowed);
        assert!(!h.evaluate(&input(&amber)).allowed);
        assert!(rx.has_changed().unwrap());
        assert_eq!(
            rx.borrow_and_update().clone(),
            Some(h.current().unwrap().hash())
        );

        // No policy configured: everything allowed, reload is a no-op.
        let none = PolicyHandle::new(None).unwrap();
        assert!(none.evaluate(&input(&red)).allowed);
        assert!(!none.reload().unwrap());
        // A node must not start on a broken file.
        std::fs::write(&path, "forbid (").unwrap();
        assert!(PolicyHandle::new(Some(path)).is_err());
    }

    #[tokio::test]
    async fn watcher_reloads_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("local.cedar");
        std::fs::write(&path, "// empty\n").unwrap();
        let h = Arc::new(PolicyHandle::new(Some(path.clone())).unwrap());
        let (tx, rx) = tokio::sync::watch::channel(false);
        h.spawn_watcher(Duration::from_millis(20), rx);
        let mut changes = h.subscribe();
        std::fs::write(&path, "forbid (principal, action, resource);\n").unwrap();
        tokio::time::timeout(Duration::from_secs(10), changes.changed())
            .await
            .expect("watcher picked up the change")
            .unwrap();
        assert_eq!(h.current().unwrap().len(), 1);
        tx.send(true).unwrap();
    }

    #[test]
    fn example_files_pass() {
        let p = LocalPolicy::from_text(EXAMPLE, "example.cedar").unwrap();
        assert!(p.len() >= 3, "{}", p.len());
        assert!(p.warnings().is_empty(), "{:?}", p.warnings());
        assert!(p.rules().iter().all(|r| r.forbid && r.name.is_some()));
        let results = run_cases(&p, CASES).unwrap();
        assert!(results.len() >= 6);
        for r in &results {
            assert!(r.passed(), "{r:?}");
        }
        assert!(results.iter().any(|r| !r.expected));
        assert!(results.iter().any(|r| r.expected));
        // The reasons name the rule.
        assert!(
            results
                .iter()
                .filter(|r| !r.got)
                .all(|r| r.reason.starts_with("forbidden by local policy "))
        );
    }

    #[test]
    fn case_file_errors_name_the_case() {
        let p = LocalPolicy::from_text("", "e.cedar").unwrap();
        let e = run_cases(
            &p,
            "[[case]]\nname = \"a\"\norigin = \"ghost\"\nrecipient = \"ghost\"\nexpect = \"allow\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("case 1") && e.contains("ghost"), "{e}");
        let e = run_cases(&p, "[[case]]\nname = \"a\"\nexpect = \"maybe\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid cases file"), "{e}");
        let inline = r#"
[[case]]
name = "inline"
origin = { org = "a", country = "BE", type = "csirt", levels = ["technical"] }
recipient = { country = "FR", type = "csirt", levels = ["technical"] }
tlp = "purple"
expect = "allow"
"#;
        let e = run_cases(&p, inline).unwrap_err().to_string();
        assert!(e.contains("unknown TLP \"purple\""), "{e}");
        let ok = inline.replace("purple", "RED");
        let r = run_cases(&p, &ok).unwrap();
        assert!(r[0].passed());
    }
}
