//! The store host of the `sqlite-batch` scenario: idem-sqlite's group commit, its decision
//! part for real. Operations that reach the host queue up; a batcher takes everything
//! queued (up to idem-sqlite's `BATCH_MAX`, as its writer's `recv_many` does), decides them
//! on the host's tables through idem-sqlite's own `BatchDecision`
//! ([`crate::batch_tables`]), then commits and answers, all in one poll of the host (one
//! transaction), after the commit's fsync.

use std::sync::Arc;
use std::time::Duration;

use idem_sqlite::batch_decision::BATCH_MAX;
use tokio::sync::{mpsc, oneshot};

use crate::batch_tables::{Decided, decide_batch};
use crate::history::Recorder;
use crate::host_state::{Disk, HostState, insert_payment};
use crate::store_protocol::{Answer, Request, lock};

/// How long a commit's fsync takes: a slow disk's, so that batches of several operations form.
const FSYNC: Duration = Duration::from_millis(10);

/// Jobs waiting for the batcher at most (idem-sqlite's writer queues 4 × `BATCH_MAX`);
/// past it a connection waits for room.
const QUEUE_MAX: usize = 4 * BATCH_MAX;

/// One operation waiting for a batch, and where its answer goes.
#[derive(Debug)]
pub(crate) struct Job {
    replica: usize,
    request: Request,
    answer: oneshot::Sender<Answer>,
}

/// Starts the batcher of a host whose state holds [`crate::batch_tables::Tables`]; returns
/// its queue.
pub(crate) fn start(disk: &Disk, recorder: &Recorder) -> Option<mpsc::Sender<Job>> {
    lock(disk).sqlite.as_ref()?;
    let (sender, queue) = mpsc::channel(QUEUE_MAX);
    tokio::spawn(batcher(Arc::clone(disk), queue, recorder.clone()));
    Some(sender)
}

/// Queues `request` and waits for its batch; `None` when the host went down meanwhile.
pub(crate) async fn submit(queue: &mpsc::Sender<Job>, replica: usize, request: Request) -> Option<Answer> {
    let (answer, answered) = oneshot::channel();
    queue.send(Job { replica, request, answer }).await.ok()?;
    answered.await.ok()
}

async fn batcher(disk: Disk, mut queue: mpsc::Receiver<Job>, recorder: Recorder) {
    let mut jobs = Vec::with_capacity(BATCH_MAX);
    while queue.recv_many(&mut jobs, BATCH_MAX).await > 0 {
        let batch: Vec<Job> = std::mem::take(&mut jobs);
        let Some(decided) = decide(&lock(&disk), &batch) else { return };
        // The commit's fsync: what reaches the host meanwhile queues for the next batch, as
        // it does behind idem-sqlite's writer. A crash here loses the batch whole.
        tokio::time::sleep(FSYNC).await;
        let answers = commit(&mut lock(&disk), decided, &recorder);
        for (job, answer) in batch.into_iter().zip(answers) {
            let _ = job.answer.send(answer);
        }
    }
}

/// One group commit's decisions on the host's tables; `None` on a host without them
/// (the batcher runs only on a host with them).
fn decide(state: &HostState, batch: &[Job]) -> Option<Decided> {
    let tables = state.sqlite.as_ref()?;
    Some(decide_batch(tables, state.epoch(), batch.iter().map(|job| (job.replica, &job.request))))
}

/// Commits a decided batch: the flush to the tables, then, in the same transaction, the
/// payment rows of the completions that applied. Returns the answers, in the batch's order.
fn commit(state: &mut HostState, decided: Decided, recorder: &Recorder) -> Vec<Answer> {
    let Some(tables) = state.sqlite.as_mut() else { return Vec::new() };
    let (answers, rows) = decided.commit(tables, recorder);
    for payment in rows {
        insert_payment(state, payment, "complete-with-payment", recorder);
    }
    answers
}
