//! The client's handshake extension to the dealer (batch, prefetch depth) on arbitrary
//! bytes; a decoded extension re-encodes to its input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use veil_serve::messages::ClientExtension;

fuzz_target!(|data: &[u8]| {
    if let Ok(extension) = ClientExtension::decode(data) {
        assert_eq!(extension.encode(), data);
    }
});
