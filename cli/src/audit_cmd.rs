//! `bluewire audit …`: verify the node's hash-chained audit trail and export evidence.

use clap::Subcommand;

use crate::Output;
use crate::member::ConnArgs;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check every record's hash link; reports the first broken one.
    Verify,
}

pub async fn run(_c: &ConnArgs, cmd: AuditCommand, _out: Output) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Verify => anyhow::bail!("not implemented yet"),
    }
}
