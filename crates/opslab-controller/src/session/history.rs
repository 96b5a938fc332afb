//! The conversation, rebuilt from audit events. Pure: the same fold serves a live session (each event
//! applied as it is stored) and a session resumed after a restart (all its events applied at once), so
//! a resumed agent sees exactly what it would have seen.
//!
//! What is sent may be shorter than what is stored: within a context budget, older command outputs
//! are cut (see [`context`]). Which are cut is decided in the fold too, each time the model is asked,
//! from events stored before it was asked; so a resumed session sends what it would have sent.

use std::collections::{BTreeMap, BTreeSet};

use crate::audit::EventBody;
use crate::llm::{ContentBlock, Message, Role};
use crate::session::context::{self, Budget, Cut};
use crate::session::{prompt, tools};

/// What the agent loop must do next.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    /// Ask the model, with the conversation so far.
    CallModel,
    /// Run this tool call from the model's last response.
    RunTool {
        id: String,
        name: String,
        input: serde_json::Value,
    },
    /// This command started before a restart and never finished: record it as interrupted.
    Interrupted { id: String },
    /// The agent has reported; the session is over.
    Reported,
    /// The session has finished.
    Finished,
}

/// The conversation and where it stands.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    messages: Vec<Message>,
    /// Tool calls of the last model response, in order.
    pending_calls: Vec<(String, String, serde_json::Value)>,
    /// Results for those calls, by tool-use id.
    results: BTreeMap<String, ContentBlock>,
    /// Calls whose command started (write-ahead) but has no result yet.
    started: BTreeSet<String>,
    /// Ticket updates and notes to tell the model with the next user message.
    notes: Vec<String>,
    /// The last note told (as stored): a note is told once.
    last_note: Option<String>,
    reported: bool,
    finished: bool,
    pub turns: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_write_tokens: u64,
    pub cache_read_tokens: u64,
    pub cost_usd: f64,
    /// The context budget; None sends the conversation whole.
    budget: Option<Budget>,
    /// A lower limit on the messages' tokens, set when the server said a request was too long.
    squeezed: Option<u64>,
    /// Each command's result as it would be sent whole: its status line and its output.
    outputs: BTreeMap<String, (String, String)>,
    /// Output summaries by tool-use id, usable from the model call after the one they arrived
    /// during: summaries are written beside the session, at any moment.
    summaries: BTreeMap<String, String>,
    arriving_summaries: BTreeMap<String, String>,
    /// The outputs cut in what is sent, and how far.
    cuts: BTreeMap<String, Cut>,
}

impl History {
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a EventBody>) -> History {
        History::from_events_within(events, None)
    }

    /// [`Self::from_events`], what is sent kept within `budget`.
    pub fn from_events_within<'a>(
        events: impl IntoIterator<Item = &'a EventBody>,
        budget: Option<Budget>,
    ) -> History {
        let mut history = History {
            budget,
            ..History::default()
        };
        for event in events {
            history.apply(event);
        }
        history
    }

    /// Folds one stored event into the conversation.
    pub fn apply(&mut self, event: &EventBody) {
        match event {
            EventBody::SessionStarted { spec, .. } => {
                self.messages.push(user_text(prompt::ticket(spec)));
            }
            EventBody::LlmResponse { content, .. } => {
                self.settle_request();
                self.turns += 1;
                self.record_response(content);
            }
            EventBody::CommandStarted { tool_use_id, .. } => {
                self.started.insert(tool_use_id.clone());
            }
            EventBody::CommandFinished {
                tool_use_id,
                exit_code,
                duration_ms,
                timed_out,
                output,
                ..
            } => self.record_finished_command(
                tool_use_id,
                *exit_code,
                *duration_ms,
                *timed_out,
                output,
            ),
            EventBody::CommandInterrupted {
                tool_use_id,
                reason,
            } => self.record_interrupted_command(tool_use_id, reason),
            EventBody::ToolRejected {
                tool_use_id, error, ..
            } => self.record_result(tool_use_id, error.clone(), true),
            EventBody::TicketUpdated { spec, generation } => {
                self.notes.push(prompt::ticket_updated(*generation, spec));
            }
            EventBody::NoteReceived { note } => {
                self.notes.push(prompt::note(note));
                self.last_note = Some(note.clone());
            }
            EventBody::OutputSummary {
                tool_use_id,
                summary,
                ..
            } => {
                self.arriving_summaries
                    .insert(tool_use_id.clone(), summary.clone());
            }
            EventBody::Reported { .. } => self.reported = true,
            EventBody::SessionFinished { .. } => self.finished = true,
            // The agent learns of a refused Docker call from the error its command printed.
            EventBody::LlmRetrying { error, .. } if context::is_overflow(error) => self.squeeze(),
            EventBody::SandboxReady { .. }
            | EventBody::LlmRetrying { .. }
            | EventBody::LlmFailed { .. }
            | EventBody::DockerApi { .. }
            | EventBody::Notification { .. } => {}
        }
        self.count_spend(event);
    }

    /// Brings the conversation to what the request a response answers held (see `messages`).
    fn settle_request(&mut self) {
        self.flush_results();
        self.fit();
        self.summaries.append(&mut self.arriving_summaries);
    }

    /// Adds what an event's model call cost to the session's spend. Summaries are the session's
    /// spend too, though not part of the conversation.
    fn count_spend(&mut self, event: &EventBody) {
        let spend = event.spend();
        self.input_tokens += spend.input_tokens;
        self.output_tokens += spend.output_tokens;
        self.cache_write_tokens += spend.cache_write_tokens;
        self.cache_read_tokens += spend.cache_read_tokens;
        self.cost_usd += spend.cost_usd;
    }

    /// Adds the model's response to the conversation; its tool calls wait for their results.
    fn record_response(&mut self, content: &[ContentBlock]) {
        self.pending_calls = tool_calls(content);
        self.messages.push(Message {
            role: Role::Assistant,
            content: content.to_vec(),
        });
        if self.pending_calls.is_empty() {
            // A reply without a tool call: the agent must act or report, so say so.
            self.messages.push(user_text(prompt::NUDGE.to_string()));
        }
    }

    /// A finished command's result. Its output is kept apart too: what is sent may cut it.
    fn record_finished_command(
        &mut self,
        tool_use_id: &str,
        exit_code: Option<i64>,
        duration_ms: u64,
        timed_out: bool,
        output: &str,
    ) {
        self.started.remove(tool_use_id);
        if !output.is_empty() {
            let status = tools::shell_status(exit_code, duration_ms, timed_out);
            self.outputs
                .insert(tool_use_id.to_string(), (status, output.to_string()));
        }
        let content = tools::shell_result(exit_code, duration_ms, timed_out, output);
        self.record_result(tool_use_id, content, false);
    }

    /// A command a restart cut short: the agent is told it may or may not have run.
    fn record_interrupted_command(&mut self, tool_use_id: &str, reason: &str) {
        self.started.remove(tool_use_id);
        let content = format!(
            "INTERRUPTED: {reason}. The command may or may not have taken effect; it was not run again. Check the state before repeating it."
        );
        self.record_result(tool_use_id, content, true);
    }

    /// Keeps a tool call's result until every call of its response has one (see `flush_results`).
    fn record_result(&mut self, tool_use_id: &str, content: String, is_error: bool) {
        self.results.insert(
            tool_use_id.to_string(),
            ContentBlock::ToolResult {
                tool_use_id: tool_use_id.to_string(),
                content,
                is_error,
            },
        );
    }

    /// A request the server found too long is sent again shorter: to half its size.
    fn squeeze(&mut self) {
        let sent = self.request_tokens();
        self.squeezed = Some(self.squeezed.unwrap_or(u64::MAX).min(sent / 2));
    }

    /// Once every call of the last response has a result, they go to the model as one user message.
    fn flush_results(&mut self) {
        let mut content: Vec<ContentBlock> = Vec::new();
        for (id, _, _) in self.pending_calls.drain(..) {
            if let Some(result) = self.results.remove(&id) {
                content.push(result);
            }
        }
        content.extend(self.notes.drain(..).map(|text| ContentBlock::Text { text }));
        if content.is_empty() {
            return;
        }
        match self.messages.last_mut() {
            // Notes that follow the ticket or a nudge join that user message.
            Some(last) if last.role == Role::User => last.content.extend(content),
            _ => self.messages.push(Message {
                role: Role::User,
                content,
            }),
        }
    }

    /// The last note the agent was told, as it was stored (redacted).
    pub fn last_note(&self) -> Option<&str> {
        self.last_note.as_deref()
    }

    /// What to do next. Pure: depends only on the events applied.
    pub fn next(&self) -> Next {
        if self.finished {
            return Next::Finished;
        }
        if self.reported {
            return Next::Reported;
        }
        // The calls of one answer run in order, a report after the others: the agent may ask for
        // a last check and report in the same answer, and the check must still run.
        let (reports, others): (Vec<_>, Vec<_>) = self
            .pending_calls
            .iter()
            .partition(|(_, name, _)| name == tools::REPORT);
        for (id, name, input) in others.into_iter().chain(reports) {
            if self.results.contains_key(id) {
                continue;
            }
            if self.started.contains(id) {
                return Next::Interrupted { id: id.clone() };
            }
            return Next::RunTool {
                id: id.clone(),
                name: name.clone(),
                input: input.clone(),
            };
        }
        Next::CallModel
    }

    /// The messages to send to the model now: the conversation plus the results and notes not yet
    /// folded into it.
    pub fn messages(&self) -> Vec<Message> {
        let mut copy = self.clone();
        copy.flush_results();
        copy.fit();
        copy.rendered()
    }

    /// The estimated tokens of the messages a request would hold now.
    pub fn request_tokens(&self) -> u64 {
        tokens_of(&self.messages())
    }

    /// The messages as sent: cut outputs replaced by their shortened text.
    fn rendered(&self) -> Vec<Message> {
        if self.cuts.is_empty() {
            return self.messages.clone();
        }
        let mut messages = self.messages.clone();
        for block in messages.iter_mut().flat_map(|message| &mut message.content) {
            if let ContentBlock::ToolResult {
                tool_use_id,
                content,
                ..
            } = block
                && let Some(cut) = self.cuts.get(tool_use_id.as_str())
                && let Some((status, output)) = self.outputs.get(tool_use_id.as_str())
            {
                let summary = self.summaries.get(tool_use_id.as_str());
                *content = context::shortened(status, output, summary.map(String::as_str), *cut);
            }
        }
        messages
    }

    /// A command result's text as sent now, cut or whole.
    fn result_text(&self, id: &str) -> String {
        let Some((status, output)) = self.outputs.get(id) else {
            return String::new();
        };
        match self.cuts.get(id) {
            Some(cut) => context::shortened(
                status,
                output,
                self.summaries.get(id).map(String::as_str),
                *cut,
            ),
            None => format!("{status}\n{output}"),
        }
    }

    /// Keeps the messages within the budget: once they pass it, outputs are cut oldest first,
    /// first to their summary or head and tail, then to their status line, until they hold the
    /// budget's low-water share. The latest outputs are the last cut; commands, reasoning and the
    /// agent's words never are.
    fn fit(&mut self) {
        let limit = match (self.budget, self.squeezed) {
            (None, None) => return,
            (budget, squeezed) => budget
                .map_or(u64::MAX, |budget| budget.messages_tokens)
                .min(squeezed.unwrap_or(u64::MAX)),
        };
        let mut bytes = bytes_of(&self.rendered());
        let mut tokens = context::estimate_tokens(bytes);
        if tokens <= limit {
            return;
        }
        let low = (limit as f64 * context::LOW_WATER) as u64;
        let order: Vec<String> = self
            .messages
            .iter()
            .flat_map(|message| &message.content)
            .filter_map(|block| match block {
                ContentBlock::ToolResult { tool_use_id, .. }
                    if self.outputs.contains_key(tool_use_id.as_str()) =>
                {
                    Some(tool_use_id.clone())
                }
                ContentBlock::ToolResult { .. }
                | ContentBlock::Text { .. }
                | ContentBlock::ToolUse { .. } => None,
            })
            .collect();
        // The latest outputs are cut only once every older one is down to its status line.
        let (older, latest) = order.split_at(order.len().saturating_sub(KEPT_WHOLE));
        let steps = [
            (older, Cut::Short),
            (older, Cut::Bare),
            (latest, Cut::Short),
            (latest, Cut::Bare),
        ];
        for (ids, cut) in steps {
            for id in ids {
                if tokens <= low {
                    return;
                }
                if self.cuts.get(id).is_some_and(|done| *done >= cut) {
                    continue;
                }
                // Only this result's text changes: its size is told apart, not the whole again.
                let before = json_len(&self.result_text(id));
                self.cuts.insert(id.clone(), cut);
                bytes = bytes + json_len(&self.result_text(id)) - before;
                tokens = context::estimate_tokens(bytes);
            }
        }
    }

    /// Every token the model read or wrote, cached or not: what the token budget counts.
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens + self.cache_write_tokens + self.cache_read_tokens + self.output_tokens
    }

    /// Renames the tool calls of a new response whose ids an earlier response already used: some
    /// servers number calls afresh each turn (`call_0` every time), and the Anthropic API refuses a
    /// conversation whose `tool_use` ids repeat. Applied before the response is stored, so the
    /// stored ids are the ones every later turn (and a resumed session) sends. Pure.
    pub fn unique_tool_ids(&self, content: &mut [ContentBlock]) {
        let mut used: BTreeSet<String> = self
            .messages
            .iter()
            .flat_map(|message| &message.content)
            .filter_map(|block| match block {
                ContentBlock::ToolUse { id, .. } => Some(id.clone()),
                ContentBlock::Text { .. } | ContentBlock::ToolResult { .. } => None,
            })
            .collect();
        for block in content {
            if let ContentBlock::ToolUse { id, .. } = block {
                if used.contains(id.as_str()) {
                    let fresh = (2..)
                        .map(|n| format!("{id}_{n}"))
                        .find(|candidate| !used.contains(candidate))
                        .expect("an unused suffix");
                    *id = fresh;
                }
                used.insert(id.clone());
            }
        }
    }
}

/// How many of the latest outputs are the last to be cut.
const KEPT_WHOLE: usize = 2;

fn bytes_of(messages: &[Message]) -> usize {
    serde_json::to_vec(messages).map_or(0, |json| json.len())
}

fn tokens_of(messages: &[Message]) -> u64 {
    context::estimate_tokens(bytes_of(messages))
}

/// The length of a text as a JSON string: what it adds to a request.
fn json_len(text: &str) -> usize {
    serde_json::to_string(text).map_or(0, |json| json.len())
}

/// The tool calls of a model response, in order.
fn tool_calls(content: &[ContentBlock]) -> Vec<(String, String, serde_json::Value)> {
    content
        .iter()
        .filter_map(|block| match block {
            ContentBlock::ToolUse { id, name, input } => {
                Some((id.clone(), name.clone(), input.clone()))
            }
            ContentBlock::Text { .. } | ContentBlock::ToolResult { .. } => None,
        })
        .collect()
}

fn user_text(text: String) -> Message {
    Message {
        role: Role::User,
        content: vec![ContentBlock::Text { text }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::IncidentSpec;
    use serde_json::json;

    fn spec() -> IncidentSpec {
        serde_json::from_value(json!({"title": "api down"})).unwrap()
    }

    fn started() -> EventBody {
        EventBody::SessionStarted {
            generation: 1,
            spec: spec(),
            model: "m".into(),
            provider: "anthropic".into(),
            sandbox_image: "img".into(),
            requests: Default::default(),
        }
    }

    fn response(calls: &[(&str, &str)]) -> EventBody {
        EventBody::LlmResponse {
            turn: 1,
            content: calls
                .iter()
                .map(|(id, command)| ContentBlock::ToolUse {
                    id: id.to_string(),
                    name: "shell".into(),
                    input: json!({"command": command, "reasoning": "look"}),
                })
                .collect(),
            stop_reason: Some("tool_use".into()),
            input_tokens: 10,
            output_tokens: 5,
            cache_write_tokens: 0,
            cache_read_tokens: 0,
            cost_usd: 0.001,
        }
    }

    fn command_started(id: &str) -> EventBody {
        EventBody::CommandStarted {
            tool_use_id: id.into(),
            command: "ls".into(),
            reasoning: "look".into(),
            timeout_seconds: 120,
        }
    }

    fn finished(id: &str) -> EventBody {
        EventBody::CommandFinished {
            tool_use_id: id.into(),
            exit_code: Some(0),
            duration_ms: 5,
            timed_out: false,
            output: "ok".into(),
            output_bytes: 2,
            truncated: false,
        }
    }

    #[test]
    fn a_new_session_calls_the_model_with_the_ticket() {
        let history = History::from_events(&[started()]);
        assert_eq!(history.next(), Next::CallModel);
        assert_eq!(history.messages().len(), 1);
        assert_eq!(history.messages()[0].role, Role::User);
    }

    #[test]
    fn tool_calls_run_in_order_then_the_model_is_called() {
        let mut history = History::from_events(&[started(), response(&[("a", "ls"), ("b", "ps")])]);
        assert!(matches!(history.next(), Next::RunTool { ref id, .. } if id == "a"));
        history.apply(&command_started("a"));
        history.apply(&finished("a"));
        assert!(matches!(history.next(), Next::RunTool { ref id, .. } if id == "b"));
        history.apply(&command_started("b"));
        history.apply(&finished("b"));
        assert_eq!(history.next(), Next::CallModel);
        let messages = history.messages();
        assert_eq!(messages.len(), 3);
        let last = &messages[2];
        assert_eq!(last.role, Role::User);
        assert_eq!(last.content.len(), 2);
        assert_eq!((history.turns, history.total_tokens()), (1, 15));
    }

    #[test]
    fn a_command_started_but_not_finished_is_interrupted_not_rerun() {
        let events = [
            started(),
            response(&[("a", "rm -rf /tmp/x")]),
            command_started("a"),
        ];
        let mut history = History::from_events(&events);
        assert_eq!(history.next(), Next::Interrupted { id: "a".into() });
        history.apply(&EventBody::CommandInterrupted {
            tool_use_id: "a".into(),
            reason: "the controller restarted".into(),
        });
        assert_eq!(history.next(), Next::CallModel);
        let messages = history.messages();
        assert!(matches!(
            &messages[2].content[0],
            ContentBlock::ToolResult { is_error: true, content, .. } if content.starts_with("INTERRUPTED")
        ));
    }

    #[test]
    fn a_call_never_started_is_run_after_a_restart() {
        let history = History::from_events(&[started(), response(&[("a", "ls")])]);
        assert!(matches!(history.next(), Next::RunTool { ref id, .. } if id == "a"));
    }

    #[test]
    fn a_text_only_reply_is_followed_by_a_nudge() {
        let text = EventBody::LlmResponse {
            turn: 1,
            content: vec![ContentBlock::Text {
                text: "thinking".into(),
            }],
            stop_reason: Some("end_turn".into()),
            input_tokens: 1,
            output_tokens: 1,
            cache_write_tokens: 0,
            cache_read_tokens: 0,
            cost_usd: 0.0,
        };
        let history = History::from_events(&[started(), text]);
        assert_eq!(history.next(), Next::CallModel);
        let messages = history.messages();
        assert_eq!(messages.last().unwrap().role, Role::User);
    }

    #[test]
    fn ticket_updates_join_the_next_user_message() {
        let mut history = History::from_events(&[started(), response(&[("a", "ls")])]);
        history.apply(&EventBody::TicketUpdated {
            generation: 2,
            spec: spec(),
        });
        history.apply(&command_started("a"));
        history.apply(&finished("a"));
        let messages = history.messages();
        let last = messages.last().unwrap();
        assert!(matches!(&last.content[0], ContentBlock::ToolResult { .. }));
        assert!(
            matches!(&last.content[1], ContentBlock::Text { text } if text.contains("updated"))
        );
    }

    #[test]
    fn a_note_joins_the_ticket_before_the_first_call_and_is_remembered() {
        let mut history = History::from_events(&[started()]);
        history.apply(&EventBody::NoteReceived {
            note: "the alert group resolved".into(),
        });
        assert_eq!(history.next(), Next::CallModel);
        assert_eq!(history.last_note(), Some("the alert group resolved"));
        let messages = history.messages();
        assert_eq!(
            messages.len(),
            1,
            "one user message: the ticket and the note"
        );
        assert!(matches!(
            &messages[0].content[..],
            [ContentBlock::Text { .. }, ContentBlock::Text { text }]
                if text.contains("ticket itself is unchanged") && text.contains("resolved")
        ));
    }

    #[test]
    fn a_report_ends_the_loop() {
        let mut history = History::from_events(&[started()]);
        history.apply(&EventBody::Reported {
            tool_use_id: "r".into(),
            report: crate::incident::Report {
                outcome: crate::incident::Outcome::Resolved,
                summary: "fixed".into(),
                root_cause: String::new(),
                actions: vec![],
                verification: String::new(),
            },
        });
        assert_eq!(history.next(), Next::Reported);
    }

    #[test]
    fn tool_call_ids_repeated_across_turns_are_renamed_before_they_are_stored() {
        let mut history = History::from_events(&[started(), response(&[("call_0", "ls")])]);
        history.apply(&command_started("call_0"));
        history.apply(&finished("call_0"));
        // The server numbers its calls afresh: call_0 again, twice in one answer even.
        let EventBody::LlmResponse { mut content, .. } =
            response(&[("call_0", "uptime"), ("call_0", "df"), ("call_1", "free")])
        else {
            unreachable!()
        };
        history.unique_tool_ids(&mut content);
        let ids: Vec<&str> = content
            .iter()
            .filter_map(|block| match block {
                ContentBlock::ToolUse { id, .. } => Some(id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(ids, ["call_0_2", "call_0_3", "call_1"]);
        // Folded in, every id of the conversation is distinct.
        let mut renamed = response(&[]);
        if let EventBody::LlmResponse { content: c, .. } = &mut renamed {
            *c = content;
        }
        history.apply(&renamed);
        let all: Vec<String> = history
            .messages()
            .iter()
            .flat_map(|message| message.content.clone())
            .filter_map(|block| match block {
                ContentBlock::ToolUse { id, .. } => Some(id),
                _ => None,
            })
            .collect();
        let distinct: BTreeSet<&String> = all.iter().collect();
        assert_eq!(all.len(), distinct.len(), "{all:?}");
    }

    fn finished_with(id: &str, output: String) -> EventBody {
        EventBody::CommandFinished {
            tool_use_id: id.into(),
            exit_code: Some(0),
            duration_ms: 5,
            timed_out: false,
            output_bytes: output.len() as u64,
            output,
            truncated: false,
        }
    }

    /// A session of `turns` commands that each print `bytes`, a summary of every third arriving
    /// while the next model call is under way.
    fn long_session(turns: usize, bytes: usize) -> Vec<EventBody> {
        let mut events = vec![started()];
        for turn in 0..turns {
            let id = format!("t{turn}");
            events.push(response(&[(&id, &format!("cat /var/log/app-{turn}.log"))]));
            events.push(command_started(&id));
            events.push(finished_with(
                &id,
                format!("{turn:04} {}\n", "x".repeat(bytes)),
            ));
            if turn % 3 == 0 {
                events.push(EventBody::OutputSummary {
                    tool_use_id: id,
                    model: "small".into(),
                    summary: format!("log {turn} is all x"),
                    input_tokens: 1,
                    output_tokens: 1,
                    cache_write_tokens: 0,
                    cache_read_tokens: 0,
                    cost_usd: 0.0,
                });
            }
        }
        events
    }

    #[test]
    fn within_a_budget_what_is_sent_shrinks_and_what_is_stored_does_not() {
        let budget = Budget {
            messages_tokens: 20_000,
        };
        let events = long_session(30, 8 * 1024);
        let mut live = History::from_events_within(std::iter::empty(), Some(budget));
        let mut sent = Vec::new();
        for event in &events {
            if matches!(event, EventBody::LlmResponse { .. }) {
                // The request this answer answers.
                sent.push(live.messages());
            }
            live.apply(event);
        }
        sent.push(live.messages());
        let unbounded = History::from_events(&events).messages();
        assert!(tokens_of(&unbounded) > 60_000, "{}", tokens_of(&unbounded));
        for (turn, messages) in sent.iter().enumerate() {
            assert!(
                tokens_of(messages) <= budget.messages_tokens,
                "turn {turn}: {}",
                tokens_of(messages)
            );
        }
        // Every command the agent ran is still there, as are the latest outputs, whole.
        let last = sent.last().unwrap();
        let text = serde_json::to_string(last).unwrap();
        for turn in 0..30 {
            assert!(
                text.contains(&format!("cat /var/log/app-{turn}.log")),
                "{turn}"
            );
        }
        assert!(text.contains(&format!("0029 {}", "x".repeat(8 * 1024))));
        assert!(text.contains("was shortened to save context"));
        assert!(text.contains("run a read-only command again"));
        assert!(
            sent.iter().any(|messages| serde_json::to_string(messages)
                .unwrap()
                .contains("its summary: log 0 is all x")),
            "a summary replaces its output"
        );
        assert!(
            text.contains("was left out to save context"),
            "the oldest are cut further"
        );
        // Shrinking happens now and then, not each turn: most requests extend the one before.
        let extended = sent
            .windows(2)
            .filter(|pair| pair[1].starts_with(&pair[0]))
            .count();
        assert!(
            extended >= 15,
            "{extended} of 30 requests extend the previous"
        );
        // A resumed session sends what the live one would have: its fold is the same.
        let resumed = History::from_events_within(&events, Some(budget));
        assert_eq!(resumed.messages(), *last);
        for cut in (1..events.len()).step_by(9) {
            let resumed = History::from_events_within(&events[..cut], Some(budget));
            let mut live = History::from_events_within(std::iter::empty(), Some(budget));
            for event in &events[..cut] {
                live.apply(event);
            }
            assert_eq!(resumed.messages(), live.messages(), "after {cut} events");
        }
    }

    #[test]
    fn a_request_found_too_long_is_sent_again_at_half_its_size() {
        let events = long_session(2, 17 * 1024);
        let mut history = History::from_events(&events);
        let before = history.request_tokens();
        history.apply(&EventBody::LlmRetrying {
            retry: 1,
            max_retries: 1,
            delay_ms: 0,
            error: "HTTP 400 exceed_context_size_error: request (10724 tokens) exceeds the available context size (8192 tokens), try increasing it".into(),
        });
        let after = history.request_tokens();
        assert!(after <= before / 2, "{before} -> {after}");
        let text = serde_json::to_string(&history.messages()).unwrap();
        assert!(text.contains("cat /var/log/app-1.log"));
        // Other failures change nothing.
        let mut other = History::from_events(&events);
        other.apply(&EventBody::LlmRetrying {
            retry: 1,
            max_retries: 5,
            delay_ms: 10,
            error: "HTTP 529 overloaded_error: Overloaded".into(),
        });
        assert_eq!(other.request_tokens(), before);
    }

    #[test]
    fn cached_tokens_count_against_the_token_budget() {
        let mut history = History::from_events(&[started()]);
        history.apply(&EventBody::LlmResponse {
            turn: 1,
            content: vec![],
            stop_reason: None,
            input_tokens: 10,
            output_tokens: 5,
            cache_write_tokens: 1000,
            cache_read_tokens: 20_000,
            cost_usd: 0.01,
        });
        assert_eq!(history.total_tokens(), 21_015);
        assert_eq!(
            (history.cache_write_tokens, history.cache_read_tokens),
            (1000, 20_000)
        );
    }

    #[test]
    fn a_summarys_cached_tokens_are_kept_apart_from_its_input() {
        let mut history = History::from_events(&[started()]);
        history.apply(&EventBody::OutputSummary {
            tool_use_id: "t1".into(),
            model: "small".into(),
            summary: "fine".into(),
            input_tokens: 50,
            output_tokens: 7,
            cache_write_tokens: 3,
            cache_read_tokens: 900,
            cost_usd: 0.001,
        });
        assert_eq!(
            (
                history.input_tokens,
                history.cache_write_tokens,
                history.cache_read_tokens,
                history.output_tokens
            ),
            (50, 3, 900, 7)
        );
        assert_eq!(history.total_tokens(), 960);
        // A summary stored before the kinds were apart still reads, its cache counts at zero.
        let stored: EventBody = serde_json::from_value(json!({
            "kind": "output_summary",
            "tool_use_id": "t1",
            "model": "small",
            "summary": "fine",
            "input_tokens": 950,
            "output_tokens": 7,
            "cost_usd": 0.001
        }))
        .unwrap();
        assert!(matches!(
            stored,
            EventBody::OutputSummary {
                input_tokens: 950,
                cache_write_tokens: 0,
                cache_read_tokens: 0,
                ..
            }
        ));
    }

    #[test]
    fn a_report_beside_other_calls_comes_after_them() {
        let answer = EventBody::LlmResponse {
            turn: 1,
            content: vec![
                ContentBlock::ToolUse {
                    id: "r".into(),
                    name: tools::REPORT.into(),
                    input: json!({"outcome": "resolved", "summary": "done"}),
                },
                ContentBlock::ToolUse {
                    id: "c".into(),
                    name: tools::SHELL.into(),
                    input: json!({"command": "curl -sf http://api/health", "reasoning": "verify"}),
                },
            ],
            stop_reason: Some("tool_use".into()),
            input_tokens: 1,
            output_tokens: 1,
            cache_write_tokens: 0,
            cache_read_tokens: 0,
            cost_usd: 0.0,
        };
        let mut history = History::from_events(&[started(), answer]);
        assert!(
            matches!(history.next(), Next::RunTool { ref id, .. } if id == "c"),
            "{:?}",
            history.next()
        );
        history.apply(&command_started("c"));
        history.apply(&finished("c"));
        assert!(
            matches!(history.next(), Next::RunTool { ref id, .. } if id == "r"),
            "{:?}",
            history.next()
        );
    }
}
