//! A session as a timeline: its summary and chain verification, its commands on a time axis, and
//! every event in order, each with a deep link (`#event-SEQ`).

use maud::{Markup, html};

use super::layout::page;
use super::{dollars, incident_href, segment, session_href, shown, when};
use crate::audit::{Broken, ChainCheck, Draft, Event, SessionRecord, SessionState};
use crate::console::timeline::{self, Entry, Gantt};
use crate::presentation::{Block, Medium, Presented, Span, Tone, present, seconds};

/// The chain check as the page shows it: computed by [`crate::audit::Store::verify`], the code
/// behind `opslab audit verify`.
#[derive(Clone, Debug, PartialEq)]
pub enum Verification {
    Checked(ChainCheck),
    /// The check itself failed (the store did not answer).
    Failed(String),
}

fn badge(verification: &Verification) -> Markup {
    html! {
        @match verification {
            Verification::Checked(ChainCheck::Intact { events }) => {
                span id="verification" class="badge verified" title="the hash chain was recomputed, as `opslab audit verify` does" {
                    "verified (" (events) " events)"
                }
            }
            Verification::Checked(ChainCheck::Broken(Broken { seq, reason })) => {
                span id="verification" class="badge broken" { "broken at seq " (seq) }
                " " a href=(format!("#event-{seq}")) { "first broken link" } ": " (shown(reason))
            }
            Verification::Failed(message) => {
                span id="verification" class="badge broken" { "not verified" } " " (shown(message))
            }
        }
    }
}

/// Who, what, how much, and whether the trail holds. Also what the live feed replaces.
pub fn summary(session: &SessionRecord, verification: &Verification) -> Markup {
    html! {
        div id="summary" {
            dl.fields {
                dt { "Incident" }
                dd { a href=(incident_href(&session.incident_namespace, &session.incident_name)) {
                    (shown(&session.incident_namespace)) "/" (shown(&session.incident_name))
                } " (attempt " (session.attempt) ")" }
                dt { "Phase" }
                dd {
                    span class=(format!("phase phase-{}", session.current_phase())) { (session.current_phase()) }
                    @if let Some(reason) = &session.reason { span.reason { (shown(reason)) } }
                    @if let Some(message) = session.message.as_deref().filter(|m| !m.trim().is_empty()) {
                        ": " (shown(message))
                    }
                }
                dt { "Started" } dd { (when(Some(session.started_at))) }
                dt { "Finished" } dd { (when(session.finished_at)) }
                dt { "Usage" }
                dd {
                    (session.turns) " turns, " span id="command-count" { (session.commands) } " commands, "
                    (session.input_tokens) " tokens in / " (session.output_tokens) " out, estimated "
                    (dollars(session.cost_usd))
                }
                dt { "Audit trail" } dd { (badge(verification)) }
            }
        }
    }
}

const GANTT_WIDTH: u64 = 1000;
const GANTT_LABEL: u64 = 300;
const GANTT_ROW: u64 = 20;
/// Up to this many commands, each gets a full, labelled row.
const GANTT_FULL_ROWS: u64 = 40;

/// The commands on a time axis (SVG: its geometry is attributes, which the CSP allows, not inline
/// styles). Each bar links to its command. Also what the live feed replaces.
pub fn gantt(axis: &Gantt) -> Markup {
    let span = axis.span_ms.max(1);
    // Room on the right for the last tick's label.
    let track = GANTT_WIDTH - GANTT_LABEL - 40;
    let x = |ms: u64| GANTT_LABEL + ms * track / span;
    // A long session's rows shrink to keep the axis on a screen or two; below a readable height
    // they lose their labels (each bar's tooltip still names its command).
    let count = axis.bars.len() as u64;
    let row_height = if count <= GANTT_FULL_ROWS {
        GANTT_ROW
    } else {
        (GANTT_ROW * GANTT_FULL_ROWS / count).max(2)
    };
    let labelled = row_height == GANTT_ROW;
    let bar_height = if labelled {
        GANTT_ROW - 6
    } else {
        (row_height - 1).max(1)
    };
    let height = row_height * count + GANTT_ROW + 6;
    html! {
        div id="gantt" {
            @if axis.bars.is_empty() {
                p.muted { "No commands yet." }
            } @else {
                svg.gantt xmlns="http://www.w3.org/2000/svg" role="img"
                    viewBox=(format!("0 0 {GANTT_WIDTH} {height}")) aria-label="commands over time" {
                    @for tick in 0..=4u64 {
                        @let at = span * tick / 4;
                        line x1=(x(at)) x2=(x(at)) y1="0" y2=(height) {}
                        text x=(x(at) + 2) y=(height - 4) { (seconds(at)) }
                    }
                    @for (row, bar) in axis.bars.iter().enumerate() {
                        @let y = row as u64 * row_height + 4;
                        a href=(format!("#event-{}", bar.seq)) {
                            title { (shown(&bar.command)) " — " (seconds(bar.duration_ms)) }
                            @if labelled {
                                @let label: String = shown(&bar.command).chars().take(42).collect();
                                text x="4" y=(y + 13) { (label) }
                            }
                            rect class=(bar.state.class()) x=(x(bar.start_ms)) y=(y)
                                width=((bar.duration_ms * track / span).max(2)) height=(bar_height) {}
                        }
                    }
                }
            }
        }
    }
}

fn output_block(session_id: &str, seq: i64, output: &str) -> Markup {
    let folded = timeline::fold(output);
    html! {
        @if output.is_empty() {
            p.muted { "no output" }
        } @else {
            pre.output { (shown(&folded.head.join("\n"))) }
            @if folded.hidden > 0 {
                p.cut {
                    "… " (folded.hidden) " lines hidden here (the first and last "
                    (timeline::FOLD_KEEP_LINES) " are shown) · "
                    a href=(format!("/ui/sessions/{}/output/{seq}", segment(session_id))) { "full output" }
                }
                pre.output { (shown(&folded.tail.join("\n"))) }
            }
        }
    }
}

/// The colour of an event, as a class of its item.
fn tone_class(tone: Tone) -> &'static str {
    match tone {
        Tone::Neutral => "",
        Tone::Ok => "ok",
        Tone::Failed => "failed",
        Tone::Allowed => "allowed",
        Tone::Denied => "denied",
    }
}

fn spans(spans: &[Span]) -> Markup {
    html! {
        @for span in spans {
            @match span {
                Span::Text(text) => (shown(text)),
                Span::Code(text) => code { (shown(text)) },
                Span::Strong(text) => strong { (shown(text)) },
            }
        }
    }
}

/// A part of an event, under its title.
fn block(session_id: &str, seq: i64, block: &Block<'_>) -> Markup {
    html! {
        @match block {
            Block::Line(line) => p { (spans(line)) },
            Block::Note(line) => p.muted { (spans(line)) },
            Block::Writing(text) => div.reasoning { (shown(text)) },
            Block::Command(command) => pre.command { "$ " (shown(command)) },
            Block::Output(output) => (output_block(session_id, seq, output)),
            Block::Report(report) => (super::incidents::report_fields(report)),
        }
    }
}

/// The entry's parts for the page, after the command a command's end belongs to.
fn event_body(session_id: &str, entry: &Entry<'_>, presented: &Presented<'_>) -> Markup {
    html! {
        @if let Some(command) = entry.command { p.muted { code { "$ " (shown(command)) } } }
        @for part in presented.parts.iter().filter(|part| part.shown_in(Medium::Page)) {
            (block(session_id, entry.event.seq, &part.block))
        }
    }
}

/// An event's time of day in UTC (`10:04:05`).
fn time_of_day(at: jiff::Timestamp) -> String {
    at.strftime("%H:%M:%S").to_string()
}

/// Timeline items for the entries whose seq is above `after` (all: 0).
pub fn event_items(session_id: &str, entries: &[Entry<'_>], after: i64) -> Markup {
    html! {
        @for entry in entries.iter().filter(|entry| entry.event.seq > after) {
            @let seq = entry.event.seq;
            @let presented = present(&entry.event.body);
            li id=(format!("event-{seq}")) class=(format!("kind-{} {}", presented.kind, tone_class(presented.tone))) {
                div.event-head {
                    a.seq href=(format!("#event-{seq}")) { "#" (seq) }
                    time datetime=(entry.event.at.to_string()) { (time_of_day(entry.event.at)) }
                    span.what { (shown(&presented.title)) }
                    span.cost { (dollars(entry.cost_so_far)) " so far" }
                }
                (event_body(session_id, entry, &presented))
            }
        }
    }
}

/// The model's answer as it is being streamed, below the timeline, while there is one. Also what
/// the live feed replaces.
pub fn draft(draft: Option<&Draft>) -> Markup {
    html! {
        div id="draft" {
            @if let Some(draft) = draft {
                div.event-head {
                    span.what { "model turn " (draft.turn) ", as it is written…" }
                }
                div.reasoning { (shown(&draft.text)) }
            }
        }
    }
}

/// What a session's page shows below its summary: the time axis, the timeline, and the answer
/// being streamed. Apart from [`session_page`] so that it renders while the chain is checked.
pub fn session_timeline(session: &SessionRecord, events: &[Event], now: jiff::Timestamp) -> Markup {
    let running = session.state == SessionState::Running;
    let entries = timeline::entries(events);
    let axis = timeline::gantt(events, running.then_some(now));
    html! {
        h2 { "Commands over time" }
        (gantt(&axis))
        h2 { "Timeline" }
        ol id="timeline" class="timeline" { (event_items(&session.id, &entries, 0)) }
        @if running { (draft(None)) }
    }
}

/// `/ui/sessions/ID`: the summary, then its [`session_timeline`] (of the events up to `last`);
/// live while the session runs.
pub fn session_page(
    session: &SessionRecord,
    last: i64,
    verification: &Verification,
    timeline: Markup,
) -> Markup {
    let running = session.state == SessionState::Running;
    let live = running.then(|| format!("{}/live?after={last}", session_href(&session.id)));
    page(
        &format!("Session {}", session.id),
        live.as_deref(),
        html! {
            h1 { "Session " code { (shown(&session.id)) } }
            (summary(session, verification))
            (timeline)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::EventBody;
    use crate::incident::Phase;

    #[test]
    fn events_show_their_time_of_day_in_utc() {
        let at = |text: &str| text.parse().unwrap();
        assert_eq!(time_of_day(at("2026-12-06T10:04:05.123456Z")), "10:04:05");
        assert_eq!(time_of_day(at("2026-12-06T11:04:05+01:00")), "10:04:05");
    }

    fn session() -> SessionRecord {
        SessionRecord {
            id: "s-1".into(),
            incident_uid: "u".into(),
            incident_namespace: "default".into(),
            incident_name: "web".into(),
            attempt: 1,
            generation: 1,
            state: SessionState::Running,
            phase: Phase::Investigating,
            outcome: None,
            reason: None,
            started_at: "2026-01-01T00:00:00Z".parse().unwrap(),
            finished_at: None,
            turns: 1,
            commands: 1,
            input_tokens: 10,
            output_tokens: 2,
            cache_write_tokens: 0,
            cache_read_tokens: 0,
            report: None,
            cost_usd: 0.5,
            message: None,
            requests: Default::default(),
        }
    }

    fn event(seq: i64, body: EventBody) -> Event {
        Event {
            session_id: "s-1".into(),
            seq,
            at: format!("2026-01-01T00:00:0{seq}Z").parse().unwrap(),
            body,
            hash: String::new(),
        }
    }

    #[test]
    fn a_long_sessions_time_axis_stays_short() {
        let bar = |n: u64| timeline::Bar {
            seq: n as i64,
            command: format!("cmd {n}"),
            start_ms: n * 100,
            duration_ms: 50,
            state: timeline::BarState::Ok,
        };
        let few = gantt(&Gantt {
            bars: (0..3).map(bar).collect(),
            span_ms: 300,
        })
        .into_string();
        assert_eq!(few.matches("<rect").count(), 3);
        assert!(few.contains(">cmd 2</text>"), "{few}");
        let many = gantt(&Gantt {
            bars: (0..1000).map(bar).collect(),
            span_ms: 100_000,
        })
        .into_string();
        assert_eq!(many.matches("<rect").count(), 1000);
        assert!(
            !many.contains(">cmd 2</text>"),
            "rows this thin lose their labels"
        );
        assert!(many.contains("<title>cmd 2 — 0.1s</title>"));
        assert!(
            many.contains("viewBox=\"0 0 1000 2026\""),
            "two units a row: {}",
            &many[..300]
        );
    }

    #[test]
    fn hostile_text_is_escaped_and_long_output_folded() {
        let hostile = "<script>window.pwned=1</script>\u{1b}[31m\u{202e}";
        let long: String = (1..=100).map(|n| format!("line {n}\n")).collect();
        let events = [
            event(
                1,
                EventBody::CommandStarted {
                    tool_use_id: "t".into(),
                    command: format!("echo '{hostile}'"),
                    reasoning: "<img src=x onerror=alert(1)>".into(),
                    timeout_seconds: 5,
                },
            ),
            event(
                2,
                EventBody::CommandFinished {
                    tool_use_id: "t".into(),
                    exit_code: Some(0),
                    duration_ms: 10,
                    timed_out: false,
                    output: format!("{hostile}\n{long}"),
                    output_bytes: 900,
                    truncated: false,
                },
            ),
        ];
        let verification = Verification::Checked(ChainCheck::Intact { events: 2 });
        let timeline =
            session_timeline(&session(), &events, "2026-01-01T00:00:09Z".parse().unwrap());
        let html = session_page(&session(), 2, &verification, timeline).into_string();
        assert!(!html.contains("<script>window"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;script&gt;window.pwned=1&lt;/script&gt;\\u{1b}[31m\\u{202e}"));
        assert!(html.contains("71 lines hidden here"), "{html}");
        assert!(html.contains("href=\"/ui/sessions/s-1/output/2\""));
        assert!(html.contains("id=\"event-2\""));
        // A running session's page follows its feed from its last event.
        assert!(html.contains("data-live=\"/ui/sessions/s-1/live?after=2\""));
        assert!(html.contains("verified (2 events)"));
        let broken = Verification::Checked(ChainCheck::Broken(Broken {
            seq: 2,
            reason: "the hash does not match".into(),
        }));
        assert!(
            summary(&session(), &broken)
                .into_string()
                .contains("broken at seq 2")
        );
    }
}
