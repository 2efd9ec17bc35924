//! The settings the programs run in, and the bounds they are held to.
//!
//! A setting is one implementation of [`Protocol`](veil_mpc::Protocol) and what it takes
//! to run it: [`Cleartext`] is the reference (the fixed-point simulation, exact by
//! definition), [`Dealer`] the first secure setting (two parties on in-memory channels,
//! with the material of the dealer's generator). A new setting implements [`Setting`]
//! here and gets one line in the list at the end of `matrix.rs`.

use std::sync::Arc;
use std::thread;

use veil_core::RingTensor;
use veil_mpc::{
    ClientParameters, ComparisonKeys, DealerParameters, MaterialGenerator, Party, PartyMaterial,
    PartyParameters, Result, ServerParameters, SessionLedger,
};
use veil_net::{Channel, memory_pair};

use crate::fixture::Fixture;
use crate::programs::Program;

/// How far a setting's output may be from the reference, element by element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// Bit for bit the reference.
    Exact,
    /// The reference (the floor) or one ulp above it, element by element: precise
    /// truncation (TruncPr, cookbook §1.4) returns the floor or the floor plus one.
    WithinOneUlpAbove,
}

impl Bound {
    /// Panics, naming `context` and the first element out of bound, if `output` is not
    /// within this bound of `reference`.
    pub fn assert(self, context: &str, output: &RingTensor, reference: &RingTensor) {
        assert_eq!(output.shape(), reference.shape(), "{context}: shape");
        for (index, (output, reference)) in output.data().iter().zip(reference.data()).enumerate() {
            let difference = output.wrapping_sub(*reference) as i64;
            let within = match self {
                Bound::Exact => difference == 0,
                Bound::WithinOneUlpAbove => difference == 0 || difference == 1,
            };
            assert!(
                within,
                "{context}: element {index} (reference {}): output − reference = {difference}, \
                 outside {self:?}",
                *reference as i64
            );
        }
    }
}

/// One setting of the matrix.
pub trait Setting {
    /// The setting's name, in assertion messages.
    const NAME: &'static str;

    /// Runs `program` on `input` over the fixture's weights and biases; returns what
    /// the client learns.
    fn run(program: &impl Program, fixture: &Fixture, input: &RingTensor) -> RingTensor;

    /// The bound this setting documents for a program whose secure bound is `program`.
    fn bound(program: Bound) -> Bound;
}

/// The reference: the fixed-point simulation, every value in the clear.
pub struct Cleartext;

impl Cleartext {
    pub fn simulate(program: &impl Program, fixture: &Fixture, input: &RingTensor) -> RingTensor {
        let mut cleartext = veil_mpc::Cleartext::new(
            fixture.fixed_point,
            fixture.weights.clone(),
            fixture.biases.clone(),
        );
        program.run(&mut cleartext, Some(input)).unwrap().unwrap()
    }
}

impl Setting for Cleartext {
    const NAME: &'static str = "cleartext";

    fn run(program: &impl Program, fixture: &Fixture, input: &RingTensor) -> RingTensor {
        Self::simulate(program, fixture, input)
    }

    /// Truncation is the floor, comparisons decide on the same k-bit reduction: the
    /// reference is exact everywhere.
    fn bound(_program: Bound) -> Bound {
        Bound::Exact
    }
}

/// The dealer setting: server and client on two threads over a channel pair, with the
/// material of the dealer's generator (seeded from the fixture, so a run replays).
pub struct Dealer;

impl Dealer {
    /// The dealer's material for one session of `program`: (server's, client's).
    pub fn material(program: &impl Program, fixture: &Fixture) -> (PartyMaterial, PartyMaterial) {
        Self::material_with(program, fixture, ComparisonKeys::default())
    }

    /// As [`Self::material`], with comparisons on `keys`.
    pub fn material_with(
        program: &impl Program,
        fixture: &Fixture,
        keys: ComparisonKeys,
    ) -> (PartyMaterial, PartyMaterial) {
        let dealer_parameters = Arc::new(DealerParameters::new(
            &fixture.weight_seed(),
            1,
            &fixture.weight_shapes(),
        ));
        let mut generator = MaterialGenerator::dangerous_from_test_seed(
            fixture.fixed_point,
            dealer_parameters,
            &fixture.next_session_seed(),
        );
        generator.set_comparison_keys(keys);
        assert!(program.run(&mut generator, None).unwrap().is_none());
        generator.finish()
    }

    /// The server's and the client's parameters.
    pub fn parameters(fixture: &Fixture) -> (PartyParameters, PartyParameters) {
        let server = ServerParameters::new(
            &fixture.weight_seed(),
            1,
            fixture.weights.clone(),
            fixture.biases.clone(),
        );
        let client = ClientParameters::new(server.masked_weights().unwrap());
        (
            PartyParameters::Server(Arc::new(server)),
            PartyParameters::Client(Arc::new(client)),
        )
    }

    /// Runs server and client on two threads over `channels` (the server's, the
    /// client's); returns the client's output.
    pub fn secure<C: Channel + 'static>(
        program: &impl Program,
        fixture: &Fixture,
        input: &RingTensor,
        channels: (C, C),
    ) -> Result<RingTensor> {
        Self::secure_with(program, fixture, input, channels, ComparisonKeys::default())
    }

    /// As [`Self::secure`], with comparisons on `keys`.
    pub fn secure_with<C: Channel + 'static>(
        program: &impl Program,
        fixture: &Fixture,
        input: &RingTensor,
        channels: (C, C),
        keys: ComparisonKeys,
    ) -> Result<RingTensor> {
        let (server_material, client_material) = Self::material_with(program, fixture, keys);
        let (server_parameters, client_parameters) = Self::parameters(fixture);
        let (server_channel, client_channel) = channels;
        let fixed_point = fixture.fixed_point;
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
        party.finish()?;
        server.join().expect("server thread")?;
        Ok(output)
    }
}

impl Setting for Dealer {
    const NAME: &'static str = "dealer";

    fn run(program: &impl Program, fixture: &Fixture, input: &RingTensor) -> RingTensor {
        Self::secure(program, fixture, input, memory_pair()).unwrap()
    }

    /// Exact except precise truncation (cookbook §1.4), which may add one ulp.
    fn bound(program: Bound) -> Bound {
        program
    }
}

/// The dealer setting with DCF comparison keys instead of the default point-function
/// keys: the same parties, one round per comparison instead of two.
pub struct DealerDcf;

impl Setting for DealerDcf {
    const NAME: &'static str = "dealer (DCF keys)";

    fn run(program: &impl Program, fixture: &Fixture, input: &RingTensor) -> RingTensor {
        Dealer::secure_with(program, fixture, input, memory_pair(), ComparisonKeys::Dcf).unwrap()
    }

    fn bound(program: Bound) -> Bound {
        Dealer::bound(program)
    }
}
