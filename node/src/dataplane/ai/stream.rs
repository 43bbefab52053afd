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

    /// The provider's stream ended: whatever the translator and the restorer still hold,
    /// and the usage is counted.
    pub fn end(&mut self) -> web::Bytes {
        let rest = match &mut self.translator {
            Some(translator) => translator.finish(),
            None => web::Bytes::new(),
        };
        let mut out = self.openai(&rest).to_vec();
        self.scanner.finish();
        if let Some(restorer) = &mut self.restorer {
            out.extend_from_slice(&restorer.finish());
        }
        web::Bytes::from(out)
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

    /// The stream ended: a last line without its newline passes as it is.
    pub fn finish(&mut self) -> web::Bytes {
        web::Bytes::from(std::mem::take(&mut self.partial))
    }

    fn restore_line(&mut self, line: &[u8]) -> Vec<u8> {
        let Some(data) = line.strip_prefix(b"data: ") else {
            return line.to_vec();
        };
        let Ok(mut event) = serde_json::from_slice::<serde_json::Value>(data.trim_ascii()) else {
            return line.to_vec();
        };
        // `get_mut`, never indexing: the provider's JSON may have any shape.
        let choices = event
            .get_mut("choices")
            .and_then(serde_json::Value::as_array_mut)
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_object_mut);
        for choice in choices {
            let index = choice
                .get("index")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            let finished = choice.get("finish_reason").is_some_and(|f| !f.is_null());
            let Some(delta) = choice.get_mut("delta").and_then(serde_json::Value::as_object_mut) else {
                continue;
            };
            let carry = self.carries.entry(index).or_default();
            if let Some(content) = delta.get("content").and_then(serde_json::Value::as_str) {
                let mut restored = self.session.restore_streamed(carry, content);
                if finished {
                    restored.push_str(&std::mem::take(carry));
                }
                delta.insert("content".into(), restored.into());
            } else if finished && !carry.is_empty() {
                delta.insert("content".into(), std::mem::take(carry).into());
            }
        }
        format!("data: {event}\n").into_bytes()
    }
}

/// Watches a server-sent event stream for usage as it passes, whatever the chunk
/// boundaries (a line may arrive in pieces), and counts the last usage seen once the
/// stream has ended: a provider that reports running usage in every chunk is counted by
/// its final one. A stream that never ends (the client went away) is not counted, and its
/// reservation stays spent in full.
pub struct SseUsageScanner {
    meter: UsageMeter,
    partial: Vec<u8>,
    last: Option<serde_json::Value>,
}

impl SseUsageScanner {
    pub fn new(meter: UsageMeter) -> Self {
        Self {
            meter,
            partial: Vec::new(),
            last: None,
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            // Most events are content: parse only those that can carry usage.
            if !data.windows(7).any(|w| w == b"\"usage\"") {
                continue;
            }
            if let Ok(mut event) = serde_json::from_slice::<serde_json::Value>(data.trim_ascii()) {
                if let Some(usage) = event.get_mut("usage").filter(|u| u.is_object()) {
                    self.last = Some(usage.take());
                }
            }
        }
        // A line longer than any usage event is not one; do not hold it.
        if self.partial.len() > 1 << 20 {
            self.partial.clear();
        }
    }

    /// The stream ended: counts the last usage seen.
    pub fn finish(&mut self) {
        if let Some(usage) = self.last.take() {
            self.meter.record(&usage);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster::activity::KeyUsageDelta;

    use crate::dataplane::usage::{UsageCell, UsageLedger};

    /// A scanner counting into a cell of its own, without a reservation; returns the
    /// ledger the cell reports to.
    fn counting_scanner() -> (Arc<UsageLedger>, SseUsageScanner) {
        let ledger = Arc::new(UsageLedger::default());
        let meter = UsageMeter {
            cell: Some(Arc::new(UsageCell::new("key", ledger.clone()))),
            name: "p/m".into(),
            price: None,
            reservation: None,
        };
        (ledger, SseUsageScanner::new(meter))
    }

    fn drain(ledger: &UsageLedger) -> Option<KeyUsageDelta> {
        ledger.drain().pop().map(|(_, delta)| delta)
    }

    #[test]
    fn the_usage_event_is_found_across_chunk_boundaries() {
        let (ledger, mut scanner) = counting_scanner();
        let events = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n\
                      data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\n\
                      data: [DONE]\n\n";
        for piece in events.as_bytes().chunks(5) {
            scanner.feed(piece);
        }
        assert!(drain(&ledger).is_none(), "counted once the stream ends");
        scanner.finish();
        let delta = drain(&ledger).expect("counted");
        assert_eq!(delta.models.len(), 1);
        let (name, usage) = &delta.models[0];
        assert_eq!(name, "p/m");
        assert_eq!(
            (usage.requests, usage.prompt_tokens, usage.completion_tokens),
            (1, 7, 3)
        );
    }

    #[test]
    fn events_of_any_shape_pass_the_restorer_without_a_panic() {
        let mut session = Session::default();
        let masked = session.mask(&[crate::dataplane::pii::PiiKind::Email], "a@b.example");
        let mut restorer = SseRestorer::new(Arc::new(session));
        for line in [
            "data: 5\n",
            "data: [1,2]\n",
            "data: {\"choices\":3}\n",
            "data: {\"choices\":[1,{\"delta\":3,\"finish_reason\":\"stop\"},{\"finish_reason\":null}]}\n",
        ] {
            assert_eq!(&restorer.feed(line.as_bytes())[..], line.as_bytes());
        }
        let event =
            format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{masked}\"}}}}]}}\n");
        let restored = restorer.feed(event.as_bytes());
        assert!(String::from_utf8_lossy(&restored).contains("a@b.example"));
        assert_eq!(&restorer.finish()[..], b"");
    }

    #[test]
    fn running_usage_is_counted_by_its_last_report() {
        let (ledger, mut scanner) = counting_scanner();
        for completion in 1..=3 {
            scanner.feed(
                format!("data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":7,\"completion_tokens\":{completion}}}}}\n")
                    .as_bytes(),
            );
        }
        scanner.finish();
        let delta = drain(&ledger).expect("counted");
        assert_eq!(delta.models[0].1.completion_tokens, 3);
    }
}
