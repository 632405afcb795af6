"""Tests of sbi_exsitu.data.readers.eagle: unit attributes, membership, centring."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from sbi_exsitu.data.readers import ReaderError, read_eagle
from sbi_exsitu.data.readers.eagle import NO_GROUP, shrinking_sphere_centre
from sbi_exsitu.data.readers.fixtures import symmetric_galaxy, write_eagle_file

A, H, OM, OL, BOX = 0.8, 0.6777, 0.307, 0.693, 67.77
KPC, MSUN = 3.085678e21, 1.989e33
GYR = 977.7922216807891 / 100


def closed_form_time(a: np.ndarray) -> np.ndarray:
    return (
        2
        / (3 * math.sqrt(OL))
        * (GYR / H)
        * np.arcsinh(math.sqrt(OL / OM) * np.asarray(a) ** 1.5)
    )


# (values, CGSConversionFactor, h-scale-exponent, aexp-scale-exponent)
def raw_fields() -> dict:
    return {
        # Stored in ckpc/h with its own factor: the reader must use the attribute.
        "Coordinates": (
            np.array(
                [
                    [1000.0, 2000, 3000],
                    [1000.1, 2000, 3000],
                    [1000, 2000.2, 3000],
                    [1002, 2000, 3000],
                ]
            ),
            KPC,
            -1.0,
            1.0,
        ),
        "Velocity": (
            np.array([[10, 0, 0], [20, 0, 0], [-30, 5, 0], [400, 0, 0]], np.float32),
            1e5,
            0.0,
            0.5,
        ),
        "Mass": (np.array([1e-3, 2e-3, 1e-3, 4e-3], np.float32), 1.989e43, -1.0, 0.0),
        "InitialMass": (np.full(4, 5e-3, np.float32), 1.989e43, -1.0, 0.0),
        "StellarFormationTime": (
            np.array([0.2, 0.5, 0.8, 0.3], np.float32),
            1.0,
            0.0,
            0.0,
        ),
        "SmoothedMetallicity": (
            np.array([0.01, 0.02, 0.0, 0.03], np.float32),
            1.0,
            0.0,
            0.0,
        ),
        "Metallicity": (
            np.array([0.011, 0.021, 0.001, 0.031], np.float32),
            1.0,
            0.0,
            0.0,
        ),
        "ParticleIDs": (np.arange(4), 1.0, 0.0, 0.0),
        "GroupNumber": (np.array([3, -3, 3, 3], np.int32), 1.0, 0.0, 0.0),
        "SubGroupNumber": (np.zeros(4, np.int32), 1.0, 0.0, 0.0),
    }


def write_raw(path: Path, fields: dict | None = None, *, no_units: str = "") -> dict:
    fields = fields or raw_fields()
    with h5py.File(path, "w") as f:
        hdr = f.create_group("Header")
        for key, value in dict(
            ExpansionFactor=A,
            Time=A,
            Redshift=1 / A - 1,
            HubbleParam=H,
            BoxSize=BOX,
            Omega0=OM,
            OmegaLambda=OL,
        ).items():
            hdr.attrs[key] = value
        for key, (values, cgs, h_exp, a_exp) in fields.items():
            dset = f.create_dataset(f"PartType4/{key}", data=values)
            if key != no_units:
                dset.attrs["CGSConversionFactor"] = cgs
                dset.attrs["h-scale-exponent"] = h_exp
                dset.attrs["aexp-scale-exponent"] = a_exp
    return fields


def test_unit_conversions_match_hand_computed_values(tmp_path: Path) -> None:
    d = write_raw(tmp_path / "eagle.hdf5")
    cat = {
        "CentreOfPotential_x": 1000 * A / H / (1e3 * A),  # cMpc, no h
        "CentreOfPotential_y": 2000 / H / 1e3,
        "CentreOfPotential_z": 3000 / H / 1e3,
        "HalfMassRad_Star": 1.5,
    }
    p = read_eagle(tmp_path / "eagle.hdf5", catalogue=cat)
    x = d["Coordinates"][0] * KPC * H**-1 * A / KPC  # value * cgs * h^e * a^e
    np.testing.assert_allclose(p.centre, np.array([1000, 2000, 3000]) * A / H)
    np.testing.assert_allclose(p.pos, x - x[0], atol=1e-9)
    np.testing.assert_allclose(p.mass, d["Mass"][0].astype(float) * 1e10 / H, rtol=1e-6)
    v = d["Velocity"][0].astype(float) * math.sqrt(A)
    # Within 0.1 r_e = 0.15 kpc: rows 0 (r=0) and 1 (r=0.1*A/H=0.118 kpc).
    np.testing.assert_allclose(p.systemic_velocity, v[:2].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(p.vel, v - v[:2].mean(axis=0), rtol=1e-6, atol=1e-9)
    sft = d["StellarFormationTime"][0].astype(float)
    # float32(0.8) > 0.8: a star born at the snapshot gets age 0, not -2e-7.
    want = np.maximum(closed_form_time(A) - closed_form_time(sft), 0.0)
    np.testing.assert_allclose(p.age, want, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(p.metallicity, d["SmoothedMetallicity"][0].astype(float))
    q = read_eagle(tmp_path / "eagle.hdf5", catalogue=cat, metallicity="particle")
    np.testing.assert_allclose(q.metallicity, d["Metallicity"][0].astype(float))
    assert p.half_mass_radius == 1.5 and p.ex_situ is None


def test_round_trip_with_catalogue(tmp_path: Path) -> None:
    a = 0.9
    p = symmetric_galaxy(
        100,
        centre=(5000.0, 300.0, 20.0),
        half_mass_radius=3.0,
        systemic_velocity=(10.0, 0.0, -40.0),
        seed=4,
        max_age=9.0,
    )
    path = tmp_path / "gal.hdf5"
    write_eagle_file(path, p, scale_factor=a)
    cat = {
        f"CentreOfPotential_{k}": c / a / 1e3
        for k, c in zip("xyz", p.centre, strict=True)
    }
    cat["HalfMassRad_Star"] = 3.0
    (tmp_path / "gal.json").write_text(json.dumps(cat))
    q = read_eagle(path, catalogue=tmp_path / "gal.json", flags=p.ex_situ)
    np.testing.assert_allclose(q.pos, p.pos, atol=1e-9)
    np.testing.assert_allclose(q.vel, p.vel, atol=1e-3)
    np.testing.assert_allclose(q.mass, p.mass, rtol=1e-6)
    np.testing.assert_allclose(q.age, p.age, atol=1e-5)
    np.testing.assert_allclose(q.metallicity, p.metallicity, rtol=1e-6)
    np.testing.assert_allclose(q.centre, p.centre, rtol=1e-12)
    np.testing.assert_allclose(q.systemic_velocity, p.systemic_velocity, atol=1e-3)
    assert q.f_ex == pytest.approx(p.f_ex, rel=1e-6)


def test_centre_without_catalogue_is_near_the_density_peak(tmp_path: Path) -> None:
    p = symmetric_galaxy(400, centre=(100.0, 100.0, 100.0), seed=5)
    write_eagle_file(tmp_path / "g.hdf5", p)
    q = read_eagle(tmp_path / "g.hdf5")
    assert np.linalg.norm(q.centre - p.centre) < 0.2 * p.half_mass_radius
    assert q.half_mass_radius == pytest.approx(p.half_mass_radius, rel=0.2)


def test_shrinking_sphere_finds_the_dense_clump() -> None:
    rng = np.random.default_rng(0)
    clump = rng.normal(0, 0.1, (2000, 3)) + [5, 5, 5]
    halo = rng.uniform(-50, 50, (2000, 3))
    pos = np.vstack([clump, halo])
    c = shrinking_sphere_centre(pos, np.ones(len(pos)))
    assert np.linalg.norm(c - [5, 5, 5]) < 0.1  # the clump's sigma


def test_membership_by_group_and_subgroup(tmp_path: Path) -> None:
    main = symmetric_galaxy(50, seed=1, name="main")
    sat = symmetric_galaxy(20, seed=2, centre=(30.0, 0.0, 0.0))
    loose = symmetric_galaxy(10, seed=3, centre=(-30.0, 0.0, 0.0))
    path = tmp_path / "box.hdf5"
    write_eagle_file(
        path,
        main,
        group_number=-4,
        subgroup_number=0,
        others=[(sat, 4, 1), (loose, 4, NO_GROUP)],
    )
    q = read_eagle(path, group_number=4, subgroup_number=0)
    assert len(q) == len(main)  # |GroupNumber| counts the negative entries
    assert len(read_eagle(path, group_number=4, subgroup_number=1)) == len(sat)
    with pytest.raises(
        ReaderError,
        match=r"box.hdf5: .*hold 2 galaxies .*\(4, 0\), "
        r"\(4, 1\).*expected one",
    ):
        read_eagle(path)
    with pytest.raises(
        ReaderError,
        match=r"select no particle, expected stars of "
        r"group 9",
    ):
        read_eagle(path, group_number=9)


def test_periodic_wrap(tmp_path: Path) -> None:
    a, h = 1.0, 0.6777
    p = symmetric_galaxy(
        50, centre=(BOX * 1e3 / h - 0.5, 10.0, 10.0), half_mass_radius=2.0
    )
    write_eagle_file(tmp_path / "g.hdf5", p, scale_factor=a)
    cat = {
        f"CentreOfPotential_{k}": c / 1e3 for k, c in zip("xyz", p.centre, strict=True)
    }
    q = read_eagle(tmp_path / "g.hdf5", catalogue=cat)
    np.testing.assert_allclose(q.pos, p.pos, atol=1e-8)


@pytest.mark.parametrize(
    "field", ["Coordinates", "Mass", "Velocity", "StellarFormationTime"]
)
def test_missing_unit_attributes(tmp_path: Path, field: str) -> None:
    write_raw(tmp_path / "e.hdf5", no_units=field)
    with pytest.raises(
        ReaderError,
        match=rf"e.hdf5: attribute 'PartType4/{field}/"
        r"CGSConversionFactor' is missing",
    ):
        read_eagle(tmp_path / "e.hdf5")


BAD = {
    "missing field": ("Mass", None, r"field 'PartType4/Mass' is missing"),
    "nan": (
        "Velocity",
        np.full((4, 3), np.nan, np.float32),
        r"'PartType4/Velocity' has 12 NaN or infinite",
    ),
    "shape": (
        "Mass",
        np.ones((4, 2), np.float32),
        r"'PartType4/Mass' has shape \(4, 2\), expected \(4,\)",
    ),
    "dtype": (
        "GroupNumber",
        np.ones(4, np.float32),
        r"'PartType4/GroupNumber' has dtype float32, expected integer",
    ),
    "future": (
        "StellarFormationTime",
        np.full(4, 0.95, np.float32),
        r"'PartType4/StellarFormationTime' has values outside",
    ),
    "zero mass": ("Mass", np.zeros(4, np.float32), r"'PartType4/Mass' has zero"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_name_file_field_and_expectation(tmp_path: Path, case: str) -> None:
    field, value, pattern = BAD[case]
    fields = raw_fields()
    if value is None:
        del fields[field]
    else:
        fields[field] = (value, *fields[field][1:])
    write_raw(tmp_path / "bad_eagle.hdf5", fields)
    with pytest.raises(ReaderError, match=r"bad_eagle.hdf5: .*" + pattern):
        read_eagle(tmp_path / "bad_eagle.hdf5")


def test_missing_header_attribute(tmp_path: Path) -> None:
    write_raw(tmp_path / "e.hdf5")
    with h5py.File(tmp_path / "e.hdf5", "a") as f:
        del f["Header"].attrs["ExpansionFactor"]
    with pytest.raises(
        ReaderError, match="attribute 'Header/ExpansionFactor' is missing"
    ):
        read_eagle(tmp_path / "e.hdf5")
