//! JSON bytes exactly as JavaScript writes them.
//!
//! LicenseSpring's Node.js SDK verifies `LicenseSignature` over
//! `JSON.stringify(JSON.parse(body))`, not over the bytes it received, so a
//! signed body must be a fixed point of that round trip: compact separators,
//! object keys in the order JavaScript keeps them (array-index keys such as
//! `"7"` first in ascending numeric order, then the others as sent), numbers
//! as `Number.prototype.toString` prints them (`1` not `1.0`, `1e+21`, big
//! integers rounded to the nearest double, as `JSON.parse` reads them), and
//! non-ASCII characters unescaped. The Python SDK verifies the raw bytes and
//! re-serialises offline answers in their sent order, so this form satisfies
//! both.

use std::io;

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::ser::Formatter;
use serde_json::Value;

/// Largest integer a JavaScript number holds exactly (2^53).
const SAFE_INTEGER_MAX: u64 = 1 << 53;
/// Array-index property keys are the integers below 2^32 - 1 (ECMA-262 §6.1.7).
const ARRAY_INDEX_MAX: u64 = (1 << 32) - 2;

/// `value` written as `JSON.stringify(JSON.parse(..))` would write it.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(512);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, JsFormatter);
    value.serialize(&mut ser)?;
    Ok(out)
}

/// A JSON value serialised with JavaScript's key order (see the module docs);
/// numbers are printed by [`JsFormatter`] when written through [`to_vec`].
pub struct Js<'a>(pub &'a Value);

impl Serialize for Js<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                let mut indexed: Vec<(u64, &String, &Value)> = m
                    .iter()
                    .filter_map(|(k, v)| array_index(k).map(|i| (i, k, v)))
                    .collect();
                indexed.sort_unstable_by_key(|e| e.0);
                for (_, k, v) in &indexed {
                    map.serialize_entry(k, &Js(v))?;
                }
                for (k, v) in m.iter().filter(|(k, _)| array_index(k).is_none()) {
                    map.serialize_entry(k, &Js(v))?;
                }
                map.end()
            }
            Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(&Js(v))?;
                }
                seq.end()
            }
            other => other.serialize(s),
        }
    }
}

/// `Some(n)` when `key` is the canonical decimal form of an array index.
fn array_index(key: &str) -> Option<u64> {
    let b = key.as_bytes();
    if b.is_empty() || b.len() > 10 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if b.len() > 1 && b[0] == b'0' {
        return None;
    }
    key.parse::<u64>().ok().filter(|&n| n <= ARRAY_INDEX_MAX)
}

/// serde_json's compact formatter with JavaScript's numbers.
pub struct JsFormatter;

impl Formatter for JsFormatter {
    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        w.write_all(js_number(value).as_bytes())
    }
    fn write_f32<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        w.write_all(js_number(value as f64).as_bytes())
    }
    fn write_u64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: u64) -> io::Result<()> {
        if value <= SAFE_INTEGER_MAX {
            return w.write_all(value.to_string().as_bytes());
        }
        w.write_all(js_number(value as f64).as_bytes())
    }
    fn write_i64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: i64) -> io::Result<()> {
        if value.unsigned_abs() <= SAFE_INTEGER_MAX {
            return w.write_all(value.to_string().as_bytes());
        }
        w.write_all(js_number(value as f64).as_bytes())
    }
    fn write_u128<W: ?Sized + io::Write>(&mut self, w: &mut W, value: u128) -> io::Result<()> {
        w.write_all(js_number(value as f64).as_bytes())
    }
    fn write_i128<W: ?Sized + io::Write>(&mut self, w: &mut W, value: i128) -> io::Result<()> {
        w.write_all(js_number(value as f64).as_bytes())
    }
}

/// `Number.prototype.toString()` of `x` (ECMA-262 Number::toString, radix
/// 10); `null` for NaN and infinities, as `JSON.stringify` writes them.
pub fn js_number(x: f64) -> String {
    if !x.is_finite() {
        return "null".into();
    }
    if x == 0.0 {
        return "0".into();
    }
    // Rust prints the shortest digits that read back as `x`, as ECMAScript
    // asks: "d.ddde±N" gives the digits s (k of them) and n = N + 1.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let k = digits.len() as i32;
    let n = exp.parse::<i32>().unwrap_or(0) + 1;
    let mut out = String::with_capacity(24);
    if x < 0.0 {
        out.push('-');
    }
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if n - 1 < 0 { '-' } else { '+' });
        out.push_str(&(n - 1).abs().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_print_as_javascript_prints_them() {
        for (x, js) in [
            (1.0, "1"),
            (-1.5, "-1.5"),
            (0.1, "0.1"),
            (123.456, "123.456"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (1.5e-7, "1.5e-7"),
            (0.000001, "0.000001"),
            (1e-7, "1e-7"),
            (2.5e300, "2.5e+300"),
            (-0.0, "0"),
            (9007199254740993.0, "9007199254740992"),
            (f64::NAN, "null"),
        ] {
            assert_eq!(js_number(x), js, "{x}");
        }
    }

    #[test]
    fn keys_and_numbers_round_trip_as_in_javascript() {
        let v = json!({"b": 1.0, "10": [2.50, 18446744073709551615u64], "9": "é😀\n", "a": {"01": 1, "1": 2}});
        let out = String::from_utf8(to_vec(&Js(&v)).expect("serialise")).expect("utf8");
        assert_eq!(
            out,
            r#"{"9":"é😀\n","10":[2.5,18446744073709552000],"a":{"1":2,"01":1},"b":1}"#
        );
    }
}
