//! Latency benchmarks, each beside its baseline from the same run; writes BENCHMARKS.md.
//!
//! `cargo bench --bench latency` (needs the Docker engine and `scripts/build-images`).
//!
//! 1. Manifest written -> first command started, through the real binary with a local model server
//!    that answers at once. Baseline: the Docker work alone that a session must do before its first
//!    command (create and start a sandbox), through the same library.
//! 2. One command through the sandbox (`true`, and `cat` of 1 MB) against `docker exec` of the same
//!    command in the same container.

#[path = "../tests/support/fake_llm.rs"]
#[allow(dead_code)]
mod fake_llm;

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use fake_llm::{FakeLlm, Protocol, Turn};
use opslab::sandbox::{SandboxConfig, SandboxOwner, Sandboxes};

const IMAGE: &str = "opslab-sandbox:latest";
const MANIFEST_RUNS: usize = 20;
const EXEC_RUNS: usize = 50;

#[tokio::main]
async fn main() {
    let docker_ok = Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        docker_ok.is_ok_and(|s| s.success()),
        "the benchmarks need a running Docker engine"
    );
    let image_ok = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .stdout(Stdio::null())
        .status();
    assert!(
        image_ok.is_ok_and(|s| s.success()),
        "{IMAGE} is missing: run scripts/build-images"
    );

    let manifest = manifest_to_first_command().await;
    let sandbox_start = sandbox_start_baseline().await;
    let (exec_true, cli_true) = exec_against_cli("true").await;
    let (exec_cat, cli_cat) = exec_against_cli("head -c 1000000 /dev/zero").await;

    let mut report = String::new();
    writeln!(report, "# Benchmarks\n").unwrap();
    writeln!(report, "Written by `cargo bench --bench latency`; every figure beside its baseline from the same run.\n").unwrap();
    writeln!(
        report,
        "- date: {}",
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC")
    )
    .unwrap();
    writeln!(report, "- machine: {}", machine()).unwrap();
    writeln!(report).unwrap();
    writeln!(report, "| measurement | runs | median | p95 | baseline | baseline median | baseline p95 | ratio (median) |").unwrap();
    writeln!(report, "|---|---|---|---|---|---|---|---|").unwrap();
    row(
        &mut report,
        "manifest written -> first command started",
        &manifest,
        "sandbox create+start alone (bollard)",
        &sandbox_start,
    );
    row(
        &mut report,
        "`true` through the sandbox",
        &exec_true,
        "`docker exec` CLI, same container",
        &cli_true,
    );
    row(
        &mut report,
        "`head -c 1000000 /dev/zero` through the sandbox",
        &exec_cat,
        "`docker exec` CLI, same container",
        &cli_cat,
    );
    writeln!(report).unwrap();
    writeln!(report, "{}", NOTES.trim()).unwrap();
    print!("{report}");
    std::fs::write(
        concat!(env!("CARGO_MANIFEST_DIR"), "/BENCHMARKS.md"),
        report,
    )
    .unwrap();
}

const NOTES: &str = "
How to read it:
- *manifest -> first command* is the time from renaming a manifest into the watched folder to the
  `command_started` event of its session (both on this machine's clock). It includes the folder
  watch's 20 ms debounce, the reconcile, the store writes, creating and starting the sandbox
  container, and one model round trip to a local server that answers at once. Its baseline is the
  container work alone, so the difference is what opslab adds on top of Docker.
- *through the sandbox* is `Sandbox::exec` (create exec, attach, stream, inspect, clean up) measured
  in process; the baseline is the `docker exec` CLI, a new process each time.
";

struct Stats {
    samples: Vec<Duration>,
}

impl Stats {
    fn new(mut samples: Vec<Duration>) -> Stats {
        samples.sort();
        Stats { samples }
    }

    fn quantile(&self, q: f64) -> Duration {
        let index = ((self.samples.len() as f64 - 1.0) * q).round() as usize;
        self.samples[index]
    }

    fn median(&self) -> Duration {
        self.quantile(0.5)
    }
}

fn row(report: &mut String, name: &str, stats: &Stats, baseline: &str, base: &Stats) {
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    writeln!(
        report,
        "| {name} | {} | {} | {} | {baseline} | {} | {} | {:.2}x |",
        stats.samples.len(),
        ms(stats.median()),
        ms(stats.quantile(0.95)),
        ms(base.median()),
        ms(base.quantile(0.95)),
        stats.median().as_secs_f64() / base.median().as_secs_f64()
    )
    .unwrap();
}

fn machine() -> String {
    let run = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let cpu = run(
        "sh",
        &["-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
    );
    format!(
        "{} cores ({}), {} memory, kernel {}, Docker {}",
        run("nproc", &[]),
        cpu.trim(),
        run("sh", &["-c", "free -h | awk '/Mem:/ {print $2}'"]),
        run("uname", &["-r"]),
        run("docker", &["version", "--format", "{{.Server.Version}}"]),
    )
}

async fn manifest_to_first_command() -> Stats {
    let script: Vec<Turn> = (0..MANIFEST_RUNS)
        .flat_map(|_| {
            [
                Turn::shell("true", "measure"),
                Turn::report("resolved", "done"),
            ]
        })
        .collect();
    let llm = FakeLlm::start(Protocol::Anthropic, script).await;
    let dir = tempfile::tempdir().unwrap();
    let incidents = dir.path().join("incidents");
    std::fs::create_dir(&incidents).unwrap();
    let store = dir.path().join("opslab.db");
    let mut controller = Command::new(env!("CARGO_BIN_EXE_opslab"))
        .args([
            "controller",
            "--summary-model",
            "off",
            "--sandbox-image",
            IMAGE,
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--instance")
        .arg(format!("bench-{}", uuid::Uuid::new_v4().simple()))
        .arg("--incidents")
        .arg(&incidents)
        .arg("--store")
        .arg(&store)
        .env("ANTHROPIC_BASE_URL", llm.base_url())
        .env("ANTHROPIC_API_KEY", "sk-ant-bench-0123456789")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("the opslab binary starts");
    // Let it start and create its store before the clock runs.
    std::thread::sleep(Duration::from_millis(500));
    let mut samples = Vec::new();
    for run in 0..MANIFEST_RUNS {
        let name = format!("bench-{run}");
        let text = format!(
            "apiVersion: opslab.dev/v1alpha1\nkind: Incident\nmetadata: {{name: {name}}}\nspec: {{title: benchmark}}\n"
        );
        let staged = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&staged, text).unwrap();
        let written = SystemTime::now();
        std::fs::rename(&staged, incidents.join(format!("{name}.yaml"))).unwrap();
        let started = wait_for_first_command(&store, &name);
        samples.push(started.duration_since(written).unwrap_or_default());
    }
    controller.kill().ok();
    controller.wait().ok();
    Stats::new(samples)
}

/// Polls the store for the session's first `command_started` event and returns its time, then
/// waits for the session to finish so the next run starts from quiet.
fn wait_for_first_command(store: &std::path::Path, incident: &str) -> SystemTime {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut first = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "{incident}: no command within 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
        let Ok(connection) = rusqlite::Connection::open(store) else {
            continue;
        };
        let query = "SELECT e.at, s.state FROM events e JOIN sessions s ON s.id = e.session_id \
                     WHERE s.incident_name = ?1 AND e.kind = 'command_started' ORDER BY e.seq LIMIT 1";
        let Ok((at, state)) = connection.query_row(query, [incident], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        }) else {
            continue;
        };
        if first.is_none() {
            let at: jiff::Timestamp = at.parse().unwrap();
            first = Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(at.as_nanosecond() as u64));
        }
        if state == "finished" {
            return first.unwrap();
        }
    }
}

fn sandboxes_config() -> SandboxConfig {
    SandboxConfig {
        instance: format!("bench-{}", uuid::Uuid::new_v4().simple()),
        image: IMAGE.into(),
        ..SandboxConfig::default()
    }
}

fn owner(run: usize) -> SandboxOwner {
    SandboxOwner {
        incident_uid: "bench".into(),
        incident_namespace: "default".into(),
        incident_name: "bench".into(),
        session_id: format!("bench-{run}-{}", uuid::Uuid::now_v7()),
    }
}

async fn sandbox_start_baseline() -> Stats {
    let sandboxes = Sandboxes::connect(sandboxes_config()).await.unwrap();
    let mut samples = Vec::new();
    for run in 0..MANIFEST_RUNS {
        let owner = owner(run);
        let started = Instant::now();
        sandboxes.ensure(&owner, &[]).await.unwrap();
        samples.push(started.elapsed());
        sandboxes.remove(&owner.session_id).await.unwrap();
    }
    Stats::new(samples)
}

async fn exec_against_cli(command: &str) -> (Stats, Stats) {
    let sandboxes = Sandboxes::connect(sandboxes_config()).await.unwrap();
    let owner = owner(0);
    let sandbox = sandboxes.ensure(&owner, &[]).await.unwrap();
    let (mut ours, mut cli) = (Vec::new(), Vec::new());
    for _ in 0..EXEC_RUNS {
        let started = Instant::now();
        let outcome = sandbox
            .exec(command, Duration::from_secs(30))
            .await
            .unwrap();
        ours.push(started.elapsed());
        assert_eq!(outcome.exit_code, Some(0));
        let started = Instant::now();
        let status = Command::new("docker")
            .args(["exec", &sandbox.container_id, "bash", "-lc", command])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        cli.push(started.elapsed());
        assert!(status.success());
    }
    sandboxes.remove(&owner.session_id).await.unwrap();
    (Stats::new(ours), Stats::new(cli))
}
