"""Ablation of the KD loss at one student factor, reusing the benchmark's teachers.

Run ``benchmarks/resolution_kd.py`` first; this trains only KD students (labelled set) against
its per-seed teachers, with one loss setting changed at a time, and prints a markdown table
next to that benchmark's baseline and paper-setting KD runs at the same factor.

    python benchmarks/resolution_kd_ablation.py --data ../shared/data/ebhi_seg --factor 8
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from resolution_kd import ROOT, summary_table

from medistill.pipelines import load_recipe, run_recipe

PAPER = "kd: paper (T=4, soft + pixel)"
VARIANTS = {
    "T=2": ["kd.temperature=2"],
    "soft only (no pixel loss)": ["kd.pixel_weight=0"],
    "soft + pixel + labels (CE weight 1)": ["kd.label_weight=1"],
}


def wait_for(path: Path) -> None:
    while not path.is_file():
        time.sleep(30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("MEDISTILL_EBHI", "../shared/data/ebhi_seg"))
    p.add_argument("--teachers", default="benchmarks/out/resolution_kd")
    p.add_argument("--out", default="benchmarks/out/resolution_kd_ablation")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--teacher-factor", type=float, default=2.0)
    p.add_argument("--factor", type=float, default=8.0)
    p.add_argument("--epochs", type=int, default=20)
    args = p.parse_args()

    runs = []
    for seed in args.seeds:
        teacher = Path(args.teachers) / f"seed{seed}" / "teacher" / "best.pt"
        wait_for(teacher.parent / "train_done.json")  # may run beside the main benchmark
        for i, (label, extra) in enumerate(VARIANTS.items()):
            recipe = load_recipe(ROOT / "recipes" / "resolution_kd.yaml", [
                f"data.root={args.data}", "aux_data=[]", "runs=[kd]",
                f"teacher_checkpoint={teacher}", f"teacher_factor={args.teacher_factor}",
                f"student_factors=[{args.factor}]", f"seeds=[{seed}]",
                f"train.epochs={args.epochs}", "train.device=cpu", *extra,
            ])
            out = Path(args.out) / f"variant{i}" / f"seed{seed}"
            result = run_recipe(recipe, out, resume=True, progress=False)
            for r in result["runs"]:
                if r["role"] == "kd":
                    runs.append({**r, "role": label})
    # the paper's setting is the main benchmark's KD run (same teacher, seed and settings)
    wait_for(Path(args.teachers) / "results.json")
    main_runs = json.loads((Path(args.teachers) / "results.json").read_text())["runs"]
    factor = args.teacher_factor * args.factor
    runs += [{**r, "role": PAPER} for r in main_runs
             if r["role"] == "kd" and r["factor"] == factor and r["seed"] in args.seeds]
    runs += [{**r, "role": "baseline"} for r in main_runs
             if r["role"] == "baseline" and r["factor"] == factor and r["seed"] in args.seeds]
    (Path(args.out) / "runs.json").write_text(json.dumps(runs, indent=2))
    print(summary_table(runs, order=["baseline", PAPER, *VARIANTS]))


if __name__ == "__main__":
    main()
