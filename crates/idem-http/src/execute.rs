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

use bytes::Bytes;
use futures::FutureExt;
use http::request::Parts;
use http::{Request, Response};
use http_body::Body as HttpBody;
use idem_core::reply::{self, Disposition, Superseded};
use idem_core::{
    Claim, ClaimRequest, Decision, Fenced, Fingerprint, Holder, RecordId, Store, StoreError, StoredResponse, Timestamp,
};
use tokio::time::Instant;
use tower::Service;
use tracing::Span;

use crate::answer::{self, Answer, expiring, in_progress, mark_expiry, rejected, replay, store_failed};
use crate::atomic::{Commit, CommitState, NothingCommitted};
use crate::body::{Body, BoxError, NotKept, ReadError, ResponseRead, full, read_bounded, read_to_keep};
use crate::config::{Config, ConflictPolicy};
use crate::headers::IDEMPOTENCY_EXPIRES;
use crate::problem::kinds;
use crate::route::Route;
use crate::{ClaimContext, CompletedInTransaction, Outcome, Problem, observe};
use idem_once::LeaseState;
use idem_once::record::{self, Completion, Released};
use idem_once::renew::{Renewing, while_renewing};

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

/// Counts one replay in the record, for operators; best effort (SPEC: a failing store never
/// stops a replay), so a failure is only logged and counted by [`observe::store`].
async fn count_replay<St: Store>(keyed: &Keyed<St>, now: Timestamp) {
    if let Err(error) = observe::store("count_replay", keyed.store.count_replay(&keyed.id, now).await) {
        tracing::debug!(key = keyed.id.key.as_str(), %error, "could not count a replay");
    }
}

/// What became of the handler, read while its claim was being renewed.
enum Ran<E> {
    /// The inner service returned an error.
    Failed(E),
    /// The handler panicked (caught).
    Panicked,
    /// The handler completed the record in its own transaction (atomic mode); the store's answer.
    CompletedInTransaction(Fenced, Response<Body>),
    /// The handler called `Claim::commit` but returned a response without the commit's
    /// marker: what the commit did.
    Bypassed(Commit),
    /// A response that completed the operation but cannot be recorded (too long, or with
    /// trailers): its head, and a body that yields all of it.
    NotKept(http::response::Parts, Body, NotKept),
    /// A status whose claim is given back ([`Disposition::Release`]); its body is not read.
    Release(Response<Body>),
    /// A response to record, with its whole body.
    Record(http::response::Parts, Bytes),
    /// A response that cannot be recorded; this problem is recorded in its place.
    Unrecordable(Problem, Outcome),
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
    let config = &keyed.config;
    let lease = Arc::new(LeaseState::new(claim.lease_expires_at));
    let commit = Arc::new(CommitState::default());
    let context = ClaimContext {
        id: keyed.id.clone(),
        fence: claim.fence,
        lease: Arc::clone(&lease),
        commit: Arc::clone(&commit),
        config: Arc::clone(config),
        route: Arc::clone(&keyed.route),
        handed_now: Arc::default(),
    };
    let handed_now = Arc::clone(&context.handed_now);
    let mut request = Request::from_parts(parts, full(body));
    request.extensions_mut().insert(context);
    #[cfg(feature = "axum")]
    request.extensions_mut().insert(crate::atomic::ClaimStore(Arc::clone(&keyed.store)));

    let renewing = Renewing {
        store: &*keyed.store,
        id: &keyed.id,
        fence: claim.fence,
        policy: &keyed.route.policy,
        clock: &*config.clock,
        lease: &lease,
        execution_max: keyed.route.execution_max,
    };
    let ran = while_renewing(renewing, &(), run_handler(keyed, inner, request, &commit)).await;

    if let Ran::CompletedInTransaction(Fenced::Applied, mut response) = ran {
        // The store recorded this very response under this claim's fence: it is the answer.
        // `Claim::commit` marked its expiry; a handler that completed by hand did not, so
        // the layer reads the record back: every replay states the record's `expires_at`,
        // and the first answer must state the same (SPEC "Key lifecycle"). Only if that read
        // fails does it state the retention from now (a second later at most, rounded).
        if !response.headers().contains_key(IDEMPOTENCY_EXPIRES) {
            let expires_at = match keyed.store.get(&keyed.id).await {
                Ok(Some(record)) if record.fence == claim.fence => record.expires_at,
                // Unreadable: the `now` the handler was handed (ClaimContext::now), which it
                // completed with, else the layer's now.
                _ => {
                    let handed = handed_now.load(std::sync::atomic::Ordering::SeqCst);
                    let now = if handed == 0 { config.clock.now() } else { Timestamp::from_unix_ms(handed) };
                    now.saturating_add(keyed.route.policy.retention())
                }
            };
            mark_expiry(response.headers_mut(), expires_at);
        }
        return Ok((response, Outcome::Executed));
    }
    if lease.is_lost() {
        // A renewal was refused: another request holds or completed the claim, and this
        // execution's completion or release would be refused too (G3). Its own response
        // must not be answered (G2).
        tracing::warn!(
            key = keyed.id.key.as_str(),
            fence = ?claim.fence,
            "the handler finished after its claim was taken over; answering what the store holds instead of its response"
        );
        return Ok(superseded(keyed, fingerprint).await);
    }
    match ran {
        Ran::Failed(error) => {
            // The error goes back to the server as is; the claim is given back so a retry may run.
            let _ = release(keyed, claim).await;
            Err(error)
        }
        Ran::Panicked => {
            // Released, as for a 5xx: in atomic mode the panic dropped the handler's
            // transaction, so nothing was committed. In separate mode a side effect made
            // before the panic can run again on retry (documented on `Idempotency`).
            tracing::error!(key = keyed.id.key.as_str(), "handler panicked; releasing the claim");
            Ok(match release(keyed, claim).await {
                Released::Stale | Released::CompletedByThisClaim => superseded(keyed, fingerprint).await,
                Released::Yes | Released::Failed => {
                    (config.answer(kinds::handler_failed("the handler failed")), Outcome::Released)
                }
            })
        }
        Ran::CompletedInTransaction(Fenced::Applied, _) => unreachable!("answered above"),
        Ran::Bypassed(commit) => {
            // The handler called `Claim::commit`, then answered another response: the
            // store's answer stands, this response is neither recorded nor answered (G2).
            tracing::error!(
                key = keyed.id.key.as_str(),
                ?commit,
                "the handler called Claim::commit but returned another response; answering what the store holds instead"
            );
            if commit != Commit::NothingCommitted {
                return Ok(superseded(keyed, fingerprint).await);
            }
            // Nothing was committed: give the claim back, as for a 5xx, so a retry runs again.
            Ok(match release(keyed, claim).await {
                Released::Stale | Released::CompletedByThisClaim => superseded(keyed, fingerprint).await,
                Released::Yes | Released::Failed => {
                    let detail = "the handler's commit committed nothing, and it answered another response";
                    (config.answer(kinds::handler_failed(detail)), Outcome::Released)
                }
            })
        }
        Ran::CompletedInTransaction(Fenced::Refused(refusal), _) => {
            tracing::warn!(key = keyed.id.key.as_str(), %refusal, "handler's own completion was refused; its claim was taken over");
            Ok(superseded(keyed, fingerprint).await)
        }
        Ran::Release(response) => Ok(match release(keyed, claim).await {
            Released::Stale | Released::CompletedByThisClaim => superseded(keyed, fingerprint).await,
            Released::Yes | Released::Failed => (response, Outcome::Released),
        }),
        Ran::Unrecordable(problem, outcome) => Ok(record_problem(keyed, fingerprint, claim, problem, outcome).await),
        Ran::NotKept(head, body, why) => Ok(not_kept(keyed, fingerprint, claim, head, body, why).await),
        Ran::Record(head, body) => {
            let stored = config.filter.stored_response(head.status.as_u16(), &head.headers, body.clone());
            let response = Response::from_parts(head, full(body));
            Ok(match complete(keyed, claim, stored).await {
                Ok(Completion::Applied { expires_at }) => (expiring(response, expires_at), Outcome::Executed),
                Ok(Completion::Refused(refusal)) => {
                    tracing::warn!(key = keyed.id.key.as_str(), %refusal, "completion refused; this execution's claim was taken over");
                    superseded(keyed, fingerprint).await
                }
                Err(error) => {
                    // Answering the handler's response is the safer choice: the client has its
                    // answer and need not retry. A 503 would invite a retry that, once the lease
                    // lapses, runs the handler again (separate mode).
                    tracing::error!(key = keyed.id.key.as_str(), %error, "could not record the response; answering it unrecorded");
                    (response, Outcome::Unrecorded)
                }
            })
        }
    }
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

/// Completes the record for a response that cannot be kept (longer than the recording
/// limit, or with trailers) and answers that response itself, whole, to this client.
///
/// SPEC "HTTP behaviour": the first client gets its real answer, the operation never runs
/// again for the key, and retries get a problem saying it completed and its response was
/// not kept. What is recorded is that problem ([`kinds::response_not_kept`]), with the
/// original status (the operation's result: a client that retries must not take it for a
/// failure and try again) and the original `Location`. The record is completed before
/// the rest of the body streams out, so a client that goes away meanwhile loses only its
/// copy of the body.
async fn not_kept<St: Store>(
    keyed: &Keyed<St>,
    fingerprint: &ClaimRequest,
    claim: Claim,
    head: http::response::Parts,
    body: Body,
    why: NotKept,
) -> Answer {
    let config = &keyed.config;
    tracing::warn!(
        key = keyed.id.key.as_str(),
        ?why,
        status = head.status.as_u16(),
        "the handler's response cannot be kept for replay; answering it and recording a response-not-kept problem"
    );
    let stored = crate::atomic::not_kept_record(config, head.status, &head.headers, why);
    match complete(keyed, claim, stored).await {
        Ok(Completion::Applied { expires_at }) => {
            (expiring(Response::from_parts(head, body), expires_at), Outcome::ResponseTooLarge)
        }
        Ok(Completion::Refused(refusal)) => {
            tracing::warn!(key = keyed.id.key.as_str(), %refusal, "completion refused; this execution's claim was taken over");
            superseded(keyed, fingerprint).await
        }
        Err(error) => {
            tracing::error!(key = keyed.id.key.as_str(), %error, "could not record that the response was not kept; answering it unrecorded");
            (Response::from_parts(head, body), Outcome::Unrecorded)
        }
    }
}

/// Records `problem` in place of a response the layer cannot record (too long, or a body
/// that broke after its head). Recording keeps retries from running the handler again
/// (G1); answering the same problem keeps every answer for the key the same (G2). The
/// handler's own response is lost, loudly.
async fn record_problem<St: Store>(
    keyed: &Keyed<St>,
    fingerprint: &ClaimRequest,
    claim: Claim,
    problem: Problem,
    outcome: Outcome,
) -> Answer {
    let response = keyed.config.answer(problem);
    let (head, problem_body) = response.into_parts();
    let body =
        read_bounded(problem_body, usize::MAX, |_| {}).await.expect("a problem body is in memory and cannot fail");
    let stored = keyed.config.filter.stored_response(head.status.as_u16(), &head.headers, body.clone());
    let response = Response::from_parts(head, full(body));
    match complete(keyed, claim, stored).await {
        Ok(Completion::Applied { expires_at }) => (expiring(response, expires_at), outcome),
        Ok(Completion::Refused(_)) => superseded(keyed, fingerprint).await,
        Err(error) => {
            tracing::error!(key = keyed.id.key.as_str(), %error, "could not record the problem in place of the response");
            (response, Outcome::Unrecorded)
        }
    }
}

/// Records `stored` for `claim`, with idem-once's bounded retries; what the store
/// answered, with the completed record's expiry.
async fn complete<St: Store>(
    keyed: &Keyed<St>,
    claim: Claim,
    stored: StoredResponse,
) -> Result<Completion, StoreError> {
    let (store, clock, policy) = (&*keyed.store, &*keyed.config.clock, &keyed.route.policy);
    record::complete_expiring(store, &keyed.id, claim.fence, stored, clock, policy).await
}

/// Gives the claim back; what the store answered.
async fn release<St: Store>(keyed: &Keyed<St>, claim: Claim) -> Released {
    record::release(&*keyed.store, &keyed.id, claim.fence).await
}

/// This execution lost its claim, so its response must not be answered (G2): answer what
/// the store holds now, as [`reply::superseded`] says: the recorded response, a 409 while
/// another claim is in flight (or none is), or a 422 if the key now belongs to another request.
async fn superseded<St: Store>(keyed: &Keyed<St>, request: &ClaimRequest) -> Answer {
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
