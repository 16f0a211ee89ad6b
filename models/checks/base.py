"""What every check returns: a verdict, the numbers behind it and a short summary."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

__all__ = ["AGREES", "DISAGREES", "UNRELIABLE", "CheckResult"]

AGREES, UNRELIABLE, DISAGREES = "agrees", "unreliable here", "DISAGREES"


@dataclass
class CheckResult:
    """The outcome of a check: a verdict, the numbers behind it and a short summary.

    ``details`` holds machine-readable extras (per-form status, maxima) for reports and JSON.
    """

    name: str
    passed: bool
    table: pd.DataFrame
    text: str
    details: dict = field(default_factory=dict)

    @property
    def verdicts(self) -> dict[str, str]:
        """Per-form verdict text (agrees / unreliable here / DISAGREES), when the check has one."""
        status = self.details.get("status", {})
        return {k: (v if isinstance(v, str) else str(v.get("status", v))) for k, v in status.items()}
