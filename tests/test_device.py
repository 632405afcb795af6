"""Device handling lives in one place: sbi_exsitu.device."""

from __future__ import annotations

import pytest
import torch

from sbi_exsitu.device import configure_threads, resolve_device


def test_cpu_and_auto() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="--device cpu"):
        resolve_device("cuda")


def test_configure_threads() -> None:
    assert configure_threads(1) == 1
    assert configure_threads() >= 1


@pytest.mark.gpu
def test_posterior_samples_on_cuda(toy_run) -> None:
    from sbi_exsitu.posteriors import load_posterior

    _, _, result = toy_run
    post = load_posterior(result.run_dir, device="cuda")
    x = torch.zeros(3, 1, 16, 16).numpy()
    draws = post.sample(x, 100, seed=0)
    assert draws.shape == (3, 100, 1)
    assert ((draws > 0) & (draws < 1)).all()
