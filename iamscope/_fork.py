"""Fork safety (gunicorn ``--preload``): one way to run a hook in a forked child."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import TypeVar

__all__ = ["after_fork"]

_T = TypeVar("_T")


def after_fork(owner: _T, hook: Callable[[_T], None]) -> None:
    """Run ``hook(owner)`` in a forked child: threads do not survive fork, and locks they
    held stay held. ``owner`` is held weakly: a closed, collected object is not kept alive
    by the hook."""
    ref = weakref.ref(owner)

    def child() -> None:
        alive = ref()
        if alive is not None:
            hook(alive)

    os.register_at_fork(after_in_child=child)
