"""Camera directions at the vertices of regular polyhedra.

As in Angeloudi et al. (2023, sec. 2.5.1), each galaxy is observed from the
vertices of a regular polyhedron centred on it: 4 (tetrahedron), 6 (octahedron),
8 (cube), 12 (icosahedron) or 20 (dodecahedron) lines of sight.

The image basis of a direction is chosen so that antipodal cameras see mirror
images: for ``d`` and ``-d`` the image x axis is the same and the y axis flips,
so the mass map of ``-d`` is the up-down mirror of that of ``d`` and the
line-of-sight velocity changes sign.

Example:
    >>> d = polyhedron_vertices(6)
    >>> d.shape
    (6, 3)
    >>> e1, e2, los = camera_basis(d[0])
    >>> bool(abs(np.dot(np.cross(e1, e2), los) - 1) < 1e-12)
    True
"""

from __future__ import annotations

import numpy as np

__all__ = ["VIEW_COUNTS", "polyhedron_vertices", "camera_basis"]

VIEW_COUNTS = (4, 6, 8, 12, 20)
_PHI = (1 + 5**0.5) / 2


def polyhedron_vertices(n_views: int) -> np.ndarray:
    """Unit vectors to the vertices of the regular polyhedron with ``n_views`` vertices.

    Args:
        n_views: 4, 6, 8, 12 or 20.

    Returns:
        (n_views, 3) array of unit vectors.

    Raises:
        ValueError: ``n_views`` is not the vertex count of a regular polyhedron.
    """
    p, q = _PHI, 1 / _PHI
    signs = [(a, b, c) for a in (1, -1) for b in (1, -1) for c in (1, -1)]
    if n_views == 4:
        v = [(1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1)]
    elif n_views == 6:
        v = [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]
    elif n_views == 8:
        v = signs
    elif n_views == 12:
        v = [(0, a, b * p) for a in (1, -1) for b in (1, -1)]
        v += [(a, b * p, 0) for a in (1, -1) for b in (1, -1)]
        v += [(a * p, 0, b) for a in (1, -1) for b in (1, -1)]
    elif n_views == 20:
        v = list(signs)
        v += [(0, a * q, b * p) for a in (1, -1) for b in (1, -1)]
        v += [(a * q, b * p, 0) for a in (1, -1) for b in (1, -1)]
        v += [(a * p, 0, b * q) for a in (1, -1) for b in (1, -1)]
    else:
        raise ValueError(
            f"n_views={n_views} is not a regular polyhedron's vertex count; "
            f"expected one of {VIEW_COUNTS}"
        )
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def camera_basis(direction: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orthonormal image basis ``(e1, e2, los)`` for a camera at ``direction``.

    ``los`` is the unit vector from the galaxy towards the camera and
    ``e1 x e2 = los``. Antipodal directions share ``e1`` and have opposite ``e2``.

    Args:
        direction: (3,) vector from the galaxy centre to the camera.

    Returns:
        Three (3,) unit vectors.
    """
    los = np.asarray(direction, dtype=np.float64)
    los = los / np.linalg.norm(los)
    # Canonical member of the antipodal pair: first non-negligible component > 0.
    first = los[np.flatnonzero(np.abs(los) > 1e-12)[0]]
    canon = los if first > 0 else -los
    ref = np.array([0.0, 0.0, 1.0])
    if abs(canon @ ref) > 0.9:
        ref = np.array([0.0, 1.0, 0.0])
    e1 = np.cross(ref, canon)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(canon, e1)
    if first < 0:
        e2 = -e2
    return e1, e2, los
