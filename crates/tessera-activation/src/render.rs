//! Templates (minijinja, Jinja syntax) over the profile and the event.
//!
//! The context of every template:
//! - `profile.id`, `traits` (the profile's traits, e.g. `{{ traits.first_name }}`),
//!   `computed` (computed traits);
//! - `event` (the triggering Segment message: `{{ event.properties.sku }}`);
//! - `journey` (its key, when a journey sends).
//!
//! HTML templates escape values automatically; text templates do not.

use crate::config::ConfigError;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde_json::Value;

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env
}

/// Checks that a template parses.
pub fn check_template(source: &str) -> Result<(), ConfigError> {
    let env = environment();
    env.template_from_str(source)
        .map(|_| ())
        .map_err(|e| ConfigError(format!("template does not parse: {e}")))
}

/// Renders a text template.
pub fn render_text(source: &str, context: &Value) -> Result<String, String> {
    render(source, "text", context)
}

/// Renders an HTML template (values escaped).
pub fn render_html(source: &str, context: &Value) -> Result<String, String> {
    render(source, "body.html", context)
}

fn render(source: &str, name: &str, context: &Value) -> Result<String, String> {
    let env = environment();
    let template = env
        .template_from_named_str(name, source)
        .map_err(|e| format!("template: {e}"))?;
    template
        .render(context)
        .map_err(|e| format!("template: {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_and_html() {
        let ctx =
            json!({"traits": {"first_name": "Ada <3"}, "event": {"properties": {"sku": "S-1"}}});
        assert_eq!(
            render_text(
                "Hi {{ traits.first_name }}, {{ event.properties.sku }}{{ traits.nope }}",
                &ctx
            ),
            Ok("Hi Ada <3, S-1".to_string())
        );
        assert_eq!(
            render_html("<p>{{ traits.first_name }}</p>", &ctx),
            Ok("<p>Ada &lt;3</p>".to_string())
        );
        assert!(check_template("{% if %}").is_err());
    }
}
