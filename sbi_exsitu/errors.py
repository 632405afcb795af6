"""Every error the package raises on purpose, under one base class.

A :class:`SbiExsituError` means *the input is wrong* (a config value, a file, a
run directory, an option): its message names what and how to fix it, and the CLI
prints it as one ``error: ...`` line with exit code 2. Any other exception is a
bug and keeps its traceback.

Each class keeps a second, built-in base so that code catching ``ValueError``,
``FileNotFoundError``, ``FileExistsError`` or ``IndexError`` keeps working. The
modules that raise them re-export them (``sbi_exsitu.schema.ConfigError`` is
``sbi_exsitu.errors.ConfigError``); they live here so there is one list.

Example:
    >>> from sbi_exsitu.errors import ConfigError, SbiExsituError
    >>> try:
    ...     raise ConfigError("cfg.toml [run]: 'seed' is 'x', expected int")
    ... except SbiExsituError as err:
    ...     print(f"error: {err}")
    error: cfg.toml [run]: 'seed' is 'x', expected int
"""

from __future__ import annotations

__all__ = [
    "SbiExsituError",
    "ConfigError",
    "DatasetError",
    "SampleIndexError",
    "MissingLabelError",
    "RenderError",
    "TooFewPixelsError",
    "RenderConfigMismatch",
    "ModelError",
    "SimulationError",
    "ReaderError",
    "ParticlesError",
    "RunExistsError",
    "RunError",
    "RunDataChangedError",
    "DetectorUnavailableError",
    "DeviceError",
    "OutputError",
    "DependencyError",
    "OutputPathError",
    "OutputBusyError",
    "ObservationError",
    "SamplingLimitError",
    "SamplingError",
    "StateFileError",
    "CorruptWeightsError",
    "WeightsMismatchError",
    "TrainingDivergedError",
]


class SbiExsituError(Exception):
    """Base of every deliberate error: bad input, reported without a traceback.

    Attributes:
        cli_message: the message in command-line words (``--resume`` rather
            than ``resume=True``), printed by the CLI instead of ``str(err)``
            when set; None when one wording fits both.
    """

    cli_message: str | None = None

    def __init__(self, *args: object, cli_message: str | None = None) -> None:
        super().__init__(*args)
        if cli_message is not None:
            self.cli_message = cli_message


class ConfigError(SbiExsituError, ValueError):
    """A configuration file or section is malformed; the message says where."""


class DatasetError(SbiExsituError, ValueError):
    """A dataset file is missing, malformed or does not match what was expected."""


class SampleIndexError(SbiExsituError, IndexError):
    """A sample index is outside the dataset."""


class MissingLabelError(SbiExsituError, KeyError):
    """A dataset lacks a label (e.g. the true f_ex) that the task needs."""

    def __str__(self) -> str:
        # KeyError quotes its message; this one is a sentence, not a key.
        return str(self.args[0]) if self.args else ""


class RenderError(SbiExsituError, ValueError):
    """A galaxy cannot be rendered with the given configuration."""


class TooFewPixelsError(RenderError):
    """A view keeps fewer than ``min_pixels`` valid pixels (observed: skippable)."""


class RenderConfigMismatch(SbiExsituError, ValueError):
    """Maps were rendered differently from the maps the posterior was trained on."""


class ModelError(SbiExsituError, ValueError):
    """A model name or parameter is invalid; the message names it."""


class SimulationError(SbiExsituError, ValueError):
    """A simulation cannot run; the message names the galaxy or setting."""


class ReaderError(SbiExsituError, ValueError):
    """A simulation file is missing a field or holds bad values.

    The message always names the file, the field and what was expected.
    """


class ParticlesError(SbiExsituError, ValueError):
    """Raised when particle data are malformed; the message names the field."""


class RunExistsError(SbiExsituError, FileExistsError):
    """The run directory holds a run with a different configuration."""


class RunDataChangedError(RunExistsError):
    """The run was trained on other data than ``[data] train`` now holds."""


class RunError(SbiExsituError, FileNotFoundError):
    """A run directory is not a finished run, or misses a file it needs."""


class DetectorUnavailableError(RunError):
    """The misspecification detector is neither saved nor can be fitted."""


class DeviceError(SbiExsituError, ValueError):
    """The requested torch device does not exist on this machine."""


class OutputError(SbiExsituError, ValueError):
    """An output path cannot hold what was asked (e.g. the wrong suffix)."""


class DependencyError(SbiExsituError, RuntimeError):
    """An optional dependency needed for the requested feature is missing."""


class OutputPathError(SbiExsituError, ValueError):
    """An output path cannot be written, or would overwrite an input."""


class OutputBusyError(OutputPathError):
    """Another process is writing the same output."""


class ObservationError(SbiExsituError, ValueError):
    """Observation maps that cannot be used: empty, integer, NaN or inf, or IFU
    maps (:class:`~sbi_exsitu.data.observe.SpaxelMaps`) that are inconsistent."""


class SamplingLimitError(SbiExsituError, ValueError):
    """``num_samples`` is not positive, or the draws would not fit in memory."""


class SamplingError(SbiExsituError, ValueError):
    """Posterior draws came out NaN, infinite or outside the prior box."""


class StateFileError(SbiExsituError, OSError):
    """A weights or checkpoint file is missing, truncated or not a state dict."""


class WeightsMismatchError(StateFileError):
    """A weights file does not fit the architecture in ``model.json``."""


class CorruptWeightsError(SbiExsituError, ValueError):
    """A saved weights file holds NaN or infinite values: the run must be re-trained."""


class TrainingDivergedError(SbiExsituError, ValueError):
    """A training or validation loss became NaN or infinite."""
