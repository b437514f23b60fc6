use super::*;
use crate::cache::lru::{Bounds, OnWrite, Version};
use crate::cache::node::NodeOptions;

fn node(token: Option<&str>) -> Node {
    Node::new(NodeOptions {
        bounds: Bounds {
            capacity: 100,
            max_bytes: None,
            tombstones: 100,
        },
        on_write: OnWrite::Drop,
        ttl_ms: None,
        token: token.map(str::to_owned),
    })
}

struct Client {
    node: Node,
    session: Session,
    now_ms: u64,
}

impl Client {
    fn new(token: Option<&str>) -> Self {
        let node = node(token);
        let session = Session::new(1, &node);
        Self {
            node,
            session,
            now_ms: 0,
        }
    }

    fn run(&mut self, line: &str) -> Reply {
        let args: Vec<Vec<u8>> = line.split(' ').map(|a| a.as_bytes().to_vec()).collect();
        execute(&mut self.node, &mut self.session, args, self.now_ms).reply
    }
}

fn bulk(text: &str) -> Reply {
    Reply::Bulk(bytes::Bytes::copy_from_slice(text.as_bytes()))
}

fn error_starts(reply: &Reply, prefix: &str) -> bool {
    matches!(reply, Reply::Error(text) if text.starts_with(prefix))
}

#[test]
fn set_get_del_exists_behave_as_in_redis() {
    let mut c = Client::new(None);
    assert_eq!(c.run("SET k v"), Reply::Ok);
    assert_eq!(c.run("GET k"), bulk("v"));
    assert_eq!(c.run("EXISTS k k missing"), Reply::Int(2));
    assert_eq!(c.run("DEL k missing"), Reply::Int(1));
    assert_eq!(c.run("GET k"), Reply::Nil);
    assert_eq!(c.run("DBSIZE"), Reply::Int(0));
}

#[test]
fn set_get_answers_the_value_before_whether_it_set_or_not() {
    let mut c = Client::new(None);
    assert_eq!(c.run("SET k v GET"), Reply::Nil);
    assert_eq!(c.run("SET k w GET"), bulk("v"));
    assert_eq!(c.run("GET k"), bulk("w"));
    // Not set (NX on a present key), yet the old value is the answer, as in Redis 7.
    assert_eq!(c.run("SET k x NX GET"), bulk("w"));
    assert_eq!(c.run("GET k"), bulk("w"));
    assert_eq!(c.run("SET gone x XX GET"), Reply::Nil);
    assert_eq!(c.run("EXISTS gone"), Reply::Int(0));
    assert_eq!(c.run("SET k y GET get EX 5"), bulk("w"));
    assert_eq!(c.run("TTL k"), Reply::Int(5));
    assert!(error_starts(&c.run("SET k z GET EX"), "ERR syntax error"));
    assert_eq!(c.run("GET k"), bulk("y"));
}

#[test]
fn set_nx_xx_and_expiry_options() {
    let mut c = Client::new(None);
    assert_eq!(c.run("SET k v XX"), Reply::Nil);
    assert_eq!(c.run("SET k v NX"), Reply::Ok);
    assert_eq!(c.run("SET k w NX"), Reply::Nil);
    assert_eq!(c.run("SET k w XX PX 1500"), Reply::Ok);
    assert_eq!(c.run("PTTL k"), Reply::Int(1500));
    assert_eq!(c.run("TTL k"), Reply::Int(2));
    // Expired once the clock is past the deadline, as in Redis.
    c.now_ms = 1500;
    assert_eq!(c.run("PTTL k"), Reply::Int(0));
    c.now_ms = 1501;
    assert_eq!(c.run("GET k"), Reply::Nil);
    assert_eq!(c.run("TTL k"), Reply::Int(-2));
    assert!(error_starts(
        &c.run("SET k v EX 0"),
        "ERR invalid expire time"
    ));
    assert!(error_starts(
        &c.run("SET k v EX x"),
        "ERR value is not an integer"
    ));
    assert!(error_starts(&c.run("SET k v NX XX"), "ERR syntax error"));
    assert!(error_starts(&c.run("SET k v EX"), "ERR syntax error"));
    // A TTL that would end past the largest signed 64-bit millisecond count, as in Redis.
    let past_the_end = format!("SET k v PX {}", i64::MAX);
    assert!(error_starts(
        &c.run(&past_the_end),
        "ERR invalid expire time"
    ));
    let fill = format!("RKV.FILL f 1 1 v PX {}", i64::MAX);
    assert!(error_starts(&c.run(&fill), "ERR invalid expire time"));
}

#[test]
fn expire_options_set_a_ttl_only_when_their_condition_holds_as_in_redis_7() {
    let mut c = Client::new(None);
    c.run("SET k v");
    // A key without a TTL never ends: GT is never later, LT always earlier.
    assert_eq!(c.run("EXPIRE k 100 XX"), Reply::Int(0));
    assert_eq!(c.run("EXPIRE k 100 GT"), Reply::Int(0));
    assert_eq!(c.run("TTL k"), Reply::Int(-1));
    assert_eq!(c.run("EXPIRE k 100 NX"), Reply::Int(1));
    assert_eq!(c.run("EXPIRE k 50 NX"), Reply::Int(0));
    assert_eq!(c.run("EXPIRE k 50 gt"), Reply::Int(0));
    assert_eq!(c.run("EXPIRE k 200 XX GT"), Reply::Int(1));
    assert_eq!(c.run("TTL k"), Reply::Int(200));
    assert_eq!(c.run("EXPIRE k 300 LT"), Reply::Int(0));
    assert_eq!(c.run("PEXPIRE k 1000 LT"), Reply::Int(1));
    assert_eq!(c.run("PTTL k"), Reply::Int(1000));
    // A TTL already passed deletes the key only if the condition holds.
    assert_eq!(c.run("EXPIRE k -1 GT"), Reply::Int(0));
    assert_eq!(c.run("EXISTS k"), Reply::Int(1));
    assert_eq!(c.run("EXPIRE k -1 LT"), Reply::Int(1));
    assert_eq!(c.run("EXISTS k"), Reply::Int(0));
    assert_eq!(c.run("EXPIRE missing 10 NX"), Reply::Int(0));
    assert_eq!(
        c.run("EXPIRE k 10 NX XX"),
        Reply::Error("ERR NX and XX, GT or LT options at the same time are not compatible".into())
    );
    assert_eq!(
        c.run("EXPIRE k 10 GT LT"),
        Reply::Error("ERR GT and LT options at the same time are not compatible".into())
    );
    assert_eq!(
        c.run("EXPIRE k 10 SOON"),
        Reply::Error("ERR Unsupported option SOON".into())
    );
}

#[test]
fn expireat_and_the_at_options_of_set_end_keys_at_a_unix_time_as_in_redis_7() {
    let mut c = Client::new(None);
    c.now_ms = 1_000_000;
    c.run("SET k v");
    assert_eq!(c.run("EXPIREAT k 1100"), Reply::Int(1));
    assert_eq!(c.run("PTTL k"), Reply::Int(100_000));
    assert_eq!(c.run("PEXPIREAT k 1000500 LT"), Reply::Int(1));
    assert_eq!(c.run("PTTL k"), Reply::Int(500));
    assert_eq!(c.run("EXPIREAT k 1 GT"), Reply::Int(0));
    // A time already past deletes the key.
    assert_eq!(c.run("PEXPIREAT k 1000000"), Reply::Int(1));
    assert_eq!(c.run("EXISTS k"), Reply::Int(0));
    assert_eq!(c.run("EXPIREAT missing 99999"), Reply::Int(0));
    assert_eq!(c.run("SET k v EXAT 1001"), Reply::Ok);
    assert_eq!(c.run("PTTL k"), Reply::Int(1000));
    assert_eq!(c.run("SET k w PXAT 1000250 XX"), Reply::Ok);
    assert_eq!(c.run("PTTL k"), Reply::Int(250));
    // KEEPTTL keeps what the replaced key had left; none for a new key.
    assert_eq!(c.run("SET k x KEEPTTL"), Reply::Ok);
    assert_eq!(
        (c.run("GET k"), c.run("PTTL k")),
        (bulk("x"), Reply::Int(250))
    );
    assert_eq!(c.run("SET fresh v KEEPTTL"), Reply::Ok);
    assert_eq!(c.run("PTTL fresh"), Reply::Int(-1));
    // Stored and gone at once when the time is past, as in Redis; NX still applies.
    assert_eq!(c.run("SET k y PXAT 5"), Reply::Ok);
    assert_eq!(c.run("EXISTS k"), Reply::Int(0));
    assert_eq!(c.run("SET fresh y NX EXAT 5"), Reply::Nil);
    assert_eq!(c.run("GET fresh"), bulk("v"));
    for refused in [
        "SET k v EX 5 PXAT 9",
        "SET k v KEEPTTL EX 5",
        "SET k v EXAT 9 KEEPTTL",
    ] {
        assert!(
            error_starts(&c.run(refused), "ERR syntax error"),
            "{refused}"
        );
    }
    for invalid in ["SET k v EXAT 0", "SET k v PXAT -1"] {
        assert!(
            error_starts(&c.run(invalid), "ERR invalid expire time in 'set'"),
            "{invalid}"
        );
    }
    assert_eq!(c.run(&format!("SET k v PXAT {}", i64::MAX)), Reply::Ok);
    assert!(error_starts(
        &c.run(&format!("SET k v EXAT {}", i64::MAX)),
        "ERR invalid expire time in 'set'"
    ));
}

#[test]
fn expire_times_past_a_signed_64_bit_millisecond_count_are_refused_as_in_redis_7() {
    let mut c = Client::new(None);
    c.now_ms = 1_000;
    c.run("SET k v");
    // Seconds whose milliseconds overflow either way; a base that overflows the sum.
    for (command, count) in [
        ("EXPIRE", i64::MIN),
        ("EXPIRE", i64::MIN / 1000 - 1),
        ("EXPIREAT", i64::MIN),
        ("EXPIREAT", i64::MAX),
        ("PEXPIRE", i64::MAX),
    ] {
        let name = command.to_lowercase();
        assert!(
            error_starts(
                &c.run(&format!("{command} k {count}")),
                &format!("ERR invalid expire time in '{name}'")
            ),
            "{command} {count}"
        );
    }
    assert_eq!(
        c.run("PTTL k"),
        Reply::Int(-1),
        "no refused command set a TTL"
    );
    // What fits deletes the key (a time long past) or sets a distant end.
    assert_eq!(c.run(&format!("PEXPIREAT k {}", i64::MAX)), Reply::Int(1));
    assert_eq!(
        c.run(&format!("EXPIRE k {}", i64::MIN / 1000)),
        Reply::Int(1)
    );
    assert_eq!(c.run("EXISTS k"), Reply::Int(0));
    c.run("SET k v");
    assert_eq!(c.run(&format!("PEXPIREAT k {}", i64::MIN)), Reply::Int(1));
    assert_eq!(c.run("EXISTS k"), Reply::Int(0));
}

#[test]
fn expire_ttl_and_persistent_keys() {
    let mut c = Client::new(None);
    c.run("SET k v");
    assert_eq!(c.run("TTL k"), Reply::Int(-1));
    assert_eq!(c.run("EXPIRE k 10"), Reply::Int(1));
    assert_eq!(c.run("PTTL k"), Reply::Int(10_000));
    assert_eq!(c.run("PEXPIRE missing 10"), Reply::Int(0));
    c.now_ms = 1;
    for command in ["PEXPIRE", "EXPIRE"] {
        assert!(error_starts(
            &c.run(&format!("{command} k {}", i64::MAX)),
            &format!("ERR invalid expire time in '{}'", command.to_lowercase())
        ));
    }
    assert_eq!(c.run("EXPIRE k -1"), Reply::Int(1));
    assert_eq!(c.run("EXISTS k"), Reply::Int(0));
    // A key whose TTL passed is gone to DEL and EXPIRE too, though not dropped yet.
    for gone in ["DEL k", "UNLINK k", "EXPIRE k 0", "PEXPIRE k -5"] {
        c.run("SET k v PX 50");
        c.now_ms += 120;
        assert_eq!(c.run(gone), Reply::Int(0), "{gone}");
    }
    // Integers as Redis writes them: no sign but '-', no leading zero.
    c.run("SET k v");
    for odd in ["+5", "05", "-0", "5x", ""] {
        assert!(
            error_starts(
                &c.run(&format!("EXPIRE k {odd}")),
                "ERR value is not an integer"
            ),
            "{odd:?}"
        );
    }
    assert_eq!(
        c.run("PTTL k"),
        Reply::Int(-1),
        "no refused EXPIRE set a TTL"
    );
    assert_eq!(c.run("EXPIRE k 0"), Reply::Int(1));
}

#[test]
fn mset_is_all_or_nothing_against_the_byte_bound() {
    let node = Node::new(NodeOptions {
        bounds: Bounds {
            capacity: 100,
            max_bytes: Some(1000),
            tombstones: 100,
        },
        on_write: OnWrite::Drop,
        ttl_ms: None,
        token: None,
    });
    let session = Session::new(1, &node);
    let mut c = Client {
        node,
        session,
        now_ms: 0,
    };
    let too_large = "x".repeat(2000);
    assert!(error_starts(
        &c.run(&format!("MSET a 1 b {too_large} c 3")),
        "OOM"
    ));
    assert_eq!(c.run("DBSIZE"), Reply::Int(0), "no pair was stored");
    assert_eq!(c.run("MSET a 1 c 3"), Reply::Ok);
}

#[test]
fn mset_and_mget() {
    let mut c = Client::new(None);
    assert_eq!(c.run("MSET a 1 b 2"), Reply::Ok);
    assert_eq!(
        c.run("MGET a missing b"),
        Reply::Array(vec![bulk("1"), Reply::Nil, bulk("2")])
    );
    assert!(error_starts(
        &c.run("MSET a 1 b"),
        "ERR wrong number of arguments"
    ));
}

#[test]
fn unknown_commands_and_wrong_arity_get_redis_errors() {
    let mut c = Client::new(None);
    // Word for word as Redis says it, a space after each argument included.
    assert_eq!(
        c.run("NOPE a b"),
        Reply::Error("ERR unknown command 'NOPE', with args beginning with: 'a' 'b' ".into())
    );
    assert!(error_starts(
        &c.run("GET"),
        "ERR wrong number of arguments for 'get'"
    ));
    assert!(error_starts(
        &c.run("GET a b"),
        "ERR wrong number of arguments"
    ));
    assert_eq!(c.node.commands, (3, 3));
    assert_eq!(c.run("PING"), Reply::Status("PONG"));
}

#[test]
fn a_token_allows_only_auth_hello_ping_and_quit_until_given() {
    let mut c = Client::new(Some("s3cret"));
    assert_eq!(c.run("PING"), Reply::Status("PONG"));
    assert!(error_starts(&c.run("GET k"), "NOAUTH"));
    assert!(error_starts(&c.run("HELLO 3"), "NOAUTH"));
    assert!(error_starts(&c.run("AUTH wrong"), "WRONGPASS"));
    // One user, `default`, as in a Redis with `requirepass`.
    assert!(error_starts(&c.run("AUTH anyone s3cret"), "WRONGPASS"));
    assert!(error_starts(
        &c.run("HELLO 3 AUTH anyone s3cret"),
        "WRONGPASS"
    ));
    assert!(error_starts(&c.run("GET k"), "NOAUTH"));
    assert!(matches!(
        c.run("HELLO 3 AUTH default s3cret"),
        Reply::Map(_)
    ));
    assert_eq!(c.session.protocol, 3);
    assert_eq!(c.run("GET k"), Reply::Nil);
}

#[test]
fn hello_switches_protocols_and_refuses_unknown_versions() {
    let mut c = Client::new(None);
    let Reply::Map(fields) = c.run("HELLO 3 SETNAME job") else {
        panic!("HELLO answers a map");
    };
    assert!(fields.contains(&(bulk("proto"), Reply::Int(3))));
    assert_eq!(c.session.name.as_deref(), Some("job"));
    assert!(error_starts(&c.run("HELLO 4"), "NOPROTO"));
    assert_eq!(c.session.protocol, 3);
    c.run("HELLO 2");
    assert_eq!(c.session.protocol, 2);
}

#[test]
fn client_config_and_command_answer_what_clients_ask_on_connect() {
    let mut c = Client::new(None);
    assert_eq!(c.run("CLIENT SETINFO lib-name redis-py"), Reply::Ok);
    assert_eq!(c.run("CLIENT SETNAME me"), Reply::Ok);
    assert_eq!(c.run("CLIENT GETNAME"), bulk("me"));
    assert_eq!(
        c.run("CONFIG GET save"),
        Reply::Map(vec![(bulk("save"), bulk(""))])
    );
    let Reply::Map(all) = c.run("CONFIG GET *") else {
        panic!("CONFIG GET answers a map");
    };
    assert!(all.len() >= 4);
    assert_eq!(c.run("COMMAND DOCS"), Reply::Array(vec![]));
    assert!(error_starts(
        &c.run("CLIENT KILL x"),
        "ERR unknown subcommand"
    ));
}

#[test]
fn info_reports_redis_counters_and_ours() {
    let mut c = Client::new(None);
    c.run("SET k v");
    c.run("GET k");
    c.run("GET missing");
    let Reply::Bulk(info) = c.run("INFO") else {
        panic!("INFO answers a bulk string");
    };
    let info = String::from_utf8(info.to_vec()).unwrap();
    for line in [
        "keyspace_hits:1",
        "keyspace_misses:1",
        "evicted_keys:0",
        "expired_keys:0",
    ] {
        assert!(info.contains(line), "{line} in {info}");
    }
    assert!(info.contains("stale_fills_refused:0"));
}

#[test]
fn a_versioned_fill_is_refused_once_a_newer_write_is_known() {
    let mut c = Client::new(None);
    c.node.lru.processed_through(Version { epoch: 1, lsn: 7 });
    // A miss reports the position the reader's source must reach.
    assert_eq!(
        c.run("RKV.GET t:s:k"),
        Reply::Array(vec![Reply::Nil, Reply::Int(1), Reply::Int(7)])
    );
    c.node.lru.written(
        &bytes::Bytes::from_static(b"t:s:k"),
        None,
        Version { epoch: 1, lsn: 9 },
        0,
    );
    assert_eq!(c.run("RKV.FILL t:s:k 1 8 old"), Reply::Int(0));
    assert_eq!(c.run("RKV.FILL t:s:k 1 9 new PX 1000"), Reply::Int(1));
    assert_eq!(
        c.run("RKV.GET t:s:k"),
        Reply::Array(vec![bulk("new"), Reply::Int(1), Reply::Int(9)])
    );
    assert!(error_starts(
        &c.run("RKV.FILL t:s:k x 9 v"),
        "ERR the version"
    ));
    assert!(error_starts(
        &c.run("RKV.FILL t:s:k 1 9 v PX"),
        "ERR syntax error"
    ));
    // Following a log, a fill a million entries past what the node processed is refused
    // (no source is that far ahead): it would pin its value against the writes to come.
    c.node.following.primary = Some("127.0.0.1:7400".into());
    let far = format!("RKV.FILL t:s:far 1 {} v", 7 + (1 << 20) + 1);
    assert_eq!(c.run(&far), Reply::Int(0));
    let near = format!("RKV.FILL t:s:far 1 {} v", 7 + (1 << 20));
    assert_eq!(c.run(&near), Reply::Int(1));
    assert_eq!(c.run("RKV.INVALIDATE t:s:far"), Reply::Int(1));
    c.node.following.primary = None;
    assert_eq!(
        c.run(&far),
        Reply::Int(1),
        "a node that follows no log trusts its clients"
    );
    assert_eq!(c.run("RKV.INVALIDATE t:s:far"), Reply::Int(1));
    assert_eq!(c.run("RKV.INVALIDATE t:s:k other"), Reply::Int(1));
    assert_eq!(
        c.run("RKV.POSITION"),
        Reply::Array(vec![Reply::Int(1), Reply::Int(7), bulk("none")])
    );
}

#[test]
fn rkv_follow_asks_a_following_node_to_follow_another_primary() {
    let mut c = Client::new(None);
    assert!(error_starts(
        &c.run("RKV.FOLLOW 127.0.0.1:7400"),
        "ERR this node follows no log"
    ));
    c.node.following.primary = Some("127.0.0.1:7400".into());
    assert!(error_starts(&c.run("RKV.FOLLOW nowhere"), "ERR "));
    assert_eq!(c.node.following.wanted, None);
    assert_eq!(c.run("RKV.FOLLOW 127.0.0.1:7401"), Reply::Ok);
    assert_eq!(c.node.following.wanted.as_deref(), Some("127.0.0.1:7401"));
    c.node.following.own = Some("127.0.0.1:7500".parse().unwrap());
    assert!(error_starts(
        &c.run("RKV.FOLLOW 127.0.0.1:7500"),
        "ERR 127.0.0.1:7500 is this cache node's own address"
    ));
    let mut guest = Client::new(Some("t0ken"));
    guest.node.following.primary = Some("127.0.0.1:7400".into());
    assert!(error_starts(
        &guest.run("RKV.FOLLOW 127.0.0.1:7401"),
        "NOAUTH"
    ));
    assert_eq!(guest.node.following.wanted, None);
}

#[test]
fn flushall_refuses_fills_read_before_it() {
    let mut c = Client::new(None);
    c.node.lru.processed_through(Version { epoch: 1, lsn: 5 });
    c.run("RKV.FILL k 1 5 v");
    assert!(error_starts(
        &c.run("FLUSHALL ASYNC now"),
        "ERR syntax error"
    ));
    assert_eq!(c.run("FLUSHALL"), Reply::Ok);
    assert_eq!(c.run("DBSIZE"), Reply::Int(0));
    assert_eq!(c.run("RKV.FILL k 1 4 v"), Reply::Int(0));
    assert_eq!(c.run("RKV.FILL k 1 5 v"), Reply::Int(1));
}

#[test]
fn config_glob_patterns_match_without_backtracking() {
    assert!(connection_glob("max*", "maxmemory"));
    assert!(connection_glob("?ave", "save"));
    assert!(!connection_glob("max*x", "maxmemory"));
    let hostile = "*a".repeat(40) + "b";
    assert!(!connection_glob(
        &hostile,
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    ));
}

fn connection_glob(pattern: &str, name: &str) -> bool {
    connection::glob_matches(pattern.as_bytes(), name.as_bytes())
}

#[test]
fn multi_queues_commands_and_exec_runs_them_in_a_row() {
    let mut c = Client::new(None);
    assert_eq!(c.run("MULTI"), Reply::Ok);
    assert_eq!(c.run("SET k v"), Reply::Status("QUEUED"));
    assert_eq!(c.run("GET k"), Reply::Status("QUEUED"));
    assert_eq!(c.run("EXISTS k"), Reply::Status("QUEUED"));
    assert_eq!(
        c.run("EXEC"),
        Reply::Array(vec![Reply::Ok, bulk("v"), Reply::Int(1)])
    );
    assert_eq!(c.run("EXEC"), Reply::Error("ERR EXEC without MULTI".into()));
    // A command refused while queued discards them all at EXEC.
    assert_eq!(c.run("MULTI"), Reply::Ok);
    assert_eq!(c.run("DEL k"), Reply::Status("QUEUED"));
    assert!(error_starts(&c.run("GET"), "ERR wrong number"));
    assert!(error_starts(&c.run("EXEC"), "EXECABORT"));
    assert_eq!(c.run("GET k"), bulk("v"), "nothing queued ran");
    assert_eq!(c.run("MULTI"), Reply::Ok);
    assert!(error_starts(
        &c.run("MULTI"),
        "ERR MULTI calls can not be nested"
    ));
    assert_eq!(c.run("DEL k"), Reply::Status("QUEUED"));
    assert_eq!(c.run("DISCARD"), Reply::Ok);
    assert_eq!(c.run("GET k"), bulk("v"));
    assert!(error_starts(&c.run("DISCARD"), "ERR DISCARD without MULTI"));
    // A refused EXEC discards the transaction, as Redis does.
    assert_eq!(c.run("MULTI"), Reply::Ok);
    assert_eq!(c.run("DEL k"), Reply::Status("QUEUED"));
    assert_eq!(
        c.run("EXEC now"),
        Reply::Error(
            "EXECABORT Transaction discarded because of: wrong number of arguments for \
             'exec' command"
                .into()
        )
    );
    assert_eq!(
        c.run("GET k"),
        bulk("v"),
        "out of the transaction, nothing ran"
    );
}

#[test]
fn a_transaction_past_its_byte_bound_is_refused_whole() {
    let mut c = Client::new(None);
    assert_eq!(c.run("MULTI"), Reply::Ok);
    let big = vec![b"SET".to_vec(), b"k".to_vec(), vec![b'x'; 40 << 20]];
    for _ in 0..2 {
        let queued = execute(&mut c.node, &mut c.session, big.clone(), 0).reply;
        assert_eq!(queued, Reply::Status("QUEUED"));
    }
    let refused = execute(&mut c.node, &mut c.session, big, 0).reply;
    assert!(error_starts(
        &refused,
        "ERR the commands queued since MULTI"
    ));
    assert!(error_starts(&c.run("EXEC"), "EXECABORT"));
    assert_eq!(c.run("EXISTS k"), Reply::Int(0));
}

#[test]
fn command_count_client_help_and_info_sections_answer_as_redis_does() {
    let mut c = Client::new(None);
    assert_eq!(
        c.run("COMMAND COUNT"),
        Reply::Int(i64::try_from(COMMANDS.len()).unwrap())
    );
    let Reply::Array(help) = c.run("CLIENT HELP") else {
        panic!("CLIENT HELP answers a list");
    };
    assert!(help.contains(&Reply::Status("SETNAME <name>")));
    let text = |reply: Reply| match reply {
        Reply::Bulk(bytes) => String::from_utf8(bytes.to_vec()).unwrap(),
        other => panic!("not a bulk string: {other:?}"),
    };
    assert_eq!(
        text(c.run("INFO keyspace")),
        "# Keyspace\r\n",
        "no line when empty"
    );
    c.run("SET k v EX 5");
    c.run("SET j v");
    assert_eq!(
        text(c.run("INFO keyspace")),
        "# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=0\r\n"
    );
    let two = text(c.run("INFO SERVER stats"));
    assert!(two.starts_with("# Server\r\n") && two.contains("\r\n\r\n# Stats\r\n"));
    assert!(
        two.ends_with("\r\n") && !two.ends_with("\r\n\r\n"),
        "{two:?}"
    );
    assert_eq!(text(c.run("INFO nosuchsection")), "");
    let everything = text(c.run("INFO everything"));
    assert!(
        everything.starts_with("# Server\r\n")
            && everything.ends_with("# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=0\r\n")
    );
}
