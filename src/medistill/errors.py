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
