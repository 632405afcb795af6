"""Posteriors: one base type, the scalar f_ex posterior and the map posterior.

:func:`load_posterior` is the one place that turns a run directory's ``kind``
into a posterior class.

Example:
    >>> sorted(POSTERIOR_KINDS)
    ['map', 'scalar']
"""

from __future__ import annotations

from pathlib import Path

from sbi_exsitu.errors import RunError
from sbi_exsitu.posteriors.base import Posterior
from sbi_exsitu.posteriors.map.fm_posterior import FlowMatchingMapPosterior
from sbi_exsitu.posteriors.map.posterior import MapPosterior, MapSummary
from sbi_exsitu.posteriors.scalar import ExSituPosterior
from sbi_exsitu.posteriors.summary import PosteriorSummary, highest_density_intervals
from sbi_exsitu.runs import RunDirectory

__all__ = [
    "POSTERIOR_KINDS",
    "ExSituPosterior",
    "FlowMatchingMapPosterior",
    "MapPosterior",
    "MapSummary",
    "Posterior",
    "PosteriorSummary",
    "highest_density_intervals",
    "load_posterior",
]

#: ``model.json`` kind -> the class that loads it.
POSTERIOR_KINDS: dict[str, type[Posterior]] = {
    "scalar": ExSituPosterior,
    "map": MapPosterior,
}


def load_posterior(run_dir: str | Path, device: str = "cpu") -> Posterior:
    """Rebuild the posterior of a finished run, without unpickling anything.

    The kind and architecture come from ``model.json``; the weights from
    ``torch.load(..., weights_only=True)`` state dicts.

    Raises:
        FileNotFoundError: the run has no ``model.json`` (not trained, or
            training was interrupted: re-run ``fit`` to resume).
        ValueError: ``model.json`` names an unknown kind.
    """
    run = RunDirectory(run_dir)
    if not run.is_finished:
        raise RunError(
            f"{run.model_file} not found: '{run.path}' is not a finished run "
            "(run or resume `sbi-exsitu fit CONFIG`)"
        )
    kind = run.read_model().get("kind", "scalar")
    if kind not in POSTERIOR_KINDS:
        raise RunError(
            f"{run.model_file}: kind is {kind!r}, expected one of "
            f"{sorted(POSTERIOR_KINDS)}"
        )
    if kind == "map" and run.read_model().get("model") == "flow_matching":
        return FlowMatchingMapPosterior.load(run.path, device=device)
    return POSTERIOR_KINDS[kind].load(run.path, device=device)
