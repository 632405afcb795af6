"""Observed mocks through simulate, the dataset file and the posterior checks."""

import numpy as np
import pytest

from sbi_exsitu.config.experiment import ExperimentConfig
from sbi_exsitu.data.compatibility import as_observation_maps, check_render_config
from sbi_exsitu.data.dataset import MapDataset
from sbi_exsitu.data.observe.config import ObserveConfig
from sbi_exsitu.data.render import RenderConfig, RenderError, render_views
from sbi_exsitu.data.simulate import SimulationConfig, simulate
from sbi_exsitu.errors import ConfigError, RenderConfigMismatch

DOC = {
    "simulate": {"n_galaxies": 2, "views": 4, "seed": 5},
    "model": {"max_particles": 5000, "min_particles": 5000},
    "render": {"resolution": 16},
    "observe": {"redshift": [0.02, 0.1]},
}


def test_idealised_render_config_json_has_no_observe_key():
    # Old datasets and run directories store this JSON; it must not change.
    assert "observe" not in RenderConfig().to_json()
    cfg = RenderConfig(observe=ObserveConfig())
    back = RenderConfig.from_json(cfg.to_json())
    assert back == cfg and isinstance(back.observe, ObserveConfig)


def test_posterior_check_refuses_the_other_kind_of_maps():
    ideal = RenderConfig(resolution=16)
    observed = RenderConfig(resolution=16, observe=ObserveConfig())
    with pytest.raises(RenderConfigMismatch, match="observed maps != idealised"):
        check_render_config(ideal, observed)
    with pytest.raises(RenderConfigMismatch, match="idealised maps != observed"):
        check_render_config(observed, ideal)
    other = RenderConfig(resolution=16, observe=ObserveConfig(psf_fwhm_arcsec=1.5))
    with pytest.raises(RenderConfigMismatch, match="observe.psf_fwhm_arcsec"):
        as_observation_maps(
            np.zeros((1, 5, 16, 16), np.float32), observed, (5, 16, 16), other
        )


def test_render_views_refuses_an_observed_config():
    from sbi_exsitu.data.mock import get_model

    p, _ = get_model("tng-like", max_particles=2000, min_particles=2000).draw(
        np.random.SeedSequence(0)
    )
    with pytest.raises(RenderError, match="render_observed_views"):
        render_views(p, RenderConfig(observe=ObserveConfig()), 4)


def test_observed_simulate_end_to_end(tmp_path):
    cfg = SimulationConfig.from_dict(DOC)
    assert SimulationConfig.from_dict(cfg.to_dict()) == cfg
    a = simulate(cfg, tmp_path / "a.h5", progress=False)
    b = simulate(cfg, tmp_path / "b.h5", progress=False, workers=2)
    with MapDataset(a) as da, MapDataset(b) as db:
        assert da.render_config.observe == cfg.render.observe
        assert len(da) == 8
        np.testing.assert_array_equal(da.maps(slice(0, 8)), db.maps(slice(0, 8)))
        mask = da.mask(slice(0, 8))
        assert mask.any() and not mask.all()
        ex = da.exsitu(slice(0, 8))
        assert np.all(ex[~mask] == 0)
        # f_ex labels are the galaxies' own, unchanged by observing them.
        ideal = SimulationConfig.from_dict(
            {k: v for k, v in DOC.items() if k != "observe"}
        )
        c = simulate(ideal, tmp_path / "c.h5", progress=False)
        with MapDataset(c) as dc:
            np.testing.assert_array_equal(da.labels["f_ex"], dc.labels["f_ex"])
            assert dc.render_config.observe is None


def test_experiment_config_takes_an_observe_table():
    doc = {"run": {"name": "x"}, **DOC}
    cfg = ExperimentConfig.from_dict(doc, "cfg.toml")
    assert cfg.simulation_config().render.observe == ObserveConfig(redshift=(0.02, 0.1))
    assert cfg.to_dict()["observe"] == {"redshift": [0.02, 0.1]}
    with pytest.raises(ConfigError, match="psf_fwhm_arcsec"):
        ExperimentConfig.from_dict({**doc, "observe": {"psf_fwhm": 1.0}}, "cfg.toml")
