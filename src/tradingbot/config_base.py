"""The base of every config model (kept apart so that the sections in other modules and
:mod:`tradingbot.config` share it without an import cycle)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Base for every config model: unknown keys are errors, assignments are validated."""

    # defer_build: a schema is built when first used, not at import (start-up of every command)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, defer_build=True)
