//! The one clock abstraction and the timestamp formats of the Segment spec.
//!
//! Tests control time through [`FixedClock`]; everything else uses [`SystemClock`].
//! Timestamps on the wire are ISO-8601; Tessera writes them as RFC 3339 in UTC with
//! millisecond precision (`2026-11-23T11:09:55.123Z`), as Segment does.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, SecondsFormat, Timelike, Utc};
use std::sync::atomic::{AtomicI64, Ordering};

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The machine's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that tests set and advance by hand.
#[derive(Debug)]
pub struct FixedClock {
    millis: AtomicI64,
}

impl FixedClock {
    /// A clock stopped at `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        Self {
            millis: AtomicI64::new(at.timestamp_millis()),
        }
    }

    /// Moves the clock forward by `millis` milliseconds.
    pub fn advance_millis(&self, millis: i64) {
        self.millis.fetch_add(millis, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.millis.load(Ordering::SeqCst)).unwrap_or_default()
    }
}

/// Parses an ISO-8601 date-time as SDKs send it.
///
/// Accepts RFC 3339 (`2026-11-23T11:09:55.123Z`, `...+01:00`), the same without an
/// offset (taken as UTC, as Python's `datetime.isoformat()` of a naive time gives),
/// a space instead of `T`, and a bare date (`2026-11-23`, midnight UTC).
/// Returns `None` for anything else.
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    // RFC 3339 with a space separator, or an offset written without a colon.
    for format in [
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// Formats Unix milliseconds as Tessera writes times (empty when out of range).
pub fn format_millis(millis: i64) -> String {
    DateTime::from_timestamp_millis(millis)
        .map(format_timestamp)
        .unwrap_or_default()
}

/// Formats a time as Tessera writes it: RFC 3339, UTC, milliseconds, `Z`.
pub fn format_timestamp(at: DateTime<Utc>) -> String {
    let year = at.year();
    if !(0..=9999).contains(&year) {
        return at.to_rfc3339_opts(SecondsFormat::Millis, true);
    }
    // Every message gets two of these; chrono's general formatter was 5 % of ingest CPU.
    let millis = at.timestamp_subsec_millis().min(999);
    let mut out = [0u8; 24];
    let mut put = |at: usize, value: u32, digits: usize| {
        let mut value = value;
        for slot in out[at..at + digits].iter_mut().rev() {
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, year.unsigned_abs(), 4);
    put(5, at.month(), 2);
    put(8, at.day(), 2);
    put(11, at.hour(), 2);
    put(14, at.minute(), 2);
    put(17, at.second().min(59), 2);
    put(20, millis, 3);
    for (position, separator) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ] {
        out[position] = separator;
    }
    out.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_sdks_send() {
        let expected = "2026-11-23T11:09:55.123Z";
        for text in [
            "2026-11-23T11:09:55.123Z",
            "2026-11-23T11:09:55.123+00:00",
            "2026-11-23T12:09:55.123+01:00",
            "2026-11-23T12:09:55.123+0100",
            "2026-11-23 11:09:55.123+00:00",
            "2026-11-23T11:09:55.123",
            " 2026-11-23T11:09:55.123000Z ",
        ] {
            let parsed = parse_timestamp(text).unwrap_or_else(|| panic!("{text} did not parse"));
            assert_eq!(format_timestamp(parsed), expected, "{text}");
        }
        assert_eq!(
            parse_timestamp("2026-11-23")
                .map(format_timestamp)
                .as_deref(),
            Some("2026-11-23T00:00:00.000Z")
        );
    }

    #[test]
    fn rejects_what_is_not_a_date_time() {
        for text in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "1700000000",
            "2026-11-23T25:00:00Z",
        ] {
            assert!(parse_timestamp(text).is_none(), "{text}");
        }
    }

    proptest::proptest! {
        #[test]
        fn the_fast_format_writes_what_chrono_writes(
            millis in -62_167_219_200_000i64..253_402_300_800_000i64,
        ) {
            let at = DateTime::from_timestamp_millis(millis).unwrap_or_default();
            proptest::prop_assert_eq!(
                format_timestamp(at),
                at.to_rfc3339_opts(SecondsFormat::Millis, true)
            );
        }
    }

    #[test]
    fn years_past_four_digits_still_format() {
        let far = DateTime::from_timestamp_millis(400_000_000_000_000).unwrap_or_default();
        assert_eq!(
            format_timestamp(far),
            far.to_rfc3339_opts(SecondsFormat::Millis, true)
        );
    }

    #[test]
    fn fixed_clock_advances_only_when_told() {
        let clock = FixedClock::new(parse_timestamp("2026-01-01T00:00:00Z").unwrap_or_default());
        let first = clock.now();
        clock.advance_millis(1500);
        assert_eq!((clock.now() - first).num_milliseconds(), 1500);
    }
}
