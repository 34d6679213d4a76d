"""Mosquitto's ``$SYS`` tree as Prometheus metrics: the default broker made observable.

No maintained Mosquitto exporter is packaged in Debian (``apt-cache search mosquitto
exporter`` finds only prometheus-mqtt-exporter, a generic JSON-payload bridge that cannot
name ``$SYS``'s many ``1min`` leaves apart), so ecokit runs this small service: one MQTT
subscriber to ``$SYS/#`` as ``ecokit-brokerstats`` (it may read ``$SYS`` and nothing else),
serving ``/metrics`` with ``mosquitto_*`` families. ``sys`` maps topics to metrics (pure),
``service`` is the process. EMQX exports its own (``/api/v5/prometheus/stats``).
"""
