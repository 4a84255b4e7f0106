//! Writes a seeded synthetic set of people records with realistic duplicates, for
//! measuring de-duplication beyond FEBRL.
//!
//! ```text
//! cargo run --release -p tessera-identity --example synth_people -- --records 1000000 --seed 42 --out /tmp/synth_1m.csv
//! ```
//!
//! Columns: `record_id,cluster_id,source,first_name,last_name,date_of_birth,sex,
//! email,phone,street_number,street,city,postcode,state` (the compared columns are
//! named after their kinds). `cluster_id` is the truth: records of one person.
//!
//! What makes it hard, on purpose:
//! - name frequencies are skewed (a few very common first and last names) with a long
//!   tail of rarer ones; several thousand cities and streets;
//! - households: a quarter of the people share a surname, an address and often a
//!   landline with 1–3 relatives (different given names and birth dates); a few are
//!   twins (same birth date);
//! - every record is written in one of several formats (date orders, phone styles,
//!   case, street abbreviations);
//! - duplicates (0–5 per person, skewed) carry 1–4 corruptions: typos, nicknames,
//!   swapped first/last names, missing fields, day/month swaps and date typos, new
//!   phone or email, a move to a new address, a surname change.
#![allow(clippy::print_stdout)]

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::error::Error;
use std::io::Write;

const FEMALE: &[&str] = &[
    "mary",
    "patricia",
    "jennifer",
    "linda",
    "elizabeth",
    "barbara",
    "susan",
    "jessica",
    "sarah",
    "karen",
    "nancy",
    "margaret",
    "lisa",
    "betty",
    "dorothy",
    "sandra",
    "ashley",
    "kimberly",
    "donna",
    "emily",
    "michelle",
    "carol",
    "amanda",
    "melissa",
    "deborah",
    "stephanie",
    "rebecca",
    "laura",
    "helen",
    "sharon",
    "cynthia",
    "kathleen",
    "amy",
    "shirley",
    "angela",
    "anna",
    "ruth",
    "brenda",
    "pamela",
    "nicole",
    "katherine",
    "samantha",
    "christine",
    "catherine",
    "virginia",
    "rachel",
    "janet",
    "emma",
    "olivia",
    "sophia",
    "isabella",
    "chloe",
    "madison",
    "abigail",
    "victoria",
    "natalie",
    "grace",
    "hannah",
    "zoe",
    "lily",
    "ella",
    "charlotte",
    "mia",
    "amelia",
    "ruby",
    "georgia",
    "jacqueline",
    "alexandra",
    "penelope",
    "josephine",
    "eleanor",
    "teresa",
    "frances",
    "louise",
    "gabrielle",
    "tahlia",
    "jade",
];

const MALE: &[&str] = &[
    "james",
    "john",
    "robert",
    "michael",
    "william",
    "david",
    "richard",
    "joseph",
    "thomas",
    "charles",
    "christopher",
    "daniel",
    "matthew",
    "anthony",
    "mark",
    "donald",
    "steven",
    "paul",
    "andrew",
    "joshua",
    "kenneth",
    "kevin",
    "brian",
    "george",
    "timothy",
    "ronald",
    "edward",
    "jason",
    "jeffrey",
    "ryan",
    "jacob",
    "gary",
    "nicholas",
    "eric",
    "jonathan",
    "stephen",
    "larry",
    "justin",
    "scott",
    "brandon",
    "benjamin",
    "samuel",
    "gregory",
    "alexander",
    "frank",
    "patrick",
    "raymond",
    "jack",
    "dennis",
    "jerry",
    "tyler",
    "aaron",
    "henry",
    "douglas",
    "peter",
    "zachary",
    "nathan",
    "walter",
    "harold",
    "kyle",
    "noah",
    "liam",
    "lachlan",
    "oliver",
    "ethan",
    "lucas",
    "mason",
    "logan",
    "cooper",
    "riley",
    "harrison",
    "theodore",
    "frederick",
    "lawrence",
    "vincent",
    "philip",
    "albert",
    "leonard",
];

const SURNAMES: &[&str] = &[
    "smith",
    "jones",
    "williams",
    "brown",
    "wilson",
    "taylor",
    "johnson",
    "white",
    "martin",
    "anderson",
    "thompson",
    "nguyen",
    "thomas",
    "walker",
    "harris",
    "lee",
    "ryan",
    "robinson",
    "kelly",
    "king",
    "davis",
    "wright",
    "evans",
    "roberts",
    "green",
    "hall",
    "wood",
    "jackson",
    "clarke",
    "patel",
    "khan",
    "lewis",
    "james",
    "phillips",
    "mitchell",
    "turner",
    "campbell",
    "murphy",
    "scott",
    "young",
    "allen",
    "edwards",
    "baker",
    "hill",
    "moore",
    "cooper",
    "ward",
    "morris",
    "clark",
    "hughes",
    "price",
    "bennett",
    "gray",
    "cook",
    "bell",
    "morgan",
    "collins",
    "stewart",
    "murray",
    "watson",
    "kennedy",
    "graham",
    "reid",
    "ross",
    "hunter",
    "ellis",
    "fraser",
    "hamilton",
    "marshall",
    "owen",
    "chapman",
    "webb",
    "shaw",
    "lloyd",
    "russell",
    "mason",
    "wallace",
    "sullivan",
    "obrien",
    "mccarthy",
    "oconnor",
    "burke",
    "fitzgerald",
    "chen",
    "wang",
    "li",
    "zhang",
    "liu",
    "tran",
    "le",
    "pham",
    "singh",
    "kumar",
    "rossi",
    "russo",
    "ferrari",
    "esposito",
    "bianchi",
    "romano",
    "muller",
    "schmidt",
    "schneider",
    "fischer",
    "weber",
    "meyer",
    "wagner",
    "becker",
    "schulz",
    "hoffmann",
    "garcia",
    "rodriguez",
    "martinez",
    "hernandez",
    "lopez",
    "gonzalez",
    "perez",
    "sanchez",
    "ramirez",
    "torres",
    "flores",
    "rivera",
    "gomez",
    "diaz",
    "reyes",
    "morales",
    "cruz",
    "ortiz",
    "gutierrez",
    "chavez",
    "ramos",
    "ruiz",
    "alvarez",
    "mendoza",
    "castillo",
    "jimenez",
    "moreno",
    "romero",
    "herrera",
    "medina",
    "aguilar",
    "vargas",
    "kim",
    "park",
];

/// Formal names and their short forms (used to corrupt duplicates).
const NICKNAMES: &[(&str, &[&str])] = &[
    ("william", &["bill", "will", "billy"]),
    ("robert", &["bob", "rob", "bobby"]),
    ("elizabeth", &["liz", "beth", "betty"]),
    ("margaret", &["maggie", "peggy", "meg"]),
    ("katherine", &["kate", "katie", "kathy"]),
    ("catherine", &["cathy", "kate"]),
    ("james", &["jim", "jimmy", "jamie"]),
    ("john", &["jack", "johnny"]),
    ("michael", &["mike", "mick"]),
    ("richard", &["rick", "dick", "rich"]),
    ("thomas", &["tom", "tommy"]),
    ("anthony", &["tony"]),
    ("joseph", &["joe", "joey"]),
    ("daniel", &["dan", "danny"]),
    ("david", &["dave"]),
    ("stephen", &["steve"]),
    ("christopher", &["chris"]),
    ("christine", &["chris", "chrissy"]),
    ("matthew", &["matt"]),
    ("nicholas", &["nick"]),
    ("alexander", &["alex"]),
    ("alexandra", &["alex", "sandra"]),
    ("samuel", &["sam"]),
    ("samantha", &["sam"]),
    ("benjamin", &["ben"]),
    ("edward", &["ed", "eddie", "ted"]),
    ("patricia", &["pat", "trish"]),
    ("susan", &["sue"]),
    ("jennifer", &["jen", "jenny"]),
    ("jessica", &["jess"]),
    ("rebecca", &["becky", "bec"]),
    ("abigail", &["abby"]),
    ("andrew", &["andy", "drew"]),
    ("charles", &["charlie", "chuck"]),
    ("timothy", &["tim"]),
    ("victoria", &["vicky", "tori"]),
    ("zachary", &["zach"]),
    ("joshua", &["josh"]),
    ("amanda", &["mandy"]),
    ("deborah", &["deb", "debbie"]),
    ("kimberly", &["kim"]),
    ("kenneth", &["ken"]),
    ("ronald", &["ron"]),
    ("gregory", &["greg"]),
    ("jeffrey", &["jeff"]),
    ("frederick", &["fred"]),
    ("lawrence", &["larry"]),
    ("jacqueline", &["jackie"]),
    ("penelope", &["penny"]),
    ("theodore", &["theo", "ted"]),
];

const SYLLABLES: &[&str] = &[
    "ka", "ren", "mor", "ton", "bel", "la", "ri", "son", "dan", "ver", "mar", "lin", "ber", "gal",
    "hen", "ris", "tal", "wen", "dor", "kin", "sel", "bro", "ham", "ley", "fen", "cor", "ash",
    "wick", "bur", "ry", "nel", "pat", "ros", "ford", "ling", "stan", "wal", "ter", "mel", "vin",
    "gor", "dal", "by", "tre", "ga", "zo", "nik", "ola", "pe", "ru", "sha", "qui", "del",
];

const STREET_TYPES: &[(&str, &str)] = &[
    ("street", "st"),
    ("road", "rd"),
    ("avenue", "ave"),
    ("drive", "dr"),
    ("place", "pl"),
    ("crescent", "cres"),
    ("court", "ct"),
    ("lane", "ln"),
    ("parade", "pde"),
    ("circuit", "cct"),
];

const STATES: &[&str] = &["nsw", "vic", "qld", "wa", "sa", "tas", "act", "nt"];

const DOMAINS: &[&str] = &[
    "gmail.com",
    "yahoo.com",
    "hotmail.com",
    "outlook.com",
    "icloud.com",
    "bigpond.com",
    "optusnet.com.au",
    "proton.me",
];

const SOURCES: &[&str] = &["crm", "web", "shop"];

struct Options {
    records: usize,
    seed: u64,
    out: String,
}

fn parse_options() -> Result<Options, Box<dyn Error>> {
    let mut options = Options {
        records: 1_000_000,
        seed: 42,
        out: String::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--records" => options.records = value("--records")?.parse()?,
            "--seed" => options.seed = value("--seed")?.parse()?,
            "--out" => options.out = value("--out")?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if options.out.is_empty() {
        return Err("usage: synth_people [--records N] [--seed S] --out FILE.csv".into());
    }
    Ok(options)
}

/// Picks from a list with Zipf-like weights (rank^-0.9), via cumulative weights.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize) -> Self {
        let mut total = 0.0;
        let cumulative = (0..n)
            .map(|rank| {
                total += 1.0 / ((rank + 1) as f64).powf(0.9);
                total
            })
            .collect();
        Zipf { cumulative }
    }

    fn pick(&self, rng: &mut StdRng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let x = rng.random::<f64>() * total;
        self.cumulative
            .partition_point(|&c| c < x)
            .min(self.cumulative.len() - 1)
    }
}

fn invented_word(rng: &mut StdRng, syllables: usize) -> String {
    (0..syllables)
        .map(|_| SYLLABLES[rng.random_range(0..SYLLABLES.len())])
        .collect()
}

#[derive(Clone)]
struct Address {
    number: u32,
    street: String,
    street_type: usize,
    city: usize,
    postcode: usize,
}

#[derive(Clone)]
struct Person {
    cluster: u64,
    first: String,
    last: String,
    female: bool,
    dob: (u32, u32, u32),
    email: Option<String>,
    phone: Option<String>,
    address: Address,
}

struct City {
    name: String,
    state: usize,
    postcodes: Vec<u32>,
}

struct World {
    female_zipf: Zipf,
    male_zipf: Zipf,
    surname_zipf: Zipf,
    invented_surnames: Vec<String>,
    invented_first: Vec<String>,
    cities: Vec<City>,
    city_zipf: Zipf,
    streets: Vec<String>,
}

impl World {
    fn new(rng: &mut StdRng) -> Self {
        let invented_surnames = (0..30_000)
            .map(|_| {
                let n = rng.random_range(2..=3);
                invented_word(rng, n)
            })
            .collect();
        let invented_first = (0..3_000)
            .map(|_| {
                let n = rng.random_range(2..=3);
                invented_word(rng, n)
            })
            .collect();
        let cities: Vec<City> = (0..3_000)
            .map(|_| {
                let n = rng.random_range(2..=3);
                let mut name = invented_word(rng, n);
                if rng.random_bool(0.15) {
                    name = format!(
                        "{} {}",
                        name,
                        ["north", "south", "east", "west", "heights", "park"]
                            [rng.random_range(0..6)]
                    );
                }
                let state = rng.random_range(0..STATES.len());
                let postcodes = (0..rng.random_range(1..=3))
                    .map(|_| rng.random_range(800..9999))
                    .collect();
                City {
                    name,
                    state,
                    postcodes,
                }
            })
            .collect();
        let streets = (0..20_000)
            .map(|_| {
                let n = rng.random_range(2..=3);
                invented_word(rng, n)
            })
            .collect();
        World {
            female_zipf: Zipf::new(FEMALE.len()),
            male_zipf: Zipf::new(MALE.len()),
            surname_zipf: Zipf::new(SURNAMES.len()),
            invented_surnames,
            invented_first,
            city_zipf: Zipf::new(cities.len()),
            cities,
            streets,
        }
    }

    fn first_name(&self, rng: &mut StdRng, female: bool) -> String {
        if rng.random_bool(0.15) {
            return self.invented_first[rng.random_range(0..self.invented_first.len())].clone();
        }
        if female {
            FEMALE[self.female_zipf.pick(rng)].to_owned()
        } else {
            MALE[self.male_zipf.pick(rng)].to_owned()
        }
    }

    fn surname(&self, rng: &mut StdRng) -> String {
        if rng.random_bool(0.5) {
            self.invented_surnames[rng.random_range(0..self.invented_surnames.len())].clone()
        } else {
            SURNAMES[self.surname_zipf.pick(rng)].to_owned()
        }
    }

    fn address(&self, rng: &mut StdRng) -> Address {
        let city = self.city_zipf.pick(rng);
        Address {
            number: if rng.random_bool(0.7) {
                rng.random_range(1..120)
            } else {
                rng.random_range(1..1500)
            },
            street: self.streets[rng.random_range(0..self.streets.len())].clone(),
            street_type: rng.random_range(0..STREET_TYPES.len()),
            city,
            postcode: rng.random_range(0..self.cities[city].postcodes.len()),
        }
    }

    fn person(&self, rng: &mut StdRng, cluster: u64) -> Person {
        let female = rng.random_bool(0.5);
        let first = self.first_name(rng, female);
        let last = self.surname(rng);
        let dob = random_date(rng);
        let email = rng
            .random_bool(0.8)
            .then(|| make_email(rng, &first, &last, dob.0));
        let phone = rng.random_bool(0.85).then(|| mobile(rng));
        Person {
            cluster,
            first,
            last,
            female,
            dob,
            email,
            phone,
            address: self.address(rng),
        }
    }

    /// A relative living with `head`: same surname and address, often the landline.
    fn relative(&self, rng: &mut StdRng, head: &Person, cluster: u64) -> Person {
        let female = rng.random_bool(0.5);
        let mut first = self.first_name(rng, female);
        while first == head.first {
            first = self.first_name(rng, female);
        }
        let twin = rng.random_bool(0.04);
        let dob = if twin { head.dob } else { random_date(rng) };
        let email = rng
            .random_bool(0.7)
            .then(|| make_email(rng, &first, &head.last, dob.0));
        let phone = if rng.random_bool(0.5) {
            head.phone.clone()
        } else {
            rng.random_bool(0.8).then(|| mobile(rng))
        };
        Person {
            cluster,
            first,
            last: head.last.clone(),
            female,
            dob,
            email,
            phone,
            address: head.address.clone(),
        }
    }
}

fn random_date(rng: &mut StdRng) -> (u32, u32, u32) {
    (
        rng.random_range(1930..=2005),
        rng.random_range(1..=12),
        rng.random_range(1..=28),
    )
}

fn mobile(rng: &mut StdRng) -> String {
    format!("04{:08}", rng.random_range(0..100_000_000u32))
}

/// An address in one of the usual shapes; [`unique_email`] makes it one person's.
fn make_email(rng: &mut StdRng, first: &str, last: &str, year: u32) -> String {
    let domain = DOMAINS[rng.random_range(0..DOMAINS.len())];
    let local = match rng.random_range(0..4) {
        0 => format!("{first}.{last}"),
        1 => format!("{}{last}{}", &first[..1], rng.random_range(1..100)),
        2 => format!("{first}{}", year % 100),
        _ => format!("{first}_{last}{}", rng.random_range(1..1000)),
    };
    format!("{local}@{domain}")
}

/// A keyboard typo: insert, delete, substitute or transpose one letter.
fn typo(rng: &mut StdRng, word: &str) -> String {
    let mut chars: Vec<char> = word.chars().collect();
    if chars.len() < 2 {
        return word.to_owned();
    }
    let i = rng.random_range(0..chars.len());
    let letter = char::from(b'a' + rng.random_range(0..26u8));
    match rng.random_range(0..4) {
        0 => chars.insert(i, letter),
        1 => {
            chars.remove(i);
        }
        2 => chars[i] = letter,
        _ => {
            let j = if i + 1 < chars.len() { i + 1 } else { i - 1 };
            chars.swap(i, j);
        }
    }
    chars.into_iter().collect()
}

/// One record of a person: either faithful or a corrupted duplicate.
struct Row {
    first: String,
    last: String,
    dob: String,
    sex: String,
    email: String,
    phone: String,
    number: String,
    street: String,
    city: String,
    postcode: String,
    state: String,
}

fn render(rng: &mut StdRng, world: &World, person: &Person, corruptions: usize) -> Row {
    let mut p = person.clone();
    let mut swap_names = false;
    let mut dob_swap = false;
    let mut missing: Vec<usize> = Vec::new();
    for _ in 0..corruptions {
        match rng.random_range(0..100) {
            0..=17 => p.first = typo(rng, &p.first),
            18..=33 => p.last = typo(rng, &p.last),
            34..=41 => {
                if let Some((_, short)) = NICKNAMES.iter().find(|(f, _)| *f == p.first) {
                    p.first = short[rng.random_range(0..short.len())].to_owned();
                } else {
                    p.first = typo(rng, &p.first);
                }
            }
            42..=47 => swap_names = true,
            48..=61 => missing.push(rng.random_range(0..9)),
            62..=66 => {
                if p.dob.2 <= 12 {
                    dob_swap = true;
                } else {
                    p.dob.2 = (p.dob.2 + 1).min(28);
                }
            }
            67..=71 => {
                // A digit of the date mistyped.
                match rng.random_range(0..3) {
                    0 => p.dob.0 += 1,
                    1 => p.dob.1 = p.dob.1 % 12 + 1,
                    _ => p.dob.2 = (p.dob.2 + 9) % 28 + 1,
                }
            }
            72..=76 => p.phone = Some(mobile(rng)),
            77..=80 => {
                if let Some(phone) = &p.phone {
                    p.phone = Some(typo_digit(rng, phone));
                }
            }
            81..=85 => p.email = Some(make_email(rng, &p.first, &p.last, p.dob.0)),
            86..=91 => p.address = world.address(rng),
            92..=93 => p.address.street = typo(rng, &p.address.street),
            94..=95 => {
                let city = &world.cities[p.address.city];
                p.address.postcode = rng.random_range(0..city.postcodes.len());
            }
            96..=97 => p.address.number += 1,
            _ => {
                if p.female {
                    p.last = world.surname(rng);
                } else {
                    p.address.street = typo(rng, &p.address.street);
                }
            }
        }
    }
    if dob_swap {
        std::mem::swap(&mut p.dob.1, &mut p.dob.2);
    }
    let city = &world.cities[p.address.city];
    let postcode = city.postcodes[p.address.postcode];
    let (street_type, abbreviation) = STREET_TYPES[p.address.street_type];
    let street_type = if rng.random_bool(0.3) {
        abbreviation
    } else {
        street_type
    };
    let (y, m, d) = p.dob;
    let dob = match rng.random_range(0..4) {
        0 => format!("{y:04}-{m:02}-{d:02}"),
        1 => format!("{d:02}/{m:02}/{y:04}"),
        2 => format!("{y:04}{m:02}{d:02}"),
        _ => format!("{d}/{m}/{y}"),
    };
    let phone = p.phone.as_deref().map(|ph| match rng.random_range(0..3) {
        0 => ph.to_owned(),
        1 => format!("+61 {} {} {}", &ph[1..4], &ph[4..7], &ph[7..]),
        _ => format!("{} {} {}", &ph[..4], &ph[4..7], &ph[7..]),
    });
    let case = rng.random_range(0..3);
    let cased = |s: &str| match case {
        0 => s.to_owned(),
        1 => s.to_uppercase(),
        _ => title(s),
    };
    let (first, last) = if swap_names {
        (p.last.clone(), p.first.clone())
    } else {
        (p.first.clone(), p.last.clone())
    };
    let mut row = Row {
        first: cased(&first),
        last: cased(&last),
        dob,
        sex: if p.female { "F" } else { "M" }.to_owned(),
        email: p.email.clone().unwrap_or_default(),
        phone: phone.unwrap_or_default(),
        number: p.address.number.to_string(),
        street: cased(&format!("{} {}", p.address.street, street_type)),
        city: cased(&city.name),
        postcode: postcode.to_string(),
        state: STATES[city.state].to_uppercase(),
    };
    for field in missing {
        match field {
            0 => row.first.clear(),
            1 => row.dob.clear(),
            2 => row.email.clear(),
            3 => row.phone.clear(),
            4 => row.number.clear(),
            5 => row.street.clear(),
            6 => row.city.clear(),
            7 => row.postcode.clear(),
            _ => row.sex.clear(),
        }
    }
    row
}

fn typo_digit(rng: &mut StdRng, phone: &str) -> String {
    let mut digits: Vec<u8> = phone.bytes().collect();
    let i = rng.random_range(2..digits.len());
    digits[i] = b'0' + rng.random_range(0..10u8);
    String::from_utf8(digits).unwrap_or_else(|_| phone.to_owned())
}

fn title(s: &str) -> String {
    s.split(' ')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Email addresses belong to one person: a taken one gets a number added.
fn unique_email(used: &mut std::collections::HashSet<String>, email: String) -> String {
    if used.insert(email.clone()) {
        return email;
    }
    let (local, domain) = email.split_once('@').unwrap_or((&email, "example.com"));
    let mut n = 2;
    loop {
        let candidate = format!("{local}{n}@{domain}");
        if used.insert(candidate.clone()) {
            return candidate;
        }
        n += 1;
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let options = parse_options()?;
    let mut rng = StdRng::seed_from_u64(options.seed);
    let world = World::new(&mut rng);
    // (person, copies beyond the first)
    let mut people: Vec<(Person, usize)> = Vec::new();
    let mut records = 0usize;
    let mut cluster = 0u64;
    let mut used_emails = std::collections::HashSet::new();
    while records < options.records {
        let head = world.person(&mut rng, cluster);
        cluster += 1;
        let mut household = vec![head.clone()];
        if rng.random_bool(0.12) {
            for _ in 0..rng.random_range(1..=3) {
                household.push(world.relative(&mut rng, &head, cluster));
                cluster += 1;
            }
        }
        for mut person in household {
            if let Some(email) = person.email.take() {
                person.email = Some(unique_email(&mut used_emails, email));
            }
            let copies = match rng.random_range(0..100) {
                0..=54 => 0,
                55..=79 => 1,
                80..=91 => 2,
                92..=96 => 3,
                _ => rng.random_range(4..=5),
            };
            records += 1 + copies;
            people.push((person, copies));
        }
    }
    let mut rows: Vec<(u64, usize, Row)> = Vec::with_capacity(records);
    for (person, copies) in &people {
        let faithful = render(&mut rng, &world, person, 0);
        rows.push((person.cluster, 0, faithful));
        for copy in 1..=*copies {
            let corruptions = rng.random_range(1..=4);
            let row = render(&mut rng, &world, person, corruptions);
            rows.push((person.cluster, copy, row));
        }
    }
    rows.truncate(options.records);
    rows.shuffle(&mut rng);
    let file = std::fs::File::create(&options.out)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    writeln!(
        out,
        "record_id,cluster_id,source,first_name,last_name,date_of_birth,sex,email,phone,street_number,street,city,postcode,state"
    )?;
    for (cluster, copy, r) in &rows {
        let source = SOURCES[rng.random_range(0..SOURCES.len())];
        writeln!(
            out,
            "p{cluster}-{copy},{cluster},{source},{},{},{},{},{},{},{},{},{},{},{}",
            r.first,
            r.last,
            r.dob,
            r.sex,
            r.email,
            r.phone,
            r.number,
            r.street,
            r.city,
            r.postcode,
            r.state
        )?;
    }
    out.flush()?;
    println!(
        "wrote {} records of {} people to {} (seed {})",
        rows.len(),
        cluster,
        options.out,
        options.seed
    );
    Ok(())
}
