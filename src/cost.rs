//! What model tokens cost: a table of prices per million tokens, built in and overridable.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// US dollars per million tokens.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

/// Prices by model name. A model matches its own entry, or else the longest entry it starts with
/// (`claude-sonnet-4-5-20250929` is priced as `claude-sonnet-4-5`).
#[derive(Clone, Debug, PartialEq)]
pub struct CostTable {
    prices: BTreeMap<String, Price>,
}

/// List prices at the time of writing; a `--cost-table` file overrides or extends them.
const BUILTIN: &[(&str, f64, f64)] = &[
    ("claude-opus-4", 15.0, 75.0),
    ("claude-opus-4-1", 15.0, 75.0),
    ("claude-sonnet-4", 3.0, 15.0),
    ("claude-sonnet-4-5", 3.0, 15.0),
    ("claude-haiku-4-5", 1.0, 5.0),
    ("claude-3-5-haiku", 0.8, 4.0),
    ("gpt-4.1", 2.0, 8.0),
    ("gpt-4.1-mini", 0.4, 1.6),
    ("gpt-4.1-nano", 0.1, 0.4),
    ("gpt-4o", 2.5, 10.0),
    ("gpt-4o-mini", 0.15, 0.6),
    // The `replay` provider's scripted answers: no model, no spend.
    ("opslab-replay", 0.0, 0.0),
];

impl Default for CostTable {
    fn default() -> Self {
        CostTable {
            prices: BUILTIN
                .iter()
                .map(|(model, input, output)| {
                    (
                        model.to_string(),
                        Price {
                            input: *input,
                            output: *output,
                        },
                    )
                })
                .collect(),
        }
    }
}

impl CostTable {
    /// The built-in table with the entries of a YAML or JSON file (`model: {input: 3.0, output: 15.0}`)
    /// laid over it.
    pub fn with_file(path: &Path) -> Result<CostTable, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("--cost-table {}: {error}", path.display()))?;
        let entries: BTreeMap<String, Price> = serde_saphyr::from_str(&text)
            .map_err(|error| format!("--cost-table {}: {error}", path.display()))?;
        if let Some((model, _)) = entries
            .iter()
            .find(|(_, price)| !(price.input >= 0.0 && price.output >= 0.0))
        {
            return Err(format!(
                "--cost-table {}: {model}: prices must be 0 or more",
                path.display()
            ));
        }
        let mut table = CostTable::default();
        table.prices.extend(entries);
        Ok(table)
    }

    pub fn price(&self, model: &str) -> Option<Price> {
        if let Some(price) = self.prices.get(model) {
            return Some(*price);
        }
        self.prices
            .iter()
            .filter(|(name, _)| model.starts_with(name.as_str()))
            .max_by_key(|(name, _)| name.len())
            .map(|(_, price)| *price)
    }

    /// The cost in dollars; an unknown model costs nothing (the tokens are still counted).
    pub fn cost(&self, model: &str, input_tokens: u64, output_tokens: u64) -> f64 {
        self.price(model).map_or(0.0, |price| {
            (input_tokens as f64 * price.input + output_tokens as f64 * price.output) / 1_000_000.0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_are_priced_by_name_or_longest_prefix() {
        let table = CostTable::default();
        assert_eq!(table.cost("claude-sonnet-4-5", 1_000_000, 1_000_000), 18.0);
        assert_eq!(table.cost("claude-sonnet-4-5-20250929", 1_000_000, 0), 3.0);
        assert_eq!(table.cost("gpt-4.1-mini-2025", 0, 1_000_000), 1.6);
        assert_eq!(table.cost("llama3:8b", 1_000_000, 1_000_000), 0.0);
    }

    #[test]
    fn a_file_extends_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("costs.yaml");
        std::fs::write(
            &path,
            "llama3: {input: 0.5, output: 1}\ngpt-4.1: {input: 1, output: 1}\n",
        )
        .unwrap();
        let table = CostTable::with_file(&path).unwrap();
        assert_eq!(table.cost("llama3:8b", 2_000_000, 0), 1.0);
        assert_eq!(table.cost("gpt-4.1", 1_000_000, 1_000_000), 2.0);
        std::fs::write(&path, "x: {input: -1, output: 1}\n").unwrap();
        assert!(
            CostTable::with_file(&path)
                .unwrap_err()
                .contains("0 or more")
        );
        std::fs::write(&path, "x: {inp: 1}\n").unwrap();
        assert!(CostTable::with_file(&path).is_err());
    }
}
