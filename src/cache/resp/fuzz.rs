//! Fuzz targets of the request parser, on stable Rust with proptest. `cargo test` runs a
//! few hundred cases of each; a longer run:
//! `PROPTEST_CASES=100000 cargo test --release --no-default-features fuzz_`.

use super::*;

use proptest::collection::vec;
use proptest::prelude::*;

/// Bytes made mostly of the protocol's own pieces, so that parsing gets deep into them.
fn protocol_soup() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => "[*$]-?[0-3]\r\n".prop_map(String::into_bytes),
        2 => "[a-z]{0,3}\r\n".prop_map(String::into_bytes),
        1 => "[*$]-?[0-9]{1,20}(\r\n)?".prop_map(String::into_bytes),
        1 => vec(any::<u8>(), 0..4),
        1 => prop_oneof![
            Just("\n"),
            Just("\r"),
            Just(" "),
            Just("\""),
            Just("'"),
            Just("\\"),
            Just("\\x4"),
        ]
        .prop_map(|piece| piece.as_bytes().to_vec()),
    ];
    vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

/// The defaults, or limits small enough for the soup to cross.
fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        Just(Limits::default()),
        (0..12usize, 0..6usize, 0..24usize).prop_map(|(max_bulk, max_args, max_inline)| {
            Limits {
                max_bulk,
                max_args,
                max_inline,
            }
        }),
    ]
}

fn args() -> impl Strategy<Value = Vec<Vec<u8>>> {
    vec(vec(any::<u8>(), 0..24), 1..6)
}

/// `args` as a client library sends them.
fn multibulk(args: &[Vec<u8>]) -> Vec<u8> {
    let request = Reply::Array(
        args.iter()
            .map(|arg| Reply::Bulk(arg.clone().into()))
            .collect(),
    );
    let mut out = Vec::new();
    encode(&request, 2, &mut out);
    out
}

/// `args` as an inline line, every argument double-quoted and every byte but a letter
/// or digit escaped as `\xHH`.
fn inline(args: &[Vec<u8>]) -> Vec<u8> {
    let mut line = Vec::new();
    for arg in args {
        line.push(b'"');
        for &byte in arg {
            if byte.is_ascii_alphanumeric() {
                line.push(byte);
            } else {
                line.extend(format!("\\x{byte:02x}").bytes());
            }
        }
        line.extend_from_slice(b"\" ");
    }
    line.extend_from_slice(b"\r\n");
    line
}

/// How many bytes `parsed` takes off the front of `buf`, checked to be within it.
fn taken(parsed: &Parse, buf: &[u8]) -> Option<usize> {
    let taken = match parsed {
        Parse::Command { used, .. } => *used,
        Parse::Invalid { skip, .. } => *skip,
        Parse::Incomplete => return None,
    };
    assert!(
        (1..=buf.len()).contains(&taken),
        "{taken} bytes of {}",
        buf.len()
    );
    Some(taken)
}

proptest! {
    /// Arbitrary bytes never panic; every command and refusal takes between one byte
    /// and all of them, and a prefix parses to `Incomplete` or to what the whole does.
    #[test]
    fn fuzz_parse_never_panics_and_stays_within_the_buffer(
        soup in protocol_soup(),
        noise in vec(any::<u8>(), 0..64),
        limits in limits(),
        cut in any::<prop::sample::Index>(),
    ) {
        for stream in [soup, noise] {
            let mut rest = &stream[..];
            loop {
                let whole = parse(rest, &limits);
                let prefix = parse(&rest[..cut.index(rest.len() + 1)], &limits);
                prop_assert!(prefix == Parse::Incomplete || prefix == whole, "{prefix:?} {whole:?}");
                let Some(taken) = taken(&whole, rest) else { break };
                rest = &rest[taken..];
            }
        }
    }

    /// Parsing a growing buffer from the progress of the calls before gives, at every
    /// length, what parsing it afresh gives.
    #[test]
    fn fuzz_parsing_on_from_progress_gives_what_parsing_afresh_gives(
        soup in protocol_soup(),
        limits in limits(),
        cuts in vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(soup.len() + 1)).collect();
        cuts.sort_unstable();
        let mut progress = Progress::default();
        let mut start = 0;
        for cut in cuts.into_iter().chain([soup.len()]) {
            while start < cut {
                let buf = &soup[start..cut];
                let resumed = parse_from(buf, &limits, &mut progress);
                prop_assert_eq!(&resumed, &parse(buf, &limits));
                match taken(&resumed, buf) {
                    Some(taken) => start += taken,
                    None => break,
                }
            }
        }
    }

    /// Arguments sent as multibulk or as quoted inline lines parse back to themselves.
    #[test]
    fn fuzz_requests_round_trip_through_parse(args in args()) {
        for request in [multibulk(&args), inline(&args)] {
            prop_assert_eq!(
                parse(&request, &Limits::default()),
                Parse::Command { args: args.clone(), used: request.len() }
            );
        }
    }

    /// A stream of valid commands, read in random pieces and parsed as a connection
    /// would (parse what is there, keep the rest), gives back the same commands.
    #[test]
    fn fuzz_commands_read_in_pieces_parse_back(
        commands in vec((args(), any::<bool>()), 1..8),
        cuts in vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let stream: Vec<u8> = commands
            .iter()
            .flat_map(|(args, as_inline)| if *as_inline { inline(args) } else { multibulk(args) })
            .collect();
        let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(stream.len())).collect();
        cuts.push(stream.len());
        cuts.sort_unstable();
        let (mut read, mut pending, mut parsed) = (0, Vec::new(), Vec::new());
        for cut in cuts {
            pending.extend_from_slice(&stream[read..cut]);
            read = cut;
            loop {
                match parse(&pending, &Limits::default()) {
                    Parse::Command { args, used } => {
                        parsed.push(args);
                        pending.drain(..used);
                    }
                    Parse::Incomplete => break,
                    invalid @ Parse::Invalid { .. } => {
                        return Err(TestCaseError::fail(format!("{invalid:?}")));
                    }
                }
            }
        }
        prop_assert!(pending.is_empty());
        let sent: Vec<Vec<Vec<u8>>> = commands.into_iter().map(|(args, _)| args).collect();
        prop_assert_eq!(parsed, sent);
    }
}
