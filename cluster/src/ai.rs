//! AI routes: public model names a client asks for, and the provider models that serve
//! each, tried in order of priority (weighted inside a priority) until one answers.

use serde::{Deserialize, Serialize};

use crate::validate::{self, FieldError};

/// Most public model names on one route, and most candidates per name.
pub const MAX_AI_MODELS: usize = 256;
pub const MAX_AI_CANDIDATES: usize = 16;

/// One provider model that can serve a public model name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AiCandidate {
    /// A provider id (`/v1/providers/{id}`).
    pub provider: String,
    /// The model name the provider knows.
    pub model: String,
    /// Lower is tried first.
    pub priority: u32,
    /// Share inside its priority group.
    pub weight: u32,
}

/// How a model's candidates are ordered for each request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AiStrategy {
    /// By priority; weighted at random inside a priority.
    #[default]
    Priority,
    /// Weighted at random across all candidates.
    Weighted,
    /// Fastest first, by this node's recent response times (failures count as slow).
    LowestLatency,
    /// Cheapest first, by the providers' price tables (unpriced models last).
    Cheapest,
}

/// What an AI route serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AiSettings {
    /// Public model name → candidates.
    pub models: Vec<(String, Vec<AiCandidate>)>,
    /// Upper bound put on a request's `max_tokens`.
    pub max_tokens_cap: Option<u64>,
    pub strategy: AiStrategy,
    /// Personal data masked in prompts before they leave.
    pub pii: Option<PiiSettings>,
}

/// Kinds of personal data to mask, and whether to put the values back in completions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PiiSettings {
    pub mask: Vec<String>,
    pub restore: bool,
}

/// The kinds a route can mask.
pub const PII_KINDS: [&str; 7] = ["email", "phone", "credit_card", "iban", "ssn", "ip", "secret"];

/// Checks an AI route's settings, returning every problem found (fields under `ai.`).
pub fn validate_ai(settings: &AiSettings) -> Vec<FieldError> {
    let mut problems = Vec::new();
    if settings.models.is_empty() || settings.models.len() > MAX_AI_MODELS {
        problems.push(FieldError::new(
            "ai.models",
            format!("must name 1 to {MAX_AI_MODELS} models"),
        ));
    }
    for (name, candidates) in &settings.models {
        if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
            problems.push(FieldError::new(
                "ai.models",
                "model names must be 1 to 256 characters",
            ));
        }
        if candidates.is_empty() || candidates.len() > MAX_AI_CANDIDATES {
            problems.push(FieldError::new(
                format!("ai.models.{name}"),
                format!("must list 1 to {MAX_AI_CANDIDATES} provider models"),
            ));
        }
        for candidate in candidates {
            if validate::id("provider", &candidate.provider).is_err()
                || candidate.model.is_empty()
                || candidate.model.len() > 256
                || candidate.weight == 0
                || candidate.weight > 10_000
            {
                problems.push(FieldError::new(
                    format!("ai.models.{name}"),
                    "each entry needs a provider id, a model, and a weight of 1 to 10000",
                ));
            }
        }
    }
    if let Some(pii) = &settings.pii {
        if pii.mask.is_empty() || pii.mask.iter().any(|kind| !PII_KINDS.contains(&kind.as_str())) {
            problems.push(FieldError::new(
                "ai.pii.mask",
                format!("must list kinds among {}", PII_KINDS.join(", ")),
            ));
        }
    }
    if settings.max_tokens_cap == Some(0) {
        problems.push(FieldError::new("ai.max_tokens_cap", "must be at least 1"));
    }
    problems
}
