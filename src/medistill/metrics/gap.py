"""The fraction of the teacher-student gap a distilled student closes, per role and seed."""

from __future__ import annotations

import statistics
from typing import Any


def gap_closed(runs: list[dict[str, Any]], metric: str = "aji") -> dict[str, float | None]:
    """Per distilled role: mean over seeds of ``(kd - no_kd) / (teacher - no_kd)`` on
    ``metric`` (the teacher of the same seed, or the only teacher).

    A seed whose teacher is not better than its no-KD student has no gap to close and is left
    out (a ratio over a zero or negative gap is meaningless: it once printed "99.4 % of the gap
    closed" for a student far below its baseline); ``None`` when no seed has a gap."""
    def value(r: dict[str, Any]) -> float:
        return float(r["metrics"][metric]["value"])

    teachers = {r["seed"]: value(r) for r in runs if r["role"] == "teacher"}
    plain = {r["seed"]: value(r) for r in runs if r["role"] == "no_kd"}
    out: dict[str, float | None] = {}
    for role in ("intra", "full"):
        fractions = []
        for r in runs:
            if r["role"] != role or r["seed"] not in plain:
                continue
            t = teachers.get(r["seed"], next(iter(teachers.values()), None))
            if t is None or t <= plain[r["seed"]]:
                continue
            fractions.append((value(r) - plain[r["seed"]]) / (t - plain[r["seed"]]))
        out[role] = statistics.fmean(fractions) if fractions else None
    return out
