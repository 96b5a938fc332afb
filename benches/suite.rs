//! The benchmark suite: every figure beside its baseline from the same run; writes BENCHMARKS.md.
//!
//! `scripts/bench` builds the images and runs it beside a throwaway PostgreSQL cluster; `cargo bench
//! --bench suite` alone needs the Docker engine and `scripts/build-images`, and skips PostgreSQL.

#[path = "../tests/support/fake_llm.rs"]
#[allow(dead_code)]
mod fake_llm;
#[path = "../tests/support/store.rs"]
#[allow(dead_code)]
mod store_support;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use fake_llm::{FakeLlm, Protocol, Turn};
use opslab::audit::{Durability, EventBody, NewSession, Redactor, Store};
use opslab::incident::{Outcome, Phase};
use opslab::sandbox::{Audit, DockerAccess, SandboxConfig, Sandboxes};

const IMAGE: &str = "opslab-sandbox:latest";
const MANIFEST_RUNS: usize = 20;
const EXEC_RUNS: usize = 50;
const BURST_RUNS: usize = 3;
const BURST_INCIDENTS: usize = 100;
const BURST_CONCURRENCY: usize = 16;
const IDLE_INCIDENTS: usize = 1000;
const SCRAPE_SESSIONS: usize = 10_000;
const STORE_APPENDS: usize = 2000;

/// What a figure measures, for formatting.
#[derive(Clone, Copy)]
enum Unit {
    Micros,
    Millis,
    Seconds,
    MiB,
    Percent,
    Tokens,
    KiB,
    Usd,
}

struct Stats {
    samples: Vec<f64>,
    unit: Unit,
}

impl Stats {
    fn new(mut samples: Vec<f64>, unit: Unit) -> Stats {
        assert!(!samples.is_empty());
        samples.sort_by(f64::total_cmp);
        Stats { samples, unit }
    }

    fn durations(samples: Vec<Duration>) -> Stats {
        Stats::new(
            samples.iter().map(Duration::as_secs_f64).collect(),
            Unit::Millis,
        )
    }

    fn quantile(&self, q: f64) -> f64 {
        self.samples[((self.samples.len() as f64 - 1.0) * q).round() as usize]
    }

    fn show(&self, value: f64) -> String {
        match self.unit {
            Unit::Micros => format!("{:.0} µs", value * 1_000_000.0),
            Unit::Millis => format!("{:.1} ms", value * 1000.0),
            Unit::Seconds => format!("{value:.1} s"),
            Unit::MiB => format!("{:.1} MiB", value / 1024.0 / 1024.0),
            Unit::Percent => format!("{value:.2} %"),
            Unit::Tokens => format!("{value:.0} tokens"),
            Unit::KiB => format!("{:.1} KiB", value / 1024.0),
            Unit::Usd => format!("${value:.4}"),
        }
    }
}

struct Row {
    measurement: String,
    ours: Stats,
    baseline: String,
    base: Stats,
}

/// A section of BENCHMARKS.md: one group of figures, measured together.
struct Section {
    name: &'static str,
    rows: Vec<Row>,
    notes: String,
}

/// The section names, in the order the report lists them.
// `console` is measured by a browser test (tests/suite/console.rs), and `scenarios` (the replay
// suite's wall time, serial and parallel) by `opslab scenario run` itself; both are kept as written.
const SECTIONS: &[&str] = &[
    "latency",
    "alerts",
    "burst",
    "idle",
    "store",
    "proxy",
    "economy",
    "console",
    "scenarios",
];

#[tokio::main]
async fn main() {
    // `cargo bench --bench suite -- store`: only the sections whose name contains an argument
    // (cargo passes `--bench` itself).
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|argument| !argument.starts_with("--"))
        .collect();
    let wanted = |name: &str| {
        filters.is_empty() || filters.iter().any(|filter| name.contains(filter.as_str()))
    };
    assert!(
        SECTIONS.iter().any(|name| wanted(name)),
        "no benchmark section matches {filters:?}; the sections are {SECTIONS:?}"
    );
    if SECTIONS
        .iter()
        .any(|name| !["store", "economy"].contains(name) && wanted(name))
    {
        require(
            "docker",
            &["info"],
            "the benchmarks need a running Docker engine",
        );
        require(
            "docker",
            &["image", "inspect", IMAGE],
            "run scripts/build-images first",
        );
    }

    let mut sections = Vec::new();
    if wanted("latency") {
        sections.push(Section {
            name: "latency",
            rows: latency().await,
            notes: LATENCY_NOTES.into(),
        });
    }
    if wanted("alerts") {
        eprintln!("alert -> Investigating ...");
        sections.push(Section {
            name: "alerts",
            rows: alerts().await,
            notes: ALERTS_NOTES.into(),
        });
    }
    if wanted("burst") {
        eprintln!("burst ...");
        sections.push(Section {
            name: "burst",
            rows: burst().await,
            notes: BURST_NOTES.into(),
        });
    }
    if wanted("idle") {
        eprintln!("idle ...");
        sections.push(Section {
            name: "idle",
            rows: idle().await,
            notes: IDLE_NOTES.into(),
        });
    }
    if wanted("store") {
        eprintln!("store ...");
        let mut rows = store_appends(Engine::Sqlite).await;
        let mut notes = STORE_NOTES.to_string();
        if std::env::var(store_support::POSTGRES_URL_VAR).is_ok() {
            rows.extend(store_appends(Engine::Postgres).await);
        } else {
            let skipped = format!(
                "- PostgreSQL rows skipped: {} was not set. `scripts/bench store` runs them \
                 against a throwaway local cluster; or set it to a server where this user may \
                 CREATE DATABASE.",
                store_support::POSTGRES_URL_VAR
            );
            eprintln!("{skipped}");
            notes = format!("{skipped}\n{}", notes.trim_start());
        }
        sections.push(Section {
            name: "store",
            rows,
            notes,
        });
    }

    if wanted("proxy") {
        eprintln!("docker api proxy ...");
        sections.push(Section {
            name: "proxy",
            rows: docker_api_proxy().await,
            notes: PROXY_NOTES.into(),
        });
    }

    if wanted("economy") {
        eprintln!("economy ...");
        sections.push(Section {
            name: "economy",
            rows: economy::rows().await,
            notes: economy::NOTES.into(),
        });
    }

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/BENCHMARKS.md");
    let previous = std::fs::read_to_string(path).unwrap_or_default();
    let mut report = String::new();
    writeln!(report, "# Benchmarks\n").unwrap();
    writeln!(
        report,
        "Written by `scripts/bench` (`cargo bench --bench suite` beside a throwaway PostgreSQL \
         cluster); every figure beside its baseline from the same run. `scripts/bench NAME` measures \
         only the sections whose name contains NAME and keeps the others as they were (each section \
         says when it was measured).\n"
    )
    .unwrap();
    for name in SECTIONS {
        match sections.iter().find(|section| section.name == *name) {
            Some(section) => report.push_str(&render_section(section)),
            None => report.push_str(&previous_section(&previous, name).unwrap_or_default()),
        }
    }
    print!("{report}");
    std::fs::write(path, report.trim_end().to_string() + "\n").unwrap();
}

/// One section of the report: when and where, the table, how to read it.
fn render_section(section: &Section) -> String {
    let mut text = String::new();
    writeln!(text, "## {}\n", section.name).unwrap();
    writeln!(
        text,
        "- date: {}",
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC")
    )
    .unwrap();
    writeln!(text, "- machine: {}", machine()).unwrap();
    writeln!(text).unwrap();
    writeln!(
        text,
        "| measurement | runs | median | p95 | baseline | baseline median | baseline p95 | ratio (median) |"
    )
    .unwrap();
    writeln!(text, "|---|---|---|---|---|---|---|---|").unwrap();
    for row in &section.rows {
        let (ours, base) = (&row.ours, &row.base);
        let base_median = base.quantile(0.5);
        let ratio = if base_median == 0.0 {
            "n/a".to_string()
        } else {
            format!("{:.2}x", ours.quantile(0.5) / base_median)
        };
        writeln!(
            text,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            row.measurement,
            ours.samples.len(),
            ours.show(ours.quantile(0.5)),
            ours.show(ours.quantile(0.95)),
            row.baseline,
            base.show(base.quantile(0.5)),
            base.show(base.quantile(0.95)),
            ratio,
        )
        .unwrap();
    }
    writeln!(text, "\nHow to read it:\n{}\n", section.notes.trim()).unwrap();
    text
}

/// A section of the previous report as it was, from its heading to the next one.
fn previous_section(report: &str, name: &str) -> Option<String> {
    let heading = format!("## {name}\n");
    let start = report.find(&heading)?;
    let rest = &report[start + heading.len()..];
    let end = rest.find("\n## ").map_or(rest.len(), |end| end + 1);
    Some(format!("{heading}{}\n\n", rest[..end].trim_end()))
}

async fn latency() -> Vec<Row> {
    let mut rows = Vec::new();
    eprintln!("manifest -> first command ...");
    let network = BenchNetwork::create();
    let spare = manifest_to_first_command(Pipeline::default()).await;
    let polled = manifest_to_first_command(Pipeline {
        poll_ms: Some(1000),
        ..Pipeline::default()
    })
    .await;
    let no_spare = manifest_to_first_command(Pipeline {
        spares: 0,
        ..Pipeline::default()
    })
    .await;
    let networked = Pipeline {
        network: Some(network.0.clone()),
        ..Pipeline::default()
    };
    let spare_networked = manifest_to_first_command(networked.clone()).await;
    let no_spare_networked = manifest_to_first_command(Pipeline {
        spares: 0,
        ..networked
    })
    .await;
    let container = sandbox_start_alone().await;
    let hop = network_hop_alone(&network.0).await;
    let first_command = "manifest written -> first command started";
    rows.push(Row {
        measurement: first_command.into(),
        baseline: "the same, folder polled every 1 s".into(),
        ours: Stats::durations(spare.clone()),
        base: Stats::durations(polled),
    });
    rows.push(Row {
        measurement: first_command.into(),
        baseline: "the same, no spare sandbox (`--sandbox-spares 0`)".into(),
        ours: Stats::durations(spare),
        base: Stats::durations(no_spare.clone()),
    });
    rows.push(Row {
        measurement: format!("{first_command}, Incident on a network"),
        baseline: "the same, no spare sandbox".into(),
        ours: Stats::durations(spare_networked.clone()),
        base: Stats::durations(no_spare_networked),
    });
    rows.push(Row {
        measurement: format!("{first_command}, Incident on a network"),
        baseline: "the claim's network moves alone: leave `none`, connect (no opslab)".into(),
        ours: Stats::durations(spare_networked.clone()),
        base: Stats::durations(hop),
    });
    rows.push(Row {
        measurement: format!("{first_command}, no spare sandbox"),
        baseline: "sandbox create + start alone (no opslab)".into(),
        ours: Stats::durations(no_spare),
        base: Stats::durations(container),
    });
    eprintln!("one command ...");
    // The file is made before the timing starts: only the `cat` is measured.
    for (setup, command) in [
        (None, "true"),
        (
            Some("head -c 1000000 /dev/urandom > /tmp/1mb"),
            "cat /tmp/1mb",
        ),
    ] {
        let (ours, cli) = exec_against_cli(setup, command).await;
        rows.push(Row {
            measurement: format!("`{command}` through the sandbox"),
            baseline: "`docker exec` CLI, same container".into(),
            ours: Stats::durations(ours),
            base: Stats::durations(cli),
        });
    }
    rows
}

const LATENCY_NOTES: &str = "
- *manifest -> first command* is the time from renaming a manifest into the watched folder to the
  `command_started` event of its session (both on this machine's clock), with a local model server that
  answers at once. It includes the 20 ms debounce of the folder watch, the reconcile, the store writes,
  getting the session a sandbox, and one model round trip. The controller runs as shipped, with one
  spare sandbox kept started (`--sandbox-spares 1`); each run starts once the spare taken by the
  previous one has been replaced. Against the same controller polling its folder every second, the
  usual design; and against the same with no spare, where each session waits for the engine to create
  and start its container.
- *Incident on a network*: the Incident names a Docker network, as real ones do. A spare waits on no
  network at all (`none`: no other sandbox, no spare and not the controller can be reached from it),
  so claiming it means leaving `none` and hot-plugging an interface onto the Incident's network into
  the running container. The row against *the claim's network moves alone* times just those two
  engine calls on a started container with no opslab around them: the floor under this row. While
  that floor is above 50 ms, no order of the claim's steps meets the 50 ms goal with a network. Spares do not wait on the networks Incidents last named instead: a spare there would
  sit beside the application before any session owns it, and a container on a network keeps it from
  being removed, so `docker compose down` of the affected stack would fail. Without a spare the
  container is created on its network, then started.
- *no spare sandbox* against *sandbox create + start alone*: what opslab adds on top of the container
  work when it has to do that work itself. Read off the sessions' events (a profiling run of 20): the
  session starts 21-31 ms after the manifest is written (the 20 ms debounce, the parse, the reconcile,
  the store writes), and its first command starts 1-3 ms after its sandbox is ready (one model round
  trip, two commits); the rest is the container work itself, which varies from run to run on this
  engine (over five runs on this machine the ratio was 1.01x to 1.40x). Neither the socket folder's
  bind mount (`guarded` mode) nor waiting for the previous session's sandbox to be removed made a
  measurable difference; both were tried.
- *through the sandbox* is `Sandbox::exec` (create the exec, attach, stream, inspect) in process,
  against the `docker exec` CLI, a new process each time. Since this run each command's shell also
  sweeps what the command left running before it returns (`nohup`/`setsid` processes kept), about
  10-15 ms of the figure; the CLI baseline does no such thing.
- Since this run the store syncs every commit to disk (`--store-durability full`, see *store*): the
  few appends before a session's first command (session, start, sandbox, model answer, command)
  each wait for an fsync: a likely part (not measured apart) of the ~5 ms the first row gained over
  its 30.9 ms of 2026-12-01.
";

const BURST_NOTES: &str = "
- *burst*: 100 manifests dropped at once, 3 commands each, at most 16 sessions at a time; the time until
  every session has finished, and the controller's resident memory sampled every 50 ms during the burst
  and 2 s after it. The baseline is a shell script doing the same container work (a container each,
  three `docker exec`s, removal) with 16 at a time.
  Both do the same container work and the engine is the bottleneck, so they finish close together:
  over three full runs on this machine the ratio was 0.80x to 1.01x. The controller's memory stays
  where the burst took it; the idle rows below give its size with no Incident.
";

const IDLE_NOTES: &str = "
- *idle*: the controller with 1,000 resolved Incidents it knows and no session running, its memory
  sampled each second for 10 s and its CPU use over those 10 s, against the same controller with an
  empty folder. 1,000 Incidents cost about 14 MiB: the files source holds each twice, as parsed from its
  file (to tell when two files name the same Incident) and as last reconciled, with its status; and
  glibc's per-thread arenas keep about 3 MiB of the first reconcile's peak (28.6 MiB instead of
  31.5 MiB with `MALLOC_ARENA_MAX=1`, tried once).
- *GET /metrics*: scrapes as Prometheus makes them (one kept-alive connection, the whole body read)
  with 10,000 sessions in the store, against an empty store. The scrape reads nothing from the store:
  the counters and gauges live in memory, so the two should match.
";

const STORE_NOTES: &str = "
- *durable*: one event per transaction through `Store::append` (redaction, numbering, hash chain,
  projections; on PostgreSQL also the session row lock and the anchor row), one session, one writer.
  SQLite runs in WAL mode with `synchronous=FULL` (the default `--store-durability full`; the
  last row compares `normal`); PostgreSQL with its defaults (`fsync=on`,
  `synchronous_commit=on`) over a unix socket, on the same disk. The baseline is a bare `INSERT` of a
  similar row, one per transaction, on the same engine and settings. The measurement column gives
  appends per second and the p99 latency of one append.
  An append loses to the bare `INSERT` by design: in one transaction it reads the session's head (on
  PostgreSQL, locking its row), inserts the event, moves the head, updates the projections the event
  touches and, on PostgreSQL, inserts the anchor row; where the baseline runs one statement. On
  PostgreSQL each statement is a round trip to the server (prepared once per connection), which is
  most of the ratio; on SQLite it is the redaction, the hashing and the extra statements.
- *batched*: the store has no batch append, and nothing would use one: the write-ahead rule commits
  each model response before it is acted on and each command as started before it runs, so the agent
  loop never holds several events to write at once. The batched rows measure what batching is worth on
  each engine: bare `INSERT`s, 100 per transaction (the time per event, and the p99 of a whole batch),
  against the same bare `INSERT` one per transaction.
- *durability*: `full` (the default) has SQLite sync the log to disk at every commit, `normal` only
  at checkpoints, so a durable append under `full` is mostly one fsync: its cost is the disk's, and it
  swings with whatever else writes to it (this run shared the disk with a test suite). A session stores
  tens to a few hundred events, so `full` costs it tens of milliseconds against model turns of seconds,
  for the promise that a command recorded as started survives a power loss and is never run twice. So
  it stays the default; `normal` is there for disks where fsync is very slow.
";

const PROXY_NOTES: &str = "
- *Docker API through the guarded proxy*: one request on a new connection to a sandbox's proxy socket
  (resolving the container by asking the engine, recording the decision in the store, forwarding),
  against the same request on the engine's socket. `ping` names no object, so it is recorded and
  forwarded only; `inspect` is resolved first.
  It loses to the bare socket by design: before forwarding, the proxy asks the engine what the
  request names (an inspect, about as long as the baseline itself) and commits the decision to the
  audit store (one durable append); both are what the policy and the audit rules require. Next to
  the docker CLI's own cost (a `docker ps` from inside a sandbox takes about 30 ms) it adds well under
  a millisecond per call.
";

fn require(program: &str, args: &[&str], message: &str) {
    let ok = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(ok, "{message}");
}

fn machine() -> String {
    let run = |script: &str| {
        Command::new("sh")
            .args(["-c", script])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    format!(
        "{} cores ({}), {} memory, kernel {}, Docker {}",
        run("nproc"),
        run("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'"),
        run("free -h | awk '/Mem:/ {print $2}'"),
        run("uname -r"),
        run("docker version --format '{{.Server.Version}}'"),
    )
}

/// A controller process for a benchmark, killed when dropped.
struct Controller {
    child: Child,
    dir: tempfile::TempDir,
    instance: String,
}

impl Controller {
    fn start(llm: &FakeLlm, dir: tempfile::TempDir, extra: &[&str]) -> Controller {
        let incidents = dir.path().join("incidents");
        std::fs::create_dir_all(&incidents).unwrap();
        let instance = format!("bench-{}", uuid::Uuid::new_v4().simple());
        let child = Command::new(env!("CARGO_BIN_EXE_opslab"))
            .args([
                "controller",
                "--summary-model",
                "off",
                "--sandbox-image",
                IMAGE,
            ])
            .args(["--listen", "127.0.0.1:0"])
            .arg("--instance")
            .arg(&instance)
            .arg("--incidents")
            .arg(&incidents)
            .arg("--store")
            .arg(dir.path().join("opslab.db"))
            .arg("--proxy-socket-dir")
            .arg(dir.path().join("sockets"))
            .args(extra)
            .env("ANTHROPIC_BASE_URL", llm.base_url())
            .env("ANTHROPIC_API_KEY", "sk-ant-bench-0123456789")
            .env("RUST_LOG", "warn,opslab::commands=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("controller.log")).unwrap())
            .spawn()
            .expect("the opslab binary starts");
        let controller = Controller {
            child,
            dir,
            instance,
        };
        controller.wait_ready();
        controller
    }

    fn incidents(&self) -> PathBuf {
        self.dir.path().join("incidents")
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("opslab.db")
    }

    fn http(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log =
                std::fs::read_to_string(self.dir.path().join("controller.log")).unwrap_or_default();
            if let Some(address) = log
                .lines()
                .find_map(|line| line.split("address=").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
            {
                return format!("http://{address}");
            }
            assert!(
                Instant::now() < deadline,
                "the controller did not start:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_ready(&self) {
        let url = format!("{}/readyz", self.http());
        let deadline = Instant::now() + Duration::from_secs(120);
        while !http_ok(&url) {
            assert!(
                Instant::now() < deadline,
                "the controller never became ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Writes an Incident named `name`, with `spec` (flow-style YAML) added to its spec.
    fn drop_manifest(&self, name: &str, spec: &str) -> SystemTime {
        let spec = if spec.is_empty() {
            String::new()
        } else {
            format!(", {spec}")
        };
        let text = format!(
            "apiVersion: opslab.dev/v1alpha1\nkind: Incident\nmetadata: {{name: {name}}}\nspec: {{title: benchmark{spec}}}\n"
        );
        let staged = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&staged, text).unwrap();
        let written = SystemTime::now();
        std::fs::rename(&staged, self.incidents().join(format!("{name}.yaml"))).unwrap();
        written
    }

    /// Waits (up to a minute) until the controller has `count` spare sandboxes ready.
    fn wait_for_spares(&self, count: usize) {
        let url = format!("{}/metrics", self.http());
        let ready = format!("opslab_sandbox_spares {count}\n");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let metrics = Command::new("curl").args(["-sf", &url]).output().unwrap();
            if String::from_utf8_lossy(&metrics.stdout).contains(&ready) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the controller never had {count} spare sandboxes ready"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Controller {
    /// Kills the controller and removes the sandboxes it left behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let script = format!(
            "docker ps -aq --filter label=opslab.dev/instance={} | xargs -r docker rm -f",
            self.instance
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .status();
    }
}

fn http_ok(url: &str) -> bool {
    Command::new("curl")
        .args(["-sf", "-o", "/dev/null", url])
        .status()
        .is_ok_and(|status| status.success())
}

fn query_store<T: rusqlite::types::FromSql>(store: &Path, sql: &str, param: &str) -> Option<T> {
    let connection = rusqlite::Connection::open(store).ok()?;
    connection.query_row(sql, [param], |row| row.get(0)).ok()
}

/// How the controller of a latency run is set up.
#[derive(Clone)]
struct Pipeline {
    /// Poll the folder at this interval instead of watching it.
    poll_ms: Option<u64>,
    spares: usize,
    /// A network the Incidents name.
    network: Option<String>,
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline {
            poll_ms: None,
            spares: 1,
            network: None,
        }
    }
}

/// A Docker network for one benchmark section, removed when dropped.
struct BenchNetwork(String);

impl BenchNetwork {
    fn create() -> BenchNetwork {
        let name = format!("opslab-bench-{}", uuid::Uuid::new_v4().simple());
        require(
            "docker",
            &["network", "create", &name],
            "cannot create a Docker network",
        );
        BenchNetwork(name)
    }
}

impl Drop for BenchNetwork {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["network", "rm", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The alert intake's bearer token in the alerts section.
const ALERTS_TOKEN: &str = "bench-alerts-token-5c1e8a7d";

/// Alert received -> Investigating against manifest written -> Investigating, each in a controller
/// of its own (files mode, one spare sandbox, the intake on in both).
async fn alerts() -> Vec<Row> {
    let from_alert = to_investigating(Filing::Alert).await;
    let from_manifest = to_investigating(Filing::Manifest).await;
    vec![Row {
        measurement: "alert received -> Incident `Investigating` (files mode)".into(),
        baseline: "manifest written -> `Investigating`".into(),
        ours: Stats::durations(from_alert),
        base: Stats::durations(from_manifest),
    }]
}

#[derive(Clone, Copy, PartialEq)]
enum Filing {
    /// Alertmanager's webhook to `POST /api/v1/alerts`.
    Alert,
    /// A manifest renamed into the watched folder.
    Manifest,
}

/// An Alertmanager webhook notification (version 4) of one firing alert in a group of its own.
fn alert_notification(run: usize) -> serde_json::Value {
    let group = format!("{{}}:{{alertname=\"BenchDown\", run=\"{run}\"}}");
    let labels =
        serde_json::json!({"alertname": "BenchDown", "run": run.to_string(), "severity": "high"});
    serde_json::json!({
        "version": "4",
        "receiver": "opslab",
        "status": "firing",
        "groupKey": group,
        "truncatedAlerts": 0,
        "groupLabels": {"alertname": "BenchDown", "run": run.to_string()},
        "commonLabels": labels,
        "commonAnnotations": {"summary": "benchmark"},
        "externalURL": "http://alertmanager.bench:9093",
        "alerts": [{
            "status": "firing",
            "labels": labels,
            "annotations": {"summary": "benchmark"},
            "startsAt": jiff::Timestamp::now().to_string(),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.bench:9090/graph",
            "fingerprint": format!("{run:016x}"),
        }],
    })
}

/// From the alert's POST (or the manifest's rename) to the Incident's `Investigating` (its status's
/// `startedAt`), `MANIFEST_RUNS` times.
async fn to_investigating(filing: Filing) -> Vec<Duration> {
    let script: Vec<Turn> = (0..MANIFEST_RUNS)
        .map(|_| Turn::report("resolved", "done"))
        .collect();
    let llm = FakeLlm::start(Protocol::Anthropic, script).await;
    let controller = Controller::start(
        &llm,
        tempfile::tempdir().unwrap(),
        &["--alerts-token", ALERTS_TOKEN],
    );
    let intake = format!("{}/api/v1/alerts", controller.http());
    let client = reqwest::Client::new();
    let mut samples = Vec::new();
    for run in 0..MANIFEST_RUNS {
        controller.wait_for_spares(1);
        let (started, key) = match filing {
            Filing::Manifest => {
                let name = format!("bench-{run}");
                let written = controller.drop_manifest(&name, "");
                (written, format!("default.{name}"))
            }
            Filing::Alert => {
                let body = alert_notification(run);
                let sent = SystemTime::now();
                let answer: serde_json::Value = client
                    .post(&intake)
                    .bearer_auth(ALERTS_TOKEN)
                    .json(&body)
                    .send()
                    .await
                    .expect("the intake answers")
                    .json()
                    .await
                    .expect("the intake answers JSON");
                assert_eq!(answer["decision"], "created", "{answer}");
                let key = answer["incident"].as_str().unwrap().replace('/', ".");
                (sent, key)
            }
        };
        let status = controller.incidents().join(format!(".status/{key}.yaml"));
        let deadline = Instant::now() + Duration::from_secs(60);
        // The status's startedAt: when its session started, the moment it became Investigating
        // (the session may end before a poll would see the phase).
        let investigating = loop {
            let text = std::fs::read_to_string(&status).unwrap_or_default();
            if let Some(at) = text
                .lines()
                .find_map(|line| line.trim().strip_prefix("startedAt: "))
            {
                let at: jiff::Timestamp = at.trim_matches(['\'', '"']).parse().unwrap();
                break SystemTime::UNIX_EPOCH + Duration::from_nanos(at.as_nanosecond() as u64);
            }
            assert!(
                Instant::now() < deadline,
                "{key}: not Investigating within 60 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        samples.push(investigating.duration_since(started).unwrap_or_default());
        while !std::fs::read_to_string(&status).is_ok_and(|text| text.contains("phase: Resolved")) {
            assert!(Instant::now() < deadline, "{key}: not Resolved within 60 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    samples
}

const ALERTS_NOTES: &str = "
- *alert received -> `Investigating`*: from sending an Alertmanager webhook notification (version 4,
  one firing alert of a new group) to `POST /api/v1/alerts` to the Incident becoming `Investigating`
  (its status's `startedAt`: when its session started, on this machine's clock), against renaming a manifest into the
  watched folder and the same wait, each with a controller of its own (files mode as shipped, one
  spare sandbox, the intake on in both, a local model server answering at once). The intake writes
  the manifest atomically into `alerts/` and answers; from there both paths are the same (the 20 ms
  debounce of the folder watch, the parse, the reconcile, the session's start), so the difference
  (about 3 ms in this run) is the request, the intake's decision (reading the group's Incidents
  back, writing the manifest, the audit row) and the file's creation in a second folder.
";

async fn manifest_to_first_command(pipeline: Pipeline) -> Vec<Duration> {
    let script: Vec<Turn> = (0..MANIFEST_RUNS)
        .flat_map(|_| {
            [
                Turn::shell("true", "measure"),
                Turn::report("resolved", "done"),
            ]
        })
        .collect();
    let llm = FakeLlm::start(Protocol::Anthropic, script).await;
    let mut extra = vec!["--sandbox-spares".to_string(), pipeline.spares.to_string()];
    if let Some(ms) = pipeline.poll_ms {
        extra.extend(["--poll-interval-ms".to_string(), ms.to_string()]);
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let controller = Controller::start(&llm, tempfile::tempdir().unwrap(), &extra);
    let spec = match &pipeline.network {
        Some(network) => format!("environment: {{networks: [{network}]}}"),
        None => String::new(),
    };
    let mut samples = Vec::new();
    for run in 0..MANIFEST_RUNS {
        // Each run starts from quiet: the spares made again behind the last session.
        controller.wait_for_spares(pipeline.spares);
        let name = format!("bench-{run}");
        let written = controller.drop_manifest(&name, &spec);
        let deadline = Instant::now() + Duration::from_secs(60);
        let first = loop {
            assert!(Instant::now() < deadline, "{name}: no command within 60 s");
            std::thread::sleep(Duration::from_millis(10));
            let at: Option<String> = query_store(
                &controller.store(),
                "SELECT e.at FROM events e JOIN sessions s ON s.id = e.session_id \
                 WHERE s.incident_name = ?1 AND e.kind = 'command_started' ORDER BY e.seq LIMIT 1",
                &name,
            );
            if let Some(at) = at {
                let at: jiff::Timestamp = at.parse().unwrap();
                break SystemTime::UNIX_EPOCH + Duration::from_nanos(at.as_nanosecond() as u64);
            }
        };
        samples.push(first.duration_since(written).unwrap_or_default());
        while query_store::<String>(
            &controller.store(),
            "SELECT state FROM sessions WHERE incident_name = ?1",
            &name,
        )
        .as_deref()
            != Some("finished")
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    samples
}

/// Sandboxes without Docker access: these benchmarks time the sandbox itself. (The store only
/// receives the Docker proxy's decisions, which this mode has none of.)
async fn bench_sandboxes() -> (Sandboxes, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("audit.db"), Redactor::default())
        .await
        .unwrap();
    let config = SandboxConfig {
        instance: format!("bench-{}", uuid::Uuid::new_v4().simple()),
        image: IMAGE.into(),
        docker_access: DockerAccess::None,
        ..SandboxConfig::default()
    };
    let audit = Audit {
        store,
        metrics: std::sync::Arc::new(opslab::metrics::Metrics::new()),
    };
    (Sandboxes::connect(config, audit).await.unwrap(), dir)
}

fn session_id(run: usize) -> String {
    format!("bench-{run}-{}", uuid::Uuid::now_v7())
}

async fn sandbox_start_alone() -> Vec<Duration> {
    let (sandboxes, _store) = bench_sandboxes().await;
    let mut samples = Vec::new();
    for run in 0..MANIFEST_RUNS {
        let session = session_id(run);
        let started = Instant::now();
        sandboxes.ensure(&session, &[]).await.unwrap();
        samples.push(started.elapsed());
        sandboxes.remove(&session).await.unwrap();
    }
    samples
}

/// The two Docker API calls a claim onto a network cannot do without, timed alone on a started
/// container of the sandbox image: off `none`, onto `network`. The floor under the networked row.
async fn network_hop_alone(network: &str) -> Vec<Duration> {
    let name = format!("opslab-bench-hop-{}", uuid::Uuid::new_v4().simple());
    let message = "the network hop baseline's docker command failed";
    let run = ["run", "-d", "--network", "none", "--name", &name, IMAGE];
    require(
        "docker",
        &[&run[..], &["sleep", "infinity"]].concat(),
        message,
    );
    let engine = bollard::Docker::connect_with_local_defaults().unwrap();
    let leave = || bollard::models::NetworkDisconnectRequest {
        container: name.clone(),
        force: Some(true),
    };
    let join = || bollard::models::NetworkConnectRequest {
        container: name.clone(),
        ..Default::default()
    };
    let mut samples = Vec::new();
    for _ in 0..MANIFEST_RUNS {
        let started = Instant::now();
        engine.disconnect_network("none", leave()).await.unwrap();
        engine.connect_network(network, join()).await.unwrap();
        samples.push(started.elapsed());
        engine.disconnect_network(network, leave()).await.unwrap();
        engine.connect_network("none", join()).await.unwrap();
    }
    require("docker", &["rm", "-f", &name], message);
    samples
}

/// `command` through the sandbox and through the `docker exec` CLI, in turn, after `setup` (once).
async fn exec_against_cli(setup: Option<&str>, command: &str) -> (Vec<Duration>, Vec<Duration>) {
    let (sandboxes, _store) = bench_sandboxes().await;
    let session = session_id(0);
    let sandbox = sandboxes.ensure(&session, &[]).await.unwrap();
    if let Some(setup) = setup {
        let outcome = sandbox.exec(setup, Duration::from_secs(30)).await.unwrap();
        assert_eq!(outcome.exit_code, Some(0), "{setup}: {outcome:?}");
    }
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
    sandboxes.remove(&session).await.unwrap();
    (ours, cli)
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb * 1024.0)
}

/// CPU time of a process so far (user + system), in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|index| fields.get(*index)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

async fn burst() -> Vec<Row> {
    let script = vec![
        Turn::shell("true", "one"),
        Turn::shell("true", "two"),
        Turn::shell("true", "three"),
        Turn::report("resolved", "done"),
    ];
    let llm = FakeLlm::start_each(Protocol::Anthropic, script).await;
    let concurrency = BURST_CONCURRENCY.to_string();
    let (mut times, mut peaks, mut afters, mut baselines) = (vec![], vec![], vec![], vec![]);
    for run in 0..BURST_RUNS {
        let controller = Controller::start(
            &llm,
            tempfile::tempdir().unwrap(),
            &["--max-sessions", &concurrency],
        );
        let started = Instant::now();
        for i in 0..BURST_INCIDENTS {
            controller.drop_manifest(&format!("burst-{run}-{i}"), "");
        }
        let mut peak: f64 = 0.0;
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            peak = peak.max(rss(controller.pid()));
            let finished: Option<i64> = query_store(
                &controller.store(),
                "SELECT count(*) FROM sessions WHERE state = ?1",
                "finished",
            );
            if finished == Some(BURST_INCIDENTS as i64) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the burst did not finish in 10 minutes"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        times.push(started.elapsed().as_secs_f64());
        peaks.push(peak);
        std::thread::sleep(Duration::from_secs(2));
        afters.push(rss(controller.pid()));
        drop(controller);

        let script = format!(
            "seq {BURST_INCIDENTS} | xargs -P {BURST_CONCURRENCY} -I{{}} sh -c \
             'id=$(docker run -d --init {IMAGE} sleep infinity) && \
              for i in 1 2 3; do docker exec $id bash -lc true; done; docker rm -f $id >/dev/null'"
        );
        let started = Instant::now();
        let status = Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        baselines.push(started.elapsed().as_secs_f64());
    }
    let seconds = |samples: &Vec<f64>| Stats::new(samples.clone(), Unit::Seconds);
    vec![
        Row {
            measurement: format!(
                "burst: {BURST_INCIDENTS} Incidents x 3 commands, {BURST_CONCURRENCY} at a time, until all finished"
            ),
            baseline: "shell script: the same containers and execs".into(),
            ours: seconds(&times),
            base: seconds(&baselines),
        },
        Row {
            measurement: "burst: controller peak RSS during the burst".into(),
            baseline: "2 s after the burst".into(),
            ours: Stats::new(peaks, Unit::MiB),
            base: Stats::new(afters, Unit::MiB),
        },
    ]
}

/// Fills a store with `count` finished sessions, and (when `manifests` is set) resolved Incidents
/// the controller will recognise for the manifests written there.
async fn seeded_store(store_path: &Path, manifests: Option<&Path>, count: usize) {
    let store = Store::open(store_path, Redactor::default()).await.unwrap();
    for i in 0..count {
        let name = format!("idle-{i}");
        let uid = uuid::Uuid::new_v4().to_string();
        let id = uuid::Uuid::now_v7().to_string();
        store
            .create_session(NewSession {
                id: id.clone(),
                incident_uid: uid.clone(),
                incident_namespace: "default".into(),
                incident_name: name.clone(),
                attempt: 1,
                generation: 1,
            })
            .await
            .unwrap();
        let finished = EventBody::SessionFinished {
            phase: Phase::Resolved,
            outcome: Some(Outcome::Resolved),
            reason: "Reported".into(),
            message: "seeded".into(),
        };
        store.append(&id, finished).await.unwrap();
        let Some(dir) = manifests else { continue };
        let text = format!(
            "apiVersion: opslab.dev/v1alpha1\nkind: Incident\nmetadata: {{name: {name}}}\nspec: {{title: idle}}\n"
        );
        std::fs::write(dir.join(format!("{name}.yaml")), &text).unwrap();
        let mut incident = opslab::source::manifest::parse(text.as_bytes())
            .incidents
            .remove(0);
        incident.metadata.uid = Some(uid.clone());
        incident.metadata.generation = Some(1);
        use sha2::Digest;
        let spec_hash = hex::encode(sha2::Sha256::digest(
            serde_json::to_vec(&incident.spec).unwrap(),
        ));
        store
            .put_incident(opslab::audit::IncidentRecord {
                namespace: "default".into(),
                name,
                source: "files".into(),
                content: opslab::audit::IncidentContent::Incident(opslab::audit::StoredIncident {
                    uid,
                    generation: 1,
                    spec_hash,
                    incident: serde_json::to_value(&incident).unwrap(),
                }),
                updated_at: jiff::Timestamp::now(),
            })
            .await
            .unwrap();
    }
}

/// RSS samples, one a second for ten seconds, and the CPU used over those ten seconds (one figure:
/// the kernel counts CPU time in 10 ms ticks, too coarse for one-second windows of an idle process).
fn sample_idle(pid: u32) -> (Vec<f64>, Vec<f64>) {
    let mut rss_samples = Vec::new();
    let cpu_before = cpu_seconds(pid);
    for _ in 0..10 {
        std::thread::sleep(Duration::from_secs(1));
        rss_samples.push(rss(pid));
    }
    let cpu_percent = (cpu_seconds(pid) - cpu_before) / 10.0 * 100.0;
    (rss_samples, vec![cpu_percent])
}

const SCRAPES: usize = 200;

/// Scrapes of `/metrics` as Prometheus makes them: one kept-alive connection, the whole body read.
async fn scrape_times(http: &str) -> Vec<Duration> {
    let client = reqwest::Client::new();
    let url = format!("{http}/metrics");
    let mut samples = Vec::new();
    for _ in 0..SCRAPES {
        let started = Instant::now();
        let body = client
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .unwrap()
            .text()
            .await
            .unwrap();
        samples.push(started.elapsed());
        assert!(
            body.contains("opslab_"),
            "not the controller's metrics: {body}"
        );
    }
    samples
}

async fn idle() -> Vec<Row> {
    let llm = FakeLlm::start(Protocol::Anthropic, vec![]).await;
    let busy_dir = tempfile::tempdir().unwrap();
    let incidents = busy_dir.path().join("incidents");
    std::fs::create_dir_all(&incidents).unwrap();
    seeded_store(
        &busy_dir.path().join("opslab.db"),
        Some(&incidents),
        IDLE_INCIDENTS,
    )
    .await;
    let known = Controller::start(&llm, busy_dir, &[]);
    // The first reconcile of every Incident rewrites its status; let it settle.
    std::thread::sleep(Duration::from_secs(3));
    let (known_rss, known_cpu) = sample_idle(known.pid());
    drop(known);
    let empty = Controller::start(&llm, tempfile::tempdir().unwrap(), &[]);
    std::thread::sleep(Duration::from_secs(3));
    let (empty_rss, empty_cpu) = sample_idle(empty.pid());
    let empty_scrapes = scrape_times(&empty.http()).await;
    drop(empty);

    let full_dir = tempfile::tempdir().unwrap();
    seeded_store(&full_dir.path().join("opslab.db"), None, SCRAPE_SESSIONS).await;
    let full = Controller::start(&llm, full_dir, &[]);
    let full_scrapes = scrape_times(&full.http()).await;
    drop(full);
    vec![
        Row {
            measurement: format!("idle: RSS with {IDLE_INCIDENTS} Incidents known, no session"),
            baseline: "empty folder".into(),
            ours: Stats::new(known_rss, Unit::MiB),
            base: Stats::new(empty_rss, Unit::MiB),
        },
        Row {
            measurement: format!("idle: CPU with {IDLE_INCIDENTS} Incidents known, no session"),
            baseline: "empty folder".into(),
            ours: Stats::new(known_cpu, Unit::Percent),
            base: Stats::new(empty_cpu, Unit::Percent),
        },
        Row {
            measurement: format!("GET /metrics with {SCRAPE_SESSIONS} sessions in the store"),
            baseline: "empty store".into(),
            ours: micros(full_scrapes),
            base: micros(empty_scrapes),
        },
    ]
}

fn micros(samples: Vec<Duration>) -> Stats {
    Stats::new(
        samples.iter().map(Duration::as_secs_f64).collect(),
        Unit::Micros,
    )
}

const PROXY_CALLS: usize = 200;

/// One GET on a unix socket, on a new connection (as the docker CLI's short commands do).
async fn unix_get(socket: &Path, path: &str) {
    use http_body_util::BodyExt;
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header("host", "docker")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.into_body().collect().await.unwrap();
}

async fn docker_api_proxy() -> Vec<Row> {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("audit.db"), Redactor::default())
        .await
        .unwrap();
    let session = session_id(0);
    store
        .create_session(NewSession {
            id: session.clone(),
            incident_uid: "u".into(),
            incident_namespace: "default".into(),
            incident_name: "bench".into(),
            attempt: 1,
            generation: 1,
        })
        .await
        .unwrap();
    let config = SandboxConfig {
        instance: format!("bench-{}", uuid::Uuid::new_v4().simple()),
        image: IMAGE.into(),
        proxy_socket_dir: dir.path().join("sockets"),
        ..SandboxConfig::default()
    };
    let engine = config.docker_socket.clone();
    let sockets = config.proxy_socket_dir.clone();
    let audit = Audit {
        store,
        metrics: std::sync::Arc::new(opslab::metrics::Metrics::new()),
    };
    let sandboxes = Sandboxes::connect(config, audit).await.unwrap();
    let sandbox = sandboxes.ensure(&session, &[]).await.unwrap();
    // The only sandbox's socket, in the folder named by its key.
    let proxy = std::fs::read_dir(&sockets)
        .unwrap()
        .next()
        .expect("the sandbox's socket folder")
        .unwrap()
        .path()
        .join(opslab::sandbox::proxy::SOCKET_NAME);
    let mut rows = Vec::new();
    let inspect = format!("/v1.41/containers/{}/json", sandbox.container_id);
    for (name, path) in [
        ("ping", "/v1.41/_ping"),
        ("container inspect", inspect.as_str()),
    ] {
        let (mut ours, mut base) = (Vec::new(), Vec::new());
        for _ in 0..PROXY_CALLS {
            let started = Instant::now();
            unix_get(&proxy, path).await;
            ours.push(started.elapsed());
            let started = Instant::now();
            unix_get(&engine, path).await;
            base.push(started.elapsed());
        }
        rows.push(Row {
            measurement: format!("Docker API `{name}` through the guarded proxy"),
            baseline: "the same on the engine's socket".into(),
            ours: micros(ours),
            base: micros(base),
        });
    }
    sandboxes.remove(&session).await.unwrap();
    rows
}

/// The store's engines, measured each against a bare table of its own.
#[derive(Clone, Copy)]
enum Engine {
    Sqlite,
    Postgres,
}

/// Events per transaction in the batched rows.
const BATCH: usize = 100;

/// A bare `(seq, body)` table on the same engine and settings as the store: the baseline.
enum Bare {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

const BARE_TABLE: &str = "CREATE TABLE events (seq BIGINT PRIMARY KEY, body TEXT NOT NULL)";
const BARE_BODY: &str = r#"{"kind":"command_started","command":"systemctl status api"}"#;

impl Bare {
    async fn open(fixture: &store_support::TestStore) -> Bare {
        match &fixture.backend {
            store_support::Backend::Sqlite(dir) => {
                let raw = rusqlite::Connection::open(dir.path().join("raw.db")).unwrap();
                raw.pragma_update(None, "journal_mode", "WAL").unwrap();
                // The store's default durability (`--store-durability full`).
                raw.pragma_update(None, "synchronous", "FULL").unwrap();
                raw.execute(BARE_TABLE, []).unwrap();
                Bare::Sqlite(raw)
            }
            store_support::Backend::Postgres { .. } => {
                let url = store_support::fresh_postgres_database().await;
                let client = store_support::connect(&url).await;
                client.batch_execute(BARE_TABLE).await.unwrap();
                Bare::Postgres(client)
            }
        }
    }

    /// Inserts rows `first..first + count` in one transaction.
    async fn insert(&mut self, first: usize, count: usize) {
        let sql = "INSERT INTO events (seq, body) VALUES ($1, $2)";
        match self {
            Bare::Sqlite(raw) => {
                let transaction = raw.transaction().unwrap();
                for seq in first..first + count {
                    transaction
                        .prepare_cached(sql)
                        .unwrap()
                        .execute(rusqlite::params![seq as i64, BARE_BODY])
                        .unwrap();
                }
                transaction.commit().unwrap();
            }
            Bare::Postgres(client) => {
                let transaction = client.transaction().await.unwrap();
                let statement = transaction.prepare(sql).await.unwrap();
                for seq in first..first + count {
                    transaction
                        .execute(&statement, &[&(seq as i64), &BARE_BODY])
                        .await
                        .unwrap();
                }
                transaction.commit().await.unwrap();
            }
        }
    }
}

fn per_second(count: usize, samples: &[Duration]) -> f64 {
    count as f64 / samples.iter().sum::<Duration>().as_secs_f64()
}

fn p99(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[(sorted.len() * 99) / 100]
}

/// Appends through the store, one per transaction, and bare inserts one and `BATCH` per
/// transaction, on one engine.
async fn store_appends(engine: Engine) -> Vec<Row> {
    let (name, fixture) = match engine {
        Engine::Sqlite => ("SQLite", store_support::TestStore::sqlite()),
        Engine::Postgres => ("PostgreSQL", store_support::TestStore::postgres().await),
    };
    eprintln!("store: {name} ...");
    let store = fixture.open().await;
    let ours = timed_appends(&store).await;
    let mut bare = Bare::open(&fixture).await;
    let mut single = Vec::new();
    for seq in 0..STORE_APPENDS {
        let started = Instant::now();
        bare.insert(seq, 1).await;
        single.push(started.elapsed());
    }
    let mut batches = Vec::new();
    for batch in 0..STORE_APPENDS / BATCH {
        let started = Instant::now();
        bare.insert(STORE_APPENDS + batch * BATCH, BATCH).await;
        batches.push(started.elapsed());
    }
    let per_event: Vec<Duration> = batches.iter().map(|batch| *batch / BATCH as u32).collect();
    // SQLite's other durability, `--store-durability normal`, against the default on the same disk.
    let normal = match engine {
        Engine::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open_with(
                &dir.path().join("normal.db"),
                Redactor::default(),
                Durability::Normal,
            )
            .await
            .unwrap();
            Some(timed_appends(&store).await)
        }
        Engine::Postgres => None,
    };
    let single_figures = format!(
        "{:.0}/s, p99 {} µs",
        per_second(STORE_APPENDS, &single),
        p99(&single).as_micros()
    );
    let mut rows = vec![
        Row {
            measurement: format!(
                "{name}: append one event, durable ({:.0}/s, p99 {} µs)",
                per_second(STORE_APPENDS, &ours),
                p99(&ours).as_micros()
            ),
            baseline: format!("bare INSERT, one per transaction ({single_figures})"),
            ours: micros(ours.clone()),
            base: micros(single.clone()),
        },
        Row {
            measurement: format!(
                "{name}: bare INSERT, batched {BATCH} per transaction, per event ({:.0}/s, p99 of a batch {} µs)",
                per_second(batches.len() * BATCH, &batches),
                p99(&batches).as_micros()
            ),
            baseline: format!("bare INSERT, one per transaction ({single_figures})"),
            ours: micros(per_event),
            base: micros(single),
        },
    ];
    if let Some(normal) = normal {
        rows.push(Row {
            measurement: format!(
                "{name}: append one event, `--store-durability normal` ({:.0}/s, p99 {} µs)",
                per_second(STORE_APPENDS, &normal),
                p99(&normal).as_micros()
            ),
            baseline: format!(
                "the default, `full` ({:.0}/s, p99 {} µs)",
                per_second(STORE_APPENDS, &ours),
                p99(&ours).as_micros()
            ),
            ours: micros(normal),
            base: micros(ours),
        });
    }
    rows
}

/// Appends `STORE_APPENDS` command events to the session `bench` (made here), one at a time.
async fn timed_appends(store: &Store) -> Vec<Duration> {
    if store.session("bench").await.unwrap().is_none() {
        store
            .create_session(NewSession {
                id: "bench".into(),
                incident_uid: "u".into(),
                incident_namespace: "default".into(),
                incident_name: "bench".into(),
                attempt: 1,
                generation: 1,
            })
            .await
            .unwrap();
    }
    let mut samples = Vec::new();
    for i in 0..STORE_APPENDS {
        let body = EventBody::CommandStarted {
            tool_use_id: format!("t{i}"),
            command: "systemctl status api".into(),
            reasoning: "is the api up?".into(),
            timeout_seconds: 120,
        };
        let started = Instant::now();
        store.append("bench", body).await.unwrap();
        samples.push(started.elapsed());
    }
    samples
}

/// What a long session sends and is billed for: prompt caching and the context budget, each beside
/// the same session without it. Token and byte counts, not timings.
mod economy {
    use std::sync::Arc;
    use std::time::Duration;

    use opslab::audit::EventBody;
    use opslab::cost::CostTable;
    use opslab::llm::{ChatRequest, ContentBlock, LlmClient, ProviderConfig, ProviderKind, Usage};
    use opslab::metrics::Metrics;
    use opslab::session::context::{self, Budget};
    use opslab::session::history::History;
    use opslab::session::{prompt, tools};
    use serde_json::json;

    use super::fake_llm::{FakeLlm, Protocol, Turn};
    use super::{Row, Stats, Unit};

    const TURNS: usize = 30;
    const OUTPUT_BYTES: usize = 8 * 1024;
    const MODEL: &str = "claude-sonnet-4-5";
    const CONTEXT_TOKENS: u64 = 32_768;
    const RESPONSE_MAX_TOKENS: u32 = 4096;

    pub const NOTES: &str = "
- One session of 30 turns, each running a command that prints 8 KB, replayed through the agent's own
  fold of its events (`History`) and request builder, against the test suite's protocol server
  keeping a prompt cache with the Anthropic API's documented semantics: a request reads the longest
  prefix up to (or up to 20 blocks before) one of its `cache_control` breakpoints that a request of
  the last 5 minutes wrote, and writes the prefixes up to its breakpoints of 1,024 tokens or more;
  tokens are estimated as 4 bytes each. Runs: 1 (the figures are counts: the same each run).
- *billed input*: fresh input + 1.25 x cache writes + 0.1 x cache reads, summed over the session's
  requests, in input-token equivalents (what the Anthropic API bills at 5-minute-cache rates). The
  baseline is the same requests without `cache_control` (`--prompt-cache off`): all of it fresh.
- *with the context budget*: `--context-tokens 32768` (the default for a model opslab does not know;
  Claude's own window of 200,000 is not reached by this session). Older outputs are cut in what is
  sent, oldest first, down to 60 % of the budget each time it is passed, so most turns still extend
  the previous request and read it from the cache.
- *largest request body*: the JSON body of the session's largest request, with the budget and
  without. With the budget it stays under the budget whatever the number of turns; without, it
  grows by each turn's output.
- With both, each time the budget is passed the prefix changes from the first output cut onwards,
  and that turn writes the cache afresh: caching then saves less than on the unbounded session, and
  the bill is about that of the unbounded session with caching, for requests a third the size.
- *scenario …, est. cost*: each of the seven original scenarios' sessions from a replayed run
  (`opslab scenario run --driver replay CASE…`, real Docker; or the run whose store
  `OPSLAB_BENCH_SCENARIO_STORE` names), its stored events folded into the requests the agent sends, as `claude-sonnet-4-5` (the
  default model), and billed by the same caching server at that model's prices (input $3, output $15
  a million tokens; cache writes 1.25x, reads 0.1x): before, no `cache_control` and no context
  budget; after, both (the model's window, 200,000 tokens, which these short sessions never reach:
  the saving is the cache's). Output is the replay's own count, the same in both. The commands'
  real outputs differ a little from run to run (`docker ps` times), so may the figures.
";

    fn spec() -> opslab::incident::IncidentSpec {
        serde_json::from_value(json!({"title": "the api returns 500", "severity": "high"})).unwrap()
    }

    /// The session's events, in the order the agent stores them.
    fn events() -> Vec<EventBody> {
        let mut events = vec![EventBody::SessionStarted {
            generation: 1,
            spec: spec(),
            model: MODEL.into(),
            provider: "anthropic".into(),
            sandbox_image: "opslab-sandbox:latest".into(),
            requests: Default::default(),
        }];
        for turn in 0..TURNS {
            let id = format!("toolu_{turn:04}");
            let line = format!(
                "2026-01-01T00:{:02}:00Z api[1]: GET /orders 500 upstream timed out\n",
                turn % 60
            );
            let output: String =
                line.repeat(OUTPUT_BYTES / line.len() + 1)[..OUTPUT_BYTES].to_string();
            events.push(EventBody::LlmResponse {
                turn: turn as u32 + 1,
                content: vec![
                    ContentBlock::Text { text: format!("Reading the api's log, part {turn}.") },
                    ContentBlock::ToolUse {
                        id: id.clone(),
                        name: tools::SHELL.into(),
                        input: json!({"command": format!("docker logs --tail 120 api-{turn}"), "reasoning": "what fails"}),
                    },
                ],
                stop_reason: Some("tool_use".into()),
                input_tokens: 0,
                output_tokens: 0,
                cache_write_tokens: 0,
                cache_read_tokens: 0,
                cost_usd: 0.0,
            });
            events.push(EventBody::CommandStarted {
                tool_use_id: id.clone(),
                command: format!("docker logs --tail 120 api-{turn}"),
                reasoning: "what fails".into(),
                timeout_seconds: 120,
            });
            events.push(EventBody::CommandFinished {
                tool_use_id: id,
                exit_code: Some(0),
                duration_ms: 40,
                timed_out: false,
                output_bytes: output.len() as u64,
                output,
                truncated: false,
            });
        }
        events
    }

    /// The requests the agent sends in the session, in order.
    fn requests(budget: Option<Budget>) -> Vec<ChatRequest> {
        requests_of(&events(), &spec(), budget)
    }

    /// The requests the agent sends in a session of these events, in order.
    fn requests_of(
        events: &[EventBody],
        spec: &opslab::incident::IncidentSpec,
        budget: Option<Budget>,
    ) -> Vec<ChatRequest> {
        let system = prompt::system(spec, 120);
        let tools = tools::specs();
        let mut history = History::from_events_within(std::iter::empty(), budget);
        let mut requests = Vec::new();
        for event in events {
            if matches!(event, EventBody::LlmResponse { .. }) {
                requests.push(ChatRequest {
                    model: MODEL.into(),
                    system: system.clone(),
                    messages: history.messages(),
                    tools: tools.clone(),
                    max_tokens: RESPONSE_MAX_TOKENS,
                });
            }
            history.apply(event);
        }
        requests
    }

    fn budget() -> Budget {
        budget_of(&spec(), CONTEXT_TOKENS)
    }

    fn budget_of(spec: &opslab::incident::IncidentSpec, context_tokens: u64) -> Budget {
        let fixed = prompt::system(spec, 120).len()
            + tools::specs()
                .iter()
                .map(|tool| {
                    tool.name.len() + tool.description.len() + tool.input_schema.to_string().len()
                })
                .sum::<usize>();
        Budget::new(context_tokens, RESPONSE_MAX_TOKENS, fixed)
    }

    /// The usage the caching server reports for each request.
    async fn usage(requests: &[ChatRequest], prompt_cache: bool) -> Vec<Usage> {
        let llm = FakeLlm::start(
            Protocol::Anthropic,
            vec![Turn::shell("true", "ok"); requests.len()],
        )
        .await;
        llm.cache_prompts();
        let client = LlmClient::new(
            ProviderConfig {
                kind: ProviderKind::Anthropic,
                base_url: llm.base_url(),
                api_key: None,
                request_timeout: Duration::from_secs(30),
                retry: Default::default(),
                prompt_cache,
                stream: false,
                summary_endpoint: None,
            },
            Arc::new(Metrics::new()),
            CostTable::default(),
        )
        .unwrap();
        let mut usages = Vec::new();
        for request in requests {
            usages.push(
                client
                    .complete(request)
                    .await
                    .expect("the protocol server answers")
                    .usage,
            );
        }
        usages
    }

    fn billed(usages: &[Usage]) -> f64 {
        usages
            .iter()
            .map(|usage| {
                usage.input_tokens as f64
                    + 1.25 * usage.cache_write_tokens as f64
                    + 0.1 * usage.cache_read_tokens as f64
            })
            .sum()
    }

    fn largest_body(requests: &[ChatRequest]) -> f64 {
        requests
            .iter()
            .map(|request| {
                opslab::llm::anthropic::request_body(request, true)
                    .to_string()
                    .len()
            })
            .max()
            .unwrap_or(0) as f64
    }

    fn one(value: f64, unit: Unit) -> Stats {
        Stats::new(vec![value], unit)
    }

    /// The seven scenarios the economy was first measured on (more may exist; these keep the
    /// figures comparable from run to run).
    const SCENARIOS: [&str; 7] = [
        "container-paused",
        "container-stopped",
        "network-disconnected",
        "no-fault",
        "oom-killed",
        "volume-full",
        "wrong-env-crash-loop",
    ];

    /// The stored events of each session of a replayed run of the scenarios, by case: from the
    /// store `OPSLAB_BENCH_SCENARIO_STORE` names (a run's `opslab.db`), or from a run made here
    /// (`opslab scenario run --driver replay`, real Docker).
    async fn scenario_sessions() -> Vec<(String, Vec<EventBody>)> {
        let (path, _run) = match std::env::var_os("OPSLAB_BENCH_SCENARIO_STORE") {
            Some(path) => (std::path::PathBuf::from(path), None),
            None => {
                let run = tempfile::tempdir().unwrap();
                let status = std::process::Command::new(env!("CARGO_BIN_EXE_opslab"))
                    .args(["scenario", "run", "--driver", "replay", "--out"])
                    .arg(run.path())
                    .args(SCENARIOS)
                    .current_dir(env!("CARGO_MANIFEST_DIR"))
                    .status()
                    .expect("runs `opslab scenario run`");
                assert!(
                    status.success(),
                    "the replayed scenario run failed (it needs Docker and scripts/build-images)"
                );
                (run.path().join("opslab.db"), Some(run))
            }
        };
        let store = opslab::audit::Store::open(path.clone(), Default::default())
            .await
            .unwrap_or_else(|error| panic!("cannot open {}: {error}", path.display()));
        let mut sessions = Vec::new();
        for session in store.sessions().await.unwrap() {
            if !SCENARIOS.contains(&session.incident_name.as_str()) {
                continue;
            }
            let events = store.events(&session.id).await.unwrap();
            sessions.push((
                session.incident_name,
                events.into_iter().map(|event| event.body).collect(),
            ));
        }
        sessions.sort_by(|a, b| a.0.cmp(&b.0));
        sessions
    }

    /// What a session's requests cost at the default model's prices: the input as the caching
    /// server bills it, the output as the session's own answers counted it (the same either way).
    async fn priced(requests: &[ChatRequest], outputs: &[u64], prompt_cache: bool) -> f64 {
        let costs = CostTable::default();
        usage(requests, prompt_cache)
            .await
            .into_iter()
            .zip(outputs)
            .map(|(usage, output)| {
                costs.cost_of(
                    MODEL,
                    &Usage {
                        output_tokens: *output,
                        ..usage
                    },
                )
            })
            .sum()
    }

    /// One row per scenario: its replayed session's estimated cost, without the prompt cache and
    /// the context budget, and with both (the model's default window).
    async fn scenario_rows() -> Vec<Row> {
        let mut rows = Vec::new();
        for (case, events) in scenario_sessions().await {
            let Some(spec) = events.iter().find_map(|event| match event {
                EventBody::SessionStarted { spec, .. } => Some(spec.clone()),
                _ => None,
            }) else {
                continue;
            };
            let outputs: Vec<u64> = events
                .iter()
                .filter_map(|event| match event {
                    EventBody::LlmResponse { output_tokens, .. } => Some(*output_tokens),
                    _ => None,
                })
                .collect();
            let before = requests_of(&events, &spec, None);
            let after = requests_of(
                &events,
                &spec,
                Some(budget_of(&spec, context::window(MODEL))),
            );
            rows.push(Row {
                measurement: format!(
                    "scenario {case} ({} turns), est. cost, cache + budget",
                    before.len()
                ),
                ours: one(priced(&after, &outputs, true).await, Unit::Usd),
                baseline: "the same, no cache, no budget".into(),
                base: one(priced(&before, &outputs, false).await, Unit::Usd),
            });
        }
        rows
    }

    pub async fn rows() -> Vec<Row> {
        let whole = requests(None);
        let bounded = requests(Some(budget()));
        let cached = billed(&usage(&whole, true).await);
        let uncached = billed(&usage(&whole, false).await);
        let bounded_cached = billed(&usage(&bounded, true).await);
        let bounded_uncached = billed(&usage(&bounded, false).await);
        let budget_bytes = (CONTEXT_TOKENS * context::BYTES_PER_TOKEN) as f64;
        vec![
            Row {
                measurement: "billed input, 30 turns of 8 KB, prompt cache on".into(),
                ours: one(cached, Unit::Tokens),
                baseline: "the same, `--prompt-cache off`".into(),
                base: one(uncached, Unit::Tokens),
            },
            Row {
                measurement: "billed input, prompt cache on, context budget 32,768".into(),
                ours: one(bounded_cached, Unit::Tokens),
                baseline: "the same, `--prompt-cache off`".into(),
                base: one(bounded_uncached, Unit::Tokens),
            },
            Row {
                measurement: "largest request body, context budget 32,768".into(),
                ours: one(largest_body(&bounded), Unit::KiB),
                baseline: "the same, no budget".into(),
                base: one(largest_body(&whole), Unit::KiB),
            },
            Row {
                measurement: "largest request body, context budget 32,768".into(),
                ours: one(largest_body(&bounded), Unit::KiB),
                baseline: "the budget, in bytes (3 a token)".into(),
                base: one(budget_bytes, Unit::KiB),
            },
        ]
        .into_iter()
        .chain(scenario_rows().await)
        .collect()
    }
}
