//! The tracking and admin API driven in-process (no socket) over a real SQLite store.
//! End-to-end tests with the real binary and the SDKs live in `tests/e2e`.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use tessera_runtime::committer::{CommitterConfig, CommitterThreads};
use tessera_runtime::sources::create_source;
use tessera_server::router;
use tessera_store::{
    AppendBatch, AppendOutcome, Catalog, EventFilter, EventLog, StoreResult, StoredEvent,
    StoredRejection,
};
use tessera_store_sqlite::open_data_dir;
use tower::ServiceExt;

mod support;

const ADMIN: &str = "test-admin-token";

struct Harness {
    app: Router,
    events: Arc<dyn EventLog>,
    write_key: String,
    threads: Option<CommitterThreads>,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Self {
        Self::with_log(|log| log, CommitterConfig::default())
    }

    fn with_log(
        wrap: impl FnOnce(Arc<dyn EventLog>) -> Arc<dyn EventLog>,
        config: CommitterConfig,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (events, catalog) = open_data_dir(dir.path()).expect("open store");
        let events = wrap(Arc::new(events));
        let catalog: Arc<dyn Catalog> = Arc::new(catalog);
        let write_key = create_source(catalog.as_ref(), "web")
            .expect("source")
            .write_key;
        let (state, threads) =
            support::app_state(dir.path(), Arc::clone(&events), catalog, config, ADMIN);
        Self {
            app: router(state),
            events,
            write_key,
            threads: Some(threads),
            _dir: dir,
        }
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, Value, axum::http::HeaderMap) {
        let response = self.app.clone().oneshot(request).await.expect("response");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, body, headers)
    }

    fn post(&self, path: &str, body: impl Into<Body>) -> Request<Body> {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{}:", self.write_key));
        Request::post(path)
            .header(header::AUTHORIZATION, format!("Basic {auth}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.into())
            .expect("request")
    }

    async fn post_json(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (status, body, _) = self.send(self.post(path, body.to_string())).await;
        (status, body)
    }

    fn stored(&self) -> Vec<Value> {
        let mut out = Vec::new();
        self.events
            .scan(&EventFilter::default(), &mut |e| {
                out.push(serde_json::from_str(&e.payload).expect("stored JSON"));
                Ok(())
            })
            .expect("scan");
        out
    }

    async fn shutdown(mut self) {
        if let Some(threads) = self.threads.take() {
            tokio::task::spawn_blocking(move || threads.shutdown())
                .await
                .expect("shutdown");
        }
    }
}

#[tokio::test]
async fn every_type_is_stored_with_server_fields() {
    let h = Harness::new();
    for (path, body) in [
        (
            "/v1/identify",
            json!({"userId": "u1", "traits": {"email": "a@example.com"}}),
        ),
        (
            "/v1/track",
            json!({"userId": "u1", "event": "Order Completed"}),
        ),
        ("/v1/page", json!({"anonymousId": "a1", "name": "Home"})),
        ("/v1/screen", json!({"anonymousId": "a1", "name": "Cart"})),
        ("/v1/group", json!({"userId": "u1", "groupId": "g1"})),
        ("/v1/alias", json!({"userId": "u1", "previousId": "a1"})),
    ] {
        let (status, answer) = h.post_json(path, body).await;
        assert_eq!(
            (status, answer),
            (StatusCode::OK, json!({"success": true})),
            "{path}"
        );
    }
    let stored = h.stored();
    let types: Vec<_> = stored
        .iter()
        .map(|m| m["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        types,
        ["identify", "track", "page", "screen", "group", "alias"]
    );
    for message in &stored {
        for field in ["messageId", "timestamp", "receivedAt"] {
            assert!(message[field].is_string(), "{field} missing in {message}");
        }
    }
    h.shutdown().await;
}

#[tokio::test]
async fn repeated_message_id_is_stored_once_and_counted() {
    let h = Harness::new();
    let message = json!({"userId": "u1", "event": "E", "messageId": "same-id"});
    for _ in 0..3 {
        assert_eq!(
            h.post_json("/v1/track", message.clone()).await.0,
            StatusCode::OK
        );
    }
    assert_eq!(h.stored().len(), 1);
    let response = h
        .app
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).expect("req"))
        .await
        .expect("metrics");
    let text = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec(),
    )
    .unwrap_or_default();
    assert!(text.contains("tessera_events_duplicate_total 2"), "{text}");
    h.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_stable_codes() {
    let h = Harness::new();
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (
            h.post("/v1/batch", "{\"batch\": [}"),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            h.post("/v1/batch", "[]"),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            h.post("/v1/track", json!({"userId": "u"}).to_string()),
            StatusCode::BAD_REQUEST,
            "missing_event",
        ),
        (
            h.post("/v1/track", json!({"event": "E"}).to_string()),
            StatusCode::BAD_REQUEST,
            "missing_user_id",
        ),
        (
            h.post(
                "/v1/identify",
                json!({"userId": "u", "traits": "x"}).to_string(),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_field_type",
        ),
        (
            h.post("/v1/alias", json!({"userId": "u"}).to_string()),
            StatusCode::BAD_REQUEST,
            "missing_previous_id",
        ),
        (
            h.post("/v1/group", json!({"userId": "u"}).to_string()),
            StatusCode::BAD_REQUEST,
            "missing_group_id",
        ),
        (
            h.post(
                "/v1/track",
                json!({"userId": "u", "event": "E", "messageId": "m".repeat(101)}).to_string(),
            ),
            StatusCode::BAD_REQUEST,
            "message_id_too_long",
        ),
        (
            h.post(
                "/v1/track",
                json!({"userId": "u", "event": "E", "p": "x".repeat(40_000)}).to_string(),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "message_too_large",
        ),
        (
            h.post("/v1/batch", vec![b' '; 600_000]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
        ),
        (
            h.post(
                "/v1/batch",
                json!({"batch": vec![json!({}); 2_501]}).to_string(),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_messages",
        ),
        (
            h.post(
                "/v1/batch",
                json!({"batch": [{"type": "track"}, {"type": "bogus", "userId": "u"}]}).to_string(),
            ),
            StatusCode::BAD_REQUEST,
            "all_messages_rejected",
        ),
        (
            Request::post("/v1/track")
                .body(Body::from(json!({"userId": "u", "event": "E"}).to_string()))
                .expect("req"),
            StatusCode::UNAUTHORIZED,
            "missing_write_key",
        ),
        (
            Request::post("/v1/track")
                .body(Body::from(
                    json!({"writeKey": "nope", "userId": "u", "event": "E"}).to_string(),
                ))
                .expect("req"),
            StatusCode::UNAUTHORIZED,
            "invalid_write_key",
        ),
        (
            {
                let mut r = h.post("/v1/batch", "{}");
                r.headers_mut()
                    .insert(header::CONTENT_ENCODING, "br".parse().expect("hv"));
                r
            },
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
        ),
        (
            {
                let mut r = h.post("/v1/batch", "not gzip");
                r.headers_mut()
                    .insert(header::CONTENT_ENCODING, "gzip".parse().expect("hv"));
                r
            },
            StatusCode::BAD_REQUEST,
            "invalid_gzip",
        ),
        (
            Request::get("/v1/track").body(Body::empty()).expect("req"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Request::get("/nowhere").body(Body::empty()).expect("req"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Request::get("/api/v1/sources")
                .body(Body::empty())
                .expect("req"),
            StatusCode::UNAUTHORIZED,
            "invalid_admin_token",
        ),
    ];
    for (request, status, code) in cases {
        let uri = request.uri().clone();
        let (got_status, body, _) = h.send(request).await;
        assert_eq!(
            (got_status, body["code"].as_str()),
            (status, Some(code)),
            "{uri}: {body}"
        );
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert!(h.stored().is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn gzip_batch_with_some_invalid_messages_keeps_the_valid_ones() {
    let h = Harness::new();
    let body = json!({
        "context": {"library": {"name": "batch-lib"}},
        "integrations": {"All": false},
        "batch": [
            {"type": "track", "userId": "u", "event": "A", "context": {"locale": "de"}},
            {"type": "track", "userId": "u"},
            {"type": "identify", "anonymousId": "a", "traits": {"plan": "pro"}},
        ]
    });
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(body.to_string().as_bytes())
        .expect("gzip");
    let mut request = h.post("/v1/batch", encoder.finish().expect("gzip"));
    request
        .headers_mut()
        .insert(header::CONTENT_ENCODING, "gzip".parse().expect("hv"));
    let (status, answer, _) = h.send(request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["success"], true);
    assert_eq!(answer["rejected"][0]["index"], 1);
    assert_eq!(answer["rejected"][0]["code"], "missing_event");
    let stored = h.stored();
    assert_eq!(stored.len(), 2);
    assert_eq!(
        stored[0]["context"],
        json!({"locale": "de", "library": {"name": "batch-lib"}})
    );
    assert_eq!(stored[1]["integrations"], json!({"All": false}));

    let list = Request::get("/api/v1/rejections")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .body(Body::empty())
        .expect("req");
    let (status, rejections, _) = h.send(list).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rejections["rejections"][0]["code"], "missing_event");
    h.shutdown().await;
}

#[tokio::test]
async fn disabled_source_is_refused() {
    let h = Harness::new();
    let admin = |request: axum::http::request::Builder| {
        request.header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
    };
    let (status, created, _) = h
        .send(
            admin(Request::post("/api/v1/sources"))
                .body(Body::from(r#"{"name":"shop"}"#))
                .expect("req"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let key = created["writeKey"].as_str().unwrap_or_default().to_string();
    let id = created["id"].as_str().unwrap_or_default().to_string();
    let track = |key: &str| {
        Request::post("/v1/t")
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from(
                json!({"writeKey": key, "userId": "u", "event": "E"}).to_string(),
            ))
            .expect("req")
    };
    assert_eq!(h.send(track(&key)).await.0, StatusCode::OK);
    let path = format!("/api/v1/sources/{id}/disable");
    let (status, disabled, _) = h
        .send(
            admin(Request::post(path.as_str()))
                .body(Body::empty())
                .expect("req"),
        )
        .await;
    assert_eq!(
        (status, disabled["enabled"].as_bool()),
        (StatusCode::OK, Some(false))
    );
    let (status, body, _) = h.send(track(&key)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("source_disabled"))
    );
    let (status, body, _) = h
        .send(
            admin(Request::post("/api/v1/sources/src_nope/disable"))
                .body(Body::empty())
                .expect("req"),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("source_not_found"))
    );
    h.shutdown().await;
}

/// An event log whose appends wait until the test opens the gate.
struct GatedLog {
    inner: Arc<dyn EventLog>,
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl EventLog for GatedLog {
    fn append(&self, batches: &[AppendBatch]) -> StoreResult<Vec<AppendOutcome>> {
        let (open, changed) = &*self.gate;
        let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
        while !*open {
            open = changed.wait(open).unwrap_or_else(|p| p.into_inner());
        }
        drop(open);
        self.inner.append(batches)
    }
    fn scan(
        &self,
        filter: &EventFilter,
        visit: &mut dyn FnMut(StoredEvent) -> StoreResult<()>,
    ) -> StoreResult<u64> {
        self.inner.scan(filter, visit)
    }
    fn get(&self, seqs: &[i64]) -> StoreResult<Vec<StoredEvent>> {
        self.inner.get(seqs)
    }
    fn last_seq(&self) -> StoreResult<i64> {
        self.inner.last_seq()
    }
    fn delete_events(&self, seqs: &[i64]) -> StoreResult<u64> {
        self.inner.delete_events(seqs)
    }
    fn rewrite_events(&self, events: &[tessera_store::RewrittenEvent]) -> StoreResult<u64> {
        self.inner.rewrite_events(events)
    }
    fn purge_deleted(&self) -> StoreResult<()> {
        self.inner.purge_deleted()
    }
    fn find_containing(&self, needles: &[String]) -> StoreResult<Vec<i64>> {
        self.inner.find_containing(needles)
    }
    fn recent_rejections(&self, limit: usize) -> StoreResult<Vec<StoredRejection>> {
        self.inner.recent_rejections(limit)
    }
    fn size_bytes(&self) -> StoreResult<u64> {
        self.inner.size_bytes()
    }
    fn checkpoint(&self) -> StoreResult<()> {
        self.inner.checkpoint()
    }
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after_and_loses_nothing_acknowledged() {
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let h = Arc::new(Harness::with_log(
        |inner| {
            Arc::new(GatedLog {
                inner,
                gate: Arc::clone(&gate),
            })
        },
        CommitterConfig {
            queue_capacity: 1,
            ..CommitterConfig::default()
        },
    ));
    // The writer takes the first request and blocks in append; the second fills the queue.
    let mut waiting = Vec::new();
    for i in 0..2 {
        let h = Arc::clone(&h);
        waiting.push(tokio::spawn(async move {
            h.post_json(
                "/v1/track",
                json!({"userId": "u", "event": "E", "messageId": format!("m{i}")}),
            )
            .await
        }));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (status, body, headers) = h
        .send(h.post(
            "/v1/track",
            json!({"userId": "u", "event": "E", "messageId": "m-over"}).to_string(),
        ))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("overloaded"))
    );
    assert_eq!(
        headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    {
        let (open, changed) = &*gate;
        *open.lock().unwrap_or_else(|p| p.into_inner()) = true;
        changed.notify_all();
    }
    for task in waiting {
        assert_eq!(task.await.expect("task").0, StatusCode::OK);
    }
    let ids: Vec<_> = h
        .stored()
        .iter()
        .map(|m| m["messageId"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(ids, ["m0", "m1"]);
    if let Ok(h) = Arc::try_unwrap(h) {
        h.shutdown().await;
    }
}
