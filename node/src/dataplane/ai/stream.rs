//! The streamed answer of a completion on its way to the client: translated from the
//! provider's dialect when it is not OpenAI's, scanned for the usage event, and with
//! masked values put back.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::web;

use super::anthropic::StreamTranslator;
use super::usage::UsageMeter;
use crate::dataplane::pii::Session;

/// Every step a chunk of a streamed answer goes through, in order.
pub struct Pipeline {
    pub translator: Option<StreamTranslator>,
    pub scanner: SseUsageScanner,
    pub restorer: Option<SseRestorer>,
}

impl Pipeline {
    /// Passes one chunk from the provider; returns what the client gets of it.
    pub fn chunk(&mut self, bytes: &[u8]) -> web::Bytes {
        match &mut self.translator {
            Some(translator) => {
                let translated = translator.feed(bytes);
                self.openai(&translated)
            }
            None => self.openai(bytes),
        }
    }

    /// The provider's stream ended: whatever the translator still holds.
    pub fn end(&mut self) -> web::Bytes {
        match &mut self.translator {
            Some(translator) => {
                let rest = translator.finish();
                self.openai(&rest)
            }
            None => web::Bytes::new(),
        }
    }

    fn openai(&mut self, bytes: &[u8]) -> web::Bytes {
        self.scanner.feed(bytes);
        match &mut self.restorer {
            Some(restorer) => restorer.feed(bytes),
            None => web::Bytes::copy_from_slice(bytes),
        }
    }
}

/// Puts masked values back into a stream of server-sent events: each event's
/// `choices[].delta.content` is restored, a placeholder cut between events held until the
/// next one completes it; lines pass through whole.
pub struct SseRestorer {
    session: Arc<Session>,
    partial: Vec<u8>,
    carries: HashMap<u64, String>,
}

impl SseRestorer {
    pub fn new(session: Arc<Session>) -> Self {
        Self {
            session,
            partial: Vec::new(),
            carries: HashMap::new(),
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) -> web::Bytes {
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

/// Finds the usage event in a server-sent event stream as it passes, whatever the chunk
/// boundaries (a line may arrive in pieces).
pub struct SseUsageScanner {
    meter: UsageMeter,
    partial: Vec<u8>,
    counted: bool,
}

impl SseUsageScanner {
    pub fn new(meter: UsageMeter) -> Self {
        Self {
            meter,
            partial: Vec::new(),
            counted: false,
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
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
    use crate::dataplane::usage::UsageCell;

    #[test]
    fn the_usage_event_is_found_across_chunk_boundaries() {
        let cell = Arc::new(UsageCell::default());
        let meter = UsageMeter {
            cell: Some(cell.clone()),
            name: "p/m".into(),
            price: None,
            reservation: None,
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
