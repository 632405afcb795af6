"""Run-directory persistence shared by the map posteriors (cVAE, flow matching).

Both write ``weights/<module>.pt`` state_dicts (never pickles) and one
``model.json`` whose common part -- kind, model, ``[map]`` settings, render
config, f_ex mass scale, pixel-noise calibration, outside-mask head -- is
written and read here, so the two models cannot drift apart in what a run
directory means. Each model adds only its own architecture entries.

Example:
    >>> check_map_meta({"kind": "map"}, "cvae", "model.json")["kind"]
    'map'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sbi_exsitu.errors import RunError
from sbi_exsitu.posteriors.map.outside import load_outside_head, save_outside_head
from sbi_exsitu.runs import RunDirectory

if TYPE_CHECKING:  # only a type: the state_dicts are written by RunDirectory
    import torch

__all__ = ["check_map_meta", "read_map_run", "restore_common", "save_map_run"]


def save_map_run(
    post: Any,
    run_dir: str | Path,
    model: str,
    modules: Mapping[str, torch.nn.Module],
    entries: Mapping[str, Any],
) -> Path:
    """Write ``modules`` as ``weights/<name>.pt`` and ``model.json`` (last).

    Args:
        post: a map posterior (its settings, render config, fitted scalars).
        run_dir: the run directory.
        model: ``"cvae"`` or ``"flow_matching"``.
        modules: ``{weights name: module}``.
        entries: the model's own ``model.json`` entries (architecture).
    """
    run_dir = Path(run_dir)
    run = RunDirectory(run_dir)
    for name, module in modules.items():
        run.save_weights(name, module.state_dict())
    run.write_model(
        {
            "format": 1,
            "kind": post.kind,
            "model": model,
            **entries,
            "settings": dataclasses.asdict(post.settings),
            "render_config": post.render_config.to_dict(),
            "mass_scale": post.mass_scale,
            "noise_rho": post.noise_rho,
            "pixel_noise": {"scale": post.noise_scale, "tail": post.noise_tail},
            "metadata": post.metadata,
            "outside_head": save_outside_head(run, post.outside_head),
        }
    )
    post.run_dir = run_dir
    return run_dir


def check_map_meta(meta: Mapping[str, Any], model: str, where: Any) -> dict[str, Any]:
    """``meta`` if it is a map run of ``model`` (runs before ``model``: cVAE)."""
    if meta.get("kind") != "map":
        raise RunError(f"{where}: kind is {meta.get('kind')!r}, not 'map'")
    if meta.get("model", "cvae") != model:
        raise RunError(
            f"{where}: a map run of model {meta.get('model', 'cvae')!r}, not "
            f"{model!r}; load it with sbi_exsitu.load_posterior"
        )
    return dict(meta)


def read_map_run(run_dir: str | Path, model: str) -> tuple[RunDirectory, dict]:
    """The run directory and its checked ``model.json``.

    Raises:
        FileNotFoundError: ``model.json`` is missing.
        RunError: not a map run of ``model``.
    """
    run = RunDirectory(Path(run_dir))
    return run, check_map_meta(run.read_model(), model, run.model_file)


def restore_common(post: Any, run: RunDirectory, meta: Mapping[str, Any]) -> Any:
    """Set the post-hoc parts of a loaded posterior; ``post``.

    Runs saved before a part existed load with its neutral value: no
    outside-mask head (with a warning), Gaussian pixel noise of unit scale.
    """
    pixel = meta.get("pixel_noise") or {}
    post.noise_scale = float(pixel.get("scale", 1.0))
    post.noise_tail = float(pixel.get("tail", 1.0))
    post.outside_head = load_outside_head(run, meta)
    return post
