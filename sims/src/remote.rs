//! The replicas' way to the store host: [`RemoteStore`] (an [`idem_core::Store`]) and
//! [`RemoteLedger`] (an [`idem_server::Ledger`]: in atomic mode the payment row and the
//! completion are one fenced step on the host; in separate mode the row is written alone
//! and the layer completes). Every call runs under a timeout; a call that times out or
//! fails on the network is [`StoreError::Unavailable`], so idem-http answers 503 for it.

use std::sync::Arc;
use std::time::Duration;

use idem_core::{
    ClaimRequest, Decision, Fence, Fenced, Policy, Principal, Record, RecordId, Renewal, Store, StoreError,
    StoredResponse, Timestamp,
};
use idem_server::domain::{Payment, User};
use idem_server::ledger::{Completion, Written};
use idem_server::{Ledger, LedgerError, Page, PageRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::history::{Kind, Recorder};
use crate::plan::payment_body;
use crate::store_protocol::{Answer, Request, STORE_HOST, STORE_PORT, SharedMailbox, lock};

/// A replica's connection to the store host: one TCP connection per call, under a timeout.
#[derive(Debug, Clone)]
pub(crate) struct Remote {
    pub(crate) replica: usize,
    pub(crate) mailbox: SharedMailbox,
    pub(crate) timeout: Duration,
    pub(crate) recorder: Recorder,
}

#[derive(Debug, thiserror::Error)]
#[error("store call {op} {why}")]
struct CallFailed {
    op: &'static str,
    why: String,
}

impl Remote {
    pub(crate) async fn call(&self, request: Request) -> Result<Answer, StoreError> {
        let op = request.name();
        let number = {
            let mut mailbox = lock(&self.mailbox);
            mailbox.next += 1;
            let number = mailbox.next;
            mailbox.requests.insert(number, (self.replica, request));
            number
        };
        let exchange = async {
            let mut stream = turmoil::net::TcpStream::connect((STORE_HOST, STORE_PORT)).await?;
            stream.write_all(&number.to_be_bytes()).await?;
            let mut frame = [0u8; 8];
            stream.read_exact(&mut frame).await?;
            Ok::<_, std::io::Error>(())
        };
        let failure = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(())) => match lock(&self.mailbox).answers.remove(&number) {
                Some(answer) => return Ok(answer),
                None => "had no answer".to_owned(),
            },
            Ok(Err(error)) => format!("failed: {error}"),
            Err(_) => format!("timed out after {:?}", self.timeout),
        };
        {
            // The request may still arrive and be applied; its answer is then dropped.
            let mut mailbox = lock(&self.mailbox);
            if mailbox.answers.remove(&number).is_none() {
                mailbox.abandoned.insert(number);
            }
        }
        self.recorder.record(Kind::StoreCallFailed { replica: self.replica, op, why: failure.clone() });
        Err(StoreError::Unavailable { source: Box::new(CallFailed { op, why: failure }), retry_after: None })
    }
}

fn unexpected(answer: &Answer) -> StoreError {
    StoreError::Corrupt { detail: format!("unexpected answer from the store host: {answer:?}") }
}

/// [`idem_core::Store`] over the simulated network.
#[derive(Debug, Clone)]
pub(crate) struct RemoteStore(pub(crate) Remote);

impl Store for RemoteStore {
    async fn claim(
        &self,
        id: &RecordId,
        request: impl Into<ClaimRequest> + Send,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Decision, StoreError> {
        // The whole request goes to the host (fingerprint and its version, the earlier
        // fingerprint, the holder), so the store decides on what a real one would receive.
        let request = request.into();
        match self.0.call(Request::Claim { id: id.clone(), request, now, policy: *policy }).await? {
            Answer::Decision(decision) => Ok(decision),
            Answer::Refused(error) => Err(error),
            other => Err(unexpected(&other)),
        }
    }

    async fn complete(
        &self,
        id: &RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Fenced, StoreError> {
        let request = Request::Complete { id: id.clone(), fence, response, now, policy: *policy };
        fenced_answer(self.0.call(request).await?)
    }

    async fn release(&self, id: &RecordId, fence: Fence) -> Result<Fenced, StoreError> {
        fenced_answer(self.0.call(Request::Release { id: id.clone(), fence }).await?)
    }

    async fn renew(&self, id: &RecordId, fence: Fence, now: Timestamp, policy: &Policy) -> Result<Renewal, StoreError> {
        match self.0.call(Request::Renew { id: id.clone(), fence, now, policy: *policy }).await? {
            Answer::Renewal(renewal) => Ok(renewal),
            Answer::Refused(error) => Err(error),
            other => Err(unexpected(&other)),
        }
    }

    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        match self.0.call(Request::Get { id: id.clone() }).await? {
            Answer::Record(record) => Ok(record),
            other => Err(unexpected(&other)),
        }
    }

    async fn purge_expired(&self, now: Timestamp, batch_max: usize) -> Result<usize, StoreError> {
        match self.0.call(Request::Purge { now, batch_max }).await? {
            Answer::Count(count) => Ok(count),
            Answer::Refused(error) => Err(error),
            other => Err(unexpected(&other)),
        }
    }

    /// Forwarded to the host, which counts it with the store's own step (or script), as a
    /// real store overrides the trait's default.
    async fn count_replay(&self, id: &RecordId, now: Timestamp) -> Result<bool, StoreError> {
        match self.0.call(Request::CountReplay { id: id.clone(), now }).await? {
            Answer::Counted(counted) => Ok(counted),
            Answer::Refused(error) => Err(error),
            other => Err(unexpected(&other)),
        }
    }
}

fn fenced_answer(answer: Answer) -> Result<Fenced, StoreError> {
    match answer {
        Answer::Fenced(fenced) => Ok(fenced),
        Answer::Refused(error) => Err(error),
        other => Err(unexpected(&other)),
    }
}

/// A bug planted in the ledger's atomic-mode write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LedgerBug {
    None,
    /// `double-write`: the row is also written alone, before the completion with it.
    DoubleWrite,
    /// `row-outside-transaction`: the row commits alone, then the completion (fenced) alone.
    RowOutsideTransaction,
    /// `keeps-oversized`: the completion records the payment's response whole, whatever
    /// the recording limit (as `ClaimContext::stored_response` did before it kept it).
    KeepsOversized,
}

/// The payments and users tables on the store host, in atomic mode: a payment and its
/// completion are one fenced step there.
#[derive(Debug)]
pub(crate) struct RemoteLedger {
    pub(crate) store: Arc<RemoteStore>,
    /// A planted bug in the ledger, if any.
    pub(crate) bug: LedgerBug,
    /// Separate mode: rows are written alone and the layer completes afterwards.
    pub(crate) separate: bool,
}

/// The planted `keeps-oversized`: the payment's 201 as the handler answers it (its JSON,
/// `Content-Type` and `Location`), in place of whatever the layer's rules made of it.
fn whole(payment: &Payment, response: &StoredResponse) -> StoredResponse {
    let location = format!("/payments/{}", payment.payment_id);
    let headers = vec![
        ("content-type".to_owned(), bytes::Bytes::from_static(b"application/json")),
        ("location".to_owned(), bytes::Bytes::from(location)),
    ];
    StoredResponse { status: response.status, headers, body: bytes::Bytes::from(payment.to_json_text()) }
}

fn ledger_error(error: StoreError) -> LedgerError {
    match error {
        StoreError::Corrupt { detail } => LedgerError::Corrupt(detail),
        other => LedgerError::Unavailable(other),
    }
}

impl Ledger for RemoteLedger {
    type Store = RemoteStore;

    fn idempotency_store(&self) -> Arc<RemoteStore> {
        Arc::clone(&self.store)
    }

    fn completes_in_transaction(&self) -> bool {
        !self.separate
    }

    async fn insert_payment(
        &self,
        payment: &Payment,
        completion: Option<Completion<'_>>,
    ) -> Result<Written, LedgerError> {
        let remote = &self.store.0;
        let alone = || async {
            match remote.call(Request::InsertPayment { payment: payment.clone() }).await.map_err(ledger_error)? {
                Answer::Done => Ok(Written::Alone),
                other => Err(ledger_error(unexpected(&other))),
            }
        };
        let Some(Completion { claim, response }) = completion else {
            return alone().await;
        };
        if matches!(self.bug, LedgerBug::DoubleWrite | LedgerBug::RowOutsideTransaction) {
            alone().await?;
        }
        let request = &payment.request;
        remote.recorder.record(Kind::Execute {
            replica: remote.replica,
            id: claim.id().clone(),
            fence: claim.fence(),
            body: payment_body(request.amount.minor(), &request.currency, &request.destination),
        });
        let response = if self.bug == LedgerBug::KeepsOversized { whole(payment, response) } else { response.clone() };
        let (id, fence, now, policy) = (claim.id().clone(), claim.fence(), claim.now(), *claim.policy());
        let call = if self.bug == LedgerBug::RowOutsideTransaction {
            Request::Complete { id, fence, response, now, policy }
        } else {
            Request::CompleteWithPayment { id, fence, response, now, policy, payment: payment.clone() }
        };
        match remote.call(call).await.map_err(ledger_error)? {
            Answer::Fenced(Fenced::Applied) => Ok(Written::Completed),
            Answer::Fenced(refused) => Ok(Written::Superseded(refused)),
            Answer::Refused(error) => Err(ledger_error(error)),
            other => Err(ledger_error(unexpected(&other))),
        }
    }

    async fn payment(&self, principal: &Principal, payment_id: &str) -> Result<Option<Payment>, LedgerError> {
        let request = Request::Payment { principal: principal.clone(), payment_id: payment_id.to_owned() };
        match self.store.0.call(request).await.map_err(ledger_error)? {
            Answer::Payment(payment) => Ok(payment),
            other => Err(ledger_error(unexpected(&other))),
        }
    }

    async fn payments(&self, principal: &Principal, page: &PageRequest) -> Result<Option<Page<Payment>>, LedgerError> {
        let request = Request::Payments { principal: principal.clone(), page: page.clone() };
        match self.store.0.call(request).await.map_err(ledger_error)? {
            Answer::Payments(payments) => Ok(payments),
            other => Err(ledger_error(unexpected(&other))),
        }
    }

    async fn users(&self, principal: &Principal, page: &PageRequest) -> Result<Option<Page<User>>, LedgerError> {
        let request = Request::Users { principal: principal.clone(), page: page.clone() };
        match self.store.0.call(request).await.map_err(ledger_error)? {
            Answer::Users(users) => Ok(users),
            other => Err(ledger_error(unexpected(&other))),
        }
    }

    /// The store host answers a call: the simulated store keeps everything in memory, so
    /// reaching it is what "takes a write" means here.
    async fn check_writable(&self) -> Result<(), LedgerError> {
        let key = idem_core::Key::parse(b"idem-healthz-probe").expect("a constant, valid key");
        let id = RecordId::new(Principal::anonymous(), key);
        match self.store.0.call(Request::Get { id }).await.map_err(ledger_error)? {
            Answer::Record(_) => Ok(()),
            other => Err(ledger_error(unexpected(&other))),
        }
    }

    async fn insert_user(&self, user: &User, _completion: Option<Completion<'_>>) -> Result<Written, LedgerError> {
        // Users are not simulated (the clients only pay); written alone, completed by the layer.
        match self.store.0.call(Request::InsertUser { user: user.clone() }).await.map_err(ledger_error)? {
            Answer::Done => Ok(Written::Alone),
            other => Err(ledger_error(unexpected(&other))),
        }
    }

    async fn user(&self, principal: &Principal, user_id: &str) -> Result<Option<User>, LedgerError> {
        let request = Request::User { principal: principal.clone(), user_id: user_id.to_owned() };
        match self.store.0.call(request).await.map_err(ledger_error)? {
            Answer::User(user) => Ok(user),
            other => Err(ledger_error(unexpected(&other))),
        }
    }
}
