#!/usr/bin/env python3
"""Browser-to-stored latency: from an SDK call in a web page to Tessera's answer that
the event is stored (Tessera answers 2xx only once the event is fsynced), beside the
same events sent by the Segment Python SDK in the same run.

Clients, one after the other against one `tessera serve` (the release build), each
with its own source:
  * analytics.js (the snippet with Tessera's host, the bundle Tessera serves) in
    Debian's Chromium driven by Playwright: `analytics.track(...)`;
  * RudderStack's JavaScript SDK v3 (bundled build, Tessera as control and data plane)
    in the same browser: `ra.track(...)`;
  * a plain `fetch` of the same message from the same page (`text/plain` to `/v1/t`,
    as analytics.js sends it): the browser's and the network's share, without an SDK;
  * the Segment Python SDK in this process, `sync_mode=True` (each call sends at once
    and returns after Tessera's answer): `client.track(...)`.

In the page, the latency of one event is from just before the SDK call to the
`responseEnd` of the request that carried it (Resource Timing, whose clock is the
page's `performance.now()`), polled through a MessageChannel (sub-millisecond, no
timer clamping). Events are sent one at a time, each after the previous one is
stored: this measures latency, not throughput. At the end every source's events are
counted in `tessera export` (each must be stored exactly once).

Usage (from the repository root, after tests/setup-env.sh and a release build):
    flock /tmp/tessera-bench.lock tests/.venv/bin/python bench/browser_latency.py [--events 300]
Writes bench/results/browser-latency-<utc>/report.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from tessera_e2e import TesseraServer, export_events  # noqa: E402
from test_browser import CHROMIUM, site  # noqa: E402

# Runs in the page: `n` events, one at a time; returns each one's latency in ms.
MEASURE = """async ({n, sdk, path, base, key}) => {
  const channel = new MessageChannel();
  const tick = () => new Promise(resolve => { channel.port1.onmessage = () => resolve(); channel.port2.postMessage(0); });
  const out = [];
  for (let i = 0; i < n; i++) {
    performance.clearResourceTimings();
    const t0 = performance.now();
    if (sdk === 'segment') {
      analytics.track('Bench Event', {i: i});
    } else if (sdk === 'fetch') {
      fetch(base + path, {method: 'POST', headers: {'Content-Type': 'text/plain'}, body: JSON.stringify(
        {writeKey: key, type: 'track', event: 'Bench Event', anonymousId: 'bench-fetch', properties: {i: i}})});
    } else {
      ra.track('Bench Event', {i: i});
    }
    let entry;
    for (;;) {
      entry = performance.getEntriesByType('resource').find(e => e.startTime >= t0 && e.responseEnd > 0
        && new URL(e.name).pathname === path);
      if (entry) break;
      await tick();
      if (performance.now() - t0 > 10000) throw new Error('no answer within 10 s for event ' + i);
    }
    out.push(entry.responseEnd - t0);
  }
  return out;
}"""


def summary(values: list[float]) -> dict:
    ordered = sorted(values)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 2)

    return {"n": len(values), "p50": pct(50), "p95": pct(95), "p99": pct(99), "max": round(ordered[-1], 2),
            "mean": round(statistics.fmean(values), 2)}


def browser_run(browser, server, source, page_path: str, sdk: str, path: str, warmup: int, events: int):
    pages = site(server, source)
    try:
        context = browser.new_context()
        problems: list[str] = []
        page = context.new_page()
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        context.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
        page.goto(pages.url + page_path)
        # Ready once the page view sent on load is stored.
        page_view = "/v1/page" if sdk == "rudder" else "/v1/p"
        page.wait_for_function(
            "(path) => performance.getEntriesByType('resource').some(e => new URL(e.name).pathname === path"
            " && e.responseEnd > 0)", arg=page_view, timeout=20_000)
        arg = {"sdk": sdk, "path": path, "base": server.url, "key": source.write_key}
        page.evaluate(MEASURE, {**arg, "n": warmup})
        latencies = page.evaluate(MEASURE, {**arg, "n": events})
        context.close()
        if problems:
            raise SystemExit(f"{sdk}: the browser reported problems: {problems[:5]}")
        return latencies
    finally:
        pages.close()


def python_run(server, source, warmup: int, events: int) -> list[float]:
    from segment.analytics import Client

    client = Client(source.write_key, host=server.url, sync_mode=True, max_retries=0)
    out = []
    for i in range(warmup + events):
        t0 = time.perf_counter()
        client.track(user_id=None, anonymous_id="bench-python", event="Bench Event", properties={"i": i})
        if i >= warmup:
            out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=300, help="measured events per client (default 300)")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured events first (default 20)")
    args = parser.parse_args()

    binary = Path(os.environ.get("TESSERA_BIN") or ROOT / "target" / "release" / "tessera")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    results = ROOT / "bench" / "results" / f"browser-latency-{stamp}"
    results.mkdir(parents=True, exist_ok=True)
    server = TesseraServer(results / "data", results / "server.log", binary=binary).start()
    report: dict = {
        "date": stamp,
        "commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip(),
        "cores": os.cpu_count(),
        "machine": platform.platform(),
        "events_per_client": args.events,
        "warmup": args.warmup,
        "clients": {},
    }
    try:
        from playwright.sync_api import sync_playwright

        sources = {name: server.create_source(f"bench-{name}") for name in ("analytics_js", "rudderstack_js", "fetch_in_page", "python")}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
            report["chromium"] = browser.version
            latency = {
                "analytics_js": browser_run(browser, server, sources["analytics_js"], "/segment.html", "segment",
                                            "/v1/t", args.warmup, args.events),
                "rudderstack_js": browser_run(browser, server, sources["rudderstack_js"], "/rudder.html", "rudder",
                                              "/v1/track", args.warmup, args.events),
                "fetch_in_page": browser_run(browser, server, sources["fetch_in_page"], "/segment.html", "fetch",
                                             "/v1/t", args.warmup, args.events),
            }
            browser.close()
        latency["python"] = python_run(server, sources["python"], args.warmup, args.events)
        for name, values in latency.items():
            stored = [e for e in export_events(server.data_dir, source=sources[name].id, binary=binary)
                      if e.get("event") == "Bench Event"]
            ids = {e["messageId"] for e in stored}
            expected = args.events + args.warmup
            if len(stored) != expected or len(ids) != expected:
                raise SystemExit(f"{name}: {len(stored)} bench events stored ({len(ids)} distinct), expected {expected}")
            report["clients"][name] = {**summary(values), "stored": len(stored)}
    finally:
        server.terminate()
    (results / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"browser-to-stored latency, {args.events} events per client, one at a time (ms):")
    print(f"{'client':<16} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8} {'mean':>8}")
    for name, row in report["clients"].items():
        print(f"{name:<16} {row['p50']:>8} {row['p95']:>8} {row['p99']:>8} {row['max']:>8} {row['mean']:>8}")
    print(f"report: {results / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
