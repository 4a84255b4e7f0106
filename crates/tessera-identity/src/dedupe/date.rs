//! Dates of birth in the formats people and CRM exports write them, read into one
//! canonical `YYYYMMDD` form so that the comparator can see typos digit by digit and
//! day/month swaps part by part.
//!
//! Ambiguous numeric dates (`03/04/1980`) are read day first (the international
//! order); a month-first date is still recognised as a day/month swap by the
//! comparator, so the reading order costs little.

/// Two-digit years up to this are read as 20yy, above it as 19yy.
const TWO_DIGIT_YEAR_PIVOT: u32 = 25;

/// A calendar date as written: not checked against month lengths, because a record
/// that says 30 February still identifies someone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ymd {
    /// The year (four digits).
    pub year: u32,
    /// The month, 1..=12.
    pub month: u32,
    /// The day, 1..=31.
    pub day: u32,
}

impl Ymd {
    fn new(year: u32, month: u32, day: u32) -> Option<Ymd> {
        let plausible =
            (1000..=2999).contains(&year) && (1..=12).contains(&month) && (1..=31).contains(&day);
        plausible.then_some(Ymd { year, month, day })
    }

    /// The canonical `YYYYMMDD` text.
    pub fn canonical(self) -> String {
        format!("{:04}{:02}{:02}", self.year, self.month, self.day)
    }
}

/// Parses a date written as `YYYYMMDD`, `YYYY-MM-DD`, `YYYY/MM/DD`, `DD/MM/YYYY`,
/// `DD-MM-YYYY`, `DD.MM.YYYY`, `MM/DD/YYYY` (when the day is > 12), two-digit years,
/// month names (`12 Mar 1980`, `March 12, 1980`) or an ISO timestamp (the date part).
pub fn parse_date(raw: &str) -> Option<Ymd> {
    let text = raw.trim();
    // ISO timestamps: keep the date part.
    let text = match text.find(['T', ' ']) {
        Some(pos)
            if pos >= 8 && text[..pos].bytes().filter(|b| b.is_ascii_digit()).count() == 8 =>
        {
            &text[..pos]
        }
        _ => text,
    };
    let parts: Vec<&str> = text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|p| !p.is_empty())
        .collect();
    match parts.as_slice() {
        [one] if one.len() == 8 && one.bytes().all(|b| b.is_ascii_digit()) => {
            let n = |r: std::ops::Range<usize>| one[r].parse::<u32>().ok();
            let (a, b, c) = (n(0..4)?, n(4..6)?, n(6..8)?);
            // YYYYMMDD first; DDMMYYYY when the first four digits are no year.
            Ymd::new(a, b, c).or_else(|| Ymd::new(n(4..8)?, n(2..4)?, n(0..2)?))
        }
        [a, b, c] => parse_three_parts(a, b, c),
        _ => None,
    }
}

fn parse_three_parts(a: &str, b: &str, c: &str) -> Option<Ymd> {
    let num = |s: &str| -> Option<u32> {
        if s.bytes().all(|x| x.is_ascii_digit()) && s.len() <= 4 {
            s.parse().ok()
        } else {
            None
        }
    };
    // A month written as a name may stand first or second.
    if let Some(month) = month_from_name(b) {
        let (day, year) = (num(a)?, year_of(c)?);
        return Ymd::new(year, month, day);
    }
    if let Some(month) = month_from_name(a) {
        let (day, year) = (num(b)?, year_of(c)?);
        return Ymd::new(year, month, day);
    }
    if a.len() == 4 {
        return Ymd::new(num(a)?, num(b)?, num(c)?);
    }
    let (first, second, year) = (num(a)?, num(b)?, year_of(c)?);
    // Day first unless that cannot be (the second part is no month but the first is).
    if second > 12 && first <= 12 {
        Ymd::new(year, first, second)
    } else {
        Ymd::new(year, second, first)
    }
}

fn year_of(s: &str) -> Option<u32> {
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u32 = s.parse().ok()?;
    match s.len() {
        4 => Some(value),
        2 if value <= TWO_DIGIT_YEAR_PIVOT => Some(2000 + value),
        2 => Some(1900 + value),
        _ => None,
    }
}

/// A month from its English name or three-letter abbreviation.
pub fn month_from_name(s: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ];
    let lower = s.to_ascii_lowercase();
    if lower.len() < 3 {
        return None;
    }
    let lower = lower.strip_suffix('.').unwrap_or(&lower);
    MONTHS
        .iter()
        .position(|m| m.starts_with(lower) || (lower == "sept" && *m == "september"))
        .and_then(|i| u32::try_from(i + 1).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ymd(year: u32, month: u32, day: u32) -> Option<Ymd> {
        Some(Ymd { year, month, day })
    }

    #[test]
    fn common_date_formats_parse_to_the_same_date() {
        let cases = [
            ("19800312", ymd(1980, 3, 12)),
            ("1980-03-12", ymd(1980, 3, 12)),
            ("1980/3/12", ymd(1980, 3, 12)),
            ("12/03/1980", ymd(1980, 3, 12)),
            ("12-03-1980", ymd(1980, 3, 12)),
            ("12.03.1980", ymd(1980, 3, 12)),
            ("03/25/1980", ymd(1980, 3, 25)),
            ("12031980", ymd(1980, 3, 12)),
            ("12 Mar 1980", ymd(1980, 3, 12)),
            ("March 12, 1980", ymd(1980, 3, 12)),
            ("1980-03-12T10:00:00Z", ymd(1980, 3, 12)),
            ("12/03/80", ymd(1980, 3, 12)),
            ("12/03/05", ymd(2005, 3, 12)),
            ("19801312", None),
            ("not a date", None),
            ("", None),
            ("1980", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_date(text), expected, "{text:?}");
        }
    }

    #[test]
    fn canonical_form_is_eight_digits() {
        assert_eq!(
            parse_date("1/2/1999").map(Ymd::canonical).as_deref(),
            Some("19990201")
        );
    }
}
