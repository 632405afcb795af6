"""TOML configuration files: loading and key validation with helpful errors.

Every experiment is one TOML file under ``configs/`` (stdlib :mod:`tomllib`).
Sections are plain dicts; :func:`take_section` turns one into keyword arguments and
refuses unknown keys with the closest known name, so a typo never silently falls
back to a default.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Prior:
    ...     low: float = 0.0
    ...     high: float = 1.0
    >>> take_section({"low": 0.2}, Prior, where="cfg.toml [prior]")
    Prior(low=0.2, high=1.0)
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["ConfigError", "load_toml", "check_keys", "take_section"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or section is malformed; the message says where."""


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file, with errors that name the file.

    Args:
        path: the TOML file.

    Returns:
        The parsed document.

    Raises:
        ConfigError: the file is missing or not valid TOML.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err


def check_keys(section: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    """Raise if ``section`` holds a key not in ``allowed``, suggesting the closest.

    Args:
        section: the parsed section.
        allowed: the keys that exist.
        where: a description of the section for the message (file and table).

    Raises:
        ConfigError: naming the unknown key, the closest known one and all known.
    """
    allowed = sorted(allowed)
    for key in section:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"{where}: unknown key '{key}'.{hint} Known keys: {', '.join(allowed)}"
            )


def take_section(section: Mapping[str, Any] | None, cls: type[T], where: str) -> T:
    """Build the dataclass ``cls`` from a config section, validating its keys.

    Lists in the section become tuples when the field's default is a tuple, so
    frozen dataclasses stay hashable.

    Args:
        section: the parsed section (``None`` means all defaults).
        cls: a dataclass type whose fields are the allowed keys.
        where: a description of the section for error messages.

    Returns:
        An instance of ``cls``.

    Raises:
        ConfigError: unknown key, or the dataclass rejected a value.
    """
    section = dict(section or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    check_keys(section, fields, where)
    for key, value in section.items():
        if isinstance(value, list):
            section[key] = tuple(value)
    try:
        return cls(**section)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from err
