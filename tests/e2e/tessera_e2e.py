"""Helpers shared by the end-to-end tests: run the real `tessera` binary, talk to it
over real HTTP on 127.0.0.1, and read back what it stored through `tessera export`.

Nothing here is a mock: every helper starts the actual binary or sends actual
HTTP requests to it.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / "target" / "release" / "tessera"
ADMIN_TOKEN = "e2e-admin-token-" + uuid.uuid4().hex

# receivedAt: "ISO-8601 UTC with ms, Z", e.g. 2024-05-01T12:34:56.789Z
RECEIVED_AT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")

HTTP_TIMEOUT = 30  # seconds, for every single request the tests make


def tessera_bin() -> Path:
    return Path(os.environ.get("TESSERA_BIN", str(DEFAULT_BIN)))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def basic_auth(write_key: str) -> str:
    return "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()


def new_id(prefix: str = "e2e") -> str:
    return f"{prefix}-{uuid.uuid4()}"


def iso_ms(dt: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a Z, the way browsers send dates."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def parse_ts(value: str) -> datetime:
    """Parse an ISO-8601 timestamp (Z or offset, any fraction length)."""
    assert isinstance(value, str), f"timestamp is not a string: {value!r}"
    v = value.strip()
    if v.endswith("Z") or v.endswith("z"):
        v = v[:-1] + "+00:00"
    m = re.match(r"^(.*T\d{2}:\d{2}:\d{2})(\.\d+)?(.*)$", v)
    assert m, f"not an ISO-8601 timestamp: {value!r}"
    frac = (m.group(2) or "")[:7].ljust(7, "0") if m.group(2) else ""
    dt = datetime.fromisoformat(m.group(1) + frac + m.group(3))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt


@dataclass
class Source:
    id: str
    name: str
    write_key: str


class TesseraServer:
    """One `tessera serve` process on 127.0.0.1 with its own data dir."""

    def __init__(self, data_dir: Path, log_path: Path, binary: Path | None = None, extra_env: dict | None = None):
        self.binary = Path(binary or tessera_bin())
        self.data_dir = Path(data_dir)
        self.log_path = Path(log_path)
        self.extra_env = dict(extra_env or {})
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self._log_file = None
        self.starts = 0

    # ---- lifecycle -------------------------------------------------------
    @property
    def url(self) -> str:
        assert self.port is not None, "server not started"
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "TesseraServer":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        last_error = None
        for _attempt in range(3):  # a port picked by free_port() can be taken in between
            self.port = free_port()
            env = dict(os.environ)
            env.pop("TESSERA_DATA_DIR", None)
            env.pop("TESSERA_LISTEN", None)
            env["TESSERA_ADMIN_TOKEN"] = ADMIN_TOKEN
            env.update(self.extra_env)
            self._log_file = open(self.log_path, "ab")
            self.starts += 1
            self._log_file.write(f"\n===== start #{self.starts} on port {self.port} =====\n".encode())
            self._log_file.flush()
            self.proc = subprocess.Popen(
                [str(self.binary), "serve", "--data-dir", str(self.data_dir), "--listen", f"127.0.0.1:{self.port}"],
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=self._log_file,
                env=env,
            )
            try:
                self.wait_healthy(timeout)
                return self
            except ServerExited as e:
                last_error = e
                if "in use" in self.log_text().lower():
                    continue
                raise
        raise last_error  # type: ignore[misc]

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerExited(
                    f"tessera serve exited with code {self.proc.returncode} before /healthz answered; "
                    f"log:\n{self.log_tail()}"
                )
            try:
                r = requests.get(self.url + "/healthz", timeout=2)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}: {r.text[:200]}"
            except requests.RequestException as e:
                last = repr(e)
            time.sleep(0.05)
        raise TimeoutError(f"/healthz did not answer 200 within {timeout}s (last: {last}); log:\n{self.log_tail()}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait. Returns the exit code, or None if it had to be killed."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        self._close_log()
        return self.proc.returncode

    def kill(self) -> None:
        """kill -9: no chance to flush anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=20)
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = 12000) -> str:
        text = self.log_text()
        return text if len(text) <= chars else "...(truncated)...\n" + text[-chars:]

    # ---- HTTP helpers ----------------------------------------------------
    def admin(self, method: str, path: str, token: str | None = ADMIN_TOKEN, **kw) -> requests.Response:
        headers = dict(kw.pop("headers", {}) or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, self.url + path, headers=headers, timeout=HTTP_TIMEOUT, **kw)

    def create_source(self, name: str = "e2e") -> Source:
        r = self.admin("POST", "/api/v1/sources", json={"name": name})
        assert r.status_code == 201, f"POST /api/v1/sources -> {r.status_code} {r.text}"
        body = r.json()
        assert body["id"].startswith("src_"), body
        assert body["name"] == name, body
        assert isinstance(body["writeKey"], str) and body["writeKey"], body
        return Source(id=body["id"], name=body["name"], write_key=body["writeKey"])

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        write_key: str | None = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
        gzip_body: bool = False,
        headers: dict | None = None,
        session: requests.Session | None = None,
        timeout: float = HTTP_TIMEOUT,
    ) -> requests.Response:
        """POST to the tracking API. write_key goes in HTTP Basic auth when given."""
        h = {"Content-Type": content_type}
        if write_key is not None:
            h["Authorization"] = basic_auth(write_key)
        data = raw if raw is not None else json.dumps(body).encode()
        if gzip_body:
            data = gzip.compress(data)
            h["Content-Encoding"] = "gzip"
        h.update(headers or {})
        return (session or requests).post(self.url + path, data=data, headers=h, timeout=timeout)

    def metrics(self) -> dict[tuple[str, tuple], float]:
        # The admin token is taken also when a metrics token is configured.
        r = requests.get(self.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                         timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text
        return parse_prometheus(r.text)

    def rejections(self, limit: int = 1000) -> list[dict]:
        r = self.admin("GET", f"/api/v1/rejections?limit={limit}")
        assert r.status_code == 200, f"GET /api/v1/rejections -> {r.status_code} {r.text}"
        rej = r.json()["rejections"]
        assert isinstance(rej, list)
        return rej


class ServerExited(RuntimeError):
    pass


_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> dict[tuple[str, tuple], float]:
    """{(metric_name, ((label, value), ...sorted)): value} for every sample line."""
    out: dict[tuple[str, tuple], float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        if not m:
            continue
        labels = tuple(sorted(_LABEL_RE.findall(m.group(3) or "")))
        try:
            out[(m.group(1), labels)] = float(m.group(4))
        except ValueError:
            continue
    return out


def metric_value(metrics: dict, name: str, **labels) -> float:
    """Sum of all samples of `name` whose labels include `labels` (0.0 if none).
    Accepts the OpenMetrics `_total` suffix either way round."""
    names = {name, name[:-6] if name.endswith("_total") else name + "_total"}
    total = 0.0
    for (n, lbls), v in metrics.items():
        if n in names and all((k, str(val)) in lbls for k, val in labels.items()):
            total += v
    return total


def metric_names(metrics: dict) -> set[str]:
    return {n for (n, _l) in metrics}


# ---- CLI -----------------------------------------------------------------
def run_cli(*args: str, data_dir: Path | None = None, env: dict | None = None, timeout: float = 120,
            check: bool = False, binary: Path | None = None) -> subprocess.CompletedProcess:
    """Run `tessera ARGS... [--data-dir D]` and return the CompletedProcess (text mode)."""
    cmd = [str(binary or tessera_bin()), *args]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    full_env = dict(os.environ)
    full_env.pop("TESSERA_DATA_DIR", None)
    full_env.update(env or {})
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, env=full_env, timeout=timeout)
    cp = subprocess.CompletedProcess(cmd, p.returncode, p.stdout.decode("utf-8", "replace"),
                                     p.stderr.decode("utf-8", "replace"))
    if check and cp.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {cp.returncode}\nstdout:\n{cp.stdout}\nstderr:\n{cp.stderr}")
    return cp


def export_events(data_dir: Path, since: str | None = None, source: str | None = None,
                  binary: Path | None = None) -> list[dict]:
    """`tessera export events --data-dir D [--since ..] [--source ..]` parsed as JSONL."""
    args = ["export", "events"]
    if since is not None:
        args += ["--since", since]
    if source is not None:
        args += ["--source", source]
    cp = run_cli(*args, data_dir=data_dir, binary=binary, check=True)
    events = []
    for i, line in enumerate(cp.stdout.splitlines()):
        if not line.strip():
            continue
        try:
            ev = json.loads(line)
        except json.JSONDecodeError as e:
            raise AssertionError(f"export line {i + 1} is not JSON ({e}): {line[:500]!r}") from None
        assert isinstance(ev, dict), f"export line {i + 1} is not an object: {line[:500]!r}"
        events.append(ev)
    return events


def by_message_id(events: Iterable[dict]) -> dict[str, dict]:
    """Index exported events by messageId, asserting there are no duplicates."""
    out: dict[str, dict] = {}
    dups = []
    for ev in events:
        mid = ev.get("messageId")
        assert isinstance(mid, str) and mid, f"stored message without messageId: {ev}"
        if mid in out:
            dups.append(mid)
        out[mid] = ev
    assert not dups, f"{len(dups)} messageIds stored more than once, e.g. {dups[:5]}"
    return out


def assert_server_fields(ev: dict, *, max_skew: float | None = 120.0) -> None:
    """Fields every stored message must carry according to the contract."""
    assert ev.get("type") in {"identify", "track", "page", "screen", "group", "alias"}, ev
    assert isinstance(ev.get("messageId"), str) and ev["messageId"], ev
    assert "writeKey" not in ev, f"writeKey must not be stored: {ev}"
    ra = ev.get("receivedAt")
    assert isinstance(ra, str) and RECEIVED_AT_RE.match(ra), f"receivedAt not ISO-8601 UTC ms Z: {ra!r}"
    received = parse_ts(ra)
    assert abs((received - utcnow()).total_seconds()) < 600, f"receivedAt far from now: {ra}"
    ts = ev.get("timestamp")
    assert isinstance(ts, str), f"timestamp missing: {ev}"
    parsed = parse_ts(ts)
    if max_skew is not None:
        assert abs((parsed - received).total_seconds()) < max_skew, f"timestamp {ts} far from receivedAt {ra}"


def subset_mismatches(expected: Any, actual: Any, path: str = "$") -> list[str]:
    """Every key/value of `expected` must be in `actual` (dicts recursively; lists and scalars exactly)."""
    problems: list[str] = []
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected object, got {actual!r}"]
        for k, v in expected.items():
            if k not in actual:
                problems.append(f"{path}.{k}: missing (expected {v!r})")
            else:
                problems.extend(subset_mismatches(v, actual[k], f"{path}.{k}"))
    elif isinstance(expected, float) or isinstance(actual, float):
        if isinstance(expected, bool) or isinstance(actual, bool) or not isinstance(actual, (int, float)) \
                or abs(float(expected) - float(actual)) > 1e-9 * max(1.0, abs(float(expected))):
            problems.append(f"{path}: expected {expected!r}, got {actual!r}")
    elif expected != actual or type(expected) is not type(actual):
        problems.append(f"{path}: expected {expected!r}, got {actual!r}")
    return problems


def assert_subset(expected: Any, actual: Any, what: str = "") -> None:
    problems = subset_mismatches(expected, actual)
    assert not problems, f"{what} stored message differs from what was sent:\n  " + "\n  ".join(problems) + \
        f"\nstored: {json.dumps(actual, ensure_ascii=False)[:3000]}"


def error_code(resp: requests.Response) -> str | None:
    try:
        body = resp.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


def assert_error(resp: requests.Response, status: int, code: str, what: str = "") -> dict:
    try:
        body = resp.json()
    except ValueError:
        body = None
    assert resp.status_code == status and isinstance(body, dict) and body.get("code") == code, (
        f"{what}: expected HTTP {status} code={code!r}, got HTTP {resp.status_code} body={resp.text[:500]!r}"
    )
    assert isinstance(body.get("message"), str) and body["message"], f"{what}: error without message: {body}"
    return body


def assert_ok(resp: requests.Response, what: str = "") -> dict:
    assert resp.status_code == 200, f"{what}: expected 200, got {resp.status_code} {resp.text[:1000]!r}"
    body = resp.json()
    assert body.get("success") is True, f"{what}: expected success:true, got {body}"
    return body


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def hours_ago(h: float) -> datetime:
    return utcnow() - timedelta(hours=h)


def assert_stored_as_sent(sent: dict, stored: dict | None, what: str = "", max_skew: float | None = 120.0) -> None:
    """`stored` (from export) must be the message `sent` on the wire, plus the
    server's fields: the client's `timestamp` moves to `originalTimestamp` (string
    kept as sent), `timestamp` becomes the skew-corrected time, `writeKey` is gone."""
    import copy

    assert stored is not None, f"{what}: message {sent.get('messageId')} was not stored; sent: {sent}"
    expected = copy.deepcopy(sent)
    client_ts = expected.pop("timestamp", None)
    expected.pop("writeKey", None)
    for k in [k for k, v in expected.items() if v is None]:
        expected.pop(k)
        assert stored.get(k) is None, f"{what}: {k} was sent as null but stored as {stored.get(k)!r}"
    assert_subset(expected, stored, what)
    assert_server_fields(stored, max_skew=max_skew)
    if client_ts is not None:
        assert stored.get("originalTimestamp") == client_ts, (
            f"{what}: originalTimestamp should be the client's timestamp as sent ({client_ts!r}), "
            f"got {stored.get('originalTimestamp')!r}"
        )


def files_containing(data_dir: Path, needles: list[str]) -> list[str]:
    """Every (file, needle) where the file's bytes contain the needle, as UTF-8 or
    JSON-escaped, case-insensitive: all of every regular file under the directory
    (erasure checks: free and unallocated space, WAL and shared-memory files included)."""
    found = []
    for path in sorted(Path(data_dir).rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes().lower()
        for needle in needles:
            forms = {needle.lower().encode(), json.dumps(needle)[1:-1].lower().encode()}
            if any(form in data for form in forms):
                found.append(f"{path.name}: {needle!r}")
    return found
