"""The fleet console: a live web map, an HTTP API and a WebSocket stream (docs/console.md).

    state      last-known vehicle state, bounded (pure)
    lifecycle  a command's life (pure)
    hub        the /stream WebSocket: snapshot, coalesced diffs, per-client backpressure
    commands   SQLite store, engine and paho channel for commands
    history    InfluxDB history, downsampled (``downsample`` is pure)
    stats      message rate, latency window, the bridge's figures
    intake     MQTT → state, per message, dead letters
    app        the FastAPI app: auth, errors, security headers, routes (``routes/``)
    service    wiring and ``python -m ecokit.console``
"""
