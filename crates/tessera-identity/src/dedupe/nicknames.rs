//! A small built-in table of English given names and their common short forms, so
//! that `bill` and `william`, or `liz` and `beth`, compare as very similar although
//! their spellings are far apart. A name may belong to several groups (`chris` is
//! Christopher or Christine); two names are equivalent when they share one.

use std::sync::OnceLock;

/// Each group: the formal name first, then its short forms.
const GROUPS: &[&[&str]] = &[
    &[
        "william", "bill", "billy", "will", "willy", "willie", "liam",
    ],
    &["robert", "bob", "bobby", "rob", "robbie", "bert"],
    &[
        "elizabeth",
        "liz",
        "lizzie",
        "beth",
        "betty",
        "bette",
        "eliza",
        "libby",
        "elsie",
    ],
    &[
        "margaret", "maggie", "meg", "peggy", "marge", "margie", "greta",
    ],
    &["katherine", "kate", "katie", "kathy", "kat", "kit", "kath"],
    &["catherine", "cathy", "cat", "kate", "katie", "cate"],
    &["james", "jim", "jimmy", "jamie", "jimmie"],
    &["john", "jack", "johnny", "jon"],
    &["jonathan", "jon", "jonny", "nathan"],
    &["michael", "mike", "mick", "mickey", "mikey"],
    &["richard", "dick", "rick", "ricky", "rich", "richie"],
    &["thomas", "tom", "tommy"],
    &["anthony", "tony", "ant"],
    &["joseph", "joe", "joey", "jo"],
    &["josephine", "jo", "josie"],
    &["daniel", "dan", "danny"],
    &["david", "dave", "davey", "davy"],
    &["stephen", "steve", "stevie", "steven"],
    &["christopher", "chris", "kit", "topher"],
    &["christine", "chris", "chrissy", "tina", "christina"],
    &["matthew", "matt", "matty"],
    &["nicholas", "nick", "nicky", "nico"],
    &["alexander", "alex", "al", "sandy", "xander"],
    &["alexandra", "alex", "sandra", "sandy", "lexie", "alexa"],
    &["samuel", "sam", "sammy"],
    &["samantha", "sam", "sammy"],
    &["benjamin", "ben", "benny", "benji"],
    &["edward", "ed", "eddie", "ted", "teddy", "ned"],
    &["henry", "harry", "hal", "hank"],
    &["patricia", "pat", "patty", "trish", "tricia"],
    &["patrick", "pat", "paddy"],
    &["susan", "sue", "susie", "suzy"],
    &["jennifer", "jen", "jenny", "jenn"],
    &["jessica", "jess", "jessie"],
    &["rebecca", "becky", "becca", "bec"],
    &["abigail", "abby", "abbie", "gail"],
    &["andrew", "andy", "drew"],
    &["charles", "charlie", "chuck", "chas"],
    &["frederick", "fred", "freddie", "freddy"],
    &["gregory", "greg"],
    &["jeffrey", "jeff", "geoff", "geoffrey"],
    &["lawrence", "larry", "laurie"],
    &["timothy", "tim", "timmy"],
    &["victoria", "vicky", "vicki", "tori"],
    &["zachary", "zach", "zack"],
    &["nathaniel", "nate", "nathan", "nat"],
    &["joshua", "josh"],
    &["amanda", "mandy"],
    &["deborah", "deb", "debbie", "debra"],
    &["dorothy", "dot", "dotty", "dolly"],
    &["kimberly", "kim", "kimmy"],
    &["jacqueline", "jackie", "jacqui"],
    &["barbara", "barb", "barbie"],
    &["theodore", "theo", "ted", "teddy"],
    &["douglas", "doug"],
    &["kenneth", "ken", "kenny"],
    &["ronald", "ron", "ronnie"],
    &["donald", "don", "donnie"],
    &["raymond", "ray"],
    &["gerald", "gerry", "jerry"],
    &["peter", "pete"],
    &["philip", "phil", "phillip"],
    &["leonard", "leo", "len", "lenny"],
    &["albert", "al", "bert", "bertie"],
    &["mary", "molly", "polly", "mae"],
    &["sarah", "sara", "sally", "sadie"],
    &["ann", "anne", "anna", "annie", "nancy", "hannah"],
    &["helen", "nell", "nellie", "ellie"],
    &["eleanor", "ellie", "nora", "nell"],
    &["isabella", "bella", "izzy", "isabel", "isabelle"],
    &["madeline", "maddie", "madison", "madeleine"],
    &["natalie", "nat", "natty"],
    &["olivia", "liv", "livvy"],
    &["penelope", "penny"],
    &["virginia", "ginny", "ginger"],
    &["cynthia", "cindy"],
    &["frances", "fran", "frankie"],
    &["francis", "frank", "frankie"],
    &["gabriel", "gabe"],
    &["gabrielle", "gabby", "gabi"],
    &["vincent", "vince", "vinnie"],
    &["walter", "walt", "wally"],
    &["eugene", "gene"],
    &["harold", "harry", "hal"],
    &["louis", "lou", "louie"],
    &["louise", "lou", "lulu"],
    &["terence", "terry"],
    &["teresa", "terri", "tess", "tessa", "theresa"],
];

/// Every name of the table with its group, sorted by name (binary search is as quick
/// as hashing for a table this size, and most names are not in it).
fn index() -> &'static [(&'static str, u16)] {
    static INDEX: OnceLock<Vec<(&'static str, u16)>> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut entries: Vec<(&'static str, u16)> = GROUPS
            .iter()
            .enumerate()
            .flat_map(|(group, names)| {
                let group = u16::try_from(group).unwrap_or(u16::MAX);
                names.iter().map(move |name| (*name, group))
            })
            .collect();
        entries.sort_unstable();
        entries
    })
}

fn groups_of(name: &str) -> &'static [(&'static str, u16)] {
    let index = index();
    let start = index.partition_point(|(n, _)| *n < name);
    let end = start + index[start..].partition_point(|(n, _)| *n == name);
    &index[start..end]
}

/// Whether `a` and `b` (normalized given names) are forms of one name: `bill` and
/// `william`, `bob` and `robbie`. A name is not its own nickname here.
pub fn are_nicknames(a: &str, b: &str) -> bool {
    if a == b {
        return false;
    }
    let ga = groups_of(a);
    if ga.is_empty() {
        return false;
    }
    let gb = groups_of(b);
    ga.iter().any(|(_, g)| gb.iter().any(|(_, h)| g == h))
}

/// The formal name of every group (`william`, `robert`, ...), in table order.
pub fn formal_names() -> impl Iterator<Item = &'static str> {
    GROUPS.iter().filter_map(|group| group.first().copied())
}

/// The other forms of `name` in every group that holds it (`william` → `bill`,
/// `billy`, ...; `bill` → `william`, `billy`, ...), without `name` itself.
pub fn other_forms(name: &str) -> Vec<&'static str> {
    let mut forms: Vec<&'static str> = GROUPS
        .iter()
        .filter(|group| group.contains(&name))
        .flat_map(|group| group.iter().copied())
        .filter(|form| *form != name)
        .collect();
    forms.sort_unstable();
    forms.dedup();
    forms
}

/// One spelling for every form of a name: the formal name of the first group that
/// holds `name` (`bill` → `william`), or `name` itself when no group does.
pub fn canonical(name: &str) -> &str {
    match groups_of(name).first() {
        Some(&(_, group)) => GROUPS
            .get(usize::from(group))
            .and_then(|g| g.first().copied())
            .unwrap_or(name),
        None => name,
    }
}

/// How many groups the table holds (for documentation and tests).
pub fn group_count() -> usize {
    GROUPS.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nickname_table_recognises_forms_of_one_name() {
        let cases = [
            ("bill", "william", true),
            ("bob", "robert", true),
            ("liz", "elizabeth", true),
            ("liz", "beth", true),
            ("chris", "christine", true),
            ("chris", "christopher", true),
            ("christine", "christopher", false),
            ("bill", "robert", false),
            ("william", "william", false),
            ("zorro", "william", false),
        ];
        for (a, b, same) in cases {
            assert_eq!(are_nicknames(a, b), same, "{a}/{b}");
            assert_eq!(are_nicknames(b, a), same, "{b}/{a}");
        }
        assert!(group_count() >= 30);
    }
}
