//! The frame decoder on arbitrary bytes: frames or a clear error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = veil_net::read_frames(data, 1 << 16);
});
