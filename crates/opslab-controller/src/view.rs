//! What the CLI prints for people: kubectl-like tables and the whole story of a session. Pure: data
//! in, text out.

use crate::audit::{
    Draft, Event, EventBody, IncidentContent, IncidentRecord, SessionRecord, StoredIncident,
};
use crate::incident::{
    Condition, ConditionStatus, ConditionType, Incident, IncidentSpec, IncidentStatus, Phase,
    Report,
};
use crate::presentation::{Block, Medium, cached_tokens, enum_text, plain, present};

/// Output formats of `show` and `scenario run`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
    Yaml,
}

/// Output formats of the listings (`get incidents`, `sessions`), as kubectl's `-o`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    #[default]
    Table,
    /// The table with more columns.
    Wide,
    /// Names only, one a line.
    Name,
    Json,
    Yaml,
}

/// Rows of cells, aligned in columns three spaces apart. The widths are kept outside the table so
/// that the rows a watch prints later line up under the first listing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

/// Column widths carried from one rendering of a table to the next.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Widths(Vec<usize>);

const COLUMN_GAP: usize = 3;

impl Table {
    pub fn new(header: Vec<&'static str>) -> Table {
        Table {
            header,
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// The rows (the header first when `header`), each cell one printable line. `widths` grow to
    /// fit and are kept for the next call.
    pub fn render(&self, widths: &mut Widths, header: bool) -> String {
        let header_row: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        let rows: Vec<Vec<String>> = header
            .then_some(&header_row)
            .into_iter()
            .chain(&self.rows)
            .map(|row| row.iter().map(|cell| one_line(cell)).collect())
            .collect();
        // The header counts even when left out, so that later rows line up with a first listing.
        for row in std::iter::once(&header_row).chain(&rows) {
            if widths.0.len() < row.len() {
                widths.0.resize(row.len(), 0);
            }
            for (width, cell) in widths.0.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &rows {
            let mut line = String::new();
            for (index, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if index + 1 < row.len() {
                    let pad = widths.0[index] + COLUMN_GAP - cell.chars().count();
                    line.push_str(&" ".repeat(pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A cell's text on one line, safe for a terminal.
fn one_line(text: &str) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let cell = printable(&joined);
    if cell.is_empty() { "-".into() } else { cell }
}

/// How times are shown: in one zone (the system's: TZ, else /etc/localtime, else UTC), with date and
/// zone in full, and in short as the time alone on the day a story started, else with its date.
#[derive(Clone, Debug)]
pub struct Clock {
    zone: jiff::tz::TimeZone,
    day: Option<jiff::civil::Date>,
}

impl Clock {
    pub fn new(zone: jiff::tz::TimeZone) -> Clock {
        Clock { zone, day: None }
    }

    /// The system's time zone.
    pub fn local() -> Clock {
        Clock::new(jiff::tz::TimeZone::system())
    }

    /// Short times drop the date on the day of `at`.
    pub fn on_day_of(mut self, at: jiff::Timestamp) -> Clock {
        self.day = Some(at.to_zoned(self.zone.clone()).date());
        self
    }

    /// `2026-12-02 03:58:26 UTC`.
    pub fn full(&self, at: jiff::Timestamp) -> String {
        at.to_zoned(self.zone.clone())
            .strftime("%Y-%m-%d %H:%M:%S %Z")
            .to_string()
    }

    /// `03:58:26` on the clock's day, `2026-12-03 00:00:04` on another.
    pub fn short(&self, at: jiff::Timestamp) -> String {
        let zoned = at.to_zoned(self.zone.clone());
        if Some(zoned.date()) == self.day {
            zoned.strftime("%H:%M:%S").to_string()
        } else {
            zoned.strftime("%Y-%m-%d %H:%M:%S").to_string()
        }
    }

    /// A time kept as RFC 3339 text (a condition's), in full; as it is if it does not parse.
    pub fn full_text(&self, at: &str) -> String {
        at.parse()
            .map_or_else(|_| at.to_string(), |at| self.full(at))
    }
}

/// Which columns `get incidents` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IncidentColumns {
    /// NAMESPACE first (all namespaces).
    pub namespace: bool,
    /// SESSION and MESSAGE last, and the reason even where it says little (`-o wide`).
    pub wide: bool,
}

/// The reason shown for an invalid manifest.
pub const INVALID_MANIFEST: &str = "InvalidManifest";

/// `opslab get incidents`: [NAMESPACE] NAME PHASE SEVERITY COMMANDS REASON AGE [SESSION MESSAGE].
pub fn incidents_table(
    records: &[IncidentRecord],
    now: jiff::Timestamp,
    columns: IncidentColumns,
) -> Table {
    let mut header = vec!["NAME", "PHASE", "SEVERITY", "COMMANDS", "REASON", "AGE"];
    if columns.namespace {
        header.insert(0, "NAMESPACE");
    }
    if columns.wide {
        header.extend(["SESSION", "MESSAGE"]);
    }
    let mut table = Table::new(header);
    for record in records {
        let mut row = incident_row(record, now, columns.wide);
        if !columns.wide {
            row.truncate(6);
        }
        if columns.namespace {
            row.insert(0, display_namespace(&record.namespace));
        }
        table.push(row);
    }
    table
}

/// A manifest problem has no namespace.
fn display_namespace(namespace: &str) -> String {
    if namespace.is_empty() {
        "-".into()
    } else {
        namespace.into()
    }
}

/// NAME PHASE SEVERITY COMMANDS REASON AGE SESSION MESSAGE.
fn incident_row(record: &IncidentRecord, now: jiff::Timestamp, wide: bool) -> Vec<String> {
    let stored = match &record.content {
        IncidentContent::Incident(stored) => stored,
        IncidentContent::Problem { error } => {
            let row = [
                record.name.as_str(),
                "Invalid",
                "-",
                "-",
                INVALID_MANIFEST,
                "-",
                "-",
                error.as_str(),
            ];
            return row.iter().map(|cell| cell.to_string()).collect();
        }
    };
    let incident: Option<Incident> = stored.decode().ok();
    let status = incident
        .as_ref()
        .and_then(|incident| incident.status.as_ref());
    let phase = status.map(|status| status.phase).unwrap_or_default();
    let explained = status.and_then(explanation);
    let reason = explained
        .as_ref()
        .filter(|explained| wide || reason_says_something(phase, explained.reason))
        .map(|explained| explained.reason.to_string());
    let dash = || "-".to_string();
    vec![
        record.name.clone(),
        phase.to_string(),
        incident
            .as_ref()
            .map(|incident| incident.spec.severity.to_string())
            .unwrap_or_else(dash),
        status
            .map(|status| status.commands.to_string())
            .unwrap_or_else(|| "0".into()),
        reason.unwrap_or_else(dash),
        incident
            .as_ref()
            .and_then(|incident| incident.metadata.creation_timestamp.as_ref())
            .map(|created| age(created.0, now))
            .unwrap_or_else(dash),
        status
            .and_then(|status| status.session_id.clone())
            .unwrap_or_else(dash),
        explained
            .map(|explained| explained.message.to_string())
            .unwrap_or_default(),
    ]
}

/// Invalid manifests and what is wrong with each, for under the table.
pub fn invalid_manifests(records: &[IncidentRecord]) -> String {
    let problems: Vec<String> = records
        .iter()
        .filter_map(|record| {
            let error = record.problem()?;
            Some(format!(
                "  {}\n",
                printable(&format!("{}: {error}", record.name))
            ))
        })
        .collect();
    if problems.is_empty() {
        return String::new();
    }
    format!("\nInvalid manifests:\n{}", problems.concat())
}

/// Why an Incident is where it is, from its conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation<'a> {
    pub reason: &'a str,
    pub message: &'a str,
}

/// The condition that explains the phase: `Valid` when the spec is not, `Resolved` once resolved,
/// else `SessionActive`; its message, or the other one's when it has none.
pub fn explanation(status: &IncidentStatus) -> Option<Explanation<'_>> {
    let find = |type_| status.condition(type_);
    let invalid = find(ConditionType::Valid).filter(|valid| valid.status == ConditionStatus::False);
    let (first, second) = match status.phase {
        Phase::Resolved => (
            find(ConditionType::Resolved),
            find(ConditionType::SessionActive),
        ),
        _ => (
            find(ConditionType::SessionActive),
            find(ConditionType::Resolved),
        ),
    };
    let chosen = invalid.or(first).or(second)?;
    let message = [Some(chosen), first, second]
        .into_iter()
        .flatten()
        .map(|condition| condition.message.as_str())
        .find(|message| !message.trim().is_empty())
        .unwrap_or_default();
    Some(Explanation {
        reason: &chosen.reason,
        message,
    })
}

/// Whether the reason adds to the phase: not `Investigating` while investigating, nor `Reported`
/// for a resolved Incident, but `ModelApiFailed`, `TokenBudgetExhausted`, `Reported` (unresolved by
/// the agent's word)...
pub fn reason_says_something(phase: Phase, reason: &str) -> bool {
    reason != phase.to_string() && !(phase == Phase::Resolved && reason == "Reported")
}

/// `opslab sessions`: SESSION INCIDENT ATTEMPT PHASE REASON OUTCOME TURNS COMMANDS TOKENS AGE, and in
/// wide COST STARTED MESSAGE.
pub fn sessions_table(
    sessions: &[SessionRecord],
    now: jiff::Timestamp,
    wide: bool,
    clock: &Clock,
) -> Table {
    let mut header = vec![
        "SESSION", "INCIDENT", "ATTEMPT", "PHASE", "REASON", "OUTCOME", "TURNS", "COMMANDS",
        "TOKENS", "AGE",
    ];
    if wide {
        header.extend(["COST", "STARTED", "MESSAGE"]);
    }
    let mut table = Table::new(header);
    for session in sessions {
        let mut row = vec![
            session.id.clone(),
            format!("{}/{}", session.incident_namespace, session.incident_name),
            session.attempt.to_string(),
            session.current_phase().to_string(),
            session.reason.clone().unwrap_or_else(|| "-".into()),
            session
                .outcome
                .map(|outcome| enum_text(&outcome))
                .unwrap_or_else(|| "-".into()),
            session.turns.to_string(),
            session.commands.to_string(),
            (session.input_tokens
                + session.cache_write_tokens
                + session.cache_read_tokens
                + session.output_tokens)
                .to_string(),
            age(session.started_at, now),
        ];
        if wide {
            row.extend([
                format!("${:.4}", session.cost_usd),
                clock.full(session.started_at),
                session.message.clone().unwrap_or_default(),
            ]);
        }
        table.push(row);
    }
    table
}

/// `opslab show`: the whole conversation, in order: reasoning, commands, exit codes, durations,
/// outputs and summaries. Without `raw`, long outputs show their first and last lines.
pub fn session_story(
    session: &SessionRecord,
    events: &[Event],
    raw: bool,
    clock: &Clock,
) -> String {
    let mut out = session_header(session, clock);
    for event in events {
        out.push('\n');
        out.push_str(&event_text(event, raw, clock));
    }
    out
}

/// Who, what and how much, for the top of `show` and `follow`. Times in full (date and zone): the
/// events below show the time alone on the day the session started.
pub fn session_header(session: &SessionRecord, clock: &Clock) -> String {
    format!(
        "Session {}\nIncident {}/{} (attempt {})\nPhase {}{}{}\nStarted {}{}\nTurns {}, commands {}, tokens {} in{} / {} out, estimated cost ${:.4}\n",
        session.id,
        session.incident_namespace,
        session.incident_name,
        session.attempt,
        session.current_phase(),
        session
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default(),
        session
            .message
            .as_deref()
            .filter(|message| !message.trim().is_empty())
            .map(|message| format!(": {}", one_line(message)))
            .unwrap_or_default(),
        clock.full(session.started_at),
        session
            .finished_at
            .map(|finished| format!(", finished {}", clock.full(finished)))
            .unwrap_or_default(),
        session.turns,
        session.commands,
        session.input_tokens,
        cached_tokens(session.cache_write_tokens, session.cache_read_tokens),
        session.output_tokens,
        session.cost_usd,
    )
}

/// What `follow` prints of a draft (an answer being streamed): what was written since `before`,
/// the draft it printed last, under a heading when a turn's draft first shows (or starts over).
pub fn draft_text(before: Option<&Draft>, draft: &Draft) -> String {
    let grown = before
        .filter(|before| before.turn == draft.turn && draft.text.starts_with(&before.text))
        .map(|before| &draft.text[before.text.len()..]);
    let (mut out, new) = match grown {
        Some(new) => (String::new(), new),
        None => (
            format!("~ model turn {}, as it is written:\n", draft.turn),
            draft.text.as_str(),
        ),
    };
    for line in new.lines().filter(|line| !line.trim().is_empty()) {
        out.push_str(&format!("    ~ {}\n", printable(line.trim())));
    }
    out
}

/// Lines of output `show` prints from each end of a long output, unless `--raw`.
const OUTPUT_LINES_KEPT: usize = 10;

/// One event, for people: its [`Presented`] headline after its number and time, then its parts
/// for the terminal, indented.
pub fn event_text(event: &Event, raw: bool, clock: &Clock) -> String {
    let presented = present(&event.body);
    let mut out = format!(
        "#{} {} {}\n",
        event.seq,
        clock.short(event.at),
        printable(&presented.headline)
    );
    for part in &presented.parts {
        if part.shown_in(Medium::Terminal) {
            out.push_str(&block_text(&part.block, raw));
        }
    }
    out
}

/// A part of an event, as lines under its headline.
fn block_text(block: &Block<'_>, raw: bool) -> String {
    match block {
        Block::Line(spans) | Block::Note(spans) => indent(&plain(spans)),
        Block::Writing(text) => indent(text),
        Block::Command(command) => indent(&format!("$ {command}")),
        Block::Output(output) => output_lines(output, raw),
        Block::Report(report) => {
            let mut out = indent(&format!("summary: {}", report.summary));
            if !report.root_cause.is_empty() {
                out.push_str(&indent(&format!("root cause: {}", report.root_cause)));
            }
            for action in &report.actions {
                out.push_str(&indent(&format!("action: {action}")));
            }
            if !report.verification.is_empty() {
                out.push_str(&indent(&format!("verification: {}", report.verification)));
            }
            out
        }
    }
}

/// One command of a session, as `describe` lists the last ones.
#[derive(Clone, Debug, PartialEq)]
pub struct CommandRun {
    pub at: jiff::Timestamp,
    pub command: String,
    pub result: CommandResult,
}

#[derive(Clone, Debug, PartialEq)]
pub enum CommandResult {
    Running,
    Exited {
        code: Option<i64>,
        duration_ms: u64,
        timed_out: bool,
    },
    Interrupted(String),
}

/// The session's last `count` commands, oldest first, each with how it ended.
pub fn last_commands(events: &[Event], count: usize) -> Vec<CommandRun> {
    let mut runs: Vec<(String, CommandRun)> = Vec::new();
    for event in events {
        match &event.body {
            EventBody::CommandStarted {
                tool_use_id,
                command,
                ..
            } => runs.push((
                tool_use_id.clone(),
                CommandRun {
                    at: event.at,
                    command: command.clone(),
                    result: CommandResult::Running,
                },
            )),
            EventBody::CommandFinished {
                tool_use_id,
                exit_code,
                duration_ms,
                timed_out,
                ..
            } => {
                if let Some((_, run)) = runs.iter_mut().rev().find(|(id, _)| id == tool_use_id) {
                    run.result = CommandResult::Exited {
                        code: *exit_code,
                        duration_ms: *duration_ms,
                        timed_out: *timed_out,
                    };
                }
            }
            EventBody::CommandInterrupted {
                tool_use_id,
                reason,
            } => {
                if let Some((_, run)) = runs.iter_mut().rev().find(|(id, _)| id == tool_use_id) {
                    run.result = CommandResult::Interrupted(reason.clone());
                }
            }
            _ => {}
        }
    }
    let skip = runs.len().saturating_sub(count);
    runs.into_iter().skip(skip).map(|(_, run)| run).collect()
}

/// What `describe incident` shows, gathered from the store.
pub struct IncidentDescription<'a> {
    pub record: &'a IncidentRecord,
    /// Its sessions, newest first.
    pub sessions: &'a [SessionRecord],
    /// The newest session's events.
    pub events: &'a [Event],
    /// How many of the last commands to show.
    pub commands: usize,
    pub now: jiff::Timestamp,
    pub clock: &'a Clock,
}

/// Width of the labels of `describe`'s first level, as kubectl's.
const LABEL_WIDTH: usize = 16;

/// `opslab describe incident`: metadata, spec, status, conditions, the last commands, the report
/// and the sessions, in kubectl's layout.
pub fn describe_incident(description: &IncidentDescription<'_>) -> String {
    let IncidentDescription {
        record,
        sessions,
        events,
        commands,
        now,
        clock,
    } = description;
    let mut out = Described::default();
    out.field(0, "Name", &record.name);
    out.field(0, "Namespace", &display_namespace(&record.namespace));
    let stored = match &record.content {
        IncidentContent::Incident(stored) => stored,
        IncidentContent::Problem { error } => {
            out.field(0, "Phase", "Invalid");
            out.field(0, "Reason", INVALID_MANIFEST);
            out.field(0, "Message", error);
            return out.text;
        }
    };
    let incident: Incident = match stored.decode() {
        Ok(incident) => incident,
        Err(error) => {
            let error = format!("the stored Incident does not decode: {error}");
            out.field(0, "Error", &error);
            return out.text;
        }
    };
    out.metadata(&incident, stored, &record.source, clock, *now);
    out.spec(&incident.spec);
    let status = incident.status.clone().unwrap_or_default();
    out.status(&status, events, clock);
    out.conditions(&status.conditions, clock);
    out.last_commands(sessions.first(), &last_commands(events, *commands), clock);
    out.report(status.report.as_ref());
    out.sessions(sessions, clock);
    let events = format!(
        "not in the store; in kube mode, `kubectl describe incident {} -n {}` shows them",
        record.name, record.namespace
    );
    out.field(0, "Events", &events);
    out.text
}

/// An Incident's labels, `key=value, …`.
pub fn labels_text(incident: &Incident) -> String {
    let labels: Vec<String> = incident
        .metadata
        .labels
        .iter()
        .flatten()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    labels.join(", ")
}

/// The spec's agent overrides, `maxTurns=20, model=…`.
pub fn agent_text(spec: &IncidentSpec) -> String {
    let agent = serde_json::to_value(&spec.agent).unwrap_or_default();
    let overrides: Vec<String> = agent
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| match value.as_str() {
            Some(text) => format!("{key}={text}"),
            None => format!("{key}={value}"),
        })
        .collect();
    overrides.join(", ")
}

/// The text of `describe incident`, written a field or a section at a time.
#[derive(Default)]
struct Described {
    text: String,
}

impl Described {
    /// `Label:` and its value on one line, the values of a level aligned as kubectl's.
    fn field(&mut self, depth: usize, label: &str, value: &str) {
        let label = format!("{}{label}:", "  ".repeat(depth));
        let value = one_line(value);
        self.text.push_str(&format!(
            "{label:<width$}{value}\n",
            width = LABEL_WIDTH.max(label.len() + 1)
        ));
    }

    /// A section's title, alone on its line.
    fn heading(&mut self, title: &str) {
        self.text.push_str(&format!("{title}:\n"));
    }

    fn metadata(
        &mut self,
        incident: &Incident,
        stored: &StoredIncident,
        source: &str,
        clock: &Clock,
        now: jiff::Timestamp,
    ) {
        self.field(0, "Labels", &none_if_empty(&labels_text(incident)));
        if let Some(created) = &incident.metadata.creation_timestamp {
            let created = format!("{} ({} ago)", clock.full(created.0), age(created.0, now));
            self.field(0, "Created", &created);
        }
        self.field(0, "UID", &stored.uid);
        self.field(0, "Generation", &stored.generation.to_string());
        self.field(0, "Source", source);
    }

    fn spec(&mut self, spec: &IncidentSpec) {
        self.heading("Spec");
        self.field(1, "Title", &spec.title);
        self.field(1, "Severity", &spec.severity.to_string());
        if !spec.description.trim().is_empty() {
            self.text.push_str("  Description:\n");
            self.text.push_str(&indent(&spec.description));
        }
        let environment = &spec.environment;
        self.field(
            1,
            "Networks",
            &none_if_empty(&environment.networks.join(", ")),
        );
        self.field(
            1,
            "Targets",
            &none_if_empty(&environment.targets.join(", ")),
        );
        self.field(1, "Agent", &none_if_empty(&agent_text(spec)));
    }

    /// The status, and how the newest session ended if its events say.
    fn status(&mut self, status: &IncidentStatus, events: &[Event], clock: &Clock) {
        self.heading("Status");
        self.field(1, "Phase", &status.phase.to_string());
        if let Some(explained) = explanation(status) {
            self.field(1, "Reason", explained.reason);
            self.field(1, "Message", &none_if_empty(explained.message));
        }
        self.field(1, "Attempt", &status.attempt.to_string());
        if let Some(session) = &status.session_id {
            self.field(1, "Session", session);
        }
        if let Some(started) = status.started_at {
            self.field(1, "Started", &clock.full(started));
        }
        if let Some(finished) = status.finished_at {
            self.field(1, "Finished", &clock.full(finished));
        }
        let tokens = &status.tokens;
        let cached = cached_tokens(tokens.cache_write, tokens.cache_read);
        let usage = format!(
            "{} turns, {} commands, {} tokens ({} in{cached} / {} out), estimated ${:.4}",
            status.turns,
            status.commands,
            tokens.total(),
            tokens.input,
            tokens.output,
            status.cost_usd
        );
        self.field(1, "Usage", &usage);
        let ending = events.iter().rev().find_map(|event| match &event.body {
            EventBody::SessionFinished {
                phase,
                reason,
                message,
                ..
            } => Some(format!("{phase} ({reason}): {message}")),
            _ => None,
        });
        if let Some(ending) = ending {
            self.field(1, "Session end", &ending);
        }
    }

    fn conditions(&mut self, conditions: &[Condition], clock: &Clock) {
        self.heading("Conditions");
        if conditions.is_empty() {
            self.text.push_str("  <none>\n");
            return;
        }
        let headers = vec!["TYPE", "STATUS", "REASON", "LAST TRANSITION", "MESSAGE"];
        let mut table = Table::new(headers);
        for condition in conditions {
            table.push(vec![
                condition.type_.to_string(),
                condition.status.to_string(),
                condition.reason.clone(),
                clock.full_text(&condition.last_transition_time),
                condition.message.clone(),
            ]);
        }
        self.text.push_str(&indent_table(&table));
    }

    /// The newest session's last commands, their times short on the day it started.
    fn last_commands(
        &mut self,
        newest: Option<&SessionRecord>,
        runs: &[CommandRun],
        clock: &Clock,
    ) {
        let Some(session) = newest.filter(|_| !runs.is_empty()) else {
            self.field(0, "Last commands", "<none>");
            return;
        };
        let clock = clock.clone().on_day_of(session.started_at);
        self.text.push_str(&format!(
            "Last commands (session {}, started {}):\n",
            session.id,
            clock.full(session.started_at)
        ));
        let mut table = Table::new(vec!["TIME", "RESULT", "COMMAND"]);
        for run in runs {
            table.push(vec![
                clock.short(run.at),
                command_result(&run.result),
                run.command.clone(),
            ]);
        }
        self.text.push_str(&indent_table(&table));
    }

    fn report(&mut self, report: Option<&Report>) {
        let Some(report) = report else {
            self.field(0, "Report", "<none>");
            return;
        };
        self.heading("Report");
        self.field(1, "Outcome", &enum_text(&report.outcome));
        self.field(1, "Summary", &report.summary);
        self.field(1, "Root cause", &none_if_empty(&report.root_cause));
        if report.actions.is_empty() {
            self.field(1, "Actions", "<none>");
        } else {
            self.text.push_str("  Actions:\n");
            for action in &report.actions {
                self.text.push_str(&format!("    - {}\n", one_line(action)));
            }
        }
        self.field(1, "Verification", &none_if_empty(&report.verification));
    }

    fn sessions(&mut self, sessions: &[SessionRecord], clock: &Clock) {
        if sessions.is_empty() {
            self.field(0, "Sessions", "<none>");
            return;
        }
        self.heading("Sessions");
        let mut table = Table::new(vec![
            "SESSION", "ATTEMPT", "PHASE", "REASON", "COMMANDS", "STARTED", "FINISHED",
        ]);
        for session in sessions {
            table.push(vec![
                session.id.clone(),
                session.attempt.to_string(),
                session.current_phase().to_string(),
                session.reason.clone().unwrap_or_else(|| "-".into()),
                session.commands.to_string(),
                clock.full(session.started_at),
                session
                    .finished_at
                    .map(|finished| clock.full(finished))
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
        self.text.push_str(&indent_table(&table));
    }
}

fn none_if_empty(text: &str) -> String {
    if text.trim().is_empty() {
        "<none>".into()
    } else {
        text.to_string()
    }
}

fn indent_table(table: &Table) -> String {
    table
        .render(&mut Widths::default(), true)
        .lines()
        .map(|line| format!("  {line}\n"))
        .collect()
}

fn command_result(result: &CommandResult) -> String {
    match result {
        CommandResult::Running => "running".into(),
        CommandResult::Exited {
            timed_out: true,
            duration_ms,
            ..
        } => format!("timed out after {:.1}s", *duration_ms as f64 / 1000.0),
        CommandResult::Exited {
            code, duration_ms, ..
        } => {
            let code = code.map_or_else(|| "not run".to_string(), |code| format!("exit {code}"));
            format!("{code} in {:.1}s", *duration_ms as f64 / 1000.0)
        }
        CommandResult::Interrupted(reason) => format!("interrupted: {reason}"),
    }
}

/// A command's output, each line marked; without `raw`, only the first and last lines of a long one.
fn output_lines(output: &str, raw: bool) -> String {
    let lines: Vec<&str> = output.lines().collect();
    let keep = OUTPUT_LINES_KEPT;
    let shown: Vec<String> = if raw || lines.len() <= 2 * keep {
        lines
            .iter()
            .map(|line| format!("    | {}\n", printable(line)))
            .collect()
    } else {
        let hidden = lines.len() - 2 * keep;
        lines[..keep]
            .iter()
            .map(|line| format!("    | {}\n", printable(line)))
            .chain(std::iter::once(format!(
                "    | ... {hidden} lines hidden (--raw shows all)\n"
            )))
            .chain(
                lines[lines.len() - keep..]
                    .iter()
                    .map(|line| format!("    | {}\n", printable(line))),
            )
            .collect()
    };
    shown.concat()
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("    {}\n", printable(line)))
        .collect()
}

/// Makes text safe for a terminal or a page: control characters (escape sequences among them) and
/// bidirectional overrides (which reorder what a reader sees) are shown, not obeyed.
pub fn printable(text: &str) -> String {
    let hidden = |c: char| (c.is_control() && c != '\t' && c != '\n') || is_bidi_control(c);
    // Most text has nothing to show: copied whole (a long session's page shows megabytes of it).
    if !text.contains(hidden) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if hidden(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// The explicit bidirectional formatting characters (Unicode's Bidi_Control), as used to make code
/// read other than it runs ("Trojan Source").
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// kubectl-style age: 45s, 12m, 5h, 3d.
pub fn age(since: jiff::Timestamp, now: jiff::Timestamp) -> String {
    let seconds = now.as_second().saturating_sub(since.as_second()).max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::SessionState;
    use crate::audit::event::fixtures::{command_finished, command_started, event};

    #[test]
    fn ages_read_like_kubectl() {
        let now: jiff::Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        assert_eq!(age(at("2026-01-01T23:59:15Z"), now), "45s");
        assert_eq!(age(at("2026-01-01T23:30:00Z"), now), "30m");
        assert_eq!(age(at("2026-01-01T19:00:00Z"), now), "5h");
        assert_eq!(age(at("2025-12-29T00:00:00Z"), now), "4d");
    }

    #[test]
    fn docker_api_decisions_are_shown_with_their_reason() {
        let event = Event {
            session_id: "s".into(),
            seq: 7,
            at: at("2026-01-02T03:04:05Z"),
            body: EventBody::DockerApi {
                allowed: false,
                action: "container_stop".into(),
                method: "POST".into(),
                path: "/v1.41/containers/ctl/stop".into(),
                target: Some("container ctl".into()),
                reason: Some("off limits".into()),
            },
            hash: String::new(),
        };
        assert_eq!(
            event_text(&event, false, &utc_clock("2026-01-02T00:00:00Z")),
            "#7 03:04:05 docker api DENIED: POST /v1.41/containers/ctl/stop (container ctl)\n    why: off limits\n"
        );
    }

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    /// UTC, short times on the day of `day`.
    fn utc_clock(day: &str) -> Clock {
        Clock::new(jiff::tz::TimeZone::UTC).on_day_of(at(day))
    }

    fn condition(type_: &str, status: &str, reason: &str, message: &str) -> serde_json::Value {
        serde_json::json!({
            "type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-01-01T23:10:00Z",
        })
    }

    /// A stored Incident, created at 23:00 on 2026-01-01, with the given status.
    fn record(namespace: &str, name: &str, status: serde_json::Value) -> IncidentRecord {
        IncidentRecord {
            namespace: namespace.into(),
            name: name.into(),
            source: "files".into(),
            content: IncidentContent::Incident(crate::audit::StoredIncident {
                uid: format!("uid-{name}"),
                generation: 1,
                spec_hash: String::new(),
                incident: serde_json::json!({
                "apiVersion": "opslab.dev/v1alpha1",
                "kind": "Incident",
                "metadata": {
                    "name": name, "namespace": namespace, "uid": format!("uid-{name}"),
                    "creationTimestamp": "2026-01-01T23:00:00Z",
                    "labels": {"team": "web"},
                },
                "spec": {"title": "api down", "severity": "high"},
                "status": status,
                }),
            }),
            updated_at: at("2026-01-01T23:00:00Z"),
        }
    }

    fn failed() -> serde_json::Value {
        serde_json::json!({
            "phase": "Failed", "attempt": 1, "sessionId": "s-1", "commands": 0,
            "conditions": [
                condition("Valid", "True", "Valid", "the spec is valid"),
                condition("SessionActive", "False", "ModelApiFailed", "HTTP 401 authentication_error: invalid x-api-key"),
                condition("Resolved", "False", "ModelApiFailed", ""),
            ],
        })
    }

    fn resolved() -> serde_json::Value {
        serde_json::json!({
            "phase": "Resolved", "attempt": 1, "sessionId": "s-2", "commands": 4,
            "conditions": [
                condition("Valid", "True", "Valid", "the spec is valid"),
                condition("SessionActive", "False", "Reported", "the session ended: Resolved"),
                condition("Resolved", "True", "Reported", "restarted redis"),
            ],
        })
    }

    fn investigating() -> serde_json::Value {
        serde_json::json!({
            "phase": "Investigating", "attempt": 1, "sessionId": "s-3", "commands": 2,
            "conditions": [
                condition("Valid", "True", "Valid", "the spec is valid"),
                condition("SessionActive", "True", "Investigating", "an agent session is running"),
                condition("Resolved", "Unknown", "Investigating", ""),
            ],
        })
    }

    fn problem() -> IncidentRecord {
        IncidentRecord {
            namespace: String::new(),
            name: "bad.yaml#1".into(),
            source: "files".into(),
            content: IncidentContent::Problem {
                error: "bad.yaml: document 1: missing field `title`".into(),
            },
            updated_at: at("2026-01-01T23:00:00Z"),
        }
    }

    #[test]
    fn the_table_shows_a_reason_only_where_it_says_something() {
        let records = [
            record("default", "broken", failed()),
            record("default", "fixed", resolved()),
            record("ops", "busy", investigating()),
            problem(),
        ];
        let now = at("2026-01-02T01:00:00Z");
        let table = incidents_table(
            &records,
            now,
            IncidentColumns {
                namespace: true,
                wide: false,
            },
        );
        assert_eq!(
            table.render(&mut Widths::default(), true),
            "NAMESPACE   NAME         PHASE           SEVERITY   COMMANDS   REASON            AGE\n\
             default     broken       Failed          high       0          ModelApiFailed    2h\n\
             default     fixed        Resolved        high       4          -                 2h\n\
             ops         busy         Investigating   high       2          -                 2h\n\
             -           bad.yaml#1   Invalid         -          -          InvalidManifest   -\n"
        );
        assert_eq!(
            invalid_manifests(&records),
            "\nInvalid manifests:\n  bad.yaml#1: bad.yaml: document 1: missing field `title`\n"
        );
    }

    #[test]
    fn wide_adds_the_session_and_the_message() {
        let records = [
            record("default", "broken", failed()),
            record("default", "fixed", resolved()),
            problem(),
        ];
        let table = incidents_table(
            &records,
            at("2026-01-02T01:00:00Z"),
            IncidentColumns {
                namespace: false,
                wide: true,
            },
        );
        assert_eq!(
            table.render(&mut Widths::default(), false),
            "broken       Failed     high       0          ModelApiFailed    2h    s-1       HTTP 401 authentication_error: invalid x-api-key\n\
             fixed        Resolved   high       4          Reported          2h    s-2       restarted redis\n\
             bad.yaml#1   Invalid    -          -          InvalidManifest   -     -         bad.yaml: document 1: missing field `title`\n"
        );
    }

    #[test]
    fn the_explanation_comes_from_the_condition_that_fits_the_phase() {
        let status =
            |value: serde_json::Value| -> IncidentStatus { serde_json::from_value(value).unwrap() };
        let failed = status(failed());
        assert_eq!(
            explanation(&failed),
            Some(Explanation {
                reason: "ModelApiFailed",
                message: "HTTP 401 authentication_error: invalid x-api-key"
            })
        );
        let resolved = status(resolved());
        assert_eq!(
            explanation(&resolved),
            Some(Explanation {
                reason: "Reported",
                message: "restarted redis"
            })
        );
        let invalid = status(serde_json::json!({
            "phase": "Failed",
            "conditions": [
                condition("Valid", "False", "InvalidSpec", "spec.title: empty"),
                condition("SessionActive", "False", "InvalidSpec", "no session runs for an invalid spec"),
            ],
        }));
        assert_eq!(
            explanation(&invalid),
            Some(Explanation {
                reason: "InvalidSpec",
                message: "spec.title: empty"
            })
        );
        // An empty message borrows the other condition's.
        let budget = status(serde_json::json!({
            "phase": "Unresolved",
            "conditions": [
                condition("SessionActive", "False", "TokenBudgetExhausted", ""),
                condition("Resolved", "False", "TokenBudgetExhausted", "360 of 300 tokens"),
            ],
        }));
        assert_eq!(explanation(&budget).unwrap().message, "360 of 300 tokens");
        assert_eq!(explanation(&IncidentStatus::default()), None);
    }

    #[test]
    fn later_rows_line_up_under_the_first_listing() {
        let mut first = Table::new(vec!["NAME", "PHASE"]);
        first.push(vec!["a".into(), "Pending".into()]);
        let mut widths = Widths::default();
        assert_eq!(
            first.render(&mut widths, true),
            "NAME   PHASE\na      Pending\n"
        );
        let mut later = Table::new(vec!["NAME", "PHASE"]);
        later.push(vec!["b".into(), "Investigating".into()]);
        assert_eq!(later.render(&mut widths, false), "b      Investigating\n");
        // Cells are one line, safe for a terminal, and never empty.
        let mut odd = Table::new(vec!["A", "B", "C"]);
        odd.push(vec!["x\ny".into(), String::new(), "\u{1b}[2J".into()]);
        assert_eq!(
            odd.render(&mut Widths::default(), false),
            "x y   -   \\u{1b}[2J\n"
        );
    }

    #[test]
    fn times_show_date_and_zone_where_the_day_can_differ() {
        let clock = utc_clock("2026-01-01T23:00:00Z");
        assert_eq!(
            clock.full(at("2026-01-01T23:59:58Z")),
            "2026-01-01 23:59:58 UTC"
        );
        assert_eq!(clock.short(at("2026-01-01T23:59:58Z")), "23:59:58");
        assert_eq!(
            clock.short(at("2026-01-02T00:00:03Z")),
            "2026-01-02 00:00:03"
        );
        assert_eq!(clock.full_text("not a time"), "not a time");
        // The day is the clock zone's: 23:30 UTC is already the next day at UTC+2.
        let east = Clock::new(jiff::tz::TimeZone::fixed(jiff::tz::offset(2)))
            .on_day_of(at("2026-01-02T00:00:00Z"));
        assert_eq!(east.short(at("2026-01-01T23:30:00Z")), "01:30:00");
        assert!(
            east.full(at("2026-01-01T23:30:00Z"))
                .starts_with("2026-01-02 01:30:00 "),
            "{}",
            east.full(at("2026-01-01T23:30:00Z"))
        );
    }

    #[test]
    fn the_last_commands_say_how_each_ended() {
        let events = [
            command_started(1, "2026-01-01T23:59:00Z", "t1", "echo one"),
            command_finished(2, "2026-01-01T23:59:02Z", "t1", 0, 1500),
            command_started(3, "2026-01-01T23:59:10Z", "t2", "false"),
            command_finished(4, "2026-01-01T23:59:12Z", "t2", 1, 1500),
            command_started(5, "2026-01-02T00:00:01Z", "t3", "sleep 600"),
            event(
                6,
                "2026-01-02T00:01:00Z",
                EventBody::CommandInterrupted {
                    tool_use_id: "t3".into(),
                    reason: "the controller stopped".into(),
                },
            ),
            command_started(7, "2026-01-02T00:02:00Z", "t4", "uptime"),
        ];
        let runs = last_commands(&events, 3);
        let shown: Vec<(String, String)> = runs
            .iter()
            .map(|run| (run.command.clone(), command_result(&run.result)))
            .collect();
        assert_eq!(
            shown,
            [
                ("false".to_string(), "exit 1 in 1.5s".to_string()),
                (
                    "sleep 600".to_string(),
                    "interrupted: the controller stopped".to_string()
                ),
                ("uptime".to_string(), "running".to_string()),
            ]
        );
        assert_eq!(runs[1].at, at("2026-01-02T00:00:01Z"));
    }

    fn session(id: &str, phase: Phase, reason: Option<&str>) -> SessionRecord {
        SessionRecord {
            id: id.into(),
            incident_uid: "uid-broken".into(),
            incident_namespace: "default".into(),
            incident_name: "broken".into(),
            attempt: 1,
            generation: 1,
            state: SessionState::Finished,
            phase,
            outcome: None,
            reason: reason.map(str::to_string),
            started_at: at("2026-01-01T23:58:00Z"),
            finished_at: Some(at("2026-01-02T00:03:00Z")),
            turns: 3,
            commands: 2,
            input_tokens: 300,
            output_tokens: 60,
            cache_write_tokens: 0,
            cache_read_tokens: 0,
            report: None,
            cost_usd: 0.0012,
            message: None,
            requests: Default::default(),
        }
    }

    #[test]
    fn sessions_show_their_reason_and_in_wide_the_message() {
        let mut failed = session("s-1", Phase::Failed, Some("ModelApiFailed"));
        failed.message = Some("HTTP 401 authentication_error: invalid x-api-key".into());
        let rows = [failed];
        let now = at("2026-01-02T01:00:00Z");
        let clock = utc_clock("2026-01-02T00:00:00Z");
        assert_eq!(
            sessions_table(&rows, now, false, &clock).render(&mut Widths::default(), true),
            "SESSION   INCIDENT         ATTEMPT   PHASE    REASON           OUTCOME   TURNS   COMMANDS   TOKENS   AGE\n\
             s-1       default/broken   1         Failed   ModelApiFailed   -         3       2          360      62m\n"
        );
        assert_eq!(
            sessions_table(&rows, now, true, &clock).render(&mut Widths::default(), false),
            "s-1       default/broken   1         Failed   ModelApiFailed   -         3       2          360      62m   $0.0012   2026-01-01 23:58:00 UTC   HTTP 401 authentication_error: invalid x-api-key\n"
        );
    }

    #[test]
    fn the_session_header_says_why_and_when_in_full() {
        let mut failed = session("s-1", Phase::Failed, Some("ModelApiFailed"));
        failed.message = Some("HTTP 401 authentication_error:\ninvalid x-api-key".into());
        assert_eq!(
            session_header(&failed, &utc_clock("2026-01-01T23:58:00Z")),
            "Session s-1\n\
             Incident default/broken (attempt 1)\n\
             Phase Failed (ModelApiFailed): HTTP 401 authentication_error: invalid x-api-key\n\
             Started 2026-01-01 23:58:00 UTC, finished 2026-01-02 00:03:00 UTC\n\
             Turns 3, commands 2, tokens 300 in / 60 out, estimated cost $0.0012\n"
        );
    }

    #[test]
    fn describe_tells_the_whole_incident() {
        let mut failed_record = record("default", "broken", failed());
        let IncidentContent::Incident(stored) = &mut failed_record.content else {
            unreachable!("record() makes a valid Incident")
        };
        stored.incident["status"]["startedAt"] = "2026-01-01T23:58:00Z".into();
        stored.incident["spec"]["description"] = "since 23:00\nevery request".into();
        stored.incident["spec"]["environment"] =
            serde_json::json!({"networks": ["demo-net"], "targets": ["demo-api"]});
        stored.incident["spec"]["agent"] = serde_json::json!({"maxTurns": 20});
        stored.incident["status"]["report"] = serde_json::json!({
            "outcome": "unresolved", "summary": "could not reach the model",
            "actions": ["nothing"],
        });
        let sessions = [session("s-1", Phase::Failed, Some("ModelApiFailed"))];
        let events = [
            command_started(1, "2026-01-01T23:59:00Z", "t1", "echo one"),
            command_finished(2, "2026-01-01T23:59:02Z", "t1", 0, 1500),
            command_started(3, "2026-01-02T00:00:01Z", "t2", "false"),
            command_finished(4, "2026-01-02T00:00:03Z", "t2", 1, 1500),
            event(
                5,
                "2026-01-02T00:03:00Z",
                EventBody::SessionFinished {
                    phase: Phase::Failed,
                    outcome: None,
                    reason: "ModelApiFailed".into(),
                    message: "HTTP 401 authentication_error: invalid x-api-key".into(),
                },
            ),
        ];
        let clock = Clock::new(jiff::tz::TimeZone::UTC);
        let text = describe_incident(&IncidentDescription {
            record: &failed_record,
            sessions: &sessions,
            events: &events,
            commands: 5,
            now: at("2026-01-02T01:00:00Z"),
            clock: &clock,
        });
        assert_eq!(
            text,
            "Name:           broken
Namespace:      default
Labels:         team=web
Created:        2026-01-01 23:00:00 UTC (2h ago)
UID:            uid-broken
Generation:     1
Source:         files
Spec:
  Title:        api down
  Severity:     high
  Description:
    since 23:00
    every request
  Networks:     demo-net
  Targets:      demo-api
  Agent:        maxTurns=20
Status:
  Phase:        Failed
  Reason:       ModelApiFailed
  Message:      HTTP 401 authentication_error: invalid x-api-key
  Attempt:      1
  Session:      s-1
  Started:      2026-01-01 23:58:00 UTC
  Usage:        0 turns, 0 commands, 0 tokens (0 in / 0 out), estimated $0.0000
  Session end:  Failed (ModelApiFailed): HTTP 401 authentication_error: invalid x-api-key
Conditions:
  TYPE            STATUS   REASON           LAST TRANSITION           MESSAGE
  Valid           True     Valid            2026-01-01 23:10:00 UTC   the spec is valid
  SessionActive   False    ModelApiFailed   2026-01-01 23:10:00 UTC   HTTP 401 authentication_error: invalid x-api-key
  Resolved        False    ModelApiFailed   2026-01-01 23:10:00 UTC   -
Last commands (session s-1, started 2026-01-01 23:58:00 UTC):
  TIME                  RESULT           COMMAND
  23:59:00              exit 0 in 1.5s   echo one
  2026-01-02 00:00:01   exit 1 in 1.5s   false
Report:
  Outcome:      unresolved
  Summary:      could not reach the model
  Root cause:   <none>
  Actions:
    - nothing
  Verification: <none>
Sessions:
  SESSION   ATTEMPT   PHASE    REASON           COMMANDS   STARTED                   FINISHED
  s-1       1         Failed   ModelApiFailed   2          2026-01-01 23:58:00 UTC   2026-01-02 00:03:00 UTC
Events:         not in the store; in kube mode, `kubectl describe incident broken -n default` shows them
"
        );
    }

    #[test]
    fn a_model_api_failure_is_said_once() {
        let event = Event {
            session_id: "s".into(),
            seq: 3,
            at: at("2026-01-02T03:04:05Z"),
            body: EventBody::LlmFailed {
                message: "the model API failed: HTTP 401 authentication_error: invalid x-api-key"
                    .into(),
            },
            hash: String::new(),
        };
        assert_eq!(
            event_text(&event, false, &utc_clock("2026-01-02T00:00:00Z")),
            "#3 03:04:05 the model API failed: HTTP 401 authentication_error: invalid x-api-key\n"
        );
    }

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(printable("a\u{1b}[31mred\u{7}"), "a\\u{1b}[31mred\\u{7}");
        assert_eq!(printable("tab\tok\n"), "tab\tok\n");
        assert_eq!(printable("a\u{202e}b\u{2066}"), "a\\u{202e}b\\u{2066}");
    }
}
