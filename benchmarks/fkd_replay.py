"""Benchmark: augmented resolution KD with replayed teacher outputs (FKD, issue #15).

The job (as in ``benchmarks/vs_torchdistill.py``, but WITH the recipe's augmentation: flips,
90-degree rotations, brightness/contrast/saturation 0.1, hue 0.02): EBHI-Seg train split, a
frozen ``small_resnet`` teacher on the 112 px view (1/2), a ``small_resnet`` student on the
28 px view (1/8), soft KL at T=4 (x T^2) + resized-map MSE, Adam 1e-3, weight decay 1e-4,
batch 32, CPU, ``torch.set_num_threads(--threads)``. Variants, one subprocess per run (peak RSS =
its ``VmHWM``), interleaved (the order rotates every repeat):

``online``          today's path: ``Trainer`` + ``ResolutionKD`` on the per-sample
                    ``PairedViewDataset`` (uint8 views cached before the timer), the teacher
                    runs on the augmented 112 px view every step;
``online_batched``  the same, but batches built by ``TensorViewDataset`` (pre-decoded uint8
                    tensors, batched augmentation with per-sample parameters): the teacher still
                    runs every step;
``replay``          ``kd.teacher_replay``: ``Trainer`` + ``ResolutionKD`` on a
                    ``TensorViewDataset`` serving the teacher outputs stored for ``--draws``
                    augmentations per image (fp16, memory-mapped on disk, filled once by the
                    ``fill`` step with ``fill="upfront"``, timed separately: the variant is
                    pure replay from epoch 1 and measures the hot loop);
``replay_nodiag``   the same with ``train.diag_every: 0`` (no per-term gradient shares: the
                    recipe default computes them at the first step and every 50 steps, one
                    extra set of gradients per epoch here);
``limit``           the cached limit: a bare PyTorch loop, student forward/backward + the same
                    loss against fixed stored teacher outputs, on pre-decoded normalised 28 px
                    tensors, no augmentation, no Trainer.

images/s of a run = the median of its epochs' images/s after the first epoch (the Trainer's
``images_per_s``: the training loop only, not validation or the checkpoint; the limit loop timed
the same way); the table gives the median over runs.

    nice -n 5 python benchmarks/fkd_replay.py --data ../shared/data/ebhi_seg --threads 1 \
        --repeats 3 --epochs 3

Outputs in ``--out`` (default ``benchmarks/out/fkd_replay``): ``runs/<variant>_r<k>.json``,
``fill.json``, ``summary.json``; the markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("online", "online_batched", "replay", "replay_nodiag", "limit")
TEMPERATURE = 4.0


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


# ------------------------------------------------------------------------------------------
# workers
# ------------------------------------------------------------------------------------------
def _prepare(args) -> None:
    """Initial weights, normalisation and the decoded views, once for every run."""
    import numpy as np
    import torch

    from medistill.config import DataConfig
    from medistill.data import PairedViewDataset, channel_stats
    from medistill.models import create_model
    from medistill.pipelines.datasets import load_split

    samples = load_split(DataConfig(root=str(args.data)), "train")
    items = samples.samples[: args.limit] if args.limit else samples.samples
    mean, std = channel_stats(items)
    torch.manual_seed(0)
    teacher = create_model("small_resnet", num_classes=len(samples.classes))
    torch.manual_seed(1)
    student = create_model("small_resnet", num_classes=len(samples.classes))
    torch.save({"teacher": teacher.state_dict(), "student": student.state_dict()},
               Path(args.out) / "init.pt")
    info = {"mean": list(mean), "std": list(std), "classes": samples.classes,
            "paths": [str(s.path) for s in items], "labels": [s.label for s in items]}
    (Path(args.out) / "init.json").write_text(json.dumps(info))
    data = PairedViewDataset(items, _views(args), mean, std, augment=None)
    np.savez(Path(args.out) / "views.npz",
             **{name: np.stack([data.view_array(i, name) for i in range(len(data))])
                for name in data.views})


def _views(args):
    from medistill.data import ResolutionView

    return {"teacher": ResolutionView(args.teacher_factor),
            "student": ResolutionView(args.student_factor)}


def _setup(args, names):
    """(per-sample dataset with the recipe's augmentation and a warm cache of ``names``,
    teacher, student)."""
    import numpy as np
    import torch

    from medistill.data import Augment, PairedViewDataset, Sample
    from medistill.models import create_model

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    info = json.loads((out / "init.json").read_text())
    items = [Sample(Path(p), y) for p, y in zip(info["paths"], info["labels"], strict=True)]
    views = _views(args)
    with np.load(out / "views.npz") as npz:  # each array read once (npz[name] re-reads)
        arrays = {name: npz[name] for name in names}
    cache = {(str(s.path), views[name], None): arrays[name][i]
             for name in names for i, s in enumerate(items)}
    dataset = PairedViewDataset(items, views, info["mean"], info["std"], augment=Augment(),
                                seed=0, cache=cache)
    state = torch.load(out / "init.pt", weights_only=True)
    k = len(info["classes"])
    teacher, student = (create_model("small_resnet", num_classes=k) for _ in range(2))
    teacher.load_state_dict(state["teacher"])
    student.load_state_dict(state["student"])
    return dataset, teacher, student


def _replay_dir(args) -> Path:
    return Path(args.out) / f"replay_{args.store}"


def _replay_set(args, method, dataset, fill: str = "upfront", storage: str = "disk"):
    """``--store targets`` (the recipe's way): the pixel loss's targets at the student map's
    size when smaller than the teacher's map; ``maps``: the teacher's map (before)."""
    from medistill.engine.teacher_cache import replay_dataset

    targets = None
    if args.store == "targets":
        views = dataset[0]["views"]
        targets = method.use_targets([views["student"]], views["teacher"])
    return replay_dataset(method.teacher, method.teacher_forward, dataset, "teacher",
                          args.draws, _replay_dir(args) if storage == "disk" else None,
                          "float16", 64, fill=fill, view=dataset.views["teacher"],
                          normalization={"mean": dataset.mean.flatten().tolist(),
                                         "std": dataset.std.flatten().tolist()},
                          image_size=None, targets=targets)


def _kd(teacher, student):
    from medistill.methods import ResolutionKD

    return ResolutionKD(teacher, student, temperature=TEMPERATURE, soft_weight=1.0,
                        pixel_weight=1.0, resize=("maxpool", "bicubic"))


def _fit(args, method, train_set, name: str, diag_every: int = 50) -> list[float]:
    from medistill.config import TrainConfig
    from medistill.engine.trainer import Trainer

    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer="adam",
                      lr=1e-3, weight_decay=1e-4, schedule="cosine", seed=0, device="cpu",
                      progress=False, tensorboard=False, diag_every=diag_every)
    fit = Trainer(method, train_set, None, cfg, Path(args.out) / "work" / name).fit()
    return [h["images_per_s"] for h in fit["history"]]


def _limit(args, dataset, student) -> list[float]:
    """The bare student-only loop against stored teacher outputs (draw 0 of the replay)."""
    import numpy as np
    import torch

    from medistill.data.tensor_views import decode_views
    from medistill.data.transforms import augment_batch
    from medistill.losses import ResizedFeatureMSE, SoftTargetKL

    soft, pixel = SoftTargetKL(TEMPERATURE), ResizedFeatureMSE(("maxpool", "bicubic"))
    x_all = augment_batch(decode_views(dataset, ["student"])["student"], None, dataset.mean,
                          dataset.std)
    arrays = {}
    (key,) = [p for p in _replay_dir(args).iterdir() if p.is_dir()]
    for f in key.glob("*.npy"):  # the teacher's map, or the pixel loss's targets (--store)
        if f.stem != "filled":
            a = np.load(f, mmap_mode="r")
            arrays[f.stem] = torch.from_numpy(np.asarray(a[:: args.draws], dtype=np.float32))
    if "features" not in arrays:
        arrays["features"] = [arrays[f"target_{m}"] for m in pixel.resize]
    opt = torch.optim.Adam(student.parameters(), lr=1e-3, weight_decay=1e-4)
    student.train()
    rates = []
    n = len(x_all)
    for epoch in range(1, args.epochs + 1):
        gen = torch.Generator().manual_seed(epoch)
        order = torch.randperm(n, generator=gen)
        start = time.perf_counter()
        for b in range(0, n, args.batch_size):
            idx = order[b:b + args.batch_size]
            s_map, s_logits = student(x_all[idx])
            t = arrays["features"]
            t = [a[idx] for a in t] if isinstance(t, list) else t[idx]
            loss = soft(s_logits, arrays["logits"][idx]) + pixel(s_map, t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        rates.append(n / (time.perf_counter() - start))
    return rates


def worker(args) -> None:
    if args.worker == "prepare":
        _prepare(args)
        Path(args.result).write_text("{}")
        return None
    names = {"online": ["teacher", "student"], "online_batched": ["teacher", "student"],
             "fill": [], "replay": ["student"], "replay_nodiag": ["student"],
             "limit": ["student"]}[args.worker]
    dataset, teacher, student = _setup(args, names)
    import torch

    res: dict = {"variant": args.worker}
    rss_before = _status_mib("VmRSS")
    if args.worker == "fill":
        method = _kd(teacher, student)
        start = time.perf_counter()
        served = _replay_set(args, method, dataset)
        res["fill_s"] = time.perf_counter() - start
        res["teacher_images_per_s"] = len(dataset) * args.draws / res["fill_s"]
        res["stored_mib"] = sum(a.nbytes for a in served.replay.cache.arrays.values()) / 2**20
    elif args.worker == "limit":
        res["epoch_images_per_s"] = _limit(args, dataset, student)
    else:
        from medistill.data.tensor_views import TensorViewDataset

        method = _kd(teacher, student)
        if args.worker == "online":
            train = dataset
        elif args.worker == "online_batched":
            train = TensorViewDataset(dataset)
        else:
            train = _replay_set(args, method, dataset)
            if not train.replay.filled:
                raise SystemExit("replay cache not filled: run the fill step first")
        res["epoch_images_per_s"] = _fit(args, method, train, args.worker,
                                         0 if args.worker == "replay_nodiag" else 50)
    if "epoch_images_per_s" in res:
        later = res["epoch_images_per_s"][1:] or res["epoch_images_per_s"]
        res["images_per_s"] = statistics.median(later)  # after the first epoch
    res.update(peak_rss_mib=_status_mib("VmHWM"), rss_before_train_mib=rss_before,
               setup={"images": len(dataset), "epochs": args.epochs,
                      "batch_size": args.batch_size, "draws": args.draws,
                      "threads": torch.get_num_threads(), "torch": torch.__version__})
    Path(args.result).write_text(json.dumps(res, indent=2))


# ------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------
def _run(args, name: str, result: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--result", str(result),
           "--data", str(args.data), "--out", str(args.out), "--epochs", str(args.epochs),
           "--threads", str(args.threads), "--draws", str(args.draws),
           "--batch-size", str(args.batch_size), "--limit", str(args.limit),
           "--teacher-factor", str(args.teacher_factor),
           "--student-factor", str(args.student_factor), "--store", args.store]
    subprocess.run(["nice", "-n", "5", *cmd], check=True, env=_env(args.threads))
    return json.loads(result.read_text())


def summarize(out: Path) -> dict:
    runs = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    summary: dict = {"variants": {}}
    for v in VARIANTS:
        rs = [r for r in runs if r["variant"] == v]
        if rs:
            summary["variants"][v] = {
                "images_per_s": statistics.median(r["images_per_s"] for r in rs),
                "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in rs),
                "runs": [round(r["images_per_s"], 1) for r in rs], "setup": rs[0]["setup"]}
    fill = out / "fill.json"
    if fill.is_file():
        summary["fill"] = json.loads(fill.read_text())
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def table(summary: dict) -> str:
    v = summary["variants"]
    limit = v.get("limit", {}).get("images_per_s")
    rows = ["| variant | images/s (median) | vs cached limit | peak RSS MiB (median) | "
            "per-run images/s |", "|---|---|---|---|---|"]
    for name, s in v.items():
        ratio = f"{s['images_per_s'] / limit:.2f}x" if limit else "n/a"
        rows.append(f"| {name} | {s['images_per_s']:.1f} | {ratio} | {s['peak_rss_mib']:.0f} | "
                    f"{', '.join(map(str, s['runs']))} |")
    if "fill" in summary:
        f = summary["fill"]
        rows.append(f"\nfill: {f['fill_s']:.1f} s ({f['teacher_images_per_s']:.1f} teacher "
                    f"images/s), {f['stored_mib']:.1f} MiB stored, peak RSS "
                    f"{f['peak_rss_mib']:.0f} MiB")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/ebhi_seg")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/out/fkd_replay")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--draws", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--limit", type=int, default=0, help="first N training images (0: all)")
    p.add_argument("--teacher-factor", type=float, default=2.0)
    p.add_argument("--student-factor", type=float, default=8.0)
    p.add_argument("--store", choices=("targets", "maps"), default="targets",
                   help="what the replay stores: the pixel loss's targets at the student map's "
                        "size (as the recipe does) or the teacher's map")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--summarize", action="store_true", help="reprint the table")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.summarize:
        if not (args.out / "views.npz").is_file():
            _run(args, "prepare", args.out / "prepare.json")
        if not (args.out / "fill.json").is_file():
            _run(args, "fill", args.out / "fill.json")
        (args.out / "runs").mkdir(exist_ok=True)
        for r in range(args.repeats):
            order = args.variants[r % len(args.variants):] + args.variants[
                :r % len(args.variants)]
            for name in order:
                res = _run(args, name, args.out / "runs" / f"{name}_r{r}.json")
                print(f"repeat {r} {name}: {res['images_per_s']:.1f} img/s, "
                      f"peak RSS {res['peak_rss_mib']:.0f} MiB", flush=True)
    print(table(summarize(args.out)))


if __name__ == "__main__":
    main()
