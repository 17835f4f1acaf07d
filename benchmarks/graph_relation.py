"""Benchmark: graph relation distillation (issue #5) for nuclei instance segmentation on MoNuSeg.

Runs ``recipes/graph_relation_monuseg.yaml`` sized for a shared 2-core CPU: images rescaled
to 20x (``--scale 0.5``), 96 px training crops, the ResUNet embedding teacher with widths
32/64/128/256/512 and students with widths 4/8/16/32/64; teacher, student without KD, student +
intra-image AGD/IGD, student + intra + inter-image (memory bank), over several seeds (the
teacher trained once with the first seed by default: ``--shared-teacher``). Prints a markdown
table (test AJI / PQ with 95% bootstrap CIs over the 14 test images per seed, mean ± sd over
seeds, VOI split / merge, ARAND, params / GFLOPs / CPU latency, student / teacher ratios, the
fraction of the teacher-student AJI gap closed) for RESULTS.md.

    python benchmarks/graph_relation.py --data ../shared/data/monuseg --seeds 0 1 2

Everything is a flag (GPU users: ``--scale 1 --crop-size 256 --crops-per-image 16
--epochs 100 --teacher-epochs 100 --no-shared-teacher --device cuda``). Interrupted runs
continue where they stopped. ``--summarize`` only prints the table of the runs already
evaluated in ``--out`` (also usable while the benchmark is still running).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["teacher", "no_kd", "intra", "full"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/monuseg", help="MoNuSeg root")
    p.add_argument("--out", default="benchmarks/out/graph_relation")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs", nargs="+", default=["no_kd", "intra", "full"])
    p.add_argument("--scale", type=float, default=0.5)
    p.add_argument("--crop-size", type=int, default=96)
    p.add_argument("--crops-per-image", type=int, default=4)
    p.add_argument("--teacher-widths", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    p.add_argument("--student-widths", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--teacher-epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--postprocess", default="auto", choices=["auto", "mutex", "watershed"])
    p.add_argument("--n-resamples", type=int, default=10000)
    p.add_argument("--latency-size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--shared-teacher", action=argparse.BooleanOptionalAction, default=True,
                   help="one teacher (first seed) for every seed's students")
    p.add_argument("--set", dest="overrides", nargs="*", default=[], help="extra key=value")
    p.add_argument("--summarize", action="store_true")
    p.add_argument("--paired-latency", action="store_true",
                   help="only re-time the teacher and a student alternately (1 thread) and "
                        "write <out>/latency.json (fairer ratios on a loaded machine)")
    p.add_argument("--latency-rounds", type=int, default=7)
    args = p.parse_args()
    out = Path(args.out)
    if args.summarize:
        print(summary_table(collect(out), out))
        return
    if args.paired_latency:
        print(json.dumps(paired_latency(out, args.latency_size, args.latency_rounds), indent=2))
        return

    import torch

    from medistill.pipelines import load_recipe, run_recipe

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [
        f"data.root={args.data}",
        f"data.scale={args.scale}",
        f"data.crop_size={args.crop_size}",
        f"data.crops_per_image={args.crops_per_image}",
        f"teacher.kwargs={{widths: {json.dumps(args.teacher_widths)}}}",
        f"student.kwargs={{widths: {json.dumps(args.student_widths)}}}",
        f"runs={json.dumps(args.runs)}",
        f"seeds={json.dumps(args.seeds)}",
        f"shared_teacher={'true' if args.shared_teacher else 'false'}",
        f"train.epochs={args.epochs}",
        f"train.lr={args.lr}",
        f"train.batch_size={args.batch_size}",
        f"train.device={args.device}",
        "train.tensorboard=false",
        f"stages.teacher={{epochs: {args.teacher_epochs}}}",
        f"postprocess.method={args.postprocess}",
        f"eval.n_resamples={args.n_resamples}",
        f"eval.latency_size={args.latency_size}",
        "eval.latency_repeats=10",
        "eval.threads=1",
        *args.overrides,
    ]
    recipe = load_recipe(ROOT / "recipes" / "graph_relation_monuseg.yaml", overrides)
    resume = (out / "recipe.json").exists()
    run_recipe(recipe, out, resume=resume, progress=False)
    paired_latency(out, args.latency_size, args.latency_rounds)
    print(summary_table(collect(out), out))


def paired_latency(out: Path, size: int, rounds: int) -> dict:
    """Teacher and student CPU latency (1 thread, batch 1) measured in alternating rounds, so
    both see the same machine load; the median over rounds of each round's median."""
    import torch

    from medistill.engine.checkpoint import load_model
    from medistill.metrics import measure_latency

    runs = collect(out)
    teacher = next(r for r in runs if r["role"] == "teacher")
    student = next(r for r in runs if r["role"] != "teacher")
    models = {"teacher": load_model(teacher["model_path"])[0],
              "student": load_model(student["model_path"])[0]}
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for name, model in models.items():
            times[name].append(measure_latency(model, (3, size, size), warmup=1, repeats=3,
                                               threads=1)["per_image_ms"])
    res = {name: statistics.median(v) for name, v in times.items()}
    res.update(ratio=res["student"] / res["teacher"], size=size, rounds=rounds,
               threads=1, torch_threads_default=torch.get_num_threads())
    (out / "latency.json").write_text(json.dumps(res, indent=2))
    return res


def collect(out: Path) -> list[dict]:
    """Every evaluated run under ``out`` (``*/eval.json``, ``seed*/*/eval.json``, also in
    sub-folders: one benchmark folder per seed), one per (role, seed): a teacher checkpoint
    evaluated in several folders counts once."""
    runs: dict[tuple[str, int], dict] = {}
    for p in sorted(out.glob("**/eval.json")):
        r = json.loads(p.read_text())
        runs.setdefault((r["role"], r["seed"]), r)
    return list(runs.values())


def _fmt(m: dict) -> str:
    return f"{m['value']:.3f} ({m['low']:.3f}-{m['high']:.3f})"


def _ms(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def _diff(d: dict) -> str:
    return f"{d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}], P(<=0) {d['p_not_better']:.3f}"


def paired_section(runs: list[dict], n_resamples: int = 10_000) -> list[str]:
    """The teacher-student gap, then per seed the paired per-image (kd - no_kd) AJI / PQ
    differences with 95% CIs, and their mean ± sd over seeds."""
    from medistill.metrics.paired import over_seeds, verdict
    from medistill.pipelines.graph_relation import paired_differences

    lines = []
    for role, title in [("teacher", "Teacher-student gap: teacher - no_kd"),
                        ("intra", "KD effect: intra - no_kd"),
                        ("full", "KD effect: full (intra + inter) - no_kd")]:
        diffs = {m: paired_differences(runs, role, "no_kd", m, n_resamples) for m in ("aji", "pq")}
        if not diffs["aji"]:
            continue
        lines += ["", f"{title} (paired per-image differences over the test images, mean "
                  f"[95% CI], {n_resamples} resamples):", "",
                  "| Student seed | AJI difference | PQ difference |", "|---|---|---|"]
        for a, q in zip(diffs["aji"], diffs["pq"], strict=True):
            lines.append(f"| {a['train_seed']} | {_diff(a)} | {_diff(q)} |")
        for m, rows in diffs.items():
            o = over_seeds(rows, m)
            sd = "–" if o["sd"] is None else f"{o['sd']:.3f}"
            lines.append(f"| mean ± sd ({m.upper()}) | {o['mean']:+.3f} ± {sd}; "
                         f"{o['n_positive']}/{o['n_seeds']} seeds > 0, "
                         f"{o['n_ci_above_zero']} with CI > 0, {o['n_ci_below_zero']} with "
                         f"CI < 0 | |")
        if role != "teacher":
            lines += [""] + [f"- seed {a['train_seed']}: "
                             + verdict(a, role, "no_kd", "AJI") for a in diffs["aji"]]
    return lines


def loss_terms(runs: list[dict], weights: dict[str, float] | None = None) -> list[str]:
    """Per role: each logged training term (``train_*`` of log.csv, unweighted; the inter-image
    terms already carry their (B / K) and (1 / K) sums over bank pairs) at the first, middle and
    last epoch, mean over seeds, its weight in the objective and its weighted last value."""
    lines = ["", "Training-loss terms (means over each epoch's batches, mean over seeds; "
             "inter-image terms include the (B / K), (1 / K) sums over bank pairs):", "",
             "| Model | Term | Weight | Epoch 1 | Middle | Last | Weighted, last |",
             "|---|---|---|---|---|---|---|"]
    w = weights or {}
    for role in [r for r in ORDER if any(x["role"] == r for x in runs)]:
        hs = [x["history"] for x in runs if x["role"] == role and x.get("history")]
        if not hs:
            continue
        n = min(len(h) for h in hs)
        for k in [k for k in hs[0][0] if k.startswith("train_") and k != "train_sup"]:
            vals = [statistics.fmean(h[i].get(k, float("nan")) for h in hs)
                    for i in (0, (n - 1) // 2, n - 1)]
            wt = w.get(k[6:])
            lines.append(f"| {role} | {k[6:]} | {'' if wt is None else f'{wt:g}'} | "
                         + " | ".join(f"{v:.4g}" for v in vals)
                         + f" | {'' if wt is None else f'{wt * vals[-1]:.4g}'} |")
    return lines


def summary_table(runs: list[dict], out: Path | None = None) -> str:
    from medistill.pipelines.graph_relation import gap_closed

    if not runs:
        return "(no evaluated runs yet)"
    by_role: dict[str, list[dict]] = {}
    for r in runs:
        by_role.setdefault(r["role"], []).append(r)
    teacher = by_role.get("teacher", [None])[0]
    lines = ["| Model | Seeds | AJI mean ± sd | AJI per seed (95% CI) | PQ mean ± sd | "
             "VOI split / merge | ARAND | Params | GFLOPs | CPU ms | Params / T | "
             "Latency / T |", "|" + "---|" * 12]
    for role in [r for r in ORDER if r in by_role]:
        rs = sorted(by_role[role], key=lambda r: r["seed"])
        m = [r["metrics"] for r in rs]
        e = rs[0]["efficiency"]
        te = teacher["efficiency"] if teacher else None
        lines.append(
            f"| {role} | {len(rs)} | {_ms([x['aji']['value'] for x in m])} | "
            + "; ".join(_fmt(x["aji"]) for x in m)
            + f" | {_ms([x['pq']['value'] for x in m])} | "
            f"{_ms([x['voi_split']['value'] for x in m])} / "
            f"{_ms([x['voi_merge']['value'] for x in m])} | "
            f"{_ms([x['arand']['value'] for x in m])} | {e['params'] / 1e3:.1f} K | "
            f"{e['gflops']:.2f} | {e['latency_ms']:.1f} | "
            + (f"{100 * e['params'] / te['params']:.2f}% | "
               f"{100 * e['latency_ms'] / te['latency_ms']:.1f}% |" if te else "– | – |"))
    gap = gap_closed(runs)
    paired = out / "latency.json" if out else None
    if paired and paired.is_file():
        lat = json.loads(paired.read_text())
        lines += ["", f"Paired CPU latency ({lat['size']} px, 1 thread, {lat['rounds']} "
                  f"alternating rounds): teacher {lat['teacher']:.1f} ms, student "
                  f"{lat['student']:.1f} ms, ratio {100 * lat['ratio']:.1f}%."]
    lines.append("")
    lines.append("AJI gap closed (mean over seeds of (kd - no_kd) / (teacher - no_kd)): "
                 + ", ".join(f"{k}: {'–' if v is None else f'{100 * v:.1f}%'}"
                             for k, v in gap.items()))
    if all(r.get("cases") for r in runs):
        lines += paired_section(runs)
    lines += loss_terms(runs, _weights(out))
    return "\n".join(lines)


def _weights(out: Path | None) -> dict[str, float]:
    """The objective's weight of each logged term, from the run's ``recipe.json``."""
    recipe = next(iter(sorted(out.glob("**/recipe.json"))), None) if out else None
    if recipe is None:
        return {}
    k = json.loads(recipe.read_text())["kd"]
    return {"affinity": k["affinity_weight"], "foreground": k["foreground_weight"],
            "agd": k["agd_weight"], "igd_node": k["node_weight"], "igd_edge": k["edge_weight"],
            "inter_agd": k["inter_agd_weight"], "inter_igd": k["inter_igd_weight"]}


if __name__ == "__main__":
    main()
