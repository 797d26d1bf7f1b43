//! Client service handlers (a node's own users): each a few lines around
//! `outbound` and `feed`.

use std::pin::Pin;

use bluewire_proto::v1 as pb;
use pb::client_server::Client;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::error::internal;
use super::{Api, Caller};

type FeedStream = Pin<Box<dyn Stream<Item = Result<pb::FeedItem, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Client for Api {
    async fn publish(
        &self,
        req: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let user = Caller::user(&req)?;
        let r = crate::outbound::publish(&self.state, &user, req.into_inner()).await?;
        Ok(Response::new(r))
    }

    type PublishStreamStream = super::publish_stream::Results;

    async fn publish_stream(
        &self,
        req: Request<tonic::Streaming<pb::PublishRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let user = Caller::user(&req)?;
        let identity = Caller::identity(&req)?;
        Ok(Response::new(super::publish_stream::start(
            self.state.clone(),
            user,
            identity,
            req.into_inner(),
        )))
    }

    async fn import_stix(
        &self,
        req: Request<pb::ImportStixRequest>,
    ) -> Result<Response<pb::ImportStixResponse>, Status> {
        let user = Caller::user(&req)?;
        let r = crate::intel::import(&self.state, &user, req.into_inner()).await?;
        Ok(Response::new(r))
    }

    type SubscribeStream = FeedStream;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let user = Caller::user(&req)?;
        let feed = crate::feed::subscribe(self.state.clone(), &user, req.into_inner())
            .map_err(internal)?;
        Ok(Response::new(Box::pin(
            feed.map(|r| r.map_err(Status::from)),
        )))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::FeedItem>, Status> {
        Caller::user(&req)?;
        Ok(Response::new(crate::feed::get(
            &self.state,
            &req.into_inner().id,
        )?))
    }

    async fn reshare(
        &self,
        req: Request<pb::ReshareRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let user = Caller::user(&req)?;
        let r = req.into_inner();
        let resp =
            crate::outbound::reshare(&self.state, &user, &r.message_id, &r.to_cluster).await?;
        Ok(Response::new(resp))
    }

    async fn list_cases(
        &self,
        req: Request<pb::ListCasesRequest>,
    ) -> Result<Response<pb::ListCasesResponse>, Status> {
        Caller::user(&req)?;
        let now = crate::workflow::at_or_now(req.get_ref().at_ms);
        let cases = crate::workflow::list(&self.state, now)?
            .iter()
            .map(|v| crate::workflow::summary_pb(v, now))
            .collect();
        Ok(Response::new(pb::ListCasesResponse { cases }))
    }

    async fn get_case(
        &self,
        req: Request<pb::GetCaseRequest>,
    ) -> Result<Response<pb::CaseDetail>, Status> {
        Caller::user(&req)?;
        let r = req.into_inner();
        let now = crate::workflow::at_or_now(r.at_ms);
        let (origin, id) = crate::feed::parse_reference(&r.case);
        let (origin, id) = crate::workflow::resolve(&self.state, origin, id)?;
        let held = crate::workflow::load(&self.state, &origin, &id, now)?;
        Ok(Response::new(crate::workflow::detail_pb(&held.view, now)))
    }

    async fn export_case(
        &self,
        req: Request<pb::GetCaseRequest>,
    ) -> Result<Response<pb::CaseBundle>, Status> {
        Caller::user(&req)?;
        let r = req.into_inner();
        let (origin, id) = crate::feed::parse_reference(&r.case);
        let (origin, id) = crate::workflow::resolve(&self.state, origin, id)?;
        Ok(Response::new(crate::workflow::export(
            &self.state,
            &origin,
            &id,
        )?))
    }

    async fn commit_cursor(
        &self,
        req: Request<pb::CommitCursorRequest>,
    ) -> Result<Response<pb::CommitCursorResponse>, Status> {
        Caller::user(&req)?;
        let r = req.into_inner();
        crate::feed::commit_cursor(&self.state, &r.durable_name, r.seq).await?;
        Ok(Response::new(pb::CommitCursorResponse {}))
    }
}
