//! The dealer's answer to a session request on arbitrary bytes; a decoded answer
//! re-encodes to its input (a refusal whose reason is text).
#![no_main]
use libfuzzer_sys::fuzz_target;
use veil_serve::messages::SessionAnswer;

fuzz_target!(|data: &[u8]| {
    if let Ok(answer) = SessionAnswer::decode(data)
        && std::str::from_utf8(data).is_ok()
    {
        assert_eq!(answer.encode(), data);
    }
});
