//! Input rules shared by the admin API (which reports every problem at once) and `apply`
//! (which rejects a command that breaks one, whoever proposed it).

use crate::limits::{Limit, Period, Unit};

/// Longest identifier (key ids, tenant ids, route ids in scopes).
pub const MAX_ID_LEN: usize = 64;
/// The form [`id`] accepts, as a regular expression for API documents.
pub const ID_PATTERN: &str = "^[A-Za-z0-9_-][A-Za-z0-9_.-]*$";
/// Longest key name.
pub const MAX_NAME_LEN: usize = 128;
/// Most scopes on one key.
pub const MAX_SCOPES: usize = 256;
/// Largest metadata object, as compact JSON.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Longest rotation grace period: 30 days.
pub const MAX_GRACE_SECS: u64 = 30 * 24 * 3600;
/// Longest rate-limit window: one year.
pub const MAX_WINDOW_SECS: u64 = 366 * 24 * 3600;
/// Most limits on one key or tenant.
pub const MAX_LIMITS: usize = 8;
/// Largest amount a limit may admit per window (requests, tokens or millionths of a dollar).
pub const MAX_LIMIT_AMOUNT: u64 = 1_000_000_000_000;

/// One broken rule: which field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Checks an identifier: 1 to 64 characters of `A-Z a-z 0-9 _ - .`, not starting with `.`.
pub fn id(field: &str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() || value.len() > MAX_ID_LEN {
        return Err(FieldError::new(
            field,
            format!("must be 1 to {MAX_ID_LEN} characters"),
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if !value.chars().all(allowed) || value.starts_with('.') {
        return Err(FieldError::new(
            field,
            "may contain only letters, digits, '_', '-' and '.', and may not start with '.'",
        ));
    }
    Ok(())
}

/// Checks a key name: 1 to 128 characters, no control characters.
pub fn name(value: &str) -> Result<(), FieldError> {
    let chars = value.chars().count();
    if value.trim().is_empty() || chars > MAX_NAME_LEN {
        return Err(FieldError::new(
            "name",
            format!("must be 1 to {MAX_NAME_LEN} characters and not blank"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new("name", "may not contain control characters"));
    }
    Ok(())
}

/// Checks a scope list: at most 256 entries, each `*` or a route id.
pub fn scopes(values: &[String]) -> Result<(), FieldError> {
    if values.len() > MAX_SCOPES {
        return Err(FieldError::new("scopes", format!("at most {MAX_SCOPES} entries")));
    }
    for (index, scope) in values.iter().enumerate() {
        if scope != "*" {
            id(&format!("scopes[{index}]"), scope)?;
        }
    }
    Ok(())
}

/// Checks a key's or tenant's limits: each admits at least one request, fixed windows
/// last 1 s to a year, and a subject has at most one limit per period (two limits of the
/// same period would only make the smaller one matter).
pub fn limits(limits: &[Limit]) -> Result<(), FieldError> {
    for unit in [Unit::Requests, Unit::Tokens, Unit::MicroUsd] {
        let of_unit: Vec<&Limit> = limits.iter().filter(|l| l.unit == unit).collect();
        let (list, amount) = limit_fields(unit);
        if of_unit.len() > MAX_LIMITS {
            return Err(FieldError::new(list, format!("at most {MAX_LIMITS} entries")));
        }
        for (index, limit) in of_unit.iter().enumerate() {
            let place = if unit == Unit::Requests {
                format!("{list}[{index}]")
            } else {
                list.to_owned()
            };
            if limit.amount == 0 || limit.amount > MAX_LIMIT_AMOUNT {
                let most = if unit == Unit::MicroUsd {
                    MAX_LIMIT_AMOUNT / 1_000_000
                } else {
                    MAX_LIMIT_AMOUNT
                };
                return Err(FieldError::new(
                    format!("{place}.{amount}"),
                    format!("must be more than 0 and at most {most}"),
                ));
            }
            if let Period::Seconds(secs) = limit.period {
                if secs == 0 || secs > MAX_WINDOW_SECS {
                    return Err(FieldError::new(
                        format!("{place}.window_secs"),
                        format!("must be 1 to {MAX_WINDOW_SECS}"),
                    ));
                }
            }
            if of_unit[..index]
                .iter()
                .any(|earlier| earlier.period == limit.period)
            {
                return Err(FieldError::new(place, "another limit has the same window"));
            }
        }
    }
    Ok(())
}

/// The API names of a unit's limits and of their amount.
fn limit_fields(unit: Unit) -> (&'static str, &'static str) {
    match unit {
        Unit::Requests => ("limits", "requests"),
        Unit::Tokens => ("token_limit", "tokens"),
        Unit::MicroUsd => ("budget", "usd"),
    }
}

/// Returns whether `name` is an HTTP header name: a non-empty RFC 9110 token of at most
/// `max_len` bytes.
pub fn is_header_name(name: &str, max_len: usize) -> bool {
    !name.is_empty()
        && name.len() <= max_len
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks that an expiry lies after `now_ms`.
pub fn expires_at(expires_at_ms: i64, now_ms: i64) -> Result<(), FieldError> {
    if expires_at_ms <= now_ms {
        return Err(FieldError::new("expires_at", "must be in the future"));
    }
    Ok(())
}

/// Checks the size of the compact JSON metadata.
pub fn metadata(json: &str) -> Result<(), FieldError> {
    if json.len() > MAX_METADATA_BYTES {
        return Err(FieldError::new(
            "metadata",
            format!("must be at most {MAX_METADATA_BYTES} bytes as JSON"),
        ));
    }
    Ok(())
}

/// Checks a rotation grace period.
pub fn grace_secs(value: u64) -> Result<(), FieldError> {
    if value > MAX_GRACE_SECS {
        return Err(FieldError::new(
            "grace_secs",
            format!("must be at most {MAX_GRACE_SECS}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_the_documented_alphabet_only() {
        assert!(id("id", "key_AbC-1.2").is_ok());
        assert!(id("id", "").is_err());
        assert!(id("id", ".hidden").is_err());
        assert!(id("id", "a/b").is_err());
        assert!(id("id", "ключ").is_err());
        assert!(id("id", &"a".repeat(65)).is_err());
    }

    #[test]
    fn names_reject_blank_and_control_characters() {
        assert!(name("billing service").is_ok());
        assert!(name("   ").is_err());
        assert!(name("a\nb").is_err());
        assert!(name(&"n".repeat(129)).is_err());
    }

    #[test]
    fn limits_need_a_positive_count_and_a_bounded_window() {
        let ok = Limit::requests(10, Period::Seconds(60));
        let day = Limit::requests(1_000, Period::Day);
        let tokens = Limit {
            unit: Unit::Tokens,
            ..ok
        };
        assert!(
            limits(&[ok, day, tokens]).is_ok(),
            "units have windows of their own"
        );
        assert!(limits(&[Limit { amount: 0, ..ok }]).is_err());
        assert_eq!(
            limits(&[Limit { amount: 0, ..tokens }]).map_err(|e| e.field),
            Err("token_limit.tokens".to_owned())
        );
        assert!(limits(&[Limit {
            period: Period::Seconds(0),
            ..ok
        }])
        .is_err());
        assert!(
            limits(&[ok, Limit { amount: 5, ..ok }]).is_err(),
            "same window twice"
        );
        assert!(limits(&[ok; MAX_LIMITS + 1]).is_err());
    }

    #[test]
    fn scopes_allow_the_wildcard_and_route_ids() {
        assert!(scopes(&["*".into(), "billing".into()]).is_ok());
        assert!(scopes(&["bad scope".into()]).is_err());
    }
}
