//! AI routes on the data plane: the OpenAI API (`POST …/v1/chat/completions`, JSON or
//! server-sent events, and `GET …/v1/models`) served by the route's providers, OpenAI-style
//! ones as they are and Anthropic ones translated both ways. The client holds only its
//! credentialflow key; the provider key, opened from the vault when the route table is
//! compiled, goes in the provider's own header and never reaches the client.
//!
//! A request is admitted against an upper bound of its tokens and cost (reserved from the
//! key's and tenant's token limits and budgets) and settled with the usage the provider
//! reports. It goes to the public model's candidates in the strategy's order. A connect
//! error, a timeout, a 429 or a 5xx from a candidate sends it to the next one; nothing has
//! reached the client by then, so a fallback is invisible but for the
//! `X-Credentialflow-Provider` and `-Model` headers of the answer.
//!
//! - [`candidate`]: providers resolved and ordered by strategy;
//! - [`anthropic`]: the translation to and from Anthropic's messages API;
//! - [`health`]: each provider's latency and failures on this node;
//! - [`stream`]: a streamed answer on its way (translation, usage, restoring masked values);
//! - [`usage`]: estimates, settlement and cost.

pub mod anthropic;
pub mod candidate;
pub mod health;
pub mod stream;
pub mod usage;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use cluster::ai::{AiSettings, AiStrategy};
use cluster::provider::Provider;
use futures::StreamExt;

use self::candidate::{attempt_order, Candidate, Dialect};
use self::health::{Observation, ProviderHealth};
use self::stream::{Pipeline, SseRestorer, SseUsageScanner};
use self::usage::{Estimate, UsageMeter, DEFAULT_MAX_TOKENS};
use super::error::ProxyError;
use super::limiter::{Limiter, LocalMeter};
use super::pii::{PiiKind, Session};
use super::usage::UsageCell;
use crate::master_key::MasterKey;

/// Largest request body of a completion.
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

pub const PROVIDER_HEADER: HeaderName = HeaderName::from_static("x-credentialflow-provider");
pub const MODEL_HEADER: HeaderName = HeaderName::from_static("x-credentialflow-model");

/// What every AI request on this node shares: the provider client and the providers'
/// standings, with the monitor that keeps them.
#[derive(Clone)]
pub struct AiContext {
    pub client: reqwest::Client,
    pub health: Arc<ProviderHealth>,
    pub monitor: Recipient<Observation>,
}

/// The caller of an AI request, when it holds a key: where its usage is counted and the
/// token and budget meters it is admitted against.
pub struct AiCaller<'a> {
    pub usage: Arc<UsageCell>,
    pub meters: &'a [Arc<LocalMeter>],
    pub limiter: &'a Limiter,
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
    /// missing or whose key does not open is left out (and logged, without the key).
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
                .filter_map(|candidate| match Candidate::compile(candidate, providers, master_key) {
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

/// Serves one request on an AI route; `rest` is the path after the route's prefix.
pub async fn serve(
    ai: &AiContext,
    req: &HttpRequest,
    rest: &str,
    payload: web::Payload,
    route: &AiRoute,
    timeout: Duration,
    caller: Option<AiCaller<'_>>,
) -> Result<HttpResponse, ProxyError> {
    match (req.method(), rest) {
        (&Method::GET, "/v1/models") => Ok(models(route)),
        (&Method::POST, "/v1/chat/completions") => completion(ai, payload, route, timeout, caller).await,
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

async fn read_body(mut payload: web::Payload) -> Result<web::BytesMut, ProxyError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| ProxyError::BadRequestBody)?;
        if body.len() + chunk.len() > MAX_REQUEST_BYTES {
            return Err(ProxyError::BadRequestBody);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Caps the completion at the route's cap and, for a limited caller, makes sure the bound
/// that was reserved is what the provider is told: written into every token field the
/// request sends (a provider may honour either), or set as `max_tokens` when it sends none.
/// Returns the bound.
fn bound_completion(
    request: &mut serde_json::Map<String, serde_json::Value>,
    cap: Option<u64>,
    limited: bool,
) -> u64 {
    const FIELDS: [&str; 2] = ["max_tokens", "max_completion_tokens"];
    let asked = FIELDS
        .iter()
        .filter_map(|field| request.get(*field).and_then(serde_json::Value::as_u64))
        .max();
    let bound = match (asked, cap) {
        (Some(asked), Some(cap)) => asked.min(cap),
        (Some(asked), None) => asked,
        (None, Some(cap)) => cap,
        (None, None) => DEFAULT_MAX_TOKENS,
    };
    if cap.is_some() || limited {
        let sent: Vec<&str> = FIELDS.into_iter().filter(|f| request.contains_key(*f)).collect();
        for field in if sent.is_empty() { vec!["max_tokens"] } else { sent } {
            request.insert(field.to_owned(), bound.into());
        }
    }
    bound
}

/// Prompt tokens a request may cost beyond its text: images are billed by size, not by the
/// bytes of their URL, and tool definitions bring a provider's own instructions with them.
fn prompt_allowance(request: &serde_json::Map<String, serde_json::Value>) -> u64 {
    const PER_IMAGE: u64 = 2_000;
    const WITH_TOOLS: u64 = 1_000;
    let images = request
        .get("messages")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|message| message.get("content").and_then(serde_json::Value::as_array))
        .flatten()
        .filter(|part| part.get("type").and_then(serde_json::Value::as_str) == Some("image_url"))
        .count() as u64;
    let tools = request
        .get("tools")
        .and_then(serde_json::Value::as_array)
        .is_some_and(|tools| !tools.is_empty());
    images.saturating_mul(PER_IMAGE) + if tools { WITH_TOOLS } else { 0 }
}

/// Whether a provider's status sends the request to the next candidate: it is overloaded
/// (429), broken (5xx), or refuses its own vaulted key (401, 403), which the client can do
/// nothing about and must not mistake for a refusal of its credentialflow key.
fn provider_failed(status: reqwest::StatusCode) -> bool {
    matches!(status.as_u16(), 401 | 403 | 429) || status.is_server_error()
}

/// Seconds since the Unix epoch, for the `created` of translated answers.
fn unix_seconds() -> u64 {
    u64::try_from(crate::clock::now_ms() / 1000).unwrap_or(0)
}

/// A 400 for a request a provider's API cannot express.
fn unsupported(message: &str) -> HttpResponse {
    crate::telemetry::refusal("unsupported_request");
    HttpResponse::BadRequest().json(serde_json::json!({
        "error": { "code": "unsupported_request", "message": message }
    }))
}

async fn completion(
    ai: &AiContext,
    payload: web::Payload,
    route: &AiRoute,
    timeout: Duration,
    caller: Option<AiCaller<'_>>,
) -> Result<HttpResponse, ProxyError> {
    let body = read_body(payload).await?;
    let mut request: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&body).map_err(|_| ProxyError::BadRequestBody)?;
    let public = request
        .get("model")
        .and_then(serde_json::Value::as_str)
        .ok_or(ProxyError::BadRequestBody)?
        .to_owned();
    let candidates = route.models.get(&public).ok_or(ProxyError::UnknownModel)?;
    let limited = caller.as_ref().is_some_and(|c| !c.meters.is_empty());
    let max_tokens = bound_completion(&mut request, route.max_tokens_cap, limited);
    let session = Arc::new(mask_prompt(&mut request, &route.mask));
    if let Some(caller) = &caller {
        caller
            .usage
            .record_pii(session.counts().map(|(kind, n)| (kind.as_str(), u64::from(n))));
    }
    let restore = route.restore && !session.is_empty();
    let streamed_request = request.get("stream") == Some(&serde_json::Value::Bool(true));
    // Ask streaming providers for the final usage event, so tokens are counted exactly (and
    // only that one: running usage in every chunk would settle before the end).
    if streamed_request {
        request.insert(
            "stream_options".to_owned(),
            serde_json::json!({ "include_usage": true }),
        );
    }
    let openai_body = serde_json::to_vec(&request).map_err(|_| ProxyError::BadRequestBody)?;
    let mut reservation = match &caller {
        Some(caller) if limited => {
            // Every one of `n` choices may use the whole completion bound.
            let choices = request
                .get("n")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(1)
                .max(1);
            let prompt = u64::try_from(openai_body.len())
                .unwrap_or(u64::MAX)
                .saturating_add(prompt_allowance(&request));
            let estimate = Estimate::of(prompt, max_tokens.saturating_mul(choices), candidates);
            let amounts: Vec<(Arc<LocalMeter>, u64)> = caller
                .meters
                .iter()
                .map(|meter| (meter.clone(), estimate.of_unit(meter.unit())))
                .collect();
            match caller.limiter.reserve(&amounts, crate::clock::now_ms()).await {
                Ok(reservation) => Some(reservation),
                Err(refused) => {
                    crate::telemetry::refusal(refused.code());
                    return Ok(refused.response(crate::clock::now_ms()));
                }
            }
        }
        _ => None,
    };
    let mut untranslatable = None;
    for candidate in attempt_order(candidates, route.strategy, &ai.health, crate::clock::now_ms()) {
        let body = match candidate.dialect {
            Dialect::OpenAi => {
                request.insert("model".to_owned(), candidate.model.clone().into());
                serde_json::to_vec(&request).map_err(|_| ProxyError::BadRequestBody)?
            }
            Dialect::Anthropic => match anthropic::request(&request, &candidate.model, max_tokens) {
                Ok(translated) => serde_json::to_vec(&translated).map_err(|_| ProxyError::BadRequestBody)?,
                Err(anthropic::Unsupported(message)) => {
                    untranslatable = Some(message);
                    continue;
                }
            },
        };
        let started = std::time::Instant::now();
        let sent = ai
            .client
            .post(&candidate.url)
            .headers(candidate.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .timeout(timeout)
            .send()
            .await;
        let failed = !matches!(&sent, Ok(r) if !provider_failed(r.status()));
        ai.monitor.do_send(Observation {
            provider: candidate.provider.clone(),
            elapsed: started.elapsed(),
            failed,
        });
        let response = match sent {
            Ok(response) if failed => {
                tracing::debug!(provider = %candidate.provider, status = response.status().as_u16(), "provider refused; trying the next");
                continue;
            }
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(provider = %candidate.provider, %error, "provider unreachable; trying the next");
                continue;
            }
        };
        // A refused request (4xx) used nothing; a served one settles with its usage.
        let settled_by_usage = if response.status().is_success() {
            reservation.take()
        } else {
            if let Some(reservation) = &mut reservation {
                reservation.release();
            }
            None
        };
        let meter = UsageMeter {
            cell: caller.as_ref().map(|c| c.usage.clone()),
            name: candidate.usage_name.clone(),
            price: candidate.price,
            reservation: settled_by_usage,
        };
        return Ok(answer(response, candidate, meter, restore.then(|| session.clone())).await);
    }
    if let Some(reservation) = &mut reservation {
        reservation.release();
    }
    match untranslatable {
        Some(message) => Ok(unsupported(&message)),
        None => Err(ProxyError::ProvidersUnavailable),
    }
}

/// The provider's answer as the client gets it: in OpenAI's format, usage counted, masked
/// values put back when `restore` holds the session.
async fn answer(
    response: reqwest::Response,
    candidate: &Candidate,
    mut meter: UsageMeter,
    restore: Option<Arc<Session>>,
) -> HttpResponse {
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut answer = HttpResponse::build(status);
    if let (Ok(provider), Ok(model)) = (
        HeaderValue::from_str(&candidate.provider),
        HeaderValue::from_str(&candidate.model),
    ) {
        answer
            .insert_header((PROVIDER_HEADER, provider))
            .insert_header((MODEL_HEADER, model));
    }
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok());
    let streamed = content_type
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let translate = candidate.dialect == Dialect::Anthropic;
    if streamed && status.is_success() {
        let created = unix_seconds();
        let pipeline = Pipeline {
            translator: translate.then(|| anthropic::StreamTranslator::new(created)),
            scanner: SseUsageScanner::new(meter),
            restorer: restore.map(SseRestorer::new),
        };
        let stream = futures::stream::unfold(
            (response.bytes_stream(), Some(pipeline)),
            |(mut upstream, pipeline)| async move {
                let mut pipeline = pipeline?;
                match upstream.next().await {
                    Some(Ok(chunk)) => {
                        let out = pipeline.chunk(&chunk);
                        Some((Ok::<_, actix_web::Error>(out), (upstream, Some(pipeline))))
                    }
                    Some(Err(error)) => Some((
                        Err(actix_web::error::ErrorBadGateway(error.to_string())),
                        (upstream, None),
                    )),
                    None => Some((Ok(pipeline.end()), (upstream, None))),
                }
            },
        );
        return answer
            .insert_header((CONTENT_TYPE, HeaderValue::from_static("text/event-stream")))
            .streaming(stream);
    }
    let Ok(body) = response.bytes().await else {
        return actix_web::ResponseError::error_response(&ProxyError::BadGateway);
    };
    let Ok(parsed) = serde_json::from_slice::<serde_json::Value>(&body) else {
        if let Some(content_type) = content_type {
            answer.insert_header((CONTENT_TYPE, content_type));
        }
        return answer.body(body);
    };
    if !translate && restore.is_none() {
        // Passed through as the provider wrote it.
        if status.is_success() {
            meter.record(&parsed["usage"]);
        }
        if let Some(content_type) = content_type {
            answer.insert_header((CONTENT_TYPE, content_type));
        }
        return answer.body(body);
    }
    let mut parsed = match (translate, status.is_success()) {
        (false, _) => parsed,
        (true, true) => anthropic::response(&parsed, unix_seconds()),
        (true, false) => anthropic::error(&parsed),
    };
    if status.is_success() {
        meter.record(&parsed["usage"]);
    }
    if let (Some(session), Some(choices)) = (restore, parsed["choices"].as_array_mut()) {
        for choice in choices {
            if let Some(content) = choice["message"]["content"].as_str() {
                choice["message"]["content"] = session.restore(content).into();
            }
        }
    }
    answer.json(parsed)
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
        // `get_mut`, not indexing: a message that is not an object is passed on as it is.
        for content in messages.iter_mut().filter_map(|m| m.get_mut("content")) {
            match content {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        match value {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        }
    }

    #[test]
    fn a_limited_request_tells_the_provider_the_bound_it_reserved() {
        let mut both = object(json!({ "max_tokens": 100_000, "max_completion_tokens": 10 }));
        assert_eq!(bound_completion(&mut both, None, true), 100_000, "the larger one");
        assert_eq!(both["max_completion_tokens"], 100_000);
        let mut none = object(json!({}));
        assert_eq!(bound_completion(&mut none, None, true), DEFAULT_MAX_TOKENS);
        assert_eq!(none["max_tokens"], DEFAULT_MAX_TOKENS);
        let mut capped = object(json!({ "max_completion_tokens": 9_999 }));
        assert_eq!(bound_completion(&mut capped, Some(256), false), 256);
        assert_eq!(capped["max_completion_tokens"], 256);
        assert!(
            !capped.contains_key("max_tokens"),
            "a reasoning model's field is kept alone"
        );
        let mut free = object(json!({}));
        bound_completion(&mut free, None, false);
        assert!(free.is_empty(), "an unlimited request is left as it is");
    }

    #[test]
    fn images_and_tools_add_to_the_prompt_bound() {
        let request = object(json!({
            "messages": [1, { "content": [{ "type": "image_url", "image_url": { "url": "https://x/y.png" } },
                                           { "type": "text", "text": "what is this" }] }],
            "tools": [{ "type": "function", "function": { "name": "f" } }]
        }));
        assert_eq!(prompt_allowance(&request), 3_000);
    }

    #[test]
    fn messages_of_any_shape_are_masked_without_a_panic() {
        let mut request = object(json!({ "messages": [1, "x", null, { "content": "mail a@b.example" }] }));
        let session = mask_prompt(&mut request, &[PiiKind::Email]);
        assert_eq!(request["messages"][3]["content"], "mail <EMAIL_1>");
        assert!(!session.is_empty());
    }
}
