//! One session's task: the agent loop. Every step is stored before it is acted on, and the
//! conversation is the fold of what was stored ([`History`]), so a restart resumes where it stood.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, info, warn};

use super::context::{self, Budget};
use super::history::{History, Next};
use super::tools::{self, ToolCall};
use super::{Cancellation, Deps, Stalled, TicketChange, Wake, kube_access, prompt};
use crate::ObjectKey;
use crate::audit::{Event, EventBody, HeldSecret, SessionRecord, StoreError};
use crate::config::{AgentLimits, SessionSettings};
use crate::incident::{IncidentSpec, Outcome, Phase, Report};
use crate::llm::{ChatRequest, ContentBlock, LlmClient, Message, RetryNotice, Role};
use crate::sandbox::{ExecOutcome, Sandbox, SandboxError};

/// Output shorter than this is not worth a summary.
const SUMMARY_THRESHOLD_BYTES: u64 = 2048;
/// How long a session waits, when it ends, for summaries still being written.
const SUMMARY_GRACE: Duration = Duration::from_secs(30);

pub(super) struct SessionTask {
    pub deps: Deps,
    pub stalled: Stalled,
    pub key: ObjectKey,
    pub incident_uid: String,
    pub spec: IncidentSpec,
    pub record: SessionRecord,
    pub cancel: Cancellation,
    pub updates: mpsc::UnboundedReceiver<TicketChange>,
    /// The session's Kubernetes token, redacted from everything while the task lives.
    pub kube_token: Option<HeldSecret>,
    /// What the token is bound to: deleted when the task ends, which revokes the token.
    pub kube_binding: Option<kube_access::TokenBinding>,
}

/// How a session ended.
#[derive(Debug)]
struct Ending {
    phase: Phase,
    outcome: Option<Outcome>,
    reason: &'static str,
    message: String,
}

impl Ending {
    fn new(phase: Phase, reason: &'static str, message: impl Into<String>) -> Ending {
        Ending {
            phase,
            outcome: None,
            reason,
            message: message.into(),
        }
    }
}

/// Why the loop stopped without an ending. The session stays `running` in the store and is resumed
/// by a later reconcile.
#[derive(Debug)]
enum Abandoned {
    /// The store failed, so nothing more can be recorded.
    Store(StoreError),
    /// The controller is stopping (between steps: a running command was let finish).
    Draining,
}

impl From<StoreError> for Abandoned {
    fn from(error: StoreError) -> Self {
        Abandoned::Store(error)
    }
}

impl SessionTask {
    /// Runs the session to its end, or until it is abandoned; the manager, which spawned it, then
    /// takes it off its list of running tasks.
    pub async fn run(mut self) {
        let span = tracing::info_span!("session", incident = %self.key, session = %self.record.id);
        async move {
            let mut summaries = JoinSet::new();
            let result = self.drive(&mut summaries).await;
            // Summaries are appended before the session is finished: a finished session is closed.
            let _ = tokio::time::timeout(SUMMARY_GRACE, async {
                while summaries.join_next().await.is_some() {}
            })
            .await;
            summaries.abort_all();
            let ended = match result {
                Ok(ending) => {
                    let summary = (ending.phase, ending.reason, self.elapsed());
                    self.finish(ending).await;
                    self.stalled.clear(&self.incident_uid);
                    Some(summary)
                }
                Err(Abandoned::Draining) => {
                    info!("the controller is stopping: the session resumes from the store at the next start");
                    None
                }
                Err(Abandoned::Store(error)) => {
                    // The store's own health says it failed (once, and then as reminders).
                    let delay = self.stalled.stall(&self.incident_uid);
                    info!(%error, ?delay, "the audit store failed; the session stops here and resumes after a backoff");
                    let (wake, key) = (self.deps.wake.clone(), self.key.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = wake.send(Wake::One(key));
                    });
                    None
                }
            };
            self.deps.metrics.session_stopped(ended);
            self.revoke_kube_access().await;
        }
        .instrument(span)
        .await
    }

    /// Kubernetes mode, with an agent ServiceAccount: a token for the rest of the session, held by
    /// the redactor, in a kubeconfig written into the sandbox. Without it the session goes on (the
    /// agent finds kubectl unauthorised), and the log says why.
    async fn give_kube_access(&mut self, sandbox: &Sandbox, remaining: Duration) {
        let Some(access) = self.deps.kube_access.clone() else {
            return;
        };
        let issued = match access.issue(&self.record.id, remaining).await {
            Ok(issued) => issued,
            Err(error) => {
                warn!(%error, "no Kubernetes access for the agent: its ServiceAccount's token could not be requested");
                return;
            }
        };
        self.kube_binding = Some(issued.binding.clone());
        match self.deps.store.redactor().hold(&issued.token) {
            Ok(held) => self.kube_token = Some(held),
            Err(reason) => {
                warn!(
                    "no Kubernetes access for the agent: the token cannot be redacted ({reason})"
                );
                self.revoke_kube_access().await;
                return;
            }
        }
        if let Err(error) = sandbox
            .write_private_file(kube_access::KUBECONFIG_PATH, issued.kubeconfig.as_bytes())
            .await
        {
            warn!(%error, "no Kubernetes access for the agent: its kubeconfig could not be written");
        }
    }

    /// The session's token ends with its task, however it ends (a resumed session gets a new
    /// one): the API server refuses it from then on.
    async fn revoke_kube_access(&mut self) {
        if let (Some(access), Some(binding)) =
            (self.deps.kube_access.clone(), self.kube_binding.take())
        {
            access.revoke(&binding).await;
        }
    }

    fn cancelled(&self) -> Ending {
        Ending::new(Phase::Cancelled, "Cancelled", self.cancel.cause().message())
    }

    /// How long the session has run, from its start in the store (across restarts).
    fn elapsed(&self) -> Duration {
        elapsed_since(self.record.started_at)
    }

    /// Removes the sandbox (killing anything still running in it), then closes the trail: once a
    /// session reads as finished, nothing of it runs any more.
    async fn finish(&self, ending: Ending) {
        // An Incident left unfixed is what an operator must hear of.
        match ending.phase {
            Phase::Failed | Phase::Unresolved => {
                warn!(phase = %ending.phase, reason = ending.reason, "session finished: {}", ending.message);
            }
            Phase::Resolved
            | Phase::Cancelled
            | Phase::Pending
            | Phase::Queued
            | Phase::Investigating => {
                info!(phase = %ending.phase, reason = ending.reason, "session finished: {}", ending.message);
            }
        }
        if let Err(error) = self.deps.sandboxes.remove(&self.record.id).await {
            warn!(%error, "could not remove the sandbox; it is removed as an orphan later");
        }
        let appended = self
            .deps
            .store
            .append(
                &self.record.id,
                EventBody::SessionFinished {
                    phase: ending.phase,
                    outcome: ending.outcome,
                    reason: ending.reason.to_string(),
                    message: ending.message,
                },
            )
            .await;
        if let Err(error) = appended {
            warn!(%error, "could not record the end of the session");
        }
    }

    /// The session from its stored trail to its end: prepared once, then turn after turn.
    async fn drive(&mut self, summaries: &mut JoinSet<()>) -> Result<Ending, Abandoned> {
        let events = self.deps.store.events(&self.record.id).await?;
        let limits = self.deps.settings.agent.effective(&self.spec.agent);
        let fixed = self.fixed_request_parts(&events, &limits);
        let budget = context_budget(&limits, &fixed);
        let mut history =
            History::from_events_within(events.iter().map(|event| &event.body), Some(budget));
        if let Some(ending) = cannot_start(&self.deps.settings, &limits) {
            return Ok(ending);
        }
        let sandbox = match self.prepare_sandbox(&mut history, &limits).await? {
            Ok(sandbox) => sandbox,
            Err(ending) => return Ok(ending),
        };
        let prepared = Prepared {
            events,
            limits,
            fixed,
            sandbox,
        };
        loop {
            if let Some(ending) = self.step(&mut history, &prepared, summaries).await? {
                return Ok(ending);
            }
        }
    }

    /// The system prompt and the tools, the same in every request of the session, resumed or not
    /// (the prompt is written from the ticket as the session started; updates are told as
    /// messages): a prompt cache then keeps them.
    fn fixed_request_parts(&self, events: &[Event], limits: &AgentLimits) -> Fixed {
        let started_spec = events
            .iter()
            .find_map(|event| match &event.body {
                EventBody::SessionStarted { spec, .. } => Some(spec),
                _ => None,
            })
            .unwrap_or(&self.spec);
        let mut system = prompt::system(started_spec, limits.command_timeout.as_secs());
        if self.deps.kube_access.is_some() {
            system.push_str(prompt::KUBERNETES);
        }
        Fixed {
            system,
            tools: tools::specs(),
        }
    }

    /// Makes (or takes) the session's sandbox, records it ready, and gives the agent its
    /// Kubernetes access. Err inside: the session ends (cancelled, or no sandbox).
    async fn prepare_sandbox(
        &mut self,
        history: &mut History,
        limits: &AgentLimits,
    ) -> Result<Result<Sandbox, Ending>, Abandoned> {
        let sandbox = tokio::select! {
            () = self.cancel.cancelled() => return Ok(Err(self.cancelled())),
            sandbox = self.deps.sandboxes.ensure(&self.record.id, &self.spec.environment.networks) => sandbox,
        };
        let sandbox = match sandbox {
            Ok(sandbox) => sandbox,
            Err(error) => {
                return Ok(Err(Ending::new(
                    Phase::Failed,
                    "SandboxFailed",
                    format!("the sandbox could not be created: {error}"),
                )));
            }
        };
        self.record_event(
            history,
            EventBody::SandboxReady {
                container_id: sandbox.container_id.clone(),
            },
        )
        .await?;
        self.give_kube_access(&sandbox, limits.timeout.saturating_sub(self.elapsed()))
            .await;
        Ok(Ok(sandbox))
    }

    /// One turn of the loop: stops if asked to, tells the agent of ticket changes, then does what
    /// the conversation calls for next. Some: the session ends.
    async fn step(
        &mut self,
        history: &mut History,
        prepared: &Prepared,
        summaries: &mut JoinSet<()>,
    ) -> Result<Option<Ending>, Abandoned> {
        if self.cancel.is_cancelled() {
            return Ok(Some(self.cancelled()));
        }
        if self.deps.draining.is_cancelled() {
            return Err(Abandoned::Draining);
        }
        self.take_ticket_updates(history).await?;
        let limits = &prepared.limits;
        let elapsed = self.elapsed();
        match history.next() {
            Next::Finished => Ok(Some(Ending::new(
                Phase::Failed,
                "AlreadyFinished",
                "the session had already finished",
            ))),
            Next::Reported => Ok(Some(reported_ending(&prepared.events))),
            Next::Interrupted { id } => {
                self.record_event(
                    history,
                    EventBody::CommandInterrupted {
                        tool_use_id: id,
                        reason: "the controller stopped while this command was running".into(),
                    },
                )
                .await?;
                Ok(None)
            }
            Next::RunTool { id, name, input } => {
                let bench = Workbench {
                    sandbox: &prepared.sandbox,
                    limits,
                    remaining: limits.timeout.saturating_sub(elapsed),
                    summaries,
                };
                let requested = ToolUse { id, name, input };
                self.run_tool(history, bench, requested).await
            }
            Next::CallModel => {
                if let Some(ending) = budget_exhausted(history, limits, elapsed) {
                    return Ok(Some(ending));
                }
                let remaining = limits.timeout.saturating_sub(elapsed);
                self.call_model(history, limits, &prepared.fixed, remaining)
                    .await
            }
        }
    }

    /// Appends an event, folds it into the conversation, and tells the reconciler. Returns the event
    /// as stored, secrets redacted: what is logged, summarised or sent on is taken from it.
    async fn record_event(
        &self,
        history: &mut History,
        body: EventBody,
    ) -> Result<Event, Abandoned> {
        let event = self.deps.store.append(&self.record.id, body).await?;
        history.apply(&event.body);
        let _ = self.deps.wake.send(Wake::One(self.key.clone()));
        Ok(event)
    }

    async fn take_ticket_updates(&mut self, history: &mut History) -> Result<(), Abandoned> {
        while let Ok(change) = self.updates.try_recv() {
            // Reconciles repeat an update or a note until the session has recorded it: tell it once.
            let event = match change {
                TicketChange::Spec { generation, spec } => {
                    if generation <= self.record.generation {
                        continue;
                    }
                    self.record.generation = generation;
                    info!(generation, "the ticket was updated; telling the agent");
                    self.spec = spec.clone();
                    EventBody::TicketUpdated { generation, spec }
                }
                TicketChange::Note(note) => {
                    let event = EventBody::NoteReceived { note };
                    // Compared as stored: the trail keeps notes redacted.
                    if let EventBody::NoteReceived { note: stored } =
                        self.deps.store.as_stored(event.clone())?
                        && history.last_note() == Some(stored.as_str())
                    {
                        continue;
                    }
                    info!("the Incident has a new note; telling the agent");
                    event
                }
            };
            self.record_event(history, event).await?;
        }
        Ok(())
    }

    async fn call_model(
        &self,
        history: &mut History,
        limits: &AgentLimits,
        fixed: &Fixed,
        remaining: Duration,
    ) -> Result<Option<Ending>, Abandoned> {
        let deadline = tokio::time::Instant::now() + remaining;
        let mut shrunk = false;
        let (request, response) = loop {
            let request = ChatRequest {
                model: limits.model.clone(),
                system: fixed.system.clone(),
                messages: history.messages(),
                tools: fixed.tools.clone(),
                max_tokens: limits.response_max_tokens,
            };
            let response = match self.ask(history, &request, limits, deadline).await? {
                Ok(response) => response,
                Err(ending) => return Ok(Some(ending)),
            };
            match response {
                // The server found the request too long: shorten it (the fold halves it) and ask
                // once more.
                Err(error) if !shrunk && context::is_overflow(&error.to_string()) => {
                    shrunk = true;
                    info!(%error, "the request was too long for the model; shortening older outputs and asking again");
                    self.record_event(
                        history,
                        EventBody::LlmRetrying {
                            retry: 1,
                            max_retries: 1,
                            delay_ms: 0,
                            error: error.to_string(),
                        },
                    )
                    .await?;
                }
                response => break (request, response),
            }
        };
        match response {
            Ok(mut response) => {
                // A call written as text is kept as text, with the call it makes beside it: the
                // trail shows both, and the next turn answers the call.
                if let Some((name, input)) = tools::call_written_as_text(&response.content) {
                    info!(tool = %name, "the model wrote its tool call as text; taking it as a call");
                    response.content.push(ContentBlock::ToolUse {
                        id: format!("call_text_{}", history.turns + 1),
                        name,
                        input,
                    });
                }
                history.unique_tool_ids(&mut response.content);
                let turn = history.turns + 1;
                let cost_usd = self.deps.llm.cost(&request.model, &response.usage);
                self.record_event(
                    history,
                    EventBody::LlmResponse {
                        turn,
                        content: response.content,
                        stop_reason: response.stop_reason,
                        input_tokens: response.usage.input_tokens,
                        output_tokens: response.usage.output_tokens,
                        cache_write_tokens: response.usage.cache_write_tokens,
                        cache_read_tokens: response.usage.cache_read_tokens,
                        cost_usd,
                    },
                )
                .await?;
                Ok(None)
            }
            Err(error) => {
                let message = if context::is_overflow(&error.to_string()) {
                    format!(
                        "the conversation does not fit the model's context even with its older \
                         outputs shortened (is --context-tokens above the server's context size?): \
                         {error}"
                    )
                } else {
                    format!("the model API failed: {error}")
                };
                self.record_event(
                    history,
                    EventBody::LlmFailed {
                        message: message.clone(),
                    },
                )
                .await?;
                Ok(Some(Ending::new(Phase::Failed, "ModelApiFailed", message)))
            }
        }
    }

    /// One model call, its retries recorded as they are decided (the trail and the status say what
    /// the session waits for). Err: the session ends (cancelled, or out of time).
    async fn ask(
        &self,
        history: &mut History,
        request: &ChatRequest,
        limits: &AgentLimits,
        deadline: tokio::time::Instant,
    ) -> Result<Result<Answer, Ending>, Abandoned> {
        let (retries_tx, mut retries) = mpsc::unbounded_channel::<RetryNotice>();
        // A streamed answer's text so far, written to the store as the session's draft for
        // `follow` and the console; the answer's event replaces it.
        let (draft_tx, mut draft) = watch::channel(String::new());
        let streams = self.deps.llm.streams();
        let call = self.deps.llm.complete_drafting(
            request,
            move |notice| {
                let _ = retries_tx.send(notice);
            },
            streams.then_some(&draft_tx),
        );
        tokio::pin!(call);
        let deadline = tokio::time::sleep_until(deadline);
        tokio::pin!(deadline);
        let mut drafts = tokio::time::interval(DRAFT_EVERY);
        drafts.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = drafts.tick(), if streams => {
                    if draft.has_changed().unwrap_or(false) {
                        let text = draft.borrow_and_update().clone();
                        self.write_draft(history.turns + 1, &text).await;
                    }
                }
                () = self.cancel.cancelled() => return Ok(Err(self.cancelled())),
                // Asked again at the next start: nothing of an unfinished call is recorded.
                () = self.deps.draining.cancelled() => {
                    // No event will replace the draft before the session resumes.
                    if let Err(error) = self.deps.store.clear_draft(&self.record.id).await {
                        warn!(%error, "could not remove the answer being streamed");
                    }
                    return Err(Abandoned::Draining);
                }
                () = &mut deadline => return Ok(Err(time_exhausted(limits))),
                Some(notice) = retries.recv() => {
                    self.record_event(history, EventBody::LlmRetrying {
                        retry: u32::try_from(notice.retry).unwrap_or(u32::MAX),
                        max_retries: u32::try_from(notice.max_retries).unwrap_or(u32::MAX),
                        delay_ms: millis(notice.delay),
                        error: notice.error,
                    }).await?;
                }
                response = &mut call => return Ok(Ok(response)),
            }
        }
    }

    /// Replaces the session's draft; a failure costs the readers the draft, not the session.
    async fn write_draft(&self, turn: u32, text: &str) {
        if text.trim().is_empty() {
            return;
        }
        if let Err(error) = self.deps.store.put_draft(&self.record.id, turn, text).await {
            warn!(%error, "could not store the answer being streamed");
        }
    }

    /// Runs the tool call the model asked for; the session's ending when the call ends it.
    async fn run_tool(
        &self,
        history: &mut History,
        bench: Workbench<'_>,
        requested: ToolUse,
    ) -> Result<Option<Ending>, Abandoned> {
        let ToolUse { id, name, input } = requested;
        match tools::parse(&name, &input) {
            Err(error) => {
                let rejected = EventBody::ToolRejected {
                    tool_use_id: id,
                    tool: name,
                    error: error.to_string(),
                };
                self.record_event(history, rejected).await?;
                Ok(None)
            }
            Ok(ToolCall::Report(report)) => self.report(history, id, report).await.map(Some),
            Ok(ToolCall::Shell { command, reasoning }) => {
                let shell = ShellCall {
                    id,
                    command,
                    reasoning,
                };
                self.run_shell(history, bench, shell).await
            }
        }
    }

    /// Stores the agent's report: the session ends with its outcome.
    async fn report(
        &self,
        history: &mut History,
        id: String,
        report: Report,
    ) -> Result<Ending, Abandoned> {
        let ending = Ending {
            phase: report.outcome.phase(),
            outcome: Some(report.outcome),
            reason: "Reported",
            message: report.summary.clone(),
        };
        let reported = EventBody::Reported {
            tool_use_id: id,
            report,
        };
        self.record_event(history, reported).await?;
        Ok(ending)
    }

    /// Runs a command in the sandbox, stored before it runs and after it ends (or is interrupted
    /// by a cancellation, which ends the session); a long output gets summarised aside.
    async fn run_shell(
        &self,
        history: &mut History,
        bench: Workbench<'_>,
        shell: ShellCall,
    ) -> Result<Option<Ending>, Abandoned> {
        if bench.remaining.is_zero() {
            return Ok(Some(time_exhausted(bench.limits)));
        }
        let timeout = bench.limits.command_timeout.min(bench.remaining);
        let ShellCall {
            id,
            command,
            reasoning,
        } = shell;
        let started_event = EventBody::CommandStarted {
            tool_use_id: id.clone(),
            command: command.clone(),
            reasoning,
            timeout_seconds: timeout.as_secs().max(1),
        };
        let stored = self.record_event(history, started_event).await?;
        let EventBody::CommandStarted { command: shown, .. } = stored.body else {
            unreachable!("the store returns the event it was given");
        };
        info!(command = %shown, "running command");
        let started = std::time::Instant::now();
        let result = tokio::select! {
            () = self.cancel.cancelled() => {
                self.deps.metrics.command_ran("interrupted", started.elapsed());
                self.record_event(history, EventBody::CommandInterrupted {
                    tool_use_id: id,
                    reason: self.cancel.cause().message(),
                }).await?;
                return Ok(Some(self.cancelled()));
            }
            result = bench.sandbox.exec(&command, timeout) => result,
        };
        self.deps
            .metrics
            .command_ran(exit_class(&result), started.elapsed());
        let finished = command_finished(id.clone(), result, started.elapsed());
        let stored = self.record_event(history, finished).await?;
        self.summarise(stored.body, id, shown, bench.summaries);
        Ok(None)
    }

    /// Has a long output summarised aside, when a summary model is set. From the stored output
    /// (so no secret reaches the summary model), once the finished command is stored (so the
    /// summary follows it in the trail).
    fn summarise(
        &self,
        finished: EventBody,
        id: String,
        command: String,
        summaries: &mut JoinSet<()>,
    ) {
        if let EventBody::CommandFinished {
            output,
            output_bytes,
            ..
        } = finished
            && output_bytes >= SUMMARY_THRESHOLD_BYTES
            && let Some(model) = &self.deps.settings.summary_model
        {
            let job = Summary {
                llm: self.deps.llm.summariser(),
                store: self.deps.store.clone(),
                session_id: self.record.id.clone(),
                tool_use_id: id,
                model: model.clone(),
                command,
                output,
            };
            summaries.spawn(job.run().in_current_span());
        }
    }
}

/// A tool call the model asked for, as the conversation holds it.
struct ToolUse {
    id: String,
    name: String,
    input: serde_json::Value,
}

/// A `shell` call, parsed.
struct ShellCall {
    id: String,
    command: String,
    reasoning: String,
}

/// What every turn of a session's loop works with, settled before the loop starts: the trail as
/// loaded, the limits, the fixed parts of each request, and the sandbox.
struct Prepared {
    events: Vec<Event>,
    limits: AgentLimits,
    fixed: Fixed,
    sandbox: Sandbox,
}

/// What a tool call runs with: the sandbox, the limits, the session's time left, and the
/// summaries being written aside.
struct Workbench<'a> {
    sandbox: &'a Sandbox,
    limits: &'a AgentLimits,
    remaining: Duration,
    summaries: &'a mut JoinSet<()>,
}

/// How a command ended, as the metrics count it.
fn exit_class(result: &Result<ExecOutcome, SandboxError>) -> &'static str {
    match result {
        Ok(outcome) if outcome.timed_out => "timeout",
        Ok(outcome) if outcome.exit_code == Some(0) => "success",
        Ok(_) => "failure",
        Err(_) => "error",
    }
}

/// The event that ends a command; a command the sandbox could not run ends with why, as its
/// output.
fn command_finished(
    id: String,
    result: Result<ExecOutcome, SandboxError>,
    elapsed: Duration,
) -> EventBody {
    match result {
        Ok(outcome) => EventBody::CommandFinished {
            tool_use_id: id,
            exit_code: outcome.exit_code,
            duration_ms: millis(outcome.duration),
            timed_out: outcome.timed_out,
            output: outcome.output,
            output_bytes: outcome.output_bytes,
            truncated: outcome.truncated,
        },
        Err(error) => {
            let output = format!("the sandbox could not run the command: {error}");
            EventBody::CommandFinished {
                tool_use_id: id,
                exit_code: None,
                duration_ms: millis(elapsed),
                timed_out: false,
                output_bytes: output.len() as u64,
                output,
                truncated: false,
            }
        }
    }
}

/// What a model call came to, retries done.
type Answer = Result<crate::llm::ChatResponse, crate::llm::LlmError>;

/// What every request of a session carries unchanged.
struct Fixed {
    system: String,
    tools: Vec<crate::llm::ToolSpec>,
}

impl Fixed {
    /// Their size, as the budget counts it.
    fn bytes(&self) -> usize {
        let tools: usize = self
            .tools
            .iter()
            .map(|tool| {
                tool.name.len() + tool.description.len() + tool.input_schema.to_string().len()
            })
            .sum();
        self.system.len() + tools
    }
}

/// The session's context budget: the configured context size (the model's window when not set).
fn context_budget(limits: &AgentLimits, fixed: &Fixed) -> Budget {
    Budget::new(
        limits
            .context_tokens
            .unwrap_or_else(|| context::window(&limits.model)),
        limits.response_max_tokens,
        fixed.bytes(),
    )
}

/// A summary of one command's output by the small model, stored as its own event. It never blocks
/// the session, and its failure loses nothing: the raw output is already stored.
struct Summary {
    llm: LlmClient,
    store: crate::audit::Store,
    session_id: String,
    tool_use_id: String,
    model: String,
    command: String,
    output: String,
}

impl Summary {
    async fn run(self) {
        let request = ChatRequest {
            model: self.model.clone(),
            system:
                "You summarise command output for an incident audit trail. Answer in at most three \
                     short sentences: what the output shows, errors first."
                    .into(),
            messages: vec![Message {
                role: Role::User,
                content: vec![ContentBlock::Text {
                    text: format!("Command: {}\n\nOutput:\n{}", self.command, self.output),
                }],
            }],
            tools: Vec::new(),
            max_tokens: 300,
        };
        let response = match self.llm.complete(&request).await {
            Ok(response) => response,
            Err(error) => {
                warn!(%error, tool_use_id = %self.tool_use_id, "the output summary failed; the raw output is kept");
                return;
            }
        };
        let summary: String = response
            .content
            .iter()
            .filter_map(|block| match block {
                ContentBlock::Text { text } => Some(text.as_str()),
                ContentBlock::ToolUse { .. } | ContentBlock::ToolResult { .. } => None,
            })
            .collect::<Vec<_>>()
            .join("\n");
        if summary.trim().is_empty() {
            return;
        }
        let body = EventBody::OutputSummary {
            tool_use_id: self.tool_use_id.clone(),
            cost_usd: self.llm.cost(&self.model, &response.usage),
            model: self.model,
            summary,
            input_tokens: response.usage.input_tokens,
            output_tokens: response.usage.output_tokens,
            cache_write_tokens: response.usage.cache_write_tokens,
            cache_read_tokens: response.usage.cache_read_tokens,
        };
        if let Err(error) = self.store.append(&self.session_id, body).await {
            warn!(%error, "could not store the output summary");
        }
    }
}

/// How often a streamed answer's text so far replaces the session's draft in the store.
const DRAFT_EVERY: Duration = Duration::from_millis(200);

fn time_exhausted(limits: &AgentLimits) -> Ending {
    Ending::new(
        Phase::Unresolved,
        "TimeBudgetExhausted",
        format!(
            "the session reached its time budget of {} s without a report",
            limits.timeout.as_secs()
        ),
    )
}

/// Why a session cannot run at all, said before a sandbox is made: no model is configured, or a
/// spend budget is set for a model whose price is unknown (so it could not be enforced). Pure.
fn cannot_start(settings: &SessionSettings, limits: &AgentLimits) -> Option<Ending> {
    if let Some(missing) = &settings.missing_model {
        return Some(Ending::new(
            Phase::Failed,
            "NoModelConfigured",
            missing.clone(),
        ));
    }
    match settings
        .costs
        .check_budget(&limits.model, limits.max_cost_usd)
    {
        Ok(()) => None,
        Err(unpriced) => Some(Ending::new(
            Phase::Failed,
            "UnpricedModel",
            unpriced.to_string(),
        )),
    }
}

/// The budget check before each model call. Pure.
fn budget_exhausted(history: &History, limits: &AgentLimits, elapsed: Duration) -> Option<Ending> {
    if history.turns >= limits.max_turns {
        return Some(Ending::new(
            Phase::Unresolved,
            "TurnBudgetExhausted",
            format!(
                "the session used its {} model turns without a report",
                limits.max_turns
            ),
        ));
    }
    if history.total_tokens() >= limits.max_tokens {
        return Some(Ending::new(
            Phase::Unresolved,
            "TokenBudgetExhausted",
            format!(
                "the session used {} tokens, reaching its budget of {}",
                history.total_tokens(),
                limits.max_tokens
            ),
        ));
    }
    if let Some(budget) = limits.max_cost_usd
        && history.cost_usd >= budget
    {
        return Some(Ending::new(
            Phase::Unresolved,
            "CostBudgetExhausted",
            format!(
                "the session spent an estimated ${:.4}, reaching its budget of ${budget:.4}",
                history.cost_usd
            ),
        ));
    }
    if elapsed >= limits.timeout {
        return Some(time_exhausted(limits));
    }
    None
}

/// The ending of a session whose report was stored before the controller stopped.
fn reported_ending(events: &[crate::audit::Event]) -> Ending {
    let report: Option<&Report> = events.iter().rev().find_map(|event| match &event.body {
        EventBody::Reported { report, .. } => Some(report),
        _ => None,
    });
    match report {
        Some(report) => Ending {
            phase: report.outcome.phase(),
            outcome: Some(report.outcome),
            reason: "Reported",
            message: report.summary.clone(),
        },
        None => Ending::new(
            Phase::Failed,
            "ReportLost",
            "the report could not be read back",
        ),
    }
}

fn elapsed_since(start: jiff::Timestamp) -> Duration {
    let elapsed = jiff::Timestamp::now().duration_since(start);
    Duration::try_from(elapsed).unwrap_or(Duration::ZERO)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AgentLimits {
        AgentLimits {
            model: "m".into(),
            max_turns: 2,
            timeout: Duration::from_secs(60),
            command_timeout: Duration::from_secs(10),
            max_tokens: 100,
            max_cost_usd: Some(1.0),
            response_max_tokens: 10,
            context_tokens: None,
        }
    }

    #[test]
    fn budgets_end_the_session_in_order() {
        let mut history = History::default();
        assert!(budget_exhausted(&history, &limits(), Duration::ZERO).is_none());
        let ending = budget_exhausted(&history, &limits(), Duration::from_secs(61)).unwrap();
        assert_eq!(
            (ending.phase, ending.reason),
            (Phase::Unresolved, "TimeBudgetExhausted")
        );
        history.cost_usd = 1.0;
        let ending = budget_exhausted(&history, &limits(), Duration::ZERO).unwrap();
        assert_eq!(ending.reason, "CostBudgetExhausted");
        history.input_tokens = 100;
        let ending = budget_exhausted(&history, &limits(), Duration::ZERO).unwrap();
        assert_eq!(ending.reason, "TokenBudgetExhausted");
        history.turns = 2;
        let ending = budget_exhausted(&history, &limits(), Duration::ZERO).unwrap();
        assert_eq!(ending.reason, "TurnBudgetExhausted");
    }
}
