//! OpenAI Chat Completions ⇄ Anthropic Messages translation for providers of kind `"anthropic"`.
//!
//! Clients of the gateway only ever speak the OpenAI Chat Completions API. When the chosen provider
//! is Anthropic, the gateway rewrites the client's body with [`request`], sends it to
//! `POST {base}/v1/messages`, and rewrites what comes back with [`response`] (2xx JSON), [`error`]
//! (non-2xx JSON) or a [`StreamTranslator`] (2xx `text/event-stream`), so that the client sees the
//! OpenAI format whichever provider answered.
//!
//! Everything here is pure: no I/O and no clock (the caller passes `created`). Every byte looked at
//! comes from a client or from an upstream the gateway does not control, so no input can make these
//! functions panic; a request that cannot be expressed for Anthropic is refused with [`Unsupported`]
//! (answered 400) rather than silently changed in meaning.

use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;
use serde_json::{json, Map, Value};

/// A single unfinished SSE line longer than this is dropped, so a misbehaving upstream cannot make
/// the gateway buffer without bound.
const MAX_LINE_BYTES: usize = 1024 * 1024;

/// The `data:` lines of one SSE event are dropped once they add up to more than this, for the same
/// reason as [`MAX_LINE_BYTES`] (an event may be spread over many lines).
const MAX_EVENT_DATA_BYTES: usize = 1024 * 1024;

/// Why a request cannot be expressed for Anthropic (answered 400 to the client).
///
/// The message is meant for the client's developer: it names the offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unsupported {}

fn unsupported(message: impl Into<String>) -> Unsupported {
    Unsupported(message.into())
}

/// A field that is missing or explicitly `null`: OpenAI clients send `null` for "not set" freely.
fn present<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|value| !value.is_null())
}

fn str_field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

// ---------------------------------------------------------------------------------------------
// Request: OpenAI chat.completions body -> Anthropic Messages body
// ---------------------------------------------------------------------------------------------

/// Turns an OpenAI chat-completions request body (already parsed) into an Anthropic Messages body
/// for `model`.
///
/// `default_max_tokens` is used when the request says neither `max_tokens` nor
/// `max_completion_tokens`, because Anthropic requires `max_tokens` while OpenAI does not.
///
/// Options that only tune OpenAI's sampling or reporting (`seed`, penalties, `stream_options`, …)
/// are dropped; options whose loss would change what the client gets back (`n > 1`,
/// `logprobs`, JSON response formats, legacy `functions`) are refused with [`Unsupported`].
pub fn request(
    openai: &Map<String, Value>,
    model: &str,
    default_max_tokens: u64,
) -> Result<Value, Unsupported> {
    reject_unsupported_options(openai)?;
    let messages = match openai.get("messages") {
        Some(Value::Array(list)) => list,
        None | Some(Value::Null) => return Err(unsupported("messages is required")),
        Some(_) => return Err(unsupported("messages must be an array")),
    };
    let (system, messages) = convert_messages(messages)?;

    let mut body = Map::new();
    body.insert("model".into(), Value::from(model));
    body.insert(
        "max_tokens".into(),
        Value::from(max_tokens(openai, default_max_tokens)?),
    );
    if let Some(system) = system {
        body.insert("system".into(), Value::String(system));
    }
    body.insert("messages".into(), Value::Array(messages));
    if let Some(temperature) = temperature(openai)? {
        body.insert("temperature".into(), temperature);
    }
    copy_checked(openai, &mut body, "top_p", Value::is_number, "a number")?;
    if let Some(stops) = stop_sequences(openai)? {
        body.insert("stop_sequences".into(), stops);
    }
    copy_checked(openai, &mut body, "stream", Value::is_boolean, "a boolean")?;
    match present(openai, "user") {
        None => {}
        Some(Value::String(user)) if user.is_empty() => {}
        Some(Value::String(user)) => {
            body.insert("metadata".into(), json!({ "user_id": user }));
        }
        Some(_) => return Err(unsupported("user must be a string")),
    }
    add_tools(openai, &mut body)?;
    Ok(Value::Object(body))
}

/// Refuses the options whose silent loss would give the client something other than it asked for.
/// Copies `field` as it is when it is present and of the right type (`what` names it).
fn copy_checked(
    openai: &Map<String, Value>,
    body: &mut Map<String, Value>,
    field: &str,
    fits: fn(&Value) -> bool,
    what: &str,
) -> Result<(), Unsupported> {
    if let Some(value) = present(openai, field) {
        if !fits(value) {
            return Err(unsupported(format!("{field} must be {what}")));
        }
        body.insert(field.into(), value.clone());
    }
    Ok(())
}

fn reject_unsupported_options(openai: &Map<String, Value>) -> Result<(), Unsupported> {
    if let Some(n) = present(openai, "n") {
        match n.as_u64() {
            Some(1) => {}
            Some(n) if n > 1 => return Err(unsupported("n > 1 is not supported by Anthropic providers")),
            _ => return Err(unsupported("n must be a positive integer")),
        }
    }
    match present(openai, "logprobs") {
        None | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => {
            return Err(unsupported("logprobs is not supported by Anthropic providers"));
        }
        Some(_) => return Err(unsupported("logprobs must be a boolean")),
    }
    if let Some(format) = present(openai, "response_format") {
        match str_field(format, "type") {
            Some("text") => {}
            Some(kind @ ("json_object" | "json_schema")) => {
                return Err(unsupported(format!(
                    "response_format of type {kind} is not supported by Anthropic providers"
                )));
            }
            Some(kind) => {
                return Err(unsupported(format!(
                    "response_format of type \"{kind}\" is not supported"
                )));
            }
            None => {
                return Err(unsupported(
                    "response_format must be an object with a string \"type\"",
                ))
            }
        }
    }
    if present(openai, "functions").is_some() || present(openai, "function_call").is_some() {
        return Err(unsupported(
            "functions and function_call are not supported by Anthropic providers; use tools and tool_choice",
        ));
    }
    Ok(())
}

/// Anthropic requires `max_tokens`; OpenAI's newer `max_completion_tokens` wins when both are set.
fn max_tokens(openai: &Map<String, Value>, default_max_tokens: u64) -> Result<u64, Unsupported> {
    for key in ["max_completion_tokens", "max_tokens"] {
        if let Some(value) = present(openai, key) {
            return match value.as_u64() {
                Some(n) if n > 0 => Ok(n),
                _ => Err(unsupported(format!("{key} must be a positive integer"))),
            };
        }
    }
    Ok(default_max_tokens)
}

/// OpenAI accepts temperatures up to 2, Anthropic only up to 1: clamp rather than refuse, since
/// both mean "as random as it goes".
fn temperature(openai: &Map<String, Value>) -> Result<Option<Value>, Unsupported> {
    let Some(value) = present(openai, "temperature") else {
        return Ok(None);
    };
    let t = value
        .as_f64()
        .ok_or_else(|| unsupported("temperature must be a number"))?;
    Ok(Some(if t < 0.0 {
        json!(0.0)
    } else if t > 1.0 {
        json!(1.0)
    } else {
        value.clone()
    }))
}

/// OpenAI's `stop` is a string or a list; Anthropic's `stop_sequences` is always a list.
fn stop_sequences(openai: &Map<String, Value>) -> Result<Option<Value>, Unsupported> {
    match present(openai, "stop") {
        None => Ok(None),
        Some(Value::String(stop)) => Ok(Some(json!([stop]))),
        Some(Value::Array(stops)) if stops.iter().all(Value::is_string) => {
            Ok((!stops.is_empty()).then(|| Value::Array(stops.clone())))
        }
        Some(_) => Err(unsupported("stop must be a string or an array of strings")),
    }
}

/// Pulls system/developer messages out into Anthropic's top-level `system` and converts the rest.
///
/// Consecutive `tool` messages become one `user` message of `tool_result` blocks, because Anthropic
/// expects all results for one assistant turn together; system messages in between do not break
/// such a run, since they are moved out of the conversation anyway.
fn convert_messages(list: &[Value]) -> Result<(Option<String>, Vec<Value>), Unsupported> {
    let mut system: Vec<String> = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    let mut tool_results: Vec<Value> = Vec::new();
    let mut has_user = false;
    for (i, message) in list.iter().enumerate() {
        let Some(message) = message.as_object() else {
            return Err(unsupported(format!("messages[{i}] must be an object")));
        };
        let role = match message.get("role") {
            Some(Value::String(role)) => role.as_str(),
            None | Some(Value::Null) => return Err(unsupported(format!("messages[{i}] has no role"))),
            Some(_) => return Err(unsupported(format!("messages[{i}].role must be a string"))),
        };
        match role {
            "system" | "developer" => {
                let text = plain_text(message.get("content"), &format!("messages[{i}].content"))?;
                if !text.is_empty() {
                    system.push(text);
                }
            }
            "tool" => {
                tool_results.push(tool_result(message, i)?);
                has_user = true;
            }
            "user" => {
                let content = user_content(message, i)?;
                flush_tool_results(&mut tool_results, &mut out);
                out.push(json!({ "role": "user", "content": content }));
                has_user = true;
            }
            "assistant" => {
                let content = assistant_content(message, i)?;
                flush_tool_results(&mut tool_results, &mut out);
                out.push(json!({ "role": "assistant", "content": content }));
            }
            other => {
                return Err(unsupported(format!(
                    "messages[{i}].role \"{other}\" is not a known role"
                )));
            }
        }
    }
    flush_tool_results(&mut tool_results, &mut out);
    if !has_user {
        return Err(unsupported("messages must include a user message"));
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    Ok((system, out))
}

fn flush_tool_results(tool_results: &mut Vec<Value>, out: &mut Vec<Value>) {
    if !tool_results.is_empty() {
        out.push(json!({ "role": "user", "content": std::mem::take(tool_results) }));
    }
}

/// Content that Anthropic only takes as text (system prompt, tool result): a string, or text parts
/// concatenated as they stand.
fn plain_text(content: Option<&Value>, at: &str) -> Result<String, Unsupported> {
    match content {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                let part_at = format!("{at}[{j}]");
                match str_field(part, "type") {
                    Some("text") => text.push_str(part_text(part, &part_at)?),
                    Some(other) => {
                        return Err(unsupported(format!(
                            "{part_at}: content part type \"{other}\" is not allowed here (only text)"
                        )));
                    }
                    None => return Err(missing_part_type(&part_at)),
                }
            }
            Ok(text)
        }
        _ => Err(unsupported(format!(
            "{at} must be a string or an array of text parts"
        ))),
    }
}

fn missing_part_type(at: &str) -> Unsupported {
    unsupported(format!("{at} must be an object with a string \"type\""))
}

fn part_text<'a>(part: &'a Value, at: &str) -> Result<&'a str, Unsupported> {
    str_field(part, "text").ok_or_else(|| unsupported(format!("{at}.text must be a string")))
}

fn user_content(message: &Map<String, Value>, i: usize) -> Result<Value, Unsupported> {
    let at = format!("messages[{i}].content");
    match message.get("content") {
        Some(Value::String(text)) => Ok(Value::String(text.clone())),
        Some(Value::Array(parts)) => Ok(Value::Array(content_blocks(parts, &at)?)),
        _ => Err(unsupported(format!(
            "{at} must be a string or an array of content parts"
        ))),
    }
}

/// An assistant turn; its `tool_calls` become `tool_use` blocks after any text, which is the order
/// in which Anthropic itself produces them.
fn assistant_content(message: &Map<String, Value>, i: usize) -> Result<Value, Unsupported> {
    let at = format!("messages[{i}]");
    let calls: &[Value] = match present(message, "tool_calls") {
        None => &[],
        Some(Value::Array(calls)) => calls,
        Some(_) => return Err(unsupported(format!("{at}.tool_calls must be an array"))),
    };
    let content = present(message, "content");
    let content_at = format!("{at}.content");
    let bad_content = || {
        unsupported(format!(
            "{content_at} must be a string, an array of content parts, or null"
        ))
    };
    if calls.is_empty() {
        return match content {
            Some(Value::String(text)) => Ok(Value::String(text.clone())),
            Some(Value::Array(parts)) => Ok(Value::Array(content_blocks(parts, &content_at)?)),
            None => Err(unsupported(format!(
                "{at}: an assistant message needs content or tool_calls"
            ))),
            Some(_) => Err(bad_content()),
        };
    }
    let mut blocks = match content {
        None => Vec::new(),
        Some(Value::String(text)) if text.is_empty() => Vec::new(),
        Some(Value::String(text)) => vec![json!({ "type": "text", "text": text })],
        Some(Value::Array(parts)) => content_blocks(parts, &content_at)?,
        Some(_) => return Err(bad_content()),
    };
    for (j, call) in calls.iter().enumerate() {
        blocks.push(tool_use_block(call, &format!("{at}.tool_calls[{j}]"))?);
    }
    Ok(Value::Array(blocks))
}

fn content_blocks(parts: &[Value], at: &str) -> Result<Vec<Value>, Unsupported> {
    parts
        .iter()
        .enumerate()
        .map(|(j, part)| content_block(part, &format!("{at}[{j}]")))
        .collect()
}

fn content_block(part: &Value, at: &str) -> Result<Value, Unsupported> {
    match str_field(part, "type") {
        Some("text") => Ok(json!({ "type": "text", "text": part_text(part, at)? })),
        Some("image_url") => image_block(part, at),
        Some(other) => Err(unsupported(format!(
            "{at}: content part type \"{other}\" is not supported by Anthropic providers"
        ))),
        None => Err(missing_part_type(at)),
    }
}

/// `data:` URLs carry the image inline (base64 source); http(s) URLs are fetched by Anthropic
/// (url source). Anything else could not be resolved by either side.
fn image_block(part: &Value, at: &str) -> Result<Value, Unsupported> {
    let url = part
        .get("image_url")
        .and_then(|image| str_field(image, "url"))
        .ok_or_else(|| unsupported(format!("{at}.image_url.url must be a string")))?;
    if let Some(rest) = strip_prefix_ignore_case(url, "data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| unsupported(format!("{at}: malformed data URL")))?;
        let mut meta = meta.split(';');
        let media_type = meta.next().unwrap_or("").trim().to_ascii_lowercase();
        if !meta.any(|param| param.trim().eq_ignore_ascii_case("base64")) {
            return Err(unsupported(format!("{at}: only base64 data URLs are supported")));
        }
        if media_type.is_empty() {
            return Err(unsupported(format!("{at}: the data URL has no media type")));
        }
        return Ok(json!({
            "type": "image",
            "source": { "type": "base64", "media_type": media_type, "data": data },
        }));
    }
    if strip_prefix_ignore_case(url, "https://").is_some()
        || strip_prefix_ignore_case(url, "http://").is_some()
    {
        return Ok(json!({ "type": "image", "source": { "type": "url", "url": url } }));
    }
    Err(unsupported(format!(
        "{at}: image URLs must be data: or http(s): URLs"
    )))
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        text.get(prefix.len()..)
    } else {
        None
    }
}

/// Anthropic wants the arguments as a JSON object, OpenAI carries them as a JSON string.
fn tool_use_block(call: &Value, at: &str) -> Result<Value, Unsupported> {
    let Some(call) = call.as_object() else {
        return Err(unsupported(format!("{at} must be an object")));
    };
    match present(call, "type").map(Value::as_str) {
        None | Some(Some("function")) => {}
        Some(_) => return Err(unsupported(format!("{at}.type must be \"function\""))),
    }
    let id = call
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| unsupported(format!("{at}.id must be a string")))?;
    let function = call
        .get("function")
        .and_then(Value::as_object)
        .ok_or_else(|| unsupported(format!("{at}.function must be an object")))?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| unsupported(format!("{at}.function.name must be a string")))?;
    let input = match present(function, "arguments") {
        None => json!({}),
        Some(Value::String(arguments)) if arguments.trim().is_empty() => json!({}),
        Some(Value::String(arguments)) => serde_json::from_str::<Value>(arguments)
            .map_err(|e| unsupported(format!("{at}.function.arguments is not valid JSON: {e}")))?,
        Some(_) => return Err(unsupported(format!("{at}.function.arguments must be a string"))),
    };
    if !input.is_object() {
        return Err(unsupported(format!(
            "{at}.function.arguments must encode a JSON object"
        )));
    }
    Ok(json!({ "type": "tool_use", "id": id, "name": name, "input": input }))
}

fn tool_result(message: &Map<String, Value>, i: usize) -> Result<Value, Unsupported> {
    let id = message
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| unsupported(format!("messages[{i}].tool_call_id must be a string")))?;
    let text = plain_text(message.get("content"), &format!("messages[{i}].content"))?;
    Ok(json!({ "type": "tool_result", "tool_use_id": id, "content": text }))
}

/// `tools`, `tool_choice` and `parallel_tool_calls: false` (as `disable_parallel_tool_use`).
/// Without tools a `tool_choice` means nothing and Anthropic would refuse it, so it is dropped.
fn add_tools(openai: &Map<String, Value>, body: &mut Map<String, Value>) -> Result<(), Unsupported> {
    let tools = match present(openai, "tools") {
        None => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(k, tool)| tool_definition(tool, k))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(unsupported("tools must be an array")),
    };
    let mut choice = present(openai, "tool_choice").map(tool_choice).transpose()?;
    if tools.is_empty() {
        return Ok(());
    }
    if present(openai, "parallel_tool_calls") == Some(&Value::Bool(false)) {
        let choice = choice.get_or_insert_with(|| json!({ "type": "auto" }));
        if str_field(choice, "type") != Some("none") {
            if let Some(choice) = choice.as_object_mut() {
                choice.insert("disable_parallel_tool_use".into(), Value::Bool(true));
            }
        }
    }
    body.insert("tools".into(), Value::Array(tools));
    if let Some(choice) = choice {
        body.insert("tool_choice".into(), choice);
    }
    Ok(())
}

fn tool_definition(tool: &Value, k: usize) -> Result<Value, Unsupported> {
    let at = format!("tools[{k}]");
    match str_field(tool, "type") {
        Some("function") => {}
        Some(other) => {
            return Err(unsupported(format!(
                "{at}: tools of type \"{other}\" are not supported by Anthropic providers"
            )));
        }
        None => return Err(unsupported(format!("{at}.type must be \"function\""))),
    }
    let function = tool
        .get("function")
        .and_then(Value::as_object)
        .ok_or_else(|| unsupported(format!("{at}.function must be an object")))?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .filter(|name| !name.is_empty())
        .ok_or_else(|| unsupported(format!("{at}.function.name must be a non-empty string")))?;
    let mut out = Map::new();
    out.insert("name".into(), Value::from(name));
    match present(function, "description") {
        None => {}
        Some(description @ Value::String(_)) => {
            out.insert("description".into(), description.clone());
        }
        Some(_) => return Err(unsupported(format!("{at}.function.description must be a string"))),
    }
    // Anthropic requires a schema; OpenAI allows leaving it out for a tool without arguments.
    let schema = match present(function, "parameters") {
        None => json!({ "type": "object", "properties": {} }),
        Some(schema @ Value::Object(_)) => schema.clone(),
        Some(_) => return Err(unsupported(format!("{at}.function.parameters must be an object"))),
    };
    out.insert("input_schema".into(), schema);
    Ok(Value::Object(out))
}

fn tool_choice(choice: &Value) -> Result<Value, Unsupported> {
    match choice {
        Value::String(mode) => match mode.as_str() {
            "auto" => Ok(json!({ "type": "auto" })),
            "required" => Ok(json!({ "type": "any" })),
            "none" => Ok(json!({ "type": "none" })),
            other => Err(unsupported(format!("tool_choice \"{other}\" is not supported"))),
        },
        Value::Object(_) => {
            if str_field(choice, "type") != Some("function") {
                return Err(unsupported("tool_choice.type must be \"function\""));
            }
            let name = choice
                .get("function")
                .and_then(|function| str_field(function, "name"))
                .ok_or_else(|| unsupported("tool_choice.function.name must be a string"))?;
            Ok(json!({ "type": "tool", "name": name }))
        }
        _ => Err(unsupported("tool_choice must be a string or an object")),
    }
}

// ---------------------------------------------------------------------------------------------
// Response: Anthropic Messages (JSON) -> OpenAI chat.completion
// ---------------------------------------------------------------------------------------------

/// Turns an Anthropic Messages response (non-streamed, status 2xx) into an OpenAI `chat.completion`
/// object. `created` is the Unix time in seconds to stamp (the caller owns the clock).
///
/// Text blocks are concatenated into `message.content` (null when there are none, as OpenAI does
/// for pure tool calls); `tool_use` blocks become `message.tool_calls`; other block kinds
/// (thinking, server tools) have no OpenAI equivalent and are left out. Fields the upstream did not
/// send come out empty or zero rather than failing, because a reply is better than none.
pub fn response(anthropic: &Value, created: u64) -> Value {
    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    let blocks = anthropic.get("content").and_then(Value::as_array);
    for block in blocks.into_iter().flatten() {
        match str_field(block, "type") {
            Some("text") => text
                .get_or_insert_with(String::new)
                .push_str(str_field(block, "text").unwrap_or("")),
            Some("tool_use") => tool_calls.push(json!({
                "id": str_field(block, "id").unwrap_or(""),
                "type": "function",
                "function": {
                    "name": str_field(block, "name").unwrap_or(""),
                    "arguments": tool_arguments(block.get("input")),
                },
            })),
            _ => {}
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), Value::from("assistant"));
    message.insert("content".into(), text.map_or(Value::Null, Value::String));
    if !tool_calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    json!({
        "id": str_field(anthropic, "id").unwrap_or(""),
        "object": "chat.completion",
        "created": created,
        "model": str_field(anthropic, "model").unwrap_or(""),
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish_reason(anthropic.get("stop_reason")),
            "logprobs": null,
        }],
        "usage": Usage::from_anthropic(anthropic.get("usage")).openai(),
    })
}

fn tool_arguments(input: Option<&Value>) -> String {
    match input {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(input) => input.to_string(),
    }
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`. Unknown or missing reasons read as "stop",
/// the one value every OpenAI client handles.
fn finish_reason(stop_reason: Option<&Value>) -> &'static str {
    match stop_reason.and_then(Value::as_str) {
        Some("max_tokens") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// Token counts as Anthropic reports them. Cached input counts towards OpenAI's `prompt_tokens`,
/// since Anthropic's `input_tokens` excludes it while OpenAI's prompt count includes it.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    input: u64,
    cache_creation: u64,
    cache_read: u64,
    output: u64,
}

impl Usage {
    fn from_anthropic(usage: Option<&Value>) -> Self {
        let mut out = Self::default();
        out.update(usage);
        out
    }

    /// Overwrites the counts present in `usage`: Anthropic's counts are cumulative, not increments.
    fn update(&mut self, usage: Option<&Value>) {
        let Some(usage) = usage else {
            return;
        };
        let slots = [
            ("input_tokens", &mut self.input),
            ("cache_creation_input_tokens", &mut self.cache_creation),
            ("cache_read_input_tokens", &mut self.cache_read),
            ("output_tokens", &mut self.output),
        ];
        for (key, slot) in slots {
            if let Some(n) = usage.get(key).and_then(Value::as_u64) {
                *slot = n;
            }
        }
    }

    fn openai(self) -> Value {
        let prompt = self
            .input
            .saturating_add(self.cache_creation)
            .saturating_add(self.cache_read);
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": self.output,
            "total_tokens": prompt.saturating_add(self.output),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Turns an Anthropic error body (any non-2xx, or a streamed `error` event) into OpenAI's error
/// shape `{"error": {"message", "type", "param": null, "code": null}}`.
///
/// The Anthropic error `type` (`invalid_request_error`, `rate_limit_error`, `overloaded_error`, …)
/// is kept as it is: OpenAI clients pick their exception from the HTTP status, and the original type
/// tells a person more than a lossy renaming would. A body that is not Anthropic's shape (say, a
/// proxy's) still yields a well-formed error.
pub fn error(anthropic: &Value) -> Value {
    let (kind, message) = match anthropic.get("error") {
        Some(inner @ Value::Object(_)) => (str_field(inner, "type"), str_field(inner, "message")),
        Some(Value::String(message)) => (None, Some(message.as_str())),
        _ => (
            None,
            str_field(anthropic, "message").or_else(|| anthropic.as_str()),
        ),
    };
    openai_error(
        message.unwrap_or("the Anthropic provider returned an error"),
        kind.unwrap_or("api_error"),
    )
}

fn openai_error(message: &str, kind: &str) -> Value {
    json!({ "error": { "message": message, "type": kind, "param": null, "code": null } })
}

// ---------------------------------------------------------------------------------------------
// Streaming: Anthropic SSE -> OpenAI chat.completion.chunk SSE
// ---------------------------------------------------------------------------------------------

/// Translates an Anthropic event stream into OpenAI `chat.completion.chunk` events, as bytes arrive
/// in arbitrary pieces.
///
/// Bytes are split into SSE lines at `\n`, `\r\n` or `\r` before any UTF-8 decoding, so a piece
/// that ends inside a multi-byte character or a line costs nothing: the line is simply finished by
/// a later feed. The output for a stream does not depend on how it was cut.
///
/// Output, each as `data: <json>\n\n`: a role chunk at `message_start`; a content chunk per text
/// delta; a `tool_calls` chunk when a tool call starts and per argument fragment (tool calls are
/// numbered 0, 1, … in order of appearance, as OpenAI does); a chunk with the `finish_reason` at
/// `message_delta`; then at `message_stop` a usage chunk (`choices: []`) and `data: [DONE]`. An
/// upstream `error` event becomes `data: {"error": …}` followed by `data: [DONE]`. Nothing is
/// translated after `[DONE]`.
#[derive(Debug)]
pub struct StreamTranslator {
    created: u64,
    /// The current, unfinished line.
    line: Vec<u8>,
    /// The current line outgrew [`MAX_LINE_BYTES`]; the rest of it is skipped.
    skipping_line: bool,
    /// The last byte seen was `\r`, so a `\n` right after it ends nothing.
    after_cr: bool,
    event_name: String,
    data: String,
    has_data: bool,
    data_overflow: bool,
    id: String,
    model: String,
    started: bool,
    usage: Usage,
    /// Anthropic content-block index → OpenAI tool-call index.
    tool_ordinals: HashMap<u64, u64>,
    next_tool: u64,
    /// At least one event has been written for the client.
    emitted: bool,
    /// A `finish_reason` has been sent (Anthropic's `message_delta`).
    finish_sent: bool,
    /// `data: [DONE]` has been sent, or `finish` was called.
    done: bool,
}

impl StreamTranslator {
    /// A translator for one response; `created` stamps every chunk, as OpenAI does.
    pub fn new(created: u64) -> Self {
        Self {
            created,
            line: Vec::new(),
            skipping_line: false,
            after_cr: false,
            event_name: String::new(),
            data: String::new(),
            has_data: false,
            data_overflow: false,
            id: String::new(),
            model: String::new(),
            started: false,
            usage: Usage::default(),
            tool_ordinals: HashMap::new(),
            next_tool: 0,
            emitted: false,
            finish_sent: false,
            done: false,
        }
    }

    /// Feeds raw bytes of the Anthropic SSE stream, cut anywhere (even inside a UTF-8 character or
    /// a line), and returns the OpenAI SSE bytes completed so far, which may be empty.
    pub fn feed(&mut self, bytes: &[u8]) -> Bytes {
        let mut out = Vec::new();
        let mut rest = bytes;
        while !self.done {
            let Some((&first, tail)) = rest.split_first() else {
                break;
            };
            if std::mem::take(&mut self.after_cr) && first == b'\n' {
                rest = tail;
                continue;
            }
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(end) => {
                    self.push_line_bytes(&rest[..end]);
                    self.after_cr = rest[end] == b'\r';
                    rest = &rest[end + 1..];
                    self.end_line(&mut out);
                }
                None => {
                    self.push_line_bytes(rest);
                    rest = &[];
                }
            }
        }
        Bytes::from(out)
    }

    /// Called when the upstream stream ends; returns whatever remains to send.
    ///
    /// A last event that lacks its closing blank line is still translated (a truncated one fails to
    /// parse and is ignored). Then, if `[DONE]` has not been sent:
    /// - the message got its `finish_reason` but `message_stop` never came: the answer is complete,
    ///   so the usage chunk and `data: [DONE]` are sent as `message_stop` would have;
    /// - something was sent but the message never finished: the client must not mistake a cut-off
    ///   answer for a whole one, so an error event (type `api_error`) and `data: [DONE]` are sent;
    /// - nothing was sent at all: nothing is returned, which leaves the caller free to answer with
    ///   an HTTP error of its own if it has not yet committed to a 200.
    ///
    /// Later calls to `feed` or `finish` return nothing.
    pub fn finish(&mut self) -> Bytes {
        let mut out = Vec::new();
        if !self.done {
            if !self.line.is_empty() || self.skipping_line {
                self.end_line(&mut out);
            }
            if !self.done {
                self.dispatch(&mut out);
            }
        }
        if !self.done && self.emitted {
            if self.finish_sent {
                self.finish_message(&mut out);
            } else {
                let error = openai_error(
                    "the upstream stream ended before the message was complete",
                    "api_error",
                );
                self.emit(&mut out, &error);
                self.emit_done(&mut out);
            }
        }
        self.done = true;
        self.line = Vec::new();
        self.data = String::new();
        Bytes::from(out)
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) {
        if self.skipping_line {
            return;
        }
        if self.line.len().saturating_add(bytes.len()) > MAX_LINE_BYTES {
            // The line was most likely a data line: the event it belonged to is lost with it, rather
            // than translated from what remains.
            self.line = Vec::new();
            self.skipping_line = true;
            self.data = String::new();
            self.data_overflow = true;
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    /// One SSE line is complete: a blank line ends the event, `field: value` adds to it.
    fn end_line(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.skipping_line) {
            return;
        }
        if self.line.is_empty() {
            self.dispatch(out);
            return;
        }
        let line = std::mem::take(&mut self.line);
        self.field(&String::from_utf8_lossy(&line));
        self.line = line;
        self.line.clear();
    }

    fn field(&mut self, line: &str) {
        if line.starts_with(':') {
            return; // comment
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match name {
            "data" => self.push_data(value),
            "event" => value.clone_into(&mut self.event_name),
            _ => {}
        }
    }

    fn push_data(&mut self, value: &str) {
        if self.data_overflow {
            return;
        }
        let needed = self.data.len().saturating_add(value.len()).saturating_add(1);
        if needed > MAX_EVENT_DATA_BYTES {
            self.data = String::new();
            self.data_overflow = true;
            return;
        }
        if self.has_data {
            self.data.push('\n');
        }
        self.data.push_str(value);
        self.has_data = true;
    }

    /// The event is complete: translate it if its data is JSON. The `type` inside the data decides;
    /// the `event:` name is only a fallback.
    fn dispatch(&mut self, out: &mut Vec<u8>) {
        let name = std::mem::take(&mut self.event_name);
        let data = std::mem::take(&mut self.data);
        let has_data = std::mem::take(&mut self.has_data);
        let overflow = std::mem::take(&mut self.data_overflow);
        if !has_data || overflow {
            return;
        }
        let Ok(event) = serde_json::from_str::<Value>(&data) else {
            return;
        };
        let kind = str_field(&event, "type").unwrap_or(&name);
        match kind {
            "message_start" => self.on_message_start(&event, out),
            "content_block_start" => self.on_block_start(&event, out),
            "content_block_delta" => self.on_block_delta(&event, out),
            "message_delta" => self.on_message_delta(&event, out),
            "message_stop" => self.finish_message(out),
            "error" => {
                self.emit(out, &error(&event));
                self.emit_done(out);
            }
            _ => {} // ping, content_block_stop, and event kinds added later
        }
    }

    fn on_message_start(&mut self, event: &Value, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let message = event.get("message");
        if let Some(id) = message.and_then(|m| str_field(m, "id")) {
            id.clone_into(&mut self.id);
        }
        if let Some(model) = message.and_then(|m| str_field(m, "model")) {
            model.clone_into(&mut self.model);
        }
        self.usage.update(message.and_then(|m| m.get("usage")));
        let chunk = self.chunk(json!({ "role": "assistant", "content": "" }), Value::Null);
        self.emit(out, &chunk);
    }

    fn on_block_start(&mut self, event: &Value, out: &mut Vec<u8>) {
        let Some(block) = event.get("content_block") else {
            return;
        };
        match str_field(block, "type") {
            Some("text") => self.emit_text(str_field(block, "text").unwrap_or(""), out),
            Some("tool_use") => {
                let ordinal = self.next_tool;
                self.next_tool = self.next_tool.saturating_add(1);
                if let Some(index) = event.get("index").and_then(Value::as_u64) {
                    self.tool_ordinals.insert(index, ordinal);
                }
                let delta = json!({ "tool_calls": [{
                    "index": ordinal,
                    "id": str_field(block, "id").unwrap_or(""),
                    "type": "function",
                    "function": { "name": str_field(block, "name").unwrap_or(""), "arguments": "" },
                }]});
                let chunk = self.chunk(delta, Value::Null);
                self.emit(out, &chunk);
            }
            _ => {}
        }
    }

    fn on_block_delta(&mut self, event: &Value, out: &mut Vec<u8>) {
        let Some(delta) = event.get("delta") else {
            return;
        };
        match str_field(delta, "type") {
            Some("text_delta") => self.emit_text(str_field(delta, "text").unwrap_or(""), out),
            Some("input_json_delta") => {
                let fragment = str_field(delta, "partial_json").unwrap_or("");
                let ordinal = event
                    .get("index")
                    .and_then(Value::as_u64)
                    .and_then(|index| self.tool_ordinals.get(&index).copied());
                if let (Some(ordinal), false) = (ordinal, fragment.is_empty()) {
                    let delta = json!({ "tool_calls": [{
                        "index": ordinal,
                        "function": { "arguments": fragment },
                    }]});
                    let chunk = self.chunk(delta, Value::Null);
                    self.emit(out, &chunk);
                }
            }
            _ => {} // thinking, signatures, citations: nothing to show in OpenAI's format
        }
    }

    fn on_message_delta(&mut self, event: &Value, out: &mut Vec<u8>) {
        self.usage.update(event.get("usage"));
        let reason = finish_reason(event.get("delta").and_then(|delta| delta.get("stop_reason")));
        let chunk = self.chunk(json!({}), Value::from(reason));
        self.emit(out, &chunk);
        self.finish_sent = true;
    }

    fn finish_message(&mut self, out: &mut Vec<u8>) {
        let usage = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": self.usage.openai(),
        });
        self.emit(out, &usage);
        self.emit_done(out);
    }

    fn emit_text(&mut self, text: &str, out: &mut Vec<u8>) {
        if !text.is_empty() {
            let chunk = self.chunk(json!({ "content": text }), Value::Null);
            self.emit(out, &chunk);
        }
    }

    fn chunk(&self, delta: Value, finish_reason: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish_reason }],
        })
    }

    fn emit(&mut self, out: &mut Vec<u8>, event: &Value) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(event.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
        self.emitted = true;
    }

    fn emit_done(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"data: [DONE]\n\n");
        self.done = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("test body must be an object, got {other}"),
        }
    }

    fn translate(value: Value) -> Result<Value, Unsupported> {
        request(&body(value), "claude-test", 1024)
    }

    fn user(text: &str) -> Value {
        json!({ "role": "user", "content": text })
    }

    // ----- request -----

    #[test]
    fn system_and_developer_messages_become_the_system_prompt() {
        let out = translate(json!({
            "model": "gpt-4o",
            "messages": [
                { "role": "system", "content": "Be brief." },
                user("hi"),
                { "role": "developer", "content": [
                    { "type": "text", "text": "Answer in " },
                    { "type": "text", "text": "French." },
                ]},
                { "role": "assistant", "content": "Salut" },
                { "role": "system", "content": "" },
                user("again"),
            ],
        }))
        .unwrap();
        assert_eq!(out["system"], "Be brief.\n\nAnswer in French.");
        assert_eq!(
            out["messages"],
            json!([
                { "role": "user", "content": "hi" },
                { "role": "assistant", "content": "Salut" },
                { "role": "user", "content": "again" },
            ])
        );
        assert_eq!(out["model"], "claude-test");
    }

    #[test]
    fn no_system_key_without_system_messages() {
        let out = translate(json!({ "messages": [user("hi")] })).unwrap();
        assert!(out.get("system").is_none());
        assert_eq!(out["max_tokens"], 1024);
    }

    #[test]
    fn consecutive_same_role_messages_are_kept() {
        let out = translate(json!({ "messages": [user("a"), user("b")] })).unwrap();
        assert_eq!(out["messages"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn image_parts_from_data_and_http_urls() {
        let out = translate(json!({ "messages": [{ "role": "user", "content": [
            { "type": "text", "text": "what is this?" },
            { "type": "image_url", "image_url": { "url": "data:image/png;base64,AAAA" } },
            { "type": "image_url", "image_url": { "url": "https://example.com/cat.jpg", "detail": "high" } },
            { "type": "image_url", "image_url": { "url": "HTTP://example.com/dog.gif" } },
        ]}]}))
        .unwrap();
        assert_eq!(
            out["messages"][0]["content"],
            json!([
                { "type": "text", "text": "what is this?" },
                { "type": "image", "source": { "type": "base64", "media_type": "image/png", "data": "AAAA" } },
                { "type": "image", "source": { "type": "url", "url": "https://example.com/cat.jpg" } },
                { "type": "image", "source": { "type": "url", "url": "HTTP://example.com/dog.gif" } },
            ])
        );
    }

    #[test]
    fn unusable_image_urls_are_refused() {
        for url in [
            "data:image/png,AAAA",
            "data:;base64,AAAA",
            "data:image/png;base64",
            "ftp://example.com/a.png",
            "é",
            "",
        ] {
            let result = translate(json!({ "messages": [{ "role": "user", "content": [
                { "type": "image_url", "image_url": { "url": url } },
            ]}]}));
            assert!(result.is_err(), "{url} should be refused");
        }
        let missing = translate(json!({ "messages": [{ "role": "user", "content": [
            { "type": "image_url", "image_url": "https://example.com/a.png" },
        ]}]}));
        assert!(missing.is_err());
    }

    #[test]
    fn tool_calls_and_results_round_trip() {
        let out = translate(json!({
            "messages": [
                user("weather in Paris and Rome?"),
                { "role": "assistant", "content": "Checking.", "tool_calls": [
                    { "id": "call_1", "type": "function",
                      "function": { "name": "get_weather", "arguments": "{\"city\":\"Paris\"}" } },
                    { "id": "call_2", "type": "function",
                      "function": { "name": "get_weather", "arguments": "{\"city\":\"Rome\"}" } },
                ]},
                { "role": "tool", "tool_call_id": "call_1", "content": "18C" },
                { "role": "system", "content": "Use Celsius." },
                { "role": "tool", "tool_call_id": "call_2", "content": [{ "type": "text", "text": "22C" }] },
                user("thanks"),
                { "role": "assistant", "content": null, "tool_calls": [
                    { "id": "call_3", "type": "function", "function": { "name": "now", "arguments": "" } },
                ]},
                { "role": "tool", "tool_call_id": "call_3", "content": "noon" },
            ],
            "tools": [
                { "type": "function", "function": {
                    "name": "get_weather", "description": "Weather for a city",
                    "parameters": { "type": "object", "properties": { "city": { "type": "string" } } },
                }},
                { "type": "function", "function": { "name": "now" } },
            ],
            "tool_choice": "auto",
        }))
        .unwrap();
        assert_eq!(out["system"], "Use Celsius.");
        assert_eq!(
            out["messages"],
            json!([
                { "role": "user", "content": "weather in Paris and Rome?" },
                { "role": "assistant", "content": [
                    { "type": "text", "text": "Checking." },
                    { "type": "tool_use", "id": "call_1", "name": "get_weather", "input": { "city": "Paris" } },
                    { "type": "tool_use", "id": "call_2", "name": "get_weather", "input": { "city": "Rome" } },
                ]},
                { "role": "user", "content": [
                    { "type": "tool_result", "tool_use_id": "call_1", "content": "18C" },
                    { "type": "tool_result", "tool_use_id": "call_2", "content": "22C" },
                ]},
                { "role": "user", "content": "thanks" },
                { "role": "assistant", "content": [
                    { "type": "tool_use", "id": "call_3", "name": "now", "input": {} },
                ]},
                { "role": "user", "content": [
                    { "type": "tool_result", "tool_use_id": "call_3", "content": "noon" },
                ]},
            ])
        );
        assert_eq!(
            out["tools"],
            json!([
                { "name": "get_weather", "description": "Weather for a city",
                  "input_schema": { "type": "object", "properties": { "city": { "type": "string" } } } },
                { "name": "now", "input_schema": { "type": "object", "properties": {} } },
            ])
        );
        assert_eq!(out["tool_choice"], json!({ "type": "auto" }));

        // And back: Anthropic's tool_use answer becomes OpenAI tool_calls with the same input.
        let answer = response(
            &json!({
                "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
                "content": [
                    { "type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": { "city": "Oslo" } },
                ],
                "stop_reason": "tool_use",
                "usage": { "input_tokens": 1, "output_tokens": 2 },
            }),
            7,
        );
        let call = &answer["choices"][0]["message"]["tool_calls"][0];
        let arguments: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(arguments, json!({ "city": "Oslo" }));
        let again = translate(json!({ "messages": [
            user("weather?"),
            { "role": "assistant", "content": null, "tool_calls": [call] },
        ]}))
        .unwrap();
        assert_eq!(
            again["messages"][1]["content"][0],
            json!({ "type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": { "city": "Oslo" } })
        );
    }

    #[test]
    fn tool_choice_mapping() {
        let tools = json!([{ "type": "function", "function": { "name": "f" } }]);
        let cases = [
            (json!("auto"), json!({ "type": "auto" })),
            (json!("required"), json!({ "type": "any" })),
            (json!("none"), json!({ "type": "none" })),
            (
                json!({ "type": "function", "function": { "name": "f" } }),
                json!({ "type": "tool", "name": "f" }),
            ),
        ];
        for (choice, expected) in cases {
            let out = translate(json!({ "messages": [user("x")], "tools": tools, "tool_choice": choice }));
            assert_eq!(out.unwrap()["tool_choice"], expected);
        }
        // Without tools the choice has nothing to refer to and is dropped.
        let out = translate(json!({ "messages": [user("x")], "tool_choice": "none" })).unwrap();
        assert!(out.get("tool_choice").is_none());
        assert!(out.get("tools").is_none());
    }

    #[test]
    fn parallel_tool_calls_false_disables_parallel_tool_use() {
        let tools = json!([{ "type": "function", "function": { "name": "f" } }]);
        let out = translate(json!({ "messages": [user("x")], "tools": tools, "parallel_tool_calls": false }));
        assert_eq!(
            out.unwrap()["tool_choice"],
            json!({ "type": "auto", "disable_parallel_tool_use": true })
        );
        let out = translate(json!({
            "messages": [user("x")], "tools": tools, "tool_choice": "required", "parallel_tool_calls": false,
        }));
        assert_eq!(
            out.unwrap()["tool_choice"],
            json!({ "type": "any", "disable_parallel_tool_use": true })
        );
        let out = translate(json!({
            "messages": [user("x")], "tools": tools, "tool_choice": "none", "parallel_tool_calls": false,
        }));
        assert_eq!(out.unwrap()["tool_choice"], json!({ "type": "none" }));
        let out = translate(json!({ "messages": [user("x")], "tools": tools, "parallel_tool_calls": true }));
        assert!(out.unwrap().get("tool_choice").is_none());
    }

    #[test]
    fn sampling_limits_and_metadata_mapping() {
        let out = translate(json!({
            "model": "gpt-4o",
            "messages": [user("hi")],
            "max_tokens": 100,
            "max_completion_tokens": 50,
            "temperature": 1.7,
            "top_p": 0.9,
            "stop": "END",
            "stream": true,
            "user": "u-42",
            "stream_options": { "include_usage": true },
            "presence_penalty": 0.5,
            "frequency_penalty": 0.5,
            "logit_bias": { "50256": -100 },
            "seed": 7,
            "response_format": { "type": "text" },
            "n": 1,
            "logprobs": false,
            "parallel_tool_calls": true,
        }))
        .unwrap();
        assert_eq!(
            out,
            json!({
                "model": "claude-test",
                "max_tokens": 50,
                "messages": [{ "role": "user", "content": "hi" }],
                "temperature": 1.0,
                "top_p": 0.9,
                "stop_sequences": ["END"],
                "stream": true,
                "metadata": { "user_id": "u-42" },
            })
        );

        let out = translate(json!({
            "messages": [user("hi")], "max_tokens": 10, "temperature": -0.5, "stop": ["a", "b"],
        }))
        .unwrap();
        assert_eq!(out["max_tokens"], 10);
        assert_eq!(out["temperature"], json!(0.0));
        assert_eq!(out["stop_sequences"], json!(["a", "b"]));

        let out = translate(json!({
            "messages": [user("hi")], "temperature": 0.3, "stop": null, "max_tokens": null,
        }))
        .unwrap();
        assert_eq!(out["temperature"], json!(0.3));
        assert_eq!(out["max_tokens"], 1024);
        assert!(out.get("stop_sequences").is_none());
    }

    #[test]
    fn every_unsupported_case_is_refused_with_a_message() {
        let ok_messages = json!([user("hi")]);
        let cases = [
            (json!({ "messages": ok_messages, "n": 2 }), "n > 1"),
            (json!({ "messages": ok_messages, "n": 0 }), "n must"),
            (json!({ "messages": ok_messages, "logprobs": true }), "logprobs"),
            (
                json!({ "messages": ok_messages, "response_format": { "type": "json_object" } }),
                "json_object",
            ),
            (
                json!({ "messages": ok_messages, "response_format": { "type": "json_schema" } }),
                "json_schema",
            ),
            (
                json!({ "messages": ok_messages, "response_format": "json" }),
                "response_format",
            ),
            (json!({ "messages": ok_messages, "functions": [] }), "functions"),
            (json!({ "messages": [] }), "must include a user message"),
            (
                json!({ "messages": [{ "role": "system", "content": "x" }] }),
                "must include a user message",
            ),
            (
                json!({ "messages": [{ "role": "assistant", "content": "x" }] }),
                "must include a user message",
            ),
            (json!({}), "messages is required"),
            (json!({ "messages": "hi" }), "messages must be an array"),
            (json!({ "messages": [42] }), "messages[0] must be an object"),
            (json!({ "messages": [{ "content": "hi" }] }), "no role"),
            (
                json!({ "messages": [{ "role": 1, "content": "hi" }] }),
                "role must be a string",
            ),
            (
                json!({ "messages": [{ "role": "function", "content": "hi" }] }),
                "not a known role",
            ),
            (
                json!({ "messages": [{ "role": "user", "content": 5 }] }),
                "content must be",
            ),
            (json!({ "messages": [{ "role": "user" }] }), "content must be"),
            (
                json!({ "messages": [{ "role": "system", "content": null }, user("x")] }),
                "content must be",
            ),
            (
                json!({ "messages": [{ "role": "system", "content": [{ "type": "image_url" }] }, user("x")] }),
                "only text",
            ),
            (
                json!({ "messages": [{ "role": "user", "content": [{ "type": "input_audio" }] }] }),
                "input_audio",
            ),
            (
                json!({ "messages": [{ "role": "user", "content": [{ "text": "x" }] }] }),
                "type",
            ),
            (
                json!({ "messages": [{ "role": "user", "content": [{ "type": "text" }] }] }),
                "text must be",
            ),
            (
                json!({ "messages": [user("x"), { "role": "assistant" }] }),
                "content or tool_calls",
            ),
            (
                json!({ "messages": [user("x"), { "role": "assistant", "content": 3 }] }),
                "content must be",
            ),
            (
                json!({ "messages": [user("x"), { "role": "assistant", "tool_calls": [
                    { "id": "c", "type": "function", "function": { "name": "f", "arguments": "{oops" } },
                ]}]}),
                "not valid JSON",
            ),
            (
                json!({ "messages": [user("x"), { "role": "assistant", "tool_calls": [
                    { "id": "c", "type": "function", "function": { "name": "f", "arguments": "[1]" } },
                ]}]}),
                "JSON object",
            ),
            (
                json!({ "messages": [user("x"), { "role": "assistant", "tool_calls": [
                    { "type": "function", "function": { "name": "f", "arguments": "{}" } },
                ]}]}),
                "id must be",
            ),
            (
                json!({ "messages": [user("x"), { "role": "assistant", "tool_calls": "f" }] }),
                "tool_calls must be an array",
            ),
            (
                json!({ "messages": [user("x"), { "role": "tool", "content": "r" }] }),
                "tool_call_id",
            ),
            (
                json!({ "messages": ok_messages, "max_tokens": 0 }),
                "max_tokens must",
            ),
            (
                json!({ "messages": ok_messages, "max_completion_tokens": "9" }),
                "max_completion_tokens must",
            ),
            (
                json!({ "messages": ok_messages, "temperature": "hot" }),
                "temperature",
            ),
            (json!({ "messages": ok_messages, "top_p": "x" }), "top_p"),
            (json!({ "messages": ok_messages, "stop": [1] }), "stop"),
            (json!({ "messages": ok_messages, "stream": "yes" }), "stream"),
            (json!({ "messages": ok_messages, "user": 5 }), "user"),
            (
                json!({ "messages": ok_messages, "tools": {} }),
                "tools must be an array",
            ),
            (
                json!({ "messages": ok_messages, "tools": [{ "type": "custom" }] }),
                "custom",
            ),
            (
                json!({ "messages": ok_messages, "tools": [{ "type": "function" }] }),
                "function must",
            ),
            (
                json!({ "messages": ok_messages, "tool_choice": "sometimes" }),
                "tool_choice",
            ),
            (
                json!({ "messages": ok_messages, "tool_choice": { "type": "function" } }),
                "tool_choice",
            ),
        ];
        for (input, needle) in cases {
            match translate(input.clone()) {
                Err(Unsupported(message)) => {
                    assert!(
                        message.contains(needle),
                        "{input}: message {message:?} lacks {needle:?}"
                    )
                }
                Ok(out) => panic!("{input} should be refused, got {out}"),
            }
        }
        assert_eq!(
            translate(json!({ "messages": ok_messages, "n": 3 })),
            Err(Unsupported(
                "n > 1 is not supported by Anthropic providers".into()
            ))
        );
    }

    // ----- response -----

    #[test]
    fn text_response() {
        let out = response(
            &json!({
                "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5",
                "content": [
                    { "type": "thinking", "thinking": "hmm", "signature": "s" },
                    { "type": "text", "text": "Hello" },
                    { "type": "text", "text": ", world" },
                ],
                "stop_reason": "end_turn",
                "stop_sequence": null,
                "usage": { "input_tokens": 12, "output_tokens": 6 },
            }),
            1_700_000_000,
        );
        assert_eq!(
            out,
            json!({
                "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": "claude-sonnet-4-5",
                "choices": [{
                    "index": 0,
                    "message": { "role": "assistant", "content": "Hello, world" },
                    "finish_reason": "stop",
                    "logprobs": null,
                }],
                "usage": { "prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18 },
            })
        );
    }

    #[test]
    fn tool_use_response() {
        let out = response(
            &json!({
                "id": "msg_2", "model": "claude-test",
                "content": [
                    { "type": "text", "text": "Let me look." },
                    { "type": "tool_use", "id": "toolu_1", "name": "search", "input": { "q": "rust", "n": 3 } },
                    { "type": "tool_use", "id": "toolu_2", "name": "clock", "input": {} },
                ],
                "stop_reason": "tool_use",
                "usage": { "input_tokens": 3, "output_tokens": 4 },
            }),
            5,
        );
        let message = &out["choices"][0]["message"];
        assert_eq!(message["content"], "Let me look.");
        assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
        let calls = message["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0]["id"], "toolu_1");
        assert_eq!(calls[0]["type"], "function");
        assert_eq!(calls[0]["function"]["name"], "search");
        let arguments: Value =
            serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(arguments, json!({ "q": "rust", "n": 3 }));
        assert_eq!(calls[1]["function"]["arguments"], "{}");

        let only_tools = response(
            &json!({ "content": [{ "type": "tool_use", "id": "t", "name": "f", "input": {} }] }),
            0,
        );
        assert_eq!(only_tools["choices"][0]["message"]["content"], Value::Null);
    }

    #[test]
    fn stop_reason_mapping() {
        let cases = [
            (json!("end_turn"), "stop"),
            (json!("stop_sequence"), "stop"),
            (json!("max_tokens"), "length"),
            (json!("tool_use"), "tool_calls"),
            (json!("refusal"), "content_filter"),
            (json!("pause_turn"), "stop"),
            (Value::Null, "stop"),
            (json!(3), "stop"),
        ];
        for (reason, expected) in cases {
            let out = response(&json!({ "content": [], "stop_reason": reason }), 0);
            assert_eq!(out["choices"][0]["finish_reason"], expected, "{reason}");
        }
    }

    #[test]
    fn usage_counts_cached_input_as_prompt() {
        let out = response(
            &json!({ "content": [], "usage": {
                "input_tokens": 10, "cache_creation_input_tokens": 200, "cache_read_input_tokens": 3000,
                "output_tokens": 7,
            }}),
            0,
        );
        assert_eq!(
            out["usage"],
            json!({ "prompt_tokens": 3210, "completion_tokens": 7, "total_tokens": 3217 })
        );
        let huge = response(
            &json!({ "usage": { "input_tokens": u64::MAX, "cache_read_input_tokens": 5, "output_tokens": 1 } }),
            0,
        );
        assert_eq!(huge["usage"]["total_tokens"], u64::MAX);
    }

    #[test]
    fn response_tolerates_garbage() {
        for input in [
            Value::Null,
            json!(1),
            json!("x"),
            json!([]),
            json!({ "content": "text" }),
        ] {
            let out = response(&input, 1);
            assert_eq!(out["object"], "chat.completion");
            assert_eq!(out["choices"][0]["message"]["content"], Value::Null);
        }
    }

    // ----- errors -----

    #[test]
    fn error_translation() {
        let out = error(&json!({
            "type": "error",
            "error": { "type": "overloaded_error", "message": "Overloaded" },
            "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
        }));
        assert_eq!(
            out,
            json!({ "error": { "message": "Overloaded", "type": "overloaded_error", "param": null, "code": null } })
        );
        let fallback = error(&json!("<html>bad gateway</html>"));
        assert_eq!(fallback["error"]["message"], "<html>bad gateway</html>");
        assert_eq!(fallback["error"]["type"], "api_error");
        let nothing = error(&Value::Null);
        assert_eq!(
            nothing["error"]["message"],
            "the Anthropic provider returned an error"
        );
        assert_eq!(nothing["error"]["param"], Value::Null);
    }

    // ----- streaming -----

    /// Shaped after the example stream in Anthropic's streaming documentation (text, then a tool
    /// call whose arguments arrive as partial JSON), with a non-ASCII character in the text.
    const STREAM: &str = concat!(
        "event: message_start\n",
        r#"data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-sonnet-4-5","stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":20,"cache_read_input_tokens":8,"output_tokens":2},"content":[],"stop_reason":null}}"#,
        "\n\n",
        "event: content_block_start\n",
        r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        "\n\n",
        "event: ping\n",
        r#"data: {"type": "ping"}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"héllo, "}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"let me check"}}"#,
        "\n\n",
        "event: content_block_stop\n",
        r#"data: {"type":"content_block_stop","index":0}"#,
        "\n\n",
        "event: content_block_start\n",
        r#"data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\":"}}"#,
        "\n\n",
        "event: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \"San Francisco, CA\"}"}}"#,
        "\n\n",
        "event: content_block_stop\n",
        r#"data: {"type":"content_block_stop","index":1}"#,
        "\n\n",
        "event: message_delta\n",
        r#"data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}"#,
        "\n\n",
        "event: message_stop\n",
        r#"data: {"type":"message_stop"}"#,
        "\n\n",
    );

    fn feed_whole(input: &[u8]) -> Vec<u8> {
        let mut translator = StreamTranslator::new(1_700_000_000);
        let mut out = translator.feed(input).to_vec();
        out.extend_from_slice(&translator.finish());
        out
    }

    fn feed_bytewise(input: &[u8]) -> Vec<u8> {
        let mut translator = StreamTranslator::new(1_700_000_000);
        let mut out = Vec::new();
        for byte in input {
            out.extend_from_slice(&translator.feed(std::slice::from_ref(byte)));
        }
        out.extend_from_slice(&translator.finish());
        out
    }

    /// Splits OpenAI SSE output into its events: JSON values, or `None` for `[DONE]`.
    fn events(output: &[u8]) -> Vec<Option<Value>> {
        let text = std::str::from_utf8(output).expect("output is UTF-8");
        assert!(
            text.is_empty() || text.ends_with("\n\n"),
            "unterminated output {text:?}"
        );
        text.split_terminator("\n\n")
            .map(|event| {
                let data = event.strip_prefix("data: ").expect("every event is a data line");
                assert!(!data.contains('\n'));
                (data != "[DONE]").then(|| serde_json::from_str(data).expect("event data is JSON"))
            })
            .collect()
    }

    fn chunk(delta: Value, finish_reason: Value) -> Option<Value> {
        Some(json!({
            "id": "msg_014p7gG3wDgGV9EUtLvnow3U",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": "claude-sonnet-4-5",
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish_reason }],
        }))
    }

    #[test]
    fn stream_translates_a_realistic_stream() {
        let out = feed_whole(STREAM.as_bytes());
        assert_eq!(
            events(&out),
            vec![
                chunk(json!({ "role": "assistant", "content": "" }), Value::Null),
                chunk(json!({ "content": "héllo, " }), Value::Null),
                chunk(json!({ "content": "let me check" }), Value::Null),
                chunk(
                    json!({ "tool_calls": [{
                        "index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function",
                        "function": { "name": "get_weather", "arguments": "" },
                    }]}),
                    Value::Null
                ),
                chunk(
                    json!({ "tool_calls": [{ "index": 0, "function": { "arguments": "{\"location\":" } }] }),
                    Value::Null
                ),
                chunk(
                    json!({ "tool_calls": [{ "index": 0, "function": { "arguments": " \"San Francisco, CA\"}" } }] }),
                    Value::Null
                ),
                chunk(json!({}), json!("tool_calls")),
                Some(json!({
                    "id": "msg_014p7gG3wDgGV9EUtLvnow3U",
                    "object": "chat.completion.chunk",
                    "created": 1_700_000_000,
                    "model": "claude-sonnet-4-5",
                    "choices": [],
                    "usage": { "prompt_tokens": 500, "completion_tokens": 89, "total_tokens": 589 },
                })),
                None,
            ]
        );
    }

    #[test]
    fn stream_output_does_not_depend_on_how_input_is_cut() {
        let whole = feed_whole(STREAM.as_bytes());
        assert_eq!(feed_bytewise(STREAM.as_bytes()), whole);
        let crlf = STREAM.replace('\n', "\r\n");
        assert_eq!(feed_whole(crlf.as_bytes()), whole);
        assert_eq!(feed_bytewise(crlf.as_bytes()), whole);
        let cr = STREAM.replace('\n', "\r");
        assert_eq!(feed_bytewise(cr.as_bytes()), whole);
        // Every two-piece cut.
        let bytes = crlf.as_bytes();
        for cut in 0..=bytes.len() {
            let mut translator = StreamTranslator::new(1_700_000_000);
            let mut out = translator.feed(&bytes[..cut]).to_vec();
            out.extend_from_slice(&translator.feed(&bytes[cut..]));
            out.extend_from_slice(&translator.finish());
            assert_eq!(out, whole, "cut at {cut}");
        }
    }

    #[test]
    fn text_cut_inside_a_multibyte_character_comes_out_intact() {
        let bytes = STREAM.as_bytes();
        let e_acute = "é".as_bytes();
        let at = bytes.windows(2).position(|w| w == e_acute).expect("stream has é") + 1;
        let mut translator = StreamTranslator::new(1_700_000_000);
        let first = translator.feed(&bytes[..at]);
        let second = translator.feed(&bytes[at..]);
        let mut out = first.to_vec();
        out.extend_from_slice(&second);
        let contents: Vec<String> = events(&out)
            .into_iter()
            .flatten()
            .filter_map(|event| {
                event["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(contents, ["", "héllo, ", "let me check"]);
        assert!(!String::from_utf8_lossy(&out).contains('\u{FFFD}'));
    }

    #[test]
    fn tool_calls_are_numbered_in_order_of_appearance() {
        let stream = concat!(
            "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":1}}}\n\n",
            "data: {\"type\":\"content_block_start\",\"index\":3,\"content_block\":{\"type\":\"tool_use\",\"id\":\"a\",\"name\":\"f\",\"input\":{}}}\n\n",
            "data: {\"type\":\"content_block_start\",\"index\":5,\"content_block\":{\"type\":\"tool_use\",\"id\":\"b\",\"name\":\"g\",\"input\":{}}}\n\n",
            "data: {\"type\":\"content_block_delta\",\"index\":5,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}\n\n",
            "data: {\"type\":\"content_block_delta\",\"index\":3,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}\n\n",
            "data: {\"type\":\"content_block_delta\",\"index\":9,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}\n\n",
        );
        let mut translator = StreamTranslator::new(0);
        let out = events(&translator.feed(stream.as_bytes()));
        let indexes: Vec<Value> = out
            .iter()
            .skip(1)
            .flatten()
            .map(|e| e["choices"][0]["delta"]["tool_calls"][0]["index"].clone())
            .collect();
        assert_eq!(indexes, [json!(0), json!(1), json!(1), json!(0)]);
    }

    #[test]
    fn stream_error_event_becomes_an_openai_error_and_ends_the_stream() {
        let stream = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":1}}}\n\n",
            "event: error\n",
            "data: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"late\"}}\n\n",
        );
        let mut translator = StreamTranslator::new(0);
        let mut out = translator.feed(stream.as_bytes()).to_vec();
        out.extend_from_slice(&translator.finish());
        let out = events(&out);
        assert_eq!(out.len(), 3);
        assert_eq!(
            out[1],
            Some(json!({ "error": {
                "message": "Overloaded", "type": "overloaded_error", "param": null, "code": null,
            }}))
        );
        assert_eq!(out[2], None);
        assert!(translator
            .feed(b"data: {\"type\":\"message_stop\"}\n\n")
            .is_empty());
    }

    #[test]
    fn finish_decides_by_how_far_the_stream_got() {
        // Nothing at all: nothing to say, the caller may still answer with an HTTP error.
        let mut translator = StreamTranslator::new(0);
        assert!(translator
            .feed(b"event: ping\ndata: {\"type\":\"ping\"}\n\n")
            .is_empty());
        assert!(translator.finish().is_empty());

        // Cut off mid-answer: an error, then [DONE].
        let cut = STREAM.find("event: content_block_stop").unwrap();
        let out = events(&feed_whole(&STREAM.as_bytes()[..cut]));
        assert_eq!(out[out.len() - 2].as_ref().unwrap()["error"]["type"], "api_error");
        assert_eq!(out.last(), Some(&None));

        // Finished but message_stop lost: usage and [DONE] as message_stop would have sent.
        let cut = STREAM.find("event: message_stop").unwrap();
        assert_eq!(
            feed_whole(&STREAM.as_bytes()[..cut]),
            feed_whole(STREAM.as_bytes())
        );

        // A last event without its blank line (or even its newline) still counts.
        let trimmed = STREAM.trim_end();
        assert_eq!(feed_whole(trimmed.as_bytes()), feed_whole(STREAM.as_bytes()));

        // finish is final.
        let mut translator = StreamTranslator::new(0);
        let _ = translator.feed(STREAM.as_bytes());
        assert!(translator.finish().is_empty());
        assert!(translator.finish().is_empty());
        assert!(translator.feed(STREAM.as_bytes()).is_empty());
    }

    #[test]
    fn usage_in_message_delta_overrides_message_start() {
        let stream = concat!(
            "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
            "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"},\"usage\":{\"output_tokens\":40,\"cache_read_input_tokens\":100}}\n\n",
            "data: {\"type\":\"message_stop\"}\n\n",
        );
        let out = events(&feed_whole(stream.as_bytes()));
        assert_eq!(out[1].as_ref().unwrap()["choices"][0]["finish_reason"], "length");
        assert_eq!(
            out[2].as_ref().unwrap()["usage"],
            json!({ "prompt_tokens": 105, "completion_tokens": 40, "total_tokens": 145 })
        );
    }

    #[test]
    fn overlong_lines_are_dropped_and_memory_stays_bounded() {
        let mut translator = StreamTranslator::new(1_700_000_000);
        let junk = vec![b'x'; 64 * 1024];
        assert!(translator.feed(b"data: ").is_empty());
        for _ in 0..40 {
            assert!(translator.feed(&junk).is_empty());
            assert!(translator.line.len() <= MAX_LINE_BYTES);
        }
        assert!(translator.skipping_line);
        // The dropped line's end, then a normal stream: translated as if the junk was never there.
        let mut input = b"\n\n".to_vec();
        input.extend_from_slice(STREAM.as_bytes());
        let mut out = translator.feed(&input).to_vec();
        out.extend_from_slice(&translator.finish());
        assert_eq!(out, feed_whole(STREAM.as_bytes()));

        // The event an overlong line belonged to is dropped whole, not translated from the rest.
        let mut translator = StreamTranslator::new(0);
        let mut input = b"data: {\"type\":\"message_start\",\"message\":{}}\ndata: ".to_vec();
        input.extend(std::iter::repeat_n(b' ', MAX_LINE_BYTES + 1));
        input.extend_from_slice(b"\n\n");
        assert!(translator.feed(&input).is_empty());
        assert!(translator.finish().is_empty());

        // Many moderate data lines in one event are bounded too.
        let mut translator = StreamTranslator::new(0);
        let mut line = b"data: ".to_vec();
        line.extend(std::iter::repeat_n(b'y', 1000));
        line.push(b'\n');
        for _ in 0..3000 {
            let _ = translator.feed(&line);
            assert!(translator.data.len() <= MAX_EVENT_DATA_BYTES);
        }
        assert!(translator.feed(b"\n").is_empty());
    }

    /// xorshift64*: deterministic pseudo-random numbers without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    #[test]
    fn garbage_bytes_never_panic() {
        let pieces: &[&[u8]] = &[
            b"event: ",
            b"data: ",
            b"data:",
            b": comment",
            b"\n",
            b"\r\n",
            b"\r",
            b"\n\n",
            b"{\"type\":\"message_start\",\"message\":{\"id\":1,\"usage\":{\"input_tokens\":-3}}}",
            b"{\"type\":\"content_block_start\",\"index\":\"x\",\"content_block\":{\"type\":\"tool_use\"}}",
            b"{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\"}}",
            b"{\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":7}}",
            b"{\"type\":\"message_delta\",\"delta\":null,\"usage\":[]}",
            b"{\"type\":\"message_stop\"}",
            b"{\"type\":\"error\",\"error\":\"x\"}",
            b"{\"type\":",
            b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
            "é".as_bytes(),
            &[0xff, 0xfe, 0x00, 0xc3],
            STREAM.as_bytes(),
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..300 {
            let mut input = Vec::new();
            for _ in 0..rng.below(60) {
                if rng.below(3) == 0 {
                    input.extend((0..rng.below(40)).map(|_| rng.next() as u8));
                } else {
                    input.extend_from_slice(pieces[rng.below(pieces.len())]);
                }
            }
            let mut translator = StreamTranslator::new(rng.next());
            let mut out = Vec::new();
            let mut rest = input.as_slice();
            while !rest.is_empty() {
                let (piece, tail) = rest.split_at(rng.below(rest.len()) + 1);
                out.extend_from_slice(&translator.feed(piece));
                rest = tail;
            }
            out.extend_from_slice(&translator.finish());
            let _ = events(&out); // always well-formed OpenAI SSE
        }
    }

    fn random_value(rng: &mut Rng, depth: usize) -> Value {
        const KEYS: &[&str] = &[
            "messages",
            "role",
            "content",
            "type",
            "text",
            "image_url",
            "url",
            "tool_calls",
            "id",
            "function",
            "name",
            "arguments",
            "tool_call_id",
            "tools",
            "tool_choice",
            "parameters",
            "n",
            "max_tokens",
            "temperature",
            "stop",
            "stream",
            "user",
            "response_format",
            "usage",
            "stop_reason",
            "input",
            "error",
            "message",
            "input_tokens",
            "output_tokens",
        ];
        const STRINGS: &[&str] = &[
            "user",
            "assistant",
            "system",
            "tool",
            "developer",
            "text",
            "image_url",
            "function",
            "tool_use",
            "auto",
            "required",
            "none",
            "data:image/png;base64,AA",
            "https://x",
            "{\"a\":1}",
            "{",
            "é",
            "",
        ];
        match if depth == 0 { rng.below(5) } else { rng.below(7) } {
            0 => Value::Null,
            1 => Value::Bool(rng.below(2) == 0),
            2 => json!(rng.next() as i64),
            3 => json!((rng.next() % 5) as f64 - 2.5),
            4 => Value::from(STRINGS[rng.below(STRINGS.len())]),
            5 => Value::Array((0..rng.below(4)).map(|_| random_value(rng, depth - 1)).collect()),
            _ => Value::Object(
                (0..rng.below(5))
                    .map(|_| {
                        (
                            KEYS[rng.below(KEYS.len())].to_owned(),
                            random_value(rng, depth - 1),
                        )
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn garbage_json_never_panics() {
        let mut rng = Rng(42);
        for _ in 0..5000 {
            let value = random_value(&mut rng, 5);
            if let Value::Object(map) = &value {
                let _ = request(map, "m", 1);
            }
            let _ = request(&body(json!({ "messages": [value.clone()] })), "m", 1);
            let _ = response(&value, 0);
            let _ = error(&value);
        }
    }
}
