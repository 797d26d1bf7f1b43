//! The integration tests, one test binary (one link) for all of them: real
//! nodes, real certificates, real disk, loopback only. Each module is one
//! area; `cargo test -p bluewire-tests --test it MODULE::` runs one of them.

mod audit;
mod bundles;
mod cases;
mod chaos;
mod clusters;
mod compromise;
mod crash;
mod e2e;
mod federation;
mod heal;
mod limits;
mod markings;
mod metrics;
mod misp;
mod outage;
mod policy;
mod publish_stream;
mod relay;
mod reshare;
mod resume;
mod rogue;
mod rotation;
mod stix;
mod store_faults;
mod subscribers;
mod tamper;
mod taxii;
mod tls;
