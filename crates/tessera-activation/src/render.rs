//! Templates (minijinja, Jinja syntax) over the profile and the event.
//!
//! The context of every template:
//! - `profile.id`, `traits` (the profile's traits, e.g. `{{ traits.first_name }}`),
//!   `computed` (computed traits);
//! - `event` (the triggering Segment message: `{{ event.properties.sku }}`);
//! - `journey` (its key, when a journey sends).
//!
//! HTML templates escape values automatically; text templates do not.
//!
//! Every render has a budget, so no template can hold up activation: at most
//! [`TEMPLATE_FUEL`] instructions (minijinja's fuel), [`MAX_OUTPUT_BYTES`] of output
//! and [`RECURSION_LIMIT`] levels of nesting. A template whose render of a sample
//! context already exceeds the budget is refused when it is saved
//! ([`check_budget`]); one that exceeds it only with some person's data fails that
//! delivery ([`RenderError::Budget`]).

use crate::error::ConfigError;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde_json::{Value, json};
use std::io::Write;

/// Most template instructions one render may execute (minijinja fuel). A loop
/// iteration costs a few; a sizeable real email (a loop over 1,000 cart items)
/// stays far below.
pub const TEMPLATE_FUEL: u64 = 200_000;
/// Largest output of one render, in bytes (256 KB).
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;
/// Deepest nesting of loops, conditions and calls in one render.
pub const RECURSION_LIMIT: usize = 64;

/// Why a render failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The template exceeded its budget (fuel, output size or nesting).
    #[error("template over budget: {0}")]
    Budget(String),
    /// The template did not parse or failed on this data, or left nothing to send
    /// (the message says which).
    #[error("{0}")]
    Failed(String),
}

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
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    env
}

/// Checks that a template parses.
pub fn check_template(source: &str) -> Result<(), ConfigError> {
    let env = environment();
    env.template_from_str(source)
        .map(|_| ())
        .map_err(|e| ConfigError(format!("template does not parse: {e}")))
}

/// The context templates are tried with when they are saved: a person with an
/// email address, a phone number and a name, and a `track` event.
pub fn sample_context() -> Value {
    json!({
        "profile": {"id": 1},
        "traits": {"email": "sample@example.com", "phone": "+15005550006",
                   "first_name": "Sample", "last_name": "Person", "name": "Sample Person"},
        "computed": {},
        "traitSources": {},
        "event": {"type": "track", "event": "Sample Event", "userId": "sample-user",
                  "messageId": "sample", "properties": {}, "context": {}, "traits": {}},
        "journey": {"key": "sample"},
    })
}

/// Renders a template with the sample context and refuses it when that alone
/// exceeds the budget (other failures depend on the data and are left to sends).
pub fn check_budget(source: &str, html: bool) -> Result<(), RenderError> {
    let name = if html { "body.html" } else { "text" };
    match render(source, name, &sample_context()) {
        Err(RenderError::Budget(why)) => Err(RenderError::Budget(why)),
        _ => Ok(()),
    }
}

/// Renders a text template.
pub fn render_text(source: &str, context: &Value) -> Result<String, RenderError> {
    render(source, "text", context)
}

/// Renders an HTML template (values escaped).
pub fn render_html(source: &str, context: &Value) -> Result<String, RenderError> {
    render(source, "body.html", context)
}

/// Collects output up to [`MAX_OUTPUT_BYTES`]; past it, writing fails and the
/// render stops.
struct CappedOutput {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_OUTPUT_BYTES {
            self.overflowed = true;
            return Err(std::io::Error::other("output limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn render(source: &str, name: &str, context: &Value) -> Result<String, RenderError> {
    let env = environment();
    let template = env
        .template_from_named_str(name, source)
        .map_err(|e| RenderError::Failed(format!("template: {e}")))?;
    let mut output = CappedOutput {
        bytes: Vec::new(),
        overflowed: false,
    };
    let rendered = template.render_captured_to(context, &mut output);
    if output.overflowed {
        return Err(RenderError::Budget(format!(
            "the output is larger than {} KB",
            MAX_OUTPUT_BYTES / 1024
        )));
    }
    match rendered {
        Ok(_) => String::from_utf8(output.bytes)
            .map_err(|_| RenderError::Failed("template: the output is not UTF-8".into())),
        Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(RenderError::Budget(format!(
            "it needs more than {TEMPLATE_FUEL} steps (loops too long or nested)"
        ))),
        Err(e) if e.to_string().contains("recursion limit exceeded") => Err(RenderError::Budget(
            format!("it nests deeper than {RECURSION_LIMIT} levels"),
        )),
        Err(e) => Err(RenderError::Failed(format!("template: {e}"))),
    }
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

    #[test]
    fn nested_long_loops_run_out_of_fuel_quickly() {
        let bomb =
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
        let started = std::time::Instant::now();
        let error = check_budget(bomb, false).unwrap_err();
        assert!(matches!(error, RenderError::Budget(_)), "{error}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // Without output it is the fuel that stops it.
        let silent =
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        let error = render_text(silent, &json!({})).unwrap_err();
        assert!(error.to_string().contains("steps"), "{error}");
    }

    #[test]
    fn output_is_capped() {
        let big = "{{ 'x' * 10000000 }}";
        let error = render_text(big, &json!({})).unwrap_err();
        assert!(
            matches!(&error, RenderError::Budget(m) if m.contains("KB")),
            "{error}"
        );
        let fine = "{% for i in range(1000) %}{{ i }},{% endfor %}";
        assert!(check_budget(fine, false).is_ok());
        assert!(render_text(fine, &json!({})).unwrap().len() < MAX_OUTPUT_BYTES);
    }

    #[test]
    fn data_dependent_templates_pass_the_check_and_fail_on_big_data() {
        let template = "{% for i in range(traits.n | default(1)) %}{% for j in range(traits.n | default(1)) %}{{ j }}{% endfor %}{% endfor %}";
        assert!(check_budget(template, false).is_ok());
        let error = render_text(template, &json!({"traits": {"n": 90000}})).unwrap_err();
        assert!(matches!(error, RenderError::Budget(_)), "{error}");
    }

    #[test]
    fn failures_on_the_sample_that_are_not_the_budget_pass_the_check() {
        assert!(check_budget("{{ traits.n + 'x' }}", false).is_ok());
    }
}
