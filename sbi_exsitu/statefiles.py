"""State-dict files: atomic CPU saves and checked loads that never unpickle.

:mod:`sbi_exsitu.runs` re-exports these; the run directory decides the names.
torch is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sbi_exsitu.atomic import atomic_save
from sbi_exsitu.errors import CorruptWeightsError, StateFileError

__all__ = [
    "check_finite_state",
    "load_state_dict",
    "save_state_dict",
    "state_mismatch",
]


def _to_cpu(obj: Any) -> Any:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, Mapping):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def save_state_dict(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write a (possibly nested) state dict atomically, tensors moved to the CPU.

    A crash mid-write leaves the previous file intact, never a truncated one.
    """
    import torch

    path = Path(path)
    payload = _to_cpu(state)
    atomic_save(path, lambda p: torch.save(payload, p))
    return path


def check_finite_state(state: dict[str, Any], path: str | Path) -> None:
    """Refuse a loaded state dict with a NaN or infinite floating-point tensor.

    Such weights (a diverged or damaged run) make every draw NaN, which sbi's
    rejection sampling never accepts (it hangs) and the map decoder passes on
    silently.

    Args:
        state: the loaded ``state_dict``.
        path: the file it came from, for the message.

    Example:
        >>> import torch
        >>> check_finite_state({"w": torch.tensor([1.0, float("nan")])}, "w.pt")
        Traceback (most recent call last):
        ...
        sbi_exsitu.errors.CorruptWeightsError: w.pt: tensor(s) ['w'] \
hold NaN or infinite values (training diverged or the file is damaged); \
re-train the run with `sbi-exsitu fit CONFIG --overwrite`
    """
    import torch

    bad = [
        key
        for key, value in state.items()
        if isinstance(value, torch.Tensor)
        and value.is_floating_point()
        and not bool(torch.isfinite(value).all())
    ]
    if bad:
        shown = bad[:3] + (["..."] if len(bad) > 3 else [])
        raise CorruptWeightsError(
            f"{path}: tensor(s) {shown} hold NaN or infinite values (training "
            "diverged or the file is damaged); re-train the run with "
            "`sbi-exsitu fit CONFIG --overwrite`"
        )


def load_state_dict(
    path: str | Path, map_location: Any = "cpu", what: str = "weights"
) -> dict[str, Any]:
    """Read a file written by :func:`save_state_dict`, never unpickling code.

    Raises:
        StateFileError: the file is missing, empty, truncated or holds something
            other than a state dict; the message names the file.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise StateFileError(f"{path}: {what} file missing")
    if path.stat().st_size == 0:
        raise StateFileError(f"{path}: {what} file is empty; delete it and re-run")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, pickle errors
        raise StateFileError(
            f"{path}: cannot read the {what} file ({type(err).__name__}: {err}); "
            "it is truncated or corrupt: delete it and re-run"
        ) from err
    if not isinstance(state, dict):
        raise StateFileError(
            f"{path}: holds a {type(state).__name__}, expected a state dict"
        )
    check_finite_state(state, path)
    return state


def state_mismatch(expected: Mapping[str, Any], state: Mapping[str, Any]) -> str:
    """What differs between two state dicts' keys and shapes ("" if nothing).

    Example:
        >>> import torch
        >>> state_mismatch({"a": torch.zeros(2)}, {"a": torch.zeros(3), "b": 1})
        "unexpected keys ['b']; shape of 'a' is (3,), expected (2,)"
    """

    def shown(keys: list[str]) -> str:
        return str(keys[:4] + (["..."] if len(keys) > 4 else []))

    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    parts = [f"missing keys {shown(missing)}"] if missing else []
    parts += [f"unexpected keys {shown(unexpected)}"] if unexpected else []
    for key, value in expected.items():
        got = state.get(key)
        a, b = getattr(value, "shape", None), getattr(got, "shape", None)
        if key in state and a is not None and b is not None and tuple(a) != tuple(b):
            parts.append(f"shape of {key!r} is {tuple(b)}, expected {tuple(a)}")
            break  # one shape names the problem; all of them would be noise
    return "; ".join(parts)
