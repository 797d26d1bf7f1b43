//! Table-driven and property tests of the routing rules against an oracle
//! written independently of `routing.rs` from the rules as documented
//! (README "Routing policy", the module docs of `routing` and
//! `deploy/policy/example.cedar`).
//!
//! - `matrix_*`: levels × TLP × recipient certified levels × classification ×
//!   accreditation × kind × explicit recipients × direction × role (org type of
//!   origin and recipient), with and without the example Cedar policy; every
//!   decision must match the oracle's outcome *and* deciding rule, and its
//!   steps must be the rule chain up to that rule.
//! - `scope_*`, `exercise_*`, `unknown_profile_*`: hand-written tables.
//! - `prop_*`: random organisations and messages: the router never allows what
//!   the oracle forbids, at egress and at ingress, and for direct messages the
//!   built-in verdict is the same on both sides (egress-allowed ⇒
//!   ingress-allowed).
//!
//! Clusters are not built here (a `ClusterState` needs a signed log); cluster
//! rules are covered in `cluster/tests.rs`. All messages are direct
//! (`cluster == ""`, context cluster `None`).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use bluewire_proto::v1::{Content, Kind, Level, Marking, Tlp};
use proptest::prelude::*;

use super::{Context, Decision, Router};
use crate::pki::{self, OrgProfile};
use crate::policy::{Direction, PolicyHandle};

/// The built-in chain, in order, then the operator's policy.
const CHAIN: [&str; 9] = [
    "cluster-membership",
    "cluster-role",
    "recipients",
    "levels",
    "tlp",
    "classification",
    "scope",
    "exercise",
    "local-policy",
];

const ORIGIN: &str = "csirt-be";
const RECIPIENT: &str = "csirt-fr";
const OTHER: &str = "cert-eu";
const EU_RESTRICTED: &str = "EU RESTRICTED";

fn example_policy_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/policy/example.cedar")
}

/// One router with the example Cedar policy, shared by every test.
fn cedar_router() -> &'static Router {
    static R: OnceLock<Router> = OnceLock::new();
    R.get_or_init(|| {
        let h = PolicyHandle::new(Some(example_policy_path())).expect("example.cedar loads");
        Router::with_policy(Arc::new(h))
    })
}

fn profile(
    org: &str,
    country: &str,
    org_type: &str,
    levels: &[pki::Level],
    sectors: &[&str],
    accreditations: &[&str],
) -> OrgProfile {
    OrgProfile {
        org: org.into(),
        country: country.into(),
        org_type: org_type.into(),
        levels: levels.to_vec(),
        sectors: sectors.iter().map(|s| s.to_string()).collect(),
        accreditations: accreditations.iter().map(|s| s.to_string()).collect(),
        endpoint: format!("https://{org}.invalid:7443"),
        signing_keys: Vec::new(),
        encryption_keys: vec![],
        functions: Vec::new(),
    }
}

fn message(
    level: Level,
    kind: Kind,
    tlp: i32,
    classification: &str,
    recipients: &[&str],
) -> Content {
    Content {
        id: crate::envelope::new_id(),
        origin_org: ORIGIN.into(),
        author: format!("{ORIGIN}/analyst"),
        created_at_ms: 1_000,
        kind: kind as i32,
        level: level as i32,
        marking: Some(Marking {
            tlp,
            classification: classification.into(),
            exercise: false,
        }),
        recipients: recipients.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------
// The oracle.

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

/// What the rules say for one direct (message, recipient): `Ok(())` to allow,
/// `Err(rule)` for the first rule that forbids it. `policy`: the example
/// Cedar policy is loaded.
fn oracle(
    c: &Content,
    recipient: &str,
    rp: Option<&OrgProfile>,
    op: Option<&OrgProfile>,
    direction: Direction,
    policy: bool,
) -> Result<(), &'static str> {
    let named = c.recipients.iter().any(|r| r == recipient);
    let tlp = c.marking.as_ref().map_or(0, |m| m.tlp);
    let classification = c.marking.as_ref().map_or("", |m| m.classification.as_str());
    let exercise = c.marking.as_ref().is_some_and(|m| m.exercise);

    // 1. No cluster: anyone but the origin itself.
    if recipient == c.origin_org {
        return Err("cluster-membership");
    }
    // 2. Explicit recipients narrow.
    if !c.recipients.is_empty() && !named {
        return Err("recipients");
    }
    // 3. Levels: the political level only takes summaries (and control
    //    messages about earlier ones); the recipient must be certified for
    //    the level (unknown profile: decided later, at send time).
    let political_kinds = [
        Kind::SituationReport as i32,
        Kind::CrisisStatus as i32,
        Kind::Assessment as i32,
        Kind::PublicCommunication as i32,
        Kind::MarkingChange as i32,
        Kind::Retraction as i32,
    ];
    if c.level == Level::Political as i32 && !political_kinds.contains(&c.kind) {
        return Err("levels");
    }
    let certified = |p: &OrgProfile| match c.level {
        1 => p.levels.contains(&pki::Level::Technical),
        2 => p.levels.contains(&pki::Level::Operational),
        3 => p.levels.contains(&pki::Level::Political),
        _ => false,
    };
    // The origin speaks only at its certified levels (unknown profile: not judged here).
    if (1..=3).contains(&c.level) && op.is_some_and(|p| !certified(p)) {
        return Err("levels");
    }
    if let Some(p) = rp
        && !certified(p)
    {
        return Err("levels");
    }
    // 4. TLP 2.0: a marking is mandatory; RED only to named recipients.
    if !(1..=5).contains(&tlp) {
        return Err("tlp");
    }
    if tlp == Tlp::Red as i32 && !named {
        return Err("tlp");
    }
    // 5. Classification: only to accredited organisations (case-insensitive).
    if !classification.is_empty()
        && !rp.is_some_and(|p| {
            p.accreditations
                .iter()
                .any(|a| lower(a) == lower(classification))
        })
    {
        return Err("classification");
    }
    // 6. Scope: member state and sector, when scoped (case-insensitive).
    if !c.scope_countries.is_empty() || !c.scope_sectors.is_empty() {
        let Some(p) = rp else {
            return Err("scope");
        };
        if !c.scope_countries.is_empty()
            && !c
                .scope_countries
                .iter()
                .any(|x| lower(x) == lower(&p.country))
        {
            return Err("scope");
        }
        if !c.scope_sectors.is_empty()
            && !c
                .scope_sectors
                .iter()
                .any(|x| p.sectors.iter().any(|s| lower(s) == lower(x)))
        {
            return Err("scope");
        }
    }
    // 7. Exercise traffic only inside exercise clusters: never direct.
    if exercise {
        return Err("exercise");
    }
    // 8. The example policy (only with both profiles known).
    if policy && let (Some(o), Some(r)) = (op, rp) {
        let egress = direction == Direction::Egress;
        let level_political = c.level == Level::Political as i32;
        let red = tlp == Tlp::Red as i32;
        let forbidden =
            // no-political-or-red-to-military
            (egress && r.org_type == "military" && (level_political || red))
            // exercise-stays-in-exercise-clusters: unreachable (rule 7)
            // no-political-ransomware: cluster "ransomware" only
            // classified-only-to-named-recipients
            || (!classification.is_empty() && !named)
            // no-amber-strict-from-outside-eu-csirts
            || (!egress
                && tlp == Tlp::AmberStrict as i32
                && !["csirt", "eu-body"].contains(&o.org_type.as_str()));
        if forbidden {
            return Err("local-policy");
        }
    }
    Ok(())
}

/// A decision is well formed and says what the oracle says.
fn check(d: &Decision, want: Result<(), &'static str>, recipient: &str, case: &dyn Fn() -> String) {
    assert_eq!(d.org, recipient, "{}", case());
    assert!(!d.retry, "retry for a direct message: {d:?}\n{}", case());
    match want {
        Ok(()) => {
            assert!(d.allowed, "expected allowed, got {d:?}\n{}", case());
            assert_eq!(d.rule, "allowed", "{}", case());
            assert_eq!(
                d.steps.iter().map(|s| s.rule).collect::<Vec<_>>(),
                CHAIN,
                "an allowed decision runs every rule\n{}",
                case()
            );
            assert!(d.steps.iter().all(|s| s.allowed), "{d:?}\n{}", case());
        }
        Err(rule) => {
            assert!(
                !d.allowed,
                "the {rule} rule forbids it but the router allowed it: {d:?}\n{}",
                case()
            );
            assert_eq!(d.rule, rule, "deciding rule: {d:?}\n{}", case());
            let at = CHAIN.iter().position(|r| *r == rule).unwrap();
            assert_eq!(
                d.steps.iter().map(|s| s.rule).collect::<Vec<_>>(),
                CHAIN[..=at],
                "steps stop at the deciding rule\n{}",
                case()
            );
            assert!(d.steps[..at].iter().all(|s| s.allowed), "{d:?}\n{}", case());
            let last = d.steps.last().unwrap();
            assert!(
                !last.allowed && last.reason == d.reason,
                "{d:?}\n{}",
                case()
            );
            assert!(!d.reason.is_empty(), "{}", case());
        }
    }
}

fn decide(
    router: &Router,
    c: &Content,
    recipient: &str,
    rp: Option<&OrgProfile>,
    op: Option<&OrgProfile>,
    direction: Direction,
) -> Decision {
    router.decide(
        c,
        Context {
            direction,
            recipient,
            recipient_profile: rp,
            origin_profile: op,
            cluster: None,
            now_ms: c.created_at_ms,
        },
    )
}

// ---------------------------------------------------------------------------
// The matrix.

const TLPS: [Tlp; 5] = [
    Tlp::Clear,
    Tlp::Green,
    Tlp::Amber,
    Tlp::AmberStrict,
    Tlp::Red,
];
const LEVELS: [Level; 3] = [Level::Technical, Level::Operational, Level::Political];
const KINDS: [Kind; 2] = [Kind::IncidentReport, Kind::SituationReport];

/// Every subset of the three certified levels (the empty one included: the
/// router must not assume the CA never issues it).
fn level_sets() -> Vec<Vec<pki::Level>> {
    (0u8..8)
        .map(|bits| {
            pki::Level::ALL
                .into_iter()
                .enumerate()
                .filter(|(i, _)| bits & (1 << i) != 0)
                .map(|(_, l)| l)
                .collect()
        })
        .collect()
}

/// Runs the matrix with or without the example policy; returns
/// (decisions, allowed, denials per rule).
fn run_matrix(
    policy: bool,
) -> (
    usize,
    usize,
    std::collections::BTreeMap<&'static str, usize>,
) {
    let no_policy = Router::new();
    let router = if policy { cedar_router() } else { &no_policy };
    let mut n = 0;
    let mut allowed = 0;
    let mut by_rule = std::collections::BTreeMap::new();
    let roles = [
        ("csirt", "csirt"),
        ("csirt", "military"),
        ("ministry", "csirt"),
        ("ministry", "military"),
    ];
    let accreditations: [&[&str]; 3] = [&[], &[EU_RESTRICTED], &["eu restricted"]];
    let recipient_lists: [&[&str]; 3] = [&[], &[RECIPIENT], &[OTHER]];
    for level in LEVELS {
        for tlp in TLPS {
            for certified in level_sets() {
                for classification in ["", EU_RESTRICTED] {
                    for accredited in accreditations {
                        for kind in KINDS {
                            for recipients in recipient_lists {
                                for (origin_type, recipient_type) in roles {
                                    let op = profile(
                                        ORIGIN,
                                        "BE",
                                        origin_type,
                                        &pki::Level::ALL,
                                        &[],
                                        &[],
                                    );
                                    let rp = profile(
                                        RECIPIENT,
                                        "FR",
                                        recipient_type,
                                        &certified,
                                        &[],
                                        accredited,
                                    );
                                    let c = message(
                                        level,
                                        kind,
                                        tlp as i32,
                                        classification,
                                        recipients,
                                    );
                                    for direction in [Direction::Egress, Direction::Ingress] {
                                        let want = oracle(
                                            &c,
                                            RECIPIENT,
                                            Some(&rp),
                                            Some(&op),
                                            direction,
                                            policy,
                                        );
                                        let d = decide(
                                            router,
                                            &c,
                                            RECIPIENT,
                                            Some(&rp),
                                            Some(&op),
                                            direction,
                                        );
                                        check(&d, want, RECIPIENT, &|| {
                                            format!(
                                                "{direction} level={level:?} tlp={tlp:?} certified={certified:?} \
                                                 class={classification:?} accredited={accredited:?} kind={kind:?} \
                                                 recipients={recipients:?} origin={origin_type} recipient={recipient_type} \
                                                 policy={policy}"
                                            )
                                        });
                                        n += 1;
                                        match want {
                                            Ok(()) => allowed += 1,
                                            Err(r) => *by_rule.entry(r).or_insert(0) += 1,
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (n, allowed, by_rule)
}

#[test]
fn matrix_builtin_rules() {
    let (n, allowed, by_rule) = run_matrix(false);
    assert_eq!(n, 3 * 5 * 8 * 2 * 3 * 2 * 3 * 4 * 2);
    // The matrix exercises every built-in rule that a direct message can hit.
    for rule in [
        "cluster-membership",
        "recipients",
        "levels",
        "tlp",
        "classification",
    ] {
        if rule == "cluster-membership" {
            continue; // recipient != origin throughout; see origin_never_receives_its_own
        }
        assert!(
            by_rule.get(rule).copied().unwrap_or(0) > 0,
            "{rule} never decided: {by_rule:?}"
        );
    }
    assert!(
        allowed > 0 && !by_rule.contains_key("local-policy"),
        "{by_rule:?}"
    );
}

#[test]
fn matrix_with_example_cedar_policy() {
    let (_, allowed, by_rule) = run_matrix(true);
    assert!(allowed > 0);
    assert!(
        by_rule.get("local-policy").copied().unwrap_or(0) > 0,
        "the example policy never decided: {by_rule:?}"
    );
}

/// Spot checks written out by hand, so the oracle itself is checked.
#[test]
fn matrix_spot_checks() {
    let r = Router::new();
    let op = profile(ORIGIN, "BE", "csirt", &pki::Level::ALL, &[], &[]);
    let tech = profile(RECIPIENT, "FR", "csirt", &[pki::Level::Technical], &[], &[]);
    let ops = profile(
        RECIPIENT,
        "FR",
        "ministry",
        &[pki::Level::Operational, pki::Level::Political],
        &[],
        &[EU_RESTRICTED],
    );
    let cases: Vec<(Content, &OrgProfile, Result<(), &str>)> = vec![
        (
            message(
                Level::Technical,
                Kind::IncidentReport,
                Tlp::Amber as i32,
                "",
                &[],
            ),
            &tech,
            Ok(()),
        ),
        (
            message(
                Level::Technical,
                Kind::IncidentReport,
                Tlp::Amber as i32,
                "",
                &[],
            ),
            &ops,
            Err("levels"),
        ),
        (
            message(
                Level::Operational,
                Kind::IncidentReport,
                Tlp::Amber as i32,
                "",
                &[],
            ),
            &tech,
            Err("levels"),
        ),
        (
            message(
                Level::Political,
                Kind::IncidentReport,
                Tlp::Green as i32,
                "",
                &[],
            ),
            &ops,
            Err("levels"),
        ),
        (
            message(
                Level::Political,
                Kind::SituationReport,
                Tlp::Green as i32,
                "",
                &[],
            ),
            &ops,
            Ok(()),
        ),
        (
            message(
                Level::Technical,
                Kind::IncidentReport,
                Tlp::Red as i32,
                "",
                &[OTHER],
            ),
            &tech,
            Err("recipients"),
        ),
        (
            message(
                Level::Technical,
                Kind::IncidentReport,
                Tlp::Red as i32,
                "",
                &[],
            ),
            &tech,
            Err("tlp"),
        ),
        (
            message(
                Level::Technical,
                Kind::IncidentReport,
                Tlp::Red as i32,
                "",
                &[RECIPIENT],
            ),
            &tech,
            Ok(()),
        ),
        (
            message(
                Level::Technical,
                Kind::IncidentReport,
                Tlp::Unspecified as i32,
                "",
                &[],
            ),
            &tech,
            Err("tlp"),
        ),
        (
            message(
                Level::Technical,
                Kind::IncidentReport,
                Tlp::Clear as i32,
                EU_RESTRICTED,
                &[],
            ),
            &tech,
            Err("classification"),
        ),
        (
            message(
                Level::Operational,
                Kind::IncidentReport,
                Tlp::Clear as i32,
                "eu restricted",
                &[],
            ),
            &ops,
            Ok(()),
        ),
    ];
    for (i, (c, rp, want)) in cases.iter().enumerate() {
        assert_eq!(
            oracle(c, RECIPIENT, Some(rp), Some(&op), Direction::Egress, false),
            *want,
            "oracle, case {i}"
        );
        for dir in [Direction::Egress, Direction::Ingress] {
            let d = decide(&r, c, RECIPIENT, Some(rp), Some(&op), dir);
            check(&d, *want, RECIPIENT, &|| format!("spot case {i} {dir}"));
        }
    }
}

#[test]
fn origin_never_receives_its_own() {
    let r = Router::new();
    let op = profile(ORIGIN, "BE", "csirt", &pki::Level::ALL, &[], &[]);
    let c = message(
        Level::Technical,
        Kind::IncidentReport,
        Tlp::Green as i32,
        "",
        &[ORIGIN],
    );
    for dir in [Direction::Egress, Direction::Ingress] {
        let d = decide(&r, &c, ORIGIN, Some(&op), Some(&op), dir);
        check(&d, Err("cluster-membership"), ORIGIN, &|| format!("{dir}"));
    }
}

// ---------------------------------------------------------------------------
// Scope and exercise.

#[test]
fn scope_by_country_and_sector() {
    let r = Router::new();
    let op = profile(ORIGIN, "BE", "csirt", &pki::Level::ALL, &[], &[]);
    let fr_energy = profile(
        RECIPIENT,
        "FR",
        "csirt",
        &[pki::Level::Technical],
        &["energy", "health"],
        &[],
    );
    let fr_none = profile(RECIPIENT, "FR", "csirt", &[pki::Level::Technical], &[], &[]);
    let de_energy = profile(
        RECIPIENT,
        "DE",
        "sectoral",
        &[pki::Level::Technical],
        &["Energy"],
        &[],
    );
    type Row<'a> = (
        &'a [&'a str],
        &'a [&'a str],
        &'a OrgProfile,
        Result<(), &'static str>,
    );
    let rows: Vec<Row> = vec![
        (&[], &[], &fr_none, Ok(())),
        (&["FR"], &[], &fr_none, Ok(())),
        (&["fr"], &[], &fr_none, Ok(())),
        (&["BE", "DE"], &[], &fr_none, Err("scope")),
        (&[], &["energy"], &fr_energy, Ok(())),
        (&[], &["ENERGY"], &de_energy, Ok(())),
        (&[], &["finance"], &fr_energy, Err("scope")),
        (&[], &["energy"], &fr_none, Err("scope")),
        (&["FR"], &["health"], &fr_energy, Ok(())),
        (&["FR"], &["energy"], &de_energy, Err("scope")), // right sector, wrong country
        (&["DE"], &["health"], &de_energy, Err("scope")), // right country, wrong sector
        (&["DE", "FR"], &["finance", "energy"], &de_energy, Ok(())),
    ];
    for (i, (countries, sectors, rp, want)) in rows.into_iter().enumerate() {
        let mut c = message(
            Level::Technical,
            Kind::IncidentReport,
            Tlp::Green as i32,
            "",
            &[],
        );
        c.scope_countries = countries.iter().map(|s| s.to_string()).collect();
        c.scope_sectors = sectors.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            oracle(&c, RECIPIENT, Some(rp), Some(&op), Direction::Egress, false),
            want,
            "oracle row {i}"
        );
        for dir in [Direction::Egress, Direction::Ingress] {
            let d = decide(&r, &c, RECIPIENT, Some(rp), Some(&op), dir);
            check(&d, want, RECIPIENT, &|| {
                format!("scope row {i} {dir}: {countries:?} {sectors:?} {rp:?}")
            });
        }
        // Scoped and the recipient's profile unknown: refused, not guessed.
        if !countries.is_empty() || !sectors.is_empty() {
            let d = decide(&r, &c, RECIPIENT, None, Some(&op), Direction::Egress);
            check(&d, Err("scope"), RECIPIENT, &|| {
                format!("scope row {i}, unknown profile")
            });
        }
    }
}

#[test]
fn exercise_traffic_outside_an_exercise_cluster_is_denied() {
    for router in [&Router::new(), cedar_router()] {
        let op = profile(ORIGIN, "BE", "csirt", &pki::Level::ALL, &[], &[]);
        let rp = profile(RECIPIENT, "FR", "csirt", &pki::Level::ALL, &[], &[]);
        for tlp in TLPS {
            let mut c = message(
                Level::Technical,
                Kind::IncidentReport,
                tlp as i32,
                "",
                &[RECIPIENT],
            );
            c.marking.as_mut().unwrap().exercise = true;
            for dir in [Direction::Egress, Direction::Ingress] {
                let d = decide(router, &c, RECIPIENT, Some(&rp), Some(&op), dir);
                check(&d, Err("exercise"), RECIPIENT, &|| {
                    format!("{tlp:?} {dir} {router:?}")
                });
                assert!(d.reason.contains("exercise"), "{d:?}");
            }
            // The same message without the flag goes through.
            c.marking.as_mut().unwrap().exercise = false;
            assert!(
                decide(
                    router,
                    &c,
                    RECIPIENT,
                    Some(&rp),
                    Some(&op),
                    Direction::Egress
                )
                .allowed
            );
        }
        // Exercise flag naming a cluster this node does not know: membership first.
        let mut c = message(
            Level::Technical,
            Kind::IncidentReport,
            Tlp::Green as i32,
            "",
            &[],
        );
        c.marking.as_mut().unwrap().exercise = true;
        c.cluster = "csirt-be/drill".into();
        let d = decide(
            router,
            &c,
            RECIPIENT,
            Some(&rp),
            Some(&op),
            Direction::Egress,
        );
        assert!(!d.allowed && d.rule == "cluster-membership", "{d:?}");
    }
}

#[test]
fn unknown_profiles_defer_levels_but_refuse_classified_and_scoped() {
    let r = cedar_router();
    // Level not checkable without the recipient's certificate: deferred.
    let c = message(
        Level::Operational,
        Kind::IncidentReport,
        Tlp::Amber as i32,
        "",
        &[],
    );
    let d = decide(r, &c, RECIPIENT, None, None, Direction::Egress);
    check(&d, Ok(()), RECIPIENT, &|| {
        "unknown profile, unclassified".into()
    });
    assert!(d.steps[3].reason.contains("not known yet"), "{d:?}");
    assert!(d.steps[8].reason.contains("not known yet"), "{d:?}");
    // ... but the political-kind rule needs no profile.
    let c = message(
        Level::Political,
        Kind::IncidentReport,
        Tlp::Amber as i32,
        "",
        &[],
    );
    check(
        &decide(r, &c, RECIPIENT, None, None, Direction::Egress),
        Err("levels"),
        RECIPIENT,
        &|| "political incident".into(),
    );
    // Classified: refused without an accreditation to check.
    let c = message(
        Level::Technical,
        Kind::IncidentReport,
        Tlp::Amber as i32,
        EU_RESTRICTED,
        &[RECIPIENT],
    );
    check(
        &decide(r, &c, RECIPIENT, None, None, Direction::Egress),
        Err("classification"),
        RECIPIENT,
        &|| "classified".into(),
    );
}

// ---------------------------------------------------------------------------
// Properties over random federations.

const POOL: [&str; 5] = ["csirt-be", "csirt-fr", "cert-eu", "mod-fr", "isac-de"];

fn arb_profile(org: &'static str) -> impl Strategy<Value = OrgProfile> {
    (
        prop::sample::select(vec!["BE", "FR", "DE", "EU"]),
        prop::sample::select(vec![
            "csirt", "military", "ministry", "eu-body", "sectoral", "liaison",
        ]),
        prop::collection::vec(prop::sample::select(pki::Level::ALL.to_vec()), 0..3),
        prop::collection::vec(
            prop::sample::select(vec!["energy", "Health", "finance"]),
            0..3,
        ),
        prop::collection::vec(
            prop::sample::select(vec!["EU RESTRICTED", "eu restricted", "NATO SECRET"]),
            0..2,
        ),
    )
        .prop_map(move |(country, t, mut levels, sectors, accr)| {
            levels.sort_by_key(|l| *l as u8);
            levels.dedup();
            profile(org, country, t, &levels, &sectors, &accr)
        })
}

fn arb_content() -> impl Strategy<Value = Content> {
    (
        prop::sample::select(POOL.to_vec()),
        0i32..=4, // level, 0 and 4 invalid
        0i32..=9, // kind, 0 and 9 invalid
        prop::option::weighted(
            0.95,
            (
                0i32..=6,
                prop::sample::select(vec![
                    "",
                    "",
                    "EU RESTRICTED",
                    "Eu Restricted",
                    "NATO SECRET",
                ]),
                prop::bool::weighted(0.15),
            ),
        ),
        prop::collection::vec(prop::sample::select(POOL.to_vec()), 0..3),
        prop::collection::vec(prop::sample::select(vec!["BE", "fr", "DE", "EU"]), 0..2),
        prop::collection::vec(
            prop::sample::select(vec!["energy", "health", "FINANCE"]),
            0..2,
        ),
    )
        .prop_map(
            |(origin, level, kind, marking, recipients, countries, sectors)| Content {
                id: crate::envelope::new_id(),
                origin_org: origin.into(),
                author: format!("{origin}/analyst"),
                created_at_ms: 1_000,
                kind,
                level,
                marking: marking.map(|(tlp, class, exercise)| Marking {
                    tlp,
                    classification: class.into(),
                    exercise,
                }),
                recipients: recipients.into_iter().map(String::from).collect(),
                scope_countries: countries.into_iter().map(String::from).collect(),
                scope_sectors: sectors.into_iter().map(String::from).collect(),
                ..Default::default()
            },
        )
}

fn arb_federation() -> impl Strategy<Value = Vec<OrgProfile>> {
    (
        arb_profile(POOL[0]),
        arb_profile(POOL[1]),
        arb_profile(POOL[2]),
        arb_profile(POOL[3]),
        arb_profile(POOL[4]),
    )
        .prop_map(|(a, b, c, d, e)| vec![a, b, c, d, e])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// No delivery the rules forbid is ever allowed, at egress or at ingress,
    /// with or without the example policy, whatever the sender knows of the
    /// recipient; and every decision names the rule the oracle names.
    #[test]
    fn prop_router_never_allows_a_forbidden_delivery(
        fed in arb_federation(),
        c in arb_content(),
        known in prop::collection::vec(any::<bool>(), 5),
        with_policy in any::<bool>(),
    ) {
        let plain = Router::new();
        let router = if with_policy { cedar_router() } else { &plain };
        let op = fed.iter().find(|p| p.org == c.origin_org);
        for (i, rp) in fed.iter().enumerate() {
            // Egress: the origin may or may not have seen the recipient's certificate.
            let egress_rp = known[i].then_some(rp);
            let want = oracle(&c, &rp.org, egress_rp, op, Direction::Egress, with_policy);
            let d = decide(router, &c, &rp.org, egress_rp, op, Direction::Egress);
            prop_assert!(!(d.allowed && want.is_err()), "egress allowed a forbidden delivery ({want:?}): {d:?}\n{c:?}\n{rp:?}");
            check(&d, want, &rp.org, &|| format!("egress {c:?}\nrecipient {egress_rp:?}\norigin {op:?}"));
            // Ingress: the receiver always knows itself; the origin's profile
            // is known from the peer's certificate.
            let want = oracle(&c, &rp.org, Some(rp), op, Direction::Ingress, with_policy);
            let d = decide(router, &c, &rp.org, Some(rp), op, Direction::Ingress);
            prop_assert!(!(d.allowed && want.is_err()), "ingress allowed a forbidden delivery ({want:?}): {d:?}\n{c:?}\n{rp:?}");
            check(&d, want, &rp.org, &|| format!("ingress {c:?}\nrecipient {rp:?}\norigin {op:?}"));
        }
    }

    /// Two-sided consistency for direct messages: with the same knowledge,
    /// the built-in rules decide the same at the origin and at the receiver,
    /// so whatever egress lets out, ingress lets in (and a misbehaving sender
    /// that skips egress is stopped at ingress by the same rule).
    #[test]
    fn prop_egress_allowed_implies_ingress_allowed(
        fed in arb_federation(),
        c in arb_content(),
    ) {
        let r = Router::new();
        let op = fed.iter().find(|p| p.org == c.origin_org);
        for rp in &fed {
            let e = decide(&r, &c, &rp.org, Some(rp), op, Direction::Egress);
            let i = decide(&r, &c, &rp.org, Some(rp), op, Direction::Ingress);
            prop_assert!(!e.allowed || i.allowed, "egress allowed, ingress refused: {e:?} / {i:?}");
            prop_assert_eq!((e.allowed, e.rule), (i.allowed, i.rule));
            // Egress without the recipient's certificate may defer the level
            // check; ingress, which knows it, must still catch it.
            let blind = decide(&r, &c, &rp.org, None, op, Direction::Egress);
            if blind.allowed && !i.allowed {
                prop_assert_eq!(i.rule, "levels", "only the level check is deferred: {:?}", i);
            }
        }
    }
}
