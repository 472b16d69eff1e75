//! The keyed path: read the body, claim, run the handler while renewing its claim, record,
//! or answer from the store.
//!
//! Everything here runs inside the response future of [`crate::Idempotency`], which hands
//! it to a task of its own if it is dropped unfinished, so it is never cut short by a
//! client going away.
//!
//! The protocol's rules are idem-core's, not this module's: the decision table
//! ([`Store::claim`]), which statuses record and which release ([`StatusRules`]), the
//! `Retry-After` of an answer "in progress" ([`reply::retry_after`]), whether a waiting
//! request keeps waiting ([`reply::keep_waiting`]), and what an execution that lost its
//! claim answers ([`reply::superseded`]). This module does the I/O around them.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use futures::FutureExt;
use http::request::Parts;
use http::{Request, Response};
use http_body::Body as HttpBody;
use idem_core::reply::Disposition;
use idem_core::{Claim, ClaimRequest, Decision, Fenced, Fingerprint, Store};
use idem_once::LeaseState;
use idem_once::renew::{Renewing, while_renewing};
use tower::Service;

use crate::answer::{self, Answer, expiring, in_progress, rejected, replay, store_failed};
use crate::atomic::{Commit, CommitState, NothingCommitted};
use crate::body::{Body, BoxError, ReadError, ResponseRead, full, read_bounded, read_to_keep};
use crate::config::ConflictPolicy;
use crate::keyed::{Keyed, count_replay, superseded};
use crate::problem::kinds;
use crate::settle::{Ran, settle};
use crate::{ClaimContext, CompletedInTransaction, Outcome, observe};

/// Processes one keyed request to its end and marks the answer.
pub(crate) async fn run<S, St, ReqBody, ResBody>(
    keyed: Keyed<St>,
    inner: S,
    parts: Parts,
    body: ReqBody,
) -> Result<Response<Body>, S::Error>
where
    S: Service<Request<Body>, Response = Response<ResBody>>,
    St: Store + 'static,
    ReqBody: HttpBody<Data = Bytes>,
    ReqBody::Error: Into<BoxError>,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    match decide(&keyed, inner, parts, body).await {
        Ok((mut response, outcome)) => {
            let key = Some((&keyed.id.key, &keyed.config.key_header));
            answer::finish(&mut response, outcome, key, Some(&keyed.span), keyed.started);
            Ok(response)
        }
        Err(error) => {
            // The inner service failed without a response; its claim was given back.
            observe::answered(Some(&keyed.span), Outcome::Released, None, keyed.started);
            Err(error)
        }
    }
}

async fn decide<S, St, ReqBody, ResBody>(
    keyed: &Keyed<St>,
    inner: S,
    parts: Parts,
    body: ReqBody,
) -> Result<Answer, S::Error>
where
    S: Service<Request<Body>, Response = Response<ResBody>>,
    St: Store + 'static,
    ReqBody: HttpBody<Data = Bytes>,
    ReqBody::Error: Into<BoxError>,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let config = &keyed.config;
    let path_and_query = parts.uri.path_and_query().map_or("/", |path| path.as_str());
    let mut fingerprint = Fingerprint::builder(parts.method.as_str(), path_and_query);
    let body = match read_bounded(body, config.request_body_bytes_max, |chunk| fingerprint.update(chunk)).await {
        Ok(body) => body,
        Err(ReadError::TooLarge { bytes_max }) => return Ok(rejected(config, kinds::body_too_large(bytes_max))),
        Err(ReadError::Broken(error)) => return Ok(rejected(config, kinds::body_unreadable(error))),
    };
    let request = ClaimRequest {
        holder: keyed.holder.clone(),
        ..keyed.route.fingerprint.claim_request(&parts, &body, fingerprint.finish())
    };

    let now = config.clock.now();
    let policy = &keyed.route.policy;
    let mut decision = match observe::store("claim", keyed.store.claim(&keyed.id, &request, now, policy).await) {
        Ok(decision) => decision,
        Err(error) => return Ok(store_failed(config, &error)),
    };
    if let (Decision::Conflict { .. }, ConflictPolicy::Wait(wait_max)) = (&decision, config.conflict) {
        decision = match crate::wait::wait_for_turn(
            (&*keyed.store, &keyed.id, policy),
            &*config.clock,
            &request,
            wait_max,
            decision,
        )
        .await
        {
            Ok(decision) => decision,
            Err(error) => return Ok(store_failed(config, &error)),
        };
    }
    match decision {
        Decision::Execute(claim) => execute(keyed, inner, parts, body, &request, claim).await,
        Decision::TakeOver { claim, stale } => {
            // The earlier holder is presumed crashed; in separate mode its side effect may
            // have happened, which is why this is worth a warning.
            tracing::warn!(key = keyed.id.key.as_str(), ?stale, fence = ?claim.fence, "taking over a lapsed claim");
            execute(keyed, inner, parts, body, &request, claim).await
        }
        Decision::Replay { response, expires_at } => {
            let answer = expiring(replay(config, response), expires_at);
            if config.count_replays {
                count_replay(keyed, now).await;
            }
            Ok((answer, Outcome::Replayed))
        }
        Decision::Conflict { retry_after: lease_left, expires_at, holder } => {
            Ok((expiring(in_progress(config, lease_left, &holder), expires_at), Outcome::Conflict))
        }
        Decision::Mismatch { expires_at } => {
            Ok((expiring(config.answer(kinds::key_reused()), expires_at), Outcome::Mismatch))
        }
        Decision::Gone { expires_at } => Ok((expiring(config.answer(kinds::key_expired()), expires_at), Outcome::Gone)),
    }
}

/// Runs the handler under `claim` while renewing the claim, then records, releases or, if
/// the claim was lost, answers what the store holds ([`reply::superseded`]).
async fn execute<S, St, ResBody>(
    keyed: &Keyed<St>,
    inner: S,
    parts: Parts,
    body: Bytes,
    fingerprint: &ClaimRequest,
    claim: Claim,
) -> Result<Answer, S::Error>
where
    S: Service<Request<Body>, Response = Response<ResBody>>,
    St: Store + 'static,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let handed = hand_over(keyed, parts, body, &claim);
    let renewing = Renewing {
        store: &*keyed.store,
        id: &keyed.id,
        fence: claim.fence,
        policy: &keyed.route.policy,
        clock: &*keyed.config.clock,
        lease: &handed.lease,
        execution_max: keyed.route.execution_max,
    };
    let ran = while_renewing(renewing, &(), run_handler(keyed, inner, handed.request, &handed.commit)).await;

    // A completion the store applied under this claim's fence stands even if a renewal was
    // refused meanwhile. Otherwise a refused renewal means another request holds or
    // completed the claim, and this execution's completion or release would be refused too
    // (G3): its own response must not be answered (G2).
    let committed = matches!(ran, Ran::CompletedInTransaction(Fenced::Applied, _));
    if !committed && handed.lease.is_lost() {
        tracing::warn!(
            key = keyed.id.key.as_str(),
            fence = ?claim.fence,
            "the handler finished after its claim was taken over; answering what the store holds instead of its response"
        );
        return Ok(superseded(keyed, fingerprint).await);
    }
    settle(keyed, fingerprint, claim, ran, &handed.handed_now).await
}

/// The request as the handler gets it, with its claim's context, and the state the layer
/// shares with that context: the lease, what `Claim::commit` did, and the `now` handed out.
struct Handed {
    request: Request<Body>,
    lease: Arc<LeaseState>,
    commit: Arc<CommitState>,
    handed_now: Arc<AtomicU64>,
}

fn hand_over<St: Store + 'static>(keyed: &Keyed<St>, parts: Parts, body: Bytes, claim: &Claim) -> Handed {
    let lease = Arc::new(LeaseState::new(claim.lease_expires_at));
    let commit = Arc::new(CommitState::default());
    let context = ClaimContext {
        id: keyed.id.clone(),
        fence: claim.fence,
        lease: Arc::clone(&lease),
        commit: Arc::clone(&commit),
        config: Arc::clone(&keyed.config),
        route: Arc::clone(&keyed.route),
        handed_now: Arc::default(),
    };
    let handed_now = Arc::clone(&context.handed_now);
    let mut request = Request::from_parts(parts, full(body));
    request.extensions_mut().insert(context);
    #[cfg(feature = "axum")]
    request.extensions_mut().insert(crate::atomic::ClaimStore(Arc::clone(&keyed.store)));
    Handed { request, lease, commit, handed_now }
}

/// Calls the handler (catching a panic) and, for a response to record, reads its body.
/// Runs inside [`while_renewing`], so a slow handler or a slow body keeps its claim.
async fn run_handler<S, St, ResBody>(
    keyed: &Keyed<St>,
    mut inner: S,
    request: Request<Body>,
    commit: &CommitState,
) -> Ran<S::Error>
where
    S: Service<Request<Body>, Response = Response<ResBody>>,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let response = match AssertUnwindSafe(async move { inner.call(request).await }).catch_unwind().await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => return Ran::Failed(error),
        Err(_panic) => return Ran::Panicked,
    };
    let (config, key) = (&keyed.config, keyed.id.key.as_str());
    if let Some(CompletedInTransaction(fenced)) = response.extensions().get::<CompletedInTransaction>().copied() {
        return Ran::CompletedInTransaction(fenced, response.map(crate::body::boxed));
    }
    if response.extensions().get::<NothingCommitted>().is_some() {
        // `Claim::commit` committed nothing: the claim is given back whatever the status
        // rules say (a recorded 500 would answer every retry for writes that never landed).
        return Ran::Release(response.map(crate::body::boxed));
    }
    match commit.get() {
        Commit::NotCalled => {}
        bypassed => return Ran::Bypassed(bypassed),
    }
    if keyed.route.status_rules.disposition(response.status().as_u16()) == Disposition::Release {
        return Ran::Release(response.map(crate::body::boxed));
    }
    let (head, response_body) = response.into_parts();
    match read_to_keep(crate::body::boxed(response_body), config.response_body_bytes_max).await {
        ResponseRead::Whole(body) => Ran::Record(head, body),
        ResponseRead::NotKept { why, body } => Ran::NotKept(head, body, why),
        ResponseRead::Broken(error) => {
            // The head said the handler succeeded (or refused with a 4xx), so its side
            // effect may have happened: releasing would let a retry run it again (G1).
            // The failure is recorded instead, and every retry gets the same answer (G2).
            tracing::error!(key, %error, "handler's response body failed; recording a problem instead");
            let problem = kinds::handler_failed("the handler's response body failed after its status was sent");
            Ran::Unrecordable(problem, Outcome::Executed)
        }
    }
}
