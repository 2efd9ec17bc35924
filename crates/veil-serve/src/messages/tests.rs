//! The messages' unit tests: fixed wire forms, round trips, and decoders fed
//! thousands of damaged or random byte strings without a panic.

use super::*;

fn hello() -> Hello {
    Hello {
        role: Role::Client,
        plan_hash: "ab".repeat(32),
        epoch: 9,
        commitment: WeightCommitment::from_bytes([5; 32]),
        extension: vec![1, 2, 3],
    }
}

#[test]
fn hellos_round_trip() {
    assert_eq!(Hello::decode(&hello().encode()).unwrap(), hello());
}

/// Tokens and commitments: the token never prints and compares by value; the
/// commitment binds seed, epoch and plan, and is none only when all zero.
#[test]
fn tokens_stay_secret_and_commitments_bind_seed_epoch_and_plan() {
    let token = ClaimToken::from_bytes([0xab; 16]);
    let text = format!(
        "{token:?} {:?}",
        ClientMessage::ClaimAhead {
            session_id: 1,
            token
        }
    );
    assert!(!text.contains("171") && !text.contains("ab, "), "{text}");
    assert!(token.matches(&ClaimToken::from_bytes([0xab; 16])));
    assert!(!token.matches(&ClaimToken::from_bytes([0xaa; 16])));
    let seed = Seed::from_bytes([1; SEED_BYTES]);
    let other = Seed::from_bytes([2; SEED_BYTES]);
    let base = WeightCommitment::of(&seed, 5, "plan");
    assert_eq!(base, WeightCommitment::of(&seed, 5, "plan"));
    assert_ne!(base, WeightCommitment::of(&other, 5, "plan"));
    assert_ne!(base, WeightCommitment::of(&seed, 6, "plan"));
    assert_ne!(base, WeightCommitment::of(&seed, 5, "plan2"));
    assert!(!base.is_none() && WeightCommitment::NONE.is_none());
    let prefetch = ClientExtension {
        batch: 1,
        prefetch: MAX_PREFETCH + 1,
    };
    let error = ClientExtension::decode(&prefetch.encode())
        .unwrap_err()
        .to_string();
    assert!(error.contains("prefetch depth"), "{error}");
}

#[test]
fn the_extension_does_not_print() {
    let secret = Hello {
        extension: vec![0xab; 16],
        ..hello()
    };
    assert!(!format!("{secret:?}").contains("171"));
    let register = ServerExtension::Register {
        weight_seed: Seed::from_bytes([0xab; SEED_BYTES]),
    };
    let text = format!("{register:?}");
    assert!(!text.contains("171") && !text.contains("ab"), "{text}");
}

#[test]
fn a_wrong_version_setting_or_magic_is_a_clear_error() {
    let mut wrong_version = hello().encode();
    wrong_version[4] = 99;
    let error = Hello::decode(&wrong_version).unwrap_err().to_string();
    assert!(error.contains("protocol version 99"), "{error}");
    let mut wrong_setting = hello().encode();
    wrong_setting[8] = 7;
    assert!(
        Hello::decode(&wrong_setting)
            .unwrap_err()
            .to_string()
            .contains("setting")
    );
    let mut wrong_magic = hello().encode();
    wrong_magic[0] = b'X';
    assert!(
        Hello::decode(&wrong_magic)
            .unwrap_err()
            .to_string()
            .contains("veil protocol")
    );
}

/// The wire forms are the protocol: these bytes never change.
#[test]
fn wire_forms_are_fixed() {
    let session = 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10u128;
    let id = session.to_le_bytes();
    let token = ClaimToken::from_bytes([0xc4; 16]);
    let token_bytes = [0xc4u8; 16];
    let mut hello_bytes = b"VEIL".to_vec();
    hello_bytes.extend_from_slice(&2u32.to_le_bytes());
    hello_bytes.extend_from_slice(&[1, 2]);
    hello_bytes.extend_from_slice(&9u64.to_le_bytes());
    hello_bytes.extend_from_slice(&[5; 32]);
    hello_bytes.extend_from_slice(&64u16.to_le_bytes());
    hello_bytes.extend_from_slice("ab".repeat(32).as_bytes());
    hello_bytes.extend_from_slice(&[1, 2, 3]);
    assert_eq!(hello().encode(), hello_bytes);
    let seed = Seed::from_bytes([7; SEED_BYTES]);
    assert_eq!(
        ServerExtension::Register { weight_seed: seed }.encode(),
        [&[1u8][..], &[7; 16]].concat()
    );
    assert_eq!(
        ServerExtension::Claim {
            session_id: session,
            token
        }
        .encode(),
        [&[2u8][..], &id, &token_bytes].concat()
    );
    assert_eq!(
        ClientExtension {
            batch: 3,
            prefetch: 4
        }
        .encode(),
        [3u64.to_le_bytes(), 4u64.to_le_bytes()].concat()
    );
    assert!(SessionRequest.encode().is_empty());
    assert!(Ready.encode().is_empty());
    assert_eq!(
        SessionAnswer::Follows {
            claimable: Duration::from_secs(120),
            token
        }
        .encode(),
        [&[0u8][..], &120u64.to_le_bytes(), &token_bytes].concat()
    );
    assert_eq!(
        SessionAnswer::Refused {
            reason: "no".into()
        }
        .encode(),
        b"\x01no"
    );
    assert_eq!(
        ClientMessage::QueryStart {
            session_id: session,
            token,
            batch: 5
        }
        .encode(),
        [&[0u8][..], &id, &token_bytes, &5u64.to_le_bytes()].concat()
    );
    assert_eq!(
        ClientMessage::ClaimAhead {
            session_id: session,
            token
        }
        .encode(),
        [&[1u8][..], &id, &token_bytes].concat()
    );
    assert_eq!(RegistrationAnswer::Accepted.encode(), [0u8]);
    assert_eq!(
        RegistrationAnswer::Refused {
            reason: "taken".into()
        }
        .encode(),
        b"\x01taken"
    );
}

#[test]
fn out_of_range_batches_and_stray_payloads_are_refused() {
    for batch in [0u64, (MAX_BATCH + 1) as u64, u64::MAX] {
        let mut bytes = batch.to_le_bytes().to_vec();
        bytes.extend_from_slice(&0u64.to_le_bytes());
        let error = ClientExtension::decode(&bytes).unwrap_err().to_string();
        assert!(error.contains("batch size"), "{error}");
        let mut start = vec![QUERY_START];
        start.extend_from_slice(&1u128.to_le_bytes());
        start.extend_from_slice(&batch.to_le_bytes());
        assert!(ClientMessage::decode(&start).is_err());
    }
    let error = SessionRequest::decode(&[0], Role::Client)
        .unwrap_err()
        .to_string();
    assert!(error.contains("after the handshake"), "{error}");
    assert!(Ready::decode(&[0]).is_err());
}

fn test_plan() -> PublicPlan {
    veil_model::zoo::random_mlp("messages-test", &[6, 4, 3], 5)
        .unwrap()
        .public
}

/// Frames sent, collected.
#[derive(Default)]
struct Frames(Vec<Vec<u8>>);

impl Channel for Frames {
    fn send(&mut self, payload: &[u8]) -> veil_net::Result<()> {
        self.0.push(payload.to_vec());
        Ok(())
    }
    fn recv(&mut self) -> veil_net::Result<Vec<u8>> {
        Err(veil_net::Error::PeerClosed)
    }
    fn stats(&self) -> veil_net::ChannelStats {
        veil_net::ChannelStats::default()
    }
}

/// A server half as the dealer streams it: its header frame, the frames of its items
/// and the end frame; and the half as it must arrive (the wire form of the whole).
fn material_stream() -> (Vec<u8>, Vec<Vec<u8>>, Vec<u8>) {
    let plan = test_plan();
    let parameters = std::sync::Arc::new(veil_exec::dealer_parameters(
        &plan,
        &Seed::random().unwrap(),
        1,
    ));
    let mut items = Vec::new();
    let mut header = Vec::new();
    let (sink, server_header) = (&mut items, &mut header);
    crate::roles::dealer::generate_material(
        &plan,
        &parameters,
        1,
        Default::default(),
        move |headers| {
            server_header.clone_from(&headers.server);
            Ok(Box::new(move |role, item| {
                if role == veil_mpc::PartyRole::Server {
                    sink.push(item);
                }
                Ok(())
            }))
        },
    )
    .unwrap();
    let mut frames = Frames::default();
    let mut whole = PartyMaterial::decode(&header).unwrap();
    for item in &items {
        send_item(&mut frames, item).unwrap();
        whole
            .push_streamed(item.tag(), item.words().to_vec())
            .unwrap();
    }
    send_end(&mut frames).unwrap();
    assert!(items.len() > 2, "the test plan streams several items");
    (header, frames.0, whole.encode())
}

/// Feeds `frames` to a stream into the half `header` starts; the half once complete.
fn feed(header: &[u8], frames: &[Vec<u8>]) -> Result<Option<PartyMaterial>> {
    let mut material = PartyMaterial::decode(header)?;
    let mut stream = MaterialStream::new(&mut material);
    for frame in frames {
        stream.accept(frame)?;
        if stream.is_done() {
            return Ok(Some(material));
        }
    }
    Ok(None)
}

/// Replays frames in order, then reports the peer gone.
struct Replay(std::collections::VecDeque<Vec<u8>>);

impl Channel for Replay {
    fn send(&mut self, _: &[u8]) -> veil_net::Result<()> {
        Ok(())
    }
    fn recv(&mut self) -> veil_net::Result<Vec<u8>> {
        self.0.pop_front().ok_or(veil_net::Error::PeerClosed)
    }
    fn stats(&self) -> veil_net::ChannelStats {
        veil_net::ChannelStats::default()
    }
}

/// Feeds `frames` on a thread into a streaming half of `header`, queueing one item.
fn feed_on_thread(
    header: &[u8],
    frames: &[Vec<u8>],
) -> (PartyMaterial, std::thread::JoinHandle<Result<u64>>) {
    let (half, feeder) = PartyMaterial::decode(header).unwrap().into_streaming(1);
    let mut link = Replay(frames.iter().cloned().collect());
    (
        half,
        std::thread::spawn(move || feed_items(&mut link, feeder)),
    )
}

#[test]
fn a_fed_half_gets_every_item_and_a_cut_or_abandoned_stream_ends_cleanly() {
    let (header, frames, whole) = material_stream();
    let items = PartyMaterial::decode(&whole).unwrap().remaining_items();
    // Every item arrives, then the end; unused, they are left over.
    let (mut half, feed) = feed_on_thread(&header, &frames);
    match half.finish() {
        Err(veil_mpc::Error::MaterialLeftOver { left }) => assert_eq!(left, items),
        other => panic!("expected leftovers, got {other:?}"),
    }
    assert_eq!(
        feed.join().unwrap().unwrap(),
        (whole.len() - header.len()) as u64
    );
    // The dealer's link closes before the end frame: the half reports it.
    let (mut half, feed) = feed_on_thread(&header, &frames[..frames.len() - 1]);
    let error = half.finish().unwrap_err();
    assert!(
        matches!(error, veil_mpc::Error::MaterialStreamFailed { .. }),
        "{error}"
    );
    assert!(feed.join().unwrap().is_err());
    // A damaged chunk fails the stream with the decoder's message.
    let mut damaged = frames.clone();
    damaged.insert(2, vec![1, 2, 3]);
    let (mut half, feed) = feed_on_thread(&header, &damaged);
    assert!(half.finish().is_err());
    assert!(feed.join().unwrap().is_err());
    // The party drops its half: the feeder stops instead of reading on.
    let (half, feed) = feed_on_thread(&header, &frames);
    drop(half);
    let error = feed.join().unwrap().unwrap_err();
    assert!(
        matches!(error, Error::Mpc(veil_mpc::Error::MaterialConsumerGone)),
        "{error}"
    );
}

#[test]
fn material_streams_round_trip_and_damaged_streams_never_panic() {
    let (header, frames, whole) = material_stream();
    let received = feed(&header, &frames).unwrap().expect("complete");
    assert_eq!(received.encode(), whole);
    // Feeding past the end is refused.
    let mut material = PartyMaterial::decode(&header).unwrap();
    let mut stream = MaterialStream::new(&mut material);
    stream.accept(&[]).unwrap();
    assert!(stream.accept(&[]).is_err());
    // An oversized announcement is refused before anything is allocated.
    let mut huge = frames[0].clone();
    let words = huge.len() - 8;
    huge[words..].copy_from_slice(&u64::MAX.to_le_bytes());
    let error = feed(&header, &[huge]).unwrap_err().to_string();
    assert!(error.contains("exceeds the cap"), "{error}");
    // Damaged streams: a frame mutated, dropped, cut or split wrongly.
    let mut state = 11u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 17) as usize
    };
    for round in 0..5_000 {
        let mut damaged = frames.clone();
        let index = next() % damaged.len();
        match round % 4 {
            0 if !damaged[index].is_empty() => {
                let position = next() % damaged[index].len();
                damaged[index][position] = next() as u8;
            }
            1 => {
                damaged.remove(index);
            }
            2 => {
                let keep = next() % (damaged[index].len() + 1);
                damaged[index].truncate(keep);
            }
            _ => damaged.insert(index, (0..next() % 20).map(|_| next() as u8).collect()),
        }
        // A stream may end early (an empty frame is its end) and then fails when
        // used; what matters here is that nothing panics or over-allocates.
        if let Ok(Some(material)) = feed(&header, &damaged) {
            assert!(material.encoded_len() as u64 <= MAX_MATERIAL_BYTES);
        }
    }
}

/// Mutations of valid encodings: one byte changed, truncated, extended, or random.
fn mutations(valid: &[u8], rounds: usize, mut check: impl FnMut(&[u8])) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 17
    };
    check(valid);
    check(&[]);
    for round in 0..rounds {
        let mut bytes = valid.to_vec();
        match round % 4 {
            0 if !bytes.is_empty() => {
                let position = next() as usize % bytes.len();
                bytes[position] = next() as u8;
            }
            1 => bytes.truncate(next() as usize % (bytes.len() + 1)),
            2 => bytes.extend((0..next() % 24).map(|_| next() as u8)),
            _ => bytes = (0..next() % 40).map(|_| next() as u8).collect(),
        }
        check(&bytes);
    }
}

#[test]
fn decoding_arbitrary_bytes_never_panics_and_valid_messages_round_trip() {
    const ROUNDS: usize = 5_000;
    mutations(&hello().encode(), ROUNDS, |bytes| {
        if let Ok(decoded) = Hello::decode(bytes) {
            assert_eq!(decoded.encode(), bytes);
        }
    });
    let token = ClaimToken::from_bytes([0x3c; 16]);
    let claim = ServerExtension::Claim {
        session_id: 77,
        token,
    };
    let register = ServerExtension::Register {
        weight_seed: Seed::from_bytes([3; SEED_BYTES]),
    };
    for valid in [claim.encode(), register.encode()] {
        mutations(&valid, ROUNDS, |bytes| {
            if let Ok(decoded) = ServerExtension::decode(bytes) {
                assert_eq!(decoded.encode(), bytes);
            }
        });
    }
    let client = ClientExtension {
        batch: 2,
        prefetch: 3,
    };
    assert_eq!(ClientExtension::decode(&client.encode()).unwrap(), client);
    mutations(&client.encode(), ROUNDS, |bytes| {
        if let Ok(decoded) = ClientExtension::decode(bytes) {
            assert_eq!(decoded.encode(), bytes);
        }
    });
    for valid in [
        SessionAnswer::Follows {
            claimable: Duration::from_secs(120),
            token,
        },
        SessionAnswer::Refused {
            reason: "raise pool_bytes".into(),
        },
    ] {
        assert_eq!(SessionAnswer::decode(&valid.encode()).unwrap(), valid);
        mutations(&valid.encode(), ROUNDS, |bytes| {
            if let Ok(decoded) = SessionAnswer::decode(bytes)
                && std::str::from_utf8(bytes).is_ok()
            {
                assert_eq!(decoded.encode(), bytes);
            }
        });
    }
    for valid in [
        ClientMessage::QueryStart {
            session_id: u128::MAX - 5,
            token,
            batch: 65_536,
        },
        ClientMessage::ClaimAhead {
            session_id: 9,
            token,
        },
    ] {
        assert_eq!(ClientMessage::decode(&valid.encode()).unwrap(), valid);
        mutations(&valid.encode(), ROUNDS, |bytes| {
            if let Ok(decoded) = ClientMessage::decode(bytes) {
                assert_eq!(decoded.encode(), bytes);
            }
        });
    }
    for valid in [
        RegistrationAnswer::Accepted,
        RegistrationAnswer::Refused {
            reason: "another server holds this dealer".into(),
        },
    ] {
        assert_eq!(RegistrationAnswer::decode(&valid.encode()).unwrap(), valid);
        mutations(&valid.encode(), ROUNDS, |bytes| {
            if let Ok(decoded) = RegistrationAnswer::decode(bytes) {
                assert_eq!(decoded.encode(), bytes);
            }
        });
    }
    mutations(&[], ROUNDS, |bytes| {
        assert_eq!(Ready::decode(bytes).is_ok(), bytes.is_empty());
        assert_eq!(
            SessionRequest::decode(bytes, Role::Server).is_ok(),
            bytes.is_empty()
        );
    });
    let plan = test_plan();
    let masked: std::collections::HashMap<String, RingTensor> = MaskedWeights::layout(&plan)
        .enumerate()
        .map(|(index, (name, shape, words))| {
            let data = (0..words as u64).map(|w| w * 31 + index as u64).collect();
            (name.clone(), RingTensor::new(shape.clone(), data).unwrap())
        })
        .collect();
    let valid = MaskedWeights::encode(&plan, &masked).unwrap();
    let decoded = MaskedWeights::decode(&plan, &valid).unwrap();
    assert_eq!(decoded.len(), masked.len());
    for (name, tensor) in &decoded {
        assert_eq!(tensor.data(), masked[name].data());
    }
    mutations(&valid, ROUNDS, |bytes| {
        if let Ok(decoded) = MaskedWeights::decode(&plan, bytes) {
            let again: std::collections::HashMap<_, _> = decoded.into_iter().collect();
            assert_eq!(MaskedWeights::encode(&plan, &again).unwrap(), bytes);
        }
    });
}
