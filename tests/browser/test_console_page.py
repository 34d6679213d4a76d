"""The console page in a real headless Chromium against a real stack and simulated vehicles.

Each test reads what a person sees: DOM text, the map canvas's pixels at the place a vehicle
must be drawn (computed from the API's positions and the view in the address bar), and the
browser console, which must stay free of errors (CSP violations included).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from browser_support import FLEET, ConsolePage, TileServer, View
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys

from ecokit.stack import Stack
from ecokit.testing.waiting import wait_for


@pytest.fixture(autouse=True)
def no_console_errors(page: ConsolePage) -> Iterator[None]:
    page.console_errors()  # what earlier tests left
    yield
    assert page.console_errors() == [], "the page logged errors in the browser console"


def set_checkbox(page: ConsolePage, css: str, checked: bool) -> None:
    box = page.find(css)
    if box.is_selected() != checked:
        box.click()


def painted_fleet(page: ConsolePage, vehicles: list[dict[str, Any]], view: View, radius: float = 8) -> list[str]:
    """Ids of the vehicles in view NOT drawn in their status colour where the API says they are."""
    missing = []
    for status in {v["status"] for v in vehicles}:
        group = [v for v in vehicles if v["status"] == status]
        points = [view.point(v["lat"], v["lng"]) for v in group]
        seen = page.painted(points, page.status_color(status), radius=radius)
        missing += [v["id"] for v, p, ok in zip(group, points, seen, strict=True) if view.inside(*p) and not ok]
    return missing


def markers_in_place(page: ConsolePage) -> bool:
    """Every vehicle in view (but one: two markers may overlap) drawn where the API says it is."""
    return len(painted_fleet(page, page.vehicles(), page.view())) <= 1


def click_map_at(page: ConsolePage, x: float, y: float) -> None:
    view = page.view()
    ActionChains(page.driver).move_to_element_with_offset(
        page.find("#map"), round(x - view.width / 2), round(y - view.height / 2)).click().perform()


def test_markers_appear_where_the_vehicles_are_and_move(page: ConsolePage) -> None:
    page.open()
    set_checkbox(page, "#opt-cluster", False)
    wait_for(f"{FLEET} markers drawn",
             lambda: page.attr("canvas.vehicle-canvas", "data-drawn") == str(FLEET), timeout=10)
    # The fitted fleet view: every vehicle drawn in its status colour at its position.
    wait_for("markers at the API's positions", lambda: markers_in_place(page), timeout=10)

    # Zoomed in on the fastest vehicle: a marker is seen at two places far apart (any vehicle in
    # view counts: the fastest may stop at a light or for a delivery).
    fastest = max((v for v in page.vehicles() if v["status"] == "moving"), key=lambda v: v["speed"] or 0)
    page.open(f"#15/{fastest['lat']:.6f}/{fastest['lng']:.6f}")
    view = page.view()
    seen_at: dict[str, list[tuple[float, float]]] = {}

    def moved() -> bool:
        vehicles = [v for v in page.vehicles() if view.inside(*view.point(v["lat"], v["lng"]))]
        for status in {v["status"] for v in vehicles}:
            group = [v for v in vehicles if v["status"] == status]
            points = [view.point(v["lat"], v["lng"]) for v in group]
            for v, p, ok in zip(group, points, page.painted(points, page.status_color(status), radius=14), strict=True):
                if ok:
                    seen_at.setdefault(v["id"], []).append(p)
        return any(math.dist(ps[0], p) > 40 for ps in seen_at.values() for p in ps)

    wait_for("a marker drawn at two places 40 px apart", moved, timeout=45, interval=0.5)
    assert seen_at, "no vehicle in view was drawn where the API says it is"


def test_counters_match_the_api(page: ConsolePage) -> None:
    page.open()
    keys = ("total", "active", "moving", "idle", "parked", "offline")

    def same() -> bool:
        shown = {k: page.number(f"#c-{k}") for k in keys}
        api = page.get("/api/stats")["vehicles"]
        return all(shown[k] == api[k] for k in keys)

    wait_for("the sidebar counters to equal GET /api/stats", same, timeout=15, interval=0.3)
    assert page.number("#c-total") == FLEET
    assert page.number("#c-active") == FLEET
    rate = page.number("#c-rate")
    assert rate is not None
    assert 0.5 * FLEET <= rate <= 2 * FLEET, f"msg/s shown: {rate}"
    assert re.fullmatch(r"[\d.,]+ m?s", page.text("#c-latency")), page.text("#c-latency")
    assert page.text("#shown-count") == page.text("#known-count") == str(FLEET)
    # The pipeline panel: the bridge is up and writing.
    wait_for("the pipeline panel to show the bridge up with a rate",
             lambda: page.text("#p-up") == "up" and page.number("#p-rate"), timeout=10)


def test_filters_and_search(page: ConsolePage) -> None:
    page.open()
    set_checkbox(page, "#opt-cluster", False)
    set_checkbox(page, 'input[name="status"][value="moving"]', False)

    def filtered(expect: Any) -> bool:
        want = sum(1 for v in page.vehicles() if expect(v))
        return page.text("#shown-count") == str(want) and page.attr("canvas.vehicle-canvas", "data-drawn") == str(want)

    wait_for("only non-moving vehicles shown", lambda: filtered(lambda v: v["status"] != "moving"), timeout=10)
    set_checkbox(page, 'input[name="status"][value="moving"]', True)

    slider = page.find("#min-fuel")
    slider.click()
    slider.send_keys(Keys.HOME, *([Keys.ARROW_RIGHT] * 10))  # 10 steps of 5 %
    assert page.text("#min-fuel-out") == "50 %"
    wait_for("only vehicles with fuel >= 50 %", lambda: filtered(lambda v: (v["fuel"] or 0) >= 50), timeout=10)
    slider.send_keys(Keys.HOME)
    wait_for("the whole fleet shown again", lambda: page.text("#shown-count") == str(FLEET), timeout=5)

    search = page.find("#search")
    search.send_keys("0003")
    result = wait_for("vehicle-0003 in the search results",
                      lambda: page.driver.find_elements("css selector", '#search-results [data-id="vehicle-0003"]'),
                      timeout=5)
    result[0].click()
    wait_for("its details", lambda: page.attr("#details", "data-vehicle") == "vehicle-0003", timeout=5)
    # The map flies to it (animated): the address bar then holds the view and the selection.
    wait_for("the view on vehicle-0003 in the address bar",
             lambda: page.view().zoom >= 15 and page.driver.execute_script("return location.hash")
             .endswith("/vehicle-0003"), timeout=5)
    page.find("#d-close").click()
    wait_for("the details closed", lambda: page.attr("#details", "hidden") is not None, timeout=5)


def test_clusters_split_when_clicked(page: ConsolePage) -> None:
    vehicles = page.vehicles()
    lat = sum(v["lat"] for v in vehicles) / len(vehicles)
    lng = sum(v["lng"] for v in vehicles) / len(vehicles)
    page.open(f"#4/{lat:.5f}/{lng:.5f}")
    set_checkbox(page, "#opt-cluster", True)
    wait_for("the fleet drawn as clusters at zoom 4",
             lambda: int(page.attr("canvas.vehicle-canvas", "data-clusters") or 0) >= 1, timeout=10)
    x, y = page.view().point(lat, lng)
    click_map_at(page, x, y)
    wait_for("the map to zoom in on the clicked cluster", lambda: page.view().zoom > 10, timeout=10)


def test_click_opens_details_with_history_chart_and_shadow(page: ConsolePage) -> None:
    still = sorted(page.vehicles(), key=lambda v: v["speed"] or 0)[0]
    page.open(f"#15/{still['lat']:.6f}/{still['lng']:.6f}")
    set_checkbox(page, "#opt-cluster", False)

    def clicked() -> bool:
        v = page.get(f"/api/vehicles/{still['id']}")
        click_map_at(page, *page.view().point(v["lat"], v["lng"]))
        return bool(page.attr("#details", "data-vehicle") == still["id"])

    wait_for(f"a click on {still['id']}'s marker to open its details", clicked, timeout=15, interval=1)
    assert page.text("#d-title") == still["id"]
    assert page.text('#d-fields dd[data-field="position"]') != "—"

    # The chart: seeded from InfluxDB's last hour, then live (the legend follows the newest fix).
    wait_for("the history loaded", lambda: page.attr("#d-chart-note", "data-state") == "ready", timeout=15)
    assert int(page.attr("#d-chart-note", "data-points") or 0) > 0, page.text("#d-chart-note")
    assert page.driver.find_elements("css selector", "#d-chart canvas"), "no chart drawn"
    legend_time = "#d-chart .u-legend .u-series:first-child .u-value"
    first = wait_for("the chart legend's latest time",
                     lambda: page.text(legend_time) not in ("", "—") and page.text(legend_time), timeout=10)
    wait_for("a live point added to the chart", lambda: page.text(legend_time) != first, timeout=10)
    assert "km/h" in page.text("#d-chart .u-legend .u-series:nth-child(2) .u-value")

    # The device shadow the simulator reports.
    wait_for("the shadow's reported state",
             lambda: "publish_interval" in page.text('#d-shadow .shadow-part[data-part="reported"] pre'), timeout=15)


def command_row(page: ConsolePage, command: str, state: str) -> str | None:
    return page.attr(f'#d-cmd-list li[data-command="{command}"][data-state="{state}"]', "data-command-id")


def test_command_buttons_show_their_acks_in_place(page: ConsolePage) -> None:
    vehicle = "vehicle-0005"
    view = next(v for v in page.vehicles() if v["id"] == vehicle)
    page.open(f"#15/{view['lat']:.6f}/{view['lng']:.6f}/{vehicle}")
    wait_for("the details from the URL", lambda: page.attr("#details", "data-vehicle") == vehicle, timeout=10)
    wait_for("the command buttons",
             lambda: page.driver.find_elements("css selector", 'button[data-command="ping"]:enabled'), timeout=10)

    page.find('button[data-command="ping"]').click()
    ping = wait_for("the ping's ack in place", lambda: command_row(page, "ping", "succeeded"), timeout=20)
    assert page.get(f"/api/commands/{ping}")["state"] == "succeeded"
    assert page.text(f'#d-cmd-list li[data-command-id="{ping}"] .cmd-detail'), "no ack detail shown"

    page.find('input.cmd-arg[data-arg="seconds"]').send_keys("1")
    page.find('button[data-command="set_interval"]').click()
    wait_for("set_interval acked", lambda: command_row(page, "set_interval", "succeeded"), timeout=20)

    # engine_stop asks for a second click; the first one sends nothing.
    stop = page.find('button[data-command="engine_stop"]')
    stop.click()
    assert stop.text == "confirm engine stop"
    time.sleep(1)
    assert not page.driver.find_elements("css selector", '#d-cmd-list li[data-command="engine_stop"]')
    stop.click()
    wait_for("engine_stop acked", lambda: command_row(page, "engine_stop", "succeeded"), timeout=20)
    wait_for(f"{vehicle} shown parked", lambda: page.text("#d-status") == "parked", timeout=30)
    page.find('button[data-command="engine_start"]').click()
    wait_for("engine_start acked", lambda: command_row(page, "engine_start", "succeeded"), timeout=20)


def test_page_recovers_after_the_console_restarts(page: ConsolePage, console_stack: Stack) -> None:
    page.open()
    set_checkbox(page, "#opt-cluster", False)
    states: set[str] = set()
    errors: list[BaseException] = []

    def restart() -> None:
        try:
            console_stack.restart(["console"])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=restart)
    thread.start()
    while thread.is_alive():
        state = page.attr("body", "data-connection")
        if state:
            states.add(state)
        time.sleep(0.1)
    thread.join()
    assert not errors, errors
    assert "reconnecting" in states, f"the page never said it was reconnecting (saw {states})"
    page.wait_live(timeout=40)
    assert page.attr("#banner", "hidden") is not None, page.text("#banner")
    # The page follows the fleet again: markers where the API says, counters from new stats.
    wait_for("markers at the API's positions after the restart", lambda: markers_in_place(page), timeout=15)
    wait_for("counters after the restart", lambda: page.number("#c-total") == FLEET, timeout=10)
    # While the console was down the browser logged the refused connections (the stream's and
    # the token check's when a reconnect failed); nothing else.
    assert page.console_errors(allow=lambda m: "/stream" in m or "ERR_CONNECTION_REFUSED" in m) == []


def test_tiles_load_and_without_them_markers_stay_with_a_notice(page: ConsolePage, tiles: TileServer) -> None:
    page.open()
    wait_for("map tiles from the configured tile server",
             lambda: page.driver.find_elements("css selector", "img.leaflet-tile-loaded"), timeout=15)
    assert tiles.requests
    assert "test tiles by ecokit" in page.text(".leaflet-control-attribution")
    assert page.attr("#tile-notice", "hidden") is not None

    port = int(tiles.url.split(":")[2].split("/")[0])
    tiles.stop()
    try:
        page.open()
        wait_for("the tiles-unreachable notice",
                 lambda: page.attr("#tile-notice", "data-state") == "unreachable", timeout=20)
        assert "unreachable" in page.text("#tile-notice")
        set_checkbox(page, "#opt-cluster", False)
        wait_for("markers on the plain background", lambda: markers_in_place(page), timeout=10)
        # The failed tile requests are in the browser console; nothing else is.
        assert page.console_errors(allow=lambda message: f"127.0.0.1:{port}/" in message) == []
    finally:
        tiles.start(port)
