//! The documented certificate flow, run through the binary: the dealer's operator and
//! the model owner each make a CA, every party makes its own key and request, each CA
//! signs its own parties, the model owner revokes one client; then real `veil dealer`,
//! `veil serve` and `veil infer` processes over mutual TLS answer the good client and
//! refuse the revoked one at the handshake.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use veil_serve::processes::{WorkFolder, free_loopback_addresses};

fn veil() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_veil"));
    command.current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."));
    command
}

fn run(arguments: &[&str]) -> Output {
    veil().args(arguments).output().expect("veil runs")
}

fn succeed(arguments: &[&str]) -> Output {
    let output = run(arguments);
    assert!(output.status.success(), "veil {arguments:?}: {output:?}");
    output
}

fn text(path: &Path) -> String {
    path.display().to_string()
}

/// Kills a role process this test started, when the test ends either way.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(unix)]
fn assert_owner_only(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .expect("the key exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{}", path.display());
}

#[cfg(not(unix))]
fn assert_owner_only(_: &Path) {}

#[test]
fn separate_cas_per_party_keys_and_a_revoked_client() {
    let folder = WorkFolder::new("certs-test").expect("a work folder");
    let work = folder.path();
    let (dealer_ca, owner_ca) = (work.join("dealer-ca"), work.join("owner-ca"));
    succeed(&[
        "certs",
        "ca",
        "--out",
        &text(&dealer_ca),
        "--name",
        "dealer operator CA",
    ]);
    succeed(&[
        "certs",
        "ca",
        "--out",
        &text(&owner_ca),
        "--name",
        "model owner CA",
    ]);
    assert_owner_only(&dealer_ca.join("ca.key"));
    // A second `ca` into the same folder never replaces the key.
    assert!(
        !run(&["certs", "ca", "--out", &text(&dealer_ca)])
            .status
            .success()
    );

    let parties = [
        ("dealer", "dealer", Some("dealer-1"), &dealer_ca),
        ("server", "server", None, &owner_ca),
        ("alice", "client", Some("alice"), &owner_ca),
        ("mallory", "client", Some("mallory"), &owner_ca),
    ];
    for (party, role, name, ca) in parties {
        let party_folder = work.join(party);
        let mut request = vec!["certs", "request", "--role", role];
        if let Some(name) = name {
            request.extend(["--name", name]);
        }
        let out = text(&party_folder);
        request.extend(["--out", &out]);
        succeed(&request);
        assert_owner_only(&party_folder.join(format!("{role}.key")));
        let csr = text(&party_folder.join(format!("{role}.csr")));
        // A CA signs only the role its operator names.
        let other = if role == "dealer" { "server" } else { "dealer" };
        let wrong = run(&[
            "certs",
            "sign",
            "--ca",
            &text(ca),
            "--request",
            &csr,
            "--role",
            other,
            "--out",
            &text(&work.join("wrong.pem")),
        ]);
        assert!(!wrong.status.success(), "{wrong:?}");
        succeed(&[
            "certs",
            "sign",
            "--ca",
            &text(ca),
            "--request",
            &csr,
            "--role",
            role,
            "--out",
            &text(&party_folder.join(format!("{role}.pem"))),
        ]);
        // Each party trusts, per peer role, that role's CA only.
        let trusted: &[(&str, &PathBuf)] = match role {
            "dealer" => &[("server", &owner_ca), ("client", &owner_ca)],
            "server" => &[("dealer", &dealer_ca), ("client", &owner_ca)],
            _ => &[("server", &owner_ca), ("dealer", &dealer_ca)],
        };
        for (peer, peer_ca) in trusted {
            std::fs::copy(
                peer_ca.join("ca.pem"),
                party_folder.join(format!("trust-{peer}.pem")),
            )
            .expect("copying a CA certificate");
        }
    }
    let shown = succeed(&[
        "certs",
        "show",
        "--certificate",
        &text(&work.join("alice/client.pem")),
    ]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("client \"alice\""));
    succeed(&[
        "certs",
        "revoke",
        "--ca",
        &text(&owner_ca),
        "--certificate",
        &text(&work.join("mallory/client.pem")),
    ]);
    let revocations = text(&owner_ca.join("ca.crl"));

    let (dealer_address, server_address) = free_loopback_addresses().expect("two free ports");
    let public_plan = "models/digits-mlp/digits-mlp.public.plan";
    let spawn = |arguments: &[&str]| {
        Running(
            veil()
                .args(arguments)
                .stdout(Stdio::null())
                .spawn()
                .expect("a role process starts"),
        )
    };
    let _dealer = spawn(&[
        "dealer",
        "--listen",
        &dealer_address,
        "--public-plan",
        public_plan,
        "--tls-dir",
        &text(&work.join("dealer")),
        "--crl",
        &revocations,
    ]);
    let _server = spawn(&[
        "serve",
        "--listen",
        &server_address,
        "--dealer",
        &dealer_address,
        "--plan",
        "models/digits-mlp/digits-mlp.plan",
        "--tls-dir",
        &text(&work.join("server")),
        "--crl",
        &revocations,
    ]);
    let input = work.join("input.txt");
    std::fs::write(&input, vec!["0.5"; 64].join(" ")).expect("writing the input");
    let infer = |party: &str| {
        run(&[
            "infer",
            "--server",
            &server_address,
            "--dealer",
            &dealer_address,
            "--public-plan",
            public_plan,
            "--input",
            &text(&input),
            "--tls-dir",
            &text(&work.join(party)),
        ])
    };
    let refused = infer("mallory");
    assert!(
        !refused.status.success(),
        "the revoked client was served: {refused:?}"
    );
    let error = String::from_utf8_lossy(&refused.stderr).to_lowercase();
    assert!(error.contains("revoked"), "{error}");
    let answered = infer("alice");
    assert!(answered.status.success(), "{answered:?}");
    assert!(String::from_utf8_lossy(&answered.stdout).contains("prediction"));
}
