//! Normalization: every raw value is brought to one canonical text per kind before it
//! is compared or blocked on, once per record. An empty result means "missing".
//!
//! The rules are deliberately plain (lowercase, strip punctuation, expand a few
//! abbreviations, parse dates): they remove differences of form, never of
//! substance, so that "exact" after normalization still means the same value.

use super::date::{month_from_name, parse_date};
use super::kind::FieldKind;

/// Values that stand for "unknown" in exports and forms; they normalize to missing.
const PLACEHOLDERS: &[&str] = &[
    "null",
    "none",
    "n/a",
    "na",
    "nan",
    "unknown",
    "-",
    "--",
    "?",
    "(null)",
    "undefined",
];

/// Titles and suffixes dropped from full names.
const NAME_AFFIXES: &[&str] = &[
    "mr", "mrs", "ms", "miss", "dr", "prof", "sir", "jr", "sr", "ii", "iii", "iv", "mx",
];

/// Street-type abbreviations and their full words (applied after the first word).
const STREET_TYPES: &[(&str, &str)] = &[
    ("st", "street"),
    ("str", "street"),
    ("rd", "road"),
    ("ave", "avenue"),
    ("av", "avenue"),
    ("dr", "drive"),
    ("drv", "drive"),
    ("ln", "lane"),
    ("ct", "court"),
    ("crt", "court"),
    ("cres", "crescent"),
    ("cr", "crescent"),
    ("pl", "place"),
    ("blvd", "boulevard"),
    ("hwy", "highway"),
    ("pde", "parade"),
    ("tce", "terrace"),
    ("ter", "terrace"),
    ("cct", "circuit"),
    ("cir", "circle"),
    ("sq", "square"),
    ("pkwy", "parkway"),
    ("cl", "close"),
    ("gr", "grove"),
    ("hts", "heights"),
    ("mt", "mount"),
    ("n", "north"),
    ("s", "south"),
    ("e", "east"),
    ("w", "west"),
];

/// Country names and the ISO codes they normalize to (a few common ones; other
/// values are kept as written, lowercased).
const COUNTRIES: &[(&str, &str)] = &[
    ("united states", "us"),
    ("united states of america", "us"),
    ("usa", "us"),
    ("america", "us"),
    ("united kingdom", "gb"),
    ("uk", "gb"),
    ("great britain", "gb"),
    ("england", "gb"),
    ("australia", "au"),
    ("canada", "ca"),
    ("germany", "de"),
    ("deutschland", "de"),
    ("france", "fr"),
    ("spain", "es"),
    ("espana", "es"),
    ("italy", "it"),
    ("italia", "it"),
    ("netherlands", "nl"),
    ("the netherlands", "nl"),
    ("new zealand", "nz"),
    ("ireland", "ie"),
    ("india", "in"),
    ("mexico", "mx"),
    ("brazil", "br"),
    ("brasil", "br"),
];

/// Normalizes a raw value of `kind`; the empty string means missing.
pub fn normalize(kind: FieldKind, raw: &str) -> String {
    let trimmed = raw.trim();
    if trimmed.is_empty() || PLACEHOLDERS.iter().any(|p| trimmed.eq_ignore_ascii_case(p)) {
        return String::new();
    }
    match kind {
        FieldKind::FirstName | FieldKind::MiddleName | FieldKind::LastName => letters_only(trimmed),
        FieldKind::FullName => full_name(trimmed),
        FieldKind::Email => trimmed.to_lowercase(),
        FieldKind::Phone => phone(trimmed),
        FieldKind::DateOfBirth => match parse_date(trimmed) {
            Some(date) => date.canonical(),
            // Kept as its digits so that a typo'd date ("19581341") still compares.
            None => trimmed.chars().filter(char::is_ascii_digit).collect(),
        },
        FieldKind::BirthYear => digits_without_leading_zeros(trimmed),
        FieldKind::BirthMonth => month_from_name(trimmed)
            .map(|m| m.to_string())
            .unwrap_or_else(|| digits_without_leading_zeros(trimmed)),
        FieldKind::BirthDay => digits_without_leading_zeros(trimmed),
        FieldKind::Sex => sex(trimmed),
        FieldKind::StreetNumber => alphanumeric_only(trimmed),
        FieldKind::Unit => unit(trimmed),
        FieldKind::Street => street(trimmed),
        FieldKind::City | FieldKind::State | FieldKind::Text => words(trimmed),
        FieldKind::Country => country(trimmed),
        FieldKind::Postcode | FieldKind::NationalId => alphanumeric_only(trimmed),
        FieldKind::Exact => trimmed.to_owned(),
    }
}

/// Folds the accented Latin letters most common in names to their base letter.
fn fold_accent(c: char) -> char {
    match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' => 'a',
        'ç' | 'č' | 'ć' => 'c',
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ę' | 'ě' => 'e',
        'ì' | 'í' | 'î' | 'ï' | 'ī' => 'i',
        'ñ' | 'ń' | 'ň' => 'n',
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' => 'o',
        'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' => 'u',
        'ý' | 'ÿ' => 'y',
        'ś' | 'š' | 'ß' => 's',
        'ž' | 'ź' | 'ż' => 'z',
        'ł' => 'l',
        'ř' => 'r',
        _ => c,
    }
}

fn lower_folded(raw: &str) -> impl Iterator<Item = char> + '_ {
    raw.chars().flat_map(char::to_lowercase).map(fold_accent)
}

/// Letters only: `O'Brien` → `obrien`, `Mary-Ann` → `maryann`.
fn letters_only(raw: &str) -> String {
    lower_folded(raw).filter(|c| c.is_alphabetic()).collect()
}

fn alphanumeric_only(raw: &str) -> String {
    lower_folded(raw).filter(|c| c.is_alphanumeric()).collect()
}

/// Lowercase words separated by single spaces, punctuation removed (`St. James` →
/// `st james`; apostrophes vanish rather than split: `o'connor` → `oconnor`).
fn words(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut pending_space = false;
    for c in lower_folded(raw) {
        if c.is_alphanumeric() {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(c);
        } else if c != '\'' && c != '’' {
            pending_space = true;
        }
    }
    out
}

/// `Smith, John A.` → `john a smith`: a comma means "last name first"; titles and
/// suffixes are dropped.
fn full_name(raw: &str) -> String {
    let ordered = match raw.split_once(',') {
        Some((last, first)) if !first.trim().is_empty() => format!("{first} {last}"),
        _ => raw.to_owned(),
    };
    words(&ordered)
        .split(' ')
        .filter(|w| !NAME_AFFIXES.contains(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Digits only, an international `00` or `+` prefix dropped.
fn phone(raw: &str) -> String {
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    match digits.strip_prefix("00") {
        Some(rest) if rest.len() >= 8 => rest.to_owned(),
        _ => digits,
    }
}

fn digits_without_leading_zeros(raw: &str) -> String {
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    let trimmed = digits.trim_start_matches('0');
    if trimmed.is_empty() && !digits.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    }
}

fn sex(raw: &str) -> String {
    let value = words(raw);
    match value.as_str() {
        "m" | "male" | "man" | "boy" | "masculine" => "m".to_owned(),
        "f" | "female" | "woman" | "girl" | "feminine" | "w" => "f".to_owned(),
        _ => value,
    }
}

/// `Unit 4B`, `Apt. 4b`, `#4b` → `4b`.
fn unit(raw: &str) -> String {
    let value = words(raw);
    let rest = [
        "unit ",
        "apt ",
        "apartment ",
        "flat ",
        "suite ",
        "ste ",
        "no ",
    ]
    .iter()
    .find_map(|p| value.strip_prefix(p))
    .unwrap_or(&value);
    rest.chars().filter(|c| c.is_alphanumeric()).collect()
}

/// `12 Giblin St.` → `12 giblin street`: street types after the first word spelled out.
fn street(raw: &str) -> String {
    let value = words(raw);
    value
        .split(' ')
        .enumerate()
        .map(|(i, word)| {
            if i == 0 {
                return word;
            }
            STREET_TYPES
                .iter()
                .find(|(short, _)| *short == word)
                .map_or(word, |(_, long)| long)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn country(raw: &str) -> String {
    let value = words(raw);
    COUNTRIES
        .iter()
        .find(|(name, _)| *name == value)
        .map_or(value.clone(), |(_, code)| (*code).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use FieldKind::*;

    #[test]
    fn normalization_table() {
        let cases = [
            (FirstName, "  Mary-Ann ", "maryann"),
            (LastName, "O'Brien", "obrien"),
            (LastName, "Müller", "muller"),
            (LastName, "NULL", ""),
            (FirstName, "n/a", ""),
            (FullName, "Smith, John A.", "john a smith"),
            (FullName, "Dr. Jane   DOE Jr", "jane doe"),
            (Email, " John.Doe@Example.COM ", "john.doe@example.com"),
            (Phone, "+61 (02) 9876-5432", "610298765432"),
            (Phone, "0061 2 9876 5432", "61298765432"),
            (DateOfBirth, "1980-03-12", "19800312"),
            (DateOfBirth, "12/03/1980", "19800312"),
            (DateOfBirth, "19581341", "19581341"),
            (BirthYear, "1980", "1980"),
            (BirthMonth, "March", "3"),
            (BirthMonth, "03", "3"),
            (BirthDay, "07", "7"),
            (Sex, "Female", "f"),
            (Sex, "M", "m"),
            (StreetNumber, "12-A", "12a"),
            (Unit, "Apt. 4B", "4b"),
            (Street, "Giblin St.", "giblin street"),
            (Street, "St Kilda Rd", "st kilda road"),
            (City, "St. James", "st james"),
            (Postcode, "SW1A 1AA", "sw1a1aa"),
            (State, "N.S.W.", "n s w"),
            (Country, "United States", "us"),
            (Country, "Atlantis", "atlantis"),
            (NationalId, "123-45-6789", "123456789"),
            (Text, "  Hello,   World! ", "hello world"),
            (Exact, " AbC ", "AbC"),
        ];
        for (kind, raw, expected) in cases {
            assert_eq!(normalize(kind, raw), expected, "{kind} {raw:?}");
        }
    }
}
