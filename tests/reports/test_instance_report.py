"""Instance report table: VOI in the graph-relation authors' convention plus the
background-included pair."""

from __future__ import annotations

from medistill.reports.instance import HEADERS, instance_blocks
from medistill.reports.report import Table


def _m(v: float) -> dict:
    return {"value": v, "low": v, "high": v}


def test_instance_table_has_both_voi_conventions():
    metrics = {k: _m(0.5) for k in ("aji", "pq", "dq", "sq", "arand")}
    metrics |= {"voi_split": _m(0.25), "voi_merge": _m(0.125), "voi_split_bg": _m(1.5),
                "voi_merge_bg": _m(0.75)}
    run = {"name": "s", "role": "student", "seed": 0, "n": 3, "metrics": metrics,
           "efficiency": {"gflops": 1.0, "params": 10, "latency_ms": 2.0}}
    table = next(b for b in instance_blocks([run]) if isinstance(b, Table))
    row = dict(zip(table.headers, table.rows[0], strict=True))
    assert table.headers == HEADERS
    assert row["VOI split"] == "0.250" and row["VOI merge"] == "0.125"
    assert row["VOI split / merge, bg incl."] == "1.500 / 0.750"
    old = {**run, "metrics": {k: v for k, v in metrics.items() if not k.endswith("_bg")}}
    table = next(b for b in instance_blocks([old]) if isinstance(b, Table))
    assert dict(zip(table.headers, table.rows[0], strict=True))[
        "VOI split / merge, bg incl."] == "– / –"  # records written before the column
