//! The commands' handlers: the controller's wiring, and the CLI's views of the store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::CustomResourceExt;
use opslab::ObjectKey;
use opslab::alerts;
use opslab::audit::{
    ChainCheck, Draft, DraftChange, IncidentFeed, IncidentRecord, Redactor, SessionFeed,
    SessionRecord, Store, StoreLocation,
};
use opslab::config::{Config, SourceConfig};
use opslab::console::{Access, ConsoleOptions};
use opslab::incident::DEFAULT_NAMESPACE;
use opslab::incident::Incident;
use opslab::reconcile::{self, Context};
use opslab::server;
use opslab::source::files::FilesSource;
use opslab::source::files::alert_filing::FolderTarget;
use opslab::source::kubernetes;
use opslab::source::kubernetes::alert_filing::ApiTarget;
use opslab::view::{
    self, Clock, IncidentColumns, IncidentDescription, ListFormat, OutputFormat, Widths,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cli::{
    ConsoleArgs, DescribeIncidentArgs, DriverArg, FollowArgs, GetIncidentsArgs, ScenarioRunArgs,
    SessionsArgs, ShowArgs, StoreArgs,
};
use opslab::label_selector::LabelSelector;

/// Runs the controller until SIGINT or SIGTERM; running commands then get `grace` to finish.
pub async fn run_controller(
    config: Config,
    console: ConsoleOptions,
    grace: Duration,
) -> anyhow::Result<()> {
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
    let console = opslab::console::router(
        opslab::console::Console {
            store: ctx.store.clone(),
            shutdown: shutdown.clone(),
        },
        Access::decide(config.listen, &console),
    );
    let routes = alert_routes(&config, &ctx).await?.merge(console);
    let http = tokio::spawn(server::serve(
        listener,
        ctx.metrics.clone(),
        ctx.readiness.clone(),
        routes,
        shutdown.clone(),
    ));
    info!(
        provider = config.provider.kind.as_str(),
        model = %config.agent.model,
        store = %config.store,
        "controller started"
    );
    if let Some(missing) = config.provider.missing() {
        warn!(
            "{missing}; until then /readyz answers 503 and every Incident fails with NoModelConfigured"
        );
    }
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
    ctx.sessions.shutdown(grace).await;
    spares_stop.cancel();
    let _ = spares.await;
    shutdown.cancel();
    let _ = http.await;
    Ok(result?)
}

/// The alert intake's routes when it is on (filing where the source reads), else none.
async fn alert_routes(config: &Config, ctx: &Context) -> anyhow::Result<axum::Router> {
    let Some(intake) = &config.alerts else {
        return Ok(axum::Router::new());
    };
    Ok(match &config.source {
        SourceConfig::Files { dir, .. } => {
            intake_routes(intake, FolderTarget::new(dir.clone()), ctx)
        }
        SourceConfig::Kubernetes(settings) => {
            let client = kubernetes::client(settings).await?;
            intake_routes(intake, ApiTarget::new(client), ctx)
        }
    })
}

/// The intake's routes, filing in `target`.
fn intake_routes<T: alerts::Target>(
    intake: &alerts::IntakeConfig,
    target: T,
    ctx: &Context,
) -> axum::Router {
    info!(
        path = alerts::handler::PATH,
        ?target,
        "the Alertmanager intake is on"
    );
    let intake = alerts::Intake::new(
        intake.clone(),
        target,
        ctx.store.clone(),
        ctx.metrics.clone(),
    );
    alerts::routes(std::sync::Arc::new(intake))
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

/// `opslab get incidents`: the listing, then with `--watch` each change, written to `out` as it
/// comes; notes for people (nothing found, invalid manifests under `--no-headers`) to `notes`.
pub async fn get_incidents(
    args: GetIncidentsArgs,
    out: &mut (impl std::io::Write + Send),
    notes: &mut (impl std::io::Write + Send),
) -> anyhow::Result<()> {
    let (store, _) = open_existing(&args.store).await?;
    let query = IncidentQuery::of(&args);
    let records = query.select(store.incidents().await?)?;
    let listing = Listing {
        format: args.output,
        columns: IncidentColumns {
            namespace: query.namespace.is_none(),
            wide: args.output == ListFormat::Wide,
        },
        headers: !args.no_headers,
        // One document per Incident while watching, as `kubectl get -w -o json` prints them.
        list_documents: !args.watch,
        single: args.names.len() == 1,
    };
    let mut widths = Widths::default();
    // As kubectl: an empty JSON or YAML List speaks for itself.
    let structured = matches!(args.output, ListFormat::Json | ListFormat::Yaml);
    if records.is_empty() && !structured {
        writeln!(notes, "No incidents found{}.", query.scope_text())?;
    }
    let (text, note) = listing.render(&records, jiff::Timestamp::now(), &mut widths)?;
    out.write_all(text.as_bytes())?;
    notes.write_all(note.as_bytes())?;
    out.flush()?;
    if !args.watch {
        return Ok(());
    }
    let mut feed = IncidentFeed::after(store, &records);
    let later = Listing {
        headers: false,
        ..listing
    };
    loop {
        let changes = feed.next().await?;
        let changed: Vec<IncidentRecord> = query
            .select(changes.all)?
            .into_iter()
            .filter(|record| changes.changed.contains(record))
            .collect();
        if changed.is_empty() {
            continue;
        }
        let (text, _) = later.render(&changed, jiff::Timestamp::now(), &mut widths)?;
        out.write_all(text.as_bytes())?;
        out.flush()?;
    }
}

/// Which Incidents `get incidents` lists.
struct IncidentQuery {
    /// `None`: every namespace.
    namespace: Option<String>,
    names: Vec<String>,
    selector: Option<LabelSelector>,
}

impl IncidentQuery {
    fn of(args: &GetIncidentsArgs) -> IncidentQuery {
        let namespace = (!args.namespaces.all_namespaces).then(|| {
            args.namespaces
                .namespace
                .clone()
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
        });
        IncidentQuery {
            namespace,
            names: args.names.clone(),
            selector: args.selector.clone(),
        }
    }

    /// The records asked for; an error naming any NAME not found.
    fn select(&self, records: Vec<IncidentRecord>) -> anyhow::Result<Vec<IncidentRecord>> {
        // Manifest problems last, under the Incidents.
        let (problems, mut selected): (Vec<IncidentRecord>, Vec<IncidentRecord>) = records
            .into_iter()
            .filter(|record| self.keeps(record))
            .partition(|record| record.problem().is_some());
        selected.extend(problems);
        let missing: Vec<&str> = self
            .names
            .iter()
            .filter(|name| !selected.iter().any(|record| &record.name == *name))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            anyhow::bail!(
                "no Incident {}{} in the store",
                missing.join(", "),
                self.scope_text()
            );
        }
        Ok(selected)
    }

    fn keeps(&self, record: &IncidentRecord) -> bool {
        // A manifest problem belongs to no namespace and has no labels: listed unless the query
        // names Incidents or selects by label.
        let Some(stored) = record.stored() else {
            return self.names.is_empty() && self.selector.is_none();
        };
        let namespace_ok = self
            .namespace
            .as_ref()
            .is_none_or(|namespace| &record.namespace == namespace);
        let name_ok = self.names.is_empty() || self.names.contains(&record.name);
        let labels_ok = self.selector.as_ref().is_none_or(|selector| {
            let labels: BTreeMap<String, String> =
                serde_json::from_value(stored.incident["metadata"]["labels"].clone())
                    .unwrap_or_default();
            selector.matches(&labels)
        });
        namespace_ok && name_ok && labels_ok
    }

    /// ` in namespace NAME`, or nothing for all namespaces.
    fn scope_text(&self) -> String {
        self.namespace
            .as_ref()
            .map(|namespace| format!(" in namespace {namespace}"))
            .unwrap_or_default()
    }
}

/// How `get incidents` prints a batch of records.
#[derive(Clone, Copy)]
struct Listing {
    format: ListFormat,
    columns: IncidentColumns,
    headers: bool,
    /// JSON and YAML as one `List`; else one document per Incident.
    list_documents: bool,
    /// One NAME asked for: JSON and YAML print the Incident itself, not a List.
    single: bool,
}

impl Listing {
    /// The text for stdout, and a note for stderr.
    fn render(
        &self,
        records: &[IncidentRecord],
        now: jiff::Timestamp,
        widths: &mut Widths,
    ) -> anyhow::Result<(String, String)> {
        let valid = || {
            records
                .iter()
                .filter_map(|record| Some((record, record.stored()?)))
        };
        match self.format {
            ListFormat::Table | ListFormat::Wide => {
                if records.is_empty() {
                    return Ok((String::new(), String::new()));
                }
                let table = view::incidents_table(records, now, self.columns);
                let text = table.render(widths, self.headers);
                let problems = match self.format {
                    ListFormat::Table => view::invalid_manifests(records),
                    _ => String::new(),
                };
                // Without headers the output is for scripts: the problems go to stderr.
                Ok(if self.headers {
                    (text + &problems, String::new())
                } else {
                    (text, problems)
                })
            }
            ListFormat::Name => Ok((
                valid()
                    .map(|(record, _)| format!("incident.opslab.dev/{}\n", record.name))
                    .collect(),
                String::new(),
            )),
            ListFormat::Json | ListFormat::Yaml => {
                let format = match self.format {
                    ListFormat::Json => OutputFormat::Json,
                    _ => OutputFormat::Yaml,
                };
                if self.single || !self.list_documents {
                    let mut text = String::new();
                    for (_, stored) in valid() {
                        if format == OutputFormat::Yaml && !self.single {
                            text.push_str("---\n");
                        }
                        text.push_str(&render(&stored.incident, format)?);
                    }
                    return Ok((text, String::new()));
                }
                let errors: Vec<serde_json::Value> = records
                    .iter()
                    .filter_map(|record| {
                        let error = record.problem()?;
                        Some(serde_json::json!({"manifest": record.name, "error": error}))
                    })
                    .collect();
                let items: Vec<&serde_json::Value> =
                    valid().map(|(_, stored)| &stored.incident).collect();
                let list = serde_json::json!({
                    "apiVersion": "v1", "kind": "List", "items": items, "errors": errors,
                });
                Ok((render(&list, format)?, String::new()))
            }
        }
    }
}

/// `opslab describe incident`.
pub async fn describe_incident(args: DescribeIncidentArgs) -> anyhow::Result<String> {
    let (store, location) = open_existing(&args.store).await?;
    let key = incident_key(&args.name, args.namespace.as_deref());
    let record = store
        .incident(&key.namespace, &key.name)
        .await?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no Incident {key} in the store at {location} (`opslab get incidents -A` lists the Incidents it knows)"
            )
        })?;
    let sessions = match record.stored() {
        None => Vec::new(),
        Some(stored) => store.sessions_for_incident(&stored.uid).await?,
    };
    let events = match sessions.first() {
        Some(newest) => store.events(&newest.id).await?,
        None => Vec::new(),
    };
    Ok(view::describe_incident(&IncidentDescription {
        record: &record,
        sessions: &sessions,
        events: &events,
        commands: args.commands,
        now: jiff::Timestamp::now(),
        clock: &Clock::local(),
    }))
}

/// `opslab sessions`.
pub async fn list_sessions(args: SessionsArgs) -> anyhow::Result<String> {
    let (store, location) = open_existing(&args.store).await?;
    let mut sessions = store.sessions().await?;
    if let Some(target) = &args.incident {
        let key = incident_key(target, None);
        sessions.retain(|session| {
            session.incident_namespace == key.namespace && session.incident_name == key.name
        });
        if sessions.is_empty() && store.incident(&key.namespace, &key.name).await?.is_none() {
            anyhow::bail!("no Incident {key} and no session of it in the store at {location}");
        }
    }
    if let Some(limit) = args.limit {
        sessions.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    }
    match args.output {
        ListFormat::Table | ListFormat::Wide => {
            if sessions.is_empty() {
                eprintln!("No sessions found.");
                return Ok(String::new());
            }
            let wide = args.output == ListFormat::Wide;
            let table =
                view::sessions_table(&sessions, jiff::Timestamp::now(), wide, &Clock::local());
            Ok(table.render(&mut Widths::default(), !args.no_headers))
        }
        ListFormat::Name => Ok(sessions
            .iter()
            .map(|session| format!("{}\n", session.id))
            .collect()),
        ListFormat::Json => render(&sessions, OutputFormat::Json),
        ListFormat::Yaml => render(&sessions, OutputFormat::Yaml),
    }
}

/// `opslab show SESSION|INCIDENT`.
pub async fn show(args: ShowArgs) -> anyhow::Result<String> {
    let (store, location) = open_existing(&args.store).await?;
    let key = incident_key(&args.target, args.namespace.as_deref());
    let session = match store.session(&args.target).await? {
        Some(session) => session,
        None => newest_session(&store, &key).await?.ok_or_else(|| {
            anyhow::anyhow!(
                "no session {:?} and no Incident {key} with a session in the store at {location}",
                args.target
            )
        })?,
    };
    let events = store.events(&session.id).await?;
    match args.output {
        OutputFormat::Table => Ok(view::session_story(
            &session,
            &events,
            args.raw,
            &session_clock(&session),
        )),
        OutputFormat::Json | OutputFormat::Yaml => render(
            &serde_json::json!({"session": session, "events": events}),
            args.output,
        ),
    }
}

/// `opslab follow`: prints each event as the store gets it, and returns when the session ends.
/// What it waits for goes to `notes`.
pub async fn follow(
    args: FollowArgs,
    out: &mut (impl std::io::Write + Send),
    notes: &mut (impl std::io::Write + Send),
) -> anyhow::Result<()> {
    let (store, location) = open_existing(&args.store).await?;
    let poll = StorePoll::new(args.timeout);
    let session = match store.session(&args.target).await? {
        Some(session) => session,
        None => {
            let key = incident_key(&args.target, args.namespace.as_deref());
            first_session(&store, &location, &args.target, &key, &poll, notes).await?
        }
    };
    write!(
        out,
        "{}",
        view::session_header(&session, &session_clock(&session))
    )?;
    out.flush()?;
    let clock = session_clock(&session);
    let mut feed = SessionFeed::new(store, session.id.clone(), 0);
    // The draft printed last: a grown draft prints only what is new.
    let mut shown: Option<Draft> = None;
    loop {
        let waiting = || format!("session {} has not ended", session.id);
        let Some(update) = poll.within(feed.next(), waiting).await?? else {
            return Ok(());
        };
        for event in &update.events {
            write!(out, "\n{}", view::event_text(event, args.raw, &clock))?;
        }
        match update.draft {
            DraftChange::Same => {}
            DraftChange::Now(draft) => {
                write!(out, "{}", view::draft_text(shown.as_ref(), &draft))?;
                shown = Some(draft);
            }
            DraftChange::Gone => shown = None,
        }
        out.flush()?;
    }
}

/// The Incident's newest session, or the first to start. Fails at once (after a moment's grace for
/// a manifest just filed) when the store knows no such Incident, and when one will never start.
async fn first_session(
    store: &Store,
    location: &StoreLocation,
    target: &str,
    key: &ObjectKey,
    poll: &StorePoll,
    notes: &mut (impl std::io::Write + Send),
) -> anyhow::Result<SessionRecord> {
    let grace_ends = Instant::now() + UNKNOWN_INCIDENT_GRACE;
    let mut announced = false;
    loop {
        if let Some(session) = newest_session(store, key).await? {
            return Ok(session);
        }
        match store.incident(&key.namespace, &key.name).await? {
            Some(record) => {
                if let Some(why) = no_session_coming(&record) {
                    anyhow::bail!(
                        "Incident {key} {why}; no session will start until its spec changes"
                    );
                }
                if !announced {
                    writeln!(notes, "waiting for the first session of {key}…")?;
                    notes.flush()?;
                    announced = true;
                }
            }
            None if Instant::now() >= grace_ends => anyhow::bail!(
                "no session {target:?} and no Incident {key} in the store at {location} \
                 (`opslab get incidents -A` lists the Incidents it knows)"
            ),
            None => {}
        }
        poll.wait(|| format!("no session of {key} has started"))
            .await?;
    }
}

/// Why a known Incident without a session will not get one as it is, if it will not.
fn no_session_coming(record: &IncidentRecord) -> Option<String> {
    let incident = record.stored()?.decode().ok()?;
    let status = incident.status?;
    if !status.phase.is_terminal() {
        return None;
    }
    let because = view::explanation(&status)
        .map(|explained| format!(" ({}): {}", explained.reason, explained.message))
        .unwrap_or_default();
    Some(format!("is {}{because}", status.phase))
}

/// The Incident's newest session, by namespace and name.
async fn newest_session(store: &Store, key: &ObjectKey) -> anyhow::Result<Option<SessionRecord>> {
    Ok(store.sessions().await?.into_iter().find(|session| {
        session.incident_namespace == key.namespace && session.incident_name == key.name
    }))
}

/// NAME (in `namespace`, else `default`) or NAMESPACE/NAME.
fn incident_key(target: &str, namespace: Option<&str>) -> ObjectKey {
    match target.split_once('/') {
        Some((namespace, name)) => ObjectKey::new(namespace, name),
        None => ObjectKey::new(namespace.unwrap_or(DEFAULT_NAMESPACE), target),
    }
}

/// The local clock, its short times on the day the session started.
fn session_clock(session: &SessionRecord) -> Clock {
    Clock::local().on_day_of(session.started_at)
}

/// How long the CLI waits for the store to change: until an optional timeout. (What changed comes
/// from the store's change feed, [`opslab::audit::feed`].)
struct StorePoll {
    started: Instant,
    timeout: Option<Duration>,
}

impl StorePoll {
    fn new(timeout: Option<Duration>) -> StorePoll {
        StorePoll {
            started: Instant::now(),
            timeout,
        }
    }

    /// Awaits `work` until the timeout, if there is one; then an error saying `what` is still
    /// awaited.
    async fn within<T>(
        &self,
        work: impl Future<Output = T>,
        what: impl FnOnce() -> String,
    ) -> anyhow::Result<T> {
        let Some(timeout) = self.timeout else {
            return Ok(work.await);
        };
        match tokio::time::timeout_at((self.started + timeout).into(), work).await {
            Ok(done) => Ok(done),
            Err(_) => {
                let timeout = jiff::SignedDuration::try_from(timeout).unwrap_or_default();
                anyhow::bail!("gave up after {timeout:#} (--timeout): {}", what())
            }
        }
    }

    /// Sleeps until it is time to read again; an error saying `what` is still awaited once the
    /// timeout has passed.
    async fn wait(&self, what: impl FnOnce() -> String) -> anyhow::Result<()> {
        self.within(tokio::time::sleep(opslab::audit::feed::POLL), what)
            .await
    }
}

/// How long `follow` looks for an Incident the store does not know before it fails: a manifest
/// filed a moment before takes the controller a few milliseconds to read.
const UNKNOWN_INCIDENT_GRACE: Duration = Duration::from_millis(300);

/// `opslab audit verify`: the report, or an error carrying it when a chain is broken.
pub async fn audit_verify(session: Option<String>, store: StoreArgs) -> anyhow::Result<String> {
    let (store, _) = open_existing(&store).await?;
    let every_trail = session.is_none();
    let sessions = match session {
        Some(id) => vec![
            store
                .session(&id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no session {id:?} in the store"))?,
        ],
        None => store.sessions().await?,
    };
    let mut checks = Vec::new();
    for session in &sessions {
        checks.push((
            session.id.clone(),
            "event",
            store.verify(&session.id).await?,
        ));
    }
    if every_trail {
        // The alert intake's decisions, when there are any: a chain of their own.
        let intake = store.verify_intake().await?;
        if intake != (ChainCheck::Intact { events: 0 }) {
            checks.push(("intake decisions".into(), "decision", intake));
        }
    }
    let mut report = String::new();
    let mut broken = 0;
    for (trail, unit, check) in &checks {
        match check {
            ChainCheck::Intact { events } => {
                report.push_str(&format!("ok      {trail} ({events} {unit}s)\n"));
            }
            ChainCheck::Broken(link) => {
                broken += 1;
                report.push_str(&format!(
                    "BROKEN  {trail}: first broken link at {unit} {}: {}\n",
                    link.seq, link.reason
                ));
            }
        }
    }
    if broken > 0 {
        anyhow::bail!(
            "{broken} of {} audit trails are broken:\n{report}",
            checks.len()
        );
    }
    Ok(report)
}

/// `opslab console`: the web console on a store, until SIGINT or SIGTERM. Refuses a non-loopback
/// address without a token or `--console-insecure`, before listening.
pub async fn console(args: ConsoleArgs) -> anyhow::Result<()> {
    args.access.check()?;
    let access = Access::decide(args.listen, &args.access);
    if let Access::Off(why) = &access {
        anyhow::bail!("{why}");
    }
    let (store, location) = open_existing(&args.store).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {}: {error}", args.listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    // Said on stdout, for people and for scripts that pass port 0.
    println!(
        "serving the console for {location} at http://{}/ui/",
        listener.local_addr()?
    );
    use std::io::Write;
    std::io::stdout().flush()?;
    let console = opslab::console::Console { store, shutdown };
    opslab::console::serve(listener, console, access).await?;
    Ok(())
}

/// The store the CLI reads, and where it is (for error messages); an error if an SQLite file is
/// missing, rather than creating an empty store.
pub(crate) async fn open_existing(args: &StoreArgs) -> anyhow::Result<(Store, StoreLocation)> {
    let location = args.location()?;
    if let StoreLocation::Sqlite(path) = &location
        && !path.exists()
    {
        anyhow::bail!(
            "no audit store at {} (set --store or OPSLAB_STORE to the controller's store)",
            path.display()
        );
    }
    Ok((
        Store::open(location.clone(), Redactor::default()).await?,
        location,
    ))
}

fn render<T: serde::Serialize>(value: &T, format: OutputFormat) -> anyhow::Result<String> {
    match format {
        OutputFormat::Json => Ok(serde_json::to_string_pretty(value)? + "\n"),
        OutputFormat::Yaml | OutputFormat::Table => Ok(serde_saphyr::to_string(value)?),
    }
}

/// `opslab scenario run`: the report in the chosen format, and whether every case passed.
pub async fn scenario_run(args: ScenarioRunArgs) -> anyhow::Result<(String, bool)> {
    use opslab_scenario::run::{Driver, RunOptions, choose_driver};
    let requested = match args.driver {
        DriverArg::Auto => None,
        DriverArg::Replay => Some(Driver::Replay),
        DriverArg::Model => Some(Driver::Model),
    };
    let driver = choose_driver(requested, |name| std::env::var(name).ok())?;
    if args.replay_wrong.is_some() && driver != Driver::Replay {
        anyhow::bail!(
            "--replay-wrong plays the cases' wrong sessions: use it with --driver replay"
        );
    }
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
        etcd_compose_file: args.etcd_compose_file,
        compose_command,
        out_dir,
        controller_bin: std::env::current_exe()?,
        driver,
        sandbox_image: args.sandbox_image,
        parallel: args.parallel,
        session_timeout: Duration::from_secs(args.session_timeout_seconds),
        oracle_timeout: Duration::from_secs(args.oracle_timeout_seconds),
        prefix: run,
        durable_wait: Duration::from_secs(args.durable_wait_seconds),
        wrong: args.replay_wrong,
        model: None,
        judge_model: args.judge_model,
    };
    let progress = opslab_scenario::progress::to_stderr();
    if args.repeat > 1 || !args.model.is_empty() {
        if !args.model.is_empty() && options.driver != Driver::Model {
            anyhow::bail!(
                "--model chooses the models a real provider serves: use it with --driver model (or auto with a key set)"
            );
        }
        let models: Vec<Option<String>> = if args.model.is_empty() {
            vec![None]
        } else {
            args.model.into_iter().map(Some).collect()
        };
        let matrix = opslab_scenario::run::run_matrix(
            options,
            models,
            usize::from(args.repeat),
            progress.as_ref(),
        )
        .await?;
        let passed = matrix.all_passed();
        let output = match args.output {
            OutputFormat::Table => matrix.markdown(),
            OutputFormat::Json | OutputFormat::Yaml => render(&matrix, args.output)?,
        };
        return Ok((output, passed));
    }
    let report = opslab_scenario::run::run(options, progress.as_ref()).await?;
    let passed = report.all_passed();
    let output = match args.output {
        OutputFormat::Table => report.table(),
        OutputFormat::Json | OutputFormat::Yaml => render(&report, args.output)?,
    };
    Ok((output, passed))
}

/// `opslab scenario list`.
pub fn scenario_list(dir: &std::path::Path) -> anyhow::Result<String> {
    let cases = opslab_scenario::load_all(dir)?;
    let mut out = String::new();
    for case in cases {
        out.push_str(&format!("{}\t{}\n", case.name, case.spec.summary));
    }
    Ok(out)
}
