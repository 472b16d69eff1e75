//! What the layer does once the handler has run under its claim: record its response,
//! give the claim back, record a problem in its place, or, when the claim was lost, answer
//! what the store holds (SPEC "HTTP behaviour", G1-G3).

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::Response;
use idem_core::{Claim, ClaimRequest, Fenced, Store, Timestamp};
use idem_once::record::{Completion, Released};

use crate::answer::{Answer, expiring, mark_expiry};
use crate::atomic::Commit;
use crate::body::{Body, NotKept, full, read_bounded};
use crate::headers::IDEMPOTENCY_EXPIRES;
use crate::keyed::{Keyed, complete, release, superseded};
use crate::problem::kinds;
use crate::{Outcome, Problem};

/// What became of the handler, read while its claim was being renewed.
pub(crate) enum Ran<E> {
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

/// The answer for what `ran` under `claim`, whose lease was not lost (or whose completion
/// the store applied): record, release, or answer what the store holds. `handed_now` is the
/// `now` the handler was handed, if any (0: none).
pub(crate) async fn settle<St: Store, E>(
    keyed: &Keyed<St>,
    fingerprint: &ClaimRequest,
    claim: Claim,
    ran: Ran<E>,
    handed_now: &AtomicU64,
) -> Result<Answer, E> {
    let config = &keyed.config;
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
        Ran::CompletedInTransaction(Fenced::Applied, response) => {
            // The store recorded this very response under this claim's fence: it is the answer.
            Ok((stating_expiry(keyed, &claim, response, handed_now).await, Outcome::Executed))
        }
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
        Ran::Record(head, body) => Ok(record_response(keyed, fingerprint, claim, head, body).await),
    }
}

/// Records the handler's response and answers it; if the store refuses (the claim was
/// taken over) answers what the store holds, and if it fails answers the response
/// unrecorded.
async fn record_response<St: Store>(
    keyed: &Keyed<St>,
    fingerprint: &ClaimRequest,
    claim: Claim,
    head: http::response::Parts,
    body: Bytes,
) -> Answer {
    let stored = keyed.config.filter.stored_response(head.status.as_u16(), &head.headers, body.clone());
    let response = Response::from_parts(head, full(body));
    match complete(keyed, claim, stored).await {
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
    }
}

/// A response the handler completed in its own transaction, stating its record's expiry.
/// `Claim::commit` marked it; a handler that completed by hand did not, so the layer reads
/// the record back: every replay states the record's `expires_at`, and the first answer
/// must state the same (SPEC "Key lifecycle"). Only if that read fails does it state the
/// retention from the `now` the handler was handed (`ClaimContext::now`, which it completed
/// with), else from the layer's now.
async fn stating_expiry<St: Store>(
    keyed: &Keyed<St>,
    claim: &Claim,
    mut response: Response<Body>,
    handed_now: &AtomicU64,
) -> Response<Body> {
    if response.headers().contains_key(IDEMPOTENCY_EXPIRES) {
        return response;
    }
    let expires_at = match keyed.store.get(&keyed.id).await {
        Ok(Some(record)) if record.fence == claim.fence => record.expires_at,
        _ => {
            let handed = handed_now.load(Ordering::SeqCst);
            let now = if handed == 0 { keyed.config.clock.now() } else { Timestamp::from_unix_ms(handed) };
            now.saturating_add(keyed.route.policy.retention())
        }
    };
    mark_expiry(response.headers_mut(), expires_at);
    response
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
