"""Tests for the `embeddings` package."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from sbi_exsitu.embeddings import (
    D4Invariant,
    PaperCNN,
    ResNetEmbedding,
    available_embeddings,
    build_embedding,
    d4_transform,
    random_d4,
)
from sbi_exsitu.embeddings.resnet import ring_weights

OUT = 7  # odd, so a wrong reshape cannot pass by accident
BATCH = 4


def _grad_report(net: nn.Module) -> list[str]:
    """Names of parameters that received no (or an all-zero) gradient."""
    return [
        name
        for name, p in net.named_parameters()
        if p.grad is None or not torch.any(p.grad != 0)
    ]


@pytest.mark.parametrize("channels, size", [(1, 32), (5, 64)])
@pytest.mark.parametrize("invariant", [False, True])
@pytest.mark.parametrize("name", available_embeddings())
def test_embedding_contract(name: str, invariant: bool, channels: int, size: int):
    net = build_embedding(
        name,
        in_channels=channels,
        image_size=size,
        out_features=OUT,
        invariant=invariant,
    )
    x = torch.randn(BATCH, channels, size, size)

    # Shape and finiteness in training mode, including sbi's batch-of-one probe.
    net.train()
    y = net(x)
    assert y.shape == (BATCH, OUT)
    assert torch.isfinite(y).all()
    assert net(x[:1]).shape == (1, OUT)

    # Every parameter gets a non-zero gradient (random projection of the output,
    # so no symmetric cancellation can hide a disconnected layer).
    net.zero_grad()
    (net(x) * torch.randn(BATCH, OUT)).sum().backward()
    assert _grad_report(net) == []

    # Evaluation mode: deterministic (dropout off), finite, batch-independent.
    net.eval()
    with torch.no_grad():
        y1, y2 = net(x), net(x)
        y_single = net(x[:1])
    assert torch.equal(y1, y2)
    assert torch.isfinite(y1).all()
    torch.testing.assert_close(y_single, y1[:1], atol=1e-5, rtol=1e-4)

    # D4: exact invariance if wrapped, clear non-invariance otherwise.
    with torch.no_grad():
        deviations = [
            (net(d4_transform(x, k)) - y1).abs().max().item() for k in range(1, 8)
        ]
    scale = y1.abs().max().item()
    if invariant:
        assert max(deviations) <= 1e-5 * max(1.0, scale), deviations
    else:
        assert min(deviations) > 1e-3 * scale, deviations


def test_paper_cnn_dropout_active_in_training_only():
    net = PaperCNN(in_channels=2, image_size=32, out_features=3, dropout=0.5)
    x = torch.randn(BATCH, 2, 32, 32)
    net.train()
    assert not torch.allclose(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))


def test_paper_cnn_parameter_counts_match_table_a2():
    net = PaperCNN(in_channels=5, image_size=128, out_features=2)

    def count(module: nn.Module) -> int:
        # Keras counts moving mean/variance as BatchNorm parameters.
        params = sum(p.numel() for p in module.parameters(recurse=False))
        stats = sum(
            b.numel() for b in module.buffers(recurse=False) if b.is_floating_point()
        )
        return params + stats

    counted = [
        (type(m).__name__, count(m))
        for m in net.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d))
    ]
    table_a2 = [4032, 128, 18496, 256, 36928, 256, 8389120, 2048, 1026]
    assert [c for _, c in counted] == table_a2, counted
    assert net(torch.randn(2, 5, 128, 128)).shape == (2, 2)


@pytest.mark.parametrize("size, grid", [(16, 4), (32, 4), (64, 4), (128, 8)])
def test_resnet_final_grid(size: int, grid: int):
    net = ResNetEmbedding(in_channels=1, image_size=size, out_features=2)
    h = net.features(torch.zeros(1, 2, size, size))
    assert tuple(h.shape[-2:]) == (grid, grid)
    assert net.rings.shape == (4, grid, grid)
    assert torch.all(net.rings.sum(0) > 0)  # every feature pixel is pooled


def test_ring_weights_are_normalised_ring_averages():
    size = (16, 16)
    w = ring_weights(size, size, [0.5, 1.0])
    torch.testing.assert_close(w.sum((-2, -1)), torch.ones(3))
    # At full resolution, each ring is a flat average over its own pixels.
    for ring in w:
        support = ring[ring > 0]
        torch.testing.assert_close(support, torch.full_like(support, support[0]))
    # Rings partition the map: together they cover every pixel exactly once.
    assert torch.equal((w > 0).sum(0), torch.ones(size, dtype=torch.long))
    # The inner ring sits at the centre, the outer one in the corners.
    assert w[0, 8, 8] > 0 and w[0, 0, 0] == 0
    assert w[2, 0, 0] > 0 and w[2, 8, 8] == 0


def test_non_square_maps():
    net = build_embedding("resnet", in_channels=2, image_size=[32, 48], out_features=3)
    assert net(torch.randn(2, 2, 32, 48)).shape == (2, 3)
    with pytest.raises(ValueError, match="square"):
        D4Invariant(net)
    with pytest.raises(ValueError, match="square"):
        d4_transform(torch.zeros(2, 32, 48), 1)


def test_d4_transforms_form_the_group():
    x = torch.randn(3, 5, 5)
    images = [d4_transform(x, k) for k in range(8)]
    assert torch.equal(images[0], x)
    # All 8 elements are distinct on a generic image.
    for i in range(8):
        for j in range(i):
            assert not torch.equal(images[i], images[j]), (i, j)
    # Closure: any composition of two elements is one of the 8.
    for i in range(8):
        for j in range(8):
            composed = d4_transform(d4_transform(x, j), i)
            assert any(torch.equal(composed, img) for img in images), (i, j)
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        d4_transform(x, 8)


def test_random_d4_is_seeded_and_applies_group_elements():
    x = torch.randn(32, 2, 8, 8)
    a, b, c = random_d4(x, seed=1), random_d4(x, seed=1), random_d4(x, seed=2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    used = set()
    for xi, ai in zip(x, a, strict=True):
        matches = [k for k in range(8) if torch.equal(d4_transform(xi, k), ai)]
        assert matches, "output is not a D4 transform of its input"
        used.add(matches[0])
    assert len(used) > 4  # 32 draws from 8 elements use most of them


@pytest.mark.parametrize("name", ["paper_cnn", "default"])
def test_config_round_trip_rebuilds_the_same_net(name: str):
    config = {
        "name": name,
        "in_channels": 3,
        "image_size": 32,
        "out_features": 5,
        "invariant": True,
    }
    net = build_embedding(**config)
    clone = build_embedding(**json.loads(json.dumps(config)))
    clone.load_state_dict(net.state_dict())
    x = torch.randn(2, 3, 32, 32)
    net.eval()
    clone.eval()
    torch.testing.assert_close(clone(x), net(x), rtol=0, atol=0)


def test_factory_errors():
    sizes = {"in_channels": 5, "image_size": 64, "out_features": 4}
    with pytest.raises(ValueError, match="unknown embedding 'vit'") as info:
        build_embedding("vit", **sizes)
    for known in available_embeddings():
        assert known in str(info.value)
    with pytest.raises(TypeError, match="widht"):
        build_embedding("resnet", widht=3, **sizes)
    with pytest.raises(TypeError, match="JSON"):
        build_embedding("resnet", widths=(16, object(), 32, 64), **sizes)
    with pytest.raises(TypeError, match="invariant"):
        build_embedding("resnet", invariant="yes", **sizes)
    with pytest.raises(ValueError, match="image_size must be >= 8"):
        build_embedding("paper_cnn", **{**sizes, "image_size": 4})
    with pytest.raises(ValueError, match="image_size must be >= 16"):
        build_embedding("resnet", **{**sizes, "image_size": 8})
    with pytest.raises(ValueError, match="in_channels"):
        build_embedding("resnet", **{**sizes, "in_channels": 0})
    with pytest.raises(ValueError, match="dropout"):
        build_embedding("paper_cnn", dropout=1.5, **sizes)
    with pytest.raises(ValueError, match="widths must have one entry more"):
        build_embedding("resnet", widths=[8, 16], blocks=[1, 1], **sizes)
    with pytest.raises(ValueError, match="norm"):
        build_embedding("resnet", norm="layer", **sizes)
    with pytest.raises(ValueError, match="ring_edges"):
        build_embedding("resnet", ring_edges=[1.0, 0.5], **sizes)


def test_wrong_input_shape_is_named():
    net = build_embedding("resnet", in_channels=5, image_size=64, out_features=4)
    with pytest.raises(ValueError, match=r"\(B, 5, 64, 64\).*\(2, 3, 64, 64\)"):
        net(torch.randn(2, 3, 64, 64))
    with pytest.raises(TypeError, match="Module"):
        D4Invariant(lambda x: x)


def test_package_does_not_import_sbi():
    code = "import sys, embeddings; print('sbi' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", ["paper_cnn", "default"])
def test_plugs_into_sbi_zuko_flow(name: str):
    posterior_nn = pytest.importorskip("sbi.neural_nets").posterior_nn
    net = build_embedding(
        name, in_channels=2, image_size=32, out_features=8, invariant=name == "default"
    )
    builder = posterior_nn(model="zuko_nsf", embedding_net=net, z_score_x="structured")
    theta = torch.rand(16, 1)
    x = torch.randn(16, 2, 32, 32)
    estimator = builder(theta, x)
    loss = estimator.loss(theta, condition=x).mean()
    assert torch.isfinite(loss)
    loss.backward()
    assert _grad_report(net) == []
