//! The script's calling convention, without Redis: what each operation sends (`KEYS` and
//! `ARGV`, as [`Call`]) and what its answer means ([`Calls::decision`] and the others).
//!
//! Pure on purpose: [`crate::RedisStore`] sends these calls over the wire, and the
//! deterministic simulation (`sims/`, scenario `redis-lua`) runs the same [`SCRIPT`] on
//! these same calls in an embedded Lua against a keyspace of its own, so the simulation
//! exercises this encoding and decoding too, not a copy of it.

use idem_core::step::{LimitReached, StepError};
use idem_core::usage;
use idem_core::{
    Claim, ClaimRequest, Decision, Fence, Fenced, Fingerprint, FingerprintVersion, Holder, Policy, Record, RecordId,
    RecordState, Refusal, Renewal, StoreError, StoredResponse, Timestamp,
};

use crate::codec::{Keys, corrupt, decimal, decode_response, encode_response, id_field};
use crate::options::{FenceSeed, RedisOptions};

/// The script every operation runs: idem-core's store step in Lua (see the crate docs).
pub const SCRIPT: &str = include_str!("store.lua");

/// Due records one purge script forgets at most: a longer purge runs several scripts, so
/// no script blocks Redis for long.
pub const PURGE_SCRIPT_BATCH: usize = 128;

/// One run of the script: its `KEYS` and its `ARGV` (the operation's name and the fence
/// seed first), as `EVALSHA` sends them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `KEYS`.
    pub keys: Vec<Vec<u8>>,
    /// `ARGV`.
    pub args: Vec<Vec<u8>>,
}

/// A script's answer, as the driver reads its array reply: its name, then its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer(pub Vec<Vec<u8>>);

/// The calls of one store (its prefix, limits and fence seed) and the meaning of their
/// answers.
#[derive(Debug, Clone)]
pub struct Calls {
    keys: Keys,
    options: RedisOptions,
}

fn text(value: u64) -> Vec<u8> {
    value.to_string().into_bytes()
}

/// Bytes a record costs (idem-core's [`usage::stored_bytes`]), which the script adds to
/// the usage totals.
fn bytes_of(id: &RecordId, state: RecordState) -> u64 {
    let record = Record {
        fingerprint: Fingerprint::new(FingerprintVersion::Bytes, [0; 32]),
        fence: Fence::FIRST,
        created_at: Timestamp::EPOCH,
        expires_at: Timestamp::EPOCH,
        state,
    };
    usage::stored_bytes(id, &record)
}

/// Bytes a tombstone costs beyond its id's: what the purge adds to a tombstone's id
/// bytes when it shrinks a completed record (the script knows the id, not the formula).
fn tombstone_bytes_beyond_id() -> u64 {
    let id = RecordId::new(idem_core::Principal::anonymous(), idem_core::Key::parse(b"k").expect("a valid key"));
    bytes_of(&id, RecordState::Tombstone) - id.stored_bytes() as u64
}

fn optional(at: Option<Timestamp>) -> Vec<u8> {
    at.map_or_else(Vec::new, |at| text(at.unix_ms()))
}

impl Calls {
    /// The calls of a store opened with `options`.
    #[must_use]
    pub fn new(options: &RedisOptions) -> Calls {
        Calls { keys: Keys::new(&options.prefix), options: options.clone() }
    }

    /// The key holding `id`'s record (what [`crate::RedisStore`]'s `get` reads; decode it
    /// with [`decode_record`]).
    #[must_use]
    pub fn record_key(&self, id: &RecordId) -> Vec<u8> {
        self.keys.record(&id_field(id))
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    fn call(&self, operation: &str, keys: Vec<Vec<u8>>, rest: Vec<Vec<u8>>) -> Call {
        let seed: &[u8] = match self.options.fence_seed {
            FenceSeed::ServerClock => b"clock",
            FenceSeed::First => b"1",
        };
        let mut args = Vec::with_capacity(rest.len() + 2);
        args.push(operation.as_bytes().to_vec());
        args.push(seed.to_vec());
        args.extend(rest);
        Call { keys, args }
    }

    /// A per-id operation: keys record, held entry, counters, index; the id field first.
    fn per_id(&self, id: &RecordId, operation: &str, rest: Vec<Vec<u8>>) -> Call {
        let field = id_field(id);
        let keys = vec![
            self.keys.record(&field),
            self.keys.held(&field),
            self.keys.counters.as_bytes().to_vec(),
            self.keys.expiry.as_bytes().to_vec(),
            self.keys.list.as_bytes().to_vec(),
        ];
        let mut all = Vec::with_capacity(rest.len() + 1);
        all.push(field);
        all.extend(rest);
        self.call(operation, keys, all)
    }

    /// `claim`: see `store.lua` for the arguments. `request` is a
    /// [`ClaimRequest`] or just a `&Fingerprint`, as [`idem_core::Store::claim`] takes it.
    #[must_use]
    pub fn claim(&self, id: &RecordId, request: impl Into<ClaimRequest>, now: Timestamp, policy: &Policy) -> Call {
        let request = request.into();
        let lease_end = now.saturating_add(policy.lease());
        let retention_end = now.saturating_add(policy.retention());
        let limits = self.options.limits;
        let id_text = |id: Option<&str>| id.unwrap_or_default().as_bytes().to_vec();
        let (request_id, trace_id) = (id_text(request.holder.request_id()), id_text(request.holder.trace_id()));
        let in_flight = RecordState::InFlight { lease_expires_at: lease_end, holder: request.holder, renewals: 0 };
        let rest = vec![
            text(limits.records_max),
            text(limits.stored_bytes_max),
            request.fingerprint.to_stored(),
            request.earlier.as_ref().map_or_else(Vec::new, Fingerprint::to_stored),
            text(now.unix_ms()),
            text(lease_end.unix_ms()),
            text(retention_end.unix_ms()),
            text(bytes_of(id, in_flight)),
            request_id,
            trace_id,
        ];
        self.per_id(id, "claim", rest)
    }

    /// `complete`.
    #[must_use]
    pub fn complete(
        &self,
        id: &RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: &Policy,
    ) -> Call {
        let retention_end = now.saturating_add(policy.retention());
        let tombstone_until = policy.tombstone().map(|period| retention_end.saturating_add(period));
        let encoded = encode_response(&response);
        let bytes = bytes_of(id, RecordState::Completed { response, replays: 0, tombstone_until });
        let rest = vec![
            text(fence.get()),
            text(now.unix_ms()),
            text(retention_end.unix_ms()),
            optional(tombstone_until),
            encoded,
            text(bytes),
        ];
        self.per_id(id, "complete", rest)
    }

    /// `release`.
    #[must_use]
    pub fn release(&self, id: &RecordId, fence: Fence) -> Call {
        self.per_id(id, "release", vec![text(fence.get())])
    }

    /// `renew`.
    #[must_use]
    pub fn renew(&self, id: &RecordId, fence: Fence, now: Timestamp, policy: &Policy) -> Call {
        let lease_end = now.saturating_add(policy.lease());
        self.per_id(id, "renew", vec![text(fence.get()), text(now.unix_ms()), text(lease_end.unix_ms())])
    }

    /// `forget` (an operator's, [`idem_core::KeyAdmin::forget`]): read its answer with
    /// [`Calls::forgotten`].
    #[must_use]
    pub fn forget(&self, id: &RecordId) -> Call {
        self.per_id(id, "forget", vec![])
    }

    /// `count_replay` ([`idem_core::Store::count_replay`]): read its answer with
    /// [`Calls::counted`].
    #[must_use]
    pub fn count_replay(&self, id: &RecordId, now: Timestamp) -> Call {
        self.per_id(id, "count_replay", vec![text(now.unix_ms())])
    }

    /// One `purge` script of a [`Purge`].
    fn purge(&self, now: Timestamp, batch: usize) -> Call {
        let keys = vec![
            self.keys.counters.as_bytes().to_vec(),
            self.keys.expiry.as_bytes().to_vec(),
            self.keys.list.as_bytes().to_vec(),
        ];
        let rest = vec![
            self.keys.tagged.as_bytes().to_vec(),
            text(now.unix_ms()),
            text(batch as u64),
            text(tombstone_bytes_beyond_id()),
        ];
        self.call("purge", keys, rest)
    }

    /// What a claim's answer means.
    ///
    /// # Errors
    /// The step's errors (`Full`, a fence counter behind) and damage the script found.
    pub fn decision(&self, answer: &Answer, now: Timestamp) -> Result<Decision, StoreError> {
        Ok(match answer.name() {
            b"execute" => Decision::Execute(Claim { fence: answer.fence(1)?, lease_expires_at: answer.time(2)? }),
            b"takeover" => Decision::TakeOver {
                claim: Claim { fence: answer.fence(1)?, lease_expires_at: answer.time(2)? },
                stale: answer.fence(3)?,
            },
            b"replay" => Decision::Replay {
                expires_at: answer.time(1)?,
                response: decode_response(&answer.value(2).unwrap_or_default())?,
            },
            b"conflict" => Decision::Conflict {
                retry_after: now.until(answer.time(1)?),
                expires_at: answer.time(2)?,
                holder: Holder::new(answer.text(3)?, answer.text(4)?),
            },
            b"mismatch" => Decision::Mismatch { expires_at: answer.time(1)? },
            b"gone" => Decision::Gone { expires_at: answer.time(1)? },
            _ => return Err(answer.error(&self.options)?),
        })
    }

    /// What a completion's or a release's answer means (`fence` is the one presented).
    ///
    /// # Errors
    /// As [`Calls::decision`].
    pub fn fenced(&self, answer: &Answer, fence: Fence) -> Result<Fenced, StoreError> {
        if answer.name() == b"applied" {
            return Ok(Fenced::Applied);
        }
        match answer.refusal(fence)? {
            Some(refusal) => Ok(Fenced::Refused(refusal)),
            None => Err(answer.error(&self.options)?),
        }
    }

    /// What a forget's answer means: the record removed, if there was one.
    ///
    /// # Errors
    /// As [`Calls::decision`], and `Corrupt` when the record removed does not decode.
    pub fn forgotten(&self, answer: &Answer) -> Result<Option<Record>, StoreError> {
        match answer.name() {
            b"forgot" => Ok(Some(decode_record(&answer.value(1).unwrap_or_default())?)),
            b"none" => Ok(None),
            _ => Err(answer.error(&self.options)?),
        }
    }

    /// What a replay count's answer means: whether it counted.
    ///
    /// # Errors
    /// As [`Calls::decision`].
    pub fn counted(&self, answer: &Answer) -> Result<bool, StoreError> {
        match answer.name() {
            b"counted" => Ok(true),
            b"not_counted" => Ok(false),
            _ => Err(answer.error(&self.options)?),
        }
    }

    /// What a renewal's answer means.
    ///
    /// # Errors
    /// As [`Calls::decision`].
    pub fn renewal(&self, answer: &Answer, fence: Fence) -> Result<Renewal, StoreError> {
        if answer.name() == b"renewed" {
            return Ok(Renewal::Renewed { lease_expires_at: answer.time(1)? });
        }
        match answer.refusal(fence)? {
            Some(refusal) => Ok(Renewal::Refused(refusal)),
            None => Err(answer.error(&self.options)?),
        }
    }
}

/// A purge of up to `batch_max` due records, as scripts of at most
/// [`PURGE_SCRIPT_BATCH`]: ask [`Purge::next`] for a call, hand its answer to
/// [`Purge::answered`], until `next` has none.
#[derive(Debug)]
pub struct Purge {
    now: Timestamp,
    batch_max: usize,
    purged: usize,
    /// The size of the batch asked for by the call in progress.
    asked: Option<usize>,
    done: bool,
}

impl Purge {
    /// A purge at `now`.
    #[must_use]
    pub fn new(now: Timestamp, batch_max: usize) -> Purge {
        Purge { now, batch_max, purged: 0, asked: None, done: false }
    }

    /// The next script to run, or `None` when the purge is over. Bounded: every round but
    /// the last forgets a whole script batch.
    pub fn next(&mut self, calls: &Calls) -> Option<Call> {
        if self.done || self.purged >= self.batch_max {
            return None;
        }
        let batch = (self.batch_max - self.purged).min(PURGE_SCRIPT_BATCH);
        self.asked = Some(batch);
        Some(calls.purge(self.now, batch))
    }

    /// Takes the answer of the call [`Purge::next`] gave.
    ///
    /// # Errors
    /// As [`Calls::decision`].
    pub fn answered(&mut self, calls: &Calls, answer: &Answer) -> Result<(), StoreError> {
        if answer.name() != b"purged" {
            return Err(answer.error(&calls.options)?);
        }
        let forgotten = usize::try_from(answer.number(1, "a purge count")?).map_err(|_| answer.unexpected())?;
        self.purged += forgotten;
        if forgotten < self.asked.take().unwrap_or(0) {
            self.done = true;
        }
        Ok(())
    }

    /// Records forgotten so far.
    #[must_use]
    pub fn purged(&self) -> usize {
        self.purged
    }
}

impl Answer {
    fn name(&self) -> &[u8] {
        self.0.first().map_or(&[], Vec::as_slice)
    }

    fn value(&self, index: usize) -> Option<Vec<u8>> {
        self.0.get(index).cloned()
    }

    fn number(&self, index: usize, what: &str) -> Result<u64, StoreError> {
        decimal(what, self.value(index))
    }

    fn fence(&self, index: usize) -> Result<Fence, StoreError> {
        Ok(Fence::new(self.number(index, "a fence")?))
    }

    /// A holder id the script answered: absent when empty.
    fn text(&self, index: usize) -> Result<Option<&str>, StoreError> {
        let value = self.0.get(index).map_or(&[][..], Vec::as_slice);
        let text = std::str::from_utf8(value).map_err(|_| corrupt("a holder id is not text"))?;
        Ok((!text.is_empty()).then_some(text))
    }

    fn time(&self, index: usize) -> Result<Timestamp, StoreError> {
        Ok(Timestamp::from_unix_ms(self.number(index, "a time")?))
    }

    fn unexpected(&self) -> StoreError {
        corrupt(format!("the script answered {:?}", String::from_utf8_lossy(self.name())))
    }

    /// The answers every operation may give instead of its own: the step's errors and
    /// damage the script found.
    fn error(&self, options: &RedisOptions) -> Result<StoreError, StoreError> {
        let limits = options.limits;
        Ok(match self.name() {
            b"full" => match self.value(1).as_deref() {
                Some(b"records") => StepError::Full(LimitReached::Records(limits.records_max)).into(),
                _ => StepError::Full(LimitReached::Bytes(limits.stored_bytes_max)).into(),
            },
            b"behind" => {
                StepError::FenceCounterBehind { next_fence: self.fence(1)?, record_fence: self.fence(2)? }.into()
            }
            b"corrupt" => corrupt(String::from_utf8_lossy(&self.value(1).unwrap_or_default()).into_owned()),
            _ => self.unexpected(),
        })
    }

    /// A fence refusal (`transition::check_fence`), if this answer is one.
    fn refusal(&self, presented: Fence) -> Result<Option<Refusal>, StoreError> {
        Ok(match self.name() {
            b"no_record" => Some(Refusal::NoRecord),
            b"stale" => Some(Refusal::StaleFence { presented, current: self.fence(1)? }),
            b"completed" => Some(Refusal::AlreadyCompleted { completed_by: self.fence(1)? }),
            _ => None,
        })
    }
}

/// A record read back from the value under [`Calls::record_key`].
///
/// # Errors
/// `Corrupt` when the value is not one the script writes.
pub fn decode_record(value: &[u8]) -> Result<Record, StoreError> {
    crate::codec::decode_record(value)
}

/// `store.lua` with `wrong` in place of `right`, which must occur in it exactly once: how
/// the tests plant a bug in the script (here and in the simulation).
///
/// # Panics
/// When `right` is not in the script exactly once (the planted rule moved).
#[must_use]
pub fn planted(right: &str, wrong: &str) -> String {
    assert_eq!(SCRIPT.matches(right).count(), 1, "the rule to plant a bug in is in the script once: {right}");
    SCRIPT.replacen(right, wrong, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purged(count: &str) -> Answer {
        Answer(vec![b"purged".to_vec(), count.as_bytes().to_vec()])
    }

    #[test]
    fn a_purge_runs_script_batches_until_one_forgets_fewer_than_asked() {
        // Goal: what `RedisStore::purge_expired` and the simulation share: a purge of 300
        // asks for 128 at a time, stops after a script that forgot fewer than it asked,
        // counts what every script forgot, and takes a damaged answer as damage.
        let calls = Calls::new(&RedisOptions::new("redis://localhost").expect("a valid URL"));
        let mut purge = Purge::new(Timestamp::from_unix_ms(5), 300);
        let asked = |call: Call| String::from_utf8(call.args[4].clone()).expect("a decimal");
        assert_eq!(asked(purge.next(&calls).expect("a first script")), "128");
        purge.answered(&calls, &purged("128")).expect("a count");
        assert_eq!(asked(purge.next(&calls).expect("a second script")), "128");
        purge.answered(&calls, &purged("100")).expect("a count");
        assert_eq!(purge.next(&calls), None);
        assert_eq!(purge.purged(), 228);
        let mut damaged = Purge::new(Timestamp::from_unix_ms(5), 1);
        damaged.next(&calls).expect("a script");
        let error = damaged.answered(&calls, &purged("-1")).expect_err("not a count");
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    }
}
