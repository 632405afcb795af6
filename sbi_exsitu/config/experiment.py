"""The TOML experiment file read by ``fit``, ``quickstart`` and ``crosstest``.

One file describes one experiment; every table maps to a frozen dataclass and
unknown keys are refused with the closest known one::

    [run]        name, out_dir, seed, device, threads
    [data]       train (HDF5 path), split_seed
    [simulate]   optional: how ``quickstart`` makes the training set
    [model]      optional: formation-model parameter overrides (simulate)
    [render]     optional: render config for ``simulate`` (RenderConfig fields)

Values are type- and range-checked by :func:`sbi_exsitu.schema.take_section`;
``[simulate]``, ``[model]`` and ``[render]`` are checked at load time by building
the :class:`~sbi_exsitu.data.simulate.SimulationConfig` they describe
(:meth:`ExperimentConfig.simulation_config`).
    [posterior]  kind, targets, estimator, flow size, ensemble, embedding
    [training]   batch size, learning rate, epochs, early stopping
    [misspecification]  optional: what calibrates the flag's false-alarm rate

Example:
    >>> cfg = ExperimentConfig.from_dict({"run": {"name": "demo"},
    ...                                   "data": {"train": "d.h5"}})
    >>> cfg.posterior.targets, cfg.run_dir.name
    (('f_ex',), 'demo')
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sbi_exsitu.schema import ConfigError, check_keys, load_toml, take_section

if TYPE_CHECKING:
    from sbi_exsitu.data.simulate import SimulationConfig

__all__ = [
    "RunSection",
    "DataSection",
    "PosteriorSection",
    "TrainingSection",
    "MisspecificationSection",
    "ExperimentConfig",
    "TARGET_BOUNDS",
]

# Prior support of each inferable label; the flow is trained in the unbounded
# space of a sigmoid bijection onto these boxes, so no draw ever leaves them.
TARGET_BOUNDS: dict[str, tuple[float, float]] = {
    "f_ex": (0.0, 1.0),
    "log_mstar": (9.5, 12.5),
    # Assembly labels of mock galaxies (sbi_exsitu.data.mock.debris). "No major
    # merger" is written as 13.8 Gyr and mu = 0, so the boxes reach a little
    # beyond those values: the sigmoid bijection maps a bound itself to infinity.
    "last_major_lookback": (0.0, 14.0),
    "last_major_mu": (-0.01, 1.01),
    "mean_merger_lookback": (0.0, 14.0),
    "mean_merger_mu": (-0.01, 1.01),
    "n_accretion_events": (-0.5, 40.5),
}

_DEVICE = re.compile(r"cpu|auto|mps|cuda(:\d+)?")


@dataclass(frozen=True)
class RunSection:
    """Where results go and how the job runs."""

    name: str = "run"
    out_dir: str = "runs"
    seed: int = field(default=0, metadata={"min": 0})
    device: str = "cpu"
    threads: int | None = field(default=None, metadata={"min": 1})

    def __post_init__(self) -> None:
        # The run directory is out_dir / name and `fit --overwrite` deletes it:
        # an empty name (or "." / "..") would delete out_dir or its parent.
        if self.name in ("", ".", "..") or re.search(r"[/\\]", self.name):
            raise ValueError(
                f"'name' is {self.name!r}, expected a non-empty directory name "
                "without '/' (the run directory is out_dir / name)"
            )
        if not _DEVICE.fullmatch(self.device):
            raise ValueError(
                f"'device' is {self.device!r}, expected one of 'cpu', 'cuda', "
                "'cuda:N' (N = GPU index), 'mps' or 'auto'"
            )


@dataclass(frozen=True)
class DataSection:
    """The training dataset and its galaxy-grouped split."""

    train: str = ""
    split_seed: int = field(default=0, metadata={"min": 0})
    memory_limit_gb: float = field(default=4.0, metadata={"gt": 0})


@dataclass(frozen=True)
class PosteriorSection:
    """What is inferred and with which estimator.

    Attributes:
        kind: ``"scalar"`` (p(f_ex | maps)) or ``"map"`` (ex-situ map posterior).
        targets: labels inferred jointly, from :data:`TARGET_BOUNDS`.
        estimator: an sbi ``posterior_nn`` model; ``zuko_*`` flows are needed for
            the bounded-support transform.
        hidden_features, num_transforms, num_bins: flow size.
        ensemble_size: independently initialised members, mixed with equal weight.
        embedding: a name from ``embeddings.EMBEDDINGS``.
        embedding_features: size of the summary vector.
        invariant: wrap the embedding to be invariant to flips and 90° rotations.
        embedding_kwargs: extra keyword arguments of the embedding factory.
    """

    kind: str = "scalar"
    targets: tuple[str, ...] = ("f_ex",)
    estimator: str = "zuko_nsf"
    hidden_features: int = field(default=64, metadata={"min": 1})
    num_transforms: int = field(default=3, metadata={"min": 1})
    num_bins: int = field(default=8, metadata={"min": 1})
    ensemble_size: int = field(default=3, metadata={"min": 1})
    embedding: str = "default"
    embedding_features: int = field(default=32, metadata={"min": 1})
    invariant: bool = False
    embedding_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("scalar", "map"):
            raise ValueError(f"'kind' is {self.kind!r}, expected 'scalar' or 'map'")
        object.__setattr__(self, "targets", tuple(self.targets))
        unknown = [t for t in self.targets if t not in TARGET_BOUNDS]
        if unknown or not self.targets:
            raise ValueError(
                f"'targets' is {list(self.targets)}, expected a non-empty subset of "
                f"{sorted(TARGET_BOUNDS)}"
            )
        if not self.estimator.startswith("zuko_") and self.estimator != "mdn":
            raise ValueError(
                f"'estimator' is {self.estimator!r}: only sbi's 'zuko_*' flows (and "
                "'mdn') support the bounded-support transform; try 'zuko_nsf'"
            )
        if self.estimator == "zuko_maf" and len(self.targets) == 1:
            raise ValueError("'zuko_maf' is Gaussian in 1-D; use 'zuko_nsf'")
        if self.ensemble_size < 1:
            raise ValueError("'ensemble_size' must be >= 1")


@dataclass(frozen=True)
class TrainingSection:
    """Optimisation, augmentation and early stopping (validation split, by galaxy).

    ``patience`` is generous on purpose: sbi's default of 20 epochs gave
    miscalibrated posteriors in our checks (sbi 0.27, 2,000 simulations: SBC KS
    p = 4e-10, bias +0.03; patience 50: p ≈ 0.1). ``augment="d4"``
    applies a random element of the square's symmetry group (flips, 90° turns) to
    every training map: a galaxy seen mirrored or turned on the sky is as likely
    as the original and has the same f_ex. This is the paper's flip augmentation
    generalised; sbi's own training loop cannot augment, ours can.

    ``lr_schedule`` (see :mod:`sbi_exsitu.training.loop`): ``"constant"`` (the
    default; stop after ``patience`` epochs without improvement or at
    ``max_epochs``), ``"plateau"`` (multiply the rate by ``lr_factor`` after
    ``lr_patience`` epochs without improvement; stop at the next plateau after
    ``max_lr_reductions`` reductions) or ``"cosine"`` (anneal to 0 over
    ``max_epochs``). ``patience`` and ``max_epochs`` remain hard limits.

    Domain alignment (:mod:`sbi_exsitu.training.align`, issue #17): with
    ``align_weight > 0`` every training batch also pulls the embeddings of
    ``align_data`` (a dataset of unlabelled target-domain maps rendered like the
    training set: another formation model's, or observed galaxies) towards the
    training maps' by an MMD term (``align_method = "mmd"``, default) or by a
    domain classifier behind a gradient reversal (``"dann"``, its scale
    ``align_weight`` reached after ``align_ramp_epochs``) or with a domain
    confusion loss (``"confusion"``); ``align_prior =
    "em"`` (default) corrects either for a different f_ex distribution of the
    target, ``"none"`` does not.

    Pseudo-labels (:mod:`sbi_exsitu.training.pseudo_labels`, issue #17): with
    ``pseudo_label_data`` (unlabelled target-domain maps rendered like the
    training set) and ``pseudo_label_teacher`` (a finished scalar run on a
    channel subset that transfers to the target), each target map gets
    ``pseudo_label_draws`` f_ex draws from the teacher's posterior, and the run
    trains on its labelled maps plus these. Early stopping watches the labelled
    validation split alone (``pseudo_label_validation = true``: the target maps'
    own validation split too; measured worse, docs/crosstest.md).
    """

    batch_size: int = field(default=128, metadata={"min": 2})
    learning_rate: float = field(default=5e-4, metadata={"gt": 0})
    max_epochs: int = field(default=200, metadata={"min": 1})
    patience: int = field(default=30, metadata={"min": 0})
    min_epochs: int = field(default=5, metadata={"min": 0})
    clip_grad_norm: float = field(default=5.0, metadata={"gt": 0})
    weight_decay: float = field(default=0.0, metadata={"min": 0})
    augment: str = "d4"
    lr_schedule: str = "constant"
    lr_factor: float = field(default=0.5, metadata={"gt": 0})
    lr_patience: int = field(default=4, metadata={"min": 0})
    max_lr_reductions: int = field(default=3, metadata={"min": 0})
    align_data: str = ""
    align_weight: float = field(default=0.0, metadata={"min": 0})
    align_prior: str = "em"
    align_method: str = "mmd"
    align_ramp_epochs: int = field(default=10, metadata={"min": 0})
    pseudo_label_data: str = ""
    pseudo_label_teacher: str = ""
    pseudo_label_draws: int = field(default=1, metadata={"min": 1})
    pseudo_label_validation: bool = False

    def __post_init__(self) -> None:
        # The values of sbi_exsitu.training.align.ALIGN_METHODS (a floor above).
        if self.align_method not in ("mmd", "dann", "confusion"):
            raise ValueError(
                f"'align_method' is {self.align_method!r}, expected 'mmd' (an MMD "
                "between the embeddings), 'dann' (domain-adversarial training) or "
                "'confusion' (the same classifier with a domain confusion loss)"
            )
        # The values of sbi_exsitu.training.align.ALIGN_PRIORS (a floor above).
        if self.align_prior not in ("none", "em"):
            raise ValueError(
                f"'align_prior' is {self.align_prior!r}, expected 'em' (correct the "
                "alignment for another f_ex distribution of the target) or 'none'"
            )
        if self.align_weight > 0 and not self.align_data:
            raise ValueError(
                f"'align_weight' is {self.align_weight} but 'align_data' is empty: "
                "give the path of a dataset of unlabelled target-domain maps"
            )
        if bool(self.pseudo_label_data) != bool(self.pseudo_label_teacher):
            raise ValueError(
                "'pseudo_label_data' and 'pseudo_label_teacher' go together: "
                "give both (unlabelled target maps and the finished run that "
                "labels them) or neither"
            )
        if self.lr_schedule not in ("constant", "plateau", "cosine"):
            raise ValueError(
                f"'lr_schedule' is {self.lr_schedule!r}, expected 'constant', "
                "'plateau' (reduce on a validation plateau) or 'cosine'"
            )
        if not self.lr_factor < 1:
            raise ValueError(
                f"'lr_factor' is {self.lr_factor!r}, expected < 1 (the factor "
                "the learning rate is multiplied by on a plateau)"
            )
        if self.augment not in ("none", "d4"):
            raise ValueError(
                f"'augment' is {self.augment!r}, expected 'd4' (a random flip/90° "
                "rotation of every training map, each epoch) or 'none'"
            )
        if self.batch_size < 2 or self.max_epochs < 1 or self.learning_rate <= 0:
            raise ValueError(
                "batch_size >= 2, max_epochs >= 1 and learning_rate > 0 are required"
            )


@dataclass(frozen=True)
class MisspecificationSection:
    """What calibrates the misspecification flag (issue #17).

    The flag's conformal p-values rank a galaxy's score among in-model galaxies
    the detector never fitted to. With the run's validation split alone (~50-75
    galaxies) the false-alarm rate of one run scatters by
    ``sqrt(alpha (1 - alpha) / n) ~ 0.03`` around ``alpha`` (Vovk 2012,
    conditional validity of conformal prediction); ``n = 1500`` galaxies bring
    it to ~0.006, inside the ``alpha +- 0.01`` goal.

    Attributes:
        calibration_galaxies: fresh in-model galaxies simulated (like the
            training set, from a seed derived from the run's) to calibrate the
            flag; 0 (default) calibrates on the validation split as before.
        calibration_data: or the path of an existing in-model dataset rendered
            like the training set (not its galaxies) to calibrate on.
    """

    calibration_galaxies: int = field(default=0, metadata={"min": 0})
    calibration_data: str = ""

    def __post_init__(self) -> None:
        if self.calibration_galaxies and self.calibration_data:
            raise ValueError(
                f"'calibration_galaxies' is {self.calibration_galaxies} and "
                f"'calibration_data' is {self.calibration_data!r}: give one (how "
                "many galaxies to simulate, or a dataset to calibrate on)"
            )

    @property
    def active(self) -> bool:
        """Whether the flag is calibrated on more than the validation split."""
        return bool(self.calibration_galaxies or self.calibration_data)


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment file. Use :meth:`from_toml`."""

    run: RunSection
    data: DataSection
    posterior: PosteriorSection
    training: TrainingSection
    misspecification: MisspecificationSection = field(
        default_factory=MisspecificationSection
    )
    simulate: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    render: dict[str, Any] = field(default_factory=dict)
    observe: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    source: str = "<dict>"

    SECTIONS = (
        "run",
        "data",
        "posterior",
        "training",
        "misspecification",
        "simulate",
        "model",
        "render",
        "observe",
        "crosstest",
        "map",
    )

    @classmethod
    def from_dict(cls, doc: dict[str, Any], source: str = "<dict>") -> ExperimentConfig:
        """Validate a parsed document; errors name the file, table and key."""
        if "evaluate" in doc:
            raise ConfigError(
                f"{source}: the [evaluate] table was removed (nothing read it); "
                "delete it (calibration runs with `sbi-exsitu calibrate RUN`)"
            )
        check_keys(doc, cls.SECTIONS, f"{source}")
        sections = {}
        for name, section_cls in (
            ("run", RunSection),
            ("data", DataSection),
            ("posterior", PosteriorSection),
            ("training", TrainingSection),
            ("misspecification", MisspecificationSection),
        ):
            sections[name] = take_section(
                doc.get(name), section_cls, f"{source} [{name}]"
            )
        extra = {k: doc[k] for k in ("crosstest", "map") if k in doc}
        for name in ("simulate", "model", "render", "observe"):
            if not isinstance(doc.get(name, {}), Mapping):
                raise ConfigError(f"{source}: [{name}] must be a table")
        cfg = cls(
            **sections,
            simulate=dict(doc.get("simulate", {})),
            model=dict(doc.get("model", {})),
            render=dict(doc.get("render", {})),
            observe=dict(doc.get("observe", {})),
            extra=extra,
            source=source,
        )
        if cfg.simulate or cfg.model or cfg.render or cfg.observe:
            cfg.simulation_config()  # validate the tables now, not mid-run
        return cfg

    @classmethod
    def from_toml(cls, path: str | Path) -> ExperimentConfig:
        """Read and validate an experiment file."""
        return cls.from_dict(load_toml(path), source=str(path))

    @property
    def run_dir(self) -> Path:
        return Path(self.run.out_dir) / self.run.name

    @property
    def train_path(self) -> Path:
        if not self.data.train:
            raise ConfigError(
                f"{self.source} [data]: key 'train' (dataset path) is required"
            )
        return Path(self.data.train)

    def simulation_config(
        self,
        simulate: Mapping[str, Any] | None = None,
        render: Mapping[str, Any] | None = None,
        where: str | None = None,
    ) -> SimulationConfig:
        """The simulation described by ``[simulate]``, ``[model]`` and ``[render]``.

        Args:
            simulate: keys overriding ``[simulate]`` (e.g. another seed).
            render: keys overriding ``[render]``.
            where: the description in error messages (default: the file).

        Raises:
            ConfigError: a key or value of the three tables is invalid.
        """
        from sbi_exsitu.data.simulate import SimulationConfig

        doc = {
            "simulate": dict(self.simulate) | dict(simulate or {}),
            "model": dict(self.model),
            "render": dict(self.render) | dict(render or {}),
        }
        if self.observe:
            doc["observe"] = dict(self.observe)
        return SimulationConfig.from_dict(doc, where=where or self.source)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict of the whole (defaults-filled) experiment."""
        out: dict[str, Any] = {}
        for name in ("run", "data", "posterior", "training"):
            out[name] = dataclasses.asdict(getattr(self, name))
        if not self.training.align_weight:
            # Alignment off: leave its keys out, so runs made before they existed
            # still match their config.json.
            for key in ("align_data", "align_weight", "align_prior"):
                out["training"].pop(key)
        if not self.training.pseudo_label_data:
            # Off: left out, so runs made before pseudo-labels still match.
            for key in ("data", "teacher", "draws", "validation"):
                out["training"].pop(f"pseudo_label_{key}")
        if self.misspecification.active:
            # Off: left out, so runs made before the section existed still
            # match their config.json (RunDirectory.prepare ignores it anyway).
            out["misspecification"] = dataclasses.asdict(self.misspecification)
        if out["training"].get("align_method", "mmd") == "mmd":
            # MMD runs made before DANN existed still match (the ramp is DANN's).
            for key in ("align_method", "align_ramp_epochs"):
                out["training"].pop(key)
        for name in ("simulate", "model", "render", "observe"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        out.update(self.extra)
        return _listify(out)

    def replace(self, **sections: Any) -> ExperimentConfig:
        """A copy with whole sections replaced (dataclasses or dicts)."""
        return dataclasses.replace(self, **sections)


def _listify(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _listify(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_listify(v) for v in obj]
    return obj
