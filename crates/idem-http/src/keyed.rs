//! One keyed request and what the layer asks the store about its key: complete, release,
//! count a replay, and read what it holds when this execution lost its claim.

use std::sync::Arc;

use idem_core::reply::{self, Superseded};
use idem_core::{Claim, ClaimRequest, Holder, RecordId, Store, StoreError, StoredResponse, Timestamp};
use idem_once::record::{self, Completion, Released};
use tokio::time::Instant;
use tracing::Span;

use crate::answer::{Answer, expiring, in_progress, replay, store_failed};
use crate::config::Config;
use crate::problem::kinds;
use crate::route::Route;
use crate::{Outcome, observe};

/// What one keyed request is about: configuration, store and record id.
pub(crate) struct Keyed<St> {
    pub(crate) config: Arc<Config>,
    /// The settings of the request's route.
    pub(crate) route: Arc<Route>,
    /// Who would hold the claim.
    pub(crate) holder: Holder,
    pub(crate) store: Arc<St>,
    pub(crate) id: RecordId,
    /// The request's span ([`observe::request_span`]); the work runs inside it.
    pub(crate) span: Span,
    /// When the layer received the request.
    pub(crate) started: Instant,
}

/// Counts one replay in the record, for operators; best effort (SPEC: a failing store never
/// stops a replay), so a failure is only logged and counted by [`observe::store`].
pub(crate) async fn count_replay<St: Store>(keyed: &Keyed<St>, now: Timestamp) {
    if let Err(error) = observe::store("count_replay", keyed.store.count_replay(&keyed.id, now).await) {
        tracing::debug!(key = keyed.id.key.as_str(), %error, "could not count a replay");
    }
}

/// Records `stored` for `claim`, with idem-once's bounded retries; what the store
/// answered, with the completed record's expiry.
pub(crate) async fn complete<St: Store>(
    keyed: &Keyed<St>,
    claim: Claim,
    stored: StoredResponse,
) -> Result<Completion, StoreError> {
    let (store, clock, policy) = (&*keyed.store, &*keyed.config.clock, &keyed.route.policy);
    record::complete_expiring(store, &keyed.id, claim.fence, stored, clock, policy).await
}

/// Gives the claim back; what the store answered.
pub(crate) async fn release<St: Store>(keyed: &Keyed<St>, claim: Claim) -> Released {
    record::release(&*keyed.store, &keyed.id, claim.fence).await
}

/// This execution lost its claim, so its response must not be answered (G2): answer what
/// the store holds now, as [`reply::superseded`] says: the recorded response, a 409 while
/// another claim is in flight (or none is), or a 422 if the key now belongs to another request.
pub(crate) async fn superseded<St: Store>(keyed: &Keyed<St>, request: &ClaimRequest) -> Answer {
    let config = &keyed.config;
    let response = match observe::store("get", keyed.store.get(&keyed.id).await) {
        Err(error) => store_failed(config, &error).0,
        Ok(record) => match reply::superseded(record.as_ref(), request, config.clock.now()) {
            Superseded::Replay { response, expires_at } => expiring(replay(config, response), expires_at),
            Superseded::InProgress { lease_left, expires_at: None, holder } => in_progress(config, lease_left, &holder),
            Superseded::InProgress { lease_left, expires_at: Some(expires_at), holder } => {
                expiring(in_progress(config, lease_left, &holder), expires_at)
            }
            Superseded::Mismatch { expires_at } => expiring(config.answer(kinds::key_reused()), expires_at),
            Superseded::Gone { expires_at } => expiring(config.answer(kinds::key_expired()), expires_at),
        },
    };
    (response, Outcome::Superseded)
}
