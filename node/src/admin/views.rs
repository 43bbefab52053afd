//! JSON shapes of the admin API. Secret hashes never leave the node; the plaintext secret
//! appears only in the answer that created it.

pub use crate::clock::{now_ms, rfc3339};
use cluster::validate::FieldError;
use cluster::validate::MAX_LIMIT_AMOUNT;
use cluster::{KeyRecord, Limit, Period, Unit};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A calendar period as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CalendarBody {
    Day,
    Month,
}

/// A limit as the API reads and writes it: a fixed window of `window_secs`, or a calendar
/// `period` in UTC (exactly one of the two).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitBody {
    pub requests: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<CalendarBody>,
}

impl LimitBody {
    /// Converts the API's limits, naming the entry a problem is in.
    pub fn parse_all(bodies: &[LimitBody]) -> Result<Vec<Limit>, FieldError> {
        bodies
            .iter()
            .enumerate()
            .map(|(index, body)| {
                let period = match (body.window_secs, body.period) {
                    (Some(secs), None) => Period::Seconds(secs),
                    (None, Some(CalendarBody::Day)) => Period::Day,
                    (None, Some(CalendarBody::Month)) => Period::Month,
                    _ => {
                        return Err(FieldError::new(
                            format!("limits[{index}]"),
                            "needs exactly one of window_secs and period",
                        ))
                    }
                };
                Ok(Limit::requests(body.requests, period))
            })
            .collect()
    }
}

impl From<&Limit> for LimitBody {
    fn from(limit: &Limit) -> Self {
        let (window_secs, period) = match limit.period {
            Period::Seconds(secs) => (Some(secs), None),
            Period::Day => (None, Some(CalendarBody::Day)),
            Period::Month => (None, Some(CalendarBody::Month)),
        };
        Self {
            requests: limit.amount,
            window_secs,
            period,
        }
    }
}

/// A token limit as the API reads and writes it: prompt plus completion tokens of AI
/// requests per fixed window of `window_secs` or per calendar `period` (one of the two).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenLimitBody {
    pub tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<CalendarBody>,
}

/// A budget as the API reads and writes it: US dollars of AI requests (from the providers'
/// price tables) per calendar period.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetBody {
    pub usd: f64,
    pub period: CalendarBody,
}

fn calendar(period: CalendarBody) -> Period {
    match period {
        CalendarBody::Day => Period::Day,
        CalendarBody::Month => Period::Month,
    }
}

impl TokenLimitBody {
    pub fn parse(&self) -> Result<Limit, FieldError> {
        let period = match (self.window_secs, self.period) {
            (Some(secs), None) => Period::Seconds(secs),
            (None, Some(period)) => calendar(period),
            _ => {
                return Err(FieldError::new(
                    "token_limit",
                    "needs exactly one of window_secs and period",
                ))
            }
        };
        Ok(Limit {
            amount: self.tokens,
            period,
            unit: Unit::Tokens,
        })
    }
}

impl BudgetBody {
    pub fn parse(&self) -> Result<Limit, FieldError> {
        let micro = self.usd * 1_000_000.0;
        if !micro.is_finite() || micro < 1.0 || micro > MAX_LIMIT_AMOUNT as f64 {
            return Err(FieldError::new(
                "budget.usd",
                format!(
                    "must be at least 0.000001 and at most {}",
                    MAX_LIMIT_AMOUNT / 1_000_000
                ),
            ));
        }
        Ok(Limit {
            amount: micro.round() as u64,
            period: calendar(self.period),
            unit: Unit::MicroUsd,
        })
    }
}

/// A key's or tenant's limits of every unit, as the API shows them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LimitsView {
    pub limits: Vec<LimitBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_limit: Option<TokenLimitBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetBody>,
}

impl LimitsView {
    pub fn of(limits: &[Limit]) -> Self {
        let mut view = Self {
            limits: Vec::new(),
            token_limit: None,
            budget: None,
        };
        for limit in limits {
            let (window_secs, period) = match limit.period {
                Period::Seconds(secs) => (Some(secs), None),
                Period::Day => (None, Some(CalendarBody::Day)),
                Period::Month => (None, Some(CalendarBody::Month)),
            };
            match limit.unit {
                Unit::Requests => view.limits.push(LimitBody::from(limit)),
                Unit::Tokens => {
                    view.token_limit = Some(TokenLimitBody {
                        tokens: limit.amount,
                        window_secs,
                        period,
                    })
                }
                Unit::MicroUsd => {
                    view.budget = period.map(|period| BudgetBody {
                        usd: limit.amount as f64 / 1_000_000.0,
                        period,
                    })
                }
            }
        }
        view
    }
}

/// Reads a field that may be absent (keep), `null` (remove) or a value (set).
pub fn present_or_null<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// One secret of a key, without the secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SecretView {
    pub prefix: String,
    pub created_at: String,
    pub valid_until: Option<String>,
}

/// A key as the admin API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub tenant: Option<String>,
    pub scopes: Vec<String>,
    #[serde(flatten)]
    pub limits: LimitsView,
    pub expires_at: Option<String>,
    /// The stored metadata JSON, emitted as is (it was validated as an object on the way in).
    #[schema(value_type = Object)]
    pub metadata: Box<RawValue>,
    pub status: &'static str,
    pub created_at: String,
    pub updated_at: String,
    pub secrets: Vec<SecretView>,
}

impl KeyView {
    pub fn new(key: &KeyRecord, now_ms: i64) -> Self {
        Self {
            id: key.id.clone(),
            name: key.name.clone(),
            prefix: key.current_secret().map(|s| s.prefix.clone()).unwrap_or_default(),
            tenant: key.tenant.clone(),
            scopes: key.scopes.clone(),
            limits: LimitsView::of(&key.limits),
            expires_at: key.expires_at_ms.map(rfc3339),
            metadata: RawValue::from_string(key.metadata_json.clone())
                .or_else(|_| RawValue::from_string("{}".to_owned()))
                .unwrap_or_default(),
            status: key.status_at(now_ms).as_str(),
            created_at: rfc3339(key.created_at_ms),
            updated_at: rfc3339(key.updated_at_ms),
            secrets: key
                .secrets
                .iter()
                .filter(|s| s.is_valid_at(now_ms))
                .map(|s| SecretView {
                    prefix: s.prefix.clone(),
                    created_at: rfc3339(s.created_at_ms),
                    valid_until: s.valid_until_ms.map(rfc3339),
                })
                .collect(),
        }
    }
}

/// The answer to creating or rotating a key: the view plus the secret, shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyWithSecret {
    pub key: String,
    #[serde(flatten)]
    pub view: KeyView,
}
