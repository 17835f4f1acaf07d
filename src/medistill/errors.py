"""Errors medistill raises for bad input.

Every error a user can cause (bad recipe, unreadable image, mismatched checkpoint, a loss that
became NaN) is a :class:`MedistillError`. The CLI prints its message as one line and exits
non-zero; the message always names the file or key at fault.
"""


class MedistillError(Exception):
    """Base class: a user-facing error with a one-line message."""


class DataError(MedistillError):
    """A dataset, image, CSV manifest or split is missing, empty or unreadable."""


class RecipeError(MedistillError):
    """A recipe key is unknown, missing or of the wrong type."""


class CheckpointError(MedistillError):
    """A checkpoint is missing, corrupt or does not match the model it is loaded into."""


class TrainingError(MedistillError):
    """Training cannot go on (e.g. the loss became NaN or infinite)."""


class OutputError(MedistillError):
    """An output location cannot be written (a file in the way, read-only, out of space)."""


def one_line(err: BaseException) -> str:
    """The message of ``err`` as one line.

    An error raised inside a DataLoader worker comes back as ``Caught DataError in DataLoader
    worker process 0.`` followed by the worker's traceback; its last line holds the original
    message (``medistill.errors.DataError: cannot read image ...``), which is what is kept.
    An ``OSError`` keeps its reason and the path it names.
    """
    if isinstance(err, OSError) and not isinstance(err, MedistillError):
        reason = err.strerror or str(err) or type(err).__name__
        where = err.filename if err.filename is not None else None
        return f"{where}: {reason}" if where is not None else reason
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    if len(lines) > 1 and "Traceback" in str(err):
        last = lines[-1]
        head, sep, rest = last.partition(": ")
        return rest if sep and head.replace(".", "").replace("_", "").isalnum() else last
    return " ".join(line.strip() for line in lines)
