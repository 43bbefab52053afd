//! The data plane's read model: what a request handler needs from the replicated state,
//! kept in a view that the state machine swaps atomically on every apply. Handlers load the
//! current view without a lock.
//!
//! Keys are the exception to swapping: they live in one concurrent map ([`KeyIndex`])
//! that successive views share and apply changes in place, so that a write costs one
//! entry, not a copy of part of a map of every key. A key changes one entry at a time and
//! never disappears while it is being replaced (the new entries go in before the old ones
//! come out); a snapshot installed or the keys rebuilt as a whole get a new map, swapped in
//! with the view.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use cluster::model::SecretHash;
use cluster::{Command, KeyRecord, KeyStatus, MeterId, Proposal, StalePolicy, State, Subject, Unit};
use rustc_hash::FxHashMap;
use storage::ApplyObserver;

use super::jwt::jwks::JwksRegistry;
use super::jwt::revoked::RevokedTokenIndex;
use super::limiter::{Limiter, LocalMeter};
use super::route_table::RouteTable;
use super::upstream::HealthRegistry;
use super::usage::{UsageCell, UsageLedger};

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

/// Secret hash → the key it authenticates. Lookups take no lock (papaya's reads are
/// lock-free). The hashes are SHA-256 digests, which nobody can steer, so a fast
/// non-cryptographic hasher is enough.
pub type KeyIndex = papaya::HashMap<SecretHash, Arc<KeyAuth>, rustc_hash::FxBuildHasher>;

/// A view of everything the proxy reads; all but the key index is immutable.
#[derive(Debug, Default, Clone)]
pub struct View {
    pub keys: Arc<KeyIndex>,
    pub routes: Arc<RouteTable>,
    pub stale_policy: StalePolicy,
    pub revoked_tokens: Arc<RevokedTokenIndex>,
}

/// Bookkeeping only the writer (the state machine's apply) touches.
#[derive(Debug, Default)]
struct WriterSide {
    /// Keyed by key ids, which the cluster generates, so Fx (cheaper than SipHash) is safe.
    hashes_by_key: FxHashMap<String, Vec<SecretHash>>,
    usage_by_key: FxHashMap<String, Arc<UsageCell>>,
    /// When each key next changes by itself (an active key's expiry, a rotated-out
    /// secret's end of grace), so that an expiry sweep refreshes the keys it changed rather
    /// than every key. May hold stale entries; they cost one needless refresh.
    deadlines: BTreeSet<(i64, String)>,
}

/// One worker thread's handle on the current view. Every worker cloning the shared `Arc`
/// for every request makes the workers fight over its reference count's cache line; here
/// the `Arc` is cloned once per change of view, and a request holds it through an `Rc`
/// counted by its worker alone.
pub struct WorkerView {
    model: Arc<ReadModel>,
    cached: RefCell<Rc<HeldView>>,
}

/// A view held by one worker's requests.
pub struct HeldView(Arc<View>);

impl std::ops::Deref for HeldView {
    type Target = View;

    fn deref(&self) -> &View {
        &self.0
    }
}

impl WorkerView {
    pub fn new(model: Arc<ReadModel>) -> Self {
        let cached = RefCell::new(Rc::new(HeldView(model.load_full())));
        Self { model, cached }
    }

    /// The current view.
    pub fn current(&self) -> Rc<HeldView> {
        let mut cached = self.cached.borrow_mut();
        if !self.model.is_current(&cached.0) {
            *cached = Rc::new(HeldView(self.model.load_full()));
        }
        Rc::clone(&cached)
    }
}

/// The read model: the current view plus what it takes to update it.
#[derive(Debug, Default)]
pub struct ReadModel {
    current: ArcSwap<View>,
    writer: Mutex<WriterSide>,
    health: HealthRegistry,
    jwks: JwksRegistry,
    limiter: Arc<Limiter>,
    /// The keys counted on this node since the last usage report.
    usage_ledger: Arc<UsageLedger>,
    /// Opens the routes' sealed upstream credentials and HMAC secrets.
    master_key: Option<Arc<crate::master_key::MasterKey>>,
}

impl ReadModel {
    /// Returns the current view. Lock-free: one atomic load and a reference count.
    pub fn load_full(&self) -> Arc<View> {
        self.current.load_full()
    }

    /// Whether `view` is still the current view, without touching its reference count.
    fn is_current(&self, view: &Arc<View>) -> bool {
        Arc::ptr_eq(&self.current.load(), view)
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

    /// Returns the earliest time at which a key changes by itself (an active key expires,
    /// a rotated-out secret's grace ends), if any; possibly a stale one (see the expiry
    /// janitor).
    pub fn next_key_deadline(&self) -> Option<i64> {
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        writer.deadlines.first().map(|(at, _)| *at)
    }

    /// Returns the keys counted on this node since the last usage report (for the usage
    /// flusher).
    pub fn usage_ledger(&self) -> &UsageLedger {
        &self.usage_ledger
    }

    /// Brings one key's entries up to date. New entries replace old ones before any old
    /// entry is removed, so a request with a secret that stays valid always finds it.
    fn refresh_key(&self, view: &mut View, writer: &mut WriterSide, state: &State, id: &str) {
        let old = writer.hashes_by_key.remove(id).unwrap_or_default();
        match state.key(id) {
            Some(record) => self.insert_key(view, writer, state, record),
            None => {
                writer.usage_by_key.remove(id);
            }
        }
        let current = writer.hashes_by_key.get(id).map_or(&[][..], Vec::as_slice);
        let keys = view.keys.pin();
        for hash in old.iter().filter(|hash| !current.contains(hash)) {
            keys.remove(hash);
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
        let usage = writer
            .usage_by_key
            .entry(record.id.clone())
            .or_insert_with(|| Arc::new(UsageCell::new(&record.id, self.usage_ledger.clone())))
            .clone();
        let scopes = Scopes::of(&record.scopes);
        let (meters, ai_meters) = self.meters_of(state, record);
        let mut hashes = Vec::with_capacity(record.secrets.len());
        let keys = view.keys.pin();
        for secret in &record.secrets {
            keys.insert(
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
            if let Some(until) = secret.valid_until_ms {
                writer.deadlines.insert((until, record.id.clone()));
            }
        }
        if let (KeyStatus::Active, Some(at)) = (record.status, record.expires_at_ms) {
            writer.deadlines.insert((at, record.id.clone()));
        }
        writer.hashes_by_key.insert(record.id.clone(), hashes);
    }

    fn rebuild_keys(&self, view: &mut View, writer: &mut WriterSide, state: &State) {
        view.keys = Arc::new(KeyIndex::default());
        writer.hashes_by_key.clear();
        writer.deadlines.clear();
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
            Command::ExpireKeys { now_ms } => {
                // The sweep changed exactly the keys with a deadline at or before `now_ms`.
                let later = writer
                    .deadlines
                    .split_off(&(now_ms.saturating_add(1), String::new()));
                let due = std::mem::replace(&mut writer.deadlines, later);
                let ids: BTreeSet<String> = due.into_iter().map(|(_, id)| id).collect();
                for id in ids {
                    self.refresh_key(view, writer, state, &id);
                }
                view.revoked_tokens = Arc::new(RevokedTokenIndex::build(state));
            }
            // Tenant limits change rarely and reach every key of the tenant.
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

/// Also the helpers of other modules' tests that drive a read model.
#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use cluster::command::{KeyUpdate, NewKey};
    use cluster::model::KeySecret;

    use super::*;

    pub(crate) const T0: i64 = 1_700_000_000_000;

    pub(crate) fn secret(byte: u8) -> KeySecret {
        KeySecret {
            hash: [byte; 32],
            prefix: format!("cf_{byte:02x}"),
            created_at_ms: T0,
            valid_until_ms: None,
        }
    }

    #[test]
    fn a_worker_takes_a_new_view_at_once_and_keeps_its_handle_otherwise() {
        let model = Arc::new(ReadModel::default());
        let worker = WorkerView::new(model.clone());
        let first = worker.current();
        assert!(
            Rc::ptr_eq(&first, &worker.current()),
            "no change, the same handle"
        );
        model.current.store(Arc::new(View::default()));
        let second = worker.current();
        assert!(!Rc::ptr_eq(&first, &second));
        assert!(Arc::ptr_eq(&second.0, &model.load_full()));
    }

    /// Applies `command` to `state` and shows it to `model`, as the state machine does.
    pub(crate) fn apply(model: &ReadModel, state: &mut State, command: Command) {
        let proposal = Proposal::One(command);
        let outcome = cluster::apply_proposal(state, &proposal);
        assert!(!format!("{outcome:?}").contains("Rejected"), "{outcome:?}");
        model.applied(state, std::slice::from_ref(&proposal));
    }

    pub(crate) fn create(id: &str, byte: u8) -> Command {
        Command::CreateKey(Box::new(NewKey {
            id: id.to_owned(),
            name: id.to_owned(),
            tenant: None,
            scopes: vec!["*".to_owned()],
            limits: Vec::new(),
            expires_at_ms: None,
            metadata_json: "{}".to_owned(),
            secret: secret(byte),
            now_ms: T0,
        }))
    }

    /// Creates a key that expires at `at`.
    pub(crate) fn expiring(id: &str, byte: u8, at: i64) -> Command {
        let Command::CreateKey(mut key) = create(id, byte) else {
            unreachable!("create makes a CreateKey")
        };
        key.expires_at_ms = Some(at);
        Command::CreateKey(key)
    }

    /// Rotates `id` to the secret of `byte`, the old one valid for `grace_ms` more.
    pub(crate) fn rotate(id: &str, byte: u8, grace_ms: u64) -> Command {
        Command::RotateKey {
            id: id.into(),
            secret: secret(byte),
            grace_ms,
            now_ms: T0,
        }
    }

    fn lookup(model: &ReadModel, byte: u8) -> Option<Arc<KeyAuth>> {
        model.load_full().keys.pin().get(&[byte; 32]).cloned()
    }

    #[test]
    fn the_index_follows_create_rotate_revoke_and_delete() {
        let model = ReadModel::default();
        let mut state = State::default();
        apply(&model, &mut state, create("key_a", 1));
        assert_eq!(lookup(&model, 1).map(|k| k.status), Some(KeyStatus::Active));

        apply(&model, &mut state, rotate("key_a", 2, 60_000));
        let old = lookup(&model, 1).expect("old secret in its grace period");
        assert_eq!(old.secret_valid_until_ms, Some(T0 + 60_000));
        assert_eq!(lookup(&model, 2).map(|k| k.secret_valid_until_ms), Some(None));

        let revoke = Command::RevokeKey {
            id: "key_a".into(),
            now_ms: T0,
        };
        apply(&model, &mut state, revoke);
        for byte in [1, 2] {
            assert_eq!(lookup(&model, byte).map(|k| k.status), Some(KeyStatus::Revoked));
        }

        let delete = Command::DeleteKey {
            id: "key_a".into(),
            now_ms: T0,
        };
        apply(&model, &mut state, delete);
        assert!(lookup(&model, 1).is_none() && lookup(&model, 2).is_none());
        assert_eq!(model.load_full().keys.len(), 0);
    }

    #[test]
    fn an_expiry_sweep_refreshes_the_keys_it_changed_and_no_other() {
        let model = ReadModel::default();
        let mut state = State::default();
        apply(&model, &mut state, expiring("key_due", 1, T0 + 100));
        apply(&model, &mut state, create("key_rotated", 2));
        apply(&model, &mut state, rotate("key_rotated", 3, 50));
        apply(&model, &mut state, create("key_other", 4));
        let untouched = lookup(&model, 4).expect("other key");

        apply(&model, &mut state, Command::ExpireKeys { now_ms: T0 + 49 });
        assert_eq!(lookup(&model, 1).map(|k| k.status), Some(KeyStatus::Active));
        assert!(lookup(&model, 2).is_some(), "still in its grace period");

        apply(&model, &mut state, Command::ExpireKeys { now_ms: T0 + 100 });
        assert_eq!(lookup(&model, 1).map(|k| k.status), Some(KeyStatus::Expired));
        assert!(lookup(&model, 2).is_none(), "past its grace, pruned");
        assert!(lookup(&model, 3).is_some());
        let other = lookup(&model, 4).expect("other key");
        assert!(
            Arc::ptr_eq(&other, &untouched),
            "a key the sweep did not change is not rebuilt"
        );
    }

    #[test]
    fn a_key_being_changed_is_never_missing_from_the_index() {
        let model = Arc::new(ReadModel::default());
        let mut state = State::default();
        apply(&model, &mut state, create("key_a", 1));
        let done = Arc::new(AtomicBool::new(false));
        let (misses, lookups) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let reader = {
            let (model, done) = (model.clone(), done.clone());
            let (misses, lookups) = (misses.clone(), lookups.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    if lookup(&model, 1).is_none() {
                        misses.fetch_add(1, Ordering::Relaxed);
                    }
                    lookups.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        // Renames rewrite the key's entry each time; the reader must find it throughout.
        let mut round = 0u64;
        while round < 2_000 || lookups.load(Ordering::Relaxed) < 10_000 {
            let update = Command::UpdateKey(Box::new(KeyUpdate {
                id: "key_a".into(),
                name: Some(format!("name {round}")),
                scopes: None,
                limits: None,
                limit_units: Vec::new(),
                now_ms: T0,
            }));
            apply(&model, &mut state, update);
            round += 1;
        }
        done.store(true, Ordering::Relaxed);
        reader.join().expect("reader");
        assert_eq!(misses.load(Ordering::Relaxed), 0);
    }
}
