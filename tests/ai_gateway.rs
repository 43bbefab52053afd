//! AI routes (issue 6), black-box over plain HTTP: the client holds only a credentialflow
//! key and speaks the OpenAI API; fake OpenAI-style providers (`support::providers`) record
//! what they receive. The provider gets its vaulted key and the provider model name, never
//! the client's key; a provider answering 500 is skipped for the next candidate; streamed
//! completions come back intact; masked values never leave; budgets refuse what they cannot
//! cover. `tests/openai_sdk.rs` drives the same through the official Python SDK.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::providers::{Api, FakeProvider};
use support::{create_key_with, http, master_key_file, wait_for, Cluster};

#[test]
fn the_openai_api_is_served_by_vaulted_providers_with_fallback() {
    let primary = FakeProvider::start(Api::OpenAi, Some(500));
    let backup = FakeProvider::start(Api::OpenAi, None);
    let keys = tempfile::tempdir().expect("tempdir");
    let master = master_key_file(keys.path(), 0x61);
    let cluster = Cluster::start(
        3,
        &["--master-key-file", &master, "--usage-flush-interval", "200ms"],
    );
    let leader = cluster.node(cluster.wait_for_leader(Duration::from_secs(30)));
    for (id, provider, key) in [
        ("primary", &primary, "sk-primary-key-0001"),
        ("backup", &backup, "sk-backup-key-0002"),
    ] {
        let body = json!({ "kind": "openai_compatible", "base_url": provider.url(), "api_key": key,
            "prices": { "gpt-y": { "input_per_mtok": 2.5, "output_per_mtok": 10.0 } } });
        assert_eq!(
            leader
                .put(&format!("/v1/providers/{id}"), &body)
                .expect("admin")
                .status,
            200
        );
    }
    let route = json!({
        "path_prefix": "/ai", "auth": "api_key", "kind": "ai", "timeout_ms": 10000,
        "ai": { "models": { "smart": [
            { "provider": "primary", "model": "gpt-x" },
            { "provider": "backup", "model": "gpt-y", "priority": 1 }
        ] }, "max_tokens_cap": 256 }
    });
    let answer = leader.put("/v1/routes/ai", &route).expect("admin");
    assert_eq!(answer.status, 201, "{}", answer.text);
    assert_eq!(answer.body["kind"], "ai");
    let (client_id, client_key) = create_key_with(leader, json!({}));
    let chat = |node: &support::Node, body: &Value| {
        http()
            .post(node.proxy_url("/ai/v1/chat/completions"))
            .bearer_auth(&client_key)
            .json(body)
            .send()
            .expect("proxy answers")
    };
    let request =
        json!({ "model": "smart", "messages": [{ "role": "user", "content": "hi" }], "max_tokens": 9999 });

    for node in &cluster.nodes {
        let response = wait_for(Duration::from_secs(15), "the AI route on every node", || {
            let response = chat(node, &request);
            (response.status() == 200).then_some(response)
        });
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(header("x-credentialflow-provider").as_deref(), Some("backup"));
        assert_eq!(header("x-credentialflow-model").as_deref(), Some("gpt-y"));
        let body: Value = response.json().expect("json");
        assert_eq!(body["choices"][0]["message"]["content"], "hi");
        assert_eq!(body["usage"]["total_tokens"], 5);
    }
    // The failing provider was tried first each time; the backup got its own key and model.
    assert!(primary.received().len() >= 3);
    for received in backup.received() {
        assert_eq!(received.key_header, "Bearer sk-backup-key-0002");
        assert_eq!(received.body["model"], "gpt-y");
        assert_eq!(received.body["max_tokens"], 256, "the route caps max_tokens");
    }
    for received in primary.received().iter().chain(backup.received().iter()) {
        assert!(
            !received.key_header.contains(&client_key),
            "the client's key reached a provider"
        );
    }

    // Streaming comes back as the provider sent it.
    let node = &cluster.nodes[1];
    let streamed = chat(
        node,
        &json!({ "model": "smart", "stream": true, "messages": [{ "role": "user", "content": "hi" }] }),
    );
    assert_eq!(streamed.status(), 200);
    assert!(streamed.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("text/event-stream"));
    let text = streamed.text().expect("body");
    let words: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(words, "hi");
    assert!(text.trim_end().ends_with("data: [DONE]"));

    // Tokens and cost per key, summed over the three nodes: three completions and one
    // stream (its final usage event), each 4 + 1 tokens at $2.50 and $10 per million.
    let usage = wait_for(Duration::from_secs(15), "usage folded in from every node", || {
        let answer = leader.get(&format!("/v1/keys/{client_id}/usage"))?;
        (answer.body["models"]["backup/gpt-y"]["requests"] == 4).then_some(answer.body)
    });
    let model = &usage["models"]["backup/gpt-y"];
    assert_eq!(
        (
            model["prompt_tokens"].as_u64(),
            model["completion_tokens"].as_u64()
        ),
        (Some(16), Some(4))
    );
    assert_eq!(model["cost_usd"].as_f64(), Some(0.00008), "{usage}");
    assert_eq!(usage["prompt_tokens"], 16);
    assert!(
        usage["models"].get("primary/gpt-x").is_none(),
        "failed attempts cost nothing"
    );

    // Personal data is masked before it leaves and put back in the completion, streamed
    // or not.
    let echo = FakeProvider::start(Api::OpenAi, None);
    let body = json!({ "kind": "openai_compatible", "base_url": echo.url(), "api_key": "sk-echo-key-0003" });
    assert_eq!(
        leader.put("/v1/providers/echo", &body).expect("admin").status,
        200
    );
    let private = json!({
        "path_prefix": "/private", "auth": "api_key", "kind": "ai",
        "ai": { "models": { "smart": [{ "provider": "echo", "model": "gpt-z" }] },
                "pii": { "mask": ["email", "credit_card"], "restore": true } }
    });
    assert_eq!(
        leader.put("/v1/routes/private", &private).expect("admin").status,
        201
    );
    let prompt = "mail jane.doe@example.com, card 4111 1111 1111 1111, again jane.doe@example.com";
    let ask = |stream: bool| {
        http()
            .post(leader.proxy_url("/private/v1/chat/completions"))
            .bearer_auth(&client_key)
            .json(&json!({ "model": "smart", "stream": stream, "messages": [{ "role": "user", "content": prompt }] }))
            .send()
            .expect("proxy answers")
    };
    let answer = wait_for(Duration::from_secs(15), "the private route", || {
        let response = ask(false);
        (response.status() == 200).then_some(response)
    });
    let body: Value = answer.json().expect("json");
    assert_eq!(
        body["choices"][0]["message"]["content"], prompt,
        "restored for the client"
    );
    let streamed = ask(true).text().expect("body");
    let restored: String = streamed
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(restored, prompt, "restored across cut placeholders");
    for received in echo.received() {
        let text = received.body["messages"][0]["content"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        assert_eq!(text, "mail <EMAIL_1>, card <CREDIT_CARD_1>, again <EMAIL_1>");
    }
    assert_eq!(echo.received().len(), 2);

    // Models, unknown models, and no credential.
    let models: Value = http()
        .get(node.proxy_url("/ai/v1/models"))
        .bearer_auth(&client_key)
        .send()
        .expect("answer")
        .json()
        .expect("json");
    assert_eq!(models["data"][0]["id"], "smart");
    let unknown = chat(node, &json!({ "model": "other", "messages": [] }));
    assert_eq!(unknown.status(), 404);
    let anonymous = http()
        .post(node.proxy_url("/ai/v1/chat/completions"))
        .json(&request)
        .send()
        .expect("answer");
    assert_eq!(anonymous.status(), 401);

    // A budget admits a request only when it covers the request's upper bound: at $2.50
    // and $10 per million tokens, about 90 prompt bytes and the route's cap of 256
    // completion tokens bound a request at about $0.0028.
    let (_, poor) = create_key_with(leader, json!({ "budget": { "usd": 0.001, "period": "day" } }));
    let (rich_id, rich) = create_key_with(leader, json!({ "budget": { "usd": 1, "period": "month" } }));
    let as_key = |key: &str| {
        http()
            .post(node.proxy_url("/ai/v1/chat/completions"))
            .bearer_auth(key)
            .json(&request)
            .send()
            .expect("proxy answers")
    };
    let refused = wait_for(Duration::from_secs(10), "the new keys on the node", || {
        let response = as_key(&poor);
        (response.status() != 401).then_some(response)
    });
    assert_eq!(refused.status(), 429);
    let refusal: Value = refused.json().expect("json");
    assert_eq!(refusal["error"]["code"], "budget_exceeded");
    let served = as_key(&rich);
    assert_eq!(served.status(), 200);
    let limits = leader.get(&format!("/v1/keys/{rich_id}")).expect("admin");
    assert_eq!(limits.body["budget"], json!({ "usd": 1.0, "period": "month" }));
}
