"""The grid of ``sbi-exsitu crosstest``: the ``[crosstest]`` table and cell names.

See :mod:`sbi_exsitu.studies.crosstest.study` for the study.

Example:
    >>> sec = CrosstestSection.from_dict({"apertures": [2.0, False]})
    >>> [cell_name("tng-like", "all", a) for a in sec.apertures]
    ['tng-like__all__ap2', 'tng-like__all__apfull']
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from sbi_exsitu.data.render import CHANNELS
from sbi_exsitu.schema import ConfigError, check_keys, check_types

__all__ = [
    "UNION",
    "relation",
    "UNION_ID_OFFSET",
    "CrosstestSection",
    "aperture_label",
    "cell_name",
]

#: Name of the union training set in tables and paths.
UNION = "union"
#: Galaxy-id offset per model in the union dataset (model k: ids + k * offset).
UNION_ID_OFFSET = 1_000_000

_DEFAULT_CHANNELS = {
    "all": list(CHANNELS),
    "mass_kinematics": ["mass", "velocity", "dispersion"],
    "age_metallicity": ["age", "metallicity"],
}


@dataclass(frozen=True)
class CrosstestSection:
    """The ``[crosstest]`` table (see the module docstring).

    Attributes:
        models: formation models; each is a training set and a test set.
        union: also train on the union of the models' training sets.
        channels: name -> channel subset.
        apertures: aperture diameters in half-mass radii (``None`` = no aperture).
        num_samples: posterior draws per test observation.
        alpha: misspecification flag threshold on the conformal p-value.
        method: misspecification score, one of
            :data:`~sbi_exsitu.evaluation.misspecification.METHODS` (``"flow"``,
            the default of ``summarize``, on radial profiles of the maps; the
            ``"mmd"`` score's ROC AUC is reported alongside, or ``"knn"``'s when
            ``method`` is ``"mmd"``).
        max_reference: training maps in the detector's reference set.
        n_shuffle: permutations of sbi's set-level MMD test.
        highlight: ``(channels, aperture)`` pairs shown in the f_ex-M* and
            coverage figures (default: the first and second channel sets at the
            first and last aperture, i.e. all@4 and mass+kinematics@1).
    """

    models: tuple[str, ...] = ("tng-like", "eagle-like")
    union: bool = True
    channels: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {k: tuple(v) for k, v in _DEFAULT_CHANNELS.items()}
    )
    apertures: tuple[float | None, ...] = (4.0, 2.0, 1.0)
    num_samples: int = 500
    alpha: float = 0.05
    method: str = "flow"
    max_reference: int = 2000
    n_shuffle: int = 1000
    highlight: tuple[tuple[str, float | None], ...] = ()

    @classmethod
    def from_dict(
        cls, doc: dict[str, Any] | None, where: str = "[crosstest]"
    ) -> CrosstestSection:
        """Validate a parsed ``[crosstest]`` table.

        Raises:
            ConfigError: unknown key (with the closest known one) or bad value.
        """
        doc = dict(doc or {})
        check_keys(doc, [f.name for f in dataclasses.fields(cls)], where)
        doc = check_types(doc, cls, where)
        kw: dict[str, Any] = {}
        if "models" in doc:
            kw["models"] = tuple(doc["models"])
        if "channels" in doc:
            kw["channels"] = {str(k): tuple(v) for k, v in doc["channels"].items()}
        if "apertures" in doc:
            kw["apertures"] = tuple(
                None if a is False or a is None else float(a) for a in doc["apertures"]
            )
        if "highlight" in doc:
            kw["highlight"] = tuple(
                (str(c), None if a is False or a is None else float(a))
                for c, a in doc["highlight"]
            )
        for key in (
            "union",
            "num_samples",
            "alpha",
            "method",
            "max_reference",
            "n_shuffle",
        ):
            if key in doc:
                kw[key] = doc[key]
        try:
            return cls(**kw)
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from None

    def __post_init__(self) -> None:
        from sbi_exsitu.data.mock import available_models

        known = available_models()
        bad = [m for m in self.models if m not in known]
        if bad or not self.models or len(set(self.models)) != len(self.models):
            raise ValueError(
                f"'models' is {list(self.models)}, expected distinct names from {known}"
            )
        if UNION in self.models:
            raise ValueError(f"'{UNION}' is reserved for the union training set")
        if not self.channels:
            raise ValueError("'channels' must name at least one channel subset")
        for name, chans in self.channels.items():
            if (
                not chans
                or any(c not in CHANNELS for c in chans)
                or len(set(chans)) != len(chans)
            ):
                raise ValueError(
                    f"channels '{name}' is {list(chans)}, expected a "
                    f"non-empty subset of {list(CHANNELS)}"
                )
            if "__" in name or "/" in name:
                raise ValueError(
                    f"channel-set name {name!r} may not contain '__' or '/'"
                )
        if not self.apertures or len(set(self.apertures)) != len(self.apertures):
            raise ValueError(
                f"'apertures' is {list(self.apertures)}, expected distinct values"
            )
        if self.num_samples < 10 or not 0 < self.alpha < 1:
            raise ValueError("need num_samples >= 10 and 0 < alpha < 1")
        # Imported here: parsing a config must not load torch.
        from sbi_exsitu.evaluation.misspecification import METHODS

        if self.method not in METHODS:
            raise ValueError(f"'method' is {self.method!r}, expected one of {METHODS}")
        for c, a in self.highlight:
            if c not in self.channels or a not in self.apertures:
                raise ValueError(f"highlight ({c!r}, {a}) is not a grid cell")

    @property
    def train_sets(self) -> list[str]:
        """The formation models, then ``"union"`` if enabled."""
        return [*self.models, *([UNION] if self.union and len(self.models) > 1 else [])]

    def highlighted(self) -> list[tuple[str, float | None]]:
        """The configured highlight cells, or the paper's two (all@4, mk@1)."""
        if self.highlight:
            return list(self.highlight)
        names = list(self.channels)
        first = (names[0], self.apertures[0])
        second = (names[min(1, len(names) - 1)], self.apertures[-1])
        return [first] if first == second else [first, second]


def relation(train: str, test: str) -> str:
    """ "fixed" (same model), "cross" or "union": the paper's fig. 9 groups."""
    return "union" if train == UNION else ("fixed" if train == test else "cross")


def aperture_label(aperture: float | None) -> str:
    return "full" if aperture is None else f"{aperture:g}"


def cell_name(train: str, channels: str, aperture: float | None) -> str:
    """Directory name of a grid cell (also used for its datasets)."""
    return f"{train}__{channels}__ap{aperture_label(aperture)}"
