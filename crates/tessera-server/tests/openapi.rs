//! The OpenAPI document (`openapi.json`, served at `GET /api/openapi.json`) and the
//! routers agree: every path a router registers is in the document and every path of
//! the document is registered, and each documented method is routed while every
//! other method of a documented path answers 405.
//!
//! Paths are read from the source: every string literal starting with `/` inside a
//! `fn router` body of `src/` (the `.route("…")` calls, and the tracking router's
//! table of paths it registers in a loop).

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tessera_runtime::committer::CommitterConfig;
use tessera_server::{OPENAPI_JSON, router};
use tessera_store_sqlite::open_data_dir;
use tower::ServiceExt;

mod support;

/// The methods the document may list for a path, as OpenAPI names them.
const METHODS: [&str; 6] = ["get", "put", "post", "delete", "patch", "options"];

fn document() -> Value {
    serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON")
}

/// Each documented path with its documented methods.
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let document = document();
    let paths = document["paths"]
        .as_object()
        .expect("\"paths\" is an object");
    paths
        .iter()
        .map(|(path, item)| {
            let methods = item
                .as_object()
                .expect("a path item is an object")
                .keys()
                .filter(|key| METHODS.contains(&key.as_str()))
                .cloned()
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The body of each `fn router(` in `source`, from its `{` to the matching `}`.
fn router_bodies(source: &str) -> Vec<&str> {
    let mut bodies = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find("fn router(") {
        let after = &rest[at..];
        let open = after.find('{').expect("a router function has a body");
        let end = open + matching_brace(&after[open..]);
        bodies.push(&after[open..end]);
        rest = &after[end..];
    }
    bodies
}

/// Length up to and including the `}` matching the `{` that `text` starts with,
/// skipping string literals and line comments.
fn matching_brace(text: &str) -> usize {
    let bytes = text.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => i = string_end(bytes, i),
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    panic!("unbalanced braces in a router body");
}

/// Index of the closing quote of the string literal opening at `start`.
fn string_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < bytes.len() && bytes[i] != b'"' {
        if bytes[i] == b'\\' {
            i += 1;
        }
        i += 1;
    }
    i
}

/// The string literals of `body` that start with `/`, with axum's `{*rest}` written
/// as OpenAPI's `{rest}`.
fn path_literals(body: &str) -> Vec<String> {
    let bytes = body.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'/') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if bytes[i] == b'"' {
            let end = string_end(bytes, i);
            let literal = &body[i + 1..end];
            if literal.starts_with('/') {
                found.push(literal.replace("{*", "{"));
            }
            i = end;
        }
        i += 1;
    }
    found
}

/// Every path the routers of `src/` register.
fn registered() -> BTreeSet<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut paths = BTreeSet::new();
    for file in files {
        let source = std::fs::read_to_string(&file).expect("a source file is readable");
        for body in router_bodies(&source) {
            assert!(
                !body.contains(".nest("),
                "{}: a router nests another; teach this test the prefix",
                file.display()
            );
            paths.extend(path_literals(body));
        }
    }
    paths
}

#[test]
fn the_document_is_openapi_3_1() {
    let document = document();
    let version = document["openapi"]
        .as_str()
        .expect("\"openapi\" is a string");
    assert!(version.starts_with("3.1"), "openapi is {version}");
    assert!(document["info"]["title"].is_string());
}

#[test]
fn the_document_and_the_routers_list_the_same_paths() {
    let in_code = registered();
    let in_document: BTreeSet<String> = documented().into_keys().collect();
    assert!(
        in_code.len() > 40,
        "found only {} routes in src/",
        in_code.len()
    );
    let undocumented: Vec<_> = in_code.difference(&in_document).collect();
    let unrouted: Vec<_> = in_document.difference(&in_code).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "routed but not in openapi.json: {undocumented:?}; in openapi.json but not routed: {unrouted:?}"
    );
}

#[test]
fn every_operation_has_a_summary_security_and_the_error_shape() {
    let document = document();
    let schemes = document["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes");
    let error = &document["components"]["schemas"]["Error"];
    assert_eq!(error["required"], serde_json::json!(["code", "message"]));
    for (path, methods) in documented() {
        for method in methods {
            let operation = &document["paths"][&path][&method];
            let name = format!("{method} {path}");
            assert!(operation["summary"].is_string(), "{name}: no summary");
            let security = operation["security"]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: no security (use [] for none)"));
            for requirement in security {
                for scheme in requirement.as_object().expect("a requirement").keys() {
                    assert!(schemes.contains_key(scheme), "{name}: unknown {scheme}");
                }
            }
            if method != "options" && !security.is_empty() {
                assert!(
                    operation["responses"]["default"]["$ref"] == "#/components/responses/Error",
                    "{name}: errors are not described as {{code, message}}"
                );
            }
            let params: BTreeSet<&str> = operation["parameters"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .filter(|p| p["in"] == "path")
                        .filter_map(|p| p["name"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            let in_path: BTreeSet<&str> = path
                .split('{')
                .skip(1)
                .filter_map(|part| part.split_once('}').map(|(name, _)| name))
                .collect();
            assert_eq!(params, in_path, "{name}: path parameters");
        }
    }
}

/// The application over an empty store in `dir`.
fn app(dir: &Path) -> (axum::Router, tessera_runtime::committer::CommitterThreads) {
    let (events, catalog) = open_data_dir(dir).expect("open store");
    let (state, threads) = support::app_state(
        dir,
        Arc::new(events),
        Arc::new(catalog),
        CommitterConfig::default(),
        "openapi-test-admin-token",
    );
    (router(state), threads)
}

/// Status and `code` (if any) of an unauthenticated request with an empty body.
async fn probe(app: &axum::Router, method: &str, uri: &str) -> (StatusCode, Option<String>) {
    let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .expect("a request");
    let response = app.clone().oneshot(request).await.expect("an answer");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    let code = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|body| body["code"].as_str().map(str::to_owned));
    (status, code)
}

#[tokio::test]
async fn each_documented_method_is_routed_and_no_other() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (app, threads) = app(dir.path());
    for (path, methods) in documented() {
        // Path parameters get a value every handler can parse.
        let uri: String = path
            .split('{')
            .enumerate()
            .map(|(i, part)| match (i, part.split_once('}')) {
                (0, _) | (_, None) => part.to_owned(),
                (_, Some((_, tail))) => format!("1{tail}"),
            })
            .collect();
        for method in METHODS {
            let (status, code) = probe(&app, method, &uri).await;
            let name = format!("{} {path}", method.to_uppercase());
            if methods.contains(method) {
                assert_ne!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{name} is documented but not routed"
                );
                assert_ne!(
                    code.as_deref(),
                    Some("not_found"),
                    "{name} is documented but not routed"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{name} is routed (or answered {status}) but not documented"
                );
            }
        }
    }
    tokio::task::spawn_blocking(move || threads.shutdown())
        .await
        .expect("the committer stops");
}

#[tokio::test]
async fn the_document_is_served_without_authentication() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (app, threads) = app(dir.path());
    let request = Request::builder()
        .uri("/api/openapi.json")
        .body(Body::empty())
        .expect("a request");
    let response = app.oneshot(request).await.expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    let served: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(served, document());
    tokio::task::spawn_blocking(move || threads.shutdown())
        .await
        .expect("the committer stops");
}
