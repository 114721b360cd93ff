//! Answers about presence, the same over gRPC and NATS request/reply.

use herald_domain::subject::UserId;
use herald_nats::presence::Follower;
use herald_proto::v1::presence_server::Presence;
use herald_proto::v1::{
    GetPresenceRequest, GetPresenceResponse, StatsRequest, StatsResponse, UserPresence,
};
use tonic::{Request, Response, Status};

use crate::metrics::{Api, Metrics};

/// The `Presence` service over a follower's state.
#[derive(Clone)]
pub struct PresenceService {
    pub follower: Follower,
    pub max_users: usize,
    pub metrics: Metrics,
}

impl PresenceService {
    /// Looks up each user in `request`, or says which id is unusable.
    pub fn get_presence(
        &self,
        api: Api,
        request: GetPresenceRequest,
    ) -> Result<GetPresenceResponse, Status> {
        let started = std::time::Instant::now();
        let result = self.lookup(request);
        self.metrics.request(api, result.is_ok());
        self.metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        result
    }

    pub fn stats(&self, api: Api) -> StatsResponse {
        self.metrics.request(api, true);
        let directory = self.follower.directory();
        StatsResponse {
            connections: directory.connections(),
            users_online: directory.users_online(),
        }
    }

    fn lookup(&self, request: GetPresenceRequest) -> Result<GetPresenceResponse, Status> {
        let ids = request.user_ids;
        if ids.len() > self.max_users {
            let message = format!(
                "{} users in one request; the limit is {}",
                ids.len(),
                self.max_users
            );
            return Err(Status::invalid_argument(message));
        }
        for (index, id) in ids.iter().enumerate() {
            UserId::parse(id)
                .map_err(|e| Status::invalid_argument(format!("user_ids[{index}]: {e}")))?;
        }
        let directory = self.follower.directory();
        let users = ids
            .into_iter()
            .map(|user_id| {
                let found = directory.lookup(&user_id);
                UserPresence {
                    user_id,
                    online: found.connections > 0,
                    connections: found.connections,
                    nodes: found.nodes,
                    regions: found.regions,
                }
            })
            .collect();
        Ok(GetPresenceResponse { users })
    }
}

#[tonic::async_trait]
impl Presence for PresenceService {
    async fn get_presence(
        &self,
        request: Request<GetPresenceRequest>,
    ) -> Result<Response<GetPresenceResponse>, Status> {
        PresenceService::get_presence(self, Api::Grpc, request.into_inner()).map(Response::new)
    }

    async fn stats(&self, _: Request<StatsRequest>) -> Result<Response<StatsResponse>, Status> {
        Ok(Response::new(PresenceService::stats(self, Api::Grpc)))
    }
}
