//! The AI gateway as a client sees it (issue 6): the official `openai` Python SDK (from
//! PyPI, in a virtualenv under the target directory) holding only a credentialflow key,
//! against three nodes and fake providers that record what they receive
//! (`tests/python/openai_sdk_check.py` drives; this side sets up and checks the records).
//!
//! - completions and streamed completions come back intact, from OpenAI-style providers
//!   and, translated, from an Anthropic-style one;
//! - a first provider answering 429 or 500 is skipped for the next candidate;
//! - providers get their vaulted key in their own header, never the client's key;
//! - masked personal data never reaches the provider and comes back for the client;
//! - usage and cost per key equal the providers' reported usage, summed over all nodes;
//! - a token limit holds exactly across the three nodes;
//! - provider keys are on no disk and in no log in plain text.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::providers::{Api, FakeProvider, Received};
use support::{any_file_contains, create_key_with, long_window_secs, master_key_file, wait_for, Cluster};

/// The token limit of the limited key.
const TOKEN_LIMIT: u64 = 1_300;

/// A Python with the `openai` SDK: a virtualenv next to the build, made once.
fn openai_python() -> PathBuf {
    let target = Path::new(env!("CARGO_BIN_EXE_credentialflow"))
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let venv = target.join("openai-sdk-venv");
    let python = venv.join("bin/python");
    let ready = |python: &Path| {
        Command::new(python)
            .args(["-c", "import openai"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ready(&python) {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 runs (apt-get install python3 python3-venv)");
        assert!(
            made.success(),
            "python3 -m venv failed (apt-get install python3-venv)"
        );
        let installed = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "openai>=1.40,<2"])
            .status()
            .expect("pip runs");
        assert!(installed.success(), "pip install openai failed");
    }
    assert!(ready(&python), "the openai SDK does not import");
    python
}

/// What one provider reported in all: (requests, prompt tokens, completion tokens).
fn reported(received: &[Received]) -> (u64, u64, u64) {
    received
        .iter()
        .filter(|r| r.prompt_tokens > 0)
        .fold((0, 0, 0), |(n, p, c), r| {
            (n + 1, p + r.prompt_tokens, c + r.completion_tokens)
        })
}

#[test]
fn the_openai_sdk_is_served_exactly_by_every_node() {
    let python = openai_python();
    let claude = FakeProvider::start(Api::Anthropic, None);
    let flaky = FakeProvider::start(Api::OpenAi, Some(429));
    let broken = FakeProvider::start(Api::OpenAi, Some(500));
    let openai = FakeProvider::start(Api::OpenAi, None);
    let echo = FakeProvider::start(Api::OpenAi, None);
    let meter = FakeProvider::start(Api::OpenAi, None);
    let keys = tempfile::tempdir().expect("tempdir");
    let master = master_key_file(keys.path(), 0x5d);
    let mut cluster = Cluster::start(
        3,
        &["--master-key-file", &master, "--usage-flush-interval", "200ms"],
    );
    let leader = cluster.node(cluster.wait_for_leader(Duration::from_secs(30)));

    let providers = [
        ("claude", "anthropic", &claude, "sk-ant-vaulted-claude-7f3a"),
        ("flaky", "openai", &flaky, "sk-vaulted-flaky-19c2"),
        ("broken", "openai_compatible", &broken, "sk-vaulted-broken-5d81"),
        ("openai", "openai", &openai, "sk-vaulted-openai-aa04"),
        ("echo", "openai_compatible", &echo, "sk-vaulted-echo-0b6e"),
        ("meter", "openai_compatible", &meter, "sk-vaulted-meter-e211"),
    ];
    for (id, kind, provider, key) in providers {
        let body = json!({ "kind": kind, "base_url": provider.url(), "api_key": key, "prices": {
            "claude-x": { "input_per_mtok": 3.0, "output_per_mtok": 15.0 },
            "gpt-y": { "input_per_mtok": 2.5, "output_per_mtok": 10.0 } } });
        let answer = leader.put(&format!("/v1/providers/{id}"), &body).expect("admin");
        assert_eq!(answer.status, 200, "{}", answer.text);
    }
    let ai = json!({
        "path_prefix": "/ai", "auth": "api_key", "kind": "ai", "timeout_ms": 10000,
        "ai": { "models": {
            "smart": [{ "provider": "flaky", "model": "gpt-x" }, { "provider": "claude", "model": "claude-x", "priority": 1 }],
            "fast": [{ "provider": "broken", "model": "gpt-x" }, { "provider": "openai", "model": "gpt-y", "priority": 1 }],
            "metered": [{ "provider": "meter", "model": "gpt-y" }]
        } }
    });
    let private = json!({
        "path_prefix": "/private", "auth": "api_key", "kind": "ai",
        "ai": { "models": { "smart": [{ "provider": "echo", "model": "gpt-z" }] },
                "pii": { "mask": ["email", "credit_card"], "restore": true } }
    });
    for (id, route) in [("ai", &ai), ("private", &private)] {
        let answer = leader.put(&format!("/v1/routes/{id}"), route).expect("admin");
        assert_eq!(answer.status, 201, "{}", answer.text);
    }
    let (client_id, client_key) = create_key_with(leader, json!({}));
    let (limited_id, limited_key) = create_key_with(
        leader,
        json!({ "token_limit": { "tokens": TOKEN_LIMIT, "window_secs": long_window_secs() } }),
    );
    for node in &cluster.nodes {
        wait_for(Duration::from_secs(15), "the AI routes on every node", || {
            let answer = node.proxy_get("/ai/v1/models", Some(&limited_key))?;
            (answer.status == 200).then_some(())
        });
    }

    let bases: Vec<String> = cluster.nodes.iter().map(|n| n.proxy_url("/ai/v1")).collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/openai_sdk_check.py");
    let run = Command::new(&python)
        .arg(&script)
        .env("CF_BASES", bases.join(","))
        .env("CF_KEY", &client_key)
        .env("CF_PRIVATE_BASE", leader.proxy_url("/private/v1"))
        .env("CF_LIMITED_KEY", &limited_key)
        .env("CF_LIMITED_BASES", bases.join(","))
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the SDK check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let outcome: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("outcome line");

    // Each provider got its own key in its own header, and never the client's.
    for (id, _, provider, key) in providers {
        for received in provider.received() {
            let expected = if id == "claude" {
                key.to_owned()
            } else {
                format!("Bearer {key}")
            };
            assert_eq!(received.key_header, expected, "{id}");
            let body = received.body.to_string();
            for client in [&client_key, &limited_key] {
                assert!(!body.contains(client.as_str()), "{id} saw a client key");
            }
        }
    }
    // The Anthropic provider was spoken to in its own API.
    let translated = claude.received();
    assert_eq!(translated.len(), 6, "three nodes, JSON and streamed");
    for received in &translated {
        assert_eq!(received.anthropic_version.as_deref(), Some("2023-06-01"));
        assert_eq!(received.body["model"], "claude-x");
        assert!(received.body["max_tokens"].as_u64().is_some());
        assert!(received.body.get("stream_options").is_none());
    }
    assert!(
        translated
            .iter()
            .any(|r| r.body["stop_sequences"] == json!(["END"])),
        "stop sequences translated"
    );
    assert!(
        !flaky.received().is_empty() && !broken.received().is_empty(),
        "tried first"
    );
    // Masked values never left the gateway.
    assert_eq!(echo.received().len(), 2);
    for received in echo.received() {
        let sent = received.body["messages"][0]["content"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        assert_eq!(sent, "write to <EMAIL_1> about card <CREDIT_CARD_1> today");
    }

    // Usage and cost per key: exactly what the providers reported, over all three nodes.
    let usage = wait_for(Duration::from_secs(20), "usage folded in from every node", || {
        let answer = leader.get(&format!("/v1/keys/{client_id}/usage"))?;
        let requests = |name: &str| answer.body["models"][name]["requests"].as_u64();
        (requests("claude/claude-x") == Some(6)
            && requests("openai/gpt-y") == Some(6)
            && requests("echo/gpt-z") == Some(2))
        .then_some(answer.body)
    });
    let mut expected_cost = 0.0;
    for (name, provider, (input, output)) in [
        ("claude/claude-x", &claude, (3.0, 15.0)),
        ("openai/gpt-y", &openai, (2.5, 10.0)),
        ("echo/gpt-z", &echo, (0.0, 0.0)),
    ] {
        let (requests, prompt, completion) = reported(&provider.received());
        let model = &usage["models"][name];
        assert_eq!(
            (
                model["requests"].as_u64(),
                model["prompt_tokens"].as_u64(),
                model["completion_tokens"].as_u64()
            ),
            (Some(requests), Some(prompt), Some(completion)),
            "{name}: {usage}"
        );
        let cost = (prompt as f64 * input + completion as f64 * output) / 1e6;
        assert!(
            (model["cost_usd"].as_f64().unwrap_or(-1.0) - cost).abs() < 2e-6,
            "{name}: {usage}"
        );
        expected_cost += cost;
    }
    assert!((usage["cost_usd"].as_f64().unwrap_or(-1.0) - expected_cost).abs() < 5e-6);
    assert!(
        usage.get("models").and_then(|m| m.get("flaky/gpt-x")).is_none(),
        "failures cost nothing"
    );

    // The token limit held: what the provider served for the limited key fits in it, the
    // limit was reached (refusals), and most of it was usable.
    let (served, prompt, completion) = reported(&meter.received());
    let used = prompt + completion;
    let limited = &outcome["limited"];
    eprintln!("token limit {TOKEN_LIMIT}: {used} tokens served in {served} completions; {outcome}");
    assert_eq!(limited["ok"].as_u64(), Some(served), "{outcome}");
    assert!(
        used <= TOKEN_LIMIT,
        "{used} tokens served under a limit of {TOKEN_LIMIT}"
    );
    assert!(limited["refused"].as_u64() > Some(0), "{outcome}");
    assert!(
        used >= TOKEN_LIMIT / 2,
        "only {used} of {TOKEN_LIMIT} tokens were usable"
    );
    let limits = leader
        .get(&format!("/v1/keys/{limited_id}/limits"))
        .expect("admin");
    let window = &limits.body["limits"][0];
    assert_eq!(window["unit"], "tokens", "{}", limits.text);
    assert!(
        window["consumed"].as_u64() <= Some(TOKEN_LIMIT),
        "{}",
        limits.text
    );

    // Provider keys: in no answer, on no disk, in no log.
    let listed = leader.get("/v1/providers").expect("admin");
    for node in &mut cluster.nodes {
        node.terminate();
    }
    for (id, _, _, key) in providers {
        assert!(!listed.text.contains(key), "{id}'s key listed");
        for node in &cluster.nodes {
            assert!(
                !any_file_contains(&node.dir, key.as_bytes()),
                "node {} holds {id}'s key in plain text",
                node.id
            );
        }
    }
}
