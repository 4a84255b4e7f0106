//! Insight requests answered on the audience engine: the `where` condition checked
//! as an audience definition, the query compiled for the engine's reporting time
//! zone and clock, run under its read lock ([`AudienceEngine::insight`]), with
//! warnings for names the data has never shown; and a funnel's drop-offs saved as
//! an audience. The HTTP edge and the CLI both go through here.
//!
//! Kept apart from [`crate::insights`] (pure computations over the index) so that
//! module does not depend on the engine, which depends on it.

use crate::ast::Condition;
use crate::engine::AudienceEngine;
use crate::insights::funnels::{FunnelAnswer, FunnelRequest};
use crate::insights::{BreakdownValues, EventStep, InsightError, InsightRequest, invalid};
use serde_json::Value;

/// An answer with the names it used that the data has never shown.
pub struct Answered<A> {
    /// The answer.
    pub answer: A,
    /// Unknown event, property and trait names, each with the closest seen name.
    pub warnings: Vec<crate::names::NameWarning>,
}

/// Checks and runs an insight request on the engine's index: the `where`
/// condition as an audience definition, then the query under the read lock.
pub fn answer<R: InsightRequest>(
    engine: &AudienceEngine,
    request: &R,
) -> Result<Answered<R::Answer>, crate::engine::EngineError> {
    let filter = filter_condition(engine, request.filter())?;
    let (zone, now_ms) = engine.insight_clock();
    let query = request.compile(zone, now_ms)?;
    let warnings = name_warnings(engine, R::names(&query), filter.as_ref());
    let answer = engine.insight(filter.as_ref(), |input| R::run(&query, input))?;
    Ok(Answered { answer, warnings })
}

/// A request's `where`, checked as an audience definition.
pub fn filter_condition(
    engine: &AudienceEngine,
    filter: Option<&Value>,
) -> Result<Option<Condition>, crate::engine::EngineError> {
    match filter {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(engine.check_definition(text, None)?)),
        Some(tree @ Value::Object(_)) => Ok(Some(engine.check_definition(&tree.to_string(), None)?)),
        Some(_) => Err(invalid(
            "\"where\" must be an audience condition: the text form (a string) or the JSON form (an object)",
        )
        .into()),
    }
}

/// Warnings for the event, property and trait names (and the filter's names) no
/// data has shown.
pub fn name_warnings(
    engine: &AudienceEngine,
    (events, properties, traits): (Vec<&str>, Vec<&str>, Vec<&str>),
    filter: Option<&Condition>,
) -> Vec<crate::names::NameWarning> {
    let mut warnings: Vec<crate::names::NameWarning> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for name in events {
        if seen.insert(("e", name)) {
            warnings.extend(engine.unknown_event(name));
        }
    }
    for name in properties {
        if seen.insert(("p", name)) {
            warnings.extend(engine.unknown_property(name));
        }
    }
    for name in traits {
        if seen.insert(("t", name)) {
            warnings.extend(engine.unknown_trait(name));
        }
    }
    if let Some(filter) = filter {
        warnings.extend(engine.unknown_names(filter));
    }
    warnings
}

/// A funnel answered and its drop-offs at one step saved as an audience.
pub struct SavedDropped {
    /// The funnel.
    pub answer: FunnelAnswer,
    /// Names no data has shown.
    pub warnings: Vec<crate::names::NameWarning>,
    /// The audience created.
    pub audience: crate::engine::AudienceDefinition,
    /// How many people it lists.
    pub members: usize,
}

/// Runs a funnel and creates an audience of the people who reached step
/// `save_dropped.step - 1` but not `save_dropped.step`: `profile in [...]`, a fixed
/// list of the profiles they are now, which the engine evaluates like any
/// audience (computed by its next tick, its changes in the feed).
pub fn save_dropped(
    engine: &AudienceEngine,
    request: &FunnelRequest,
) -> Result<SavedDropped, crate::engine::EngineError> {
    let Some(save) = &request.save_dropped else {
        return Err(
            invalid("\"saveDropped\" is missing: give {\"step\": 2, \"key\": \"...\"}").into(),
        );
    };
    let filter = filter_condition(engine, request.filter.as_ref())?;
    let (zone, now_ms) = engine.insight_clock();
    let query = request.compile(zone, now_ms)?;
    if !(2..=query.steps.len()).contains(&save.step) {
        return Err(invalid(format!(
            "\"saveDropped.step\" must be from 2 to {} (the step the people did not reach)",
            query.steps.len()
        ))
        .into());
    }
    let warnings = name_warnings(engine, query.names(), filter.as_ref());
    let (answer, mut ids) = engine.insight(filter.as_ref(), |input| {
        let mut values = BreakdownValues::new(input.index, query.breakdown.as_ref());
        let people = query.people_with(input, &mut values);
        let ids: Vec<i64> = people
            .iter()
            .filter(|p| p.reached == save.step - 1)
            .map(|p| input.index.profile_id(p.slot))
            .collect();
        (query.answer(&people, &values), ids)
    });
    if ids.len() > crate::ast::MAX_PROFILE_LIST {
        return Err(InsightError::TooLarge(format!(
            "{} people dropped at step {}: an audience lists at most {}; narrow the range or add a where condition",
            ids.len(),
            save.step,
            crate::ast::MAX_PROFILE_LIST
        ))
        .into());
    }
    ids.sort_unstable();
    let members = ids.len();
    let steps: Vec<String> = query.steps.iter().map(EventStep::text).collect();
    let description = format!(
        "Dropped at step {} of the funnel {} ({} within {}, entered {} to {}), as of {}",
        save.step,
        steps.join(" -> "),
        query.order.name(),
        String::from(query.window),
        answer.from,
        answer.to,
        zone.format(now_ms),
    );
    let name = if save.name.trim().is_empty() {
        save.key.clone()
    } else {
        save.name.clone()
    };
    let definition = crate::language::print(&crate::ast::Condition::Profiles(ids));
    let audience = engine.create(&save.key, &name, &description, &definition)?;
    Ok(SavedDropped {
        answer,
        warnings,
        audience,
        members,
    })
}
