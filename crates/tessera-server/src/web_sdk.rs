//! The browser SDKs, unchanged but for the host: Segment's analytics.js
//! (analytics-next) and RudderStack's JavaScript SDK v3.
//!
//! * `GET /analytics.js/v1/{writeKey}/analytics.min.js` serves analytics-next's
//!   standalone build, vendored from its npm package at a pinned version
//!   (`assets/analytics-next/`, re-vendored by `tests/vendor-analytics.sh`), and
//!   `GET /analytics-next/bundles/{file}` the chunks it loads lazily: the bundle
//!   derives its CDN from its own `<script src>`, so they are asked of Tessera.
//! * `GET /v1/projects/{writeKey}/settings` answers the settings analytics-next loads
//!   first: send everything to Tessera (`integrations["Segment.io"].apiHost`), never
//!   to Segment's metrics host (`metrics.sampleRate: 0`), no remote plugins.
//! * `GET /sourceConfig/` answers RudderStack's source configuration (the write key
//!   as the HTTP Basic user or `writeKey` in the query): no device-mode destinations,
//!   no error or metrics reporting. `POST /beacon/v1/batch?writeKey=` takes what its
//!   `sendBeacon` transport sends; its other data-plane routes are the tracking API's.
//!
//! Where browsers are told to send: `[http] public_url` when set (Tessera behind a
//! proxy), else the scheme and `Host` the request came with.

use crate::AppState;
use crate::api_error::ApiError;
use crate::tracking;
use axum::Router;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Value, json};
use tessera_core::ErrorCode;
use tessera_core::request::BodyKind;
use tessera_runtime::sources::SourceLookupError;
use tessera_store::Source;

/// The vendored analytics-next files (written by `tests/vendor-analytics.sh`).
mod vendored {
    include!("../assets/analytics-next/files.rs");
}

/// The version of `@segment/analytics-next` Tessera serves.
pub const ANALYTICS_NEXT_VERSION: &str = vendored::VERSION;

/// How long browsers and caches may keep the settings and source configuration
/// (then they revalidate with the ETag).
const CONFIG_CACHE_CONTROL: &str = "public, max-age=60";
/// analytics.min.js has no version in its URL: an hour, then revalidate.
const BUNDLE_CACHE_CONTROL: &str = "public, max-age=3600";
/// The chunks' names carry a content hash.
const CHUNK_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";
/// Longest `Host` or public URL taken.
const MAX_HOST_CHARS: usize = 255;

/// The browser-SDK routes, with the tracking routes' CORS (which answers preflights
/// only on routes that take `OPTIONS`: those browsers call with custom headers).
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/projects/{writeKey}/settings",
            get(settings).options(tracking::preflight),
        )
        .route("/analytics.js/v1/{writeKey}/analytics.min.js", get(bundle))
        .route("/analytics-next/bundles/{file}", get(chunk))
        .route(
            "/sourceConfig",
            get(source_config).options(tracking::preflight),
        )
        .route(
            "/sourceConfig/",
            get(source_config).options(tracking::preflight),
        )
        .route(
            "/beacon/v1/batch",
            post(beacon).options(tracking::preflight),
        )
        .layer(tracking::cors())
}

/// Where Tessera is reached from browsers, when it is not the host they asked
/// (`[http] public_url`, e.g. `https://collect.example.com`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    /// `http` or `https`.
    pub scheme: String,
    /// Host, optional port and optional path prefix, without a trailing slash, e.g.
    /// `collect.example.com` or `example.com/tessera`.
    pub host: String,
}

impl PublicUrl {
    /// Parses `scheme://host[:port][/path]`; the message says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (scheme, rest) = text.split_once("://").ok_or_else(|| {
            format!("{text:?} is not a URL: write it as https://host[:port][/path]")
        })?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(format!(
                "{text:?}: the scheme must be http or https, not {scheme:?}"
            ));
        }
        let rest = rest.trim_end_matches('/');
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        if !is_valid_authority(authority) {
            return Err(format!(
                "{text:?}: {authority:?} is not a host[:port] (letters, digits, '.', '-', an [IPv6] address, a port)"
            ));
        }
        if path.len() + authority.len() > MAX_HOST_CHARS
            || !path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b))
            || path.contains("//")
        {
            return Err(format!(
                "{text:?}: the path may hold only letters, digits and - . _ ~ between single slashes, without a query"
            ));
        }
        Ok(Self {
            scheme,
            host: format!("{}{path}", authority.to_ascii_lowercase()),
        })
    }

    /// `scheme://host`, the base of every URL the SDKs are given.
    pub fn base(&self) -> String {
        format!("{}://{}", self.scheme, self.host)
    }
}

/// The configuration of the browser-SDK routes.
#[derive(Debug, Clone, Default)]
pub struct WebSdkConfig {
    /// Where browsers reach Tessera (`None`: the scheme and host of each request).
    pub public_url: Option<PublicUrl>,
}

/// Whether `authority` is `host[:port]` as a browser could have sent it in `Host`: a
/// DNS name or IPv4 address (letters, digits, `.`, `-`, `_`) or a bracketed IPv6
/// address, and an optional port of up to five digits.
pub fn is_valid_authority(authority: &str) -> bool {
    if authority.is_empty() || authority.len() > MAX_HOST_CHARS {
        return false;
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return false;
        };
        if inside.is_empty() || !inside.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after {
            "" => (inside, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (inside, Some(port)),
                None => return false,
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let host_ok = !host.is_empty()
        && (authority.starts_with('[')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_'));
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

/// The write key in a query string (`…&writeKey=KEY&…`, percent-decoded), if any.
pub fn write_key_from_query(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "writeKey")
        .map(|(_, value)| value.trim().to_owned())
        .filter(|key| !key.is_empty())
}

/// Whether an `Accept-Encoding` value takes gzip (listed, and not with `q=0`).
pub fn accepts_gzip(accept_encoding: &str) -> bool {
    accept_encoding.split(',').any(|item| {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or_default().trim();
        if !coding.eq_ignore_ascii_case("gzip") && !coding.eq_ignore_ascii_case("x-gzip") {
            return false;
        }
        parts.all(|param| {
            let param = param.trim();
            match param.split_once('=') {
                Some((name, value)) if name.trim().eq_ignore_ascii_case("q") => value
                    .trim()
                    .parse::<f32>()
                    .is_ok_and(|q| q > 0.0 && q <= 1.0),
                _ => true,
            }
        })
    })
}

/// Where browsers send: the public URL, else `http://` and the request's `Host`.
fn base_url(
    state: &AppState,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
) -> Result<PublicUrl, ApiError> {
    if let Some(public) = &state.web_sdk.public_url {
        return Ok(public.clone());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.as_str().to_owned()))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                "the request has no Host header: send one, or set [http] public_url",
            )
        })?;
    if !is_valid_authority(&host) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "the Host header is not a host[:port]: send a valid one, or set [http] public_url",
        ));
    }
    Ok(PublicUrl {
        scheme: "http".into(),
        host: host.to_ascii_lowercase(),
    })
}

/// The enabled source of `key`; unknown and disabled keys are 404
/// `write_key_not_found` (an unknown one counts as a failed authentication).
fn lookup(state: &AppState, key: &str, peer: Option<std::net::IpAddr>) -> Result<Source, ApiError> {
    state.auth_backoff.check(peer)?;
    state.sources.resolve(key).map_err(|error| match error {
        SourceLookupError::User(user) => {
            if user.code == ErrorCode::InvalidWriteKey {
                state.auth_backoff.failed(peer);
            }
            let why = if user.code == ErrorCode::SourceDisabled {
                "the source of this write key is disabled"
            } else {
                "no source has this write key"
            };
            ApiError::new(
                ErrorCode::WriteKeyNotFound,
                format!("{why}: check the key in the snippet or load call, or create a source (POST /api/v1/sources)"),
            )
        }
        SourceLookupError::Store(store) => ApiError::internal(store),
    })
}

fn peer(request_extensions: &axum::http::Extensions) -> Option<std::net::IpAddr> {
    crate::auth_backoff::client_ip(request_extensions)
}

/// `GET /v1/projects/{writeKey}/settings`: what analytics-next needs to send to
/// Tessera and nowhere else.
async fn settings(
    State(state): State<AppState>,
    Path(write_key): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    lookup(&state, &write_key, peer(request.extensions()))?;
    let base = base_url(&state, request.headers(), request.uri())?;
    let body = settings_body(&write_key, &base);
    Ok(json_config(request.headers(), &body, CONFIG_CACHE_CONTROL))
}

/// The settings document: `Segment.io` pointed at Tessera, no metrics, no remote
/// plugins, no destinations or middleware loaded from a CDN.
pub fn settings_body(write_key: &str, base: &PublicUrl) -> Value {
    json!({
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": format!("{}/v1", base.host),
                "protocol": base.scheme,
                "unbundledIntegrations": [],
                "addBundledMetadata": true,
                "maybeBundledConfigIds": {},
                "versionSettings": {"version": "4.4.7", "componentTypes": ["browser"]}
            }
        },
        "plan": {
            "track": {"__default": {"enabled": true, "integrations": {}}},
            "identify": {"__default": {"enabled": true}},
            "group": {"__default": {"enabled": true}}
        },
        "edgeFunction": {},
        "analyticsNextEnabled": true,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": false,
        "remotePlugins": []
    })
}

/// `GET /sourceConfig/`: RudderStack's source configuration.
async fn source_config(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Result<Response, ApiError> {
    let key = tracking::basic_auth_user(request.headers())
        .or_else(|| query.as_deref().and_then(write_key_from_query))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::MissingWriteKey,
                "send the write key as the HTTP Basic user (what the RudderStack SDK does) or as ?writeKey=",
            )
        })?;
    let source = lookup(&state, &key, peer(request.extensions()))?;
    let body = source_config_body(&key, &source);
    let mut response = json_config(request.headers(), &body, "private, max-age=60");
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Authorization"));
    Ok(response)
}

/// The source configuration RudderStack's SDK validates: a `source` with `id`,
/// `config` and `destinations`; reporting of errors and metrics off (they would go
/// to RudderStack's hosts).
pub fn source_config_body(write_key: &str, source: &Source) -> Value {
    let created = chrono::DateTime::from_timestamp_millis(source.created_at_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    json!({
        "isHosted": false,
        "source": {
            "id": source.id,
            "name": source.name,
            "writeKey": write_key,
            "enabled": source.enabled,
            "workspaceId": "tessera",
            "config": {
                "statsCollection": {
                    "errors": {"enabled": false},
                    "metrics": {"enabled": false}
                }
            },
            "destinations": [],
            "createdAt": created,
            "updatedAt": created
        },
        "updatedAt": created
    })
}

/// A JSON configuration answer with a strong ETag (and 304 when it matches).
fn json_config(headers: &HeaderMap, body: &Value, cache_control: &'static str) -> Response {
    let text = body.to_string();
    let hash = tessera_core::ids::hash_secret(&text);
    let etag = format!("\"{}\"", &hash[..32.min(hash.len())]);
    let base = [
        (header::CACHE_CONTROL, cache_control.to_owned()),
        (header::ETAG, etag.clone()),
    ];
    if if_none_match(headers, &etag) {
        return (StatusCode::NOT_MODIFIED, base).into_response();
    }
    (
        base,
        [(header::CONTENT_TYPE, "application/json".to_owned())],
        text,
    )
        .into_response()
}

/// Whether `If-None-Match` lists `etag` (or is `*`).
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}

/// `GET /analytics.js/v1/{writeKey}/analytics.min.js`: the standalone bundle.
async fn bundle(
    State(state): State<AppState>,
    Path(write_key): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    lookup(&state, &write_key, peer(request.extensions()))?;
    let (plain, gzipped) = vendored::STANDALONE;
    Ok(javascript(
        request.headers(),
        "standalone.js",
        plain,
        gzipped,
        BUNDLE_CACHE_CONTROL,
    ))
}

/// `GET /analytics-next/bundles/{file}`: a chunk analytics-next loads lazily.
async fn chunk(Path(file): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (name, plain, gzipped) = vendored::CHUNKS
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnknownAsset,
                format!(
                    "analytics.js {ANALYTICS_NEXT_VERSION} has no chunk {file:?}: the page may run another version's bundle; reload it"
                ),
            )
        })?;
    Ok(javascript(
        &headers,
        name,
        plain,
        gzipped,
        CHUNK_CACHE_CONTROL,
    ))
}

/// A vendored script: gzip when the client takes it, an ETag per file and encoding.
fn javascript(
    headers: &HeaderMap,
    name: &str,
    plain: &'static [u8],
    gzipped: &'static [u8],
    cache_control: &'static str,
) -> Response {
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(accepts_gzip);
    let etag = format!(
        "\"analytics-next-{ANALYTICS_NEXT_VERSION}-{name}{}\"",
        if gzip { "-gz" } else { "" }
    );
    let common = [
        (header::CACHE_CONTROL, cache_control.to_owned()),
        (header::ETAG, etag.clone()),
        (header::VARY, "Accept-Encoding".to_owned()),
    ];
    if if_none_match(headers, &etag) {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    let content_type = (
        header::CONTENT_TYPE,
        "text/javascript; charset=utf-8".to_owned(),
    );
    if gzip {
        (
            common,
            [content_type, (header::CONTENT_ENCODING, "gzip".to_owned())],
            gzipped,
        )
            .into_response()
    } else {
        (common, [content_type], plain).into_response()
    }
}

/// `POST /beacon/v1/batch?writeKey=KEY`: RudderStack's `sendBeacon` transport (a
/// `{"batch": […], "sentAt"}` body as `text/plain`, the key in the query because a
/// beacon cannot carry headers). Stored as `POST /v1/batch` stores.
async fn beacon(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    mut request: Request,
) -> Response {
    let has_key_header = tracking::basic_auth_user(request.headers()).is_some();
    if !has_key_header && let Some(key) = query.as_deref().and_then(write_key_from_query) {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
        if let Ok(value) = HeaderValue::from_str(&format!("Basic {encoded}")) {
            request.headers_mut().insert(header::AUTHORIZATION, value);
        }
    }
    tracking::ingest(State(state), request, BodyKind::Batch, true).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn public_urls_parse_and_refuse_what_is_not_one() {
        let url = PublicUrl::parse("https://Collect.Example.com/").expect("valid");
        assert_eq!(url.scheme, "https");
        assert_eq!(url.host, "collect.example.com");
        let url = PublicUrl::parse("http://127.0.0.1:8080/tessera").expect("valid");
        assert_eq!(url.base(), "http://127.0.0.1:8080/tessera");
        let url = PublicUrl::parse("https://[::1]:8443").expect("valid");
        assert_eq!(url.host, "[::1]:8443");
        for bad in [
            "collect.example.com",
            "ftp://example.com",
            "https://",
            "https://exa mple.com",
            "https://example.com:99999999",
            "https://example.com/a?b=c",
            "https://example.com//x",
            "https://user@example.com",
            "https://[::1",
        ] {
            assert!(PublicUrl::parse(bad).is_err(), "{bad} was taken");
        }
    }

    #[test]
    fn the_write_key_is_found_in_a_query() {
        assert_eq!(
            write_key_from_query("p=npm&v=3.0.0&writeKey=wk_a%2Bb&build=modern").as_deref(),
            Some("wk_a+b")
        );
        assert_eq!(write_key_from_query("writeKey=&x=1"), None);
        assert_eq!(write_key_from_query(""), None);
        assert_eq!(write_key_from_query("writekey=lower"), None);
    }

    #[test]
    fn gzip_is_chosen_only_when_accepted() {
        assert!(accepts_gzip("gzip, deflate, br, zstd"));
        assert!(accepts_gzip("br;q=1.0, GZIP;q=0.5"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("br, deflate"));
        assert!(!accepts_gzip(""));
    }

    #[test]
    fn settings_point_analytics_js_at_tessera_only() {
        let base = PublicUrl::parse("https://collect.example.com/t").expect("valid");
        let body = settings_body("wk_1", &base);
        let segment = &body["integrations"]["Segment.io"];
        assert_eq!(segment["apiKey"], "wk_1");
        assert_eq!(segment["apiHost"], "collect.example.com/t/v1");
        assert_eq!(segment["protocol"], "https");
        assert_eq!(body["metrics"]["sampleRate"], 0);
        assert_eq!(body["remotePlugins"], json!([]));
        assert_eq!(body["integrations"].as_object().map(|o| o.len()), Some(1));
    }

    #[test]
    fn every_vendored_chunk_is_javascript_with_a_gzip_twin() {
        assert!(!vendored::CHUNKS.is_empty());
        for (name, plain, gzipped) in vendored::CHUNKS {
            assert!(name.ends_with(".js") && !name.contains('/'));
            let mut inflated = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(*gzipped), &mut inflated)
                .expect("gzip");
            assert_eq!(&inflated[..], *plain, "{name}: the .gz twin differs");
        }
        let mut inflated = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(vendored::STANDALONE.1),
            &mut inflated,
        )
        .expect("gzip");
        assert_eq!(&inflated[..], vendored::STANDALONE.0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Any text: no panic; what is taken holds only characters of a host.
        #[test]
        fn authorities_never_panic_and_are_clean(text in "\\PC{0,40}") {
            if is_valid_authority(&text) {
                prop_assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:[]".contains(&b)));
            }
            let _ = PublicUrl::parse(&text);
            let _ = accepts_gzip(&text);
        }

        /// Names and ports as browsers send them are taken.
        #[test]
        fn real_hosts_are_taken(
            labels in proptest::collection::vec("[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", 1..4),
            port in proptest::option::of(1u16..),
        ) {
            let host = labels.join(".");
            let authority = match port { Some(p) => format!("{host}:{p}"), None => host.clone() };
            prop_assert!(is_valid_authority(&authority));
            let url = PublicUrl::parse(&format!("https://{authority}/")).expect("valid");
            prop_assert_eq!(url.host, authority);
        }

        /// A key percent-encoded into any query among other parameters comes back.
        #[test]
        fn query_keys_round_trip(
            key in "[^\\s]{1,60}",
            before in proptest::collection::vec(("[a-zA-Z]{1,8}", "\\PC{0,12}"), 0..4),
        ) {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for (name, value) in &before {
                if name != "writeKey" {
                    query.append_pair(name, value);
                }
            }
            query.append_pair("writeKey", &key);
            let query = query.finish();
            prop_assert_eq!(write_key_from_query(&query), Some(key.trim().to_owned()).filter(|k| !k.is_empty()));
        }

        /// Any query: no panic.
        #[test]
        fn queries_never_panic(query in "\\PC{0,80}") {
            let _ = write_key_from_query(&query);
        }
    }
}
