//! A cache node's bound on unsent replies, over real sockets on 127.0.0.1: a client that
//! pipelines large reads and reads none of the replies makes the node wait, not buffer; once
//! it reads it gets every reply in order, and other clients are served all along.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use replikv::cache::cache_node::{CacheNode, CacheNodeOptions};
use replikv::cache::client::{Conn, Value};
use replikv::cache::lru::OnWrite;
use replikv::cache::server::OUTPUT_BOUND;

mod common;

use common::{eventually, TestResult};

const VALUE_LEN: usize = 200_000;
/// Distinct values, read in turn, so that a reply out of order shows.
const VALUES: usize = 3;
/// 120 MB of replies from about 20 KB of requests: far more than the node's bound and the
/// kernel's socket buffers together.
const READS: usize = 600;
const TIMEOUT: Duration = Duration::from_secs(30);

fn key(index: usize) -> Vec<u8> {
    format!("big:s:{index}").into_bytes()
}

fn value(index: usize) -> Vec<u8> {
    vec![b'a' + u8::try_from(index).expect("a few values"); VALUE_LEN]
}

fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg);
        request.extend_from_slice(b"\r\n");
    }
    request
}

/// Reads one bulk-string reply.
fn read_bulk(replies: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut header = String::new();
    replies.read_line(&mut header)?;
    let len: usize = header
        .strip_prefix('$')
        .and_then(|rest| rest.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("a bulk reply, not {header:?}"));
    let mut data = vec![0; len + 2];
    replies.read_exact(&mut data)?;
    assert_eq!(data.split_off(len), b"\r\n");
    Ok(data)
}

#[test]
fn a_client_that_does_not_read_its_pipelined_replies_holds_only_the_bound_and_gets_them_all_later(
) -> TestResult {
    let node = CacheNode::start(&CacheNodeOptions {
        listen: "127.0.0.1:0".to_owned(),
        capacity: 1_000,
        max_bytes: None,
        ttl: None,
        on_write: OnWrite::Drop,
        follow: None,
        token: None,
        name: None,
    })?;
    let address = node.address().to_string();
    let mut other = Conn::connect(&address, None, TIMEOUT)?;
    let sets: Vec<[Vec<u8>; 3]> = (0..VALUES)
        .map(|index| [b"SET".to_vec(), key(index), value(index)])
        .collect();
    for reply in other.pipeline(&sets)? {
        assert!(matches!(reply, Value::Status(_)), "{reply:?}");
    }
    let answered_before = node.node().commands.0;

    let mut greedy = TcpStream::connect(&address)?;
    greedy.set_read_timeout(Some(TIMEOUT))?;
    greedy.set_write_timeout(Some(TIMEOUT))?;
    let pipeline: Vec<u8> = (0..READS)
        .flat_map(|read| command(&[b"GET", &key(read % VALUES)]))
        .collect();
    greedy.write_all(&pipeline)?;

    // The node writes until the kernel's buffers are full, then holds a batch of replies
    // and runs none of the client's later requests.
    eventually("the node to hold back a full batch of replies", || {
        node.node().unsent.0 >= OUTPUT_BOUND as u64
    });
    let reply_len = (VALUE_LEN + 16) as u64;
    let (answered, most_unsent) = {
        let node = node.node();
        (node.commands.0 - answered_before, node.unsent.1)
    };
    assert!(
        answered < READS as u64,
        "all {READS} reads ran while their replies could not be sent"
    );
    assert!(
        most_unsent <= OUTPUT_BOUND as u64 + reply_len,
        "a connection held {most_unsent} unsent bytes, past the bound of {OUTPUT_BOUND} and one reply"
    );

    // Another client is served meanwhile.
    let set: &[&[u8]] = &[b"SET", b"small:s:1", b"one"];
    let get: &[&[u8]] = &[b"GET", b"small:s:1"];
    let replies = other.pipeline(&[set, get])?;
    assert_eq!(replies[1], Value::Bulk(b"one".to_vec()));

    let mut replies = BufReader::new(&greedy);
    for read in 0..READS {
        let got = read_bulk(&mut replies)?;
        assert!(got == value(read % VALUES), "reply {read} is not its value");
    }
    eventually("the node to have sent everything", || {
        node.node().unsent.0 == 0
    });
    let most_unsent = node.node().unsent.1;
    assert!(
        most_unsent <= OUTPUT_BOUND as u64 + reply_len,
        "{most_unsent}"
    );
    Ok(())
}
