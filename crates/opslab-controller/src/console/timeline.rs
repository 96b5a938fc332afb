//! A session's events as a reviewer reads them: each with the cost accrued so far and, for a
//! finished command, the command it ends; the commands as bars on a time axis; long outputs folded.
//! Pure: events in, data out (the pages render it).

use crate::audit::{Event, EventBody};

/// One event and what the page shows beside it.
#[derive(Debug, PartialEq)]
pub struct Entry<'a> {
    pub event: &'a Event,
    /// Estimated model spend up to and with this event, in US dollars.
    pub cost_so_far: f64,
    /// For a command's end (or interruption): the command.
    pub command: Option<&'a str>,
}

/// How a command on the time axis ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarState {
    Ok,
    Failed,
    Running,
    Interrupted,
}

impl BarState {
    pub fn class(self) -> &'static str {
        match self {
            BarState::Ok => "ok",
            BarState::Failed => "failed",
            BarState::Running => "running",
            BarState::Interrupted => "failed",
        }
    }
}

/// One command on the time axis, in milliseconds from the session's first event.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    /// The seq of the command's start: the bar links to it.
    pub seq: i64,
    pub command: String,
    pub start_ms: u64,
    pub duration_ms: u64,
    pub state: BarState,
}

/// The session's time axis: its commands, and how long the axis is.
#[derive(Clone, Debug, PartialEq)]
pub struct Gantt {
    pub bars: Vec<Bar>,
    pub span_ms: u64,
}

/// Each event with its accrued cost and, for a command's end, its command.
pub fn entries(events: &[Event]) -> Vec<Entry<'_>> {
    let mut cost = 0.0;
    let mut started: Vec<(&str, &str)> = Vec::new();
    events
        .iter()
        .map(|event| {
            let mut command = None;
            match &event.body {
                EventBody::LlmResponse { cost_usd, .. }
                | EventBody::OutputSummary { cost_usd, .. } => cost += cost_usd,
                EventBody::CommandStarted {
                    tool_use_id,
                    command: text,
                    ..
                } => started.push((tool_use_id.as_str(), text.as_str())),
                EventBody::CommandFinished { tool_use_id, .. }
                | EventBody::CommandInterrupted { tool_use_id, .. } => {
                    command = started
                        .iter()
                        .rev()
                        .find(|(id, _)| *id == tool_use_id.as_str())
                        .map(|(_, text)| *text);
                }
                _ => {}
            }
            Entry {
                event,
                cost_so_far: cost,
                command,
            }
        })
        .collect()
}

/// The commands on a time axis from the first event to the last (or to `now`, for a running
/// session whose last command has not ended).
pub fn gantt(events: &[Event], now: Option<jiff::Timestamp>) -> Gantt {
    let Some(origin) = events.first().map(|event| event.at.as_millisecond()) else {
        return Gantt {
            bars: Vec::new(),
            span_ms: 0,
        };
    };
    let last = events
        .iter()
        .map(|event| event.at.as_millisecond())
        .max()
        .unwrap_or(origin);
    let end = now.map_or(last, |now| now.as_millisecond().max(last));
    let offset = |at: i64| (at - origin).max(0) as u64;
    let mut bars: Vec<(String, Bar)> = Vec::new();
    for event in events {
        let at = event.at.as_millisecond();
        match &event.body {
            EventBody::CommandStarted {
                tool_use_id,
                command,
                ..
            } => bars.push((
                tool_use_id.clone(),
                Bar {
                    seq: event.seq,
                    command: command.clone(),
                    start_ms: offset(at),
                    duration_ms: (end - at).max(0) as u64,
                    state: BarState::Running,
                },
            )),
            EventBody::CommandFinished {
                tool_use_id,
                exit_code,
                duration_ms,
                timed_out,
                ..
            } => {
                if let Some((_, bar)) = bars.iter_mut().rev().find(|(id, _)| id == tool_use_id) {
                    bar.duration_ms = *duration_ms;
                    bar.state = match (timed_out, exit_code) {
                        (false, Some(0)) => BarState::Ok,
                        _ => BarState::Failed,
                    };
                }
            }
            EventBody::CommandInterrupted { tool_use_id, .. } => {
                if let Some((_, bar)) = bars.iter_mut().rev().find(|(id, _)| id == tool_use_id) {
                    bar.duration_ms = offset(at).saturating_sub(bar.start_ms);
                    bar.state = BarState::Interrupted;
                }
            }
            _ => {}
        }
    }
    let bars: Vec<Bar> = bars.into_iter().map(|(_, bar)| bar).collect();
    let span_ms = bars
        .iter()
        .map(|bar| bar.start_ms + bar.duration_ms)
        .chain(std::iter::once(offset(end)))
        .max()
        .unwrap_or(0);
    Gantt { bars, span_ms }
}

/// Lines shown from each end of a long output.
pub const FOLD_KEEP_LINES: usize = 15;

/// An output as the page shows it: whole, or its first and last lines with how many are hidden.
#[derive(Debug, PartialEq)]
pub struct Folded<'a> {
    pub head: Vec<&'a str>,
    /// Lines left out between head and tail (0: the output is whole).
    pub hidden: usize,
    pub tail: Vec<&'a str>,
}

pub fn fold(output: &str) -> Folded<'_> {
    let lines: Vec<&str> = output.lines().collect();
    if lines.len() <= 2 * FOLD_KEEP_LINES + 1 {
        return Folded {
            head: lines,
            hidden: 0,
            tail: Vec::new(),
        };
    }
    Folded {
        head: lines[..FOLD_KEEP_LINES].to_vec(),
        hidden: lines.len() - 2 * FOLD_KEEP_LINES,
        tail: lines[lines.len() - FOLD_KEEP_LINES..].to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::fixtures::{command_finished, command_started, event};

    fn turn(seq: i64, at: &str, cost_usd: f64) -> Event {
        event(
            seq,
            at,
            EventBody::LlmResponse {
                turn: seq as u32,
                content: Vec::new(),
                stop_reason: None,
                input_tokens: 1,
                output_tokens: 1,
                cache_write_tokens: 0,
                cache_read_tokens: 0,
                cost_usd,
            },
        )
    }

    #[test]
    fn cost_accrues_and_a_commands_end_names_it() {
        let events = [
            turn(1, "2026-01-01T00:00:00Z", 0.25),
            command_started(2, "2026-01-01T00:00:01Z", "a", "uptime"),
            command_finished(3, "2026-01-01T00:00:02Z", "a", 0, 900),
            turn(4, "2026-01-01T00:00:03Z", 0.5),
        ];
        let shown: Vec<(f64, Option<&str>)> = entries(&events)
            .iter()
            .map(|entry| (entry.cost_so_far, entry.command))
            .collect();
        assert_eq!(
            shown,
            [
                (0.25, None),
                (0.25, None),
                (0.25, Some("uptime")),
                (0.75, None)
            ]
        );
    }

    #[test]
    fn commands_lie_on_the_axis_where_they_ran() {
        let events = [
            turn(1, "2026-01-01T00:00:00Z", 0.0),
            command_started(2, "2026-01-01T00:00:02Z", "a", "true"),
            command_finished(3, "2026-01-01T00:00:03Z", "a", 0, 1000),
            command_started(4, "2026-01-01T00:00:05Z", "b", "false"),
            command_finished(5, "2026-01-01T00:00:05.5Z", "b", 1, 500),
            command_started(6, "2026-01-01T00:00:06Z", "c", "sleep 60"),
        ];
        let axis = gantt(&events, Some("2026-01-01T00:00:10Z".parse().unwrap()));
        let bars: Vec<(u64, u64, BarState)> = axis
            .bars
            .iter()
            .map(|bar| (bar.start_ms, bar.duration_ms, bar.state))
            .collect();
        assert_eq!(
            bars,
            [
                (2000, 1000, BarState::Ok),
                (5000, 500, BarState::Failed),
                (6000, 4000, BarState::Running),
            ]
        );
        assert_eq!(axis.span_ms, 10_000);
        assert_eq!(axis.bars[2].seq, 6);
        assert_eq!(gantt(&[], None).bars, []);
    }

    #[test]
    fn a_long_output_keeps_its_ends_and_says_what_it_hides() {
        let short = "a\nb\nc";
        assert_eq!(fold(short).head, ["a", "b", "c"]);
        assert_eq!(fold(short).hidden, 0);
        let long: String = (1..=100).map(|n| format!("line {n}\n")).collect();
        let folded = fold(&long);
        assert_eq!(folded.head.len(), FOLD_KEEP_LINES);
        assert_eq!(folded.head[0], "line 1");
        assert_eq!(folded.hidden, 100 - 2 * FOLD_KEEP_LINES);
        assert_eq!(folded.tail.last(), Some(&"line 100"));
    }
}
