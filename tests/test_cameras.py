"""Tests for :mod:`sbi_exsitu.data.cameras`."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sbi_exsitu.data.cameras import VIEW_COUNTS, camera_basis, polyhedron_vertices


@pytest.mark.parametrize("n", VIEW_COUNTS)
def test_vertices_are_distinct_unit_vectors(n):
    v = polyhedron_vertices(n)
    assert v.shape == (n, 3)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-12)
    assert len(np.unique(np.round(v, 9), axis=0)) == n
    # Centred on the galaxy: the vertices balance out.
    np.testing.assert_allclose(v.sum(axis=0), 0.0, atol=1e-12)


@pytest.mark.parametrize("n", VIEW_COUNTS)
def test_vertices_are_regular(n):
    # Every vertex has the same angular distance to its nearest neighbours.
    cos = polyhedron_vertices(n) @ polyhedron_vertices(n).T
    np.fill_diagonal(cos, -2)
    nearest = cos.max(axis=1)
    np.testing.assert_allclose(nearest, nearest[0], atol=1e-12)
    degree = {4: 3, 6: 4, 8: 3, 12: 5, 20: 3}[n]
    assert all(np.isclose(row, nearest[0]).sum() == degree for row in cos)


@pytest.mark.parametrize("n", [6, 8, 12, 20])
def test_antipodal_pairs_exist(n):
    v = polyhedron_vertices(n)
    for d in v:
        assert np.isclose(v @ -d, 1.0).sum() == 1


def test_tetrahedron_has_no_antipodes():
    v = polyhedron_vertices(4)
    assert not np.isclose(v @ v.T, -1.0).any()


@pytest.mark.parametrize("n", [0, 1, 5, 7, 24])
def test_bad_count(n):
    with pytest.raises(ValueError, match=r"n_views=\d+ .*\(4, 6, 8, 12, 20\)"):
        polyhedron_vertices(n)


def _check_basis(d: np.ndarray) -> None:
    e1, e2, los = camera_basis(d)
    basis = np.stack([e1, e2, los])
    np.testing.assert_allclose(basis @ basis.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(np.cross(e1, e2), los, atol=1e-12)
    np.testing.assert_allclose(los, d / np.linalg.norm(d), atol=1e-12)
    f1, f2, flos = camera_basis(-d)
    np.testing.assert_array_equal(f1, e1)
    np.testing.assert_array_equal(f2, -e2)
    np.testing.assert_array_equal(flos, -los)


@pytest.mark.parametrize("n", VIEW_COUNTS)
def test_bases_of_vertices(n):
    for d in polyhedron_vertices(n):
        _check_basis(d)


@settings(max_examples=20, deadline=None)
@given(
    st.lists(
        st.floats(-10, 10, allow_nan=False).filter(lambda x: abs(x) > 1e-6 or x == 0),
        min_size=3,
        max_size=3,
    ).filter(lambda v: np.linalg.norm(v) > 1e-3)
)
def test_bases_of_any_direction(d):
    _check_basis(np.asarray(d))
