//! `bluewire demo`: a local federation of four organisations (two national
//! CSIRTs, a crisis-liaison organisation, an EU body) as real node processes
//! on loopback. Publishes a few messages and shows them arriving, verified,
//! at every subscriber. Exits non-zero if anything did not arrive.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bluewire_node::pki::Level;
use bluewire_proto::v1 as pb;
use clap::Args;

use crate::local::{LocalFederation, OrgSpec};
use crate::member::{
    KindArg, LevelArg, PublishArgs, SeverityArg, TlpArg, build_publish, feed_line,
};
use crate::output::table;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to put the federation (default: a fresh temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Leave the nodes running and print how to use them.
    #[arg(long)]
    pub keep: bool,
}

pub fn demo_orgs() -> Vec<OrgSpec> {
    vec![
        OrgSpec {
            org: "csirt-be",
            country: "BE",
            org_type: "csirt",
            levels: vec![Level::Technical, Level::Operational],
            what: "national CSIRT, Belgium",
        },
        OrgSpec {
            org: "csirt-fr",
            country: "FR",
            org_type: "csirt",
            levels: vec![Level::Technical],
            what: "national CSIRT, France",
        },
        OrgSpec {
            org: "cyclone-fr",
            country: "FR",
            org_type: "liaison",
            levels: vec![Level::Operational],
            what: "cyber-crisis liaison organisation, France",
        },
        OrgSpec {
            org: "cert-eu",
            country: "EU",
            org_type: "eu-body",
            levels: vec![Level::Technical, Level::Operational],
            what: "EU body",
        },
    ]
}

type Seen = Arc<Mutex<BTreeMap<String, BTreeMap<String, bool>>>>;

pub async fn run(a: DemoArgs) -> anyhow::Result<()> {
    let (dir, _tmp_guard) = match &a.dir {
        Some(d) => (d.clone(), None),
        None => {
            let base = std::env::temp_dir().join(format!("bluewire-demo-{}", std::process::id()));
            (
                base.clone(),
                Some(TempDirGuard {
                    path: base,
                    keep: a.keep,
                }),
            )
        }
    };
    println!("== Bluewire demo federation in {}", dir.display());
    let specs = demo_orgs();
    let mut fed = LocalFederation::create(&dir, &specs, "")?;
    println!(
        "\n1. Federation PKI: root CA, one certificate + signing key per organisation (CA-asserted profile)"
    );
    table(
        &["ORG", "WHAT", "COUNTRY", "LEVELS", "ENDPOINT"],
        &fed.orgs
            .iter()
            .map(|o| {
                vec![
                    o.spec.org.to_string(),
                    o.spec.what.to_string(),
                    o.spec.country.to_string(),
                    o.spec
                        .levels
                        .iter()
                        .map(|l| l.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    o.endpoint.clone(),
                ]
            })
            .collect::<Vec<_>>(),
    );
    println!("\n2. Starting four node processes (mutual TLS 1.3, X25519MLKEM768)…");
    fed.start_all()?;
    fed.wait_ready(Duration::from_secs(30)).await?;
    for o in &fed.orgs {
        println!(
            "   {} pid {} on {}",
            o.spec.org,
            o.pid().unwrap_or(0),
            o.endpoint
        );
    }

    // A subscriber (analyst) at every node.
    let seen: Seen = Arc::new(Mutex::new(BTreeMap::new()));
    let mut subs = Vec::new();
    for o in &fed.orgs {
        let conn = fed.connect(o.spec.org, "analyst")?;
        let org = o.spec.org.to_string();
        let seen = seen.clone();
        let mut stream = conn
            .client()
            .subscribe(pb::SubscribeRequest::default())
            .await
            .with_context(|| format!("subscribing at {org}"))?
            .into_inner();
        subs.push(tokio::spawn(async move {
            while let Ok(Some(item)) = stream.message().await {
                let id = item
                    .content
                    .as_ref()
                    .map(|c| c.id.clone())
                    .unwrap_or_default();
                println!("   [{org:>10} subscriber] {}", feed_line(&item));
                if let Ok(mut s) = seen.lock() {
                    s.entry(id).or_default().insert(org.clone(), item.verified);
                }
            }
        }));
    }

    println!(
        "\n3. Publishing (each message is signed by the origin node and stored before it is acknowledged)"
    );
    let msgs = [
        (
            "csirt-be",
            PublishArgs {
                kind: KindArg::Incident,
                level: LevelArg::Technical,
                tlp: TlpArg::Amber,
                title: "Ransomware in two hospitals (LockBit variant)".into(),
                body: "Initial access via exposed VPN appliance; IOCs to follow.".into(),
                to: vec![],
                classification: String::new(),
                exercise: false,
                severity: Some(SeverityArg::High),
                sector: vec!["health".into()],
                expires_in: 0,
            },
        ),
        (
            "cert-eu",
            PublishArgs {
                kind: KindArg::Text,
                level: LevelArg::Operational,
                tlp: TlpArg::Green,
                title: "EU institutions: no impact observed".into(),
                body: "Monitoring continues; next update 18:00 CET.".into(),
                to: vec![],
                classification: String::new(),
                exercise: false,
                severity: None,
                sector: vec![],
                expires_in: 0,
            },
        ),
        (
            "csirt-fr",
            PublishArgs {
                kind: KindArg::Text,
                level: LevelArg::Technical,
                tlp: TlpArg::Red,
                title: "Named-recipient note to CERT-EU".into(),
                body: "Only cert-eu is named: routing sends it nowhere else.".into(),
                to: vec!["cert-eu".into()],
                classification: String::new(),
                exercise: false,
                severity: None,
                sector: vec![],
                expires_in: 0,
            },
        ),
    ];
    // expected[id] = set of orgs whose subscriber must see it.
    let mut expected: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for (org, args) in &msgs {
        let conn = fed.connect(org, "analyst")?;
        let r = conn
            .client()
            .publish(build_publish(args))
            .await
            .map_err(|s| {
                anyhow::anyhow!(bluewire_node::client::explain_status(&conn.endpoint, &s))
            })?
            .into_inner();
        println!(
            "   {org} published {} \"{}\" -> queued for {}",
            r.id,
            args.title,
            r.queued_for.join(", ")
        );
        for d in &r.refused {
            println!(
                "      not sent to {}: {} (rule {})",
                d.org, d.reason, d.rule
            );
        }
        let mut want: BTreeSet<String> = r.queued_for.into_iter().collect();
        want.insert(org.to_string());
        expected.insert(r.id, (args.title.clone(), want));
    }

    let deadline = Instant::now() + Duration::from_secs(20);
    let complete = |seen: &Seen| {
        let s = seen.lock().map(|s| s.clone()).unwrap_or_default();
        expected.iter().all(|(id, (_, want))| {
            want.iter()
                .all(|o| s.get(id).and_then(|m| m.get(o)).copied() == Some(true))
        })
    };
    while !complete(&seen) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    println!("\n4. Arrivals (✔ verified signature, · not routed there, ✘ missing)");
    let s = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let orgs: Vec<String> = fed.orgs.iter().map(|o| o.spec.org.to_string()).collect();
    let mut headers = vec!["MESSAGE"];
    headers.extend(orgs.iter().map(|s| s.as_str()));
    let mut missing = 0;
    let mut leaked = 0;
    let rows: Vec<Vec<String>> = expected
        .iter()
        .map(|(id, (title, want))| {
            let mut row = vec![title.chars().take(46).collect::<String>()];
            for o in &orgs {
                let got = s.get(id).and_then(|m| m.get(o)).copied();
                row.push(match (want.contains(o), got) {
                    (true, Some(true)) => "✔".into(),
                    (true, _) => {
                        missing += 1;
                        "✘".into()
                    }
                    (false, None) => "·".into(),
                    (false, Some(_)) => {
                        leaked += 1;
                        "LEAK".into()
                    }
                });
            }
            row
        })
        .collect();
    table(&headers, &rows);

    println!("\n5. Peers of csirt-be (operator view: `bluewire status`)");
    let st = fed
        .connect("csirt-be", "operator")?
        .admin()
        .status(pb::StatusRequest {})
        .await?
        .into_inner();
    table(
        &["PEER", "LINK", "OUTBOX", "DELIVERED", "KX"],
        &st.peers
            .iter()
            .map(|p| {
                vec![
                    p.org.clone(),
                    if p.connected {
                        "up".into()
                    } else {
                        "idle".into()
                    },
                    p.outbox_depth.to_string(),
                    p.delivered.to_string(),
                    p.kx_group.clone(),
                ]
            })
            .collect::<Vec<_>>(),
    );
    for h in subs {
        h.abort();
    }

    if missing > 0 || leaked > 0 {
        fed.stop_all();
        bail!(
            "{missing} expected deliveries missing, {leaked} deliveries where routing forbade them; logs in {}/*/node.log",
            dir.display()
        );
    }
    if a.keep {
        fed.detach();
        let be = fed.org("csirt-be");
        println!("\nThe federation keeps running. Try:");
        println!(
            "  bluewire --client-config {}/client.toml subscribe",
            be.user_dir("analyst").display()
        );
        println!(
            "  bluewire --client-config {}/client.toml publish --level technical --tlp AMBER --kind incident --title 'Phishing wave' --body 'details'",
            fed.org("csirt-fr").user_dir("analyst").display()
        );
        println!(
            "  bluewire --client-config {}/client.toml status",
            be.user_dir("operator").display()
        );
        println!("Stop it with:  kill $(cat {}/*/node.pid)", dir.display());
    } else {
        println!("\nStopping the nodes…");
        fed.stop_all();
        println!(
            "Demo OK: every message reached every node routing allowed, with a verified signature."
        );
    }
    Ok(())
}

/// Removes a temporary demo directory unless asked to keep it.
struct TempDirGuard {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempDirGuard {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
