//! `veil split-bench`, `veil split-leakage` and the hidden `veil split-worker`: the
//! asymmetric split mode (veil-split) with the trusted runtime in this process and the
//! untrusted worker in a child process, over mutual TLS on loopback.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};
use veil_net::tls::{TlsChannel, TlsIdentity, generate_certificates};
use veil_net::{Channel, Role, TcpOptions};
use veil_split::bench::{self, BenchOptions, Data, Mode, Report};
use veil_split::network::{Architecture, LocalExecutor, Model};
use veil_split::svd::Basis;

/// The trusted runtime's certificate role (it holds the inputs, like veil's client).
const TRUSTED_ROLE: Role = Role::Client;
/// The worker's certificate role (it computes on what it is sent, like veil's server).
const WORKER_ROLE: Role = Role::Server;

/// `veil split-bench`'s options.
#[derive(clap::Args)]
pub(crate) struct SplitBenchArguments {
    /// vgg-small or resnet18-small.
    #[arg(long, default_value = "vgg-small")]
    model: String,
    /// The energy fraction the trusted side keeps (0.97: Asym1; 0.80: Asym2).
    #[arg(long, default_value_t = 0.97)]
    energy: f64,
    /// Channels of the model's first stage (the second has twice as many).
    #[arg(long, default_value_t = veil_split::network::WIDTH)]
    width: usize,
    /// infer or train.
    #[arg(long, default_value = "infer", value_parser = ["infer", "train"])]
    mode: String,
    /// Whose principal channels: sample (each sample its own, the paper's light-weight
    /// SVD) or batch (one orthonormal basis per batch, each sample keeping the prefix
    /// that holds its energy fraction; the weight combination is paid once a batch) or
    /// subspace (each sample its own, inside per-layer channel subspaces calibrated on
    /// training images, the weights combined with them once; inference only).
    #[arg(long, default_value = "sample", value_parser = ["sample", "batch", "subspace"])]
    basis: String,
    /// Worker threads (all cores when absent).
    #[arg(long)]
    threads: Option<usize>,
    /// Training images (accuracy; the documented setting when absent).
    #[arg(long)]
    train_samples: Option<usize>,
    /// Training epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Test images for accuracy.
    #[arg(long)]
    test_samples: Option<usize>,
    /// Timed repetitions of every mode (medians are reported).
    #[arg(long)]
    repetitions: Option<usize>,
}

/// `veil split-worker`'s options (started by `veil split-bench`).
#[derive(clap::Args)]
pub(crate) struct SplitWorkerArguments {
    /// The trusted runtime's address.
    #[arg(long)]
    connect: String,
    /// A folder holding ca.pem, worker.pem and worker.key.
    #[arg(long)]
    tls_dir: PathBuf,
    /// Threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// `veil split-leakage`'s options.
#[derive(clap::Args)]
pub(crate) struct SplitLeakageArguments {
    /// vgg-small or resnet18-small.
    #[arg(long, default_value = "vgg-small")]
    model: String,
    /// The PNG grid to write (originals, then reconstructions per setting).
    #[arg(long, default_value = "split-leakage.png")]
    out: PathBuf,
    /// Public images the attacker fits its inversion on.
    #[arg(long, default_value_t = 300)]
    attacker_images: usize,
    /// Victim images scored.
    #[arg(long, default_value_t = 200)]
    victim_images: usize,
}

fn fashion() -> Result<(Data, Data)> {
    let Some(directory) = veil_data::fashion::directory() else {
        bail!(
            "Fashion-MNIST is not fetched; {}",
            veil_data::fetched::FETCH_HINT
        );
    };
    let load = |part| -> Result<Data> {
        let images = veil_data::fashion::load(&directory, part)?;
        Ok(Data {
            images: images.images,
            labels: images.labels,
        })
    };
    Ok((
        load(veil_data::fashion::Part::Train)?,
        load(veil_data::fashion::Part::Test)?,
    ))
}

fn architecture(name: &str) -> Result<Architecture> {
    Architecture::from_name(name)
        .with_context(|| format!("unknown model {name:?}; use vgg-small or resnet18-small"))
}

/// Writes `contents` to `path`, readable by this user only.
fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// The worker process and the trusted side's channel to it.
struct WorkerProcess {
    child: Child,
    channel: TlsChannel,
    folder: PathBuf,
}

impl WorkerProcess {
    fn start(threads: usize) -> Result<WorkerProcess> {
        let certificates = generate_certificates(&[TRUSTED_ROLE, WORKER_ROLE])?;
        let identity = |role: Role| -> Result<(String, String)> {
            certificates
                .parties
                .iter()
                .find(|(found, _, _)| *found == role)
                .map(|(_, certificate, key)| (certificate.clone(), key.clone()))
                .context("generating the certificates")
        };
        let (trusted_certificate, trusted_key) = identity(TRUSTED_ROLE)?;
        let (worker_certificate, worker_key) = identity(WORKER_ROLE)?;
        let folder = std::env::temp_dir().join(format!("veil-split-worker-{}", std::process::id()));
        std::fs::create_dir(&folder).with_context(|| format!("creating {}", folder.display()))?;
        write_private(&folder.join("ca.pem"), &certificates.ca_certificate)?;
        write_private(&folder.join("worker.pem"), &worker_certificate)?;
        write_private(&folder.join("worker.key"), &worker_key)?;
        let trusted = TlsIdentity::from_pem(
            certificates.ca_certificate.as_bytes(),
            trusted_certificate.as_bytes(),
            trusted_key.as_bytes(),
        )?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding loopback")?;
        let address = listener.local_addr()?.to_string();
        let child = Command::new(std::env::current_exe()?)
            .args(["split-worker", "--connect", &address, "--threads"])
            .arg(threads.to_string())
            .arg("--tls-dir")
            .arg(&folder)
            .stdin(Stdio::null())
            .spawn()
            .context("starting the worker process")?;
        let options = TcpOptions {
            read_timeout: std::time::Duration::from_secs(600),
            ..TcpOptions::default()
        };
        let channel = TlsChannel::accept(&listener, &trusted, &[WORKER_ROLE], options)?;
        Ok(WorkerProcess {
            child,
            channel,
            folder,
        })
    }

    fn stop(mut self) -> Result<()> {
        let mut waiting = std::time::Duration::ZERO;
        let _ = veil_split::trusted::call(
            &mut self.channel,
            &veil_split::msgs::Request::Shutdown,
            &mut waiting,
        );
        drop(self.channel);
        let status = self.child.wait()?;
        let _ = std::fs::remove_dir_all(&self.folder);
        if !status.success() {
            bail!("the worker process exited with {status}");
        }
        Ok(())
    }
}

/// `veil split-worker`: connects to the trusted runtime and serves it.
pub(crate) fn worker(arguments: SplitWorkerArguments) -> Result<()> {
    let read = |name: &str| {
        let path = arguments.tls_dir.join(name);
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
    };
    let identity =
        TlsIdentity::from_pem(&read("ca.pem")?, &read("worker.pem")?, &read("worker.key")?)?;
    let options = TcpOptions {
        read_timeout: std::time::Duration::from_secs(600),
        ..TcpOptions::default()
    };
    let mut channel = TlsChannel::connect(&arguments.connect, &identity, &[TRUSTED_ROLE], options)?;
    veil_split::worker::Worker::new(arguments.threads.max(1)).serve(&mut channel)?;
    Ok(())
}

/// `veil split-bench`.
pub(crate) fn split_bench(arguments: SplitBenchArguments) -> Result<()> {
    let architecture = architecture(&arguments.model)?;
    if !(0.0..=1.0).contains(&arguments.energy) {
        bail!("--energy must be in [0, 1]");
    }
    let mode = if arguments.mode == "train" {
        Mode::Train
    } else {
        Mode::Infer
    };
    let mut options = BenchOptions::new(architecture, arguments.energy, mode);
    if arguments.width == 0 || arguments.width > veil_split::network::MAX_WIDTH {
        bail!(
            "--width {} is outside 1..={}: give the first stage's channel count",
            arguments.width,
            veil_split::network::MAX_WIDTH
        );
    }
    options.width = arguments.width;
    options.basis = Basis::from_name(&arguments.basis).with_context(|| {
        format!(
            "--basis {}: give sample, batch or subspace",
            arguments.basis
        )
    })?;
    if options.basis == Basis::Subspace && mode == Mode::Train {
        bail!(
            "--basis subspace is for inference (--mode infer): training changes the weights combined with the subspaces every step; use sample or batch to train"
        );
    }
    options.train_samples = arguments.train_samples.unwrap_or(options.train_samples);
    options.epochs = arguments.epochs.unwrap_or(options.epochs);
    options.test_samples = arguments.test_samples.unwrap_or(options.test_samples);
    options.repetitions = arguments.repetitions.unwrap_or(options.repetitions);
    let threads = arguments
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let (train, test) = fashion()?;
    // The plain reference trains first: a worker started now would wait through it.
    let reference = bench::reference(&options, &train, &test, threads)?;
    let mut worker = WorkerProcess::start(threads)?;
    let report = bench::run_bench(
        &options,
        &mut worker.channel,
        threads,
        &reference,
        &train,
        &test,
    );
    let stats = worker.channel.stats();
    worker.stop()?;
    print_report(&report?, stats);
    Ok(())
}

fn print_report(report: &Report, stats: veil_net::ChannelStats) {
    let options = &report.options;
    let factor = report.factor();
    println!(
        "veil split-bench: {} (width {}, {:.2} M MACs a sample) {}, {:.0}% energy kept by the trusted runtime; {} {}; worker: {} CPU threads in a second process over mutual TLS on loopback (no GPU)",
        options.architecture.name(),
        options.width,
        options.model().macs_per_sample() as f64 / 1e6,
        if options.mode == Mode::Infer {
            "inference"
        } else {
            "training"
        },
        100.0 * options.energy,
        report.samples,
        if options.mode == Mode::Infer {
            "test images"
        } else {
            "training images (SGD steps × batch)"
        },
        report.worker_threads,
    );
    println!(
        "times: the median of {} interleaved repetitions per mode",
        options.repetitions
    );
    println!(
        "emulated enclave: each second of the trusted thread's CPU time × F = {factor:.1} (F = {:.0} × t(untrusted-only) / t(trusted-only), the paper's SGX-only/GPU-only ratio); EMULATED, not measured in an enclave",
        bench::SGX_OVER_ACCELERATOR
    );
    println!();
    println!(
        "{:<15} {:>10} {:>13} {:>10} {:>14} {:>12} {:>14} {:>10}",
        "mode",
        "native s",
        "trusted cpu s",
        "waiting s",
        "trusted MACs",
        "MACs ratio",
        "emulated s",
        "speedup"
    );
    let baseline = report
        .run("trusted-only")
        .map_or(1.0, |run| run.emulated(factor));
    for run in &report.runs {
        let emulated = run.emulated(factor);
        println!(
            "{:<15} {:>10.3} {:>13.3} {:>10.3} {:>14} {:>12} {:>14.2} {:>9.2}×",
            run.name,
            run.native.as_secs_f64(),
            if run.trusted {
                run.trusted_cpu.as_secs_f64()
            } else {
                0.0
            },
            run.waiting.as_secs_f64(),
            run.trusted_macs,
            report
                .macs_ratio(run.name)
                .map_or("-".into(), |ratio| format!("{ratio:.4}")),
            emulated,
            baseline / emulated.max(1e-12),
        );
    }
    if options.mode == Mode::Train {
        println!("blinded: not run (Slalom-style blinding is for inference only)");
    }
    if let Some((macs, time)) = report.blinded_offline {
        println!(
            "blinded offline precomputation (W·R for every pad, trusted side): {macs} MACs, {:.3} s native",
            time.as_secs_f64()
        );
    }
    println!();
    println!(
        "{:<8} {:>4} {:>8} {:>6} {:>18} {:>18}",
        "layer", "c", "mean r", "max r", "residual energy", "max residual"
    );
    let whole = " (kept whole by the trusted side: splitting it cannot pay)";
    for layer in &report.layers {
        let subspace = match layer.subspace_dimension {
            Some(dimension) => format!(
                " (subspace m = {dimension}: {:.1}% of the components confined to it)",
                100.0 * layer.confined_share
            ),
            None if report.subspace.is_some() && !layer.kept_whole && layer.channels > 1 => {
                " (no subspace: split over all channels)".to_string()
            }
            None => String::new(),
        };
        println!(
            "{:<8} {:>4} {:>8.2} {:>6} {:>17.4}% {:>17.4}%{}{}",
            layer.name,
            layer.channels,
            layer.mean_rank,
            layer.max_rank,
            100.0 * layer.mean_residual_energy,
            100.0 * layer.max_residual_energy,
            if layer.kept_whole { whole } else { "" },
            subspace,
        );
    }
    if let Some(subspace) = &report.subspace {
        println!(
            "subspace calibration (offline, once per model): {} training images, {:.2} s; combining the weights with the subspaces: {} trusted MACs",
            subspace.calibration.samples,
            subspace.time.as_secs_f64(),
            subspace.combination_macs
        );
        for (layer, calibrated) in report.layers.iter().zip(&subspace.calibration.layers) {
            if !calibrated.candidates.is_empty() {
                let tried: Vec<String> = calibrated
                    .candidates
                    .iter()
                    .map(|(dimension, macs)| format!("m = {dimension}: {macs:.0}"))
                    .collect();
                println!(
                    "  {}: the calibration images' trusted MACs a sample: over all channels {:.0}; chosen {:.0}; candidates {}",
                    layer.name,
                    calibrated.over_all_macs,
                    calibrated.chosen_macs(),
                    tried.join(", ")
                );
            }
        }
    }
    println!();
    for (name, agree) in &report.agreement {
        println!(
            "{name}: {agree}/{} predictions equal to trusted-only (plain)",
            report.samples
        );
    }
    for (name, error) in &report.max_logit_error {
        println!("{name}: largest |logit − plain logit| = {error:.2e}");
    }
    for (name, accuracy) in &report.accuracy {
        println!(
            "{name}: test accuracy {:.2}% ({} training images × {} epochs, {} test images)",
            100.0 * accuracy,
            options.train_samples,
            options.epochs,
            options.test_samples
        );
    }
    println!(
        "channel: {} bytes sent, {} received",
        stats.bytes_sent, stats.bytes_received
    );
}

/// `veil split-leakage`.
pub(crate) fn leakage(arguments: SplitLeakageArguments) -> Result<()> {
    let architecture = architecture(&arguments.model)?;
    let (train, test) = fashion()?;
    // The model: 1 epoch of plain SGD on the first 2000 training images.
    let mut model = Model::new(architecture, bench::MODEL_SEED);
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let pretrain = train.select(&(0..2000.min(train.len())).collect::<Vec<_>>());
    bench::train(&mut model, &mut LocalExecutor::new(threads), &pretrain, 1)?;
    let pixels = 28 * 28;
    let images = |data: &Data, range: std::ops::Range<usize>| -> Vec<Vec<f32>> {
        range
            .filter(|&index| index < data.len())
            .map(|index| data.images[index * pixels..(index + 1) * pixels].to_vec())
            .collect()
    };
    // The attacker's public images are training images the model was not trained on.
    let attacker = images(&train, 50_000..50_000 + arguments.attacker_images);
    let victims = images(&test, 0..arguments.victim_images);
    let shown = 10.min(victims.len());
    // The subspace basis's conv2 subspace, calibrated as split-bench does, on the first
    // training images (the model owner's), at each energy.
    let calibration_count = bench::CALIBRATION_SAMPLES.min(train.len());
    let (calibration_images, _) = train.batch(0, calibration_count);
    let mut subspaces = Vec::new();
    for energy in [0.8, 0.97] {
        let options = veil_split::svd::SvdOptions {
            energy,
            iterations: bench::ITERATIONS,
            basis: Basis::Subspace,
        };
        let calibration = veil_split::subspace::calibrate(
            &model,
            calibration_images,
            calibration_count,
            &options,
            threads,
        )?;
        let chosen = calibration
            .layers
            .get(1)
            .and_then(|layer| layer.subspace.clone());
        if chosen.is_none() {
            println!(
                "subspace basis at {:.0}%: the calibration keeps no subspace for conv2, so its view is the per-sample one (not repeated)",
                100.0 * energy
            );
        }
        subspaces.push((energy, chosen));
    }
    let mut settings = vec![
        (0.0, Basis::Sample, None),
        (0.8, Basis::Sample, None),
        (0.97, Basis::Sample, None),
        (0.8, Basis::Batch, None),
        (0.97, Basis::Batch, None),
    ];
    for (energy, subspace) in &subspaces {
        if let Some(subspace) = subspace {
            settings.push((*energy, Basis::Subspace, Some(subspace)));
        }
    }
    let rows = veil_split::leakage::attack(&model, &attacker, &victims, &settings, shown)?;
    println!(
        "veil split-leakage: {}; the attacker sees conv2's input residual (16×28×28) and fits a ridge inversion on {} public images; scored on {} test images",
        architecture.name(),
        attacker.len(),
        victims.len()
    );
    println!(
        "{:<44} {:>16} {:>10} {:>8}",
        "what the worker sees", "residual energy", "PSNR dB", "SSIM"
    );
    for row in &rows {
        println!(
            "{:<44} {:>16} {:>10.2} {:>8.3}",
            row.label,
            row.residual_energy
                .map_or("independent".into(), |energy| format!(
                    "{:.2}%",
                    100.0 * energy
                )),
            row.psnr,
            row.ssim
        );
    }
    let png = veil_split::leakage::grid_png(&victims[..shown], &rows);
    std::fs::write(&arguments.out, png)
        .with_context(|| format!("writing {}", arguments.out.display()))?;
    println!(
        "wrote {} (rows: originals, then reconstructions from: {})",
        arguments.out.display(),
        rows.iter()
            .map(|row| row.label.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    );
    Ok(())
}
