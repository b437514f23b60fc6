use std::io::BufReader;

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::cache::resp::{encode, Reply};

/// Every reply in `bytes`, then how reading ended.
fn read_all(bytes: &[u8]) -> (Vec<Value>, ReadError) {
    let mut reader = ReplyReader::new(bytes);
    let mut values = Vec::new();
    loop {
        match reader.read() {
            Ok(value) => values.push(value),
            Err(err) => return (values, err),
        }
    }
}

fn read_one(bytes: &[u8]) -> Result<Value, ReadError> {
    ReplyReader::new(bytes).read()
}

fn assert_malformed(bytes: &[u8]) {
    match read_one(bytes) {
        Err(ReadError::Malformed(_)) => {}
        other => panic!("{:?} read as {other:?}", String::from_utf8_lossy(bytes)),
    }
}

fn assert_ended(bytes: &[u8]) {
    match read_one(bytes) {
        Err(ReadError::Io(err)) if err.kind() == io::ErrorKind::UnexpectedEof => {}
        other => panic!("{:?} read as {other:?}", String::from_utf8_lossy(bytes)),
    }
}

/// What a client reads for `reply`, in either protocol.
fn expected(reply: &Reply) -> Value {
    match reply {
        Reply::Ok => Value::Status("OK".into()),
        Reply::Status(text) => Value::Status((*text).into()),
        Reply::Error(text) => Value::Error(text.replace(['\r', '\n'], " ")),
        Reply::Int(value) => Value::Int(*value),
        Reply::Bulk(data) => Value::Bulk(data.to_vec()),
        Reply::Nil => Value::Nil,
        Reply::Array(items) => Value::Array(items.iter().map(expected).collect()),
        Reply::Map(pairs) => Value::Array(
            pairs
                .iter()
                .flat_map(|(key, value)| [expected(key), expected(value)])
                .collect(),
        ),
        Reply::Double(value) => {
            let mut out = Vec::new();
            encode(reply, 2, &mut out);
            let (values, _) = read_all(&out);
            assert!(
                matches!(&values[..], [Value::Bulk(text)] if !text.is_empty()),
                "{value}"
            );
            values[0].clone()
        }
    }
}

fn replies() -> impl Strategy<Value = Reply> {
    let leaf = prop_oneof![
        Just(Reply::Ok),
        Just(Reply::Status("PONG")),
        ".{0,20}".prop_map(Reply::Error),
        any::<i64>().prop_map(Reply::Int),
        vec(any::<u8>(), 0..40).prop_map(|data| Reply::Bulk(data.into())),
        Just(Reply::Nil),
        any::<f64>().prop_map(Reply::Double),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Reply::Array),
            vec((inner.clone(), inner), 0..3).prop_map(Reply::Map),
        ]
    })
}

proptest! {
    #[test]
    fn fuzz_arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
        let _ = read_all(&bytes);
    }

    #[test]
    fn fuzz_protocol_like_bytes_never_panic(
        pieces in vec(prop_oneof![
            "[-+:$*%_,]-?[0-9]{0,3}\r\n".prop_map(String::into_bytes),
            "[a-z]{0,3}(\r\n)?".prop_map(String::into_bytes),
            vec(any::<u8>(), 0..3),
        ], 0..30)
    ) {
        let _ = read_all(&pieces.concat());
    }

    #[test]
    fn fuzz_a_nodes_replies_read_back_in_either_protocol(
        sent in vec(replies(), 1..5),
        protocol in 2u8..=3,
        chunk in 1usize..9,
    ) {
        let mut bytes = Vec::new();
        for reply in &sent {
            encode(reply, protocol, &mut bytes);
        }
        let want: Vec<Value> = sent.iter().map(expected).collect();
        // However the bytes arrive (a tiny buffer refills often), the replies are the same.
        let mut reader = ReplyReader::new(BufReader::with_capacity(chunk, &bytes[..]));
        for value in &want {
            prop_assert_eq!(&reader.read().expect("a node's reply reads"), value);
        }
        prop_assert!(matches!(reader.read(), Err(ReadError::Io(_))));
    }
}

#[test]
fn test_the_reply_types_read_as_resp2_values() {
    let (values, end) = read_all(
        b"+OK\r\n-ERR no\r\n:-7\r\n$3\r\na\r\n\r\n$-1\r\n*-1\r\n_\r\n,1.5\r\n\
          *2\r\n:1\r\n$0\r\n\r\n%1\r\n+k\r\n:2\r\n",
    );
    assert!(matches!(end, ReadError::Io(_)));
    assert_eq!(
        values,
        vec![
            Value::Status("OK".into()),
            Value::Error("ERR no".into()),
            Value::Int(-7),
            Value::Bulk(b"a\r\n".to_vec()),
            Value::Nil,
            Value::Nil,
            Value::Nil,
            Value::Bulk(b"1.5".to_vec()),
            Value::Array(vec![Value::Int(1), Value::Bulk(Vec::new())]),
            Value::Array(vec![Value::Status("k".into()), Value::Int(2)]),
        ]
    );
}

#[test]
fn test_lengths_beyond_the_bounds_are_refused_before_any_byte_of_them() {
    assert_malformed(b"$536870913\r\n");
    assert_malformed(b"$99999999999999999999\r\n");
    assert_malformed(b"$-2\r\n");
    assert_malformed(b"*16777217\r\n");
    assert_malformed(b"%8388609\r\n");
    // Within the bounds, a claim is only believed as its bytes arrive.
    assert_ended(b"$536870912\r\nabc");
    assert_ended(b"*16777216\r\n:1\r\n");
}

#[test]
fn test_nesting_deeper_than_eight_is_refused() {
    let nested = |depth: usize| [&b"*1\r\n".repeat(depth)[..], b":1\r\n"].concat();
    let mut value = read_one(&nested(8)).expect("eight levels are allowed");
    for _ in 0..8 {
        let Value::Array(mut items) = value else {
            panic!("an array")
        };
        value = items.pop().expect("one item");
    }
    assert_eq!(value, Value::Int(1));
    assert_malformed(&nested(9));
    assert_malformed(&b"*1\r\n".repeat(100_000));
}

#[test]
fn test_broken_framing_is_refused() {
    assert_malformed(b"\r\n");
    assert_malformed(b"?\r\n");
    assert_malformed(b":12x\r\n");
    assert_malformed(b"_x\r\n");
    assert_malformed(b"+OK\n");
    assert_malformed(b"$3\r\nabcde");
    assert_malformed(&[b"+".as_slice(), &vec![b'a'; MAX_LINE + 8], b"\r\n"].concat());
    assert_ended(b"");
    assert_ended(b"+OK");
    assert_ended(b"$3\r\nab");
    assert_ended(b"*2\r\n:1\r\n");
}
