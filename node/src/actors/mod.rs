//! Long-lived background duties, one actix actor per job. Each actor is a thin shell over
//! a pure decision function that is tested without a runtime.

pub mod announcer;
pub mod health_checker;
pub mod janitor;
pub mod provider_monitor;
pub mod quota_leaser;
pub mod usage_flusher;
