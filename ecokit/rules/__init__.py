"""Rules: one spec (ecokit.yaml `rules`), two engines (the ecokit bridge and EMQX rule SQL)."""

from ecokit.rules.engine import (
    BAD_VALUE,
    MISSING,
    NOT_JSON,
    OUT_OF_RANGE,
    REASONS,
    WRONG_TYPE,
    Message,
    Outcome,
    Point,
    Rejection,
    RuleEngine,
)

__all__ = [
    "BAD_VALUE",
    "MISSING",
    "NOT_JSON",
    "OUT_OF_RANGE",
    "REASONS",
    "WRONG_TYPE",
    "Message",
    "Outcome",
    "Point",
    "Rejection",
    "RuleEngine",
]
