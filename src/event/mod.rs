//! The input contract (SPEC §1): parsing and validating member events.
//!
//! Parsing borrows from the payload wherever the JSON has no escapes, so the
//! hot path allocates nothing for a well-formed event. Every way an event can
//! be rejected has its own [`RejectReason`], whose label is stable: it is used
//! in the dead-letter header and as a metric label.

mod fast;
pub mod partitioner;
mod raw;

use std::borrow::Cow;
use std::fmt;

use raw::{Field, RawEvent};

/// Where the fast path answers for `text`, whether serde_json reads it into
/// the same event (`None`: the fast path declined and serde_json decides
/// alone). For the `event_parse` fuzz target, which holds the two paths to
/// one answer on inputs no generator writes.
#[doc(hidden)]
pub fn fast_path_agrees_with_serde(text: &str) -> Option<bool> {
    let fast = fast::parse(text)?;
    Some(Ok(fast) == raw::parse_with_serde(text))
}

/// Milliseconds in a day; event time is kept as epoch milliseconds throughout.
pub const DAY_MS: i64 = 86_400_000;

/// The latest event time churnwatch takes: 2^43 ms after the epoch, in
/// September 2248. Later ones are refused as bad input whatever
/// `time.future_skew_ms` allows, so that a member's times plus any
/// detector's threshold stay far inside `i64` (a member value holding a
/// later time is damage, see `MemberState::decode`).
pub const MAX_TS_MS: i64 = 1 << 43;

/// The five event types of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum EventKind {
    Visit = 0,
    EmailSend = 1,
    EmailOpen = 2,
    CheckIn = 3,
    Purchase = 4,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::Visit,
        EventKind::EmailSend,
        EventKind::EmailOpen,
        EventKind::CheckIn,
        EventKind::Purchase,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Visit => "visit",
            EventKind::EmailSend => "email_send",
            EventKind::EmailOpen => "email_open",
            EventKind::CheckIn => "check_in",
            EventKind::Purchase => "purchase",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        Some(match s {
            "visit" => EventKind::Visit,
            "email_send" => EventKind::EmailSend,
            "email_open" => EventKind::EmailOpen,
            "check_in" => EventKind::CheckIn,
            "purchase" => EventKind::Purchase,
            _ => return None,
        })
    }

    /// Whether the event shows the member doing something. An `email_send`
    /// is the retailer acting, not the member, so it never makes a member
    /// look active.
    pub fn is_member_activity(self) -> bool {
        !matches!(self, EventKind::EmailSend)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for EventKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <Cow<'de, str>>::deserialize(d)?;
        EventKind::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown event type `{s}`, expected one of visit, email_send, email_open, check_in, purchase"
            ))
        })
    }
}

/// A validated event. Strings borrow from the payload when they can.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    pub event_id: Cow<'a, str>,
    pub member_id: Cow<'a, str>,
    pub kind: EventKind,
    /// Event time, epoch milliseconds.
    pub ts_ms: i64,
    /// Order value; 0 for everything but purchases.
    pub amount: f64,
    /// Number of product categories in the order (0 when not given).
    pub categories: u16,
}

/// Why an event was rejected. The label (`as_str`) is part of the interface:
/// it appears in the `churnwatch.error` header and the rejection metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    Oversize,
    InvalidUtf8,
    InvalidJson,
    NotObject,
    MissingField,
    EmptyField,
    FieldTooLong,
    WrongType,
    UnknownType,
    BadTs,
    FutureTs,
    MissingAmount,
    NegativeAmount,
}

impl RejectReason {
    pub const ALL: [RejectReason; 13] = [
        RejectReason::Oversize,
        RejectReason::InvalidUtf8,
        RejectReason::InvalidJson,
        RejectReason::NotObject,
        RejectReason::MissingField,
        RejectReason::EmptyField,
        RejectReason::FieldTooLong,
        RejectReason::WrongType,
        RejectReason::UnknownType,
        RejectReason::BadTs,
        RejectReason::FutureTs,
        RejectReason::MissingAmount,
        RejectReason::NegativeAmount,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Oversize => "oversize",
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::NotObject => "not_object",
            RejectReason::MissingField => "missing_field",
            RejectReason::EmptyField => "empty_field",
            RejectReason::FieldTooLong => "field_too_long",
            RejectReason::WrongType => "wrong_type",
            RejectReason::UnknownType => "unknown_type",
            RejectReason::BadTs => "bad_ts",
            RejectReason::FutureTs => "future_ts",
            RejectReason::MissingAmount => "missing_amount",
            RejectReason::NegativeAmount => "negative_amount",
        }
    }
}

/// A rejection: the reason plus a specific, lowercase message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason_label}: {detail}", reason_label = .reason.as_str())]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejection {
    fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

/// Limits applied while validating; built once from the config.
#[derive(Debug, Clone)]
pub struct Validator {
    pub max_event_bytes: usize,
    pub future_skew_ms: i64,
}

impl Default for Validator {
    fn default() -> Self {
        Validator {
            max_event_bytes: 64 * 1024,
            future_skew_ms: DAY_MS,
        }
    }
}

const MAX_ID_CHARS: usize = 128;

impl Validator {
    /// Parses and validates one message. `wall_now_ms` bounds how far in the
    /// future an event may claim to be.
    pub fn parse<'a>(&self, payload: &'a [u8], wall_now_ms: i64) -> Result<Event<'a>, Rejection> {
        if payload.len() > self.max_event_bytes {
            return Err(Rejection::new(
                RejectReason::Oversize,
                format!(
                    "event is {} bytes, more than the maximum of {}",
                    payload.len(),
                    self.max_event_bytes
                ),
            ));
        }
        let text = std::str::from_utf8(payload).map_err(|e| {
            Rejection::new(
                RejectReason::InvalidUtf8,
                format!("payload is not utf-8: {e}"),
            )
        })?;
        let raw = raw::parse(text)?;
        self.validate(raw, wall_now_ms)
    }

    fn validate<'a>(&self, raw: RawEvent<'a>, wall_now_ms: i64) -> Result<Event<'a>, Rejection> {
        let event_id = required_id("event_id", raw.event_id)?;
        let member_id = required_id("member_id", raw.member_id)?;
        let kind = match required("type", raw.kind)? {
            Field::Str(s) => EventKind::parse(&s).ok_or_else(|| {
                Rejection::new(
                    RejectReason::UnknownType,
                    format!("unknown event type `{}`", truncate(&s)),
                )
            })?,
            other => return Err(wrong_type("type", "a string", &other)),
        };
        let ts_ms = parse_ts(required("ts", raw.ts)?)?;
        if ts_ms > wall_now_ms.saturating_add(self.future_skew_ms) {
            return Err(Rejection::new(
                RejectReason::FutureTs,
                format!(
                    "field `ts` is {} s ahead of the wall clock, more than the allowed skew of {} s",
                    (ts_ms - wall_now_ms) / 1000,
                    self.future_skew_ms / 1000
                ),
            ));
        }
        let amount = match raw.amount {
            Some(f) => match f.as_number() {
                Some(n) if n < 0.0 => {
                    return Err(Rejection::new(
                        RejectReason::NegativeAmount,
                        format!("field `amount` is negative ({n})"),
                    ))
                }
                Some(n) => n,
                None => return Err(wrong_type("amount", "a number", &f)),
            },
            None if kind == EventKind::Purchase => {
                return Err(Rejection::new(
                    RejectReason::MissingAmount,
                    "purchase event lacks the required field `amount`",
                ))
            }
            None => 0.0,
        };
        optional_string("currency", &raw.currency)?;
        optional_string("order_id", &raw.order_id)?;
        optional_string("campaign_id", &raw.campaign_id)?;
        optional_string("channel", &raw.channel)?;
        if let Some(points) = &raw.points {
            if points.as_number().is_none() {
                return Err(wrong_type("points", "a number", points));
            }
        }
        let categories = match &raw.categories {
            None => 0,
            Some(Field::Array {
                len,
                all_strings: true,
            }) => (*len).min(u16::MAX as usize) as u16,
            Some(other) => return Err(wrong_type("categories", "an array of strings", other)),
        };
        Ok(Event {
            event_id,
            member_id,
            kind,
            ts_ms,
            amount: if kind == EventKind::Purchase {
                amount
            } else {
                0.0
            },
            categories,
        })
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn required<'a>(name: &str, f: Option<Field<'a>>) -> Result<Field<'a>, Rejection> {
    f.ok_or_else(|| {
        Rejection::new(
            RejectReason::MissingField,
            format!("missing required field `{name}`"),
        )
    })
}

fn required_id<'a>(name: &str, f: Option<Field<'a>>) -> Result<Cow<'a, str>, Rejection> {
    match required(name, f)? {
        Field::Str(s) if s.is_empty() => Err(Rejection::new(
            RejectReason::EmptyField,
            format!("field `{name}` is empty"),
        )),
        // A string has no more characters than bytes: only one longer in
        // bytes than the limit is counted (counting was 1% of the engine
        // thread, for ids that are nearly all short ASCII).
        Field::Str(s) if s.len() > MAX_ID_CHARS && s.chars().count() > MAX_ID_CHARS => {
            Err(Rejection::new(
                RejectReason::FieldTooLong,
                format!("field `{name}` is longer than {MAX_ID_CHARS} characters"),
            ))
        }
        Field::Str(s) => Ok(s),
        other => Err(wrong_type(name, "a string", &other)),
    }
}

fn optional_string(name: &str, f: &Option<Field<'_>>) -> Result<(), Rejection> {
    match f {
        None | Some(Field::Str(_)) => Ok(()),
        Some(other) => Err(wrong_type(name, "a string", other)),
    }
}

fn wrong_type(name: &str, expected: &str, got: &Field<'_>) -> Rejection {
    Rejection::new(
        RejectReason::WrongType,
        format!("field `{name}` must be {expected}, got {}", got.type_name()),
    )
}

/// `ms` if it is not after [`MAX_TS_MS`]; otherwise what is wrong with it,
/// to follow the name of the field or flag that held it. Every time
/// churnwatch reads from outside (events, command-line flags) goes through
/// it.
pub fn not_after_latest(ms: i64) -> Result<i64, String> {
    if ms > MAX_TS_MS {
        return Err(format!(
            "is later than {}, the latest time churnwatch takes",
            format_rfc3339_ms(MAX_TS_MS)
        ));
    }
    Ok(ms)
}

fn parse_ts(f: Field<'_>) -> Result<i64, Rejection> {
    not_after_latest(parse_epoch_ms(f)?)
        .map_err(|why| Rejection::new(RejectReason::BadTs, format!("field `ts` {why}")))
}

fn parse_epoch_ms(f: Field<'_>) -> Result<i64, Rejection> {
    match f {
        Field::Int(ms) if ms >= 0 => Ok(ms),
        Field::Int(ms) => Err(Rejection::new(
            RejectReason::BadTs,
            format!("field `ts` is a negative epoch time ({ms})"),
        )),
        Field::Str(s) => parse_rfc3339_ms(&s).ok_or_else(|| {
            Rejection::new(
                RejectReason::BadTs,
                format!(
                    "field `ts` is not rfc 3339 with an offset nor epoch milliseconds: `{}`",
                    truncate(&s)
                ),
            )
        }),
        other => Err(wrong_type(
            "ts",
            "an rfc 3339 string or integer epoch milliseconds",
            &other,
        )),
    }
}

/// Parses RFC 3339 with an explicit offset into epoch milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
        .filter(|ms| *ms >= 0)
}

/// Formats epoch milliseconds as RFC 3339 in UTC (`2026-03-01T12:00:00.000Z`).
pub fn format_rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests;
