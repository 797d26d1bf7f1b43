//! Bluewire node library: domain (envelope, routing), crypto (signing, PKI),
//! storage, delivery and the gRPC surface. Domain modules know nothing of
//! tonic or sockets; `api` converts protobuf to domain types in one place.
#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod case;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod delivery;
pub mod directory;
pub mod e2e;
pub mod envelope;
pub mod feed;
pub mod fuzzing;
pub mod ingress;
pub mod intel;
pub mod known;
pub mod linger;
pub mod markings;
pub mod merkle;
pub mod metrics;
pub mod misp;
pub mod offline;
pub mod outbound;
pub mod peers;
pub mod pki;
pub mod policy;
pub mod provision;
pub mod ratelimit;
pub mod relay;
pub mod replication;
pub mod routing;
pub mod sealer;
pub mod server;
pub mod signature_table;
pub mod signing;
pub mod state;
pub mod stix;
pub mod store;
pub mod tasks;
pub mod taxii;
pub mod taxonomy;
pub mod telemetry;
pub mod tls;
pub mod tokens;
pub mod workflow;

pub use server::{Node, NodeError};
pub use state::NodeState;
