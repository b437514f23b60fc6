//! The plain Redis key commands.

use std::cmp::Ordering;

use bytes::Bytes;

use super::{integer, not_an_integer, syntax_error, Call, Outcome};
use crate::cache::lru::{Fill, SetIf};
use crate::cache::resp::Reply;

/// Takes argument `index` (it is not read again) as stored bytes, without a copy.
fn take(call: &mut Call<'_>, index: usize) -> Bytes {
    Bytes::from(std::mem::take(&mut call.args[index]))
}

fn too_large() -> Outcome {
    Reply::Error("OOM the value is larger than the cache's byte bound".into()).into()
}

pub(super) fn get(call: &mut Call<'_>) -> Outcome {
    match call.node.lru.get(&call.args[1], call.now_ms) {
        Some((value, _)) => Reply::Bulk(value.clone()).into(),
        None => Reply::Nil.into(),
    }
}

/// The Unix time in milliseconds a key ends at, `count` units of `unit_ms` after `base_ms`
/// (now for `EXPIRE`, `PEXPIRE` and `SET … EX|PX`; 0 for their `…AT` forms), or `None`
/// where Redis 7 finds it an "invalid expire time": past a signed 64-bit count of
/// milliseconds either way.
fn end_ms(count: i64, unit_ms: i64, base_ms: i64) -> Option<i64> {
    count.checked_mul(unit_ms)?.checked_add(base_ms)
}

/// A TTL in milliseconds from a positive `count` of `unit_ms`, if the time it ends at
/// (from `now_ms`) fits a signed 64-bit count of milliseconds, as Redis requires of
/// `EXPIRE`, `PEXPIRE` and `SET … EX|PX` alike.
pub(super) fn ttl_ms(count: i64, unit_ms: u64, now_ms: u64) -> Option<u64> {
    let now = i64::try_from(now_ms).ok()?;
    let end = end_ms(count, i64::try_from(unit_ms).ok()?, now).filter(|_| count > 0)?;
    u64::try_from(end.saturating_sub(now)).ok()
}

/// The unit and the base of an expiry option or command named `name` (upper case): `EX`,
/// `PX`, `EXAT`, `PXAT`, or `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT`.
fn expiry_unit(name: &[u8], now_ms: i64) -> (i64, i64) {
    let unit = if name.starts_with(b"P") { 1 } else { 1000 };
    let base = if name.ends_with(b"AT") { 0 } else { now_ms };
    (unit, base)
}

fn invalid_expire_time(command: &str) -> Outcome {
    Reply::Error(format!("ERR invalid expire time in '{command}' command")).into()
}

/// How long a key `SET` stores lives, as its options say.
enum Expiry {
    /// As the node's default TTL says.
    Default,
    /// Until this Unix time in milliseconds (already past: stored and gone at once).
    At(i64),
    /// As long as the key it replaces had left (`KEEPTTL`).
    Kept,
}

pub(super) fn set(call: &mut Call<'_>) -> Outcome {
    let now = i64::try_from(call.now_ms).unwrap_or(i64::MAX);
    let mut condition = SetIf::Always;
    // As Redis parses them: an option may be repeated (the last count given counts), two
    // that conflict are a syntax error, and a count is checked once every option is read.
    let mut keep = false;
    // `GET`: answer the value the key held before (or nil), whether it was set or not.
    let mut get = false;
    let mut timed: Option<(Vec<u8>, &[u8])> = None;
    let mut options = call.args[3..].iter();
    while let Some(option) = options.next() {
        let option = option.to_ascii_uppercase();
        let unit = timed.as_ref().map(|(unit, _)| unit.as_slice());
        match option.as_slice() {
            b"NX" if condition != SetIf::Present => condition = SetIf::Absent,
            b"XX" if condition != SetIf::Absent => condition = SetIf::Present,
            b"KEEPTTL" if unit.is_none() => keep = true,
            b"GET" => get = true,
            b"EX" | b"PX" | b"EXAT" | b"PXAT" if !keep && unit.is_none_or(|u| u == option) => {
                let Some(count) = options.next() else {
                    return syntax_error();
                };
                timed = Some((option, count));
            }
            _ => return syntax_error(),
        }
    }
    let expiry = match timed {
        Some((unit, count)) => {
            let Some(count) = integer(count) else {
                return not_an_integer();
            };
            let (unit_ms, base_ms) = expiry_unit(&unit, now);
            match end_ms(count, unit_ms, base_ms).filter(|_| count > 0) {
                Some(end) => Expiry::At(end),
                None => return invalid_expire_time("set"),
            }
        }
        None if keep => Expiry::Kept,
        None => Expiry::Default,
    };
    let ttl = match expiry {
        Expiry::Default => None,
        // An end already past stores the key for no time: it is gone at once, as in Redis.
        Expiry::At(end) => Some(u64::try_from(end.saturating_sub(now)).unwrap_or(0)),
        Expiry::Kept => call.node.lru.ttl_left(&call.args[1], call.now_ms).flatten(),
    };
    let ttl = call.node.ttl_for(ttl);
    let before = get.then(|| {
        call.node
            .lru
            .get(&call.args[1], call.now_ms)
            .map_or(Reply::Nil, |(value, _)| Reply::Bulk(value.clone()))
    });
    let (name, value) = (take(call, 1), take(call, 2));
    let gone_at_once = ttl == Some(0);
    let key = gone_at_once.then(|| name.clone());
    match call.node.lru.set(name, value, ttl, condition, call.now_ms) {
        Ok(set) => {
            if let Some(key) = key.filter(|_| set) {
                call.node.lru.remove(&key);
            }
            match before {
                Some(before) => before.into(),
                None if set => Reply::Ok.into(),
                None => Reply::Nil.into(),
            }
        }
        Err(_) => too_large(),
    }
}

pub(super) fn del(call: &mut Call<'_>) -> Outcome {
    let now = call.now_ms;
    let removed = call.args[1..]
        .iter()
        .filter(|k| remove_live(call.node, k, now))
        .count();
    Reply::Int(removed as i64).into()
}

/// Drops `key`; whether it was there to drop, as Redis counts it: a key whose TTL passed
/// is dropped too, but was already gone.
fn remove_live(node: &mut crate::cache::node::Node, key: &[u8], now_ms: u64) -> bool {
    let live = node.lru.contains(key, now_ms);
    node.lru.remove(key) && live
}

pub(super) fn exists(call: &mut Call<'_>) -> Outcome {
    let now = call.now_ms;
    let held = call.args[1..]
        .iter()
        .filter(|k| call.node.lru.contains(k, now))
        .count();
    Reply::Int(held as i64).into()
}

pub(super) fn mget(call: &mut Call<'_>) -> Outcome {
    let now = call.now_ms;
    let values = call.args[1..]
        .iter()
        .map(|k| match call.node.lru.get(k, now) {
            Some((value, _)) => Reply::Bulk(value.clone()),
            None => Reply::Nil,
        })
        .collect();
    Reply::Array(values).into()
}

pub(super) fn mset(call: &mut Call<'_>) -> Outcome {
    if call.args.len().is_multiple_of(2) {
        return super::wrong_arity(b"mset").into();
    }
    let ttl = call.node.ttl_for(None);
    // All or nothing, as in Redis: a pair too large for the byte bound refuses the command
    // before any pair is stored.
    let fits = (1..call.args.len()).step_by(2).all(|pair| {
        let (name, value) = (&call.args[pair], &call.args[pair + 1]);
        call.node.lru.fits(name.len(), value.len())
    });
    if !fits {
        return too_large();
    }
    for pair in (1..call.args.len()).step_by(2) {
        let (name, value) = (take(call, pair), take(call, pair + 1));
        let stored = call
            .node
            .lru
            .set(name, value, ttl, SetIf::Always, call.now_ms);
        if matches!(stored, Err(Fill::TooLarge)) {
            return too_large();
        }
    }
    Reply::Ok.into()
}

/// The conditions Redis 7's `EXPIRE key ttl [NX|XX|GT|LT]` may set: a key without a TTL
/// counts as one that never ends.
struct ExpireIf {
    /// NX: only a key without a TTL (`Some(false)`); XX: only one with (`Some(true)`).
    has_ttl: Option<bool>,
    /// GT: only if the new end is later (`Greater`); LT: only if earlier (`Less`).
    end: Option<Ordering>,
}

impl ExpireIf {
    fn parse(options: &[Vec<u8>]) -> Result<Self, Reply> {
        let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
        for option in options {
            match option.to_ascii_uppercase().as_slice() {
                b"NX" => nx = true,
                b"XX" => xx = true,
                b"GT" => gt = true,
                b"LT" => lt = true,
                _ => {
                    return Err(Reply::Error(format!(
                        "ERR Unsupported option {}",
                        String::from_utf8_lossy(option)
                    )))
                }
            }
        }
        if nx && (xx || gt || lt) {
            return Err(Reply::Error(
                "ERR NX and XX, GT or LT options at the same time are not compatible".into(),
            ));
        }
        if gt && lt {
            return Err(Reply::Error(
                "ERR GT and LT options at the same time are not compatible".into(),
            ));
        }
        Ok(Self {
            has_ttl: (nx || xx).then_some(xx),
            end: (gt || lt).then_some(if gt {
                Ordering::Greater
            } else {
                Ordering::Less
            }),
        })
    }

    /// Whether a key that ends at `current` (`None`: never) may end at `new` instead.
    fn allows(&self, current: Option<i64>, new: i64) -> bool {
        if self.has_ttl.is_some_and(|has| has != current.is_some()) {
            return false;
        }
        match self.end {
            None => true,
            Some(Ordering::Greater) => current.is_some_and(|end| new > end),
            Some(_) => current.is_none_or(|end| new < end),
        }
    }
}

/// `EXPIRE`, `PEXPIRE`, `EXPIREAT` and `PEXPIREAT`.
pub(super) fn expire(call: &mut Call<'_>) -> Outcome {
    let now = i64::try_from(call.now_ms).unwrap_or(i64::MAX);
    let command = call.args[0].to_ascii_uppercase();
    let condition = match ExpireIf::parse(&call.args[3..]) {
        Ok(condition) => condition,
        Err(reply) => return reply.into(),
    };
    let Some(count) = integer(&call.args[2]) else {
        return not_an_integer();
    };
    let (unit_ms, base_ms) = expiry_unit(&command, now);
    let Some(end) = end_ms(count, unit_ms, base_ms) else {
        return invalid_expire_time(&String::from_utf8_lossy(&command).to_ascii_lowercase());
    };
    let Some(left) = call.node.lru.ttl_left(&call.args[1], call.now_ms) else {
        return Reply::Int(0).into();
    };
    let current = left.map(|ms| now.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX)));
    if !condition.allows(current, end) {
        return Reply::Int(0).into();
    }
    // An end already past: Redis deletes the key.
    let done = match u64::try_from(end.saturating_sub(now)) {
        Ok(ms) if ms > 0 => call.node.lru.expire(&call.args[1], Some(ms), call.now_ms),
        _ => remove_live(call.node, &call.args[1], call.now_ms),
    };
    Reply::Int(i64::from(done)).into()
}

pub(super) fn ttl(call: &mut Call<'_>) -> Outcome {
    let in_ms = call.args[0].eq_ignore_ascii_case(b"PTTL");
    let left = match call.node.lru.ttl_left(&call.args[1], call.now_ms) {
        None => -2,
        Some(None) => -1,
        Some(Some(ms)) if in_ms => i64::try_from(ms).unwrap_or(i64::MAX),
        // Rounded to the nearest second, as Redis rounds it.
        Some(Some(ms)) => i64::try_from(ms.saturating_add(500) / 1000).unwrap_or(i64::MAX),
    };
    Reply::Int(left).into()
}

pub(super) fn dbsize(call: &mut Call<'_>) -> Outcome {
    Reply::Int(call.node.lru.len() as i64).into()
}

pub(super) fn flushall(call: &mut Call<'_>) -> Outcome {
    match call.args[1..] {
        [] => {}
        [ref mode] if mode.eq_ignore_ascii_case(b"ASYNC") || mode.eq_ignore_ascii_case(b"SYNC") => {
        }
        _ => return syntax_error(),
    }
    // Fills read before now may predate writes this node no longer remembers.
    let processed = call.node.processed().lsn;
    call.node.lru.flush(processed);
    Reply::Ok.into()
}
