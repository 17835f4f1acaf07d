"""Benchmark: the same resolution-KD job run by medistill and by torchdistill (issue #7).

The job: a frozen ``small_resnet`` teacher sees the 112 px view (1/2 of EBHI-Seg's 224 px
images), a ``small_resnet`` student the 28 px view (1/8); loss = soft KL at T=4 (x T^2) + MSE
between the final conv maps (teacher map resized to the student's by adaptive max-pool and by
bicubic interpolation, averaged); labels unused; Adam (lr 1e-3, weight decay 1e-4), cosine
schedule over the epochs, batch 32, no augmentation, no DataLoader workers, CPU.

Both frameworks get exactly the same inputs:

* the same teacher weights (random init, seed 0) and the same initial student weights (seed 1),
  written once to ``<out>/init.pt``;
* the same dataset object type: medistill's :class:`PairedViewDataset` (both views of every
  image, degraded once with Lanczos and kept as uint8, normalised on the fly). Its view cache is
  warmed before the timer starts in both, so decoding/resizing JPEGs is not timed. torchdistill
  reads it through a two-line adapter returning ``((teacher_view, student_view), label)``;
* the same shuffling order (a sampler seeded per epoch exactly as medistill's Trainer seeds its
  DataLoader), so the two runs see the same batches and their losses can be compared.

medistill runs its normal path: :class:`ResolutionKD` + :class:`Trainer` (checkpoint every
epoch, CSV log; TensorBoard and progress bars off), with the teacher-output cache on
(``--variants medistill``) or off (``medistill_nocache``). The cache is valid here because the
teacher's view is not augmented; it skips the 112 px teacher forward after epoch 1.

torchdistill 1.1.5 is driven the way its ``examples/torchvision/image_classification.py`` does:
``get_distillation_box`` with a config dict (models passed as modules, the teacher frozen with
``requires_grad: False``), forward hooks on ``layer4`` (final conv map) and ``head`` (logits),
criterion ``WeightedSumLoss`` = 16 (= T^2) x ``KDLoss`` (T=4, alpha=0: KL only) + 1 x a custom
mid-level loss registered here that computes the same resized-map MSE on the hooked maps, custom
forward procs that feed the teacher the 112 px view and the student the 28 px view, and the
example's epoch loop (``pre_epoch_process`` / ``forward_process`` / ``post_forward_process`` /
``post_epoch_process`` with its ``MetricLogger``, and ``save_ckpt`` every epoch).

Every run is its own subprocess (so peak RSS = that process's ``VmHWM``), under ``nice -n 5``,
with ``torch.set_num_threads(--threads)`` and OMP/MKL threads set the same for all. The variants
alternate run by run (the order rotates every repeat) and the table reports medians. Wall time
= building the distiller/box + all epochs (what a user waits for once the data are in memory);
images/s = epochs x training images / wall time.

torchdistill needs torchvision, which is not a medistill dependency, so everything runs in a
separate virtual environment made by this script when missing (``--venv``, default
``/tmp/bench-venv``): torch (same version as here), torchvision 0.28.0, torchdistill 1.1.5,
medistill's runtime dependencies (same versions as here) and the CPU shim from
``/work/shared/tools/torchvision_cpu_shim`` (torchvision's PyPI wheel is a CUDA build). Both
frameworks run in that same interpreter (medistill from this checkout via ``PYTHONPATH``), so
only the framework differs. Never install torchvision/torchdistill into medistill's own
environment.

    nice -n 5 python benchmarks/vs_torchdistill.py --data ../shared/data/ebhi_seg \
        --epochs 3 --repeats 3 --threads 1

``--augment`` (issue #15): the same job WITH the recipe's augmentation (flips, 90-degree
rotations, brightness/contrast/saturation 0.1, hue 0.02; :class:`Augment` on the same
``PairedViewDataset``, seed 0, parameters from (seed, epoch, index): torchdistill's loop calls
``set_epoch`` like the Trainer, so both online runs see identical augmented batches). The teacher
cache is invalid then; the variants are ``torchdistill`` and ``medistill_nocache`` (online: the
teacher runs on every augmented step) and ``medistill_replay`` (``kd.teacher_replay``: teacher
outputs for ``--draws`` augmentations per image stored in memory as float16, each epoch
replaying one stored draw per image; ``--replay-fill lazy`` (the default; the recipe's ``auto``
picks it below 2 x draws epochs, ``upfront`` from there):
each (image, draw) is computed in the training step the first time an epoch draws it;
``upfront``: all draws before training; the fill is inside the timed wall time either way;
``--replay-store targets`` (the default, as the recipe's): the pixel loss's targets at the
student map's size are stored when smaller than the teacher's map, ``maps``: the teacher's map).

    nice -n 5 python benchmarks/vs_torchdistill.py --augment --data ../shared/data/ebhi_seg \
        --limit 384 --epochs 10 --repeats 3 --threads 1

Outputs: ``benchmarks/out/vs_torchdistill[_aug]/runs/<variant>_r<k>.json`` (one per run, with
the load average before and after it), ``summary.json`` and the markdown table on stdout.
``--summarize`` reprints the table.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIM = Path(os.environ.get("MEDISTILL_TV_SHIM", "/work/shared/tools/torchvision_cpu_shim"))
TORCHVISION, TORCHDISTILL = "0.28.0", "1.1.5"
#: medistill runtime dependencies needed to build the models and the dataset in the venv
MEDISTILL_DEPS = ("monai", "numpy", "pillow", "pyyaml", "pydantic", "tqdm", "typer",
                  "matplotlib", "scipy", "scikit-image")
VARIANTS = ("medistill", "medistill_replay", "medistill_nocache", "torchdistill")
AUG_VARIANTS = ("medistill_replay", "medistill_nocache", "torchdistill")
TEMPERATURE = 4.0


# ------------------------------------------------------------------------------------------
# environment
# ------------------------------------------------------------------------------------------
def _pinned(name: str) -> str:
    try:
        return f"{name}=={importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        return name


def ensure_venv(venv: Path, create: bool) -> Path:
    """The venv's python, creating the venv (torch + torchvision + torchdistill + shim) first
    when it is missing."""
    python = venv / "bin" / "python"
    check = "import torchdistill, torchvision, monai, pydantic; print(torchdistill.__version__)"
    if python.exists():
        ok = subprocess.run([str(python), "-c", check], capture_output=True, text=True)
        if ok.returncode == 0:
            return python
        if not create:
            sys.exit(f"{python} cannot import torchdistill/medistill deps:\n{ok.stderr}")
    elif not create:
        sys.exit(f"no venv at {venv}; drop --no-create-venv or pass --venv")
    print(f"creating {venv} (torch, torchvision {TORCHVISION}, torchdistill {TORCHDISTILL})",
          flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    torch_pin = _pinned("torch").split("+")[0]  # "torch==2.13.0": pip picks the +cpu wheel
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    # torch pinned in the same command, or pip would upgrade it to a CUDA build
    subprocess.run([*pip, torch_pin, f"torchvision=={TORCHVISION}",
                    f"torchdistill=={TORCHDISTILL}"], check=True)
    subprocess.run([*pip, torch_pin, *(_pinned(d) for d in MEDISTILL_DEPS)], check=True)
    subprocess.run(["bash", str(SHIM / "install.sh"), str(python)], check=True)
    subprocess.run([str(python), "-c", check], check=True)
    return python


def worker_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                      env.get("PYTHONPATH")]))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["TQDM_DISABLE"] = "1"
    return env


# ------------------------------------------------------------------------------------------
# orchestration (any python)
# ------------------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("MEDISTILL_EBHI", "../shared/data/ebhi_seg"))
    p.add_argument("--out", help="default benchmarks/out/vs_torchdistill[_aug]")
    p.add_argument("--augment", action="store_true", help="the recipe's augmentation on; "
                   "variants medistill_replay, medistill_nocache, torchdistill")
    p.add_argument("--draws", type=int, default=8, help="stored augmentations per image "
                   "(medistill_replay)")
    p.add_argument("--replay-fill", choices=("lazy", "upfront"), default="lazy",
                   help="kd.teacher_replay.fill of medistill_replay")
    p.add_argument("--replay-store", choices=("targets", "maps"), default="targets",
                   help="what medistill_replay stores (ResolutionKD.use_targets or not)")
    p.add_argument("--venv", default="/tmp/bench-venv", help="venv with torchdistill (made "
                   "when missing)")
    p.add_argument("--no-create-venv", action="store_true", help="fail instead of creating it")
    p.add_argument("--variants", nargs="+", choices=VARIANTS)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="torch threads, same for all runs")
    p.add_argument("--limit", type=int, default=0, help="first N training images (0: all)")
    p.add_argument("--teacher-factor", type=float, default=2.0)
    p.add_argument("--student-factor", type=float, default=8.0,
                   help="relative to the original image")
    p.add_argument("--nice", type=int, default=5)
    p.add_argument("--summarize", action="store_true", help="only reprint the table")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.out = args.out or ("benchmarks/out/vs_torchdistill" + ("_aug" if args.augment else ""))
    args.variants = args.variants or list(AUG_VARIANTS if args.augment else
                                          ("medistill", "medistill_nocache", "torchdistill"))
    if args.augment and "medistill" in args.variants:
        p.error("--augment: the teacher cache (variant medistill) needs augmentation off")
    if not args.augment and "medistill_replay" in args.variants:
        p.error("variant medistill_replay needs --augment")
    out = Path(args.out)
    if args.worker:
        worker(args)
        return
    if args.summarize:
        print(table(summarize(out)))
        return

    python = ensure_venv(Path(args.venv), not args.no_create_venv)
    env = worker_env(args.threads)
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    for stale in runs_dir.glob("*.json"):
        stale.unlink()
    common = ["--data", args.data, "--out", str(out), "--epochs", str(args.epochs),
              "--batch-size", str(args.batch_size), "--threads", str(args.threads),
              "--limit", str(args.limit), "--teacher-factor", str(args.teacher_factor),
              "--student-factor", str(args.student_factor), "--draws", str(args.draws),
              "--replay-fill", args.replay_fill, "--replay-store", args.replay_store,
              *(["--augment"] if args.augment else [])]
    nice = ["nice", "-n", str(args.nice)] if args.nice else []
    script = str(Path(__file__).resolve())
    subprocess.run([*nice, str(python), script, "--worker", "prepare", *common], env=env,
                   check=True)
    variants = list(args.variants)
    start = time.time()
    for k in range(args.repeats):
        order = variants[k % len(variants):] + variants[:k % len(variants)]
        for variant in order:
            result = runs_dir / f"{variant}_r{k}.json"
            load_before = os.getloadavg()
            subprocess.run([*nice, str(python), script, "--worker", variant, "--result",
                            str(result), *common], env=env, check=True)
            r = json.loads(result.read_text())
            r["loadavg_before"], r["loadavg_after"] = load_before, os.getloadavg()
            result.write_text(json.dumps(r, indent=2))
            print(f"[{time.time() - start:6.0f} s] repeat {k} {variant:18s} "
                  f"{r['images_per_s']:7.1f} img/s  wall {r['wall_s']:6.1f} s  "
                  f"peak RSS {r['peak_rss_mib']:6.0f} MiB  final loss {r['final_loss']:.5f}",
                  flush=True)
    summary = summarize(out)
    summary["command"] = " ".join(["python", "benchmarks/vs_torchdistill.py", *sys.argv[1:]])
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print()
    print(table(summary))


def summarize(out: Path) -> dict:
    runs = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    by: dict[str, list[dict]] = {}
    for r in runs:
        by.setdefault(r["variant"], []).append(r)
    rows = {}
    for variant, rs in by.items():
        def med(key: str, rs: list[dict] = rs) -> float:
            return statistics.median(r[key] for r in rs)

        rows[variant] = {
            "runs": len(rs),
            "images_per_s": med("images_per_s"),
            "images_per_s_all": [round(r["images_per_s"], 1) for r in rs],
            "wall_s": med("wall_s"),
            "peak_rss_mib": med("peak_rss_mib"),
            "rss_before_train_mib": med("rss_before_train_mib"),
            "final_loss": med("final_loss"),
            "fill_s": med("fill_s") if "fill_s" in rs[0] else None,
            "teacher_passes": med("teacher_passes") if "teacher_passes" in rs[0] else None,
            # steady state: the training images / the median epoch after the first
            "later_images_per_s": statistics.median(
                r["images"] / statistics.median(r["epoch_s"][1:] or r["epoch_s"]) for r in rs),
            "loadavg_1min": [r["loadavg_before"][0] for r in rs if "loadavg_before" in r]
            + [r["loadavg_after"][0] for r in rs if "loadavg_after" in r],
            "epoch_s": [statistics.median(r["epoch_s"][e] for r in rs)
                        for e in range(len(rs[0]["epoch_s"]))],
        }
    base = rows.get("torchdistill")
    for row in rows.values():
        if base:
            row["speed_ratio"] = row["images_per_s"] / base["images_per_s"]
            row["rss_ratio"] = row["peak_rss_mib"] / base["peak_rss_mib"]
            row["later_ratio"] = row["later_images_per_s"] / base["later_images_per_s"]
    meta = runs[0]["setup"] if runs else {}
    return {"setup": meta, "variants": rows}


def table(summary: dict) -> str:
    label = {"medistill": ("medistill", "cache on"), "medistill_nocache": ("medistill", "off"),
             "medistill_replay": ("medistill", "replay"),
             "torchdistill": ("torchdistill 1.1.5", "n/a")}
    lines = ["| framework | teacher outputs | runs | images/s (median) | wall s (median) | "
             "fill s | peak RSS MiB (median) | images/s ratio vs torchdistill | RSS ratio | "
             "epochs 2+ images/s (ratio) | final-epoch loss | per-run images/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    nan = float("nan")
    for variant in VARIANTS:
        row = summary["variants"].get(variant)
        if row is None:
            continue
        name, cache = label[variant]
        lines.append(
            f"| {name} | {cache} | {row['runs']} | {row['images_per_s']:.1f} | "
            f"{row['wall_s']:.1f} | "
            f"{'-' if row.get('fill_s') is None else format(row['fill_s'], '.1f')} | "
            f"{row['peak_rss_mib']:.0f} | "
            f"{row.get('speed_ratio', nan):.2f}x | {row.get('rss_ratio', nan):.2f} | "
            f"{row['later_images_per_s']:.1f} ({row.get('later_ratio', nan):.2f}x) "
            f"| {row['final_loss']:.4f} | {', '.join(map(str, row['images_per_s_all']))} |")
    loads = [x for row in summary["variants"].values() for x in row.get("loadavg_1min", [])]
    if loads:
        lines.append(f"\n1-minute load average before/after the runs: {min(loads):.2f} to "
                     f"{max(loads):.2f} (median {statistics.median(loads):.2f})")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# workers (run in the venv, one process per run)
# ------------------------------------------------------------------------------------------
def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _setup(args):
    """(dataset with warm view cache, classes, init state dicts) shared by every worker."""
    import torch

    from medistill.config import DataConfig
    from medistill.data import Augment, PairedViewDataset, ResolutionView
    from medistill.pipelines.datasets import load_split

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    samples = load_split(DataConfig(root=args.data), "train")
    items = samples.samples[: args.limit] if args.limit else samples.samples
    views = {"teacher": ResolutionView(args.teacher_factor),
             "student": ResolutionView(args.student_factor)}
    init = out / "init.pt"
    if args.worker == "prepare":
        from medistill.data import channel_stats
        from medistill.models import create_model

        mean, std = channel_stats(items)
        torch.manual_seed(0)
        teacher = create_model("small_resnet", num_classes=len(samples.classes))
        torch.manual_seed(1)
        student = create_model("small_resnet", num_classes=len(samples.classes))
        torch.save({"teacher": teacher.state_dict(), "student": student.state_dict(),
                    "mean": mean, "std": std, "classes": samples.classes}, init)
        return None
    state = torch.load(init, weights_only=False)
    dataset = PairedViewDataset(items, views, state["mean"], state["std"],
                                augment=Augment() if args.augment else None, seed=0)
    for i in range(len(dataset)):  # warm the uint8 view cache: decoding is not timed
        for name in views:
            dataset.view_array(i, name)
    return dataset, state


def _models(state):
    from medistill.models import create_model

    k = len(state["classes"])
    teacher = create_model("small_resnet", num_classes=k)
    teacher.load_state_dict(state["teacher"])
    student = create_model("small_resnet", num_classes=k)
    student.load_state_dict(state["student"])
    return teacher, student


def worker(args) -> None:
    setup = _setup(args)
    if setup is None:
        return
    dataset, state = setup
    teacher, student = _models(state)
    rss_before = _status_mib("VmRSS")
    run_dir = Path(args.out) / "work" / args.worker
    if args.worker == "torchdistill":
        res = run_torchdistill(args, dataset, teacher, student, run_dir)
    else:
        res = run_medistill(args, dataset, teacher, student, run_dir,
                            outputs={"medistill": "cache", "medistill_replay": "replay"}.get(
                                args.worker, "online"))
    import resource

    import torch

    n = len(dataset)
    res.update(
        variant=args.worker,
        images=n,
        images_per_s=args.epochs * n / res["wall_s"],
        peak_rss_mib=_status_mib("VmHWM"),
        ru_maxrss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        rss_before_train_mib=rss_before,
        setup={"images": n, "epochs": args.epochs, "batch_size": args.batch_size,
               "augment": args.augment, "draws": args.draws,
               "threads": torch.get_num_threads(), "torch": torch.__version__,
               "teacher_px": tuple(dataset[0]["views"]["teacher"].shape[-2:]),
               "student_px": tuple(dataset[0]["views"]["student"].shape[-2:]),
               "python": sys.executable},
    )
    Path(args.result).write_text(json.dumps(res, indent=2))


def run_medistill(args, dataset, teacher, student, run_dir: Path, outputs: str) -> dict:
    """``outputs``: "cache" (teacher outputs kept after epoch 1), "replay" (stored for
    ``--draws`` augmentations per image, filled before training) or "online"."""
    from medistill.config import TrainConfig
    from medistill.engine.teacher_cache import TeacherCache, fingerprint, replay_dataset
    from medistill.engine.trainer import Trainer
    from medistill.methods import ResolutionKD

    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer="adam", lr=1e-3,
                      weight_decay=1e-4, schedule="cosine", seed=0, device="cpu", num_workers=0,
                      progress=False, tensorboard=False)
    start = time.perf_counter()
    method = ResolutionKD(teacher, student, temperature=TEMPERATURE, soft_weight=1.0,
                          pixel_weight=1.0, resize=("maxpool", "bicubic"))
    settings = {"view": dataset.views["teacher"],
                "normalization": {"mean": dataset.mean.flatten().tolist(),
                                  "std": dataset.std.flatten().tolist()}, "image_size": None}
    train_set, extra = dataset, {}
    if outputs == "cache":  # as pipelines/resolution.py builds it (in memory)
        key = fingerprint(method.teacher, [s.path for s in dataset.samples], **settings)
        method.teacher_cache = TeacherCache(len(dataset), key)
    elif outputs == "replay":  # kd.teacher_replay {draws, storage: memory, dtype: float16}
        if args.replay_store == "targets":  # as the recipe: the pixel loss's targets if smaller
            views = dataset[0]["views"]
            settings["targets"] = method.use_targets([views["student"]], views["teacher"])
        train_set = replay_dataset(method.teacher, method.teacher_forward, dataset, "teacher",
                                   args.draws, None, "float16", args.batch_size,
                                   fill=args.replay_fill, **settings)
        extra["fill_s"] = time.perf_counter() - start
    fit = Trainer(method, train_set, None, cfg, run_dir, {}, None, "kd").fit()
    wall = time.perf_counter() - start
    if outputs == "replay":  # teacher passes over the data (lazy: pairs drawn so far)
        extra["teacher_passes"] = float(train_set.replay.cache.filled.sum()) / len(dataset)
        extra["teacher_rows"] = train_set.replay.teacher_rows  # lazy, padding included
    hist = fit["history"]
    return {**extra, "wall_s": wall,
            "epoch_s": [len(dataset) / h["images_per_s"] for h in hist],
            "epoch_loss": [h["train_loss"] for h in hist], "final_loss": hist[-1]["train_loss"],
            "final_soft": hist[-1]["train_soft"], "final_pixel": hist[-1]["train_pixel"]}


class EpochSeededSampler:
    """Shuffles like medistill's Trainer (``randperm`` seeded with seed * 100003 + epoch), so
    both frameworks see the same batches; epochs are counted from 1 on each ``__iter__``."""

    def __init__(self, data_source, seed: int = 0) -> None:
        self.n, self.seed, self.epoch = len(data_source), seed, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        import torch

        self.epoch += 1
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


def run_torchdistill(args, dataset, teacher, student, run_dir: Path) -> dict:
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import Dataset
    from torchdistill.common.main_util import save_ckpt
    from torchdistill.core.distillation import get_distillation_box
    from torchdistill.core.interfaces.registry import register_forward_proc_func
    from torchdistill.losses.registry import register_mid_level_loss
    from torchdistill.misc.log import MetricLogger, SmoothedValue

    class PairAsSampleTarget(Dataset):
        """((teacher_view, student_view), label) from the same PairedViewDataset."""

        def __init__(self, paired) -> None:
            self.paired = paired

        def __len__(self) -> int:
            return len(self.paired)

        def __getitem__(self, index):
            item = self.paired[index]
            return (item["views"]["teacher"], item["views"]["student"]), item["label"]

    @register_forward_proc_func(key="forward_teacher_view")
    def forward_teacher_view(model, sample_batch, targets=None, supp_dict=None, **kwargs):
        return model(sample_batch[0])

    @register_forward_proc_func(key="forward_student_view")
    def forward_student_view(model, sample_batch, targets=None, supp_dict=None, **kwargs):
        return model(sample_batch[1])

    @register_mid_level_loss(key="ResizedMapMSELoss")
    class ResizedMapMSELoss(nn.Module):
        """medistill's ResizedFeatureMSE on torchdistill's io_dict: the teacher map resized to
        the student map's size by adaptive max-pool and by bicubic interpolation, the MSE for
        each, averaged."""

        def __init__(self, student_module_path, teacher_module_path, io="output", **kwargs):
            super().__init__()
            self.s_path, self.t_path, self.io = student_module_path, teacher_module_path, io

        def forward(self, student_io_dict, teacher_io_dict, targets=None, *args, **kwargs):
            s = student_io_dict[self.s_path][self.io]
            t = teacher_io_dict[self.t_path][self.io].detach()
            size = tuple(s.shape[-2:])
            if tuple(t.shape[-2:]) == size:
                resized = [t, t]
            else:
                resized = [F.adaptive_max_pool2d(t, size),
                           F.interpolate(t, size=size, mode="bicubic", align_corners=False)]
            return torch.stack([F.mse_loss(s, r) for r in resized]).mean()

    device = torch.device("cpu")
    train_config = {
        "num_epochs": args.epochs,
        "train_data_loader": {
            "dataset_id": "train",
            "sampler": {"class_or_func": EpochSeededSampler, "kwargs": {"seed": 0}},
            "kwargs": {"batch_size": args.batch_size, "num_workers": 0, "drop_last": False},
        },
        "teacher": {"forward_proc": "forward_teacher_view", "requires_grad": False,
                    "forward_hook": {"input": [], "output": ["layer4", "head"]}},
        "student": {"forward_proc": "forward_student_view",
                    "forward_hook": {"input": [], "output": ["layer4", "head"]}},
        "optimizer": {"key": "Adam", "kwargs": {"lr": 1e-3, "weight_decay": 1e-4}},
        "scheduler": {"key": "CosineAnnealingLR", "kwargs": {"T_max": args.epochs},
                      "scheduling_step": 0},
        "criterion": {
            "key": "WeightedSumLoss",
            "kwargs": {"sub_terms": {
                "kd": {"criterion": {"key": "KDLoss", "kwargs": {
                    "student_module_path": "head", "student_module_io": "output",
                    "teacher_module_path": "head", "teacher_module_io": "output",
                    "temperature": TEMPERATURE, "alpha": 0.0, "reduction": "batchmean"}},
                    "weight": TEMPERATURE**2},  # KDLoss with alpha=0 is the bare KL
                "pixel": {"criterion": {"key": "ResizedMapMSELoss", "kwargs": {
                    "student_module_path": "layer4", "teacher_module_path": "layer4"}},
                    "weight": 1.0},
            }},
        },
    }
    teacher.eval()
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    box = get_distillation_box(teacher, student, {"train": PairAsSampleTarget(dataset)},
                               train_config, device, None, False, 1)
    epoch_s, epoch_loss = [], []
    for epoch in range(box.num_epochs):  # examples/torchvision/image_classification.py
        t0 = time.perf_counter()
        dataset.set_epoch(epoch + 1)  # augmentation seeded as the Trainer seeds it
        box.pre_epoch_process(epoch=epoch)
        metric_logger = MetricLogger(delimiter="  ")
        metric_logger.add_meter("lr", SmoothedValue(window_size=1, fmt="{value}"))
        metric_logger.add_meter("img/s", SmoothedValue(window_size=10, fmt="{value}"))
        for sample_batch, targets, supp_dict in metric_logger.log_every(
                box.train_data_loader, 10_000, f"Epoch: [{epoch}]"):
            t1 = time.time()
            sample_batch = [x.to(device) for x in sample_batch]
            targets = targets.to(device)
            loss = box.forward_process(sample_batch, targets, supp_dict)
            box.post_forward_process(loss=loss)
            metric_logger.update(loss=loss.item(), lr=box.optimizer.param_groups[0]["lr"])
            metric_logger.meters["img/s"].update(len(targets) / (time.time() - t1))
            if torch.isnan(loss) or torch.isinf(loss):
                raise ValueError(f"The training loop was broken due to loss = {loss}")
        save_ckpt(student, box.optimizer, box.lr_scheduler, 0.0, None, str(run_dir / "ckpt.pt"))
        box.post_epoch_process()
        epoch_s.append(time.perf_counter() - t0)
        epoch_loss.append(metric_logger.loss.global_avg)
    box.clean_modules()
    wall = time.perf_counter() - start
    return {"wall_s": wall, "epoch_s": epoch_s, "epoch_loss": epoch_loss,
            "final_loss": epoch_loss[-1]}


if __name__ == "__main__":
    main()
