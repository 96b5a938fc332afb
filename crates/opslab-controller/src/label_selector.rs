//! `-l/--selector`: kubectl's equality-based label selectors (`k=v`, `k==v`, `k!=v`, `k`, `!k`,
//! comma-separated), parsed into kube's [`Selector`], which does the matching. kube ships the
//! matching but no parser for the text form, so the small parser is here.

use std::collections::BTreeMap;

use kube::core::{Expression, Selector, SelectorExt};

/// A parsed `-l` value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(Selector);

impl LabelSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.matches(labels)
    }

    /// kube's form, for a watch or a list on the API server.
    pub fn selector(&self) -> &Selector {
        &self.0
    }
}

/// What is wrong with a selector's text; each names the part at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("{0:?}: an empty requirement between commas")]
    EmptyRequirement(String),
    #[error("{0:?}: set-based requirements (in, notin) are not supported; use k=v, k!=v, k or !k")]
    SetBased(String),
    #[error("{0:?}: the key's prefix is not a DNS subdomain")]
    BadPrefix(String),
    #[error(
        "{0:?}: a label key is a name of up to 63 letters, digits, '-', '_' or '.', \
         starting and ending with a letter or digit, with an optional prefix/"
    )]
    BadKey(String),
    #[error(
        "{0:?}: a label value is empty or up to 63 letters, digits, '-', '_' or '.', \
         starting and ending with a letter or digit"
    )]
    BadValue(String),
}

impl std::str::FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(text: &str) -> Result<LabelSelector, SelectorError> {
        let mut expressions = Vec::new();
        for requirement in text.split(',') {
            let requirement = requirement.trim();
            if requirement.is_empty() {
                if text.trim().is_empty() {
                    continue;
                }
                return Err(SelectorError::EmptyRequirement(text.to_string()));
            }
            expressions.push(requirement_of(requirement)?);
        }
        let mut selector = Selector::default();
        selector.extend(expressions);
        Ok(LabelSelector(selector))
    }
}

fn requirement_of(text: &str) -> Result<Expression, SelectorError> {
    let set_based = text.contains('(')
        || text
            .split_whitespace()
            .any(|word| word == "in" || word == "notin");
    if set_based {
        return Err(SelectorError::SetBased(text.to_string()));
    }
    let expression = if let Some((key, value)) = text.split_once("!=") {
        Expression::NotEqual(key_of(key)?, value_of(value)?)
    } else if let Some((key, value)) = text.split_once("==").or_else(|| text.split_once('=')) {
        Expression::Equal(key_of(key)?, value_of(value)?)
    } else if let Some(key) = text.strip_prefix('!') {
        Expression::DoesNotExist(key_of(key)?)
    } else {
        Expression::Exists(key_of(text)?)
    };
    Ok(expression)
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name.
fn key_of(text: &str) -> Result<String, SelectorError> {
    let key = text.trim();
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            let prefix_ok = !prefix.is_empty()
                && prefix.len() <= 253
                && prefix.split('.').all(|part| {
                    !part.is_empty()
                        && part
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                });
            if !prefix_ok {
                return Err(SelectorError::BadPrefix(key.to_string()));
            }
            name
        }
        None => key,
    };
    if name.is_empty() || !is_label_name(name) {
        return Err(SelectorError::BadKey(key.to_string()));
    }
    Ok(key.to_string())
}

/// A label value: empty, or a name.
fn value_of(text: &str) -> Result<String, SelectorError> {
    let value = text.trim();
    if !value.is_empty() && !is_label_name(value) {
        return Err(SelectorError::BadValue(value.to_string()));
    }
    Ok(value.to_string())
}

fn is_label_name(text: &str) -> bool {
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    text.len() <= 63
        && ends_ok(text.chars().next())
        && ends_ok(text.chars().last())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn selects(selector: &str, pairs: &[(&str, &str)]) -> bool {
        selector
            .parse::<LabelSelector>()
            .unwrap()
            .matches(&labels(pairs))
    }

    #[test]
    fn each_form_matches_as_kubectl_does() {
        let web = [("team", "web"), ("tier", "front")];
        assert!(selects("team=web", &web));
        assert!(selects("team==web", &web));
        assert!(!selects("team=db", &web));
        assert!(selects("team!=db", &web));
        assert!(!selects("team!=web", &web));
        // A missing key is "not equal".
        assert!(selects("owner!=me", &web));
        assert!(selects("tier", &web));
        assert!(!selects("owner", &web));
        assert!(selects("!owner", &web));
        assert!(!selects("!tier", &web));
        assert!(selects(" team = web , tier ", &web));
        assert!(!selects("team=web,tier=back", &web));
        assert!(selects(
            "opslab.dev/team=web",
            &[("opslab.dev/team", "web")]
        ));
        assert!(selects("team=", &[("team", "")]));
        assert!(selects("", &[]));
    }

    #[test]
    fn bad_selectors_say_what_is_wrong() {
        let error = |text: &str| text.parse::<LabelSelector>().unwrap_err().to_string();
        assert!(error("team in (web,db)").contains("set-based"));
        assert!(error("team=web,,tier").contains("empty requirement"));
        assert!(error("=web").contains("label key"));
        assert!(error("team=web app").contains("label value"));
        assert!(error("Bad_Prefix/team=web").contains("prefix"));
        assert!(error(&format!("team={}", "v".repeat(64))).contains("label value"));
    }
}
