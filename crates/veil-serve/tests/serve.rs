//! The three roles as threads over real loopback TCP: the digits model end to end, the
//! dealer receives nothing after its handshakes, and faults end one session cleanly
//! while the server keeps serving.

use std::net::TcpListener;
use std::path::PathBuf;

use veil_data::digits::Dataset;
use veil_model::plain::{argmax_rows, run_plain};
use veil_model::{Plan, PublicPlan};
use veil_net::{Channel, Role, TcpOptions};
use veil_serve::deployment::{Deployment, DeploymentOptions, Transports};
use veil_serve::handshake::handshake;
use veil_serve::messages::{
    ClaimToken, ClientExtension, ClientMessage, Hello, RegistrationAnswer, ServerExtension,
    SessionAnswer, SessionRequest, WeightCommitment,
};
use veil_serve::pool::PoolConfig;
use veil_serve::roles::{
    Client, ClientOptions, DealerOptions, DealerSummary, ServerState, receive_items,
    receive_material,
};
use veil_serve::transport::{Link, Transport};

fn repository_file(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

fn bundled_plan() -> Plan {
    Plan::load(&repository_file("models/digits-mlp/digits-mlp.plan"))
        .expect("the bundled digits model")
}

fn bundled_cnn() -> Plan {
    Plan::load(&repository_file("models/digits-cnn/digits-cnn.plan"))
        .expect("the bundled digits CNN")
}

/// The digits test split (20 %, seed 0), as training and the demo use it.
fn digits_test_set() -> Dataset {
    let data = veil_data::digits::load(&repository_file("data/digits/digits.csv.gz")).unwrap();
    veil_data::digits::split(&data, 0.2, 0).1
}

/// The mask epoch of the tests' servers.
const EPOCH: u64 = 7;

/// A small pool, so tests do not spend their time pre-generating.
const TEST_POOL_BYTES: u64 = 8 << 20;

/// A deployment of `plan` whose server serves `server_clients` client sessions and whose
/// dealer serves `dealer_clients`, with a small pool.
fn deploy(plan: &Plan, server_clients: usize, dealer_clients: usize) -> Deployment {
    let options = DealerOptions {
        max_clients: Some(dealer_clients),
        pool: PoolConfig {
            capacity_bytes: TEST_POOL_BYTES,
            ..PoolConfig::default()
        },
        ..DealerOptions::default()
    };
    deploy_with(plan, server_clients, options)
}

fn deploy_with(plan: &Plan, server_clients: usize, dealer: DealerOptions) -> Deployment {
    let options = DeploymentOptions {
        dealer,
        server_clients: Some(server_clients),
        epoch: Some(EPOCH),
        ..DeploymentOptions::default()
    };
    Deployment::start(plan, options).unwrap()
}

/// A client with default options at batch 1.
fn connect(deployment: &Deployment, plan: &Plan) -> Client {
    deployment
        .connect_client(plan.public.clone(), ClientOptions::default())
        .unwrap()
}

/// A client that speaks the wire protocol by hand, to misbehave at chosen points.
struct RawClient {
    server: Link,
    dealer: Link,
    /// The commitment the server announced (claims must carry it).
    commitment: WeightCommitment,
}

impl RawClient {
    /// Set-up with the server (handshake, D) and a handshake with the dealer at batch 1
    /// without prefetching.
    fn connect(plan: &Plan, deployment: &Deployment) -> Self {
        let transport = deployment.client_transport();
        let mut server = transport
            .connect(deployment.server_address(), Role::Server)
            .unwrap();
        let hello = Hello {
            role: Role::Client,
            plan_hash: plan.public.hash_hex().unwrap(),
            epoch: 0,
            commitment: WeightCommitment::NONE,
            extension: vec![],
        };
        let server_hello = handshake(&mut server, &hello, Role::Server).unwrap();
        let _masked_weights = server.recv().unwrap();
        let mut dealer = transport
            .connect(deployment.dealer_address(), Role::Dealer)
            .unwrap();
        let extension = ClientExtension {
            batch: 1,
            prefetch: 0,
        };
        let hello = Hello {
            extension: extension.encode(),
            epoch: server_hello.epoch,
            commitment: server_hello.commitment,
            ..hello
        };
        handshake(&mut dealer, &hello, Role::Dealer).unwrap();
        Self {
            server,
            dealer,
            commitment: server_hello.commitment,
        }
    }

    /// Asks the dealer for a query session: its header (items not yet read) and its
    /// claim token.
    fn session(&mut self) -> (veil_mpc::PartyMaterial, ClaimToken) {
        self.dealer.send(&SessionRequest.encode()).unwrap();
        let answer = SessionAnswer::decode(&self.dealer.recv().unwrap()).unwrap();
        let SessionAnswer::Follows { token, .. } = answer else {
            panic!("the dealer answers that a session follows, not {answer:?}");
        };
        let material = veil_mpc::PartyMaterial::decode(&self.dealer.recv().unwrap()).unwrap();
        (material, token)
    }

    /// Names a session to the server, as a query's start.
    fn start(&mut self, session_id: u128, token: ClaimToken) {
        let start = ClientMessage::QueryStart {
            session_id,
            token,
            batch: 1,
        };
        self.server.send(&start.encode()).unwrap();
    }
}

/// A server-certificate connection to the dealer claiming `session_id`'s server half
/// with `token`.
fn claim(
    deployment: &Deployment,
    plan: &Plan,
    session_id: u128,
    token: ClaimToken,
    commitment: WeightCommitment,
) -> veil_serve::Result<veil_mpc::PartyMaterial> {
    let mut dealer = deployment
        .server_transport()
        .connect(deployment.dealer_address(), Role::Dealer)?;
    let hello = Hello {
        role: Role::Server,
        plan_hash: plan.public.hash_hex()?,
        epoch: EPOCH,
        commitment,
        extension: ServerExtension::Claim { session_id, token }.encode(),
    };
    handshake(&mut dealer, &hello, Role::Dealer)?;
    receive_material(&mut dealer)
}

/// The MLP runs on DCF comparison keys (`--comparison-keys dcf`), the CNN below on the
/// default point-function keys: both forms, end to end.
#[test]
fn digits_model_agrees_with_plaintext_and_the_dealer_receives_nothing() {
    let plan = bundled_plan();
    let test = digits_test_set();
    let options = DealerOptions {
        max_clients: Some(1),
        pool: PoolConfig {
            capacity_bytes: TEST_POOL_BYTES,
            comparison_keys: veil_mpc::ComparisonKeys::Dcf,
            ..PoolConfig::default()
        },
        ..DealerOptions::default()
    };
    let deployment = deploy_with(&plan, 1, options);
    let mut client = connect(&deployment, &plan);
    let mut agree = 0;
    for index in 0..test.len() {
        let plain = run_plain(&plan, test.sample(index), 1).unwrap();
        let secure = client.query(test.sample(index)).unwrap().output;
        agree += usize::from(argmax_rows(&plain, 10) == argmax_rows(&secure, 10));
    }
    drop(client);
    let (dealer, server) = deployment.finish().unwrap();
    let agreement = agree as f64 / test.len() as f64;
    assert!(agreement >= 0.995, "agreement {agreement}");
    assert_eq!(dealer.queries, test.len() as u64);
    assert_eq!(dealer.payload_bytes_received_after_handshake, 0);
    assert_eq!(server.payload_bytes_sent_to_dealer, 0);
    assert_eq!(server.failed_sessions, 0);
}

#[test]
fn digits_cnn_labels_agree_with_plaintext() {
    let plan = bundled_cnn();
    assert!(matches!(
        plan.public.output_policy,
        veil_model::plan::OutputPolicy::Label { .. }
    ));
    let test = digits_test_set();
    let deployment = deploy(&plan, 1, 1);
    let mut client = connect(&deployment, &plan);
    let mut agree = 0;
    for index in 0..test.len() {
        let plain = run_plain(&plan, test.sample(index), 1).unwrap();
        let secure = client.query(test.sample(index)).unwrap().output;
        // The label policy reveals one class index and nothing else.
        assert_eq!(secure.len(), 1);
        agree += usize::from(argmax_rows(&plain, 10)[0] == secure[0] as usize);
    }
    drop(client);
    let (_, server) = deployment.finish().unwrap();
    assert_eq!(server.failed_sessions, 0);
    let agreement = agree as f64 / test.len() as f64;
    assert!(agreement >= 0.995, "agreement {agreement}");
}

#[test]
fn a_client_that_vanishes_mid_query_ends_only_its_session() {
    let plan = bundled_plan();
    // The client with the wrong plan never reaches the dealer.
    let deployment = deploy(&plan, 3, 2);
    let input = vec![0.5f32; 64];
    // First client: gets its material, starts the query, sends half of the first
    // layer's message, and disappears.
    {
        let mut raw = RawClient::connect(&plan, &deployment);
        let (mut material, token) = raw.session();
        raw.start(material.session_id(), token);
        receive_items(&mut raw.dealer, &mut material).unwrap();
        assert!(raw.server.recv().unwrap().is_empty());
        raw.server.send(&[0u8; 100]).unwrap();
    }
    // Second client: a wrong public plan is refused at the handshake.
    let mut other = plan.public.clone();
    other.name = "another-model".into();
    assert!(
        deployment
            .connect_client(other, ClientOptions::default())
            .is_err()
    );
    // Third client: served normally, with the right answer.
    let mut client = connect(&deployment, &plan);
    let secure = client.query(&input).unwrap().output;
    let plain = run_plain(&plan, &input, 1).unwrap();
    assert_eq!(argmax_rows(&secure, 10), argmax_rows(&plain, 10));
    drop(client);
    let (_, server) = deployment.finish().unwrap();
    assert_eq!(server.queries, 1);
    assert_eq!(server.failed_sessions, 2);
}

#[test]
fn a_truncated_or_corrupted_plan_is_a_clear_error() {
    let bytes = std::fs::read(repository_file("models/digits-mlp/digits-mlp.plan")).unwrap();
    let truncated = Plan::from_bytes(&bytes[..bytes.len() - 10])
        .unwrap_err()
        .to_string();
    assert!(
        truncated.contains("truncated") || truncated.contains("corrupted"),
        "{truncated}"
    );
    let mut corrupted = bytes.clone();
    corrupted[200] ^= 1;
    assert!(
        Plan::from_bytes(&corrupted)
            .unwrap_err()
            .to_string()
            .contains("corrupted")
    );
    assert!(
        PublicPlan::from_bytes(b"not a plan at all")
            .unwrap_err()
            .to_string()
            .contains("not a veil plan")
    );
}

/// A client certificate cannot claim the server's place at the dealer, a certificate
/// from another deployment is refused by the server, and the real parties go on.
#[test]
fn certificates_bind_roles_and_deployments() {
    let plan = bundled_plan();
    let mut deployment = Deployment::bind(Transports::tls(TcpOptions::default()).unwrap()).unwrap();
    let options = DealerOptions {
        max_clients: Some(1),
        ..DealerOptions::default()
    };
    deployment
        .start_dealer(plan.public.clone(), options)
        .unwrap();
    // A client connects to the dealer before the server does, as if it were the server.
    let impostor = deployment
        .client_transport()
        .connect(deployment.dealer_address(), Role::Dealer);
    if let Ok(mut link) = impostor {
        let hello = Hello {
            role: Role::Server,
            plan_hash: plan.public.hash_hex().unwrap(),
            epoch: EPOCH,
            commitment: WeightCommitment::NONE,
            extension: vec![0; 16],
        };
        // The hellos may cross, but the dealer answers nothing and closes: a client
        // certificate never registers (the real server registers below).
        let handshake_failed = handshake(&mut link, &hello, Role::Dealer).is_err();
        assert!(handshake_failed || link.recv().is_err());
    }
    let state = ServerState::new(plan.clone(), EPOCH).unwrap();
    deployment.start_server(state, Some(2)).unwrap();
    // A client of another deployment is refused by the server.
    let stranger = Transports::tls(TcpOptions::default()).unwrap().client;
    assert!(
        Client::connect(
            plan.public.clone(),
            deployment.server_address(),
            deployment.dealer_address(),
            1,
            &stranger
        )
        .is_err()
    );
    // The real client is served.
    let mut client = connect(&deployment, &plan);
    let input = vec![0.25f32; 64];
    let secure = client.query(&input).unwrap().output;
    let plain = run_plain(&plan, &input, 1).unwrap();
    assert_eq!(argmax_rows(&secure, 10), argmax_rows(&plain, 10));
    drop(client);
    let (dealer, server) = deployment.finish().unwrap();
    assert_eq!((server.queries, server.failed_sessions), (1, 1));
    assert_eq!(dealer.payload_bytes_received_after_handshake, 0);
}

/// Eight clients at once over TLS, 25 queries each: every answer equals the plain
/// executor's and no session fails.
#[test]
fn eight_concurrent_clients_are_all_served_correctly() {
    let plan = bundled_cnn();
    let test = digits_test_set();
    let clients = 8;
    let queries = 25;
    let deployment = deploy(&plan, clients, clients);
    let started = std::time::Instant::now();
    let mut latencies: Vec<f64> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|worker| {
                let (plan, test, deployment) = (&plan, &test, &deployment);
                scope.spawn(move || {
                    let mut client = connect(deployment, plan);
                    let mut latencies = Vec::new();
                    for q in 0..queries {
                        let sample = test.sample((worker * queries + q) % test.len());
                        let begin = std::time::Instant::now();
                        let label = client.query(sample).unwrap().output[0] as usize;
                        latencies.push(begin.elapsed().as_secs_f64());
                        assert_eq!(
                            label,
                            argmax_rows(&run_plain(plan, sample, 1).unwrap(), 10)[0]
                        );
                    }
                    latencies
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap())
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let (dealer, server) = deployment.finish().unwrap();
    assert_eq!(server.queries, (clients * queries) as u64);
    assert_eq!(server.failed_sessions, 0);
    assert_eq!(dealer.payload_bytes_received_after_handshake, 0);
    assert_eq!(server.payload_bytes_sent_to_dealer, 0);
    latencies.sort_by(f64::total_cmp);
    eprintln!(
        "{} queries from {clients} concurrent clients in {elapsed:.2} s ({:.1} queries/s); latency p50 {:.1} ms, p99 {:.1} ms (debug-profile test build)",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        latencies[latencies.len() / 2] * 1e3,
        latencies[latencies.len() * 99 / 100] * 1e3
    );
}

/// A client certificate posing as the server to claim a half, and a client with a stale
/// mask epoch, are refused by the dealer; the honest query still completes.
#[test]
fn claims_are_role_bound_and_epochs_checked() {
    let plan = bundled_plan();
    let deployment = deploy(&plan, 1, 2);
    let hash = plan.public.hash_hex().unwrap();
    // The honest client connects first: the server has registered with the dealer by then.
    let mut client = connect(&deployment, &plan);
    // A client whose handshake names a stale epoch is refused by the dealer.
    let mut stale = deployment
        .client_transport()
        .connect(deployment.dealer_address(), Role::Dealer)
        .unwrap();
    let hello = Hello {
        role: Role::Client,
        plan_hash: hash.clone(),
        epoch: EPOCH - 1,
        commitment: WeightCommitment::NONE,
        extension: 1u64.to_le_bytes().to_vec(),
    };
    handshake(&mut stale, &hello, Role::Dealer).unwrap();
    assert!(
        stale.recv().is_err(),
        "the dealer must close a stale-epoch session"
    );
    // A client certificate cannot claim a server half, whatever its handshake says.
    let mut poser = deployment
        .client_transport()
        .connect(deployment.dealer_address(), Role::Dealer)
        .unwrap();
    let hello = Hello {
        role: Role::Server,
        plan_hash: hash.clone(),
        epoch: EPOCH,
        commitment: WeightCommitment::NONE,
        extension: ServerExtension::Claim {
            session_id: 42,
            token: ClaimToken::from_bytes([1; 16]),
        }
        .encode(),
    };
    let _ = handshake(&mut poser, &hello, Role::Dealer);
    assert!(poser.recv().is_err());
    let input = vec![0.5f32; 64];
    let secure = client.query(&input).unwrap().output;
    assert_eq!(
        argmax_rows(&secure, 10),
        argmax_rows(&run_plain(&plan, &input, 1).unwrap(), 10)
    );
    drop(client);
    let (dealer, server) = deployment.finish().unwrap();
    assert_eq!((server.queries, server.failed_sessions), (1, 0));
    assert_eq!(dealer.queries, 1);
}

/// A client that prefetches holds its halves before each query (warm), answers agree
/// with the plain executor, and the halves it never used are burnt when it leaves.
#[test]
fn prefetched_queries_are_warm_and_unused_halves_are_burnt() {
    let plan = bundled_plan();
    let deployment = deploy(&plan, 1, 1);
    let options = ClientOptions {
        batch: 1,
        prefetch_queries: 3,
        ..ClientOptions::default()
    };
    let mut client = deployment
        .connect_client(plan.public.clone(), options)
        .unwrap();
    assert_eq!(client.prefetched(), 3);
    let data = digits_test_set();
    for index in 0..5 {
        let sample = data.sample(index);
        let report = client.query(sample).unwrap();
        assert!(report.warm, "query {index} should use a prefetched half");
        assert_eq!(
            argmax_rows(&report.output, 10),
            argmax_rows(&run_plain(&plan, sample, 1).unwrap(), 10)
        );
        assert_eq!(client.prefetched(), 3);
    }
    drop(client);
    let (dealer, server) = deployment.finish().unwrap();
    assert_eq!((server.queries, server.failed_sessions), (5, 0));
    assert_eq!(
        dealer.queries, 8,
        "five used and three held when the client left"
    );
    // The three unused halves were burnt: at the dealer if the server had not claimed
    // them yet, at the server otherwise.
    assert_eq!(
        dealer.burnt_sessions + server.unused_halves,
        3,
        "{dealer:?} {server:?}"
    );
    assert_eq!(dealer.payload_bytes_received_after_handshake, 0);
}

/// A prefetch depth the byte budget cannot hold stops at the budget.
#[test]
fn prefetching_stays_within_the_client_byte_budget() {
    let plan = bundled_plan();
    let deployment = deploy(&plan, 1, 1);
    let options = ClientOptions {
        batch: 1,
        prefetch_queries: 10,
        // The digits MLP's half is about 23 KB: two fit, a third does not.
        prefetch_bytes: 60_000,
        expected_queries: None,
    };
    let mut client = deployment
        .connect_client(plan.public.clone(), options)
        .unwrap();
    let held = client.prefetched();
    let report = client.query(&[0.25f32; 64]).unwrap();
    assert!(report.warm);
    let half = report.client_material_bytes as u64;
    assert!((1..10).contains(&held), "{held} halves of {half} bytes");
    assert_eq!(held as u64, 60_000 / half, "halves of {half} bytes");
    assert_eq!(client.prefetched(), held);
    drop(client);
    deployment.finish().unwrap();
}

/// Each half goes once, to its own role: a second claim of a server half is refused, a
/// server certificate cannot open a client session, and the server, when handed an
/// already claimed session, ends that client's session and keeps serving others.
#[test]
fn a_half_is_delivered_once_and_only_to_its_role() {
    let plan = bundled_plan();
    let deployment = deploy(&plan, 2, 2);
    let mut raw = RawClient::connect(&plan, &deployment);
    let (mut material, token) = raw.session();
    receive_items(&mut raw.dealer, &mut material).unwrap();
    let session = material.session_id();
    // Knowing the session id is not enough: a claim with another token gets nothing,
    // and leaves the half in place ...
    let guessed = ClaimToken::from_bytes([9; 16]);
    assert!(claim(&deployment, &plan, session, guessed, raw.commitment).is_err());
    // ... and a claim without the server's commitment gets nothing either ...
    assert!(claim(&deployment, &plan, session, token, WeightCommitment::NONE).is_err());
    // ... the first real claim (with the server's certificate) gets the server half ...
    let server_half = claim(&deployment, &plan, session, token, raw.commitment).unwrap();
    assert_eq!(server_half.session_id(), session);
    assert_eq!(server_half.role(), veil_mpc::PartyRole::Server);
    // ... and a second claim of the same half gets nothing.
    let error = claim(&deployment, &plan, session, token, raw.commitment).unwrap_err();
    assert!(!format!("{error:#}").is_empty());
    // A server certificate asking for a client session (a client half) is refused.
    let mut poser = deployment
        .server_transport()
        .connect(deployment.dealer_address(), Role::Dealer)
        .unwrap();
    let extension = ClientExtension {
        batch: 1,
        prefetch: 0,
    };
    let hello = Hello {
        role: Role::Client,
        plan_hash: plan.public.hash_hex().unwrap(),
        epoch: EPOCH,
        commitment: raw.commitment,
        extension: extension.encode(),
    };
    let _ = handshake(&mut poser, &hello, Role::Dealer);
    let _ = poser.send(&SessionRequest.encode());
    assert!(
        poser.recv().is_err(),
        "a server must not receive a client half"
    );
    // The server is handed the claimed session: it cannot claim it again, so it ends
    // this client's session with an error ...
    raw.start(session, token);
    assert!(raw.server.recv().is_err());
    drop(raw);
    // ... and keeps serving the next client.
    let mut client = connect(&deployment, &plan);
    let input = vec![0.75f32; 64];
    let secure = client.query(&input).unwrap().output;
    assert_eq!(
        argmax_rows(&secure, 10),
        argmax_rows(&run_plain(&plan, &input, 1).unwrap(), 10)
    );
    drop(client);
    let (_, server) = deployment.finish().unwrap();
    assert_eq!((server.queries, server.failed_sessions), (1, 1));
}

/// What the stand-in dealer does to its client.
#[derive(Clone, Copy)]
enum DealerFault {
    /// Never answers the request.
    FallsBehind,
    /// Says a session follows, then disconnects.
    Vanishes,
}

/// A dealer that accepts the server's registration and then one client per fault,
/// misbehaving as told, then goes away entirely (run as the deployment's dealer).
fn faulty_dealer(
    listener: TcpListener,
    transport: Transport,
    plan_hash: String,
    faults: Vec<DealerFault>,
) -> veil_serve::Result<DealerSummary> {
    let mut ours = Hello {
        role: Role::Dealer,
        plan_hash,
        epoch: 0,
        commitment: WeightCommitment::NONE,
        extension: vec![],
    };
    let mut registration = transport.accept(&listener, Role::Server)?;
    let server = handshake(&mut registration, &ours, Role::Server)?;
    registration.send(&RegistrationAnswer::Accepted.encode())?;
    (ours.epoch, ours.commitment) = (server.epoch, server.commitment);
    // Each client on a thread of its own, so one that stalls does not hold up the next.
    let mut sessions = Vec::new();
    for fault in faults {
        let mut client = transport.accept(&listener, Role::Client)?;
        let ours = ours.clone();
        sessions.push(std::thread::spawn(move || {
            handshake(&mut client, &ours, Role::Client).unwrap();
            SessionRequest::decode(&client.recv().unwrap(), Role::Client).unwrap();
            match fault {
                DealerFault::FallsBehind => {
                    std::thread::sleep(std::time::Duration::from_secs(3));
                }
                DealerFault::Vanishes => {
                    let answer = SessionAnswer::Follows {
                        claimable: std::time::Duration::from_secs(120),
                        token: ClaimToken::random().unwrap(),
                    };
                    client.send(&answer.encode()).unwrap();
                }
            }
        }));
    }
    for session in sessions {
        session.join().unwrap();
    }
    Ok(DealerSummary::default())
}

/// A dealer that falls behind or disconnects ends the client's query with an error
/// naming the dealer; the server ends that session only, and a claim it cannot make
/// (the dealer gone) fails that session without stopping the server.
#[test]
fn a_dealer_that_falls_behind_or_vanishes_is_a_clear_error() {
    let plan = bundled_plan();
    let short = TcpOptions {
        read_timeout: std::time::Duration::from_secs(1),
        ..TcpOptions::default()
    };
    let mut transports = Transports::tls(TcpOptions::default()).unwrap();
    transports.client = transports.client.with_options(short);
    let mut deployment = Deployment::bind(transports).unwrap();
    let plan_hash = plan.public.hash_hex().unwrap();
    let faults = vec![DealerFault::FallsBehind, DealerFault::Vanishes];
    deployment
        .start_dealer_with(move |listener, transport| {
            faulty_dealer(listener, transport, plan_hash, faults)
        })
        .unwrap();
    let state = ServerState::new(plan.clone(), EPOCH).unwrap();
    deployment.start_server(state, Some(3)).unwrap();
    let input = vec![0.5f32; 64];
    for expected in ["within 1 s", "closed"] {
        let mut client = connect(&deployment, &plan);
        let error = format!("{:#}", client.query(&input).unwrap_err());
        assert!(error.contains("dealer"), "{error}");
        assert!(error.contains(expected), "{error}");
    }
    deployment.join_dealer().unwrap();
    // The dealer is gone: naming a session to the server fails that session's claim.
    let mut link = deployment
        .client_transport()
        .connect(deployment.server_address(), Role::Server)
        .unwrap();
    let hello = Hello {
        role: Role::Client,
        plan_hash: plan.public.hash_hex().unwrap(),
        epoch: 0,
        commitment: WeightCommitment::NONE,
        extension: vec![],
    };
    handshake(&mut link, &hello, Role::Server).unwrap();
    let _masked_weights = link.recv().unwrap();
    let start = ClientMessage::QueryStart {
        session_id: 42,
        token: ClaimToken::from_bytes([2; 16]),
        batch: 1,
    };
    link.send(&start.encode()).unwrap();
    assert!(
        link.recv().is_err(),
        "the server ends the session it cannot claim for"
    );
    let (_, summary) = deployment.finish().unwrap();
    assert_eq!((summary.queries, summary.failed_sessions), (0, 1));
}

/// With no pool the dealer streams every session layer by layer (the path for material
/// too large to hold), and refuses a client that wants to prefetch, saying why.
#[test]
fn without_a_pool_material_streams_and_prefetching_is_refused() {
    let plan = bundled_plan();
    let options = DealerOptions {
        max_clients: Some(2),
        pool: PoolConfig {
            capacity_bytes: 0,
            ..PoolConfig::default()
        },
        ..DealerOptions::default()
    };
    let deployment = deploy_with(&plan, 2, options);
    let mut client = connect(&deployment, &plan);
    for value in [-1.0f32, 2.0] {
        let input = vec![value; 64];
        let report = client.query(&input).unwrap();
        assert!(!report.warm);
        assert_eq!(
            argmax_rows(&report.output, 10),
            argmax_rows(&run_plain(&plan, &input, 1).unwrap(), 10)
        );
    }
    drop(client);
    let prefetching = ClientOptions {
        prefetch_queries: 2,
        ..ClientOptions::default()
    };
    let error = deployment
        .connect_client(plan.public.clone(), prefetching)
        .err()
        .expect("prefetching needs a pool");
    let error = format!("{error:#}");
    assert!(error.contains("pool_bytes"), "{error}");
    let (dealer, server) = deployment.finish().unwrap();
    assert_eq!(server.queries, 2);
    assert_eq!((dealer.pool.hits, dealer.pool.pregenerated), (0, 0));
}

/// A client that says how many queries it will run prefetches no more than those, so
/// nothing is left to burn when it leaves.
#[test]
fn prefetching_stops_at_the_expected_queries() {
    let plan = bundled_plan();
    let deployment = deploy(&plan, 1, 1);
    let options = ClientOptions {
        prefetch_queries: 8,
        expected_queries: Some(3),
        ..ClientOptions::default()
    };
    let mut client = deployment
        .connect_client(plan.public.clone(), options)
        .unwrap();
    assert_eq!(client.prefetched(), 3);
    for remaining in [2, 1, 0] {
        assert!(client.query(&[0.1f32; 64]).unwrap().warm);
        assert_eq!(client.prefetched(), remaining);
    }
    drop(client);
    let (dealer, server) = deployment.finish().unwrap();
    assert_eq!((server.queries, server.unused_halves), (3, 0));
    assert_eq!((dealer.queries, dealer.burnt_sessions), (3, 0));
}

/// The registration race: a second server that registers with a dealer already serving
/// one, even with the epoch the first one drew, is refused with a clear error (never a
/// silent mismatch of weight masks), and the first server's clients are still served
/// correctly.
#[test]
fn a_second_server_is_refused_and_never_shares_an_epoch_silently() {
    let plan = bundled_plan();
    let deployment = deploy(&plan, 1, 1);
    let mut client = connect(&deployment, &plan);
    for epoch in [EPOCH, veil_serve::roles::new_epoch().unwrap()] {
        let second = ServerState::new(plan.clone(), epoch).unwrap();
        let (listener, _) = veil_serve::deployment::loopback_listener().unwrap();
        let error = veil_serve::roles::run_server(
            listener,
            deployment.dealer_address(),
            second,
            Some(0),
            deployment.server_transport(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("refused this server's registration"),
            "{error}"
        );
        assert!(
            error.contains("already serves a registered server"),
            "{error}"
        );
    }
    let input = vec![0.25f32; 64];
    let secure = client.query(&input).unwrap().output;
    assert_eq!(
        argmax_rows(&secure, 10),
        argmax_rows(&run_plain(&plan, &input, 1).unwrap(), 10)
    );
    drop(client);
    let (dealer, server) = deployment.finish().unwrap();
    assert_eq!((server.queries, server.failed_sessions), (1, 0));
    assert_eq!(dealer.registrations, 1);
}

/// Epochs are random, so two servers started at once hold different ones; a client
/// that reaches a dealer with no registered server is told so; a client whose dealer
/// serves another server's epoch is refused before any query.
#[test]
fn clients_learn_when_the_dealer_waits_or_serves_another_server() {
    let epochs: std::collections::HashSet<u64> = (0..64)
        .map(|_| veil_serve::roles::new_epoch().unwrap())
        .collect();
    assert_eq!(epochs.len(), 64, "epochs are drawn at random");
    assert!(!epochs.contains(&0));
    let plan = bundled_plan();
    // Every attempt below opens a session with the deployment's server, so it must
    // accept one for the first attempt and one for each retry while the other server
    // registers (the server stops listening after its last session).
    const RETRIES: usize = 400;
    let deployment = deploy(&plan, RETRIES + 1, 1);
    // A second dealer of the same deployment's CA, with no server registered.
    let (listener, address) = veil_serve::deployment::loopback_listener().unwrap();
    let dealer_transport = deployment.dealer_transport().clone();
    let public = plan.public.clone();
    std::thread::spawn(move || {
        let _ = veil_serve::roles::run_dealer(
            listener,
            public,
            &DealerOptions::default(),
            &dealer_transport,
        );
    });
    let connect_there = || {
        Client::connect(
            plan.public.clone(),
            deployment.server_address(),
            &address,
            1,
            deployment.client_transport(),
        )
        .err()
        .expect("that dealer serves no client of this server")
        .to_string()
    };
    let error = connect_there();
    assert!(error.contains("no server registered"), "{error}");
    // A server of another epoch registers with that dealer: a client of the first
    // server is refused there, naming the epochs.
    let other = ServerState::new(plan.clone(), EPOCH + 1).unwrap();
    let (other_listener, _) = veil_serve::deployment::loopback_listener().unwrap();
    let (dealer_address, transport) = (address.clone(), deployment.server_transport().clone());
    std::thread::spawn(move || {
        let _ =
            veil_serve::roles::run_server(other_listener, &dealer_address, other, None, &transport);
    });
    let mut error = connect_there();
    for _ in 0..RETRIES {
        if !error.contains("no server registered") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        error = connect_there();
    }
    assert!(error.contains("epoch"), "{error}");
}
