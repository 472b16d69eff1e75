//! The store host's software: it accepts connections on turmoil's TCP and applies one
//! operation per connection ([`crate::store_protocol`]: an 8-byte frame each way carrying a
//! call number; the operation and its answer are handed over in the mailbox). A frame that
//! arrives is applied, also after the caller gave up, as a real late write would be.
//!
//! What the host keeps, and how an operation is applied to it, is
//! [`crate::host_state`]'s; the `sqlite-batch` host's idempotency writes and purges go
//! through the batches of [`crate::batch_host`]. Replicas reach it through `crate::remote`.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Variant;
use crate::batch_host;
use crate::batch_tables::batched;
use crate::history::Recorder;
use crate::host_state::{Disk, apply};
use crate::store_protocol::{STORE_PORT, SharedMailbox, lock};

/// The store host's software: accepts connections and applies one operation per connection.
pub(crate) async fn host(disk: Disk, mailbox: SharedMailbox, variant: Variant, recorder: Recorder) -> turmoil::Result {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", STORE_PORT)).await?;
    // The `sqlite-batch` host's writer: idempotency writes and purges go through its batches.
    let batches = batch_host::start(&disk, &recorder);
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        let (disk, mailbox, recorder, batches) =
            (Arc::clone(&disk), Arc::clone(&mailbox), recorder.clone(), batches.clone());
        tokio::spawn(async move {
            let mut frame = [0u8; 8];
            if stream.read_exact(&mut frame).await.is_err() {
                return;
            }
            let number = u64::from_be_bytes(frame);
            let Some((replica, request)) = lock(&mailbox).requests.remove(&number) else { return };
            let answer = match batches {
                Some(queue) if batched(&request) => {
                    let Some(answer) = batch_host::submit(&queue, replica, request).await else { return };
                    answer
                }
                _ => apply(&mut lock(&disk), variant, replica, request, &recorder),
            };
            {
                let mut mailbox = lock(&mailbox);
                if !mailbox.abandoned.remove(&number) {
                    mailbox.answers.insert(number, answer);
                }
            }
            let _ = stream.write_all(&frame).await;
        });
    }
}
