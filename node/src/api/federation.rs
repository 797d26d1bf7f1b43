//! Federation service handlers (node to node): each a few lines around
//! `ingress`, `outbound` and `replication`.

use bluewire_proto::v1 as pb;
use pb::federation_server::Federation;
use prost::Message;
use tonic::{Request, Response, Status};
use tracing::{Instrument, debug};

use super::error::replication_status;
use super::{Api, Caller, VERSION};

#[tonic::async_trait]
impl Federation for Api {
    async fn deliver(
        &self,
        req: Request<pb::DeliverRequest>,
    ) -> Result<Response<pb::DeliverResponse>, Status> {
        let (peer, cert) = Caller::node(&req)?;
        let results = deliver_one(&self.state, &peer, &cert, req.into_inner()).await?;
        Ok(Response::new(pb::DeliverResponse {
            results,
            ..Default::default()
        }))
    }

    type DeliverStreamStream = super::deliver_stream::Responses;

    async fn deliver_stream(
        &self,
        req: Request<tonic::Streaming<pb::DeliverRequest>>,
    ) -> Result<Response<Self::DeliverStreamStream>, Status> {
        let (peer, cert) = Caller::node(&req)?;
        let identity = Caller::identity(&req)?;
        Ok(Response::new(super::deliver_stream::start(
            self.state.clone(),
            peer,
            cert,
            identity,
            req.into_inner(),
        )?))
    }

    async fn backfill(
        &self,
        req: Request<pb::BackfillRequest>,
    ) -> Result<Response<pb::BackfillResponse>, Status> {
        let (peer, _) = Caller::node(&req)?;
        let r = req.into_inner();
        let limit = (r.limit as usize).clamp(1, 1024);
        let page = crate::outbound::backfill_page(&self.state, &peer.org, r.after_seq, limit)?;
        Ok(Response::new(page))
    }

    async fn propose_cluster_op(
        &self,
        req: Request<pb::ProposeClusterOpRequest>,
    ) -> Result<Response<pb::ClusterLogResponse>, Status> {
        let (peer, _) = Caller::node(&req)?;
        let signed = req
            .into_inner()
            .op
            .ok_or_else(|| Status::invalid_argument("no operation"))?;
        let entry = self
            .state
            .propose_from(&peer.org, signed)
            .await
            .map_err(replication_status)?;
        Ok(Response::new(pb::ClusterLogResponse {
            entries: vec![entry],
        }))
    }

    async fn cluster_log(
        &self,
        req: Request<pb::ClusterLogRequest>,
    ) -> Result<Response<pb::ClusterLogResponse>, Status> {
        let (peer, _) = Caller::node(&req)?;
        let r = req.into_inner();
        let entries = self
            .state
            .log_for(&peer.org, &r.cluster_id, r.from_index, r.limit as usize)
            .map_err(replication_status)?
            .into_iter()
            .map(|b| pb::ClusterEntry::decode(b.as_slice()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Status::data_loss(format!("stored cluster log entry: {e}")))?;
        Ok(Response::new(pb::ClusterLogResponse { entries }))
    }

    async fn cluster_notify(
        &self,
        req: Request<pb::ClusterNotifyRequest>,
    ) -> Result<Response<pb::ClusterNotifyResponse>, Status> {
        let (peer, cert) = Caller::node(&req)?;
        let r = req.into_inner();
        self.state
            .notified(&peer, &cert, &r.cluster_id, r.head_index)
            .await;
        debug!(cluster.id = %r.cluster_id, "cluster notify handled");
        Ok(Response::new(pb::ClusterNotifyResponse {}))
    }

    async fn hello(
        &self,
        req: Request<pb::HelloRequest>,
    ) -> Result<Response<pb::HelloResponse>, Status> {
        let caller_org = match Caller::of(&req)? {
            Caller::Node { profile, .. } => profile.org.clone(),
            Caller::User { org, .. } => org.clone(),
        };
        let kx_group = req
            .extensions()
            .get::<crate::tls::ConnInfo>()
            .map(|c| c.kx_group.clone())
            .unwrap_or_default();
        Ok(Response::new(pb::HelloResponse {
            org: self.state.org().to_string(),
            version: VERSION.to_string(),
            caller_org,
            kx_group,
            features: vec![
                crate::signature_table::FEATURE.to_string(),
                super::deliver_stream::FEATURE.to_string(),
            ],
        }))
    }
}

/// One Deliver: the signature table put back, then ingress.
pub(super) async fn deliver_one(
    st: &std::sync::Arc<crate::state::NodeState>,
    peer: &crate::pki::OrgProfile,
    cert: &[u8],
    req: pb::DeliverRequest,
) -> Result<Vec<pb::DeliveryResult>, Status> {
    let span = tracing::debug_span!("deliver", peer.org = %peer.org);
    let pb::DeliverRequest {
        mut envelopes,
        signatures,
        signature_refs,
    } = req;
    crate::signature_table::restore(&mut envelopes, signatures, &signature_refs).map_err(
        |why| {
            Status::invalid_argument(format!(
                "the call's signature table does not add up: {why}; send each envelope with its own signature, or one table entry per distinct signature and one reference per envelope"
            ))
        },
    )?;
    Ok(crate::ingress::deliver(st, peer, cert, envelopes)
        .instrument(span)
        .await?)
}
