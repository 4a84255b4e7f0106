"""The README's quick start is a test: its commands run, in order and as written,
against the real binary, and their answers are checked against the ones the README
shows. The worked examples of docs/*.md marked runnable follow, in the same shell
state. A doc that drifts from the code fails here.

How a document marks its blocks (an HTML comment on the line before the fence):

- `<!-- runnable -->`: run the block; `sh` blocks in bash (exported variables carry
  over to the next block, as in one terminal), `python` blocks with the virtualenv's
  Python.
- `<!-- runnable: retry -->`: a read-only block whose answer may take a moment: it is
  run again until its answers match (at most 30 s).
- `<!-- runnable: background NAME -->`: a long-running command of its own terminal
  (the server, an SMTP server): started, and waited for until it listens.
- `<!-- runnable: expect-output NAME -->`: a `text` block whose lines must all appear
  in the output of the background block NAME (at most 60 s).
- `<!-- runnable: skip (why) -->`: shown to the reader, not run (installing).

Every fence of the README's quick start carries one of these marks.

Answers: a comment line `# {…}` (or `# […]`) after a command is the answer the docs
show. The block's output is read as a sequence of JSON values and each shown answer
must match one of them, in order: objects have exactly the keys shown (any more only
when `…` stands among the members), strings are equal (a `…` inside stands for any
text), numbers match any number, `…` as a value matches anything, and a list matches
a list whose first elements match those shown.

What the test substitutes, and nothing else: the binary under test is `tessera` on
`PATH` (instead of `cargo install`); the server's port (8080) and the SMTP port
(2525) are free ports chosen by the test; commands run in a fresh directory in which
`.venv` is the test suite's virtualenv.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tessera_e2e import REPO_ROOT, free_port

MARK = re.compile(r"^\s*<!--\s*runnable(?::\s*(?P<how>[^>]*?))?\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[A-Za-z]*)\s*$")
DOCS = ["docs/API.md", "docs/activation.md", "docs/audiences.md", "docs/analytics.md", "docs/privacy.md"]


@dataclass
class Block:
    doc: str
    line: int
    how: str  # "", "retry", "background NAME", "expect-output NAME", "skip …"
    lang: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def fences(text: str) -> list[tuple[int, str, str, str | None]]:
    """Every fenced block: (line, lang, body dedented, the runnable mark before it)."""
    lines = text.splitlines()
    out = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang = m.group("indent"), m.group("lang")
        j = i - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        mark = MARK.match(lines[j]) if j >= 0 else None
        body = []
        k = i + 1
        while k < len(lines) and lines[k].strip() != "```":
            body.append(lines[k][len(indent):] if lines[k].startswith(indent) else lines[k].lstrip())
            k += 1
        out.append((i + 1, lang, "\n".join(body) + "\n", (mark.group("how") or "") if mark else None))
        i = k + 1
    return out


def quickstart_blocks() -> list[Block]:
    readme = (REPO_ROOT / "README.md").read_text()
    start = readme.index("## Quick start")
    end = readme.find("\n## ", start + 1)
    section = readme[start:end]
    offset = readme[:start].count("\n")
    blocks = []
    for line, lang, body, how in fences(section):
        assert how is not None, (
            f"README.md:{line + offset}: a quick-start block without a <!-- runnable … --> mark; "
            "mark it (see tests/e2e/test_quickstart.py)")
        blocks.append(Block("README.md", line + offset, how, lang, body))
    return blocks


def doc_blocks() -> list[Block]:
    blocks = []
    for doc in DOCS:
        for line, lang, body, how in fences((REPO_ROOT / doc).read_text()):
            if how is not None:
                blocks.append(Block(doc, line, how, lang, body))
    return blocks


# --- the answers the docs show --------------------------------------------------

ELLIPSIS = object()


@dataclass
class Shown:
    """An object the docs show: its members, and whether `…` allows more."""
    members: dict
    more: bool = False


@dataclass
class Pattern:
    """A string with `…` in it."""
    parts: list[str] = field(default_factory=list)

    def matches(self, text: str) -> bool:
        return re.fullmatch(".*".join(re.escape(p) for p in self.parts), text, re.S) is not None


class ShownParser:
    """JSON extended with `…`: as a value, as an object member, inside strings."""

    def __init__(self, text: str):
        self.text, self.i = text, 0

    def ws(self):
        while self.i < len(self.text) and self.text[self.i] in " \t\r\n":
            self.i += 1

    def peek(self, s: str) -> bool:
        self.ws()
        return self.text.startswith(s, self.i)

    def eat(self, s: str):
        assert self.peek(s), f"expected {s!r} at {self.i} in {self.text!r}"
        self.i += len(s)

    def value(self):
        self.ws()
        if self.peek("…"):
            self.eat("…")
            return ELLIPSIS
        if self.peek("{"):
            self.eat("{")
            shown = Shown({})
            while not self.peek("}"):
                if self.peek("…"):
                    self.eat("…")
                    shown.more = True
                else:
                    key = self.value()
                    assert isinstance(key, str), f"an object key is a string in {self.text!r}"
                    self.eat(":")
                    shown.members[key] = self.value()
                if self.peek(","):
                    self.eat(",")
            self.eat("}")
            return shown
        if self.peek("["):
            self.eat("[")
            items = []
            while not self.peek("]"):
                items.append(self.value())
                if self.peek(","):
                    self.eat(",")
            self.eat("]")
            return items
        if self.peek('"'):
            decoder = json.JSONDecoder()
            text, end = decoder.raw_decode(self.text, self.i)
            self.i = end
            return Pattern(text.split("…")) if "…" in text else text
        m = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?|true|false|null").match(self.text, self.i)
        assert m, f"cannot read the shown answer at {self.i}: {self.text!r}"
        self.i = m.end()
        return json.loads(m.group(0))


def parse_shown(text: str):
    parser = ShownParser(text)
    value = parser.value()
    parser.ws()
    assert parser.i == len(text), f"trailing text in the shown answer {text!r}"
    return value


def mismatch(shown, actual, path="$") -> str | None:
    """Why `actual` does not look like `shown` (None when it does)."""
    if shown is ELLIPSIS:
        return None
    if isinstance(shown, Shown):
        if not isinstance(actual, dict):
            return f"{path}: shown an object, got {json.dumps(actual)[:200]}"
        missing = [k for k in shown.members if k not in actual]
        if missing:
            return f"{path}: the answer lacks {missing} (it has {list(actual)})"
        extra = [k for k in actual if k not in shown.members]
        if extra and not shown.more:
            return f"{path}: the answer has {extra}, which the docs do not show (add them, or `…`)"
        for k, v in shown.members.items():
            why = mismatch(v, actual[k], f"{path}.{k}")
            if why:
                return why
        return None
    if isinstance(shown, list):
        if not isinstance(actual, list):
            return f"{path}: shown a list, got {json.dumps(actual)[:200]}"
        if len(actual) < len(shown):
            return f"{path}: shown {len(shown)} items, got {len(actual)}"
        for n, item in enumerate(shown):
            why = mismatch(item, actual[n], f"{path}[{n}]")
            if why:
                return why
        return None
    if isinstance(shown, Pattern):
        if isinstance(actual, str) and shown.matches(actual):
            return None
        return f"{path}: shown {'…'.join(shown.parts)!r}, got {json.dumps(actual)[:200]}"
    if isinstance(shown, bool) or shown is None or isinstance(shown, str):
        return None if (actual == shown and type(actual) is type(shown)) else (
            f"{path}: shown {json.dumps(shown)}, got {json.dumps(actual)[:200]}")
    if isinstance(shown, (int, float)):
        ok = isinstance(actual, (int, float)) and not isinstance(actual, bool)
        return None if ok else f"{path}: shown a number, got {json.dumps(actual)[:200]}"
    return f"{path}: cannot compare {shown!r}"


def shown_answers(block: Block) -> list[tuple[str, object]]:
    """The `# {…}` answers of a block, each with its text (continuation lines joined)."""
    answers = []
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        m = re.match(r"^#\s*(\d{3}\s+)?([\[{].*)$", stripped)
        if not m:
            i += 1
            continue
        text = m.group(2)
        while True:
            try:
                answers.append((text, parse_shown(text)))
                break
            except AssertionError:
                i += 1
                if i >= len(lines) or not lines[i].strip().startswith("#"):
                    raise
                text += " " + lines[i].strip()[1:].strip()
        i += 1
    return answers


def json_values(output: str) -> list:
    """The JSON values printed one after another (curl prints no newline)."""
    decoder = json.JSONDecoder()
    values, i = [], 0
    while i < len(output):
        while i < len(output) and output[i] in " \t\r\n":
            i += 1
        if i >= len(output):
            break
        try:
            value, i = decoder.raw_decode(output, i)
            values.append(value)
        except json.JSONDecodeError:
            nl = output.find("\n", i)  # a line that is not JSON (a CLI's message)
            i = len(output) if nl < 0 else nl + 1
    return values


def answers_mismatch(block: Block, output: str) -> str | None:
    values = json_values(output)
    at = 0
    for text, shown in shown_answers(block):
        reasons = []
        while at < len(values):
            why = mismatch(shown, values[at])
            at += 1
            if why is None:
                break
            reasons.append(why)
        else:
            return (f"{block.where}: no answer matches the shown `{text}`:\n  "
                    + "\n  ".join(reasons or ["(no more JSON in the output)"]))
    return None


# --- running ---------------------------------------------------------------------


class Terminal:
    """A shell whose exported variables carry over from block to block, in a fresh
    directory, with `tessera` on PATH and the docs' ports substituted."""

    def __init__(self, workdir: Path, binary: Path, server_port: int, smtp_port: int):
        self.workdir = workdir
        self.state = workdir.parent / "terminal-state.sh"
        self.state.write_text("")
        bindir = workdir.parent / "bin"
        bindir.mkdir()
        (bindir / "tessera").symlink_to(binary)
        (workdir / ".venv").symlink_to(Path(sys.prefix))
        self.env = {
            "PATH": f"{bindir}:{Path(sys.prefix) / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": os.environ.get("HOME", str(workdir)),
            "LANG": "C.UTF-8",
            "TESSERA_LISTEN": f"127.0.0.1:{server_port}",
            "PYTHONUNBUFFERED": "1",
            "RUST_LOG": "info",
        }
        self.ports = {"8080": str(server_port), "2525": str(smtp_port)}
        self.background: dict[str, tuple[subprocess.Popen, Path, int]] = {}

    def substitute(self, text: str) -> str:
        for shown, real in self.ports.items():
            text = re.sub(rf"(127\.0\.0\.1|localhost):{shown}\b", rf"\g<1>:{real}", text)
        return text

    def script(self, block: Block, keep_state: bool) -> str:
        body = self.substitute(block.text)
        if block.lang == "python":
            body = f"python - <<'TESSERA_QUICKSTART_PY'\n{body}TESSERA_QUICKSTART_PY\n"
        save = f"export -p > {shlex.quote(str(self.state))}\n" if keep_state else ""
        return (f"set -eo pipefail\n. {shlex.quote(str(self.state))}\ncd {shlex.quote(str(self.workdir))}\n"
                f"{body}\n{save}")

    def run(self, block: Block, timeout: float = 120) -> str:
        result = subprocess.run(["bash", "-c", self.script(block, keep_state=True)], env=self.env,
                                capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, (
            f"{block.where}: the block failed (exit {result.returncode})\n--- block ---\n{block.text}"
            f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}")
        return result.stdout

    def start(self, block: Block, name: str, port: int):
        log = self.workdir.parent / f"{name}.log"
        handle = log.open("w")
        process = subprocess.Popen(["bash", "-c", self.script(block, keep_state=False)], env=self.env,
                                   stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        self.background[name] = (process, log, port)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, f"{block.where}: `{name}` exited:\n{log.read_text()[-4000:]}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"{block.where}: `{name}` does not listen on {port}:\n{log.read_text()[-4000:]}")

    def output_of(self, name: str) -> str:
        return self.background[name][1].read_text(errors="replace")

    def stop(self):
        for process, _, _ in self.background.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process, _, _ in self.background.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def run_blocks(terminal: Terminal, blocks: list[Block], server_port: int, smtp_port: int) -> None:
    for block in blocks:
        how = block.how.split()
        kind = how[0] if how else ""
        if kind == "skip":
            continue
        if kind == "background":
            name = how[1]
            port = server_port if re.search(r"\btessera serve\b", block.text) else None
            if port is None:
                found = re.search(r"127\.0\.0\.1:(\d+)", terminal.substitute(block.text))
                assert found, f"{block.where}: a background block needs `tessera serve` or an address"
                port = int(found.group(1))
            terminal.start(block, name, port)
            continue
        if kind == "expect-output":
            name = how[1]
            wanted = [line.strip() for line in terminal.substitute(block.text).splitlines() if line.strip()]
            deadline = time.monotonic() + 60
            while True:
                seen = terminal.output_of(name)
                missing = [line for line in wanted if line not in seen]
                if not missing:
                    break
                assert time.monotonic() < deadline, (
                    f"{block.where}: `{name}` never printed {missing}; it printed:\n{seen[-4000:]}")
                time.sleep(0.5)
            continue
        assert kind in ("", "retry"), f"{block.where}: unknown mark `runnable: {block.how}`"
        deadline = time.monotonic() + (30 if kind == "retry" else 0)
        while True:
            output = terminal.run(block)
            why = answers_mismatch(block, output)
            if why is None:
                break
            if time.monotonic() >= deadline:
                raise AssertionError(f"{why}\n--- output ---\n{output[-4000:]}")
            time.sleep(0.5)


def test_the_shown_answers_are_read_as_documented():
    """The comparison itself: keys, `…` in values, members and strings, lists."""
    shown = parse_shown('{"id":"src_…","n":1,"ok":true,"list":[{"a":…}],"obj":{…}}')
    assert mismatch(shown, {"id": "src_9", "n": 2.5, "ok": True, "list": [{"a": 1}, {}], "obj": {"x": 1}}) is None
    assert "lacks" in mismatch(shown, {"id": "src_9", "n": 2, "ok": True, "list": [{"a": 1}]})
    assert "do not show" in mismatch(shown, {"id": "src_9", "n": 2, "ok": True, "list": [{"a": 1}], "obj": {},
                                             "new": 1})
    assert mismatch(shown, {"id": "wk_9", "n": 2, "ok": True, "list": [{"a": 1}], "obj": {}}) is not None
    assert mismatch(parse_shown('{"a":1,…}'), {"a": 3, "b": 4}) is None
    assert mismatch(parse_shown('{"success":true}'), {"success": False}) is not None
    assert json_values('{"a":1}{"b":2}\nplain text\n[3]') == [{"a": 1}, {"b": 2}, [3]]
    block = Block("x.md", 1, "", "sh", 'curl …\n# {"a":1,\n#   "b":[…]}\n')
    assert [t for t, _ in shown_answers(block)] == ['{"a":1, "b":[…]}']


def test_the_quick_start_works_as_written(binary, tmp_path):
    blocks = quickstart_blocks() + doc_blocks()
    assert any(b.how.startswith("background") for b in blocks)
    assert any(b.how.startswith("expect-output") for b in blocks)
    workdir = tmp_path / "fresh-directory"
    workdir.mkdir()
    server_port, smtp_port = free_port(), free_port()
    terminal = Terminal(workdir, binary, server_port, smtp_port)
    try:
        run_blocks(terminal, blocks, server_port, smtp_port)
        server_log = terminal.output_of("server")
        assert "admin token: TESSERA_ADMIN_TOKEN from the environment" in server_log, server_log[-4000:]
        assert "change-me-please" not in server_log, "the log shows the admin token"
        # Step 10's files: the access document, then the person is gone.
        document = json.loads((workdir / "user-1.json").read_text())
        assert document, "the access document is empty"
    finally:
        terminal.stop()
