//! Cost of one routing decision per (message, recipient): the built-in rule
//! chain alone, and with the example Cedar policy (deploy/policy/example.cedar)
//! loaded as the operator's local policy.
//!
//! ```sh
//! cargo bench -p bluewire-node --bench policy -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Target (BENCHMARKS.md): under 2 µs per decision without a local policy.
//! Every case builds the full `Decision` (every step with its reason), as the
//! node does for `policy explain`, metrics and audit.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use bluewire_node::pki::{Level, OrgProfile};
use bluewire_node::policy::{Direction, PolicyHandle};
use bluewire_node::routing::{Context, Router};
use bluewire_proto::v1::{Content, FreeText, Kind, Level as PbLevel, Marking, Tlp, content::Body};
use criterion::{Criterion, criterion_group, criterion_main};

fn profile(org: &str, country: &str, org_type: &str, levels: &[Level]) -> OrgProfile {
    OrgProfile {
        org: org.into(),
        country: country.into(),
        org_type: org_type.into(),
        levels: levels.to_vec(),
        sectors: vec!["energy".into()],
        accreditations: Vec::new(),
        endpoint: format!("https://{org}.invalid:7443"),
        signing_keys: Vec::new(),
        encryption_keys: vec![],
        functions: Vec::new(),
    }
}

/// A 1 KiB TLP:AMBER technical free-text message to every peer: what the
/// fan-out benchmark publishes.
fn message() -> Content {
    Content {
        id: bluewire_node::envelope::new_id(),
        origin_org: "pub-a".into(),
        author: "pub-a/analyst".into(),
        created_at_ms: 1_000,
        kind: Kind::FreeText as i32,
        level: PbLevel::Technical as i32,
        marking: Some(Marking {
            tlp: Tlp::Amber as i32,
            ..Default::default()
        }),
        body: Some(Body::FreeText(FreeText {
            title: "bench".into(),
            body: "x".repeat(1024),
        })),
        ..Default::default()
    }
}

fn bench(c: &mut Criterion) {
    let origin = profile(
        "pub-a",
        "BE",
        "csirt",
        &[Level::Technical, Level::Operational],
    );
    let recipient = profile("recv-1", "FR", "csirt", &[Level::Technical]);
    let plain = Router::new();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/policy/example.cedar");
    let cedar = Router::with_policy(Arc::new(
        PolicyHandle::new(Some(path)).expect("deploy/policy/example.cedar loads"),
    ));
    let allowed = message();
    let mut named_elsewhere = message();
    named_elsewhere.recipients = vec!["recv-2".into()];
    let mut classified = message();
    classified.marking.as_mut().unwrap().classification = "EU RESTRICTED".into();
    classified.recipients = vec!["recv-1".into()];

    let ctx = |direction| Context {
        direction,
        recipient: "recv-1",
        recipient_profile: Some(&recipient),
        origin_profile: Some(&origin),
        cluster: None,
        now_ms: 0,
    };
    // Sanity: the cases decide what their names say.
    assert!(plain.decide(&allowed, ctx(Direction::Egress)).allowed);
    assert!(cedar.decide(&allowed, ctx(Direction::Egress)).allowed);
    assert_eq!(
        plain.decide(&named_elsewhere, ctx(Direction::Egress)).rule,
        "recipients"
    );
    assert_eq!(
        plain.decide(&classified, ctx(Direction::Egress)).rule,
        "classification"
    );

    let mut g = c.benchmark_group("decide");
    for (name, router) in [("builtin", &plain), ("cedar", &cedar)] {
        g.bench_function(format!("{name}/egress/allowed"), |b| {
            b.iter(|| router.decide(black_box(&allowed), ctx(Direction::Egress)))
        });
        g.bench_function(format!("{name}/ingress/allowed"), |b| {
            b.iter(|| router.decide(black_box(&allowed), ctx(Direction::Ingress)))
        });
        g.bench_function(format!("{name}/egress/denied-by-recipients"), |b| {
            b.iter(|| router.decide(black_box(&named_elsewhere), ctx(Direction::Egress)))
        });
        g.bench_function(format!("{name}/egress/denied-by-classification"), |b| {
            b.iter(|| router.decide(black_box(&classified), ctx(Direction::Egress)))
        });
    }
    // No recipient profile known yet: the local policy is skipped.
    g.bench_function("cedar/egress/allowed-profile-unknown", |b| {
        b.iter(|| {
            cedar.decide(
                black_box(&allowed),
                Context {
                    recipient_profile: None,
                    ..ctx(Direction::Egress)
                },
            )
        })
    });
    g.finish();
}

/// Where the Cedar time goes: the pieces `policy::build_request` and
/// `LocalPolicy::evaluate` do for every decision, timed one by one (same
/// calls, same schema), to tell request building from evaluation.
fn cedar_parts(c: &mut Criterion) {
    use cedar_policy::{
        Authorizer, Context as CContext, Entities, Entity, EntityId, EntityTypeName, EntityUid,
        PolicySet, Request, RestrictedExpression, Schema,
    };
    use std::collections::{HashMap, HashSet};
    use std::str::FromStr;

    let (schema, _) = Schema::from_cedarschema_str(bluewire_node::policy::SCHEMA).unwrap();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/policy/example.cedar");
    let mut set = PolicySet::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    set.add(
        cedar_policy::Policy::parse(
            Some(cedar_policy::PolicyId::new("implicit")),
            "permit(principal, action, resource);",
        )
        .unwrap(),
    )
    .unwrap();
    let org_ty = EntityTypeName::from_str("Org").unwrap();
    let uid = |org: &str| EntityUid::from_type_name_and_id(org_ty.clone(), EntityId::new(org));
    let s = |v: &str| RestrictedExpression::new_string(v.into());
    let set_of = |v: &[&str]| RestrictedExpression::new_set(v.iter().map(|x| s(x)));
    let entity = |org: &str, ty: &str| {
        let attrs: HashMap<String, RestrictedExpression> = [
            ("country".to_string(), s("BE")),
            ("type".to_string(), s(ty)),
            ("levels".to_string(), set_of(&["technical"])),
            ("sectors".to_string(), set_of(&["energy"])),
            ("accreditations".to_string(), set_of(&[])),
        ]
        .into_iter()
        .collect();
        Entity::new(uid(org), attrs, HashSet::new()).unwrap()
    };
    let context = || {
        CContext::from_pairs(
            [
                ("direction", s("egress")),
                ("kind", s("free-text")),
                ("level", s("technical")),
                ("tlp", s("AMBER")),
                ("classification", s("")),
                ("exercise", RestrictedExpression::new_bool(false)),
                ("cluster", s("")),
                ("origin", s("pub-a")),
                ("recipient", s("recv-1")),
                ("recipients", set_of(&[])),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        )
        .unwrap()
    };
    let action = EntityUid::from_str(r#"Action::"deliver""#).unwrap();
    let entities_schema = Entities::from_entities(
        [entity("pub-a", "csirt"), entity("recv-1", "csirt")],
        Some(&schema),
    )
    .unwrap();
    let request = Request::new(
        uid("pub-a"),
        action.clone(),
        uid("recv-1"),
        context(),
        Some(&schema),
    )
    .unwrap();

    let mut g = c.benchmark_group("cedar-parts");
    g.bench_function("parse-action-uid", |b| {
        b.iter(|| EntityUid::from_str(black_box(r#"Action::"deliver""#)).unwrap())
    });
    g.bench_function("parse-type-name", |b| {
        b.iter(|| EntityTypeName::from_str(black_box("Org")).unwrap())
    });
    g.bench_function("two-entities", |b| {
        b.iter(|| [entity("pub-a", "csirt"), entity("recv-1", "csirt")])
    });
    g.bench_function("context", |b| b.iter(context));
    g.bench_function("entities-with-schema", |b| {
        b.iter(|| {
            Entities::from_entities(
                [entity("pub-a", "csirt"), entity("recv-1", "csirt")],
                Some(&schema),
            )
            .unwrap()
        })
    });
    g.bench_function("entities-without-schema", |b| {
        b.iter(|| {
            Entities::from_entities([entity("pub-a", "csirt"), entity("recv-1", "csirt")], None)
                .unwrap()
        })
    });
    g.bench_function("request-with-schema", |b| {
        b.iter(|| {
            Request::new(
                uid("pub-a"),
                action.clone(),
                uid("recv-1"),
                context(),
                Some(&schema),
            )
            .unwrap()
        })
    });
    g.bench_function("request-without-schema", |b| {
        b.iter(|| {
            Request::new(uid("pub-a"), action.clone(), uid("recv-1"), context(), None).unwrap()
        })
    });
    g.bench_function("is-authorized", |b| {
        b.iter(|| Authorizer::new().is_authorized(black_box(&request), &set, &entities_schema))
    });
    g.finish();
}

criterion_group!(benches, bench, cedar_parts);
criterion_main!(benches);
