//! The replicated state and its pure `apply`.

mod activity;
mod admin_tokens;
mod limits;
mod providers;
mod revocations;
mod routes;

pub use limits::{MAX_LEASE_MS, MAX_SLICE_ASKS, MAX_SPEND_REPORTS};

use std::collections::{btree_map, BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use compact_str::CompactString;
use rustc_hash::FxBuildHasher;

use serde::{Deserialize, Serialize};

use crate::activity::{AuditEntry, KeyUsage};
use crate::command::{Command, NewKey, Outcome, Proposal, Rejection, Response};
use crate::limits::{Meter, MeterId};
use crate::model::{KeyRecord, KeySecret, KeyStatus, NodeInfo, SecretHash, Tenant};
use crate::route::Route;
use crate::settings::ClusterSettings;
use crate::types::NodeId;
use crate::validate::{self, FieldError};

/// Everything the cluster agrees on. Restart = snapshot of this + log replay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Keys by id (ordered, so listing pages are stable). Ids are short enough to be
    /// stored inline in the tree's nodes (`CompactString`), so a lookup among hundreds of
    /// thousands of keys compares bytes in the nodes it visits instead of following a
    /// pointer per comparison; encoded like a `String`.
    keys: BTreeMap<CompactString, Arc<KeyRecord>>,
    /// Member info by node id.
    nodes: BTreeMap<NodeId, NodeInfo>,
    /// Routes by id.
    routes: BTreeMap<String, Route>,
    /// Cluster-wide settings.
    settings: ClusterSettings,
    /// Tenants with limits, by id.
    tenants: BTreeMap<String, Tenant>,
    /// Model providers by id.
    providers: BTreeMap<String, crate::provider::Provider>,
    /// Managed admin tokens by id.
    admin_tokens: BTreeMap<String, crate::admin_token::AdminTokenRecord>,
    /// Revoked tokens by [`TokenRevocation::key`].
    token_revocations: BTreeMap<String, crate::revocation::TokenRevocation>,
    /// The current window's ledger of every limit that has been asked for.
    meters: BTreeMap<MeterId, Meter>,
    /// Request totals by key id.
    usage: BTreeMap<String, KeyUsage>,
    /// The most recent admin writes, oldest first.
    audit: VecDeque<Arc<AuditEntry>>,
    /// Sequence number of the next audit entry.
    next_audit_seq: u64,
    /// Secret hash → key id. Derived from `keys`; rebuilt after decoding. Hashed with Fx,
    /// not SipHash: the keys are SHA-256 digests of secrets this cluster generated, so
    /// nobody can choose them to collide, and SipHash over 32 bytes took 6% of a follower's
    /// CPU samples under write load (every insert, and every entry again as the map grows).
    #[serde(skip)]
    key_by_hash: HashMap<SecretHash, String, FxBuildHasher>,
}

/// Applies one command. Pure: the outcome depends only on `state` and `command`, so every
/// member that applies the same log reaches the same state. A rejected command changes
/// nothing.
pub fn apply(state: &mut State, command: &Command) -> Response {
    let outcome = match command {
        Command::CreateKey(new_key) => state.create_key(new_key),
        Command::RotateKey {
            id,
            secret,
            grace_ms,
            now_ms,
        } => state.rotate_key(id, secret, *grace_ms, *now_ms),
        Command::UpdateKey(update) => state.update_key(update),
        Command::RevokeKey { id, now_ms } => state.revoke_key(id, *now_ms),
        Command::RevokeTokens(entry) => state.revoke_tokens(entry),
        Command::CreateAdminToken(record) => state.create_admin_token(record),
        Command::PutProvider(provider) => state.put_provider(provider),
        Command::DeleteProvider { id, .. } => state.delete_provider(id),
        Command::RevokeAdminToken { id, now_ms } => state.revoke_admin_token(id, *now_ms),
        Command::DeleteKey { id, .. } => state.delete_key(id),
        Command::ExpireKeys { now_ms } => Ok(state.expire_keys(*now_ms)),
        Command::RegisterNode(info) => Ok(state.register_node(info)),
        Command::ForgetNode { id } => Ok(state.forget_node(*id)),
        Command::PutRoute { route, now_ms } => state.put_route(route, *now_ms),
        Command::DeleteRoute { id, .. } => state.delete_route(id),
        Command::SetSettings { settings, now_ms } => Ok(state.set_settings(settings, *now_ms)),
        Command::PutTenant { id, limits, now_ms } => state.put_tenant(id, limits, *now_ms),
        Command::DeleteTenant { id, .. } => state.delete_tenant(id),
        Command::GrantSlices(batch) => state.grant_slices(batch),
        Command::RecordUsage(report) => state.record_usage(report),
        Command::Audited(audited) => state.apply_audited(audited),
        Command::RecordAudit(record) => state.record_audit(record),
    };
    outcome.unwrap_or_else(Response::Rejected)
}

/// Applies what one log entry carries.
pub fn apply_proposal(state: &mut State, proposal: &Proposal) -> Outcome {
    match proposal {
        Proposal::One(command) => Outcome::One(apply(state, command)),
        Proposal::Batch(commands) => Outcome::Batch(commands.iter().map(|c| apply(state, c)).collect()),
    }
}

impl State {
    /// Rebuilds derived indexes; called after decoding a snapshot.
    pub fn rebuild_indexes(&mut self) {
        self.key_by_hash = self
            .keys
            .values()
            .flat_map(|key| key.secrets.iter().map(|s| (s.hash, key.id.clone())))
            .collect();
    }

    /// Returns a copy for encoding into a snapshot: the records are shared, not duplicated,
    /// and the derived index, which snapshots leave out, is not copied. At a few hundred
    /// thousand keys that is tens of milliseconds where a deep copy took over a second.
    pub fn snapshot_copy(&self) -> State {
        // Spelled out field by field, so that a new field cannot be forgotten here.
        let State {
            keys,
            nodes,
            routes,
            settings,
            tenants,
            providers,
            admin_tokens,
            token_revocations,
            meters,
            usage,
            audit,
            next_audit_seq,
            key_by_hash: _,
        } = self;
        State {
            keys: keys.clone(),
            nodes: nodes.clone(),
            routes: routes.clone(),
            settings: settings.clone(),
            tenants: tenants.clone(),
            providers: providers.clone(),
            admin_tokens: admin_tokens.clone(),
            token_revocations: token_revocations.clone(),
            meters: meters.clone(),
            usage: usage.clone(),
            audit: audit.clone(),
            next_audit_seq: *next_audit_seq,
            key_by_hash: HashMap::default(),
        }
    }

    /// Returns a key by id.
    pub fn key(&self, id: &str) -> Option<&KeyRecord> {
        self.keys.get(id).map(|key| &**key)
    }

    /// Returns the key a secret hash belongs to, with the matching secret.
    pub fn key_by_secret_hash(&self, hash: &SecretHash) -> Option<(&KeyRecord, &KeySecret)> {
        let key = self.keys.get(self.key_by_hash.get(hash)?.as_str())?;
        let secret = key.secrets.iter().find(|s| &s.hash == hash)?;
        Some((key, secret))
    }

    /// Returns up to `limit` keys with ids after `after`, and whether more follow.
    pub fn keys_page(&self, after: Option<&str>, limit: usize) -> (Vec<&KeyRecord>, bool) {
        use std::ops::Bound;
        let start = match after {
            Some(cursor) => Bound::Excluded(cursor),
            None => Bound::Unbounded,
        };
        let mut iter = self
            .keys
            .range::<str, _>((start, Bound::Unbounded))
            .map(|(_, k)| &**k);
        let page: Vec<&KeyRecord> = iter.by_ref().take(limit).collect();
        let more = iter.next().is_some();
        (page, more)
    }

    /// Returns every key, in id order.
    pub fn keys(&self) -> impl Iterator<Item = &KeyRecord> {
        self.keys.values().map(|key| &**key)
    }

    /// Returns the number of keys.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Returns every member's info.
    pub fn nodes(&self) -> &BTreeMap<NodeId, NodeInfo> {
        &self.nodes
    }

    /// Returns the cluster-wide settings.
    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    fn set_settings(&mut self, settings: &ClusterSettings, now_ms: i64) -> Response {
        self.settings = ClusterSettings {
            updated_at_ms: now_ms,
            ..settings.clone()
        };
        Response::Settings(self.settings.clone())
    }

    /// Returns a key to change; a snapshot being encoded keeps the record as it was.
    fn key_mut(&mut self, id: &str) -> Result<&mut KeyRecord, Rejection> {
        self.keys
            .get_mut(id)
            .map(Arc::make_mut)
            .ok_or_else(|| not_found(id))
    }

    /// Returns the stored record itself, for an answer.
    pub(super) fn shared_key(&self, id: &str) -> Result<Arc<KeyRecord>, Rejection> {
        self.keys.get(id).cloned().ok_or_else(|| not_found(id))
    }

    fn create_key(&mut self, new: &NewKey) -> Result<Response, Rejection> {
        validate_new_key(new).map_err(invalid)?;
        // One search of the tree finds the place and whether it is taken.
        let slot = match self.keys.entry(CompactString::from(new.id.as_str())) {
            btree_map::Entry::Occupied(_) => return Err(Rejection::KeyExists { id: new.id.clone() }),
            btree_map::Entry::Vacant(slot) => slot,
        };
        if self.key_by_hash.contains_key(&new.secret.hash) {
            return Err(Rejection::SecretCollision);
        }
        let record = KeyRecord {
            id: new.id.clone(),
            name: new.name.clone(),
            tenant: new.tenant.clone(),
            scopes: new.scopes.clone(),
            limits: new.limits.clone(),
            expires_at_ms: new.expires_at_ms,
            metadata_json: new.metadata_json.clone(),
            secrets: vec![KeySecret {
                created_at_ms: new.now_ms,
                valid_until_ms: None,
                ..new.secret.clone()
            }],
            status: KeyStatus::Active,
            created_at_ms: new.now_ms,
            updated_at_ms: new.now_ms,
        };
        self.key_by_hash.insert(new.secret.hash, record.id.clone());
        Ok(Response::Key(slot.insert(Arc::new(record)).clone()))
    }

    fn rotate_key(
        &mut self,
        id: &str,
        secret: &KeySecret,
        grace_ms: u64,
        now_ms: i64,
    ) -> Result<Response, Rejection> {
        validate::grace_secs(grace_ms / 1000).map_err(invalid)?;
        let status = self.key(id).ok_or_else(|| not_found(id))?.status_at(now_ms);
        match status {
            KeyStatus::Active => {}
            KeyStatus::Revoked => return Err(Rejection::KeyRevoked { id: id.to_owned() }),
            KeyStatus::Expired => return Err(Rejection::KeyExpired { id: id.to_owned() }),
        }
        if self.key_by_hash.contains_key(&secret.hash) {
            return Err(Rejection::SecretCollision);
        }
        // Taken for writing only once the rotation is sure to happen.
        let key = self.key_mut(id)?;
        let grace_end = now_ms.saturating_add(i64::try_from(grace_ms).unwrap_or(i64::MAX));
        let mut dropped = Vec::new();
        for old in &mut key.secrets {
            // A secret already inside a grace period keeps the earlier of its two deadlines.
            let until = old.valid_until_ms.map_or(grace_end, |u| u.min(grace_end));
            old.valid_until_ms = Some(until);
        }
        key.secrets.retain(|old| {
            let keep = old.is_valid_at(now_ms);
            if !keep {
                dropped.push(old.hash);
            }
            keep
        });
        key.secrets.insert(
            0,
            KeySecret {
                created_at_ms: now_ms,
                valid_until_ms: None,
                ..secret.clone()
            },
        );
        key.updated_at_ms = now_ms;
        for hash in dropped {
            self.key_by_hash.remove(&hash);
        }
        self.key_by_hash.insert(secret.hash, id.to_owned());
        Ok(Response::Key(self.shared_key(id)?))
    }

    fn revoke_key(&mut self, id: &str, now_ms: i64) -> Result<Response, Rejection> {
        let key = self.key_mut(id)?;
        if key.status != KeyStatus::Revoked {
            key.status = KeyStatus::Revoked;
            key.updated_at_ms = now_ms;
        }
        Ok(Response::Key(self.shared_key(id)?))
    }

    fn delete_key(&mut self, id: &str) -> Result<Response, Rejection> {
        let key = self.keys.remove(id).ok_or_else(|| not_found(id))?;
        let key = Arc::unwrap_or_clone(key);
        self.usage.remove(id);
        self.forget_meters(&crate::limits::Subject::Key(key.id.clone()), &[]);
        for secret in &key.secrets {
            self.key_by_hash.remove(&secret.hash);
        }
        Ok(Response::KeyDeleted { id: key.id })
    }

    fn expire_keys(&mut self, now_ms: i64) -> Response {
        let mut expired = 0;
        let mut secrets_pruned = 0;
        let lapses = |key: &KeyRecord| {
            (key.status == KeyStatus::Active && key.status_at(now_ms) == KeyStatus::Expired)
                || key.secrets.iter().any(|secret| !secret.is_valid_at(now_ms))
        };
        let index = &mut self.key_by_hash;
        for shared in self.keys.values_mut() {
            // Only a key that lapses is written to, and so copied out of any snapshot
            // that shares it.
            if !lapses(shared) {
                continue;
            }
            let key = Arc::make_mut(shared);
            if key.status == KeyStatus::Active && key.status_at(now_ms) == KeyStatus::Expired {
                key.status = KeyStatus::Expired;
                expired += 1;
            }
            let before = key.secrets.len();
            key.secrets.retain(|secret| {
                let keep = secret.is_valid_at(now_ms);
                if !keep {
                    index.remove(&secret.hash);
                }
                keep
            });
            secrets_pruned += (before - key.secrets.len()) as u64;
            key.updated_at_ms = now_ms;
        }
        Response::KeysExpired {
            expired,
            secrets_pruned,
            revocations_pruned: self.expire_token_revocations(now_ms),
        }
    }

    fn register_node(&mut self, info: &NodeInfo) -> Response {
        self.nodes.insert(info.id, info.clone());
        Response::NodeUpdated { id: info.id }
    }

    fn forget_node(&mut self, id: NodeId) -> Response {
        self.nodes.remove(&id);
        Response::NodeUpdated { id }
    }
}

fn validate_new_key(new: &NewKey) -> Result<(), FieldError> {
    validate::id("id", &new.id)?;
    validate::name(&new.name)?;
    if let Some(tenant) = &new.tenant {
        validate::id("tenant", tenant)?;
    }
    validate::scopes(&new.scopes)?;
    validate::limits(&new.limits)?;
    if let Some(at) = new.expires_at_ms {
        validate::expires_at(at, new.now_ms)?;
    }
    validate::metadata(&new.metadata_json)
}

fn invalid(error: FieldError) -> Rejection {
    Rejection::Invalid {
        field: error.field,
        reason: error.reason,
    }
}

fn not_found(id: &str) -> Rejection {
    Rejection::KeyNotFound { id: id.to_owned() }
}

#[cfg(test)]
mod tests;
