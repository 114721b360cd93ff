use bytes::BytesMut;
use proptest::prelude::*;

use super::*;

const LIMIT: usize = 1 << 20;

/// Every operation in `input`, parsed as it arrives in chunks cut at
/// `cuts`; stops at the first protocol error.
fn feed(input: &[u8], cuts: &[usize]) -> (Vec<ServerOp>, Option<ProtoError>) {
    let mut buf = BytesMut::new();
    let mut parser = Parser::new(LIMIT);
    let mut ops = Vec::new();
    let mut at = 0;
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    bounds.push(input.len());
    bounds.sort_unstable();
    for bound in bounds {
        buf.extend_from_slice(&input[at..bound.max(at)]);
        at = bound.max(at);
        loop {
            match parser.parse(&mut buf) {
                Ok(Parsed::Op(op)) => ops.push(op),
                Ok(Parsed::Need(n)) => {
                    assert!(n > buf.len(), "asks for {n} with {} held", buf.len());
                    break;
                }
                Err(e) => return (ops, Some(e)),
            }
        }
    }
    (ops, None)
}

fn one(input: &[u8]) -> ServerOp {
    let (mut ops, error) = feed(input, &[]);
    assert_eq!(error, None);
    assert_eq!(ops.len(), 1, "{ops:?}");
    ops.remove(0)
}

#[test]
fn control_operations() {
    assert!(matches!(one(b"PING\r\n"), ServerOp::Ping));
    assert!(matches!(one(b"pong\r\n"), ServerOp::Pong));
    assert!(matches!(one(b"+OK\r\n"), ServerOp::Ok));
    let ServerOp::Err(text) = one(b"-ERR 'Permissions Violation for Subscription to \"x\"'\r\n")
    else {
        panic!()
    };
    assert_eq!(text, "Permissions Violation for Subscription to \"x\"");
    let info = br#"INFO {"server_id":"S","max_payload":1048576,"nonce":"abc","connect_urls":["127.0.0.1:4223"],"ldm":true,"unknown":[1]}"#;
    let ServerOp::Info(info) = one(&[&info[..], b"\r\n"].concat()) else {
        panic!()
    };
    assert_eq!(info.max_payload, 1 << 20);
    assert_eq!(info.nonce.as_deref(), Some("abc"));
    assert_eq!(info.connect_urls, ["127.0.0.1:4223"]);
    assert!(info.ldm && !info.tls_required);
}

#[test]
fn messages_with_and_without_headers_and_reply() {
    let ServerOp::Msg { sid, message } = one(&encode(7, "a.b", None, b"", b"hello")) else {
        panic!()
    };
    assert_eq!((sid, message.subject.as_str()), (7, "a.b"));
    assert_eq!((&message.payload[..], message.reply), (&b"hello"[..], None));
    assert!(message.headers.is_none());
    assert_eq!(message.length, 3 + 5);

    let header = b"NATS/1.0\r\nNats-Sequence: 9\r\n\r\n";
    let ServerOp::Msg { sid, message } = one(&encode(u64::MAX, "x", Some("r.1"), header, b""))
    else {
        panic!()
    };
    assert_eq!(sid, u64::MAX);
    assert_eq!(message.reply.as_deref(), Some("r.1"));
    assert!(message.payload.is_empty());
    let headers = message.headers.unwrap();
    assert_eq!(headers.get("Nats-Sequence").unwrap().as_str(), "9");
}

#[test]
fn a_payload_that_looks_like_protocol_is_taken_by_its_length() {
    let payload = b"\r\nMSG y 2 3\r\nabc\r\nPING\r\n";
    let input = [encode(1, "x", None, b"", payload), b"PONG\r\n".to_vec()].concat();
    let (ops, error) = feed(&input, &[3, 20, 21, 30]);
    assert_eq!(error, None);
    assert_eq!(ops.len(), 2);
    let ServerOp::Msg { message, .. } = &ops[0] else {
        panic!()
    };
    assert_eq!(&message.payload[..], payload);
    assert!(matches!(ops[1], ServerOp::Pong));
}

#[test]
fn an_incomplete_message_says_how_much_it_needs() {
    let input = encode(1, "x", None, b"", &[b'z'; 100]);
    let mut buf = BytesMut::from(&input[..20]);
    let Ok(Parsed::Need(n)) = Parser::new(LIMIT).parse(&mut buf) else {
        panic!()
    };
    assert_eq!(n, input.len());
    assert_eq!(buf.len(), 20, "nothing taken");
}

#[test]
fn violations_are_errors() {
    let cases: [(&[u8], ProtoError); 6] = [
        (b"HELLO\r\n", ProtoError::Unknown("HELLO".into())),
        (b"MSG x 1\r\n", ProtoError::BadArguments("MSG")),
        (b"MSG x 1 a b c\r\n", ProtoError::BadArguments("MSG")),
        (b"MSG x -1 3\r\nabc\r\n", ProtoError::BadArguments("MSG")),
        (b"HMSG x 1 9 3\r\n", ProtoError::BadArguments("HMSG")),
        (b"MSG x 1 3\r\nabcde\r\n", ProtoError::MissingCrlf),
    ];
    for (input, want) in cases {
        assert_eq!(
            feed(input, &[]).1,
            Some(want),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    let long = vec![b'I'; MAX_LINE + 2];
    assert_eq!(feed(&long, &[]).1, Some(ProtoError::LineTooLong));
    assert!(matches!(
        feed(b"INFO {nope\r\n", &[]).1,
        Some(ProtoError::BadInfo(_))
    ));
}

#[test]
fn an_oversized_message_is_skipped_as_it_arrives_not_the_connection() {
    let big = vec![b'x'; LIMIT + 1];
    let input = [
        &encode(7, "big", None, b"", &big)[..],
        &encode(8, "small", None, b"", b"ok")[..],
        b"PING\r\n",
    ]
    .concat();
    // Cut anywhere, even inside the skipped bytes and their CRLF.
    for cuts in [vec![], vec![5, 40, LIMIT / 2, LIMIT + 20, LIMIT + 21]] {
        let (ops, error) = feed(&input, &cuts);
        assert_eq!(error, None);
        assert!(
            matches!(ops[0], ServerOp::Oversized { sid: 7, size } if size == LIMIT + 1),
            "{:?}",
            ops[0]
        );
        assert!(matches!(&ops[1], ServerOp::Msg { sid: 8, message } if message.payload == "ok"));
        assert!(matches!(ops[2], ServerOp::Ping));
        assert_eq!(ops.len(), 3);
    }
    // A size beyond any buffer is skipped the same way, never reserved.
    let mut parser = Parser::new(LIMIT);
    let mut buf = BytesMut::from(&b"MSG x 1 99999999999\r\nabc"[..]);
    assert!(matches!(
        parser.parse(&mut buf),
        Ok(Parsed::Op(ServerOp::Oversized {
            size: 99_999_999_999,
            ..
        }))
    ));
    assert!(buf.is_empty() && parser.is_skipping());
}

#[test]
fn a_subject_that_is_not_utf8_skips_the_message_not_the_connection() {
    let input = [&b"MSG \xff 4 1\r\nz\r\n"[..], b"PING\r\n"].concat();
    let (ops, error) = feed(&input, &[]);
    assert_eq!(error, None);
    assert!(matches!(ops[0], ServerOp::Unreadable { sid: 4, .. }));
    assert!(matches!(ops[1], ServerOp::Ping));
}

fn arbitrary_message() -> impl Strategy<Value = (u64, String, Option<String>, Vec<u8>, Vec<u8>)> {
    let subject = "[a-z0-9_.>*-]{1,20}";
    let header = prop_oneof![
        Just(Vec::new()),
        "[A-Za-z-]{1,10}".prop_map(|n| format!("NATS/1.0\r\n{n}: v\r\n\r\n").into_bytes()),
    ];
    (
        any::<u64>(),
        subject,
        proptest::option::of("[a-z0-9._]{1,12}"),
        header,
        proptest::collection::vec(any::<u8>(), 0..300),
    )
}

proptest! {
    #[test]
    fn hostile_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..400),
                                 cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
        let _ = feed(&input, &cuts);
    }

    #[test]
    fn protocol_words_with_hostile_arguments_never_panic(
        verb in prop_oneof![Just("MSG "), Just("HMSG "), Just("INFO "), Just("-ERR ")],
        rest in proptest::collection::vec(any::<u8>(), 0..200),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let input = [verb.as_bytes(), &rest].concat();
        let _ = feed(&input, &cuts);
    }

    #[test]
    fn messages_survive_any_split(messages in proptest::collection::vec(arbitrary_message(), 1..6),
                                  cuts in proptest::collection::vec(any::<usize>(), 0..10)) {
        let input: Vec<u8> = messages
            .iter()
            .flat_map(|(sid, s, r, h, p)| encode(*sid, s, r.as_deref(), h, p))
            .collect();
        let (ops, error) = feed(&input, &cuts);
        prop_assert_eq!(error, None);
        prop_assert_eq!(ops.len(), messages.len());
        for (op, (sid, subject, reply, header, payload)) in ops.iter().zip(&messages) {
            let ServerOp::Msg { sid: got, message } = op else { panic!("{op:?}") };
            prop_assert_eq!(got, sid);
            prop_assert_eq!(message.subject.as_str(), subject.as_str());
            prop_assert_eq!(message.reply.as_deref(), reply.as_deref());
            prop_assert_eq!(&message.payload[..], &payload[..]);
            prop_assert_eq!(message.headers.as_ref().map(|h| h.len()), (!header.is_empty()).then_some(1));
        }
    }
}
