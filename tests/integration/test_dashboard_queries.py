"""Every InfluxQL query of the committed dashboards runs on a real InfluxDB 1.x and finds
the data the rules write (the same v1 API serves InfluxDB 2 and 3)."""

from __future__ import annotations

import time

from ecokit.dashboards import influxql_queries
from ecokit.resources import dashboards_dir
from ecokit.stack import Stack
from ecokit.store.influx import InfluxV1


def test_dashboard_queries_run_on_influxdb_and_return_the_fleet(running: Stack) -> None:
    now = time.time_ns()
    lines = []
    for i, vehicle in enumerate(("vehicle-0001", "vehicle-0002", "vehicle-0003")):
        for seq in range(5):
            ts = now - (60 - seq * 10) * 1_000_000_000
            lines.append(f'telemetry,vehicle={vehicle} lat={48.1 + i},lng={11.5 + i},speed={30.0 * i},'
                         f'heading=90,fuel=70,odometer={1000 + seq},engine=true,seq={seq}i,'
                         f'status="{"moving" if i else "parked"}" {ts}')
        lines.append(f'status,vehicle={vehicle} state="online",source="device" {now - 30_000_000_000}')
        lines.append(f'archive,topic=fleet/{vehicle}/telemetry payload="{{}}",qos=1i,retain=false {now}')
    with InfluxV1(running.influx_endpoint("writer")) as writer:
        writer.write(lines)
    results = {}
    with InfluxV1(running.influx_endpoint("reader")) as reader:
        for query in influxql_queries(dashboards_dir()):
            results[query] = list(reader.rows(query))  # raises on any InfluxQL error
    positions = next(rows for q, rows in results.items() if 'last("lat") AS "lat"' in q)
    assert sorted(r["vehicle"] for r in positions) == ["vehicle-0001", "vehicle-0002", "vehicle-0003"]
    assert all(r["lat"] is not None and r["lng"] is not None for r in positions)
    active = next(rows for q, rows in results.items() if q.startswith('SELECT count("seq") FROM (SELECT last'))
    assert active[0]["count"] == 3
    moving = next(rows for q, rows in results.items() if "WHERE \"speed\" > 0" in q)
    assert moving[0]["count"] == 2
    vehicles = next(rows for q, rows in results.items() if q.startswith("SHOW TAG VALUES") and "vehicle" in q)
    assert [r["value"] for r in vehicles] == ["vehicle-0001", "vehicle-0002", "vehicle-0003"]
