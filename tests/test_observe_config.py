"""ObserveConfig: typed checks, round trips, clear errors."""

import pytest

from sbi_exsitu.data.observe.config import ObserveConfig
from sbi_exsitu.errors import ObservationError


def test_round_trip_keeps_off_switches():
    cfg = ObserveConfig(
        redshift=(0.01, 0.15), psf_fwhm_arcsec=None, coverage_re=2.5, seed=3
    )
    assert ObserveConfig.from_json(cfg.to_json()) == cfg
    assert ObserveConfig.from_dict(cfg.to_dict()) == cfg
    off = ObserveConfig.from_dict({"snr_at_re": False, "target_snr": False})
    assert off.snr_at_re is None and off.target_snr is None
    assert ObserveConfig.from_json(off.to_json()) == off


def test_zero_switches_off_and_diff_names_fields():
    cfg = ObserveConfig(psf_fwhm_arcsec=0)
    assert cfg.psf_fwhm_arcsec is None
    assert cfg.diff(ObserveConfig()) == ["psf_fwhm_arcsec: None != 2.5"]


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"psf_fwhm": 2.0}, "Did you mean 'psf_fwhm_arcsec'"),
        ({"spaxel_arcsec": "big"}, "'spaxel_arcsec' is 'big'"),
        ({"spaxel_arcsec": 0}, "expected > 0"),
        ({"redshift": [0.2, 0.1]}, "redshift"),
        ({"redshift": 5.0}, "MaNGA"),
        ({"snr_at_re": False}, "target_snr"),
        ({"coverage_re": -1.0}, "coverage_re"),
    ],
)
def test_bad_values_are_refused_naming_the_field(doc, match):
    with pytest.raises(ObservationError, match=match):
        ObserveConfig.from_dict(doc, "cfg.toml [observe]")
