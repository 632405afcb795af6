"""The CLI's one error boundary, its help text, and the library's import hygiene."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

import sbi_exsitu
from sbi_exsitu.cli import app
from sbi_exsitu.errors import ConfigError, SbiExsituError

runner = CliRunner()


@pytest.fixture
def boom_app(monkeypatch):
    """The real app with one extra command that raises what the test asks."""
    to_raise: list[BaseException] = []

    @app.command("boom-test")
    def _boom() -> None:
        raise to_raise[0]

    yield to_raise
    app.registered_commands[:] = [
        c for c in app.registered_commands if c.name != "boom-test"
    ]


def test_package_error_is_one_line_exit_2(boom_app):
    boom_app.append(ConfigError("cfg.toml [run]: 'seed' is 'x', expected int"))
    result = runner.invoke(app, ["boom-test"])
    assert result.exit_code == 2
    assert result.stderr == "error: cfg.toml [run]: 'seed' is 'x', expected int\n"
    assert "Traceback" not in result.output


def test_os_error_on_a_file_is_one_line_exit_2(boom_app):
    boom_app.append(FileNotFoundError(2, "No such file or directory", "x.h5"))
    result = runner.invoke(app, ["boom-test"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "x.h5" in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("exc", [ValueError("bug"), KeyError("k"), TypeError("t")])
def test_unexpected_exception_is_not_swallowed(boom_app, exc):
    boom_app.append(exc)
    result = runner.invoke(app, ["boom-test"])
    assert result.exit_code == 1
    assert result.exception is exc
    assert "error:" not in result.output


def test_every_named_error_derives_from_the_base():
    import sbi_exsitu.errors as errors

    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, SbiExsituError), name
    # Callers catching the built-in kinds keep working.
    assert issubclass(errors.ConfigError, ValueError)
    assert issubclass(errors.RunExistsError, FileExistsError)
    assert issubclass(errors.RunError, FileNotFoundError)


def test_reexports_are_the_same_classes():
    import sbi_exsitu.errors as errors
    from sbi_exsitu.data.dataset import DatasetError
    from sbi_exsitu.data.render import RenderError
    from sbi_exsitu.runs import RunExistsError
    from sbi_exsitu.schema import ConfigError as SchemaConfigError

    assert SchemaConfigError is errors.ConfigError
    assert DatasetError is errors.DatasetError
    assert RenderError is errors.RenderError
    assert RunExistsError is errors.RunExistsError


def test_fit_of_missing_config_is_a_clean_error(tmp_path):
    result = runner.invoke(app, ["fit", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "nope.toml" in result.stderr


def test_calibrate_of_unfinished_run_is_a_clean_error(tmp_path):
    result = runner.invoke(app, ["calibrate", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a finished run" in result.stderr


def _commands() -> list[str]:
    return [c.name or c.callback.__name__ for c in app.registered_commands]


@pytest.mark.parametrize("command", _commands())
def test_help_keeps_bracketed_words(command):
    result = runner.invoke(app, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    source = typer.main.get_command(app).commands[command]
    for param in source.params:
        text = getattr(param, "help", None) or ""
        for word in ("[render]", "[simulate]", "[crosstest]", "[run]", "[default"):
            if word in text:
                assert word in result.output, (command, word)


def test_help_shows_render_table_and_default():
    out = runner.invoke(app, ["render", "--help"], terminal_width=200).output
    assert "[render]" in out
    out = runner.invoke(app, ["predict", "--help"], terminal_width=200).output
    assert "[default: 1000; 100 for maps]" in out


def _library_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(sbi_exsitu.__path__, "sbi_exsitu."):
        if info.name.startswith("sbi_exsitu.cli") or info.name == "sbi_exsitu.__main__":
            continue
        names.append(info.name)
    return names


def test_library_import_has_no_side_effects():
    """Importing any library module keeps the backend and prints nothing."""
    modules = _library_modules()
    assert len(modules) > 20
    code = (
        "import importlib, matplotlib\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "    b = matplotlib.get_backend()\n"
        "    assert b == 'svg', (name, b)\n"
    )
    env = dict(os.environ, MPLBACKEND="svg")
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""


def test_cli_picks_a_non_interactive_backend(tmp_path):
    code = (
        "import matplotlib\n"
        "from sbi_exsitu.cli import app\n"
        "from typer.testing import CliRunner\n"
        f"CliRunner().invoke(app, ['fit', {str(tmp_path / 'x.toml')!r}])\n"
        "print(matplotlib.get_backend().lower())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "agg"
