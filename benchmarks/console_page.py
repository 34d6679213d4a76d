"""The console page's frame time in headless Chromium (issue 12: p95 < 50 ms at 5,000 vehicles).

Three parts; frame times are measured with the Performance API inside the page
(requestAnimationFrame deltas = frame times, and the long-task observer):

1. ``renderers``: the same synthetic fleet (N vehicles in Paris, each reporting once a second,
   delivered in 250 ms batches like the console's diffs) drawn by the page's canvas layer
   (``ecokit/console/static/js/vehicle-layer.js``) and by Leaflet.markercluster with one DOM
   marker per vehicle, side by side in the same run, at a city-wide zoom and a street zoom.
   This is the measurement that chose a hand-written canvas layer over the library.
2. ``drawing``: N markers on a software canvas four ways (one path of discs, copies of a canvas
   or ImageBitmap sprite, squares): what the layer's drawing is built on.
3. ``console``: the real page of a real stack (mosquitto, influxd, bridge, processor, shadow,
   console) while ``ecokit simulate`` drives N vehicles at 1 msg/s (the stack and the simulator
   at nice 10: on a user's machine the browser does not share two cores with them): the fleet
   view (clustered), zoom 13 with clustering off (every vehicle a marker), a street view
   (markers gliding), the same with every trail, and with a vehicle's details and live chart.

    .venv/bin/python benchmarks/console_page.py                  # all three, 5,000 vehicles
    .venv/bin/python benchmarks/console_page.py --part drawing
    .venv/bin/python benchmarks/console_page.py --part renderers --vehicles 5000 --seconds 15
    .venv/bin/python benchmarks/console_page.py --part console --vehicles 5000
    .venv/bin/python benchmarks/console_page.py --screenshots docs/img --vehicles 2000 --warmup 120

Prints one line per case: frames, p50/p95/p99/max frame time, long tasks, and the layer's own
average draw time where the page reports it.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks._common import machine  # noqa: E402
from ecokit.console.client import ConsoleEndpoint  # noqa: E402
from ecokit.stack import Stack  # noqa: E402
from ecokit.status import stack_status  # noqa: E402
from ecokit.testing import running_stack, write_project  # noqa: E402
from ecokit.testing.simulation import simulating  # noqa: E402

STATIC = ROOT / "ecokit" / "console" / "static"
HARNESS = Path(__file__).resolve().parent / "console_page"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
GOAL_P95_MS = 50.0
LOAD_NICENESS = 10  # the stack and the simulator, in the console part

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
                "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--window-size={width},{height}"):
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


# -- part 3: how to draw many markers on a software canvas ------------------------------------

def drawing(vehicles: int) -> None:
    with file_server() as base:
        driver = chromium()
        try:
            driver.get(f"{base}/bench/drawing.html?n={vehicles}")
            raw = _wait_for(driver, "return document.body.dataset.result", bool, 120)
        finally:
            close(driver)
    for name, ms in json.loads(raw).items():
        print(f"drawing {vehicles} markers: {name:<36} {ms:7.1f} ms a frame", flush=True)


# -- part 2: the real console ----------------------------------------------------------------

@contextlib.contextmanager
def live_console(vehicles: int, *, warmup: float, nice: bool) -> Iterator[tuple[Stack, ConsoleEndpoint]]:
    """A throwaway stack with a console, and the simulator driving ``vehicles`` in Paris at 1 msg/s
    (``nice``: the stack and the simulator at nice 10, below the browser)."""
    with tempfile.TemporaryDirectory(prefix="ecokit-bench-console-") as folder:
        config = write_project(Path(folder), devices=vehicles, stack="page-bench")
        with running_stack(config) as stack, simulating(Path(config), vehicles, seed=7, duration="120m") as sim:
            endpoint = stack.console_endpoint()
            assert endpoint is not None, "the stack has no console"
            # The browser is the thing measured; on a user's machine it does not share two
            # cores with the stack and 5,000 simulated devices. Those run at nice 10 here,
            # so they take what the browser leaves (the figures say so).
            for pid in [sim.pid, *(s.pid for s in stack_status(stack).services if s.pid)] if nice else []:
                deprioritise(pid)
            deadline = time.monotonic() + 300
            while api(endpoint, "/api/stats")["vehicles"]["total"] < vehicles * 0.98:
                if time.monotonic() > deadline or sim.poll() is not None:
                    raise RuntimeError(f"the simulator did not bring {vehicles} vehicles up "
                                       f"(see {folder}/simulate.log)")
                time.sleep(2)
            time.sleep(warmup)
            yield stack, endpoint


def deprioritise(pid: int) -> None:
    """Nice every thread of ``pid`` (Linux nice values are per thread)."""
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError):
            os.setpriority(os.PRIO_PROCESS, int(task.name), LOAD_NICENESS)


def api(endpoint: ConsoleEndpoint, path: str, **params: Any) -> Any:
    response = requests.get(f"{endpoint.url}{path}", params=params, timeout=10,
                            headers={"Authorization": f"Bearer {endpoint.token}"})
    response.raise_for_status()
    return response.json()


def open_page(driver: WebDriver, endpoint: ConsoleEndpoint, vehicles: int) -> None:
    driver.get(endpoint.page)
    _wait_for(driver, "return document.getElementById('conn').dataset.state", lambda s: s == "live", 60)
    _wait_for(driver, "return Number(document.getElementById('known-count').textContent.replace(/,/g, ''))",
              lambda n: n >= vehicles * 0.95, 60)


def set_view(driver: WebDriver, view: str, *, cluster: bool = True, trails: str = "selected") -> None:
    driver.execute_script("location.hash = arguments[0]", view)
    box = driver.find_element(By.ID, "opt-cluster")
    if box.is_selected() != cluster:
        box.click()
    Select(driver.find_element(By.ID, "opt-trails")).select_by_value(trails)
    time.sleep(3)


def select_vehicle(driver: WebDriver, vehicle: str) -> None:
    search = driver.find_element(By.ID, "search")
    search.clear()
    search.send_keys(vehicle, Keys.ENTER)
    _wait_for(driver, "return document.getElementById('details').dataset.vehicle", lambda v: v == vehicle, 10)


def console(vehicles: int, seconds: float, warmup: float) -> list[FrameStats]:
    results = []
    with live_console(vehicles, warmup=warmup, nice=True) as (_stack, endpoint):
        driver = chromium()
        try:
            open_page(driver, endpoint, vehicles)
            time.sleep(3)
            cases: list[tuple[str, str | None, bool, str]] = [
                ("fleet view, clustered", None, True, "selected"),
                ("zoom 13, clusters off", "#13/48.8566/2.3522", False, "selected"),
                ("zoom 15, gliding", "#15/48.8566/2.3522", True, "selected"),
                ("zoom 15, trails of all", "#15/48.8566/2.3522", True, "all"),
            ]
            for name, view, cluster, trails in cases:
                if view is not None:
                    set_view(driver, view, cluster=cluster, trails=trails)
                result = measure(driver, f"console {vehicles}: {name}", seconds)
                print(result.line(), flush=True)
                results.append(result)
            select_vehicle(driver, "vehicle-0001")
            time.sleep(4)
            result = measure(driver, f"console {vehicles}: details + live chart", seconds)
            print(result.line(), flush=True)
            results.append(result)
        finally:
            close(driver)
    return results


# -- screenshots for docs/ ----------------------------------------------------------------------

def screenshots(vehicles: int, out: Path, warmup: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with live_console(vehicles, warmup=warmup, nice=False) as (stack, endpoint):
        driver = chromium(1440, 900)
        try:
            open_page(driver, endpoint, vehicles)
            time.sleep(4)
            driver.save_screenshot(str(out / "console-fleet.png"))
            print(f"wrote {out / 'console-fleet.png'}")

            near = api(endpoint, "/api/vehicles", bbox="2.33,48.85,2.37,48.87", status="moving", limit=20)["items"]
            vehicle = near[0]["id"] if near else "vehicle-0001"
            set_view(driver, "#15/48.86/2.35", cluster=True, trails="all")
            select_vehicle(driver, vehicle)
            driver.find_element(By.CSS_SELECTOR, 'button[data-command="ping"]').click()
            _wait_for(driver, "return document.querySelector('#d-cmd-list li[data-state=\"succeeded\"]') !== null",
                      bool, 20)
            time.sleep(3)
            driver.save_screenshot(str(out / "console-details.png"))
            print(f"wrote {out / 'console-details.png'}")

            restart = threading.Thread(target=stack.restart, args=(["console"],))
            restart.start()
            _wait_for(driver, "return document.body.dataset.connection", lambda s: s == "reconnecting", 30)
            time.sleep(1.2)
            driver.save_screenshot(str(out / "console-reconnecting.png"))
            print(f"wrote {out / 'console-reconnecting.png'}")
            restart.join()
        finally:
            close(driver)


def _wait_for(driver: WebDriver, script: str, ok: Callable[[Any], bool], timeout: float) -> Any:
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
    parser.add_argument("--part", choices=("all", "renderers", "drawing", "console"), default="all")
    parser.add_argument("--screenshots", type=Path, metavar="DIR",
                        help="instead of measuring: run --vehicles (e.g. 2000) and save the docs' screenshots into DIR")
    parser.add_argument("--vehicles", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=15.0, help="measurement window per case")
    parser.add_argument("--warmup", type=float, default=10.0,
                        help="seconds the simulator runs before the page opens (history for the chart)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON at the end")
    args = parser.parse_args()
    print(machine())
    if args.screenshots:
        screenshots(args.vehicles, args.screenshots, args.warmup)
        return 0
    print(f"Chromium: {subprocess.run([CHROMIUM, '--version'], capture_output=True, text=True).stdout.strip()}")
    results: list[FrameStats] = []
    if args.part in ("all", "renderers"):
        results += renderers(args.vehicles, args.seconds)
    if args.part in ("all", "drawing"):
        drawing(args.vehicles)
    if args.part in ("all", "console"):
        results += console(args.vehicles, args.seconds, args.warmup)
    if args.json:
        print(json.dumps([r.__dict__ for r in results], indent=2))
    if results:
        worst = max((r.p95 for r in results if r.case.startswith(("canvas", "console"))), default=math.nan)
        print(f"page frame time p95 (worst case of the page's renderer): {worst:.1f} ms "
              f"(goal < {GOAL_P95_MS:.0f} ms); median of p50s {statistics.median(r.p50 for r in results):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
