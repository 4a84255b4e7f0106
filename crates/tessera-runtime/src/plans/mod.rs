//! Tracking plans: per source, the events it may send, a JSON Schema for each
//! event's properties and one for identify traits, and what to do with a message
//! that breaks the plan — `allow` (accept, record nothing), `flag` (store it and
//! record the violation) or `block` (refuse it with `tracking_plan_violation`).
//!
//! A plan is stored in the catalog under `tracking_plan/<source id>`. [`Plans`]
//! compiles each plan's schemas once and caches them per source, so the ingest hot
//! path only looks the source up and runs compiled validators. Violations are counted
//! in memory and merged into the catalog at most once a second ([`violations`]);
//! [`infer`] proposes a plan from the events a source sent.

pub mod infer;
pub mod violations;

use crate::json_depth::depth;
use crate::metrics::Metrics;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tessera_core::Rejection;
use tessera_core::message::MessageType;
use tessera_core::request::ValidatedRequest;
use tessera_core::{ErrorCode, UserError};
use tessera_store::{Catalog, StoreError};

/// The catalog key prefix of tracking plans.
pub const PLAN_PREFIX: &str = "tracking_plan/";
/// Largest plan, in bytes of JSON.
pub const MAX_PLAN_BYTES: usize = 256 * 1024;
/// Deepest nesting of a plan's JSON (schemas included).
pub const MAX_PLAN_DEPTH: usize = 32;
/// Most events in one plan.
pub const MAX_PLAN_EVENTS: usize = 1_000;
/// Most violations recorded for one message.
pub const MAX_VIOLATIONS_PER_MESSAGE: usize = 10;
/// How long a plan lookup is trusted.
const CACHE_TTL: Duration = Duration::from_secs(2);

/// What a plan does with a message that breaks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Accept it; record nothing.
    Allow,
    /// Store it and record the violation.
    Flag,
    /// Refuse it (`tracking_plan_violation` in the batch's `rejected`).
    Block,
}

impl Mode {
    /// The mode's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Allow => "allow",
            Mode::Flag => "flag",
            Mode::Block => "block",
        }
    }

    fn parse(name: &str) -> Option<Mode> {
        [Mode::Allow, Mode::Flag, Mode::Block]
            .into_iter()
            .find(|m| m.as_str() == name)
    }
}

/// One way a message breaks its plan.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Violation {
    /// The track event's name, or `identify`.
    pub event: String,
    /// The property or trait (dotted path), empty for the event itself.
    pub property: String,
    /// `unplanned_event` or the JSON Schema keyword that failed (`type`,
    /// `required`, `enum`, …).
    pub rule: String,
}

impl Violation {
    /// A description without the message's values.
    pub fn describe(&self) -> String {
        if self.rule == "unplanned_event" {
            format!(
                "event {:?} is not in the source's tracking plan",
                self.event
            )
        } else if self.property.is_empty() {
            format!(
                "{:?} fails the tracking plan's {:?} rule",
                self.event, self.rule
            )
        } else {
            format!(
                "{:?}: {:?} fails the tracking plan's {:?} rule",
                self.event, self.property, self.rule
            )
        }
    }
}

/// A plan with its schemas compiled.
pub struct CompiledPlan {
    /// The mode.
    pub mode: Mode,
    events: HashMap<String, Option<jsonschema::Validator>>,
    traits: Option<jsonschema::Validator>,
}

fn invalid(message: impl Into<String>) -> UserError {
    UserError::new(ErrorCode::InvalidTrackingPlan, message)
}

fn has_remote_ref(value: &Value) -> bool {
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref")
                    && !r.starts_with('#')
                {
                    return true;
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    false
}

fn compile_schema(schema: &Value, at: &str) -> Result<jsonschema::Validator, UserError> {
    if has_remote_ref(schema) {
        return Err(invalid(format!(
            "{at}: \"$ref\" may only point inside the plan (\"#/…\"); remote schemas are not fetched"
        )));
    }
    jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .map_err(|e| invalid(format!("{at}: not a valid JSON Schema: {e}")))
}

/// Checks a plan's JSON and compiles it.
pub fn compile(plan: &Value) -> Result<CompiledPlan, UserError> {
    if plan.to_string().len() > MAX_PLAN_BYTES {
        return Err(invalid(format!(
            "the plan is over {MAX_PLAN_BYTES} bytes of JSON"
        )));
    }
    if depth(plan) > MAX_PLAN_DEPTH {
        return Err(invalid(format!(
            "the plan nests deeper than {MAX_PLAN_DEPTH} levels"
        )));
    }
    let object = plan.as_object().ok_or_else(|| {
        invalid("a plan is a JSON object: {\"mode\": \"flag\", \"events\": {\"Order Completed\": {\"properties\": {…JSON Schema…}}}}")
    })?;
    for key in object.keys() {
        if !["mode", "events", "identify", "comment"].contains(&key.as_str()) {
            return Err(invalid(format!(
                "unknown field {key:?}: a plan has mode, events, identify and comment"
            )));
        }
    }
    let mode_name = object
        .get("mode")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("\"mode\" is required: allow, flag or block"))?;
    let mode = Mode::parse(mode_name).ok_or_else(|| {
        invalid(format!(
            "unknown mode {mode_name:?}: use allow, flag or block"
        ))
    })?;
    let events_json = match object.get("events") {
        None => Map::new(),
        Some(Value::Object(events)) => events.clone(),
        Some(_) => {
            return Err(invalid(
                "\"events\" must be an object of event name → rules",
            ));
        }
    };
    if events_json.len() > MAX_PLAN_EVENTS {
        return Err(invalid(format!(
            "the plan lists over {MAX_PLAN_EVENTS} events"
        )));
    }
    let mut events = HashMap::with_capacity(events_json.len());
    for (name, rules) in &events_json {
        if name.trim().is_empty() {
            return Err(invalid("an event name is empty"));
        }
        let rules = rules.as_object().ok_or_else(|| {
            invalid(format!(
                "events.{name}: rules are an object such as {{\"properties\": {{…}}}}"
            ))
        })?;
        if let Some(key) = rules
            .keys()
            .find(|k| !["properties", "description"].contains(&k.as_str()))
        {
            return Err(invalid(format!(
                "events.{name}: unknown field {key:?} (use properties, description)"
            )));
        }
        let validator = match rules.get("properties") {
            None | Some(Value::Null) => None,
            Some(schema) => Some(compile_schema(
                schema,
                &format!("events.{name}.properties"),
            )?),
        };
        events.insert(name.clone(), validator);
    }
    let traits = match object.get("identify") {
        None | Some(Value::Null) => None,
        Some(Value::Object(identify)) => {
            if let Some(key) = identify.keys().find(|k| k.as_str() != "traits") {
                return Err(invalid(format!(
                    "identify: unknown field {key:?} (use traits)"
                )));
            }
            match identify.get("traits") {
                None | Some(Value::Null) => None,
                Some(schema) => Some(compile_schema(schema, "identify.traits")?),
            }
        }
        Some(_) => {
            return Err(invalid(
                "\"identify\" must be an object {\"traits\": {…JSON Schema…}}",
            ));
        }
    };
    Ok(CompiledPlan {
        mode,
        events,
        traits,
    })
}

fn property_of(error: &jsonschema::ValidationError<'_>) -> String {
    let mut path: Vec<String> = error
        .instance_path()
        .as_str()
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    if let jsonschema::error::ValidationErrorKind::Required { property } = error.kind()
        && let Some(name) = property.as_str()
    {
        path.push(name.to_owned());
    }
    path.join(".")
}

fn schema_violations(
    validator: &jsonschema::Validator,
    instance: &Value,
    event: &str,
    out: &mut Vec<Violation>,
) {
    for error in validator
        .iter_errors(instance)
        .take(MAX_VIOLATIONS_PER_MESSAGE)
    {
        out.push(Violation {
            event: event.to_owned(),
            property: property_of(&error),
            rule: error.kind().keyword().to_owned(),
        });
    }
}

impl CompiledPlan {
    /// The violations of one message (its parsed body); empty when it keeps the plan.
    /// `allow` plans check nothing.
    pub fn check(&self, message_type: MessageType, body: &Map<String, Value>) -> Vec<Violation> {
        let mut out = Vec::new();
        if self.mode == Mode::Allow {
            return out;
        }
        let empty = Value::Object(Map::new());
        match message_type {
            MessageType::Track => {
                let event = body.get("event").and_then(Value::as_str).unwrap_or("");
                match self.events.get(event) {
                    None => out.push(Violation {
                        event: event.to_owned(),
                        property: String::new(),
                        rule: "unplanned_event".to_owned(),
                    }),
                    Some(None) => {}
                    Some(Some(validator)) => schema_violations(
                        validator,
                        body.get("properties").unwrap_or(&empty),
                        event,
                        &mut out,
                    ),
                }
            }
            MessageType::Identify => {
                if let Some(validator) = &self.traits {
                    schema_violations(
                        validator,
                        body.get("traits").unwrap_or(&empty),
                        "identify",
                        &mut out,
                    );
                }
            }
            _ => {}
        }
        out
    }
}

/// Reads and checks a plan from JSON text.
pub fn parse_plan(text: &[u8]) -> Result<Value, UserError> {
    if text.len() > MAX_PLAN_BYTES {
        return Err(invalid(format!(
            "the plan is over {MAX_PLAN_BYTES} bytes of JSON"
        )));
    }
    let plan: Value =
        serde_json::from_slice(text).map_err(|_| invalid("the plan is not valid JSON"))?;
    compile(&plan)?;
    Ok(plan)
}

/// Errors of plan storage.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The caller's input was wrong.
    #[error(transparent)]
    User(#[from] UserError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl tessera_core::CodedError for PlanError {
    fn code(&self) -> ErrorCode {
        match self {
            PlanError::User(user) => user.code,
            PlanError::Store(_) => ErrorCode::InternalError,
        }
    }

    fn user_message(&self) -> String {
        match self {
            PlanError::User(user) => user.message.clone(),
            PlanError::Store(store) => store.to_string(),
        }
    }
}

/// Stores a source's plan (checked first).
pub fn set_plan(catalog: &dyn Catalog, source_id: &str, plan: &Value) -> Result<(), PlanError> {
    compile(plan)?;
    catalog.set_setting(&format!("{PLAN_PREFIX}{source_id}"), &plan.to_string())?;
    Ok(())
}

/// A source's plan.
pub fn plan(catalog: &dyn Catalog, source_id: &str) -> Result<Option<Value>, PlanError> {
    let Some(text) = catalog.setting(&format!("{PLAN_PREFIX}{source_id}"))? else {
        return Ok(None);
    };
    Ok(Some(serde_json::from_str(&text).map_err(|e| {
        StoreError::Engine(format!("tracking plan of {source_id}: {e}"))
    })?))
}

/// Removes a source's plan; whether it had one.
pub fn delete_plan(catalog: &dyn Catalog, source_id: &str) -> Result<bool, PlanError> {
    Ok(catalog.delete_setting(&format!("{PLAN_PREFIX}{source_id}"))?)
}

/// A source's plan as looked up, and when.
type CachedPlan = (Option<Arc<CompiledPlan>>, Instant);

/// The compiled plan of each source, cached (a plan changed by the CLI applies
/// within two seconds), and the violations waiting to be stored.
pub struct Plans {
    catalog: Arc<dyn Catalog>,
    cache: RwLock<HashMap<String, CachedPlan>>,
    /// Violations counted since the last flush.
    pub violations: violations::Pending,
}

impl Plans {
    /// Plans over the catalog.
    pub fn new(catalog: Arc<dyn Catalog>) -> Self {
        Self {
            catalog,
            cache: RwLock::new(HashMap::new()),
            violations: violations::Pending::default(),
        }
    }

    /// The compiled plan of a source, if it has one. A stored plan that no longer
    /// compiles is logged and treated as absent.
    pub fn for_source(&self, source_id: &str) -> Result<Option<Arc<CompiledPlan>>, StoreError> {
        if let Some((plan, at)) = self
            .cache
            .read()
            .ok()
            .and_then(|cache| cache.get(source_id).map(|(p, at)| (p.clone(), *at)))
            && at.elapsed() < CACHE_TTL
        {
            return Ok(plan);
        }
        let stored = self.catalog.setting(&format!("{PLAN_PREFIX}{source_id}"))?;
        let compiled = stored.and_then(|text| {
            let value: Value = serde_json::from_str(&text).ok()?;
            match compile(&value) {
                Ok(plan) => Some(Arc::new(plan)),
                Err(error) => {
                    tracing::error!(source_id, %error, "the stored tracking plan does not compile; not applied");
                    None
                }
            }
        });
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(source_id.to_owned(), (compiled.clone(), Instant::now()));
        }
        Ok(compiled)
    }

    /// Forgets cached plans (after a change made through this process).
    pub fn invalidate(&self) {
        if let Ok(mut cache) = self.cache.write() {
            cache.clear();
        }
    }

    /// Applies the source's plan to a validated request: `flag` records the
    /// violations of the messages that break it; `block` also moves those messages to
    /// `rejected` (code `tracking_plan_violation`, the reasons without values).
    pub fn apply(
        &self,
        source_id: &str,
        validated: &mut ValidatedRequest,
        at_ms: i64,
        metrics: &Metrics,
    ) -> Result<(), StoreError> {
        let Some(plan) = self
            .for_source(source_id)?
            .filter(|p| p.mode != Mode::Allow)
        else {
            return Ok(());
        };
        // The request index of each accepted message: the indices not rejected.
        let refused: HashSet<usize> = validated.rejected.iter().map(|(i, _)| *i).collect();
        let mut indices = (0..).filter(|i| !refused.contains(i));
        let accepted = std::mem::take(&mut validated.accepted);
        let mut blocked = Vec::new();
        for message in accepted {
            let index = indices.next().unwrap_or_default();
            let violations = match message.body() {
                Ok(body) => plan.check(message.message_type, &body),
                Err(_) => Vec::new(),
            };
            if violations.is_empty() {
                validated.accepted.push(message);
                continue;
            }
            let block = plan.mode == Mode::Block;
            self.violations
                .record(source_id, &violations, &message.message_id, block, at_ms);
            metrics.plan_violations(plan.mode.as_str(), violations.len() as u64);
            if block {
                let reasons: Vec<String> = violations.iter().map(Violation::describe).collect();
                blocked.push((
                    index,
                    Rejection {
                        code: ErrorCode::TrackingPlanViolation,
                        message: format!(
                            "the source's tracking plan blocks this message: {}",
                            reasons.join("; ")
                        ),
                        message_type: Some(message.message_type),
                        message_id: Some(message.message_id),
                    },
                ));
            } else {
                validated.accepted.push(message);
            }
        }
        if !blocked.is_empty() {
            validated.rejected.extend(blocked);
            validated.rejected.sort_by_key(|(index, _)| *index);
        }
        Ok(())
    }

    /// Merges pending violations into the catalog when the last merge is over a
    /// second old (or `force`).
    pub fn flush(&self, force: bool) -> Result<(), StoreError> {
        self.violations.flush(self.catalog.as_ref(), force)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn flags_unplanned_events_and_schema_failures() {
        let plan = compile(&json!({
            "mode": "flag",
            "events": {
                "Order Completed": {"properties": {
                    "type": "object",
                    "properties": {"total": {"type": "number"}, "currency": {"enum": ["EUR", "USD"]}},
                    "required": ["order_id", "total"]
                }},
                "Signed Up": {}
            },
            "identify": {"traits": {"type": "object", "properties": {"email": {"type": "string", "format": "email"}}}}
        }))
        .unwrap();
        let ok = body(
            json!({"event": "Order Completed", "properties": {"order_id": "1", "total": 3.5, "currency": "EUR"}}),
        );
        assert!(plan.check(MessageType::Track, &ok).is_empty());
        assert!(
            plan.check(MessageType::Track, &body(json!({"event": "Signed Up"})))
                .is_empty()
        );
        let bad = body(
            json!({"event": "Order Completed", "properties": {"total": "3.5", "currency": "GBP"}}),
        );
        let mut found: Vec<(String, String)> = plan
            .check(MessageType::Track, &bad)
            .into_iter()
            .map(|v| (v.property, v.rule))
            .collect();
        found.sort();
        assert_eq!(
            found,
            [
                ("currency".into(), "enum".into()),
                ("order_id".into(), "required".into()),
                ("total".into(), "type".into())
            ]
        );
        let unplanned = plan.check(MessageType::Track, &body(json!({"event": "Clicked"})));
        assert_eq!(unplanned[0].rule, "unplanned_event");
        assert!(!unplanned[0].describe().contains("3.5"));
        let traits = plan.check(
            MessageType::Identify,
            &body(json!({"traits": {"email": "nope"}})),
        );
        assert_eq!(
            (traits[0].property.as_str(), traits[0].rule.as_str()),
            ("email", "format")
        );
        assert!(plan.check(MessageType::Page, &body(json!({}))).is_empty());
    }

    #[test]
    fn allow_checks_nothing() {
        let plan = compile(&json!({"mode": "allow", "events": {}})).unwrap();
        assert!(
            plan.check(MessageType::Track, &body(json!({"event": "X"})))
                .is_empty()
        );
    }

    #[test]
    fn bad_plans_are_refused_with_the_place() {
        for (plan, needle) in [
            (json!([]), "JSON object"),
            (json!({"mode": "warn"}), "unknown mode"),
            (json!({"mode": "flag", "evnts": {}}), "unknown field"),
            (
                json!({"mode": "flag", "events": {"A": {"properties": {"type": "nope"}}}}),
                "events.A.properties",
            ),
            (
                json!({"mode": "flag", "events": {"A": {"properties": {"$ref": "https://example.com/s.json"}}}}),
                "remote",
            ),
            (json!({"mode": "flag", "events": {"A": 1}}), "events.A"),
            (
                json!({"mode": "flag", "identify": {"trait": {}}}),
                "identify",
            ),
        ] {
            let error = compile(&plan).err().unwrap();
            assert_eq!(error.code, ErrorCode::InvalidTrackingPlan);
            assert!(error.message.contains(needle), "{plan}: {}", error.message);
        }
        let mut deep = json!({"type": "object"});
        for _ in 0..40 {
            deep = json!({"properties": {"a": deep}});
        }
        assert!(compile(&json!({"mode": "flag", "events": {"A": {"properties": deep}}})).is_err());
    }
}
