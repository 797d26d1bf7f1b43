//! Admin service handlers (a node's operators): status, peers, clusters,
//! policy, audit, API tokens. Each a few lines around the module that owns the work.

use std::pin::Pin;
use std::sync::Arc;

use bluewire_proto::v1 as pb;
use pb::admin_server::Admin;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::error::{internal, replication_status};
use super::{Api, Caller, VERSION};
use crate::cluster::{self, ClusterState};
use crate::pki::UserRole;
use crate::tokens::{self, TokenRecord};

/// A token as operators see it: never its secret's hash.
fn token_info(t: &TokenRecord) -> pb::TokenInfo {
    pb::TokenInfo {
        id: t.id.clone(),
        user: t.user.clone(),
        role: t.role.as_str().to_owned(),
        label: t.label.clone(),
        created_at_ms: t.created_ms,
        expires_at_ms: t.expires_ms,
        revoked_at_ms: t.revoked_ms,
        created_by: t.created_by.clone(),
    }
}

/// What `cluster show` prints.
pub fn cluster_info(c: &ClusterState, me: &str) -> pb::ClusterInfo {
    pb::ClusterInfo {
        id: c.id.clone(),
        name: c.name.clone(),
        purpose: c.purpose.clone(),
        levels: c.levels.clone(),
        max_tlp: c.max_tlp,
        history: c.history as i32,
        convener: c.convener.clone(),
        members: c
            .members
            .values()
            .map(|m| pb::ClusterMember {
                org: m.org.clone(),
                role: m.role as i32,
                state: m.standing.as_str().to_string(),
                endpoint: m.profile.endpoint.clone(),
                since_index: m.since_index,
            })
            .collect(),
        head_index: c.head_index,
        head_hash: c.head_hash.clone(),
        my_state: c
            .standing(me)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|| "none".into()),
        exercise: c.exercise,
    }
}

#[tonic::async_trait]
impl Admin for Api {
    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let status = self.state.status(VERSION).map_err(internal)?;
        Ok(Response::new(status))
    }

    async fn peers(
        &self,
        _req: Request<pb::PeersRequest>,
    ) -> Result<Response<pb::PeersResponse>, Status> {
        Ok(Response::new(pb::PeersResponse {
            peers: self.state.peer_statuses().map_err(internal)?,
        }))
    }

    async fn reload_revocations(
        &self,
        _req: Request<pb::ReloadRevocationsRequest>,
    ) -> Result<Response<pb::ReloadRevocationsResponse>, Status> {
        self.state
            .tls
            .reload_crl()
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok(Response::new(pb::ReloadRevocationsResponse {
            revoked_serials: self.state.tls.revocations.len() as u32,
        }))
    }

    async fn cluster_create(
        &self,
        req: Request<pb::ClusterCreateRequest>,
    ) -> Result<Response<pb::ClusterInfo>, Status> {
        let r = req.into_inner();
        cluster::check_name(&r.name).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let st = &self.state;
        let id = cluster::cluster_id(st.org(), &r.name);
        let node_cert = st.tls.chain.first().map(|c| c.to_vec()).unwrap_or_default();
        let state = st
            .act(
                &id,
                String::new(),
                pb::cluster_op::Op::Create(pb::CreateCluster {
                    name: r.name,
                    purpose: r.purpose,
                    levels: r.levels,
                    max_tlp: r.max_tlp,
                    history: r.history,
                    node_cert,
                    exercise: r.exercise,
                }),
            )
            .await
            .map_err(replication_status)?;
        Ok(Response::new(cluster_info(&state, st.org())))
    }

    async fn cluster_invite(
        &self,
        req: Request<pb::ClusterInviteRequest>,
    ) -> Result<Response<pb::ClusterInfo>, Status> {
        let r = req.into_inner();
        let c = self.resolve(&r.cluster)?;
        let node_cert = self
            .state
            .invitee_cert(&r.org, &r.endpoint)
            .await
            .map_err(replication_status)?;
        let role = if r.role == 0 {
            pb::ClusterRole::Member as i32
        } else {
            r.role
        };
        self.act(
            &c,
            pb::cluster_op::Op::Invite(pb::InviteMember {
                org: r.org,
                role,
                node_cert,
            }),
        )
        .await
    }

    async fn cluster_accept(
        &self,
        req: Request<pb::ClusterRef>,
    ) -> Result<Response<pb::ClusterInfo>, Status> {
        let c = self.cluster_ref(req)?;
        let node_cert = self
            .state
            .tls
            .chain
            .first()
            .map(|c| c.to_vec())
            .unwrap_or_default();
        self.act(
            &c,
            pb::cluster_op::Op::Accept(pb::AcceptInvitation { node_cert }),
        )
        .await
    }

    async fn cluster_decline(
        &self,
        req: Request<pb::ClusterRef>,
    ) -> Result<Response<pb::ClusterInfo>, Status> {
        let c = self.cluster_ref(req)?;
        self.act(&c, pb::cluster_op::Op::Decline(pb::DeclineInvitation {}))
            .await
    }

    async fn cluster_leave(
        &self,
        req: Request<pb::ClusterRef>,
    ) -> Result<Response<pb::ClusterInfo>, Status> {
        let c = self.cluster_ref(req)?;
        self.act(&c, pb::cluster_op::Op::Leave(pb::LeaveCluster {}))
            .await
    }

    async fn cluster_remove(
        &self,
        req: Request<pb::ClusterMemberRequest>,
    ) -> Result<Response<pb::ClusterInfo>, Status> {
        let r = req.into_inner();
        let c = self.resolve(&r.cluster)?;
        self.act(
            &c,
            pb::cluster_op::Op::Remove(pb::RemoveMember {
                org: r.org,
                reason: r.reason,
            }),
        )
        .await
    }

    async fn cluster_set_role(
        &self,
        req: Request<pb::ClusterSetRoleRequest>,
    ) -> Result<Response<pb::ClusterInfo>, Status> {
        let r = req.into_inner();
        let c = self.resolve(&r.cluster)?;
        self.act(
            &c,
            pb::cluster_op::Op::SetRole(pb::SetMemberRole {
                org: r.org,
                role: r.role,
            }),
        )
        .await
    }

    async fn cluster_transfer_convener(
        &self,
        req: Request<pb::ClusterMemberRequest>,
    ) -> Result<Response<pb::ClusterInfo>, Status> {
        let r = req.into_inner();
        let c = self.resolve(&r.cluster)?;
        self.act(
            &c,
            pb::cluster_op::Op::Transfer(pb::TransferConvener { to: r.org }),
        )
        .await
    }

    async fn cluster_list(
        &self,
        _req: Request<pb::ClusterListRequest>,
    ) -> Result<Response<pb::ClusterListResponse>, Status> {
        let mut clusters: Vec<pb::ClusterInfo> = self
            .state
            .clusters
            .iter()
            .map(|c| cluster_info(&c, self.state.org()))
            .collect();
        clusters.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Response::new(pb::ClusterListResponse { clusters }))
    }

    async fn cluster_show(
        &self,
        req: Request<pb::ClusterRef>,
    ) -> Result<Response<pb::ClusterInfo>, Status> {
        let c = self.cluster_ref(req)?;
        Ok(Response::new(cluster_info(&c, self.state.org())))
    }

    async fn cluster_log_entries(
        &self,
        req: Request<pb::ClusterRef>,
    ) -> Result<Response<pb::ClusterLogEntriesResponse>, Status> {
        let c = self.cluster_ref(req)?;
        let entries = self.state.log_lines(&c).map_err(replication_status)?;
        Ok(Response::new(pb::ClusterLogEntriesResponse { entries }))
    }

    async fn explain(
        &self,
        req: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        let user = Caller::user(&req)?;
        let r = req.into_inner();
        let st = &self.state;
        let content = if !r.message_id.is_empty() {
            crate::feed::find_content(&st.store, &r.message_id)?.2
        } else if let Some(d) = r.draft {
            crate::outbound::draft(st, &user, d)?
        } else {
            return Err(Status::invalid_argument("give a message id or a draft"));
        };
        let recipients = crate::outbound::explain(st, &content, &r.to)
            .into_iter()
            .map(
                |crate::outbound::Explained {
                     decision: d,
                     functions,
                     mandatory,
                     path,
                 }| pb::RecipientExplanation {
                    functions,
                    path,
                    mandatory: mandatory.unwrap_or_default().to_string(),
                    org: d.org,
                    allowed: d.allowed,
                    rule: d.rule.to_string(),
                    reason: d.reason,
                    steps: d
                        .steps
                        .into_iter()
                        .map(|s| pb::RuleResult {
                            rule: s.rule.to_string(),
                            allowed: s.allowed,
                            reason: s.reason,
                        })
                        .collect(),
                },
            )
            .collect();
        Ok(Response::new(pb::ExplainResponse { recipients }))
    }

    async fn reload_policy(
        &self,
        _req: Request<pb::ReloadPolicyRequest>,
    ) -> Result<Response<pb::ReloadPolicyResponse>, Status> {
        let Some(handle) = self.state.router.policy() else {
            return Err(Status::failed_precondition(
                "this node has no policy handle",
            ));
        };
        handle.reload().map_err(|e| {
            Status::failed_precondition(format!("policy not reloaded, previous one kept: {e}"))
        })?;
        let current = handle.current();
        Ok(Response::new(pb::ReloadPolicyResponse {
            loaded: current.is_some(),
            policy_hash: current.as_ref().map(|p| p.hash()).unwrap_or_default(),
            policies: current.as_ref().map(|p| p.len() as u32).unwrap_or(0),
        }))
    }

    async fn audit_verify(
        &self,
        _req: Request<pb::AuditVerifyRequest>,
    ) -> Result<Response<pb::AuditVerifyResponse>, Status> {
        let r = self.state.store.verify_audit().map_err(internal)?;
        Ok(Response::new(r))
    }

    async fn metrics(
        &self,
        _req: Request<pb::MetricsRequest>,
    ) -> Result<Response<pb::MetricsResponse>, Status> {
        Ok(Response::new(pb::MetricsResponse {
            text: self.state.render_metrics(),
        }))
    }

    type AuditExportStream =
        Pin<Box<dyn Stream<Item = Result<pb::AuditRecord, Status>> + Send + 'static>>;

    async fn audit_export(
        &self,
        req: Request<pb::AuditExportRequest>,
    ) -> Result<Response<Self::AuditExportStream>, Status> {
        let r = req.into_inner();
        let records = self
            .state
            .store
            .export_audit(r.since_ms, r.until_ms)
            .map_err(internal)?;
        Ok(Response::new(Box::pin(tokio_stream::iter(
            records.into_iter().map(Ok),
        ))))
    }

    async fn rejections(
        &self,
        req: Request<pb::RejectionsRequest>,
    ) -> Result<Response<pb::RejectionsResponse>, Status> {
        let limit = req.into_inner().limit.clamp(1, 10_000) as usize;
        let rs = self.state.store.rejections(limit).map_err(internal)?;
        Ok(Response::new(pb::RejectionsResponse {
            rejections: rs
                .into_iter()
                .map(|r| pb::Rejection {
                    at_ms: r.at_ms,
                    from_peer: r.from_peer,
                    id: r.id,
                    reason: r.reason,
                })
                .collect(),
        }))
    }

    async fn token_create(
        &self,
        req: Request<pb::TokenCreateRequest>,
    ) -> Result<Response<pb::TokenCreateResponse>, Status> {
        let operator = Caller::user(&req)?;
        let r = req.into_inner();
        let role: UserRole = r
            .role
            .parse()
            .map_err(|e: crate::pki::PkiError| Status::invalid_argument(e.to_string()))?;
        let ttl_ms = if r.ttl_ms == 0 {
            tokens::DEFAULT_TTL_MS
        } else {
            r.ttl_ms
        };
        let (record, token) = tokens::create(
            &self.state.store,
            &r.user,
            role,
            &r.label,
            ttl_ms,
            &operator,
            crate::clock::now_ms(),
        )
        .await?;
        Ok(Response::new(pb::TokenCreateResponse {
            info: Some(token_info(&record)),
            token,
        }))
    }

    async fn token_list(
        &self,
        _req: Request<pb::TokenListRequest>,
    ) -> Result<Response<pb::TokenListResponse>, Status> {
        let list = tokens::list(&self.state.store)?;
        Ok(Response::new(pb::TokenListResponse {
            tokens: list.iter().map(token_info).collect(),
        }))
    }

    async fn token_revoke(
        &self,
        req: Request<pb::TokenRevokeRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        let operator = Caller::user(&req)?;
        let id = req.into_inner().id;
        let record =
            tokens::revoke(&self.state.store, &id, &operator, crate::clock::now_ms()).await?;
        Ok(Response::new(token_info(&record)))
    }

    type BundleExportStream =
        Pin<Box<dyn Stream<Item = Result<pb::BundleChunk, Status>> + Send + 'static>>;

    async fn bundle_export(
        &self,
        req: Request<pb::BundleExportRequest>,
    ) -> Result<Response<Self::BundleExportStream>, Status> {
        let packed = crate::offline::export(&self.state, req.get_ref()).await?;
        let mut summary = Some(packed.summary);
        let chunks: Vec<pb::BundleChunk> = packed
            .bytes
            .chunks(BUNDLE_CHUNK)
            .map(|c| pb::BundleChunk {
                data: c.to_vec(),
                summary: summary.take(),
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(
            chunks.into_iter().map(Ok),
        ))))
    }

    async fn bundle_import(
        &self,
        req: Request<tonic::Streaming<pb::BundleChunk>>,
    ) -> Result<Response<pb::BundleImportResponse>, Status> {
        let mut chunks = req.into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = chunks.message().await? {
            if bytes.len() + chunk.data.len() > crate::offline::MAX_BYTES {
                return Err(Status::invalid_argument(format!(
                    "the bundle is larger than the {} MiB a node reads: not a bundle this version wrote",
                    crate::offline::MAX_BYTES >> 20
                )));
            }
            bytes.extend_from_slice(&chunk.data);
        }
        Ok(Response::new(
            crate::offline::import(&self.state, &bytes).await?,
        ))
    }
}

/// Bytes of a bundle file per streamed chunk (well under any message size limit).
const BUNDLE_CHUNK: usize = 1 << 20;

impl Api {
    fn cluster_ref(&self, req: Request<pb::ClusterRef>) -> Result<Arc<ClusterState>, Status> {
        self.resolve(&req.into_inner().cluster)
    }

    /// A cluster by id or unambiguous name, as a gRPC error if there is none.
    fn resolve(&self, name: &str) -> Result<Arc<ClusterState>, Status> {
        Ok(self.state.resolve_cluster(name)?)
    }

    /// Carry out an operation on `c` as this organisation.
    async fn act(
        &self,
        c: &ClusterState,
        op: pb::cluster_op::Op,
    ) -> Result<Response<pb::ClusterInfo>, Status> {
        let state = self
            .state
            .act(&c.id, c.head_hash.clone(), op)
            .await
            .map_err(replication_status)?;
        Ok(Response::new(cluster_info(&state, self.state.org())))
    }
}
