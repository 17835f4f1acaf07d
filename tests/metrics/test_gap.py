"""``gap_closed`` (moved from the graph-relation pipeline into metrics): no ratio over a zero or
negative teacher-baseline gap."""

import pytest

from medistill.metrics.gap import gap_closed


def run(role, seed, aji):
    return {"role": role, "seed": seed, "metrics": {"aji": {"value": aji}}}


def test_mean_over_the_seeds_that_have_a_gap():
    runs = [run("teacher", 0, 0.6), run("no_kd", 0, 0.4), run("full", 0, 0.5),
            run("teacher", 1, 0.5), run("no_kd", 1, 0.1), run("full", 1, 0.4),
            run("intra", 1, 0.1)]
    gap = gap_closed(runs)
    assert gap["full"] == pytest.approx((0.5 + 0.75) / 2)
    assert gap["intra"] == pytest.approx(0.0)


@pytest.mark.parametrize("teacher", [0.0, 0.3])  # below the baseline, or equal to it
def test_no_ratio_over_a_non_positive_gap(teacher):
    # the case: teacher 0, student far below its baseline (it once printed 99.4 %)
    runs = [run("teacher", 0, teacher), run("no_kd", 0, 0.3), run("full", 0, 0.003)]
    assert gap_closed(runs) == {"intra": None, "full": None}


def test_the_only_teacher_serves_every_seed():
    runs = [run("teacher", 0, 0.5), run("no_kd", 3, 0.3), run("full", 3, 0.4)]
    assert gap_closed(runs)["full"] == pytest.approx(0.5)


def test_the_report_shows_a_dash_without_a_gap_and_the_old_path_works():
    from medistill.pipelines.graph_relation import gap_closed as old
    from medistill.reports.instance import instance_sections

    assert old is gap_closed
    runs = [{**run("teacher", 0, 0.0), "efficiency": {}}, run("no_kd", 0, 0.3),
            run("full", 0, 0.003)]
    gap_table = instance_sections(runs)[1]["table"]
    assert gap_table["rows"] == [["full", "–"]]
