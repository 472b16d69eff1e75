//! `ConflictPolicy::Wait`: a request that finds its key in flight waits for the holder,
//! polling the store with backoff (bounded in time and in looks), instead of a 409 at once.

use std::time::Duration;

use idem_core::reply;
use idem_core::{ClaimRequest, Clock, Decision, Policy, RecordId, Store, StoreError};

use crate::config::WAIT_MAX;
use crate::observe;

/// First pause of a waiting request between looks at the store; doubled up to [`WAIT_POLL_MAX`].
const WAIT_POLL_FIRST: Duration = Duration::from_millis(10);
/// Longest pause of a waiting request between looks at the store.
const WAIT_POLL_MAX: Duration = Duration::from_millis(250);
/// Most looks at the store by one waiting request, whatever the clock does.
const WAIT_POLLS_MAX: u32 = 1024;

// The poll bound must not cut the longest allowed wait short at the longest pause.
const _: () = assert!(WAIT_POLLS_MAX as u128 * WAIT_POLL_MAX.as_millis() > WAIT_MAX.as_millis());

/// Polls the store with backoff until the request in flight is done, at most `wait_max`
/// of sleeping on the runtime's timer and [`WAIT_POLLS_MAX`] looks. Returns the first
/// decision that is not a conflict, or the conflict (with the lease left at the last look)
/// if the wait ran out. Whether to keep waiting is [`reply::keep_waiting`]'s answer.
pub(crate) async fn wait_for_turn<St: Store>(
    (store, id, policy): (&St, &RecordId, &Policy),
    clock: &dyn Clock,
    request: &ClaimRequest,
    wait_max: Duration,
    mut conflict: Decision,
) -> Result<Decision, StoreError> {
    let mut waited = Duration::ZERO;
    let mut pause = WAIT_POLL_FIRST;
    for _ in 0..WAIT_POLLS_MAX {
        if waited >= wait_max {
            break;
        }
        let nap = pause.min(wait_max - waited);
        tokio::time::sleep(nap).await;
        waited += nap;
        pause = (pause * 2).min(WAIT_POLL_MAX);

        // A cheap read first: only claim (a write in SQL stores) once the holder is done.
        let record = observe::store("get", store.get(id).await)?;
        if let Some(left) = reply::keep_waiting(record.as_ref(), request, clock.now()) {
            if let Decision::Conflict { retry_after, .. } = &mut conflict {
                *retry_after = left;
            }
            continue;
        }
        match observe::store("claim", store.claim(id, request, clock.now(), policy).await)? {
            decision @ Decision::Conflict { .. } => conflict = decision,
            decision => return Ok(decision),
        }
    }
    Ok(conflict)
}
