//! Routing: for every (message, candidate recipient) an allow/deny decision
//! with the deciding rule and a reason, at the origin (egress) and again at
//! the receiver (ingress). The built-in rules run in a fixed order; the
//! operator's local policy runs last and can only narrow. This is the single
//! place where clusters and policy meet messages; it performs no I/O and knows
//! nothing of the network, so it is testable on its own.
//!
//! Built-in rules, in order:
//! 1. `cluster-membership` — the recipient is a current member of the
//!    message's cluster; the origin was a member at the log index it claims,
//!    did not create the message after its right to publish there ended, and,
//!    if that right has ended, the message arrives within the former-member
//!    grace (`[clusters] former_member_grace_secs`) of the ending entry;
//! 2. `cluster-role` — the origin held a publishing role (not observer) at
//!    the log index it claims;
//! 3. `recipients` — with explicit recipients, only those;
//! 4. `levels` — the message's level is one the recipient is certified for
//!    (intersected with the cluster's levels); the political level takes only
//!    situation reports, crisis status, assessments and public-communication
//!    lines;
//! 5. `tlp` — RED only to explicitly named recipients; the cluster's maximum;
//! 6. `classification` — only to organisations accredited for it;
//! 7. `scope` — sector and member-state scoping, when the message is scoped;
//! 8. `exercise` — exercise traffic only inside exercise clusters;
//! 9. `local-policy` — the operator's Cedar policy (forbid rules only).
//!
//! The rules about the origin (its membership and role at the claimed index,
//! the cluster's levels and maximum TLP) are the same functions whether this
//! node is the origin or a receiver: [`Router::check_origin`] runs them at
//! publish, and every `decide` runs them again, in both directions.

use std::sync::Arc;

use bluewire_proto::v1::{Content, Kind, Level, Tlp};

use crate::cluster::{ClusterState, Standing};
use crate::envelope::{is_control_kind, is_political_kind, level_label, tlp_label};
use crate::pki::{self, OrgProfile};
use crate::policy::{Direction, PolicyHandle, PolicyInput};

/// One rule's verdict, for `policy explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub rule: &'static str,
    pub allowed: bool,
    pub reason: String,
}

/// One decision, explainable to an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub org: String,
    pub allowed: bool,
    /// The deciding rule, e.g. "cluster-membership", "tlp".
    pub rule: &'static str,
    pub reason: String,
    /// Not decidable yet (the receiver's view of the cluster log is behind
    /// the origin's): the sender should keep the message and retry.
    pub retry: bool,
    /// Every rule evaluated, in order, up to the deciding one.
    pub steps: Vec<Step>,
}

/// Everything a decision may look at besides the message itself.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub direction: Direction,
    /// The receiving organisation.
    pub recipient: &'a str,
    /// Its CA-asserted profile, when known (rules that need it defer
    /// to send time when it is not).
    pub recipient_profile: Option<&'a OrgProfile>,
    pub origin_profile: Option<&'a OrgProfile>,
    /// This node's view of the message's cluster.
    pub cluster: Option<&'a ClusterState>,
    /// The deciding node's clock (unix ms), passed in so decisions are pure.
    pub now_ms: i64,
}

/// Default for `[clusters] former_member_grace_secs`, in ms.
pub const DEFAULT_FORMER_MEMBER_GRACE_MS: i64 = 600_000;

/// The routing engine.
#[derive(Clone)]
pub struct Router {
    policy: Option<Arc<PolicyHandle>>,
    /// How long after the end of its right to publish a former member's
    /// earlier messages are still accepted (ms).
    grace_ms: i64,
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("local_policy", &self.policy.is_some())
            .finish()
    }
}

/// One built-in rule's check.
type Rule = fn(&Content, &Context<'_>) -> Outcome;

enum Outcome {
    Pass(String),
    Deny(String),
    Later(String),
}

impl Router {
    pub fn new() -> Self {
        Self {
            policy: None,
            grace_ms: DEFAULT_FORMER_MEMBER_GRACE_MS,
        }
    }

    /// A router that applies the operator's local policy after the built-ins.
    pub fn with_policy(policy: Arc<PolicyHandle>) -> Self {
        Self {
            policy: Some(policy),
            ..Self::new()
        }
    }

    /// The former-member grace (`[clusters] former_member_grace_secs`), in ms.
    pub fn with_former_member_grace_ms(mut self, grace_ms: i64) -> Self {
        self.grace_ms = grace_ms.max(0);
        self
    }

    /// May this organisation (the origin) put `content` into cluster `c` at
    /// all? The origin-side rules that refuse a message as a whole rather than
    /// per recipient, checked before signing; every receiver runs the same
    /// functions again inside [`Router::decide`]. Returns the rule and reason.
    pub fn check_origin(
        &self,
        content: &Content,
        c: &ClusterState,
        now_ms: i64,
    ) -> Result<(), (&'static str, String)> {
        let checks: [(&'static str, Outcome); 4] = [
            (
                "cluster-membership",
                origin_standing(content, c, now_ms, self.grace_ms),
            ),
            ("cluster-role", origin_role(content, c)),
            ("levels", cluster_levels(content, c)),
            ("tlp", cluster_tlp(content, c)),
        ];
        for (rule, outcome) in checks {
            match outcome {
                Outcome::Pass(_) => {}
                Outcome::Deny(why) | Outcome::Later(why) => return Err((rule, why)),
            }
        }
        Ok(())
    }

    pub fn policy(&self) -> Option<&Arc<PolicyHandle>> {
        self.policy.as_ref()
    }

    /// Is `recipient` in `content`'s audience at all? Only the rules about the
    /// recipient that depend on nothing but the signed message and the
    /// recipient's certified profile (explicit recipients, certified levels,
    /// TLP:RED naming, accreditation, scope) — not membership now, time or the
    /// local policy — so every node gives the same answer whenever it asks.
    /// Used to judge who may speak about a message (a marking raise).
    pub fn audience(
        &self,
        content: &Content,
        recipient: &str,
        recipient_profile: Option<&OrgProfile>,
    ) -> Result<(), String> {
        let ctx = Context {
            direction: Direction::Egress,
            recipient,
            recipient_profile,
            origin_profile: None,
            cluster: None,
            now_ms: 0,
        };
        let rules: [(&str, Rule); 5] = [
            ("recipients", recipients),
            ("levels", levels),
            ("tlp", tlp),
            ("classification", classification),
            ("scope", scope),
        ];
        for (rule, check) in rules {
            if let Outcome::Deny(why) | Outcome::Later(why) = check(content, &ctx) {
                return Err(format!("{rule}: {why}"));
            }
        }
        Ok(())
    }

    /// Decide, for each candidate, whether `content` may be sent to it now.
    /// Profiles come from the cluster's log (CA-certified certificates).
    pub fn egress(
        &self,
        content: &Content,
        candidates: &[String],
        cluster: Option<&ClusterState>,
        now_ms: i64,
    ) -> Vec<Decision> {
        let profile = |org: &str| {
            cluster
                .and_then(|c| c.members.get(org))
                .map(|m| &*m.profile)
        };
        candidates
            .iter()
            .map(|org| {
                self.decide(
                    content,
                    Context {
                        direction: Direction::Egress,
                        recipient: org,
                        recipient_profile: profile(org),
                        origin_profile: profile(&content.origin_org),
                        cluster,
                        now_ms,
                    },
                )
            })
            .collect()
    }

    /// Decide whether this node (`me`) may accept `content`.
    pub fn ingress(
        &self,
        content: &Content,
        me: &str,
        cluster: Option<&ClusterState>,
        now_ms: i64,
    ) -> Decision {
        let profile = |org: &str| {
            cluster
                .and_then(|c| c.members.get(org))
                .map(|m| &*m.profile)
        };
        self.decide(
            content,
            Context {
                direction: Direction::Ingress,
                recipient: me,
                recipient_profile: profile(me),
                origin_profile: profile(&content.origin_org),
                cluster,
                now_ms,
            },
        )
    }

    /// The full rule chain for one (message, recipient).
    pub fn decide(&self, content: &Content, ctx: Context<'_>) -> Decision {
        // A direct message is judged without any cluster, whatever the context carries.
        let ctx = Context {
            cluster: ctx.cluster.filter(|_| !content.cluster.is_empty()),
            ..ctx
        };
        let mut steps = Vec::new();
        let rules: [(&'static str, &dyn Fn() -> Outcome); 9] = [
            ("cluster-membership", &|| {
                membership(content, &ctx, self.grace_ms)
            }),
            ("cluster-role", &|| cluster_role(content, &ctx)),
            ("recipients", &|| recipients(content, &ctx)),
            ("levels", &|| levels(content, &ctx)),
            ("tlp", &|| tlp(content, &ctx)),
            ("classification", &|| classification(content, &ctx)),
            ("scope", &|| scope(content, &ctx)),
            ("exercise", &|| exercise(content, &ctx)),
            ("local-policy", &|| self.local_policy(content, &ctx)),
        ];
        for (rule, check) in rules {
            let (reason, retry) = match check() {
                Outcome::Pass(reason) => {
                    steps.push(Step {
                        rule,
                        allowed: true,
                        reason,
                    });
                    continue;
                }
                Outcome::Deny(reason) => (reason, false),
                Outcome::Later(reason) => (reason, true),
            };
            steps.push(Step {
                rule,
                allowed: false,
                reason: reason.clone(),
            });
            return Decision {
                org: ctx.recipient.to_string(),
                allowed: false,
                rule,
                reason,
                retry,
                steps,
            };
        }
        // Why it may go: the membership rule's reason (it always runs first).
        let reason = steps
            .iter()
            .find(|s| s.rule == "cluster-membership")
            .map(|s| s.reason.clone())
            .unwrap_or_default();
        Decision {
            org: ctx.recipient.to_string(),
            allowed: true,
            rule: "allowed",
            reason,
            retry: false,
            steps,
        }
    }

    fn local_policy(&self, content: &Content, ctx: &Context<'_>) -> Outcome {
        let Some(policy) = &self.policy else {
            return Outcome::Pass("no local policy loaded".into());
        };
        let (Some(origin), Some(recipient)) = (ctx.origin_profile, ctx.recipient_profile) else {
            return Outcome::Pass("profiles not known yet; decided at send time".into());
        };
        let v = policy.evaluate(&PolicyInput {
            direction: ctx.direction,
            content,
            origin,
            recipient,
        });
        if v.allowed {
            Outcome::Pass(v.reason)
        } else {
            Outcome::Deny(v.reason)
        }
    }
}

fn membership(content: &Content, ctx: &Context<'_>, grace_ms: i64) -> Outcome {
    let org = ctx.recipient;
    if org == content.origin_org {
        return Outcome::Deny("the origin does not send to itself".into());
    }
    if content.cluster.is_empty() {
        return Outcome::Pass("no cluster: a direct federation message".into());
    }
    let Some(c) = ctx.cluster else {
        return Outcome::Deny(format!(
            "cluster {} is unknown to this node",
            content.cluster
        ));
    };
    let ingress = ctx.direction == Direction::Ingress;
    if ingress && c.head_index < content.cluster_index {
        return Outcome::Later(format!(
            "{org} has applied {}'s log up to {}, the origin up to {}: catching up",
            c.id, c.head_index, content.cluster_index
        ));
    }
    if let Outcome::Deny(why) = origin_standing(content, c, ctx.now_ms, grace_ms) {
        return Outcome::Deny(why);
    }
    if ingress && !c.is_member(org) && c.standing(org) == Some(Standing::Invited) {
        return Outcome::Later(format!(
            "{org} has not applied its own acceptance into {} yet",
            c.id
        ));
    }
    if !c.is_member(org) {
        return Outcome::Deny(format!("{org} is not a current member of {}", c.id));
    }
    Outcome::Pass(format!("{org} is a current member of {}", c.id))
}

/// The origin's standing at the log index it claims: a member then, the
/// message created before its right to publish ended, and, once that right
/// has ended, no later than `grace_ms` after it by the deciding node's clock
/// (so a departed member cannot keep backdating messages into the cluster).
fn origin_standing(content: &Content, c: &ClusterState, now_ms: i64, grace_ms: i64) -> Outcome {
    let (origin, index) = (&content.origin_org, content.cluster_index);
    if c.member_at(origin, index).is_none() {
        return Outcome::Deny(format!(
            "{origin} was not a member of {} at log index {index}",
            c.id
        ));
    }
    match c.publisher_at(origin, index) {
        Some(Some(ended_ms)) if content.created_at_ms > ended_ms => Outcome::Deny(format!(
            "{origin} sent it after its membership of {} ended (or it became an observer) at {ended_ms}",
            c.id
        )),
        Some(Some(ended_ms)) if now_ms > ended_ms.saturating_add(grace_ms) => {
            Outcome::Deny(format!(
                "{origin}'s membership of {} ended (or it became an observer) at {ended_ms}; \
                 messages it created before then are accepted for {} s after that \
                 (clusters.former_member_grace_secs), and it is now {} s later",
                c.id,
                grace_ms / 1000,
                now_ms.saturating_sub(ended_ms) / 1000
            ))
        }
        _ => Outcome::Pass(format!(
            "{origin} was a member of {} at log index {index}",
            c.id
        )),
    }
}

/// The origin held a role that may publish (not observer) at the claimed index.
fn origin_role(content: &Content, c: &ClusterState) -> Outcome {
    let (origin, index) = (&content.origin_org, content.cluster_index);
    match c.publisher_at(origin, index) {
        Some(_) => Outcome::Pass(format!(
            "{origin} held a publishing role in {} at log index {index}",
            c.id
        )),
        None => Outcome::Deny(format!(
            "{origin} was an observer of {} at log index {index}: observers receive but do not publish",
            c.id
        )),
    }
}

fn cluster_role(content: &Content, ctx: &Context<'_>) -> Outcome {
    match ctx.cluster {
        Some(c) => origin_role(content, c),
        None => Outcome::Pass("no cluster".into()),
    }
}

/// The cluster works at the message's level.
fn cluster_levels(content: &Content, c: &ClusterState) -> Outcome {
    let level = level_label(content.level);
    if c.levels.contains(&content.level) {
        Outcome::Pass(format!("{} works at the {level} level", c.id))
    } else {
        Outcome::Deny(format!(
            "{} works at {}, not the {level} level",
            c.id,
            c.levels
                .iter()
                .map(|l| level_label(*l))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// The message's TLP is within the cluster's maximum.
fn cluster_tlp(content: &Content, c: &ClusterState) -> Outcome {
    let t = content.marking.as_ref().map(|m| m.tlp).unwrap_or(0);
    if t > c.max_tlp {
        Outcome::Deny(format!(
            "{} is {} but {} allows at most {}: lower the marking or use another cluster",
            content.id,
            tlp_label(t),
            c.id,
            tlp_label(c.max_tlp)
        ))
    } else {
        Outcome::Pass(format!(
            "within {}'s maximum {}",
            c.id,
            tlp_label(c.max_tlp)
        ))
    }
}

fn recipients(content: &Content, ctx: &Context<'_>) -> Outcome {
    if content.recipients.is_empty() {
        return Outcome::Pass("no explicit recipients".into());
    }
    if content.recipients.iter().any(|r| r == ctx.recipient) {
        Outcome::Pass("named as an explicit recipient".into())
    } else {
        Outcome::Deny(format!(
            "not among the explicit recipients ({})",
            content.recipients.join(", ")
        ))
    }
}

pub(crate) fn pki_level(l: i32) -> Option<pki::Level> {
    match Level::try_from(l).ok()? {
        Level::Technical => Some(pki::Level::Technical),
        Level::Operational => Some(pki::Level::Operational),
        Level::Political => Some(pki::Level::Political),
        Level::Unspecified => None,
    }
}

fn levels(content: &Content, ctx: &Context<'_>) -> Outcome {
    let level = level_label(content.level);
    if let Some(c) = ctx.cluster
        && let Outcome::Deny(why) = cluster_levels(content, c)
    {
        return Outcome::Deny(why);
    }
    let kind = Kind::try_from(content.kind).unwrap_or(Kind::Unspecified);
    if content.level == Level::Political as i32
        && !is_political_kind(kind)
        && !is_control_kind(kind)
    {
        return Outcome::Deny(format!(
            "the political level receives situation reports, crisis status, assessments, public-communication lines, notices, lessons learned and reopens, not {}",
            crate::envelope::kind_label(content.kind)
        ));
    }
    // An organisation speaks only at the levels it is certified for: escalation is the way up.
    if let Some(op) = ctx.origin_profile
        && let Some(l) = pki_level(content.level)
        && !op.levels.contains(&l)
    {
        return Outcome::Deny(format!(
            "the origin {} is certified for {} only and cannot send at the {level} level: escalate instead",
            op.org,
            op.levels
                .iter()
                .map(|l| l.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let Some(p) = ctx.recipient_profile else {
        return Outcome::Pass(
            "recipient's certified levels not known yet; checked at send time".into(),
        );
    };
    match pki_level(content.level) {
        Some(l) if p.levels.contains(&l) => {
            Outcome::Pass(format!("{} is certified for the {level} level", p.org))
        }
        _ => Outcome::Deny(format!(
            "{} is certified for {} only, not the {level} level",
            p.org,
            p.levels
                .iter()
                .map(|l| l.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn tlp(content: &Content, ctx: &Context<'_>) -> Outcome {
    let t = content.marking.as_ref().map(|m| m.tlp).unwrap_or(0);
    if let Some(c) = ctx.cluster
        && let Outcome::Deny(why) = cluster_tlp(content, c)
    {
        return Outcome::Deny(why);
    }
    match Tlp::try_from(t).unwrap_or(Tlp::Unspecified) {
        Tlp::Red if !content.recipients.iter().any(|r| r == ctx.recipient) => {
            Outcome::Deny(format!(
                "TLP:RED goes only to explicitly named recipients; {} is not named",
                ctx.recipient
            ))
        }
        Tlp::Red => Outcome::Pass("TLP:RED to a named recipient".into()),
        Tlp::AmberStrict => {
            Outcome::Pass("TLP:AMBER+STRICT: for the recipient organisation only".into())
        }
        Tlp::Amber => {
            Outcome::Pass("TLP:AMBER: the recipient and its need-to-know constituents".into())
        }
        Tlp::Green => Outcome::Pass("TLP:GREEN: within the community".into()),
        Tlp::Clear => Outcome::Pass("TLP:CLEAR: no restriction".into()),
        Tlp::Unspecified => Outcome::Deny("the message has no TLP marking".into()),
    }
}

fn classification(content: &Content, ctx: &Context<'_>) -> Outcome {
    let class = content
        .marking
        .as_ref()
        .map(|m| m.classification.as_str())
        .unwrap_or("");
    if class.is_empty() {
        return Outcome::Pass("unclassified".into());
    }
    let Some(p) = ctx.recipient_profile else {
        return Outcome::Deny(format!(
            "classified {class}: the recipient's accreditation is not known"
        ));
    };
    if p.accreditations
        .iter()
        .any(|a| a.eq_ignore_ascii_case(class))
    {
        Outcome::Pass(format!("{} is accredited for {class}", p.org))
    } else {
        Outcome::Deny(format!("{} is not accredited for {class}", p.org))
    }
}

fn scope(content: &Content, ctx: &Context<'_>) -> Outcome {
    if content.scope_sectors.is_empty() && content.scope_countries.is_empty() {
        return Outcome::Pass("not scoped".into());
    }
    let Some(p) = ctx.recipient_profile else {
        return Outcome::Deny(
            "scoped message: the recipient's certified sectors and country are not known".into(),
        );
    };
    if !content.scope_countries.is_empty()
        && !content
            .scope_countries
            .iter()
            .any(|c| c.eq_ignore_ascii_case(&p.country))
    {
        return Outcome::Deny(format!(
            "scoped to {}; {} is in {}",
            content.scope_countries.join(", "),
            p.org,
            p.country
        ));
    }
    if !content.scope_sectors.is_empty()
        && !content
            .scope_sectors
            .iter()
            .any(|s| p.sectors.iter().any(|x| x.eq_ignore_ascii_case(s)))
    {
        return Outcome::Deny(format!(
            "scoped to sectors {}; {} is certified for {}",
            content.scope_sectors.join(", "),
            p.org,
            if p.sectors.is_empty() {
                "none".to_string()
            } else {
                p.sectors.join(", ")
            }
        ));
    }
    Outcome::Pass("within the message's scope".into())
}

fn exercise(content: &Content, ctx: &Context<'_>) -> Outcome {
    let flagged = content.marking.as_ref().is_some_and(|m| m.exercise);
    let exercise_cluster = ctx.cluster.is_some_and(|c| c.exercise);
    match (flagged, exercise_cluster) {
        (true, true) => Outcome::Pass("exercise traffic inside an exercise cluster".into()),
        (true, false) => Outcome::Deny("exercise traffic goes only into exercise clusters".into()),
        (false, _) => Outcome::Pass("not exercise traffic".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(recipients: &[&str]) -> Content {
        Content {
            origin_org: "csirt-be".into(),
            recipients: recipients.iter().map(|s| s.to_string()).collect(),
            level: Level::Technical as i32,
            marking: Some(bluewire_proto::v1::Marking {
                tlp: Tlp::Amber as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn explicit_recipients_narrow_delivery() {
        let r = Router::new();
        let peers = vec!["cert-eu".to_string(), "csirt-fr".to_string()];
        let d = r.egress(&msg(&["cert-eu"]), &peers, None, 0);
        assert!(d[0].allowed);
        assert!(!d[1].allowed);
        assert_eq!(d[1].rule, "recipients");
        assert!(
            r.egress(&msg(&[]), &peers, None, 0)
                .iter()
                .all(|d| d.allowed)
        );
        assert!(!r.ingress(&msg(&["cert-eu"]), "csirt-fr", None, 0).allowed);
        assert!(!r.ingress(&msg(&[]), "csirt-be", None, 0).allowed);
    }

    #[test]
    fn an_allowed_decision_says_why_the_recipient_may_have_it() {
        use crate::cluster::tests::{A, B, Log, ORGS, publication};
        let r = Router::new();
        let d = r.egress(&msg(&["cert-eu"]), &["cert-eu".to_string()], None, 0);
        assert!(d[0].allowed);
        assert_eq!(d[0].reason, "no cluster: a direct federation message");
        let l = Log::with_members();
        let m = publication(A, &l.st, l.clock);
        let d = r.ingress(&m, ORGS[B], Some(&l.st), l.clock);
        assert!(d.allowed, "{d:?}");
        assert_eq!(
            d.reason,
            format!("{} is a current member of {}", ORGS[B], l.st.id)
        );
    }

    #[test]
    fn only_a_receiver_that_has_not_applied_its_own_acceptance_is_told_to_wait() {
        use crate::cluster::tests::{A, B, C, Log, ORGS, accept, invite, leave, publication};
        use bluewire_proto::v1::ClusterRole;
        let r = Router::new();
        let mut l = Log::new();
        l.ok(A, invite(B, ClusterRole::Member));
        l.ok(A, invite(C, ClusterRole::Member));
        l.ok(C, accept(C));
        l.ok(C, leave());
        let m = publication(A, &l.st, l.clock);
        // Invited, at ingress: its log lags its own acceptance.
        let d = r.ingress(&m, ORGS[B], Some(&l.st), l.clock);
        assert!(!d.allowed && d.retry, "{d:?}");
        assert!(
            d.reason.contains("has not applied its own acceptance"),
            "{d:?}"
        );
        // Invited, at egress: not a member, not sent.
        let d = &r.egress(&m, &[ORGS[B].to_string()], Some(&l.st), l.clock)[0];
        assert!(!d.allowed && !d.retry, "{d:?}");
        assert_eq!(d.rule, "cluster-membership");
        // Gone, at ingress: refused, not deferred.
        let d = r.ingress(&m, ORGS[C], Some(&l.st), l.clock);
        assert!(!d.allowed && !d.retry, "{d:?}");
        assert!(d.reason.contains("not a current member"), "{d:?}");
    }

    #[test]
    fn a_direct_message_is_judged_without_the_cluster_the_context_carries() {
        use crate::cluster::tests::{E, Log, ORGS};
        // org-e never belonged to the cluster, which works at the technical level only,
        // up to AMBER, and is not an exercise cluster.
        let l = Log::with_members();
        let mut m = msg(&[]);
        m.origin_org = ORGS[E].into();
        m.level = Level::Operational as i32;
        m.marking = Some(bluewire_proto::v1::Marking {
            tlp: Tlp::AmberStrict as i32,
            exercise: true,
            ..Default::default()
        });
        let d = Router::new().ingress(&m, "cert-eu", Some(&l.st), 0);
        let step = |rule: &str| d.steps.iter().find(|s| s.rule == rule).unwrap().clone();
        assert_eq!(step("cluster-role").reason, "no cluster");
        assert!(step("levels").allowed, "{d:?}");
        assert!(step("tlp").allowed, "{d:?}");
        // Exercise traffic outside any cluster is refused, the cluster notwithstanding.
        assert_eq!((d.allowed, d.rule), (false, "exercise"), "{d:?}");
    }

    #[test]
    fn a_cluster_bounds_level_tlp_and_exercise_traffic() {
        use crate::cluster::tests::{A, B, Log, ORGS, publication};
        let r = Router::new();
        let l = Log::with_members();
        let decide = |m: &Content, st: &ClusterState| r.ingress(m, ORGS[B], Some(st), l.clock);
        let ok = publication(A, &l.st, l.clock);
        assert!(decide(&ok, &l.st).allowed);

        let operational = Content {
            level: Level::Operational as i32,
            ..ok.clone()
        };
        let d = decide(&operational, &l.st);
        assert_eq!((d.allowed, d.rule), (false, "levels"), "{d:?}");
        assert!(d.reason.contains("works at technical"), "{d:?}");

        let strict = Content {
            marking: Some(bluewire_proto::v1::Marking {
                tlp: Tlp::AmberStrict as i32,
                ..Default::default()
            }),
            ..ok.clone()
        };
        let d = decide(&strict, &l.st);
        assert_eq!((d.allowed, d.rule), (false, "tlp"), "{d:?}");

        let drill = Content {
            marking: Some(bluewire_proto::v1::Marking {
                tlp: Tlp::Green as i32,
                exercise: true,
                ..Default::default()
            }),
            ..ok.clone()
        };
        let d = decide(&drill, &l.st);
        assert_eq!((d.allowed, d.rule), (false, "exercise"), "{d:?}");
        let mut exercise_cluster = l.st.clone();
        exercise_cluster.exercise = true;
        let d = decide(&drill, &exercise_cluster);
        assert!(d.allowed, "{d:?}");
        assert_eq!(
            d.steps
                .iter()
                .find(|s| s.rule == "exercise")
                .unwrap()
                .reason,
            "exercise traffic inside an exercise cluster"
        );
    }

    #[test]
    fn a_router_shows_whether_a_local_policy_is_loaded() {
        let plain = Router::new();
        assert!(plain.policy().is_none());
        assert_eq!(format!("{plain:?}"), "Router { local_policy: false }");
        let h = PolicyHandle::new(None).unwrap();
        let with = Router::with_policy(Arc::new(h));
        assert!(with.policy().is_some());
        assert_eq!(format!("{with:?}"), "Router { local_policy: true }");
    }

    #[test]
    fn unknown_cluster_is_refused_both_ways() {
        let r = Router::new();
        let mut m = msg(&[]);
        m.cluster = "csirt-be/x".into();
        assert!(!r.egress(&m, &["cert-eu".to_string()], None, 0)[0].allowed);
        let d = r.ingress(&m, "cert-eu", None, 0);
        assert!(!d.allowed && !d.retry);
        assert!(d.reason.contains("unknown"));
    }
}

#[cfg(test)]
mod matrix;
