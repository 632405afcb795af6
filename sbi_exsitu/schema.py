"""TOML configuration files: loading and key validation with helpful errors.

Every experiment is one TOML file under ``configs/`` (stdlib :mod:`tomllib`).
Sections are plain dicts; :func:`take_section` turns one into a dataclass. It is
the one place values are checked before any code sees them:

* unknown keys are refused with the closest known name, so a typo never silently
  falls back to a default;
* each value must match the field's annotation (``int``, ``float`` (an int is
  accepted), ``str``, ``bool`` (not 0/1), ``tuple[...]``/``list[...]`` of those,
  ``X | None`` (TOML has no null: ``false`` means None), ``dict``);
* fields declare bounds as metadata, ``field(default=30, metadata={"min": 0})``
  (``"min"``: value >= min, ``"gt"``: value > gt), checked here too.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Prior:
    ...     low: float = 0.0
    ...     high: float = 1.0
    >>> take_section({"low": 0.2}, Prior, where="cfg.toml [prior]")
    Prior(low=0.2, high=1.0)
    >>> try:
    ...     take_section({"low": "big"}, Prior, where="cfg.toml [prior]")
    ... except ConfigError as err:
    ...     print(err)
    cfg.toml [prior]: 'low' is 'big' (str), expected float (a number)
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar, Union

from sbi_exsitu.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["ConfigError", "load_toml", "check_keys", "check_types", "take_section"]

T = TypeVar("T")

logger = logging.getLogger(__name__)


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
            doc = tomllib.load(fh)
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 TOML file") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err
    if not doc:
        logger.warning("%s: the config file is empty; using the defaults", path)
    return doc


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

    Values are checked against the field annotations and ``min``/``gt`` metadata
    (see the module docstring) before the dataclass is built. Lists become
    tuples, so frozen dataclasses stay hashable; ints given for a float become
    floats.

    Args:
        section: the parsed section (``None`` means all defaults).
        cls: a dataclass type whose fields are the allowed keys.
        where: a description of the section for error messages.

    Returns:
        An instance of ``cls``.

    Raises:
        ConfigError: unknown key, a value of the wrong type or out of bounds, or
            the dataclass rejected a value.
    """
    section = dict(section or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    check_keys(section, fields, where)
    section = check_types(section, cls, where)
    try:
        return cls(**section)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from err


def check_types(section: Mapping[str, Any], cls: type, where: str) -> dict[str, Any]:
    """Check each value of ``section`` against the field of ``cls`` it sets.

    Keys that are not fields of ``cls`` are left alone (:func:`check_keys` refuses
    those). Returns a copy with lists as tuples and ints for floats as floats.

    Raises:
        ConfigError: naming ``where``, the key, the value given and the type or
            bound expected.
    """
    hints = typing.get_type_hints(cls)
    out = dict(section)
    for f in dataclasses.fields(cls):
        if f.name not in section:
            continue
        value, tp = section[f.name], hints.get(f.name, Any)
        if not _matches(value, tp):
            raise ConfigError(
                f"{where}: '{f.name}' is {value!r} ({type(value).__name__}), "
                f"expected {_describe(tp)}"
            )
        _check_bounds(f, value, where)
        if isinstance(value, list):
            value = tuple(value)
        elif tp is float and isinstance(value, int):
            value = float(value)
        out[f.name] = value
    return out


def _check_bounds(f: dataclasses.Field, value: Any, where: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    low, above = f.metadata.get("min"), f.metadata.get("gt")
    if low is not None and not value >= low:
        raise ConfigError(f"{where}: '{f.name}' is {value!r}, expected >= {low}")
    if above is not None and not value > above:
        raise ConfigError(f"{where}: '{f.name}' is {value!r}, expected > {above}")


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _matches(value: Any, tp: Any) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if _is_union(tp):
        # TOML has no null; ``false`` switches an optional setting off.
        if type(None) in args and value is False:
            return True
        return any(_matches(value, a) for a in args)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp in (tuple, list) or origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and not (len(args) == 2 and args[1] is ...):
            return len(value) == len(args) and all(map(_matches, value, args))
        return not args or all(_matches(v, args[0]) for v in value)
    if tp is dict or origin is dict:
        return isinstance(value, dict)
    return isinstance(value, tp) if isinstance(tp, type) else True


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_union(tp):
        named = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or false" if type(None) in args else "")
    if origin is tuple and args and not (len(args) == 2 and args[1] is ...):
        return f"a list of {len(args)} values ({', '.join(map(_describe, args))})"
    if origin in (tuple, list):
        return f"a list of {_describe(args[0])}" if args else "a list"
    if origin is dict or tp is dict:
        return "a table"
    if tp is float:
        return "float (a number)"
    return getattr(tp, "__name__", str(tp))
