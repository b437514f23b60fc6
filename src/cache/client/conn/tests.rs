use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::thread;
use std::time::Instant;

use super::*;
use crate::cache::cache_node::{CacheNode, CacheNodeOptions};
use crate::cache::lru::OnWrite;
use crate::Error;

const TIMEOUT: Duration = Duration::from_secs(5);

fn node(token: Option<&str>) -> CacheNode {
    CacheNode::start(&CacheNodeOptions {
        listen: "127.0.0.1:0".into(),
        capacity: 100_000,
        max_bytes: None,
        ttl: None,
        on_write: OnWrite::Drop,
        follow: None,
        token: token.map(str::to_owned),
        name: None,
    })
    .expect("a node starts on a free port")
}

fn bulk(text: &str) -> Value {
    Value::Bulk(text.as_bytes().to_vec())
}

/// A one-connection server that sends `reply` to whatever it is asked, then holds the
/// connection open until the client goes.
fn fake_node(reply: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let address = listener.local_addr().expect("bound").to_string();
    thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(reply);
            let _ = stream.read(&mut request);
        }
    });
    address
}

#[test]
fn test_a_pipeline_answers_every_command_in_order_and_refusals_do_not_end_it() {
    let node = node(None);
    let mut conn = Conn::connect(&node.address().to_string(), None, TIMEOUT).expect("connects");
    let replies = conn
        .pipeline(&[
            vec!["SET", "k", "v"],
            vec!["GET", "k"],
            vec!["NOSUCH"],
            vec!["RKV.FILL", "f", "1", "7", "x"],
            vec!["RKV.GET", "f"],
            vec!["GET", "missing"],
        ])
        .expect("the node answers");
    assert_eq!(replies[0], Value::Status("OK".into()));
    assert_eq!(replies[1], bulk("v"));
    assert!(matches!(&replies[2], Value::Error(text) if text.starts_with("ERR unknown")));
    assert_eq!(replies[3], Value::Int(1));
    assert_eq!(
        replies[4],
        Value::Array(vec![bulk("x"), Value::Int(1), Value::Int(7)])
    );
    assert_eq!(replies[5], Value::Nil);
    assert_eq!(
        conn.pipeline(&[["PING"]]).expect("still usable")[0],
        Value::Status("PONG".into())
    );
}

#[test]
fn test_a_pipeline_larger_than_a_batch_answers_every_command() {
    let node = node(None);
    let mut conn = Conn::connect(&node.address().to_string(), None, TIMEOUT).expect("connects");
    let value = vec![b'v'; 16 << 10];
    let keys: Vec<String> = (0..700).map(|i| format!("key{i}")).collect();
    let sets: Vec<Vec<&[u8]>> = keys
        .iter()
        .map(|key| vec![b"SET".as_slice(), key.as_bytes(), &value])
        .collect();
    assert!(batches(&sets).len() > 100);
    let replies = conn.pipeline(&sets).expect("the node answers");
    assert!(replies.iter().all(|r| *r == Value::Status("OK".into())));
    // Small requests in one write, large replies: 11 MB of values come back without a stall.
    let gets: Vec<[&[u8]; 2]> = keys
        .iter()
        .map(|key| [b"GET".as_slice(), key.as_bytes()])
        .collect();
    assert_eq!(batches(&gets).len(), 1);
    let replies = conn.pipeline(&gets).expect("the node answers");
    assert_eq!(replies.len(), keys.len());
    assert!(replies.iter().all(|r| *r == Value::Bulk(value.clone())));
}

#[test]
fn test_batches_keep_order_and_give_a_large_command_its_own() {
    let big = vec![0u8; MAX_BATCH_BYTES * 2];
    let small = vec![0u8; 10];
    let commands = vec![
        vec![small.clone()],
        vec![big],
        vec![small.clone()],
        vec![small],
    ];
    let cut = batches(&commands);
    assert_eq!(
        cut.iter().map(|b| b.len()).collect::<Vec<_>>(),
        vec![1, 1, 2]
    );
    assert!(batches::<Vec<Vec<u8>>, Vec<u8>>(&[]).is_empty());
}

#[test]
fn test_a_token_is_sent_on_connect_and_a_wrong_one_is_a_reply_error() {
    let node = node(Some("secret"));
    let address = node.address().to_string();
    let mut conn = Conn::connect(&address, Some("secret"), TIMEOUT).expect("the token is right");
    assert_eq!(
        conn.pipeline(&[["DBSIZE"]]).expect("answers")[0],
        Value::Int(0)
    );
    match Conn::connect(&address, Some("wrong"), TIMEOUT) {
        Err(Error::Cache(CacheError::Reply { reason, .. })) => {
            assert!(reason.starts_with("WRONGPASS"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let mut anonymous = Conn::connect(&address, None, TIMEOUT).expect("connects");
    let reply = anonymous.pipeline(&[["DBSIZE"]]).expect("answers");
    assert!(matches!(&reply[0], Value::Error(text) if text.starts_with("NOAUTH")));
}

#[test]
fn test_a_node_that_sends_garbage_is_a_protocol_error_not_a_panic() {
    for garbage in [
        b"hello\r\n".as_slice(),
        b"$99999999999\r\n",
        b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
    ] {
        let address = fake_node(garbage);
        let mut conn = Conn::connect(&address, None, TIMEOUT).expect("connects");
        match conn.pipeline(&[["PING"]]) {
            Err(Error::Cache(CacheError::Protocol { node, .. })) => assert_eq!(node, address),
            other => panic!("{garbage:?}: {other:?}"),
        }
    }
}

#[test]
fn test_a_silent_node_is_a_timeout_and_a_closed_connection_an_io_error() {
    // The fake node reads the request and answers half a line, then nothing.
    let short = Duration::from_millis(200);
    let mut silent = Conn::connect(&fake_node(b"+OK"), None, short).expect("connects");
    let started = Instant::now();
    assert!(matches!(
        silent.pipeline(&[["PING"]]),
        Err(Error::Net(NetError::TimedOut { .. }))
    ));
    assert!(started.elapsed() < TIMEOUT);
    // A node that closes the connection before the second reply.
    let node = node(None);
    let mut closing = Conn::connect(&node.address().to_string(), None, TIMEOUT).expect("connects");
    assert!(matches!(
        closing.pipeline(&[["QUIT"], ["PING"]]),
        Err(Error::Net(NetError::Io { .. }))
    ));
}

#[test]
fn test_an_address_nobody_listens_on_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let address = listener.local_addr().expect("bound").to_string();
    drop(listener);
    assert!(matches!(
        Conn::connect(&address, None, TIMEOUT),
        Err(Error::Net(NetError::Connect { .. }))
    ));
    assert!(matches!(
        Conn::connect("not an address", None, TIMEOUT),
        Err(Error::Net(NetError::Connect { .. }))
    ));
}
