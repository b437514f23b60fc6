//! A hostile primary over real TCP on 127.0.0.1: a raw socket that passes a replica's
//! handshake (it knows the token) and then offers a snapshot no honest primary of that
//! replica would. A snapshot replaces only an empty store or one of the same history that
//! holds nothing past it (DESIGN §1): the replica refuses the others before anything of its
//! store changes, and stays stopped rather than retrying into the same loss.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::{eventually, put, replica_options, TestResult};
use replikv::replication::handshake::{self, Role};
use replikv::replication::primary::Primary;
use replikv::replication::protocol::{check_frame_len, decode_frame_body, encode_frame, Message};
use replikv::replication::replica::Replica;
use replikv::replication::status::LinkState;
use replikv::store::{Store, StoreOptions};
use serde_bytes::ByteBuf;

const TOKEN: &str = "t0ken";
const ROWS: u64 = 20;

fn read_message(stream: &mut TcpStream) -> Result<Message, Box<dyn std::error::Error>> {
    let mut header = [0; 4];
    stream.read_exact(&mut header)?;
    let mut body = vec![0; check_frame_len(header)?];
    stream.read_exact(&mut body)?;
    Ok(decode_frame_body(&body)?)
}

fn send(stream: &mut TcpStream, message: &Message) -> TestResult {
    stream.write_all(&encode_frame(message)?)?;
    Ok(())
}

/// A replica that applied `ROWS` entries of a real primary, now gone; and a listener it is
/// pointed at instead.
fn replica_of_a_gone_primary(
    dir: &std::path::Path,
) -> Result<(Replica, TcpListener), Box<dyn std::error::Error>> {
    let store = Store::open(dir.join("primary"), StoreOptions::default())?;
    let primary = Primary::start(store.clone(), common::primary_options(Some(TOKEN)))?;
    let replica = Replica::start(
        dir.join("eu-1"),
        replica_options(&primary, Some(TOKEN), "eu-1"),
    )?;
    for i in 0..ROWS {
        store.commit(put(&format!("k{i}"), vec![0x07]), None)?;
    }
    eventually("the rows applied", || replica.store().last_lsn() == ROWS);
    drop(primary);
    store.close()?;
    let hostile = TcpListener::bind("127.0.0.1:0")?;
    replica.follow(&hostile.local_addr()?.to_string())?;
    Ok((replica, hostile))
}

/// Passes the handshake of the replica's next connection as a primary of epoch 1 would,
/// saying a snapshot comes first, then offers `begin` (its `lineage` and `lsn` chosen by
/// the caller; `None`: the replica's own lineage).
fn offer_snapshot(
    hostile: &TcpListener,
    lsn: u64,
    lineage: Option<u64>,
) -> Result<TcpStream, Box<dyn std::error::Error>> {
    let (mut stream, _) = hostile.accept()?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    send(
        &mut stream,
        &Message::Challenge {
            nonce: ByteBuf::from(handshake::nonce()),
        },
    )?;
    let Message::Hello {
        nonce,
        lineage: own,
        ..
    } = read_message(&mut stream)?
    else {
        return Err("the replica's first frame is no hello".into());
    };
    let lineage = lineage.unwrap_or(own);
    send(
        &mut stream,
        &Message::Welcome {
            proof: ByteBuf::from(handshake::prove(TOKEN.as_bytes(), Role::Primary, &nonce)),
            epoch: 1,
            last_lsn: lsn,
            snapshot: true,
            lineage,
            matched_lsn: None,
        },
    )?;
    send(
        &mut stream,
        &Message::SnapshotBegin {
            lsn,
            epoch: 1,
            id: (1, 0),
            lineage,
            tables: vec![("t".to_owned(), 0, 0)],
            history: vec![(1, 1)],
        },
    )?;
    send(&mut stream, &Message::SnapshotEnd)?;
    Ok(stream)
}

/// Offers `replica` a snapshot at `lsn` (of `lineage`), and checks it is refused as a
/// divergence with `reason`, its store unchanged.
fn refused_unchanged(lsn: u64, lineage: Option<u64>, reason: &str) -> TestResult {
    let dir = tempfile::tempdir()?;
    let (replica, hostile) = replica_of_a_gone_primary(dir.path())?;
    let before = replica.store().checksum()?;
    let _stream = offer_snapshot(&hostile, lsn, lineage)?;
    eventually("the replica to stop", || {
        replica.state().state == LinkState::Failed
    });
    let error = replica.state().last_error.unwrap_or_default();
    assert!(error.contains(reason), "{error}");
    assert_eq!(replica.store().last_lsn(), ROWS);
    assert_eq!(
        replica.store().checksum()?,
        before,
        "the store is untouched"
    );
    replica.close()?;
    // And it reopens as it was.
    let reopened = Store::open(dir.path().join("eu-1"), StoreOptions::default())?;
    assert_eq!(reopened.checksum()?, before);
    Ok(())
}

#[test]
fn a_snapshot_of_another_history_is_refused_before_anything_is_taken() -> TestResult {
    refused_unchanged(ROWS + 100, Some(0x5eed_0f07), "of another history")
}

#[test]
fn a_snapshot_older_than_the_replicas_log_is_refused_before_anything_is_taken() -> TestResult {
    refused_unchanged(ROWS / 2, None, "the primary lost entries this store has")
}
