"""Tests of sbi_exsitu.data.readers.tng: units, centring, flags, round trips, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from sbi_exsitu.data.readers import ReaderError, read_tng_cutout
from sbi_exsitu.data.readers.fixtures import (
    symmetric_galaxy,
    write_insitu_flags,
    write_offsets,
    write_subhalo_json,
    write_tng_cutout,
)
from sbi_exsitu.data.readers.tng import SubhaloCatalogue, cutout_subhalo_id

A, H, OM, OL, BOX = 0.5, 0.7, 0.3, 0.7, 1000.0
GYR = 977.7922216807891 / 100  # 1/H0 in Gyr for h = 1


def closed_form_time(a: np.ndarray) -> np.ndarray:
    """Flat LCDM t(a) in closed form (Hogg 1999, astro-ph/9905116), by hand."""
    return (
        2
        / (3 * math.sqrt(OL))
        * (GYR / H)
        * np.arcsinh(math.sqrt(OL / OM) * np.asarray(a) ** 1.5)
    )


def write_raw(path: Path, *, drop: tuple[str, ...] = (), **over: np.ndarray) -> dict:
    """A hand-made 4-row cutout: 3 stars and 1 wind cell (row 2)."""
    data = {
        "Coordinates": np.array(
            [[100.0, 200, 300], [110, 190, 300], [100, 200, 301], [999.5, 0.5, 300]]
        ),
        "Velocities": np.array(
            [[10.0, 20, 30], [-10, 0, 5], [500, 500, 500], [0, 0, 0]], np.float32
        ),
        "Masses": np.array([1e-4, 2e-4, 5e-5, 3e-4], np.float32),
        "GFM_InitialMass": np.array([2e-4, 3e-4, 1e-4, 4e-4], np.float32),
        "GFM_StellarFormationTime": np.array([0.25, 0.5, -0.3, 0.1], np.float32),
        "GFM_Metallicity": np.array([0.02, 0.01, 0.0, 0.005], np.float32),
        "ParticleIDs": np.array([11, 12, 13, 14], np.uint64),
        # The wind cell is the most bound: it must be ignored.
        "Potential": np.array([-5e5, -1e5, -9e9, -2e5], np.float32),
    }
    data.update(over)
    with h5py.File(path, "w") as f:
        hdr = f.create_group("Header")
        for key, value in dict(
            Time=A,
            Redshift=1 / A - 1,
            HubbleParam=H,
            BoxSize=BOX,
            Omega0=OM,
            OmegaLambda=OL,
            OmegaBaryon=0.05,
            MassTable=np.zeros(6),
            NumPart_ThisFile=np.array([0, 0, 0, 0, 4, 0], np.int32),
            CutoutID=7,
        ).items():
            hdr.attrs[key] = value
        for key, value in data.items():
            if key not in drop:
                f.create_dataset(f"PartType4/{key}", data=value)
    return data


def test_unit_conversions_match_hand_computed_values(tmp_path: Path) -> None:
    path = tmp_path / "cutout_7.hdf5"
    d = write_raw(path)
    p = read_tng_cutout(path)
    stars = [0, 1, 3]
    assert len(p) == 3  # the wind cell is dropped
    # Centre: star 0 (lowest potential among stars), ckpc/h -> kpc via a/h.
    np.testing.assert_allclose(p.centre, np.array([100, 200, 300]) * A / H)
    # Star 3 sits across the periodic boundary: x = 999.5 - 100 - 1000 = -100.5.
    want_pos = np.array([[0, 0, 0], [10, -10, 0], [-100.5, -199.5, 0]]) * A / H
    np.testing.assert_allclose(p.pos, want_pos, atol=1e-9)
    # Velocities: v * sqrt(a), minus the most-bound star's (ceil(5% of 3) = 1).
    v = d["Velocities"].astype(float)[stars] * math.sqrt(A)
    np.testing.assert_allclose(p.systemic_velocity, v[0], rtol=1e-6)
    np.testing.assert_allclose(p.vel, v - v[0], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(
        p.mass, d["Masses"].astype(float)[stars] * 1e10 / H, rtol=1e-6
    )
    sft = d["GFM_StellarFormationTime"].astype(float)[stars]
    np.testing.assert_allclose(
        p.age, closed_form_time(A) - closed_form_time(sft), rtol=1e-8
    )
    np.testing.assert_allclose(p.metallicity, d["GFM_Metallicity"].astype(float)[stars])
    assert p.ex_situ is None and math.isnan(p.f_ex)
    assert p.name == "cutout_7"


def test_systemic_velocity_is_mean_of_five_percent_most_bound(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 41  # ceil(0.05 * 41) = 3 stars
    vel = rng.normal(0, 100, (n, 3)).astype(np.float32)
    pot = rng.permutation(n).astype(np.float32) - 100
    path = tmp_path / "c.hdf5"
    write_raw(
        path,
        Coordinates=rng.uniform(0, 10, (n, 3)),
        Velocities=vel,
        Masses=np.full(n, 1e-4, np.float32),
        GFM_InitialMass=np.full(n, 1e-4, np.float32),
        GFM_StellarFormationTime=np.full(n, 0.3, np.float32),
        GFM_Metallicity=np.full(n, 0.01, np.float32),
        ParticleIDs=np.arange(n, dtype=np.uint64),
        Potential=pot,
    )
    with h5py.File(path, "a") as f:
        f["Header"].attrs["NumPart_ThisFile"] = np.array([0, 0, 0, 0, n, 0])
    p = read_tng_cutout(path)
    bound = np.argsort(pot)[:3]
    want = vel[bound].astype(float).mean(axis=0) * math.sqrt(A)
    np.testing.assert_allclose(p.systemic_velocity, want, rtol=1e-6)


def test_round_trip_without_catalogue(tmp_path: Path) -> None:
    p = symmetric_galaxy(
        100, centre=(100.0, 2.0, 50.0), systemic_velocity=(30.0, -20.0, 5.0), seed=1
    )
    fx = write_tng_cutout(
        tmp_path / "cutout_3.hdf5", p, scale_factor=0.9, n_wind=9, cutout_id=3
    )
    flags = write_insitu_flags(tmp_path / "f.hdf5", fx.insitu, fx.particle_ids)
    q = read_tng_cutout(fx.path, flags=flags)
    assert_same_particles(p, q)
    assert q.half_mass_radius == pytest.approx(p.half_mass_radius, rel=1e-6)


def test_round_trip_with_api_json_across_the_box_edge(tmp_path: Path) -> None:
    # Centre 1 ckpc/h inside the box edge: half the galaxy wraps to x ~ 0.
    a, h, box = 0.8, 0.6774, 75_000.0
    centre = ((box - 1.0) * a / h, 10.0, 20.0)
    p = symmetric_galaxy(100, centre=centre, half_mass_radius=2.5, seed=2, max_age=9.0)
    fx = write_tng_cutout(tmp_path / "cutout_5.hdf5", p, scale_factor=a, n_wind=3)
    with h5py.File(fx.path) as f:
        x = f["PartType4/Coordinates"][:, 0]
        assert x.min() < 100 and x.max() > box - 100  # really split by the edge
    write_subhalo_json(tmp_path / "cutout_5.json", p, scale_factor=a)
    q = read_tng_cutout(fx.path, flags=fx.insitu, catalogue=tmp_path / "cutout_5.json")
    assert_same_particles(p, q)
    assert q.half_mass_radius == pytest.approx(2.5, rel=1e-12)


def assert_same_particles(p, q) -> None:
    assert len(q) == len(p)
    np.testing.assert_allclose(q.pos, p.pos, atol=1e-6)
    np.testing.assert_allclose(q.vel, p.vel, atol=1e-3)  # float32 km/s
    np.testing.assert_allclose(q.mass, p.mass, rtol=1e-6)
    np.testing.assert_allclose(q.age, p.age, atol=1e-5)
    np.testing.assert_allclose(q.metallicity, p.metallicity, rtol=1e-6)
    np.testing.assert_allclose(q.centre, p.centre, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(q.systemic_velocity, p.systemic_velocity, atol=1e-3)
    if p.ex_situ is None:
        assert q.ex_situ is None
    else:
        np.testing.assert_array_equal(q.ex_situ, p.ex_situ)
        assert q.f_ex == pytest.approx(p.f_ex, rel=1e-6)
    assert q.log_mstar == pytest.approx(p.log_mstar, abs=1e-7)


def test_f_ex_from_flags_drops_undefined_stars(tmp_path: Path) -> None:
    path = tmp_path / "cutout_7.hdf5"
    d = write_raw(path)
    # rows: star in-situ, star undefined, wind, star ex-situ
    flags = write_insitu_flags(
        tmp_path / "f.hdf5", np.array([1, -1, -1, 0]), d["ParticleIDs"]
    )
    p = read_tng_cutout(path, flags=flags)
    m = d["Masses"].astype(float) * 1e10 / H
    assert len(p) == 2
    assert p.ex_situ.tolist() == [False, True]
    assert p.f_ex == pytest.approx(m[3] / (m[0] + m[3]), rel=1e-12)
    assert p.log_mstar == pytest.approx(np.log10(m[0] + m[3]), rel=1e-12)


def test_full_snapshot_flags_sliced_by_offsets(tmp_path: Path) -> None:
    gals = [symmetric_galaxy(100, seed=s, name=f"g{s}") for s in range(3)]
    fixtures, start, offsets = [], 0, []
    for k, g in enumerate(gals):
        fx = write_tng_cutout(
            tmp_path / f"cutout_{k}.hdf5",
            g,
            cutout_id=k,
            n_wind=k + 1,
            first_id=start + 1,
        )
        fixtures.append(fx)
        offsets.append([0, 0, 0, 0, start, 0])
        start += len(fx.insitu)
    stars = write_insitu_flags(
        tmp_path / "stars_099.hdf5",
        np.concatenate([f.insitu for f in fixtures]),
        np.concatenate([f.particle_ids for f in fixtures]),
    )
    off = write_offsets(tmp_path / "offsets_099.hdf5", np.array(offsets))
    for k, g in enumerate(gals):
        q = read_tng_cutout(fixtures[k].path, flags=stars, offsets=off)
        np.testing.assert_array_equal(q.ex_situ, g.ex_situ)
    # A cutout whose id points at another subhalo's rows fails on the IDs.
    with pytest.raises(ReaderError, match=r"stars_099.hdf5.*'ParticleID'.*ParticleIDs"):
        read_tng_cutout(fixtures[1].path, flags=stars, offsets=off, subhalo_id=2)
    # ... and past the end of the flags on the length.
    with pytest.raises(ReaderError, match=r"'InSitu' has \d+ entries, expected at"):
        write_offsets(off, np.array([[0, 0, 0, 0, start - 3, 0]]))
        read_tng_cutout(fixtures[0].path, flags=stars, offsets=off)


def test_subhalo_id_from_header_or_name(tmp_path: Path) -> None:
    write_raw(tmp_path / "x.hdf5")
    assert cutout_subhalo_id(tmp_path / "x.hdf5") == 7
    with h5py.File(tmp_path / "x.hdf5", "a") as f:
        del f["Header"].attrs["CutoutID"]
    with pytest.raises(ReaderError, match="CutoutID"):
        cutout_subhalo_id(tmp_path / "x.hdf5")
    (tmp_path / "x.hdf5").rename(tmp_path / "cutout_42.hdf5")
    assert cutout_subhalo_id(tmp_path / "cutout_42.hdf5") == 42


def test_catalogue_from_group_catalogue_names() -> None:
    cat = SubhaloCatalogue.from_mapping(
        {
            "SubhaloPos": [1, 2, 3],
            "SubhaloVel": [4, 5, 6],
            "SubhaloHalfmassRadType": [0, 9, 0, 0, 3.5, 0],
        },
        "cat",
    )
    assert cat.pos.tolist() == [1, 2, 3] and cat.half_mass_radius == 3.5
    with pytest.raises(ReaderError, match="cat: field 'SubhaloPos'.*expected"):
        SubhaloCatalogue.from_mapping({"SubhaloPos": [1, 2]}, "cat")
    with pytest.raises(ReaderError, match="'halfmassrad_stars'.*> 0"):
        SubhaloCatalogue.from_mapping({"halfmassrad_stars": 0.0}, "cat")


def test_systemic_velocity_falls_back_to_catalogue_without_potential(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.hdf5"
    d = write_raw(path, drop=("Potential",))
    with pytest.raises(ReaderError, match=r"c.hdf5: field 'PartType4/Potential'"):
        read_tng_cutout(path)
    cat = {
        "pos_x": 100,
        "pos_y": 200,
        "pos_z": 300,
        "vel_x": 1,
        "vel_y": 2,
        "vel_z": 3,
        "halfmassrad_stars": 7.0,
    }
    (tmp_path / "c.json").write_text(json.dumps(cat))
    p = read_tng_cutout(path, catalogue=tmp_path / "c.json")
    np.testing.assert_allclose(p.systemic_velocity, [1, 2, 3])
    np.testing.assert_allclose(
        p.vel[0], d["Velocities"][0] * math.sqrt(A) - [1, 2, 3], rtol=1e-6
    )
    assert p.half_mass_radius == pytest.approx(7.0 * A / H)


BAD = {
    "missing field": (dict(drop=("Masses",)), r"field 'PartType4/Masses' is missing"),
    "integer coords": (
        dict(Coordinates=np.ones((4, 3), np.int32)),
        r"'PartType4/Coordinates' has dtype int32, expected floating",
    ),
    "bad shape": (
        dict(Velocities=np.ones((4, 2), np.float32)),
        r"'PartType4/Velocities' has shape \(4, 2\), expected \(4, 3\)",
    ),
    "short field": (
        dict(GFM_Metallicity=np.ones(3, np.float32)),
        r"'PartType4/GFM_Metallicity' has shape \(3,\), expected \(4,\)",
    ),
    "nan": (
        dict(Masses=np.array([1, np.nan, 1, 1], np.float32)),
        r"'PartType4/Masses' has 1 NaN or infinite values",
    ),
    "inf": (
        dict(Coordinates=np.array([[np.inf, 0, 0]] * 4)),
        r"'PartType4/Coordinates' has 4 NaN or infinite",
    ),
    "only wind": (
        dict(GFM_StellarFormationTime=np.full(4, -0.5, np.float32)),
        r"'PartType4/GFM_StellarFormationTime' is <= 0 for all 4 entries",
    ),
    "future star": (
        dict(GFM_StellarFormationTime=np.array([0.9, 0.2, 0.2, 0.2], np.float32)),
        r"GFM_StellarFormationTime' has 1 stars born after",
    ),
    "zero mass": (
        dict(Masses=np.array([0, 1, 1, 1], np.float32)),
        r"'PartType4/Masses' has zero or negative",
    ),
    "negative Z": (
        dict(GFM_Metallicity=np.array([-1, 1, 1, 1], np.float32)),
        r"'PartType4/GFM_Metallicity' has negative",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_cutouts_name_file_field_and_expectation(tmp_path: Path, case: str) -> None:
    kwargs, pattern = BAD[case]
    path = tmp_path / "bad_cutout.hdf5"
    write_raw(path, **kwargs)
    with pytest.raises(ReaderError, match="bad_cutout.hdf5: " + ".*" + pattern):
        read_tng_cutout(path)


def test_missing_groups_and_header_attributes(tmp_path: Path) -> None:
    path = tmp_path / "c.hdf5"
    write_raw(path)
    with h5py.File(path, "a") as f:
        del f["Header"].attrs["HubbleParam"]
    with pytest.raises(
        ReaderError,
        match=r"c.hdf5: attribute 'Header/HubbleParam' "
        r"is missing, expected a number",
    ):
        read_tng_cutout(path)
    with h5py.File(path, "a") as f:
        del f["Header"]
    with pytest.raises(ReaderError, match="c.hdf5: group 'Header' is missing"):
        read_tng_cutout(path)
    write_raw(path)
    with h5py.File(path, "a") as f:
        del f["PartType4"]
    with pytest.raises(ReaderError, match="c.hdf5: group 'PartType4' is missing"):
        read_tng_cutout(path)
    write_raw(path)
    with h5py.File(path, "a") as f:
        f["Header"].attrs["NumPart_ThisFile"] = np.array([0, 0, 0, 0, 5, 0])
    with pytest.raises(
        ReaderError, match="NumPart_ThisFile' gives 5 stars, expected 4"
    ):
        read_tng_cutout(path)
    path.write_text("not hdf5")
    with pytest.raises(ReaderError, match="c.hdf5: cannot open as HDF5"):
        read_tng_cutout(path)


def test_bad_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.hdf5"
    d = write_raw(path)
    ids = d["ParticleIDs"]
    cases = [
        (np.array([1, 0, -1]), ids[:3], r"'InSitu' has 3 entries, expected 4"),
        (np.array([1, 0, -1, 2]), ids, r"'InSitu' has 1 values outside"),
        (np.array([1, 0, -1, 0]), ids[::-1], r"'ParticleID' differs .* at 4 of 4"),
        (np.array([-1, -1, -1, -1]), ids, r"'InSitu' is -1 .* for every star"),
    ]
    for insitu, pid, pattern in cases:
        flags = write_insitu_flags(tmp_path / "flags.hdf5", insitu, pid)
        with pytest.raises(ReaderError, match=r"flags.hdf5: .*" + pattern):
            read_tng_cutout(path, flags=flags)
    with h5py.File(tmp_path / "flags.hdf5", "w") as f:
        f["Other"] = np.zeros(4)
    with pytest.raises(ReaderError, match="flags.hdf5: field 'InSitu' is missing"):
        read_tng_cutout(path, flags=tmp_path / "flags.hdf5")
    with h5py.File(tmp_path / "flags.hdf5", "w") as f:
        f["InSitu"] = np.zeros(4, np.float32)
    with pytest.raises(ReaderError, match="'InSitu' has dtype float32, expected int"):
        read_tng_cutout(path, flags=tmp_path / "flags.hdf5")
    with pytest.raises(ReaderError, match=r"flags have shape \(2,\), expected \(4,\)"):
        read_tng_cutout(path, flags=np.array([1, 0]))
