//! Roles as processes of their own on loopback, for measurements (`veil bench`, `veil
//! load`): the binary re-executed once per role (`veil party --role ROLE ...`), a work
//! folder for plans and certificates, free ports, and the JSON report each role prints
//! with `--json` ([`DealerReport`], [`ServerReport`], [`ClientReport`]: one type for the
//! printing role and the reading harness).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use veil_net::Role;
use veil_net::tls::generate_certificates;

use crate::deployment::loopback_listener;
use crate::roles::{DealerSummary, QueryReport, ServerSummary, peak_rss_bytes};
use crate::transport::write_certificate_folder;
use crate::{Error, Result};

/// A folder in the system's temporary directory for one run, removed when dropped.
#[derive(Debug)]
pub struct WorkFolder {
    path: PathBuf,
}

impl WorkFolder {
    /// `veil-NAME-PID` in the temporary directory.
    pub fn new(name: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("veil-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .map_err(Error::io(format!("creating {}", path.display())))?;
        Ok(Self { path })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A fresh deployment CA and a certificate per computing role and the dealer,
    /// written into `certificates/` (see [`write_certificate_folder`]); its path.
    pub fn certificates(&self) -> Result<PathBuf> {
        let folder = self.path.join("certificates");
        let certificates = generate_certificates(&[Role::Server, Role::Client, Role::Dealer])?;
        write_certificate_folder(&folder, &certificates)?;
        Ok(folder)
    }
}

impl Drop for WorkFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Two free loopback addresses (for the dealer and the server): bound, then released for
/// the role processes to bind.
pub fn free_loopback_addresses() -> Result<(String, String)> {
    let (first, first_address) = loopback_listener()?;
    let (second, second_address) = loopback_listener()?;
    drop((first, second));
    Ok((first_address, second_address))
}

/// One role's process: `veil party --role ROLE ARGUMENTS`, its report on stdout, its
/// log on this process's stderr.
#[derive(Debug)]
pub struct RoleProcess {
    role: Role,
    child: Child,
}

impl RoleProcess {
    /// Starts `executable` (the `veil` binary) as `role`.
    pub fn spawn(executable: &Path, role: Role, arguments: &[String]) -> Result<Self> {
        Self::spawn_logging(executable, role, arguments, None)
    }

    /// Starts `executable` as `role` with its log filtered by `log` (a `RUST_LOG` value;
    /// the process's default when `None`).
    pub fn spawn_logging(
        executable: &Path,
        role: Role,
        arguments: &[String],
        log: Option<&str>,
    ) -> Result<Self> {
        let mut command = Command::new(executable);
        command
            .args(["party", "--role", role.name()])
            .args(arguments)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(filter) = log {
            command.env("RUST_LOG", filter);
        }
        let child = command
            .spawn()
            .map_err(Error::io(format!("starting the {role} process")))?;
        Ok(Self { role, child })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the process to shut down gracefully (SIGTERM, through `kill(1)`).
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Waits for the process and reads the report it printed.
    pub fn report<T: DeserializeOwned>(self) -> Result<T> {
        let role = self.role;
        let output = self
            .child
            .wait_with_output()
            .map_err(Error::io(format!("waiting for the {role} process")))?;
        if !output.status.success() {
            return Err(Error::ProcessFailed {
                role,
                status: output.status.to_string(),
            });
        }
        serde_json::from_slice(&output.stdout).map_err(|cause| Error::Report { role, cause })
    }
}

/// What `veil dealer --json` prints.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DealerReport {
    /// `"dealer"`.
    pub role: String,
    /// Query sessions issued.
    pub queries: u64,
    /// Payload bytes received after the handshakes (must be 0).
    pub payload_bytes_received_after_handshake: u64,
    /// Sessions burnt.
    pub burnt_sessions: u64,
    /// Entries pre-generated by the pool.
    pub pool_pregenerated: u64,
    /// Requests served from the pool.
    pub pool_hits: u64,
    /// Requests the pool could not serve.
    pub pool_misses: u64,
    /// The process's peak resident set size.
    pub peak_rss_bytes: Option<u64>,
}

impl DealerReport {
    /// The report of a dealer that saw `summary`, with this process's peak memory.
    pub fn new(summary: &DealerSummary) -> Self {
        Self {
            role: Role::Dealer.to_string(),
            queries: summary.queries,
            payload_bytes_received_after_handshake: summary.payload_bytes_received_after_handshake,
            burnt_sessions: summary.burnt_sessions,
            pool_pregenerated: summary.pool.pregenerated,
            pool_hits: summary.pool.hits,
            pool_misses: summary.pool.misses,
            peak_rss_bytes: peak_rss_bytes(),
        }
    }
}

/// What `veil serve --json` prints.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerReport {
    /// `"server"`.
    pub role: String,
    /// Queries answered.
    pub queries: u64,
    /// Client sessions that failed.
    pub failed_sessions: u64,
    /// Bytes of the last query's material at the server.
    pub material_bytes: usize,
    /// Payload bytes sent to the dealer after the handshakes (must be 0).
    pub payload_bytes_sent_to_dealer: u64,
    /// The process's peak resident set size.
    pub peak_rss_bytes: Option<u64>,
}

impl ServerReport {
    /// The report of a server that saw `summary`, with this process's peak memory.
    pub fn new(summary: &ServerSummary) -> Self {
        Self {
            role: Role::Server.to_string(),
            queries: summary.queries,
            failed_sessions: summary.failed_sessions,
            material_bytes: summary.material_bytes,
            payload_bytes_sent_to_dealer: summary.payload_bytes_sent_to_dealer,
            peak_rss_bytes: peak_rss_bytes(),
        }
    }
}

/// What `veil infer --json` prints: medians over the queries after the first (the
/// warm-up), or over the only one.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientReport {
    /// `"client"`.
    pub role: String,
    /// Queries measured.
    pub runs: usize,
    /// Median online time.
    pub online_s: f64,
    /// Median time waiting for the dealer's half.
    pub offline_s: f64,
    /// Median latency of a whole query.
    pub latency_s: f64,
    /// Measured queries whose half was prefetched.
    pub warm_queries: usize,
    /// Median time spent prefetching after a query.
    pub prefetch_s: f64,
    /// Client → server bytes of the last query's online phase.
    pub client_sent_bytes: u64,
    /// Server → client bytes of the last query's online phase.
    pub server_sent_bytes: u64,
    /// Rounds of the last query's online phase.
    pub rounds: u64,
    /// Bytes of the client's set-up (D).
    pub setup_bytes: u64,
    /// Bytes of the last query's material at the client.
    pub client_material_bytes: usize,
    /// The last query's output.
    pub output: Vec<f32>,
    /// The process's peak resident set size.
    pub peak_rss_bytes: Option<u64>,
}

impl ClientReport {
    /// The report of a client's queries (at least one), with this process's peak
    /// memory.
    pub fn new(reports: &[QueryReport], setup_bytes: u64) -> Result<Self> {
        let measured = if reports.len() > 1 {
            &reports[1..]
        } else {
            reports
        };
        let last = measured.last().ok_or(Error::Unsupported(
            "a client report needs at least one query",
        ))?;
        let pick = |f: &dyn Fn(&QueryReport) -> f64| {
            median(&mut measured.iter().map(f).collect::<Vec<_>>())
        };
        Ok(Self {
            role: Role::Client.to_string(),
            runs: measured.len(),
            online_s: pick(&|r| r.online_seconds),
            offline_s: pick(&|r| r.offline_seconds),
            latency_s: pick(&|r| r.latency_seconds),
            warm_queries: measured.iter().filter(|r| r.warm).count(),
            prefetch_s: pick(&|r| r.prefetch_seconds),
            client_sent_bytes: last.client_sent_bytes,
            server_sent_bytes: last.server_sent_bytes,
            rounds: last.rounds,
            setup_bytes,
            client_material_bytes: last.client_material_bytes,
            output: last.output.clone(),
            peak_rss_bytes: peak_rss_bytes(),
        })
    }
}

/// The median (sorts `values`); 0 when empty.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), 0.0);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    /// The reports print with sorted keys (as `serde_json::Value` does) and read back.
    #[test]
    fn reports_round_trip() {
        let report = DealerReport::new(&DealerSummary::default());
        let text = serde_json::to_value(&report).unwrap().to_string();
        assert!(text.starts_with("{\"burnt_sessions\":0,"), "{text}");
        let back: DealerReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back.role, "dealer");
    }
}
