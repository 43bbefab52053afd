//! Model providers of the AI gateway: where a provider lives, its API key (sealed with the
//! master key, never readable back) and its prices. Replicated, so rotating a provider key
//! is one write that every node picks up.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::sealed::SealedSecret;
use crate::validate::{self, FieldError};

/// Most models or extra headers on one provider.
pub const MAX_PROVIDER_ITEMS: usize = 256;

/// The API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProviderKind {
    OpenAi,
    Anthropic,
    /// Any server speaking the OpenAI API (vLLM, Ollama, Azure-style gateways, ...).
    OpenAiCompatible,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::OpenAiCompatible => "openai_compatible",
        }
    }
}

/// A model's price, in millionths of a US dollar per million tokens (integers keep the
/// replicated state exact).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    pub input_micro_usd_per_mtok: u64,
    pub output_micro_usd_per_mtok: u64,
}

/// A provider as replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provider {
    pub id: String,
    pub kind: ProviderKind,
    pub base_url: String,
    /// Sealed with the master key, associated data `provider:<id>:api_key`.
    pub api_key: SealedSecret,
    /// The key's last four characters, for operators telling keys apart.
    pub api_key_last4: String,
    pub headers: Vec<(String, String)>,
    /// Models the provider serves; empty means any.
    pub models: Vec<String>,
    pub prices: BTreeMap<String, Price>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl Provider {
    /// The associated data a provider's key is sealed with.
    pub fn key_place(id: &str) -> String {
        format!("provider:{id}:api_key")
    }
}

/// Checks a provider, returning every problem found.
pub fn validate_provider(provider: &Provider) -> Vec<FieldError> {
    let mut problems = Vec::new();
    if let Err(problem) = validate::id("id", &provider.id) {
        problems.push(problem);
    }
    let url_ok = url::Url::parse(&provider.base_url)
        .ok()
        .is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.query().is_none());
    if !url_ok || provider.base_url.len() > 2048 {
        problems.push(FieldError::new(
            "base_url",
            "must be an http(s) URL without a query",
        ));
    }
    if provider.api_key.ciphertext.len() <= 16 {
        problems.push(FieldError::new("api_key", "is not a sealed secret"));
    }
    if provider.api_key_last4.chars().count() > 4 {
        problems.push(FieldError::new("api_key", "at most four characters may be shown"));
    }
    if provider.headers.len() > MAX_PROVIDER_ITEMS || provider.models.len() > MAX_PROVIDER_ITEMS {
        problems.push(FieldError::new(
            "provider",
            format!("at most {MAX_PROVIDER_ITEMS} headers or models"),
        ));
    }
    for (index, (name, value)) in provider.headers.iter().enumerate() {
        let name_ok = validate::is_header_name(name, 256);
        let value_ok = value.len() <= 4096 && value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
        if !name_ok || !value_ok {
            problems.push(FieldError::new(
                format!("headers[{index}]"),
                "must be a valid header name and value",
            ));
        }
    }
    for (index, model) in provider.models.iter().enumerate() {
        if model.is_empty() || model.len() > 256 || model.chars().any(char::is_control) {
            problems.push(FieldError::new(
                format!("models[{index}]"),
                "must be 1 to 256 characters",
            ));
        }
    }
    for model in provider.prices.keys() {
        if model.is_empty() || model.len() > 256 || model.chars().any(char::is_control) {
            problems.push(FieldError::new(
                "prices",
                "model names must be 1 to 256 characters",
            ));
        }
    }
    problems
}
