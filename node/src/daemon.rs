//! The `bluewire-node` command line: `init` writes a commented config,
//! `run` runs a node until SIGINT/SIGTERM. Shared by the `bluewire-node`
//! binary and `bluewire node …`, so the demo can start real node processes
//! from either.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, NodeConfig, PeerConfig};
use crate::server::{Node, NodeError};

#[derive(Debug, Parser)]
#[command(name = "bluewire-node", version, about = "Bluewire node daemon")]
pub struct NodeCli {
    #[command(subcommand)]
    pub command: NodeCommand,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Write a commented node configuration file.
    Init {
        /// Organisation id (must match the node certificate).
        #[arg(long)]
        org: String,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7443")]
        listen: String,
        /// Peer to deliver to, as ORG=https://HOST:PORT (repeatable).
        #[arg(long = "peer", value_parser = parse_peer)]
        peers: Vec<PeerConfig>,
        /// Where to write the file.
        #[arg(long, default_value = "node.toml")]
        out: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Run the node.
    Run {
        #[arg(long, short, default_value = "node.toml")]
        config: PathBuf,
        /// Log as JSON lines.
        #[arg(long)]
        log_json: bool,
    },
    /// Check a configuration file and its key material, then exit.
    Check {
        #[arg(long, short, default_value = "node.toml")]
        config: PathBuf,
    },
}

fn parse_peer(s: &str) -> Result<PeerConfig, String> {
    let (org, endpoint) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected ORG=https://HOST:PORT"))?;
    config::check_org(org)?;
    config::parse_endpoint(endpoint)?;
    Ok(PeerConfig {
        org: org.to_string(),
        endpoint: endpoint.to_string(),
    })
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = NodeCli::parse();
    execute(cli.command)
}

/// Run one node command; errors are printed for a person.
pub fn execute(cmd: NodeCommand) -> ExitCode {
    match cmd {
        NodeCommand::Init {
            org,
            listen,
            peers,
            out,
            force,
        } => {
            if let Err(e) = config::check_org(&org) {
                eprintln!("error: --org: {e}");
                return ExitCode::from(2);
            }
            if out.exists() && !force {
                eprintln!(
                    "error: {} exists; pass --force to overwrite it",
                    out.display()
                );
                return ExitCode::from(2);
            }
            let text = config::template(&org, &listen, &peers);
            if let Err(e) = NodeConfig::parse(&text, std::path::Path::new("."), &out) {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            if let Err(e) = std::fs::write(&out, text) {
                eprintln!("error: cannot write {}: {e}", out.display());
                return ExitCode::FAILURE;
            }
            println!("wrote {}", out.display());
            ExitCode::SUCCESS
        }
        NodeCommand::Check { config } => match NodeConfig::load(&config) {
            Ok(c) => {
                let rt = match tokio::runtime::Runtime::new() {
                    Ok(rt) => rt,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                let r = rt.block_on(async {
                    let mut c = c;
                    c.listen = "127.0.0.1:0".parse().expect("literal address");
                    c.peers.clear();
                    let n = Node::start(c).await?;
                    n.shutdown().await
                });
                match r {
                    Ok(()) => {
                        println!("{}: ok", config.display());
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        NodeCommand::Run { config, log_json } => {
            crate::telemetry::init(log_json, "info");
            let cfg = match NodeConfig::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let r = rt.block_on(async move {
                let node = Node::start(cfg).await?;
                tracing::info!(addr = %node.local_addr(), "ready");
                node.run_until(shutdown_signal()).await
            });
            match r {
                Ok(()) => ExitCode::SUCCESS,
                // The process is exiting: whatever still held the store lets go with it.
                Err(e @ NodeError::StillHeld(_)) => {
                    tracing::warn!(error = %e, "stopped");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
