"""Errors that refit raises for the user to act on.

Every error names where the problem is (file, rows, column) and what to do about it, so that a
failed unattended run can be fixed from its log alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from refit.redact import redact

MAX_ROWS_SHOWN = 5


def format_rows(rows: Sequence[int]) -> str:
    """Render 1-based row numbers as ``row 4`` or ``rows 4, 9, 12 and 37 more``."""
    rows = list(rows)
    if not rows:
        return ""
    shown = ", ".join(str(r) for r in rows[:MAX_ROWS_SHOWN])
    rest = len(rows) - MAX_ROWS_SHOWN
    word = "row" if len(rows) == 1 else "rows"
    return f"{word} {shown}" + (f" and {rest} more" if rest > 0 else "")


class RefitError(Exception):
    """A problem the user can fix; the message says where and how."""

    def __init__(
        self,
        problem: str,
        *,
        file: str | None = None,
        rows: Sequence[int] = (),
        column: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.problem = problem
        self.file = file
        self.rows = list(rows)
        self.column = column
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.rows:
            where.append(format_rows(self.rows))
        if self.column:
            where.append(f"column '{self.column}'")
        text = (", ".join(where) + ": " if where else "") + self.problem
        if self.fix:
            text += f". Fix: {self.fix}"
        return redact(text)


class DataError(RefitError):
    """Input data that cannot be trained or evaluated on as it is."""


class ConfigError(RefitError):
    """A configuration file or flag that does not describe a valid run."""


class CheckpointError(RefitError):
    """A model checkpoint that refit will not load."""


class RegistryError(RefitError):
    """The registry is missing, locked by another run, or does not hold this model."""


class TrainingError(RefitError):
    """Training stopped: a non-finite loss, a timeout, or a crash of the training process."""
