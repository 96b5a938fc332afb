//! Command output, capped as it streams: the head and the tail are kept, the middle is counted and
//! dropped, so 50 MB of output costs no more memory than 32 KiB. Pure.

use std::collections::VecDeque;

/// Collects a command's output with bounded memory.
#[derive(Clone, Debug)]
pub struct CappedOutput {
    head_limit: usize,
    tail_limit: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

/// The output as kept: text safe to store and show, and how much there was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    pub text: String,
    pub total_bytes: u64,
    pub truncated: bool,
}

impl CappedOutput {
    pub fn new(head_limit: usize, tail_limit: usize) -> Self {
        CappedOutput {
            head_limit,
            tail_limit,
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
        }
    }

    pub fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let room = self.head_limit - self.head.len();
        if room > 0 {
            let take = room.min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        if self.tail_limit == 0 || bytes.is_empty() {
            return;
        }
        if bytes.len() >= self.tail_limit {
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - self.tail_limit..]);
            return;
        }
        let overflow = (self.tail.len() + bytes.len()).saturating_sub(self.tail_limit);
        self.tail.drain(..overflow);
        self.tail.extend(bytes);
    }

    /// The kept output, with the cut stated where there was one.
    pub fn finish(self) -> Captured {
        let kept = self.head.len() as u64 + self.tail.len() as u64;
        let truncated = kept < self.total;
        let mut text = printable(&self.head);
        if truncated {
            let cut = self.total - kept;
            text.push_str(&format!(
                "\n[... {cut} bytes cut: the output was {} bytes; the first {} and the last {} are kept ...]\n",
                self.total,
                self.head.len(),
                self.tail.len()
            ));
        }
        let tail: Vec<u8> = self.tail.into_iter().collect();
        text.push_str(&printable(&tail));
        Captured {
            text,
            total_bytes: self.total,
            truncated,
        }
    }
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
        let mut output = CappedOutput::new(limit, limit);
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
    fn binary_and_control_bytes_are_made_harmless() {
        assert_eq!(
            printable(b"ok\xff\xfe\x1b[31mred\x00\r\n"),
            "ok\u{fffd}\u{fffd}\\x1b[31mred\\x00\n"
        );
    }
}
