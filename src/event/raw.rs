//! The untyped first pass over an event: every documented field is captured
//! with whatever JSON type it has, so validation can name the field and the
//! type it got instead of surfacing a generic serde message.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::{RejectReason, Rejection};

/// One field's value, typed only as far as validation needs.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Field<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Num(f64),
    Bool,
    Array { len: usize, all_strings: bool },
    Object,
    Null,
}

impl Field<'_> {
    pub(super) fn type_name(&self) -> &'static str {
        match self {
            Field::Str(_) => "a string",
            Field::Int(_) | Field::Num(_) => "a number",
            Field::Bool => "a boolean",
            Field::Array { .. } => "an array",
            Field::Object => "an object",
            Field::Null => "null",
        }
    }

    pub(super) fn as_number(&self) -> Option<f64> {
        match *self {
            Field::Int(i) => Some(i as f64),
            Field::Num(n) if n.is_finite() => Some(n),
            _ => None,
        }
    }
}

/// The documented fields; anything else in the object is skipped unread.
/// An explicit `null` counts as absent.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub(super) struct RawEvent<'a> {
    #[serde(borrow, default)]
    pub event_id: Option<Field<'a>>,
    #[serde(borrow, default)]
    pub member_id: Option<Field<'a>>,
    #[serde(borrow, default, rename = "type")]
    pub kind: Option<Field<'a>>,
    #[serde(borrow, default)]
    pub ts: Option<Field<'a>>,
    #[serde(borrow, default)]
    pub amount: Option<Field<'a>>,
    #[serde(borrow, default)]
    pub currency: Option<Field<'a>>,
    #[serde(borrow, default)]
    pub order_id: Option<Field<'a>>,
    #[serde(borrow, default)]
    pub categories: Option<Field<'a>>,
    #[serde(borrow, default)]
    pub campaign_id: Option<Field<'a>>,
    #[serde(borrow, default)]
    pub channel: Option<Field<'a>>,
    #[serde(borrow, default)]
    pub points: Option<Field<'a>>,
}

pub(super) fn parse(text: &str) -> Result<RawEvent<'_>, Rejection> {
    match super::fast::parse(text) {
        Some(raw) => Ok(raw),
        None => parse_with_serde(text),
    }
}

/// [`parse`] by serde_json alone: every event the fast path is not sure
/// of, and every rejection's wording.
pub(super) fn parse_with_serde(text: &str) -> Result<RawEvent<'_>, Rejection> {
    if !text.trim_start().starts_with('{') {
        // serde would read a JSON array positionally into the struct.
        return Err(match serde_json::from_str::<de::IgnoredAny>(text) {
            Ok(_) => Rejection::new(RejectReason::NotObject, "event is not a json object"),
            Err(e) => Rejection::new(RejectReason::InvalidJson, format!("invalid json: {e}")),
        });
    }
    serde_json::from_str::<RawEvent<'_>>(text).map_err(|e| {
        let is_object = text.trim_start().starts_with('{');
        if e.is_data() && !is_object {
            Rejection::new(RejectReason::NotObject, "event is not a json object")
        } else {
            Rejection::new(RejectReason::InvalidJson, format!("invalid json: {e}"))
        }
    })
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FieldVisitor(std::marker::PhantomData))
    }
}

struct FieldVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for FieldVisitor<'a> {
    type Value = Field<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any json value")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Field::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Field::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Field::Str(Cow::Owned(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Field::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(i64::try_from(v).map_or(Field::Num(v as f64), Field::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Field::Num(v))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Field::Bool)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Field::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let (mut len, mut all_strings) = (0, true);
        while let Some(item) = seq.next_element::<Field<'a>>()? {
            len += 1;
            all_strings &= matches!(item, Field::Str(_));
        }
        Ok(Field::Array { len, all_strings })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Field::Object)
    }
}
