"""analytics.js and RudderStack's JavaScript SDK, unchanged but for the host, in a real
browser against the real binary.

Debian's Chromium (/usr/bin/chromium, installed by tests/setup-env.sh; Playwright never
downloads a browser) opens pages served by a local HTTP server on another port than
Tessera's, so every call to Tessera is cross-origin and CORS is really exercised:

  * a page with Segment's standard snippet whose host is Tessera's: analytics.js
    (the bundle Tessera serves from its binary) loads its settings and lazy chunks
    from Tessera and sends there;
  * a page loading RudderStack's SDK (the bundled build of the npm package, from the
    page's own server) with `configUrl` and the data plane set to Tessera; a second
    visit sends through `sendBeacon` (/beacon/v1/batch).

The Segment page also runs behind a TLS-terminating proxy with `public_url` set, the
snippet then Segment's own with only the host changed (production's shape).

Each page is opened with ?utm_source=news&utm_campaign=spring: a page view, a click
that tracks `Product Added`, a form that identifies with an email, a reload; then a
second visit in a new browser context that has only the first one's cookies. Every
request the browser makes is recorded: any to a host other than Tessera or the page
server, any failed request or HTTP error, and any console error fails the test.
The log (tessera export) must hold every event the browser sent exactly once, with
the campaign and page context, and the Profile API must show the anonymous id from
the cookie and the email on one profile.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import subprocess
import threading
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tessera_e2e import (
    ADMIN_TOKEN,
    HTTP_TIMEOUT,
    REPO_ROOT,
    ServerExited,
    by_message_id,
    free_port,
    new_id,
    wait_until,
)

CHROMIUM = Path(os.environ.get("TESSERA_CHROMIUM", "/usr/bin/chromium"))
RUDDER_BUNDLE = (REPO_ROOT / "tests" / "node" / "node_modules" / "@rudderstack" / "analytics-js" / "dist"
                 / "npm" / "modern" / "bundled" / "umd" / "index.js")
UTM = "utm_source=news&utm_campaign=spring"
EMAIL_DOMAIN = "example.com"

# Segment's snippet (5.2.1) as its docs give it, with two changes only: the host in
# t.src, and analytics._cdn, which analytics.js needs when its host is plain http (it
# derives the CDN from an https:// script src only; see docs/collect.md).
SEGMENT_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Shop (Segment)</title><link rel="icon" href="data:,">
<script>
  !function(){var i="analytics",analytics=window[i]=window[i]||[];if(!analytics.initialize)if(analytics.invoked)window.console&&console.error&&console.error("Segment snippet included twice.");else{analytics.invoked=!0;analytics.methods=["trackSubmit","trackClick","trackLink","trackForm","pageview","identify","reset","group","track","ready","alias","debug","page","screen","once","off","on","addSourceMiddleware","addIntegrationMiddleware","setAnonymousId","addDestinationMiddleware","register"];analytics.factory=function(e){return function(){if(window[i].initialized)return window[i][e].apply(window[i],arguments);var n=Array.prototype.slice.call(arguments);if(["track","screen","alias","group","page","identify"].indexOf(e)>-1){var c=document.querySelector("link[rel='canonical']");n.push({__t:"bpc",c:c&&c.getAttribute("href")||void 0,p:location.pathname,u:location.href,s:location.search,t:document.title,r:document.referrer})}n.unshift(e);analytics.push(n);return analytics}};for(var n=0;n<analytics.methods.length;n++){var key=analytics.methods[n];analytics[key]=analytics.factory(key)}analytics.load=function(key,n){var t=document.createElement("script");t.type="text/javascript";t.async=!0;t.setAttribute("data-global-segment-analytics-key",i);t.src="__TESSERA__/analytics.js/v1/" + key + "/analytics.min.js";var r=document.getElementsByTagName("script")[0];r.parentNode.insertBefore(t,r);analytics._loadOptions=n};analytics._writeKey="__KEY__";__CDN__;analytics.SNIPPET_VERSION="5.2.1";
  analytics.load("__KEY__");
  analytics.page();
  }}();
</script>
<script>
  // trackLink is lazy: analytics.js loads its auto-track chunk from its CDN (Tessera).
  document.addEventListener('DOMContentLoaded', function () {
    analytics.trackLink(document.getElementById('more'), 'More Clicked');
  });
</script>
</head><body>
<h1>Spring shoes</h1>
<a id="more" href="#more">More</a>
<button id="add" onclick="analytics.track('Product Added', {product_id: 'SKU-1', name: 'Runner', price: 89.5, quantity: 1})">Add to cart</button>
<form id="signup"><input id="email" name="email" type="email"><button id="join" type="submit">Join</button></form>
<p id="status"></p>
<script>
  document.getElementById('signup').addEventListener('submit', function (e) {
    e.preventDefault();
    analytics.identify({email: document.getElementById('email').value}, function () {
      document.getElementById('status').textContent = 'identified';
    });
  });
</script>
</body></html>
"""

RUDDER_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Shop (RudderStack)</title><link rel="icon" href="data:,">
<script src="/rudder-analytics.js"></script>
<script>
  var beacon = new URLSearchParams(location.search).has('beacon');
  var ra = new rudderanalytics.RudderAnalytics();
  window.ra = ra;
  ra.load("__KEY__", "__TESSERA__", {
    configUrl: "__TESSERA__",
    polyfillIfRequired: false,
    logLevel: "ERROR",
    useBeacon: beacon,
    beaconQueueOptions: {flushQueueInterval: 200}
  });
  ra.page();
</script>
</head><body>
<h1>Spring shoes</h1>
<button id="add" onclick="ra.track('Product Added', {product_id: 'SKU-1', name: 'Runner', price: 89.5, quantity: 1})">Add to cart</button>
<form id="signup"><input id="email" name="email" type="email"><button id="join" type="submit">Join</button></form>
<p id="status"></p>
<script>
  document.getElementById('signup').addEventListener('submit', function (e) {
    e.preventDefault();
    ra.identify({email: document.getElementById('email').value}, {}, function () {
      document.getElementById('status').textContent = 'identified';
    });
  });
</script>
</body></html>
"""


class PageServer:
    """The site: a local HTTP server on its own port serving the test pages."""

    def __init__(self, files: dict[str, tuple[str, bytes]]):
        self.files = files
        self.port = free_port()
        files_ = files

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                path = urllib.parse.urlsplit(self.path).path
                if path not in files_:
                    self.send_error(404)
                    return
                content_type, body = files_[path]
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class TlsProxy:
    """What a site's TLS-terminating proxy does in front of Tessera: https on its own
    port (a self-signed certificate for 127.0.0.1), every request passed on unchanged to
    Tessera's plain-http port and its answer passed back unchanged."""

    HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade"}

    def __init__(self, port: int, upstream_port: int, workdir: Path):
        self.port = port
        cert, key = workdir / "proxy-cert.pem", workdir / "proxy-key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                        str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True, timeout=60)
        hop_by_hop = self.HOP_BY_HOP

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in hop_by_hop}
                upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=HTTP_TIMEOUT)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                    self.send_response(answer.status)
                    for name, value in answer.getheaders():
                        if name.lower() not in hop_by_hop:
                            self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    upstream.close()

            do_GET = do_POST = do_OPTIONS = _forward  # noqa: N815 (http.server's names)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class Watch:
    """Every request, failure, HTTP error and console error of a browser context."""

    def __init__(self, context, allowed_origins: set[str]):
        self.allowed = allowed_origins
        self.requests: list[tuple[str, str]] = []
        self.sent: list[dict] = []
        self.problems: list[str] = []
        self.console: list[str] = []
        context.on("request", self._request)
        context.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.method} {r.url}: {r.failure}"))
        context.on("response", self._response)
        # Chromium shows Playwright a sendBeacon body only while such requests are
        # routed; they continue to Tessera unchanged.
        context.route("**/beacon/v1/batch*", lambda route: route.continue_())

    def page(self, context):
        page = context.new_page()
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        return page

    def _console(self, message):
        self.console.append(f"{message.type}: {message.text}")
        if message.type in ("error", "assert"):
            self.problems.append(f"console {message.type}: {message.text}")

    def _request(self, request):
        self.requests.append((request.method, request.url))
        parts = urllib.parse.urlsplit(request.url)
        if parts.scheme in ("data", "blob", "about"):
            return
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self.allowed:
            self.problems.append(f"request to a foreign host: {request.method} {request.url}")
        if request.method == "POST" and request.post_data:
            try:
                body = json.loads(request.post_data)
            except ValueError:
                self.problems.append(f"non-JSON body to {request.url}: {request.post_data[:200]!r}")
                return
            for message in body.get("batch", [body]) if isinstance(body, dict) else []:
                self.sent.append(message)

    def _response(self, response):
        if response.status >= 400:
            self.problems.append(f"HTTP {response.status}: {response.request.method} {response.url}")

    def assert_clean(self):
        assert not self.problems, "the browser reported problems:\n" + "\n".join(self.problems)


@pytest.fixture(scope="module")
def chromium():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run tests/setup-env.sh (it installs Debian's chromium)",
                    pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --ignore-certificate-errors: the TLS proxy's certificate is self-signed.
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=["--no-sandbox", "--ignore-certificate-errors"])
        yield browser
        browser.close()


def site(server, source, tessera_url: str | None = None) -> PageServer:
    """The pages, with Tessera at `tessera_url` (default: the server's own http URL,
    where analytics.js needs `analytics._cdn`; over https the snippet is Segment's
    with the host changed and nothing else)."""
    tessera = tessera_url or server.url
    cdn = "" if tessera.startswith("https://") else f'analytics._cdn="{tessera}"'
    segment = (SEGMENT_PAGE.replace("__TESSERA__", tessera).replace("__KEY__", source.write_key)
               .replace("__CDN__", cdn))
    rudder = RUDDER_PAGE.replace("__TESSERA__", tessera).replace("__KEY__", source.write_key)
    assert RUDDER_BUNDLE.is_file(), f"{RUDDER_BUNDLE} is missing: run tests/setup-env.sh"
    return PageServer({
        "/segment.html": ("text/html; charset=utf-8", segment.encode()),
        "/rudder.html": ("text/html; charset=utf-8", rudder.encode()),
        "/rudder-analytics.js": ("text/javascript; charset=utf-8", RUDDER_BUNDLE.read_bytes()),
    })


def stored(export, server, source) -> list[dict]:
    return export(server.data_dir, source=source.id)


def wait_stored(export, server, source, watch: Watch, page, at_least: int) -> list[dict]:
    """Waits until every message the browser sent so far (and at least `at_least`) is
    in the log. Waits through the page, so that Playwright delivers the browser's
    events (its sync API dispatches them only while it is called)."""
    ids: set = set()
    for _ in range(100):
        page.wait_for_timeout(300)
        ids = {m.get("messageId") for m in watch.sent}
        if len(ids) < at_least:
            continue
        events = stored(export, server, source)
        if ids <= {e["messageId"] for e in events}:
            return events
    requests_made = "\n".join(f"  {method} {url}" for method, url in watch.requests)
    raise AssertionError(f"after 30 s the log lacks browser events (sent {len(ids)}, waiting for {at_least})"
                         f"\nrequests:\n{requests_made}\nconsole:\n" + "\n".join(watch.console)
                         + "\nproblems:\n" + "\n".join(watch.problems))


def profile_api(server, key: str, what: str) -> requests.Response:
    return requests.get(f"{server.url}/v1/spaces/default/collections/users/profiles/{key}/{what}",
                        auth=(ADMIN_TOKEN, ""), timeout=HTTP_TIMEOUT)


def visit(chromium, site_url: str, watch_origins: set[str], export, server, source, page_path: str, email: str):
    """One first visit (utm page view, click, form, reload) and a second visit in a new
    context holding only the first one's cookies. Returns (watches, anonymous id from
    the cookie of the first visit, cookie of the second)."""
    first = chromium.new_context()
    watch = Watch(first, watch_origins)
    page = watch.page(first)
    page.goto(f"{site_url}{page_path}?{UTM}")
    wait_stored(export, server, source, watch, page, 1)
    page.click("#add")
    wait_stored(export, server, source, watch, page, 2)
    page.fill("#email", email)
    page.click("#join")
    page.wait_for_function("document.getElementById('status').textContent === 'identified'")
    wait_stored(export, server, source, watch, page, 3)
    page.reload()
    wait_stored(export, server, source, watch, page, 4)
    jar = first.cookies()
    first.close()

    second = chromium.new_context()
    second.add_cookies(jar)
    watch2 = Watch(second, watch_origins)
    page = watch2.page(second)
    extra = "?beacon=1" if page_path == "/rudder.html" else ""
    page.goto(f"{site_url}{page_path}{extra}")
    wait_stored(export, server, source, watch2, page, 1)
    jar2 = second.cookies()
    second.close()
    return watch, watch2, jar, jar2


def cookie(jar, name: str) -> str:
    values = [c["value"] for c in jar if c["name"] == name]
    assert values, f"no {name} cookie; cookies: {[c['name'] for c in jar]}"
    return urllib.parse.unquote(values[0])


def assert_journey(server, source, export, watch, watch2, anonymous_id: str, email: str, site_url: str,
                   page_path: str):
    for w in (watch, watch2):
        w.assert_clean()
    sent = watch.sent + watch2.sent
    types = Counter(m.get("type") for m in sent)
    assert types == Counter({"page": 3, "track": 1, "identify": 1}), f"the browser sent {types}"

    events = stored(export, server, source)
    counts = Counter(e["messageId"] for e in events)
    assert all(n == 1 for n in counts.values()), f"stored more than once: {counts.most_common(3)}"
    by_id = by_message_id(events)
    assert set(by_id) == {m["messageId"] for m in sent}, "the log and what the browser sent differ"

    first_visit = [by_id[m["messageId"]] for m in watch.sent]
    for event in first_visit:
        campaign = event.get("context", {}).get("campaign", {})
        assert campaign.get("source") == "news" and campaign.get("name") == "spring", \
            f"{event['type']}: context.campaign is {campaign}"
    for event in first_visit + [by_id[m["messageId"]] for m in watch2.sent]:
        assert event.get("anonymousId") == anonymous_id, \
            f"{event['type']}: anonymousId {event.get('anonymousId')} is not the cookie's {anonymous_id}"
        page = event.get("context", {}).get("page", {})
        assert page.get("path") == page_path, f"{event['type']}: context.page is {page}"
        assert page.get("url", "").startswith(site_url + page_path), f"{event['type']}: context.page is {page}"
    track = next(e for e in first_visit if e["type"] == "track")
    assert track["event"] == "Product Added" and track["properties"]["product_id"] == "SKU-1", track
    assert UTM in track["context"]["page"]["url"], track["context"]["page"]
    identify = next(e for e in first_visit if e["type"] == "identify")
    # analytics.js sends traits at the top; RudderStack in context.traits. Tessera's
    # identity takes the email from either.
    traits = identify.get("traits") or identify.get("context", {}).get("traits", {})
    assert traits.get("email") == email, identify

    # One profile holds the cookie's anonymous id and the email, with every event.
    def external_ids():
        r = profile_api(server, f"email:{email}", "external_ids")
        if r.status_code != 200:
            return None
        ids = {(d["type"], d["id"]) for d in r.json()["data"]}
        return ids if ("anonymous_id", anonymous_id) in ids else None
    ids = wait_until(external_ids, timeout=30, interval=0.3, what="the email's profile with the cookie's id")
    assert ("email", email) in ids, ids
    by_email = requests.get(f"{server.url}/api/v1/profiles", params={"identifier": f"email:{email}"},
                            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=HTTP_TIMEOUT).json()
    by_cookie = requests.get(f"{server.url}/api/v1/profiles", params={"identifier": f"anonymous_id:{anonymous_id}"},
                             headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=HTTP_TIMEOUT).json()
    assert by_email["id"] == by_cookie["id"], (by_email, by_cookie)

    def all_events():
        r = profile_api(server, f"anonymous_id:{anonymous_id}", "events?limit=100")
        data = r.json().get("data", []) if r.status_code == 200 else []
        return data if len(data) == len(sent) else None
    on_profile = wait_until(all_events, timeout=30, interval=0.3, what="every event on the profile")
    assert {e["messageId"] for e in on_profile} == set(by_id)


@pytest.fixture
def web(server, source):
    pages = site(server, source)
    yield pages
    pages.close()


def test_segment_snippet_with_tesseras_host_lands_every_event_on_one_profile(chromium, server, source, export, web):
    origins = {server.url, web.url}
    email = f"{new_id('ajs')}@{EMAIL_DOMAIN}"
    watch, watch2, jar, jar2 = visit(chromium, web.url, origins, export, server, source, "/segment.html", email)
    anonymous_id = cookie(jar, "ajs_anonymous_id").strip('"')
    assert cookie(jar2, "ajs_anonymous_id").strip('"') == anonymous_id, "the second visit has another anonymous id"
    assert_journey(server, source, export, watch, watch2, anonymous_id, email, web.url, "/segment.html")

    fetched = {urllib.parse.urlsplit(url).path for _, url in watch.requests if url.startswith(server.url)}
    assert f"/v1/projects/{source.write_key}/settings" in fetched, fetched
    assert f"/analytics.js/v1/{source.write_key}/analytics.min.js" in fetched, fetched
    chunks = [path for path in fetched if path.startswith("/analytics-next/bundles/auto-track.bundle.")]
    assert chunks, f"analytics.js did not load its auto-track chunk from Tessera: {fetched}"


def test_segment_snippet_unchanged_but_the_host_behind_a_tls_proxy_with_public_url(
        chromium, server_factory, export, tmp_path):
    """Production's shape: Tessera behind a TLS-terminating proxy, `public_url` naming
    the proxy, and Segment's snippet with its host changed and nothing else (over https
    analytics.js finds its CDN in its own script address, so no `analytics._cdn`)."""
    proxy_port = free_port()
    server = server_factory(extra_env={"TESSERA_PUBLIC_URL": f"https://127.0.0.1:{proxy_port}"})
    source = server.create_source("web-tls")
    proxy = TlsProxy(proxy_port, server.port, tmp_path)
    pages = site(server, source, tessera_url=proxy.url)
    try:
        assert "_cdn" not in pages.files["/segment.html"][1].decode()
        origins = {proxy.url, pages.url}  # Tessera's own http address is not among them
        email = f"{new_id('tls')}@{EMAIL_DOMAIN}"
        watch, watch2, jar, _ = visit(chromium, pages.url, origins, export, server, source, "/segment.html", email)
        anonymous_id = cookie(jar, "ajs_anonymous_id").strip('"')
        assert_journey(server, source, export, watch, watch2, anonymous_id, email, pages.url, "/segment.html")
        fetched = {urllib.parse.urlsplit(url).path for _, url in watch.requests if url.startswith(proxy.url)}
        assert {f"/v1/projects/{source.write_key}/settings", "/v1/p", "/v1/t", "/v1/i"} <= fetched, fetched
        assert any(path.startswith("/analytics-next/bundles/") for path in fetched), fetched
    finally:
        pages.close()
        proxy.close()


def test_rudderstack_sdk_with_tessera_as_control_and_data_plane_lands_every_event_on_one_profile(
        chromium, server, source, export, web):
    origins = {server.url, web.url}
    email = f"{new_id('rs')}@{EMAIL_DOMAIN}"
    watch, watch2, jar, jar2 = visit(chromium, web.url, origins, export, server, source, "/rudder.html", email)

    def decrypt(value: str) -> str:
        prefix = "RS_ENC_v3_"
        assert value.startswith(prefix), value
        return json.loads(base64.b64decode(value[len(prefix):]).decode())

    anonymous_id = decrypt(cookie(jar, "rl_anonymous_id"))
    assert decrypt(cookie(jar2, "rl_anonymous_id")) == anonymous_id, "the second visit has another anonymous id"
    assert_journey(server, source, export, watch, watch2, anonymous_id, email, web.url, "/rudder.html")

    paths = Counter(urllib.parse.urlsplit(url).path for _, url in watch.requests + watch2.requests
                    if url.startswith(server.url))
    assert paths["/sourceConfig/"] >= 2, paths
    assert paths["/beacon/v1/batch"] >= 1, f"the second visit did not send by sendBeacon: {paths}"
    assert paths["/v1/page"] >= 1 and paths["/v1/track"] == 1 and paths["/v1/identify"] == 1, paths


def test_the_settings_the_bundle_and_the_source_config_answer_unknown_keys_404(server, source):
    for path in ("/v1/projects/nope/settings", "/analytics.js/v1/nope/analytics.min.js"):
        r = requests.get(server.url + path, timeout=HTTP_TIMEOUT)
        assert r.status_code == 404 and r.json()["code"] == "write_key_not_found", (path, r.status_code, r.text)
    r = requests.get(server.url + "/sourceConfig/?p=cdn&v=3.0.0", auth=("nope", ""), timeout=HTTP_TIMEOUT)
    assert r.status_code == 404 and r.json()["code"] == "write_key_not_found", r.text
    r = requests.get(server.url + "/sourceConfig/?p=cdn", timeout=HTTP_TIMEOUT)
    assert r.status_code == 401 and r.json()["code"] == "missing_write_key", r.text
    r = server.admin("POST", f"/api/v1/sources/{source.id}/disable")
    assert r.status_code == 200, r.text
    r = requests.get(f"{server.url}/v1/projects/{source.write_key}/settings", timeout=HTTP_TIMEOUT)
    assert r.status_code == 404 and r.json()["code"] == "write_key_not_found", r.text
    assert "disabled" in r.json()["message"]


def test_settings_and_bundle_are_cacheable_and_cors_names_the_sdk_headers(server, source):
    settings = requests.get(f"{server.url}/v1/projects/{source.write_key}/settings",
                            headers={"Origin": "https://shop.example"}, timeout=HTTP_TIMEOUT)
    assert settings.status_code == 200, settings.text
    body = settings.json()
    segment = body["integrations"]["Segment.io"]
    assert segment["apiKey"] == source.write_key
    assert segment["apiHost"] == f"127.0.0.1:{server.port}/v1" and segment["protocol"] == "http", segment
    assert body["metrics"]["sampleRate"] == 0 and body["remotePlugins"] == []
    assert settings.headers["Access-Control-Allow-Origin"] == "*"
    assert "max-age" in settings.headers["Cache-Control"]
    again = requests.get(f"{server.url}/v1/projects/{source.write_key}/settings",
                         headers={"If-None-Match": settings.headers["ETag"]}, timeout=HTTP_TIMEOUT)
    assert again.status_code == 304 and again.content == b"", again.status_code

    bundle = requests.get(f"{server.url}/analytics.js/v1/{source.write_key}/analytics.min.js", timeout=HTTP_TIMEOUT)
    assert bundle.status_code == 200 and bundle.headers["Content-Type"].startswith("text/javascript")
    assert bundle.headers.get("Content-Encoding") == "gzip" and b"analytics-next/bundles/" in bundle.content
    plain = requests.get(f"{server.url}/analytics.js/v1/{source.write_key}/analytics.min.js",
                         headers={"Accept-Encoding": "identity"}, timeout=HTTP_TIMEOUT)
    assert plain.headers.get("Content-Encoding") is None and plain.content == bundle.content
    assert plain.headers["ETag"] != bundle.headers["ETag"]
    again = requests.get(f"{server.url}/analytics.js/v1/{source.write_key}/analytics.min.js",
                         headers={"If-None-Match": bundle.headers["ETag"]}, timeout=HTTP_TIMEOUT)
    assert again.status_code == 304
    r = requests.get(f"{server.url}/analytics-next/bundles/nope.js", timeout=HTTP_TIMEOUT)
    assert r.status_code == 404 and r.json()["code"] == "unknown_asset"

    sdk_headers = "authorization,content-type,x-retry-count,anonymousid,sentat,rsa-retry-attempt"
    for method, path in (("GET", "/sourceConfig/"), ("POST", "/v1/page"), ("POST", "/v1/batch"),
                         ("POST", "/beacon/v1/batch"), ("GET", f"/v1/projects/{source.write_key}/settings")):
        r = requests.options(server.url + path, headers={
            "Origin": "https://shop.example", "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": sdk_headers}, timeout=HTTP_TIMEOUT)
        assert r.status_code in (200, 204), (path, r.status_code, r.text)
        allowed = {h.strip() for h in r.headers.get("Access-Control-Allow-Headers", "").lower().split(",")}
        assert "*" not in allowed and set(sdk_headers.split(",")) <= allowed, (path, allowed)


def test_public_url_is_what_the_settings_tell_browsers(server_factory):
    server = server_factory(extra_env={"TESSERA_PUBLIC_URL": "https://collect.example.com/tessera/"})
    source = server.create_source("public-url")
    r = requests.get(f"{server.url}/v1/projects/{source.write_key}/settings", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    segment = r.json()["integrations"]["Segment.io"]
    assert segment["apiHost"] == "collect.example.com/tessera/v1" and segment["protocol"] == "https", segment


def test_a_public_url_that_is_not_one_stops_the_start_with_what_to_fix(server_factory):
    server = server_factory(start=False, extra_env={"TESSERA_PUBLIC_URL": "collect.example.com"})
    with pytest.raises(ServerExited):
        server.start(timeout=20)
    assert "TESSERA_PUBLIC_URL or [http] public_url" in server.log_text(), server.log_tail()
    assert "https://host" in server.log_text(), server.log_tail()


def test_beacon_batches_take_the_write_key_from_the_query(server, source, export):
    message_id = new_id("beacon")
    body = json.dumps({"batch": [{"type": "track", "event": "Beaconed", "anonymousId": "anon-beacon",
                                  "messageId": message_id}], "sentAt": "2026-01-01T00:00:00.000Z"})
    r = requests.post(f"{server.url}/beacon/v1/batch?writeKey={urllib.parse.quote(source.write_key)}",
                      data=body, headers={"Content-Type": "text/plain;charset=UTF-8"}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.json()["success"] is True, r.text
    r = requests.post(f"{server.url}/beacon/v1/batch?writeKey=nope", data=body, timeout=HTTP_TIMEOUT)
    assert r.status_code == 401 and r.json()["code"] == "invalid_write_key", r.text
    stored = [e for e in export(server.data_dir, source=source.id) if e["messageId"] == message_id]
    assert [e["event"] for e in stored] == ["Beaconed"], stored
    assert stored[0]["context"]["ip"] == "127.0.0.1", stored[0]  # as on the browser short forms
