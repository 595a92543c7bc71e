//! The fast path of [`super::raw::parse`]: events as producers write them
//! (one flat object, strings without escapes, plain numbers, arrays of
//! scalars) read in one pass without serde's per-field machinery.
//!
//! It answers only where it is certain to say what serde_json says: any
//! escape, nested object or array, negative or long number, repeated
//! field, stray character or anything else it does not know gives `None`,
//! and the caller parses the event with serde_json, which also words the
//! rejection. Numbers with a fraction or an exponent are handed to
//! serde_json itself, so an amount is the same `f64` either way. A test
//! holds the two paths to the same result on generated and mangled events.

use std::borrow::Cow;

use super::raw::{Field, RawEvent};

/// `text` read as serde_json would read it into a [`RawEvent`], or `None`
/// where this path is not sure.
pub(super) fn parse(text: &str) -> Option<RawEvent<'_>> {
    let mut p = Reader {
        text,
        bytes: text.as_bytes(),
        at: 0,
    };
    let mut raw = RawEvent::default();
    p.skip_ws();
    p.expect(b'{')?;
    p.skip_ws();
    if !p.eat(b'}') {
        loop {
            p.skip_ws();
            let key = p.plain_string()?;
            p.skip_ws();
            p.expect(b':')?;
            p.skip_ws();
            let value = p.value()?;
            let slot = match key {
                "event_id" => &mut raw.event_id,
                "member_id" => &mut raw.member_id,
                "type" => &mut raw.kind,
                "ts" => &mut raw.ts,
                "amount" => &mut raw.amount,
                "currency" => &mut raw.currency,
                "order_id" => &mut raw.order_id,
                "categories" => &mut raw.categories,
                "campaign_id" => &mut raw.campaign_id,
                "channel" => &mut raw.channel,
                "points" => &mut raw.points,
                _ => {
                    p.skip_ws();
                    if p.eat(b',') {
                        continue;
                    }
                    break;
                }
            };
            // serde rejects a field given twice (even as null): its words.
            if slot.replace(value).is_some() {
                return None;
            }
            p.skip_ws();
            if !p.eat(b',') {
                break;
            }
        }
        p.expect(b'}')?;
    }
    p.skip_ws();
    if p.at != p.bytes.len() {
        return None;
    }
    // An explicit null counts as absent, as `Option<Field>` reads it.
    for f in [
        &mut raw.event_id,
        &mut raw.member_id,
        &mut raw.kind,
        &mut raw.ts,
        &mut raw.amount,
        &mut raw.currency,
        &mut raw.order_id,
        &mut raw.categories,
        &mut raw.campaign_id,
        &mut raw.channel,
        &mut raw.points,
    ] {
        if matches!(f, Some(Field::Null)) {
            *f = None;
        }
    }
    Some(raw)
}

struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.bytes.get(self.at) == Some(&b);
        self.at += usize::from(hit);
        hit
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        self.eat(b).then_some(())
    }

    /// A string with no escape and no control character (which JSON
    /// forbids unescaped), borrowed from the text.
    fn plain_string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        let len = self.bytes[start..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if self.bytes[start + len] != b'"' {
            return None;
        }
        self.at = start + len + 1;
        // Quote bytes never fall inside a multi-byte character.
        Some(&self.text[start..start + len])
    }

    fn value(&mut self) -> Option<Field<'a>> {
        match *self.bytes.get(self.at)? {
            b'"' => Some(Field::Str(Cow::Borrowed(self.plain_string()?))),
            b'[' => self.array(),
            b't' => self.word("true", Field::Bool),
            b'f' => self.word("false", Field::Bool),
            b'n' => self.word("null", Field::Null),
            b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn word(&mut self, word: &str, field: Field<'a>) -> Option<Field<'a>> {
        self.bytes[self.at..].starts_with(word.as_bytes()).then(|| {
            self.at += word.len();
            field
        })
    }

    /// An array of strings, numbers, booleans or nulls: only its length and
    /// whether every element is a string matter.
    fn array(&mut self) -> Option<Field<'a>> {
        self.expect(b'[')?;
        self.skip_ws();
        let (mut len, mut all_strings) = (0, true);
        if !self.eat(b']') {
            loop {
                self.skip_ws();
                if matches!(self.bytes.get(self.at), Some(b'[' | b'{')) {
                    return None;
                }
                all_strings &= matches!(self.value()?, Field::Str(_));
                len += 1;
                self.skip_ws();
                if !self.eat(b',') {
                    break;
                }
            }
            self.expect(b']')?;
        }
        Some(Field::Array { len, all_strings })
    }

    /// A non-negative JSON number. Integers of up to 18 digits are read
    /// here (as serde_json reads them: a `u64`, an `i64` field); one with a
    /// fraction or an exponent is given to serde_json, so its `f64` is
    /// serde_json's to the bit.
    fn number(&mut self) -> Option<Field<'a>> {
        let start = self.at;
        let digits = self.digits();
        if digits == 0 || (digits > 1 && self.bytes[start] == b'0') {
            return None;
        }
        let mut integer = true;
        if self.eat(b'.') {
            integer = false;
            if self.digits() == 0 {
                return None;
            }
        }
        if matches!(self.bytes.get(self.at), Some(b'e' | b'E')) {
            integer = false;
            self.at += 1;
            if matches!(self.bytes.get(self.at), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        let token = &self.text[start..self.at];
        if integer {
            if digits > 18 {
                return None;
            }
            return token.parse::<i64>().ok().map(Field::Int);
        }
        serde_json::from_str::<f64>(token).ok().map(Field::Num)
    }

    fn digits(&mut self) -> usize {
        let n = self.bytes[self.at..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        self.at += n;
        n
    }
}
