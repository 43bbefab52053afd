//! Personal data masking for AI routes: before a prompt leaves for a provider, the kinds
//! a route lists are found and replaced with typed placeholders (`<EMAIL_1>`); with
//! `restore`, the placeholders in the completion are put back before the client sees it.
//! Validation keeps near misses out: a card number must pass Luhn, an IBAN its mod-97
//! checksum, an SSN its reserved ranges, an IP address must parse, and an email-like
//! string inside a URL is part of the URL.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::LazyLock;

use regex::Regex;

/// What a route can mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PiiKind {
    Secret,
    Email,
    Iban,
    CreditCard,
    Ssn,
    Phone,
    Ip,
}

impl PiiKind {
    /// All kinds, in the order they are looked for (earlier kinds win overlaps).
    pub const ALL: [PiiKind; 7] = [
        PiiKind::Secret,
        PiiKind::Email,
        PiiKind::Iban,
        PiiKind::CreditCard,
        PiiKind::Ssn,
        PiiKind::Ip,
        PiiKind::Phone,
    ];

    /// The name routes use.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "secret" => PiiKind::Secret,
            "email" => PiiKind::Email,
            "iban" => PiiKind::Iban,
            "credit_card" => PiiKind::CreditCard,
            "ssn" => PiiKind::Ssn,
            "phone" => PiiKind::Phone,
            "ip" => PiiKind::Ip,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PiiKind::Secret => "secret",
            PiiKind::Email => "email",
            PiiKind::Iban => "iban",
            PiiKind::CreditCard => "credit_card",
            PiiKind::Ssn => "ssn",
            PiiKind::Phone => "phone",
            PiiKind::Ip => "ip",
        }
    }

    fn label(self) -> &'static str {
        match self {
            PiiKind::Secret => "SECRET",
            PiiKind::Email => "EMAIL",
            PiiKind::Iban => "IBAN",
            PiiKind::CreditCard => "CREDIT_CARD",
            PiiKind::Ssn => "SSN",
            PiiKind::Phone => "PHONE",
            PiiKind::Ip => "IP",
        }
    }

    fn pattern(self) -> &'static Regex {
        static SECRET: LazyLock<Regex> = LazyLock::new(|| {
            Regex::new(r"\b(?:AKIA[0-9A-Z]{16}|sk-[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{36,}|xox[baprs]-[A-Za-z0-9-]{10,})")
                .expect("secret pattern")
        });
        static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
            Regex::new(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
                .expect("email pattern")
        });
        static IBAN: LazyLock<Regex> = LazyLock::new(|| {
            Regex::new(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b").expect("iban pattern")
        });
        static CARD: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r"\b\d(?:[ -]?\d){12,18}\b").expect("card pattern"));
        static SSN: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r"\b\d{3}-\d{2}-\d{4}\b").expect("ssn pattern"));
        static PHONE: LazyLock<Regex> = LazyLock::new(|| {
            Regex::new(r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)|\b\d{2,4})[ .-]\d{3,4}[ .-]\d{3,4}\b")
                .expect("phone pattern")
        });
        static IP: LazyLock<Regex> = LazyLock::new(|| {
            Regex::new(
                r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}",
            )
            .expect("ip pattern")
        });
        match self {
            PiiKind::Secret => &SECRET,
            PiiKind::Email => &EMAIL,
            PiiKind::Iban => &IBAN,
            PiiKind::CreditCard => &CARD,
            PiiKind::Ssn => &SSN,
            PiiKind::Phone => &PHONE,
            PiiKind::Ip => &IP,
        }
    }

    /// Whether a pattern match at `start..end` of `text` really is this kind.
    fn confirms(self, text: &str, start: usize, end: usize) -> bool {
        let found = &text[start..end];
        match self {
            PiiKind::Email => !inside_url(text, start),
            PiiKind::Iban => iban_checksum_ok(found),
            PiiKind::CreditCard => {
                let digits: Vec<u32> = found.chars().filter_map(|c| c.to_digit(10)).collect();
                (13..=19).contains(&digits.len()) && luhn_ok(&digits) && !after_iban_prefix(text, start)
            }
            PiiKind::Ssn => {
                let area = &found[..3];
                area != "000"
                    && area != "666"
                    && !area.starts_with('9')
                    && &found[4..6] != "00"
                    && &found[7..] != "0000"
            }
            PiiKind::Ip => {
                found.contains('.') || (found.matches(':').count() >= 2 && found.parse::<Ipv6Addr>().is_ok())
            }
            PiiKind::Phone => {
                let digits = found.chars().filter(char::is_ascii_digit).count();
                (7..=15).contains(&digits) && !digit_run_continues(text, start, end)
            }
            PiiKind::Secret => true,
        }
    }
}

/// Whether more digits (possibly after one separator) sit right before `start` or after
/// `end`: then the match is a piece of a longer number, not a number of its own.
fn digit_run_continues(text: &str, start: usize, end: usize) -> bool {
    let before: Vec<char> = text[..start].chars().rev().take(2).collect();
    let after: Vec<char> = text[end..].chars().take(2).collect();
    let separator = |c: char| c == ' ' || c == '-' || c == '.';
    let joins = |near: &[char]| match near {
        [d, ..] if d.is_ascii_digit() => true,
        [s, d, ..] => separator(*s) && d.is_ascii_digit(),
        _ => false,
    };
    joins(&before) || joins(&after)
}

/// Whether an IBAN's country code and check digits (`DE89`) sit right before `at`: the
/// digits that follow belong to an account number (valid or not), not to a card.
fn after_iban_prefix(text: &str, at: usize) -> bool {
    let before = text[..at].trim_end_matches(' ');
    let prefix: Vec<char> = before.chars().rev().take(4).collect();
    prefix.len() == 4
        && prefix[0].is_ascii_digit()
        && prefix[1].is_ascii_digit()
        && prefix[2].is_ascii_uppercase()
        && prefix[3].is_ascii_uppercase()
}

/// Whether the whitespace-delimited word around `at` is a URL.
fn inside_url(text: &str, at: usize) -> bool {
    let word_start = text[..at].rfind(char::is_whitespace).map_or(0, |i| i + 1);
    text[word_start..at].contains("://")
}

fn luhn_ok(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn iban_checksum_ok(found: &str) -> bool {
    let compact: String = found.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut remainder: u32 = 0;
    for c in tail.chars().chain(head.chars()) {
        let value = match c.to_digit(36) {
            Some(value) => value,
            None => return false,
        };
        for digit in value.to_string().chars().filter_map(|d| d.to_digit(10)) {
            remainder = (remainder * 10 + digit) % 97;
        }
    }
    remainder == 1
}

/// The placeholders of one request: the same value always gets the same placeholder.
#[derive(Debug, Default)]
pub struct Session {
    by_value: HashMap<String, String>,
    originals: HashMap<String, String>,
    counters: HashMap<PiiKind, u32>,
}

impl Session {
    /// Replaces every item of `kinds` in `text` with its placeholder.
    pub fn mask(&mut self, kinds: &[PiiKind], text: &str) -> String {
        let mut spans: Vec<(usize, usize, PiiKind)> = Vec::new();
        for kind in PiiKind::ALL.iter().copied().filter(|k| kinds.contains(k)) {
            for found in kind.pattern().find_iter(text) {
                let (start, end) = (found.start(), found.end());
                let overlaps = spans.iter().any(|&(s, e, _)| start < e && s < end);
                if !overlaps && kind.confirms(text, start, end) {
                    spans.push((start, end, kind));
                }
            }
        }
        if spans.is_empty() {
            return text.to_owned();
        }
        spans.sort_unstable_by_key(|&(start, _, _)| start);
        let mut masked = String::with_capacity(text.len());
        let mut at = 0;
        for (start, end, kind) in spans {
            masked.push_str(&text[at..start]);
            masked.push_str(&self.placeholder(kind, &text[start..end]));
            at = end;
        }
        masked.push_str(&text[at..]);
        masked
    }

    fn placeholder(&mut self, kind: PiiKind, value: &str) -> String {
        if let Some(existing) = self.by_value.get(value) {
            return existing.clone();
        }
        let counter = self.counters.entry(kind).or_insert(0);
        *counter += 1;
        let placeholder = format!("<{}_{}>", kind.label(), counter);
        self.by_value.insert(value.to_owned(), placeholder.clone());
        self.originals.insert(placeholder.clone(), value.to_owned());
        placeholder
    }

    /// How many distinct items of each kind were masked.
    pub fn counts(&self) -> impl Iterator<Item = (PiiKind, u32)> + '_ {
        self.counters.iter().map(|(kind, count)| (*kind, *count))
    }

    pub fn is_empty(&self) -> bool {
        self.originals.is_empty()
    }

    /// Puts the original values back in place of their placeholders.
    pub fn restore(&self, text: &str) -> String {
        static PLACEHOLDER: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r"<[A-Z_]+_\d+>").expect("placeholder pattern"));
        PLACEHOLDER
            .replace_all(text, |found: &regex::Captures<'_>| {
                let placeholder = &found[0];
                self.originals
                    .get(placeholder)
                    .cloned()
                    .unwrap_or_else(|| placeholder.to_owned())
            })
            .into_owned()
    }

    /// Restores a piece of a streamed completion: a placeholder cut at the end of `text` is
    /// held in `carry` until the next piece completes it.
    pub fn restore_streamed(&self, carry: &mut String, text: &str) -> String {
        carry.push_str(text);
        let hold_from = carry
            .rfind('<')
            .filter(|&open| {
                !carry[open..].contains('>')
                    && carry[open + 1..]
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            })
            .filter(|&open| carry.len() - open <= 32);
        let ready: String = match hold_from {
            Some(open) => {
                let held = carry.split_off(open);
                std::mem::replace(carry, held)
            }
            None => std::mem::take(carry),
        };
        self.restore(&ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(kinds: &[PiiKind], text: &str) -> String {
        Session::default().mask(kinds, text)
    }

    #[test]
    fn each_kind_is_masked() {
        let all = PiiKind::ALL;
        let cases = [
            ("mail jane.doe@example.com now", "mail <EMAIL_1> now"),
            ("card 4111 1111 1111 1111 ok", "card <CREDIT_CARD_1> ok"),
            ("iban DE89 3704 0044 0532 0130 00 ok", "iban <IBAN_1> ok"),
            ("ssn 123-45-6789 ok", "ssn <SSN_1> ok"),
            ("call +1 415-555-2671 ok", "call <PHONE_1> ok"),
            ("host 192.168.10.20 ok", "host <IP_1> ok"),
            ("v6 2001:db8::8a2e:370:7334 ok", "v6 <IP_1> ok"),
            ("aws AKIAIOSFODNN7EXAMPLE ok", "aws <SECRET_1> ok"),
            ("token sk-abcdefghijklmnopqrstuvwx ok", "token <SECRET_1> ok"),
        ];
        for (input, expected) in cases {
            assert_eq!(masked(&all, input), expected, "{input}");
        }
    }

    #[test]
    fn near_misses_are_left_alone() {
        let all = PiiKind::ALL;
        for text in [
            "order 4111 1111 1111 1112 failed Luhn",
            "see https://example.com/users/jane.doe@example.com/profile",
            "iban DE89 3704 0044 0532 0130 01 bad checksum",
            "ssn 000-12-3456 and 666-12-3456 are never issued",
            "version 1.2.3 and 999.1.1.1",
            "time 12:30:45",
        ] {
            assert_eq!(masked(&all, text), text, "{text}");
        }
    }

    #[test]
    fn only_listed_kinds_are_masked_and_values_keep_their_placeholder() {
        let mut session = Session::default();
        let text = "a@example.com, b@example.com, a@example.com from 10.0.0.1";
        let out = session.mask(&[PiiKind::Email], text);
        assert_eq!(out, "<EMAIL_1>, <EMAIL_2>, <EMAIL_1> from 10.0.0.1");
        assert_eq!(
            session.restore("reply to <EMAIL_2> and <EMAIL_9>"),
            "reply to b@example.com and <EMAIL_9>"
        );
        assert_eq!(session.counts().collect::<Vec<_>>(), [(PiiKind::Email, 2)]);
    }

    #[test]
    fn placeholders_split_across_stream_pieces_are_restored() {
        let mut session = Session::default();
        session.mask(&[PiiKind::Email], "jane@example.com");
        let mut carry = String::new();
        let pieces = ["Write to <EM", "AIL", "_1> today", "<"];
        let restored: String = pieces
            .iter()
            .map(|p| session.restore_streamed(&mut carry, p))
            .collect();
        assert_eq!(restored, "Write to jane@example.com today");
        assert_eq!(carry, "<", "an unfinished '<' waits for more");
    }
}
