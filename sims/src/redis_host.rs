//! The store host of the `redis-lua` scenarios: idem-redis's own `store.lua` (or the
//! variant's planted copy of it) run by [`crate::lua`] against a [`Keyspace`], on the
//! calls idem-redis's [`Calls`] build, its answers read by idem-redis's own decoding. What
//! stands in for Redis is the keyspace and the host's protocol; see docs/sims.md.
//!
//! The checker's store events are derived from the keyspace and the script's answers: the
//! record before (read and decoded as `RedisStore::get` reads it), the fence a claim was
//! answered with and whether the record after holds it in flight, whether a fenced
//! operation was answered as applied.

use idem_core::{
    ClaimRequest, Decision, Fence, Fenced, Limits, Policy, Record, RecordId, RecordState, Renewal, StoreError,
    StoredResponse, Timestamp,
};
use idem_redis::script::{self, Answer, Call, Calls, Purge};
use idem_redis::{FenceSeed, RedisOptions};
use idem_server::domain::Payment;

use crate::Variant;
use crate::clock::{EPOCH_MS, sim_ms};
use crate::history::{Held, Kind, Recorder, StoreEvent, StoreOp};
use crate::keyspace::Keyspace;
use crate::store_protocol::{Answer as HostAnswer, Request, decision_text, held};

/// The rule `lua-drops-fence-check` plants wrong: `transition::check_fence`'s "the fence
/// presented is the record's", in the script.
const FENCE_CHECK: &str = "if record.fence == fence then return nil end";

/// Redis as the store host runs it: the keyspace, the script and the calls.
#[derive(Debug, Clone)]
pub(crate) struct RedisHost {
    keyspace: Keyspace,
    calls: Calls,
    script: String,
}

impl RedisHost {
    /// A Redis with nothing in it, running the shipped script or the variant's planted one.
    /// Its fence counter is seeded from `TIME` (`FenceSeed::ServerClock`, the shipped
    /// default), which here is the simulated clock.
    pub(crate) fn new(variant: Variant) -> RedisHost {
        let limits = Limits::default();
        let options = RedisOptions::new("redis://store.sim:6379")
            .and_then(|options| options.prefix("idem-sim"))
            .expect("a valid URL and prefix")
            .records_max(limits.records_max)
            .stored_bytes_max(limits.stored_bytes_max)
            .fence_seed(FenceSeed::ServerClock);
        let script = match variant {
            Variant::LuaDropsFenceCheck => script::planted(FENCE_CHECK, "if true then return nil end"),
            _ => script::SCRIPT.to_owned(),
        };
        RedisHost { keyspace: Keyspace::default(), calls: Calls::new(&options), script }
    }

    /// The store host's clock: simulated time, unskewed (Redis's own clock).
    fn now_ms() -> u64 {
        EPOCH_MS + sim_ms()
    }

    fn eval(&mut self, call: &Call) -> Result<Answer, StoreError> {
        crate::lua::answer(crate::lua::eval(&self.script, &mut self.keyspace, call, Self::now_ms()))
    }

    /// `GET` of the record and idem-redis's decoding of it.
    pub(crate) fn record(&mut self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        self.keyspace.at(Self::now_ms());
        self.keyspace.get(&self.calls.record_key(id)).map(script::decode_record).transpose()
    }
}

/// The record before an operation, as the checker's events hold it (damage reads as absent
/// and shows in the answer).
fn before(redis: &mut RedisHost, id: &RecordId) -> Held {
    held(redis.record(id).ok().flatten().as_ref())
}

/// Whether `request` is one the script answers (the idempotency operations): the others
/// are the business tables'.
pub(crate) fn handles(request: &Request) -> bool {
    matches!(
        request,
        Request::Claim { .. }
            | Request::Complete { .. }
            | Request::CompleteWithPayment { .. }
            | Request::Release { .. }
            | Request::Renew { .. }
            | Request::Get { .. }
            | Request::CountReplay { .. }
            | Request::Purge { .. }
    )
}

/// Applies an idempotency operation ([`handles`]) through the script, in the store host's
/// lifetime `epoch`, and records its event. Returns the answer, and the payment of a
/// completion that applied: it commits with the completion, or not at all (the atomic
/// scenario), so the caller writes its row next.
pub(crate) fn apply(
    redis: &mut RedisHost,
    epoch: u32,
    replica: usize,
    request: Request,
    recorder: &Recorder,
) -> (HostAnswer, Option<Payment>) {
    let event = |op, id: &RecordId, presented, before| StoreEvent::new(replica, epoch, op, id, presented, before);
    let (answer, ev, payment) = match request {
        Request::Claim { id, request, now, policy } => {
            let ev = event(StoreOp::Claim, &id, None, before(redis, &id));
            let (answer, ev) = claim(redis, &id, request, now, &policy, ev);
            (answer, ev, None)
        }
        Request::Complete { id, fence, response, now, policy } => {
            let ev = event(StoreOp::Complete, &id, Some(fence), before(redis, &id));
            let call = redis.calls.complete(&id, fence, response.clone(), now, &policy);
            let (answer, ev) = fenced(redis, &call, fence, ev, Some(response));
            (answer, ev, None)
        }
        Request::CompleteWithPayment { id, fence, response, now, policy, payment } => {
            let ev = event(StoreOp::CompleteInTransaction, &id, Some(fence), before(redis, &id));
            let call = redis.calls.complete(&id, fence, response.clone(), now, &policy);
            let (answer, ev) = fenced(redis, &call, fence, ev, Some(response));
            (answer, ev, Some(payment))
        }
        Request::Release { id, fence } => {
            let ev = event(StoreOp::Release, &id, Some(fence), before(redis, &id));
            let call = redis.calls.release(&id, fence);
            let (answer, ev) = fenced(redis, &call, fence, ev, None);
            (answer, ev, None)
        }
        Request::Renew { id, fence, now, policy } => {
            let mut ev = event(StoreOp::Renew, &id, Some(fence), before(redis, &id));
            let renewed = redis.eval(&redis.calls.renew(&id, fence, now, &policy));
            let renewed = renewed.and_then(|answer| redis.calls.renewal(&answer, fence));
            ev.applied = matches!(renewed, Ok(Renewal::Renewed { .. }));
            ev.answer = match &renewed {
                Ok(renewal) => format!("{renewal:?}"),
                Err(error) => format!("refused: {error}"),
            };
            (renewed.map_or_else(HostAnswer::Refused, HostAnswer::Renewal), ev, None)
        }
        Request::Get { id } => {
            let record = redis.record(&id);
            let mut ev = event(StoreOp::Get, &id, None, held(record.as_ref().ok().and_then(Option::as_ref)));
            ev.answer = "read".to_owned();
            (record.map_or_else(HostAnswer::Refused, HostAnswer::Record), ev, None)
        }
        Request::CountReplay { id, now } => {
            let ev = event(StoreOp::CountReplay, &id, None, before(redis, &id));
            let (answer, ev) = count_replay(redis, &id, now, ev);
            (answer, ev, None)
        }
        Request::Purge { now, batch_max } => return (purge(redis, now, batch_max, recorder), None),
        other => {
            let detail = format!("the script answers no {}", other.name());
            return (HostAnswer::Refused(StoreError::Corrupt { detail }), None);
        }
    };
    let applied = ev.applied;
    recorder.record(Kind::Store(Box::new(ev)));
    (answer, payment.filter(|_| applied))
}

/// A claim through the script; its event says which fence it was answered with and whether
/// the record after holds that fence in flight.
fn claim(
    redis: &mut RedisHost,
    id: &RecordId,
    request: ClaimRequest,
    now: Timestamp,
    policy: &Policy,
    mut ev: StoreEvent,
) -> (HostAnswer, StoreEvent) {
    let decided = redis.eval(&redis.calls.claim(id, &request, now, policy));
    ev.request = Some(request);
    let decided = decided.and_then(|answer| redis.calls.decision(&answer, now));
    if let Ok(Decision::Execute(claim) | Decision::TakeOver { claim, .. }) = &decided {
        let after = redis.record(id).ok().flatten();
        let written = after
            .is_some_and(|record| record.fence == claim.fence && matches!(record.state, RecordState::InFlight { .. }));
        ev.issued = Some((claim.fence, written));
    }
    ev.answer = decided.as_ref().map_or_else(|error| format!("refused: {error}"), decision_text);
    (decided.map_or_else(HostAnswer::Refused, HostAnswer::Decision), ev)
}

/// One replay counted through the script (best effort).
fn count_replay(redis: &mut RedisHost, id: &RecordId, now: Timestamp, mut ev: StoreEvent) -> (HostAnswer, StoreEvent) {
    let counted = redis.eval(&redis.calls.count_replay(id, now));
    let counted = counted.and_then(|answer| redis.calls.counted(&answer));
    ev.applied = matches!(counted, Ok(true));
    ev.answer = match &counted {
        Ok(true) => "counted".to_owned(),
        Ok(false) => "not counted".to_owned(),
        Err(error) => format!("refused: {error}"),
    };
    (counted.map_or_else(HostAnswer::Refused, HostAnswer::Counted), ev)
}

/// A completion or release through the script; `response` is what a completion records.
fn fenced(
    redis: &mut RedisHost,
    call: &Call,
    fence: Fence,
    mut ev: StoreEvent,
    response: Option<StoredResponse>,
) -> (HostAnswer, StoreEvent) {
    let fenced = redis.eval(call).and_then(|answer| redis.calls.fenced(&answer, fence));
    ev.applied = matches!(fenced, Ok(Fenced::Applied));
    if ev.applied {
        ev.recorded = response;
    }
    ev.answer = match &fenced {
        Ok(fenced) => format!("{fenced:?}"),
        Err(error) => format!("refused: {error}"),
    };
    (fenced.map_or_else(HostAnswer::Refused, HostAnswer::Fenced), ev)
}

/// A purge as `RedisStore::purge_expired` runs it: scripts of at most
/// `PURGE_SCRIPT_BATCH`, until one forgets fewer than it asked for.
fn purge(redis: &mut RedisHost, now: Timestamp, batch_max: usize, recorder: &Recorder) -> HostAnswer {
    let mut purge = Purge::new(now, batch_max);
    while let Some(call) = purge.next(&redis.calls) {
        let answered = redis.eval(&call).and_then(|answer| purge.answered(&redis.calls, &answer));
        if let Err(error) = answered {
            return HostAnswer::Refused(error);
        }
    }
    if purge.purged() > 0 {
        recorder.record(Kind::Purged { count: purge.purged() });
    }
    HostAnswer::Count(purge.purged())
}
