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
//! `accreditations`, `functions` (blueprint functions: `"csirts-network"`, `"cyclone"`,
//! `"presidency"`, …) (sets of strings). Context: `direction` (`"egress"`|`"ingress"`),
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
//!
//! # Layout
//!
//! This file is the module's public face: the types every part shares ([`PolicyError`],
//! [`Direction`], [`PolicyInput`], [`Verdict`]), the re-exports (other modules name
//! `crate::policy::X`, never a submodule) and these docs.
//! - `engine`: the schema, [`LocalPolicy`] (parse, validate, evaluate, memoise) and how a
//!   decision becomes a Cedar request;
//! - `handle`: [`PolicyHandle`], the hot-reloadable policy in force and its file watcher;
//! - `cases`: [`run_cases`], the table-driven test runner behind `bluewire policy test`.
//!
//! This file must never parse, evaluate or load a policy itself.

mod cases;
mod engine;
mod handle;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use bluewire_proto::v1::Content;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::pki::OrgProfile;

pub use cases::{CaseResult, run_cases};
pub use engine::{LocalPolicy, Rule, SCHEMA};
pub use handle::PolicyHandle;

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

#[cfg(test)]
mod tests;
