//! Routing: for every (message, candidate recipient) an allow/deny decision
//! with the rule and a reason, at the origin (egress) and again at the
//! receiver (ingress). This is the single place where clusters and the
//! operator's policy plug in; it performs no I/O and knows nothing of the
//! network, so it is testable on its own.

use bluewire_proto::v1::Content;

/// One decision, explainable to an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub org: String,
    pub allowed: bool,
    /// Short rule name, e.g. "recipients".
    pub rule: &'static str,
    pub reason: String,
}

impl Decision {
    fn allow(org: &str, rule: &'static str, reason: impl Into<String>) -> Self {
        Self {
            org: org.to_string(),
            allowed: true,
            rule,
            reason: reason.into(),
        }
    }
    fn deny(org: &str, rule: &'static str, reason: impl Into<String>) -> Self {
        Self {
            org: org.to_string(),
            allowed: false,
            rule,
            reason: reason.into(),
        }
    }
}

/// The routing engine. Today the candidate set is the node's configured
/// peers; the clusters issue replaces it with cluster membership.
#[derive(Debug, Clone, Default)]
pub struct Router {}

impl Router {
    pub fn new() -> Self {
        Self {}
    }

    /// Decide, for each candidate, whether `content` may be sent to it.
    pub fn egress(&self, content: &Content, candidates: &[String]) -> Vec<Decision> {
        candidates
            .iter()
            .map(|org| self.decide(content, org))
            .collect()
    }

    /// Decide whether this node (`me`) may accept `content`.
    pub fn ingress(&self, content: &Content, me: &str) -> Decision {
        self.decide(content, me)
    }

    fn decide(&self, content: &Content, org: &str) -> Decision {
        if org == content.origin_org {
            return Decision::deny(org, "origin", "the origin does not send to itself");
        }
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
        Decision::allow(
            org,
            "federation",
            "a federation peer (no explicit recipients)",
        )
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
        let d = r.egress(&msg(&["cert-eu"]), &peers);
        assert!(d[0].allowed);
        assert!(!d[1].allowed);
        assert_eq!(d[1].rule, "recipients");
        assert!(r.egress(&msg(&[]), &peers).iter().all(|d| d.allowed));
        assert!(!r.ingress(&msg(&["cert-eu"]), "csirt-fr").allowed);
        assert!(!r.ingress(&msg(&[]), "csirt-be").allowed);
    }
}
