"""Helpers for the console page tests: headless Chromium through Selenium, a real tile server,
and the map's projection (to know where on the page a vehicle must be drawn).

The tests read what the page shows: DOM text and attributes, the pixels of the map canvas and
the browser console, never the page's JavaScript objects.
"""

from __future__ import annotations

import contextlib
import http.server
import math
import shutil
import struct
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from ecokit.testing.waiting import wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage",  # containers with a small /dev/shm (CI)
                 "--window-size=1400,900", "--force-device-scale-factor=1")


FLEET = 12  # simulated vehicles in the page tests


@contextlib.contextmanager
def chromium() -> Iterator[WebDriver]:
    """Debian's chromium through chromedriver, a fresh profile, browser console captured."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        raise AssertionError(f"the browser tests need {', '.join(missing)} (apt-get install chromium "
                             "chromium-driver; infra/install.sh installs them)")
    profile = tempfile.mkdtemp(prefix="ecokit-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (*CHROMIUM_ARGS, f"--user-data-dir={profile}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.set_page_load_timeout(30)
        driver.set_script_timeout(15)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# -- a real tile server -----------------------------------------------------------------------

def png(width: int, height: int, pixel: Callable[[int, int], tuple[int, int, int]]) -> bytes:
    """An 8-bit RGB PNG (no filter), enough for test tiles."""
    rows = b"".join(b"\x00" + bytes(c for x in range(width) for c in pixel(x, y)) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


TILE_COLOR = (214, 232, 206)  # a pale green nothing else on the page uses
TILE = png(256, 256, lambda x, y: (160, 180, 160) if x == 0 or y == 0 else TILE_COLOR)


@dataclass
class TileServer:
    """Serves the same PNG for every /{z}/{x}/{y}.png and counts the requests."""

    requests: list[str] = field(default_factory=list)
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/{{z}}/{{x}}/{{y}}.png"

    def start(self, port: int = 0) -> None:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(TILE)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(TILE)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


# -- the page -----------------------------------------------------------------------------------

def world_px(lat: float, lng: float, zoom: float) -> tuple[float, float]:
    """Web Mercator pixel coordinates at ``zoom`` (what Leaflet's EPSG:3857 map uses)."""
    scale = 256 * 2**zoom
    sin = math.sin(math.radians(max(-85.05112878, min(85.05112878, lat))))
    return (lng + 180) / 360 * scale, (0.5 - math.log((1 + sin) / (1 - sin)) / (4 * math.pi)) * scale


@dataclass(frozen=True)
class View:
    zoom: float
    lat: float
    lng: float
    width: float
    height: float

    def point(self, lat: float, lng: float) -> tuple[float, float]:
        """Where (lat, lng) is drawn, in CSS pixels from the map's top-left corner."""
        cx, cy = world_px(self.lat, self.lng, self.zoom)
        x, y = world_px(lat, lng, self.zoom)
        return x - cx + self.width / 2, y - cy + self.height / 2

    def inside(self, x: float, y: float, margin: float = 20) -> bool:
        return margin <= x <= self.width - margin and margin <= y <= self.height - margin


# Which of the given map points have a pixel of `color` (±tolerance) within `radius` CSS px,
# read from the vehicle canvas (what the page painted).
PIXELS_JS = """
const [points, color, radius, tolerance] = arguments;
const canvas = document.querySelector('canvas.vehicle-canvas');
const map = document.getElementById('map').getBoundingClientRect();
const box = canvas.getBoundingClientRect();
const ratio = canvas.width / box.width;
const ctx = canvas.getContext('2d');
return points.map(([x, y]) => {
  const cx = Math.round((x + map.left - box.left) * ratio);
  const cy = Math.round((y + map.top - box.top) * ratio);
  const r = Math.round(radius * ratio);
  const left = Math.max(0, cx - r), top = Math.max(0, cy - r);
  const w = Math.min(canvas.width, cx + r + 1) - left, h = Math.min(canvas.height, cy + r + 1) - top;
  if (w <= 0 || h <= 0) return false;
  const data = ctx.getImageData(left, top, w, h).data;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] > 250 && Math.abs(data[i] - color[0]) <= tolerance && Math.abs(data[i + 1] - color[1]) <= tolerance
        && Math.abs(data[i + 2] - color[2]) <= tolerance) return true;
  }
  return false;
});
"""


class ConsolePage:
    """The console page in one Chromium, signed in once with the token URL."""

    def __init__(self, driver: WebDriver, base_url: str, token: str) -> None:
        self.driver = driver
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.signed_in = False
        self.api = requests.Session()
        self.api.headers["Authorization"] = f"Bearer {token}"

    # navigation
    def open(self, view: str = "") -> None:
        """A fresh load of the page (optionally at #zoom/lat/lng[/vehicle]), waiting until live."""
        self.driver.get("about:blank")
        if not self.signed_in:
            # The token URL sets the console cookie and redirects to the page.
            self.driver.get(f"{self.base_url}/?token={self.token}")
            self.signed_in = True
            if not view:
                self.wait_live()
                return
            self.driver.get("about:blank")
        self.driver.get(f"{self.base_url}/{view}")
        self.wait_live()

    def wait_live(self, timeout: float = 30) -> None:
        wait_for("the stream to be live", lambda: self.attr("#conn", "data-state") == "live", timeout=timeout)

    # reading the page
    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        return str(self.driver.execute_script("const e = document.querySelector(arguments[0]); "
                                              "return e ? e.textContent : null", css))

    def attr(self, css: str, name: str) -> str | None:
        value = self.driver.execute_script("const e = document.querySelector(arguments[0]); "
                                           "return e ? e.getAttribute(arguments[1]) : null", css, name)
        return None if value is None else str(value)

    def number(self, css: str) -> float | None:
        text = self.text(css).replace(",", "").split(" ")[0]
        try:
            return float(text)
        except ValueError:
            return None

    def view(self) -> View:
        """The map's view, from the address bar (#zoom/lat/lng) and the map's size."""
        fragment = self.driver.execute_script("return location.hash").lstrip("#").split("/")
        zoom, lat, lng = (float(p) for p in fragment[:3])
        size = self.driver.execute_script("const r = document.getElementById('map').getBoundingClientRect();"
                                          "return [r.width, r.height]")
        return View(zoom, lat, lng, float(size[0]), float(size[1]))

    def status_color(self, status: str) -> tuple[int, int, int]:
        """The colour the legend shows for ``status`` (the map uses the same stylesheet value)."""
        rgb = self.driver.execute_script(
            "return getComputedStyle(document.querySelector('.legend .s-' + arguments[0])).backgroundColor", status)
        r, g, b = (int(float(c)) for c in str(rgb)[str(rgb).index("(") + 1:-1].split(",")[:3])
        return r, g, b

    def painted(self, points: list[tuple[float, float]], color: tuple[int, int, int], *, radius: float = 8,
                tolerance: int = 6) -> list[bool]:
        result = self.driver.execute_script(PIXELS_JS, [list(p) for p in points], list(color), radius, tolerance)
        return [bool(x) for x in result]

    def console_errors(self, *, allow: Callable[[str], bool] = lambda message: False) -> list[str]:
        """SEVERE entries of the browser console since the last call, minus the allowed ones."""
        entries: list[dict[str, Any]] = self.driver.get_log("browser")  # type: ignore[no-untyped-call]
        return [str(e["message"]) for e in entries if e["level"] == "SEVERE" and not allow(str(e["message"]))]

    # the API, to compare with what the page shows
    def get(self, path: str, **params: Any) -> Any:
        response = self.api.get(f"{self.base_url}{path}", params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def vehicles(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get("/api/vehicles", limit=1000)["items"]
        return [v for v in items if v["lat"] is not None and v["lng"] is not None]
