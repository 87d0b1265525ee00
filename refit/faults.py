"""Crash points for fault-injection tests.

Setting ``REFIT_CRASH_AT=<point>`` makes the process die on the spot (``os._exit``, no cleanup,
no ``finally`` blocks) when it reaches that point, as a power cut or an OOM kill would. The
tests use it to show that a crash between any two steps leaves the registry whole. Unset, it
costs one dictionary lookup.
"""

from __future__ import annotations

import os

POINTS = (
    "after-validation",
    "after-training",
    "after-evaluation",
    "while-registering",
    "while-switching-alias",
)
EXIT_CODE = 86


def crash_point(name: str) -> None:
    if os.environ.get("REFIT_CRASH_AT") == name:
        os._exit(EXIT_CODE)
