"""The request's decision as a ContextVar: set by the middlewares, read by
:func:`iamscope.current` and by the ownership span processor. Its own module so that
telemetry and enforcement can both reach it without importing each other."""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from iamscope.enforce import Decision

request_decision: contextvars.ContextVar[Decision | None] = contextvars.ContextVar(
    "iamscope_decision", default=None
)
