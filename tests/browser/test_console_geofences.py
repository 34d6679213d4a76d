"""Geofences in the console page: a polygon drawn on the map with leaflet-geoman is saved
through the API into the stack's geofence file, the processor picks it up without a restart,
and the vehicle inside it shows up in the page's event feed (real stack, real Chromium)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import FLEET, ConsolePage
from selenium.webdriver.common.action_chains import ActionChains

from ecokit.stack import Stack
from ecokit.testing import running_stack, write_project
from ecokit.testing.simulation import simulating
from ecokit.testing.waiting import wait_for

ZOOM = 16


@pytest.fixture(scope="module")
def console_stack(tmp_path_factory: pytest.TempPathFactory, tiles: Any, server_binaries: None) -> Iterator[Stack]:
    """conftest's stack, with a zone alert and a declared geofence far from the fleet."""
    folder = tmp_path_factory.mktemp("console-geofences")
    config = write_project(folder, devices=FLEET, extra={
        "console": {"tiles": {"url": tiles.url, "attribution": "test tiles by ecokit"}},
        "alerts": {"restricted": {"when": "enter tag:restricted", "severity": "critical"}},
        "geofences": {"reload_interval": 0.3}})
    ring = [[2.0, 48.0], [2.01, 48.0], [2.01, 48.01], [2.0, 48.01], [2.0, 48.0]]
    (folder / "config" / "geofences.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "far-yard", "properties": {"name": "Far yard", "tags": ["depot"]},
         "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    with running_stack(config) as stack, simulating(config, FLEET, seed=12, duration="30m"):
        yield stack


@pytest.fixture(autouse=True)
def no_console_errors(page: ConsolePage) -> Iterator[None]:
    page.console_errors()
    yield
    assert page.console_errors() == [], "the page logged errors in the browser console"


def click_at(page: ConsolePage, x: float, y: float) -> None:
    """A click at (x, y) CSS px from the map's top-left corner."""
    view = page.view()
    ActionChains(page.driver).move_to_element_with_offset(
        page.find("#map"), round(x - view.width / 2), round(y - view.height / 2)).click().perform()


def slowest_vehicle(page: ConsolePage) -> dict[str, Any]:
    vehicles = sorted(page.vehicles(), key=lambda v: (v["speed"] or 0, v["id"]))
    return vehicles[0]


def test_the_declared_geofences_are_listed_and_drawn(page: ConsolePage) -> None:
    page.open("#14/48.005/2.005")
    wait_for("the geofence list", lambda: "Far yard" in page.text("[data-testid=geofence-list]"), timeout=10)
    assert page.text("#g-list .fence-tags") == "depot"
    # Drawn on the map: Leaflet's vector layer holds one path for it.
    assert page.driver.execute_script("return document.querySelectorAll('.leaflet-overlay-pane path').length") >= 1
    assert "Draw a polygon" in page.text("#g-note")


def test_a_polygon_drawn_on_the_map_is_saved_and_fires_events(page: ConsolePage, console_stack: Stack,
                                                              tmp_path: Path) -> None:
    target = slowest_vehicle(page)
    page.open(f"#{ZOOM}/{target['lat']:.6f}/{target['lng']:.6f}")
    view = page.view()
    cx, cy = view.width / 2, view.height / 2
    # Leaflet-geoman's "Draw Polygon" button, then four corners around the vehicle at the
    # map's centre, and the first corner again to close the ring.
    page.find(".leaflet-pm-icon-polygon").click()
    corners = [(cx - 90, cy - 90), (cx + 90, cy - 90), (cx + 90, cy + 90), (cx - 90, cy + 90)]
    for x, y in corners:
        click_at(page, x, y)
        time.sleep(0.2)
    click_at(page, *corners[0])
    wait_for("the name form", lambda: page.find("[data-testid=geofence-form]").is_displayed(), timeout=5)
    page.find("[data-testid=geofence-name]").send_keys("Drawn zone")
    page.find("[data-testid=geofence-tags]").send_keys("restricted, test")
    page.find("[data-testid=geofence-save]").click()
    wait_for("the saved message", lambda: "saved Drawn zone" in page.text("[data-testid=geofence-message]"),
             timeout=10)

    # In the API and in the stack's file, in [lng, lat] order around the vehicle.
    fences = page.get("/api/geofences")["features"]
    (drawn,) = [f for f in fences if f["properties"]["name"] == "Drawn zone"]
    assert drawn["properties"]["tags"] == ["restricted", "test"]
    ring = drawn["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1]
    lngs, lats = [p[0] for p in ring], [p[1] for p in ring]
    assert min(lngs) < target["lng"] < max(lngs)
    assert min(lats) < target["lat"] < max(lats)
    on_disk = json.loads(console_stack.geofences_file.read_text())
    assert drawn["id"] in [f["id"] for f in on_disk["features"]]
    assert "Drawn zone" in page.text("[data-testid=geofence-list]")

    # The processor loads it without a restart; the vehicle's next fix inside is an enter,
    # and the zone is tagged restricted: an alert too. Both reach the page's feed.
    def feed() -> list[dict[str, str | None]]:
        rows = page.driver.find_elements("css selector", "#e-list li.event")
        return [{"kind": r.get_attribute("data-kind"), "vehicle": r.get_attribute("data-vehicle"),
                 "geofence": r.get_attribute("data-geofence"), "type": r.get_attribute("data-type"),
                 "text": r.text} for r in rows]

    mine = wait_for("the enter and the alert in the feed", lambda: [
        e for e in feed() if e["geofence"] == drawn["id"] and e["vehicle"] == target["id"]]
        if len([e for e in feed() if e["geofence"] == drawn["id"]]) >= 2 else None, timeout=30)
    kinds = {(e["kind"], e["type"]) for e in mine}
    assert kinds == {("geofence", "geofence_enter"), ("alert", "firing")}
    enter = next(e for e in mine if e["kind"] == "geofence")
    assert "entered Drawn zone" in str(enter["text"])
    page.driver.save_screenshot(str(tmp_path / "console-geofence.png"))

    # Deleting it from the list removes it from the file, the map and the list.
    row = page.find(f"#g-list li[data-id='{drawn['id']}'] button[data-action='delete']")
    row.click()
    wait_for("the fence gone", lambda: "Drawn zone" not in page.text("[data-testid=geofence-list]"), timeout=10)
    assert drawn["id"] not in [f["id"] for f in page.get("/api/geofences")["features"]]
