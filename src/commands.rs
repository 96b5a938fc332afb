//! The commands' handlers: the controller's wiring, and the CLI's views of the store.

use std::sync::Arc;
use std::time::Duration;

use kube::CustomResourceExt;
use opslab::audit::{ChainCheck, EventBody, Redactor, SessionRecord, Store, StoreLocation};
use opslab::config::{Config, SourceConfig};
use opslab::incident::Incident;
use opslab::reconcile::{self, Context};
use opslab::server;
use opslab::source::files::FilesSource;
use opslab::source::kubernetes;
use opslab::source::manifest::DEFAULT_NAMESPACE;
use opslab::view::{self, OutputFormat};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::cli::{DriverArg, FollowArgs, ListArgs, ScenarioRunArgs, ShowArgs, StoreArgs};

/// Runs the controller until SIGINT or SIGTERM.
pub async fn run_controller(config: Config) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let (wake_tx, wake_rx) = mpsc::unbounded_channel();
    let ctx = Arc::new(Context::new(config.clone(), wake_tx).await?);
    reconcile::collect_orphans(&ctx).await;

    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    // Stopped only once the sessions have: a session starting late may still claim a spare.
    let spares_stop = CancellationToken::new();
    let spares = tokio::spawn({
        let sandboxes = ctx.sandboxes.clone();
        let stop = spares_stop.clone();
        async move { sandboxes.keep_spares(stop).await }
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {}: {error}", config.listen))?;
    info!(address = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
    let http = tokio::spawn(server::serve(
        listener,
        ctx.metrics.clone(),
        ctx.readiness.clone(),
        shutdown.clone(),
    ));
    info!(
        provider = config.provider.kind.as_str(),
        model = %config.agent.model,
        store = %config.store,
        "controller started"
    );
    let result = match &config.source {
        SourceConfig::Files { dir, watch } => {
            FilesSource::new(dir.clone(), *watch)
                .run(ctx.clone(), wake_rx, shutdown.clone())
                .await
        }
        SourceConfig::Kubernetes(settings) => {
            kubernetes::run(ctx.clone(), settings, wake_rx, shutdown.clone()).await
        }
    };
    info!("stopping: sessions resume from the store at the next start");
    ctx.sessions.shutdown().await;
    spares_stop.cancel();
    let _ = spares.await;
    shutdown.cancel();
    let _ = http.await;
    Ok(result?)
}

async fn signal_shutdown(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    shutdown.cancel();
}

/// `opslab crd`.
pub fn crd_yaml() -> anyhow::Result<String> {
    Ok(serde_saphyr::to_string(&Incident::crd())?)
}

/// `opslab get incidents`.
pub async fn get_incidents(args: ListArgs) -> anyhow::Result<String> {
    let store = open_existing(&args.store).await?;
    let records = store.incidents().await?;
    match args.output {
        OutputFormat::Table => Ok(view::incidents_table(&records, jiff::Timestamp::now())),
        OutputFormat::Json | OutputFormat::Yaml => {
            let items: Vec<&serde_json::Value> = records
                .iter()
                .filter(|record| record.error.is_none())
                .map(|record| &record.incident)
                .collect();
            let errors: Vec<serde_json::Value> = records
                .iter()
                .filter_map(|record| {
                    record
                        .error
                        .as_ref()
                        .map(|error| serde_json::json!({"manifest": record.name, "error": error}))
                })
                .collect();
            let list = serde_json::json!({
                "apiVersion": "v1", "kind": "List", "items": items, "errors": errors,
            });
            render(&list, args.output)
        }
    }
}

/// `opslab sessions`.
pub async fn list_sessions(args: ListArgs) -> anyhow::Result<String> {
    let store = open_existing(&args.store).await?;
    let sessions = store.sessions().await?;
    match args.output {
        OutputFormat::Table => Ok(view::sessions_table(&sessions, jiff::Timestamp::now())),
        OutputFormat::Json | OutputFormat::Yaml => render(&sessions, args.output),
    }
}

/// `opslab show SESSION|INCIDENT`.
pub async fn show(args: ShowArgs) -> anyhow::Result<String> {
    let store = open_existing(&args.store).await?;
    let session = find_session(&store, &args.target).await?;
    let events = store.events(&session.id).await?;
    match args.output {
        OutputFormat::Table => Ok(view::session_story(&session, &events, args.raw)),
        OutputFormat::Json | OutputFormat::Yaml => render(
            &serde_json::json!({"session": session, "events": events}),
            args.output,
        ),
    }
}

/// `opslab follow`: prints each event as the store gets it, and returns when the session ends.
pub async fn follow(
    args: FollowArgs,
    out: &mut (impl std::io::Write + Send),
) -> anyhow::Result<()> {
    let store = open_existing(&args.store).await?;
    // An Incident just filed may not have its session yet.
    let waited_since = std::time::Instant::now();
    let session = loop {
        match find_session(&store, &args.target).await {
            Ok(session) => break session,
            Err(error) if waited_since.elapsed() > FOLLOW_WAIT_FOR_SESSION => return Err(error),
            Err(_) => tokio::time::sleep(FOLLOW_POLL).await,
        }
    };
    write!(out, "{}", view::session_header(&session))?;
    out.flush()?;
    let mut last_seq = 0;
    loop {
        let events = store.events_after(&session.id, last_seq).await?;
        for event in &events {
            write!(out, "\n{}", view::event_text(event, args.raw))?;
            out.flush()?;
            last_seq = event.seq;
            if matches!(event.body, EventBody::SessionFinished { .. }) {
                return Ok(());
            }
        }
        if events.is_empty() {
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }
}

/// How often `follow` looks for new events.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// How long `follow` waits for an Incident's first session.
const FOLLOW_WAIT_FOR_SESSION: Duration = Duration::from_secs(60);

/// `opslab audit verify`: the report, or an error carrying it when a chain is broken.
pub async fn audit_verify(session: Option<String>, store: StoreArgs) -> anyhow::Result<String> {
    let store = open_existing(&store).await?;
    let sessions = match session {
        Some(id) => vec![
            store
                .session(&id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no session {id:?} in the store"))?,
        ],
        None => store.sessions().await?,
    };
    let mut report = String::new();
    let mut broken = 0;
    for session in &sessions {
        match store.verify(&session.id).await? {
            ChainCheck::Intact { events } => {
                report.push_str(&format!("ok      {} ({events} events)\n", session.id));
            }
            ChainCheck::Broken(link) => {
                broken += 1;
                report.push_str(&format!(
                    "BROKEN  {}: first broken link at event {}: {}\n",
                    session.id, link.seq, link.reason
                ));
            }
        }
    }
    if broken > 0 {
        anyhow::bail!(
            "{broken} of {} audit trails are broken:\n{report}",
            sessions.len()
        );
    }
    Ok(report)
}

async fn find_session(store: &Store, target: &str) -> anyhow::Result<SessionRecord> {
    if let Some(session) = store.session(target).await? {
        return Ok(session);
    }
    let (namespace, name) = target
        .split_once('/')
        .unwrap_or((DEFAULT_NAMESPACE, target));
    store
        .sessions()
        .await?
        .into_iter()
        .find(|session| session.incident_namespace == namespace && session.incident_name == name)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no session {target:?} and no Incident {namespace}/{name} with a session"
            )
        })
}

async fn open_existing(args: &StoreArgs) -> anyhow::Result<Store> {
    let location = args.location().map_err(anyhow::Error::msg)?;
    if let StoreLocation::Sqlite(path) = &location
        && !path.exists()
    {
        anyhow::bail!(
            "no audit store at {} (set --store or OPSLAB_STORE to the controller's store)",
            path.display()
        );
    }
    Ok(Store::open(location, Redactor::default()).await?)
}

fn render<T: serde::Serialize>(value: &T, format: OutputFormat) -> anyhow::Result<String> {
    match format {
        OutputFormat::Json => Ok(serde_json::to_string_pretty(value)? + "\n"),
        OutputFormat::Yaml | OutputFormat::Table => Ok(serde_saphyr::to_string(value)?),
    }
}

/// `opslab scenario run`: the report in the chosen format, and whether every case passed.
pub async fn scenario_run(args: ScenarioRunArgs) -> anyhow::Result<(String, bool)> {
    use opslab::scenario::run::{Driver, RunOptions, choose_driver};
    let requested = match args.driver {
        DriverArg::Auto => None,
        DriverArg::Replay => Some(Driver::Replay),
        DriverArg::Model => Some(Driver::Model),
    };
    let driver = choose_driver(requested, |name| std::env::var(name).ok())?;
    let run = args
        .name
        .unwrap_or_else(|| format!("scn-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    let out_dir = args
        .out
        .unwrap_or_else(|| std::path::PathBuf::from("scenario-runs").join(&run));
    let compose_command = args
        .compose
        .map(|line| {
            line.split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|words| !words.is_empty());
    let options = RunOptions {
        scenarios_dir: args.scenarios,
        names: args.names,
        compose_file: args.compose_file,
        compose_command,
        out_dir,
        controller_bin: std::env::current_exe()?,
        driver,
        sandbox_image: args.sandbox_image,
        parallel: args.parallel,
        session_timeout: Duration::from_secs(args.session_timeout_seconds),
        oracle_timeout: Duration::from_secs(args.oracle_timeout_seconds),
        prefix: run,
    };
    let progress = opslab::scenario::progress::to_stderr();
    let report = opslab::scenario::run::run(options, progress.as_ref()).await?;
    let passed = report.all_passed();
    let output = match args.output {
        OutputFormat::Table => report.table(),
        OutputFormat::Json | OutputFormat::Yaml => render(&report, args.output)?,
    };
    Ok((output, passed))
}

/// `opslab scenario list`.
pub fn scenario_list(dir: &std::path::Path) -> anyhow::Result<String> {
    let cases = opslab::scenario::load_all(dir)?;
    let mut out = String::new();
    for case in cases {
        out.push_str(&format!("{}\t{}\n", case.name, case.spec.summary));
    }
    Ok(out)
}
