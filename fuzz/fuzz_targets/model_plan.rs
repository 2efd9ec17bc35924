//! The plan loader on arbitrary bytes: a plan or a clear error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = veil_model::Plan::from_bytes(data);
    let _ = veil_model::PublicPlan::from_bytes(data);
});
