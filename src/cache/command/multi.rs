//! `MULTI`, `EXEC` and `DISCARD`, as Redis runs them: after `MULTI` a connection's
//! commands are queued (answered `+QUEUED`) and `EXEC` runs them one after the other with
//! no other client's command between them, answering an array of their replies. A command
//! refused while queued (unknown, wrong arity) makes `EXEC` discard them all. redis-py's
//! pipelines send `MULTI`/`EXEC` unless told `transaction=False`. `WATCH` is not offered:
//! a cache node's keys change under any client's feet as the log invalidates them.

use super::{run, Call, Outcome};
use crate::cache::resp::Reply;

/// Bytes one connection's queued commands may hold: a request's own bound (see
/// `cache::server`), since a transaction is a request spread over several. Each command
/// counts what holding it costs besides its arguments' bytes ([`COMMAND_COST`],
/// [`ARGUMENT_COST`]): a queue of small commands costs far more than their bytes.
const MAX_QUEUED_BYTES: usize = 96 << 20;
const COMMAND_COST: usize = 96;
const ARGUMENT_COST: usize = 48;

/// Commands queued since `MULTI`.
#[derive(Debug, Clone, Default)]
pub struct Queued {
    commands: Vec<Vec<Vec<u8>>>,
    bytes: usize,
    /// A command was refused while queued: `EXEC` runs none of them.
    spoiled: bool,
}

impl Queued {
    /// Queues `args`, or refuses them (spoiling the transaction) past the byte bound.
    pub(super) fn push(&mut self, args: Vec<Vec<u8>>) -> Outcome {
        let bytes = COMMAND_COST
            + args
                .iter()
                .map(|arg| arg.len() + ARGUMENT_COST)
                .sum::<usize>();
        if self.bytes + bytes > MAX_QUEUED_BYTES {
            self.spoiled = true;
            return Reply::Error(
                "ERR the commands queued since MULTI pass 96 MiB: run EXEC sooner".into(),
            )
            .into();
        }
        self.bytes += bytes;
        self.commands.push(args);
        Reply::Status("QUEUED").into()
    }

    /// A command was refused while queued.
    pub(super) fn spoil(&mut self) {
        self.spoiled = true;
    }

    /// What holding the queue costs, in bytes (see [`MAX_QUEUED_BYTES`]).
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }
}

/// What a refused `EXEC` answers: the transaction is discarded, and the refusal says why.
pub(super) fn aborted(refused: &Reply) -> Reply {
    let why = match refused {
        Reply::Error(text) => text.strip_prefix("ERR ").unwrap_or(text),
        _ => "",
    };
    Reply::Error(format!("EXECABORT Transaction discarded because of: {why}"))
}

pub(super) fn multi(call: &mut Call<'_>) -> Outcome {
    if call.session.queued.is_some() {
        return Reply::Error("ERR MULTI calls can not be nested".into()).into();
    }
    call.session.queued = Some(Queued::default());
    Reply::Ok.into()
}

pub(super) fn exec(call: &mut Call<'_>) -> Outcome {
    let Some(queued) = call.session.queued.take() else {
        return Reply::Error("ERR EXEC without MULTI".into()).into();
    };
    if queued.spoiled {
        return Reply::Error("EXECABORT Transaction discarded because of previous errors.".into())
            .into();
    }
    let replies = queued
        .commands
        .into_iter()
        .map(|args| run(call.node, call.session, args, call.now_ms).reply)
        .collect();
    Reply::Array(replies).into()
}

pub(super) fn discard(call: &mut Call<'_>) -> Outcome {
    match call.session.queued.take() {
        Some(_) => Reply::Ok.into(),
        None => Reply::Error("ERR DISCARD without MULTI".into()).into(),
    }
}
