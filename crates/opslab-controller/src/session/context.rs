//! The context budget: how many tokens a request may hold, how they are estimated, and how an old
//! command output is shortened in what is sent (never in what is stored). Pure.

/// Tokens estimated from bytes. Command output (paths, numbers, punctuation) runs at two to four
/// bytes a token with real tokenizers; three errs on the side of shrinking early.
pub const BYTES_PER_TOKEN: u64 = 3;

/// A context window for a model opslab does not know: small enough for most self-hosted servers.
pub const UNKNOWN_WINDOW: u64 = 32_768;

/// Once a request would pass the budget, older outputs are shortened until it holds this share of
/// it: the next turns then add to an unchanged prefix (which a prompt cache keeps) instead of each
/// shortening one more output.
pub const LOW_WATER: f64 = 0.6;

/// Bytes of an output's start and end kept when it is shortened.
const HEAD_BYTES: usize = 1024;
const TAIL_BYTES: usize = 1024;

/// The context window of a model, by its name's family. Pure.
pub fn window(model: &str) -> u64 {
    let families: &[(&str, u64)] = &[
        ("claude-", 200_000),
        ("gpt-4.1", 1_047_576),
        ("gpt-5", 400_000),
        ("gpt-4o", 128_000),
        ("o3", 200_000),
        ("o4-mini", 200_000),
        ("opslab-replay", 200_000),
    ];
    families
        .iter()
        .find(|(prefix, _)| model.starts_with(prefix))
        .map_or(UNKNOWN_WINDOW, |(_, tokens)| *tokens)
}

pub fn estimate_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(BYTES_PER_TOKEN)
}

/// What a session's requests must fit in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    /// The most tokens the conversation's messages may take (the window less the system prompt,
    /// the tools and room for the answer).
    pub messages_tokens: u64,
}

impl Budget {
    /// The budget of a session: `context_tokens` (the model's window when not set), less the room
    /// for the answer (at most a quarter of the window) and what every request carries unchanged.
    pub fn new(context_tokens: u64, response_max_tokens: u32, fixed_bytes: usize) -> Budget {
        let answer = u64::from(response_max_tokens).min(context_tokens / 4);
        Budget {
            messages_tokens: context_tokens
                .saturating_sub(answer)
                .saturating_sub(estimate_tokens(fixed_bytes)),
        }
    }
}

/// Whether a model API error says the prompt does not fit the context, in each real server's
/// words: Anthropic's `prompt is too long`, OpenAI's `context_length_exceeded`, llama.cpp's
/// `exceed_context_size_error`, vLLM's "maximum context length".
pub fn is_overflow(error: &str) -> bool {
    let error = error.to_ascii_lowercase();
    [
        "prompt is too long",
        "context_length_exceeded",
        "exceed_context_size_error",
        "exceeds the available context size",
        "maximum context length",
        "context window",
    ]
    .iter()
    .any(|marker| error.contains(marker))
}

/// How far a command's output is shortened in what is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cut {
    /// Its summary, or its head and tail, with the cut stated.
    Short,
    /// Its status line alone, with the cut stated.
    Bare,
}

/// The text an output is sent as once cut: the status line always, and what the agent should know
/// to get the rest back. Pure.
pub fn shortened(status: &str, output: &str, summary: Option<&str>, cut: Cut) -> String {
    let bytes = output.len();
    let again = "run a read-only command again to see it";
    match (cut, summary) {
        (Cut::Short, Some(summary)) => format!(
            "{status}\n[the output ({bytes} bytes) was shortened to save context; its summary: \
             {summary}; {again}]"
        ),
        (Cut::Short, None) => {
            if bytes <= HEAD_BYTES + TAIL_BYTES {
                return format!("{status}\n{output}");
            }
            let head = floor_boundary(output, HEAD_BYTES);
            let tail = ceil_boundary(output, bytes - TAIL_BYTES);
            format!(
                "{status}\n[the output ({bytes} bytes) was shortened to save context: its first \
                 {head} and last {tail_bytes} bytes are kept; {again}]\n{}\n[… {cut} bytes cut …]\n{}",
                &output[..head],
                &output[tail..],
                tail_bytes = bytes - tail,
                cut = tail - head,
            )
        }
        (Cut::Bare, _) => {
            format!("{status}\n[the output ({bytes} bytes) was left out to save context; {again}]")
        }
    }
}

fn floor_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

fn ceil_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index += 1;
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_known_by_family() {
        assert_eq!(window("claude-sonnet-4-5-20250929"), 200_000);
        assert_eq!(window("gpt-4o-mini"), 128_000);
        assert_eq!(window("qwen2.5:7b"), UNKNOWN_WINDOW);
    }

    #[test]
    fn each_server_says_too_long_in_its_own_words() {
        for said in [
            "HTTP 400 invalid_request_error: prompt is too long: 215000 tokens > 200000 maximum",
            "HTTP 400 context_length_exceeded invalid_request_error: This model's maximum context length is 128000 tokens",
            "HTTP 400 exceed_context_size_error: request (10724 tokens) exceeds the available context size (8192 tokens)",
        ] {
            assert!(is_overflow(said), "{said}");
        }
        assert!(!is_overflow(
            "HTTP 400 invalid_request_error: tools.0: bad schema"
        ));
    }

    #[test]
    fn a_shortened_output_keeps_its_status_and_says_so() {
        let output = format!("{}é{}", "a".repeat(3000), "z".repeat(3000));
        let short = shortened("[exit code 0 after 0.1s]", &output, None, Cut::Short);
        assert!(short.starts_with("[exit code 0 after 0.1s]\n[the output (6002 bytes)"));
        assert!(short.contains("run a read-only command again"));
        assert!(short.len() < 2500, "{}", short.len());
        assert!(short.ends_with(&"z".repeat(1024)));
        let summary = shortened(
            "[exit code 0 after 0.1s]",
            &output,
            Some("all fine"),
            Cut::Short,
        );
        assert!(summary.contains("its summary: all fine"), "{summary}");
        let bare = shortened("[exit code 0 after 0.1s]", &output, Some("x"), Cut::Bare);
        assert!(bare.len() < 200 && bare.contains("left out"), "{bare}");
        // An output already short is sent whole.
        assert_eq!(
            shortened("[s]", "tiny", None, Cut::Short),
            "[s]\ntiny".to_string()
        );
    }

    #[test]
    fn a_budget_leaves_room_for_the_answer_and_the_fixed_part() {
        let budget = Budget::new(8192, 4096, 3000);
        assert_eq!(budget.messages_tokens, 8192 - 2048 - 1000);
    }
}
