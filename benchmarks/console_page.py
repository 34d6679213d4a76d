"""The console page's frame time in headless Chromium (issue 12: p95 < 50 ms at 5,000 vehicles).

Two parts, both measured with the Performance API inside the page (requestAnimationFrame
deltas = frame times, and the long-task observer):

1. ``renderers``: the same synthetic fleet (N vehicles in Paris, each reporting once a second,
   delivered in 250 ms batches like the console's diffs) drawn by the page's canvas layer
   (``ecokit/console/static/js/vehicle-layer.js``) and by Leaflet.markercluster with one DOM
   marker per vehicle, side by side in the same run, at a city-wide zoom and a street zoom.
   This is the measurement that chose a hand-written canvas layer over the library.
2. ``console``: the real page of a real stack (mosquitto, influxd, bridge, processor, shadow,
   console) while ``ecokit simulate`` drives N vehicles at 1 msg/s: the fleet view (clustered),
   a street view (markers gliding) and the street view with a vehicle's details and live chart
   open.

    .venv/bin/python benchmarks/console_page.py                  # both parts, 5,000 vehicles
    .venv/bin/python benchmarks/console_page.py --part renderers --vehicles 5000 --seconds 15
    .venv/bin/python benchmarks/console_page.py --part console --vehicles 5000

Prints one line per case: frames, p50/p95/p99/max frame time, long tasks, and the layer's own
average draw time where the page reports it.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks._common import machine  # noqa: E402

STATIC = ROOT / "ecokit" / "console" / "static"
HARNESS = Path(__file__).resolve().parent / "console_page"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
GOAL_P95_MS = 50.0

# Injected through WebDriver (not subject to the page's CSP): frame times from
# requestAnimationFrame and long tasks (> 50 ms on the main thread) from PerformanceObserver.
MEASURE_JS = """
const b = window.__bench = {deltas: [], long: [], stop: false};
let last = null;
function frame(t) {
  if (last !== null) b.deltas.push(t - last);
  last = t;
  if (!b.stop) requestAnimationFrame(frame);
}
requestAnimationFrame(frame);
try {
  new PerformanceObserver((list) => { for (const e of list.getEntries()) b.long.push(e.duration); })
    .observe({type: 'longtask'});
} catch (e) { b.long = null; }
"""

COLLECT_JS = """
const b = window.__bench; b.stop = true;
const canvas = document.querySelector('canvas.vehicle-canvas');
return {deltas: b.deltas, long: b.long,
        draw_ms: canvas ? Number(canvas.dataset.drawMs) : null,
        drawn: canvas ? Number(canvas.dataset.drawn) : null,
        clusters: canvas ? Number(canvas.dataset.clusters) : null,
        markers: document.querySelectorAll('.leaflet-marker-icon').length};
"""


def chromium(width: int = 1600, height: int = 1000) -> WebDriver:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="ecokit-bench-chromium-")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(30)
    driver._ecokit_profile = profile  # type: ignore[attr-defined]
    return driver


def close(driver: WebDriver) -> None:
    profile = getattr(driver, "_ecokit_profile", None)
    driver.quit()
    if profile:
        shutil.rmtree(profile, ignore_errors=True)


@dataclass
class FrameStats:
    case: str
    frames: int
    p50: float
    p95: float
    p99: float
    worst: float
    long_tasks: int | None
    long_ms: float | None
    draw_ms: float | None
    drawn: str

    def line(self) -> str:
        long = "n/a" if self.long_tasks is None else f"{self.long_tasks} ({self.long_ms:.0f} ms)"
        draw = "" if self.draw_ms is None or math.isnan(self.draw_ms) else f"  draw avg {self.draw_ms:5.1f} ms"
        verdict = "ok" if self.p95 < GOAL_P95_MS else f"OVER {GOAL_P95_MS:.0f} ms"
        return (f"{self.case:<44} frames {self.frames:5d}  p50 {self.p50:6.1f}  p95 {self.p95:6.1f}  "
                f"p99 {self.p99:6.1f}  max {self.worst:7.1f} ms  long tasks {long}{draw}  {self.drawn}  [{verdict}]")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def measure(driver: WebDriver, case: str, seconds: float) -> FrameStats:
    driver.execute_script(MEASURE_JS)
    time.sleep(seconds)
    raw: dict[str, Any] = driver.execute_script(COLLECT_JS)
    deltas = [float(d) for d in raw["deltas"]]
    long = raw["long"]
    if raw["drawn"] is not None:
        drawn = f"markers {raw['drawn']}, clusters {raw['clusters']}"
    else:
        drawn = f"DOM markers {raw['markers']}"
    return FrameStats(case, len(deltas), percentile(deltas, 0.5), percentile(deltas, 0.95), percentile(deltas, 0.99),
                      max(deltas, default=math.nan), None if long is None else len(long),
                      None if long is None else float(sum(long)), raw["draw_ms"], drawn)


# -- part 1: renderers side by side ---------------------------------------------------------

class _Files(http.server.SimpleHTTPRequestHandler):
    """/static/* from the package, /bench/* from benchmarks/console_page/."""

    def translate_path(self, path: str) -> str:
        path = path.split("?", 1)[0]
        for prefix, folder in (("/static/", STATIC), ("/bench/", HARNESS)):
            if path.startswith(prefix):
                target = (folder / path[len(prefix):]).resolve()
                if folder.resolve() in target.parents:
                    return str(target)
        return str(HARNESS / "missing")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def file_server() -> Iterator[str]:
    http.server.SimpleHTTPRequestHandler.extensions_map[".js"] = "text/javascript"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def renderers(vehicles: int, seconds: float) -> list[FrameStats]:
    results = []
    with file_server() as base:
        for zoom in (12.5, 15):
            for renderer in ("canvas", "markercluster"):
                driver = chromium()
                try:
                    driver.get(f"{base}/bench/harness.html?renderer={renderer}&n={vehicles}&zoom={zoom}")
                    deadline = time.monotonic() + 60
                    while driver.execute_script("return document.body.dataset.ready") != "true":
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"{renderer}: the harness did not start")
                        time.sleep(0.2)
                    time.sleep(3)  # markercluster's chunked loading, first frames
                    result = measure(driver, f"{renderer:<13} {vehicles} vehicles, zoom {zoom:g}", seconds)
                finally:
                    close(driver)
                print(result.line(), flush=True)
                results.append(result)
    return results


# -- part 2: the real console ----------------------------------------------------------------

def console(vehicles: int, seconds: float) -> list[FrameStats]:
    from ecokit.testing import free_port, running_stack, write_project

    results = []
    with tempfile.TemporaryDirectory(prefix="ecokit-bench-console-") as folder:
        config = write_project(Path(folder), devices=vehicles,
                               extra={"service_ports": {"console": free_port()}})
        with running_stack(config) as stack:
            endpoint = stack.console_endpoint()
            assert endpoint is not None
            url = endpoint.page
            sim = subprocess.Popen(
                [sys.executable, "-m", "ecokit", "--config", str(config), "simulate", "--vehicles", str(vehicles),
                 "--rate", "1s", "--region", "paris", "--seed", "7", "--duration", "30m"],
                cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            driver = chromium()
            try:
                time.sleep(20)  # every vehicle connected and reporting
                driver.get(url)
                _wait_for(driver, "return Number(document.querySelector('#known-count').textContent"
                                  ".replace(/,/g, ''))", lambda n: n >= vehicles * 0.95, 90)
                time.sleep(3)
                cases = [("fleet view (clustered)", None), ("street view, zoom 16 (gliding)", 16)]
                for name, zoom in cases:
                    if zoom is not None:
                        driver.execute_script(f"location.hash = '#{zoom}/48.8566/2.3522'")
                        time.sleep(3)
                    result = measure(driver, f"console {vehicles} vehicles: {name}", seconds)
                    print(result.line(), flush=True)
                    results.append(result)
                first = driver.execute_script("return document.querySelector('#known-count') && "
                                              "document.querySelector('#search') && 'vehicle-0001'")
                search = driver.find_element("id", "search")
                search.send_keys(first)
                search.send_keys("\n")
                time.sleep(4)
                result = measure(driver, f"console {vehicles} vehicles: details + live chart", seconds)
                print(result.line(), flush=True)
                results.append(result)
            finally:
                close(driver)
                sim.terminate()
                try:
                    sim.wait(30)
                except subprocess.TimeoutExpired:
                    sim.kill()
    return results


def _wait_for(driver: WebDriver, script: str, ok: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            value = driver.execute_script(script)
            if ok(value):
                return value
        time.sleep(0.5)
    raise RuntimeError(f"timed out waiting for {script!r} (last value {value!r})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("all", "renderers", "console"), default="all")
    parser.add_argument("--vehicles", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=15.0, help="measurement window per case")
    parser.add_argument("--json", action="store_true", help="print the results as JSON at the end")
    args = parser.parse_args()
    print(machine())
    print(f"Chromium: {subprocess.run([CHROMIUM, '--version'], capture_output=True, text=True).stdout.strip()}")
    results: list[FrameStats] = []
    if args.part in ("all", "renderers"):
        results += renderers(args.vehicles, args.seconds)
    if args.part in ("all", "console"):
        results += console(args.vehicles, args.seconds)
    if args.json:
        print(json.dumps([r.__dict__ for r in results], indent=2))
    worst = max((r.p95 for r in results if r.case.startswith(("canvas", "console"))), default=math.nan)
    print(f"page frame time p95 (worst case of the page's renderer): {worst:.1f} ms "
          f"(goal < {GOAL_P95_MS:.0f} ms); median of p50s {statistics.median(r.p50 for r in results):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
