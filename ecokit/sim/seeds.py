"""Small deterministic random streams, one per vehicle and purpose.

``random.Random`` keeps 2.5 KB of Mersenne Twister state; thousands of vehicles each
holding a couple of them would spend most of their memory on it. SplitMix64 keeps one
integer and is more than random enough for dwell times and schedule jitter.
"""

from __future__ import annotations

import hashlib

_MASK = (1 << 64) - 1


def seed_of(*parts: object) -> int:
    """A 64-bit seed from any parts (stable across processes and Python versions)."""
    text = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big")


class SplitMix64:
    """The SplitMix64 generator (Steele, Lea, Flood 2014) with ``random()`` and ``uniform()``."""

    __slots__ = ("state",)

    def __init__(self, seed: int) -> None:
        self.state = seed & _MASK

    def next_u64(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return z ^ (z >> 31)

    def random(self) -> float:
        """A float in [0, 1)."""
        return (self.next_u64() >> 11) * (1.0 / (1 << 53))

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.random()
