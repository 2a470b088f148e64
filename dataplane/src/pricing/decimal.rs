//! Exact decimal USD amounts, as written in price tables.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// pico-USD per USD.
const PICO_EXPONENT: i64 = 12;
/// Digits beyond this cannot matter for a price and would not fit the mantissa.
const MAX_SIGNIFICANT_DIGITS: usize = 38;
/// Far beyond any price; keeps formatting and arithmetic bounded.
const MAX_EXPONENT: i64 = 10_000;

/// Why a price value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceValueError {
    #[error("expected a number or a decimal string")]
    NotANumber,
    #[error("{0:?} is not a decimal number")]
    Syntax(String),
    #[error("more than {MAX_SIGNIFICANT_DIGITS} significant digits")]
    TooManyDigits,
    #[error("exponent out of range")]
    ExponentOutOfRange,
    #[error("price {0} is negative")]
    Negative(UsdPerToken),
    #[error("price {0} is not a whole number of pico-USD (1e-12 USD)")]
    TooPrecise(UsdPerToken),
    #[error("price {0} is too large")]
    TooLarge(UsdPerToken),
}

/// An exact decimal amount of USD, as price tables write it (LiteLLM prices are
/// USD per token, e.g. `3e-06`). Parsed from the decimal text, never through
/// floating point, and converted to integer pico-USD by
/// [`UsdPerToken::to_pico_usd`], which rejects negative amounts and amounts finer
/// than 1 pico-USD.
///
/// Serde: accepts a JSON/YAML number or a string holding a decimal. A string is
/// read exactly. A number that reaches it as a float (serde data formats hand
/// floats over as `f64`) is read as the shortest decimal that round-trips that
/// float, which is exactly the written number for anything with up to 15
/// significant digits; write a price as a string to be exact beyond that.
/// [`crate::pricing::PriceTable::from_litellm_json`] always reads the raw text.
/// Serializes as a number when that number reads back exactly, else as a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UsdPerToken {
    negative: bool,
    /// Without trailing zeros (normalized), so equal values compare equal.
    mantissa: u128,
    exponent: i32,
}

impl UsdPerToken {
    pub const ZERO: Self = Self {
        negative: false,
        mantissa: 0,
        exponent: 0,
    };

    /// `mantissa × 10^exponent` USD.
    fn new(negative: bool, mut mantissa: u128, mut exponent: i64) -> Result<Self, PriceValueError> {
        if mantissa == 0 {
            return Ok(Self::ZERO);
        }
        while mantissa % 10 == 0 {
            mantissa /= 10;
            exponent += 1;
        }
        if exponent.abs() > MAX_EXPONENT {
            return Err(PriceValueError::ExponentOutOfRange);
        }
        let exponent = i32::try_from(exponent).map_err(|_| PriceValueError::ExponentOutOfRange)?;
        Ok(Self {
            negative,
            mantissa,
            exponent,
        })
    }

    /// An amount given in pico-USD.
    pub fn from_pico_usd(pico: u64) -> Self {
        Self::new(false, u128::from(pico), -PICO_EXPONENT).unwrap_or(Self::ZERO)
    }

    /// The amount in integer pico-USD, if it is one exactly.
    pub fn to_pico_usd(&self) -> Result<u64, PriceValueError> {
        if self.mantissa == 0 {
            return Ok(0);
        }
        if self.negative {
            return Err(PriceValueError::Negative(*self));
        }
        let shift = i64::from(self.exponent) + PICO_EXPONENT;
        // Normalized: a negative shift leaves a fraction of a pico-USD.
        let shift = u32::try_from(shift).map_err(|_| PriceValueError::TooPrecise(*self))?;
        10u128
            .checked_pow(shift)
            .and_then(|scale| scale.checked_mul(self.mantissa))
            .and_then(|pico| u64::try_from(pico).ok())
            .ok_or(PriceValueError::TooLarge(*self))
    }

    /// `amount × self`, with `self` read as a plain factor (e.g. LiteLLM's
    /// `regional_endpoint_uplift_multiplier` 1.1), rounded up to a whole unit and
    /// saturating at `u64::MAX`: a scaled price is never rounded down. Exact: no
    /// floating point. A negative factor gives 0 (the caller rejects those first).
    pub fn scale_ceil(&self, amount: u64) -> u64 {
        if self.negative || self.mantissa == 0 || amount == 0 {
            return 0;
        }
        let Some(product) = u128::from(amount).checked_mul(self.mantissa) else {
            return u64::MAX;
        };
        let scaled = match u32::try_from(self.exponent) {
            Ok(up) => 10u128
                .checked_pow(up)
                .and_then(|scale| product.checked_mul(scale)),
            // A divisor beyond u128 exceeds any product: the result is a fraction, so 1.
            Err(_) => Some(
                10u128
                    .checked_pow(self.exponent.unsigned_abs())
                    .map_or(1, |scale| product.div_ceil(scale)),
            ),
        };
        scaled.map_or(u64::MAX, |v| u64::try_from(v).unwrap_or(u64::MAX))
    }

    /// Whether the amount is below zero.
    pub fn is_negative(&self) -> bool {
        self.negative && self.mantissa != 0
    }

    /// Reads the raw text of a JSON value: a number, a string holding a decimal,
    /// or `null` (`Ok(None)`).
    pub fn from_json_text(raw: &str) -> Result<Option<Self>, PriceValueError> {
        let raw = raw.trim();
        match raw.as_bytes().first() {
            Some(b'"') => {
                let text: Cow<'_, str> =
                    serde_json::from_str(raw).map_err(|_| PriceValueError::NotANumber)?;
                text.parse().map(Some)
            }
            Some(b'-' | b'0'..=b'9') => raw.parse().map(Some),
            _ if raw == "null" => Ok(None),
            _ => Err(PriceValueError::NotANumber),
        }
    }

    /// Reads a parsed JSON value: a number (see the type's note on floats), a
    /// string holding a decimal, or `null` (`Ok(None)`).
    pub fn from_json_value(value: &serde_json::Value) -> Result<Option<Self>, PriceValueError> {
        match value {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::String(text) => text.parse().map(Some),
            serde_json::Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    Ok(Some(Self::from_integer(false, u)))
                } else if let Some(i) = n.as_i64() {
                    Ok(Some(Self::from_integer(i < 0, i.unsigned_abs())))
                } else {
                    n.as_f64().map(Self::from_f64).transpose()
                }
            }
            _ => Err(PriceValueError::NotANumber),
        }
    }

    fn from_integer(negative: bool, magnitude: u64) -> Self {
        Self::new(negative, u128::from(magnitude), 0).unwrap_or(Self::ZERO)
    }

    /// The shortest decimal that round-trips `value`.
    fn from_f64(value: f64) -> Result<Self, PriceValueError> {
        if !value.is_finite() {
            return Err(PriceValueError::NotANumber);
        }
        format!("{value:e}").parse()
    }

    /// The nearest `f64`, used only to decide how to serialize.
    fn to_f64(self) -> f64 {
        format!("{self:e}").parse().unwrap_or(f64::NAN)
    }
}

impl FromStr for UsdPerToken {
    type Err = PriceValueError;

    /// `[+-]digits[.digits][(e|E)[+-]digits]`, also `.5` and `5.`; surrounding
    /// whitespace is ignored.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || PriceValueError::Syntax(text.chars().take(64).collect());
        let s = text.trim();
        let (negative, s) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let (number, exponent) = match s.find(['e', 'E']) {
            Some(at) => (&s[..at], Some(&s[at + 1..])),
            None => (s, None),
        };
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        let all_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if int.len() + frac.len() == 0 || !all_digits(int) || !all_digits(frac) {
            return Err(syntax());
        }
        let exponent: i64 = match exponent {
            None => 0,
            Some(e) => {
                let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                if digits.is_empty() || !all_digits(digits) {
                    return Err(syntax());
                }
                let magnitude = digits.trim_start_matches('0');
                if magnitude.len() > 9 {
                    return Err(PriceValueError::ExponentOutOfRange);
                }
                let magnitude: i64 = magnitude.parse().unwrap_or(0);
                if e.starts_with('-') { -magnitude } else { magnitude }
            }
        };

        // Significant digits: leading zeros dropped, trailing zeros moved into
        // the exponent.
        let digits = int.bytes().chain(frac.bytes());
        let total = int.len() + frac.len();
        let leading = digits.clone().take_while(|&b| b == b'0').count();
        if leading == total {
            return Ok(Self::ZERO);
        }
        let trailing = int
            .bytes()
            .chain(frac.bytes())
            .rev()
            .take_while(|&b| b == b'0')
            .count();
        let significant = total - leading - trailing;
        if significant > MAX_SIGNIFICANT_DIGITS {
            return Err(PriceValueError::TooManyDigits);
        }
        let mut mantissa: u128 = 0;
        for b in digits.skip(leading).take(significant) {
            mantissa = mantissa * 10 + u128::from(b - b'0');
        }
        let frac_len = i64::try_from(frac.len()).map_err(|_| PriceValueError::ExponentOutOfRange)?;
        let trailing = i64::try_from(trailing).map_err(|_| PriceValueError::ExponentOutOfRange)?;
        Self::new(negative, mantissa, exponent - frac_len + trailing)
    }
}

impl fmt::Display for UsdPerToken {
    /// Plain decimal (`0.00000375`), or `{mantissa}e{exponent}` with `{:e}` or
    /// for extreme exponents.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.negative { "-" } else { "" };
        let digits = self.mantissa.to_string();
        let exponent = i64::from(self.exponent);
        if self.mantissa == 0 {
            return f.write_str("0");
        }
        if f.alternate() || !(-40..=40).contains(&exponent) {
            return write!(f, "{sign}{digits}e{exponent}");
        }
        if exponent >= 0 {
            let zeros = "0".repeat(exponent as usize);
            return write!(f, "{sign}{digits}{zeros}");
        }
        let point = digits.len() as i64 + exponent;
        if point > 0 {
            let (int, frac) = digits.split_at(point as usize);
            write!(f, "{sign}{int}.{frac}")
        } else {
            let zeros = "0".repeat((-point) as usize);
            write!(f, "{sign}0.{zeros}{digits}")
        }
    }
}

impl fmt::LowerExp for UsdPerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:#}")
    }
}

impl Serialize for UsdPerToken {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let float = self.to_f64();
        if Self::from_f64(float).as_ref() == Ok(self) {
            serializer.serialize_f64(float)
        } else {
            serializer.collect_str(self)
        }
    }
}

impl<'de> Deserialize<'de> for UsdPerToken {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UsdVisitor;

        impl serde::de::Visitor<'_> for UsdVisitor {
            type Value = UsdPerToken;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a USD amount: a number or a decimal string")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(UsdPerToken::from_integer(false, v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(UsdPerToken::from_integer(v < 0, v.unsigned_abs()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
                UsdPerToken::from_f64(v).map_err(E::custom)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(UsdVisitor)
    }
}

impl JsonSchema for UsdPerToken {
    fn schema_name() -> Cow<'static, str> {
        "UsdPerToken".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An exact USD amount (per token for *_cost_per_token fields), e.g. 3e-06 or \"0.000003\". A string is read exactly; must be a whole number of pico-USD (1e-12).",
            "anyOf": [
                { "type": "number", "minimum": 0 },
                { "type": "string", "pattern": "^\\s*\\+?([0-9]+\\.?[0-9]*|\\.[0-9]+)([eE][+-]?[0-9]+)?\\s*$" }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pico(text: &str) -> Result<u64, PriceValueError> {
        UsdPerToken::from_json_text(text)
            .map(|v| v.expect("not null"))
            .and_then(|v| v.to_pico_usd())
    }

    #[test]
    fn exact_decimal_parsing() {
        let cases: [(&str, u64); 20] = [
            ("3e-06", 3_000_000),
            ("3.75E-6", 3_750_000),
            ("3.75e-06", 3_750_000),
            ("0.0000003", 300_000),
            ("\"6e-06\"", 6_000_000),
            ("\" 0.000006 \"", 6_000_000),
            ("1.5e-05", 15_000_000),
            ("2.25e-05", 22_500_000),
            ("6.25e-06", 6_250_000),
            ("1e-12", 1),
            ("0.000000000001", 1),
            ("0", 0),
            ("0.0", 0),
            ("-0", 0),
            ("0e-999", 0),
            ("1", 1_000_000_000_000),
            ("0.01", 10_000_000_000),
            ("1.2e-05", 12_000_000),
            // Trailing zeros beyond 38 digits are not significant.
            ("0.000003000000000000000000000000000000000000000000000", 3_000_000),
            ("30000000000000000000000000000000000000000000e-49", 3_000_000),
        ];
        for (text, expected) in cases {
            assert_eq!(pico(text), Ok(expected), "{text}");
        }
        // A Python float artefact is read exactly, so it is rejected unless it is
        // a whole number of pico-USD.
        assert_eq!(
            pico("2.9999999999999997e-06"),
            Err(PriceValueError::TooPrecise(
                "2.9999999999999997e-6".parse().unwrap()
            ))
        );
        assert_eq!(pico("1.49999e-07"), Ok(149_999));
    }

    #[test]
    fn rejections() {
        assert!(matches!(pico("-3e-06"), Err(PriceValueError::Negative(_))));
        assert!(matches!(pico("\"-0.000003\""), Err(PriceValueError::Negative(_))));
        assert!(matches!(pico("1e-13"), Err(PriceValueError::TooPrecise(_))));
        assert!(matches!(
            pico("1.0000000000001e-06"),
            Err(PriceValueError::TooPrecise(_))
        ));
        assert!(matches!(pico("1e30"), Err(PriceValueError::TooLarge(_))));
        assert_eq!(pico("1e7"), Ok(10_000_000_000_000_000_000));
        assert!(matches!(pico("1e8"), Err(PriceValueError::TooLarge(_))));
        assert_eq!(pico("1e-99999999999"), Err(PriceValueError::ExponentOutOfRange));
        assert_eq!(
            pico(&format!("0.{}", "1".repeat(39))),
            Err(PriceValueError::TooManyDigits)
        );
        for not_a_number in ["true", "{}", "[]", "{\"a\":1}", ""] {
            assert_eq!(
                pico(not_a_number),
                Err(PriceValueError::NotANumber),
                "{not_a_number}"
            );
        }
        for bad in [
            "\"abc\"",
            "\"\"",
            "\"1e\"",
            "\".\"",
            "\"1.2.3\"",
            "\"0x10\"",
            "\"1e+\"",
            "\"--1\"",
            "\"١\"",
            "-",
        ] {
            assert!(
                matches!(pico(bad), Err(PriceValueError::Syntax(_))),
                "{bad}: {:?}",
                pico(bad)
            );
        }
        assert_eq!(UsdPerToken::from_json_text("null"), Ok(None));
    }

    #[test]
    fn display_and_pico_round_trip() {
        let cases = [
            ("3e-06", "0.000003", "3e-6"),
            ("3.75e-06", "0.00000375", "375e-8"),
            ("15", "15", "15e0"),
            ("1500", "1500", "15e2"),
            ("12.5", "12.5", "125e-1"),
            ("-0.5", "-0.5", "-5e-1"),
            ("0", "0", "0"),
            ("1e-100", "1e-100", "1e-100"),
        ];
        for (text, plain, exp) in cases {
            let v: UsdPerToken = text.parse().unwrap();
            assert_eq!(v.to_string(), plain);
            assert_eq!(format!("{v:e}"), exp);
            assert_eq!(v.to_string().parse::<UsdPerToken>(), Ok(v));
        }
        for p in [0, 1, 999, 3_750_000, u64::MAX] {
            assert_eq!(UsdPerToken::from_pico_usd(p).to_pico_usd(), Ok(p));
        }
    }

    #[test]
    fn serde_number_string_and_yaml() {
        let from_json = |s: &str| {
            serde_json::from_str::<UsdPerToken>(s)
                .unwrap()
                .to_pico_usd()
                .unwrap()
        };
        assert_eq!(from_json("3.75e-06"), 3_750_000);
        assert_eq!(from_json("0.0000003"), 300_000);
        assert_eq!(from_json("\"1.5e-05\""), 15_000_000);
        assert_eq!(from_json("2"), 2_000_000_000_000);
        assert!(serde_json::from_str::<UsdPerToken>("\"x\"").is_err());
        assert!(serde_json::from_str::<UsdPerToken>("[1]").is_err());
        let yaml: UsdPerToken = serde_yaml::from_str("3.75e-06").unwrap();
        assert_eq!(yaml.to_pico_usd(), Ok(3_750_000));
        let yaml: UsdPerToken = serde_yaml::from_str("'0.00000375'").unwrap();
        assert_eq!(yaml.to_pico_usd(), Ok(3_750_000));

        // Serializes as a number when exact, as a string otherwise, and reads back equal.
        let plain: UsdPerToken = "3.75e-06".parse().unwrap();
        assert_eq!(serde_json::to_string(&plain).unwrap(), "3.75e-6");
        let precise: UsdPerToken = "0.12345678901234567890123".parse().unwrap();
        assert_eq!(
            serde_json::to_string(&precise).unwrap(),
            "\"0.12345678901234567890123\""
        );
        for v in [plain, precise, UsdPerToken::ZERO] {
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(serde_json::from_str::<UsdPerToken>(&json).unwrap(), v, "{json}");
            let yaml = serde_yaml::to_string(&v).unwrap();
            assert_eq!(serde_yaml::from_str::<UsdPerToken>(&yaml).unwrap(), v, "{yaml}");
        }
    }

    #[test]
    fn shortest_float_reading_is_exact_for_typical_prices() {
        // Every price with up to 15 significant digits survives the f64 path.
        let texts = [
            "3e-06",
            "3.75e-06",
            "1.25e-06",
            "5.5e-07",
            "0.000123456789012345",
            "2.1875e-06",
            "7.5e-08",
        ];
        for text in texts {
            let exact: UsdPerToken = text.parse().unwrap();
            let via_float: UsdPerToken =
                serde_json::from_value(serde_json::json!(text.parse::<f64>().unwrap())).unwrap();
            assert_eq!(via_float, exact, "{text}");
        }
    }

    #[test]
    fn scale_ceil_is_exact_and_rounds_up() {
        let factor = |text: &str| text.parse::<UsdPerToken>().unwrap();
        let uplift = factor("1.1");
        assert_eq!(uplift.scale_ceil(5_000_000), 5_500_000);
        assert_eq!(uplift.scale_ceil(3_750_000), 4_125_000);
        assert_eq!(uplift.scale_ceil(300_000), 330_000);
        // 7 x 1.1 = 7.7: rounded up, never down.
        assert_eq!(uplift.scale_ceil(7), 8);
        assert_eq!(uplift.scale_ceil(0), 0);
        assert_eq!(factor("1").scale_ceil(42), 42);
        assert_eq!(factor("2e3").scale_ceil(3), 6_000);
        assert_eq!(factor("0.5").scale_ceil(3), 2);
        assert_eq!(factor("1e-40").scale_ceil(3), 1);
        assert_eq!(factor("0").scale_ceil(3), 0);
        assert_eq!(factor("-1.1").scale_ceil(3), 0);
        assert!(factor("-1.1").is_negative() && !factor("-0").is_negative());
        assert_eq!(uplift.scale_ceil(u64::MAX), u64::MAX);
        assert_eq!(factor("1e30").scale_ceil(2), u64::MAX);
    }
}
