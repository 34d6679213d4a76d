"""What every section of ecokit.yaml shares: the base model and the section-level error.

Every section forbids unknown keys (a typo fails at load time with its key path) and is
frozen (one validated configuration is passed down, never changed on the way).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class KeyedValueError(ValueError):
    """A validation error about particular keys of the section that raised it.

    ``keys`` are dotted paths relative to that section; the loader reports the error at
    the one the user set (so its file or variable is named), not at the section.
    """

    def __init__(self, message: str, *keys: str) -> None:
        super().__init__(message)
        self.keys = keys


class Section(BaseModel):
    """A section (or sub-section) of ecokit.yaml. Keys spelled like Python keywords (``from``)
    are declared with an alias and may be given by either name."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# A TCP port; 0 is refused because every port must be known before anything starts.
Port = Annotated[int, Field(ge=1, le=65535)]
