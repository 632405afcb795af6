"""Registry of formation models by name; adding a model is adding one file.

Every module of :mod:`sbi_exsitu.data.mock` (other than the shared ``base``,
``profiles`` and ``registry``) is imported on first use; a module registers its
model class with the :func:`register_model` decorator. A model's parameters are
overridable by keyword (from a config's ``[model]`` table).

Third-party packages add models through the entry-point group
:data:`ENTRY_POINT_GROUP`; each entry point names a :class:`FormationModel`
subclass, registered under the entry point's name on first use, e.g. in the
plug-in's ``pyproject.toml``::

    [project.entry-points."sbi_exsitu.formation_models"]
    my-model = "my_package.models:MyModel"

after which ``model = "my-model"`` works in ``[simulate]``.

Example:
    >>> from sbi_exsitu.data.mock import get_model
    >>> get_model("tng-like", max_particles=5000).max_particles
    5000
    >>> try:
    ...     get_model("tng_like")
    ... except ValueError as err:
    ...     print(err)
    unknown formation model 'tng_like'. Did you mean 'tng-like'? Known models: ...
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.metadata
import pkgutil
from collections.abc import Callable
from typing import Any, TypeVar

from sbi_exsitu.data.mock.base import FormationModel, ModelError

__all__ = ["register_model", "get_model", "available_models", "ENTRY_POINT_GROUP"]

#: Entry-point group through which installed packages register formation models.
ENTRY_POINT_GROUP = "sbi_exsitu.formation_models"

M = TypeVar("M", bound=type[FormationModel])

_MODELS: dict[str, type[FormationModel]] = {}
_SHARED_MODULES = {"base", "profiles", "registry"}
_discovered = False


def register_model(name: str) -> Callable[[M], M]:
    """Class decorator: register a :class:`FormationModel` subclass as ``name``.

    Args:
        name: the model's public name (used in configs and dataset labels).

    Raises:
        ModelError: the name is already taken by another class.
    """

    def decorator(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, FormationModel)):
            raise ModelError(f"{cls!r} is not a FormationModel subclass")
        if name in _MODELS and _MODELS[name] is not cls:
            raise ModelError(f"formation model name '{name}' is already registered")
        cls.name = name
        _MODELS[name] = cls
        return cls

    return decorator


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    import sbi_exsitu.data.mock as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _SHARED_MODULES and not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        _load_entry_point(ep)
    _discovered = True


def _load_entry_point(ep: importlib.metadata.EntryPoint) -> None:
    """Register the model class an installed package names in its entry point."""
    dist = getattr(ep.dist, "name", None) or "an installed package"
    where = f"entry point '{ep.name} = {ep.value}' ({ENTRY_POINT_GROUP}, from {dist})"
    try:
        cls = ep.load()
    except Exception as err:  # a broken plug-in must name itself, not crash later
        raise ModelError(
            f"{where} cannot be loaded: {type(err).__name__}: {err}; fix or "
            "uninstall that package"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, FormationModel)):
        raise ModelError(f"{where} is {cls!r}, expected a FormationModel subclass")
    if _MODELS.get(ep.name) is not cls:
        register_model(ep.name)(cls)


def available_models() -> list[str]:
    """Names of all registered formation models, sorted."""
    _discover()
    return sorted(_MODELS)


def get_model(name: str, **overrides: Any) -> FormationModel:
    """Instantiate the model ``name`` with parameter ``overrides``.

    Args:
        name: a registered model name (see :func:`available_models`).
        **overrides: parameter values replacing the model's defaults.

    Returns:
        The (validated) model.

    Raises:
        ModelError: unknown name (listing the known ones), unknown parameter
            (naming the closest) or a parameter outside its physical range.
    """
    _discover()
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ModelError(
            f"unknown formation model '{name}'.{hint} "
            f"Known models: {', '.join(sorted(_MODELS))}"
        )
    cls = _MODELS[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    for key in overrides:
        if key not in fields:
            close = difflib.get_close_matches(key, sorted(fields), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ModelError(f"model '{name}' has no parameter '{key}'.{hint}")
    # Lists (from TOML) become tuples so the frozen model stays hashable.
    clean = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return cls(**clean)
