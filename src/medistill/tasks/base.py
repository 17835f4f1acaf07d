"""What every task shares: the versioned model card a model file carries, and the registry.

A *task* is what a model predicts and how it is scored, exported and shown: classification,
segmentation, weak (MIL) segmentation, instance segmentation (one module each). Each owns a
typed model card (:class:`ModelCard` subclass): everything needed to rebuild, feed and decode
the model, written into its model file as a plain dict (``card.model_dump()``), plus its export
signature and the CLI columns it shows.

Versioning: ``card_version`` is :data:`CARD_VERSION`; :func:`card_from_meta` migrates files
written before cards had a version (version 0: the hand-built meta dicts, same keys, possibly
without ``task`` (classification) or ``view``) to the current version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from medistill.errors import CheckpointError
from medistill.registry import Registry

CARD_VERSION = 1
#: input / output names of every exported graph (ONNX / TorchScript)
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
#: keys of a model file that are not part of its card
FILE_KEYS = ("format", "state_dict", "imports")


#: the view of a model that sees the image as it is
IDENTITY_VIEW: dict[str, Any] = {"factor": 1, "upsample": False}


class ModelCard(BaseModel):
    """The fields every task's card has."""

    #: keys of no task's card (a user's own) are kept as they are
    model_config = ConfigDict(extra="allow", protected_namespaces=())
    card_version: int = CARD_VERSION
    task: str
    model: dict[str, Any] = Field(description="the model spec: {name, kwargs}")
    classes: list[str]
    normalization: dict[str, list[float]] = Field(description="{mean, std} per channel")
    image_size: int | None = None
    mpp: float | None = Field(None, description="microns per pixel of the model input "
                              "(predict-wsi reads it; None: not recorded)")


@dataclass(frozen=True)
class MetricColumn:
    """One metric column of the results table ``medistill evaluate`` prints.

    A cell is ``value (low-high)`` (header ``"<header> (95% CI)"``) when ``ci``, else the value
    alone (a metric the record lacks shows as ``nan``); with ``then`` two metrics share one
    cell as ``a/b``."""

    metric: str
    header: str
    width: int = 22
    ci: bool = True
    digits: int = 3
    #: a second metric shown after ``metric`` as ``value/value`` (no CI)
    then: str | None = None

    @property
    def title(self) -> str:
        return f"{self.header} (95% CI)" if self.ci else self.header

    def cell(self, metrics: dict[str, Any]) -> str:
        d = self.digits
        if self.then is not None:
            a, b = metrics[self.metric]["value"], metrics[self.then]["value"]
            return f"{a:>5.{d}f}/{b:<5.{d}f}"
        if self.ci:
            m = metrics[self.metric]
            return f"{m['value']:.{d}f} ({m['low']:.{d}f}-{m['high']:.{d}f})"
        return f"{metrics.get(self.metric, {}).get('value', float('nan')):.{d}f}"


@dataclass(frozen=True)
class Task:
    """A task: its card type, what its exported graph returns, and its CLI columns."""

    name: str
    card: type[ModelCard]
    #: what the exported graph's output holds
    output_kind: str = "logits (softmax for probabilities)"
    #: the metric columns ``medistill evaluate`` (and ``run``) print, in order
    columns: tuple[MetricColumn, ...] = ()
    #: card keys copied into an export's sidecar for decoding the output
    export_keys: tuple[str, ...] = ()

    def export_signature(self) -> dict[str, Any]:
        return {"input": {"name": INPUT_NAME, "layout": "NCHW", "dtype": "float32",
                          "normalized": True},
                "output": {"name": OUTPUT_NAME, "kind": self.output_kind}}


TASKS: Registry[Task] = Registry("task")


def register_task(task: Task) -> Task:
    TASKS.register(task.name)(task)  # type: ignore[arg-type]
    return task


def get_task(name: str) -> Task:
    return TASKS.get(name)  # type: ignore[return-value]


def task_name(meta: dict[str, Any]) -> str:
    """The registered task of a model file's card (a weak segmenter's card says
    ``task: segmentation`` and ``weak: true``)."""
    if meta.get("weak"):
        return "weak_segmentation"
    return str(meta.get("task", "classification"))


def migrate(meta: dict[str, Any]) -> dict[str, Any]:
    """A version-0 card (no ``card_version``) as a current one."""
    card = {k: v for k, v in meta.items() if k not in FILE_KEYS}
    version = card.get("card_version", 0)
    if version == CARD_VERSION:
        return card
    if version != 0:
        raise CheckpointError(f"model card version {version!r} is not known to this medistill "
                              f"(it reads up to {CARD_VERSION}); upgrade medistill")
    card.setdefault("task", "classification")
    if card["task"] in ("classification", "segmentation"):
        card.setdefault("view", dict(IDENTITY_VIEW))
    card["card_version"] = CARD_VERSION
    return card


def card_from_meta(meta: dict[str, Any], source: str = "model file") -> ModelCard:
    """The typed card of a model file's meta (migrated when older); a one-line
    :class:`CheckpointError` naming ``source`` when it is not a valid card."""
    from pydantic import ValidationError

    card = migrate(meta)
    try:
        task = get_task(task_name(card))
    except Exception:  # noqa: BLE001  (an unknown task name)
        raise CheckpointError(f"{source}: unknown task {card.get('task')!r}; choose one of: "
                              f"{', '.join(TASKS.names())}") from None
    try:
        return task.card.model_validate(card)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise CheckpointError(f"{source}: model card key {where!r}: {err['msg']}") from None


