//! The gRPC surface: the tonic router and thin implementations of the
//! generated Federation, Client and Admin traits. A gate in front of each
//! service turns the verified TLS connection into a typed [`Caller`] (node,
//! or user with its role) and applies revocation and rate limits once;
//! handlers convert protobuf to service calls and service errors to `Status`
//! (`api/error.rs`, one place). No routing, store or peer logic here: that is
//! `ingress`, `outbound`, `feed` and `replication`.

use std::sync::Arc;

use bluewire_proto::v1 as pb;
use pb::admin_server::AdminServer;
use pb::client_server::ClientServer;
use pb::federation_server::FederationServer;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Status};

use crate::pki::{OrgProfile, PeerIdentity, UserRole};
use crate::state::NodeState;
use crate::tls::ConnInfo;

mod admin;
mod client;
mod deliver_stream;
mod error;
pub use deliver_stream::{
    DeliverStreams, FEATURE as DELIVER_STREAM, MAX_PER_PEER as MAX_DELIVER_STREAMS_PER_PEER,
};
mod federation;
pub mod publish_stream;

pub use admin::cluster_info;
pub use error::replication_status;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Who is calling, from the connection's verified certificate (never from a request field).
#[derive(Debug, Clone)]
pub enum Caller {
    /// Another organisation's node.
    Node {
        profile: OrgProfile,
        cert: Arc<Vec<u8>>,
    },
    /// A user certificate: its organisation, name and role.
    User {
        org: String,
        name: String,
        role: UserRole,
    },
}

impl Caller {
    /// The caller as set by the service's gate.
    fn of<T>(req: &Request<T>) -> Result<&Caller, Status> {
        req.extensions()
            .get::<Caller>()
            .ok_or_else(|| Status::unauthenticated("no verified TLS identity on this connection"))
    }

    /// The connection's verified certificate identity, for a stream that checks it again
    /// (revocation) on each request.
    fn identity<T>(req: &Request<T>) -> Result<Arc<PeerIdentity>, Status> {
        req.extensions()
            .get::<ConnInfo>()
            .map(|c| c.identity.clone())
            .ok_or_else(|| Status::unauthenticated("no verified TLS identity on this connection"))
    }

    /// A node caller's profile and certificate.
    fn node<T>(req: &Request<T>) -> Result<(OrgProfile, Arc<Vec<u8>>), Status> {
        match Self::of(req)? {
            Caller::Node { profile, cert } => Ok((profile.clone(), cert.clone())),
            Caller::User { .. } => Err(Status::permission_denied(
                "the federation service is for nodes; a user certificate cannot call it",
            )),
        }
    }

    /// A user caller's name.
    fn user<T>(req: &Request<T>) -> Result<String, Status> {
        match Self::of(req)? {
            Caller::User { name, .. } => Ok(name.clone()),
            Caller::Node { profile, .. } => Err(Status::permission_denied(format!(
                "node {} cannot use the client or admin service: use a user certificate",
                profile.org
            ))),
        }
    }
}

/// Which service a gate guards.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Service {
    Federation,
    Client,
    Admin,
}

/// The interceptor in front of a service: verified identity → [`Caller`],
/// revocation, and the per-peer or per-user rate limit.
#[derive(Clone)]
struct Gate {
    state: Arc<NodeState>,
    service: Service,
}

impl tonic::service::Interceptor for Gate {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let caller = self.admit(&req)?;
        req.extensions_mut().insert(caller);
        Ok(req)
    }
}

impl Gate {
    fn admit(&self, req: &Request<()>) -> Result<Caller, Status> {
        let st = &self.state;
        let c = req.extensions().get::<ConnInfo>().ok_or_else(|| {
            Status::unauthenticated("no verified TLS identity on this connection")
        })?;
        if st.tls.revocations.identity_revoked(&c.identity) {
            return Err(Status::permission_denied(
                "your certificate has been revoked by the federation CA",
            ));
        }
        match (&*c.identity, self.service) {
            (PeerIdentity::Node { profile, .. }, Service::Federation) => {
                if !st.peer_limits.try_take(&profile.org) {
                    st.metrics.inc(
                        crate::metrics::RATE_LIMITED,
                        &[("kind", "peer"), ("who", &profile.org)],
                    );
                    return Err(Status::resource_exhausted(format!(
                        "{} is over its rate limit on this node ({} calls and envelopes per \
                         second, limits.peer_rate_per_sec); back off and retry",
                        profile.org,
                        st.peer_limits.rate()
                    )));
                }
                Ok(Caller::Node {
                    profile: profile.clone(),
                    cert: c.cert_der.clone(),
                })
            }
            (PeerIdentity::Node { profile, .. }, _) => Err(Status::permission_denied(format!(
                "node {} cannot use the client or admin service: use a user certificate",
                profile.org
            ))),
            // Users reach the federation service only for Hello (handlers demand a node).
            (
                PeerIdentity::User {
                    org, name, role, ..
                },
                Service::Federation,
            ) => Ok(Caller::User {
                org: org.clone(),
                name: name.clone(),
                role: *role,
            }),
            (
                PeerIdentity::User {
                    org, name, role, ..
                },
                service,
            ) => {
                if org != st.org() {
                    return Err(Status::permission_denied(format!(
                        "this node serves users of {}; your certificate is from {org}",
                        st.org()
                    )));
                }
                if service == Service::Admin && *role != UserRole::Operator {
                    return Err(Status::permission_denied(format!(
                        "admin commands need a certificate with the operator role; yours is {role}"
                    )));
                }
                // Client-service calls are limited per user; admin calls are not.
                if service == Service::Client {
                    take_client_token(st, name)?;
                }
                Ok(Caller::User {
                    org: org.clone(),
                    name: name.clone(),
                    role: *role,
                })
            }
        }
    }
}

/// One token of `name`'s per-user rate limit (a client call, or a request of a publish
/// stream); the refusal says which limit and is counted.
fn take_client_token(st: &NodeState, name: &str) -> Result<(), Status> {
    if st.client_limits.try_take(name) {
        return Ok(());
    }
    st.metrics.inc(
        crate::metrics::RATE_LIMITED,
        &[("kind", "client"), ("who", name)],
    );
    Err(Status::resource_exhausted(format!(
        "{name} is over its rate limit on this node ({} requests per second, \
         limits.client_rate_per_sec); slow down and retry",
        st.client_limits.rate()
    )))
}

/// The handlers' shared state.
#[derive(Clone)]
pub struct Api {
    state: Arc<NodeState>,
}

/// Build the tonic router with every service, health and reflection.
pub fn router(state: Arc<NodeState>) -> tonic::transport::server::Router {
    let limits = &state.config.limits;
    let max = limits.max_request_bytes;
    let (health_reporter, health) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .ok();
    let api = Api {
        state: state.clone(),
    };
    let gate = |service| Gate {
        state: state.clone(),
        service,
    };
    let fed = InterceptedService::new(
        FederationServer::new(api.clone())
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        gate(Service::Federation),
    );
    let client = InterceptedService::new(
        ClientServer::new(api.clone())
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        gate(Service::Client),
    );
    let admin = InterceptedService::new(
        AdminServer::new(api)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        gate(Service::Admin),
    );
    state
        .tasks
        .spawn(tracing::debug_span!("health"), async move {
            health_reporter.set_serving::<FederationServer<Api>>().await;
            health_reporter.set_serving::<ClientServer<Api>>().await;
        });
    let mut b = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(limits.max_concurrent_streams))
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)));
    let r = b
        .add_service(health)
        .add_service(fed)
        .add_service(client)
        .add_service(admin);
    match reflection {
        Some(refl) => r.add_service(refl),
        None => r,
    }
}
