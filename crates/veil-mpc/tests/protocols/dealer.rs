//! What only the dealer setting promises: material is consumed once, in step, by the
//! role it was made for; what the parties send looks uniform; a malformed or vanished
//! peer is an error; shares do not print.

use std::sync::{Arc, Mutex};

use veil_core::RingTensor;
use veil_core::sampling::test_seed;
use veil_mpc::{Error, Party, PartyMaterial, Protocol, SessionLedger};
use veil_net::{Channel, ChannelStats, MemoryChannel, memory_pair};

use crate::fixture::{Fixture, adversarial_values, linear_fixture};
use crate::programs::{Comparisons, Layer, Lookups, Program, Truncate};
use crate::settings::Dealer;

#[test]
fn material_is_consumed_once() {
    let seed = test_seed();
    let fixture = Fixture::empty(&seed);
    let program = Truncate { len: 4, bits: 16 };
    let (server_material, _) = Dealer::material(&program, &fixture);
    let (server_parameters, _) = Dealer::parameters(&fixture);
    let bytes = server_material.encode();
    let ledger = SessionLedger::default();
    let (channel, _peer) = memory_pair();
    Party::new(
        channel,
        fixture.fixed_point,
        server_material,
        server_parameters.clone(),
        &ledger,
    )
    .unwrap();
    // The same material again (a replay of its bytes) is refused.
    let replay = PartyMaterial::decode(&bytes).unwrap();
    let (channel, _peer) = memory_pair();
    let again = Party::new(
        channel,
        fixture.fixed_point,
        replay,
        server_parameters,
        &ledger,
    );
    assert!(matches!(again, Err(Error::MaterialReused)));
}

#[test]
fn material_for_another_plan_or_left_over_is_an_error() {
    let seed = test_seed();
    let fixture = Fixture::empty(&seed);
    let (server_material, _) = Dealer::material(&Comparisons { len: 3, bits: 64 }, &fixture);
    let (server_parameters, _) = Dealer::parameters(&fixture);
    let (channel, _peer) = memory_pair();
    let ledger = SessionLedger::default();
    let mut party = Party::new(
        channel,
        fixture.fixed_point,
        server_material,
        server_parameters.clone(),
        &ledger,
    )
    .unwrap();
    // A different plan (truncation first) finds comparison material: out of step.
    let x = party.input(&[3], None).unwrap();
    assert!(matches!(
        party.truncate(&x, 16),
        Err(Error::MaterialMismatch { .. })
    ));
    let (server_material, _) = Dealer::material(&Comparisons { len: 3, bits: 64 }, &fixture);
    let (channel, _peer) = memory_pair();
    let party = Party::new(
        channel,
        fixture.fixed_point,
        server_material,
        server_parameters,
        &ledger,
    )
    .unwrap();
    assert!(matches!(
        party.finish(),
        Err(Error::MaterialLeftOver { .. })
    ));
}

#[test]
fn the_server_party_cannot_take_client_material() {
    let seed = test_seed();
    let fixture = Fixture::empty(&seed);
    let (_, client_material) = Dealer::material(&Truncate { len: 2, bits: 16 }, &fixture);
    let (server_parameters, _) = Dealer::parameters(&fixture);
    let (channel, _peer) = memory_pair();
    let result = Party::new(
        channel,
        fixture.fixed_point,
        client_material,
        server_parameters,
        &SessionLedger::default(),
    );
    assert!(result.is_err());
}

/// A channel that keeps a copy of every frame it sends.
struct Recording {
    inner: MemoryChannel,
    sent: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Channel for Recording {
    fn send(&mut self, payload: &[u8]) -> veil_net::Result<()> {
        self.sent.lock().unwrap().push(payload.to_vec());
        self.inner.send(payload)
    }
    fn recv(&mut self) -> veil_net::Result<Vec<u8>> {
        self.inner.recv()
    }
    fn stats(&self) -> ChannelStats {
        self.inner.stats()
    }
}

/// With a fixed input, every value a party sends must look uniform across runs: a zero,
/// fixed or reused mask would show up as a constant. A layer (products, truncation,
/// ReLU), comparisons with a select (the point-function gates' bit round, the select's
/// bit and value) and table lookups (the masked index, the sign-masked sum).
#[test]
fn opened_values_are_uniform_over_a_thousand_runs() {
    let seed = test_seed();
    let mut prg = seed.prg();
    let fixture = linear_fixture(&seed, &mut prg);
    let input = RingTensor::new(vec![3, 5], adversarial_values(15, 30, &mut prg)).unwrap();
    assert_messages_uniform(&Layer, &fixture, &input);
    let values = RingTensor::new(vec![15], adversarial_values(15, 30, &mut prg)).unwrap();
    let empty = Fixture::empty(&seed);
    assert_messages_uniform(&Comparisons { len: 15, bits: 40 }, &empty, &values);
    let lookups = Lookups {
        len: 15,
        bits: 8,
        table_seed: 5,
    };
    assert_messages_uniform(&lookups, &empty, &values);
}

fn assert_messages_uniform(program: &impl Program, fixture: &Fixture, input: &RingTensor) {
    let runs = 1000;
    let client_sent = Arc::new(Mutex::new(Vec::new()));
    let server_sent = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..runs {
        let (first, second) = memory_pair();
        let server = Recording {
            inner: first,
            sent: Arc::clone(&server_sent),
        };
        let client = Recording {
            inner: second,
            sent: Arc::clone(&client_sent),
        };
        Dealer::secure(program, fixture, input, (server, client)).unwrap();
    }
    for (who, sent) in [("client", client_sent), ("server", server_sent)] {
        let sent = sent.lock().unwrap();
        let messages_per_run = sent.len() / runs;
        // The server's last message is its output share, also masked; test every message.
        for message in 0..messages_per_run {
            // The top 4 bits of the first word of this message, across runs: 16 buckets.
            // A message of packed bits (a comparison's second round) is shorter than a
            // word: its first 4 bits then.
            let mut buckets = [0f64; 16];
            for run in 0..runs {
                let frame = &sent[run * messages_per_run + message];
                let nibble = if frame.len() >= 8 {
                    frame[7] >> 4
                } else {
                    frame[0] & 15
                };
                buckets[nibble as usize] += 1.0;
            }
            let expected = runs as f64 / 16.0;
            let chi_squared: f64 = buckets
                .iter()
                .map(|o| (o - expected).powi(2) / expected)
                .sum();
            // 15 degrees of freedom: P(χ² > 45) ≈ 7·10⁻⁵.
            assert!(
                chi_squared < 45.0,
                "{program:?}: {who} message {message}: χ² = {chi_squared:.1}"
            );
        }
    }
}

#[test]
fn a_peer_that_sends_the_wrong_length_or_vanishes_is_an_error() {
    let seed = test_seed();
    let fixture = Fixture::empty(&seed);
    let program = Truncate { len: 4, bits: 16 };
    let (_, client_material) = Dealer::material(&program, &fixture);
    let (_, client_parameters) = Dealer::parameters(&fixture);
    let (channel, mut peer) = memory_pair();
    let ledger = SessionLedger::default();
    let mut party = Party::new(
        channel,
        fixture.fixed_point,
        client_material,
        client_parameters.clone(),
        &ledger,
    )
    .unwrap();
    peer.send(&[1, 2, 3]).unwrap();
    let input = RingTensor::new(vec![4], vec![1, 2, 3, 4]).unwrap();
    let x = party.input(&[4], Some(&input)).unwrap();
    assert!(matches!(
        party.truncate(&x, 16),
        Err(Error::PeerMisbehaved(_))
    ));

    let (_, client_material) = Dealer::material(&program, &fixture);
    let (channel, peer) = memory_pair();
    let mut party = Party::new(
        channel,
        fixture.fixed_point,
        client_material,
        client_parameters,
        &ledger,
    )
    .unwrap();
    drop(peer);
    let x = party.input(&[4], Some(&input)).unwrap();
    assert!(matches!(
        party.truncate(&x, 16),
        Err(Error::Net(veil_net::Error::PeerClosed))
    ));
}

#[test]
fn shares_do_not_print_values() {
    let seed = test_seed();
    let fixture = Fixture::empty(&seed);
    let (_, client_material) = Dealer::material(&Truncate { len: 1, bits: 16 }, &fixture);
    let (_, client_parameters) = Dealer::parameters(&fixture);
    let (channel, _peer) = memory_pair();
    let mut party = Party::new(
        channel,
        fixture.fixed_point,
        client_material,
        client_parameters,
        &SessionLedger::default(),
    )
    .unwrap();
    let secret = RingTensor::new(vec![1], vec![987_654_321]).unwrap();
    let share = party.input(&[1], Some(&secret)).unwrap();
    assert!(!format!("{share:?}").contains("987654321"));
}
