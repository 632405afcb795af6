"""Estimator specs rebuild identical networks; z-scoring copes with 1 channel."""

from __future__ import annotations

import json

import torch

from sbi_exsitu.posteriors.estimator import (
    EstimatorSpec,
    ZScore,
    build_estimator,
    clamp_to_support,
)


def test_spec_json_round_trip_rebuilds_the_same_density() -> None:
    spec = EstimatorSpec(
        targets=("f_ex", "log_mstar"),
        x_shape=(2, 16, 16),
        embedding="paper_cnn",
        embedding_features=4,
        hidden_features=8,
        num_transforms=1,
    )
    again = EstimatorSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    theta = torch.tensor([[0.3, 11.0], [0.7, 10.2]])
    x = torch.randn(2, 2, 16, 16)
    a = build_estimator(spec, theta, x).eval()
    b = build_estimator(again).eval()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(
            a.log_prob(theta[None], x), b.log_prob(theta[None], x)
        )


def test_zscore_handles_single_channel_maps() -> None:
    x = 3.0 + 2.0 * torch.randn(64, 1, 8, 8)
    z = ZScore.from_batch(x)
    y = z(x)
    assert torch.isfinite(y).all()
    assert abs(float(y.mean())) < 0.05 and abs(float(y.std()) - 1) < 0.05


def test_clamp_keeps_labels_strictly_inside_the_support() -> None:
    spec = EstimatorSpec(targets=("f_ex",), x_shape=(1, 16, 16))
    t = clamp_to_support(torch.tensor([[0.0], [1.0], [0.5]]), spec)
    assert (t > 0).all() and (t < 1).all() and t[2, 0] == 0.5


def test_estimator_spec_fields_are_the_posterior_table_fields() -> None:
    """The [posterior] table is the one schema of the architecture fields."""
    import dataclasses

    from sbi_exsitu.config.experiment import PosteriorSection
    from sbi_exsitu.posteriors.estimator import EstimatorSpec

    table = {f.name: f for f in dataclasses.fields(PosteriorSection)}
    for f in dataclasses.fields(EstimatorSpec):
        if f.name in ("x_shape", "targets"):
            continue
        assert f.name in table, f.name
        assert f.default == table[f.name].default, f.name
    section = PosteriorSection(hidden_features=17, embedding_kwargs={"a": 1})
    spec = EstimatorSpec.from_section(section, (2, 8, 8))
    assert (spec.hidden_features, spec.x_shape) == (17, (2, 8, 8))
    assert spec.embedding_kwargs == {"a": 1}
    assert spec.embedding_kwargs is not section.embedding_kwargs
