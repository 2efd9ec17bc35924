//! all-MiniLM-L6-v2 served by real `veil dealer` and `veil serve` processes over mutual
//! TLS to a `veil embed` client process, which prints correct embeddings: each within
//! cosine 0.995 of the plain forward computed here from the same compiled plan. Needs
//! the model (`scripts/fetch minilm`); skips with that message when it is absent.

use std::process::{Command, Stdio};

use veil_model::Plan;
use veil_model::plain::run_plain;
use veil_model::text::cosine;
use veil_serve::processes::{WorkFolder, free_loopback_addresses};
use veil_text::TextEncoder;

const SENTENCES: [&str; 2] = ["A man is playing a guitar.", "Someone plays an instrument."];

#[test]
fn minilm_is_served_by_real_processes_over_tls() {
    let Some(model) = veil_data::fetched::minilm_directory() else {
        eprintln!(
            "SKIPPED: all-MiniLM-L6-v2 is not fetched; {}",
            veil_data::fetched::FETCH_HINT
        );
        return;
    };
    let veil = env!("CARGO_BIN_EXE_veil");
    let folder = WorkFolder::new("embed-test").expect("a work folder");
    let work = folder.path();
    let tls = work.join("tls");
    let run = |arguments: &[&str]| {
        let output = Command::new(veil)
            .args(arguments)
            .output()
            .expect("veil runs");
        assert!(output.status.success(), "veil {arguments:?}: {output:?}");
        output
    };
    run(&["certs", "local", "--out", &tls.display().to_string()]);
    // 16 tokens: the padded length is the plan's choice; short keeps the test quick.
    let model_argument = model.display().to_string();
    let work_argument = work.display().to_string();
    run(&[
        "compile",
        "--hf",
        &model_argument,
        "--seq",
        "16",
        "--out",
        &work_argument,
    ]);
    let name = "all-MiniLM-L6-v2";
    let plan_file = work.join(format!("{name}.plan"));
    let public_file = work.join(format!("{name}.public.plan"));
    let (dealer_address, server_address) = free_loopback_addresses().expect("two free ports");
    let tls_folder = |role: &str| tls.join(role).display().to_string();
    let (dealer_tls, server_tls, client_tls) = (
        tls_folder("dealer"),
        tls_folder("server"),
        tls_folder("client"),
    );
    let spawn = |arguments: Vec<String>| {
        Command::new(veil)
            .args(arguments)
            .stdout(Stdio::null())
            .spawn()
            .expect("a role process starts")
    };
    let mut dealer = spawn(
        [
            "dealer",
            "--public-plan",
            &public_file.display().to_string(),
            "--listen",
            &dealer_address,
            "--tls-dir",
            &dealer_tls,
            "--max-clients",
            "1",
        ]
        .map(String::from)
        .to_vec(),
    );
    let mut server = spawn(
        [
            "serve",
            "--plan",
            &plan_file.display().to_string(),
            "--listen",
            &server_address,
            "--dealer",
            &dealer_address,
            "--tls-dir",
            &server_tls,
            "--max-clients",
            "1",
        ]
        .map(String::from)
        .to_vec(),
    );
    let public_argument = public_file.display().to_string();
    let mut arguments = vec![
        "embed",
        "--server",
        &server_address,
        "--dealer",
        &dealer_address,
        "--public-plan",
        &public_argument,
        "--tls-dir",
        &client_tls,
        "--json",
    ];
    arguments.extend(SENTENCES);
    let output = run(&arguments);
    assert!(server.wait().expect("the server exits").success());
    assert!(dealer.wait().expect("the dealer exits").success());

    // The client printed one JSON line a sentence; compare with the plain forward.
    let plan = Plan::load(&plan_file).expect("the compiled plan");
    let encoder = TextEncoder::new(
        &work.join(format!("{name}.tokenizer.json")),
        &plan.public,
        plan.text_tables.clone(),
    )
    .expect("the tokenizer beside the plan");
    let stdout = String::from_utf8(output.stdout).expect("text");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), SENTENCES.len(), "{stdout}");
    for (sentence, line) in SENTENCES.iter().zip(&lines) {
        let secure: Vec<f32> = line["embedding"]
            .as_array()
            .expect("an embedding")
            .iter()
            .map(|value| value.as_f64().expect("a number") as f32)
            .collect();
        let encoded = encoder.encode(&[sentence]).expect("encodes");
        let plain = encoder.finish(
            &run_plain(&plan, &encoded.inputs, 1).expect("plain"),
            &encoded,
        );
        let similarity = cosine(&plain[0], &secure);
        eprintln!("{sentence:?}: cosine to plain {similarity:.6}");
        assert!(similarity >= 0.995, "{sentence:?}: cosine {similarity}");
    }
}
