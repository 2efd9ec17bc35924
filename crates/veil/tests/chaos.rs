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
