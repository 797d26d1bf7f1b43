//! `bluewire cluster …`: need-to-know clusters. Each membership change is an
//! operation this organisation's node signs and sends to the cluster's
//! convener, which sequences it into the cluster's hash-linked log. Every
//! mutating command prints the resulting cluster (id, convener, log head,
//! members); refusals (authority, state, conflicting head) are the node's own
//! words.

use bluewire_node::envelope::{level_label, tlp_label};
use bluewire_proto::v1 as pb;
use clap::{Args, Subcommand, ValueEnum};

use crate::Output;
use crate::args::{LevelArg, TlpArg};
use crate::connection::{ConnArgs, status_err};
use crate::output::{table, ts};

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Create a cluster convened by your organisation.
    Create(CreateArgs),
    /// Invite an organisation (it becomes a member once it accepts).
    Invite {
        /// Cluster id ("<org>/<name>") or name when unambiguous.
        cluster: String,
        /// The invited organisation.
        org: String,
        #[arg(long, value_enum, default_value_t = RoleArg::Member)]
        role: RoleArg,
        /// The invitee's node, https://HOST:PORT, if your node has never seen it.
        #[arg(long)]
        endpoint: Option<String>,
    },
    /// Accept an invitation your organisation received.
    Accept { cluster: String },
    /// Decline an invitation your organisation received.
    Decline { cluster: String },
    /// Leave a cluster (unilateral).
    Leave { cluster: String },
    /// Remove a member (convener or admin).
    Remove {
        cluster: String,
        org: String,
        /// Recorded in the cluster log.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Change a member's role (convener or admin).
    SetRole {
        cluster: String,
        org: String,
        #[arg(value_enum)]
        role: RoleArg,
    },
    /// Hand the convener role to another member (convener only).
    TransferConvener { cluster: String, org: String },
    /// Clusters your organisation belongs to or is invited to.
    List,
    /// One cluster: purpose, levels, max TLP, history rule, log head, members.
    Show { cluster: String },
    /// The cluster's membership history, oldest first.
    Log { cluster: String },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Short name; the cluster id becomes "<your org>/<name>".
    pub name: String,
    /// The shared concern (threat actor, sector, exercise…).
    #[arg(long)]
    pub purpose: String,
    /// Levels the cluster works at (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', required = true)]
    pub levels: Vec<LevelArg>,
    /// Highest TLP a message in this cluster may carry.
    #[arg(long, value_enum)]
    pub max_tlp: TlpArg,
    /// What new members receive: only what is published after they join, or everything.
    #[arg(long, value_enum, default_value_t = HistoryArg::SinceJoin)]
    pub history: HistoryArg,
    /// An exercise cluster: the only place exercise-flagged messages may go.
    #[arg(long)]
    pub exercise: bool,
}

/// Roles that can be granted by invitation or set-role; the convener role only
/// moves with `transfer-convener`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Member,
    Admin,
    Observer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HistoryArg {
    SinceJoin,
    Full,
}

impl From<RoleArg> for pb::ClusterRole {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Member => pb::ClusterRole::Member,
            RoleArg::Admin => pb::ClusterRole::Admin,
            RoleArg::Observer => pb::ClusterRole::Observer,
        }
    }
}

impl From<HistoryArg> for pb::HistoryRule {
    fn from(h: HistoryArg) -> Self {
        match h {
            HistoryArg::SinceJoin => pb::HistoryRule::SinceJoin,
            HistoryArg::Full => pb::HistoryRule::Full,
        }
    }
}

pub fn role_name(r: i32) -> &'static str {
    match pb::ClusterRole::try_from(r).unwrap_or(pb::ClusterRole::Unspecified) {
        pb::ClusterRole::Convener => "convener",
        pb::ClusterRole::Admin => "admin",
        pb::ClusterRole::Member => "member",
        pb::ClusterRole::Observer => "observer",
        pb::ClusterRole::Unspecified => "?",
    }
}

pub fn history_name(h: i32) -> &'static str {
    match pb::HistoryRule::try_from(h).unwrap_or(pb::HistoryRule::Unspecified) {
        pb::HistoryRule::SinceJoin => "since-join",
        pb::HistoryRule::Full => "full",
        pb::HistoryRule::Unspecified => "?",
    }
}

fn levels_text(levels: &[i32]) -> String {
    if levels.is_empty() {
        return "-".into();
    }
    levels
        .iter()
        .map(|l| level_label(*l))
        .collect::<Vec<_>>()
        .join(",")
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

pub fn member_json(m: &pb::ClusterMember) -> serde_json::Value {
    serde_json::json!({
        "org": m.org, "role": role_name(m.role), "state": m.state,
        "endpoint": m.endpoint, "since_index": m.since_index,
    })
}

pub fn info_json(c: &pb::ClusterInfo) -> serde_json::Value {
    serde_json::json!({
        "id": c.id, "name": c.name, "purpose": c.purpose,
        "levels": c.levels.iter().map(|l| level_label(*l)).collect::<Vec<_>>(),
        "max_tlp": tlp_label(c.max_tlp), "history": history_name(c.history),
        "convener": c.convener, "head_index": c.head_index, "head_hash": c.head_hash,
        "my_state": c.my_state,
        "members": c.members.iter().map(member_json).collect::<Vec<_>>(),
    })
}

pub fn log_json(l: &pb::ClusterLogLine) -> serde_json::Value {
    serde_json::json!({
        "index": l.index, "hash": l.hash, "actor": l.actor, "op": l.op,
        "at_ms": l.at_ms, "sequenced_by": l.sequenced_by,
    })
}

fn member_rows(members: &[pb::ClusterMember]) -> Vec<Vec<String>> {
    members
        .iter()
        .map(|m| {
            vec![
                m.org.clone(),
                role_name(m.role).to_string(),
                dash(&m.state),
                format!("#{}", m.since_index),
                dash(&m.endpoint),
            ]
        })
        .collect()
}

/// The cluster summary for people: identity, rules, log head, members.
pub fn print_info(c: &pb::ClusterInfo) {
    println!("cluster {}  ({})", c.id, dash(&c.purpose));
    println!(
        "convener {}   levels {}   max {}   history {}   you: {}",
        dash(&c.convener),
        levels_text(&c.levels),
        tlp_label(c.max_tlp),
        history_name(c.history),
        dash(&c.my_state),
    );
    println!("log head #{} {}", c.head_index, dash(&c.head_hash));
    table(
        &["ORG", "ROLE", "STATE", "SINCE", "ENDPOINT"],
        &member_rows(&c.members),
    );
}

fn emit_info(c: &pb::ClusterInfo, done: Option<String>, out: Output) -> anyhow::Result<()> {
    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(&info_json(c))?),
        Output::Table => {
            if let Some(d) = done {
                println!("{d}");
            }
            print_info(c);
        }
    }
    Ok(())
}

fn cref(cluster: &str) -> pb::ClusterRef {
    pb::ClusterRef {
        cluster: cluster.to_string(),
    }
}

pub fn create_request(a: &CreateArgs) -> pb::ClusterCreateRequest {
    pb::ClusterCreateRequest {
        name: a.name.clone(),
        purpose: a.purpose.clone(),
        levels: a
            .levels
            .iter()
            .map(|l| pb::Level::from(*l) as i32)
            .collect(),
        max_tlp: pb::Tlp::from(a.max_tlp) as i32,
        history: pb::HistoryRule::from(a.history) as i32,
        exercise: a.exercise,
    }
}

pub async fn run(c: &ConnArgs, cmd: ClusterCommand, out: Output) -> anyhow::Result<()> {
    let conn = c.connect()?;
    let mut admin = conn.admin();
    let err = |s| status_err(&conn, s);
    let (info, done) = match cmd {
        ClusterCommand::Create(a) => {
            let r = admin.cluster_create(create_request(&a)).await;
            let i = r.map_err(err)?.into_inner();
            let d = format!("created cluster {}", i.id);
            (i, d)
        }
        ClusterCommand::Invite {
            cluster,
            org,
            role,
            endpoint,
        } => {
            let req = pb::ClusterInviteRequest {
                cluster,
                org: org.clone(),
                role: pb::ClusterRole::from(role) as i32,
                endpoint: endpoint.unwrap_or_default(),
            };
            let i = admin.cluster_invite(req).await.map_err(err)?.into_inner();
            let d = format!(
                "invited {org} to {} as {}",
                i.id,
                role_name(pb::ClusterRole::from(role) as i32)
            );
            (i, d)
        }
        ClusterCommand::Accept { cluster } => {
            let i = admin
                .cluster_accept(cref(&cluster))
                .await
                .map_err(err)?
                .into_inner();
            let d = format!("joined {}", i.id);
            (i, d)
        }
        ClusterCommand::Decline { cluster } => {
            let i = admin
                .cluster_decline(cref(&cluster))
                .await
                .map_err(err)?
                .into_inner();
            let d = format!("declined the invitation to {}", i.id);
            (i, d)
        }
        ClusterCommand::Leave { cluster } => {
            let i = admin
                .cluster_leave(cref(&cluster))
                .await
                .map_err(err)?
                .into_inner();
            let d = format!("left {}", i.id);
            (i, d)
        }
        ClusterCommand::Remove {
            cluster,
            org,
            reason,
        } => {
            let req = pb::ClusterMemberRequest {
                cluster,
                org: org.clone(),
                reason,
            };
            let i = admin.cluster_remove(req).await.map_err(err)?.into_inner();
            let d = format!("removed {org} from {}", i.id);
            (i, d)
        }
        ClusterCommand::SetRole { cluster, org, role } => {
            let req = pb::ClusterSetRoleRequest {
                cluster,
                org: org.clone(),
                role: pb::ClusterRole::from(role) as i32,
            };
            let i = admin.cluster_set_role(req).await.map_err(err)?.into_inner();
            let d = format!(
                "{org} is now {} in {}",
                role_name(pb::ClusterRole::from(role) as i32),
                i.id
            );
            (i, d)
        }
        ClusterCommand::TransferConvener { cluster, org } => {
            let req = pb::ClusterMemberRequest {
                cluster,
                org: org.clone(),
                reason: String::new(),
            };
            let i = admin
                .cluster_transfer_convener(req)
                .await
                .map_err(err)?
                .into_inner();
            let d = format!("{org} now convenes {}", i.id);
            (i, d)
        }
        ClusterCommand::Show { cluster } => {
            let i = admin
                .cluster_show(cref(&cluster))
                .await
                .map_err(err)?
                .into_inner();
            return emit_info(&i, None, out);
        }
        ClusterCommand::List => {
            let r = admin
                .cluster_list(pb::ClusterListRequest {})
                .await
                .map_err(err)?
                .into_inner();
            print_list(&r.clusters, out);
            return Ok(());
        }
        ClusterCommand::Log { cluster } => {
            let r = admin
                .cluster_log_entries(cref(&cluster))
                .await
                .map_err(err)?
                .into_inner();
            print_log(&r.entries, out);
            return Ok(());
        }
    };
    emit_info(&info, Some(done), out)
}

fn print_list(clusters: &[pb::ClusterInfo], out: Output) {
    match out {
        Output::Json => println!(
            "{}",
            serde_json::Value::Array(clusters.iter().map(info_json).collect())
        ),
        Output::Table => table(
            &[
                "CLUSTER", "CONVENER", "YOU", "MEMBERS", "LEVELS", "MAX TLP", "HISTORY", "HEAD",
            ],
            &clusters
                .iter()
                .map(|c| {
                    vec![
                        c.id.clone(),
                        dash(&c.convener),
                        dash(&c.my_state),
                        c.members
                            .iter()
                            .filter(|m| m.state == "member")
                            .count()
                            .to_string(),
                        levels_text(&c.levels),
                        tlp_label(c.max_tlp).to_string(),
                        history_name(c.history).to_string(),
                        format!("#{}", c.head_index),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
    }
}

pub fn print_log(entries: &[pb::ClusterLogLine], out: Output) {
    match out {
        Output::Json => println!(
            "{}",
            serde_json::Value::Array(entries.iter().map(log_json).collect())
        ),
        Output::Table => table(
            &["#", "AT", "ACTOR", "OPERATION", "SEQUENCED BY", "HASH"],
            &entries
                .iter()
                .map(|l| {
                    vec![
                        l.index.to_string(),
                        ts(l.at_ms),
                        l.actor.clone(),
                        l.op.clone(),
                        dash(&l.sequenced_by),
                        dash(&l.hash),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::{Cli, Command};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("bluewire").chain(args.iter().copied()))
    }

    fn cluster(args: &[&str]) -> ClusterCommand {
        let mut v = vec!["cluster"];
        v.extend_from_slice(args);
        match parse(&v).expect("parses").command {
            Command::Cluster(c) => c,
            other => panic!("not a cluster command: {other:?}"),
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn create_parses_levels_tlp_and_history() {
        let ClusterCommand::Create(a) = cluster(&[
            "create",
            "ransomware-healthcare",
            "--purpose",
            "LockBit wave against hospitals",
            "--levels",
            "technical,operational",
            "--max-tlp",
            "AMBER+STRICT",
            "--history",
            "full",
        ]) else {
            panic!("not create")
        };
        let req = create_request(&a);
        assert_eq!(req.name, "ransomware-healthcare");
        assert_eq!(req.purpose, "LockBit wave against hospitals");
        assert_eq!(
            req.levels,
            vec![pb::Level::Technical as i32, pb::Level::Operational as i32]
        );
        assert_eq!(req.max_tlp, pb::Tlp::AmberStrict as i32);
        assert_eq!(req.history, pb::HistoryRule::Full as i32);
    }

    #[test]
    fn create_defaults_to_since_join_and_requires_levels_and_tlp() {
        let ClusterCommand::Create(a) = cluster(&[
            "create",
            "x",
            "--purpose",
            "p",
            "--levels",
            "political",
            "--max-tlp",
            "amber",
        ]) else {
            panic!("not create")
        };
        assert_eq!(a.history, HistoryArg::SinceJoin);
        assert_eq!(a.max_tlp, TlpArg::Amber);
        assert!(
            parse(&[
                "cluster",
                "create",
                "x",
                "--purpose",
                "p",
                "--max-tlp",
                "RED"
            ])
            .is_err()
        );
        assert!(
            parse(&[
                "cluster",
                "create",
                "x",
                "--purpose",
                "p",
                "--levels",
                "technical"
            ])
            .is_err()
        );
    }

    #[test]
    fn bad_history_tlp_or_level_is_an_error() {
        let base = ["cluster", "create", "x", "--purpose", "p"];
        let with = |extra: &[&'static str]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            parse(&v)
        };
        let e = with(&[
            "--levels",
            "technical",
            "--max-tlp",
            "AMBER",
            "--history",
            "forever",
        ])
        .unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
        assert!(with(&["--levels", "technical", "--max-tlp", "PURPLE"]).is_err());
        assert!(with(&["--levels", "strategic", "--max-tlp", "AMBER"]).is_err());
    }

    #[test]
    fn invite_defaults_to_member_and_takes_role_and_endpoint() {
        match cluster(&["invite", "csirt-be/rw", "cyclone-fr"]) {
            ClusterCommand::Invite {
                cluster,
                org,
                role,
                endpoint,
            } => {
                assert_eq!(
                    (cluster.as_str(), org.as_str()),
                    ("csirt-be/rw", "cyclone-fr")
                );
                assert_eq!(role, RoleArg::Member);
                assert_eq!(endpoint, None);
            }
            other => panic!("{other:?}"),
        }
        match cluster(&[
            "invite",
            "rw",
            "cert-eu",
            "--role",
            "observer",
            "--endpoint",
            "https://127.0.0.1:7443",
        ]) {
            ClusterCommand::Invite { role, endpoint, .. } => {
                assert_eq!(role, RoleArg::Observer);
                assert_eq!(endpoint.as_deref(), Some("https://127.0.0.1:7443"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_role_is_an_error_and_convener_is_not_a_settable_role() {
        for role in ["owner", "convener"] {
            let e = parse(&["cluster", "invite", "rw", "cert-eu", "--role", role]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
            let e = parse(&["cluster", "set-role", "rw", "cert-eu", role]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
        }
        match cluster(&["set-role", "rw", "cert-eu", "admin"]) {
            ClusterCommand::SetRole { org, role, .. } => {
                assert_eq!(org, "cert-eu");
                assert_eq!(pb::ClusterRole::from(role), pb::ClusterRole::Admin);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn membership_commands_parse() {
        assert!(
            matches!(cluster(&["accept", "rw"]), ClusterCommand::Accept { cluster } if cluster == "rw")
        );
        assert!(matches!(
            cluster(&["decline", "rw"]),
            ClusterCommand::Decline { .. }
        ));
        assert!(matches!(
            cluster(&["leave", "rw"]),
            ClusterCommand::Leave { .. }
        ));
        assert!(matches!(cluster(&["list"]), ClusterCommand::List));
        assert!(matches!(
            cluster(&["show", "rw"]),
            ClusterCommand::Show { .. }
        ));
        assert!(matches!(
            cluster(&["log", "rw"]),
            ClusterCommand::Log { .. }
        ));
        assert!(matches!(
            cluster(&["transfer-convener", "rw", "cert-eu"]),
            ClusterCommand::TransferConvener { org, .. } if org == "cert-eu"
        ));
        match cluster(&["remove", "rw", "cyclone-fr", "--reason", "left the sector"]) {
            ClusterCommand::Remove { org, reason, .. } => {
                assert_eq!(org, "cyclone-fr");
                assert_eq!(reason, "left the sector");
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["cluster", "accept"]).is_err());
        assert!(parse(&["cluster", "remove", "rw"]).is_err());
    }

    #[test]
    fn global_output_and_connection_flags_work_after_the_subcommand() {
        let cli = parse(&[
            "cluster",
            "list",
            "--output",
            "json",
            "--node",
            "https://n:1",
        ])
        .unwrap();
        assert_eq!(cli.output, Output::Json);
        assert_eq!(cli.conn.node.as_deref(), Some("https://n:1"));
    }

    #[test]
    fn publish_and_subscribe_take_clusters() {
        let cli = parse(&[
            "publish",
            "--level",
            "technical",
            "--tlp",
            "AMBER",
            "--title",
            "t",
            "--cluster",
            "csirt-be/rw",
        ])
        .unwrap();
        let Command::Publish(p) = cli.command else {
            panic!("not publish")
        };
        assert_eq!(p.request().unwrap().cluster, "csirt-be/rw");
        let cli = parse(&["subscribe", "--cluster", "a/x,b/y", "--no-follow"]).unwrap();
        let Command::Subscribe(s) = cli.command else {
            panic!("not subscribe")
        };
        assert_eq!(s.cluster, vec!["a/x".to_string(), "b/y".to_string()]);
        let cli = parse(&[
            "publish",
            "--level",
            "technical",
            "--tlp",
            "AMBER",
            "--title",
            "t",
        ])
        .unwrap();
        let Command::Publish(p) = cli.command else {
            panic!("not publish")
        };
        assert_eq!(p.request().unwrap().cluster, "");
    }

    #[test]
    fn json_names_roles_history_and_members() {
        let info = pb::ClusterInfo {
            id: "csirt-be/rw".into(),
            name: "rw".into(),
            levels: vec![pb::Level::Technical as i32],
            max_tlp: pb::Tlp::Amber as i32,
            history: pb::HistoryRule::SinceJoin as i32,
            convener: "csirt-be".into(),
            head_index: 2,
            head_hash: "ab".into(),
            my_state: "member".into(),
            members: vec![pb::ClusterMember {
                org: "csirt-be".into(),
                role: pb::ClusterRole::Convener as i32,
                state: "member".into(),
                endpoint: String::new(),
                since_index: 0,
            }],
            ..Default::default()
        };
        let j = info_json(&info);
        assert_eq!(j["history"], "since-join");
        assert_eq!(j["max_tlp"], "TLP:AMBER");
        assert_eq!(j["levels"][0], "technical");
        assert_eq!(j["members"][0]["role"], "convener");
        assert_eq!(j["head_index"], 2);
    }
}
