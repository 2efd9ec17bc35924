//! The `dealer` setting against the fixed-point simulation: every op, on random and
//! adversarial inputs, with its documented error bound; consume-once; χ² uniformity of
//! what the parties open; malformed peers.

use std::sync::Arc;
use std::thread;

use veil_core::prg::{Prg, Seed};
use veil_core::{FixedPoint, RingTensor};
use veil_mpc::{
    Cleartext, ClientParameters, DealerParameters, Error, MaterialGenerator, Party, PartyMaterial,
    PartyParameters, Protocol, Result, ServerParameters, SessionLedger,
};
use veil_net::{Channel, ChannelStats, MemoryChannel, memory_pair};

/// A computation written once over the Protocol trait.
trait Program: Sync {
    fn run<P: Protocol>(
        &self,
        protocol: &mut P,
        input: Option<&RingTensor>,
    ) -> Result<Option<RingTensor>>;
}

struct Fixture {
    fixed_point: FixedPoint,
    weights: Vec<(String, RingTensor)>,
    biases: Vec<(String, RingTensor)>,
    weight_seed: Seed,
}

impl Fixture {
    fn new(weights: Vec<(String, RingTensor)>, biases: Vec<(String, RingTensor)>) -> Self {
        Self {
            fixed_point: FixedPoint::default(),
            weights,
            biases,
            weight_seed: Seed::random().unwrap(),
        }
    }

    fn empty() -> Self {
        Self::new(vec![], vec![])
    }

    fn simulate(&self, program: &impl Program, input: &RingTensor) -> RingTensor {
        let mut cleartext =
            Cleartext::new(self.fixed_point, self.weights.clone(), self.biases.clone());
        program.run(&mut cleartext, Some(input)).unwrap().unwrap()
    }

    fn material(&self, program: &impl Program) -> (PartyMaterial, PartyMaterial) {
        let shapes: Vec<(String, Vec<usize>)> = self
            .weights
            .iter()
            .map(|(n, w)| (n.clone(), w.shape().to_vec()))
            .collect();
        let dealer_parameters = Arc::new(DealerParameters::new(&self.weight_seed, 1, &shapes));
        let mut generator = MaterialGenerator::new(self.fixed_point, dealer_parameters).unwrap();
        assert!(program.run(&mut generator, None).unwrap().is_none());
        generator.finish()
    }

    fn parameters(&self) -> (PartyParameters, PartyParameters) {
        let server = ServerParameters::new(
            &self.weight_seed,
            1,
            self.weights.clone(),
            self.biases.clone(),
        );
        let client = ClientParameters::new(server.masked_weights());
        (
            PartyParameters::Server(Arc::new(server)),
            PartyParameters::Client(Arc::new(client)),
        )
    }

    /// Runs server and client on two threads; returns the client's output and the
    /// client's channel statistics.
    fn secure<C: Channel + 'static>(
        &self,
        program: &(impl Program + Clone + Send + 'static),
        input: &RingTensor,
        channels: (C, C),
    ) -> Result<(RingTensor, ChannelStats)> {
        let (server_material, client_material) = self.material(program);
        let (server_parameters, client_parameters) = self.parameters();
        let (server_channel, client_channel) = channels;
        let fixed_point = self.fixed_point;
        let server_program = program.clone();
        let server = thread::spawn(move || -> Result<()> {
            let ledger = SessionLedger::default();
            let mut party = Party::new(
                server_channel,
                fixed_point,
                server_material,
                server_parameters,
                &ledger,
            )?;
            assert!(server_program.run(&mut party, None)?.is_none());
            party.finish()?;
            Ok(())
        });
        let ledger = SessionLedger::default();
        let mut party = Party::new(
            client_channel,
            fixed_point,
            client_material,
            client_parameters,
            &ledger,
        )?;
        let output = program
            .run(&mut party, Some(input))?
            .expect("the client learns the output");
        let channel = party.finish()?;
        server.join().expect("server thread")?;
        Ok((output, channel.stats()))
    }

    fn secure_in_memory(
        &self,
        program: &(impl Program + Clone + Send + 'static),
        input: &RingTensor,
    ) -> RingTensor {
        self.secure(program, input, memory_pair()).unwrap().0
    }
}

fn adversarial_values(count: usize, limit_bits: u32, prg: &mut Prg) -> Vec<u64> {
    let limit = (1u64 << limit_bits) - 1;
    let mut values = vec![
        0,
        1,
        u64::MAX,
        limit,
        limit.wrapping_neg(),
        1 << 20,
        (-(1i64 << 20)) as u64,
    ];
    while values.len() < count {
        let magnitude =
            prg.next_u64() >> (64 - limit_bits) >> (prg.next_u64() % u64::from(limit_bits));
        values.push(if prg.next_u64() & 1 == 1 {
            magnitude.wrapping_neg()
        } else {
            magnitude
        });
    }
    values.truncate(count);
    values
}

fn assert_within_one_ulp_above(secure: &RingTensor, simulated: &RingTensor) {
    assert_eq!(secure.shape(), simulated.shape());
    for (index, (s, c)) in secure.data().iter().zip(simulated.data()).enumerate() {
        let difference = s.wrapping_sub(*c) as i64;
        assert!(
            difference == 0 || difference == 1,
            "element {index}: secure − floor = {difference}"
        );
    }
}

#[derive(Clone)]
struct Linear {
    truncate: bool,
}

impl Program for Linear {
    fn run<P: Protocol>(
        &self,
        p: &mut P,
        input: Option<&RingTensor>,
    ) -> Result<Option<RingTensor>> {
        let x = p.input(&[3, 5], input)?;
        let w = p.weight("w")?;
        let b = p.bias("b")?;
        let y = p.matmul_weight(&x, &w)?;
        let y = p.add_bias(&y, &b)?;
        let y = if self.truncate {
            p.truncate(&y, 16)?
        } else {
            y
        };
        p.reveal_to_client(&y)
    }
}

fn linear_fixture(prg: &mut Prg) -> Fixture {
    let codec = FixedPoint::default();
    let weights: Vec<u64> = (0..5 * 4)
        .map(|_| {
            codec
                .encode((prg.next_u64() % 2000) as f64 / 1000.0 - 1.0)
                .unwrap()
        })
        .collect();
    let bias: Vec<u64> = (0..4)
        .map(|i| codec.encode_scaled(i as f64 - 1.5, 32).unwrap())
        .collect();
    Fixture::new(
        vec![("w".into(), RingTensor::new(vec![5, 4], weights).unwrap())],
        vec![("b".into(), RingTensor::new(vec![4], bias).unwrap())],
    )
}

#[test]
fn weight_product_is_exact_and_truncation_within_one_ulp() {
    let mut prg = Prg::new(&Seed::random().unwrap());
    let fixture = linear_fixture(&mut prg);
    for round in 0..5 {
        let bits = if round == 0 { 40 } else { 24 };
        let input = RingTensor::new(vec![3, 5], adversarial_values(15, bits, &mut prg)).unwrap();
        let exact = Linear { truncate: false };
        assert_eq!(
            fixture.secure_in_memory(&exact, &input),
            fixture.simulate(&exact, &input)
        );
        let truncated = Linear { truncate: true };
        assert_within_one_ulp_above(
            &fixture.secure_in_memory(&truncated, &input),
            &fixture.simulate(&truncated, &input),
        );
    }
}

#[derive(Clone)]
struct Truncate {
    len: usize,
    bits: u32,
}

impl Program for Truncate {
    fn run<P: Protocol>(
        &self,
        p: &mut P,
        input: Option<&RingTensor>,
    ) -> Result<Option<RingTensor>> {
        let x = p.input(&[self.len], input)?;
        let y = p.truncate(&x, self.bits)?;
        p.reveal_to_client(&y)
    }
}

#[test]
fn truncation_error_is_zero_or_one_ulp_up_to_two_to_the_62() {
    let mut prg = Prg::new(&Seed::random().unwrap());
    let fixture = Fixture::empty();
    let edge = (1u64 << 62) - 1;
    let mut values = vec![
        0,
        1,
        u64::MAX,
        edge,
        edge.wrapping_neg(),
        (1u64 << 62).wrapping_neg(),
    ];
    values.extend(adversarial_values(400, 62, &mut prg));
    for &bits in &[1u32, 16, 32, 61] {
        let program = Truncate {
            len: values.len(),
            bits,
        };
        let input = RingTensor::new(vec![values.len()], values.clone()).unwrap();
        let secure = fixture.secure_in_memory(&program, &input);
        for (x, y) in values.iter().zip(secure.data()) {
            let floor = (*x as i64) >> bits;
            let difference = (*y as i64).wrapping_sub(floor);
            assert!(
                difference == 0 || difference == 1,
                "x {} bits {bits}: {difference}",
                *x as i64
            );
        }
    }
}

#[derive(Clone)]
struct Products;

impl Program for Products {
    fn run<P: Protocol>(
        &self,
        p: &mut P,
        input: Option<&RingTensor>,
    ) -> Result<Option<RingTensor>> {
        let x = p.input(&[4, 4], input)?;
        let square = p.mul(&x, &x)?;
        let product = p.matmul(&x, &square)?;
        let both = p.add(&product, &square)?;
        p.reveal_to_client(&both)
    }
}

#[test]
fn beaver_and_matrix_triples_are_exact() {
    let mut prg = Prg::new(&Seed::random().unwrap());
    let fixture = Fixture::empty();
    for _ in 0..3 {
        let input = RingTensor::new(vec![4, 4], prg.vec_u64(16)).unwrap();
        assert_eq!(
            fixture.secure_in_memory(&Products, &input),
            fixture.simulate(&Products, &input)
        );
    }
}

#[derive(Clone)]
struct Comparisons {
    len: usize,
    bits: u32,
}

impl Program for Comparisons {
    fn run<P: Protocol>(
        &self,
        p: &mut P,
        input: Option<&RingTensor>,
    ) -> Result<Option<RingTensor>> {
        let x = p.input(&[self.len], input)?;
        let bit = p.drelu(&x, self.bits)?;
        let relu = p.relu(&x, self.bits)?;
        let selected = p.select(&bit, &x)?;
        let out = p.reshape(bit, &[self.len, 1])?;
        let relu = p.reshape(relu, &[self.len, 1])?;
        let selected = p.reshape(selected, &[self.len, 1])?;
        // Reveal all three as one [len, 3]-shaped tensor, column by column.
        let mut columns = Vec::new();
        for value in [out, relu, selected] {
            columns.push(p.reveal_to_client(&value)?);
        }
        Ok(columns
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .map(|parts| {
                let data = parts.iter().flat_map(|t| t.data().to_vec()).collect();
                RingTensor::new(vec![3, self.len], data).unwrap()
            }))
    }
}

#[test]
fn drelu_relu_and_select_match_the_simulation() {
    let mut prg = Prg::new(&Seed::random().unwrap());
    let fixture = Fixture::empty();
    let boundaries = vec![
        0u64,
        1,
        u64::MAX,
        i64::MAX as u64,
        i64::MIN as u64,
        (i64::MIN + 1) as u64,
    ];
    for &bits in &[64u32, 40, 8] {
        let mut values = boundaries.clone();
        values.extend(adversarial_values(200, bits.min(63), &mut prg));
        if bits == 8 {
            values = (-128i64..128).map(|x| x as u64).collect();
        }
        let program = Comparisons {
            len: values.len(),
            bits,
        };
        let input = RingTensor::new(vec![values.len()], values).unwrap();
        let secure = fixture.secure_in_memory(&program, &input);
        assert_eq!(secure, fixture.simulate(&program, &input), "bits {bits}");
    }
}

#[test]
fn material_is_consumed_once() {
    let fixture = Fixture::empty();
    let program = Truncate { len: 4, bits: 16 };
    let (server_material, _) = fixture.material(&program);
    let (server_parameters, _) = fixture.parameters();
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
    let fixture = Fixture::empty();
    let (server_material, _) = fixture.material(&Comparisons { len: 3, bits: 64 });
    let (server_parameters, _) = fixture.parameters();
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
    let (server_material, _) = fixture.material(&Comparisons { len: 3, bits: 64 });
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
    let fixture = Fixture::empty();
    let (_, client_material) = fixture.material(&Truncate { len: 2, bits: 16 });
    let (server_parameters, _) = fixture.parameters();
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
    sent: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
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

#[derive(Clone)]
struct Layer;

impl Program for Layer {
    fn run<P: Protocol>(
        &self,
        p: &mut P,
        input: Option<&RingTensor>,
    ) -> Result<Option<RingTensor>> {
        let x = p.input(&[3, 5], input)?;
        let w = p.weight("w")?;
        let b = p.bias("b")?;
        let y = p.matmul_weight(&x, &w)?;
        let y = p.add_bias(&y, &b)?;
        let y = p.truncate(&y, 16)?;
        let y = p.relu(&y, 64)?;
        p.reveal_to_client(&y)
    }
}

/// With a fixed input, every value a party sends must look uniform across runs: a zero,
/// fixed or reused mask would show up as a constant.
#[test]
fn opened_values_are_uniform_over_a_thousand_runs() {
    let mut prg = Prg::new(&Seed::random().unwrap());
    let fixture = linear_fixture(&mut prg);
    let input = RingTensor::new(vec![3, 5], adversarial_values(15, 30, &mut prg)).unwrap();
    let runs = 1000;
    let client_sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let server_sent = Arc::new(std::sync::Mutex::new(Vec::new()));
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
        fixture.secure(&Layer, &input, (server, client)).unwrap();
    }
    for (who, sent) in [("client", client_sent), ("server", server_sent)] {
        let sent = sent.lock().unwrap();
        let messages_per_run = sent.len() / runs;
        // The server's last message is its output share, also masked; test every message.
        for message in 0..messages_per_run {
            // The top 4 bits of the first word of this message, across runs: 16 buckets.
            let mut buckets = [0f64; 16];
            for run in 0..runs {
                let frame = &sent[run * messages_per_run + message];
                buckets[(frame[7] >> 4) as usize] += 1.0;
            }
            let expected = runs as f64 / 16.0;
            let chi_squared: f64 = buckets
                .iter()
                .map(|o| (o - expected).powi(2) / expected)
                .sum();
            // 15 degrees of freedom: P(χ² > 45) ≈ 7·10⁻⁵.
            assert!(
                chi_squared < 45.0,
                "{who} message {message}: χ² = {chi_squared:.1}"
            );
        }
    }
}

#[test]
fn a_peer_that_sends_the_wrong_length_or_vanishes_is_an_error() {
    let fixture = Fixture::empty();
    let program = Truncate { len: 4, bits: 16 };
    let (_, client_material) = fixture.material(&program);
    let (_, client_parameters) = fixture.parameters();
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

    let (_, client_material) = fixture.material(&program);
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
    let fixture = Fixture::empty();
    let (_, client_material) = fixture.material(&Truncate { len: 1, bits: 16 });
    let (_, client_parameters) = fixture.parameters();
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
