//! Usage totals and the audit log in the replicated state.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{apply, State};
use crate::activity::{
    AuditEntry, AuditRecord, KeyUsage, UsageReport, MAX_AUDIT_ENTRIES, MAX_USAGE_REPORT_KEYS,
};
use crate::command::{Audited, Command, Rejection, Response};

/// Most models one usage delta carries; more are dropped.
const MAX_MODELS_PER_DELTA: usize = 256;
/// Most models tracked per key.
const MAX_MODELS_PER_KEY: usize = 1_024;
/// Most kinds of masked personal data counted per key, and the longest kind name.
const MAX_PII_KINDS: usize = 32;
const MAX_PII_KIND_LEN: usize = 32;

impl State {
    /// Returns a key's request totals, if it made any.
    pub fn usage(&self, key_id: &str) -> Option<&KeyUsage> {
        self.usage.get(key_id)
    }

    /// Returns the audit log, oldest first.
    pub fn audit(&self) -> &VecDeque<Arc<AuditEntry>> {
        &self.audit
    }

    pub(super) fn record_usage(&mut self, report: &UsageReport) -> Result<Response, Rejection> {
        if report.keys.len() > MAX_USAGE_REPORT_KEYS {
            return Err(Rejection::Invalid {
                field: "keys".into(),
                reason: format!("a report carries at most {MAX_USAGE_REPORT_KEYS} keys"),
            });
        }
        let mut known = 0;
        for delta in &report.keys {
            // Usage of a key deleted since the report was made is dropped with the key.
            if !self.keys.contains_key(delta.key_id.as_str()) {
                continue;
            }
            known += 1;
            let usage = self.usage.entry(delta.key_id.clone()).or_default();
            for (total, add) in usage.by_class.iter_mut().zip(delta.by_class) {
                *total = total.saturating_add(add);
            }
            usage.last_used_ms = usage.last_used_ms.max(Some(delta.last_used_ms));
            for (model, add) in delta.models.iter().take(MAX_MODELS_PER_DELTA) {
                if usage.models.len() < MAX_MODELS_PER_KEY || usage.models.contains_key(model) {
                    usage.models.entry(model.clone()).or_default().add(add);
                }
            }
            usage.updated_at_ms = report.now_ms;
            let mut masked = Vec::new();
            for (kind, count) in &delta.pii_masked {
                let fits = usage.pii_masked.len() < MAX_PII_KINDS || usage.pii_masked.contains_key(kind);
                if *count > 0 && kind.len() <= MAX_PII_KIND_LEN && fits {
                    let total = usage.pii_masked.entry(kind.clone()).or_default();
                    *total = total.saturating_add(*count);
                    masked.push(format!("{kind}={count}"));
                }
            }
            // The audit log says that, and how much, personal data was kept from providers
            // for this key; the values never left the node that masked them.
            if !masked.is_empty() {
                self.append_audit(AuditRecord {
                    at_ms: report.now_ms,
                    actor: format!("node-{}", report.node),
                    action: "mask_pii".into(),
                    target: delta.key_id.clone(),
                    outcome: "ok".into(),
                    details: masked.join(" "),
                });
            }
        }
        Ok(Response::UsageRecorded { keys: known })
    }

    pub(super) fn apply_audited(&mut self, audited: &Audited) -> Result<Response, Rejection> {
        if matches!(audited.command, Command::Audited(_) | Command::RecordAudit(_)) {
            return Err(Rejection::Invalid {
                field: "command".into(),
                reason: "an audited command cannot itself be an audit command".into(),
            });
        }
        let response = apply(self, &audited.command);
        let outcome = match &response {
            Response::Rejected(rejection) => rejection.code(),
            _ => "ok",
        };
        self.append_audit(AuditRecord {
            at_ms: audited.at_ms,
            actor: audited.actor.clone(),
            action: audited.command.kind().to_owned(),
            target: audited.command.target(),
            outcome: outcome.to_owned(),
            details: String::new(),
        });
        Ok(response)
    }

    pub(super) fn record_audit(&mut self, record: &AuditRecord) -> Result<Response, Rejection> {
        let seq = self.append_audit(record.clone());
        Ok(Response::AuditRecorded { seq })
    }

    fn append_audit(&mut self, record: AuditRecord) -> u64 {
        let seq = self.next_audit_seq;
        self.next_audit_seq += 1;
        if self.audit.len() >= MAX_AUDIT_ENTRIES {
            self.audit.pop_front();
        }
        self.audit.push_back(Arc::new(AuditEntry {
            seq,
            at_ms: record.at_ms,
            actor: record.actor,
            action: record.action,
            target: record.target,
            outcome: record.outcome,
            details: record.details,
        }));
        seq
    }
}
