//! `bluewire policy …`: validate and test the operator's local routing policy,
//! and explain routing decisions.

use clap::Subcommand;

use crate::Output;
use crate::member::ConnArgs;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a local policy file against the schema.
    Check { file: std::path::PathBuf },
}

pub async fn run(_c: &ConnArgs, cmd: PolicyCommand, _out: Output) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Check { .. } => anyhow::bail!("not implemented yet"),
    }
}
