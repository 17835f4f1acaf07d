"""Tests for medistill.metrics.efficiency."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medistill.metrics import count_gflops, count_parameters, measure_latency, profile_model


class DictNet(nn.Module):
    """Returns a dict, and a tuple when asked, to check output handling."""

    def __init__(self, as_tuple: bool = False) -> None:
        super().__init__()
        self.fc = nn.Linear(10, 4)
        self.as_tuple = as_tuple

    def forward(self, x: torch.Tensor):
        y = self.fc(x)
        return (y, x) if self.as_tuple else {"logits": y, "feat": x}


def test_count_parameters() -> None:
    conv = nn.Conv2d(3, 8, 3)
    assert count_parameters(conv) == 8 * 3 * 3 * 3 + 8
    conv.bias.requires_grad_(False)
    assert count_parameters(conv, trainable_only=True) == 8 * 3 * 3 * 3
    assert count_parameters(conv) == 224
    net = nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 2))
    assert count_parameters(net) == (10 * 5 + 5) + (5 * 2 + 2)


def test_gflops_conv_exact() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_gflops(conv, (3, 16, 16)) == 2 * 8 * 3 * 3 * 3 * 16 * 16 / 1e9


def test_gflops_linear_exact_and_output_types() -> None:
    assert count_gflops(nn.Linear(10, 4), (10,)) == 2 * 10 * 4 / 1e9
    assert count_gflops(DictNet(), (10,)) == 2 * 10 * 4 / 1e9
    assert count_gflops(DictNet(as_tuple=True), (10,)) == 2 * 10 * 4 / 1e9


def test_gflops_restores_mode_and_uses_eval() -> None:
    seen: list[bool] = []

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(self.training)
            return x

    net = nn.Sequential(nn.Linear(4, 4), Probe())
    net.train()
    count_gflops(net, (4,))
    assert seen == [False]
    assert net.training and net[1].training
    net.eval()
    count_gflops(net, (4,))
    assert not net.training


def test_latency_positive_and_restores_state() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    net.train()
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    res = measure_latency(net, (3, 8, 8), batch_size=2, warmup=1, repeats=5, threads=target)
    assert res["median_ms"] > 0 and res["p90_ms"] >= res["median_ms"]
    assert res["per_image_ms"] == pytest.approx(res["median_ms"] / 2)
    assert res["batch_size"] == 2 and res["threads"] == target
    assert net.training
    assert torch.get_num_threads() == before


def test_latency_channels_last_leaves_model_untouched() -> None:
    net = nn.Conv2d(3, 4, 3)
    res = measure_latency(net, (3, 8, 8), warmup=0, repeats=2, channels_last=True)
    assert res["per_image_ms"] > 0
    assert net.weight.is_contiguous()
    with pytest.raises(ValueError):
        measure_latency(net, (3, 8, 8), repeats=0)


def test_profile_model() -> None:
    net = DictNet()
    prof = profile_model(net, (10,), warmup=0, repeats=2)
    assert prof["params"] == 44
    assert prof["gflops"] == 2 * 10 * 4 / 1e9
    assert prof["latency_ms"] > 0
    assert set(profile_model(net, (10,), latency=False)) == {"params", "gflops"}


class ThreadProbe(nn.Module):
    """Records torch's intra-op thread count at every forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)
        self.seen: set[int] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.add(torch.get_num_threads())
        return self.lin(x)


def test_latency_pins_one_thread_by_default_and_reports_quartiles() -> None:
    probe = ThreadProbe()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        res = measure_latency(probe, (4,), warmup=2, repeats=6)
    finally:
        torch.set_num_threads(before)
    assert probe.seen == {1} and res["threads"] == 1  # warm-up and timed passes alike
    assert res["q25_ms"] <= res["median_ms"] <= res["q75_ms"] <= res["p90_ms"]
    assert res["iqr_ms"] == pytest.approx(res["q75_ms"] - res["q25_ms"])
    assert res["blocks"] == 6
    # a ~µs module is timed in blocks of many passes, not one pass at the clock's resolution
    assert res["number"] > 1


def test_profile_model_reports_the_latency_iqr() -> None:
    prof = profile_model(nn.Conv2d(3, 4, 3), (3, 16, 16), warmup=1, repeats=5, threads=1)
    assert 0 < prof["latency_q25_ms"] <= prof["latency_ms"] <= prof["latency_q75_ms"]
    assert prof["latency_threads"] == 1
