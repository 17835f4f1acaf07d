"""Iterative fusion KD with dynamic role reversal (He, Li, Zemp, 2024, section 3.2).

Round r trains the student from the frozen teacher (one :class:`~medistill.methods.FusionKD`
run, its best epoch selected on validation). Then teacher and student are compared on the
VALIDATION split with the same score (:func:`~medistill.methods.decide_swap`):

- student better (by more than ``min_delta``): the roles swap; the student becomes the teacher
  and the old teacher, from its weights, the student of the next round;
- otherwise no swap: the next round continues training the same student (from its best
  weights) on the same teacher; after ``patience`` rounds in a row without a swap the
  iteration stops.

At most ``rounds`` rounds. The result is the teacher after the last round: the model that won
every comparison, i.e. the best on validation of those compared. With ``reverse=False`` (the
"fusion KD without role reversal" ablation) the teacher is never replaced, all ``rounds``
rounds are run, and the result is the student of the last round.

The loop sees model files and a validation scorer only; the test split is never passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from medistill.methods.mil_fusion import decide_swap


@dataclass
class RoundRecord:
    round: int
    teacher: str  # model file of the round's teacher
    student: str  # model file of the round's trained student (best epoch)
    teacher_val: float
    student_val: float
    swapped: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class IterativeFusion:
    """Runs the rounds.

    Args:
        train_round: ``(round, teacher file, student init file or None) -> student file``
            (None: a freshly initialised student).
        val_score: model file -> its validation score (higher is better).
        rounds, patience, min_delta, reverse: see the module doc.
    """

    def __init__(self, train_round: Callable[[int, Path, Path | None], Path],
                 val_score: Callable[[Path], float], rounds: int = 3, patience: int = 1,
                 min_delta: float = 0.0, reverse: bool = True) -> None:
        self.train_round = train_round
        self.val_score = val_score
        self.rounds, self.patience = int(rounds), int(patience)
        self.min_delta, self.reverse = float(min_delta), bool(reverse)
        self._scores: dict[Path, float] = {}

    def score(self, path: Path) -> float:
        if path not in self._scores:
            self._scores[path] = float(self.val_score(path))
        return self._scores[path]

    def run(self, teacher: Path) -> tuple[Path, list[RoundRecord]]:
        records: list[RoundRecord] = []
        student_init: Path | None = None
        stale = 0
        last_student = teacher
        for r in range(1, self.rounds + 1):
            student = self.train_round(r, teacher, student_init)
            last_student = student
            t_val, s_val = self.score(teacher), self.score(student)
            swap = self.reverse and decide_swap(t_val, s_val, self.min_delta)
            records.append(RoundRecord(r, str(teacher), str(student), t_val, s_val, swap))
            if swap:
                teacher, student_init, stale = student, teacher, 0
            else:
                student_init = student
                stale += 1
                if self.reverse and stale >= self.patience:
                    break
        return (teacher if self.reverse else last_student), records
