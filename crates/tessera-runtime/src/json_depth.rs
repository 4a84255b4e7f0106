//! How deeply a JSON value nests, for the limits on bodies, mappings and schemas.

use serde_json::Value;

/// Nesting depth of `value` (a scalar is 1). Iterative, so a deep body cannot exhaust
/// the stack.
pub(crate) fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 1usize)];
    while let Some((value, level)) = stack.pop() {
        deepest = deepest.max(level);
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, level + 1))),
            Value::Object(map) => stack.extend(map.values().map(|v| (v, level + 1))),
            _ => {}
        }
    }
    deepest
}
