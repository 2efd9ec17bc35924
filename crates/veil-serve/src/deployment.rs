//! An in-process deployment: the dealer and the server on threads of this process,
//! listening on loopback, over mutual TLS with throwaway CAs made in memory (the dealer
//! operator's and the model owner's, trusted per peer role as in a deployment), or plain
//! TCP on loopback when asked, and clients connected to them. `veil demo` and the
//! integration tests use it; measurements that need each role in its own process use
//! [`crate::processes`] instead.
//!
//! A demonstration and a test harness, not a deployment: all roles share one process,
//! so nothing here keeps one role's secrets from another.

use std::net::TcpListener;
use std::thread::JoinHandle;

use veil_model::{Plan, PublicPlan};
use veil_net::pki::{CertificateAuthority, SigningRequest};
use veil_net::tls::{TlsIdentity, TrustRoots};
use veil_net::{Role, TcpOptions};

use crate::roles::{
    Client, ClientOptions, DealerOptions, DealerSummary, ServerState, ServerSummary, new_epoch,
    run_dealer, run_server,
};
use crate::transport::Transport;
use crate::{Error, Result};

/// One transport per role of a deployment.
#[derive(Clone, Debug)]
pub struct Transports {
    /// The dealer's.
    pub dealer: Transport,
    /// The server's.
    pub server: Transport,
    /// The client's.
    pub client: Transport,
}

impl Transports {
    /// Mutual TLS with certificates made in memory as a deployment makes them: the
    /// dealer's operator has a CA of its own, the model owner another (signing the server
    /// and the client, named `client`), and each party trusts, per peer role, that
    /// role's CA only.
    pub fn tls(options: TcpOptions) -> Result<Self> {
        let dealer_ca = CertificateAuthority::generate("veil dealer operator CA (in memory)")?;
        let owner_ca = CertificateAuthority::generate("veil model owner CA (in memory)")?;
        let ca_of = |role: Role| match role {
            Role::Dealer => &dealer_ca,
            _ => &owner_ca,
        };
        let transport = |role: Role| -> Result<Transport> {
            let request = SigningRequest::generate(role, Some(role.name()))?;
            let signed = ca_of(role).sign(request.request_pem(), role)?;
            let mut trust = TrustRoots::new();
            for &peer in crate::certificates::peer_roles(role) {
                trust.add_pem(peer, ca_of(peer).certificate_pem().as_bytes())?;
            }
            let identity = TlsIdentity::new(
                &trust,
                signed.certificate_pem.as_bytes(),
                request.key_pem().as_bytes(),
            )?;
            Ok(Transport::Tls { identity, options })
        };
        Ok(Self {
            dealer: transport(Role::Dealer)?,
            server: transport(Role::Server)?,
            client: transport(Role::Client)?,
        })
    }

    /// Plain TCP, loopback only: roles are claimed, not proven (tests, experiments).
    pub fn dangerous_plain_tcp(options: TcpOptions) -> Self {
        let transport = Transport::DangerousPlainTcp { options };
        Self {
            dealer: transport.clone(),
            server: transport.clone(),
            client: transport,
        }
    }
}

/// How to run an in-process deployment.
#[derive(Clone, Debug, Default)]
pub struct DeploymentOptions {
    /// The dealer's options (its client limit included: `None` serves forever, and then
    /// [`Deployment::finish`] never returns).
    pub dealer: DealerOptions,
    /// Client sessions the server serves before it returns (`None`: forever).
    pub server_clients: Option<usize>,
    /// The mask epoch (a fresh random one when `None`).
    pub epoch: Option<u64>,
    /// Plain TCP on loopback instead of mutual TLS.
    pub dangerous_plain_tcp: bool,
    /// The client's channel options (e.g. a short read timeout); the defaults for the
    /// dealer and the server.
    pub client_channel: TcpOptions,
}

impl DeploymentOptions {
    /// A deployment for one client session: the dealer and the server each serve one
    /// client, then [`Deployment::finish`] returns (the demo, `veil embed --model`).
    pub fn single_client() -> Self {
        Self {
            dealer: DealerOptions {
                max_clients: Some(1),
                ..DealerOptions::default()
            },
            server_clients: Some(1),
            ..Self::default()
        }
    }
}

/// A dealer and a server running on threads of this process, on loopback.
pub struct Deployment {
    transports: Transports,
    dealer_address: String,
    server_address: String,
    dealer_listener: Option<TcpListener>,
    server_listener: Option<TcpListener>,
    dealer: Option<JoinHandle<Result<DealerSummary>>>,
    dealer_summary: Option<DealerSummary>,
    server: Option<JoinHandle<Result<ServerSummary>>>,
    epoch: Option<u64>,
}

/// A loopback listener on a free port and its address.
pub fn loopback_listener() -> Result<(TcpListener, String)> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(Error::io("binding a loopback listener"))?;
    let address = listener
        .local_addr()
        .map_err(Error::io("reading a listener's address"))?
        .to_string();
    Ok((listener, address))
}

impl Deployment {
    /// Makes the transports, binds the dealer's and the server's listeners, and runs the
    /// dealer and then the server (which registers with it) on threads of their own.
    pub fn start(plan: &Plan, options: DeploymentOptions) -> Result<Self> {
        let mut transports = if options.dangerous_plain_tcp {
            Transports::dangerous_plain_tcp(TcpOptions::default())
        } else {
            Transports::tls(TcpOptions::default())?
        };
        transports.client = transports.client.with_options(options.client_channel);
        let mut deployment = Self::bind(transports)?;
        deployment.start_dealer(plan.public.clone(), options.dealer)?;
        let state = ServerState::new(
            plan.clone(),
            match options.epoch {
                Some(epoch) => epoch,
                None => new_epoch()?,
            },
        )?;
        deployment.start_server(state, options.server_clients)?;
        Ok(deployment)
    }

    /// Binds the dealer's and the server's listeners on loopback; nothing runs yet (for
    /// tests that act before or instead of a role).
    pub fn bind(transports: Transports) -> Result<Self> {
        let (dealer_listener, dealer_address) = loopback_listener()?;
        let (server_listener, server_address) = loopback_listener()?;
        Ok(Self {
            transports,
            dealer_address,
            server_address,
            dealer_listener: Some(dealer_listener),
            server_listener: Some(server_listener),
            dealer: None,
            dealer_summary: None,
            server: None,
            epoch: None,
        })
    }

    /// Runs the dealer for `plan` on a thread of its own.
    pub fn start_dealer(&mut self, plan: PublicPlan, options: DealerOptions) -> Result<()> {
        self.start_dealer_with(move |listener, transport| {
            run_dealer(listener, plan, &options, &transport)
        })
    }

    /// Runs `dealer` on the dealer's listener, on a thread of its own: a stand-in for
    /// the dealer (a test's misbehaving one).
    pub fn start_dealer_with(
        &mut self,
        dealer: impl FnOnce(TcpListener, Transport) -> Result<DealerSummary> + Send + 'static,
    ) -> Result<()> {
        let listener = self
            .dealer_listener
            .take()
            .ok_or(Error::Unreachable("the dealer was started twice"))?;
        let transport = self.transports.dealer.clone();
        self.dealer = Some(spawn("veil-dealer", move || dealer(listener, transport))?);
        Ok(())
    }

    /// Runs the server with `state` on a thread of its own, for `max_clients` client
    /// sessions (forever when `None`); it registers with the dealer first.
    pub fn start_server(&mut self, state: ServerState, max_clients: Option<usize>) -> Result<()> {
        let listener = self
            .server_listener
            .take()
            .ok_or(Error::Unreachable("the server was started twice"))?;
        self.epoch = Some(state.epoch());
        let (dealer_address, transport) =
            (self.dealer_address.clone(), self.transports.server.clone());
        self.server = Some(spawn("veil-server", move || {
            run_server(listener, &dealer_address, state, max_clients, &transport)
        })?);
        Ok(())
    }

    /// Connects a client of this deployment.
    pub fn connect_client(&self, plan: PublicPlan, options: ClientOptions) -> Result<Client> {
        Client::connect_with(
            plan,
            &self.server_address,
            &self.dealer_address,
            options,
            &self.transports.client,
        )
    }

    /// The dealer's address.
    pub fn dealer_address(&self) -> &str {
        &self.dealer_address
    }

    /// The server's address.
    pub fn server_address(&self) -> &str {
        &self.server_address
    }

    /// The server's mask epoch, once it runs.
    pub fn epoch(&self) -> Option<u64> {
        self.epoch
    }

    /// The client's transport (for clients made by hand).
    pub fn client_transport(&self) -> &Transport {
        &self.transports.client
    }

    /// The dealer's transport, for tests that run another dealer of this deployment's CA.
    pub fn dealer_transport(&self) -> &Transport {
        &self.transports.dealer
    }

    /// The server's transport, for tests that pose as the server with its certificate.
    pub fn server_transport(&self) -> &Transport {
        &self.transports.server
    }

    /// Waits for the dealer to return (after its client limit) and gives its summary.
    pub fn join_dealer(&mut self) -> Result<DealerSummary> {
        if let Some(dealer) = self.dealer.take() {
            let summary = join(dealer, "dealer")?;
            self.dealer_summary = Some(summary);
        }
        self.dealer_summary
            .ok_or(Error::Unreachable("the dealer never ran"))
    }

    /// Waits for the server and the dealer to return (after their client limits) and
    /// gives their summaries: (the dealer's, the server's).
    pub fn finish(mut self) -> Result<(DealerSummary, ServerSummary)> {
        let server = self
            .server
            .take()
            .ok_or(Error::Unreachable("the server never ran"))?;
        let server = join(server, "server")?;
        Ok((self.join_dealer()?, server))
    }
}

fn spawn<T: Send + 'static>(
    name: &str,
    run: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<JoinHandle<Result<T>>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(run)
        .map_err(Error::io(format!("starting the {name} thread")))
}

fn join<T>(thread: JoinHandle<Result<T>>, what: &'static str) -> Result<T> {
    thread.join().map_err(|_| Error::ThreadPanicked { what })?
}
