//! Every service error as a gRPC status, in one place: the code says what
//! kind of failure it is, the message (the error's own text) what was wrong
//! and what to do.

use tonic::Status;

use crate::feed::{CursorError, FeedEnd, LookupError};
use crate::ingress::IngressError;
use crate::outbound::OutboundError;
use crate::peers::ConnectError;
use crate::replication::ReplicationError;
use crate::state::ClusterRefError;
use crate::store::StoreError;
use crate::tokens::TokenError;
use crate::workflow::CaseError;

impl From<LookupError> for Status {
    fn from(e: LookupError) -> Self {
        let msg = e.to_string();
        match e {
            LookupError::NotFound(_) | LookupError::Retracted(_) => Status::not_found(msg),
            LookupError::Ambiguous { .. } => Status::invalid_argument(msg),
            LookupError::Corrupt(..) => Status::data_loss(msg),
            LookupError::Store(_) => Status::internal(msg),
        }
    }
}

impl From<IngressError> for Status {
    fn from(e: IngressError) -> Self {
        let msg = e.to_string();
        match e {
            // The sender halves its batch on RESOURCE_EXHAUSTED (delivery::next_batch_cap).
            IngressError::TooMany { .. } => Status::resource_exhausted(msg),
            IngressError::Store(_) => Status::unavailable(msg),
        }
    }
}

impl From<OutboundError> for Status {
    fn from(e: OutboundError) -> Self {
        let msg = e.to_string();
        match e {
            OutboundError::Lookup(l) => l.into(),
            OutboundError::Cluster(c) => c.into(),
            OutboundError::Case(c) => c.into(),
            OutboundError::Invalid(_) | OutboundError::SameCluster { .. } => {
                Status::invalid_argument(msg)
            }
            OutboundError::Refused { rule, .. } => match rule {
                "cluster-membership" | "cluster-role" => Status::permission_denied(msg),
                _ => Status::invalid_argument(msg),
            },
            OutboundError::Authority(_)
            | OutboundError::Reshare(_)
            | OutboundError::NotPublisher { .. } => Status::permission_denied(msg),
            OutboundError::Retracted(_) => Status::failed_precondition(msg),
            OutboundError::Store { .. } => Status::unavailable(msg),
            OutboundError::Unreadable(_) | OutboundError::Sealer(_) => Status::internal(msg),
        }
    }
}

impl From<CaseError> for Status {
    fn from(e: CaseError) -> Self {
        let msg = e.to_string();
        match e {
            CaseError::Lookup(l) => l.into(),
            CaseError::NotACase(_) => Status::invalid_argument(msg),
            CaseError::Refused(_) => Status::failed_precondition(msg),
        }
    }
}

impl From<FeedEnd> for Status {
    fn from(e: FeedEnd) -> Self {
        match e {
            FeedEnd::ShuttingDown => Status::unavailable(e.to_string()),
            // The subscriber's own quota (its buffer) ran out, as with a rate limit: retry
            // (resume) once it can keep up. Not ABORTED (a concurrency conflict to retry at
            // once) nor UNAVAILABLE (the node is fine; resuming at once only repeats it if
            // the subscriber still cannot keep up). The position is also in the trailers,
            // for tools: `bluewire-resume-after-seq`.
            FeedEnd::TooSlow { after_seq, .. } => {
                let mut s = Status::resource_exhausted(e.to_string());
                s.metadata_mut().insert(
                    crate::client::RESUME_AFTER_SEQ,
                    tonic::metadata::MetadataValue::from(after_seq),
                );
                s
            }
            FeedEnd::Lookup(l) => l.into(),
            FeedEnd::Store(s) => Status::internal(s.to_string()),
        }
    }
}

impl From<ClusterRefError> for Status {
    fn from(e: ClusterRefError) -> Self {
        let msg = e.to_string();
        match e {
            ClusterRefError::Unknown(_) => Status::not_found(msg),
            ClusterRefError::Ambiguous(..) => Status::invalid_argument(msg),
        }
    }
}

impl From<CursorError> for Status {
    fn from(e: CursorError) -> Self {
        match e {
            CursorError::Unnamed => Status::invalid_argument(e.to_string()),
            CursorError::Store(s) => internal(s),
        }
    }
}

impl From<TokenError> for Status {
    fn from(e: TokenError) -> Self {
        let msg = e.to_string();
        match e {
            TokenError::Malformed(_) | TokenError::InvalidId | TokenError::Invalid(_) => {
                Status::invalid_argument(msg)
            }
            TokenError::Unknown(_) => Status::not_found(msg),
            TokenError::WrongSecret(_)
            | TokenError::Expired { .. }
            | TokenError::Revoked { .. } => Status::unauthenticated(msg),
            TokenError::Corrupt { .. } => Status::data_loss(msg),
            TokenError::Store(StoreError::Closed) => Status::unavailable(msg),
            TokenError::Store(_) => Status::internal(msg),
        }
    }
}

/// A store failure in a read that answers a query.
pub(super) fn internal(e: StoreError) -> Status {
    Status::internal(e.to_string())
}

/// Cluster errors as gRPC statuses, with the reason intact.
pub fn replication_status(e: ReplicationError) -> Status {
    use crate::cluster::ClusterError as C;
    let msg = e.to_string();
    match e {
        ReplicationError::Lookup(l) => l.into(),
        ReplicationError::BadEndpoint(_) => Status::invalid_argument(msg),
        // An endpoint this node took from a cluster log or its directory.
        ReplicationError::Connect(ConnectError::BadEndpoint(_)) => Status::internal(msg),
        ReplicationError::Connect(ConnectError::NoEndpoint(_)) => Status::failed_precondition(msg),
        ReplicationError::Stopping => Status::unavailable(msg),
        ReplicationError::Corrupt { .. } => Status::data_loss(msg),
        ReplicationError::Convener { .. } | ReplicationError::Unverified { .. } => {
            Status::unavailable(msg)
        }
        ReplicationError::Refused { code, message } => Status::new(code, message),
        ReplicationError::NoCertificate(_) => Status::failed_precondition(msg),
        ReplicationError::Cluster(C::Authority(_)) => Status::permission_denied(msg),
        ReplicationError::Cluster(C::Conflict { .. }) => Status::aborted(msg),
        ReplicationError::Cluster(C::State(_) | C::Replay(_)) => Status::failed_precondition(msg),
        ReplicationError::Cluster(_) => Status::invalid_argument(msg),
        ReplicationError::Store(_) | ReplicationError::Other(_) => Status::internal(msg),
    }
}

impl From<crate::offline::ExportError> for Status {
    fn from(e: crate::offline::ExportError) -> Self {
        use crate::offline::ExportError;
        let msg = e.to_string();
        match e {
            ExportError::Invalid(_) => Status::invalid_argument(msg),
            ExportError::UnknownOrg(_) | ExportError::Encrypt { .. } => {
                Status::failed_precondition(msg)
            }
            ExportError::Empty(_) => Status::not_found(msg),
            ExportError::Lookup(l) => l.into(),
        }
    }
}

impl From<crate::offline::ImportError> for Status {
    fn from(e: crate::offline::ImportError) -> Self {
        use crate::offline::{BundleError, ImportError};
        let msg = e.to_string();
        match e {
            ImportError::Bundle(BundleError::NoKey(_) | BundleError::NotOurKey { .. }) => {
                Status::failed_precondition(msg)
            }
            ImportError::Bundle(BundleError::NotForUs { .. } | BundleError::Signer(_)) => {
                Status::permission_denied(msg)
            }
            ImportError::Bundle(_) => Status::invalid_argument(msg),
            ImportError::Replayed { .. } => Status::already_exists(msg),
            ImportError::Ingress(i) => i.into(),
        }
    }
}
