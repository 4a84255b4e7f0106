//! What a field holds ([`FieldKind`]) and how alike two values of it are ([`Level`]).
//!
//! The kind decides the normalization and the comparator; the level is the outcome
//! of one comparison, the unit that the Fellegi–Sunter model attaches weights to.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a field holds: decides how values are normalized, compared and blocked on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// A given name: nicknames (bill/william) and swaps with the last name are recognised.
    FirstName,
    /// A middle name or initial.
    MiddleName,
    /// A family name.
    LastName,
    /// A whole name in one field ("Smith, John", "john a smith"): compared token by token.
    FullName,
    /// An email address (case-insensitive).
    Email,
    /// A phone number: digits only, trunk and country prefixes tolerated.
    Phone,
    /// A full date of birth in a common format (YYYYMMDD, YYYY-MM-DD, DD/MM/YYYY, ...).
    DateOfBirth,
    /// A year of birth.
    BirthYear,
    /// A month of birth (number or name).
    BirthMonth,
    /// A day of birth.
    BirthDay,
    /// Sex or gender (m/male, f/female, ...).
    Sex,
    /// A house or street number ("12a").
    StreetNumber,
    /// A street name and type ("giblin st" equals "giblin street").
    Street,
    /// A unit, flat or apartment number.
    Unit,
    /// A city, suburb or town.
    City,
    /// A postal or ZIP code.
    Postcode,
    /// A state, province or region.
    State,
    /// A country (name or ISO code for a few common ones).
    Country,
    /// A national identifier (social security number, ...): digits and letters only.
    NationalId,
    /// Free text, compared by string similarity.
    Text,
    /// A value compared for exact equality only (after trimming).
    Exact,
}

impl FieldKind {
    /// Every kind, in documentation order.
    pub const ALL: [FieldKind; 21] = [
        FieldKind::FirstName,
        FieldKind::MiddleName,
        FieldKind::LastName,
        FieldKind::FullName,
        FieldKind::Email,
        FieldKind::Phone,
        FieldKind::DateOfBirth,
        FieldKind::BirthYear,
        FieldKind::BirthMonth,
        FieldKind::BirthDay,
        FieldKind::Sex,
        FieldKind::StreetNumber,
        FieldKind::Street,
        FieldKind::Unit,
        FieldKind::City,
        FieldKind::Postcode,
        FieldKind::State,
        FieldKind::Country,
        FieldKind::NationalId,
        FieldKind::Text,
        FieldKind::Exact,
    ];

    /// The kind's name as written on the command line and in configuration.
    pub fn name(self) -> &'static str {
        match self {
            FieldKind::FirstName => "first_name",
            FieldKind::MiddleName => "middle_name",
            FieldKind::LastName => "last_name",
            FieldKind::FullName => "full_name",
            FieldKind::Email => "email",
            FieldKind::Phone => "phone",
            FieldKind::DateOfBirth => "date_of_birth",
            FieldKind::BirthYear => "birth_year",
            FieldKind::BirthMonth => "birth_month",
            FieldKind::BirthDay => "birth_day",
            FieldKind::Sex => "sex",
            FieldKind::StreetNumber => "street_number",
            FieldKind::Street => "street",
            FieldKind::Unit => "unit",
            FieldKind::City => "city",
            FieldKind::Postcode => "postcode",
            FieldKind::State => "state",
            FieldKind::Country => "country",
            FieldKind::NationalId => "national_id",
            FieldKind::Text => "text",
            FieldKind::Exact => "exact",
        }
    }
}

impl fmt::Display for FieldKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// The error of parsing an unknown field kind; its message lists the known ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFieldKind(pub String);

impl fmt::Display for UnknownFieldKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown field kind {:?}; known kinds: ", self.0)?;
        for (i, kind) in FieldKind::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(kind.name())?;
        }
        Ok(())
    }
}

impl std::error::Error for UnknownFieldKind {}

impl FromStr for FieldKind {
    type Err = UnknownFieldKind;

    /// Parses a kind name, ignoring case and accepting `-` for `_` (`date-of-birth`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
        let alias = match wanted.as_str() {
            "given_name" | "forename" => Some(FieldKind::FirstName),
            "surname" | "family_name" => Some(FieldKind::LastName),
            "name" => Some(FieldKind::FullName),
            "dob" | "birth_date" => Some(FieldKind::DateOfBirth),
            "gender" => Some(FieldKind::Sex),
            "zip" | "postal_code" => Some(FieldKind::Postcode),
            "suburb" | "town" => Some(FieldKind::City),
            "ssn" | "soc_sec_id" => Some(FieldKind::NationalId),
            _ => None,
        };
        alias
            .or_else(|| FieldKind::ALL.into_iter().find(|k| k.name() == wanted))
            .ok_or_else(|| UnknownFieldKind(s.to_owned()))
    }
}

/// How alike two values are. `Missing` (either side empty) carries no evidence: its
/// weight is zero whatever the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// The values disagree.
    Different,
    /// The values are alike (e.g. Jaro–Winkler ≥ 0.80, same phonetic code, an initial).
    Similar,
    /// The values differ by a typo, a nickname, a transposition or swapped date parts.
    VerySimilar,
    /// The values are equal after normalization.
    Exact,
    /// At least one value is empty.
    Missing,
}

impl Level {
    /// The levels that carry evidence, indexed by [`Level::index`].
    pub const COMPARED: [Level; 4] = [
        Level::Different,
        Level::Similar,
        Level::VerySimilar,
        Level::Exact,
    ];

    /// Position in [`Level::COMPARED`] (0..4), or 4 for `Missing`.
    pub fn index(self) -> usize {
        match self {
            Level::Different => 0,
            Level::Similar => 1,
            Level::VerySimilar => 2,
            Level::Exact => 3,
            Level::Missing => 4,
        }
    }

    /// The level at `index` (inverse of [`Level::index`]); out of range is `Missing`.
    pub fn from_index(index: usize) -> Level {
        Level::COMPARED
            .get(index)
            .copied()
            .unwrap_or(Level::Missing)
    }

    /// The level's name as shown in explanations.
    pub fn name(self) -> &'static str {
        match self {
            Level::Different => "different",
            Level::Similar => "similar",
            Level::VerySimilar => "very_similar",
            Level::Exact => "exact",
            Level::Missing => "missing",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_from_its_own_name() {
        for kind in FieldKind::ALL {
            assert_eq!(kind.name().parse::<FieldKind>(), Ok(kind));
        }
    }

    #[test]
    fn kind_names_accept_case_dashes_and_aliases() {
        let cases = [
            ("Date-Of-Birth", FieldKind::DateOfBirth),
            ("surname", FieldKind::LastName),
            ("given_name", FieldKind::FirstName),
            ("SSN", FieldKind::NationalId),
            ("zip", FieldKind::Postcode),
        ];
        for (text, kind) in cases {
            assert_eq!(text.parse::<FieldKind>(), Ok(kind), "{text}");
        }
    }

    #[test]
    fn unknown_kind_message_lists_the_known_ones() {
        let error = "birthday".parse::<FieldKind>().expect_err("must fail");
        let message = error.to_string();
        assert!(message.contains("\"birthday\""), "{message}");
        assert!(message.contains("date_of_birth"), "{message}");
    }

    #[test]
    fn level_index_round_trips() {
        for level in Level::COMPARED {
            assert_eq!(Level::from_index(level.index()), level);
        }
        assert_eq!(Level::from_index(Level::Missing.index()), Level::Missing);
    }
}
