//! The handshake decoder on arbitrary bytes; a decoded hello re-encodes to its input.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(hello) = veil_serve::messages::Hello::decode(data) {
        assert_eq!(hello.encode(), data);
    }
});
