//! Comparators: for each [`FieldKind`], how two normalized values map to a [`Level`].
//!
//! String similarity comes from `strsim` (Jaro–Winkler for names and text,
//! Damerau–Levenshtein for codes, identifiers and dates). The thresholds only cut the
//! similarity into levels; how much each level is worth is learnt per field by the
//! model, so a level that turns out not to discriminate simply gets a small weight.
//!
//! Invariants: an empty value on either side gives `Missing`; equal values give
//! `Exact`; every comparator is symmetric.

use super::kind::{FieldKind, Level};
use super::nicknames::are_nicknames;
use super::phonetic::soundex_code;

/// Jaro–Winkler similarity at or above which names and text are very similar.
pub const JW_VERY_SIMILAR: f64 = 0.92;
/// Jaro–Winkler similarity at or above which names and text are similar.
pub const JW_SIMILAR: f64 = 0.80;

/// Compares two normalized values of `kind`.
pub fn compare(kind: FieldKind, a: &str, b: &str) -> Level {
    if a.is_empty() || b.is_empty() {
        return Level::Missing;
    }
    if a == b {
        return Level::Exact;
    }
    match kind {
        FieldKind::FirstName | FieldKind::MiddleName | FieldKind::LastName => person_name(a, b),
        FieldKind::FullName => full_name(a, b),
        FieldKind::Email => email(a, b),
        FieldKind::Phone => phone(a, b),
        FieldKind::DateOfBirth => date(a, b),
        FieldKind::BirthYear => year(a, b),
        FieldKind::BirthMonth | FieldKind::BirthDay | FieldKind::StreetNumber | FieldKind::Unit => {
            short_code(a, b)
        }
        FieldKind::Street | FieldKind::City | FieldKind::Text => text(a, b),
        FieldKind::Postcode | FieldKind::NationalId => identifier(a, b),
        FieldKind::State => {
            if a.len().min(b.len()) >= 3 && within_edits(a, b, 1) {
                Level::VerySimilar
            } else {
                Level::Different
            }
        }
        FieldKind::Sex | FieldKind::Country | FieldKind::Exact => Level::Different,
    }
}

/// Jaro–Winkler similarity (from `strsim`), in 0..=1. ASCII text is compared byte by
/// byte (the same result as by characters, without decoding UTF-8 in the inner loop).
pub fn jaro_winkler(a: &str, b: &str) -> f64 {
    if a.is_ascii() && b.is_ascii() {
        strsim::generic_jaro_winkler(&Bytes(a.as_bytes()), &Bytes(b.as_bytes()))
    } else {
        strsim::jaro_winkler(a, b)
    }
}

/// Jaro–Winkler of `a` and `b` with spaces removed (split or joined words).
fn jaro_winkler_without_spaces(a: &str, b: &str) -> f64 {
    if a.is_ascii() && b.is_ascii() {
        strsim::generic_jaro_winkler(&NoSpaces(a.as_bytes()), &NoSpaces(b.as_bytes()))
    } else {
        let strip = |x: &str| -> String { x.chars().filter(|c| *c != ' ').collect() };
        strsim::jaro_winkler(&strip(a), &strip(b))
    }
}

/// ASCII bytes as a sequence for `strsim`'s generic metrics.
struct Bytes<'a>(&'a [u8]);

impl<'b> IntoIterator for &Bytes<'b> {
    type Item = u8;
    type IntoIter = std::iter::Copied<std::slice::Iter<'b, u8>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().copied()
    }
}

/// ASCII bytes without their spaces, for `strsim`'s generic metrics.
struct NoSpaces<'a>(&'a [u8]);

impl<'b> IntoIterator for &NoSpaces<'b> {
    type Item = u8;
    type IntoIter = std::iter::Filter<std::iter::Copied<std::slice::Iter<'b, u8>>, fn(&u8) -> bool>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().copied().filter(|b| *b != b' ')
    }
}

/// Character statistics of a pair that bound its similarity from above cheaply, so
/// that the exact metrics run only on pairs that can reach a level.
#[derive(Debug, Clone, Copy)]
struct Shape {
    len_a: usize,
    len_b: usize,
    /// Characters the two strings can have in common (an upper bound).
    common: usize,
    /// The L1 distance of their character histograms (a lower bound of it).
    l1: usize,
    /// The same three figures with spaces left out.
    spaces_a: usize,
    spaces_b: usize,
    common_spaces: usize,
}

/// Histogram bucket of spaces (characters are folded into 64 buckets).
const SPACE_BUCKET: usize = b' ' as usize & 63;

impl Shape {
    fn of(a: &str, b: &str) -> Shape {
        // Folding characters into 64 buckets can only raise the common count and
        // lower the L1 difference, so both bounds stay valid.
        let mut ha = [0u16; 64];
        let mut hb = [0u16; 64];
        let (len_a, len_b) = if a.is_ascii() && b.is_ascii() {
            for &c in a.as_bytes() {
                ha[usize::from(c) & 63] += 1;
            }
            for &c in b.as_bytes() {
                hb[usize::from(c) & 63] += 1;
            }
            (a.len(), b.len())
        } else {
            for c in a.chars() {
                ha[(c as usize) & 63] += 1;
            }
            for c in b.chars() {
                hb[(c as usize) & 63] += 1;
            }
            (a.chars().count(), b.chars().count())
        };
        let mut common = 0;
        let mut l1 = 0;
        for (x, y) in ha.iter().zip(&hb) {
            common += usize::from(*x.min(y));
            l1 += usize::from(x.abs_diff(*y));
        }
        Shape {
            len_a,
            len_b,
            common,
            l1,
            spaces_a: usize::from(ha[SPACE_BUCKET]),
            spaces_b: usize::from(hb[SPACE_BUCKET]),
            common_spaces: usize::from(ha[SPACE_BUCKET].min(hb[SPACE_BUCKET])),
        }
    }

    /// The Damerau–Levenshtein distance when it may be at most `k`, else `k + 1`.
    fn edits_up_to(&self, a: &str, b: &str, k: usize) -> usize {
        if self.may_be_within(k) {
            damerau_levenshtein(a, b).min(k + 1)
        } else {
            k + 1
        }
    }

    /// Whether the Damerau–Levenshtein distance may be at most `k`.
    fn may_be_within(&self, k: usize) -> bool {
        self.len_a.abs_diff(self.len_b) <= k && self.l1.div_ceil(2) <= k
    }

    /// An upper bound of the Jaro–Winkler similarity.
    fn jaro_winkler_bound(&self) -> f64 {
        jaro_winkler_bound(self.len_a, self.len_b, self.common)
    }

    /// An upper bound of the Jaro–Winkler similarity with spaces removed.
    fn jaro_winkler_bound_without_spaces(&self) -> f64 {
        jaro_winkler_bound(
            self.len_a - self.spaces_a,
            self.len_b - self.spaces_b,
            self.common - self.common_spaces,
        )
    }
}

fn jaro_winkler_bound(len_a: usize, len_b: usize, common: usize) -> f64 {
    if len_a == 0 || len_b == 0 || common == 0 {
        return 0.0;
    }
    let m = common.min(len_a).min(len_b) as f64;
    let jaro = (m / len_a as f64 + m / len_b as f64 + 1.0) / 3.0;
    // strsim adds the prefix bonus (at most 4 × 0.1) only above 0.7.
    if jaro > 0.7 {
        jaro + 0.4 * (1.0 - jaro)
    } else {
        jaro
    }
}

/// Jaro–Winkler when it can reach `floor`, otherwise 0 (known to be below it).
fn jaro_winkler_from(shape: &Shape, a: &str, b: &str, floor: f64) -> f64 {
    if shape.jaro_winkler_bound() >= floor {
        jaro_winkler(a, b)
    } else {
        0.0
    }
}

/// Whether the Damerau–Levenshtein distance (from `strsim`) between `a` and `b` is at
/// most `k`. Cheap lower bounds (length difference, character counts) reject most
/// unrelated pairs before the full distance is computed.
pub fn within_edits(a: &str, b: &str, k: usize) -> bool {
    Shape::of(a, b).may_be_within(k) && damerau_levenshtein(a, b) <= k
}

fn damerau_levenshtein(a: &str, b: &str) -> usize {
    if a.is_ascii() && b.is_ascii() {
        strsim::generic_damerau_levenshtein(a.as_bytes(), b.as_bytes())
    } else {
        strsim::damerau_levenshtein(a, b)
    }
}

/// Given or family names: typos, nicknames, phonetic spellings and initials.
fn person_name(a: &str, b: &str) -> Level {
    let shape = Shape::of(a, b);
    let jw = jaro_winkler_from(&shape, a, b, JW_SIMILAR);
    let shortest = shape.len_a.min(shape.len_b);
    // One edit is a typo, except a substituted letter in a short name: mary/mark,
    // john/joan are different names (a transposition, sma/sam, is still a typo).
    let plausible_typo = shortest >= 5 || shape.len_a != shape.len_b || shape.l1 == 0;
    let one_edit =
        shortest >= 3 && plausible_typo && shape.may_be_within(1) && damerau_levenshtein(a, b) <= 1;
    if jw >= JW_VERY_SIMILAR || one_edit || are_nicknames(a, b) {
        Level::VerySimilar
    } else if jw >= JW_SIMILAR || same_sound(a, b) || is_initial_of(a, b) {
        Level::Similar
    } else {
        Level::Different
    }
}

/// Same Soundex code (which starts with the first letter, checked first).
fn same_sound(a: &str, b: &str) -> bool {
    a.len().min(b.len()) >= 2
        && a.as_bytes().first() == b.as_bytes().first()
        && soundex_code(a) == soundex_code(b)
}

/// `j` and `john`: one side is a single letter that starts the other.
fn is_initial_of(a: &str, b: &str) -> bool {
    let initial = |x: &str, y: &str| x.chars().count() == 1 && y.starts_with(x);
    initial(a, b) || initial(b, a)
}

/// Whole names: compared token by token, so that order ("smith john") and nicknames
/// ("bill smith") do not matter.
fn full_name(a: &str, b: &str) -> Level {
    let mut ta: Vec<&str> = a.split(' ').collect();
    let mut tb: Vec<&str> = b.split(' ').collect();
    ta.sort_unstable();
    tb.sort_unstable();
    if ta == tb {
        return Level::VerySimilar;
    }
    let (short, long) = if ta.len() <= tb.len() {
        (&ta, &tb)
    } else {
        (&tb, &ta)
    };
    let mut very_similar = 0;
    let mut similar = 0;
    for token in short.iter() {
        let best = long
            .iter()
            .map(|other| {
                if token == other {
                    Level::Exact
                } else {
                    person_name(token, other)
                }
            })
            .max()
            .unwrap_or(Level::Different);
        match best {
            Level::Exact | Level::VerySimilar => very_similar += 1,
            Level::Similar => similar += 1,
            _ => {}
        }
    }
    if very_similar == short.len() && short.len() >= 2.min(long.len()) {
        Level::VerySimilar
    } else if 2 * (very_similar + similar) >= short.len() && very_similar >= 1 {
        Level::Similar
    } else {
        Level::Different
    }
}

fn email(a: &str, b: &str) -> Level {
    let (la, lb) = (email_local_part(a), email_local_part(b));
    if la == lb || within_edits(a, b, 1) {
        Level::VerySimilar
    } else if jaro_winkler(la, lb) >= 0.88 {
        Level::Similar
    } else {
        Level::Different
    }
}

fn email_local_part(address: &str) -> &str {
    address.split_once('@').map_or(address, |(local, _)| local)
}

/// Phone numbers agree on their last nine digits whatever country or trunk prefix.
fn phone(a: &str, b: &str) -> Level {
    let tail = |x: &str, n: usize| -> String { x[x.len().saturating_sub(n)..].to_owned() };
    if a.len() >= 9 && b.len() >= 9 && tail(a, 9) == tail(b, 9) {
        return Level::Exact;
    }
    let (ta, tb) = (tail(a, 10), tail(b, 10));
    if within_edits(&ta, &tb, 1) {
        Level::VerySimilar
    } else if within_edits(&ta, &tb, 2) || (ta.len() >= 7 && tail(&ta, 7) == tail(&tb, 7)) {
        Level::Similar
    } else {
        Level::Different
    }
}

/// Canonical `YYYYMMDD` dates: a day/month swap or a one-digit typo is very similar.
fn date(a: &str, b: &str) -> Level {
    let canonical = |x: &str| x.len() == 8 && x.bytes().all(|c| c.is_ascii_digit());
    let edits = Shape::of(a, b).edits_up_to(a, b, 2);
    if canonical(a) && canonical(b) {
        let swapped = a[..4] == b[..4] && a[4..6] == b[6..8] && a[6..8] == b[4..6];
        if swapped || edits <= 1 {
            return Level::VerySimilar;
        }
        let same_year_month = a[..6] == b[..6];
        let same_month_day = a[4..] == b[4..];
        if same_year_month || same_month_day || edits <= 2 {
            return Level::Similar;
        }
        return Level::Different;
    }
    match edits {
        0 | 1 => Level::VerySimilar,
        2 => Level::Similar,
        _ => Level::Different,
    }
}

fn year(a: &str, b: &str) -> Level {
    match (a.parse::<i64>(), b.parse::<i64>()) {
        (Ok(x), Ok(y)) => match x.abs_diff(y) {
            0 => Level::Exact,
            1 => Level::VerySimilar,
            2..=5 => Level::Similar,
            _ if within_edits(a, b, 1) => Level::Similar,
            _ => Level::Different,
        },
        _ => short_code(a, b),
    }
}

/// Short codes (house numbers, units, days): one typo is very similar when the codes
/// have more than one character (for one character it means nothing).
fn short_code(a: &str, b: &str) -> Level {
    if a.len().max(b.len()) >= 2 && within_edits(a, b, 1) {
        Level::VerySimilar
    } else {
        Level::Different
    }
}

/// Identifiers and postcodes: counted in typos.
fn identifier(a: &str, b: &str) -> Level {
    let shape = Shape::of(a, b);
    match shape.edits_up_to(a, b, 2) {
        0 | 1 => Level::VerySimilar,
        2 if shape.len_a.min(shape.len_b) >= 4 => Level::Similar,
        _ => Level::Different,
    }
}

fn without_spaces(text: &str) -> impl Iterator<Item = u8> + '_ {
    text.bytes().filter(|c| *c != b' ')
}

/// Free text, streets and places: Jaro–Winkler, also with spaces removed so that a
/// split or joined word (`melrose drive`/`melrosedrive`) stays very similar.
fn text(a: &str, b: &str) -> Level {
    let shape = Shape::of(a, b);
    let mut jw = jaro_winkler_from(&shape, a, b, JW_SIMILAR);
    if (shape.spaces_a > 0 || shape.spaces_b > 0)
        && shape.jaro_winkler_bound_without_spaces() >= JW_SIMILAR
    {
        if without_spaces(a).eq(without_spaces(b)) {
            return Level::VerySimilar;
        }
        // Spaces only move the alignment when their numbers differ.
        if shape.spaces_a != shape.spaces_b && jw < JW_VERY_SIMILAR {
            jw = jw.max(jaro_winkler_without_spaces(a, b));
        }
    }
    if jw >= JW_VERY_SIMILAR {
        Level::VerySimilar
    } else if jw >= JW_SIMILAR {
        Level::Similar
    } else {
        Level::Different
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FieldKind::*;
    use Level::{Different as D, Exact as E, Missing as M, Similar as S, VerySimilar as V};

    #[test]
    fn jaro_winkler_matches_reference_values() {
        let cases = [
            ("MARTHA", "MARHTA", 0.9611),
            ("DWAYNE", "DUANE", 0.84),
            ("DIXON", "DICKSONX", 0.8133),
            ("JELLYFISH", "SMELLYFISH", 0.8963),
            ("", "abc", 0.0),
        ];
        for (a, b, expected) in cases {
            let got = jaro_winkler(a, b);
            assert!((got - expected).abs() < 5e-4, "{a}/{b}: {got}");
        }
        assert!((strsim::jaro("MARTHA", "MARHTA") - 0.9444).abs() < 5e-4);
    }

    #[test]
    fn within_edits_agrees_with_damerau_levenshtein() {
        let cases = [
            ("19210503", "19219503", 1, true),
            ("ca", "abc", 2, true),
            ("ca", "abc", 1, false),
            ("9384379", "9384397", 1, true),
            ("3871937", "8329801", 3, false),
            ("", "ab", 2, true),
            ("kitten", "sitting", 2, false),
            ("kitten", "sitting", 3, true),
        ];
        for (a, b, k, expected) in cases {
            assert_eq!(within_edits(a, b, k), expected, "{a}/{b} k={k}");
            assert_eq!(strsim::damerau_levenshtein(a, b) <= k, expected);
        }
    }

    #[test]
    fn comparator_table() {
        let cases = [
            // names
            (FirstName, "martha", "martha", E),
            (FirstName, "martha", "marhta", V),
            (FirstName, "sma", "sam", V),
            (FirstName, "mary", "mark", S),
            (FirstName, "john", "joan", S),
            (FirstName, "jon", "john", V),
            (FirstName, "bill", "william", V),
            (FirstName, "liz", "elizabeth", V),
            (FirstName, "dwayne", "duane", S),
            (FirstName, "j", "john", S),
            (LastName, "smith", "smyth", V),
            (LastName, "ashcraft", "ashcroft", V),
            (LastName, "robertson", "rupertson", S),
            (LastName, "smith", "jones", D),
            (LastName, "", "jones", M),
            (FullName, "john smith", "smith john", V),
            (FullName, "bill smith", "william smith", V),
            (FullName, "john a smith", "john smith", V),
            (FullName, "john smith", "john jones", S),
            (FullName, "john smith", "mary jones", D),
            // contact
            (Email, "jdoe@a.com", "jdoe@b.org", V),
            (Email, "jdoe@a.com", "jdoa@a.com", V),
            (Email, "john.doe@a.com", "johndoe1@b.com", S),
            (Email, "jdoe@a.com", "mary@a.com", D),
            (Phone, "61298765432", "0298765432", E),
            (Phone, "0298765432", "0298765423", V),
            (Phone, "0298765432", "0311111111", D),
            // dates
            (DateOfBirth, "19800312", "19801203", V),
            (DateOfBirth, "19210503", "19219503", V),
            (DateOfBirth, "19800312", "19800325", S),
            (DateOfBirth, "19800312", "19810312", V),
            (DateOfBirth, "19800312", "19671128", D),
            (BirthYear, "1980", "1981", V),
            (BirthYear, "1980", "1983", S),
            (BirthYear, "1980", "1950", S),
            (BirthYear, "1980", "1932", D),
            (BirthMonth, "3", "4", D),
            (BirthDay, "12", "21", V),
            (Sex, "m", "f", D),
            // address
            (StreetNumber, "39", "93", V),
            (StreetNumber, "3", "4", D),
            (Street, "melrosewdrive", "melrose drive", V),
            (Street, "reuthe r street", "reuther street", V),
            (Street, "loder olace", "loder place", V),
            (Street, "corona place", "macfarland crescent", D),
            (City, "echuca wset", "echuca west", V),
            (City, "mosman", "ballina", D),
            (Postcode, "3284", "3248", V),
            (Postcode, "2877", "8277", V),
            (Postcode, "2877", "2788", S),
            (Postcode, "2000", "6000", V),
            (Postcode, "2000", "6731", D),
            (State, "nsw", "nws", V),
            (State, "nsw", "vic", D),
            (Country, "us", "gb", D),
            // identifiers
            (NationalId, "9384379", "9384397", V),
            (NationalId, "1552042", "1551052", S),
            (NationalId, "3871937", "8329801", D),
            (Exact, "A1", "a1", D),
        ];
        let mut wrong = Vec::new();
        for (kind, a, b, expected) in cases {
            for (x, y) in [(a, b), (b, a)] {
                let got = compare(kind, x, y);
                if got != expected {
                    wrong.push(format!(
                        "{kind}: {x:?} vs {y:?} gave {got}, expected {expected}"
                    ));
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
