//! What a destination or a journey names must exist: the one check every way of
//! saving a definition goes through (the HTTP API, the CLI, the configuration file
//! at start — all call [`crate::Activation::save_destination`] and
//! [`crate::Activation::save_journey`], which call these first).
//!
//! - Refused (`invalid_activation`, naming the closest existing name): an audience
//!   that does not exist in a destination's `filter.memberOf` or `filter.audiences`,
//!   in a journey's `trigger.audienceEntered` or in an `if` condition
//!   (`audience "KEY"`); a computed trait that does not exist in an `if` condition.
//!   A journey's `send` to a destination that does not exist is refused when the
//!   journey compiles ([`crate::config::Journey::compile`]).
//! - Warned: event, trait and property names never seen in the data (a trigger's or
//!   a `waitUntil`'s event, an `if` condition's names), each with the closest
//!   observed name. No warnings while the audience index is not built (the CLI never
//!   builds it): which names were seen is not known then.

use crate::config::{ConfigError, Destination, Journey, Step};
use std::collections::HashSet;
use tessera_audience::engine::AudienceEngine;
use tessera_audience::names::NameWarning;
use tessera_core::CodedError;

/// Journeys nest `then`/`else` at most this deep when checked (deeper steps are
/// refused by the journey's own validation).
const MAX_DEPTH: usize = 64;

/// A refusal for a reference to an audience that does not exist at `place`, naming
/// the closest existing key.
fn no_audience(keys: &[String], place: &str, key: &str) -> ConfigError {
    ConfigError(format!(
        "{place}: no audience {key:?}{} (GET /api/v1/audiences lists them)",
        tessera_core::suggest::did_you_mean(key, keys)
    ))
}

/// Refuses a destination whose filter names an audience that does not exist.
pub fn check_destination(
    audiences: &AudienceEngine,
    destination: &Destination,
) -> Result<(), ConfigError> {
    let filter = &destination.filter;
    if filter.member_of.is_none() && filter.audiences.is_empty() {
        return Ok(());
    }
    let keys = audiences.audience_keys();
    if let Some(key) = &filter.member_of
        && !keys.contains(key)
    {
        return Err(no_audience(&keys, "filter.memberOf", key));
    }
    for (i, key) in filter.audiences.iter().enumerate() {
        if !keys.contains(key) {
            return Err(no_audience(&keys, &format!("filter.audiences[{i}]"), key));
        }
    }
    Ok(())
}

/// Refuses a journey naming an audience or a computed trait that does not exist;
/// answers the names never seen in the data as warnings (each once).
pub fn check_journey(
    audiences: &AudienceEngine,
    journey: &Journey,
) -> Result<Vec<NameWarning>, ConfigError> {
    let warn = audiences.is_ready();
    let mut warnings = Vec::new();
    if let Some(key) = &journey.trigger.audience_entered {
        let keys = audiences.audience_keys();
        if !keys.contains(key) {
            return Err(no_audience(&keys, "trigger.audienceEntered", key));
        }
    }
    if warn && let Some(event) = &journey.trigger.event {
        warnings.extend(audiences.unknown_event(event));
    }
    check_steps(audiences, warn, &journey.steps, "steps", 0, &mut warnings)?;
    let mut seen = HashSet::new();
    warnings.retain(|w| seen.insert((w.code, w.name.clone())));
    Ok(warnings)
}

fn check_steps(
    audiences: &AudienceEngine,
    warn: bool,
    steps: &[Step],
    path: &str,
    depth: usize,
    warnings: &mut Vec<NameWarning>,
) -> Result<(), ConfigError> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    for (i, step) in steps.iter().enumerate() {
        let here = format!("{path}[{i}]");
        if let Some(text) = &step.condition {
            // A condition that does not parse is reported when the journey compiles.
            if tessera_audience::language::parse_definition(text).is_ok() {
                let condition = audiences
                    .check_definition(text, None)
                    .map_err(|e| ConfigError(format!("{here}.if: {}", e.user_message())))?;
                if warn {
                    warnings.extend(audiences.unknown_names(&condition));
                }
            }
        }
        if warn && let Some(wait) = &step.wait_until {
            warnings.extend(audiences.unknown_event(&wait.event));
        }
        check_steps(
            audiences,
            warn,
            &step.then,
            &format!("{here}.then"),
            depth + 1,
            warnings,
        )?;
        check_steps(
            audiences,
            warn,
            &step.otherwise,
            &format!("{here}.else"),
            depth + 1,
            warnings,
        )?;
    }
    Ok(())
}

/// The destinations and journeys that name the audience `key` (filters, triggers,
/// `if` conditions), as `destination "id"` / `journey "key"`: deleting it would
/// leave them pointing at nothing.
pub fn audience_users<'a>(
    key: &str,
    destinations: impl IntoIterator<Item = &'a Destination>,
    journeys: impl IntoIterator<Item = &'a Journey>,
) -> Vec<String> {
    fn in_steps(key: &str, steps: &[Step], depth: usize) -> bool {
        depth <= MAX_DEPTH
            && steps.iter().any(|step| {
                step.condition.as_deref().is_some_and(|text| {
                    tessera_audience::language::parse_definition(text)
                        .is_ok_and(|c| c.referenced_audiences().contains(&key))
                }) || in_steps(key, &step.then, depth + 1)
                    || in_steps(key, &step.otherwise, depth + 1)
            })
    }
    let mut users: Vec<String> = destinations
        .into_iter()
        .filter(|d| {
            d.filter.member_of.as_deref() == Some(key)
                || d.filter.audiences.iter().any(|a| a == key)
        })
        .map(|d| format!("destination {:?}", d.id))
        .collect();
    users.extend(
        journeys
            .into_iter()
            .filter(|j| {
                j.trigger.audience_entered.as_deref() == Some(key) || in_steps(key, &j.steps, 0)
            })
            .map(|j| format!("journey {:?}", j.key)),
    );
    users
}

/// Why an audience that `users` name cannot be deleted (see [`audience_users`]).
pub fn audience_in_use(key: &str, users: &[String]) -> String {
    format!(
        "audience {key:?} is used by {}: change or delete them first",
        users.join(", ")
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_users_of_an_audience_are_named() {
        let destinations: Vec<Destination> = [
            json!({"id": "crm", "type": "webhook", "settings": {"url": "http://127.0.0.1:9/"},
                   "filter": {"memberOf": "vip"}}),
            json!({"id": "feed", "type": "webhook", "settings": {"url": "http://127.0.0.1:9/"},
                   "filter": {"audiences": ["other", "vip"]}}),
            json!({"id": "all", "type": "webhook", "settings": {"url": "http://127.0.0.1:9/"}}),
        ]
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
        let journeys: Vec<Journey> = [
            json!({"key": "welcome", "trigger": {"audienceEntered": "vip"}, "steps": []}),
            json!({"key": "nested", "trigger": {"event": "E"}, "steps": [
                {"if": "trait a = 1", "then": [{"if": "audience \"vip\"", "then": [{"exit": true}]}]}]}),
            json!({"key": "unrelated", "trigger": {"event": "E"}, "steps": [
                {"if": "audience \"vipp\"", "then": [{"exit": true}]}]}),
        ]
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
        assert_eq!(
            audience_users("vip", &destinations, &journeys),
            vec![
                "destination \"crm\"",
                "destination \"feed\"",
                "journey \"welcome\"",
                "journey \"nested\""
            ]
        );
        assert!(audience_users("nobody", &destinations, &journeys).is_empty());
    }
}
