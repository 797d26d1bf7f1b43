//! The policy engine: the Cedar schema, parsing and validating a policy file into a
//! [`LocalPolicy`], turning one (message, recipient) decision into a Cedar request, and
//! evaluating it (memoised per loaded policy).
//!
//! Owns: [`SCHEMA`], the implicit permit that makes a policy narrow-only, rule listing and
//! naming (`@id`, `@reason`), the verdict text, the memo, and the `file:line:col` error
//! locations.
//!
//! It must never let a policy widen what the built-in rules allowed (every set carries the
//! implicit permit; only a `forbid` can deny), allow when a `forbid` rule cannot be
//! evaluated (fail closed), read a policy's inputs from anything but the message and the
//! CA-asserted profiles in [`PolicyInput`], or keep a memoised verdict across a reload (the
//! memo belongs to one loaded policy).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::OnceLock;

use bluewire_proto::v1::{Kind, Level as PbLevel, Tlp};
use cedar_policy::{
    AuthorizationError, Authorizer, Context, Decision, Effect, Entities, Entity, EntityId,
    EntityTypeName, EntityUid, Policy, PolicyId, PolicySet, Request, RestrictedExpression, Schema,
    ValidationMode, Validator,
};
use miette::Diagnostic;
use serde::Serialize;

use super::{PolicyError, PolicyInput, Verdict};
use crate::envelope::{kind_label, level_label, tlp_name};
use crate::pki::OrgProfile;

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
///   - `accreditations: Set<String>` — e.g. `EU RESTRICTED`;
///   - `functions: Set<String>` — blueprint functions, e.g. `csirts-network`, `cyclone`,
///     `presidency`, `reserve-authority` (see [`crate::pki::Function`]).
/// - `Action::"deliver"` — deliver one message to one recipient; `appliesTo` principal
///   `Org`, resource `Org`, with the context record:
///   - `direction: String` — `egress` (decided at the origin node) or `ingress` (decided
///     again at the receiving node);
///   - `kind: String` — message kind, kebab case of the proto name (`free-text`,
///     `incident-report`, `situation-report`, `crisis-status`, `assessment`,
///     `public-communication`, …; `unspecified` otherwise);
///   - `level: String` — `technical`, `operational`, `political` (or `unspecified`);
///   - `tlp: String` — `CLEAR`, `GREEN`, `AMBER`, `AMBER+STRICT`, `RED` (or `unspecified`);
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
  "functions": Set<String>,
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

pub(super) fn schema() -> &'static Schema {
    static S: OnceLock<Schema> = OnceLock::new();
    S.get_or_init(|| {
        // PANIC SAFETY: SCHEMA is a constant covered by unit tests.
        #[allow(clippy::expect_used)]
        let (s, _warnings) =
            Schema::from_cedarschema_str(SCHEMA).expect("built-in Cedar schema parses");
        s
    })
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
    pub(super) hash: String,
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
            "{}|{}|{}|{:?}|{:?}|{:?}|{:?}",
            o.org, o.country, o.org_type, o.levels, o.sectors, o.accreditations, o.functions
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

pub(super) fn parse_kind(s: &str) -> Result<i32, String> {
    let name = format!("KIND_{}", s.trim().to_ascii_uppercase().replace('-', "_"));
    Kind::from_str_name(&name).map(|k| k as i32).ok_or_else(|| {
        let known: Vec<String> = (1..64)
            .filter_map(|i| Kind::try_from(i).ok())
            .map(|k| kebab(k.as_str_name(), "KIND_"))
            .collect();
        format!("unknown kind {s:?}; expected one of: {}", known.join(", "))
    })
}

pub(super) fn parse_level(s: &str) -> Result<i32, String> {
    let name = format!("LEVEL_{}", s.trim().to_ascii_uppercase());
    PbLevel::from_str_name(&name)
        .filter(|l| *l != PbLevel::Unspecified)
        .map(|l| l as i32)
        .ok_or_else(|| {
            format!("unknown level {s:?}; expected one of: technical, operational, political")
        })
}

pub(super) fn parse_tlp(s: &str) -> Result<i32, String> {
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
        (
            "functions".to_string(),
            str_set(p.functions.iter().map(String::as_str)),
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
            RestrictedExpression::new_string(kind_label(c.kind).to_string()),
        ),
        (
            "level".to_string(),
            RestrictedExpression::new_string(level_label(c.level).to_string()),
        ),
        (
            "tlp".to_string(),
            RestrictedExpression::new_string(tlp_name(marking.tlp).to_string()),
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

pub(super) fn sha256_hex(text: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes()).as_ref())
}
