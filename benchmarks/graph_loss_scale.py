"""Pilot: the magnitude of every graph-relation loss term at initialisation (issue #12).

Random-init teacher (widths 32/64/128/256/512) and student (4/8/16/32/64), 16-channel
embeddings, MoNuSeg training images at 40x, random 256 px crops (the recipe's defaults), batch 4.
The first ``--warmup`` batches only fill the memory bank (no weight updates at all), then the
terms of ``--measure`` batches are averaged and printed raw and weighted by the method's
default weights. Runs against whichever medistill is first on ``PYTHONPATH`` (it uses only
the API both the old and the new ``GraphRelationKD`` have), so the same command shows the
scales before and after a change:

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/graph_loss_scale.py
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image

TERMS = [("affinity", None), ("foreground", None), ("agd", "agd"), ("igd_node", "node"),
         ("igd_edge", "edge"), ("inter_agd", "inter_agd"), ("inter_igd", "inter_igd")]


def crops(root: Path, n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random crops of the training images, normalised per channel."""
    with (root / "splits.csv").open() as f:
        names = [r["name"] for r in csv.DictReader(f) if r["split"] == "train"]
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        name = names[i % len(names)]
        im = np.asarray(Image.open(root / "images" / f"{name}.png").convert("RGB"), np.float32)
        lab = np.asarray(Image.open(root / "labels" / f"{name}.png")).astype(np.int64)
        y, x = rng.integers(0, im.shape[0] - size), rng.integers(0, im.shape[1] - size)
        im = im[y:y + size, x:x + size]
        images.append((im - im.mean((0, 1))) / (im.std((0, 1)) + 1e-6))
        labels.append(lab[y:y + size, x:x + size])
    return (torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
            torch.from_numpy(np.stack(labels)))


def main() -> None:
    from medistill.methods import GraphRelationKD
    from medistill.models import create_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/monuseg")
    p.add_argument("--crop-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--warmup", type=int, default=3, help="batches that only fill the bank")
    p.add_argument("--measure", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    teacher = create_model("resunet_embedding", 2, widths=[32, 64, 128, 256, 512],
                           embedding_dim=16)
    student = create_model("resunet_embedding", 2, widths=[4, 8, 16, 32, 64], embedding_dim=16)
    method = GraphRelationKD(teacher, student).train()
    n = a.batch_size * (a.warmup + a.measure)
    x, y = crops(Path(a.data), n, a.crop_size, a.seed)
    sums: dict[str, float] = {}
    with torch.no_grad():
        for step in range(a.warmup + a.measure):
            sl = slice(step * a.batch_size, (step + 1) * a.batch_size)
            out = method.training_step({"image": x[sl], "labels": y[sl],
                                        "index": torch.arange(a.batch_size)})
            if step >= a.warmup:
                for k, v in out.items():
                    sums[k] = sums.get(k, 0.0) + float(v) / a.measure
    print(f"bank {len(method.bank)} maps, weights {method.weights}")
    print("| term | raw | weight | weighted |\n|---|---|---|---|")
    for term, w in TERMS:
        weight = 1.0 if w is None else method.weights[w]
        if term in sums:
            print(f"| {term} | {sums[term]:.4g} | {weight:g} | {weight * sums[term]:.4g} |")
    print(f"| total | | | {sums['loss']:.4g} |")


if __name__ == "__main__":
    main()
