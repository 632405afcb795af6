"""Tests for the mock formation models (sbi_exsitu.data.mock: base, registry,
models)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from sbi_exsitu.data.mock import (
    GRAVITY_FIELDS,
    POPULATION_FIELDS,
    Z_SUN,
    FormationModel,
    ModelError,
    available_models,
    get_model,
)
from sbi_exsitu.data.mock.profiles import G

MODELS = ["tng-like", "eagle-like"]
FAST = {"max_particles": 20_000, "min_particles": 20_000}


# ---------------------------------------------------------------- registry
def test_both_models_registered_and_overridable() -> None:
    assert {"tng-like", "eagle-like"} <= set(available_models())
    m = get_model("eagle-like", max_particles=5000, exsitu_re_ratio_range=[2.5, 3.0])
    assert m.max_particles == 5000 and m.exsitu_re_ratio_range == (2.5, 3.0)
    assert m.name == "eagle-like"


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(ModelError, match="Did you mean 'tng-like'.*eagle-like"):
        get_model("tng_like")


def test_unknown_parameter_suggests_closest() -> None:
    with pytest.raises(ModelError, match="no parameter 'max_particle'.*max_particles"):
        get_model("tng-like", max_particle=10)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("particle_mass", -1.0, "particle_mass.*physical range"),
        ("exsitu_sersic_n_range", (4.0, 3.0), "low <= high"),
        ("log_mstar_range", (10.0, 15.0), "log_mstar_range"),
        ("max_particles", 1000.5, "integer"),
        ("merger_class_fractions", (0.5, 0.2, 0.2), "sum to 1"),
        ("fex_slope", "steep", "numeric"),
    ],
)
def test_parameters_outside_physical_range_are_refused(key, value, match) -> None:
    with pytest.raises(ModelError, match=match):
        get_model("tng-like", **{key: value})


def test_models_share_gravity_and_differ_in_populations() -> None:
    a, b = (get_model(name).params() for name in MODELS)
    for key in GRAVITY_FIELDS:
        assert a[key] == b[key], key
    differ = {k for k in POPULATION_FIELDS if a[k] != b[k]}
    assert {"fex_log_m0", "insitu_z_gradient_outer_range", "mzr_amplitude"} <= differ
    assert set(GRAVITY_FIELDS).isdisjoint(POPULATION_FIELDS)


def test_bad_seed_and_fixed_values_are_refused() -> None:
    m = get_model("tng-like", **FAST)
    with pytest.raises(ModelError, match="seed"):
        m.draw("zero")
    with pytest.raises(ModelError, match="f_ex"):
        m.draw(0, f_ex=1.5)


# ----------------------------------------------------------------- drawing
@pytest.mark.parametrize("name", MODELS)
def test_same_seed_same_galaxy(name: str) -> None:
    m = get_model(name, **FAST)
    (p1, i1), (p2, i2), (p3, _) = (
        m.draw(7),
        m.draw(np.random.SeedSequence(7)),
        m.draw(8),
    )
    for key in ("pos", "vel", "age", "metallicity", "ex_situ"):
        np.testing.assert_array_equal(getattr(p1, key), getattr(p2, key))
    assert i1 == i2
    assert not np.array_equal(p1.pos, p3.pos)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("f_ex", [0.03, 0.3, 0.8])
def test_measured_fex_equals_requested(name: str, f_ex: float) -> None:
    p, info = get_model(name, **FAST).draw(3, log_mstar=11.0, f_ex=f_ex)
    assert abs(p.f_ex - f_ex) <= 1 / len(p)  # exact up to one particle
    assert p.f_ex == pytest.approx(info["f_ex"], abs=1e-12)
    assert p.log_mstar == pytest.approx(11.0, abs=1e-9)


@pytest.mark.parametrize("name", MODELS)
def test_prior_fex_follows_the_fex_mstar_relation(name: str) -> None:
    m = get_model(name)
    log_m, f = np.array([m.draw_prior(s) for s in range(2000)]).T
    assert log_m.min() >= 10.0 and log_m.max() <= 12.0
    resid = np.log10(f / (1 - f)) - m.fex_slope * (log_m - m.fex_log_m0)
    # 4-sigma bounds of the mean and standard deviation of 2000 normal draws.
    assert abs(resid.mean()) < 4 * 0.3 / np.sqrt(2000)
    assert abs(resid.std() - 0.3) < 4 * 0.3 / np.sqrt(2 * 2000)
    assert m.draw_prior(5) == (m.draw(5)[1]["log_mstar"], m.draw(5)[1]["f_ex_target"])


def test_particle_cap_scales_particle_mass() -> None:
    m = get_model("tng-like", max_particles=8000, min_particles=1000)
    p, info = m.draw(0, log_mstar=12.0)
    assert len(p) == 8000
    assert info["particle_mass"] == pytest.approx(1e12 / 8000)
    p, info = m.draw(0, log_mstar=9.0)  # 1e9 / 1.4e6 ≈ 714 -> floor
    assert len(p) == 1000


@pytest.mark.parametrize("name", MODELS)
def test_half_mass_radius_and_circular_speed_match_analytic(name: str) -> None:
    # The smooth world: debris is only approximated by the analytic spheroid.
    m = get_model(name, max_particles=60_000, min_particles=60_000, debris_fraction=0)
    p, info = m.draw(11, log_mstar=11.3, f_ex=0.4)
    s = m.structure(info)
    assert p.half_mass_radius == pytest.approx(s.half_mass_radius(), rel=0.03)
    r = np.sqrt(np.einsum("ij,ij->i", p.pos, p.pos))
    radii = p.half_mass_radius * np.array([0.5, 1.0, 2.0, 4.0])
    m_stars = np.array([p.mass[r < x].sum() for x in radii])
    v_particles = np.sqrt(G * (m_stars + s.halo.enclosed(radii)) / radii)
    np.testing.assert_allclose(v_particles, s.circular_velocity(radii), rtol=0.02)


def test_exsitu_velocity_dispersion_follows_jeans() -> None:
    m = get_model(
        "tng-like", max_particles=60_000, min_particles=60_000, debris_fraction=0.0
    )
    p, info = m.draw(5, log_mstar=11.5, f_ex=0.9)
    s = m.structure(info)
    pos, vel = p.pos[p.ex_situ], p.vel[p.ex_situ]
    r = np.linalg.norm(pos, axis=1)
    v_r = np.einsum("ij,ij->i", pos, vel) / r  # radial: no streaming
    edges = info["r_e_exsitu"] * np.array([0.2, 0.5, 1.0, 2.0])
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (r > lo) & (r < hi)
        want = np.sqrt(np.mean(s.spheroid_dispersion(r[sel]) ** 2))
        assert v_r[sel].std() == pytest.approx(want, rel=0.05)


def _frame_kinematics(p, sel):
    """v_phi / sigma about the in-situ angular-momentum axis."""
    ins = ~p.ex_situ
    axis = np.cross(p.pos[ins], p.vel[ins]).sum(axis=0)
    axis /= np.linalg.norm(axis)
    pos, vel = p.pos[sel], p.vel[sel]
    e_phi = np.cross(axis, pos)
    e_phi /= np.linalg.norm(e_phi, axis=1, keepdims=True)
    v_phi = np.einsum("ij,ij->i", vel, e_phi)
    sigma = np.sqrt((np.var(vel, axis=0).sum()) / 3)
    return v_phi.mean() / sigma


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("log_mstar", [10.3, 11.0, 11.8])
def test_exsitu_older_metal_poorer_dispersion_supported(name, log_mstar) -> None:
    # A disc-dominated in-situ component (no heated halo, B/T = 0.1), so that
    # rotation support separates the two.
    discy = {"bulge_fraction_range": (0.1, 0.1), "insitu_halo_fraction_range": (0, 0)}
    model = get_model(name, **FAST, **discy)
    p, _ = model.draw(2, log_mstar=log_mstar, f_ex=0.3)
    ex, ins = p.ex_situ, ~p.ex_situ
    assert p.age[ex].mean() > p.age[ins].mean() + 1.0
    log_z = np.log10(p.metallicity / Z_SUN)
    assert log_z[ex].mean() < log_z[ins].mean() - 0.05
    v_sigma_in, v_sigma_ex = _frame_kinematics(p, ins), _frame_kinematics(p, ex)
    # A few coherent satellites leave net rotation (merger remnants rotate), but
    # well below that of the disc.
    assert v_sigma_in > 1.0 and abs(v_sigma_ex) < 0.5 * v_sigma_in


def test_models_share_phase_space_for_same_seed_mass_and_fex() -> None:
    (pa, ia), (pb, ib) = (
        get_model(n, **FAST).draw(4, log_mstar=11.0, f_ex=0.4) for n in MODELS
    )
    np.testing.assert_array_equal(pa.pos, pb.pos)
    np.testing.assert_array_equal(pa.vel, pb.vel)
    np.testing.assert_array_equal(pa.ex_situ, pb.ex_situ)
    assert not np.allclose(pa.metallicity, pb.metallicity)
    assert ia["model"] == "tng-like" and ib["model"] == "eagle-like"


# ------------------------------------------------- ring gradients (001 fig. 13)
def _ring_gradients(p, rng):
    """Outer (2 r_e - r_e) gradients of projected log Sigma, sigma_los and log Z."""
    los = rng.normal(size=3)
    los /= np.linalg.norm(los)
    e1 = np.cross(los, [0.0, 0.0, 1.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(los, e1)
    r2 = np.hypot(p.pos @ e1, p.pos @ e2) / p.half_mass_radius
    v = p.vel @ los
    log_z = np.log10(p.metallicity / Z_SUN)
    out = {}
    rings = {1.0: (0.8, 1.2), 2.0: (1.6, 2.4)}
    vals = {}
    for key, (lo, hi) in rings.items():
        sel = (r2 > lo) & (r2 < hi)
        area = np.pi * (hi**2 - lo**2)
        vals[key] = (
            np.log10(p.mass[sel].sum() / area),
            v[sel].std(),
            np.average(log_z[sel], weights=p.mass[sel]),
        )
    for k, name in enumerate(("mass", "dispersion", "metallicity")):
        out[name] = vals[2.0][k] - vals[1.0][k]
    return out


def test_models_agree_on_mass_and_kinematic_gradients_not_metallicity() -> None:
    """001 fig. 13: gradients agree in mass and kinematics, differ in metallicity.

    Each model draws 24 galaxies from its own prior (different f_ex–M* relations);
    the medians of the mass and dispersion gradients differ by less than half the
    scatter, the metallicity ones by more than one (and a Mann-Whitney U test
    rejects equal metallicity distributions).
    """
    grads = {}
    for name in MODELS:
        m = get_model(name, max_particles=8000, min_particles=8000)
        rng = np.random.default_rng(0)
        rows = [_ring_gradients(m.draw(100 + s)[0], rng) for s in range(24)]
        grads[name] = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    a, b = grads["tng-like"], grads["eagle-like"]

    def effect(key):
        pooled = np.sqrt(0.5 * (a[key].var() + b[key].var()))
        return abs(np.median(a[key]) - np.median(b[key])) / pooled

    assert effect("mass") < 0.5
    assert effect("dispersion") < 0.5
    assert effect("metallicity") > 1.0
    assert np.median(a["metallicity"]) < np.median(b["metallicity"])  # TNG steeper
    assert stats.mannwhitneyu(a["metallicity"], b["metallicity"]).pvalue < 1e-3


def test_base_model_is_a_valid_default() -> None:
    p, info = FormationModel(**FAST).draw(0)
    assert info["model"] == "base" and len(p) == 20_000


# ------------------------------------------------------ entry-point plug-ins
@pytest.fixture
def fresh_registry(monkeypatch):
    """A registry that rediscovers models, with the built-ins restored after."""
    from sbi_exsitu.data.mock import registry

    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    monkeypatch.setattr(registry, "_discovered", False)
    return registry


def _fake_entry_points(monkeypatch, registry, value: str) -> None:
    import importlib.metadata as md

    ep = md.EntryPoint(
        name="plugin-model", value=value, group=registry.ENTRY_POINT_GROUP
    )

    def entry_points(group=None, **_):
        return [ep] if group == registry.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(md, "entry_points", entry_points)


def test_entry_point_models_register_and_work_from_configs(
    fresh_registry, monkeypatch
) -> None:
    import sys
    import types
    from dataclasses import dataclass

    from sbi_exsitu.data.simulate import SimulationConfig

    @dataclass(frozen=True)
    class PluginModel(FormationModel):
        fex_log_m0: float = 11.0

    plugin = types.ModuleType("fake_sbi_plugin")
    plugin.PluginModel = PluginModel
    monkeypatch.setitem(sys.modules, "fake_sbi_plugin", plugin)
    _fake_entry_points(monkeypatch, fresh_registry, "fake_sbi_plugin:PluginModel")
    assert {"plugin-model", "tng-like", "eagle-like"} <= set(available_models())
    cfg = SimulationConfig.from_dict(
        {"simulate": {"model": "plugin-model"}, "model": {"max_particles": 2000}}
    )
    model = cfg.formation_model()
    assert isinstance(model, PluginModel) and model.max_particles == 2000
    assert model.name == "plugin-model" and FormationModel.name == "base"


def test_broken_entry_point_names_itself(fresh_registry, monkeypatch) -> None:
    _fake_entry_points(monkeypatch, fresh_registry, "sbi_exsitu.data.mock.base:Z_SUN")
    with pytest.raises(ModelError, match="plugin-model.*expected a FormationModel"):
        available_models()
    fresh_registry._discovered = False
    _fake_entry_points(monkeypatch, fresh_registry, "no_such_module_xyz:Model")
    with pytest.raises(ModelError, match="cannot be loaded.*uninstall"):
        available_models()
