//! replikv's own commands: versioned reads and fills ("set if newer"), invalidations from
//! a client, and the node's log position.

use bytes::Bytes;

use super::{integer, Call, Outcome};
use crate::cache::lru::{Fill, Version};
use crate::cache::resp::Reply;

fn version_reply(version: Version) -> [Reply; 2] {
    [
        Reply::Int(version.epoch as i64),
        Reply::Int(version.lsn as i64),
    ]
}

/// `RKV.GET key` → `[value, epoch, lsn]`: on a hit the value's version; on a miss nil and
/// the node's processed position, which the reader's source must have reached
/// (`min_lsn`) for its fill to be accepted.
pub(super) fn get(call: &mut Call<'_>) -> Outcome {
    let (value, version) = match call.node.lru.get(&call.args[1], call.now_ms) {
        Some((value, version)) => (Reply::Bulk(value.clone()), version),
        None => (Reply::Nil, call.node.processed()),
    };
    let [epoch, lsn] = version_reply(version);
    Reply::Array(vec![value, epoch, lsn]).into()
}

/// How far past the node's processed position a fill's LSN may be, when the node follows a log: a
/// reader's source is ahead of the node by the node's lag, never by a million entries. A version
/// far past the log (a wire client's bug, or a forged one) would otherwise pin its value against
/// every write of the key the node processes, until the log got there; bounded, such a fill is
/// refused, or is stale for at most this many entries. A reader whose node lags further misses
/// instead of filling. A fill of a newer epoch than the node has heard of (from an entry, or a
/// primary's welcome) is refused the same way, however near its LSN: versions compare by epoch
/// first, so such a value would outrank every write the node processes until its log reached that
/// epoch (a reader whose source was promoted before the node heard of it misses once).
const MAX_FILL_AHEAD: u64 = 1 << 20;

/// An unsigned integer argument.
fn unsigned(arg: &[u8]) -> Option<u64> {
    integer(arg).and_then(|v| u64::try_from(v).ok())
}

/// `RKV.FILL key epoch lsn value [PX ms]` → 1 stored, 0 refused as stale.
pub(super) fn fill(call: &mut Call<'_>) -> Outcome {
    let (Some(epoch), Some(lsn)) = (unsigned(&call.args[2]), unsigned(&call.args[3])) else {
        return Reply::Error("ERR the version's epoch and LSN must be unsigned integers".into())
            .into();
    };
    let ttl = match &call.args[5..] {
        [] => None,
        [unit, ms] if unit.eq_ignore_ascii_case(b"PX") => match super::integer(ms)
            .and_then(|count| super::keys::ttl_ms(count, 1, call.now_ms))
        {
            Some(ms) => Some(ms),
            None => {
                return Reply::Error("ERR invalid expire time in 'rkv.fill' command".into()).into()
            }
        },
        _ => return super::syntax_error(),
    };
    let horizon = call.node.processed().lsn.saturating_add(MAX_FILL_AHEAD);
    let newest = call.node.lru.newest_epoch();
    if call.node.following.primary.is_some() && (lsn > horizon || epoch > newest) {
        call.node.lru.refuse_fill();
        return Reply::Int(0).into();
    }
    let ttl = call.node.ttl_for(ttl);
    let (key, value) = (
        Bytes::from(std::mem::take(&mut call.args[1])),
        Bytes::from(std::mem::take(&mut call.args[4])),
    );
    let stored = call
        .node
        .lru
        .fill(key, value, Version { epoch, lsn }, ttl, call.now_ms);
    match stored {
        Fill::Stored => Reply::Int(1).into(),
        Fill::Stale => Reply::Int(0).into(),
        Fill::TooLarge => {
            Reply::Error("OOM the value is larger than the cache's byte bound".into()).into()
        }
    }
}

/// `RKV.INVALIDATE key…` → how many were held (each is dropped).
pub(super) fn invalidate(call: &mut Call<'_>) -> Outcome {
    let dropped = call.args[1..]
        .iter()
        .filter(|k| call.node.lru.invalidate(k))
        .count();
    Reply::Int(dropped as i64).into()
}

/// `RKV.INVALIDATEPREFIX prefix` → how many held keys were dropped.
pub(super) fn invalidate_prefix(call: &mut Call<'_>) -> Outcome {
    let dropped = call.node.lru.remove_prefix(&call.args[1]);
    Reply::Int(dropped as i64).into()
}

/// `RKV.POSITION` → `[epoch, lsn, state]`: the log processed so far and how the node
/// follows it (a client uses a returning node only once it has caught up).
pub(super) fn position(call: &mut Call<'_>) -> Outcome {
    let [epoch, lsn] = version_reply(call.node.processed());
    let state = if call.node.following.state.is_empty() {
        "none"
    } else {
        call.node.following.state.as_str()
    };
    Reply::Array(vec![
        epoch,
        lsn,
        Reply::Bulk(Bytes::copy_from_slice(state.as_bytes())),
    ])
    .into()
}

/// `RKV.FOLLOW host:port` → `OK`: follow the primary at that address from now on (after a
/// failover, say), resuming from the node's position when its history matches the new
/// primary's and flushing on a fork. Refused by a node that follows no log.
pub(super) fn follow(call: &mut Call<'_>) -> Outcome {
    if call.node.following.primary.is_none() {
        return Reply::Error("ERR this node follows no log: start it with --follow".into()).into();
    }
    let address = String::from_utf8_lossy(&call.args[1]).into_owned();
    if let Err(err) = crate::net::client::check_address(&address) {
        return Reply::Error(format!("ERR {err}")).into();
    }
    if let Some(reason) = call.node.following.refuse(&address) {
        return Reply::Error(format!("ERR {reason}")).into();
    }
    call.node.following.wanted = Some(address);
    Reply::Ok.into()
}
