//! Reading the role and name of a peer's certificate, which runs on the peer's bytes
//! before its chain is verified: an identity or a clear error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let certificate = rustls_pki_types::CertificateDer::from(data);
    if let Ok(identity) = veil_net::tls::certificate_identity(&certificate)
        && let Some(name) = &identity.name
    {
        assert!(veil_net::tls::is_valid_name(name));
    }
});
