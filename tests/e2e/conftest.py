"""Fixtures for the Tessera end-to-end suite.

Every test gets its own data dir and its own `tessera serve` process (the real
release binary, `TESSERA_BIN` or <repo>/target/release/tessera) listening on a
free 127.0.0.1 port. The server's stderr goes to a file that is attached to the
report of any failing test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tessera_e2e import (
    ADMIN_TOKEN,
    Source,
    TesseraServer,
    export_events,
    run_cli,
    tessera_bin,
)


@pytest.fixture(scope="session")
def binary() -> Path:
    path = tessera_bin()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"tessera binary not found at {path}: build it with `cargo build --release` "
            "or point TESSERA_BIN at it",
            pytrace=False,
        )
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def server_factory(request, binary, tmp_path):
    """make(data_dir=None, start=True) -> TesseraServer. All servers made here are
    stopped (SIGTERM, then SIGKILL) at teardown and their logs reported on failure."""
    servers: list[TesseraServer] = []
    request.node._tessera_servers = servers

    def make(data_dir: Path | None = None, start: bool = True, extra_env: dict | None = None) -> TesseraServer:
        n = len(servers)
        d = Path(data_dir) if data_dir is not None else tmp_path / f"data-{n}"
        srv = TesseraServer(d, tmp_path / f"server-{n}.log", binary=binary, extra_env=extra_env)
        servers.append(srv)
        if start:
            srv.start()
        return srv

    yield make
    for srv in servers:
        if srv.running():
            srv.terminate(timeout=15)


@pytest.fixture
def server(server_factory, data_dir) -> TesseraServer:
    return server_factory(data_dir)


@pytest.fixture
def source(server) -> Source:
    return server.create_source("e2e-web")


@pytest.fixture
def export(binary):
    """export(data_dir, since=None, source=None) -> list of stored messages."""

    def _export(data_dir, since=None, source=None):
        return export_events(data_dir, since=since, source=source, binary=binary)

    return _export


@pytest.fixture
def cli(binary):
    """cli(*args, data_dir=None, env=None, check=False) -> CompletedProcess."""

    def _cli(*args, **kw):
        kw.setdefault("binary", binary)
        return run_cli(*args, **kw)

    return _cli


@pytest.fixture
def admin_token() -> str:
    return ADMIN_TOKEN


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for i, srv in enumerate(getattr(item, "_tessera_servers", [])):
            rep.sections.append((f"tessera server #{i} stderr ({srv.log_path})", srv.log_tail()))
