"""The ``medistill`` command line: run, demo, evaluate, profile, export, predict, predict-wsi.

One module per group of commands; importing this package registers them all on ``app``.
"""

from __future__ import annotations

import sys

import typer

from medistill.cli import deploy, evaluate, train  # noqa: F401  (register the commands)
from medistill.cli.app import app
from medistill.cli.tables import (
    CLASSIFICATION_COLUMNS,
    INSTANCE_COLUMNS,
    SEGMENTATION_COLUMNS,
    WEAK_COLUMNS,
    print_paired,
    print_table,
)
from medistill.errors import MedistillError, one_line

__all__ = ["CLASSIFICATION_COLUMNS", "INSTANCE_COLUMNS", "SEGMENTATION_COLUMNS", "WEAK_COLUMNS",
           "app", "main", "print_paired", "print_table"]


def main() -> None:
    try:
        app()
    except (MedistillError, OSError) as e:  # bad input or an output location: one line
        typer.echo(f"error: {one_line(e)}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
