//! Names a condition uses that the data has never shown: event names, trait names
//! and event property names absent from the index.
//!
//! Such a name is not an error — the first event with it may simply not have
//! arrived yet — but it is usually a typo, so the API answers it with a warning and
//! the closest observed name ("did you mean `Order Completed`?").

use crate::ast::Condition;
use crate::index::ProfileIndex;
use serde::Serialize;
use std::collections::BTreeSet;
use tessera_core::suggest::closest;

/// At most this many interned property sets are read for property-name suggestions
/// (enough to see every property of any realistic tracking plan).
const PROPERTY_SETS_READ: usize = 200_000;

/// A name never seen in the data, with the observed name it probably meant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NameWarning {
    /// `unknown_event`, `unknown_trait` or `unknown_property`.
    pub code: &'static str,
    /// The name as written.
    pub name: String,
    /// The closest observed name, if one is close.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
    /// For people: what was not seen and what was probably meant.
    pub message: String,
}

impl NameWarning {
    fn new(code: &'static str, what: &str, name: &str, suggestion: Option<String>) -> Self {
        let hint = suggestion
            .as_deref()
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        Self {
            code,
            name: name.to_owned(),
            message: format!("no {what} `{name}` has been seen yet{hint}"),
            suggestion,
        }
    }
}

/// A warning when no event of the index has the name `name`.
pub fn unknown_event(index: &ProfileIndex, name: &str) -> Option<NameWarning> {
    if index
        .symbols
        .get(name)
        .and_then(|s| index.postings(s))
        .is_some()
    {
        return None;
    }
    let suggestion = closest(name, index.event_names());
    Some(NameWarning::new("unknown_event", "event", name, suggestion))
}

/// A warning when no profile of the index has the trait (path) `name`.
pub fn unknown_trait(index: &ProfileIndex, name: &str) -> Option<NameWarning> {
    if index.trait_column(name).is_some() {
        return None;
    }
    let suggestion = closest(name, index.trait_paths());
    Some(NameWarning::new("unknown_trait", "trait", name, suggestion))
}

/// A warning when no event of the index has the property (path) `name`.
pub fn unknown_property(index: &ProfileIndex, name: &str) -> Option<NameWarning> {
    if index.has_property(name) {
        return None;
    }
    let names = index.property_names(PROPERTY_SETS_READ);
    let suggestion = closest(name, names.iter().copied());
    Some(NameWarning::new(
        "unknown_property",
        "event property",
        name,
        suggestion,
    ))
}

/// Every event, trait and property name of `condition` that the index has never
/// seen, each once, in the order they appear.
pub fn unknown_names(index: &ProfileIndex, condition: &Condition) -> Vec<NameWarning> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut push = |warning: Option<NameWarning>, out: &mut Vec<NameWarning>| {
        if let Some(w) = warning
            && seen.insert((w.code, w.name.clone()))
        {
            out.push(w);
        }
    };
    condition.walk(&mut |c| match c {
        Condition::Event(event) => {
            push(unknown_event(index, &event.name), &mut out);
            for filter in &event.filters {
                push(unknown_property(index, &filter.name), &mut out);
            }
        }
        Condition::Trait(test) => push(unknown_trait(index, &test.name), &mut out),
        _ => {}
    });
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::index::{EventInput, ProfileInput};
    use crate::language::parse_definition;
    use serde_json::{Map, json};

    fn index() -> ProfileIndex {
        let mut index = ProfileIndex::new();
        let mut traits = Map::new();
        traits.insert("plan".into(), json!("pro"));
        let properties = json!({"revenue": 42.5, "currency": "EUR"});
        index.upsert_profile(&ProfileInput {
            id: 1,
            traits,
            identifier_types: vec!["user_id".into()],
            events: vec![EventInput {
                timestamp_ms: 1,
                name: "Order Completed".into(),
                properties: properties.as_object().cloned().unwrap(),
                consent: Vec::new(),
            }],
        });
        index
    }

    #[test]
    fn seen_names_give_no_warning() {
        let condition = parse_definition(
            r#"event "Order Completed" where revenue > 10 and trait plan = "pro""#,
        )
        .unwrap();
        assert_eq!(unknown_names(&index(), &condition), Vec::new());
    }

    #[test]
    fn typos_are_warned_with_the_observed_name() {
        let condition = parse_definition(
            r#"event "Order Complted" where revenu > 10 and trait plna = "pro" and event "Order Complted""#,
        )
        .unwrap();
        let warnings = unknown_names(&index(), &condition);
        let found: Vec<(&str, &str, Option<&str>)> = warnings
            .iter()
            .map(|w| (w.code, w.name.as_str(), w.suggestion.as_deref()))
            .collect();
        assert_eq!(
            found,
            vec![
                ("unknown_event", "Order Complted", Some("Order Completed")),
                ("unknown_property", "revenu", Some("revenue")),
                ("unknown_trait", "plna", Some("plan")),
            ]
        );
        assert!(
            warnings[0]
                .message
                .ends_with("did you mean `Order Completed`?")
        );
    }
}
