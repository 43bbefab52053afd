//! Fake model providers for black-box tests: an OpenAI-style one (`POST
//! /v1/chat/completions`) and an Anthropic-style one (`POST /v1/messages`), each answering
//! in its own API's format, JSON or server-sent events, and recording every request it
//! received (its key headers and body) so tests can check what reached the provider.
//!
//! The answer echoes the last user message, streamed in 5-character pieces (so masked
//! placeholders arrive cut in two). Usage is deterministic and close to what a real
//! tokenizer would say: prompt tokens are the prompt's whitespace-separated words plus 3,
//! completion tokens the answer's words.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use super::free_port;

/// Which API the fake speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    OpenAi,
    Anthropic,
}

/// One request as the provider received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The `Authorization` header (OpenAI-style) or `x-api-key` (Anthropic).
    pub key_header: String,
    pub anthropic_version: Option<String>,
    pub body: Value,
    /// Usage the provider reported for it (0 and 0 when it failed).
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

type Log = Arc<Mutex<Vec<Received>>>;

/// A fake provider on a free loopback port; one that `fails_with` a status answers every
/// request with it.
pub struct FakeProvider {
    port: u16,
    log: Log,
    server: Option<(ServerHandle, JoinHandle<()>)>,
}

impl FakeProvider {
    pub fn start(api: Api, fails_with: Option<u16>) -> Self {
        let port = free_port();
        let log: Log = Arc::default();
        let (sender, receiver) = std::sync::mpsc::channel();
        let record = log.clone();
        let thread = std::thread::spawn(move || {
            let system = actix_rt::System::new();
            let server = HttpServer::new(move || {
                let record = record.clone();
                let path = match api {
                    Api::OpenAi => "/v1/chat/completions",
                    Api::Anthropic => "/v1/messages",
                };
                App::new().route(
                    path,
                    web::post().to(move |req: HttpRequest, body: web::Json<Value>| {
                        let record = record.clone();
                        async move { answer(api, fails_with, &record, &req, body.into_inner()) }
                    }),
                )
            })
            .workers(2)
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
            log,
            server: Some((handle, thread)),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn received(&self) -> Vec<Received> {
        self.log.lock().map(|r| r.clone()).unwrap_or_default()
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

fn header(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The text of a message's content: a string, or the text parts of a list.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

fn answer(api: Api, fails_with: Option<u16>, log: &Log, req: &HttpRequest, body: Value) -> HttpResponse {
    let key_header = match api {
        Api::OpenAi => header(req, "authorization"),
        Api::Anthropic => header(req, "x-api-key"),
    }
    .unwrap_or_default();
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let mut prompt: String = messages
        .iter()
        .map(|m| text_of(&m["content"]))
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(system) = body["system"].as_str() {
        prompt = format!("{system} {prompt}");
    }
    let reply = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| text_of(&m["content"]))
        .unwrap_or_default();
    let failed = fails_with.is_some();
    let (prompt_tokens, completion_tokens) = if failed {
        (0, 0)
    } else {
        (words(&prompt) + 3, words(&reply))
    };
    if let Ok(mut log) = log.lock() {
        log.push(Received {
            key_header,
            anthropic_version: header(req, "anthropic-version"),
            body: body.clone(),
            prompt_tokens,
            completion_tokens,
        });
    }
    if let Some(status) = fails_with {
        let status = actix_web::http::StatusCode::from_u16(status).unwrap_or_default();
        return HttpResponse::build(status)
            .json(json!({ "error": { "message": "unavailable", "type": "overloaded" } }));
    }
    let model = body["model"].as_str().unwrap_or("").to_owned();
    let pieces: Vec<String> = reply
        .chars()
        .collect::<Vec<_>>()
        .chunks(5)
        .map(|c| c.iter().collect())
        .collect();
    let streamed = body["stream"] == true;
    match (api, streamed) {
        (Api::OpenAi, false) => HttpResponse::Ok().json(json!({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": reply }, "finish_reason": "stop" }],
            "usage": { "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                       "total_tokens": prompt_tokens + completion_tokens }
        })),
        (Api::OpenAi, true) => {
            let mut events = String::new();
            let chunk = |delta: Value, finish: Value| {
                json!({ "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model,
                        "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }] })
            };
            events.push_str(&format!("data: {}\n\n", chunk(json!({ "role": "assistant", "content": "" }), Value::Null)));
            for piece in &pieces {
                events.push_str(&format!("data: {}\n\n", chunk(json!({ "content": piece }), Value::Null)));
            }
            events.push_str(&format!("data: {}\n\n", chunk(json!({}), json!("stop"))));
            if body["stream_options"]["include_usage"] == true {
                let usage = json!({ "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1,
                    "model": model, "choices": [],
                    "usage": { "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                               "total_tokens": prompt_tokens + completion_tokens } });
                events.push_str(&format!("data: {usage}\n\n"));
            }
            events.push_str("data: [DONE]\n\n");
            HttpResponse::Ok().content_type("text/event-stream").body(events)
        }
        (Api::Anthropic, false) => HttpResponse::Ok().json(json!({
            "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
            "content": [{ "type": "text", "text": reply }],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": { "input_tokens": prompt_tokens, "output_tokens": completion_tokens }
        })),
        (Api::Anthropic, true) => {
            let mut events = String::new();
            let mut event = |name: &str, data: Value| {
                events.push_str(&format!("event: {name}\ndata: {data}\n\n"));
            };
            event("message_start", json!({ "type": "message_start", "message": {
                "id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": { "input_tokens": prompt_tokens, "output_tokens": 1 } } }));
            event("content_block_start", json!({ "type": "content_block_start", "index": 0,
                "content_block": { "type": "text", "text": "" } }));
            event("ping", json!({ "type": "ping" }));
            for piece in &pieces {
                event("content_block_delta", json!({ "type": "content_block_delta", "index": 0,
                    "delta": { "type": "text_delta", "text": piece } }));
            }
            event("content_block_stop", json!({ "type": "content_block_stop", "index": 0 }));
            event("message_delta", json!({ "type": "message_delta",
                "delta": { "stop_reason": "end_turn", "stop_sequence": null },
                "usage": { "output_tokens": completion_tokens } }));
            event("message_stop", json!({ "type": "message_stop" }));
            HttpResponse::Ok().content_type("text/event-stream").body(events)
        }
    }
}
