"""Ablation of the KD loss at one student factor, reusing the benchmark's teachers.

Run ``benchmarks/resolution_kd.py`` first; this trains only KD students (labelled set) against
its per-seed teachers, with one loss setting changed at a time, and prints a markdown table.

    python benchmarks/resolution_kd_ablation.py --data ../shared/data/ebhi_seg --factor 8
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from resolution_kd import ROOT, summary_table

from medistill.pipelines import load_recipe, run_recipe

VARIANTS = {
    "paper (T=4, soft + pixel)": [],
    "T=2": ["kd.temperature=2"],
    "soft only (no pixel loss)": ["kd.pixel_weight=0"],
    "soft + pixel + labels (CE weight 1)": ["kd.label_weight=1"],
}


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
    for i, (label, extra) in enumerate(VARIANTS.items()):
        for seed in args.seeds:
            teacher = Path(args.teachers) / f"seed{seed}" / "teacher" / "best.pt"
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
    (Path(args.out) / "runs.json").write_text(json.dumps(runs, indent=2))
    print(summary_table(runs, order=list(VARIANTS)))


if __name__ == "__main__":
    main()
