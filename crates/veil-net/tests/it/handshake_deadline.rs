//! Issue 12: a peer that connects and never finishes the TLS handshake costs a thread
//! and a socket only until the handshake deadline; afterwards this process holds exactly
//! the file descriptors and threads it held before.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use veil_net::pki::{CertificateAuthority, SigningRequest};
use veil_net::tls::{TlsChannel, TlsIdentity, TrustRoots};
use veil_net::{Error, Role, TcpOptions};

/// Entries of a /proc folder of this process (Linux), or `None` elsewhere.
fn count(folder: &str) -> Option<usize> {
    std::fs::read_dir(folder)
        .ok()
        .map(|entries| entries.count())
}

#[test]
fn issue_12_silent_peers_release_their_threads_and_sockets_at_the_deadline() {
    let authority = CertificateAuthority::generate("CA").unwrap();
    let request = SigningRequest::generate(Role::Server, None).unwrap();
    let signed = authority.sign(request.request_pem(), Role::Server).unwrap();
    let identity = TlsIdentity::new(
        &TrustRoots::single(authority.certificate_pem().as_bytes()).unwrap(),
        signed.certificate_pem.as_bytes(),
        request.key_pem().as_bytes(),
    )
    .unwrap();
    let options = TcpOptions {
        handshake_timeout: Duration::from_secs(1),
        read_timeout: Duration::from_secs(20),
        ..TcpOptions::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let peers = 16;
    let (descriptors, threads) = (count("/proc/self/fd"), count("/proc/self/task"));
    // Silent peers: they connect and send nothing.
    let mut silent: Vec<TcpStream> = (0..peers)
        .map(|_| TcpStream::connect(address).unwrap())
        .collect();
    let acceptors: Vec<_> = (0..peers)
        .map(|_| {
            let (stream, _) = listener.accept().unwrap();
            let identity = identity.clone();
            std::thread::spawn(move || {
                TlsChannel::accept_stream(stream, &identity, &[Role::Client], options)
            })
        })
        .collect();
    for acceptor in acceptors {
        let accepted = acceptor.join().unwrap();
        assert!(
            matches!(accepted, Err(Error::HandshakeTimeout { .. })),
            "{accepted:?}"
        );
    }
    // Every peer sees its connection closed.
    for peer in &mut silent {
        peer.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut rest = Vec::new();
        if let Err(error) = peer.read_to_end(&mut rest) {
            assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
        }
    }
    drop(silent);
    assert_eq!(
        count("/proc/self/fd"),
        descriptors,
        "file descriptors leaked"
    );
    assert_eq!(count("/proc/self/task"), threads, "threads leaked");
}
