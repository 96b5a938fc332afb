//! What model tokens cost: a table of prices per million tokens, built in and overridable.
//!
//! A model is priced by its exact name. The one fallback is a dated snapshot of a listed model
//! (`claude-sonnet-4-5-20250929` of `claude-sonnet-4-5`), and it is logged: a newer model is never
//! priced as an older one because their names share a prefix. A model the table does not know
//! costs nothing, which would leave a spend budget unenforced, so a budget with such a model is
//! refused ([`CostTable::check_budget`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use regex::Regex;
use serde::Deserialize;
use tracing::warn;

/// A model response's tokens, by kind: each is billed at its own price.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input read afresh (neither written to nor read from a prompt cache).
    pub input_tokens: u64,
    /// Input written to the prompt cache (Anthropic's `cache_creation_input_tokens`).
    pub cache_write_tokens: u64,
    /// Input read from the prompt cache (Anthropic's `cache_read_input_tokens`, OpenAI's
    /// `prompt_tokens_details.cached_tokens`).
    pub cache_read_tokens: u64,
    pub output_tokens: u64,
}

impl Usage {
    /// Every token the model read or wrote: what a token budget counts.
    pub fn total(&self) -> u64 {
        self.input_tokens + self.cache_write_tokens + self.cache_read_tokens + self.output_tokens
    }
}

/// US dollars per million tokens, and what prompt-cache tokens cost as multiples of `input`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// A token written to the prompt cache, as a multiple of `input` (Anthropic: 1.25 for the
    /// 5-minute cache).
    pub cache_write: f64,
    /// A token read from the prompt cache, as a multiple of `input` (Anthropic: 0.1).
    pub cache_read: f64,
}

/// Anthropic's multiples for its 5-minute cache; also the default of a table entry that names none.
pub const CACHE_WRITE: f64 = 1.25;
pub const CACHE_READ: f64 = 0.1;

impl Price {
    pub fn new(input: f64, output: f64) -> Price {
        Price {
            input,
            output,
            cache_write: CACHE_WRITE,
            cache_read: CACHE_READ,
        }
    }

    /// Dollars for a response's tokens, each kind at its price. Pure.
    pub fn dollars(&self, usage: &Usage) -> f64 {
        let input = usage.input_tokens as f64
            + usage.cache_write_tokens as f64 * self.cache_write
            + usage.cache_read_tokens as f64 * self.cache_read;
        (input * self.input + usage.output_tokens as f64 * self.output) / 1_000_000.0
    }
}

/// An entry of a `--cost-table` file: the cache multiples are optional (the built-in entry's, or
/// else Anthropic's).
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceEntry {
    input: f64,
    output: f64,
    #[serde(default)]
    cache_write: Option<f64>,
    #[serde(default)]
    cache_read: Option<f64>,
}

/// How a model's price was found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PriceMatch<'a> {
    /// The table lists the model by its own name.
    Exact(Price),
    /// The model is a dated snapshot (or `-latest` alias) of the listed `entry`.
    Snapshot { entry: &'a str, price: Price },
}

impl PriceMatch<'_> {
    pub fn price(&self) -> Price {
        match self {
            PriceMatch::Exact(price) | PriceMatch::Snapshot { price, .. } => *price,
        }
    }
}

/// A spend budget that cannot be enforced: the cost table has no price for the model.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error(
    "a spend budget of ${budget} is set, but the cost table has no price for the model {model:?}, \
     so its spend cannot be counted: add the model to a --cost-table file \
     (`{model}: {{input: 3.0, output: 15.0}}`, US dollars per million tokens), or set no budget"
)]
pub struct UnpricedModel {
    pub model: String,
    pub budget: f64,
}

/// Prices by model name.
#[derive(Clone, Debug, PartialEq)]
pub struct CostTable {
    prices: BTreeMap<String, Price>,
    /// The models already warned about (a snapshot fallback, or no price at all): once each.
    warned: Warned,
}

/// The set of models warned about, shared by the table's clones. Not part of the table's value.
#[derive(Clone, Debug, Default)]
struct Warned(Arc<Mutex<BTreeSet<String>>>);

impl PartialEq for Warned {
    fn eq(&self, _: &Warned) -> bool {
        true
    }
}

impl Warned {
    /// True the first time it is asked about `model`.
    fn first_time(&self, model: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(model.to_string())
    }
}

/// List prices at the time of writing: input, output, cache write and cache read (the last two as
/// multiples of input); a `--cost-table` file overrides or extends them. OpenAI's automatic cache
/// writes nothing extra; its reads cost a quarter (GPT-4.1), a half (GPT-4o) or a tenth (GPT-5).
const BUILTIN: &[(&str, f64, f64, f64, f64)] = &[
    ("claude-opus-4", 15.0, 75.0, CACHE_WRITE, CACHE_READ),
    ("claude-opus-4-1", 15.0, 75.0, CACHE_WRITE, CACHE_READ),
    ("claude-opus-4-5", 5.0, 25.0, CACHE_WRITE, CACHE_READ),
    ("claude-sonnet-4", 3.0, 15.0, CACHE_WRITE, CACHE_READ),
    ("claude-sonnet-4-5", 3.0, 15.0, CACHE_WRITE, CACHE_READ),
    ("claude-3-7-sonnet", 3.0, 15.0, CACHE_WRITE, CACHE_READ),
    ("claude-haiku-4-5", 1.0, 5.0, CACHE_WRITE, CACHE_READ),
    ("claude-3-5-haiku", 0.8, 4.0, CACHE_WRITE, CACHE_READ),
    ("gpt-5", 1.25, 10.0, 1.0, 0.1),
    ("gpt-5-mini", 0.25, 2.0, 1.0, 0.1),
    ("gpt-5-nano", 0.05, 0.4, 1.0, 0.1),
    ("gpt-4.1", 2.0, 8.0, 1.0, 0.25),
    ("gpt-4.1-mini", 0.4, 1.6, 1.0, 0.25),
    ("gpt-4.1-nano", 0.1, 0.4, 1.0, 0.25),
    ("gpt-4o", 2.5, 10.0, 1.0, 0.5),
    ("gpt-4o-mini", 0.15, 0.6, 1.0, 0.5),
    // The `replay` provider's scripted answers: no model, no spend.
    ("opslab-replay", 0.0, 0.0, 1.0, 1.0),
];

impl Default for CostTable {
    fn default() -> Self {
        CostTable {
            prices: BUILTIN
                .iter()
                .map(|(model, input, output, cache_write, cache_read)| {
                    (
                        model.to_string(),
                        Price {
                            input: *input,
                            output: *output,
                            cache_write: *cache_write,
                            cache_read: *cache_read,
                        },
                    )
                })
                .collect(),
            warned: Warned::default(),
        }
    }
}

/// The name a snapshot extends: `claude-sonnet-4-5` of `claude-sonnet-4-5-20250929`,
/// `claude-sonnet-4-5@20250929` or `claude-3-5-haiku-latest`; `gpt-4o` of `gpt-4o-2024-08-06`.
fn snapshot_base(model: &str) -> Option<&str> {
    static SNAPSHOT: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"^(.+?)[-@](?:\d{8}|\d{4}-\d{2}-\d{2}|latest)$")
            .expect("the snapshot pattern is a valid regex")
    });
    SNAPSHOT
        .captures(model)
        .and_then(|found| found.get(1))
        .map(|base| base.as_str())
}

/// A cost table file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CostTableError {
    #[error("--cost-table {path}: {problem}")]
    Unreadable {
        path: std::path::PathBuf,
        problem: std::io::Error,
    },
    #[error("--cost-table {path}: {problem}")]
    Malformed {
        path: std::path::PathBuf,
        problem: Box<serde_saphyr::Error>,
    },
    #[error("--cost-table {path}: {model}: prices and cache multiples must be 0 or more")]
    NegativePrice {
        path: std::path::PathBuf,
        model: String,
    },
}

impl CostTable {
    /// The built-in table with the entries of a YAML or JSON file (`model: {input: 3.0, output: 15.0}`,
    /// optionally `cache_write: 1.25, cache_read: 0.1`) laid over it.
    pub fn with_file(path: &Path) -> Result<CostTable, CostTableError> {
        let text = std::fs::read_to_string(path).map_err(|problem| CostTableError::Unreadable {
            path: path.to_path_buf(),
            problem,
        })?;
        let entries: BTreeMap<String, PriceEntry> =
            serde_saphyr::from_str(&text).map_err(|problem| CostTableError::Malformed {
                path: path.to_path_buf(),
                problem: Box::new(problem),
            })?;
        let mut table = CostTable::default();
        for (model, entry) in entries {
            let known = table.prices.get(&model).copied();
            let price = Price {
                input: entry.input,
                output: entry.output,
                cache_write: entry
                    .cache_write
                    .unwrap_or(known.map_or(CACHE_WRITE, |known| known.cache_write)),
                cache_read: entry
                    .cache_read
                    .unwrap_or(known.map_or(CACHE_READ, |known| known.cache_read)),
            };
            let parts = [
                price.input,
                price.output,
                price.cache_write,
                price.cache_read,
            ];
            if !parts.iter().all(|part| *part >= 0.0 && part.is_finite()) {
                return Err(CostTableError::NegativePrice {
                    path: path.to_path_buf(),
                    model,
                });
            }
            table.prices.insert(model, price);
        }
        Ok(table)
    }

    /// The model's price: its own entry, or else the entry it is a dated snapshot of. Pure.
    pub fn lookup(&self, model: &str) -> Option<PriceMatch<'_>> {
        if let Some(price) = self.prices.get(model) {
            return Some(PriceMatch::Exact(*price));
        }
        let base = snapshot_base(model)?;
        self.prices
            .get_key_value(base)
            .map(|(entry, price)| PriceMatch::Snapshot {
                entry,
                price: *price,
            })
    }

    pub fn price(&self, model: &str) -> Option<Price> {
        self.lookup(model).map(|found| found.price())
    }

    /// Whether a session of `model` can keep to `budget`: a budget is enforced only if the model's
    /// spend can be counted. Pure.
    pub fn check_budget(&self, model: &str, budget: Option<f64>) -> Result<(), UnpricedModel> {
        match budget {
            Some(budget) if self.lookup(model).is_none() => Err(UnpricedModel {
                model: model.to_string(),
                budget,
            }),
            _ => Ok(()),
        }
    }

    /// The cost in dollars of uncached input and output.
    pub fn cost(&self, model: &str, input_tokens: u64, output_tokens: u64) -> f64 {
        self.cost_of(
            model,
            &Usage {
                input_tokens,
                output_tokens,
                ..Usage::default()
            },
        )
    }

    /// The cost in dollars, each kind of token at its price. An unknown model costs nothing (its
    /// tokens are still counted); that, and a snapshot priced as its base model, is logged once per
    /// model.
    pub fn cost_of(&self, model: &str, usage: &Usage) -> f64 {
        let found = self.lookup(model);
        match found {
            Some(PriceMatch::Exact(_)) => {}
            Some(PriceMatch::Snapshot { entry, .. }) => {
                if self.warned.first_time(model) {
                    warn!(
                        model,
                        entry,
                        "the cost table has no entry for this model: it is priced as {entry}"
                    );
                }
            }
            None => {
                if self.warned.first_time(model) {
                    warn!(
                        model,
                        "the cost table has no price for this model: its spend is counted as $0; \
                         add it with --cost-table"
                    );
                }
            }
        }
        found.map_or(0.0, |found| found.price().dollars(usage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_are_priced_exactly() {
        let table = CostTable::default();
        assert_eq!(table.cost("claude-sonnet-4-5", 1_000_000, 1_000_000), 18.0);
        assert_eq!(table.cost("claude-opus-4-5", 1_000_000, 1_000_000), 30.0);
        assert_eq!(table.cost("gpt-4.1-mini", 0, 1_000_000), 1.6);
        assert_eq!(
            table.lookup("claude-opus-4"),
            Some(PriceMatch::Exact(Price::new(15.0, 75.0)))
        );
    }

    #[test]
    fn a_dated_snapshot_is_priced_as_the_model_it_extends() {
        let table = CostTable::default();
        for (model, entry) in [
            ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
            ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
            ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
            ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
            ("gpt-4o-2024-08-06", "gpt-4o"),
        ] {
            match table.lookup(model) {
                Some(PriceMatch::Snapshot { entry: found, .. }) => {
                    assert_eq!(found, entry, "{model}")
                }
                other => panic!("{model}: {other:?}"),
            }
        }
        assert_eq!(table.cost("claude-sonnet-4-5-20250929", 1_000_000, 0), 3.0);
    }

    #[test]
    fn a_newer_model_is_not_priced_as_an_older_one() {
        let table = CostTable::default();
        // Each starts with a listed name, but is another model.
        for model in [
            "claude-sonnet-4-6",
            "claude-opus-4-7",
            "gpt-4.1-turbo",
            "gpt-5.1",
            "llama3:8b",
        ] {
            assert_eq!(table.lookup(model), None, "{model}");
            assert_eq!(table.cost(model, 1_000_000, 1_000_000), 0.0, "{model}");
        }
    }

    #[test]
    fn a_budget_needs_a_priced_model() {
        let table = CostTable::default();
        assert_eq!(table.check_budget("claude-sonnet-4-5", Some(2.5)), Ok(()));
        assert_eq!(
            table.check_budget("claude-sonnet-4-5-20250929", Some(2.5)),
            Ok(())
        );
        assert_eq!(table.check_budget("llama3:8b", None), Ok(()));
        let refused = table.check_budget("llama3:8b", Some(2.5)).unwrap_err();
        assert_eq!(
            refused,
            UnpricedModel {
                model: "llama3:8b".into(),
                budget: 2.5
            }
        );
        let message = refused.to_string();
        assert!(
            message.contains("\"llama3:8b\"") && message.contains("--cost-table"),
            "{message}"
        );
        assert!(table.check_budget("llama3:8b", Some(0.0)).is_err());
    }

    #[test]
    fn a_file_extends_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("costs.yaml");
        std::fs::write(
            &path,
            "llama3:8b: {input: 0.5, output: 1}\ngpt-4.1: {input: 1, output: 1}\n",
        )
        .unwrap();
        let table = CostTable::with_file(&path).unwrap();
        assert_eq!(table.cost("llama3:8b", 2_000_000, 0), 1.0);
        assert_eq!(table.cost("gpt-4.1", 1_000_000, 1_000_000), 2.0);
        assert_eq!(table.check_budget("llama3:8b", Some(1.0)), Ok(()));
        std::fs::write(&path, "x: {input: -1, output: 1}\n").unwrap();
        assert!(
            CostTable::with_file(&path)
                .unwrap_err()
                .to_string()
                .contains("0 or more")
        );
        std::fs::write(&path, "x: {input: 1, output: 1, cache_read: -0.1}\n").unwrap();
        assert!(
            CostTable::with_file(&path)
                .unwrap_err()
                .to_string()
                .contains("0 or more")
        );
        std::fs::write(&path, "x: {inp: 1}\n").unwrap();
        assert!(CostTable::with_file(&path).is_err());
    }

    #[test]
    fn cache_tokens_are_priced_per_kind() {
        let table = CostTable::default();
        let usage = Usage {
            input_tokens: 1_000_000,
            cache_write_tokens: 2_000_000,
            cache_read_tokens: 10_000_000,
            output_tokens: 100_000,
        };
        // Sonnet: $3 in, writes at 1.25x, reads at 0.1x, $15 out.
        let expected = 3.0 + 2.0 * 3.0 * 1.25 + 10.0 * 3.0 * 0.1 + 0.1 * 15.0;
        let cost = table.cost_of("claude-sonnet-4-5", &usage);
        assert!((cost - expected).abs() < 1e-9, "{cost} != {expected}");
        // GPT-4.1: reads at a quarter of input, no writes.
        let cached = Usage {
            input_tokens: 0,
            cache_write_tokens: 0,
            cache_read_tokens: 1_000_000,
            output_tokens: 0,
        };
        assert!((table.cost_of("gpt-4.1", &cached) - 0.5).abs() < 1e-9);
        // A file sets the multiples, or keeps the built-in ones, or takes Anthropic's.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("costs.yaml");
        std::fs::write(
            &path,
            "claude-sonnet-4-5: {input: 3, output: 15, cache_read: 0.5}\n\
             gpt-4.1: {input: 2, output: 8}\nllama3:8b: {input: 1, output: 1}\n",
        )
        .unwrap();
        let table = CostTable::with_file(&path).unwrap();
        let price = |model| table.price(model).unwrap();
        assert_eq!(
            (
                price("claude-sonnet-4-5").cache_write,
                price("claude-sonnet-4-5").cache_read
            ),
            (1.25, 0.5)
        );
        assert_eq!(price("gpt-4.1").cache_read, 0.25);
        assert_eq!(price("llama3:8b").cache_write, CACHE_WRITE);
        assert!((table.cost_of("claude-sonnet-4-5", &cached) - 1.5).abs() < 1e-9);
    }

    /// A writer into a shared buffer, for a test's log subscriber.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_fallback_is_logged_once_at_warn() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let table = CostTable::default();
        let copy = table.clone();
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..2 {
                table.cost("claude-sonnet-4-5-20250929", 10, 10);
                copy.cost("claude-sonnet-4-5-20250929", 10, 10);
                table.cost("llama3:8b", 10, 10);
                table.cost("claude-sonnet-4-5", 10, 10);
            }
        });
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 2, "{log}");
        assert!(
            lines[0].contains("WARN")
                && lines[0].contains("model=\"claude-sonnet-4-5-20250929\"")
                && lines[0].contains("priced as claude-sonnet-4-5"),
            "{log}"
        );
        assert!(
            lines[1].contains("WARN")
                && lines[1].contains("model=\"llama3:8b\"")
                && lines[1].contains("--cost-table"),
            "{log}"
        );
    }
}
