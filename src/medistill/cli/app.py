"""The ``medistill`` Typer application and its root options (commands live beside it)."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    help="Knowledge distillation for medical and histopathology imaging.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from medistill import __version__

        typer.echo(f"medistill {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print the medistill version and exit.")] = False,
) -> None:
    """Knowledge distillation for medical and histopathology imaging."""



DEVICE_HELP = "Where the model runs: cpu, cuda, cuda:N, mps or auto (a GPU if there is one)."


def check_device_option(device: str) -> str:
    """``--device``, checked before any file is read or written (one line naming it)."""
    from medistill.config import check_device
    from medistill.errors import MedistillError

    try:
        check_device(device)
    except ValueError as e:
        raise MedistillError(f"--device {e}") from None
    return device
