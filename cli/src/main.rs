//! `bluewire`: the operator and member command line. PKI, publish,
//! subscribe, get, status, peers, clusters, the local demo federation and the
//! fan-out benchmark. Thin: every capability lives in the node library; this crate
//! parses flags, talks gRPC and prints for people (tables) or scripts (JSON).
#![forbid(unsafe_code)]

mod args;
mod audit_cmd;
mod bench;
mod blueprint;
mod bundle_cmd;
mod case_cmd;
mod cluster_cmd;
mod connection;
mod csv_import;
mod demo;
mod exercise;
mod feed;
mod intel_cmd;
mod local;
mod message;
mod node_cmd;
mod output;
mod pki_cmd;
mod policy_cmd;
mod token_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "bluewire",
    version,
    about = "Bluewire: federated, signed, mutually authenticated incident sharing"
)]
pub struct Cli {
    /// Output format: tables for people, JSON for scripts.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(flatten)]
    pub conn: connection::ConnArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Federation PKI: root CA, organisation and user certificates, revocation.
    #[command(subcommand)]
    Pki(pki_cmd::PkiCommand),
    /// Publish a signed message through your node.
    Publish(message::PublishCmd),
    /// Follow your node's feed (resumable with --after or --durable).
    Subscribe(feed::SubscribeArgs),
    /// Re-share a received message into another cluster (keeps the origin's signature,
    /// adds your node's signed forwarding attestation; refused when markings forbid it).
    Reshare {
        id: String,
        #[arg(long)]
        to: String,
    },
    /// Retract a message you published: it leaves every receiver's feeds and queries.
    Retract {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Change a message's marking: raise it (anyone who received it), or lower it (origin only).
    Mark {
        /// ID, or ORIGIN/ID when organisations reused an id.
        id: String,
        #[arg(long, value_enum)]
        tlp: args::TlpArg,
        #[arg(long, default_value = "")]
        classification: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Show one message by id (ID, or ORIGIN/ID when organisations reused an id).
    Get { id: String },
    /// Node status: messages, rejections, peers and their outbox depth.
    Status,
    /// Peer links: connectivity, outbox depth, negotiated key exchange.
    Peers,
    /// Envelopes this node refused, newest first, with the reason.
    Rejections {
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Crisis cases (the EU blueprint workflow): open, escalate, advise, assess, crisis
    /// status, situation reports, communication lines, lessons learned; list, show, timeline.
    #[command(subcommand)]
    Case(case_cmd::CaseCommand),
    /// Requests to the EU Cybersecurity Reserve (24 h clock): request, ack, assign,
    /// delivered, close, list.
    #[command(subcommand)]
    Reserve(case_cmd::ReserveCommand),
    /// Offline bundles, for when there is no network path to a node: export this node's
    /// messages for one organisation to a signed (and encrypted) file; import one (operators).
    #[command(subcommand)]
    Bundle(bundle_cmd::BundleCommand),
    /// Check a case's evidence bundle (`case export`) offline against the federation root.
    VerifyBundle {
        file: std::path::PathBuf,
        /// The federation root certificate (ca.crt).
        #[arg(long)]
        ca: std::path::PathBuf,
    },
    /// Import threat intelligence: STIX 2.1 bundles, MISP events and feeds, CSV files
    /// (idempotent; refusals listed with reasons).
    #[command(subcommand)]
    Import(intel_cmd::ImportCommand),
    /// Export what you may read: one STIX 2.1 bundle, or a MISP feed.
    #[command(subcommand)]
    Export(intel_cmd::ExportCommand),
    /// Need-to-know clusters: create, invite, accept, leave, roles, log.
    #[command(subcommand)]
    Cluster(cluster_cmd::ClusterCommand),
    /// The node's counters in Prometheus text format (operators).
    Metrics,
    /// Routing policy: check and test a local policy file, explain decisions.
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCommand),
    /// The node's tamper-evident audit trail.
    #[command(subcommand)]
    Audit(audit_cmd::AuditCommand),
    /// API tokens for tools without a client certificate (TAXII readers, SIEM connectors):
    /// create, list, revoke (operators).
    #[command(subcommand)]
    Token(token_cmd::TokenCommand),
    /// Run or configure a node (same as the bluewire-node binary).
    #[command(subcommand)]
    Node(bluewire_node::daemon::NodeCommand),
    /// Start a local demo federation on loopback (`--scenario blueprint`: a crisis case
    /// from detection to lessons learned).
    Demo(demo::DemoArgs),
    /// Exercises: inject a scripted scenario into a running federation.
    #[command(subcommand)]
    Exercise(exercise::ExerciseCommand),
    /// Benchmarks (not tests): see BENCHMARKS.md.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// `bluewire … | head` closes our stdout early: end quietly instead of
/// panicking in `println!` (Rust ignores SIGPIPE, and resetting it needs unsafe).
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// The async runtime of a command: one thread when `threads` is `Some(1)`, that many when
/// more, one per core otherwise.
fn runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Some(n) = threads.filter(|n| *n > 1) {
        b.worker_threads(n);
    }
    b.enable_all().build()
}

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    if let Command::Node(cmd) = cli.command {
        return bluewire_node::daemon::execute(cmd);
    }
    let threads = match &cli.command {
        Command::Bench(b) => b.client_threads(),
        _ => None,
    };
    let rt = match runtime(threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let out = cli.output;
    let r = rt.block_on(async move {
        match cli.command {
            Command::Pki(cmd) => pki_cmd::run(cmd, out),
            Command::Publish(a) => message::publish(&cli.conn, a, out).await,
            Command::Subscribe(a) => feed::subscribe(&cli.conn, a, out).await,
            Command::Get { id } => message::get(&cli.conn, &id, out).await,
            Command::Reshare { id, to } => message::reshare(&cli.conn, id, to, out).await,
            Command::Retract { id, reason } => message::retract(&cli.conn, id, reason, out).await,
            Command::Mark {
                id,
                tlp,
                classification,
                reason,
            } => message::mark(&cli.conn, id, tlp, classification, reason, out).await,
            Command::Status => node_cmd::status(&cli.conn, out).await,
            Command::Peers => node_cmd::peers(&cli.conn, out).await,
            Command::Rejections { limit } => node_cmd::rejections(&cli.conn, limit, out).await,
            Command::Cluster(c) => cluster_cmd::run(&cli.conn, c, out).await,
            Command::Case(c) => case_cmd::run(&cli.conn, c, out).await,
            Command::Reserve(r) => case_cmd::reserve(&cli.conn, r, out).await,
            Command::Import(a) => intel_cmd::import(&cli.conn, a, out).await,
            Command::Export(a) => intel_cmd::export(&cli.conn, a, out).await,
            Command::Bundle(b) => bundle_cmd::run(&cli.conn, b, out).await,
            Command::VerifyBundle { file, ca } => case_cmd::verify_bundle(&file, &ca, out),
            Command::Metrics => node_cmd::metrics(&cli.conn).await,
            Command::Policy(p) => policy_cmd::run(&cli.conn, p, out).await,
            Command::Audit(a) => audit_cmd::run(&cli.conn, a, out).await,
            Command::Token(t) => token_cmd::run(&cli.conn, t, out).await,
            Command::Demo(a) => demo::run(a).await,
            Command::Exercise(e) => exercise::run(e, out).await,
            Command::Bench(b) => bench::run(b, out).await,
            Command::Node(_) => unreachable_node(),
        }
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn unreachable_node() -> anyhow::Result<()> {
    anyhow::bail!("node commands are handled before the runtime starts")
}

#[cfg(test)]
mod tests {
    use tokio::runtime::RuntimeFlavor;

    #[test]
    fn a_benchmark_asked_for_one_client_thread_runs_on_one() {
        let flavor = |t| super::runtime(t).unwrap().handle().runtime_flavor();
        assert_eq!(flavor(Some(1)), RuntimeFlavor::CurrentThread);
        assert_eq!(flavor(Some(0)), RuntimeFlavor::MultiThread);
        assert_eq!(flavor(Some(3)), RuntimeFlavor::MultiThread);
        assert_eq!(flavor(None), RuntimeFlavor::MultiThread);
        let rt = super::runtime(Some(3)).unwrap();
        assert_eq!(rt.metrics().num_workers(), 3);
    }

    #[test]
    fn only_the_fan_out_and_the_floor_choose_their_clients_threads() {
        use clap::Parser;
        let threads = |args: &[&str]| {
            let cli = super::Cli::try_parse_from([&["bluewire"], args].concat()).unwrap();
            match cli.command {
                super::Command::Bench(b) => b.client_threads(),
                _ => panic!("not a benchmark: {args:?}"),
            }
        };
        assert_eq!(threads(&["bench", "fanout"]), Some(1));
        assert_eq!(
            threads(&["bench", "fanout", "--client-threads", "0"]),
            Some(0)
        );
        assert_eq!(
            threads(&["bench", "floor", "--client-threads", "256"]),
            Some(256)
        );
        assert_eq!(threads(&["bench", "stix"]), None);
        assert_eq!(threads(&["bench", "subscribers"]), None);
        let too_many =
            super::Cli::try_parse_from(["bluewire", "bench", "fanout", "--client-threads", "257"]);
        assert!(too_many.is_err_and(|e| e.to_string().contains("0..=256")));
    }
}
