//! Redis commands on a node: one pure function from a command's arguments (and the
//! connection's session) to its reply. Unknown commands, wrong arity and bad arguments get
//! the error texts Redis gives; the connection and the node go on.

mod connection;
mod keys;
mod multi;
mod versioned;

use std::fmt::Write as _;

use super::node::Node;
use super::resp::Reply;

/// What one connection has negotiated.
#[derive(Debug, Clone)]
pub struct Session {
    /// 2 or 3 (`HELLO`).
    pub protocol: u8,
    /// Whether it may run more than AUTH, HELLO, PING and QUIT.
    pub authenticated: bool,
    /// The name it gave (`CLIENT SETNAME`, `HELLO … SETNAME`).
    pub name: Option<String>,
    /// Its id, as `CLIENT ID` and `HELLO` report it.
    pub id: u64,
    /// The commands queued since `MULTI`, if it is in one.
    queued: Option<multi::Queued>,
}

impl Session {
    /// What the commands it queued since `MULTI` hold, in bytes: requests not run yet,
    /// which the node counts with those still arriving.
    #[must_use]
    pub fn queued_bytes(&self) -> usize {
        self.queued.as_ref().map_or(0, multi::Queued::bytes)
    }

    /// A new connection's session: RESP2, authenticated only if the node has no token.
    #[must_use]
    pub fn new(id: u64, node: &Node) -> Self {
        Self {
            protocol: 2,
            authenticated: node.options.token.is_none(),
            name: None,
            id,
            queued: None,
        }
    }
}

/// A command's reply, and whether the connection closes after sending it.
#[derive(Debug)]
pub struct Outcome {
    /// What to answer.
    pub reply: Reply,
    /// Close once it is sent (`QUIT`).
    pub close: bool,
}

impl From<Reply> for Outcome {
    fn from(reply: Reply) -> Self {
        Self {
            reply,
            close: false,
        }
    }
}

/// Runs one command (name first in `args`, never empty) at `now_ms`. It takes the
/// arguments: a stored key or value keeps their bytes without a copy.
pub fn execute(node: &mut Node, session: &mut Session, args: Vec<Vec<u8>>, now_ms: u64) -> Outcome {
    let outcome = run(node, session, args, now_ms);
    node.count_request(matches!(outcome.reply, Reply::Error(_)));
    outcome
}

fn run(node: &mut Node, session: &mut Session, args: Vec<Vec<u8>>, now_ms: u64) -> Outcome {
    // Matched without upper-casing a copy: this runs for every command of a pipeline.
    let found = COMMANDS
        .iter()
        .find(|(n, _, _)| n.as_bytes().eq_ignore_ascii_case(&args[0]));
    let refused = match found {
        None => Some(unknown(&args)),
        Some(&(name, arity, _)) if !arity_ok(arity, args.len()) => {
            Some(wrong_arity(name.as_bytes()))
        }
        Some(&(name, ..))
            if !session.authenticated && !matches!(name, "AUTH" | "HELLO" | "PING" | "QUIT") =>
        {
            Some(Reply::Error("NOAUTH Authentication required.".into()))
        }
        Some(_) => None,
    };
    if let Some(refused) = refused {
        // A refused EXEC discards the transaction, saying why, as Redis does.
        if found.is_some_and(|&(name, ..)| name == "EXEC") {
            session.queued = None;
            return multi::aborted(&refused).into();
        }
        if let Some(queued) = session.queued.as_mut() {
            queued.spoil();
        }
        return refused.into();
    }
    let &(name, _, handler) = found.expect("invariant: refused above if not found");
    if let Some(queued) = session.queued.as_mut() {
        if !matches!(name, "EXEC" | "DISCARD" | "MULTI" | "QUIT") {
            return queued.push(args);
        }
    }
    handler(&mut Call {
        node,
        session,
        args,
        now_ms,
    })
}

/// What a handler gets.
struct Call<'a> {
    node: &'a mut Node,
    session: &'a mut Session,
    args: Vec<Vec<u8>>,
    now_ms: u64,
}

type Handler = fn(&mut Call<'_>) -> Outcome;

/// `(name, arity, handler)`: arity as Redis gives it, negative for "at least".
const COMMANDS: &[(&str, i32, Handler)] = &[
    ("GET", 2, keys::get),
    ("SET", -3, keys::set),
    ("DEL", -2, keys::del),
    ("UNLINK", -2, keys::del),
    ("EXISTS", -2, keys::exists),
    ("MGET", -2, keys::mget),
    ("MSET", -3, keys::mset),
    ("EXPIRE", -3, keys::expire),
    ("PEXPIRE", -3, keys::expire),
    ("EXPIREAT", -3, keys::expire),
    ("PEXPIREAT", -3, keys::expire),
    ("TTL", 2, keys::ttl),
    ("PTTL", 2, keys::ttl),
    ("DBSIZE", 1, keys::dbsize),
    ("FLUSHALL", -1, keys::flushall),
    ("FLUSHDB", -1, keys::flushall),
    ("PING", -1, connection::ping),
    ("ECHO", 2, connection::echo),
    ("QUIT", -1, connection::quit),
    ("HELLO", -1, connection::hello),
    ("AUTH", -2, connection::auth),
    ("CLIENT", -2, connection::client),
    ("CONFIG", -2, connection::config),
    ("COMMAND", -1, connection::command),
    ("SELECT", 2, connection::select),
    ("INFO", -1, connection::info),
    ("MULTI", 1, multi::multi),
    ("EXEC", 1, multi::exec),
    ("DISCARD", 1, multi::discard),
    ("RKV.GET", 2, versioned::get),
    ("RKV.FILL", -5, versioned::fill),
    ("RKV.INVALIDATE", -2, versioned::invalidate),
    ("RKV.INVALIDATEPREFIX", 2, versioned::invalidate_prefix),
    ("RKV.POSITION", 1, versioned::position),
    ("RKV.FOLLOW", 2, versioned::follow),
];

fn arity_ok(arity: i32, given: usize) -> bool {
    let given = i32::try_from(given).unwrap_or(i32::MAX);
    if arity < 0 {
        given >= -arity
    } else {
        given == arity
    }
}

fn printable(arg: &[u8]) -> String {
    let text = String::from_utf8_lossy(arg);
    text.chars().take(128).collect()
}

fn unknown(args: &[Vec<u8>]) -> Reply {
    // Each argument followed by a space, the last one too, as Redis words it.
    let mut rest = String::new();
    for arg in args[1..].iter().take(8) {
        let _ = write!(rest, "'{}' ", printable(arg));
    }
    Reply::Error(format!(
        "ERR unknown command '{}', with args beginning with: {rest}",
        printable(&args[0]),
    ))
}

fn wrong_arity(name: &[u8]) -> Reply {
    Reply::Error(format!(
        "ERR wrong number of arguments for '{}' command",
        String::from_utf8_lossy(name).to_ascii_lowercase()
    ))
}

fn syntax_error() -> Outcome {
    Reply::Error("ERR syntax error".into()).into()
}

fn not_an_integer() -> Outcome {
    Reply::Error("ERR value is not an integer or out of range".into()).into()
}

/// An argument as an integer, in Redis's strict decimal form: an optional `-`, then digits
/// with no leading zero (`+5`, `05` and `-0` are not integers to Redis).
fn integer(arg: &[u8]) -> Option<i64> {
    let digits = arg.strip_prefix(b"-").unwrap_or(arg);
    let canonical = match digits {
        [b'0'] => arg.len() == 1,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    canonical
        .then(|| std::str::from_utf8(arg).ok()?.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests;
