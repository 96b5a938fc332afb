//! What each audit event says to people, described once per kind of event: the CLI's text
//! ([`crate::view::event_text`]) and the console's timeline render the same description, each in
//! its own medium. A new kind of event is described here and nowhere else. Pure: an event in, a
//! description out; neither escaping nor layout is decided here.

use std::borrow::Cow;

use crate::audit::EventBody;
use crate::incident::{IncidentSpec, Report};
use crate::llm::{ContentBlock, Usage};

/// One event, as people read it.
#[derive(Clone, Debug, PartialEq)]
pub struct Presented<'a> {
    /// The event's kind (`command_finished`).
    pub kind: &'static str,
    /// How it went, where that is worth a colour.
    pub tone: Tone,
    /// What happened, in a few words: the heading over the parts ("command interrupted").
    pub title: String,
    /// The same with its main facts, on one line: the heading of the terse text, where the parts
    /// meant for the page are left out ("command interrupted: the controller stopped").
    pub headline: String,
    /// What follows the heading, in order.
    pub parts: Vec<Part<'a>>,
}

/// How an event went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tone {
    #[default]
    Neutral,
    /// A command that succeeded.
    Ok,
    /// A command that failed, timed out or did not run.
    Failed,
    /// A call the Docker API proxy let through.
    Allowed,
    /// A call the Docker API proxy refused.
    Denied,
}

/// Who a part is for: the terse text (a terminal: its headline already says the figures) or the
/// page (which has room for more), or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Medium {
    Everywhere,
    Terminal,
    Page,
}

/// One part of an event's description.
#[derive(Clone, Debug, PartialEq)]
pub struct Part<'a> {
    pub medium: Medium,
    pub block: Block<'a>,
}

impl Part<'_> {
    pub fn shown_in(&self, medium: Medium) -> bool {
        self.medium == Medium::Everywhere || self.medium == medium
    }
}

/// What a part is, which says how each medium shows it.
#[derive(Clone, Debug, PartialEq)]
pub enum Block<'a> {
    /// A line of text.
    Line(Vec<Span>),
    /// Figures and asides, shown less prominently.
    Note(Vec<Span>),
    /// Text someone wrote (the model's reasoning, a ticket's description, a summary), as written.
    Writing(Cow<'a, str>),
    /// A command as it was run (`$ command`).
    Command(&'a str),
    /// A command's output.
    Output(&'a str),
    /// The agent's report, field by field.
    Report(&'a Report),
}

/// A piece of a line, marked for what it is.
#[derive(Clone, Debug, PartialEq)]
pub enum Span {
    Text(String),
    /// A name or a command, as typed.
    Code(String),
    /// What the line is about (a ticket's title).
    Strong(String),
}

impl Span {
    pub fn text(&self) -> &str {
        match self {
            Span::Text(text) | Span::Code(text) | Span::Strong(text) => text,
        }
    }
}

/// The spans' text, unmarked.
pub fn plain(spans: &[Span]) -> String {
    spans.iter().map(Span::text).collect()
}

impl<'a> Presented<'a> {
    /// Kind-less: [`present`] names the kind.
    fn new(title: impl Into<String>) -> Presented<'a> {
        let title = title.into();
        Presented {
            kind: "",
            tone: Tone::Neutral,
            headline: title.clone(),
            title,
            parts: Vec::new(),
        }
    }

    fn tone(mut self, tone: Tone) -> Self {
        self.tone = tone;
        self
    }

    fn headline(mut self, headline: impl Into<String>) -> Self {
        self.headline = headline.into();
        self
    }

    /// What the event is about: after the title on the headline, first under it on the page.
    fn subject(mut self, spans: Vec<Span>) -> Self {
        self.headline = format!("{}: {}", self.title, plain(&spans));
        self.page(Block::Line(spans))
    }

    fn part(mut self, medium: Medium, block: Block<'a>) -> Self {
        self.parts.push(Part { medium, block });
        self
    }

    fn everywhere(self, block: Block<'a>) -> Self {
        self.part(Medium::Everywhere, block)
    }

    fn terminal(self, block: Block<'a>) -> Self {
        self.part(Medium::Terminal, block)
    }

    fn page(self, block: Block<'a>) -> Self {
        self.part(Medium::Page, block)
    }

    /// `block` where there is one.
    fn everywhere_if(self, block: Option<Block<'a>>) -> Self {
        match block {
            Some(block) => self.everywhere(block),
            None => self,
        }
    }

    fn page_if(self, block: Option<Block<'a>>) -> Self {
        match block {
            Some(block) => self.page(block),
            None => self,
        }
    }
}

fn text(text: impl Into<String>) -> Span {
    Span::Text(text.into())
}

fn line(text: impl Into<String>) -> Block<'static> {
    Block::Line(vec![Span::Text(text.into())])
}

/// Text someone wrote, when it says anything.
fn writing(text: &str) -> Option<Block<'_>> {
    (!text.trim().is_empty()).then_some(Block::Writing(Cow::Borrowed(text)))
}

/// `why: …`, when there is a why.
fn why(reason: Option<&String>) -> Option<Block<'static>> {
    reason.map(|reason| line(format!("why: {reason}")))
}

/// Seconds to a tenth, from milliseconds.
pub fn seconds(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// ` / 3 cache write / 4 cache read`, when the prompt cache was used.
pub fn cached_tokens(write: u64, read: u64) -> String {
    match (write, read) {
        (0, 0) => String::new(),
        (write, read) => format!(" / {write} cache write / {read} cache read"),
    }
}

/// A serde enum's name (`needs_human`).
pub fn enum_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|value| value.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The event, described.
pub fn present(body: &EventBody) -> Presented<'_> {
    let presented = match body {
        EventBody::SessionStarted {
            spec,
            model,
            provider,
            sandbox_image,
            ..
        } => session_started(spec, provider, model, sandbox_image),
        EventBody::SandboxReady { container_id } => Presented::new(format!(
            "sandbox ready: {}",
            container_id.get(..12).unwrap_or(container_id)
        )),
        EventBody::LlmResponse {
            turn,
            content,
            input_tokens,
            output_tokens,
            cache_write_tokens,
            cache_read_tokens,
            cost_usd,
            ..
        } => {
            let usage = Usage {
                input_tokens: *input_tokens,
                cache_write_tokens: *cache_write_tokens,
                cache_read_tokens: *cache_read_tokens,
                output_tokens: *output_tokens,
            };
            model_turn(*turn, content, &usage, *cost_usd)
        }
        EventBody::LlmRetrying {
            retry,
            max_retries,
            delay_ms,
            error,
        } => Presented::new(EventBody::retrying_message(
            *retry,
            *max_retries,
            *delay_ms,
            error,
        )),
        // The message says what failed ("the model API failed: HTTP 401 …").
        EventBody::LlmFailed { message } => Presented::new(message.as_str()),
        EventBody::CommandStarted {
            command,
            reasoning,
            timeout_seconds,
            ..
        } => command_started(command, reasoning, *timeout_seconds),
        EventBody::CommandFinished {
            exit_code,
            duration_ms,
            timed_out,
            output,
            output_bytes,
            truncated,
            ..
        } => {
            let ended = command_ended(*timed_out, *exit_code, *duration_ms);
            command_finished(ended, output, *output_bytes, *truncated)
        }
        EventBody::CommandInterrupted { reason, .. } => {
            Presented::new("command interrupted").subject(vec![text(reason.as_str())])
        }
        EventBody::OutputSummary { summary, model, .. } => {
            let title = format!("summary ({model})");
            Presented::new(title.as_str())
                .headline(format!("{title}:"))
                .everywhere(Block::Writing(Cow::Borrowed(summary)))
        }
        EventBody::ToolRejected { tool, error, .. } => {
            Presented::new(format!("tool call {tool:?} rejected"))
                .subject(vec![text(error.as_str())])
        }
        EventBody::TicketUpdated { generation, spec } => ticket_updated(*generation, spec),
        EventBody::NoteReceived { note } => Presented::new("note for the agent")
            .headline("note for the agent:")
            .everywhere(Block::Writing(Cow::Borrowed(note))),
        EventBody::Reported { report, .. } => Presented::new("report")
            .headline(format!("report: {}", enum_text(&report.outcome)))
            .everywhere(Block::Report(report)),
        EventBody::DockerApi {
            allowed,
            method,
            path,
            target,
            reason,
            ..
        } => docker_api(*allowed, format!("{method} {path}"), target, reason),
        EventBody::SessionFinished {
            phase,
            reason,
            message,
            ..
        } => Presented::new(format!("session finished: {phase} ({reason})"))
            .subject(vec![text(message.as_str())]),
        EventBody::Notification { error, .. } => {
            Presented::new(body.notification_line().unwrap_or_default())
                .everywhere_if(why(error.as_ref()))
        }
    };
    Presented {
        kind: body.kind(),
        ..presented
    }
}

fn session_started<'a>(
    spec: &'a IncidentSpec,
    provider: &str,
    model: &str,
    sandbox_image: &str,
) -> Presented<'a> {
    Presented::new(format!("session started: {provider} model {model}"))
        .headline(format!("session started with {provider} model {model}"))
        .terminal(line(format!("ticket: {} ({})", spec.title, spec.severity)))
        .page(Block::Line(vec![
            text("Ticket: "),
            Span::Strong(spec.title.clone()),
            text(format!(" ({})", spec.severity)),
        ]))
        .everywhere_if(writing(&spec.description))
        .page(Block::Note(vec![
            text("sandbox image "),
            Span::Code(sandbox_image.to_string()),
        ]))
}

/// A model's answer: what it wrote and the tools it called; its tokens on the headline, and on
/// the page with its cost.
fn model_turn<'a>(
    turn: u32,
    content: &'a [ContentBlock],
    usage: &Usage,
    cost_usd: f64,
) -> Presented<'a> {
    let Usage {
        input_tokens,
        output_tokens,
        cache_write_tokens,
        cache_read_tokens,
    } = usage;
    let cached = cached_tokens(*cache_write_tokens, *cache_read_tokens);
    let presented = Presented::new(format!("model turn {turn}"))
        .headline(format!(
            "model turn {turn} ({input_tokens} in{cached} / {output_tokens} out)"
        ))
        .page(Block::Note(vec![text(format!(
            "{input_tokens} tokens in / {output_tokens} out, ${cost_usd:.4}"
        ))]));
    content.iter().fold(presented, |presented, block| {
        presented.everywhere_if(content_block(block))
    })
}

fn command_started<'a>(command: &'a str, reasoning: &str, timeout_seconds: u64) -> Presented<'a> {
    Presented::new("command")
        .headline(format!("$ {command}"))
        .page(Block::Command(command))
        .everywhere(Block::Writing(Cow::Owned(format!("why: {reasoning}"))))
        .terminal(line(format!("timeout: {timeout_seconds}s")))
        .page(Block::Note(vec![text(format!(
            "timeout {timeout_seconds}s"
        ))]))
}

/// How a command ended, in a few words (`exit 1 after 0.3s`), and its tone.
fn command_ended(timed_out: bool, exit_code: Option<i64>, duration_ms: u64) -> (String, Tone) {
    let (status, tone) = match (timed_out, exit_code) {
        (true, _) => ("timed out".to_string(), Tone::Failed),
        (false, Some(0)) => ("exit 0".to_string(), Tone::Ok),
        (false, Some(code)) => (format!("exit {code}"), Tone::Failed),
        (false, None) => ("not run".to_string(), Tone::Failed),
    };
    (format!("{status} after {}", seconds(duration_ms)), tone)
}

fn command_finished(
    (title, tone): (String, Tone),
    output: &str,
    output_bytes: u64,
    truncated: bool,
) -> Presented<'_> {
    let (cut, cut_why) = if truncated {
        (
            ", cut",
            ", cut by the sandbox (its first and last bytes kept)",
        )
    } else {
        ("", "")
    };
    Presented::new(title.as_str())
        .tone(tone)
        .headline(format!("{title}, {output_bytes} bytes of output{cut}"))
        .page(Block::Note(vec![text(format!(
            "{output_bytes} bytes of output{cut_why}"
        ))]))
        .everywhere(Block::Output(output))
}

fn ticket_updated(generation: i64, spec: &IncidentSpec) -> Presented<'_> {
    let title = format!("ticket updated (generation {generation})");
    Presented::new(title.as_str())
        .headline(format!("{title}: {}", spec.title))
        .page(Block::Line(vec![
            Span::Strong(spec.title.clone()),
            text(format!(" ({})", spec.severity)),
        ]))
        .page_if(writing(&spec.description))
}

/// A call through the Docker API proxy (`call`: method and path) and its decision.
fn docker_api(
    allowed: bool,
    call: String,
    target: &Option<String>,
    reason: &Option<String>,
) -> Presented<'static> {
    let (decision, tone) = if allowed {
        ("allowed", Tone::Allowed)
    } else {
        ("DENIED", Tone::Denied)
    };
    let mut subject = vec![Span::Code(call)];
    subject.extend(target.as_ref().map(|target| text(format!(" ({target})"))));
    Presented::new(format!("docker api {decision}"))
        .tone(tone)
        .subject(subject)
        .everywhere_if(why(reason.as_ref()))
}

/// A part of a model's answer worth showing: what it wrote and the tools it called.
fn content_block(block: &ContentBlock) -> Option<Block<'_>> {
    match block {
        ContentBlock::Text { text } => writing(text),
        ContentBlock::ToolUse { name, input, .. } => Some(Block::Line(match name.as_str() {
            "shell" => vec![
                text("calls shell: "),
                Span::Code(input["command"].as_str().unwrap_or("?").to_string()),
            ],
            other => vec![text("calls "), Span::Code(other.to_string())],
        })),
        ContentBlock::ToolResult { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown_in(presented: &Presented<'_>, medium: Medium) -> Vec<Block<'static>> {
        presented
            .parts
            .iter()
            .filter(|part| part.shown_in(medium))
            .map(|part| match &part.block {
                Block::Line(spans) => Block::Line(spans.clone()),
                Block::Note(spans) => Block::Note(spans.clone()),
                Block::Writing(text) => Block::Writing(Cow::Owned(text.to_string())),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_subject_follows_the_title_on_the_headline_and_stands_under_it_on_the_page() {
        let body = EventBody::DockerApi {
            allowed: false,
            action: "container_stop".into(),
            method: "POST".into(),
            path: "/containers/ctl/stop".into(),
            target: Some("container ctl".into()),
            reason: Some("off limits".into()),
        };
        let presented = present(&body);
        assert_eq!(presented.kind, "docker_api");
        assert_eq!(presented.tone, Tone::Denied);
        assert_eq!(presented.title, "docker api DENIED");
        assert_eq!(
            presented.headline,
            "docker api DENIED: POST /containers/ctl/stop (container ctl)"
        );
        assert_eq!(
            shown_in(&presented, Medium::Terminal),
            [line("why: off limits")]
        );
        assert_eq!(
            shown_in(&presented, Medium::Page),
            [
                Block::Line(vec![
                    Span::Code("POST /containers/ctl/stop".into()),
                    text(" (container ctl)")
                ]),
                line("why: off limits")
            ]
        );
    }

    #[test]
    fn a_model_turn_shows_what_it_wrote_and_called_but_not_blank_text() {
        let body = EventBody::LlmResponse {
            turn: 2,
            content: vec![
                ContentBlock::Text {
                    text: "look first".into(),
                },
                ContentBlock::Text { text: "  ".into() },
                ContentBlock::ToolUse {
                    id: "a".into(),
                    name: "shell".into(),
                    input: serde_json::json!({"command": "uptime"}),
                },
            ],
            stop_reason: None,
            input_tokens: 10,
            output_tokens: 5,
            cache_write_tokens: 0,
            cache_read_tokens: 4,
            cost_usd: 0.5,
        };
        let presented = present(&body);
        assert_eq!(
            presented.headline,
            "model turn 2 (10 in / 0 cache write / 4 cache read / 5 out)"
        );
        assert_eq!(
            shown_in(&presented, Medium::Terminal),
            [
                Block::Writing("look first".into()),
                Block::Line(vec![text("calls shell: "), Span::Code("uptime".into())])
            ]
        );
        assert_eq!(
            shown_in(&presented, Medium::Page)[0],
            Block::Note(vec![text("10 tokens in / 5 out, $0.5000")])
        );
    }
}
