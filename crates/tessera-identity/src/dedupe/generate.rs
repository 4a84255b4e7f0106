//! Labelled populations for measuring de-duplication where it is hard: few fields,
//! heavy-tailed names, and duplicates with the errors people make.
//!
//! FEBRL is easy (ten rich fields, synthetic errors). Users' data looks like a CRM
//! export with a name and a birthday, or shop accounts with a name and a phone. The
//! generator writes such sets, deterministic for a seed, with a `person_id` column
//! holding the truth:
//!
//! - **names**: first and last names drawn by a Zipf-like rank from a fixed
//!   vocabulary — real common names at the head (the formal names of the nickname
//!   table; the commonest English surnames), then syllable names for a long tail —
//!   so that "smith" and "james" are common and most names are rare, and common
//!   names share birth years by chance;
//! - **duplicates** (by default 10 % of the records) carry one to three errors each:
//!   typos, transposed letters, nicknames, missing values, day and month swapped, a
//!   wrong digit, first and last names swapped, a changed phone;
//! - every record is written in one of several formats (date orders, phone styles,
//!   letter case), as real exports mix them;
//! - [`Scenario::MultiSource`] writes the same people as seen by three systems with
//!   different fields and error rates (a CRM with birth dates and emails, a shop with
//!   phones and emails, a support desk with birth dates, phones and postcodes).
//!
//! Nothing is downloaded: the vocabulary is built in and fixed; only the draws
//! depend on the seed.

use super::kind::FieldKind;
use super::nicknames;
use super::weights::SplitMix64;
use serde::{Deserialize, Serialize};
use std::io::{self, Write};

/// The most records one call generates.
pub const MAX_GENERATED_RECORDS: usize = 10_000_000;

/// Which kind of population to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// First name, last name and date of birth only.
    NamesDob,
    /// First name, last name and phone only.
    NamesPhone,
    /// Three systems with different fields and error rates.
    MultiSource,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 3] = [
        Scenario::NamesDob,
        Scenario::NamesPhone,
        Scenario::MultiSource,
    ];

    /// The scenario's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::NamesDob => "names-dob",
            Scenario::NamesPhone => "names-phone",
            Scenario::MultiSource => "multi-source",
        }
    }

    /// The compared columns of the scenario's CSV and their kinds.
    pub fn fields(self) -> &'static [(&'static str, FieldKind)] {
        match self {
            Scenario::NamesDob => &[
                ("first_name", FieldKind::FirstName),
                ("last_name", FieldKind::LastName),
                ("date_of_birth", FieldKind::DateOfBirth),
            ],
            Scenario::NamesPhone => &[
                ("first_name", FieldKind::FirstName),
                ("last_name", FieldKind::LastName),
                ("phone", FieldKind::Phone),
            ],
            Scenario::MultiSource => &[
                ("first_name", FieldKind::FirstName),
                ("last_name", FieldKind::LastName),
                ("date_of_birth", FieldKind::DateOfBirth),
                ("phone", FieldKind::Phone),
                ("email", FieldKind::Email),
                ("postcode", FieldKind::Postcode),
            ],
        }
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Scenario {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|s| s.name() == text)
            .ok_or_else(|| {
                format!(
                    "unknown scenario {text:?}; known scenarios: {}",
                    Scenario::ALL.map(Scenario::name).join(", ")
                )
            })
    }
}

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GenerateSettings {
    /// The kind of population.
    pub scenario: Scenario,
    /// Records to write (at most [`MAX_GENERATED_RECORDS`]).
    pub records: usize,
    /// The share of records that duplicate another record's person (single-source
    /// scenarios; the multi-source one has its own overlap between systems).
    pub duplicate_share: f64,
    /// The seed: the same seed and settings give the same file.
    pub seed: u64,
}

impl Default for GenerateSettings {
    fn default() -> Self {
        GenerateSettings {
            scenario: Scenario::NamesDob,
            records: 10_000,
            duplicate_share: 0.10,
            seed: 42,
        }
    }
}

/// A generated population: a header and rows, `record_id`, `person_id` (the truth)
/// and `source` first, then the scenario's compared columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Population {
    /// The column names.
    pub columns: Vec<&'static str>,
    /// One row per record, one value per column.
    pub rows: Vec<Vec<String>>,
}

impl Population {
    /// Per record, its true person as a dense number (for scoring).
    pub fn truth(&self) -> Vec<u32> {
        let mut numbers = std::collections::HashMap::new();
        self.rows
            .iter()
            .map(|row| {
                let next = numbers.len() as u32;
                *numbers.entry(row[1].as_str()).or_insert(next)
            })
            .collect()
    }

    /// Writes the population as CSV with a header row.
    ///
    /// # Errors
    /// When writing fails.
    pub fn write_csv(&self, out: &mut dyn Write) -> io::Result<()> {
        write_csv_row(out, self.columns.iter().copied())?;
        for row in &self.rows {
            write_csv_row(out, row.iter().map(String::as_str))?;
        }
        Ok(())
    }
}

fn write_csv_row<'a>(out: &mut dyn Write, values: impl Iterator<Item = &'a str>) -> io::Result<()> {
    for (k, value) in values.enumerate() {
        if k > 0 {
            out.write_all(b",")?;
        }
        if value.contains([',', '"', '\n', '\r']) {
            write!(out, "\"{}\"", value.replace('"', "\"\""))?;
        } else {
            out.write_all(value.as_bytes())?;
        }
    }
    out.write_all(b"\n")
}

/// Generates a population.
///
/// # Errors
/// A message saying what to change when `records` is 0 or above
/// [`MAX_GENERATED_RECORDS`], or `duplicate_share` is not within `0..=0.9`.
pub fn generate(settings: &GenerateSettings) -> Result<Population, String> {
    if settings.records == 0 || settings.records > MAX_GENERATED_RECORDS {
        return Err(format!(
            "records must lie in 1..={MAX_GENERATED_RECORDS}, not {}",
            settings.records
        ));
    }
    if !(0.0..=0.9).contains(&settings.duplicate_share) {
        return Err(format!(
            "the duplicate share must lie in 0..=0.9, not {}",
            settings.duplicate_share
        ));
    }
    let vocabulary = Vocabulary::build();
    let mut rng = SplitMix64::new(settings.seed ^ 0x5eed_d00d_cafe);
    let mut columns = vec!["record_id", "person_id", "source"];
    columns.extend(settings.scenario.fields().iter().map(|(name, _)| *name));
    let mut rows = match settings.scenario {
        Scenario::NamesDob | Scenario::NamesPhone => single_source(settings, &vocabulary, &mut rng),
        Scenario::MultiSource => multi_source(settings.records, &vocabulary, &mut rng),
    };
    // Shuffle (Fisher–Yates), so duplicates are not next to their originals, then
    // number the records in file order.
    for i in (1..rows.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        rows.swap(i, j);
    }
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = format!("r{:07}", i + 1);
    }
    Ok(Population { columns, rows })
}

/// One true person.
#[derive(Debug, Clone)]
struct Person {
    first: String,
    last: String,
    /// Year, month, day.
    birth: (u32, u32, u32),
    /// Ten digits.
    phone: String,
    email: String,
    postcode: String,
}

/// A record's values before formatting; empty strings are missing.
#[derive(Debug, Clone)]
struct Draft {
    first: String,
    last: String,
    birth: Option<(u32, u32, u32)>,
    /// A date typed wrong beyond a swap: its digits as written (`YYYYMMDD`).
    birth_digits: Option<String>,
    phone: String,
    email: String,
    postcode: String,
}

impl Draft {
    fn of(person: &Person) -> Self {
        Draft {
            first: person.first.clone(),
            last: person.last.clone(),
            birth: Some(person.birth),
            birth_digits: None,
            phone: person.phone.clone(),
            email: person.email.clone(),
            postcode: person.postcode.clone(),
        }
    }
}

/// The errors a duplicate can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Corruption {
    FirstNameTypo,
    LastNameTypo,
    Transposition,
    Nickname,
    MissingFirstName,
    MissingLastName,
    MissingBirthDate,
    DayMonthSwapped,
    BirthDigit,
    NamesSwapped,
    PhoneTypo,
    MissingPhone,
    NewPhone,
    EmailTypo,
    NewEmail,
    MissingEmail,
    PostcodeTypo,
}

fn single_source(
    settings: &GenerateSettings,
    vocabulary: &Vocabulary,
    rng: &mut SplitMix64,
) -> Vec<Vec<String>> {
    let records = settings.records;
    let duplicates = ((records as f64) * settings.duplicate_share).round() as usize;
    let originals = (records - duplicates).max(1);
    let people: Vec<Person> = (0..originals).map(|_| vocabulary.person(rng)).collect();
    let corruptions: &[(Corruption, u32)] = match settings.scenario {
        Scenario::NamesPhone => &[
            (Corruption::FirstNameTypo, 20),
            (Corruption::LastNameTypo, 20),
            (Corruption::Transposition, 15),
            (Corruption::Nickname, 15),
            (Corruption::MissingFirstName, 4),
            (Corruption::MissingLastName, 4),
            (Corruption::NamesSwapped, 5),
            (Corruption::PhoneTypo, 15),
            (Corruption::MissingPhone, 8),
            (Corruption::NewPhone, 4),
        ],
        _ => &[
            (Corruption::FirstNameTypo, 20),
            (Corruption::LastNameTypo, 20),
            (Corruption::Transposition, 15),
            (Corruption::Nickname, 15),
            (Corruption::MissingFirstName, 4),
            (Corruption::MissingLastName, 4),
            (Corruption::MissingBirthDate, 5),
            (Corruption::DayMonthSwapped, 12),
            (Corruption::BirthDigit, 12),
            (Corruption::NamesSwapped, 5),
        ],
    };
    let mut rows = Vec::with_capacity(records);
    for (p, person) in people.iter().enumerate() {
        rows.push(row(settings.scenario, "", p, &Draft::of(person), rng));
    }
    for _ in 0..records - originals {
        let p = rng.below(originals as u64) as usize;
        let mut draft = Draft::of(&people[p]);
        // One error for 60 % of the duplicates, two for 30 %, three for 10 %.
        let errors = match rng.below(10) {
            0..=5 => 1,
            6..=8 => 2,
            _ => 3,
        };
        for _ in 0..errors {
            let corruption = pick_weighted(corruptions, rng);
            corrupt(&mut draft, corruption, vocabulary, rng);
        }
        rows.push(row(settings.scenario, "", p, &draft, rng));
    }
    rows
}

/// The systems of the multi-source scenario: name, chance that a person is in it,
/// the mean number of errors per record, and which fields it keeps.
struct System {
    name: &'static str,
    coverage: f64,
    mean_errors: f64,
    birth_date: bool,
    phone: bool,
    email: bool,
    postcode: bool,
}

const SYSTEMS: [System; 3] = [
    System {
        name: "crm",
        coverage: 0.7,
        mean_errors: 0.3,
        birth_date: true,
        phone: false,
        email: true,
        postcode: false,
    },
    System {
        name: "shop",
        coverage: 0.5,
        mean_errors: 0.7,
        birth_date: false,
        phone: true,
        email: true,
        postcode: false,
    },
    System {
        name: "support",
        coverage: 0.35,
        mean_errors: 1.2,
        birth_date: true,
        phone: true,
        email: false,
        postcode: true,
    },
];

/// Duplicates within one system, as a share of that system's records.
const WITHIN_SYSTEM_DUPLICATES: f64 = 0.03;

fn multi_source(records: usize, vocabulary: &Vocabulary, rng: &mut SplitMix64) -> Vec<Vec<String>> {
    let corruptions: &[(Corruption, u32)] = &[
        (Corruption::FirstNameTypo, 18),
        (Corruption::LastNameTypo, 18),
        (Corruption::Transposition, 12),
        (Corruption::Nickname, 14),
        (Corruption::MissingFirstName, 2),
        (Corruption::MissingLastName, 2),
        (Corruption::MissingBirthDate, 5),
        (Corruption::DayMonthSwapped, 8),
        (Corruption::BirthDigit, 8),
        (Corruption::NamesSwapped, 4),
        (Corruption::PhoneTypo, 8),
        (Corruption::MissingPhone, 5),
        (Corruption::NewPhone, 3),
        (Corruption::EmailTypo, 6),
        (Corruption::NewEmail, 4),
        (Corruption::MissingEmail, 4),
        (Corruption::PostcodeTypo, 4),
    ];
    let mut rows = Vec::with_capacity(records + 4);
    let mut p = 0usize;
    while rows.len() < records {
        let person = vocabulary.person(rng);
        let mut systems: Vec<&System> =
            SYSTEMS.iter().filter(|s| chance(rng, s.coverage)).collect();
        if systems.is_empty() {
            systems.push(&SYSTEMS[(rng.below(SYSTEMS.len() as u64)) as usize]);
        }
        for system in systems {
            let copies = if chance(rng, WITHIN_SYSTEM_DUPLICATES) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                if rows.len() >= records {
                    break;
                }
                let mut draft = Draft::of(&person);
                // Poisson-like: each of four chances adds an error.
                for _ in 0..4 {
                    if chance(rng, system.mean_errors / 4.0) {
                        let corruption = pick_weighted(corruptions, rng);
                        corrupt(&mut draft, corruption, vocabulary, rng);
                    }
                }
                if !system.birth_date {
                    draft.birth = None;
                    draft.birth_digits = None;
                }
                if !system.phone {
                    draft.phone.clear();
                }
                if !system.email {
                    draft.email.clear();
                }
                if !system.postcode {
                    draft.postcode.clear();
                }
                rows.push(row(Scenario::MultiSource, system.name, p, &draft, rng));
            }
        }
        p += 1;
    }
    rows
}

fn chance(rng: &mut SplitMix64, p: f64) -> bool {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
}

fn pick_weighted<T: Copy>(choices: &[(T, u32)], rng: &mut SplitMix64) -> T {
    let total: u64 = choices.iter().map(|(_, w)| u64::from(*w)).sum();
    let mut draw = rng.below(total.max(1));
    for &(choice, weight) in choices {
        if draw < u64::from(weight) {
            return choice;
        }
        draw -= u64::from(weight);
    }
    choices[choices.len() - 1].0
}

/// Formats a draft as a CSV row in one of several styles.
fn row(
    scenario: Scenario,
    source: &str,
    person: usize,
    draft: &Draft,
    rng: &mut SplitMix64,
) -> Vec<String> {
    let case = rng.below(10);
    let style = |name: &str| match case {
        0..=5 => capitalized(name),
        6 | 7 => name.to_uppercase(),
        _ => name.to_owned(),
    };
    let date = match (&draft.birth_digits, draft.birth) {
        (Some(digits), _) => digits.clone(),
        (None, Some((y, m, d))) => match rng.below(4) {
            0 | 1 => format!("{y:04}-{m:02}-{d:02}"),
            2 => format!("{d:02}/{m:02}/{y:04}"),
            _ => format!("{y:04}{m:02}{d:02}"),
        },
        (None, None) => String::new(),
    };
    let phone = if draft.phone.is_empty() {
        String::new()
    } else {
        let digits = &draft.phone;
        match rng.below(3) {
            0 => digits.clone(),
            1 => format!("{} {} {}", &digits[..4], &digits[4..7], &digits[7..]),
            _ => format!("+61 {} {} {}", &digits[1..4], &digits[4..7], &digits[7..]),
        }
    };
    let mut values = vec![String::new(), format!("p{person:07}"), source.to_owned()];
    for (column, _) in scenario.fields() {
        values.push(match *column {
            "first_name" => style(&draft.first),
            "last_name" => style(&draft.last),
            "date_of_birth" => date.clone(),
            "phone" => phone.clone(),
            "email" => draft.email.clone(),
            "postcode" => draft.postcode.clone(),
            _ => String::new(),
        });
    }
    values
}

fn capitalized(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";

/// One typo: a letter substituted, inserted or deleted.
fn typo(word: &str, rng: &mut SplitMix64) -> String {
    let mut chars: Vec<char> = word.chars().collect();
    if chars.is_empty() {
        return String::new();
    }
    let at = rng.below(chars.len() as u64) as usize;
    let letter = char::from(LETTERS[rng.below(LETTERS.len() as u64) as usize]);
    match rng.below(3) {
        0 => chars[at] = letter,
        1 => chars.insert(at, letter),
        _ if chars.len() > 3 => {
            chars.remove(at);
        }
        _ => chars[at] = letter,
    }
    chars.into_iter().collect()
}

/// Two adjacent letters swapped.
fn transpose(word: &str, rng: &mut SplitMix64) -> String {
    let mut chars: Vec<char> = word.chars().collect();
    if chars.len() < 2 {
        return word.to_owned();
    }
    let at = rng.below(chars.len() as u64 - 1) as usize;
    chars.swap(at, at + 1);
    chars.into_iter().collect()
}

fn digit_typo(digits: &str, rng: &mut SplitMix64) -> String {
    let mut bytes = digits.as_bytes().to_vec();
    if bytes.is_empty() {
        return String::new();
    }
    let at = rng.below(bytes.len() as u64) as usize;
    let old = bytes[at];
    let mut new = b'0' + rng.below(10) as u8;
    if new == old {
        new = b'0' + ((new - b'0' + 1) % 10);
    }
    bytes[at] = new;
    String::from_utf8(bytes).unwrap_or_default()
}

fn corrupt(
    draft: &mut Draft,
    corruption: Corruption,
    vocabulary: &Vocabulary,
    rng: &mut SplitMix64,
) {
    match corruption {
        Corruption::FirstNameTypo => draft.first = typo(&draft.first, rng),
        Corruption::LastNameTypo => draft.last = typo(&draft.last, rng),
        Corruption::Transposition => {
            if chance(rng, 0.5) {
                draft.first = transpose(&draft.first, rng);
            } else {
                draft.last = transpose(&draft.last, rng);
            }
        }
        Corruption::Nickname => {
            let forms = nicknames::other_forms(&draft.first);
            if forms.is_empty() {
                draft.first = typo(&draft.first, rng);
            } else {
                draft.first = forms[rng.below(forms.len() as u64) as usize].to_owned();
            }
        }
        Corruption::MissingFirstName => draft.first.clear(),
        Corruption::MissingLastName => draft.last.clear(),
        Corruption::MissingBirthDate => {
            draft.birth = None;
            draft.birth_digits = None;
        }
        Corruption::DayMonthSwapped => match draft.birth {
            Some((y, m, d)) if d <= 12 && d != m => draft.birth = Some((y, d, m)),
            Some(_) => corrupt(draft, Corruption::BirthDigit, vocabulary, rng),
            None => {}
        },
        Corruption::BirthDigit => {
            if let Some((y, m, d)) = draft.birth {
                draft.birth_digits = Some(digit_typo(&format!("{y:04}{m:02}{d:02}"), rng));
            }
        }
        Corruption::NamesSwapped => std::mem::swap(&mut draft.first, &mut draft.last),
        Corruption::PhoneTypo => {
            if !draft.phone.is_empty() {
                // Not the leading 0: a typo in the number itself.
                let rest = digit_typo(&draft.phone[1..], rng);
                draft.phone = format!("0{rest}");
            }
        }
        Corruption::MissingPhone => draft.phone.clear(),
        Corruption::NewPhone => draft.phone = vocabulary.phone(rng),
        Corruption::EmailTypo => {
            if let Some((local, domain)) = draft.email.split_once('@') {
                draft.email = format!("{}@{domain}", typo(local, rng));
            }
        }
        Corruption::NewEmail => {
            let (first, last) = (draft.first.clone(), draft.last.clone());
            draft.email = vocabulary.email(&first, &last, rng);
        }
        Corruption::MissingEmail => draft.email.clear(),
        Corruption::PostcodeTypo => draft.postcode = digit_typo(&draft.postcode, rng),
    }
}

/// The commonest English-language surnames, in order of frequency.
const COMMON_SURNAMES: &[&str] = &[
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcia",
    "miller",
    "davis",
    "rodriguez",
    "martinez",
    "hernandez",
    "lopez",
    "gonzalez",
    "wilson",
    "anderson",
    "thomas",
    "taylor",
    "moore",
    "jackson",
    "martin",
    "lee",
    "perez",
    "thompson",
    "white",
    "harris",
    "sanchez",
    "clark",
    "ramirez",
    "lewis",
    "robinson",
    "walker",
    "young",
    "allen",
    "king",
    "wright",
    "scott",
    "torres",
    "nguyen",
    "hill",
    "flores",
    "green",
    "adams",
    "nelson",
    "baker",
    "hall",
    "rivera",
    "campbell",
    "mitchell",
    "carter",
    "roberts",
    "phillips",
    "evans",
    "turner",
    "parker",
    "collins",
    "edwards",
    "stewart",
    "morris",
    "murphy",
    "cook",
    "rogers",
    "morgan",
    "cooper",
    "peterson",
    "reed",
    "bailey",
    "bell",
    "kelly",
    "howard",
    "ward",
    "cox",
    "richardson",
    "wood",
    "watson",
    "brooks",
    "bennett",
    "gray",
    "james",
    "hughes",
    "price",
    "sanders",
    "myers",
    "long",
    "ross",
    "foster",
];

/// Common given names without a nickname group, after the nickname table's formal
/// names.
const COMMON_FIRST_NAMES: &[&str] = &[
    "mary", "linda", "barbara", "sarah", "karen", "nancy", "lisa", "sandra", "ashley", "emily",
    "michelle", "carol", "amanda", "melissa", "laura", "helen", "sharon", "amy", "angela", "anna",
    "ruth", "brenda", "nicole", "rachel", "janet", "emma", "olivia", "sophia", "chloe", "grace",
    "hannah", "zoe", "lily", "ella", "mia", "ruby", "jade", "mark", "paul", "brian", "kevin",
    "jason", "jeffrey", "ryan", "gary", "eric", "scott", "justin", "brandon", "adam", "aaron",
    "kyle", "noah", "ethan", "lucas", "oscar", "hugo", "leo", "max", "oliver",
];

const ONSETS: &[&str] = &[
    "b", "br", "c", "ch", "d", "dr", "f", "g", "gr", "h", "j", "k", "l", "m", "n", "p", "pr", "r",
    "s", "sh", "st", "t", "th", "tr", "v", "w", "z",
];
const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ea", "ou", "y", "ie"];
const CODAS: &[&str] = &[
    "", "", "n", "r", "l", "s", "th", "ck", "m", "nd", "rt", "ll", "ng",
];
const SURNAME_ENDINGS: &[&str] = &[
    "", "", "", "son", "ton", "ley", "man", "berg", "er", "ford", "well", "ski",
];
const GIVEN_ENDINGS: &[&str] = &["", "", "a", "o", "ia", "el", "an", "ine", "us"];

/// Names in the fixed vocabulary.
const SURNAMES: usize = 20_000;
const FIRST_NAMES: usize = 3_000;

/// The fixed vocabulary and its Zipf-like rank distributions.
struct Vocabulary {
    first: Vec<String>,
    first_cumulative: Vec<f64>,
    last: Vec<String>,
    last_cumulative: Vec<f64>,
    domains: [&'static str; 6],
}

impl Vocabulary {
    fn build() -> Self {
        // The vocabulary does not depend on the caller's seed.
        let mut rng = SplitMix64::new(0x70ca_b0aa);
        let mut last: Vec<String> = COMMON_SURNAMES.iter().map(|s| (*s).to_owned()).collect();
        fill_with_syllable_names(&mut last, SURNAMES, 2, SURNAME_ENDINGS, &mut rng);
        let mut first: Vec<String> = nicknames::formal_names().map(str::to_owned).collect();
        for name in COMMON_FIRST_NAMES {
            if !first.iter().any(|f| f == name) {
                first.push((*name).to_owned());
            }
        }
        fill_with_syllable_names(&mut first, FIRST_NAMES, 2, GIVEN_ENDINGS, &mut rng);
        Vocabulary {
            first_cumulative: zipf_cumulative(first.len(), 3.0, 1.05),
            first,
            last_cumulative: zipf_cumulative(last.len(), 12.0, 1.1),
            last,
            domains: [
                "gmail.com",
                "yahoo.com",
                "hotmail.com",
                "outlook.com",
                "icloud.com",
                "bigpond.com",
            ],
        }
    }

    fn person(&self, rng: &mut SplitMix64) -> Person {
        let first = self.first[zipf_draw(&self.first_cumulative, rng)].clone();
        let last = self.last[zipf_draw(&self.last_cumulative, rng)].clone();
        // Birth years 1935–2006, most between 1955 and 1995.
        let year = 1935 + ((rng.below(37) + rng.below(37)) as u32);
        let month = 1 + rng.below(12) as u32;
        let days = match month {
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let day = 1 + rng.below(days) as u32;
        let email = self.email(&first, &last, rng);
        Person {
            phone: self.phone(rng),
            postcode: format!("{}", 2000 + rng.below(7000)),
            email,
            first,
            last,
            birth: (year, month, day),
        }
    }

    fn phone(&self, rng: &mut SplitMix64) -> String {
        format!("04{:08}", rng.below(100_000_000))
    }

    fn email(&self, first: &str, last: &str, rng: &mut SplitMix64) -> String {
        let domain = self.domains[rng.below(self.domains.len() as u64) as usize];
        let initial = first.chars().next().map(String::from).unwrap_or_default();
        let local = match rng.below(4) {
            0 => format!("{first}.{last}"),
            1 => format!("{first}{last}{}", rng.below(100)),
            2 => format!("{initial}{last}"),
            _ => format!("{last}.{first}{}", 1950 + rng.below(60)),
        };
        format!("{local}@{domain}")
    }
}

fn fill_with_syllable_names(
    names: &mut Vec<String>,
    target: usize,
    syllables: usize,
    endings: &[&str],
    rng: &mut SplitMix64,
) {
    let mut seen: std::collections::HashSet<String> = names.iter().cloned().collect();
    while names.len() < target {
        let mut name = String::new();
        for _ in 0..syllables {
            name.push_str(ONSETS[rng.below(ONSETS.len() as u64) as usize]);
            name.push_str(VOWELS[rng.below(VOWELS.len() as u64) as usize]);
            name.push_str(CODAS[rng.below(CODAS.len() as u64) as usize]);
        }
        name.push_str(endings[rng.below(endings.len() as u64) as usize]);
        if name.len() >= 4 && seen.insert(name.clone()) {
            names.push(name);
        }
    }
}

/// Cumulative weights `1 / (rank + offset)^exponent`, normalized to end at 1.
fn zipf_cumulative(n: usize, offset: f64, exponent: f64) -> Vec<f64> {
    let mut total = 0.0;
    let mut cumulative: Vec<f64> = (0..n)
        .map(|rank| {
            total += 1.0 / (rank as f64 + offset).powf(exponent);
            total
        })
        .collect();
    for c in &mut cumulative {
        *c /= total;
    }
    cumulative
}

fn zipf_draw(cumulative: &[f64], rng: &mut SplitMix64) -> usize {
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    cumulative
        .partition_point(|&c| c < u)
        .min(cumulative.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(scenario: Scenario, records: usize, seed: u64) -> GenerateSettings {
        GenerateSettings {
            scenario,
            records,
            seed,
            ..GenerateSettings::default()
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_population_and_another_seed_another() {
        for scenario in Scenario::ALL {
            let a = generate(&settings(scenario, 500, 7)).expect("generates");
            let b = generate(&settings(scenario, 500, 7)).expect("generates");
            let c = generate(&settings(scenario, 500, 8)).expect("generates");
            assert_eq!(a, b, "{scenario}");
            assert_ne!(a, c, "{scenario}");
            assert_eq!(a.rows.len(), 500, "{scenario}");
            assert!(a.rows.iter().all(|r| r.len() == a.columns.len()));
        }
    }

    #[test]
    fn a_tenth_of_the_records_are_duplicates() {
        let population = generate(&settings(Scenario::NamesDob, 10_000, 1)).expect("generates");
        let truth = population.truth();
        let people = truth.iter().collect::<std::collections::HashSet<_>>().len();
        // Each duplicate adds a record to a person who already has one.
        assert_eq!(10_000 - people, 1_000);
    }

    #[test]
    fn names_are_heavy_tailed() {
        let population = generate(&settings(Scenario::NamesDob, 20_000, 3)).expect("generates");
        let column = population
            .columns
            .iter()
            .position(|c| *c == "last_name")
            .expect("last_name");
        let mut counts: HashMap<String, usize> = HashMap::new();
        for row in &population.rows {
            *counts.entry(row[column].to_lowercase()).or_default() += 1;
        }
        let mut sorted: Vec<usize> = counts.values().copied().collect();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let top = sorted[0] as f64 / 20_000.0;
        let once = sorted.iter().filter(|&&c| c == 1).count();
        // A common head (the top surname holds about 2 %) and a long tail of
        // names seen once.
        assert!((0.01..0.05).contains(&top), "top surname share {top}");
        assert!(once > 1_000, "{once} surnames seen once");
    }

    #[test]
    fn multi_source_records_keep_only_their_systems_fields() {
        let population = generate(&settings(Scenario::MultiSource, 3_000, 5)).expect("generates");
        let at = |name: &str| {
            population
                .columns
                .iter()
                .position(|c| *c == name)
                .expect("column")
        };
        let (source, dob, phone, email, postcode) = (
            at("source"),
            at("date_of_birth"),
            at("phone"),
            at("email"),
            at("postcode"),
        );
        let mut systems = std::collections::HashSet::new();
        for row in &population.rows {
            systems.insert(row[source].clone());
            match row[source].as_str() {
                "crm" => assert!(row[phone].is_empty() && row[postcode].is_empty()),
                "shop" => assert!(row[dob].is_empty() && row[postcode].is_empty()),
                "support" => assert!(row[email].is_empty()),
                other => panic!("unknown system {other}"),
            }
        }
        assert_eq!(systems.len(), 3);
    }

    #[test]
    fn bad_settings_say_what_to_change() {
        let zero = generate(&settings(Scenario::NamesDob, 0, 1)).expect_err("must fail");
        assert!(zero.contains("records must lie in"), "{zero}");
        let share = generate(&GenerateSettings {
            duplicate_share: 1.5,
            ..GenerateSettings::default()
        })
        .expect_err("must fail");
        assert!(share.contains("duplicate share"), "{share}");
        assert!("names".parse::<Scenario>().is_err());
        assert_eq!("names-dob".parse::<Scenario>(), Ok(Scenario::NamesDob));
    }
}
