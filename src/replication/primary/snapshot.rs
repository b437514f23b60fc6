//! Seeding a peer before it streams: a replica whose position left the log gets a
//! consistent copy of every table; a consumer, which keeps no data, gets the header alone.

use std::sync::Arc;

use serde_bytes::ByteBuf;

use super::{Shared, Writer};
use crate::error::ReplicationError;
use crate::follow::SnapshotStart;
use crate::replication::machine::LinkId;
use crate::replication::protocol::{write_frame, Message};
use crate::replication::slots::SlotPin;

/// Rows read from a snapshot per batch, and bytes of rows per frame (a single row larger
/// than a frame cannot exist: values are capped well below it).
const SNAPSHOT_ROWS: usize = 4096;
const SNAPSHOT_FRAME_BYTES: usize = 1 << 20;

/// Sends a consistent copy of every table, in frames of about `SNAPSHOT_FRAME_BYTES`, and
/// returns the LSN it reflects (streaming resumes after it).
pub(super) async fn send_snapshot(
    shared: &Arc<Shared>,
    id: &LinkId,
    pin: &SlotPin<'_>,
    writer: &mut Writer,
) -> Result<u64, ReplicationError> {
    let store = shared.store.clone();
    let view = tokio::task::spawn_blocking(move || store.snapshot_view())
        .await
        .map_err(|e| ReplicationError::Protocol(e.to_string()))?
        .map_err(|e| ReplicationError::Protocol(format!("cannot take a snapshot: {e}")))?;
    pin.move_to(view.start.lsn);
    let tables = view
        .sums
        .iter()
        .map(|(t, s)| (t.clone(), s.rows, s.checksum))
        .collect();
    begin(shared, id, view.start.clone(), tables, writer).await?;
    let lsn = view.start.lsn;
    let names: Vec<String> = view.sums.keys().cloned().collect();
    let view = Arc::new(view);
    for table in names {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let (reader, table_name, from) = (Arc::clone(&view), table.clone(), after.clone());
            let rows = tokio::task::spawn_blocking(move || {
                reader.rows(&table_name, from.as_deref(), SNAPSHOT_ROWS)
            })
            .await
            .map_err(|e| ReplicationError::Protocol(e.to_string()))?
            .map_err(|e| ReplicationError::Protocol(format!("cannot read the snapshot: {e}")))?;
            let Some((last, _)) = rows.last() else { break };
            after = Some(last.clone());
            let mut frame = Vec::new();
            let mut bytes = 0;
            for (key, value) in rows {
                bytes += key.len() + value.len() + 8;
                frame.push((ByteBuf::from(key), ByteBuf::from(value)));
                if bytes >= SNAPSHOT_FRAME_BYTES {
                    write_frame(
                        writer,
                        &Message::SnapshotRows {
                            table: table.clone(),
                            rows: std::mem::take(&mut frame),
                        },
                    )
                    .await?;
                    bytes = 0;
                }
            }
            if !frame.is_empty() {
                write_frame(
                    writer,
                    &Message::SnapshotRows {
                        table: table.clone(),
                        rows: frame,
                    },
                )
                .await?;
            }
        }
    }
    // What was committed while the rows went out is what the replica streams next.
    pin.hold_until(shared.store.last_lsn());
    end(shared, id, lsn, writer).await?;
    Ok(lsn)
}

/// Sends a snapshot's header alone, at the visible LSN (streaming resumes after it): a
/// consumer keeps no rows, so it only learns where the stream goes on from. Its tables
/// list is empty, and no rows follow.
pub(super) async fn send_header(
    shared: &Arc<Shared>,
    id: &LinkId,
    writer: &mut Writer,
) -> Result<(), ReplicationError> {
    let store = shared.store.clone();
    let start = tokio::task::spawn_blocking(move || store.snapshot_start())
        .await
        .map_err(|e| ReplicationError::Protocol(e.to_string()))?
        .map_err(|e| ReplicationError::Protocol(format!("cannot take a snapshot: {e}")))?;
    let lsn = start.lsn;
    begin(shared, id, start, Vec::new(), writer).await?;
    end(shared, id, lsn, writer).await
}

/// Starts a snapshot at `start.lsn` of `tables` (`(name, rows, checksum)`): the peer
/// streams after it.
async fn begin(
    shared: &Shared,
    id: &LinkId,
    start: SnapshotStart,
    tables: Vec<(String, u64, u64)>,
    writer: &mut Writer,
) -> Result<(), ReplicationError> {
    shared.machine(|m| m.snapshot_started(id, start.lsn));
    let begin = Message::SnapshotBegin {
        lsn: start.lsn,
        epoch: start.epoch,
        id: start.id,
        lineage: start.lineage,
        tables,
        history: start.history,
    };
    write_frame(writer, &begin).await
}

/// Ends the snapshot at `lsn`: entries after it follow.
async fn end(
    shared: &Shared,
    id: &LinkId,
    lsn: u64,
    writer: &mut Writer,
) -> Result<(), ReplicationError> {
    write_frame(writer, &Message::SnapshotEnd).await?;
    tracing::info!(peer = %id.name, lsn, "snapshot sent");
    let now = shared.now_us();
    shared.machine(|m| m.snapshot_sent(id, now));
    Ok(())
}
