//! Routing: for every (message, candidate recipient) an allow/deny decision
//! with the rule and a reason, at the origin (egress) and again at the
//! receiver (ingress). This is the single place where clusters and the
//! operator's policy plug in; it performs no I/O and knows nothing of the
//! network, so it is testable on its own.

use bluewire_proto::v1::Content;

use crate::cluster::ClusterState;

/// One decision, explainable to an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub org: String,
    pub allowed: bool,
    /// Short rule name, e.g. "cluster-membership".
    pub rule: &'static str,
    pub reason: String,
    /// Not decidable yet (the receiver's view of the cluster log is behind
    /// the origin's): the sender should keep the message and retry.
    pub retry: bool,
}

impl Decision {
    fn allow(org: &str, rule: &'static str, reason: impl Into<String>) -> Self {
        Self {
            org: org.to_string(),
            allowed: true,
            rule,
            reason: reason.into(),
            retry: false,
        }
    }
    fn deny(org: &str, rule: &'static str, reason: impl Into<String>) -> Self {
        Self {
            org: org.to_string(),
            allowed: false,
            rule,
            reason: reason.into(),
            retry: false,
        }
    }
    fn later(org: &str, rule: &'static str, reason: impl Into<String>) -> Self {
        Self {
            retry: true,
            ..Self::deny(org, rule, reason)
        }
    }
}

/// The routing engine.
#[derive(Debug, Clone, Default)]
pub struct Router {}

impl Router {
    pub fn new() -> Self {
        Self {}
    }

    /// Decide, for each candidate, whether `content` may be sent to it now.
    /// `cluster` is the sender's current view of `content.cluster` (None for
    /// a message without a cluster, or a cluster this node does not know).
    pub fn egress(
        &self,
        content: &Content,
        candidates: &[String],
        cluster: Option<&ClusterState>,
    ) -> Vec<Decision> {
        candidates
            .iter()
            .map(|org| self.egress_one(content, org, cluster))
            .collect()
    }

    fn egress_one(&self, content: &Content, org: &str, cluster: Option<&ClusterState>) -> Decision {
        if org == content.origin_org {
            return Decision::deny(org, "origin", "the origin does not send to itself");
        }
        if !content.cluster.is_empty() {
            let Some(c) = cluster else {
                return Decision::deny(
                    org,
                    "cluster-membership",
                    format!("cluster {} is unknown here", content.cluster),
                );
            };
            if !c.is_member(org) {
                return Decision::deny(
                    org,
                    "cluster-membership",
                    format!("{org} is not a current member of {}", c.id),
                );
            }
        }
        self.recipients_rule(content, org, !content.cluster.is_empty())
    }

    fn recipients_rule(&self, content: &Content, org: &str, in_cluster: bool) -> Decision {
        if !content.recipients.is_empty() {
            return if content.recipients.iter().any(|r| r == org) {
                Decision::allow(org, "recipients", "named as an explicit recipient")
            } else {
                Decision::deny(
                    org,
                    "recipients",
                    format!(
                        "not among the explicit recipients ({})",
                        content.recipients.join(", ")
                    ),
                )
            };
        }
        if in_cluster {
            Decision::allow(
                org,
                "cluster-membership",
                format!("a current member of {}", content.cluster),
            )
        } else {
            Decision::allow(org, "federation", "a configured federation peer")
        }
    }

    /// Decide whether this node (`me`) may accept `content`, given its own
    /// view of the cluster. Checks the origin was a member at the log index
    /// it claims, and did not send after its membership ended.
    pub fn ingress(&self, content: &Content, me: &str, cluster: Option<&ClusterState>) -> Decision {
        if me == content.origin_org {
            return Decision::deny(me, "origin", "a node does not receive its own messages");
        }
        if !content.cluster.is_empty() {
            let Some(c) = cluster else {
                return Decision::deny(
                    me,
                    "cluster-membership",
                    format!("cluster {} is unknown to {me}", content.cluster),
                );
            };
            if c.head_index < content.cluster_index {
                return Decision::later(
                    me,
                    "cluster-membership",
                    format!(
                        "{me} has applied {}'s log up to {}, the origin up to {}: catching up",
                        c.id, c.head_index, content.cluster_index
                    ),
                );
            }
            match c.member_at(&content.origin_org, content.cluster_index) {
                None => {
                    return Decision::deny(
                        me,
                        "cluster-membership",
                        format!(
                            "{} was not a member of {} at log index {}",
                            content.origin_org, c.id, content.cluster_index
                        ),
                    );
                }
                Some(Some(ended_ms)) if content.created_at_ms > ended_ms => {
                    return Decision::deny(
                        me,
                        "cluster-membership",
                        format!(
                            "{} sent it after its membership of {} ended",
                            content.origin_org, c.id
                        ),
                    );
                }
                Some(_) => {}
            }
            if !c.is_member(me) {
                if c.standing(me) == Some(crate::cluster::Standing::Invited) {
                    // The origin may already have applied our acceptance.
                    return Decision::later(
                        me,
                        "cluster-membership",
                        format!("{me} has not applied its own acceptance into {} yet", c.id),
                    );
                }
                return Decision::deny(
                    me,
                    "cluster-membership",
                    format!("{me} is not a current member of {}", c.id),
                );
            }
        }
        self.recipients_rule(content, me, !content.cluster.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(recipients: &[&str]) -> Content {
        Content {
            origin_org: "csirt-be".into(),
            recipients: recipients.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn explicit_recipients_narrow_delivery() {
        let r = Router::new();
        let peers = vec!["cert-eu".to_string(), "csirt-fr".to_string()];
        let d = r.egress(&msg(&["cert-eu"]), &peers, None);
        assert!(d[0].allowed);
        assert!(!d[1].allowed);
        assert_eq!(d[1].rule, "recipients");
        assert!(r.egress(&msg(&[]), &peers, None).iter().all(|d| d.allowed));
        assert!(!r.ingress(&msg(&["cert-eu"]), "csirt-fr", None).allowed);
        assert!(!r.ingress(&msg(&[]), "csirt-be", None).allowed);
    }

    #[test]
    fn unknown_cluster_is_refused_both_ways() {
        let r = Router::new();
        let mut m = msg(&[]);
        m.cluster = "csirt-be/x".into();
        assert!(!r.egress(&m, &["cert-eu".to_string()], None)[0].allowed);
        let d = r.ingress(&m, "cert-eu", None);
        assert!(!d.allowed && !d.retry);
        assert!(d.reason.contains("unknown"));
    }
}
