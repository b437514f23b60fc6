//! Seeding a replica whose position left the log: a consistent copy of every table.

use std::sync::Arc;

use serde_bytes::ByteBuf;

use super::{Shared, Writer};
use crate::error::ReplicationError;
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
    pin.move_to(view.lsn);
    shared.machine(|m| m.snapshot_started(id, view.lsn));
    let tables = view
        .sums
        .iter()
        .map(|(t, s)| (t.clone(), s.rows, s.checksum))
        .collect();
    write_frame(
        writer,
        &Message::SnapshotBegin {
            lsn: view.lsn,
            epoch: view.epoch,
            id: view.id,
            lineage: view.lineage,
            tables,
            history: view.history.pairs().to_vec(),
        },
    )
    .await?;
    let lsn = view.lsn;
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
    write_frame(writer, &Message::SnapshotEnd).await?;
    tracing::info!(replica = %id.name, lsn, "snapshot sent");
    let now = shared.now_us();
    shared.machine(|m| m.snapshot_sent(id, now));
    Ok(lsn)
}
