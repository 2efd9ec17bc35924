//! The client's message between queries (query start, claim ahead) on arbitrary bytes;
//! a decoded message re-encodes to its input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use veil_serve::messages::ClientMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = ClientMessage::decode(data) {
        assert_eq!(message.encode(), data);
    }
});
