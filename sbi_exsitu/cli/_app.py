"""The typer application every command module registers on.

Errors are turned into messages in one place, :class:`_Group.invoke`: a
:class:`~sbi_exsitu.errors.SbiExsituError` (bad input) or an ``OSError`` (a file
that cannot be read or written) prints one ``error: ...`` line on stderr and
exits with code 2. Every other exception is a bug and keeps its traceback, so
commands must not catch broad built-in exceptions themselves.

The same place sets up what a library must not do at import: a non-interactive
matplotlib backend (unless ``MPLBACKEND`` says otherwise) and a handler that
shows the package's ``logging`` messages on stderr.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import typer
from typer.core import TyperGroup

from sbi_exsitu.errors import SbiExsituError

__all__ = ["app", "fail", "EXIT_USER_ERROR"]

#: Exit code of a user error (bad config, file, option); click uses it too.
EXIT_USER_ERROR = 2


class _EchoHandler(logging.Handler):
    """Logging records as plain lines on the current stderr.

    ``typer.echo`` looks ``sys.stderr`` up at each call, so the handler follows
    a redirected stream (``CliRunner``) instead of holding the one at setup.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            typer.echo(self.format(record), err=True)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def _setup_runtime() -> None:
    if "MPLBACKEND" not in os.environ:
        import matplotlib

        matplotlib.use("Agg")
    logger = logging.getLogger("sbi_exsitu")
    if not any(isinstance(h, _EchoHandler) for h in logger.handlers):
        logger.addHandler(_EchoHandler())
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


class _Group(TyperGroup):
    """The root command: runtime setup, then the one error-to-message boundary."""

    def invoke(self, ctx: typer.Context) -> Any:
        _setup_runtime()
        try:
            return super().invoke(ctx)
        except (SbiExsituError, OSError) as err:
            raise fail(_describe(err)) from None


def _describe(err: BaseException) -> str:
    text = getattr(err, "cli_message", None) or str(err)
    # An OSError raised by open() reads "[Errno 2] No such file or directory:
    # 'x'"; that names the file already. One without text still gets a name.
    return text if text else type(err).__name__


app = typer.Typer(
    cls=_Group,
    name="sbi-exsitu",
    help="Simulation-based inference of the ex-situ stellar mass fraction of galaxies.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Help strings name TOML tables ("[render]") and defaults ("[default: 1000]");
    # rich markup would eat the brackets, so help is printed as written.
    rich_markup_mode=None,
)


def fail(message: str, code: int = EXIT_USER_ERROR) -> typer.Exit:
    """Print ``message`` to stderr and return an Exit to raise (clean, no traceback).

    For checks the CLI itself makes on its options; errors raised by the library
    reach the user through :class:`_Group` instead.
    """
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)
