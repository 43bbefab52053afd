//! What an AI request costs: the upper bound it is admitted against (tokens and money
//! reserved from the key's and tenant's token limits and budgets) and the provider's
//! reported usage it is settled with and counted as.

use std::sync::Arc;

use cluster::activity::ModelUsage;
use cluster::provider::Price;
use cluster::Unit;

use super::candidate::Candidate;
use crate::dataplane::limiter::Reservation;
use crate::dataplane::usage::UsageCell;

/// Completion tokens assumed when a limited request names no `max_tokens` (and sent to
/// the provider as its `max_tokens`, so the bound holds).
pub const DEFAULT_MAX_TOKENS: u64 = 4_096;

/// An upper bound of what one request can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    pub tokens: u64,
    pub micro_usd: u64,
}

impl Estimate {
    /// Bounds a request whose prompt may cost `prompt` tokens and that may complete up to
    /// `max_tokens` (all choices), on the costliest of `candidates`. A token is never
    /// shorter than one byte of the text it stands for, so the caller counts the body's
    /// length (the JSON around the messages covers the few tokens a provider adds per
    /// message) plus allowances for what is not text.
    pub fn of(prompt: u64, max_tokens: u64, candidates: &[Candidate]) -> Self {
        Self {
            tokens: prompt.saturating_add(max_tokens),
            micro_usd: candidates
                .iter()
                .map(|c| cost_micro_usd(c.price, prompt, max_tokens))
                .max()
                .unwrap_or(0),
        }
    }

    pub fn of_unit(&self, unit: Unit) -> u64 {
        match unit {
            Unit::Tokens => self.tokens,
            Unit::MicroUsd => self.micro_usd,
            Unit::Requests => 0,
        }
    }
}

/// Where a completion's usage is counted, at what price, and the reservation it settles.
pub struct UsageMeter {
    pub cell: Option<Arc<UsageCell>>,
    pub name: String,
    pub price: Option<Price>,
    /// Settled with the real usage once it is seen; if it never is (the stream broke off),
    /// it stays spent in full.
    pub reservation: Option<Reservation>,
}

impl UsageMeter {
    /// Counts an OpenAI `usage` object (`prompt_tokens`, `completion_tokens`), if it is one,
    /// and settles the reservation with it.
    pub fn record(&mut self, usage: &serde_json::Value) -> bool {
        let (Some(prompt), Some(completion)) = (
            usage["prompt_tokens"].as_u64(),
            usage["completion_tokens"].as_u64(),
        ) else {
            return false;
        };
        let cost = cost_micro_usd(self.price, prompt, completion);
        if let Some(reservation) = self.reservation.take() {
            let tokens = prompt.saturating_add(completion);
            reservation.settle(|unit| match unit {
                Unit::Tokens => tokens,
                Unit::MicroUsd => cost,
                Unit::Requests => 0,
            });
        }
        if let Some(cell) = &self.cell {
            cell.record_model(
                &self.name,
                &ModelUsage {
                    requests: 1,
                    prompt_tokens: prompt,
                    completion_tokens: completion,
                    cost_micro_usd: cost,
                },
            );
        }
        true
    }
}

/// The cost of a completion in millionths of a dollar, rounded to the nearest.
pub fn cost_micro_usd(price: Option<Price>, prompt: u64, completion: u64) -> u64 {
    let Some(price) = price else {
        return 0;
    };
    let total = u128::from(prompt) * u128::from(price.input_micro_usd_per_mtok)
        + u128::from(completion) * u128::from(price.output_micro_usd_per_mtok);
    u64::try_from((total + 500_000) / 1_000_000).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_follows_the_price_table() {
        let price = Price {
            input_micro_usd_per_mtok: 2_500_000,
            output_micro_usd_per_mtok: 10_000_000,
        };
        // 1,000 prompt tokens at $2.50/M and 500 completion tokens at $10/M: $0.0075.
        assert_eq!(cost_micro_usd(Some(price), 1_000, 500), 7_500);
        assert_eq!(cost_micro_usd(None, 1_000, 500), 0);
    }

    #[test]
    fn an_estimate_bounds_by_the_body_and_the_costliest_candidate() {
        use super::super::candidate::tests::candidate;
        let candidates = [
            candidate("cheap", Some(1_000_000)),
            candidate("dear", Some(2_000_000)),
        ];
        let estimate = Estimate::of(1_000, 500, &candidates);
        assert_eq!(estimate.tokens, 1_500);
        assert_eq!(estimate.micro_usd, 3_000, "1,500 tokens at $2/M");
    }
}
