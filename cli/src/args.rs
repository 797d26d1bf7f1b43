//! Argument enums shared by commands (message kind, level, TLP, severity)
//! and their protobuf values. `--kind` takes the short names `text` and `incident` or the
//! node's labels (`free-text`, `incident-report`, …); kinds, levels and TLP are printed with
//! the node's labels (`bluewire_node::envelope::{kind_label, level_label, tlp_label}`).

use bluewire_proto::v1 as pb;
use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    #[value(alias = "free-text")]
    Text,
    #[value(alias = "incident-report")]
    Incident,
    SituationReport,
    PublicCommunication,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LevelArg {
    Technical,
    Operational,
    Political,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlpArg {
    #[value(name = "CLEAR", alias = "clear", alias = "WHITE", alias = "white")]
    Clear,
    #[value(name = "GREEN", alias = "green")]
    Green,
    #[value(name = "AMBER", alias = "amber")]
    Amber,
    #[value(
        name = "AMBER+STRICT",
        alias = "amber+strict",
        alias = "AMBER_STRICT",
        alias = "amber-strict"
    )]
    AmberStrict,
    #[value(name = "RED", alias = "red")]
    Red,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SeverityArg {
    Low,
    Medium,
    High,
    Critical,
}

impl From<KindArg> for pb::Kind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Text => pb::Kind::FreeText,
            KindArg::Incident => pb::Kind::IncidentReport,
            KindArg::SituationReport => pb::Kind::SituationReport,
            KindArg::PublicCommunication => pb::Kind::PublicCommunication,
        }
    }
}
impl From<LevelArg> for pb::Level {
    fn from(l: LevelArg) -> Self {
        match l {
            LevelArg::Technical => pb::Level::Technical,
            LevelArg::Operational => pb::Level::Operational,
            LevelArg::Political => pb::Level::Political,
        }
    }
}
impl From<TlpArg> for pb::Tlp {
    fn from(t: TlpArg) -> Self {
        match t {
            TlpArg::Clear => pb::Tlp::Clear,
            TlpArg::Green => pb::Tlp::Green,
            TlpArg::Amber => pb::Tlp::Amber,
            TlpArg::AmberStrict => pb::Tlp::AmberStrict,
            TlpArg::Red => pb::Tlp::Red,
        }
    }
}
impl From<SeverityArg> for pb::Severity {
    fn from(s: SeverityArg) -> Self {
        match s {
            SeverityArg::Low => pb::Severity::Low,
            SeverityArg::Medium => pb::Severity::Medium,
            SeverityArg::High => pb::Severity::High,
            SeverityArg::Critical => pb::Severity::Critical,
        }
    }
}
