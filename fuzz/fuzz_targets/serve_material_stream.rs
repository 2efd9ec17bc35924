//! The material stream decoder (item headers, word chunks, the end frame) on arbitrary
//! frames after a valid half header: items or a clear error, never a panic, and never
//! an allocation beyond one chunk ahead of the bytes received.
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use veil_core::prg::Seed;
use veil_mpc::{MaterialGenerator, PartyMaterial, PartyRole};
use veil_serve::messages::MaterialStream;

/// A client half's header (session, role, seed) from a small plan's generator.
fn header() -> &'static [u8] {
    static HEADER: OnceLock<Vec<u8>> = OnceLock::new();
    HEADER.get_or_init(|| {
        let plan = veil_model::zoo::random_mlp("fuzz", &[3, 2, 2], 0)
            .expect("a small plan")
            .public;
        let parameters = veil_exec::dealer_parameters(&plan, &Seed::from_bytes([1; 16]), 1);
        let generator = MaterialGenerator::new(
            plan.fixed_point().expect("fixed point"),
            Arc::new(parameters),
        )
        .expect("a generator");
        generator.encoded_header(PartyRole::Client)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut material) = PartyMaterial::decode(header()) else {
        return;
    };
    let (frames, _) = veil_net::read_frames(data, 1 << 20);
    let mut stream = MaterialStream::new(&mut material);
    for frame in frames {
        if stream.accept(&frame).is_err() || stream.is_done() {
            break;
        }
    }
});
