//! Every route is documented in docs/API.md: each method and path of `openapi.json`
//! (which `tests/openapi.rs` keeps equal to the routers) appears there written as
//! `METHOD /path`, e.g. `GET /api/v1/journeys/{key}`.

use serde_json::Value;
use tessera_server::OPENAPI_JSON;

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

#[test]
fn every_route_is_in_the_api_reference() {
    let reference = include_str!("../../../docs/API.md");
    let document: Value = serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON");
    let paths = document["paths"]
        .as_object()
        .expect("\"paths\" is an object");
    let mut missing = Vec::new();
    let mut routes = 0;
    for (path, item) in paths {
        for method in METHODS {
            if item.get(method).is_some() {
                routes += 1;
                let route = format!("{} {path}", method.to_uppercase());
                if !reference.contains(&route) {
                    missing.push(route);
                }
            }
        }
    }
    assert!(routes > 60, "found only {routes} routes in openapi.json");
    assert!(
        missing.is_empty(),
        "docs/API.md does not mention these routes (write them as `METHOD /path`): {missing:#?}"
    );
}
