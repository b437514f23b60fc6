//! Connection and server commands: what redis-cli, redis-py and redis-benchmark send
//! around the data (HELLO, AUTH, CLIENT, CONFIG GET, COMMAND, INFO).

use bytes::Bytes;

use super::{integer, syntax_error, Call, Outcome};
use crate::cache::resp::Reply;

fn text(value: &str) -> Reply {
    Reply::Bulk(Bytes::copy_from_slice(value.as_bytes()))
}

pub(super) fn ping(call: &mut Call<'_>) -> Outcome {
    match call.args.len() {
        1 => Reply::Status("PONG").into(),
        2 => Reply::Bulk(Bytes::copy_from_slice(&call.args[1])).into(),
        _ => super::wrong_arity(b"ping").into(),
    }
}

pub(super) fn echo(call: &mut Call<'_>) -> Outcome {
    Reply::Bulk(Bytes::copy_from_slice(&call.args[1])).into()
}

pub(super) fn quit(_: &mut Call<'_>) -> Outcome {
    Outcome {
        reply: Reply::Ok,
        close: true,
    }
}

pub(super) fn select(call: &mut Call<'_>) -> Outcome {
    match integer(&call.args[1]) {
        Some(0) => Reply::Ok.into(),
        Some(_) => Reply::Error("ERR DB index is out of range".into()).into(),
        None => super::not_an_integer(),
    }
}

/// Checks `password` against the node's token (any user name: there is one user).
fn authenticate(call: &mut Call<'_>, user: Option<&[u8]>, password: &[u8]) -> Result<(), Reply> {
    // One user, as in a Redis configured with `requirepass`: `default`.
    let matches = user.is_none_or(|user| user == b"default")
        && call
            .node
            .options
            .token
            .as_ref()
            .is_none_or(|token| constant_time_eq(token.as_bytes(), password));
    if matches {
        call.session.authenticated = true;
        Ok(())
    } else {
        Err(Reply::Error(
            "WRONGPASS invalid username-password pair or user is disabled.".into(),
        ))
    }
}

/// Compares without an early exit, so the time taken says nothing about the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(super) fn auth(call: &mut Call<'_>) -> Outcome {
    let (user, password) = match call.args.len() {
        2 => (None, call.args[1].clone()),
        3 => (Some(call.args[1].clone()), call.args[2].clone()),
        _ => return syntax_error(),
    };
    if call.node.options.token.is_none() {
        return Reply::Error(
            "ERR AUTH <password> called without any password configured for the default \
             user. Are you sure your configuration is correct?"
                .into(),
        )
        .into();
    }
    match authenticate(call, user.as_deref(), &password) {
        Ok(()) => Reply::Ok.into(),
        Err(refused) => refused.into(),
    }
}

pub(super) fn hello(call: &mut Call<'_>) -> Outcome {
    let mut protocol = call.session.protocol;
    // Copied: HELLO is rare, and `authenticate` needs the call while options are read.
    let args = call.args.clone();
    let mut rest = args[1..].iter();
    if let Some(version) = rest.next() {
        match integer(version) {
            Some(v @ (2 | 3)) => protocol = v as u8,
            Some(_) => {
                return Reply::Error("NOPROTO unsupported protocol version".into()).into();
            }
            None => {
                return Reply::Error(
                    "ERR Protocol version is not an integer or out of range".into(),
                )
                .into();
            }
        }
    }
    let mut name = None;
    while let Some(option) = rest.next() {
        match option.to_ascii_uppercase().as_slice() {
            b"AUTH" => {
                let (Some(user), Some(password)) = (rest.next(), rest.next()) else {
                    return syntax_error();
                };
                let (user, password) = (user.clone(), password.clone());
                if let Err(refused) = authenticate(call, Some(&user), &password) {
                    return refused.into();
                }
            }
            b"SETNAME" => {
                let Some(given) = rest.next() else {
                    return syntax_error();
                };
                match client_name(given) {
                    Ok(given) => name = Some(given),
                    Err(refused) => return refused.into(),
                }
            }
            _ => return syntax_error(),
        }
    }
    if !call.session.authenticated {
        return Reply::Error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
             HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client \
             and select the RESP protocol version at the same time"
                .into(),
        )
        .into();
    }
    call.session.protocol = protocol;
    if let Some(name) = name {
        call.session.name = name;
    }
    let fields = vec![
        (text("server"), text("replikv")),
        (text("version"), text(env!("CARGO_PKG_VERSION"))),
        (text("proto"), Reply::Int(i64::from(protocol))),
        (text("id"), Reply::Int(call.session.id as i64)),
        (text("mode"), text("standalone")),
        (text("role"), text("master")),
        (text("modules"), Reply::Array(Vec::new())),
    ];
    Reply::Map(fields).into()
}

pub(super) fn client(call: &mut Call<'_>) -> Outcome {
    let sub = call.args[1].to_ascii_uppercase();
    match (sub.as_slice(), call.args.len()) {
        (b"SETINFO", 4) => Reply::Ok.into(),
        (b"SETNAME", 3) => match client_name(&call.args[2]) {
            Ok(name) => {
                call.session.name = name;
                Reply::Ok.into()
            }
            Err(refused) => refused.into(),
        },
        (b"GETNAME", 2) => match &call.session.name {
            Some(name) => text(name).into(),
            None => Reply::Nil.into(),
        },
        (b"ID", 2) => Reply::Int(call.session.id as i64).into(),
        (b"HELP", 2) => Reply::Array(
            [
                "CLIENT <subcommand> [<arg> ...]. Subcommands are:",
                "GETNAME",
                "    Return the name of the current connection.",
                "ID",
                "    Return the ID of the current connection.",
                "SETNAME <name>",
                "    Assign the name <name> to the current connection.",
                "SETINFO <LIB-NAME|LIB-VER> <value>",
                "    Accepted and ignored (client libraries send it).",
                "HELP",
                "    Print this help.",
            ]
            .into_iter()
            .map(Reply::Status)
            .collect(),
        )
        .into(),
        (b"SETINFO" | b"SETNAME" | b"GETNAME" | b"ID" | b"HELP", _) => {
            let name = [b"client|".as_slice(), &sub].concat();
            super::wrong_arity(&name).into()
        }
        _ => Reply::Error(format!(
            "ERR unknown subcommand '{}'. Try CLIENT HELP.",
            String::from_utf8_lossy(&call.args[1])
        ))
        .into(),
    }
}

/// `CONFIG GET pattern…`: the few settings clients ask for (redis-benchmark reads `save`
/// and `appendonly`); `CONFIG SET` is refused, the node's settings are its options.
pub(super) fn config(call: &mut Call<'_>) -> Outcome {
    if !call.args[1].eq_ignore_ascii_case(b"GET") {
        return Reply::Error("ERR CONFIG supports GET only on a replikv cache node".into()).into();
    }
    if call.args.len() < 3 {
        return super::wrong_arity(b"config|get").into();
    }
    let bounds = call.node.lru.bounds();
    let settings = [
        ("maxmemory", bounds.max_bytes.unwrap_or(0).to_string()),
        ("maxmemory-policy", "allkeys-lru".to_owned()),
        ("save", String::new()),
        ("appendonly", "no".to_owned()),
        ("databases", "1".to_owned()),
    ];
    let mut pairs = Vec::new();
    for pattern in &call.args[2..] {
        for (name, value) in &settings {
            if glob_matches(pattern, name.as_bytes()) && !pairs.iter().any(|(n, _)| n == name) {
                pairs.push((*name, value.clone()));
            }
        }
    }
    Reply::Map(
        pairs
            .into_iter()
            .map(|(name, value)| (text(name), text(&value)))
            .collect(),
    )
    .into()
}

/// Redis's glob, reduced to what CONFIG GET patterns use: `*` and `?`, case-insensitive.
/// Matched row by row (no backtracking), so no pattern costs more than its length times
/// the name's.
pub(super) fn glob_matches(pattern: &[u8], name: &[u8]) -> bool {
    // matched[j]: the pattern so far matches the first j bytes of the name.
    let mut matched = vec![false; name.len() + 1];
    matched[0] = true;
    for &p in pattern {
        let mut next = vec![false; name.len() + 1];
        for j in 0..=name.len() {
            next[j] = match p {
                b'*' => matched[j] || (j > 0 && next[j - 1]),
                _ => j > 0 && matched[j - 1] && (p == b'?' || p.eq_ignore_ascii_case(&name[j - 1])),
            };
        }
        matched = next;
    }
    matched[name.len()]
}

/// `COMMAND` (and `COMMAND DOCS`, which redis-cli sends on start): an empty list, so that
/// clients fall back to their defaults.
/// `COMMAND COUNT` counts the commands a node runs; the other forms (the commands' docs)
/// answer an empty list, which clients take for "no docs".
pub(super) fn command(call: &mut Call<'_>) -> Outcome {
    match call.args.get(1) {
        Some(sub) if sub.eq_ignore_ascii_case(b"COUNT") => match call.args.len() {
            2 => Reply::Int(super::COMMANDS.len() as i64).into(),
            _ => super::wrong_arity(b"command|count").into(),
        },
        _ => Reply::Array(Vec::new()).into(),
    }
}

/// `INFO [section ...]`: the sections named (case-insensitive; `all`, `everything` and
/// `default` name them all), or every one; a section the node has none of adds nothing.
pub(super) fn info(call: &mut Call<'_>) -> Outcome {
    let text = call.node.info();
    let wanted: Vec<String> = call.args[1..]
        .iter()
        .map(|name| String::from_utf8_lossy(name).to_ascii_lowercase())
        .collect();
    let everything = ["all", "everything", "default"];
    if wanted.is_empty()
        || wanted
            .iter()
            .any(|name| everything.contains(&name.as_str()))
    {
        return Reply::Bulk(Bytes::from(text)).into();
    }
    let mut picked = String::new();
    for section in text.split("\r\n\r\n") {
        let name = section
            .strip_prefix("# ")
            .and_then(|s| s.split("\r\n").next())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if wanted.contains(&name) {
            if !picked.is_empty() {
                picked.push_str("\r\n");
            }
            picked.push_str(section.trim_end_matches("\r\n"));
            picked.push_str("\r\n");
        }
    }
    Reply::Bulk(Bytes::from(picked)).into()
}

/// A client's name as `CLIENT SETNAME` and `HELLO ... SETNAME` take it, as Redis does:
/// printable ASCII without spaces (a name with a newline would break every listing that
/// shows it), and the empty name clears it.
fn client_name(given: &[u8]) -> Result<Option<String>, Reply> {
    if given.iter().any(|b| !(b'!'..=b'~').contains(b)) {
        return Err(Reply::Error(
            "ERR Client names cannot contain spaces, newlines or special characters.".to_owned(),
        ));
    }
    Ok((!given.is_empty()).then(|| String::from_utf8_lossy(given).into_owned()))
}
