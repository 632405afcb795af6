"""The experiment configs that ship inside the package (``sbi_exsitu.configs``).

The repository keeps them in ``configs/``; an install maps that directory to the
``sbi_exsitu.configs`` package, so :mod:`importlib.resources` finds them both in
a checkout and after ``pip install``. Relative paths inside a config (``[data]
train``, ``[run] out_dir``) stay relative to the *current directory*, never to
the installed file: running from an empty directory creates ``data/`` and
``runs/`` there, not inside site-packages.

Example:
    >>> from sbi_exsitu.config.packaged import packaged_config, packaged_configs
    >>> "quickstart.toml" in packaged_configs()
    True
    >>> packaged_config("quickstart").name
    'quickstart.toml'
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from sbi_exsitu.schema import ConfigError

__all__ = ["packaged_config", "packaged_configs", "resolve_config"]

_PACKAGE = "sbi_exsitu.configs"


def packaged_configs() -> list[str]:
    """The file names of the shipped configs, sorted."""
    return sorted(p.name for p in files(_PACKAGE).iterdir() if p.name.endswith(".toml"))


def packaged_config(name: str) -> Path:
    """The path of a shipped config, by file name (``.toml`` may be left out).

    Args:
        name: e.g. ``"quickstart.toml"`` or ``"quickstart"``.

    Returns:
        The config's path on disk.

    Raises:
        ConfigError: no shipped config has that name (the message lists them).
    """
    file_name = name if name.endswith(".toml") else f"{name}.toml"
    resource = files(_PACKAGE) / file_name
    if not resource.is_file():
        raise ConfigError(
            f"{name}: no such packaged config; the package ships "
            f"{', '.join(packaged_configs())}"
        )
    # Wheels install as plain files, so this is a real path; a zipped install
    # would need importlib.resources.as_file, which no supported install uses.
    return Path(str(resource))


def resolve_config(config: str | Path) -> Path:
    """A config argument as a path: an existing file, else a shipped config's name.

    Args:
        config: a path to a TOML file, or the bare name of a packaged config
            (``quickstart.toml``, ``quickstart``) to use from outside a checkout.

    Returns:
        The path to read.

    Raises:
        ConfigError: neither a file nor the bare name of a packaged config.

    Example:
        >>> resolve_config("quickstart.toml") == packaged_config("quickstart.toml")
        True
    """
    path = Path(config)
    if path.is_file():
        return path
    if path.parent == Path("."):
        try:
            return packaged_config(path.name)
        except ConfigError:
            pass
    raise ConfigError(
        f"{config}: config file not found (not a file, nor a packaged config; "
        f"the package ships {', '.join(packaged_configs())})"
    )
