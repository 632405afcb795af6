"""What an install ships: every subpackage, the configs, one version."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest

import sbi_exsitu
from sbi_exsitu.config import packaged_config, packaged_configs, resolve_config
from sbi_exsitu.schema import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def _source_packages() -> set[str]:
    """Package names of every directory with an __init__.py, as installed."""
    roots = {"sbi_exsitu": ROOT / "sbi_exsitu"}
    for name, directory in SETUPTOOLS["package-dir"].items():
        roots[name] = ROOT / directory
    found = set()
    for name, root in roots.items():
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root).parts
            found.add(".".join([name, *rel]))
    return found


def test_pyproject_lists_every_package():
    listed = set(SETUPTOOLS["packages"])
    found = _source_packages()
    assert found - listed == set(), "add to [tool.setuptools] packages"
    assert listed - found == set(), "listed in pyproject but not in the source tree"
    assert "sbi_exsitu.embeddings" in found and "sbi_exsitu.data.mock" in found


def test_version_is_single_sourced():
    assert "version" not in PYPROJECT["project"]
    assert "version" in PYPROJECT["project"]["dynamic"]
    assert importlib.metadata.version("sbi-exsitu") == sbi_exsitu.__version__


def test_quickstart_config_ships():
    path = packaged_config("quickstart.toml")
    assert path.is_file()
    assert path.read_bytes() == (ROOT / "configs" / "quickstart.toml").read_bytes()
    assert packaged_config("quickstart") == path
    shipped = {p.name for p in (ROOT / "configs").glob("*.toml")}
    assert set(packaged_configs()) == shipped


def test_unknown_packaged_config_names_the_shipped_ones():
    with pytest.raises(ConfigError, match="no such packaged config.*quickstart.toml"):
        packaged_config("quikstart.toml")


def test_resolve_config_prefers_files_then_packaged_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config("quickstart.toml") == packaged_config("quickstart.toml")
    (tmp_path / "quickstart.toml").write_text("[run]\n")
    assert resolve_config("quickstart.toml") == Path("quickstart.toml")
    with pytest.raises(ConfigError, match="not found.*ships"):
        resolve_config("configs/nope.toml")
    with pytest.raises(ConfigError, match="not found"):
        resolve_config("sub/quickstart.toml")  # a path is never a packaged name


def test_packaged_quickstart_paths_stay_relative_to_the_cwd(tmp_path, monkeypatch):
    from sbi_exsitu.config.experiment import ExperimentConfig

    monkeypatch.chdir(tmp_path)
    cfg = ExperimentConfig.from_toml(resolve_config("quickstart"))
    assert cfg.train_path.resolve().parent == tmp_path / "data"
    assert cfg.run_dir.resolve().parent == tmp_path / "runs"


def test_the_cli_needs_no_undeclared_package() -> None:
    # typer vendors click; `import click` works only where some other package
    # (mkdocs, in the dev extra) happens to install it, so an installed
    # sbi-exsitu without the dev tools failed at `sbi-exsitu --help`.
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['click'] = None\n"
        "from sbi_exsitu.cli import app\n"
        "from typer.testing import CliRunner\n"
        "res = CliRunner().invoke(app, ['--help'])\n"
        "assert res.exit_code == 0, res.output\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
