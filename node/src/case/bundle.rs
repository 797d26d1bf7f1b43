//! Evidence bundles for an incident review: checking one offline against the federation
//! root. Pure: the bundle, the root and nothing else — no store, no network, no clock.
//! Every certificate must chain to the root and carry a Bluewire node profile; every
//! envelope must verify under a key one of those certificates certifies, be a workflow
//! message of the bundle's case, and pass the same content checks a receiver applies. The
//! case is then derived from the verified envelopes only, each step also checked for the
//! authority its signer's certificate gives. Not checked offline: certificate validity
//! dates and revocation (check the federation's CRL of the time), and whether the exporting
//! node held every step of the case (a bundle proves what it holds, not that nothing is
//! missing).

use std::collections::BTreeMap;

use bluewire_proto::v1 as pb;
use rustls::pki_types::CertificateDer;

use super::{CaseView, case_of, derive};
use crate::envelope;
use crate::pki::{self, PeerIdentity};

pub const FORMAT: &str = "bluewire-case-bundle/1";

/// What checking a bundle found.
#[derive(Debug)]
pub struct Checked {
    /// The case derived from the envelopes that verified.
    pub view: CaseView,
    /// Organisations whose certificates chained to the root: (org, certificate serial).
    pub signers: Vec<(String, String)>,
    /// Envelopes that verified.
    pub verified: usize,
    /// Everything that did not check out, one line each; empty means the bundle is sound.
    pub problems: Vec<String>,
}

/// Check `bundle` against the federation root certificate `root_der`; `now_ms` only
/// evaluates the clocks of the derived view.
pub fn check(bundle: &pb::CaseBundle, root_der: &[u8], now_ms: i64) -> Checked {
    let mut problems = Vec::new();
    if bundle.format != FORMAT {
        problems.push(format!(
            "format {:?} is not {FORMAT:?}: not a Bluewire case bundle, or a version this tool does not read",
            bundle.format
        ));
    }
    let case = bundle
        .case
        .as_ref()
        .map(|r| (r.origin.clone(), r.id.clone()))
        .unwrap_or_default();
    // key id → (org, raw public key), from certificates that chain to the root; the profile
    // of each organisation, for the authority its steps needed.
    let mut keys: BTreeMap<String, (String, Vec<u8>)> = BTreeMap::new();
    let mut profiles: BTreeMap<String, pki::OrgProfile> = BTreeMap::new();
    let mut signers = Vec::new();
    for (i, der) in bundle.certificates.iter().enumerate() {
        let chain = [CertificateDer::from(der.clone())];
        match pki::identity_from_chain(&chain, root_der) {
            Ok(PeerIdentity::Node { profile, serial }) => {
                for k in &profile.signing_keys {
                    if let Ok(raw) = k.public_key(&profile.org) {
                        match keys.get(&k.key_id) {
                            Some((org, _)) if *org != profile.org => problems.push(format!(
                                "certificate {i} certifies key {} that another certificate gives {org}",
                                k.key_id
                            )),
                            _ => {
                                keys.insert(k.key_id.clone(), (profile.org.clone(), raw));
                            }
                        }
                    }
                }
                signers.push((profile.org.clone(), serial));
                profiles.insert(profile.org.clone(), profile);
            }
            Ok(_) => problems.push(format!(
                "certificate {i} is not a node certificate: only nodes sign messages"
            )),
            Err(e) => problems.push(format!(
                "certificate {i} does not chain to this federation root: {e}"
            )),
        }
    }
    let mut contents = Vec::new();
    for (i, env) in bundle.envelopes.iter().enumerate() {
        match envelope::open_unclocked(env, |k| keys.get(k).cloned()) {
            Ok(o) => {
                let c = o.content;
                if case_of(&c) != Some((case.0.as_str(), case.1.as_str())) {
                    problems.push(format!(
                        "envelope {i} ({}/{}) is not a message of case {}/{}",
                        c.origin_org, c.id, case.0, case.1
                    ));
                } else if let Err(why) = super::authority(&c, profiles.get(&c.origin_org)) {
                    // The certificate in the bundle is the one the step was judged against.
                    problems.push(format!(
                        "envelope {i} ({}/{}): its signer had no authority for it: {why}",
                        c.origin_org, c.id
                    ));
                } else {
                    contents.push(c);
                }
            }
            Err(e) => problems.push(format!("envelope {i}: {e}")),
        }
    }
    if bundle.envelopes.is_empty() {
        problems.push("the bundle holds no envelope".into());
    }
    let refs: Vec<&pb::Content> = contents.iter().collect();
    // Exercise or not from the signed markings only (the bundle's own flag is unsigned).
    let view = derive((&case.0, &case.1), &refs, false, now_ms);
    if bundle.exercise && !view.exercise {
        problems
            .push("the bundle says exercise but no signed message of it is marked exercise".into());
    }
    Checked {
        view,
        signers,
        verified: contents.len(),
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::tests::{ORGS, cert, key, root};
    use bluewire_proto::v1::{Content, Kind, Level, Marking, Tlp, content::Body};
    use prost::Message;

    fn step(org: usize, case: Option<(&str, &str)>) -> Content {
        let id = envelope::new_id();
        let (body, kind) = match case {
            None => (
                Body::CaseOpen(pb::CaseOpen {
                    title: "t".into(),
                    ..Default::default()
                }),
                Kind::CaseOpen,
            ),
            Some((o, i)) => (
                Body::SituationReport(pb::SituationReport {
                    link: Some(pb::CaseLink {
                        case: Some(pb::MessageRef {
                            origin: o.into(),
                            id: i.into(),
                        }),
                        previous: None,
                    }),
                    number: 1,
                    impact: "i".into(),
                    ..Default::default()
                }),
                Kind::SituationReport,
            ),
        };
        Content {
            id,
            origin_org: ORGS[org].into(),
            author: format!("{}/a", ORGS[org]),
            created_at_ms: 1,
            // Long expired: evidence is checked long after the fact.
            expires_at_ms: 2,
            kind: kind as i32,
            level: Level::Operational as i32,
            marking: Some(Marking {
                tlp: Tlp::Amber as i32,
                ..Default::default()
            }),
            cluster: "org-a/crisis".into(),
            body: Some(body),
            ..Default::default()
        }
    }

    fn bundle() -> pb::CaseBundle {
        let open = step(0, None);
        let report = step(1, Some((ORGS[0], &open.id)));
        pb::CaseBundle {
            format: FORMAT.into(),
            case: Some(pb::MessageRef {
                origin: ORGS[0].into(),
                id: open.id.clone(),
            }),
            exported_by: ORGS[1].into(),
            exported_at_ms: 3,
            exercise: false,
            envelopes: vec![
                envelope::seal(key(0), &open),
                envelope::seal(key(1), &report),
            ],
            certificates: vec![cert(0), cert(1)],
        }
    }

    #[test]
    fn a_sound_bundle_verifies_and_derives_the_case() {
        let b = bundle();
        let c = check(&b, root(), 10);
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert_eq!(c.verified, 2);
        assert_eq!(c.view.sitrep.as_ref().map(|s| s.0), Some(1));
        assert_eq!(c.view.title, "t");
        assert_eq!(
            c.signers.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
            [ORGS[0], ORGS[1]]
        );
        // Survives a round trip through its file encoding.
        let again = pb::CaseBundle::decode(b.encode_to_vec().as_slice()).unwrap();
        assert!(check(&again, root(), 10).problems.is_empty());
    }

    #[test]
    fn a_step_its_signer_had_no_authority_for_or_a_false_exercise_flag_is_reported() {
        // org-a holds csirts-network only: a large-scale assessment needs cyclone.
        let mut b = bundle();
        let case = b.case.clone().unwrap();
        let verdict = Content {
            id: envelope::new_id(),
            origin_org: ORGS[0].into(),
            author: format!("{}/a", ORGS[0]),
            created_at_ms: 1,
            kind: Kind::Assessment as i32,
            level: Level::Operational as i32,
            marking: Some(Marking {
                tlp: Tlp::Amber as i32,
                ..Default::default()
            }),
            cluster: "org-a/crisis".into(),
            body: Some(Body::Assessment(pb::LargeScaleAssessment {
                link: Some(pb::CaseLink {
                    case: Some(case.clone()),
                    previous: Some(case),
                }),
                from: pb::AssessmentState::Escalated as i32,
                to: pb::AssessmentState::UnderAssessment as i32,
                ..Default::default()
            })),
            ..Default::default()
        };
        b.envelopes.push(envelope::seal(key(0), &verdict));
        let c = check(&b, root(), 10);
        assert_eq!(c.verified, 2);
        assert!(c.problems[0].contains("no authority"), "{:?}", c.problems);
        let mut b = bundle();
        b.exercise = true;
        let c = check(&b, root(), 10);
        assert!(!c.view.exercise);
        assert!(c.problems[0].contains("says exercise"), "{:?}", c.problems);
    }

    #[test]
    fn tampering_a_missing_certificate_another_root_or_another_case_is_reported() {
        let mut b = bundle();
        let last = b.envelopes[1].content.len() - 1;
        b.envelopes[1].content = {
            let mut b = b.envelopes[1].content.to_vec();
            b[last] ^= 1;
            b.into()
        };
        let c = check(&b, root(), 10);
        assert_eq!(c.verified, 1);
        assert!(c.problems[0].contains("envelope 1"), "{:?}", c.problems);

        let mut b = bundle();
        b.certificates.pop();
        let c = check(&b, root(), 10);
        assert!(
            c.problems[0].contains("unknown signing key"),
            "{:?}",
            c.problems
        );

        let b = bundle();
        let other_root = cert(2);
        let c = check(&b, &other_root, 10);
        assert_eq!(c.verified, 0);
        assert!(
            c.problems.iter().any(|p| p.contains("does not chain")),
            "{:?}",
            c.problems
        );

        let mut b = bundle();
        let stranger = step(2, None);
        b.envelopes.push(envelope::seal(key(2), &stranger));
        b.certificates.push(cert(2));
        let c = check(&b, root(), 10);
        assert!(
            c.problems[0].contains("is not a message of case"),
            "{:?}",
            c.problems
        );

        let mut b = bundle();
        b.format = "zip".into();
        assert!(check(&b, root(), 10).problems[0].contains("not a Bluewire case bundle"));
        b.format = FORMAT.into();
        b.envelopes.clear();
        assert!(check(&b, root(), 10).problems[0].contains("no envelope"));
    }
}
