use super::*;

fn command(args: &[&[u8]], used: usize) -> Parse {
    Parse::Command {
        args: args.iter().map(|arg| arg.to_vec()).collect(),
        used,
    }
}

fn invalid(error: &str, skip: usize) -> Parse {
    Parse::Invalid {
        error: error.into(),
        skip,
    }
}

fn parse_default(buf: &[u8]) -> Parse {
    parse(buf, &Limits::default())
}

/// Every command at the front of `buf`, parsed one after the other.
fn parse_all(mut buf: &[u8]) -> Vec<Parse> {
    let mut parsed = Vec::new();
    loop {
        let next = parse_default(buf);
        let taken = match &next {
            Parse::Command { used, .. } => *used,
            Parse::Invalid { skip, .. } => *skip,
            Parse::Incomplete => return parsed,
        };
        buf = &buf[taken..];
        parsed.push(next);
    }
}

fn encoded(reply: &Reply, protocol: u8) -> Vec<u8> {
    let mut out = Vec::new();
    encode(reply, protocol, &mut out);
    out
}

#[test]
fn test_multibulk_command_parses_to_its_arguments() {
    let buf = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$0\r\n\r\n";
    assert_eq!(
        parse_default(buf),
        command(&[b"SET", b"key", b""], buf.len())
    );
}

#[test]
fn test_arguments_are_binary_safe() {
    let buf = b"*2\r\n$3\r\nGET\r\n$4\r\n\r\n\0\xff\r\n";
    assert_eq!(
        parse_default(buf),
        command(&[b"GET", b"\r\n\0\xff"], buf.len())
    );
}

#[test]
fn test_pipelined_commands_parse_one_by_one() {
    let one = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n";
    let buf = [&one[..], one, b"PING\r\n", one].concat();
    assert_eq!(
        parse_all(&buf),
        vec![
            command(&[b"GET", b"key"], one.len()),
            command(&[b"GET", b"key"], one.len()),
            command(&[b"PING"], 6),
            command(&[b"GET", b"key"], one.len()),
        ]
    );
}

#[test]
fn test_every_prefix_of_a_command_is_incomplete() {
    let commands: [&[u8]; 4] = [
        b"*2\r\n$3\r\nGET\r\n$10\r\n0123456789\r\n",
        b"*1\r\n$0\r\n\r\n",
        b"SET key \"a \\x41 value\"\r\n",
        b"PING\n",
    ];
    for buf in commands {
        for cut in 0..buf.len() {
            assert_eq!(parse_default(&buf[..cut]), Parse::Incomplete, "{cut}");
        }
        assert!(matches!(parse_default(buf), Parse::Command { used, .. } if used == buf.len()));
    }
}

#[test]
fn test_empty_multibulk_and_blank_lines_are_empty_commands() {
    assert_eq!(parse_default(b"*0\r\nrest"), command(&[], 4));
    assert_eq!(parse_default(b"*-1\r\n"), command(&[], 5));
    // Any count below 1, as Redis takes it.
    assert_eq!(parse_default(b"*-5\r\nPING\r\n"), command(&[], 5));
    assert_eq!(
        parse_default(b"*-9223372036854775808\r\n"),
        command(&[], 23)
    );
    // One past it is no number: a broken header, as in Redis.
    assert!(matches!(
        parse_default(b"*-9223372036854775809\r\n"),
        Parse::Invalid { .. }
    ));
    assert_eq!(parse_default(b"\r\n"), command(&[], 2));
    assert_eq!(parse_default(b" \t \n"), command(&[], 4));
}

#[test]
fn test_huge_bulk_length_is_refused_through_its_header() {
    let buf = b"*2\r\n$3\r\nGET\r\n$99999999999\r\nmore";
    let skip = buf.len() - 4;
    assert_eq!(
        parse_default(buf),
        invalid("ERR Protocol error: invalid bulk length", skip)
    );
    // A length past i64 is refused too, and so is any length past `max_bulk`.
    let buf = b"*1\r\n$99999999999999999999999\r\n";
    let refused = invalid("ERR Protocol error: invalid bulk length", buf.len());
    assert_eq!(parse_default(buf), refused);
    let limits = Limits {
        max_bulk: 3,
        ..Limits::default()
    };
    assert_eq!(
        parse(b"*1\r\n$4\r\n", &limits),
        invalid("ERR Protocol error: invalid bulk length", 8)
    );
}

#[test]
fn test_a_request_arriving_in_many_reads_has_each_argument_header_read_once() {
    let count = 10_000;
    let mut stream = format!("*{count}\r\n").into_bytes();
    let mut pieces = vec![stream.len()];
    for _ in 0..count {
        stream.extend_from_slice(b"$1\r\nk\r\n");
        pieces.push(stream.len());
    }
    let mut progress = Progress::default();
    let before = parse::HEADERS_READ.get();
    for &end in &pieces[..count] {
        assert_eq!(
            parse_from(&stream[..end], &Limits::default(), &mut progress),
            Parse::Incomplete
        );
    }
    // Each call reads the headers of the arguments that arrived, plus the one it stops at
    // (from scratch, the calls would read count * (count + 1) / 2 of them).
    let headers_read = parse::HEADERS_READ.get() - before;
    assert!(headers_read <= 2 * count, "{headers_read} header reads");
    let whole = parse_from(&stream, &Limits::default(), &mut progress);
    assert_eq!(whole, parse_default(&stream));
    assert_eq!(progress, Progress::default(), "reset once whole");
}

#[test]
fn test_huge_claims_within_limits_wait_without_allocating() {
    // A claim the limits allow waits for its bytes: the copies happen only once every
    // argument is present, so a header alone costs nothing.
    let limits = Limits {
        max_bulk: usize::MAX,
        max_args: usize::MAX,
        max_inline: 64,
    };
    assert_eq!(
        parse(b"*1\r\n$99999999999\r\nab", &limits),
        Parse::Incomplete
    );
    assert_eq!(
        parse(b"*999999999999\r\n$1\r\na\r\n", &limits),
        Parse::Incomplete
    );
}

#[test]
fn test_negative_and_malformed_counts_and_lengths_are_refused() {
    let count = "ERR Protocol error: invalid multibulk length";
    let bulk = "ERR Protocol error: invalid bulk length";
    assert_eq!(parse_default(b"*1048577\r\n"), invalid(count, 10));
    for header in [
        &b"*\r\n"[..],
        b"*x\r\n",
        b"*+1\r\n",
        // Leading zeros are not Redis numbers.
        b"*01\r\n",
        b"*-0\r\n",
        b"*-01\r\n",
        b"* 1\r\n",
        b"*1 \r\n",
        b"*1\n",
    ] {
        assert_eq!(parse_default(header), invalid(count, header.len()));
    }
    assert_eq!(parse_default(b"*1\r\n$-1\r\n"), invalid(bulk, 9));
    assert_eq!(parse_default(b"*1\r\n$1x\r\nab\r\n"), invalid(bulk, 9));
    assert_eq!(parse_default(b"*1\r\n$04\r\nPING\r\n"), invalid(bulk, 9));
}

#[test]
fn test_element_that_is_not_bulk_is_refused_and_what_follows_parses() {
    let buf = b"*3\r\n$3\r\nGET\r\n*1\r\n$4\r\nPING\r\n";
    assert_eq!(
        parse_all(buf),
        vec![
            invalid("ERR Protocol error: expected '$', got '*'", 13),
            command(&[b"PING"], 14),
        ]
    );
    assert_eq!(
        parse_default(b"*1\r\n\r\n"),
        invalid("ERR Protocol error: expected '$', got '\\r'", 4)
    );
}

#[test]
fn test_bulk_data_without_crlf_is_refused() {
    let refused = invalid("ERR Protocol error: expected CRLF after bulk data", 13);
    assert_eq!(parse_default(b"*1\r\n$3\r\nGETxxPING\r\n"), refused);
    assert_eq!(parse_default(b"*1\r\n$3\r\nGET\rx"), refused);
    assert_eq!(parse_default(b"*1\r\n$3\r\nGET\r"), Parse::Incomplete);
}

#[test]
fn test_garbage_lines_parse_as_inline_words() {
    assert_eq!(
        parse_all(b"\x00\xff junk\r\n\x01\n"),
        vec![command(&[b"\x00\xff", b"junk"], 9), command(&[b"\x01"], 2)]
    );
}

#[test]
fn test_lines_longer_than_max_inline_are_refused() {
    let limits = Limits {
        max_inline: 8,
        ..Limits::default()
    };
    let too_big = "ERR Protocol error: too big inline request";
    assert_eq!(
        parse(b"GET abcd\r\n", &limits),
        command(&[b"GET", b"abcd"], 10)
    );
    assert_eq!(parse(b"GET abcd\r", &limits), Parse::Incomplete);
    assert_eq!(parse(b"GET abcde\n", &limits), invalid(too_big, 10));
    // No line end within max_inline + 2 bytes: those bytes go, whatever follows.
    assert_eq!(parse(b"GET abcdefgh", &limits), invalid(too_big, 10));
    let long_count = "ERR Protocol error: too big mbulk count string";
    assert_eq!(parse(b"*0000000000000", &limits), invalid(long_count, 10));
    let long_bulk = "ERR Protocol error: too big bulk count string";
    assert_eq!(
        parse(b"*1\r\n$0000000000000", &limits),
        invalid(long_bulk, 14)
    );
}

#[test]
fn test_inline_words_split_on_whitespace() {
    assert_eq!(
        parse_default(b"  SET\tkey  value \r\n"),
        command(&[b"SET", b"key", b"value"], 19)
    );
}

#[test]
fn test_inline_quotes_and_escapes_read_as_redis_reads_them() {
    let buf = br#"SET "a b" 'c d' "\x41\x4a\xzz\n\r\t\"\\\q" 'it\'s \n' x"y z" '' """#;
    let line = [&buf[..], b"\n"].concat();
    assert_eq!(
        parse_default(&line),
        command(
            &[
                b"SET",
                b"a b",
                b"c d",
                b"AJxzz\n\r\t\"\\q",
                b"it's \\n",
                b"xy z",
                b"",
                b"",
            ],
            line.len()
        )
    );
}

#[test]
fn test_unbalanced_quotes_are_refused_through_the_line() {
    let unbalanced = "ERR Protocol error: unbalanced quotes in request";
    for line in [
        &b"GET \"key\n"[..],
        b"GET 'key\n",
        b"GET \"a\"b\n",
        b"GET x'y'z\n",
        b"GET \"a\\\"\n",
    ] {
        assert_eq!(
            parse_default(line),
            invalid(unbalanced, line.len()),
            "{line:?}"
        );
    }
    assert_eq!(
        parse_all(b"GET 'k\r\nPING\r\n"),
        vec![invalid(unbalanced, 8), command(&[b"PING"], 6)]
    );
}

#[test]
fn test_inline_commands_with_more_than_max_args_are_refused() {
    let limits = Limits {
        max_args: 2,
        ..Limits::default()
    };
    assert_eq!(parse(b"GET a\n", &limits), command(&[b"GET", b"a"], 6));
    assert_eq!(
        parse(b"GET a b\n", &limits),
        invalid(
            "ERR Protocol error: too many arguments in inline request",
            8
        )
    );
}

#[test]
fn test_encode_writes_every_reply_in_both_protocols() {
    let nested = Reply::Array(vec![Reply::Int(1), Reply::Nil]);
    let map = Reply::Map(vec![(Reply::Bulk("k".into()), nested.clone())]);
    let cases: [(Reply, &[u8], &[u8]); 15] = [
        (Reply::Ok, b"+OK\r\n", b"+OK\r\n"),
        (Reply::Status("PONG"), b"+PONG\r\n", b"+PONG\r\n"),
        (
            Reply::error("ERR bad\r\nthing"),
            b"-ERR bad  thing\r\n",
            b"-ERR bad  thing\r\n",
        ),
        (Reply::Int(42), b":42\r\n", b":42\r\n"),
        (
            Reply::Int(i64::MIN),
            b":-9223372036854775808\r\n",
            b":-9223372036854775808\r\n",
        ),
        (
            Reply::Bulk("a\r\nb".into()),
            b"$4\r\na\r\nb\r\n",
            b"$4\r\na\r\nb\r\n",
        ),
        (Reply::Bulk("".into()), b"$0\r\n\r\n", b"$0\r\n\r\n"),
        (Reply::Nil, b"$-1\r\n", b"_\r\n"),
        (Reply::Array(vec![]), b"*0\r\n", b"*0\r\n"),
        (nested, b"*2\r\n:1\r\n$-1\r\n", b"*2\r\n:1\r\n_\r\n"),
        (
            map,
            b"*2\r\n$1\r\nk\r\n*2\r\n:1\r\n$-1\r\n",
            b"%1\r\n$1\r\nk\r\n*2\r\n:1\r\n_\r\n",
        ),
        (Reply::Double(1.5), b"$3\r\n1.5\r\n", b",1.5\r\n"),
        (Reply::Double(-1e300), b"$6\r\n-1e300\r\n", b",-1e300\r\n"),
        (
            Reply::Double(f64::NEG_INFINITY),
            b"$4\r\n-inf\r\n",
            b",-inf\r\n",
        ),
        (Reply::Double(f64::NAN), b"$3\r\nnan\r\n", b",nan\r\n"),
    ];
    for (reply, resp2, resp3) in cases {
        assert_eq!(encoded(&reply, 2), resp2, "{reply:?}");
        assert_eq!(encoded(&reply, 3), resp3, "{reply:?}");
        assert_eq!(
            encoded(&reply, 0),
            resp2,
            "{reply:?} in an unknown protocol"
        );
    }
}

#[test]
fn test_encode_appends_to_what_is_there() {
    let mut out = b"+OK\r\n".to_vec();
    encode(&Reply::Int(7), 3, &mut out);
    assert_eq!(out, b"+OK\r\n:7\r\n");
}

#[test]
fn test_doubles_read_back_as_the_same_number() {
    for value in [
        0.0,
        -0.0,
        1.0,
        0.1,
        1e-5,
        123_456.789,
        1e15,
        1e16,
        f64::MAX,
        f64::MIN_POSITIVE,
    ] {
        let text = encoded(&Reply::Double(value), 3);
        let text = std::str::from_utf8(&text[1..text.len() - 2]).unwrap();
        assert_eq!(
            text.parse::<f64>().unwrap().to_bits(),
            value.to_bits(),
            "{text}"
        );
    }
}
