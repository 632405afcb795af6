"""MaNGA bundle choice and hexagon masks."""

import numpy as np
import pytest

from sbi_exsitu.data.observe.config import BUNDLES
from sbi_exsitu.data.observe.footprint import choose_bundle, hexagon_mask


@pytest.mark.parametrize(
    ("r_e", "coverage", "expected"),
    [
        (4.0, 1.5, (19, 12.5)),  # needs 6.0 arcsec <= 6.25
        (4.2, 1.5, (37, 17.5)),  # needs 6.3 > 6.25
        (6.5, 2.5, (127, 32.5)),  # needs 16.25 = 32.5 / 2
        (30.0, 1.5, (127, 32.5)),  # too big for any: the largest
        (0.1, 1.5, (19, 12.5)),
    ],
)
def test_smallest_bundle_that_reaches_the_coverage(r_e, coverage, expected):
    assert choose_bundle(r_e, coverage) == expected


def test_bundle_widths_are_manga():
    assert [b[0] for b in BUNDLES] == [19, 37, 61, 91, 127]
    assert [b[1] for b in BUNDLES] == [12.5, 17.5, 22.5, 27.5, 32.5]


def test_hexagon_size_and_shape():
    across = 65.0  # the 127-fibre bundle at 0.5 arcsec per spaxel
    mask = hexagon_mask((80, 80), (40.0, 40.0), across)
    area = 3 * np.sqrt(3) / 2 * (across / 2) ** 2
    assert mask.sum() == pytest.approx(area, rel=0.02)
    rows, cols = np.nonzero(mask)
    # Corners on the x axis: full width across x, sqrt(3)/2 of it across y.
    assert cols.max() - cols.min() + 1 == pytest.approx(across, abs=2)
    assert rows.max() - rows.min() + 1 == pytest.approx(across * np.sqrt(3) / 2, abs=2)
    assert mask[40, 40] and not mask[0, 0]
