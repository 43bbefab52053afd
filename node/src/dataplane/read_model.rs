//! The data plane's read model: what a request handler needs from the replicated state,
//! kept in an immutable view that the state machine swaps atomically on every apply.
//! Handlers load the current view without a lock; keys live in a persistent hash map, so a
//! change copies a path of the map, not the map.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use cluster::model::SecretHash;
use cluster::{Command, KeyRecord, KeyStatus, MeterId, Proposal, StalePolicy, State, Subject, Unit};
use storage::ApplyObserver;

use super::jwt::jwks::JwksRegistry;
use super::jwt::revoked::RevokedTokenIndex;
use super::limiter::{Limiter, LocalMeter};
use super::route_table::RouteTable;
use super::upstream::HealthRegistry;
use super::usage::UsageCell;

/// Which routes a key may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scopes {
    All,
    Only(Vec<String>),
}

impl Scopes {
    /// `["*"]` allows every route; an explicit empty list allows none (the admin API turns
    /// an absent `scopes` into `["*"]`).
    fn of(scopes: &[String]) -> Self {
        if scopes.iter().any(|s| s == "*") {
            Scopes::All
        } else {
            Scopes::Only(scopes.to_vec())
        }
    }

    /// Returns whether the key may call `route_id`.
    pub fn allow(&self, route_id: &str) -> bool {
        match self {
            Scopes::All => true,
            Scopes::Only(ids) => ids.iter().any(|id| id == route_id),
        }
    }
}

/// One secret of a key, as the proxy checks it.
#[derive(Debug)]
pub struct KeyAuth {
    /// The key id and tenant as the headers sent upstream, built when the key is applied.
    pub key_id: http1::HeaderValue,
    pub tenant: Option<http1::HeaderValue>,
    pub scopes: Scopes,
    pub status: KeyStatus,
    pub expires_at_ms: Option<i64>,
    /// End of this secret's rotation grace period; `None` for the current secret.
    pub secret_valid_until_ms: Option<i64>,
    /// Where this node counts the key's requests until the next usage report.
    pub usage: Arc<UsageCell>,
    /// The key's own request limits and its tenant's; empty when none apply.
    pub meters: Meters,
    /// The key's and its tenant's token limits and budgets, which AI requests reserve from.
    pub ai_meters: Meters,
}

/// A key's meters of one kind, shared by all its secrets.
pub type Meters = Arc<[Arc<LocalMeter>]>;

/// An immutable view of everything the proxy reads.
#[derive(Debug, Default, Clone)]
pub struct View {
    pub keys: imbl::HashMap<SecretHash, Arc<KeyAuth>>,
    pub routes: Arc<RouteTable>,
    pub stale_policy: StalePolicy,
    pub revoked_tokens: Arc<RevokedTokenIndex>,
}

/// Bookkeeping only the writer (the state machine's apply) touches.
#[derive(Debug, Default)]
struct WriterSide {
    hashes_by_key: HashMap<String, Vec<SecretHash>>,
    usage_by_key: HashMap<String, Arc<UsageCell>>,
}

/// The read model: the current view plus what it takes to update it.
#[derive(Debug, Default)]
pub struct ReadModel {
    current: ArcSwap<View>,
    writer: Mutex<WriterSide>,
    health: HealthRegistry,
    jwks: JwksRegistry,
    limiter: Arc<Limiter>,
    /// Opens the routes' sealed upstream credentials and HMAC secrets.
    master_key: Option<Arc<crate::master_key::MasterKey>>,
}

impl ReadModel {
    /// Returns the current view. Lock-free: one atomic load and a reference count.
    pub fn load_full(&self) -> Arc<View> {
        self.current.load_full()
    }

    /// A read model that opens sealed secrets with `master_key`.
    pub fn with_master_key(master_key: Option<Arc<crate::master_key::MasterKey>>) -> Self {
        Self {
            master_key,
            ..Self::default()
        }
    }

    fn compile_routes(&self, state: &State) -> Arc<RouteTable> {
        Arc::new(RouteTable::compile(
            state.routes(),
            &self.health,
            &self.jwks,
            self.master_key.as_deref(),
            state.providers(),
        ))
    }

    /// Every upstream target's URL and whether it is in rotation.
    pub fn target_health(&self) -> Vec<(String, bool)> {
        self.health.snapshot()
    }

    /// Returns the local side of every limit.
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }

    /// Returns every key's usage cell (for the usage flusher).
    pub fn usage_cells(&self) -> Vec<(String, Arc<UsageCell>)> {
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        writer
            .usage_by_key
            .iter()
            .map(|(id, cell)| (id.clone(), cell.clone()))
            .collect()
    }

    fn refresh_key(&self, view: &mut View, writer: &mut WriterSide, state: &State, id: &str) {
        if let Some(old) = writer.hashes_by_key.remove(id) {
            for hash in old {
                view.keys.remove(&hash);
            }
        }
        match state.key(id) {
            Some(record) => self.insert_key(view, writer, state, record),
            None => {
                writer.usage_by_key.remove(id);
            }
        }
    }

    /// The meters of a key's own limits and of its tenant's: those counting requests, and
    /// those counting tokens and money.
    fn meters_of(&self, state: &State, record: &KeyRecord) -> (Meters, Meters) {
        let key = Subject::Key(record.id.clone());
        let tenant = record.tenant.clone().map(Subject::Tenant);
        let (requests, ai): (Vec<_>, Vec<_>) = std::iter::once(key)
            .chain(tenant)
            .flat_map(|subject| {
                state.limits_of(&subject).iter().map(move |limit| {
                    let id = MeterId {
                        subject: subject.clone(),
                        period: limit.period,
                        unit: limit.unit,
                    };
                    self.limiter.meter(id, limit)
                })
            })
            .partition(|meter| meter.unit() == Unit::Requests);
        (requests.into(), ai.into())
    }

    fn insert_key(&self, view: &mut View, writer: &mut WriterSide, state: &State, record: &KeyRecord) {
        // Ids and tenants were validated to a header-safe alphabet by `apply`.
        let Ok(key_id) = http1::HeaderValue::from_str(&record.id) else {
            tracing::error!(key = %record.id, "key id is not a valid header value; key not served");
            return;
        };
        let tenant = record
            .tenant
            .as_deref()
            .and_then(|t| http1::HeaderValue::from_str(t).ok());
        let usage = writer.usage_by_key.entry(record.id.clone()).or_default().clone();
        let scopes = Scopes::of(&record.scopes);
        let (meters, ai_meters) = self.meters_of(state, record);
        let mut hashes = Vec::with_capacity(record.secrets.len());
        for secret in &record.secrets {
            view.keys.insert(
                secret.hash,
                Arc::new(KeyAuth {
                    key_id: key_id.clone(),
                    tenant: tenant.clone(),
                    scopes: scopes.clone(),
                    status: record.status,
                    expires_at_ms: record.expires_at_ms,
                    secret_valid_until_ms: secret.valid_until_ms,
                    usage: usage.clone(),
                    meters: meters.clone(),
                    ai_meters: ai_meters.clone(),
                }),
            );
            hashes.push(secret.hash);
        }
        writer.hashes_by_key.insert(record.id.clone(), hashes);
    }

    fn rebuild_keys(&self, view: &mut View, writer: &mut WriterSide, state: &State) {
        view.keys = imbl::HashMap::new();
        writer.hashes_by_key.clear();
        let mut usage = std::mem::take(&mut writer.usage_by_key);
        for record in state.keys() {
            if let Some(cell) = usage.remove(&record.id) {
                writer.usage_by_key.insert(record.id.clone(), cell);
            }
            self.insert_key(view, writer, state, record);
        }
    }

    /// Applies one command's effect on the view.
    fn absorb(&self, view: &mut View, writer: &mut WriterSide, state: &State, command: &Command) {
        match command {
            Command::CreateKey(new_key) => self.refresh_key(view, writer, state, &new_key.id),
            Command::RotateKey { id, .. } | Command::RevokeKey { id, .. } | Command::DeleteKey { id, .. } => {
                self.refresh_key(view, writer, state, id)
            }
            Command::UpdateKey(update) => self.refresh_key(view, writer, state, &update.id),
            // Tenant limits change rarely and reach every key of the tenant.
            Command::ExpireKeys { .. } => {
                self.rebuild_keys(view, writer, state);
                view.revoked_tokens = Arc::new(RevokedTokenIndex::build(state));
            }
            Command::PutTenant { .. } | Command::DeleteTenant { .. } => {
                self.rebuild_keys(view, writer, state)
            }
            Command::RevokeTokens(_) => view.revoked_tokens = Arc::new(RevokedTokenIndex::build(state)),
            // A provider change (a rotated key, say) reaches the AI routes that use it.
            Command::PutRoute { .. }
            | Command::DeleteRoute { .. }
            | Command::PutProvider(_)
            | Command::DeleteProvider { .. } => {
                view.routes = self.compile_routes(state);
            }
            Command::SetSettings { .. } => view.stale_policy = state.settings().stale_policy,
            Command::Audited(audited) => self.absorb(view, writer, state, &audited.command),
            Command::RegisterNode(_)
            | Command::ForgetNode { .. }
            | Command::RecordUsage(_)
            | Command::GrantSlices(_)
            | Command::CreateAdminToken(_)
            | Command::RevokeAdminToken { .. }
            | Command::RecordAudit(_) => {}
        }
    }
}

impl ApplyObserver for ReadModel {
    fn applied(&self, state: &State, proposals: &[Proposal]) {
        let mut writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut view = View::clone(&self.current.load());
        for command in proposals.iter().flat_map(Proposal::commands) {
            self.absorb(&mut view, &mut writer, state, command);
        }
        self.current.store(Arc::new(view));
    }

    fn replaced(&self, state: &State) {
        let mut writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut view = View {
            routes: self.compile_routes(state),
            stale_policy: state.settings().stale_policy,
            revoked_tokens: Arc::new(RevokedTokenIndex::build(state)),
            ..View::default()
        };
        self.rebuild_keys(&mut view, &mut writer, state);
        self.current.store(Arc::new(view));
    }
}
