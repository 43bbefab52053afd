//! The providers a public model can be served by: each one resolved, with its key opened
//! from the vault, and the order to try them in for each strategy.

use std::collections::BTreeMap;

use cluster::ai::{AiCandidate, AiStrategy};
use cluster::provider::{Price, Provider, ProviderKind};
use rand::Rng;

use super::health::{ProviderHealth, ProviderStatus};
use crate::master_key::MasterKey;

/// The Anthropic API version the translation speaks.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Which API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI chat completions: requests and answers pass through.
    OpenAi,
    /// Anthropic messages: translated both ways.
    Anthropic,
}

/// One provider model ready to be called.
#[derive(Debug)]
pub struct Candidate {
    pub provider: String,
    pub model: String,
    /// `provider/model`, the name usage is counted under.
    pub usage_name: String,
    pub price: Option<Price>,
    pub priority: u32,
    pub weight: u32,
    pub dialect: Dialect,
    pub url: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Candidate {
    /// Resolves a route's candidate: its provider, its endpoint and its key, opened with
    /// this node's master key and placed in the provider's own header.
    pub fn compile(
        candidate: &AiCandidate,
        providers: &BTreeMap<String, Provider>,
        master_key: Option<&MasterKey>,
    ) -> Result<Self, &'static str> {
        let provider = providers.get(&candidate.provider).ok_or("no such provider")?;
        let key = master_key
            .ok_or("no master key")?
            .open(&provider.api_key, &Provider::key_place(&provider.id))
            .map_err(|_| "the provider key does not open with this node's master key")?;
        let dialect = match provider.kind {
            ProviderKind::Anthropic => Dialect::Anthropic,
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => Dialect::OpenAi,
        };
        let mut headers = reqwest::header::HeaderMap::new();
        if dialect == Dialect::Anthropic {
            headers.insert(
                "anthropic-version",
                reqwest::header::HeaderValue::from_static(ANTHROPIC_VERSION),
            );
        }
        // The provider's own headers may set another API version, never the key.
        for (name, value) in &provider.headers {
            if let (Ok(name), Ok(value)) = (
                reqwest::header::HeaderName::from_bytes(name.as_bytes()),
                reqwest::header::HeaderValue::from_str(value),
            ) {
                headers.insert(name, value);
            }
        }
        let (key_header, key_value) = match dialect {
            Dialect::OpenAi => {
                let mut bearer = b"Bearer ".to_vec();
                bearer.extend_from_slice(&key);
                (reqwest::header::AUTHORIZATION, bearer)
            }
            Dialect::Anthropic => (
                reqwest::header::HeaderName::from_static("x-api-key"),
                key.to_vec(),
            ),
        };
        let mut key_value = reqwest::header::HeaderValue::from_bytes(&key_value)
            .map_err(|_| "the provider key is not a header value")?;
        key_value.set_sensitive(true);
        headers.insert(key_header, key_value);
        let path = match dialect {
            Dialect::OpenAi => "/v1/chat/completions",
            Dialect::Anthropic => "/v1/messages",
        };
        Ok(Self {
            provider: provider.id.clone(),
            model: candidate.model.clone(),
            usage_name: format!("{}/{}", provider.id, candidate.model),
            price: provider.prices.get(&candidate.model).copied(),
            priority: candidate.priority,
            weight: candidate.weight,
            dialect,
            url: format!("{}{path}", provider.base_url),
            headers,
        })
    }
}

/// The order to try candidates in, by the route's strategy. A provider the health monitor
/// holds down goes last whatever the strategy (tried only when the others fail), and
/// every strategy breaks ties with a weighted random order (Efraimidis–Spirakis), so equal
/// candidates share load.
pub fn attempt_order<'a>(
    candidates: &'a [Candidate],
    strategy: AiStrategy,
    health: &ProviderHealth,
    now_ms: i64,
) -> Vec<&'a Candidate> {
    let mut rng = rand::thread_rng();
    let statuses = health.snapshot();
    let mut keyed: Vec<(bool, u64, f64, &Candidate)> = candidates
        .iter()
        .map(|c| {
            let status = statuses.get(&c.provider).copied().unwrap_or_default();
            let u: f64 = rng.gen_range(f64::EPSILON..1.0);
            let random = -u.powf(1.0 / f64::from(c.weight.max(1)));
            (status.is_down(now_ms), rank(c, strategy, status), random, c)
        })
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.total_cmp(&b.2)));
    keyed.into_iter().map(|(_, _, _, c)| c).collect()
}

fn rank(candidate: &Candidate, strategy: AiStrategy, status: ProviderStatus) -> u64 {
    match strategy {
        AiStrategy::Priority => u64::from(candidate.priority),
        AiStrategy::Weighted => 0,
        // Unmeasured providers (0) go first, so each gets measured.
        AiStrategy::LowestLatency => status.latency_us,
        AiStrategy::Cheapest => candidate.price.map_or(u64::MAX, |p| {
            p.input_micro_usd_per_mtok
                .saturating_add(p.output_micro_usd_per_mtok)
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dataplane::ai::health::Observation;

    pub(crate) fn candidate(name: &str, price: Option<u64>) -> Candidate {
        Candidate {
            provider: name.into(),
            model: "m".into(),
            usage_name: format!("{name}/m"),
            price: price.map(|p| Price {
                input_micro_usd_per_mtok: p,
                output_micro_usd_per_mtok: p,
            }),
            priority: 0,
            weight: 1,
            dialect: Dialect::OpenAi,
            url: String::new(),
            headers: reqwest::header::HeaderMap::new(),
        }
    }

    fn order(candidates: &[Candidate], strategy: AiStrategy, health: &ProviderHealth) -> Vec<String> {
        attempt_order(candidates, strategy, health, 0)
            .iter()
            .map(|c| c.provider.clone())
            .collect()
    }

    fn observe(health: &ProviderHealth, provider: &str, ms: u64, failed: bool) {
        health.observe(
            &Observation {
                provider: provider.into(),
                elapsed: Duration::from_millis(ms),
                failed,
            },
            0,
        );
    }

    #[test]
    fn strategies_order_candidates() {
        let health = ProviderHealth::default();
        let candidates = [
            candidate("dear", Some(10)),
            candidate("cheap", Some(5)),
            candidate("unpriced", None),
        ];
        observe(&health, "dear", 300, false);
        observe(&health, "cheap", 100, false);
        assert_eq!(
            order(&candidates, AiStrategy::Cheapest, &health),
            ["cheap", "dear", "unpriced"]
        );
        assert_eq!(
            order(&candidates, AiStrategy::LowestLatency, &health),
            ["unpriced", "cheap", "dear"],
            "unmeasured first, then fastest"
        );
        observe(&health, "cheap", 1, true);
        assert_eq!(
            order(&candidates, AiStrategy::LowestLatency, &health),
            ["unpriced", "dear", "cheap"],
            "a failure counts as slow"
        );
    }

    #[test]
    fn a_provider_held_down_goes_last_whatever_the_strategy() {
        let health = ProviderHealth::default();
        let candidates = [candidate("cheap", Some(1)), candidate("dear", Some(9))];
        for _ in 0..3 {
            observe(&health, "cheap", 1, true);
        }
        assert_eq!(
            order(&candidates, AiStrategy::Cheapest, &health),
            ["dear", "cheap"]
        );
        observe(&health, "cheap", 1, false);
        assert_eq!(
            order(&candidates, AiStrategy::Cheapest, &health),
            ["cheap", "dear"],
            "a success brings it back"
        );
    }
}
