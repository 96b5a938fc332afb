//! Command output, capped as it streams and redacted before it is cut: the head and the tail are
//! kept, the middle is counted and dropped, so 50 MB of output costs no more memory than 64 KiB.
//!
//! Redaction comes before the cut, not after: a margin of raw output is kept past each limit, the
//! secrets in head and tail are found with the margin in view, and each cut is moved off any
//! secret it would split (the head's back to the secret's start, the tail's on to its end), so a
//! secret straddling the cut is dropped or kept whole, then redacted, never kept in part. Chunk
//! boundaries play no part: the kept bytes are joined before anything is looked at. Pure.

use std::collections::VecDeque;
use std::ops::Range;

use crate::audit::Redactor;

/// Raw output kept past each limit, so that a secret straddling a cut is seen whole: longer than
/// any single-line credential and than an 8192-bit RSA private key in PEM (about 6.5 KB). A longer
/// secret that straddles the cut is still not kept in part if its shape matches what is in view
/// (a private key cut open is matched from its BEGIN line on).
const MARGIN: usize = 16 * 1024;

/// Collects a command's output with bounded memory.
#[derive(Clone, Debug)]
pub struct CappedOutput {
    head_limit: usize,
    tail_limit: usize,
    redactor: Redactor,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

/// The output as kept: redacted text safe to store and show, and how much there was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    pub text: String,
    pub total_bytes: u64,
    pub truncated: bool,
}

impl CappedOutput {
    /// Keeps `head_limit` bytes from the start and `tail_limit` from the end, redacted by `redactor`.
    pub fn new(head_limit: usize, tail_limit: usize, redactor: Redactor) -> Self {
        CappedOutput {
            head_limit,
            tail_limit,
            redactor,
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
        }
    }

    pub fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let head_room = (self.head_limit + MARGIN).saturating_sub(self.head.len());
        if head_room > 0 {
            let take = head_room.min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        let tail_limit = self.tail_limit + MARGIN;
        if bytes.is_empty() {
            return;
        }
        if bytes.len() >= tail_limit {
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - tail_limit..]);
            return;
        }
        let overflow = (self.tail.len() + bytes.len()).saturating_sub(tail_limit);
        self.tail.drain(..overflow);
        self.tail.extend(bytes);
    }

    /// The kept output, redacted, with the cut stated where there was one.
    pub fn finish(self) -> Captured {
        let CappedOutput {
            head_limit,
            tail_limit,
            redactor,
            mut head,
            tail,
            total,
        } = self;
        let mut tail = Vec::from(tail);
        let truncated = total > (head_limit + tail_limit) as u64;
        let dropped = total > (head.len() + tail.len()) as u64;
        if !dropped {
            // Nothing was dropped: the head and the tail are one piece, a character across them whole.
            head.extend_from_slice(&tail);
        }
        if !truncated {
            return Captured {
                text: redactor.redact(&printable(&head)),
                total_bytes: total,
                truncated,
            };
        }
        let (head_text, tail_text) = if dropped {
            // The pieces of a character split by the dropped middle are cut too, rather than shown
            // as U+FFFD on either side.
            head.truncate(head.len() - incomplete_suffix(&head));
            tail.drain(..continuation_prefix(&tail));
            (printable(&head), printable(&tail))
        } else {
            let whole = printable(&head);
            (whole.clone(), whole)
        };
        let head_spans = redactor.secret_spans(&head_text);
        let head_end = cut_before(&head_text, head_limit, &head_spans);
        let tail_spans = if dropped {
            redactor.secret_spans(&tail_text)
        } else {
            head_spans
        };
        let mut tail_start = tail_text.len().saturating_sub(tail_limit);
        if !dropped {
            tail_start = tail_start.max(head_end);
        }
        let tail_start = cut_after(&tail_text, tail_start, &tail_spans);
        let kept_tail = tail_text.len() - tail_start;
        let cut = total.saturating_sub((head_end + kept_tail) as u64);
        let mut text = redactor.redact(&head_text[..head_end]);
        text.push_str(&format!(
            "\n[... {cut} bytes cut: the output was {total} bytes; the first {head_end} and the last {kept_tail} are kept ...]\n"
        ));
        text.push_str(&redactor.redact(&tail_text[tail_start..]));
        Captured {
            text,
            total_bytes: total,
            truncated,
        }
    }
}

/// The end of the head: at most `limit`, between characters, and moved back to the start of any
/// secret it would split.
fn cut_before(text: &str, limit: usize, spans: &[Range<usize>]) -> usize {
    let mut at = limit.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    while let Some(span) = spans.iter().find(|span| span.start < at && at < span.end) {
        at = span.start;
    }
    at
}

/// The start of the tail: at least `from`, between characters, and moved on to the end of any
/// secret it would split.
fn cut_after(text: &str, from: usize, spans: &[Range<usize>]) -> usize {
    let mut at = from.min(text.len());
    while !text.is_char_boundary(at) {
        at += 1;
    }
    while let Some(span) = spans.iter().find(|span| span.start < at && at < span.end) {
        at = span.end;
    }
    at
}

/// How many bytes at the end of `bytes` start a UTF-8 character that they do not finish.
fn incomplete_suffix(bytes: &[u8]) -> usize {
    for k in 1..=bytes.len().min(3) {
        let byte = bytes[bytes.len() - k];
        if byte & 0xC0 == 0x80 {
            continue;
        }
        let width = match byte {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return 0,
        };
        return if width > k { k } else { 0 };
    }
    0
}

/// How many bytes at the start of `bytes` continue a UTF-8 character that began before them.
fn continuation_prefix(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .take(3)
        .take_while(|&&byte| byte & 0xC0 == 0x80)
        .count()
}

/// Text safe to store, show and send to a model: invalid UTF-8 becomes U+FFFD, and control
/// characters other than newline and tab are written out (`\x1b`) so they cannot drive a terminal.
pub fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            '\r' => {}
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(limit: usize, chunks: &[&[u8]]) -> Captured {
        let mut output = CappedOutput::new(limit, limit, Redactor::default());
        for chunk in chunks {
            output.push(chunk);
        }
        output.finish()
    }

    #[test]
    fn short_output_is_kept_whole() {
        assert_eq!(
            capture(8, &[b"hello ", b"world"]),
            Captured {
                text: "hello world".into(),
                total_bytes: 11,
                truncated: false
            }
        );
        assert!(!capture(4, &[b"12345678"]).truncated);
    }

    #[test]
    fn long_output_keeps_head_and_tail_and_states_the_cut() {
        let chunks: Vec<Vec<u8>> = (0..1000)
            .map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let captured = capture(16, &refs);
        assert!(captured.truncated);
        assert_eq!(
            captured.total_bytes,
            chunks.iter().map(|c| c.len() as u64).sum::<u64>()
        );
        assert!(
            captured.text.starts_with("line 0\nline 1\nli"),
            "{}",
            captured.text
        );
        assert!(
            captured.text.ends_with("998\nline 999\n"),
            "{}",
            captured.text
        );
        assert!(captured.text.contains(&format!(
            "[... {} bytes cut: the output was {} bytes; the first 16 and the last 16 are kept ...]",
            captured.total_bytes - 32,
            captured.total_bytes
        )));
    }

    #[test]
    fn a_chunk_larger_than_the_tail_keeps_its_end() {
        let captured = capture(2, &[b"ab", b"0123456789"]);
        assert!(captured.text.starts_with("ab\n[... 8 bytes cut"));
        assert!(captured.text.ends_with("89"));
    }

    #[test]
    fn output_of_exactly_head_and_tail_is_not_cut() {
        let whole = capture(4, &[b"0123", b"4567"]);
        assert_eq!((whole.text.as_str(), whole.truncated), ("01234567", false));
        let one_more = capture(4, &[b"0123", b"45678"]);
        assert!(one_more.truncated);
        assert_eq!(
            one_more.text,
            "0123\n[... 1 bytes cut: the output was 9 bytes; the first 4 and the last 4 are kept ...]\n5678"
        );
        let nothing = capture(4, &[]);
        assert_eq!((nothing.text.as_str(), nothing.total_bytes), ("", 0));
    }

    #[test]
    fn a_character_across_head_and_tail_stays_whole_when_nothing_is_cut() {
        // "é" is two bytes: the first ends the head, the second starts the tail.
        let captured = capture(2, &["aé".as_bytes()]);
        assert_eq!((captured.text.as_str(), captured.truncated), ("aé", false));
    }

    #[test]
    fn the_cut_falls_between_characters() {
        let input = format!("abcé{}éxyz", "-".repeat(100));
        let captured = capture(4, &[input.as_bytes()]);
        assert_eq!(
            captured.text,
            "abc\n[... 104 bytes cut: the output was 110 bytes; the first 3 and the last 3 are kept ...]\nxyz"
        );
        // A character that ends exactly at the cut is kept; so is a 4-byte one.
        let input = format!("a😀{}😀", "-".repeat(10));
        let captured = capture(5, &[input.as_bytes()]);
        assert!(captured.text.starts_with("a😀\n[... "), "{}", captured.text);
        assert!(
            captured.text.ends_with("kept ...]\n-😀"),
            "{}",
            captured.text
        );
        // Binary output that only looks like split characters: the limits count the text as kept,
        // where each stray byte is one U+FFFD (3 bytes), whole.
        let captured = capture(4, &[&[0xF0; 4], &[0u8; 10], &[0x80; 4]]);
        assert!(
            captured
                .text
                .contains("the first 3 and the last 3 are kept"),
            "{}",
            captured.text
        );
    }

    /// Any 8 characters of `secret` that are in `text`.
    fn fragment_of(secret: &str, text: &str) -> Option<String> {
        let kept: std::collections::HashSet<&[u8]> = text.as_bytes().windows(8).collect();
        secret
            .as_bytes()
            .windows(8)
            .find(|window| kept.contains(window))
            .map(|window| String::from_utf8_lossy(window).into_owned())
    }

    #[test]
    fn a_secret_across_a_cut_or_a_chunk_boundary_is_never_kept_in_part() {
        const KEEP: usize = 4096;
        let key_body: String = (0..10)
            .map(|i| {
                format!(
                    "MIIEow{i}BAAKCAQEAx7Hq3b9Lr2VfWnYcJ5kT0pS8uZgDmE1oXiRaN4tQhw6yBjFvKsL{i}\n"
                )
            })
            .collect();
        // (as placed, the part that is secret)
        let cases = [
            (
                "ghp_Zx81Lq0Wm4Rt7Yb2Nc5Vd8Jf3Kg6Hs9Pa1Ue".to_string(),
                "Zx81Lq0Wm4Rt7Yb2Nc5Vd8Jf3Kg6Hs9Pa1Ue".to_string(),
            ),
            (
                format!("-----BEGIN RSA PRIVATE KEY-----\n{key_body}-----END RSA PRIVATE KEY-----"),
                key_body.clone(),
            ),
            (
                "DB_PASSWORD=Qw7Er4Ty1Ui8Op5As2".to_string(),
                "Qw7Er4Ty1Ui8Op5As2".to_string(),
            ),
            (
                "Authorization: Basic ZGVwbG95OlF3N0VyNFR5MVVpOE9wNUFz".to_string(),
                "ZGVwbG95OlF3N0VyNFR5MVVpOE9wNUFz".to_string(),
            ),
            (
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJvcHNsYWItdGVzdCJ9.Hq3b9Lr2VfWnYcJ5kT0pS8uZgDmE1oXi".to_string(),
                "eyJzdWIiOiJvcHNsYWItdGVzdCJ9.Hq3b9Lr2VfWnYcJ5kT0pS8uZgDmE1oXi".to_string(),
            ),
            (
                "configured-secret-value-42".to_string(),
                "configured-secret-value-42".to_string(),
            ),
        ];
        let redactor = Redactor::new(vec!["configured-secret-value-42".into()]);
        // A middle that is held whole (the cut made in view of everything), and one that is dropped.
        for middle in [100, 3 * MARGIN] {
            for (placed, secret) in &cases {
                let step = (placed.len() / 4).max(1);
                for shift in (1..placed.len()).step_by(step) {
                    // The head's cut falls `shift` bytes into the first copy, the tail's `shift`
                    // bytes into the second.
                    let text = format!(
                        "{} {placed} {} {placed} {}",
                        ".".repeat(KEEP - shift - 1),
                        ".".repeat(middle),
                        ".".repeat(KEEP - (placed.len() - shift) - 1),
                    );
                    for chunk in [7, 1000] {
                        let mut output = CappedOutput::new(KEEP, KEEP, redactor.clone());
                        text.as_bytes()
                            .chunks(chunk)
                            .for_each(|piece| output.push(piece));
                        let captured = output.finish();
                        assert!(captured.truncated);
                        assert_eq!(
                            fragment_of(secret, &captured.text),
                            None,
                            "{placed:?} at {shift}, middle {middle}, chunks of {chunk}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn binary_and_control_bytes_are_made_harmless() {
        assert_eq!(
            printable(b"ok\xff\xfe\x1b[31mred\x00\r\n"),
            "ok\u{fffd}\u{fffd}\\x1b[31mred\\x00\n"
        );
        // DEL and the 8-bit controls (CSI is U+009B) are written out too; tabs stay.
        assert_eq!(
            printable("a\tb\x7f\u{9b}31m".as_bytes()),
            "a\tb\\x7f\\x9b31m"
        );
    }
}
