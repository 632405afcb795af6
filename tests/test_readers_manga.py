"""Tests of the MaNGA readers (DAP MAPS + Pipe3D) against data-model fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from sbi_exsitu.data.readers.manga import read_dap_maps, read_manga
from sbi_exsitu.data.readers.manga_fixtures import write_manga_galaxy
from sbi_exsitu.data.readers.pipe3d import read_pipe3d
from sbi_exsitu.errors import ReaderError


@pytest.fixture
def galaxy(tmp_path: Path):
    return write_manga_galaxy(tmp_path)


def _pipe3d_snr(path: Path) -> np.ndarray:
    with fits.open(path) as hdul:
        return hdul["SSP"].data[-1].astype(float)


def test_round_trip_recovers_the_analytic_galaxy(galaxy) -> None:
    m = read_manga(galaxy.maps, galaxy.pipe3d)
    assert m.spaxel_arcsec == 0.5
    assert m.r_e_arcsec == 4.0
    assert m.redshift == pytest.approx(0.03)
    assert m.centre == pytest.approx(galaxy.centre, abs=1e-6)
    snr_ok = _pipe3d_snr(galaxy.pipe3d) >= 5
    for ch, truth in galaxy.truth.items():
        valid = m.valid[ch]
        expected = galaxy.footprint & (snr_ok if ch in ("mass", "age", "metallicity")
                                       else True)  # fmt: skip
        np.testing.assert_array_equal(valid, expected, err_msg=ch)
        np.testing.assert_allclose(m.values[ch][valid], truth[valid], rtol=1e-5)
    # The S/N cut bites: some bundle spaxels lose their population values.
    assert 0 < m.valid["mass"].sum() < galaxy.footprint.sum()
    assert (m.bin_id[~galaxy.footprint] == -1).all()
    assert np.isfinite(m.error["velocity"][m.valid["velocity"]]).all()


def _permute_channels(path: Path, ext: str, order: list[int]) -> None:
    with fits.open(path) as hdul:
        hdus = [h.copy() for h in hdul]
    for h in hdus:
        if h.name == ext:
            keys = [k for k in ("C1", "C2", "C3", "C4", "C5") if k in h.header]
            names = [h.header[k] for k in keys]
            h.data = h.data[order]
            for k, i in zip(keys, order, strict=True):
                h.header[k] = names[i]
    fits.HDUList(hdus).writeto(path, overwrite=True)


def test_channels_are_chosen_by_name_not_position(galaxy) -> None:
    before = read_dap_maps(galaxy.maps)
    _permute_channels(galaxy.maps, "BINID", [4, 3, 2, 1, 0])
    _permute_channels(galaxy.maps, "STELLAR_SIGMACORR", [1, 0])
    # Make the BINID channels differ, so a positional read would be caught.
    with fits.open(galaxy.maps) as hdul:
        hdus = [h.copy() for h in hdul]
    hdus[[h.name for h in hdus].index("BINID")].data[0] += 7
    fits.HDUList(hdus).writeto(galaxy.maps, overwrite=True)
    after = read_dap_maps(galaxy.maps)
    np.testing.assert_array_equal(after.bin_id, before.bin_id)
    np.testing.assert_allclose(after.dispersion, before.dispersion)


def test_pipe3d_planes_are_chosen_by_description(galaxy) -> None:
    before = read_pipe3d(galaxy.pipe3d)
    with fits.open(galaxy.pipe3d) as hdul:
        ssp = hdul["SSP"].copy()
    n = ssp.data.shape[0]
    order = list(range(n))[::-1]
    descs = [ssp.header[f"DESC_{i}"] for i in range(n)]
    ssp.data = ssp.data[order]
    for new, old in enumerate(order):
        ssp.header[f"DESC_{new}"] = descs[old]
    fits.HDUList([fits.PrimaryHDU(), ssp]).writeto(galaxy.pipe3d, overwrite=True)
    after = read_pipe3d(galaxy.pipe3d)
    for ch in before.values:
        np.testing.assert_array_equal(after.values[ch], before.values[ch])


def test_negative_corrected_sigma_is_masked(tmp_path: Path) -> None:
    fx = write_manga_galaxy(tmp_path)
    with fits.open(fx.maps) as hdul:
        hdus = [h.copy() for h in hdul]
    corr = hdus[[h.name for h in hdus].index("STELLAR_SIGMACORR")]
    corr.data[0, :, :17] = 1e4  # correction larger than the raw sigma
    fits.HDUList(hdus).writeto(fx.maps, overwrite=True)
    dap = read_dap_maps(fx.maps)
    assert not dap.valid_dispersion[:, :17].any()
    assert dap.valid_dispersion[:, 17:].any()
    assert dap.valid_velocity[:, :17].any()


def test_centre_falls_back_to_array_centre(tmp_path: Path) -> None:
    fx = write_manga_galaxy(tmp_path, omit=["SPX_SKYCOO"])
    dap = read_dap_maps(fx.maps)
    assert dap.centre == (17.0, 17.0)
    assert "array centre" in dap.centre_source


def test_wrong_daptype_is_refused(galaxy) -> None:
    with pytest.raises(ReaderError, match=r"DAPTYPE is 'HYB10.*expects 'SPX-MILESHC"):
        read_manga(galaxy.maps, daptype="SPX-MILESHC-MASTARSSP")


@pytest.mark.parametrize("ext", ["STELLAR_SIGMA", "BINID", "STELLAR_VEL_MASK"])
def test_missing_extension_names_file_and_extension(tmp_path: Path, ext) -> None:
    fx = write_manga_galaxy(tmp_path, omit=[ext])
    with pytest.raises(ReaderError, match=rf"MAPS.*no '{ext}' extension"):
        read_manga(fx.maps)


def test_all_masked_galaxy_is_refused(tmp_path: Path) -> None:
    fx = write_manga_galaxy(tmp_path, mask_all=True)
    with pytest.raises(ReaderError, match=r"\[STELLAR_VEL\]: every spaxel is masked"):
        read_manga(fx.maps)


@pytest.mark.parametrize(("key", "words"), [("REFF", "REFF"), ("SCINPVEL", "redshift")])
def test_missing_header_key_is_refused(tmp_path: Path, key, words) -> None:
    fx = write_manga_galaxy(tmp_path, omit_keys=[key])
    with pytest.raises(ReaderError, match=rf"\[PRIMARY\].*{words}"):
        read_manga(fx.maps)


def test_pipe3d_of_another_galaxy_is_refused(tmp_path: Path) -> None:
    a = write_manga_galaxy(tmp_path / "a")
    b = write_manga_galaxy(tmp_path / "b", n=30)
    with pytest.raises(ReaderError, match="same galaxy"):
        read_manga(a.maps, b.pipe3d)


def test_pipe3d_without_ssp_or_planes(tmp_path: Path) -> None:
    fx = write_manga_galaxy(tmp_path)
    with pytest.raises(ReaderError, match="no 'SSP' extension"):
        read_pipe3d(fx.maps)
    with fits.open(fx.pipe3d) as hdul:
        ssp = hdul["SSP"].copy()
    for k in [k for k in ssp.header if k.startswith("DESC_")]:
        if "Mass Weighted Age" in ssp.header[k]:
            ssp.header[k] = "something else"
    fits.HDUList([fits.PrimaryHDU(), ssp]).writeto(fx.pipe3d, overwrite=True)
    with pytest.raises(ReaderError, match="mass weighted age"):
        read_pipe3d(fx.pipe3d)


def test_low_snr_everywhere_is_refused(galaxy) -> None:
    with pytest.raises(ReaderError, match="no spaxel has S/N >= 1000"):
        read_pipe3d(galaxy.pipe3d, min_snr=1000)


def test_not_a_fits_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.fits.gz"
    bad.write_text("hello")
    with pytest.raises(ReaderError, match="x.fits.gz"):
        read_manga(bad)
