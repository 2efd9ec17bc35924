//! The server's handshake extension (registration or claim) on arbitrary bytes; a
//! decoded extension re-encodes to its input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use veil_serve::messages::ServerExtension;

fuzz_target!(|data: &[u8]| {
    if let Ok(extension) = ServerExtension::decode(data) {
        assert_eq!(extension.encode(), data);
    }
});
