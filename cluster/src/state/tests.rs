use proptest::prelude::*;

use super::*;
use crate::activity::{AuditRecord, KeyUsageDelta, UsageReport};
use crate::command::{Audited, KeyUpdate, NewKey, Outcome, Proposal, SliceAnswer, SliceAsk, SliceBatch};
use crate::limits::{Limit, Period, Unit};
use crate::limits::{MeterId, Subject};
use crate::route::{RouteAuth, UpstreamTarget};
use crate::settings::StalePolicy;
use crate::wire;

const T0: i64 = 1_700_000_000_000;

fn secret(byte: u8) -> KeySecret {
    KeySecret {
        hash: [byte; 32],
        prefix: format!("cf_{byte:02x}"),
        created_at_ms: 0,
        valid_until_ms: None,
    }
}

fn new_key(id: &str, byte: u8) -> NewKey {
    NewKey {
        id: id.to_owned(),
        name: format!("name of {id}"),
        tenant: Some("acme".to_owned()),
        scopes: vec!["*".to_owned()],
        limits: vec![Limit {
            amount: 100,
            period: Period::Seconds(60),
            unit: Unit::Requests,
        }],
        expires_at_ms: None,
        metadata_json: "{}".to_owned(),
        secret: secret(byte),
        now_ms: T0,
    }
}

fn create(state: &mut State, id: &str, byte: u8) -> Response {
    apply(state, &Command::CreateKey(Box::new(new_key(id, byte))))
}

fn rejected(response: Response) -> Rejection {
    match response {
        Response::Rejected(rejection) => rejection,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn key(response: Response) -> KeyRecord {
    match response {
        Response::Key(key) => Arc::unwrap_or_clone(key),
        other => panic!("expected a key, got {other:?}"),
    }
}

#[test]
fn create_stores_the_key_and_indexes_its_hash() {
    let mut state = State::default();
    let created = key(create(&mut state, "key_a", 1));
    assert_eq!(created.status, KeyStatus::Active);
    assert_eq!(created.created_at_ms, T0);
    assert_eq!(state.key("key_a"), Some(&created));
    let (found, found_secret) = state.key_by_secret_hash(&[1; 32]).expect("indexed");
    assert_eq!(found.id, "key_a");
    assert_eq!(found_secret.valid_until_ms, None);
}

#[test]
fn create_rejects_a_duplicate_id_and_changes_nothing() {
    let mut state = State::default();
    create(&mut state, "key_a", 1);
    let before = state.clone();
    assert_eq!(
        rejected(create(&mut state, "key_a", 2)),
        Rejection::KeyExists { id: "key_a".into() }
    );
    assert_eq!(state, before);
    assert!(state.key_by_secret_hash(&[2; 32]).is_none());
}

#[test]
fn create_rejects_a_colliding_secret() {
    let mut state = State::default();
    create(&mut state, "key_a", 1);
    assert_eq!(
        rejected(create(&mut state, "key_b", 1)),
        Rejection::SecretCollision
    );
    assert!(state.key("key_b").is_none());
}

#[test]
fn create_rejects_invalid_fields() {
    type Mutation = Box<dyn Fn(&mut NewKey)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("id", Box::new(|k| k.id = "bad id".into())),
        ("name", Box::new(|k| k.name = " ".into())),
        ("tenant", Box::new(|k| k.tenant = Some("a/b".into()))),
        ("scopes[0]", Box::new(|k| k.scopes = vec!["no spaces".into()])),
        (
            "limits[0].requests",
            Box::new(|k| k.limits = vec![Limit::requests(0, Period::Seconds(1))]),
        ),
        ("expires_at", Box::new(|k| k.expires_at_ms = Some(T0 - 1))),
        ("metadata", Box::new(|k| k.metadata_json = "x".repeat(20_000))),
    ];
    for (field, mutate) in cases {
        let mut state = State::default();
        let mut new = new_key("key_a", 1);
        mutate(&mut new);
        match rejected(apply(&mut state, &Command::CreateKey(Box::new(new)))) {
            Rejection::Invalid { field: got, .. } => assert_eq!(got, field),
            other => panic!("{field}: unexpected {other:?}"),
        }
        assert_eq!(state, State::default(), "{field} changed the state");
    }
}

#[test]
fn rotate_keeps_the_old_secret_valid_until_the_grace_ends() {
    let mut state = State::default();
    create(&mut state, "key_a", 1);
    let rotated = key(apply(
        &mut state,
        &Command::RotateKey {
            id: "key_a".into(),
            secret: secret(2),
            grace_ms: 60_000,
            now_ms: T0 + 1_000,
        },
    ));
    assert_eq!(rotated.secrets.len(), 2);
    assert_eq!(rotated.current_secret().map(|s| s.hash), Some([2; 32]));
    let (_, old) = state.key_by_secret_hash(&[1; 32]).expect("old still indexed");
    assert_eq!(old.valid_until_ms, Some(T0 + 61_000));
    assert!(old.is_valid_at(T0 + 60_999));
    assert!(!old.is_valid_at(T0 + 61_000));
}

#[test]
fn rotate_with_zero_grace_invalidates_the_old_secret_at_once() {
    let mut state = State::default();
    create(&mut state, "key_a", 1);
    apply(
        &mut state,
        &Command::RotateKey {
            id: "key_a".into(),
            secret: secret(2),
            grace_ms: 0,
            now_ms: T0,
        },
    );
    assert!(state.key_by_secret_hash(&[1; 32]).is_none());
    assert!(state.key_by_secret_hash(&[2; 32]).is_some());
}

#[test]
fn a_second_rotation_never_extends_an_earlier_grace() {
    let mut state = State::default();
    create(&mut state, "key_a", 1);
    let rotate = |secret_byte, grace_ms, now_ms| Command::RotateKey {
        id: "key_a".into(),
        secret: secret(secret_byte),
        grace_ms,
        now_ms,
    };
    apply(&mut state, &rotate(2, 10_000, T0));
    let record = key(apply(&mut state, &rotate(3, 60_000, T0 + 1_000)));
    let first = record.secrets.iter().find(|s| s.hash == [1; 32]).expect("first");
    let second = record.secrets.iter().find(|s| s.hash == [2; 32]).expect("second");
    assert_eq!(first.valid_until_ms, Some(T0 + 10_000));
    assert_eq!(second.valid_until_ms, Some(T0 + 61_000));
}

#[test]
fn rotate_rejections() {
    let mut state = State::default();
    let rotate = |id: &str, byte, grace_ms| Command::RotateKey {
        id: id.into(),
        secret: secret(byte),
        grace_ms,
        now_ms: T0,
    };
    assert_eq!(
        rejected(apply(&mut state, &rotate("key_x", 2, 0))),
        Rejection::KeyNotFound { id: "key_x".into() }
    );
    create(&mut state, "key_a", 1);
    create(&mut state, "key_b", 5);
    let before = state.clone();
    assert_eq!(
        rejected(apply(&mut state, &rotate("key_a", 5, 0))),
        Rejection::SecretCollision
    );
    assert!(matches!(
        rejected(apply(&mut state, &rotate("key_a", 2, 31 * 24 * 3600 * 1000))),
        Rejection::Invalid { .. }
    ));
    assert_eq!(state, before);
    apply(
        &mut state,
        &Command::RevokeKey {
            id: "key_a".into(),
            now_ms: T0,
        },
    );
    assert_eq!(
        rejected(apply(&mut state, &rotate("key_a", 2, 0))),
        Rejection::KeyRevoked { id: "key_a".into() }
    );
}

#[test]
fn rotate_rejects_an_expired_key() {
    let mut state = State::default();
    let mut new = new_key("key_a", 1);
    new.expires_at_ms = Some(T0 + 10);
    apply(&mut state, &Command::CreateKey(Box::new(new)));
    let command = Command::RotateKey {
        id: "key_a".into(),
        secret: secret(2),
        grace_ms: 0,
        now_ms: T0 + 10,
    };
    assert_eq!(
        rejected(apply(&mut state, &command)),
        Rejection::KeyExpired { id: "key_a".into() }
    );
}

#[test]
fn revoke_is_idempotent_and_keeps_the_first_revocation_time() {
    let mut state = State::default();
    create(&mut state, "key_a", 1);
    let first = key(apply(
        &mut state,
        &Command::RevokeKey {
            id: "key_a".into(),
            now_ms: T0 + 5,
        },
    ));
    assert_eq!(first.status, KeyStatus::Revoked);
    let second = key(apply(
        &mut state,
        &Command::RevokeKey {
            id: "key_a".into(),
            now_ms: T0 + 9,
        },
    ));
    assert_eq!(second.updated_at_ms, T0 + 5);
    assert_eq!(
        rejected(apply(
            &mut state,
            &Command::RevokeKey {
                id: "nope".into(),
                now_ms: T0
            }
        )),
        Rejection::KeyNotFound { id: "nope".into() }
    );
}

#[test]
fn delete_removes_the_key_and_every_secret_hash() {
    let mut state = State::default();
    create(&mut state, "key_a", 1);
    apply(
        &mut state,
        &Command::RotateKey {
            id: "key_a".into(),
            secret: secret(2),
            grace_ms: 60_000,
            now_ms: T0,
        },
    );
    assert_eq!(
        apply(
            &mut state,
            &Command::DeleteKey {
                id: "key_a".into(),
                now_ms: T0
            }
        ),
        Response::KeyDeleted { id: "key_a".into() }
    );
    assert!(state.key("key_a").is_none());
    assert!(state.key_by_secret_hash(&[1; 32]).is_none());
    assert!(state.key_by_secret_hash(&[2; 32]).is_none());
    assert_eq!(
        rejected(apply(
            &mut state,
            &Command::DeleteKey {
                id: "key_a".into(),
                now_ms: T0
            }
        )),
        Rejection::KeyNotFound { id: "key_a".into() }
    );
}

#[test]
fn expire_marks_due_keys_and_prunes_past_grace_secrets() {
    let mut state = State::default();
    let mut due = new_key("key_due", 1);
    due.expires_at_ms = Some(T0 + 100);
    apply(&mut state, &Command::CreateKey(Box::new(due)));
    create(&mut state, "key_rotated", 2);
    apply(
        &mut state,
        &Command::RotateKey {
            id: "key_rotated".into(),
            secret: secret(3),
            grace_ms: 50,
            now_ms: T0,
        },
    );

    assert_eq!(
        apply(&mut state, &Command::ExpireKeys { now_ms: T0 + 49 }),
        Response::KeysExpired {
            expired: 0,
            secrets_pruned: 0,
            revocations_pruned: 0
        }
    );
    assert_eq!(
        apply(&mut state, &Command::ExpireKeys { now_ms: T0 + 100 }),
        Response::KeysExpired {
            expired: 1,
            secrets_pruned: 1,
            revocations_pruned: 0
        }
    );
    assert_eq!(state.key("key_due").map(|k| k.status), Some(KeyStatus::Expired));
    assert!(state.key_by_secret_hash(&[2; 32]).is_none());
    assert!(state.key_by_secret_hash(&[3; 32]).is_some());
}

#[test]
fn nodes_register_and_are_forgotten() {
    let mut state = State::default();
    let info = NodeInfo {
        id: 2,
        peer_addr: "127.0.0.1:7082".into(),
        admin_addr: "127.0.0.1:9082".into(),
        proxy_addr: "127.0.0.1:8082".into(),
        version: "0.1.0".into(),
        registered_at_ms: T0,
    };
    assert_eq!(
        apply(&mut state, &Command::RegisterNode(info.clone())),
        Response::NodeUpdated { id: 2 }
    );
    assert_eq!(state.nodes().get(&2), Some(&info));
    apply(&mut state, &Command::ForgetNode { id: 2 });
    assert!(state.nodes().is_empty());
}

#[test]
fn pages_follow_id_order_without_gaps() {
    let mut state = State::default();
    for i in 0..5u8 {
        create(&mut state, &format!("key_{i}"), i + 1);
    }
    let (first, more) = state.keys_page(None, 2);
    assert!(more);
    assert_eq!(
        first.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
        ["key_0", "key_1"]
    );
    let (rest, more) = state.keys_page(Some("key_1"), 10);
    assert!(!more);
    assert_eq!(rest.len(), 3);
}

#[test]
fn a_batch_applies_each_command_in_order_with_its_own_outcome() {
    let mut state = State::default();
    let batch = Proposal::Batch(vec![
        Command::CreateKey(Box::new(new_key("key_a", 1))),
        Command::CreateKey(Box::new(new_key("key_a", 2))),
        Command::RevokeKey {
            id: "key_a".into(),
            now_ms: T0 + 1,
        },
    ]);
    let Outcome::Batch(outcomes) = apply_proposal(&mut state, &batch) else {
        panic!("a batch answers a batch");
    };
    assert!(matches!(outcomes[0], Response::Key(_)));
    assert_eq!(
        outcomes[1],
        Response::Rejected(Rejection::KeyExists { id: "key_a".into() })
    );
    assert_eq!(key(outcomes[2].clone()).status, KeyStatus::Revoked);
    assert!(state.key_by_secret_hash(&[2; 32]).is_none());
}

fn route(id: &str, prefix: &str) -> Route {
    Route::new(
        id,
        prefix,
        RouteAuth::ApiKey,
        vec![UpstreamTarget::new("http://127.0.0.1:9000")],
    )
}

fn put_route(route: Route, now: i64) -> Command {
    Command::PutRoute {
        route: Box::new(route),
        now_ms: T0 + now,
    }
}

#[test]
fn put_route_creates_then_replaces_keeping_the_creation_time() {
    let mut state = State::default();
    let first = apply(&mut state, &put_route(route("billing", "/billing"), 0));
    assert!(matches!(first, Response::Route(_)));
    let mut changed = route("billing", "/bills");
    changed.created_at_ms = 42; // proposer-supplied timestamps are ignored
    let Response::Route(second) = apply(&mut state, &put_route(changed, 5)) else {
        panic!("expected the route");
    };
    assert_eq!(second.path_prefix, "/bills");
    assert_eq!((second.created_at_ms, second.updated_at_ms), (T0, T0 + 5));
    assert_eq!(state.routes().len(), 1);
}

#[test]
fn put_route_rejects_an_invalid_route_and_changes_nothing() {
    let mut state = State::default();
    let mut bad = route("billing", "no-slash");
    bad.upstreams.clear();
    let before = state.clone();
    let rejection = rejected(apply(&mut state, &put_route(bad, 0)));
    assert_eq!(rejection.code(), "validation_failed");
    assert_eq!(state, before);
}

#[test]
fn delete_route_removes_it_once() {
    let mut state = State::default();
    apply(&mut state, &put_route(route("billing", "/billing"), 0));
    let delete = Command::DeleteRoute {
        id: "billing".into(),
        now_ms: T0,
    };
    assert_eq!(
        apply(&mut state, &delete),
        Response::RouteDeleted { id: "billing".into() }
    );
    assert_eq!(rejected(apply(&mut state, &delete)).code(), "not_found");
}

#[test]
fn settings_are_replaced_and_stamped() {
    let mut state = State::default();
    assert_eq!(state.settings().stale_policy, StalePolicy::FailClosed);
    let command = Command::SetSettings {
        settings: ClusterSettings {
            stale_policy: StalePolicy::FailOpen,
            updated_at_ms: 0,
        },
        now_ms: T0,
    };
    apply(&mut state, &command);
    assert_eq!(state.settings().stale_policy, StalePolicy::FailOpen);
    assert_eq!(state.settings().updated_at_ms, T0);
}

fn usage(node: NodeId, now: i64, keys: &[(&str, [u64; 5], i64)]) -> Command {
    Command::RecordUsage(Box::new(UsageReport {
        node,
        now_ms: T0 + now,
        keys: keys
            .iter()
            .map(|(id, by_class, last)| KeyUsageDelta {
                key_id: (*id).to_owned(),
                by_class: *by_class,
                last_used_ms: T0 + last,
                models: Vec::new(),
                pii_masked: Vec::new(),
            })
            .collect(),
    }))
}

#[test]
fn usage_reports_from_several_nodes_add_up() {
    let mut state = State::default();
    create(&mut state, "key_a", 1);
    apply(&mut state, &usage(1, 10, &[("key_a", [0, 5, 0, 1, 0], 9)]));
    let answer = apply(
        &mut state,
        &usage(2, 20, &[("key_a", [0, 2, 0, 0, 3], 7), ("gone", [1; 5], 1)]),
    );
    assert_eq!(answer, Response::UsageRecorded { keys: 1 });
    let totals = state.usage("key_a").expect("usage recorded");
    assert_eq!(totals.by_class, [0, 7, 0, 1, 3]);
    assert_eq!(
        totals.last_used_ms,
        Some(T0 + 9),
        "the latest use wins, not the latest report"
    );
    assert!(state.usage("gone").is_none());
}

#[test]
fn masked_personal_data_is_counted_and_audited_without_values() {
    let mut state = State::default();
    create(&mut state, "key_a", 1);
    let mut report = usage(3, 10, &[("key_a", [0, 1, 0, 0, 0], 9)]);
    if let Command::RecordUsage(report) = &mut report {
        report.keys[0].pii_masked = vec![("email".into(), 2), ("phone".into(), 1)];
    }
    apply(&mut state, &report);
    apply(&mut state, &report);
    let totals = state.usage("key_a").expect("usage recorded");
    assert_eq!(totals.pii_masked.get("email"), Some(&4));
    let entry = state.audit().back().expect("audited");
    assert_eq!(
        (entry.actor.as_str(), entry.action.as_str(), entry.target.as_str()),
        ("node-3", "mask_pii", "key_a")
    );
    assert_eq!(entry.details, "email=2 phone=1");
}

#[test]
fn deleting_a_key_drops_its_usage() {
    let mut state = State::default();
    create(&mut state, "key_a", 1);
    apply(&mut state, &usage(1, 10, &[("key_a", [0, 1, 0, 0, 0], 9)]));
    apply(
        &mut state,
        &Command::DeleteKey {
            id: "key_a".into(),
            now_ms: T0,
        },
    );
    assert!(state.usage("key_a").is_none());
}

fn audited(command: Command) -> Command {
    Command::Audited(Box::new(Audited {
        actor: "admin:1234".into(),
        at_ms: T0 + 1,
        command,
    }))
}

#[test]
fn an_audited_write_is_applied_and_logged_with_its_outcome() {
    let mut state = State::default();
    let created = apply(
        &mut state,
        &audited(Command::CreateKey(Box::new(new_key("key_a", 1)))),
    );
    assert!(matches!(created, Response::Key(_)));
    let refused = apply(
        &mut state,
        &audited(Command::RevokeKey {
            id: "nope".into(),
            now_ms: T0,
        }),
    );
    assert_eq!(rejected(refused).code(), "not_found");
    let log: Vec<_> = state.audit().iter().cloned().collect();
    assert_eq!(log.len(), 2);
    assert_eq!(
        (
            log[0].seq,
            log[0].action.as_str(),
            log[0].target.as_str(),
            log[0].outcome.as_str()
        ),
        (0, "create_key", "key_a", "ok")
    );
    assert_eq!(
        (
            log[1].seq,
            log[1].action.as_str(),
            log[1].target.as_str(),
            log[1].outcome.as_str()
        ),
        (1, "revoke_key", "nope", "not_found")
    );
    assert_eq!((log[1].actor.as_str(), log[1].at_ms), ("admin:1234", T0 + 1));
}

#[test]
fn audit_commands_cannot_nest() {
    let mut state = State::default();
    let nested = audited(audited(Command::ExpireKeys { now_ms: T0 }));
    assert_eq!(rejected(apply(&mut state, &nested)).code(), "validation_failed");
    assert!(state.audit().is_empty());
}

#[test]
fn recorded_audit_entries_are_numbered_in_order() {
    let mut state = State::default();
    let record = |target: &str| {
        Command::RecordAudit(Box::new(AuditRecord {
            at_ms: T0,
            actor: "admin:1".into(),
            action: "add_member".into(),
            target: target.into(),
            outcome: "ok".into(),
            details: String::new(),
        }))
    };
    assert_eq!(
        apply(&mut state, &record("2")),
        Response::AuditRecorded { seq: 0 }
    );
    assert_eq!(
        apply(&mut state, &record("3")),
        Response::AuditRecorded { seq: 1 }
    );
}

fn arb_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        4 => arb_plain_command(),
        1 => arb_plain_command().prop_map(audited),
    ]
}

fn arb_plain_command() -> impl Strategy<Value = Command> {
    let id = (0u8..4).prop_map(|i| format!("key_{i}"));
    let byte = 1u8..12;
    let now = 0i64..10_000;
    prop_oneof![
        (
            id.clone(),
            byte.clone(),
            now.clone(),
            proptest::option::of(0i64..20_000)
        )
            .prop_map(|(id, b, now, exp)| {
                let mut new = new_key(&id, b);
                new.now_ms = T0 + now;
                new.expires_at_ms = exp.map(|e| T0 + e);
                Command::CreateKey(Box::new(new))
            }),
        (id.clone(), byte, 0u64..5_000, now.clone()).prop_map(|(id, b, grace_ms, now)| Command::RotateKey {
            id,
            secret: secret(b),
            grace_ms,
            now_ms: T0 + now,
        }),
        (id.clone(), now.clone()).prop_map(|(id, now)| Command::RevokeKey { id, now_ms: T0 + now }),
        (id.clone(), now.clone()).prop_map(|(id, now)| Command::DeleteKey { id, now_ms: T0 + now }),
        now.clone()
            .prop_map(|now| Command::ExpireKeys { now_ms: T0 + now }),
        ((0u8..3), now.clone())
            .prop_map(|(r, now)| put_route(route(&format!("r{r}"), &format!("/r{r}")), now)),
        ((0u8..3), now.clone()).prop_map(|(r, now)| Command::DeleteRoute {
            id: format!("r{r}"),
            now_ms: T0 + now
        }),
        (id.clone(), now.clone(), 0u64..10).prop_map(|(id, now, n)| usage(
            1,
            now,
            &[(&id, [0, n, 0, 0, 0], now)]
        )),
        (id.clone(), now.clone(), 1u64..4, 0u64..50).prop_map(|(id, now, node, want)| grant(
            node,
            now,
            vec![(key_meter(&id), want)]
        )),
        (id, now.clone(), proptest::option::of(1u64..500)).prop_map(|(id, now, requests)| {
            Command::UpdateKey(Box::new(KeyUpdate {
                id,
                name: None,
                scopes: None,
                limits: Some(requests.map(per_minute).into_iter().collect()),
                limit_units: vec![Unit::Requests],
                now_ms: T0 + now,
            }))
        }),
        now.prop_map(|now| Command::PutTenant {
            id: "acme".into(),
            limits: vec![per_minute(50)],
            now_ms: T0 + now
        }),
    ]
}

proptest! {
    #[test]
    fn any_history_keeps_the_hash_index_exact_and_is_deterministic(
        commands in proptest::collection::vec(arb_command(), 0..60)
    ) {
        let mut a = State::default();
        let mut b = State::default();
        for command in &commands {
            let before = a.clone();
            let response = apply(&mut a, command);
            prop_assert_eq!(&response, &apply(&mut b, command));
            if matches!(response, Response::Rejected(_)) {
                // A refused command changes nothing, except that an audited one is logged.
                let mut expected = before.clone();
                if let Command::Audited(_) = command {
                    expected.audit = a.audit.clone();
                    expected.next_audit_seq = a.next_audit_seq;
                    prop_assert_eq!(a.audit.len(), before.audit.len() + 1);
                }
                prop_assert_eq!(&a, &expected);
            }
            let mut rebuilt = a.clone();
            rebuilt.rebuild_indexes();
            prop_assert_eq!(&rebuilt.key_by_hash, &a.key_by_hash);
        }
        // A snapshot round trip reproduces the state, indexes included.
        let bytes = wire::encode(&a).expect("encode");
        let mut decoded: State = wire::decode(&bytes).expect("decode");
        decoded.rebuild_indexes();
        prop_assert_eq!(decoded, a);
    }
}

proptest! {
    #[test]
    fn a_snapshot_copy_keeps_the_state_it_was_taken_from(
        before in proptest::collection::vec(arb_command(), 0..40),
        after in proptest::collection::vec(arb_command(), 1..40)
    ) {
        let mut state = State::default();
        for command in &before {
            apply(&mut state, command);
        }
        let frozen = state.clone();
        let copy = state.snapshot_copy();
        // The copy shares the key records and audit entries; changing them afterwards
        // must copy them out, never write through to the snapshot.
        for command in &after {
            apply(&mut state, command);
        }
        prop_assert_eq!(wire::encode(&copy).expect("encode"), wire::encode(&frozen).expect("encode"));
        let mut restored = copy;
        restored.rebuild_indexes();
        prop_assert_eq!(restored, frozen);
    }
}

proptest! {
    #[test]
    fn a_batch_is_equivalent_to_its_commands_one_by_one(
        commands in proptest::collection::vec(arb_command(), 0..30)
    ) {
        let mut one_by_one = State::default();
        let singles: Vec<Response> = commands.iter().map(|c| apply(&mut one_by_one, c)).collect();
        let mut batched = State::default();
        let outcome = apply_proposal(&mut batched, &Proposal::Batch(commands));
        prop_assert_eq!(outcome, Outcome::Batch(singles));
        prop_assert_eq!(batched, one_by_one);
    }
}

fn per_minute(requests: u64) -> Limit {
    Limit::requests(requests, Period::Seconds(60))
}

fn key_meter(id: &str) -> MeterId {
    MeterId {
        subject: Subject::Key(id.to_owned()),
        period: Period::Seconds(60),
        unit: Unit::Requests,
    }
}

fn grant(node: NodeId, now: i64, asks: Vec<(MeterId, u64)>) -> Command {
    Command::GrantSlices(Box::new(SliceBatch {
        node,
        incarnation: 7,
        now_ms: T0 + now,
        lease_ms: 2_000,
        asks: asks
            .into_iter()
            .map(|(meter, want)| SliceAsk {
                meter,
                want,
                need: 0,
                reports: vec![],
                credits: vec![],
                held: vec![],
            })
            .collect(),
    }))
}

fn answers(response: Response) -> Vec<SliceAnswer> {
    match response {
        Response::Slices(answers) => answers,
        other => panic!("expected slices, got {other:?}"),
    }
}

fn granted(answer: &SliceAnswer) -> u64 {
    match answer {
        SliceAnswer::Granted(grant) => grant.size,
        SliceAnswer::NoLimit => panic!("expected a grant"),
    }
}

#[test]
fn slices_are_granted_from_the_keys_limit_and_unknown_meters_have_none() {
    let mut state = State::default();
    create(&mut state, "key_a", 1);
    let tenant_meter = MeterId {
        subject: Subject::Tenant("acme".into()),
        period: Period::Seconds(60),
        unit: Unit::Requests,
    };
    let day_meter = MeterId {
        period: Period::Day,
        ..key_meter("key_a")
    };
    let got = answers(apply(
        &mut state,
        &grant(
            1,
            0,
            vec![(key_meter("key_a"), 1_000), (tenant_meter, 5), (day_meter, 5)],
        ),
    ));
    assert!(granted(&got[0]) > 0 && granted(&got[0]) <= 100);
    assert_eq!(&got[1..], [SliceAnswer::NoLimit, SliceAnswer::NoLimit]);
    let ledger = state.meter(&key_meter("key_a")).and_then(|m| m.ledger.clone());
    assert_eq!(ledger.map(|l| l.consumed()), Some(granted(&got[0])));
}

#[test]
fn grant_batches_out_of_bounds_are_rejected_and_change_nothing() {
    let mut state = State::default();
    create(&mut state, "key_a", 1);
    let before = state.clone();
    for lease_ms in [0, 60_001, -5] {
        let Command::GrantSlices(mut batch) = grant(1, 0, vec![(key_meter("key_a"), 5)]) else {
            unreachable!()
        };
        batch.lease_ms = lease_ms;
        let rejection = rejected(apply(&mut state, &Command::GrantSlices(batch)));
        assert_eq!(rejection.code(), "validation_failed");
    }
    let Command::GrantSlices(mut batch) = grant(1, 0, vec![(key_meter("key_a"), 5)]) else {
        unreachable!()
    };
    batch.asks[0].reports = vec![
        crate::limits::SpendReport {
            slice_id: 0,
            spent: 0
        };
        65
    ];
    rejected(apply(&mut state, &Command::GrantSlices(batch)));
    assert_eq!(state, before);
}

#[test]
fn updating_a_keys_limits_keeps_changed_ledgers_and_drops_removed_ones() {
    let mut state = State::default();
    create(&mut state, "key_a", 1);
    apply(&mut state, &grant(1, 0, vec![(key_meter("key_a"), 1_000)]));
    let update = |limits: Vec<Limit>| {
        Command::UpdateKey(Box::new(KeyUpdate {
            id: "key_a".into(),
            name: Some("renamed".into()),
            scopes: None,
            limits: Some(limits),
            limit_units: vec![Unit::Requests],
            now_ms: T0 + 5,
        }))
    };
    let changed = key(apply(&mut state, &update(vec![per_minute(10)])));
    assert_eq!(changed.name, "renamed");
    assert_eq!(changed.limits, [per_minute(10)]);
    assert!(
        state.meter(&key_meter("key_a")).is_some(),
        "a changed count keeps what was granted"
    );
    // A token limit set on its own leaves the request limits as they are.
    let tokens = Limit {
        unit: Unit::Tokens,
        ..per_minute(5_000)
    };
    let with_tokens = key(apply(
        &mut state,
        &Command::UpdateKey(Box::new(KeyUpdate {
            id: "key_a".into(),
            name: None,
            scopes: None,
            limits: Some(vec![tokens]),
            limit_units: vec![Unit::Tokens],
            now_ms: T0 + 6,
        })),
    ));
    assert_eq!(with_tokens.limits, [per_minute(10), tokens]);
    key(apply(&mut state, &update(vec![])));
    assert!(state.meter(&key_meter("key_a")).is_none());
    assert_eq!(state.key("key_a").map(|k| k.limits.clone()), Some(vec![tokens]));

    let before = state.clone();
    let invalid = rejected(apply(&mut state, &update(vec![per_minute(0)])));
    assert_eq!(invalid.code(), "validation_failed");
    let missing = Command::UpdateKey(Box::new(KeyUpdate {
        id: "key_zz".into(),
        name: None,
        scopes: None,
        limits: None,
        limit_units: vec![],
        now_ms: T0,
    }));
    assert_eq!(
        rejected(apply(&mut state, &missing)),
        Rejection::KeyNotFound { id: "key_zz".into() }
    );
    assert_eq!(state, before);
}

#[test]
fn tenants_are_put_replaced_and_deleted_with_their_meters() {
    let mut state = State::default();
    let put = |requests, now| Command::PutTenant {
        id: "acme".into(),
        limits: vec![per_minute(requests)],
        now_ms: T0 + now,
    };
    apply(&mut state, &put(10, 0));
    let Response::Tenant(replaced) = apply(&mut state, &put(20, 7)) else {
        panic!("expected a tenant")
    };
    assert_eq!((replaced.created_at_ms, replaced.updated_at_ms), (T0, T0 + 7));
    let tenant_meter = MeterId {
        subject: Subject::Tenant("acme".into()),
        period: Period::Seconds(60),
        unit: Unit::Requests,
    };
    let got = answers(apply(&mut state, &grant(2, 8, vec![(tenant_meter.clone(), 100)])));
    assert!(granted(&got[0]) <= 20);
    assert!(state.meter(&tenant_meter).is_some());

    let before = state.clone();
    let bad = Command::PutTenant {
        id: "a b".into(),
        limits: vec![],
        now_ms: T0,
    };
    assert_eq!(rejected(apply(&mut state, &bad)).code(), "validation_failed");
    assert_eq!(state, before);

    let delete = Command::DeleteTenant {
        id: "acme".into(),
        now_ms: T0 + 9,
    };
    assert_eq!(
        apply(&mut state, &delete),
        Response::TenantDeleted { id: "acme".into() }
    );
    assert!(state.meter(&tenant_meter).is_none());
    assert_eq!(
        rejected(apply(&mut state, &delete)),
        Rejection::TenantNotFound { id: "acme".into() }
    );
}

#[test]
fn deleting_a_key_drops_its_meters() {
    let mut state = State::default();
    create(&mut state, "key_a", 1);
    apply(&mut state, &grant(1, 0, vec![(key_meter("key_a"), 10)]));
    apply(
        &mut state,
        &Command::DeleteKey {
            id: "key_a".into(),
            now_ms: T0,
        },
    );
    assert!(state.meter(&key_meter("key_a")).is_none());
}

fn revoke_jti(jti: &str, expires_in: i64, now: i64) -> Command {
    Command::RevokeTokens(Box::new(crate::revocation::TokenRevocation {
        tokens: crate::revocation::RevokedTokens::Jti(jti.into()),
        expires_at_ms: T0 + now + expires_in,
        created_at_ms: T0 + now,
    }))
}

#[test]
fn token_revocations_are_stored_widened_and_expire_with_their_tokens() {
    use crate::revocation::{RevokedTokens, TokenRevocation};
    let mut state = State::default();
    assert!(matches!(
        apply(&mut state, &revoke_jti("t1", 1_000, 0)),
        Response::TokenRevocation(_)
    ));
    let subject = |before: i64, expires_in: i64| {
        Command::RevokeTokens(Box::new(TokenRevocation {
            tokens: RevokedTokens::Subject {
                sub: "alice".into(),
                issued_before_ms: T0 + before,
            },
            expires_at_ms: T0 + expires_in,
            created_at_ms: T0,
        }))
    };
    apply(&mut state, &subject(500, 5_000));
    let Response::TokenRevocation(widened) = apply(&mut state, &subject(100, 9_000)) else {
        panic!("expected a revocation")
    };
    assert_eq!(
        widened.tokens,
        RevokedTokens::Subject {
            sub: "alice".into(),
            issued_before_ms: T0 + 500
        },
        "a repeat never narrows"
    );
    assert_eq!(widened.expires_at_ms, T0 + 9_000);

    let before = state.clone();
    for bad in [
        revoke_jti("", 1_000, 0),
        revoke_jti("t2", 0, 0),
        revoke_jti("x\u{0}y", 1_000, 0),
    ] {
        assert_eq!(rejected(apply(&mut state, &bad)).code(), "validation_failed");
    }
    assert_eq!(state, before);

    let Response::KeysExpired {
        revocations_pruned, ..
    } = apply(&mut state, &Command::ExpireKeys { now_ms: T0 + 1_000 })
    else {
        panic!("expected housekeeping")
    };
    assert_eq!(revocations_pruned, 1);
    assert_eq!(
        state.token_revocations().keys().collect::<Vec<_>>(),
        ["sub:alice"]
    );
}

fn admin_token(id: &str, byte: u8) -> Command {
    Command::CreateAdminToken(Box::new(crate::admin_token::AdminTokenRecord {
        id: id.into(),
        name: format!("{id} token"),
        role: crate::admin_token::AdminRole::Operator,
        hash: [byte; 32],
        prefix: "cfat_abc".into(),
        created_at_ms: T0,
        revoked_at_ms: Some(T0),
    }))
}

#[test]
fn admin_tokens_are_stored_by_hash_and_revoked_once() {
    let mut state = State::default();
    let Response::AdminToken(stored) = apply(&mut state, &admin_token("tok_a", 1)) else {
        panic!("expected a token")
    };
    assert_eq!(stored.revoked_at_ms, None, "a new token is never born revoked");
    assert_eq!(
        state.admin_token_by_hash(&[1; 32]).map(|t| t.id.as_str()),
        Some("tok_a")
    );
    let before = state.clone();
    assert_eq!(
        rejected(apply(&mut state, &admin_token("tok_a", 2))).code(),
        "already_exists"
    );
    assert_eq!(
        rejected(apply(&mut state, &admin_token("tok_b", 1))),
        Rejection::SecretCollision
    );
    assert_eq!(
        rejected(apply(&mut state, &admin_token("bad id", 3))).code(),
        "validation_failed"
    );
    assert_eq!(state, before);

    let revoke = |now| Command::RevokeAdminToken {
        id: "tok_a".into(),
        now_ms: T0 + now,
    };
    apply(&mut state, &revoke(5));
    let Response::AdminToken(again) = apply(&mut state, &revoke(9)) else {
        panic!("expected a token")
    };
    assert_eq!(again.revoked_at_ms, Some(T0 + 5));
    let missing = Command::RevokeAdminToken {
        id: "tok_zz".into(),
        now_ms: T0,
    };
    assert_eq!(rejected(apply(&mut state, &missing)).code(), "not_found");
}

fn provider(id: &str, now: i64) -> Command {
    Command::PutProvider(Box::new(crate::provider::Provider {
        id: id.into(),
        kind: crate::provider::ProviderKind::OpenAi,
        base_url: "https://api.openai.example".into(),
        api_key: crate::sealed::SealedSecret {
            nonce: [1; 12],
            ciphertext: vec![7; 40],
        },
        api_key_last4: "abcd".into(),
        headers: vec![("OpenAI-Organization".into(), "org-1".into())],
        models: vec!["gpt-4o".into()],
        prices: BTreeMap::new(),
        created_at_ms: T0 + now,
        updated_at_ms: T0 + now,
    }))
}

#[test]
fn providers_are_put_replaced_and_deleted() {
    let mut state = State::default();
    apply(&mut state, &provider("openai", 0));
    let Response::Provider(replaced) = apply(&mut state, &provider("openai", 5)) else {
        panic!("expected a provider")
    };
    assert_eq!((replaced.created_at_ms, replaced.updated_at_ms), (T0, T0 + 5));
    let before = state.clone();
    let Command::PutProvider(mut bad) = provider("openai", 6) else {
        unreachable!()
    };
    bad.base_url = "ftp://x".into();
    assert_eq!(
        rejected(apply(&mut state, &Command::PutProvider(bad))).code(),
        "validation_failed"
    );
    assert_eq!(state, before);
    let delete = Command::DeleteProvider {
        id: "openai".into(),
        now_ms: T0,
    };
    assert_eq!(
        apply(&mut state, &delete),
        Response::ProviderDeleted { id: "openai".into() }
    );
    assert_eq!(rejected(apply(&mut state, &delete)).code(), "not_found");
}

#[test]
fn the_key_map_encodes_as_the_plain_map_of_earlier_snapshots() {
    let mut state = State::default();
    create(&mut state, "key_a", 1);
    create(&mut state, "key_b", 2);
    let plain: BTreeMap<String, KeyRecord> = state.keys().map(|key| (key.id.clone(), key.clone())).collect();
    let bytes = wire::encode(&plain).expect("encode");
    assert_eq!(wire::encode(&state.keys).expect("encode"), bytes);
    let decoded: BTreeMap<CompactString, Arc<KeyRecord>> = wire::decode(&bytes).expect("decode");
    assert_eq!(decoded, state.keys);
}
