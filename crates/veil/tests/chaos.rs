//! The chaos test's short version, through the binary: the dealer and the server as real
//! processes over mutual TLS, 8 honest clients × 40 queries, while 1,000 idle
//! connections sit on each listener, a client floods the dealer and never reads, client
//! processes are killed mid-query, and the dealer (twice) and the server (once) are
//! killed and restarted. Every completed answer must equal the plain executor's, every
//! client must finish, the deployment must recover from each restart, memory and file
//! descriptors must stay bounded, and SIGTERM must end both processes promptly.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// The shutdown grace period of the roles plus the binary's margin.
const SHUTDOWN_LIMIT_SECONDS: f64 = 13.0;

#[test]
fn the_deployment_holds_under_attack_and_restarts() {
    let output = Command::new(env!("CARGO_BIN_EXE_veil"))
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .args(["chaos", "--quick", "--json", "--deadline-seconds", "400"])
        .output()
        .expect("veil runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "veil chaos failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("a JSON report");
    let number = |key: &str| {
        report[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key}: {report}"))
    };
    assert_eq!(number("answers_differing_from_plain"), 0.0);
    assert_eq!(number("unfinished_clients"), 0.0);
    assert_eq!(number("answers_completed"), 8.0 * 40.0);
    assert_eq!(number("idle_connections_per_listener"), 1000.0);
    assert!(number("flood_requests_sent") > 0.0, "{report}");
    assert_eq!(number("clients_killed"), 2.0);
    assert!(
        number("attack_throughput_fraction") > 0.0,
        "honest clients were served during the attack: {report}"
    );
    let recoveries = report["recoveries"].as_array().expect("recoveries");
    assert_eq!(recoveries.len(), 3, "{report}");
    for recovery in recoveries {
        let seconds = recovery["seconds"]
            .as_f64()
            .expect("a finite recovery time");
        assert!(seconds < 30.0, "{recovery}");
    }
    for role in ["dealer", "server"] {
        let rss = report["peak_rss_bytes"][role]
            .as_f64()
            .expect("sampled memory");
        assert!(rss < 1.5 * f64::from(1u32 << 30), "{role} peak RSS {rss}");
        // 1,000 idle connections cost up to three descriptors each (socket, poller,
        // waker); far below the default cap of 4,096 connections.
        let fds = report["peak_file_descriptors"][role]
            .as_f64()
            .expect("sampled fds");
        assert!(fds < 4000.0, "{role} peak file descriptors {fds}");
        let shutdown = report["shutdown_seconds"][role]
            .as_f64()
            .expect("an exit time");
        assert!(
            shutdown < SHUTDOWN_LIMIT_SECONDS,
            "{role} took {shutdown} s to stop"
        );
    }
    assert_eq!(number("last_dealer_payload_bytes_received"), 0.0);
}

/// SIGTERM ends a dealer still waiting for its server, and a server still waiting for
/// its dealer, at once (they used to wait forever, or for the connect patience).
#[test]
fn waiting_roles_stop_promptly_on_sigterm() {
    let repository = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let work = veil_serve::processes::WorkFolder::new("sigterm").unwrap();
    let certificates = work.certificates().unwrap();
    let (dealer_address, server_address) =
        veil_serve::processes::free_loopback_addresses().unwrap();
    let model = repository.join("models/digits-mlp");
    let roles: [(&str, Vec<String>); 2] = [
        (
            "dealer",
            vec![
                "--listen".into(),
                dealer_address.clone(),
                "--public-plan".into(),
                model.join("digits-mlp.public.plan").display().to_string(),
            ],
        ),
        (
            "server",
            vec![
                "--listen".into(),
                server_address,
                // Nobody listens there: the server waits for its dealer.
                "--dealer".into(),
                free_address(),
                "--plan".into(),
                model.join("digits-mlp.plan").display().to_string(),
            ],
        ),
    ];
    for (role, mut arguments) in roles {
        let folder = match role {
            "dealer" => certificates.party(veil_net::Role::Dealer),
            _ => certificates.party(veil_net::Role::Server),
        }
        .unwrap();
        arguments.extend(["--tls-dir".into(), folder.display().to_string()]);
        let mut child = Command::new(env!("CARGO_BIN_EXE_veil"))
            .current_dir(&repository)
            .arg(if role == "server" { "serve" } else { role })
            .args(&arguments)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1500));
        if child.try_wait().unwrap().is_some() {
            let output = child.wait_with_output().unwrap();
            panic!(
                "the {role} stopped by itself: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let signalled = std::time::Instant::now();
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let deadline = signalled + std::time::Duration::from_secs(5);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(
            status.is_some(),
            "the waiting {role} ignored SIGTERM for 5 s"
        );
    }
}

/// A loopback address nobody listens on (bound, then released).
fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}
