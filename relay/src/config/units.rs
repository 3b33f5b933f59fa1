//! Sizes and durations as config.md writes them: `500M`, `200K`, `1G` or bytes; `20d`, `12h`,
//! `30m`, `5s` or a plain integer meaning days (chatmail.ini compatibility).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A byte count written with an optional binary unit suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// A duration written with a unit suffix, or a bare number of days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfDuration(pub Duration);

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl ConfDuration {
    pub fn get(self) -> Duration {
        self.0
    }
    pub fn from_secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1024u64),
        Some('M' | 'm') => (&t[..t.len() - 1], 1024 * 1024),
        Some('G' | 'g') => (&t[..t.len() - 1], 1024 * 1024 * 1024),
        Some('B' | 'b') => (&t[..t.len() - 1], 1),
        _ => (t, 1),
    };
    let n: u64 =
        num.trim().parse().map_err(|_| format!("invalid size {s:?}: expected a number with optional K, M or G"))?;
    n.checked_mul(mult).ok_or_else(|| format!("size {s:?} is too large"))
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let bad = || format!("invalid duration {s:?}: expected e.g. 20d, 12h, 30m, 5s or a number of days");
    let (num, secs) = match t.chars().last() {
        Some('d') => (&t[..t.len() - 1], 86_400u64),
        Some('h') => (&t[..t.len() - 1], 3600),
        Some('m') => (&t[..t.len() - 1], 60),
        Some('s') => (&t[..t.len() - 1], 1),
        Some(c) if c.is_ascii_digit() => (t, 86_400),
        _ => return Err(bad()),
    };
    let n: u64 = num.trim().parse().map_err(|_| bad())?;
    n.checked_mul(secs).map(Duration::from_secs).ok_or_else(bad)
}

pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s != 0 && s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else if s != 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s != 0 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

struct SizeVisitor;
impl Visitor<'_> for SizeVisitor {
    type Value = ByteSize;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a size such as 500M, 200K, 1G or a number of bytes")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
        Ok(ByteSize(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
        u64::try_from(v).map(ByteSize).map_err(|_| E::custom("a size cannot be negative"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
        parse_size(v).map(ByteSize).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SizeVisitor)
    }
}
impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

struct DurVisitor;
impl Visitor<'_> for DurVisitor {
    type Value = ConfDuration;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration such as 20d, 12h, 30m, 5s or a number of days")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ConfDuration, E> {
        v.checked_mul(86_400)
            .map(|s| ConfDuration(Duration::from_secs(s)))
            .ok_or_else(|| E::custom("duration too large"))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ConfDuration, E> {
        let v = u64::try_from(v).map_err(|_| E::custom("a duration cannot be negative"))?;
        self.visit_u64(v)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<ConfDuration, E> {
        parse_duration(v).map(ConfDuration).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for ConfDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurVisitor)
    }
}
impl Serialize for ConfDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("500M"), Ok(500 * 1024 * 1024));
        assert_eq!(parse_size("200K"), Ok(200 * 1024));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("31457280"), Ok(31_457_280));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20d"), Ok(Duration::from_secs(20 * 86_400)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90 * 86_400)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("-1d").is_err());
        assert_eq!(format_duration(Duration::from_secs(3)), "3s");
        assert_eq!(format_duration(Duration::from_secs(7 * 86_400)), "7d");
    }
}
