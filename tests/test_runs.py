"""The run directory: file names, state-dict round trip, clear load errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from sbi_exsitu.runs import (
    RunDirectory,
    RunExistsError,
    StateFileError,
    load_state_dict,
    same_config,
)


def test_file_names(tmp_path) -> None:
    run = RunDirectory(tmp_path / "r")
    names = {
        run.model_file: "model.json",
        run.config_file: "config.json",
        run.splits_file: "splits.json",
        run.render_config_file: "render_config.json",
        run.history_file: "history.json",
        run.metrics_file: "metrics.json",
    }
    for path, name in names.items():
        assert path == tmp_path / "r" / name
    assert run.weights("cvae") == tmp_path / "r" / "weights" / "cvae.pt"
    assert run.checkpoint("member_0") == tmp_path / "r" / "checkpoints" / "member_0"


def test_state_round_trip_moves_tensors_to_cpu(tmp_path) -> None:
    run = RunDirectory(tmp_path)
    net = torch.nn.Linear(3, 2)
    run.save_weights(
        "net",
        {k: v.requires_grad_(True) for k, v in net.state_dict(keep_vars=True).items()},
    )
    state = run.load_weights("net")
    assert set(state) == {"weight", "bias"}
    for key, value in net.state_dict().items():
        assert torch.equal(state[key], value)
        assert state[key].device.type == "cpu" and not state[key].requires_grad
    fresh = torch.nn.Linear(3, 2)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.weight, net.weight)


@pytest.mark.parametrize("damage", ["missing", "empty", "truncated", "not_a_dict"])
def test_a_damaged_weights_file_names_the_file(tmp_path, damage: str) -> None:
    run = RunDirectory(tmp_path)
    path = run.save_weights("member_0", torch.nn.Linear(50, 50).state_dict())
    if damage == "missing":
        path.unlink()
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        torch.save(torch.zeros(3), path)
    with pytest.raises(StateFileError, match="member_0.pt"):
        run.load_weights("member_0")
    assert issubclass(StateFileError, OSError)


def test_model_and_splits_round_trip(tmp_path) -> None:
    run = RunDirectory(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a finished run"):
        run.read_model()
    splits = {"train": np.array([3, 1]), "validation": np.array([0]), "test": [2]}
    run.write_splits(splits, "data.h5", seed=7)
    back = run.read_splits()
    assert back["train"] == [3, 1] and back["dataset"] == os.path.abspath("data.h5")
    assert back["seed"] == 7
    run.write_model({"format": 1, "kind": "scalar"})
    assert run.is_finished and run.read_model()["kind"] == "scalar"


def test_prepare_keeps_the_same_config_and_refuses_another(tmp_path) -> None:
    run = RunDirectory(tmp_path / "r")
    run.prepare({"a": (1, 2)}, overwrite=False)
    assert run.has_config({"a": [1, 2]})  # tuples compare as their JSON lists
    run.prepare({"a": (1, 2)}, overwrite=False)  # resumable
    run.save_weights("member_0", {"t": torch.ones(1)})  # trained state: protected
    with pytest.raises(RunExistsError, match="different configuration"):
        run.prepare({"a": 3}, overwrite=False)
    run.prepare({"a": 3}, overwrite=True)
    assert run.has_config({"a": 3}) and not run.has_trained_state
    run.prepare({"a": 4}, overwrite=False)  # nothing trained: replaced
    assert run.has_config({"a": 4})
    assert same_config({"x": 1.0}, {"x": 1.0}) and not same_config({"x": 1}, {})


def test_load_state_dict_maps_to_the_requested_device(tmp_path) -> None:
    run = RunDirectory(tmp_path)
    run.save_weights("w", {"t": torch.ones(2)})
    assert load_state_dict(run.weights("w"), map_location="cpu")["t"].sum() == 2


def test_importing_runs_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, sbi_exsitu.runs; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
