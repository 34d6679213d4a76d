"""MQTT plumbing shared by every part of ecokit that talks to a broker.

``target`` (where a client connects and as whom: :class:`BrokerTarget`, :class:`ClientAuth`,
broker URLs), ``tls`` (one client TLS context for every client and service), ``loop``
(many paho clients on one asyncio loop: the simulator and the bench publishers), ``fast``
(:class:`FastMqtt`, the hand-written high-rate client: bridge intake, replay, bench
subscribers). Nothing here knows about a stack; ``ecokit.clients`` adds that.
"""
