//! `veil serve`, `veil dealer`, `veil infer` and `veil party`: one role from flags and
//! a config file, its report printed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use veil_model::plain::argmax_rows;
use veil_model::plan::OutputPolicy;
use veil_model::{Plan, PublicPlan};
use veil_net::{NetworkProfile, Role, TcpOptions};
use veil_serve::processes::{ClientReport, DealerReport, ServerReport};
use veil_serve::roles::{
    Client, ClientOptions, DealerOptions, ServerState, new_epoch, run_dealer, run_server,
};
use veil_serve::transport::Transport;

use crate::arguments::PartyArguments;
use crate::{print_report, read_numbers, read_text};

/// Runs one party; `forced` is the role the command names (the config may not name
/// another).
pub(crate) fn run_party(arguments: PartyArguments, forced: Option<Role>) -> Result<()> {
    let arguments = match &arguments.config {
        Some(path) => {
            let config: PartyArguments = toml::from_str(&read_text(path)?)
                .with_context(|| format!("reading the config {}", path.display()))?;
            arguments.or(config)
        }
        None => arguments,
    };
    let PartyArguments {
        role,
        listen,
        dealer,
        server,
        plan,
        public_plan,
        input,
        batch,
        repeat,
        max_clients,
        json,
        tls_dir,
        crl,
        insecure_plain_tcp,
        profile,
        metrics,
        pool_bytes,
        claim_timeout_seconds,
        prefetch,
        prefetch_bytes,
        pause_ms,
        max_connections,
        max_batch,
        send_queue_bytes,
        comparison_keys,
        config: _,
    } = arguments;
    let role = match (forced, role) {
        (Some(forced), Some(named)) if forced != named => bail!(
            "this command runs the {forced:?} role but the config names role {named:?}; use the config written for this role"
        ),
        (Some(forced), _) => forced,
        (None, Some(named)) => named,
        (None, None) => {
            bail!("--role (or role in the config) is required: client, server or dealer")
        }
    };
    let (batch, repeat) = (batch.unwrap_or(1), repeat.unwrap_or(1));
    let transport = transport(role, tls_dir, &crl, insecure_plain_tcp, profile)?;
    let need = |value: Option<String>, flag: &str| {
        value.with_context(|| format!("--{flag} is required for this role"))
    };
    match role {
        Role::Dealer => {
            let plan = PublicPlan::load(&public_plan.context("--public-plan is required")?)?;
            let listener = transport.listen(&need(listen, "listen")?)?;
            let mut dealer_options = DealerOptions {
                max_clients,
                ..DealerOptions::default()
            };
            if let Some(max) = max_connections {
                dealer_options.max_connections = max.max(1);
            }
            if let Some(bytes) = send_queue_bytes {
                dealer_options.send_queue_bytes = bytes.max(1);
            }
            if let Some(bytes) = pool_bytes {
                dealer_options.pool.capacity_bytes = bytes;
            }
            if let Some(name) = comparison_keys {
                dealer_options.pool.comparison_keys =
                    crate::arguments::comparison_keys(&name).map_err(anyhow::Error::msg)?;
            }
            if let Some(seconds) = claim_timeout_seconds {
                dealer_options.pool.claim_timeout = Duration::from_secs(seconds.max(1));
            }
            if let Some(address) = metrics {
                veil_serve::metrics::serve_metrics(&address, Arc::clone(&dealer_options.metrics))?;
            }
            let summary = run_dealer(listener, plan, &dealer_options, &transport)?;
            if json {
                print_report(&DealerReport::new(&summary), false)?;
            }
        }
        Role::Server => {
            let plan = Plan::load(&plan.context("--plan is required")?)?;
            let listener = transport.listen(&need(listen, "listen")?)?;
            let mut state = ServerState::new(plan, new_epoch()?)?;
            if let Some(max) = max_connections {
                state = state.with_max_connections(max);
            }
            if let Some(max) = max_batch {
                state = state.with_max_batch(max);
            }
            if let Some(address) = metrics {
                veil_serve::metrics::serve_metrics(&address, state.metrics())?;
            }
            let dealer = need(dealer, "dealer")?;
            let summary = run_server(listener, &dealer, state, max_clients, &transport)?;
            if json {
                print_report(&ServerReport::new(&summary), false)?;
            }
        }
        Role::Client => {
            let plan = PublicPlan::load(&public_plan.context("--public-plan is required")?)?;
            let input = read_numbers(&input.context("--input is required")?)?;
            let mut client_options = ClientOptions {
                batch,
                prefetch_queries: prefetch.unwrap_or(0),
                expected_queries: Some(repeat.max(1)),
                ..ClientOptions::default()
            };
            if let Some(bytes) = prefetch_bytes {
                client_options.prefetch_bytes = bytes;
            }
            let mut client = Client::connect_with(
                plan.clone(),
                &need(server, "server")?,
                &need(dealer, "dealer")?,
                client_options,
                &transport,
            )?;
            let mut reports = Vec::new();
            for query in 0..repeat.max(1) {
                if query > 0
                    && let Some(pause) = pause_ms
                {
                    std::thread::sleep(Duration::from_millis(pause));
                }
                reports.push(client.query(&input)?);
            }
            if json {
                print_report(&ClientReport::new(&reports, client.setup_bytes)?, false)?;
            } else {
                print_prediction(&plan, &reports[reports.len() - 1].output, batch);
            }
        }
        Role::Helper => {
            bail!("the helper role belongs to the rep3 setting, which this build does not serve")
        }
    }
    Ok(())
}

/// The transport a role's flags ask for: mutual TLS from the party's folder (see `veil
/// certs`) and revocation lists, or plain TCP (loopback testing) with an optional
/// simulated network profile.
pub(crate) fn transport(
    role: Role,
    tls_dir: Option<std::path::PathBuf>,
    revocations: &[std::path::PathBuf],
    insecure_plain_tcp: bool,
    profile: Option<String>,
) -> Result<Transport> {
    let profile = profile.unwrap_or_else(|| "local".into());
    let profile = NetworkProfile::from_name(&profile)
        .with_context(|| format!("unknown network profile {profile:?} (have: local, lan, wan)"))?;
    let options = TcpOptions {
        profile,
        ..TcpOptions::default()
    };
    Ok(match (tls_dir, insecure_plain_tcp) {
        (Some(directory), false) => {
            if profile != NetworkProfile::Local {
                bail!(
                    "network profiles are simulated on plain TCP only; drop --profile or use --insecure-plain-tcp"
                );
            }
            Transport::from_certificate_folder_with_revocations(
                &directory,
                role,
                revocations,
                options,
            )
            .with_context(|| {
                format!(
                    "loading the {role} TLS folder {} (make it with `veil certs request`, then `veil certs sign`)",
                    directory.display()
                )
            })?
        }
        (None, true) => {
            if !revocations.is_empty() {
                bail!("--crl applies to mutual TLS only; drop it or use --tls-dir");
            }
            Transport::DangerousPlainTcp { options }
        }
        _ => bail!(
            "pass exactly one of --tls-dir DIR (mutual TLS, see `veil certs`) and --insecure-plain-tcp"
        ),
    })
}

/// Prints what the client learnt: the label, or the logits and their argmax.
fn print_prediction(plan: &PublicPlan, output: &[f32], batch: usize) {
    if let OutputPolicy::Label { .. } = plan.output_policy {
        // The label policy reveals the class index and nothing else.
        let labels: Vec<usize> = output.iter().map(|&label| label as usize).collect();
        println!("prediction: {labels:?}");
    } else {
        let columns = output.len() / batch.max(1);
        println!("prediction: {:?}", argmax_rows(output, columns));
        println!("logits: {output:?}");
    }
}
