//! AI routes on the data plane: the OpenAI API (`POST …/v1/chat/completions`, JSON or
//! server-sent events, and `GET …/v1/models`) served by the route's providers. The client
//! holds only its credentialflow key; the provider key, opened from the vault when the
//! route table is compiled, is added here and never reaches the client.
//!
//! A request goes to the public model's candidates in order of priority (weighted at random
//! inside a priority). A connect error, a timeout, a 429 or a 5xx from a candidate sends it
//! to the next one; nothing has reached the client by then, so a fallback is invisible but
//! for the `X-Credentialflow-Provider` and `-Model` headers of the answer.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use cluster::ai::{AiCandidate, AiSettings, AiStrategy};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cluster::activity::ModelUsage;
use cluster::provider::{Price, Provider, ProviderKind};
use futures::StreamExt;
use rand::Rng;

use super::error::ProxyError;
use super::pii::{PiiKind, Session};
use super::usage::UsageCell;
use crate::master_key::MasterKey;

/// Largest request body of a completion.
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

pub const PROVIDER_HEADER: HeaderName = HeaderName::from_static("x-credentialflow-provider");
pub const MODEL_HEADER: HeaderName = HeaderName::from_static("x-credentialflow-model");

/// One provider model ready to be called.
#[derive(Debug)]
pub struct Candidate {
    provider: String,
    model: String,
    /// `provider/model`, the name usage is counted under.
    usage_name: String,
    price: Option<Price>,
    /// Recent time to the response head on this node, in microseconds (0: not measured yet).
    latency_us: AtomicU64,
    priority: u32,
    weight: u32,
    url: String,
    headers: reqwest::header::HeaderMap,
}

/// An AI route's public models and their candidates.
#[derive(Debug, Default)]
pub struct AiRoute {
    models: HashMap<String, Vec<Candidate>>,
    public_names: Vec<String>,
    max_tokens_cap: Option<u64>,
    /// Kinds of personal data masked in prompts.
    mask: Vec<PiiKind>,
    /// Whether placeholders in completions are put back.
    restore: bool,
    strategy: AiStrategy,
}

impl AiRoute {
    /// Resolves each candidate's provider and opens its key. A candidate whose provider is
    /// missing, speaks an API this gateway does not translate yet, or whose key does not
    /// open is left out (and logged, without the key).
    pub fn compile(
        route_id: &str,
        settings: &AiSettings,
        providers: &BTreeMap<String, Provider>,
        master_key: Option<&MasterKey>,
    ) -> Self {
        let mut models = HashMap::new();
        for (name, candidates) in &settings.models {
            let compiled: Vec<Candidate> = candidates
                .iter()
                .filter_map(|candidate| match compile_candidate(candidate, providers, master_key) {
                    Ok(compiled) => Some(compiled),
                    Err(reason) => {
                        tracing::error!(route = route_id, model = %name, provider = %candidate.provider, reason, "AI candidate left out");
                        None
                    }
                })
                .collect();
            models.insert(name.clone(), compiled);
        }
        let pii = settings.pii.as_ref();
        Self {
            public_names: settings.models.iter().map(|(name, _)| name.clone()).collect(),
            models,
            max_tokens_cap: settings.max_tokens_cap,
            mask: pii
                .map(|pii| pii.mask.iter().filter_map(|kind| PiiKind::parse(kind)).collect())
                .unwrap_or_default(),
            restore: pii.is_some_and(|pii| pii.restore),
            strategy: settings.strategy,
        }
    }
}

fn compile_candidate(
    candidate: &AiCandidate,
    providers: &BTreeMap<String, Provider>,
    master_key: Option<&MasterKey>,
) -> Result<Candidate, &'static str> {
    let provider = providers.get(&candidate.provider).ok_or("no such provider")?;
    if provider.kind == ProviderKind::Anthropic {
        return Err("Anthropic translation is not supported yet");
    }
    let key = master_key
        .ok_or("no master key")?
        .open(&provider.api_key, &Provider::key_place(&provider.id))
        .map_err(|_| "the provider key does not open with this node's master key")?;
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &provider.headers {
        if let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(name.as_bytes()),
            reqwest::header::HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    let mut bearer = b"Bearer ".to_vec();
    bearer.extend_from_slice(&key);
    let mut authorization = reqwest::header::HeaderValue::from_bytes(&bearer)
        .map_err(|_| "the provider key is not a header value")?;
    authorization.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, authorization);
    Ok(Candidate {
        provider: provider.id.clone(),
        model: candidate.model.clone(),
        usage_name: format!("{}/{}", provider.id, candidate.model),
        price: provider.prices.get(&candidate.model).copied(),
        latency_us: AtomicU64::new(0),
        priority: candidate.priority,
        weight: candidate.weight,
        url: format!("{}/v1/chat/completions", provider.base_url),
        headers,
    })
}

/// The order to try candidates in, by the route's strategy. Every strategy breaks ties
/// with a weighted random order (Efraimidis–Spirakis), so equal candidates share load.
fn attempt_order(candidates: &[Candidate], strategy: AiStrategy) -> Vec<&Candidate> {
    let mut rng = rand::thread_rng();
    let mut keyed: Vec<(u64, f64, &Candidate)> = candidates
        .iter()
        .map(|c| {
            let u: f64 = rng.gen_range(f64::EPSILON..1.0);
            let random = -u.powf(1.0 / f64::from(c.weight.max(1)));
            let rank = match strategy {
                AiStrategy::Priority => u64::from(c.priority),
                AiStrategy::Weighted => 0,
                // Unmeasured candidates (0) go first, so each gets measured.
                AiStrategy::LowestLatency => c.latency_us.load(Ordering::Relaxed),
                AiStrategy::Cheapest => c.price.map_or(u64::MAX, |p| {
                    p.input_micro_usd_per_mtok
                        .saturating_add(p.output_micro_usd_per_mtok)
                }),
            };
            (rank, random, c)
        })
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    keyed.into_iter().map(|(_, _, c)| c).collect()
}

/// Folds one attempt's time to the response head into a candidate's latency (a failure
/// counts as `FAILURE_LATENCY`), as an exponentially weighted average.
fn observe_latency(candidate: &Candidate, elapsed: Duration, failed: bool) {
    const FAILURE_LATENCY_US: u64 = 30_000_000;
    let sample = if failed {
        FAILURE_LATENCY_US
    } else {
        u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).max(1)
    };
    let previous = candidate.latency_us.load(Ordering::Relaxed);
    let next = if previous == 0 {
        sample
    } else {
        (previous * 7 + sample) / 8
    };
    candidate.latency_us.store(next.max(1), Ordering::Relaxed);
}

/// Serves one request on an AI route; `rest` is the path after the route's prefix.
pub async fn serve(
    client: &reqwest::Client,
    req: &HttpRequest,
    rest: &str,
    payload: web::Payload,
    route: &AiRoute,
    timeout: Duration,
    usage: Option<Arc<UsageCell>>,
) -> Result<HttpResponse, ProxyError> {
    match (req.method(), rest) {
        (&Method::GET, "/v1/models") => Ok(models(route)),
        (&Method::POST, "/v1/chat/completions") => completion(client, payload, route, timeout, usage).await,
        (_, "/v1/models" | "/v1/chat/completions") => Err(ProxyError::MethodNotAllowed),
        _ => Err(ProxyError::NoRoute),
    }
}

fn models(route: &AiRoute) -> HttpResponse {
    let data: Vec<serde_json::Value> = route
        .public_names
        .iter()
        .map(|name| serde_json::json!({ "id": name, "object": "model", "created": 0, "owned_by": "credentialflow" }))
        .collect();
    HttpResponse::Ok().json(serde_json::json!({ "object": "list", "data": data }))
}

async fn completion(
    client: &reqwest::Client,
    mut payload: web::Payload,
    route: &AiRoute,
    timeout: Duration,
    usage: Option<Arc<UsageCell>>,
) -> Result<HttpResponse, ProxyError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| ProxyError::BadRequestBody)?;
        if body.len() + chunk.len() > MAX_REQUEST_BYTES {
            return Err(ProxyError::BadRequestBody);
        }
        body.extend_from_slice(&chunk);
    }
    let mut request: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&body).map_err(|_| ProxyError::BadRequestBody)?;
    let public = request
        .get("model")
        .and_then(serde_json::Value::as_str)
        .ok_or(ProxyError::BadRequestBody)?
        .to_owned();
    let candidates = route.models.get(&public).ok_or(ProxyError::UnknownModel)?;
    if let Some(cap) = route.max_tokens_cap {
        for field in ["max_tokens", "max_completion_tokens"] {
            let asked = request.get(field).and_then(serde_json::Value::as_u64);
            if asked.is_none_or(|asked| asked > cap) && (field == "max_tokens" || asked.is_some()) {
                request.insert(field.to_owned(), cap.into());
            }
        }
    }
    let session = Arc::new(mask_prompt(&mut request, &route.mask));
    let restore = route.restore && !session.is_empty();
    // Ask streaming providers for the final usage event, so tokens are counted exactly.
    if request.get("stream") == Some(&serde_json::Value::Bool(true))
        && !request.contains_key("stream_options")
    {
        request.insert(
            "stream_options".to_owned(),
            serde_json::json!({ "include_usage": true }),
        );
    }
    for candidate in attempt_order(candidates, route.strategy) {
        let started = std::time::Instant::now();
        request.insert("model".to_owned(), candidate.model.clone().into());
        let sent = client
            .post(&candidate.url)
            .headers(candidate.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&request).map_err(|_| ProxyError::BadRequestBody)?)
            .timeout(timeout)
            .send()
            .await;
        let failed = !matches!(&sent, Ok(r) if r.status().as_u16() != 429 && !r.status().is_server_error());
        observe_latency(candidate, started.elapsed(), failed);
        let response = match sent {
            Ok(response) if response.status().as_u16() == 429 || response.status().is_server_error() => {
                tracing::debug!(provider = %candidate.provider, status = response.status().as_u16(), "provider refused; trying the next");
                continue;
            }
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(provider = %candidate.provider, %error, "provider unreachable; trying the next");
                continue;
            }
        };
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut answer = HttpResponse::build(status);
        if let Some(content_type) = response.headers().get(reqwest::header::CONTENT_TYPE) {
            if let Ok(value) = HeaderValue::from_bytes(content_type.as_bytes()) {
                answer.insert_header((CONTENT_TYPE, value));
            }
        }
        if let (Ok(provider), Ok(model)) = (
            HeaderValue::from_str(&candidate.provider),
            HeaderValue::from_str(&candidate.model),
        ) {
            answer
                .insert_header((PROVIDER_HEADER, provider))
                .insert_header((MODEL_HEADER, model));
        }
        let streamed = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let meter = UsageMeter {
            cell: usage.clone(),
            name: candidate.usage_name.clone(),
            price: candidate.price,
        };
        if !streamed {
            let body = response.bytes().await.map_err(|_| ProxyError::BadGateway)?;
            let Ok(mut parsed) = serde_json::from_slice::<serde_json::Value>(&body) else {
                return Ok(answer.body(body));
            };
            meter.record(&parsed["usage"]);
            if !restore {
                return Ok(answer.body(body));
            }
            if let Some(choices) = parsed["choices"].as_array_mut() {
                for choice in choices {
                    if let Some(content) = choice["message"]["content"].as_str() {
                        choice["message"]["content"] = session.restore(content).into();
                    }
                }
            }
            return Ok(answer.json(parsed));
        }
        let mut scanner = SseUsageScanner::new(meter);
        let mut restorer = restore.then(|| SseRestorer::new(session.clone()));
        let stream = response.bytes_stream().map(move |chunk| {
            let chunk = chunk.map_err(|e| actix_web::error::ErrorBadGateway(e.to_string()))?;
            scanner.feed(&chunk);
            Ok::<_, actix_web::Error>(match &mut restorer {
                Some(restorer) => restorer.feed(&chunk),
                None => chunk,
            })
        });
        return Ok(answer.streaming(stream));
    }
    Err(ProxyError::ProvidersUnavailable)
}

/// Masks the listed kinds in every message's text (plain string content, or the `text`
/// parts of multi-part content) and counts what was masked, by kind.
fn mask_prompt(request: &mut serde_json::Map<String, serde_json::Value>, kinds: &[PiiKind]) -> Session {
    let mut session = Session::default();
    if kinds.is_empty() {
        return session;
    }
    if let Some(messages) = request
        .get_mut("messages")
        .and_then(serde_json::Value::as_array_mut)
    {
        for message in messages {
            match &mut message["content"] {
                serde_json::Value::String(text) => *text = session.mask(kinds, text),
                serde_json::Value::Array(parts) => {
                    for part in parts {
                        if let Some(text) = part.get_mut("text") {
                            if let Some(plain) = text.as_str() {
                                *text = session.mask(kinds, plain).into();
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    for (kind, count) in session.counts() {
        metrics::counter!("credentialflow_pii_masked_total", "kind" => kind.as_str())
            .increment(u64::from(count));
    }
    session
}

/// Puts masked values back into a stream of server-sent events: each event's
/// `choices[].delta.content` is restored, a placeholder cut between events held until the
/// next one completes it; lines pass through whole.
struct SseRestorer {
    session: Arc<Session>,
    partial: Vec<u8>,
    carries: HashMap<u64, String>,
}

impl SseRestorer {
    fn new(session: Arc<Session>) -> Self {
        Self {
            session,
            partial: Vec::new(),
            carries: HashMap::new(),
        }
    }

    fn feed(&mut self, bytes: &[u8]) -> web::Bytes {
        self.partial.extend_from_slice(bytes);
        let mut out = Vec::with_capacity(bytes.len());
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            out.extend(self.restore_line(&line));
        }
        web::Bytes::from(out)
    }

    fn restore_line(&mut self, line: &[u8]) -> Vec<u8> {
        let Some(data) = line.strip_prefix(b"data: ") else {
            return line.to_vec();
        };
        let Ok(mut event) = serde_json::from_slice::<serde_json::Value>(data.trim_ascii()) else {
            return line.to_vec();
        };
        if let Some(choices) = event["choices"].as_array_mut() {
            for choice in choices {
                let index = choice["index"].as_u64().unwrap_or(0);
                let finished = !choice["finish_reason"].is_null();
                let carry = self.carries.entry(index).or_default();
                if let Some(content) = choice["delta"]["content"].as_str() {
                    let mut restored = self.session.restore_streamed(carry, content);
                    if finished {
                        restored.push_str(&std::mem::take(carry));
                    }
                    choice["delta"]["content"] = restored.into();
                } else if finished && !carry.is_empty() {
                    choice["delta"]["content"] = std::mem::take(carry).into();
                }
            }
        }
        format!("data: {event}\n").into_bytes()
    }
}

/// Where a completion's usage is counted, and at what price.
struct UsageMeter {
    cell: Option<Arc<UsageCell>>,
    name: String,
    price: Option<Price>,
}

impl UsageMeter {
    /// Counts an OpenAI `usage` object (`prompt_tokens`, `completion_tokens`), if it is one.
    fn record(&self, usage: &serde_json::Value) -> bool {
        let (Some(prompt), Some(completion)) = (
            usage["prompt_tokens"].as_u64(),
            usage["completion_tokens"].as_u64(),
        ) else {
            return false;
        };
        if let Some(cell) = &self.cell {
            cell.record_model(
                &self.name,
                &ModelUsage {
                    requests: 1,
                    prompt_tokens: prompt,
                    completion_tokens: completion,
                    cost_micro_usd: cost_micro_usd(self.price, prompt, completion),
                },
            );
        }
        true
    }
}

/// The cost of a completion in millionths of a dollar, rounded to the nearest.
fn cost_micro_usd(price: Option<Price>, prompt: u64, completion: u64) -> u64 {
    let Some(price) = price else {
        return 0;
    };
    let total = u128::from(prompt) * u128::from(price.input_micro_usd_per_mtok)
        + u128::from(completion) * u128::from(price.output_micro_usd_per_mtok);
    u64::try_from((total + 500_000) / 1_000_000).unwrap_or(u64::MAX)
}

/// Finds the usage event in a server-sent event stream as it passes, whatever the chunk
/// boundaries (a line may arrive in pieces).
struct SseUsageScanner {
    meter: UsageMeter,
    partial: Vec<u8>,
    counted: bool,
}

impl SseUsageScanner {
    fn new(meter: UsageMeter) -> Self {
        Self {
            meter,
            partial: Vec::new(),
            counted: false,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        if self.counted {
            return;
        }
        self.partial.extend_from_slice(bytes);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            if let Ok(event) = serde_json::from_slice::<serde_json::Value>(data.trim_ascii()) {
                if self.meter.record(&event["usage"]) {
                    self.counted = true;
                    self.partial.clear();
                    return;
                }
            }
        }
        // A line longer than any usage event is not one; do not hold it.
        if self.partial.len() > 1 << 20 {
            self.partial.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(name: &str, price: Option<u64>, latency_us: u64) -> Candidate {
        Candidate {
            provider: name.into(),
            model: "m".into(),
            usage_name: format!("{name}/m"),
            price: price.map(|p| Price {
                input_micro_usd_per_mtok: p,
                output_micro_usd_per_mtok: p,
            }),
            latency_us: AtomicU64::new(latency_us),
            priority: 0,
            weight: 1,
            url: String::new(),
            headers: reqwest::header::HeaderMap::new(),
        }
    }

    fn order(candidates: &[Candidate], strategy: AiStrategy) -> Vec<&str> {
        attempt_order(candidates, strategy)
            .iter()
            .map(|c| c.provider.as_str())
            .collect()
    }

    #[test]
    fn strategies_order_candidates() {
        let candidates = [
            candidate("dear", Some(10), 300),
            candidate("cheap", Some(5), 100),
            candidate("unpriced", None, 0),
        ];
        assert_eq!(
            order(&candidates, AiStrategy::Cheapest),
            ["cheap", "dear", "unpriced"]
        );
        assert_eq!(
            order(&candidates, AiStrategy::LowestLatency),
            ["unpriced", "cheap", "dear"],
            "unmeasured first, then fastest"
        );
        observe_latency(&candidates[1], Duration::from_millis(1), true);
        assert!(
            candidates[1].latency_us.load(Ordering::Relaxed) > 300,
            "a failure counts as slow"
        );
        assert_eq!(
            order(&candidates, AiStrategy::LowestLatency),
            ["unpriced", "dear", "cheap"]
        );
    }

    #[test]
    fn cost_follows_the_price_table() {
        let price = Price {
            input_micro_usd_per_mtok: 2_500_000,
            output_micro_usd_per_mtok: 10_000_000,
        };
        // 1,000 prompt tokens at $2.50/M and 500 completion tokens at $10/M: $0.0075.
        assert_eq!(cost_micro_usd(Some(price), 1_000, 500), 7_500);
        assert_eq!(cost_micro_usd(None, 1_000, 500), 0);
    }

    #[test]
    fn the_usage_event_is_found_across_chunk_boundaries() {
        let cell = Arc::new(UsageCell::default());
        let meter = UsageMeter {
            cell: Some(cell.clone()),
            name: "p/m".into(),
            price: None,
        };
        let mut scanner = SseUsageScanner::new(meter);
        let events = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n\
                      data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\n\
                      data: [DONE]\n\n";
        for piece in events.as_bytes().chunks(5) {
            scanner.feed(piece);
        }
        let delta = cell.drain("key").expect("counted");
        assert_eq!(delta.models.len(), 1);
        let (name, usage) = &delta.models[0];
        assert_eq!(name, "p/m");
        assert_eq!(
            (usage.requests, usage.prompt_tokens, usage.completion_tokens),
            (1, 7, 3)
        );
    }
}
