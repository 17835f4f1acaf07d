"""Run feedback and tracking: epoch lines, stage counter and ETAs, run.log, TensorBoard tags and
hyperparameters, MLflow (a fake module: mlflow is not a dependency), warnings when a logger's
package is missing, and training bit-identical with every logger on or off."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from medistill.config import TrainConfig
from medistill.engine import Trainer
from medistill.engine import logging as runlog
from medistill.engine.logging import RunProgress, duration, epoch_line, flat_hparams, tb_tag

from .test_diagnostics import _Data, _TwoTerms


def _cfg(**kw) -> TrainConfig:
    base = dict(epochs=3, batch_size=6, lr=1e-2, optimizer="sgd", progress=False,
                tensorboard=False, seed=3, diag_every=2)
    return TrainConfig(**{**base, **kw})


def _train(out, **kw) -> _TwoTerms:
    method = _TwoTerms()
    Trainer(method, _Data(), None, _cfg(**kw), out).fit()
    return method


class FakeMLflow(types.ModuleType):
    """Records the calls medistill makes to the mlflow fluent API."""

    def __init__(self) -> None:
        super().__init__("mlflow")
        self.calls: list[tuple[str, tuple, dict]] = []
        self.active = None

    def _rec(self, name: str, *args, **kwargs) -> None:
        self.calls.append((name, args, kwargs))

    def set_experiment(self, *a, **k):
        self._rec("set_experiment", *a, **k)

    def start_run(self, *a, **k):
        self._rec("start_run", *a, **k)
        self.active = object()

    def active_run(self):
        return self.active

    def end_run(self, *a, **k):
        self._rec("end_run", *a, **k)
        self.active = None

    def set_tags(self, *a, **k):
        self._rec("set_tags", *a, **k)

    def log_params(self, *a, **k):
        self._rec("log_params", *a, **k)

    def log_metrics(self, *a, **k):
        self._rec("log_metrics", *a, **k)


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    monkeypatch.setattr(runlog, "_warned", set())


# ------------------------------------------------------------------------------ formatting
def test_duration():
    assert [duration(s) for s in (0.4, 42, 250, 3600 + 5 * 60 + 10)] == \
        ["0s", "42s", "4m10s", "1h05m"]


def test_epoch_line_with_terms_validation_best_and_etas():
    row = {"epoch": 4, "train_loss": 0.412, "train_term/ce": 0.3, "train_term/kd": 0.112,
           "train_ce": 0.3, "lr": 1e-3, "val_accuracy": 0.7451, "val_macro_f1": 0.7314,
           "val_macro_recall": 0.5}  # a third score is left out
    line = epoch_line("stage 3/9 seed1/kd", 4, 20, row, "val_macro_f1", 0.745, 3, 12.34,
                      (250.0, 610.0))
    assert line == ("[stage 3/9 seed1/kd] epoch 4/20  loss 0.412 (ce 0.3, kd 0.112)  "
                    "val f1 0.731 acc 0.745  best 0.745@3  12.3 s  ETA 4m10s, run 10m10s")
    # no validation set: the best is the lowest training loss; last epoch: only the run's ETA
    line = epoch_line("t", 2, 2, {"train_loss": 0.5}, "val_macro_f1", -0.25, 1, 1.0, (0.0, 30.0))
    assert line == "[t] epoch 2/2  loss 0.5  best loss 0.25@1  1.0 s  ETA run 30s"


def test_run_progress_counts_stages_and_estimates_the_time_left(tmp_path):
    p = RunProgress([("teacher", 4), ("kd", 2)], tmp_path / "run.log", echo=False)
    assert p.label("kd") == "stage 2/2 kd"
    p.begin("teacher", 4)
    assert p.eta("teacher") == (None, None)  # nothing timed yet
    p.epoch_done("teacher", 1, 10.0)
    p.epoch_done("teacher", 2, 20.0)
    # stage: 15 s/epoch x 2 left; run: + 15 s/epoch (mean of all) x the 2 epochs of kd
    assert p.eta("teacher") == (30.0, 60.0)
    p.epoch_done("teacher", 3, 30.0)
    p.epoch_done("teacher", 4, 40.0)
    p.begin("kd", 2)
    p.epoch_done("kd", 1, 5.0)
    assert p.eta("kd") == (5.0, 5.0)
    assert p.label("extra") == "stage 3/3 extra"  # an unplanned stage is counted
    unplanned = RunProgress()
    assert unplanned.label("a") == "stage 1 a" and unplanned.label("b") == "stage 2 b"


def test_a_resumed_run_counts_finished_stages_as_done():
    p = RunProgress([("a", 3), ("b", 3), ("c", 3)], echo=False)
    p.skip("a")
    p.begin("b", 3, done=1)  # resumed after epoch 1
    p.epoch_done("b", 2, 4.0)
    assert p.eta("b") == (4.0, 16.0)  # 1 epoch of b + 3 of c, 4 s each


def test_the_overall_bar_counts_every_planned_epoch(capsys):
    p = RunProgress([("a", 2), ("b", 3), ("c", 1)], echo=False)
    p.open_bar(disable=False)  # shown even when not a terminal
    assert p.bar.total == 6
    p.skip("a")  # resumed: a is done
    p.begin("b", 3, done=1)
    assert p.bar.n == 3
    p.epoch_done("b", 2, 10.0)
    assert p.bar.n == 4 and p.bar.postfix == "ETA 20s"  # 1 epoch of b + 1 of c
    p.close_bar()
    assert "4/6 epochs" in capsys.readouterr().err
    unplanned = RunProgress()
    unplanned.open_bar(disable=False)
    assert unplanned.bar is None


def test_lines_wait_for_the_run_folder_then_go_to_run_log(tmp_path, capsys):
    log = tmp_path / "out" / "run.log"
    p = RunProgress([("a", 1)], echo=True)
    p.say("banner")
    (tmp_path / "out").mkdir()
    p.attach(log)
    p.say("line 2")
    p.say("quiet", echo=False)
    assert log.read_text() == "banner\nline 2\nquiet\n"
    assert capsys.readouterr().out == "banner\nline 2\n"


def test_tags_are_grouped():
    cols = ["loss", "term_kd", "grad_norm", "share_kd", "cos_kd", "norm_kd", "train_loss",
            "train_term/kd", "train_kd", "val_accuracy", "lr", "images_per_s"]
    assert [tb_tag(c) for c in cols] == [
        "train/loss", "train/kd", "grad/norm", "grad/share_kd", "grad/cos_kd", "grad/norm_kd",
        "epoch/loss", "epoch/kd", "epoch/unweighted_kd", "val/accuracy", "opt/lr",
        "speed/images_per_s"]


def test_flat_hparams():
    assert flat_hparams({"train": {"lr": 1e-3, "max_grad_norm": None}, "runs": ["kd"],
                         "x": True}) == {"train.lr": 1e-3, "train.max_grad_norm": "None",
                                         "runs": "['kd']", "x": True}


# ------------------------------------------------------------------------------ training
def test_epoch_lines_print_without_progress_bars_and_go_to_run_log(tmp_path, capsys):
    _train(tmp_path, epochs=2)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("[train] 2 epochs, 20 training items, batch 6 (4 steps/epoch)")
    assert out[1].startswith("[train] epoch 1/2  loss ") and "(l1 " in out[1]
    assert out[2].startswith("[train] epoch 2/2  loss ")
    assert out[3].startswith("[train] done in ") and "lowest loss" in out[3]
    assert "{" not in "".join(out)  # no raw dict
    assert (tmp_path / "run.log").read_text().splitlines() == out


def test_loggers_on_or_off_train_bit_identical_models(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    off = _train(tmp_path / "off", diag_every=0)
    monkeypatch.setitem(sys.modules, "mlflow", FakeMLflow())
    on = _train(tmp_path / "on", tensorboard=True, mlflow=True, diag_every=1)
    for (k, a), b in zip(off.state_dict().items(), on.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_tensorboard_gets_per_step_terms_grouped_tags_and_hparams(tmp_path):
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator").EventAccumulator
    _train(tmp_path, epochs=2, tensorboard=True, diag_every=4)
    events = accumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/mse", "train/l1", "grad/norm", "grad/share_mse",
            "epoch/loss", "epoch/mse", "opt/lr", "speed/images_per_s",
            "hparam/best_score"} <= tags
    assert [e.step for e in events.Scalars("train/mse")] == list(range(1, 9))  # every step
    assert [e.step for e in events.Scalars("grad/share_l1")] == [1, 4, 8]
    assert [e.step for e in events.Scalars("epoch/loss")] == [1, 2]
    assert "_hparams_/experiment" in events.PluginTagToContent("hparams")


def test_missing_tensorboard_is_one_clear_warning(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    _train(tmp_path / "a", epochs=1, tensorboard=True)
    _train(tmp_path / "b", epochs=1, tensorboard=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["warning: train.tensorboard is true but the tensorboard package is not "
                   "installed: no TensorBoard logs (pip install tensorboard, or set "
                   "train.tensorboard: false)"]  # once per process
    assert not (tmp_path / "a" / "tb").exists()
    assert "warning: train.tensorboard" in (tmp_path / "a" / "run.log").read_text()


def test_mlflow_gets_params_epoch_and_step_metrics(tmp_path, monkeypatch):
    fake = FakeMLflow()
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    _train(tmp_path, epochs=2, mlflow=True, mlflow_experiment="exp", diag_every=4)
    names = [c[0] for c in fake.calls]
    assert names[:4] == ["set_experiment", "start_run", "set_tags", "log_params"]
    assert names[-1] == "end_run" and names.count("start_run") == 1
    assert fake.calls[-1][2] == {"status": "FINISHED"}
    assert fake.calls[0][1] == ("exp",)
    assert fake.calls[1][2] == {"run_name": "train", "nested": False}
    params = fake.calls[3][1][0]
    assert params["train.lr"] == "0.01" and params["run"] == "train"
    metrics = [(c[2]["step"], c[1][0]) for c in fake.calls if c[0] == "log_metrics"]
    per_step = [s for s, m in metrics if "train/mse" in m]
    assert per_step == list(range(1, 9))
    per_epoch = [s for s, m in metrics if "epoch/loss" in m]
    assert per_epoch == [1, 2]


def test_missing_mlflow_is_one_clear_warning(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    _train(tmp_path, epochs=1, mlflow=True)
    err = capsys.readouterr().err
    assert "warning: train.mlflow is true but the mlflow package is not installed" in err


def test_an_mlflow_run_cut_short_ends_failed(tmp_path, monkeypatch):
    fake = FakeMLflow()
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    save = Trainer._save

    def save_then_interrupt(self, path, opt, sched, state):
        save(self, path, opt, sched, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, epochs=2, mlflow=True)
    assert fake.calls[-1] == ("end_run", (), {"status": "FAILED"})


def test_a_tracking_store_that_refuses_is_one_line_naming_the_key(tmp_path, monkeypatch):
    from medistill.errors import TrainingError

    fake = FakeMLflow()

    def refuse(*a, **k):
        raise RuntimeError("no store at file:/x\n(details)")

    fake.set_experiment = refuse
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    with pytest.raises(TrainingError, match=r"^train\.mlflow: MLflow cannot start a run \(no "
                       r"store at file:/x"):
        _train(tmp_path, epochs=1, mlflow=True)


@pytest.mark.slow
def test_a_real_mlflow_store_gets_the_run(tmp_path, monkeypatch):
    """Only where mlflow is installed (the optional ``mlflow`` extra; slow-marked so the default
    suite on a fresh machine skips nothing)."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 prefers a database
    _train(tmp_path / "run", epochs=2, mlflow=True, mlflow_experiment="t", diag_every=4)
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert run.info.run_name == "train" and run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.01"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/mse")] == \
        list(range(1, 9))
    assert [m.step for m in client.get_metric_history(run.info.run_id, "epoch/loss")] == [1, 2]
