//! The dealer's answer to a server's registration on arbitrary bytes; a decoded answer
//! re-encodes to its input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use veil_serve::messages::RegistrationAnswer;

fuzz_target!(|data: &[u8]| {
    if let Ok(answer) = RegistrationAnswer::decode(data) {
        assert_eq!(answer.encode(), data);
    }
});
