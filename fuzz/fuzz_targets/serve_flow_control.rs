//! The empty flow-control messages (a session request at the dealer, the server's
//! "ready" at the client) on arbitrary bytes: accepted exactly when empty.
#![no_main]
use libfuzzer_sys::fuzz_target;
use veil_net::Role;
use veil_serve::messages::{Ready, SessionRequest};

fuzz_target!(|data: &[u8]| {
    assert_eq!(Ready::decode(data).is_ok(), data.is_empty());
    assert_eq!(
        SessionRequest::decode(data, Role::Client).is_ok(),
        data.is_empty()
    );
});
