//! The audit log: who changed what, appended by every admin action of the API and
//! the CLI alike.

use serde_json::Value;
use tessera_store::{AuditEntry, Catalog};

/// Appends one entry to the audit log. A failure is logged, never returned: the
/// action it records has already happened and must not be reported as failed.
pub fn record_audit(
    catalog: &dyn Catalog,
    actor: &str,
    action: &str,
    target: &str,
    before: Option<&Value>,
    after: Option<&Value>,
) {
    let entry = AuditEntry {
        id: 0,
        at_ms: chrono::Utc::now().timestamp_millis(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
        before: before.map(Value::to_string),
        after: after.map(Value::to_string),
    };
    if let Err(error) = catalog.append_audit(&entry) {
        tracing::error!(%error, action, "could not append to the audit log");
    }
}
