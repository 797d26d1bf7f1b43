//! `bluewire demo`: a local federation of four organisations (two national
//! CSIRTs, a crisis-liaison organisation, an EU body) as real node processes
//! on loopback. Publishes a few messages and shows them arriving, verified,
//! at every subscriber. Exits non-zero if anything did not arrive.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bluewire_node::pki::{Function, Level};
use bluewire_proto::v1 as pb;
use clap::Args;

use crate::args::{KindArg, LevelArg, SeverityArg, TlpArg};
use crate::feed::feed_line;
use crate::local::{LocalFederation, OrgSpec};
use crate::message::{PublishArgs, build_publish, build_publish_in};
use crate::output::table;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to put the federation (default: a fresh temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Leave the nodes running and print how to use them.
    #[arg(long)]
    pub keep: bool,
    /// What to run: `sharing` (four organisations, clusters and routing) or `blueprint`
    /// (seven organisations run a crisis case from detection to lessons learned).
    #[arg(long, value_enum, default_value_t = Scenario::Sharing)]
    pub scenario: Scenario,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    Sharing,
    Blueprint,
}

pub fn demo_orgs() -> Vec<OrgSpec> {
    vec![
        OrgSpec {
            org: "csirt-be",
            country: "BE",
            org_type: "csirt",
            levels: vec![Level::Technical, Level::Operational],
            functions: vec![Function::CsirtsNetwork],
            what: "national CSIRT, Belgium",
            static_peers: true,
        },
        OrgSpec {
            org: "csirt-fr",
            country: "FR",
            org_type: "csirt",
            levels: vec![Level::Technical, Level::Operational],
            functions: vec![Function::CsirtsNetwork],
            what: "national CSIRT, France",
            static_peers: true,
        },
        OrgSpec {
            org: "cyclone-fr",
            country: "FR",
            org_type: "liaison",
            levels: vec![Level::Operational],
            functions: vec![Function::Cyclone],
            what: "cyber-crisis liaison organisation, France",
            static_peers: true,
        },
        OrgSpec {
            org: "cert-eu",
            country: "EU",
            org_type: "eu-body",
            levels: vec![Level::Technical, Level::Operational],
            functions: vec![Function::CsirtsNetwork],
            what: "EU body",
            static_peers: true,
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
    let specs = match a.scenario {
        Scenario::Sharing => demo_orgs(),
        Scenario::Blueprint => crate::blueprint::orgs(),
    };
    let mut fed = LocalFederation::create(&dir, &specs, &[])?;
    // csirt-be also serves TAXII 2.1, for the threat-feed tour (README section 8).
    let taxii = crate::local::free_port()?;
    {
        let path = fed.org("csirt-be").dir.join("node.toml");
        let text = std::fs::read_to_string(&path)?;
        let on = text.replace(
            "enabled = false\nlisten = \"127.0.0.1:9443\"",
            &format!("enabled = true\nlisten = \"{taxii}\""),
        );
        anyhow::ensure!(
            on != text,
            "the node.toml template has no [taxii] section to enable"
        );
        std::fs::write(&path, on)?;
    }
    println!(
        "\n1. Federation PKI: root CA, one certificate + signing key per organisation (CA-asserted profile)"
    );
    table(
        &["ORG", "WHAT", "COUNTRY", "LEVELS", "FUNCTIONS", "ENDPOINT"],
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
                    o.spec
                        .functions
                        .iter()
                        .map(|f| f.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    o.endpoint.clone(),
                ]
            })
            .collect::<Vec<_>>(),
    );
    if a.scenario == Scenario::Blueprint {
        let r = crate::blueprint::run(&mut fed, &dir).await;
        if r.is_ok() && a.keep {
            fed.detach();
            println!(
                "\nThe federation keeps running. Stop it with:  kill $(cat {}/*/node.pid)",
                dir.display()
            );
        } else {
            fed.stop_all();
        }
        return r;
    }
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

    // Need-to-know cluster: csirt-be convenes, csirt-fr and cyclone-fr join.
    println!(
        "\n3. Need-to-know cluster \"ransomware-healthcare\" (membership is a signed, hash-linked log sequenced by the convener)"
    );
    let be_op = fed.connect("csirt-be", "operator")?;
    let info = be_op
        .admin()
        .cluster_create(pb::ClusterCreateRequest {
            name: "ransomware-healthcare".into(),
            purpose: "Ransomware campaign against hospitals".into(),
            levels: vec![pb::Level::Technical as i32, pb::Level::Operational as i32],
            max_tlp: pb::Tlp::Amber as i32,
            history: pb::HistoryRule::SinceJoin as i32,
            exercise: false,
        })
        .await
        .map_err(|s| anyhow::anyhow!("cluster create: {}", s.message()))?
        .into_inner();
    let cid = info.id.clone();
    println!("   csirt-be created {cid}");
    for org in ["csirt-fr", "cyclone-fr"] {
        invite_and_accept(&fed, &cid, org).await?;
    }

    let mut sent: Vec<Sent> = Vec::new();
    println!(
        "\n4. Publishing (each message is signed by the origin node and stored before it is acknowledged)"
    );
    let incident = |title: &str, body: &str, level, sev| PublishArgs {
        kind: KindArg::Incident,
        level,
        tlp: TlpArg::Amber,
        title: title.into(),
        body: body.into(),
        to: vec![],
        classification: String::new(),
        exercise: false,
        severity: Some(sev),
        sector: vec!["health".into()],
        expires_in: 0,
    };
    sent.push(
        publish(
            &fed,
            "csirt-be",
            Some(&cid),
            incident(
                "Ransomware in two hospitals (LockBit variant)",
                "Initial access via exposed VPN appliance; IOCs to follow.",
                LevelArg::Technical,
                SeverityArg::High,
            ),
        )
        .await?,
    );
    sent.push(
        publish(
            &fed,
            "csirt-be",
            Some(&cid),
            PublishArgs {
                kind: KindArg::SituationReport,
                level: LevelArg::Operational,
                tlp: TlpArg::Amber,
                title: "Situation report #1: two hospitals, services degraded".into(),
                body: "Operational summary for crisis liaison; no technical detail.".into(),
                to: vec![],
                classification: String::new(),
                exercise: false,
                severity: None,
                sector: vec![],
                expires_in: 0,
            },
        )
        .await?,
    );
    let text = |title: &str, body: &str, tlp, to: Vec<String>| PublishArgs {
        kind: KindArg::Text,
        level: LevelArg::Technical,
        tlp,
        title: title.into(),
        body: body.into(),
        to,
        classification: String::new(),
        exercise: false,
        severity: None,
        sector: vec![],
        expires_in: 0,
    };
    sent.push(
        publish(
            &fed,
            "cert-eu",
            None,
            text(
                "EU institutions: no impact observed",
                "Federation-wide note (no cluster): every peer receives it.",
                TlpArg::Green,
                vec![],
            ),
        )
        .await?,
    );
    sent.push(
        publish(
            &fed,
            "csirt-fr",
            None,
            text(
                "Named-recipient note to CERT-EU",
                "Only cert-eu is named: routing sends it nowhere else.",
                TlpArg::Red,
                vec!["cert-eu".into()],
            ),
        )
        .await?,
    );

    println!("\n5. Membership changes: cert-eu joins the cluster, cyclone-fr leaves it");
    invite_and_accept(&fed, &cid, "cert-eu").await?;
    fed.connect("cyclone-fr", "operator")?
        .admin()
        .cluster_leave(pb::ClusterRef {
            cluster: cid.clone(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("cluster leave: {}", s.message()))?;
    println!("   cyclone-fr left {cid}");
    wait_converged(&fed, &cid, |c| {
        c.members
            .iter()
            .any(|m| m.org == "cyclone-fr" && m.state == "left")
    })
    .await?;
    sent.push(
        publish(
            &fed,
            "csirt-fr",
            Some(&cid),
            incident(
                "Second hospital group hit; same affiliate",
                "Cluster members only: cyclone-fr has left and must not see this.",
                LevelArg::Operational,
                SeverityArg::Critical,
            ),
        )
        .await?,
    );
    // expected[id] = the organisations whose subscriber must see it.
    let expected: BTreeMap<String, (String, BTreeSet<String>)> = sent
        .into_iter()
        .map(|s| (s.id, (s.title, s.want)))
        .collect();

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

    println!("\n6. Arrivals (✔ verified signature, · not routed there, ✘ missing)");
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

    println!("\n7. The cluster as its members see it (`bluewire cluster show` / `cluster log`)");
    let show = be_op
        .admin()
        .cluster_show(pb::ClusterRef {
            cluster: cid.clone(),
        })
        .await?
        .into_inner();
    crate::cluster_cmd::print_info(&show);
    let log = be_op
        .admin()
        .cluster_log_entries(pb::ClusterRef {
            cluster: cid.clone(),
        })
        .await?
        .into_inner();
    crate::cluster_cmd::print_log(&log.entries, crate::Output::Table);

    println!("\n8. Peers of csirt-be (operator view: `bluewire status`)");
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
        println!(
            "  bluewire --client-config {}/client.toml token create --user soc --role soc-tool   # a TAXII token",
            be.user_dir("operator").display()
        );
        println!(
            "  TAXII 2.1 at csirt-be: https://{taxii}/taxii2/  (CA {}/ca.crt; a user certificate or the token)",
            be.dir.display()
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

struct Sent {
    id: String,
    title: String,
    want: BTreeSet<String>,
}

async fn publish(
    fed: &LocalFederation,
    org: &str,
    cluster: Option<&str>,
    args: PublishArgs,
) -> anyhow::Result<Sent> {
    let conn = fed.connect(org, "analyst")?;
    let req = match cluster {
        Some(c) => build_publish_in(&args, c),
        None => build_publish(&args),
    };
    let r = conn
        .client()
        .publish(req)
        .await
        .map_err(|s| anyhow::anyhow!(bluewire_node::client::explain_status(&conn.endpoint, &s)))?
        .into_inner();
    println!(
        "   {org} published \"{}\"{} -> queued for {}",
        args.title,
        cluster.map(|c| format!(" to {c}")).unwrap_or_default(),
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
    Ok(Sent {
        id: r.id,
        title: args.title,
        want,
    })
}

/// The convener invites `org`; once the invitation has replicated, `org`'s operator accepts.
pub(crate) async fn invite_and_accept(
    fed: &LocalFederation,
    cid: &str,
    org: &str,
) -> anyhow::Result<()> {
    let convener = fed.connect("csirt-be", "operator")?;
    convener
        .admin()
        .cluster_invite(pb::ClusterInviteRequest {
            cluster: cid.to_string(),
            org: org.to_string(),
            role: pb::ClusterRole::Member as i32,
            endpoint: String::new(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("cluster invite {org}: {}", s.message()))?;
    let invitee = fed.connect(org, "operator")?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let list = invitee
            .admin()
            .cluster_list(pb::ClusterListRequest {})
            .await?
            .into_inner();
        if list
            .clusters
            .iter()
            .any(|c| c.id == cid && c.my_state == "invited")
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("{org} never received the invitation to {cid}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let info = invitee
        .admin()
        .cluster_accept(pb::ClusterRef {
            cluster: cid.to_string(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("cluster accept by {org}: {}", s.message()))?
        .into_inner();
    println!(
        "   csirt-be invited {org}; {org} accepted (log head #{} {})",
        info.head_index,
        &info.head_hash[..12.min(info.head_hash.len())]
    );
    wait_converged(fed, cid, |c| {
        c.members
            .iter()
            .any(|m| m.org == org && m.state == "member")
    })
    .await
}

/// Wait until every member node shows the same log head and `ok` holds there.
async fn wait_converged(
    fed: &LocalFederation,
    cid: &str,
    ok: impl Fn(&pb::ClusterInfo) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut heads = BTreeSet::new();
        let mut all_ok = true;
        for o in &fed.orgs {
            let conn = fed.connect(o.spec.org, "operator")?;
            let shown = conn
                .admin()
                .cluster_show(pb::ClusterRef {
                    cluster: cid.to_string(),
                })
                .await;
            if let Ok(r) = shown {
                let c = r.into_inner();
                if c.my_state == "member" {
                    heads.insert(c.head_hash.clone());
                    all_ok &= ok(&c);
                }
            }
        }
        if heads.len() == 1 && all_ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("cluster {cid} did not converge on every member within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
