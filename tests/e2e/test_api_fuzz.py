"""Property-based fuzzing of the whole HTTP API against the real binary.

Requests for every route of the Tracking API (`/v1/*`, short forms, batch, import) and
of the admin, profile, identity, audience and privacy APIs, built from: arbitrary and
mutated JSON (wrong types in each field, huge numbers, unicode with NUL and lone
surrogates, very long strings, deep nesting), invalid UTF-8, empty bodies, wrong
Content-Type / Content-Encoding, random path parameters and query strings, good and
garbage credentials. Every answer must be

  * below 500, and never a dropped connection;
  * when it is an error (>= 400): `application/json` with a non-empty string `code`
    that docs/API.md lists, with the status the table gives it, and a non-empty
    string `message` (the same for each item of a batch's `rejected`);
  * when it is a success: JSON (204 and HEAD answers have no body, /metrics is text);

the server process must stay alive, its log must never say "panicked", and
`GET /healthz` must answer 200 at the end, after the processor has applied every
fuzzed event (so panics in identity resolution and audiences are caught too).

Three kinds of tests, in this order, against ONE server for the module:
  * deterministic matrices: every query parameter x edge values (NaN, inf, 2^64, %FF,
    ...), every body / message field x wrong-typed values, bodies over the limits,
    invalid UTF-8 in every path parameter;
  * Hypothesis fuzzers, `TESSERA_FUZZ_EXAMPLES` (default 30) examples per route; they
    run last because some of what they send unlinks, merges, revokes or disables;
  * a final check of the server and its log.
Runs are reproducible (`derandomize=True`, no example database); for a longer hunt,
e.g. `TESSERA_FUZZ_EXAMPLES=1000`.

Requests go through `http.client` (large bodies through a socket that reads while it
writes, as curl does), not `requests`, so paths, query strings, headers and bodies reach
the server byte for byte as generated. Each failure prints a curl command that
reproduces it against a server started with `TESSERA_ADMIN_TOKEN` and a source's
`WRITE_KEY`.
"""

from __future__ import annotations

import base64
import copy
import gzip
import http.client
import json
import os
import re
import select
import shlex
import socket
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from tessera_e2e import (
    ADMIN_TOKEN,
    REPO_ROOT,
    TesseraServer,
    basic_auth,
    metric_value,
    parse_prometheus,
    wait_until,
)

EXAMPLES = int(os.environ.get("TESSERA_FUZZ_EXAMPLES", "30"))
# hyper refuses a request target longer than this with a bare 414 before Tessera sees
# the request (a transport limit, like a malformed request line), so none is generated.
MAX_TARGET = 65_534

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    report_multiple_bugs=False,  # one minimal failing request per route: quicker to shrink and to read
    phases=[Phase.explicit, Phase.generate, Phase.shrink],  # no explain phase: it re-runs many requests
    suppress_health_check=list(HealthCheck),
)


# --------------------------------------------------------------------------------------
# The contract: documented error codes and their statuses (docs/API.md, "Error codes").
def _documented_codes() -> dict[str, int]:
    text = (REPO_ROOT / "docs" / "API.md").read_text()
    table = text.split("## Error codes", 1)[1]
    codes = {m.group(1): int(m.group(2)) for m in re.finditer(r"^\| `([a-z_]+)` \| (\d{3}) \|", table, re.M)}
    assert len(codes) > 20, f"could not read the error-code table of docs/API.md: {codes}"
    return codes


DOCUMENTED_CODES = _documented_codes()


# --------------------------------------------------------------------------------------
# Raw HTTP: byte-exact requests over one keep-alive connection.
class Req:
    """One request, byte for byte (a plain class: Hypothesis prints a dataclass field by
    field, multi-megabyte bodies included, instead of using __repr__)."""

    def __init__(self, method: str, target: str, headers: dict[str, str | bytes] | None = None,
                 body: bytes | None = None, auth: str = "none"):
        self.method = method
        self.target = target  # path + query, already encoded, sent as is
        self.headers = dict(headers or {})
        self.body = body
        self.auth = auth  # how to render Authorization in the curl repro

    def __repr__(self) -> str:  # short, for Hypothesis' falsifying-example report
        body = self.body if self.body is None or len(self.body) <= 300 else \
            self.body[:300] + f"...({len(self.body)} bytes)".encode()
        target = self.target if len(self.target) <= 300 else self.target[:300] + f"...({len(self.target)} chars)"
        return f"Req({self.method} {target!r} headers={self.headers!r} body={body!r})"

    def curl(self) -> str:
        if len(self.target) <= 1000:
            url = shlex.quote(f"http://127.0.0.1:8080{self.target}")
        else:
            gen = _compact_bytes_expr(self.target.encode())
            url = f'"http://127.0.0.1:8080$(python3 -c {shlex.quote("import sys; sys.stdout.buffer.write(" + gen + ")")})"'
        parts = ["curl", "-sS", "--head" if self.method == "HEAD" else "-i", "-X", self.method, url]
        for k, v in self.headers.items():
            if k.lower() == "authorization" and self.auth == "bearer-admin":
                parts.append('-H "Authorization: Bearer $TESSERA_ADMIN_TOKEN"')
            elif k.lower() == "authorization" and self.auth == "basic-admin":
                parts.append('-u "$TESSERA_ADMIN_TOKEN:"')
            elif k.lower() == "authorization" and self.auth == "basic-writekey":
                parts.append('-u "$WRITE_KEY:"')
            else:
                value = v.decode("latin-1") if isinstance(v, bytes) else v
                parts.append("-H " + shlex.quote(f"{k}: {value}"))
        prefix = ""
        if self.body is not None and not any(k.lower() == "content-type" for k in self.headers):
            parts.append("-H 'Content-Type:'")  # curl would add one of its own
        if self.body:
            body = self.body
            try:
                text = body.decode("utf-8")
                printable = all(c.isprintable() or c in "\n\t" for c in text)
            except UnicodeDecodeError:
                printable = False
            if printable and len(body) <= 3000:
                parts.append("--data-binary " + shlex.quote(text))
            else:
                if len(body) <= 3000:
                    gen = repr(body)
                else:
                    gen = _compact_bytes_expr(body)
                prefix = f"python3 -c {shlex.quote('import sys; sys.stdout.buffer.write(' + gen + ')')} > body.bin && "
                parts.append("--data-binary @body.bin")
        elif self.body == b"" and self.method in ("POST", "PUT", "PATCH"):
            parts.append("--data-binary ''")
        return prefix + " ".join(parts)


def _compact_bytes_expr(body: bytes) -> str:
    """A short Python expression for a long body (runs of one byte compressed)."""
    pieces: list[str] = []
    i = 0
    while i < len(body):
        j = i
        while j < len(body) and body[j] == body[i]:
            j += 1
        if j - i >= 16:
            pieces.append(f"{bytes([body[i]])!r}*{j - i}")
            i = j
        else:
            k = i
            while k < len(body) and not (k + 16 <= len(body) and body[k:k + 16] == bytes([body[k]]) * 16):
                k += 1
            pieces.append(repr(body[i:k]))
            i = k
    expr = "+".join(pieces)
    if len(expr) > 6000:
        expr = "__import__('gzip').decompress(" + repr(gzip.compress(body)) + ")"
    return expr


@dataclass
class Ans:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str | None = None

    def text(self, n: int = 600) -> str:
        return self.body[:n].decode("utf-8", "replace")


class Wire:
    def __init__(self, port: int):
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def send(self, req: Req) -> Ans:
        if req.body is not None and len(req.body) > STREAM_ABOVE:
            return self._send_streaming(req)
        last = None
        for attempt in range(3):
            # A keep-alive connection the server has just closed fails the next request
            # (hyper closes instead of draining a body a handler refused without reading):
            # retry on a new connection. A request that really kills the connection fails
            # every time and is reported.
            if attempt:
                time.sleep(0.05 * attempt)
            conn = self._connect()
            try:
                conn.request(req.method, req.target, body=req.body, headers=req.headers)
                resp = conn.getresponse()
                body = resp.read()
                ans = Ans(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
                if resp.will_close or (req.body and resp.status >= 400):
                    self.close()
                return ans
            except (http.client.HTTPException, ConnectionError, socket.timeout, OSError) as e:
                last = f"{type(e).__name__}: {e}"
                self.close()
        return Ans(error=last)

    def _send_streaming(self, req: Req) -> Ans:
        """A large body on its own connection, reading while writing (as curl does): a
        server may answer 413 before it has read the whole body and then close; that
        answer counts, the unsent rest of the body does not."""
        head = [f"{req.method} {req.target} HTTP/1.1", f"Host: 127.0.0.1:{self.port}",
                f"Content-Length: {len(req.body)}", "Connection: close"]
        raw_head = "\r\n".join(head).encode() + b"\r\n"
        for k, v in req.headers.items():
            raw_head += k.encode("latin-1") + b": " + (v if isinstance(v, bytes) else v.encode("latin-1")) + b"\r\n"
        out = memoryview(raw_head + b"\r\n" + req.body)
        received = bytearray()
        sent, writing = 0, True
        deadline = time.monotonic() + 60
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as sock:
            sock.setblocking(False)
            while time.monotonic() < deadline:
                want_write = [sock] if writing and sent < len(out) else []
                readable, writable, _ = select.select([sock], want_write, [], 1.0)
                if readable:
                    try:
                        chunk = sock.recv(1 << 16)
                    except (ConnectionError, OSError):
                        break
                    if not chunk:
                        break
                    received += chunk
                    ans = _parse_response(bytes(received))
                    if ans is not None:
                        return ans
                if writable:
                    try:
                        sent += sock.send(out[sent:sent + (1 << 16)])
                    except (ConnectionError, OSError):
                        writing = False  # the server stopped reading: wait for its answer
        ans = _parse_response(bytes(received))
        return ans or Ans(error=f"no complete answer ({sent} of {len(out)} bytes sent, got {bytes(received[:200])!r})")


STREAM_ABOVE = 256 * 1024


def _parse_response(data: bytes) -> Ans | None:
    """A complete HTTP/1.1 response with a Content-Length (or an empty body), else None."""
    if b"\r\n\r\n" not in data:
        return None
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        n = int(headers["content-length"])
        if len(body) < n:
            return None
        body = body[:n]
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        out, rest = b"", body
        while True:
            if b"\r\n" not in rest:
                return None
            size_line, rest = rest.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            if len(rest) < size + 2:
                return None
            out, rest = out + rest[:size], rest[size + 2:]
        body = out
    return Ans(status, headers, body)


# --------------------------------------------------------------------------------------
# The module's server and the objects the fuzzed requests may hit.
class Env:
    """The module's server and what the seeding created (a plain class, not a dataclass:
    Hypothesis would print every field in each falsifying example)."""

    def __init__(self, *, server: TesseraServer, wire: Wire, write_key: str, disabled_write_key: str,
                 victim_source: str, victim_token: str, scoped_token: str, profile_ids: list[int], rules: dict):
        self.server, self.wire = server, wire
        self.write_key, self.disabled_write_key = write_key, disabled_write_key
        self.victim_source, self.victim_token, self.scoped_token = victim_source, victim_token, scoped_token
        self.profile_ids, self.rules = profile_ids, rules
        self.log_offset = 0
        self.checked = 0

    def __repr__(self) -> str:  # keeps Hypothesis' falsifying-example report short
        return f"Env(port={self.server.port})"

    def new_log(self) -> str:
        try:
            with open(self.server.log_path, "rb") as f:
                f.seek(self.log_offset)
                data = f.read()
        except FileNotFoundError:
            return ""
        self.log_offset += len(data)
        return data.decode("utf-8", "replace")


def _json_req(env_port: int, method: str, path: str, body: Any = None, auth: str | None = None) -> Ans:
    headers = {"Content-Type": "application/json", "Authorization": auth or f"Bearer {ADMIN_TOKEN}"}
    w = Wire(env_port)
    try:
        return w.send(Req(method, path, headers, None if body is None else json.dumps(body).encode()))
    finally:
        w.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory, binary) -> Env:
    d = tmp_path_factory.mktemp("fuzz")
    # Thousands of wrong credentials from one address: not slowed here (test_security.py
    # tests the slowing), so every request is checked for real.
    srv = TesseraServer(d / "data", d / "server.log", binary=binary, extra_env={"TESSERA_AUTH_FAILURES": "0"})
    cwd = os.getcwd()
    os.chdir(d)  # the server's working directory: whatever it writes to a relative path lands in tmp
    try:
        srv.start()
    finally:
        os.chdir(cwd)
    try:
        port = srv.port

        def ok(ans: Ans, what: str, status: int = 200) -> dict:
            assert ans.status == status, f"seeding: {what} -> {ans.status} {ans.text()} {ans.error}"
            return json.loads(ans.body)

        web = ok(_json_req(port, "POST", "/api/v1/sources", {"name": "fuzz-web"}), "create source", 201)
        victim = ok(_json_req(port, "POST", "/api/v1/sources", {"name": "fuzz-victim"}), "create source", 201)
        off = ok(_json_req(port, "POST", "/api/v1/sources", {"name": "fuzz-off"}), "create source", 201)
        ok(_json_req(port, "POST", f"/api/v1/sources/{off['id']}/disable"), "disable source")
        tok = ok(_json_req(port, "POST", "/api/v1/tokens", {"name": "fuzz-victim", "scopes": ["admin"]}), "token", 201)
        scoped = ok(_json_req(port, "POST", "/api/v1/tokens", {"name": "fuzz-reader", "scopes": ["read:profiles"]}),
                    "token", 201)
        wk = basic_auth(web["writeKey"])
        batch = {"batch": [
            {"type": "identify", "userId": "fuzz-user-1",
             "traits": {"email": "fuzz1@example.com", "phone": "+14155552671", "plan": "pro", "age": 31,
                        "first_name": "Ada", "last_name": "Lovelace", "city": "London", "country": "GB"}},
            {"type": "identify", "anonymousId": "fuzz-anon-2",
             "traits": {"email": "fuzz2@example.com", "first_name": "Ada", "last_name": "Lovelace",
                        "city": "London", "country": "GB"}},
            {"type": "track", "userId": "fuzz-user-1", "event": "Order Completed",
             "properties": {"revenue": 12.5, "currency": "EUR", "category": "shoes", "sku": "A-1"}},
            {"type": "track", "userId": "fuzz-user-1", "event": "Product Added", "properties": {"sku": "B-2"}},
            {"type": "page", "anonymousId": "fuzz-anon-2", "name": "Home"},
            {"type": "group", "userId": "fuzz-user-1", "groupId": "fuzz-group", "traits": {"name": "Acme"}},
            {"type": "alias", "userId": "fuzz-user-3", "previousId": "fuzz-anon-3"},
            # two people who share no identifier, for the merge suggestions (the pair above
            # may be merged by the fuzzed merge requests)
            *({"type": "identify", "anonymousId": f"fuzz-twin-{x}",
               "traits": {"first_name": "Grace", "last_name": "Hopper", "city": "New York", "country": "US",
                          "birthday": "1906-12-09"}} for x in "ab"),
        ]}
        ok(_json_req(port, "POST", "/v1/batch", batch, auth=wk), "seed batch")
        ok(_json_req(port, "POST", "/api/v1/audiences",
                     {"key": "fuzz-aud", "name": "Fuzz", "definition": 'trait plan = "pro"'}), "audience", 201)
        ok(_json_req(port, "PUT", "/api/v1/computed-traits/fuzz_ct",
                     {"aggregate": "count", "event": "Order Completed", "window": "30d"}), "computed trait")

        def profile(identifier: str) -> int | None:
            a = _json_req(port, "GET", "/api/v1/profiles?identifier=" + urllib.parse.quote(identifier, safe=""))
            return json.loads(a.body)["id"] if a.status == 200 else None

        ids = [wait_until(lambda: profile(i), timeout=20, what=f"profile {i}")
               for i in ("user_id:fuzz-user-1", "anonymous_id:fuzz-anon-2", "user_id:fuzz-user-3")]
        # the audience index answers (no 503 audiences_loading) before the fuzzing starts
        wait_until(lambda: _json_req(port, "POST", "/api/v1/audiences/preview", {"definition": "all"}).status == 200,
                   timeout=30, what="audience index ready")
        rules = ok(_json_req(port, "GET", "/api/v1/identity/rules"), "rules")
        e = Env(server=srv, wire=Wire(port), write_key=web["writeKey"], disabled_write_key=off["writeKey"],
                victim_source=victim["id"], victim_token=tok["id"], scoped_token=scoped["token"],
                profile_ids=ids, rules=rules)
        e.new_log()  # the start-up log is not the fuzzers' business (still checked at the end)
        yield e
        e.wire.close()
    finally:
        srv.terminate(timeout=15)


@pytest.fixture(autouse=True)
def _report_server_log(request, env):
    # conftest attaches the log of these servers to the report of a failing test
    request.node._tessera_servers = [env.server]
    yield
    # fuzzed PUT /api/v1/identity/rules may have stored odd but valid rules: put the
    # seeded ones back, so that the next routes still resolve the seeded identifiers
    if json.loads(_json_req(env.server.port, "GET", "/api/v1/identity/rules").body or b"null") != env.rules:
        _json_req(env.server.port, "PUT", "/api/v1/identity/rules", env.rules)


def check(env: Env, req: Req, ans: Ans) -> None:
    env.checked += 1
    repro = f"\n  repro: {req.curl()}"
    got = f"\n  answer: HTTP {ans.status} {ans.headers.get('content-type')!r} {ans.text()!r}"
    log = env.new_log()
    panics = [line for line in log.splitlines() if "panicked" in line]
    assert not panics, (f"server log says panicked: {panics[:3]} (events are applied asynchronously: the "
                        f"panic may come from an earlier request){repro}{got}")
    assert env.server.running(), f"server died (exit {env.server.proc.returncode}){repro}\n{env.server.log_tail(3000)}"
    assert ans.error is None, f"no HTTP answer: {ans.error}{repro}"
    assert ans.status < 500, f"HTTP {ans.status}{repro}{got}"
    if req.method == "HEAD":
        pass  # a HEAD answer has no body, whatever its status
    elif ans.status >= 400:
        try:
            body = json.loads(ans.body)
        except ValueError:
            body = None
        assert isinstance(body, dict), f"error answer is not a JSON object{repro}{got}"
        code, message = body.get("code"), body.get("message")
        assert isinstance(code, str) and code, f"error answer without a string code{repro}{got}"
        assert isinstance(message, str) and message.strip(), f"error answer without a message{repro}{got}"
        ctype = ans.headers.get("content-type", "")
        assert ctype.startswith("application/json"), f"error answer with Content-Type {ctype!r}{repro}{got}"
        assert code in DOCUMENTED_CODES, f"error code {code!r} is not in docs/API.md{repro}{got}"
        assert DOCUMENTED_CODES[code] == ans.status, (
            f"code {code!r} came with HTTP {ans.status}, docs/API.md says {DOCUMENTED_CODES[code]}{repro}{got}")
        _check_rejected(body, repro, got)
    elif ans.status == 204 or (req.method == "OPTIONS" and not ans.body):
        pass
    elif req.target.split("?")[0] == "/metrics" and req.method == "GET":
        pass
    else:
        try:
            body = json.loads(ans.body)
        except ValueError:
            raise AssertionError(f"success answer is not JSON{repro}{got}") from None
        if isinstance(body, dict):
            _check_rejected(body, repro, got)


def _check_rejected(body: dict, repro: str, got: str) -> None:
    rejected = body.get("rejected")
    if rejected is None:
        return
    assert isinstance(rejected, list), f"rejected is not a list{repro}{got}"
    for item in rejected:
        assert isinstance(item, dict) and isinstance(item.get("index"), int), f"bad rejected item {item}{repro}"
        assert item.get("code") in DOCUMENTED_CODES, f"rejected code {item.get('code')!r} undocumented{repro}{got}"
        assert isinstance(item.get("message"), str) and item["message"], f"rejected item without message{repro}"


def send(env: Env, req: Req) -> Ans:
    ans = env.wire.send(req)
    check(env, req, ans)
    return ans


# --------------------------------------------------------------------------------------
# Strategies: values.
ANY_CHAR = st.characters()  # every code point, lone surrogates and NUL included
SPECIAL_STRINGS = [
    "", " ", "\x00", "a\x00b", "null", "undefined", "anonymous", "0", "-1", "none", "n/a", "---",
    "\ud800", "\udfff", "x\udc80y", "\ufeff", "\u202e", "😀" * 50, "é" * 300, "\t\n\r",
    "%00", "%FF", "../../etc/passwd", "'; DROP TABLE profiles;--", "${jndi:ldap://x}", "<script>",
    "2026-01-01T00:00:00Z", "NaN", "Infinity", "1e309", "-0", "9" * 400, "a" * 10_000,
    "user_id:x", "email:Jane@Example.com", "phone:+14155552671", ":", "::", "a:b:c",
]
HUGE_NUMBERS = [2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1, 2**64, 10**30, -(10**30),
                10**400, 1e308, -1e308, 5e-324, -0.0, 0.1]
short_text = st.text(ANY_CHAR, max_size=12)
texts = st.one_of(st.text(ANY_CHAR, max_size=40), st.sampled_from(SPECIAL_STRINGS),
                  st.integers(0, 50_000).map(lambda n: "x" * n))
numbers = st.one_of(st.integers(), st.sampled_from(HUGE_NUMBERS), st.floats(allow_nan=False, allow_infinity=False))
json_scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(short_text, inner, max_size=4),
    max_leaves=10,
)
DEEP_MARK = "__tessera_fuzz_deep__"


def deep_json(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "1" + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


deep_values = st.tuples(st.sampled_from([2, 64, 100, 127, 128, 129, 500, 20_000]), st.sampled_from(["list", "dict"]))
INVALID_JSON = [
    b"{", b"}", b"[", b"nul", b"NaN", b'{"a": NaN}', b'{"a": Infinity}', b"\xef\xbb\xbf{}", b"{} {}", b'{"a":1,}',
    b'"\\ud800"', b'{"name": "\\ud800"}', b'{"a": 1e999999}', b'{"a": -}', b"\x00", b'{"a":"\x00"}',
    b'{"a":"\xff"}', b"\xff\xfe{\x00}\x00", b"{'a': 1}", b'{"a" 1}', b"[1,2", b'{"\\u0000": 1}', b'"unterminated',
    b"0" * 5000, b"-" + b"9" * 5000, b"1" + b"0" * 400, b"true", b"[]", b"{}", b"null", b'"x"', b"1e400",
]
CONTENT_TYPES = [None, "application/json", "application/json", "application/json", "text/plain",
                 "text/plain;charset=UTF-8", "application/json; charset=utf-16", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=zz", "*/*", "garbage/garbage;;;=", ""]


def encode_json(value: Any, ascii_only: bool, deep: tuple[int, str] | None = None) -> bytes:
    text = json.dumps(value, ensure_ascii=ascii_only)
    if deep is not None:
        text = text.replace(json.dumps(DEEP_MARK), deep_json(*deep))
    return text.encode("utf-8", "surrogatepass")  # lone surrogates become invalid UTF-8 on purpose


def paths_of(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside a JSON template (the root excluded)."""
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            out.append(prefix + (k,))
            out.extend(paths_of(v, prefix + (k,)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.append(prefix + (i,))
            out.extend(paths_of(v, prefix + (i,)))
    return out


def set_path(value: Any, path: tuple, new: Any, delete: bool = False) -> Any:
    value = copy.deepcopy(value)
    cur = value
    for p in path[:-1]:
        cur = cur[p]
    if delete:
        del cur[path[-1]]
    else:
        cur[path[-1]] = new
    return value


@st.composite
def mutated(draw, template: Any, values=json_values):
    """The template with up to three fields replaced by other JSON (wrong types, odd values),
    deleted, or given an unknown sibling."""
    value = template
    for _ in range(draw(st.integers(0, 3))):
        paths = paths_of(value)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "deep", "extra"]))
        if action == "delete":
            value = set_path(value, path, None, delete=True)
        elif action == "deep":
            value = set_path(value, path, DEEP_MARK)
        elif action == "extra" and isinstance(value, dict):
            value = dict(value)
            value[draw(short_text)] = draw(values)
        else:
            value = set_path(value, path, draw(values))
    return value


# ---- names, identifiers, durations, definitions -------------------------------------------
def mostly(good, wild):
    """Three draws in four from `good` (to get past validation into the code behind it),
    the rest from `wild`."""
    return st.sampled_from([True, True, True, False]).flatmap(lambda ok: good if ok else wild)


GOOD_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=16)
NAMES = ["plan", "email", "age", "address.country", "total_orders", "lifetime_value", "rfm_segment", "fuzz_ct",
         "revenue", "category", "currency", "sku", "marketing", "country", "city"]
ODD_NAMES = ["fuzz-aud", "user_id", "phone", "$", "_", "a.b.c", "a..b", ".", "a.", "2fa", "and", "not", "event"]
EVENTS = ["Order Completed", "Product Added", "Page Viewed", "Identify", "Group", "Audience Entered",
          "Product Added to Wishlist"]
names = mostly(st.sampled_from(NAMES), st.one_of(st.sampled_from(ODD_NAMES), st.text(ANY_CHAR, max_size=10),
                                                  st.sampled_from(SPECIAL_STRINGS)))
event_names = mostly(st.sampled_from(EVENTS), st.one_of(st.sampled_from(["", " ", "é" * 100]), texts))
BIG_COUNTS = [0, 1, 7, 59, 60, 999_999_999, 2**31, 2**32, 2**53, 2**63 - 1, 2**63, 2**64, 10**30]
good_durations = st.builds(lambda n, u: f"{n}{u}", st.integers(1, 400), st.sampled_from(list("smhdw")))
durations = mostly(good_durations, st.one_of(
    st.builds(lambda n, u: f"{n}{u}", st.one_of(st.sampled_from(BIG_COUNTS), st.integers(-5, 400)),
              st.sampled_from(list("smhdw") + ["y", "ms", "", "D", " d"])),
    st.sampled_from(["", "7", "d", "7 d", "-7d", "+7d", "7.5d", "1e3d", "０d", "7d7d", "P7D"]),
    st.text(ANY_CHAR, max_size=6),
))
IDENTIFIER_TYPES = ["user_id", "email", "phone", "anonymous_id", "device_id", "advertising_id"]
identifier_types = mostly(st.sampled_from(IDENTIFIER_TYPES), st.one_of(
    st.sampled_from(["crm_id", "", "USER_ID", "Email", "user id", "x" * 300]), st.text(ANY_CHAR, max_size=10)))
phone_like = st.one_of(
    st.text(st.sampled_from(list("0123456789+()-. x#*;:ext")), max_size=40),
    st.sampled_from(["  2 22#:", "003-836-4618x3001", "0xd2dc00a30027c9d5", "+99999999999999999999", "++1", "+",
                     "+0", "00000000000000000000000000", "+1 (415) 555-2671 ext. 9999999999999999999",
                     "+800 1234 5678", "+882 1234 5678 9", "tel:+1-415-555-2671", "+4١٥٥٥٥٢٦٧١",
                     "+14155552671", "(415) 555-2671", "+41 44 668 18 00", "+49 30 1234567"]),
)
email_like = st.one_of(
    st.builds(lambda a, b: f"{a}@{b}", st.text(ANY_CHAR, max_size=12), st.text(ANY_CHAR, max_size=12)),
    st.builds(lambda a: f"{a}@example.com", GOOD_TEXT),
    st.sampled_from(["a@b.c", "@", "a@", "@b.tld", "A@EXAMPLE.COM ", "a@b@c.de", "\x00@x.de", "a" * 5000 + "@x.de",
                     "fuzz1@example.com", "FUZZ1@Example.COM"]),
)
good_ids = st.one_of(st.sampled_from(["fuzz-user-1", "fuzz-user-9", "fuzz-anon-2", "fuzz-anon-3"]),
                     st.from_regex(r"fz-[a-z0-9]{1,8}", fullmatch=True))
id_values = mostly(good_ids, st.one_of(texts, phone_like, email_like, numbers,
                                       st.sampled_from([True, None, [], {}, ["x"], {"a": 1}])))


def _identifier(t: str, v: str) -> str:
    return f"{t}:{v}"


identifiers = mostly(
    st.sampled_from(["user_id:fuzz-user-1", "email:FUZZ1@example.com", "phone:+1 415 555 2671",
                     "anonymous_id:fuzz-anon-2", "user_id:fuzz-user-3", "email:nobody@example.com"]),
    st.builds(_identifier, identifier_types, st.one_of(st.text(ANY_CHAR, max_size=30), phone_like, email_like,
                                                       st.sampled_from(SPECIAL_STRINGS))))

GOOD_OPS = ["=", "!=", "<", "<=", ">", ">=", "contains", "in", "exists", "not exists", "before", "after", "within"]
OPS = mostly(st.sampled_from(GOOD_OPS), st.sampled_from(["==", "~", "", "not_exists", "is", "IN", "Contains"]))
JSON_OPS = mostly(st.sampled_from(GOOD_OPS[:8] + ["exists", "not_exists", "before", "after", "within"]),
                  st.sampled_from(["==", "~", "", "not exists", "is"]))
GOOD_TEST_VALUES = ['"pro"', "3", "-12.5", "true", "null", '["DE", "AT"]', "[]", '"2026-01-01T00:00:00Z"',
                    '"2026-01-31"', "30d ago", "7d"]
WILD_TEST_VALUES = ["1e308", "1e999", "-1e999", "99999999999999999999999", "[[[]]]", '"+275760-09-13T00:00:00Z"',
                    '"-262144-01-01T00:00:00Z"', '"9999-12-31T23:59:60Z"', "0s ago", '"\\ud800"', '"\\u0000"',
                    "0x10", ".5", "--1", '"', "'x'", "99999999999999999999d ago", "9223372036854775807s ago",
                    "9223372036854775807s", "18446744073709551615w", "106751992d ago", "106751992d"]


def q(name: str) -> str:
    return json.dumps(name)  # a quoted name or value (JSON escapes, as the language takes)


test_values = mostly(st.sampled_from(GOOD_TEST_VALUES), st.one_of(
    st.sampled_from(WILD_TEST_VALUES), durations, durations.map(lambda d: f"{d} ago"), texts.map(q),
    st.integers().map(str), st.floats(allow_nan=False).map(repr)))
text_names = mostly(st.sampled_from(NAMES), st.one_of(names.map(q),
                                                      st.from_regex(r"[A-Za-z_][A-Za-z0-9_.$-]{0,8}", fullmatch=True)))
text_tests = st.builds(lambda op, v: f"{op} {v}" if op not in ("exists", "not exists") else op, OPS, test_values)
counts = mostly(st.integers(0, 5), st.one_of(st.sampled_from(BIG_COUNTS), st.integers(-3, 3), durations))
text_leaf = st.one_of(
    st.builds(lambda kw, n, t: f"{kw} {n} {t}", st.sampled_from(["trait", "computed", "TRAIT"]), text_names, text_tests),
    st.builds(
        lambda e, where, count, window: f"event {q(e)}{where}{count}{window}",
        event_names,
        st.one_of(st.just(""), st.builds(lambda n, t: f" where {n} {t}", text_names, text_tests),
                  st.builds(lambda n, t, m, u: f" where ({n} {t} and {m} {u})", text_names, text_tests,
                            text_names, text_tests)),
        st.one_of(st.just(""), st.builds(lambda op, n: f" {op} {n}", st.sampled_from(GOOD_OPS[:6]), counts)),
        st.one_of(st.just(""), durations.map(lambda d: f" within {d}"), event_names.map(lambda e: f" since {q(e)}")),
    ),
    st.builds(lambda kw, n: f"{kw} {n}", st.sampled_from(["identifier", "consent", "audience"]),
              mostly(st.sampled_from(["email", "marketing", "fuzz-aud", "phone"]), texts)),
    st.sampled_from(["all", "none", "ALL", "not", "and", "(", ")", "()", "", " ", "trait", "event", "event x"]),
)
text_definitions = st.recursive(
    text_leaf,
    lambda inner: st.one_of(
        st.builds(lambda a, b: f"{a} and {b}", inner, inner),
        st.builds(lambda a, b: f"{a} OR {b}", inner, inner),
        inner.map(lambda a: f"not {a}"),
        inner.map(lambda a: f"({a})"),
    ),
    max_leaves=5,
)
deep_text_definitions = st.builds(
    lambda n, kind: {"not": "not " * n + "all", "paren": "(" * n + "all" + ")" * n,
                     "and": " and ".join(["all"] * n), "open": "(" * n}[kind],
    st.sampled_from([63, 64, 65, 200, 10_000, 100_000]), st.sampled_from(["not", "paren", "and", "open"]),
)
json_test_values = mostly(
    st.one_of(st.sampled_from(["pro", "DE", "EUR", "shoes"]), st.integers(-5, 100), st.booleans(),
              st.lists(st.sampled_from(["DE", "AT", 1]), max_size=3),
              st.fixed_dictionaries({"at": st.just("2026-01-01T00:00:00Z")}),
              st.fixed_dictionaries({"ago": good_durations}), good_durations),
    st.one_of(json_values, st.fixed_dictionaries({}, optional={"at": texts, "ago": durations}), durations))
json_tests = st.fixed_dictionaries({"name": names, "op": JSON_OPS}, optional={"value": json_test_values})
json_leaf = st.one_of(
    st.builds(lambda k, t: {k: t}, st.sampled_from(["trait", "computed"]), json_tests),
    st.builds(lambda e: {"event": e}, st.fixed_dictionaries(
        {"name": event_names},
        optional={"where": st.lists(json_tests, max_size=2),
                  "count": st.fixed_dictionaries({"op": st.sampled_from(GOOD_OPS[:6])},
                                                 optional={"value": mostly(st.integers(0, 5), st.one_of(
                                                     st.sampled_from(BIG_COUNTS), numbers))}),
                  "window": mostly(st.one_of(st.fixed_dictionaries({"within": durations}),
                                             st.fixed_dictionaries({"since": event_names})), json_values)})),
    st.builds(lambda k, v: {k: v}, st.sampled_from(["identifier", "consent", "audience"]),
              mostly(st.sampled_from(["email", "marketing", "fuzz-aud"]), json_values)),
    json_values,
)
json_definitions = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.builds(lambda k, xs: {k: xs}, st.sampled_from(["and", "or"]), st.lists(inner, max_size=3)),
        inner.map(lambda x: {"not": x}),
    ),
    max_leaves=5,
)
definitions = st.one_of(
    text_definitions, text_definitions, json_definitions, deep_text_definitions, texts,
    json_definitions.map(json.dumps),  # "text starting with { is read as JSON"
    st.just(DEEP_MARK),
)
audience_keys = mostly(st.from_regex(r"fz-[a-z0-9_-]{1,12}", fullmatch=True), st.one_of(
    st.sampled_from(["fuzz-aud", "preview", "changes", "a", "a" * 64, "a" * 65, "A", "1a", "-", "_a", "a b", "é"]),
    st.text(ANY_CHAR, max_size=20),
))
AGGREGATES = ["count", "sum", "avg", "min", "max", "first", "last", "most_frequent", "unique_list", "first_seen",
              "last_seen"]
aggregates = mostly(st.sampled_from(AGGREGATES), st.sampled_from(["median", "", "COUNT", "sum ", "p99"]))


# ---- activation: destinations and journeys ------------------------------------------------
good_text = mostly(GOOD_TEXT, texts)
MESSAGE_TYPES = ["identify", "track", "page", "screen", "group", "alias"]
activation_keys = mostly(st.from_regex(r"fz-[a-z0-9_-]{1,10}", fullmatch=True),
                         st.one_of(st.sampled_from(["A", "-", "a b", "é", "x" * 300, ""]), texts))
jinja_templates = mostly(
    st.sampled_from(["{{ traits.first_name }}", "Hi {{ traits.first_name | default('there') }}",
                     "{{ event | tojson }}", "{{ event.properties.sku }}", "{{ profile.id }} {{ journey.key }}",
                     "{{ computed.total_orders }}", "plain text", ""]),
    st.one_of(st.sampled_from([
        "{{", "{%", "{{ }}", "{{ x.y.z }}", "{{ 1/0 }}", "{{ x | nosuchfilter }}", "{% for i in range(999999999) %}x{% endfor %}",
        "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "{{ '\\ud800' }}", "{% raw %}", "{{ traits[0] }}",
        "{{ " + "(" * 500 + "1" + ")" * 500 + " }}", "{% include 'x' %}", "{% extends 'x' %}", "{{ range(10**9) | list }}",
        "{{ 'x' * 1000000000 }}"]), texts))
LOOPBACK = "http://127.0.0.1:9"  # the discard port: nothing listens, deliveries fail fast
destination_settings = {
    "webhook": st.fixed_dictionaries({"url": st.just(LOOPBACK + "/hook")}, optional={
        "secret": good_text, "headers": st.dictionaries(mostly(st.sampled_from(["X-A", "X-Team"]), texts), good_text,
                                                        max_size=2), "template": jinja_templates}),
    "email": st.fixed_dictionaries({"smtpUrl": st.sampled_from(["smtp://127.0.0.1:9", "smtps://127.0.0.1:9",
                                                                "smtp+starttls://127.0.0.1:9"]),
                                    "from": mostly(st.just("Shop <shop@example.com>"), texts),
                                    "subject": jinja_templates, "text": jinja_templates}, optional={
        "username": good_text, "password": good_text, "to": jinja_templates, "html": jinja_templates,
        "unsubscribeUrl": jinja_templates}),
    "sms": st.fixed_dictionaries({"url": st.just(LOOPBACK + "/sms"), "from": mostly(st.just("+15005550006"), texts),
                                  "body": jinja_templates}, optional={
        "username": good_text, "password": good_text, "to": jinja_templates}),
    "crm": st.fixed_dictionaries({"url": st.just(LOOPBACK), "shape": mostly(st.sampled_from(["hubspot", "generic"]),
                                                                           texts),
                                  "mapping": st.dictionaries(names, mostly(names, json_values), max_size=3)},
                                 optional={"token": good_text, "crmSource": good_text,
                                           "crmOwned": st.lists(names, max_size=2)}),
}
delivery_numbers = mostly(st.integers(0, 20), numbers)
destinations = st.sampled_from(list(destination_settings)).flatmap(lambda kind: st.fixed_dictionaries(
    {"id": activation_keys, "type": st.just(kind), "settings": destination_settings[kind],
     "enabled": st.just(False)},
    optional={
        "name": good_text, "purpose": mostly(st.sampled_from(["marketing", "analytics"]), texts),
        "filter": st.fixed_dictionaries({}, optional={
            "events": st.lists(event_names, max_size=2), "types": st.lists(mostly(
                st.sampled_from(MESSAGE_TYPES), texts), max_size=2),
            "sources": st.lists(good_text, max_size=1), "memberOf": mostly(st.just("fuzz-aud"), texts),
            "audiences": st.lists(mostly(st.just("fuzz-aud"), texts), max_size=2), "includeEvents": st.booleans()}),
        "delivery": st.fixed_dictionaries({}, optional={
            k: delivery_numbers for k in ["maxAttempts", "initialBackoffMs", "maxBackoffMs", "ratePerSecond",
                                          "concurrency", "batchSize", "timeoutMs", "breakerFailures",
                                          "breakerCooldownMs"]} | {
            "frequencyCap": st.fixed_dictionaries({"max": delivery_numbers, "window": durations})}),
    }))
steps = st.recursive(
    st.one_of(
        st.fixed_dictionaries({"wait": durations}),
        st.fixed_dictionaries({"send": st.fixed_dictionaries(
            {"destination": mostly(st.just("fz-dest"), texts)},
            optional={"overrides": st.dictionaries(mostly(st.sampled_from(["body", "subject", "text", "template"]),
                                                          texts), jinja_templates, max_size=2)})}),
        st.fixed_dictionaries({"exit": mostly(st.just(True), json_values)}),
    ),
    lambda inner: st.one_of(
        st.fixed_dictionaries({"if": st.one_of(text_definitions, texts)},
                              optional={"then": st.lists(inner, max_size=2), "else": st.lists(inner, max_size=2)}),
        st.fixed_dictionaries({"waitUntil": st.fixed_dictionaries({"event": event_names, "timeout": durations})},
                              optional={"then": st.lists(inner, max_size=2), "else": st.lists(inner, max_size=2)}),
    ),
    max_leaves=6,
)
journeys = st.fixed_dictionaries(
    {"key": activation_keys, "trigger": mostly(st.one_of(st.fixed_dictionaries({"audienceEntered": st.just("fuzz-aud")}),
                                                         st.fixed_dictionaries({"event": event_names})), json_values),
     "steps": mostly(st.lists(steps, min_size=1, max_size=4), st.just([])), "enabled": st.just(False)},
    optional={"name": good_text, "reentry": mostly(st.one_of(st.booleans(), durations), json_values)},
)


# ---- request pieces --------------------------------------------------------------------------
def pct(text: str) -> str:
    return urllib.parse.quote(text.encode("utf-8", "surrogatepass"), safe="")


def pct_loose(text: str) -> str:
    # leave the sub-delims and ':' / '@' as they are (legal in a path segment)
    return urllib.parse.quote(text.encode("utf-8", "surrogatepass"), safe=":@!$&'()*+,;=")


@st.composite
def path_segment(draw, known: list[str], extra=None):
    kind = draw(st.sampled_from(["known"] * 4 + ["text", "long", "bytes", "special", "extra"]))
    if kind == "known":
        raw = draw(st.sampled_from(known))
    elif kind == "text":
        raw = draw(st.text(ANY_CHAR, min_size=1, max_size=30))
    elif kind == "long":
        raw = draw(st.sampled_from(known)) + "x" * draw(st.sampled_from([200, 5_000, 20_000]))
    elif kind == "bytes":
        return urllib.parse.quote(draw(st.binary(min_size=1, max_size=12)), safe="")
    elif kind == "special":
        return draw(st.sampled_from(["%FF", "%C0%80", "%ED%A0%80", "%00", "%2F", "%25", "..", ".", "%20", "~", "%",
                                     "%G1", "%E2%82"]))
    else:
        raw = draw(extra if extra is not None else texts)
    if isinstance(raw, (int, float)):
        raw = str(raw)
    if raw == "":
        raw = "%20"
        return raw
    return draw(st.sampled_from([pct, pct_loose]))(raw)


QUERY_VALUES = ["-1", "0", "1", "2", "100", "1000", "1001", "99999999999999999999999", "18446744073709551615",
                "18446744073709551616", "9223372036854775807", "9223372036854775808", "-9223372036854775808",
                "-9223372036854775809", "garbage", "", "NaN", "nan", "inf", "-inf", "1e308", "1e309", "1.5", " 1", "+1",
                "0x10", "%FF", "%00", "a,b,,c", ",", "audience", "computed_trait", "trait", "user_id:fuzz-user-1",
                "email:fuzz1@example.com", "phone:+14155552671"]
RAW_QUERIES = ["%", "%%", "=", "&&&", "a=%FF", "limit", "limit=1&limit=2", "limit=%", "=%FF", "%FF=1", "limit=1=2",
               "limit[]=1", "limit[a]=1", "a" * 10_000 + "=1", "limit=" + "9" * 10_000, ";limit=1", "limit=1#frag",
               "next=%FF%FE", "identifier=%ED%A0%80", "identifier"]


@st.composite
def query_strings(draw, keys: tuple[str, ...], required: tuple[str, ...] = ()):
    """`clean`: the route's own parameters once each, values mostly sensible; `pairs`:
    random keys and values, repeated keys; `raw`: malformed query strings."""
    kind = draw(st.sampled_from(["clean", "clean", "clean", "pairs", "pairs", "raw", "none"]))
    if kind == "none":
        pairs = []
    elif kind == "raw":
        return "?" + draw(st.sampled_from(RAW_QUERIES))
    elif kind == "clean":
        pairs = [(k, draw(QUERY_PARAMS[k])) for k in keys if k in required or draw(st.booleans())]
    else:
        pairs = [(k, draw(QUERY_PARAMS[k])) for k in required if draw(st.integers(0, 9))]
        for _ in range(draw(st.integers(0, 4))):
            k = draw(mostly(st.sampled_from(list(keys) or ["x"]), st.one_of(st.sampled_from(["x", ""]), short_text)))
            v = draw(st.one_of(st.sampled_from(QUERY_VALUES), texts, st.integers().map(str), identifiers))
            pairs.append((k, v))
    if not pairs:
        return ""
    enc = draw(st.sampled_from([pct, pct_loose]))
    return "?" + "&".join(f"{enc(k)}={enc(str(v))}" for k, v in pairs)


def _query_number(good):
    return mostly(good.map(str), st.one_of(st.sampled_from(QUERY_VALUES), st.integers().map(str), texts))


QUERY_PARAMS = {
    "limit": _query_number(st.integers(1, 100)),
    "after": _query_number(st.integers(0, 50)),
    "before": _query_number(st.integers(0, 200)),
    "threshold": _query_number(st.floats(-10, 40)),
    "action": mostly(st.sampled_from(["audience.", "token.", "identity.", "source.", ""]), texts),
    "audience": mostly(st.sampled_from(["fuzz-aud", "x"]), texts),
    "next": mostly(st.sampled_from(["", "1", "10"]), st.one_of(texts, st.binary(max_size=30).map(
        lambda b: base64.urlsafe_b64encode(b).decode()))),
    "include": mostly(st.sampled_from(["plan", "plan,email", "", ",", "plan,,age"]), texts),
    "class": mostly(st.sampled_from(["audience", "computed_trait", "trait"]), texts),
    "identifier": identifiers,
    "event": event_names,
    "property": names,
    "where": st.one_of(text_definitions, text_definitions, text_definitions, deep_text_definitions, texts),
    "by": names,
    "within": durations,
    "destination": mostly(st.sampled_from(["fz-dest", "x"]), texts),
    "status": mostly(st.sampled_from(["pending", "delivered", "dead", "retrying", "blocked"]), texts),
    "profileId": _query_number(st.integers(0, 50)),
}


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@st.composite
def admin_auth(draw, env: Env) -> tuple[dict, str]:
    kind = draw(st.sampled_from(["bearer"] * 8 + ["basic", "scoped", "garbage", "none"]))
    if kind == "bearer":
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}, "bearer-admin"
    if kind == "basic":
        return {"Authorization": f"Basic {_b64(ADMIN_TOKEN.encode() + b':')}"}, "basic-admin"
    if kind == "scoped":
        return {"Authorization": f"Bearer {env.scoped_token}"}, "raw"
    if kind == "none":
        return {}, "none"
    value = draw(st.one_of(
        st.sampled_from(["Bearer", "Bearer ", "bearer " + ADMIN_TOKEN, "Bearer  " + ADMIN_TOKEN, "Basic", "Basic !!!",
                         "Basic " + _b64(b"\xff\xfe:"), "Basic " + _b64(b"no-colon"), "Basic " + _b64(b":"),
                         "Token " + ADMIN_TOKEN, ADMIN_TOKEN, "Bearer " + ADMIN_TOKEN + "x", "Bearer tsk_" + "0" * 40,
                         "Bearer " + "é" * 10, "Basic " + "A" * 10_000]),
        st.binary(max_size=40).map(lambda b: "Basic " + _b64(b)),
        # header bytes: visible ASCII and obs-text (no CR/LF/NUL, which HTTP itself refuses)
        st.binary(max_size=40).map(lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7f) or b"x"),
    ))
    return {"Authorization": value}, "raw"


@st.composite
def body_bytes(draw, template: Any | None, values=json_values) -> tuple[bytes | None, str]:
    kinds = ["shaped"] * 5 + ["json", "json", "invalid", "bytes", "empty", "deep", "none"] if template is not None \
        else ["none"] * 6 + ["json", "invalid", "empty", "bytes"]
    kind = draw(st.sampled_from(kinds))
    ascii_only = draw(st.booleans())
    if kind == "none":
        return None, kind
    if kind == "shaped":
        value = draw(mutated(template, values)) if draw(st.booleans()) else template
        deep = draw(deep_values) if DEEP_MARK in json.dumps(value) else None
        return encode_json(value, ascii_only, deep), kind
    if kind == "json":
        return encode_json(draw(json_values), ascii_only), kind
    if kind == "invalid":
        return draw(st.sampled_from(INVALID_JSON)), kind
    if kind == "bytes":
        return draw(st.binary(max_size=200)), kind
    if kind == "empty":
        return b"", kind
    return deep_json(*draw(deep_values)).encode(), kind


# --------------------------------------------------------------------------------------
# Admin, profile, identity and audience routes.
@dataclass(frozen=True)
class Route:
    method: str
    path: str
    body: str | None = None
    query: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


PROFILE = "/v1/spaces/{space}/collections/users/profiles/{key}"
# Read-only and additive routes first; the ones that unlink, merge, erase, disable or
# revoke what the others look up come last (the order of the tests is the file's).
ADMIN_ROUTES = [
    Route("GET", "/healthz"),
    Route("POST", "/api/v1/sources", "source"),
    Route("GET", "/api/v1/sources"),
    Route("POST", "/api/v1/tokens", "token"),
    Route("GET", "/api/v1/tokens"),
    Route("GET", "/api/v1/audit", query=("after", "action", "limit")),
    Route("GET", "/api/v1/rejections", query=("limit",)),
    Route("GET", "/api/v1/profiles", query=("identifier",)),
    Route("GET", "/api/v1/profiles/{profile}"),
    Route("GET", "/api/v1/profiles/{profile}/timeline", query=("limit", "before")),
    Route("GET", PROFILE + "/traits", query=("include", "limit", "class")),
    Route("GET", PROFILE + "/events", query=("limit", "next")),
    Route("GET", PROFILE + "/external_ids", query=("limit", "next")),
    Route("GET", "/api/v1/identity/rules"),
    Route("GET", "/api/v1/identity/conflicts", query=("limit",)),
    Route("GET", "/api/v1/identity/suggestions", query=("threshold", "limit")),
    Route("GET", "/api/v1/audiences"),
    Route("POST", "/api/v1/audiences", "audience"),
    Route("POST", "/api/v1/audiences/preview", "preview"),
    Route("GET", "/api/v1/audiences/changes", query=("after", "audience", "limit")),
    Route("GET", "/api/v1/audiences/{audience}"),
    Route("GET", "/api/v1/audiences/{audience}/members", query=("after", "limit")),
    Route("PUT", "/api/v1/audiences/{audience}", "audience_update"),
    Route("PATCH", "/api/v1/audiences/{audience}", "audience_update"),
    Route("DELETE", "/api/v1/audiences/{audience}"),
    Route("GET", "/api/v1/computed-traits"),
    Route("GET", "/api/v1/computed-traits/{trait}"),
    Route("PUT", "/api/v1/computed-traits/{trait}", "computed"),
    Route("DELETE", "/api/v1/computed-traits/{trait}"),
    Route("GET", "/api/v1/rfm"),
    Route("PUT", "/api/v1/rfm", "rfm"),
    Route("GET", "/api/v1/insights/top", query=("event", "property", "where", "by", "within", "limit")),
    Route("POST", "/api/v1/privacy/consent", "consent"),
    Route("POST", "/api/v1/privacy/exports", "identifier"),
    Route("GET", "/api/v1/privacy/erasures/{request}"),
    # activation: fuzzed destinations only ever point at 127.0.0.1:9 (closed) and are never
    # of type "file" (which would write wherever its path says)
    Route("POST", "/api/v1/destinations", "destination"),
    Route("GET", "/api/v1/destinations"),
    Route("GET", "/api/v1/destinations/{destination}"),
    Route("PUT", "/api/v1/destinations/{destination}", "destination"),
    Route("GET", "/api/v1/deliveries", query=("destination", "status", "profileId", "after", "limit")),
    Route("POST", "/api/v1/deliveries/retry", "retry"),
    Route("POST", "/api/v1/journeys", "journey"),
    Route("GET", "/api/v1/journeys"),
    Route("GET", "/api/v1/journeys/{journey}"),
    Route("PUT", "/api/v1/journeys/{journey}", "journey"),
    Route("GET", "/api/v1/profiles/{profile}/journeys"),
    Route("DELETE", "/api/v1/journeys/{journey}"),
    Route("DELETE", "/api/v1/destinations/{destination}"),
    Route("POST", "/api/v1/sources/{source}/disable"),
    Route("POST", "/api/v1/tokens/{token}/revoke"),
    Route("PUT", "/api/v1/identity/rules", "rules"),
    Route("POST", "/api/v1/identity/unlink", "unlink"),
    Route("POST", "/api/v1/identity/merge", "merge"),
    Route("POST", "/api/v1/privacy/erasures", "identifier"),
]
REQUIRED_QUERY = {"/api/v1/insights/top": ("event", "property"), "/api/v1/profiles": ("identifier",)}


def body_template(name: str, env: Env, draw) -> tuple[Any, Any]:
    """(template, value strategy for its fields) of a route's body. The template is
    mostly valid, so that requests also get past validation; `mutated` then breaks it."""
    pid = mostly(st.sampled_from(env.profile_ids),
                 st.one_of(st.integers(), st.sampled_from(HUGE_NUMBERS), json_values))
    if name == "source":
        return {"name": draw(good_text)}, json_values
    if name == "token":
        return {"name": draw(good_text), "scopes": draw(st.lists(
            mostly(st.sampled_from(["admin", "read:profiles"]),
                   st.one_of(st.sampled_from(["write:x", "ADMIN", "", "read:", "admin "]), texts)),
            min_size=draw(st.sampled_from([1, 1, 1, 0])), max_size=3))}, json_values
    if name == "rules":
        return env.rules, st.one_of(
            json_values, numbers,
            st.sampled_from(["(", "[", "a{99999999}", "(a*)*$", "\\p{Foo}", "(?P<x>", "x{2}{2}{2}{2}{2}{2}{2}",
                             "trim", "lowercase", "email", "phone", "none", "US", "CH", "ZZ", "001", "us", "",
                             "traits.", ".", "traits..email", "context.device.id", "^.*$", ".*"]),
            st.lists(st.sampled_from(["traits.email", "", ".", "a" * 1000, "traits.phone", "context.traits.crm"]),
                     max_size=3),
            st.integers(-1, 10))
    if name == "unlink":
        return {"type": draw(identifier_types),
                "value": draw(st.one_of(st.sampled_from(["fuzz1@example.com", "fuzz-anon-2", "+14155552671"]),
                                        texts, phone_like, email_like))}, id_values
    if name == "merge":
        return {"profiles": [draw(pid), draw(pid)], "reason": draw(good_text)}, st.one_of(pid, json_values)
    if name == "audience":
        return {"key": draw(audience_keys), "name": draw(good_text), "description": draw(good_text),
                "definition": draw(definitions)}, st.one_of(json_values, definitions)
    if name == "audience_update":
        return {"name": draw(good_text), "description": draw(good_text), "definition": draw(definitions)}, \
            st.one_of(json_values, definitions)
    if name == "preview":
        return {"definition": draw(definitions), "sample": draw(mostly(st.integers(0, 20), st.sampled_from(
            BIG_COUNTS)))}, st.one_of(json_values, definitions)
    if name == "computed":
        body = {"aggregate": draw(aggregates), "event": draw(event_names), "property": draw(names),
                "window": draw(durations), "description": draw(good_text),
                "where": draw(st.lists(json_tests, max_size=2))}
        for optional in ("event", "property", "window", "where", "description"):
            if draw(st.booleans()):
                del body[optional]
        return body, st.one_of(json_values, durations)
    if name == "rfm":
        return {"event": draw(event_names), "revenue_property": draw(names),
                "window": draw(durations)}, st.one_of(json_values, durations)
    if name == "identifier":
        return {"identifier": draw(identifiers)}, st.one_of(json_values, identifiers)
    if name == "destination":
        return draw(destinations), st.one_of(json_values, jinja_templates, durations)
    if name == "journey":
        return draw(journeys), st.one_of(json_values, steps, definitions, durations)
    if name == "retry":
        return {"destination": draw(mostly(st.just("fz-dest"), texts)),
                "ids": draw(st.lists(mostly(st.integers(0, 20), numbers), max_size=3))}, json_values
    if name == "consent":
        body = {"identifier": draw(identifiers),
                "purposes": draw(mostly(
                    st.dictionaries(mostly(st.sampled_from(["marketing", "analytics", "personalization", "sale"]),
                                           texts), mostly(st.booleans(), json_values), min_size=1, max_size=3),
                    st.just({}))),
                "timestamp": draw(timestamps)}
        if draw(st.booleans()):
            del body["timestamp"]
        return body, st.one_of(json_values, timestamps)
    raise AssertionError(name)


@st.composite
def admin_requests(draw, route: Route, env: Env) -> Req:
    segs = {
        "source": path_segment([env.victim_source, "src_x", "src_", ""]),
        "token": path_segment([env.victim_token, "tok_x", "tok_", ""]),
        "audience": path_segment(["fuzz-aud", "preview", "changes", "x", "a" * 64], audience_keys),
        "trait": path_segment(["fuzz_ct", "total_orders", "rfm_segment", "x"]),
        "profile": path_segment([str(i) for i in env.profile_ids] + ["0", "-1", "1.5", "+1", " 1", "1e3",
                                                                     "9223372036854775807", "9223372036854775808",
                                                                     "-9223372036854775809"],
                                st.one_of(st.integers(), numbers)),
        "space": path_segment(["default", "Default", "other"]),
        "request": path_segment(["prq_x", "prq_", "x"]),
        "destination": path_segment(["fz-dest", "x", "fz-mail"], activation_keys),
        "journey": path_segment(["fz-journey", "x"], activation_keys),
        "key": path_segment(["user_id:fuzz-user-1", "email:FUZZ1@example.com", "phone:+1 415 555 2671",
                             "anonymous_id:fuzz-anon-2", "user_id", "user_id:", ":x", "crm_id:1"], identifiers),
    }
    path = route.path
    for name, strat in segs.items():
        if "{" + name + "}" in path:
            path = path.replace("{" + name + "}", draw(strat))
    target = path + draw(query_strings(route.query, REQUIRED_QUERY.get(route.path, ())))
    assume(len(target) <= MAX_TARGET)
    headers, auth = draw(admin_auth(env))
    template, values = body_template(route.body, env, draw) if route.body else (None, json_values)
    body, _kind = draw(body_bytes(template, values))
    ctype = draw(st.sampled_from(CONTENT_TYPES))
    if ctype is not None:
        headers["Content-Type"] = ctype
    if draw(st.integers(0, 9)) == 0:
        headers["Content-Encoding"] = draw(st.sampled_from(["gzip", "br", "identity", "deflate, gzip", "x"]))
    return Req(route.method, target, headers, body, auth)


# --------------------------------------------------------------------------------------
# Tracking API.
TRACKING = {
    "/v1/identify": "identify", "/v1/i": "identify", "/v1/track": "track", "/v1/t": "track",
    "/v1/page": "page", "/v1/p": "page", "/v1/screen": "screen", "/v1/s": "screen",
    "/v1/group": "group", "/v1/g": "group", "/v1/alias": "alias", "/v1/a": "alias",
    "/v1/batch": None, "/v1/b": None, "/v1/import": None,
}
TIMESTAMPS = [
    "2026-11-23T11:09:55.123Z", "2026-11-23T11:09:55+01:00", "2026-11-23 11:09:55", "2026-11-23", "2026-11-23T11:09:55",
    "2026-11-23T11:09:55.123456789012Z", "2026-11-23T11:09:55+0100", "0000-01-01T00:00:00Z", "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59-23:59", "0000-01-01T00:00:00+23:59", "+275760-09-13T00:00:00Z",
    "-271821-04-20T00:00:00Z", "2024-02-30T00:00:00Z", "2016-12-31T23:59:60Z", "2024-01-01T24:00:00Z",
    "2024-01-01T00:00:00+99:99", "2024-13-01T00:00:00Z", "1970-01-01T00:00:00Z", "1969-12-31T23:59:59.999Z",
    "soon", "", " ", "T", "Z", "2024", "2024-01", "1700000000", "2024-01-01T00:00:00ZZ", "２０２４-01-01",
]
good_timestamps = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)).map(
    lambda d: d.isoformat(timespec="milliseconds") + "Z")
timestamps = mostly(good_timestamps, st.one_of(
    st.sampled_from(TIMESTAMPS), st.sampled_from(TIMESTAMPS).map(lambda t: " " + t + "\t"),
    st.datetimes().map(lambda d: d.isoformat()), numbers, texts, st.none(), st.sampled_from([[], {}, True])))
contexts = st.fixed_dictionaries({}, optional={
    "ip": st.one_of(st.sampled_from(["1.2.3.4", "::1", "999.1.1.1", "", "fe80::1%eth0"]), json_values),
    "traits": st.fixed_dictionaries({}, optional={"email": st.one_of(email_like, json_values),
                                                  "phone": st.one_of(phone_like, json_values)}),
    "device": st.fixed_dictionaries({}, optional={"id": id_values, "advertisingId": id_values}),
    "externalIds": st.one_of(st.lists(st.fixed_dictionaries(
        {"id": id_values, "type": st.one_of(identifier_types, json_values)},
        optional={"collection": st.one_of(st.just("users"), json_values), "encoding": json_values}), max_size=3),
        json_values),
    "consent": st.one_of(st.fixed_dictionaries({"categoryPreferences": st.one_of(
        st.dictionaries(short_text, json_values, max_size=3), json_values)}), json_values),
    "tessera": st.one_of(json_values, st.fixed_dictionaries({"merge": st.one_of(json_values, st.fixed_dictionaries(
        {"profiles": st.lists(numbers, max_size=3), "reason": texts}))})),
    "library": json_values,
    "userAgent": texts,
})
traits = st.fixed_dictionaries({}, optional={
    "email": st.one_of(email_like, json_values), "phone": st.one_of(phone_like, json_values),
    "plan": json_values, "age": numbers, "first_name": texts, "last_name": texts, "name": json_values,
    "birthday": timestamps, "address": st.one_of(json_values, st.fixed_dictionaries(
        {}, optional={"city": texts, "country": texts, "postcode": json_values, "street": texts})),
    "crm_id": id_values, "signup_at": timestamps,
})
properties = st.fixed_dictionaries({}, optional={
    "revenue": st.one_of(numbers, json_values), "currency": json_values, "category": json_values, "sku": json_values,
    "price": numbers, "nested": json_values,
})
events = st.one_of(st.sampled_from(["Order Completed", "Product Added", "Product Added to Wishlist"]), texts, json_values)


@st.composite
def segment_messages(draw, mtype: str | None, in_batch: bool, import_: bool) -> Any:
    if mtype is None or (in_batch and draw(st.integers(0, 9)) == 0):
        mtype = draw(st.one_of(st.sampled_from(MESSAGE_TYPES), st.sampled_from(["Track", "TRACK", "", "batch"]),
                               json_values))
    msg: dict[str, Any] = {}
    if in_batch:
        msg["type"] = mtype
    if draw(st.integers(0, 3)):
        msg["userId"] = draw(st.one_of(st.sampled_from(["fuzz-user-1", "fuzz-user-9"]), id_values))
    if draw(st.integers(0, 2)) == 0:
        msg["anonymousId"] = draw(st.one_of(st.sampled_from(["fuzz-anon-2", "fuzz-anon-9"]), id_values))
    if mtype == "track" or draw(st.integers(0, 5)) == 0:
        msg["event"] = draw(events)
    if mtype in ("identify", "group") or draw(st.integers(0, 5)) == 0:
        msg["traits"] = draw(st.one_of(traits, traits, json_values))
    if mtype in ("track", "page", "screen") or draw(st.integers(0, 5)) == 0:
        msg["properties"] = draw(st.one_of(properties, properties, json_values))
    if mtype in ("page", "screen"):
        msg.update(draw(st.fixed_dictionaries({}, optional={"name": texts, "category": json_values})))
    if mtype == "group" or draw(st.integers(0, 7)) == 0:
        msg["groupId"] = draw(id_values)
    if mtype == "alias" or draw(st.integers(0, 7)) == 0:
        msg["previousId"] = draw(st.one_of(st.just("fuzz-anon-2"), id_values))
    msg.update(draw(st.fixed_dictionaries({}, optional={
        "messageId": st.one_of(st.uuids().map(str), id_values, st.integers(95, 105).map(lambda n: "m" * n),
                               st.integers(30, 40).map(lambda n: "é😀" * n)),
        "timestamp": timestamps, "sentAt": timestamps, "originalTimestamp": timestamps,
        "context": st.one_of(contexts, contexts, json_values),
        "integrations": json_values,
    })))
    if import_ and draw(st.booleans()):
        msg["receivedAt"] = draw(timestamps)
    if draw(st.integers(0, 3)) == 0:
        msg = draw(mutated(msg))
    if draw(st.integers(0, 19)) == 0:
        return draw(json_values)
    return msg


@st.composite
def tracking_requests(draw, path: str, env: Env) -> Req:
    mtype = TRACKING[path]
    is_batch = mtype is None
    kind = draw(st.sampled_from(["message"] * 14 + ["json", "invalid", "bytes", "empty", "deep", "big"]))
    value: Any = None
    body: bytes
    if kind == "message":
        if is_batch:
            n = draw(st.one_of(st.integers(0, 6), st.sampled_from([0, 1, 40])))
            items = [draw(segment_messages(None, True, path == "/v1/import")) for _ in range(n)]
            value = {"batch": items}
            value.update(draw(st.fixed_dictionaries({}, optional={
                "context": st.one_of(contexts, json_values), "integrations": json_values, "sentAt": timestamps,
                "writeKey": json_values})))
            if draw(st.integers(0, 5)) == 0:
                value = draw(mutated(value))
        else:
            value = draw(segment_messages(mtype, False, False))
    elif kind == "json":
        value = draw(json_values)
    elif kind == "deep":
        value = {"userId": "fuzz-deep", "event": "Deep", "type": "track", "properties": DEEP_MARK}
        if is_batch:
            value = {"batch": [value]}
    elif kind == "big":
        # near the documented limits: 32 KB per message, 500 KB per body, 2,500 messages per batch
        pad = draw(st.sampled_from([32 * 1024 - 200, 32 * 1024, 40 * 1024, 499 * 1024, 501 * 1024, 3_000_000]))
        one = {"userId": "fuzz-big", "event": "Big", "type": "track", "properties": {"pad": "p" * pad}}
        if is_batch:
            count = draw(st.sampled_from([1, 2, 2_500, 2_501, 10_000]))
            if count > 2:
                one = {"userId": "fuzz-many", "event": "Many", "type": "track"}
            value = {"batch": [one] * count}
        else:
            value = one

    auth_kind = draw(st.sampled_from(["basic"] * 6 + ["body", "both", "none", "garbage", "disabled", "body-odd"]))
    headers: dict[str, str | bytes] = {}
    auth = "none"
    if auth_kind in ("basic", "both"):
        headers["Authorization"], auth = basic_auth(env.write_key), "basic-writekey"
    if auth_kind in ("body", "both", "body-odd") and isinstance(value, dict):
        value = dict(value)
        value["writeKey"] = env.write_key if auth_kind != "body-odd" else draw(json_values)
    if auth_kind == "disabled":
        headers["Authorization"] = basic_auth(env.disabled_write_key)
    if auth_kind == "garbage":
        headers["Authorization"] = draw(st.one_of(
            st.sampled_from(["Basic", "Basic !!!", "Basic " + _b64(b"\xff:"), "Basic " + _b64(b"nocolon"),
                             "Basic " + _b64(b":"), "Bearer " + ADMIN_TOKEN, "basic " + _b64(env.write_key.encode()),
                             "Basic " + _b64(env.write_key.encode() + b":x"), "Basic " + "A" * 10_000]),
            st.binary(max_size=30).map(lambda b: "Basic " + _b64(b))))

    if kind in ("message", "json", "deep", "big"):
        deep = draw(deep_values) if DEEP_MARK in json.dumps(value) else None
        body = encode_json(value, draw(st.booleans()), deep)
    elif kind == "invalid":
        body = draw(st.sampled_from(INVALID_JSON))
    elif kind == "bytes":
        body = draw(st.binary(max_size=300))
    else:
        body = b""

    ctype = draw(st.sampled_from(CONTENT_TYPES + ["text/plain"] * (4 if path in ("/v1/t", "/v1/b") else 0)))
    if ctype is not None:
        headers["Content-Type"] = ctype
    enc = draw(st.sampled_from([None] * 14 + ["gzip", "gzip", "gzip-fake", "gzip-truncated", "GZIP", "x-gzip",
                                             "identity", "deflate", "br", "gzip, gzip", "gzip, identity", ""]))
    if enc in ("gzip", "GZIP"):
        body = gzip.compress(body)
        headers["Content-Encoding"] = enc
    elif enc == "gzip-fake":
        headers["Content-Encoding"] = "gzip"
    elif enc == "gzip-truncated":
        body = gzip.compress(body)[: max(1, len(body) // 2)]
        headers["Content-Encoding"] = "gzip"
    elif enc is not None:
        headers["Content-Encoding"] = enc
    if draw(st.integers(0, 9)) == 0:
        headers["Origin"] = draw(st.sampled_from(["https://shop.example", "null", "é"]))
    return Req("POST", path, headers, body, auth)


# --------------------------------------------------------------------------------------
# Deterministic matrices, whatever Hypothesis draws: every query parameter of every route
# with each edge value, and every field of every body replaced by each wrong-typed value.
def send_all(env: Env, reqs: list[Req]) -> None:
    """Sends every request; fails once at the end listing every bad answer."""
    problems = []
    for req in reqs:
        try:
            send(env, req)
        except AssertionError as e:
            problems.append(str(e).split("\nassert ")[0])
    assert not problems, f"{len(problems)} of {len(reqs)} requests got a bad answer:\n\n" + "\n\n".join(problems[:15])


def default_path(route: Route, env: Env) -> str:
    return (route.path.replace("{source}", "src_x").replace("{token}", "tok_x").replace("{audience}", "fuzz-aud")
            .replace("{trait}", "fuzz_ct").replace("{profile}", str(env.profile_ids[0]))
            .replace("{space}", "default").replace("{key}", "user_id:fuzz-user-1").replace("{request}", "prq_x")
            .replace("{destination}", "fz-dest").replace("{journey}", "fz-journey"))


EDGE_QUERY_VALUES = ["-1", "0", "1000000", "18446744073709551616", "9223372036854775808", "-9223372036854775809",
                     "NaN", "inf", "-inf", "1e309", "-1e309", "1.5", "", "%FF", "%00", "%ED%A0%80", "x" * 5000]
GOOD_QUERY = {"event": "Order%20Completed", "property": "category", "identifier": "user_id:fuzz-user-1"}
QUERY_ROUTES = [r for r in ADMIN_ROUTES if r.query]


@pytest.mark.parametrize("route", QUERY_ROUTES, ids=str)
def test_query_parameter_matrix(env, route):
    required = REQUIRED_QUERY.get(route.path, ())
    reqs = []
    for key in route.query:
        for value in EDGE_QUERY_VALUES:
            params = [f"{k}={GOOD_QUERY[k]}" for k in required if k != key] + [f"{key}={value}"]
            reqs.append(Req(route.method, default_path(route, env) + "?" + "&".join(params),
                            {"Authorization": f"Bearer {ADMIN_TOKEN}"}, None, "bearer-admin"))
    send_all(env, reqs)


def good_bodies(env: Env) -> dict[str, Any]:
    return {
        "source": {"name": "matrix"},
        "token": {"name": "matrix", "scopes": ["read:profiles"]},
        "rules": env.rules,
        "unlink": {"type": "email", "value": "nobody@example.com"},
        "merge": {"profiles": env.profile_ids[1:3], "reason": "matrix"},
        "audience": {"key": "fz-matrix", "name": "m", "description": "d", "definition": 'trait plan = "pro"'},
        "audience_update": {"name": "m", "description": "d", "definition": "all"},
        "preview": {"definition": "all", "sample": 5},
        "computed": {"aggregate": "sum", "event": "Order Completed", "property": "revenue", "window": "30d",
                     "description": "d", "where": [{"name": "currency", "op": "=", "value": "EUR"}]},
        "rfm": {"event": "Order Completed", "revenue_property": "revenue", "window": "365d"},
        "identifier": {"identifier": "email:nobody@example.com"},
        "destination": {"id": "fz-dest", "name": "d", "type": "webhook", "enabled": False, "purpose": "marketing",
                        "settings": {"url": "http://127.0.0.1:9/hook", "secret": "s", "headers": {"X-A": "b"},
                                     "template": "{{ event | tojson }}"},
                        "filter": {"events": ["Order Completed"], "types": ["track"], "sources": [],
                                   "memberOf": "fuzz-aud", "audiences": ["fuzz-aud"], "includeEvents": True},
                        "delivery": {"maxAttempts": 3, "initialBackoffMs": 100, "maxBackoffMs": 1000,
                                     "ratePerSecond": 0, "concurrency": 1, "batchSize": 1, "timeoutMs": 1000,
                                     "breakerFailures": 5, "breakerCooldownMs": 1000,
                                     "frequencyCap": {"max": 1, "window": "1d"}}},
        "journey": {"key": "fz-journey", "name": "j", "enabled": False, "trigger": {"audienceEntered": "fuzz-aud"},
                    "reentry": "30d",
                    "steps": [{"wait": "1h"},
                              {"if": 'not event "Order Completed" within 1h', "then": [{"send": {
                                  "destination": "fz-dest", "overrides": {"template": "{}"}}}], "else": [{"exit": True}]},
                              {"waitUntil": {"event": "Order Completed", "timeout": "2d"}, "then": [], "else": []}]},
        "retry": {"destination": "fz-dest", "ids": [1]},
        "consent": {"identifier": "email:nobody@example.com", "purposes": {"marketing": False},
                    "timestamp": "2026-01-01T00:00:00Z"},
    }


WRONG_VALUES = [None, True, 0, -1, 2**64, 10**400, 1e308, -0.0, "", "x" * 100_000, "a\x00b", "\ud800", [], {}, [[]],
                {"a": {"b": [1]}}, DEEP_MARK]


BODY_ROUTES = [r for r in ADMIN_ROUTES if r.body]


@pytest.mark.parametrize("route", BODY_ROUTES, ids=str)
def test_wrong_type_in_every_body_field(env, route):
    template = good_bodies(env)[route.body]
    # every path, but only the first element of each list (the rules have many alike)
    paths = [p for p in paths_of(template) if all(not isinstance(i, int) or i == 0 for i in p)]
    reqs = []
    for path in paths:
        variants = [set_path(template, path, None, delete=True)] + [set_path(template, path, v) for v in WRONG_VALUES]
        for value in variants:
            deep = (200, "list") if DEEP_MARK in json.dumps(value) else None
            reqs.append(Req(route.method, default_path(route, env),
                            {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
                            encode_json(value, True, deep), "bearer-admin"))
    send_all(env, reqs)  # (the rules are put back after the test by _report_server_log)


GOOD_CONTEXT = {"ip": "1.2.3.4", "traits": {"email": "matrix@example.com", "phone": "+14155552671"},
                "device": {"id": "dev-1", "advertisingId": "ad-1"},
                "externalIds": [{"id": "crm-1", "type": "crm_id", "collection": "users", "encoding": "none"}],
                "consent": {"categoryPreferences": {"marketing": True}}, "library": {"name": "matrix"}}
GOOD_MESSAGES = {
    "identify": {"userId": "matrix-user", "traits": {"email": "matrix@example.com", "plan": "pro", "age": 3}},
    "track": {"userId": "matrix-user", "event": "Order Completed", "properties": {"revenue": 1.5, "currency": "EUR"}},
    "page": {"anonymousId": "matrix-anon", "name": "Home", "category": "c", "properties": {"path": "/"}},
    "screen": {"anonymousId": "matrix-anon", "name": "Home", "properties": {"x": 1}},
    "group": {"userId": "matrix-user", "groupId": "g-1", "traits": {"name": "Acme"}},
    "alias": {"userId": "matrix-user", "previousId": "matrix-anon"},
}


@pytest.mark.parametrize("mtype", list(GOOD_MESSAGES))
def test_wrong_type_in_every_message_field(env, mtype):
    message = dict(GOOD_MESSAGES[mtype], messageId="matrix-id", timestamp="2026-01-01T00:00:00.000Z",
                   sentAt="2026-01-01T00:00:01.000Z", context=GOOD_CONTEXT, integrations={"All": True})
    paths = [p for p in paths_of(message) if all(not isinstance(i, int) or i == 0 for i in p)]
    reqs = []
    for path in paths:
        variants = [set_path(message, path, None, delete=True)] + [set_path(message, path, v) for v in WRONG_VALUES]
        for value in variants:
            deep = (200, "list") if DEEP_MARK in json.dumps(value) else None
            reqs.append(Req("POST", f"/v1/{mtype}", {"Authorization": basic_auth(env.write_key),
                                                     "Content-Type": "application/json"},
                            encode_json(value, True, deep), "basic-writekey"))
    send_all(env, reqs)


# --------------------------------------------------------------------------------------
# Fixed edge cases every run sends whatever Hypothesis draws: bodies over the limits,
# pathological nesting, invalid UTF-8 in every path parameter.
EDGE_BODIES = {
    "3MB": b'{"name": "' + b"a" * 3_000_000 + b'"}',
    "deep-128": deep_json(128, "dict").encode(),
    "deep-100k": deep_json(100_000, "list").encode(),
    "invalid-utf8": b'{"name": "\xff\xfe"}',
    "lone-surrogate": b'{"name": "\\ud800", "key": "\\udfff", "definition": "\\ud800"}',
    "nul": b'{"name": "a\\u0000b", "definition": "trait \\"a\\u0000\\" = 1"}',
}


@pytest.mark.parametrize("edge", list(EDGE_BODIES))
def test_admin_body_edges(env, edge):
    send_all(env, [Req(route.method, default_path(route, env),
                       {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
                       EDGE_BODIES[edge], "bearer-admin") for route in BODY_ROUTES])


PARAM_ROUTES = [r for r in ADMIN_ROUTES if "{" in r.path]
EDGE_SEGMENTS = {"invalid-utf8": "%FF", "overlong-nul": "%C0%80", "surrogate": "%ED%A0%80", "nul": "%00",
                 "slash": "%2F", "long": "x" * 30_000}


@pytest.mark.parametrize("edge", list(EDGE_SEGMENTS))
def test_path_parameter_edges(env, edge):
    send_all(env, [Req(route.method, re.sub(r"\{[a-z]+\}", EDGE_SEGMENTS[edge], route.path),
                       {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
                       b"{}" if route.body else None, "bearer-admin") for route in PARAM_ROUTES])


TRACKING_EDGES = {
    "gzip-bomb": (gzip.compress(b'{"userId": "x", "event": "Bomb", "properties": {"pad": "' + b"a" * 50_000_000 + b'"}}'),
                  "gzip"),
    "gzip-fake": (b'{"userId": "x", "event": "e"}', "gzip"),
    "3MB": (b'{"userId": "x", "event": "e", "properties": {"pad": "' + b"a" * 3_000_000 + b'"}}', None),
    "deep-100k": (b'{"userId": "x", "event": "e", "properties": ' + deep_json(100_000, "list").encode() + b"}", None),
    "invalid-utf8": (b'{"userId": "\xff", "event": "e"}', None),
    "2501-messages": (json.dumps({"batch": [{"type": "track", "userId": "x", "event": "e"}] * 2501}).encode(), None),
}


@pytest.mark.parametrize("path", ["/v1/track", "/v1/t", "/v1/batch", "/v1/import"])
@pytest.mark.parametrize("edge", list(TRACKING_EDGES))
def test_tracking_body_edges(env, path, edge):
    body, enc = TRACKING_EDGES[edge]
    headers = {"Authorization": basic_auth(env.write_key), "Content-Type": "text/plain"}
    if enc:
        headers["Content-Encoding"] = enc
    send(env, Req("POST", path, headers, body, "basic-writekey"))


# --------------------------------------------------------------------------------------
# The fuzzers (after the fixed cases: some of what they send unlinks, merges, revokes).
@pytest.mark.parametrize("route", ADMIN_ROUTES, ids=str)
@FUZZ
@given(data=st.data())
def test_admin_api_never_fails_badly(env, route, data):
    send(env, data.draw(admin_requests(route, env), label="request"))


@pytest.mark.parametrize("path", list(TRACKING), ids=str)
@FUZZ
@given(data=st.data())
def test_tracking_api_never_fails_badly(env, path, data):
    send(env, data.draw(tracking_requests(path, env), label="request"))


ALL_PATHS = sorted({r.path for r in ADMIN_ROUTES} | set(TRACKING) | {"/metrics"})
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE", "PROPFIND", "FOO"]


@FUZZ
@given(data=st.data())
def test_any_method_on_any_route(env, data):
    path = data.draw(st.sampled_from(ALL_PATHS))
    for name, value in {"source": "src_x", "token": "tok_x", "audience": "x", "trait": "x", "profile": "1",
                        "space": "default", "key": "user_id:x", "request": "prq_x", "destination": "x",
                        "journey": "x"}.items():
        path = path.replace("{" + name + "}", value)
    method = data.draw(st.sampled_from(METHODS))
    headers, auth = data.draw(admin_auth(env))
    if method == "OPTIONS" and data.draw(st.booleans()):
        headers["Origin"] = "https://shop.example"
        headers["Access-Control-Request-Method"] = data.draw(st.sampled_from(["POST", "GET", "DELETE", "X"]))
    body = data.draw(st.one_of(st.none(), st.sampled_from(INVALID_JSON)))
    send(env, Req(method, path, headers, body, auth))


@FUZZ
@given(data=st.data())
def test_unknown_paths(env, data):
    prefix = data.draw(st.sampled_from(["", "/v1", "/api/v1", "/api/v1/profiles/1", "/v1/spaces/default", "/api",
                                        "/api/v1/audiences/x/members", "/v1/track"]))
    segments = data.draw(st.lists(path_segment(["x", "v2", "..", "", "track", "api"]), min_size=0, max_size=4))
    tail = data.draw(st.sampled_from(["", "/", "//", "?x=1", "/?", "#x", ";a=b"]))
    path = prefix + "".join("/" + s for s in segments) + tail
    if not path.startswith("/"):
        path = "/" + path  # a request target is absolute (anything else is malformed HTTP)
    assume(len(path) <= MAX_TARGET)
    method = data.draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
    headers, auth = data.draw(admin_auth(env))
    send(env, Req(method, path, headers, data.draw(st.one_of(st.none(), st.sampled_from(INVALID_JSON))), auth))


# --------------------------------------------------------------------------------------
def test_zz_server_survived_the_fuzzing(env):
    """Runs last (file order): the processor applies every fuzzed event (identity
    resolution, traits, audiences) without a panic, and the server still answers."""
    url_port = env.server.port

    def get(path: str) -> Ans:
        wire = Wire(url_port)
        try:
            return wire.send(Req("GET", path))
        finally:
            wire.close()

    def lag() -> float | None:
        a = get("/metrics")
        if a.status != 200:
            return None
        return metric_value(parse_prometheus(a.body.decode()), "tessera_processor_lag_events")

    wait_until(lambda: lag() == 0, timeout=30, what="processor lag 0 after the fuzzing")
    time.sleep(0.5)  # a scheduler/audience pass over the fuzzed profiles
    ans = get("/healthz")
    assert ans.status == 200, f"/healthz -> {ans.status} {ans.text()} {ans.error}"
    assert env.server.running()
    log = env.server.log_text()
    panics = [line for line in log.splitlines() if "panicked" in line]
    assert not panics, f"server log says panicked: {panics[:5]}"
    print(f"\nfuzzed requests checked: {env.checked}")


# The browser SDKs' routes (crates/tessera-server/src/web_sdk.rs): analytics.js's
# settings, bundle and chunks, RudderStack's source configuration and beacon route.
BROWSER_SDK_PATHS = ["/v1/projects/{key}/settings", "/analytics.js/v1/{key}/analytics.min.js",
                     "/analytics-next/bundles/{file}", "/sourceConfig/", "/sourceConfig", "/beacon/v1/batch"]
HOSTS = ["127.0.0.1", "example.com:8080", "[::1]:80", "", " ", "a b", "ex ample.com", "x" * 300, "host:99999999",
         "[::1", "user@host", "évil.example", "host:port", "host/path"]


@FUZZ
@given(data=st.data())
def test_browser_sdk_routes_never_fail_badly(env, data):
    template = data.draw(st.sampled_from(BROWSER_SDK_PATHS))
    keys = [env.write_key, env.disabled_write_key, "nope"]
    target = (template.replace("{key}", data.draw(path_segment(keys)))
              .replace("{file}", data.draw(path_segment(["auto-track.bundle.f131ce01a05e3a33a8c1.js", "x.js"]))))
    pairs = []
    for _ in range(data.draw(st.integers(0, 4))):
        name = data.draw(st.sampled_from(["writeKey", "writeKey", "p", "v", "build", "x", "", "writekey"]))
        value = data.draw(st.one_of(st.sampled_from(keys), texts))
        pairs.append((name, value))
    if pairs:
        enc = data.draw(st.sampled_from([pct, pct_loose]))
        target += "?" + "&".join(f"{enc(k)}={enc(str(v))}" for k, v in pairs)
    elif data.draw(st.booleans()):
        target += "?" + data.draw(st.sampled_from(RAW_QUERIES))
    assume(len(target) <= MAX_TARGET)
    method = "POST" if template.startswith("/beacon") else data.draw(st.sampled_from(["GET", "GET", "OPTIONS", "HEAD"]))
    headers: dict[str, str | bytes] = {}
    if data.draw(st.booleans()):
        user = data.draw(st.one_of(st.sampled_from(keys), texts))
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:".encode("utf-8", "surrogatepass")).decode()
    if data.draw(st.booleans()):
        headers["Host"] = data.draw(st.sampled_from(HOSTS)).encode("utf-8")
    if data.draw(st.booleans()):
        headers["If-None-Match"] = data.draw(st.sampled_from(['"x"', "*", "W/\"y\", \"z\"", ""])).encode()
    if data.draw(st.booleans()):
        headers["Accept-Encoding"] = data.draw(st.sampled_from(["gzip", "gzip;q=0", "br", "*", "gzip;q=x", ""]))
    if method == "OPTIONS" and data.draw(st.booleans()):
        headers["Origin"] = "https://shop.example"
        headers["Access-Control-Request-Method"] = data.draw(st.sampled_from(["POST", "GET", "X"]))
        headers["Access-Control-Request-Headers"] = "authorization,anonymousid,sentat"
    body = None
    if method == "POST":
        body = data.draw(st.one_of(st.none(), st.sampled_from(INVALID_JSON), st.just(json.dumps(
            {"batch": [{"type": "track", "event": "e", "anonymousId": "a"}], "sentAt": "2026-01-01T00:00:00Z"}).encode())))
    req = Req(method, target, headers, body, "basic" if "Authorization" in headers else "none")
    ans = env.wire.send(req)
    if method == "GET" and ans.status in (200, 304) and \
            not ans.headers.get("content-type", "").startswith("application/json"):
        # Scripts and not-modified answers are not JSON; everything else is checked as usual.
        assert ans.status == 304 or ans.headers.get("content-type", "").startswith("text/javascript"), ans.headers
        env.checked += 1
        return
    check(env, req, ans)
