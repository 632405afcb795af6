"""Angular scale from Planck18."""

import numpy as np
import pytest
from astropy.cosmology import Planck18

from sbi_exsitu.data.observe.distance import kpc_per_arcsec
from sbi_exsitu.errors import ObservationError


def test_table_matches_astropy():
    z = np.array([0.01, 0.03, 0.0777, 0.15, 0.9])
    ref = Planck18.angular_diameter_distance(z).to_value("kpc") * np.pi / 648000
    np.testing.assert_allclose(kpc_per_arcsec(z), ref, rtol=1e-5)
    assert isinstance(kpc_per_arcsec(0.03), float)


def test_out_of_range_redshift_is_refused():
    with pytest.raises(ObservationError, match="0.01-0.15"):
        kpc_per_arcsec(0.0)
