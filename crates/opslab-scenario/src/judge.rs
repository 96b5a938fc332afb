//! An optional judge model for the root-cause score, behind `opslab scenario run --judge-model`
//! (never the default: the deterministic keyword match of [`super::score`] is). The judge reads the
//! case's known cause (its scripted root cause and mechanism patterns) and the agent's report, and
//! answers through a `verdict` tool whether the report found the same mechanism, in whatever words.
//! It speaks the same client, and so the same protocols, as the agent ([`opslab::llm::LlmClient`]),
//! to the provider the environment configures.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use super::{Case, Names, ScenarioError};
use opslab::cost::CostTable;
use opslab::incident::Report;
use opslab::llm::{
    ChatRequest, ContentBlock, LlmClient, Message, ProviderConfig, ProviderKind, Role, ToolSpec,
    retry::RetryPolicy,
};

/// The judge's answer on one case, kept beside the scores.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Verdict {
    /// The judging model.
    pub model: String,
    /// Whether the judge found the report's root cause to be the case's (what the root-cause score
    /// became); `None` when it gave no verdict (see `error`).
    pub root_cause: Option<bool>,
    /// The judge's reason, in a sentence.
    pub reason: String,
    /// What the keyword match alone said, for comparison.
    pub keyword_root_cause: Option<bool>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Why there is no verdict, when there is none: the keyword score then stands.
    pub error: Option<String>,
}

/// A judge: a model, and the client that reaches it.
pub struct Judge {
    client: LlmClient,
    model: String,
}

/// The tool the judge answers through.
const VERDICT_TOOL: &str = "verdict";

const SYSTEM: &str = "You grade the root cause an incident responder reported for a fault that \
was injected on purpose, so the true cause is known. Say whether the reported root cause states \
the same mechanism as the known cause, whatever its wording. It does not match when it names \
another mechanism, only describes symptoms, or is too vague to act on. Judge the mechanism only: \
which component is named is scored apart. Answer only by calling the verdict tool.";

impl Judge {
    /// A judge reached with `config`, answering as `model`.
    pub fn new(config: ProviderConfig, model: String) -> Result<Judge, ScenarioError> {
        let client = LlmClient::new(
            config,
            Arc::new(opslab::metrics::Metrics::new()),
            CostTable::default(),
        )
        .map_err(|error| ScenarioError::Run(format!("cannot make the judge's client: {error}")))?;
        Ok(Judge { client, model })
    }

    /// A judge reached through the provider the environment configures, as `--driver model`'s
    /// sessions are (ANTHROPIC_API_KEY / ANTHROPIC_BASE_URL, or OPENAI_BASE_URL / OPENAI_API_KEY,
    /// with OPSLAB_PROVIDER to choose).
    pub fn from_env(
        model: String,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Judge, ScenarioError> {
        Judge::new(provider_from_env(&env)?, model)
    }

    /// The judge's verdict on `report`, for `case` run under `names`. Errors are kept in the
    /// verdict (the keyword score then stands), never raised: one failed call does not stop a run.
    pub async fn verdict(
        &self,
        case: &Case,
        names: &Names,
        report: &Report,
        keyword_root_cause: Option<bool>,
    ) -> Verdict {
        let mut verdict = Verdict {
            model: self.model.clone(),
            keyword_root_cause,
            ..Verdict::default()
        };
        let request = self.request(case, names, report);
        match self.client.complete(&request).await {
            Ok(response) => {
                verdict.input_tokens = response.usage.input_tokens
                    + response.usage.cache_read_tokens
                    + response.usage.cache_write_tokens;
                verdict.output_tokens = response.usage.output_tokens;
                match parse(&response.content) {
                    Ok((matches, reason)) => {
                        verdict.root_cause = Some(matches);
                        verdict.reason = reason;
                    }
                    Err(error) => verdict.error = Some(error),
                }
            }
            Err(error) => verdict.error = Some(format!("the judge's model failed: {error}")),
        }
        verdict
    }

    /// The question put to the judge (pure).
    fn request(&self, case: &Case, names: &Names, report: &Report) -> ChatRequest {
        let (_, reference) = case.script(names);
        let question = format!(
            "The injected fault: {summary}.\n\
             Its known root cause: {known}\n\
             Patterns a matching root cause would fit: {patterns}\n\n\
             The responder's report:\n\
             - summary: {reported_summary}\n\
             - root cause: {reported_cause}\n\n\
             Does the reported root cause state the known mechanism?",
            summary = case.spec.summary,
            known = reference.root_cause,
            patterns = case.spec.mechanism.join("; "),
            reported_summary = report.summary,
            reported_cause = report.root_cause,
        );
        ChatRequest {
            model: self.model.clone(),
            system: SYSTEM.to_string(),
            messages: vec![Message {
                role: Role::User,
                content: vec![ContentBlock::Text { text: question }],
            }],
            tools: vec![ToolSpec {
                name: VERDICT_TOOL.into(),
                description: "Your verdict on the reported root cause.".into(),
                input_schema: json!({
                    "type": "object",
                    "properties": {
                        "root_cause_matches": {
                            "type": "boolean",
                            "description": "true when the reported root cause states the known mechanism"
                        },
                        "reason": {"type": "string", "description": "why, in one sentence"}
                    },
                    "required": ["root_cause_matches", "reason"]
                }),
            }],
            max_tokens: 512,
        }
    }
}

/// The verdict in the judge's answer: its `verdict` tool call's fields (pure).
fn parse(content: &[ContentBlock]) -> Result<(bool, String), String> {
    let input = content
        .iter()
        .find_map(|block| match block {
            ContentBlock::ToolUse { name, input, .. } if name == VERDICT_TOOL => Some(input),
            _ => None,
        })
        .ok_or("the judge answered without calling the verdict tool")?;
    let matches = input["root_cause_matches"]
        .as_bool()
        .ok_or("the judge's verdict has no boolean root_cause_matches")?;
    let reason = input["reason"].as_str().unwrap_or_default().to_string();
    Ok((matches, reason))
}

/// How to reach the judge's model from the environment (pure, given `env`): the provider
/// [`super::run::model_provider`] finds, at its base URL, with its key.
pub fn provider_from_env(
    env: &impl Fn(&str) -> Option<String>,
) -> Result<ProviderConfig, ScenarioError> {
    let get = |name: &str| env(name).filter(|value| !value.trim().is_empty());
    let provider = super::run::model_provider(env).ok_or_else(|| {
        ScenarioError::Run(
            "--judge-model needs a model to ask: set ANTHROPIC_API_KEY, or OPENAI_BASE_URL (and \
             OPENAI_API_KEY)"
                .into(),
        )
    })?;
    let (kind, base_url, api_key) = match provider.as_str() {
        "anthropic" => (
            ProviderKind::Anthropic,
            get("ANTHROPIC_BASE_URL").unwrap_or_else(|| "https://api.anthropic.com".into()),
            get("ANTHROPIC_API_KEY"),
        ),
        "openai" => (
            ProviderKind::OpenAi,
            get("OPENAI_BASE_URL").unwrap_or_else(|| "https://api.openai.com/v1".into()),
            get("OPENAI_API_KEY"),
        ),
        other => {
            return Err(ScenarioError::Run(format!(
                "the judge speaks anthropic or openai, not OPSLAB_PROVIDER={other}"
            )));
        }
    };
    Ok(ProviderConfig {
        kind,
        base_url: base_url.trim_end_matches('/').to_string(),
        api_key,
        request_timeout: Duration::from_secs(120),
        retry: RetryPolicy::default(),
        prompt_cache: false,
        stream: false,
        summary_endpoint: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_is_read_from_the_tool_call_only() {
        let call = |input: serde_json::Value| {
            vec![
                ContentBlock::Text {
                    text: "Thinking.".into(),
                },
                ContentBlock::ToolUse {
                    id: "t1".into(),
                    name: VERDICT_TOOL.into(),
                    input,
                },
            ]
        };
        assert_eq!(
            parse(&call(json!({"root_cause_matches": true, "reason": "same"}))),
            Ok((true, "same".to_string()))
        );
        assert!(parse(&call(json!({"root_cause_matches": "yes"}))).is_err());
        let text_only = vec![ContentBlock::Text {
            text: "It matches.".into(),
        }];
        assert!(parse(&text_only).unwrap_err().contains("verdict tool"));
    }

    #[test]
    fn the_judge_is_reached_as_the_environment_says_or_not_at_all() {
        let none = |_: &str| None;
        let error = provider_from_env(&none).unwrap_err().to_string();
        assert!(error.contains("ANTHROPIC_API_KEY"), "{error}");
        let local = |name: &str| match name {
            "OPENAI_BASE_URL" => Some("http://127.0.0.1:9/v1/".to_string()),
            _ => None,
        };
        let config = provider_from_env(&local).unwrap();
        assert_eq!(config.kind, ProviderKind::OpenAi);
        assert_eq!(config.base_url, "http://127.0.0.1:9/v1");
        assert_eq!(config.api_key, None);
        let replay = |name: &str| match name {
            "ANTHROPIC_API_KEY" => Some("k".to_string()),
            "OPSLAB_PROVIDER" => Some("replay".to_string()),
            _ => None,
        };
        assert!(provider_from_env(&replay).is_err());
    }
}
