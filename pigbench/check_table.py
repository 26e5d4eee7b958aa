"""The pass/fail table shared by the conformance commands (``check-evaluator``, ``check-dataset``).

A :class:`CheckReport` holds one :class:`CheckResult` per check, in table order; it is ``ok``
when every check passed or does not apply ("skip"). ``table()`` is what the commands print.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal, Optional

Status = Literal["pass", "fail", "skip", "not run"]


@dataclass
class CheckResult:
    name: str
    status: Status
    detail: str


@dataclass
class CheckReport:
    """The checks' results on ``subject`` (a plug-in's name), in table order."""

    subject: str
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status in ("pass", "skip") for c in self.checks)

    def status(self, name: str) -> Status:
        return next(c.status for c in self.checks if c.name == name)

    def detail(self, name: str) -> str:
        return next(c.detail for c in self.checks if c.name == name)

    def table(self) -> str:
        width = max(len(c.name) for c in self.checks)
        lines = [f"{'CHECK'.ljust(width)}  RESULT   DETAIL"]
        lines += [f"{c.name.ljust(width)}  {c.status.upper().ljust(7)}  {c.detail}" for c in self.checks]
        counts = Counter(c.status for c in self.checks)
        summary = ", ".join(f"{counts[s]} {s}" for s in ("pass", "fail", "not run", "skip") if counts[s])
        verdict = "conforms" if self.ok else "DOES NOT CONFORM"
        return "\n".join(lines + ["", f"{self.subject}: {verdict} ({summary})"])


def short(text: Optional[str], n: int = 120) -> str:
    """``text`` on one line, cut to ``n`` characters."""
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 3] + "..."


def more(items: list, shown: int) -> str:
    """" (and N more)" when ``items`` has more than the ``shown`` first ones."""
    return f" (and {len(items) - shown} more)" if len(items) > shown else ""
