//! Benchmark of the AI gateway (issue 6), in one run against calling the fake provider
//! directly:
//!
//! - the latency a non-streamed completion gains through the gateway (key check, body
//!   parse, candidate choice, provider call, usage count), p50 and p99;
//! - the time to the first byte of a streamed completion, direct and through the gateway;
//! - masking throughput: a 100 KB prompt with personal data sprinkled in, through a route
//!   masking every kind against the same route without masking; the difference in time per
//!   request is what masking costs, reported as MB/s.
//!
//! Requests alternate between the paths, one at a time, over kept-alive connections, so
//! both see the same machine state. The fake provider (`tests/support/providers.rs`) runs
//! in this process and echoes the prompt.
//!
//! Run: `cargo bench -p credentialflow --bench ai`
//! Options via env: `BENCH_REQUESTS` (per path, default 2000), `BENCH_PII_REQUESTS`
//! (default 200).

#[path = "common/mod.rs"]
mod common;
#[path = "../support/mod.rs"]
mod support;

use std::io::Read;
use std::time::{Duration, Instant};

use common::env_or;
use serde_json::{json, Value};
use support::providers::{Api, FakeProvider};
use support::{create_key_with, master_key_file, wait_for, Cluster};

/// A prompt of about `bytes` bytes of prose with an email, a phone number, a card number,
/// an IBAN and an IP address in every kilobyte or so.
fn prompt_with_personal_data(bytes: usize) -> String {
    let filler = "The quarterly report covers revenue, churn and the migration plan for the \
                  billing service; numbers are rounded and dates are in UTC. ";
    let mut text = String::with_capacity(bytes + 256);
    let mut n = 0u32;
    while text.len() < bytes {
        text.push_str(filler);
        text.push_str(filler);
        text.push_str(filler);
        text.push_str(&format!(
            "Contact jane.doe{n}@example.com or +1 415 555 {:04}, card 4111 1111 1111 1111, \
             IBAN GB82 WEST 1234 5698 7654 32, host 10.0.{}.{}. ",
            n % 10_000,
            n % 256,
            (n / 256) % 256
        ));
        text.push_str(filler);
        text.push_str(filler);
        n += 1;
    }
    text
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

fn summary(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let mean = samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len().max(1) as f64;
    (
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        mean * 1000.0,
    )
}

/// One completion as the client saw it.
struct Call {
    first_byte: Duration,
    total: Duration,
    body: Vec<u8>,
}

/// Sends one completion (the body serialized beforehand, so only the exchange is timed).
fn call(client: &reqwest::blocking::Client, url: &str, key: &str, body: &[u8]) -> Call {
    let started = Instant::now();
    let mut response = client
        .post(url)
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .expect("an answer");
    assert!(response.status().is_success(), "{url}: {}", response.status());
    let mut first = [0u8; 1];
    let read = response.read(&mut first).expect("a body");
    let first_byte = started.elapsed();
    let mut whole = first[..read].to_vec();
    response.read_to_end(&mut whole).expect("the body");
    Call {
        first_byte,
        total: started.elapsed(),
        body: whole,
    }
}

fn main() {
    let requests = env_or("BENCH_REQUESTS", 2_000) as usize;
    let pii_requests = env_or("BENCH_PII_REQUESTS", 200) as usize;
    let provider = FakeProvider::start(Api::OpenAi, None);
    let keys = tempfile::tempdir().expect("tempdir");
    let master = master_key_file(keys.path(), 0x42);
    let cluster = Cluster::start(1, &["--master-key-file", &master]);
    let node = cluster.node(1);
    let answer = node
        .put(
            "/v1/providers/fake",
            &json!({ "kind": "openai_compatible", "base_url": provider.url(), "api_key": "sk-bench-provider",
                     "prices": { "m": { "input_per_mtok": 1.0, "output_per_mtok": 2.0 } } }),
        )
        .expect("admin");
    assert_eq!(answer.status, 200, "{}", answer.text);
    let all_kinds = json!(["email", "phone", "credit_card", "iban", "ssn", "ip", "secret"]);
    for (id, prefix, pii) in [
        ("plain", "/plain", Value::Null),
        (
            "masked",
            "/masked",
            json!({ "mask": all_kinds, "restore": false }),
        ),
    ] {
        let mut ai = json!({ "models": { "m": [{ "provider": "fake", "model": "m" }] } });
        if !pii.is_null() {
            ai["pii"] = pii;
        }
        let route = json!({ "path_prefix": prefix, "auth": "api_key", "kind": "ai", "ai": ai });
        let answer = node.put(&format!("/v1/routes/{id}"), &route).expect("admin");
        assert_eq!(answer.status, 201, "{}", answer.text);
    }
    let (_, key) = create_key_with(node, json!({}));
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let direct = format!("{}/v1/chat/completions", provider.url());
    let through = node.proxy_url("/plain/v1/chat/completions");
    let masked = node.proxy_url("/masked/v1/chat/completions");
    let small = json!({ "model": "m", "max_tokens": 64,
        "messages": [{ "role": "user", "content": "Summarise the quarterly report in one line." }] });
    wait_for(Duration::from_secs(10), "the AI route", || {
        let response = client.post(&through).bearer_auth(&key).json(&small).send().ok()?;
        response.status().is_success().then_some(())
    });

    // Non-streamed and streamed completions, direct and through the gateway, alternating.
    let mut streamed = small.clone();
    streamed["stream"] = json!(true);
    // As the gateway asks for it anyway, so both paths stream the same events.
    streamed["stream_options"] = json!({ "include_usage": true });
    let small = serde_json::to_vec(&small).expect("json");
    let streamed = serde_json::to_vec(&streamed).expect("json");
    let warmup = requests / 10;
    let (mut direct_total, mut gateway_total) = (Vec::new(), Vec::new());
    let (mut direct_ttfb, mut gateway_ttfb) = (Vec::new(), Vec::new());
    for i in 0..warmup + requests {
        let a = call(&client, &direct, "sk-bench-provider", &small);
        let b = call(&client, &through, &key, &small);
        let sa = call(&client, &direct, "sk-bench-provider", &streamed);
        let sb = call(&client, &through, &key, &streamed);
        if i == 0 {
            let content = |call: &Call| {
                serde_json::from_slice::<Value>(&call.body)
                    .map(|v| v["choices"][0]["message"]["content"].clone())
            };
            assert_eq!(
                content(&a).ok(),
                content(&b).ok(),
                "the same completion both ways"
            );
            assert_eq!(sa.body, sb.body, "the same stream both ways");
        }
        if i >= warmup {
            direct_total.push(a.total);
            gateway_total.push(b.total);
            direct_ttfb.push(sa.first_byte);
            gateway_ttfb.push(sb.first_byte);
        }
    }
    let (d50, d99, dmean) = summary(direct_total);
    let (g50, g99, gmean) = summary(gateway_total);
    let (dt50, dt99, _) = summary(direct_ttfb);
    let (gt50, gt99, _) = summary(gateway_ttfb);
    println!("\n## AI gateway, {requests} requests per path, one at a time\n");
    println!("| measure | direct p50 / p99 (ms) | gateway p50 / p99 (ms) | added p50 / p99 (ms) |");
    println!("|---|---:|---:|---:|");
    println!(
        "| non-streamed completion | {d50:.3} / {d99:.3} | {g50:.3} / {g99:.3} | {:.3} / {:.3} |",
        g50 - d50,
        g99 - d99
    );
    println!(
        "| streamed, time to first byte | {dt50:.3} / {dt99:.3} | {gt50:.3} / {gt99:.3} | {:.3} / {:.3} |",
        gt50 - dt50,
        gt99 - dt99
    );
    println!("\nmean non-streamed: direct {dmean:.3} ms, gateway {gmean:.3} ms");

    // Masking: a 100 KB prompt through the masking route and the plain one, alternating.
    let prompt = prompt_with_personal_data(100 * 1024);
    let big = json!({ "model": "m", "max_tokens": 16, "messages": [{ "role": "user", "content": prompt }] });
    let big = serde_json::to_vec(&big).expect("json");
    let echoed: Value = serde_json::from_slice(&call(&client, &masked, &key, &big).body).expect("json");
    let sent = echoed["choices"][0]["message"]["content"].as_str().unwrap_or("");
    assert!(
        sent.contains("<EMAIL_") && !sent.contains("@example.com") && !sent.contains("4111 1111"),
        "the masked route masks"
    );
    let (mut plain_times, mut masked_times) = (Vec::new(), Vec::new());
    for i in 0..pii_requests + pii_requests / 10 {
        let plain = call(&client, &through, &key, &big).total;
        let masked = call(&client, &masked, &key, &big).total;
        if i >= pii_requests / 10 {
            plain_times.push(plain);
            masked_times.push(masked);
        }
    }
    let (p50, _, pmean) = summary(plain_times);
    let (m50, _, mmean) = summary(masked_times);
    let megabytes = prompt.len() as f64 / 1e6;
    let cost_ms = (m50 - p50).max(f64::EPSILON);
    println!(
        "\n## Masking, {} KB prompt, {pii_requests} requests per route\n",
        prompt.len() / 1024
    );
    println!("| route | p50 (ms) | mean (ms) |");
    println!("|---|---:|---:|");
    println!("| no masking | {p50:.3} | {pmean:.3} |");
    println!("| all seven kinds masked | {m50:.3} | {mmean:.3} |");
    println!(
        "\nmasking costs {cost_ms:.3} ms per {:.1} KB prompt at p50: {:.0} MB/s",
        prompt.len() as f64 / 1024.0,
        megabytes / (cost_ms / 1000.0)
    );
}
