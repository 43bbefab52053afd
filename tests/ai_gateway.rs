//! AI routes (issue 6, part 2), black-box: the client holds only a credentialflow key and
//! speaks the OpenAI API; fake OpenAI-style providers started by the test record what they
//! receive. The provider gets its vaulted key and the provider model name, never the
//! client's key; a provider answering 500 is skipped for the next candidate; streamed
//! completions come back intact.

mod support;

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};
use support::{create_key_with, free_port, http, master_key_file, wait_for, Cluster};

/// What a fake provider received: the Authorization header and the JSON body.
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// A fake OpenAI-style provider; `failing` ones answer 500.
struct FakeProvider {
    port: u16,
    received: Received,
    server: Option<(ServerHandle, JoinHandle<()>)>,
}

impl FakeProvider {
    fn start(name: &'static str, failing: bool) -> Self {
        let port = free_port();
        let received: Received = Arc::default();
        let (sender, receiver) = std::sync::mpsc::channel();
        let record = received.clone();
        let thread = std::thread::spawn(move || {
            let system = actix_rt::System::new();
            let server = HttpServer::new(move || {
                let record = record.clone();
                App::new().route(
                    "/v1/chat/completions",
                    web::post().to(move |req: HttpRequest, body: web::Json<Value>| {
                        let record = record.clone();
                        async move { complete(name, failing, &record, &req, body.into_inner()) }
                    }),
                )
            })
            .workers(1)
            .disable_signals()
            .shutdown_timeout(0)
            .bind(("127.0.0.1", port))
            .expect("bind fake provider")
            .run();
            sender.send(server.handle()).expect("handle");
            let _ = system.block_on(server);
        });
        let handle = receiver.recv().expect("provider started");
        Self {
            port,
            received,
            server: Some((handle, thread)),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn received(&self) -> Vec<(String, Value)> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        if let Some((handle, thread)) = self.server.take() {
            futures::executor::block_on(handle.stop(false));
            let _ = thread.join();
        }
    }
}

fn complete(name: &str, failing: bool, record: &Received, req: &HttpRequest, body: Value) -> HttpResponse {
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    record.lock().expect("record").push((authorization, body.clone()));
    if failing {
        return HttpResponse::InternalServerError().json(json!({ "error": { "message": "down" } }));
    }
    let model = body["model"].as_str().unwrap_or("").to_owned();
    // An echoing provider answers with the prompt it received, in 5-character pieces when
    // streaming (so placeholders arrive cut in two).
    let prompt = body["messages"][0]["content"].as_str().unwrap_or("").to_owned();
    let reply = if name == "echo" {
        prompt
    } else {
        "Hello from the provider".to_owned()
    };
    if body["stream"] == true {
        let mut events = String::new();
        let pieces: Vec<String> = if name == "echo" {
            reply
                .chars()
                .collect::<Vec<_>>()
                .chunks(5)
                .map(|c| c.iter().collect())
                .collect()
        } else {
            ["Hello", " from", " the", " provider"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect()
        };
        for (index, word) in pieces.iter().enumerate() {
            let chunk = json!({ "id": "c1", "object": "chat.completion.chunk", "model": model,
                "choices": [{ "index": 0, "delta": { "content": word }, "finish_reason": null }], "n": index });
            events.push_str(&format!("data: {chunk}\n\n"));
        }
        if body["stream_options"]["include_usage"] == true {
            let usage = json!({ "id": "c1", "object": "chat.completion.chunk", "model": model, "choices": [],
                "usage": { "prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9 } });
            events.push_str(&format!("data: {usage}\n\n"));
        }
        events.push_str("data: [DONE]\n\n");
        return HttpResponse::Ok().content_type("text/event-stream").body(events);
    }
    HttpResponse::Ok().json(json!({
        "id": "c1", "object": "chat.completion", "model": model, "served_by": name,
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": reply }, "finish_reason": "stop" }],
        "usage": { "prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9 }
    }))
}

#[test]
fn the_openai_api_is_served_by_vaulted_providers_with_fallback() {
    let primary = FakeProvider::start("primary", true);
    let backup = FakeProvider::start("backup", false);
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
        assert_eq!(
            body["choices"][0]["message"]["content"],
            "Hello from the provider"
        );
        assert_eq!(body["usage"]["total_tokens"], 9);
    }
    // The failing provider was tried first each time; the backup got its own key and model.
    assert!(primary.received().len() >= 3);
    for (authorization, body) in backup.received() {
        assert_eq!(authorization, "Bearer sk-backup-key-0002");
        assert_eq!(body["model"], "gpt-y");
        assert_eq!(body["max_tokens"], 256, "the route caps max_tokens");
    }
    for (authorization, _) in primary.received().iter().chain(backup.received().iter()) {
        assert!(
            !authorization.contains(&client_key),
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
    assert_eq!(words, "Hello from the provider");
    assert!(text.trim_end().ends_with("data: [DONE]"));

    // Tokens and cost per key, summed over the three nodes: three completions and one
    // stream (its final usage event), each 5 + 4 tokens at $2.50 and $10 per million.
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
        (Some(20), Some(16))
    );
    assert_eq!(model["cost_usd"].as_f64(), Some(0.000212), "{usage}");
    assert_eq!(usage["prompt_tokens"], 20);
    assert!(
        usage["models"].get("primary/gpt-x").is_none(),
        "failed attempts cost nothing"
    );

    // Personal data is masked before it leaves and put back in the completion, streamed
    // or not.
    let echo = FakeProvider::start("echo", false);
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
    for (_, sent) in echo.received() {
        let text = sent["messages"][0]["content"].as_str().unwrap_or("").to_owned();
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
}
