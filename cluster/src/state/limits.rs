//! Limits in the replicated state: key and tenant limits, and the ledgers that grant
//! capacity from them (see [`crate::limits`]).

use std::collections::BTreeMap;

use super::{invalid, State};
use crate::command::{KeyUpdate, Rejection, Response, SliceAnswer, SliceBatch};
use crate::limits::{Limit, Meter, MeterId, SliceRequest, Subject};
use crate::model::Tenant;
use crate::validate::{self, FieldError};

/// Longest lease a node may ask for: a slice of a node that died stays stranded at most
/// this long before the others stop sharing with it.
pub const MAX_LEASE_MS: i64 = 60_000;
/// Most meters in one slice batch.
pub const MAX_SLICE_ASKS: usize = 10_000;
/// Most spend reports (and most held slices) for one meter in one ask.
pub const MAX_SPEND_REPORTS: usize = 64;

impl State {
    /// Returns a tenant by id.
    pub fn tenant(&self, id: &str) -> Option<&Tenant> {
        self.tenants.get(id)
    }

    /// Returns every tenant by id.
    pub fn tenants(&self) -> &BTreeMap<String, Tenant> {
        &self.tenants
    }

    /// Returns a meter's ledger state, if capacity was ever asked for.
    pub fn meter(&self, id: &MeterId) -> Option<&Meter> {
        self.meters.get(id)
    }

    /// Returns the limits that apply to a subject.
    pub fn limits_of(&self, subject: &Subject) -> &[Limit] {
        match subject {
            Subject::Key(id) => self.keys.get(id.as_str()).map_or(&[], |k| k.limits.as_slice()),
            Subject::Tenant(id) => self.tenants.get(id).map_or(&[], |t| t.limits.as_slice()),
        }
    }

    pub(super) fn update_key(&mut self, update: &KeyUpdate) -> Result<Response, Rejection> {
        validate_update(update).map_err(invalid)?;
        let key = self.key_mut(&update.id)?;
        let limits = match &update.limits {
            Some(changed) => {
                let mut limits: Vec<Limit> = key
                    .limits
                    .iter()
                    .filter(|l| !update.limit_units.contains(&l.unit))
                    .copied()
                    .collect();
                limits.extend(changed.iter().filter(|l| update.limit_units.contains(&l.unit)));
                validate::limits(&limits).map_err(invalid)?;
                Some(limits)
            }
            None => None,
        };
        if let Some(name) = &update.name {
            key.name = name.clone();
        }
        if let Some(scopes) = &update.scopes {
            key.scopes = scopes.clone();
        }
        if let Some(limits) = limits {
            key.limits = limits;
        }
        key.updated_at_ms = update.now_ms;
        let record = self.shared_key(&update.id)?;
        self.forget_meters(&Subject::Key(record.id.clone()), &record.limits);
        Ok(Response::Key(record))
    }

    pub(super) fn put_tenant(
        &mut self,
        id: &str,
        limits: &[Limit],
        now_ms: i64,
    ) -> Result<Response, Rejection> {
        validate::id("id", id).map_err(invalid)?;
        validate::limits(limits).map_err(invalid)?;
        let created_at_ms = self.tenants.get(id).map_or(now_ms, |t| t.created_at_ms);
        let tenant = Tenant {
            id: id.to_owned(),
            limits: limits.to_vec(),
            created_at_ms,
            updated_at_ms: now_ms,
        };
        self.tenants.insert(tenant.id.clone(), tenant.clone());
        self.forget_meters(&Subject::Tenant(tenant.id.clone()), limits);
        Ok(Response::Tenant(Box::new(tenant)))
    }

    pub(super) fn delete_tenant(&mut self, id: &str) -> Result<Response, Rejection> {
        let tenant = self
            .tenants
            .remove(id)
            .ok_or_else(|| Rejection::TenantNotFound { id: id.to_owned() })?;
        self.forget_meters(&Subject::Tenant(tenant.id.clone()), &[]);
        Ok(Response::TenantDeleted { id: tenant.id })
    }

    /// Drops the ledgers of a subject's limits that are no longer in `kept`. A limit whose
    /// count changed keeps its ledger: what was granted in the window still counts.
    pub(super) fn forget_meters(&mut self, subject: &Subject, kept: &[Limit]) {
        self.meters.retain(|id, _| {
            &id.subject != subject || kept.iter().any(|l| l.period == id.period && l.unit == id.unit)
        });
    }

    pub(super) fn grant_slices(&mut self, batch: &SliceBatch) -> Result<Response, Rejection> {
        if !(1..=MAX_LEASE_MS).contains(&batch.lease_ms) {
            return Err(invalid(FieldError::new(
                "lease_ms",
                format!("must be 1 to {MAX_LEASE_MS}"),
            )));
        }
        if batch.asks.len() > MAX_SLICE_ASKS {
            return Err(invalid(FieldError::new(
                "asks",
                format!("at most {MAX_SLICE_ASKS} entries"),
            )));
        }
        for (index, ask) in batch.asks.iter().enumerate() {
            for (field, len) in [
                ("reports", ask.reports.len()),
                ("held", ask.held.len()),
                ("credits", ask.credits.len()),
            ] {
                if len > MAX_SPEND_REPORTS {
                    return Err(invalid(FieldError::new(
                        format!("asks[{index}].{field}"),
                        format!("at most {MAX_SPEND_REPORTS} entries"),
                    )));
                }
            }
        }
        let answers = batch
            .asks
            .iter()
            .map(|ask| {
                let Some(limit) = self
                    .limits_of(&ask.meter.subject)
                    .iter()
                    .find(|l| l.period == ask.meter.period && l.unit == ask.meter.unit)
                    .copied()
                else {
                    return SliceAnswer::NoLimit;
                };
                let meter = self.meters.entry(ask.meter.clone()).or_default();
                SliceAnswer::Granted(meter.grant(&SliceRequest {
                    node: batch.node,
                    incarnation: batch.incarnation,
                    held: ask.held.clone(),
                    limit,
                    want: ask.want,
                    need: ask.need,
                    lease_ms: batch.lease_ms,
                    reports: ask.reports.clone(),
                    credits: ask.credits.clone(),
                    now_ms: batch.now_ms,
                }))
            })
            .collect();
        Ok(Response::Slices(answers))
    }
}

fn validate_update(update: &KeyUpdate) -> Result<(), FieldError> {
    if let Some(name) = &update.name {
        validate::name(name)?;
    }
    if let Some(scopes) = &update.scopes {
        validate::scopes(scopes)?;
    }
    if let Some(limits) = &update.limits {
        validate::limits(limits)?;
    }
    Ok(())
}
