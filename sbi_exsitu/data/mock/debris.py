"""Accreted debris from a merger history: satellites stripped along host orbits.

Real accreted stars arrive in discrete satellites at different times: old events
phase-mix into a smooth halo, recent ones stay as streams and shells, and
prograde, low-inclination ones settle near the disc plane. This module draws a
galaxy's accretion history and turns it into star particles:

- **History** (:func:`draw_history`): the ex-situ mass ``f_ex M*`` is split
  among the major (mu > 1/4), minor (1/10-1/4) and very-minor (1/100-1/10)
  classes by a Dirichlet draw around the Rodriguez-Gomez et al. (2016) mass
  shares (50 / 20 / 30%); each class is filled with satellites of log-uniform
  mass ratio ``mu = m_sat / M*_host(t_infall)`` until its share is used up.
  Infall lookback times follow ``t_max Beta(a, b)`` (default mean ≈ 7.7 Gyr: most
  ex-situ mass of TNG/Illustris galaxies is accreted at z ≈ 1-2,
  Rodriguez-Gomez et al. 2016). The host's stellar mass at lookback ``t`` is
  ``M* 10^(-g t)``, g = 0.04 dex/Gyr (half of today's mass at z ≈ 1, as for
  Milky-Way progenitors, van Dokkum et al. 2013), so ratios are those at infall,
  as in merger-tree catalogues.
- **Orbits** (:func:`spray_debris`): each satellite starts at apocentre at
  infall, at an apocentre that shrinks with the mass ratio (dynamical friction
  drags massive satellites in; massive satellites deposit their stars more
  centrally, Amorisco 2017), with tangential speed ``kappa V_c`` (small
  ``kappa`` = radial orbits = shells) and an isotropic orbital plane except for
  a fraction of prograde, low-inclination events (accreted discs appear in about
  a third of Auriga haloes, Gómez et al. 2017). Its orbit is integrated in the
  spherical potential ``M(<r)`` of the galaxy, and tracer stars leave it at
  uniform times from its Lagrange points ``r_J = r (m / 3 M(<r))^(1/3)`` (the
  particle-spray streams of Fardal, Huang & Weinberg 2015) and are integrated to
  the present: recent events are streams and shells, old ones wind up into a
  phase-mixed halo. Stars are copies of their satellite's tracers, spread along
  the orbit. (``scheme = 1``, the worlds before streams, released every tracer
  at infall and read it at random times, spreading every satellite along its
  whole orbit at once.)
- **Summaries** (:func:`assembly_summaries`): the ERGO-ML I labels (Eisert et
  al. 2023): lookback time and mass ratio of the last major merger, mass-weighted
  mean merger lookback time and mass ratio, number of accretion events.

The integrator is a hand-written vectorised kick-drift-kick leapfrog: every
particle of every satellite of a galaxy advances in one numpy array with its own
time step (``K`` steps over its own integration time). A dynamics library (gala
installs from a wheel here; agama has none) would need astropy in the
numpy/scipy-only ``data`` floor, has no deprojected-Sérsic potential (the mock's
own ``M(<r)`` would have to be approximated) and integrates one stream per call;
one array over all satellites is what keeps ``simulate`` at its throughput.
Integration time is capped at ``max_orbits`` apocentric periods: by then a
stream with the fractional frequency spread ``(m / M)^(1/3)`` of
Fardal et al. (2015) has wrapped many times, so longer runs only cost time.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> h = draw_history(rng, m_exsitu=2e10, m_star=1e11)
    >>> bool(np.isclose(h.mass.sum(), 2e10)), h.n_events >= 1
    (True, True)
    >>> s = assembly_summaries(h)
    >>> s["n_accretion_events"] == h.n_events
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from sbi_exsitu.data.mock.profiles import G

__all__ = [
    "AccretionHistory",
    "draw_history",
    "spray_debris",
    "assembly_summaries",
    "ASSEMBLY_LABELS",
    "NO_MAJOR_MERGER_GYR",
]

#: The assembly labels written beside f_ex (ERGO-ML I, Eisert et al. 2023).
ASSEMBLY_LABELS: tuple[str, ...] = (
    "last_major_lookback",
    "last_major_mu",
    "mean_merger_lookback",
    "mean_merger_mu",
    "n_accretion_events",
)
#: Lookback time written for galaxies without a major merger (older than any
#: event; the mass ratio is then 0).
NO_MAJOR_MERGER_GYR = 13.8
#: Conversion: 1 kpc / (km/s) = 0.9778 Gyr.
_KPC_PER_KMS_GYR = 0.9778
#: Major-merger threshold on mu (Rodriguez-Gomez et al. 2015).
_MAJOR_MU = 0.25


@dataclass(frozen=True)
class AccretionHistory:
    """The accretion events of one galaxy (one entry per satellite).

    Attributes:
        mass: stellar mass brought in (Msun); sums to the ex-situ mass.
        mu: mass ratio ``mass / M*_host(t_infall)`` (host mass at infall).
        t_infall: infall lookback time (Gyr).
    """

    mass: np.ndarray
    mu: np.ndarray
    t_infall: np.ndarray

    @property
    def n_events(self) -> int:
        """Number of accretion events."""
        return len(self.mass)


def draw_history(
    rng: np.random.Generator,
    m_exsitu: float,
    m_star: float,
    *,
    class_fractions: tuple[float, ...] = (0.5, 0.2, 0.3),
    log_mu_edges: tuple[float, ...] = (0.0, -0.6, -1.0, -2.0),
    concentration: float = 4.0,
    infall_beta: tuple[float, float] = (2.0, 1.3),
    infall_max_gyr: float = 12.5,
    host_growth_dex_per_gyr: float = 0.04,
    max_events: int = 40,
) -> AccretionHistory:
    """Draw satellites whose masses sum to ``m_exsitu`` (see the module docstring).

    Args:
        rng: random generator.
        m_exsitu: ex-situ stellar mass (Msun).
        m_star: host stellar mass at z=0 (Msun).
        class_fractions: mean shares of the ex-situ mass per merger class.
        log_mu_edges: decreasing log10 mu edges of the classes.
        concentration: Dirichlet concentration of the per-galaxy class shares
            (larger = closer to the mean shares).
        infall_beta: Beta(a, b) shape of the infall lookback time.
        infall_max_gyr: the Beta variable's scale (Gyr).
        host_growth_dex_per_gyr: ``g`` of the host mass ``M* 10^(-g t)`` at
            lookback ``t``, against which infall mass ratios are measured.
        max_events: the smallest satellites beyond this count are merged into
            the last one kept (bounds the cost).
    """
    shares = rng.dirichlet(concentration * np.asarray(class_fractions) + 1e-3)
    masses: list[float] = []
    times: list[float] = []
    for k, share in enumerate(shares):
        left = share * m_exsitu
        hi, lo = log_mu_edges[k], log_mu_edges[k + 1]
        # Stop once what is left is below a hundredth of the class's share:
        # it joins the previous satellite instead of adding a speck.
        while left > 1e-2 * share * m_exsitu:
            t = infall_max_gyr * rng.beta(*infall_beta)
            m_host = m_star * 10.0 ** (-host_growth_dex_per_gyr * t)
            m = min(10.0 ** rng.uniform(lo, hi) * m_host, left)
            masses.append(m)
            times.append(t)
            left -= m
        if masses and left > 0:
            masses[-1] += left
    if not masses:  # f_ex = 0
        return AccretionHistory(np.zeros(0), np.zeros(0), np.zeros(0))
    order = np.argsort(masses)[::-1]
    mass, t_inf = np.asarray(masses)[order], np.asarray(times)[order]
    if len(mass) > max_events:  # the smallest ones join the last one kept
        mass = np.concatenate([mass[: max_events - 1], [mass[max_events - 1 :].sum()]])
        t_inf = t_inf[:max_events]
    mass *= m_exsitu / mass.sum()  # exact despite rounding
    m_host = m_star * 10.0 ** (-host_growth_dex_per_gyr * t_inf)
    # Ratios are secondary / primary: a remainder joining a satellite stays <= 1.
    mu = np.minimum(mass / m_host, 1.0)
    return AccretionHistory(mass=mass, mu=mu, t_infall=t_inf)


def assembly_summaries(history: AccretionHistory) -> dict[str, float]:
    """ERGO-ML I assembly labels of a history (Eisert et al. 2023).

    A galaxy with no major merger gets ``last_major_lookback`` =
    :data:`NO_MAJOR_MERGER_GYR` and ``last_major_mu`` = 0; one with no event at
    all also gets mean lookback :data:`NO_MAJOR_MERGER_GYR` and mean mu 0.
    """
    h = history
    major = h.mu >= _MAJOR_MU
    if major.any():
        last = np.argmin(np.where(major, h.t_infall, np.inf))
        t_major, mu_major = float(h.t_infall[last]), float(h.mu[last])
    else:
        t_major, mu_major = NO_MAJOR_MERGER_GYR, 0.0
    if h.n_events:
        w = h.mass / h.mass.sum()
        t_mean, mu_mean = float(w @ h.t_infall), float(w @ h.mu)
    else:
        t_mean, mu_mean = NO_MAJOR_MERGER_GYR, 0.0
    return {
        "last_major_lookback": t_major,
        "last_major_mu": mu_major,
        "mean_merger_lookback": t_mean,
        "mean_merger_mu": mu_mean,
        "n_accretion_events": float(h.n_events),
    }


@dataclass(frozen=True)
class OrbitRecipe:
    """How satellites orbit and are stripped (the debris parameters of a model).

    Attributes:
        apo_re: apocentre of a mu = 1 satellite in units of the in-situ R_e.
        apo_mu_slope: ``r_apo ∝ mu^-slope`` (massive satellites sink deeper).
        apo_scatter_dex: log-normal scatter of the apocentre.
        kappa_range: tangential speed at apocentre over V_c, uniform prior.
        disc_plane_fraction: probability that an event is prograde and within
            ``disc_plane_max_deg`` of the disc plane.
        disc_plane_max_deg: maximum inclination of those events (degrees).
        max_orbits: integration time cap in apocentric periods.
        steps: leapfrog steps per tracer orbit.
        snapshots: states kept per tracer orbit (the stars' read-out times).
        tracers: integrated orbits per galaxy (at least 4 per satellite).
        max_energy_drift: tracers whose relative energy error exceeds this are
            replaced by others of the same satellite.
        scheme: 2 (default) = tracers released along each satellite's own orbit
            and read now (:func:`_stream_tracers`: streams and shells); 1 =
            tracers released at infall and read at random times (every
            satellite phase-mixed along its orbit; the worlds of earlier
            versions, kept so their datasets re-draw bit for bit).
    """

    apo_re: float = 2.0
    apo_mu_slope: float = 0.35
    apo_scatter_dex: float = 0.2
    kappa_range: tuple[float, float] = (0.05, 0.6)
    disc_plane_fraction: float = 0.15
    disc_plane_max_deg: float = 25.0
    max_orbits: float = 8.0
    steps: int = 480
    snapshots: int = 160
    tracers: int = 1024
    max_energy_drift: float = 0.05
    scheme: int = 2


def spray_debris(
    rng: np.random.Generator,
    history: AccretionHistory,
    counts: np.ndarray,
    enclosed: Callable[[np.ndarray], np.ndarray],
    r_e: float,
    recipe: OrbitRecipe,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions and velocities now of ``counts[i]`` stars of each satellite ``i``.

    Args:
        rng: random generator.
        history: the accretion events.
        counts: star particles per event (sums to the debris particle count).
        enclosed: total ``M(<r)`` of the host (Msun, r in kpc), spherical.
        r_e: in-situ effective radius (kpc), the apocentre scale.
        recipe: orbit and stripping parameters.

    Returns:
        ``(pos, vel, event)``: (N, 3) kpc, (N, 3) km/s in the galaxy frame (disc
        in the x-y plane) and the (N,) event index of each particle.
    """
    n = int(np.sum(counts))
    event = np.repeat(np.arange(len(counts)), counts)
    if n == 0:
        return np.zeros((0, 3)), np.zeros((0, 3)), event
    ne = history.n_events
    r_apo = (
        recipe.apo_re
        * r_e
        * history.mu ** (-recipe.apo_mu_slope)
        * 10.0 ** (recipe.apo_scatter_dex * rng.standard_normal(ne))
    )
    m_apo = enclosed(r_apo)
    v_c = np.sqrt(G * m_apo / r_apo)
    kappa = rng.uniform(*recipe.kappa_range, ne)
    r_jac = r_apo * np.cbrt(history.mass / (3.0 * m_apo))
    sigma_v = v_c * r_jac / r_apo
    rot = _orbit_planes(rng, ne, recipe)
    # Satellite at apocentre on the x axis of its orbital plane, moving along +y.
    x0 = np.einsum("eij,j->ei", rot, [1.0, 0.0, 0.0]) * r_apo[:, None]
    v0 = np.einsum("eij,j->ei", rot, [0.0, 1.0, 0.0]) * (kappa * v_c)[:, None]
    seeds = np.maximum(np.minimum(counts, 4), np.round(counts * recipe.tracers / n))
    seed_event = np.repeat(np.arange(ne), seeds.astype(int))
    period = 2.0 * np.pi * r_apo / v_c * _KPC_PER_KMS_GYR  # Gyr
    tracers = _phase_mixed_tracers if recipe.scheme == 1 else _stream_tracers
    read, drift, pos_cloud, vel_cloud = tracers(
        rng, seed_event, x0, v0, r_jac, sigma_v, period, history, recipe,
        enclosed, r_e,
    )  # fmt: skip
    # Each star: a random well-integrated tracer of its satellite. Tracers whose
    # energy drifted (a radial orbit stepped across the centre) are not read:
    # their satellite's well-integrated tracers stand in.
    good = drift < recipe.max_energy_drift
    good |= ~np.bincount(seed_event, good, ne).astype(bool)[seed_event]
    pool = np.flatnonzero(good)
    pool = pool[np.argsort(seed_event[pool], kind="stable")]
    n_good = np.bincount(seed_event[pool], minlength=ne)
    first = np.concatenate([[0], np.cumsum(n_good)[:-1]])
    tracer = pool[first[event] + (rng.random(n) * n_good[event]).astype(int)]
    pos, vel = read(tracer)
    # A jitter of a quarter of the release cloud keeps the stars distinct.
    pos = pos + 0.25 * pos_cloud[tracer, None] * rng.standard_normal((n, 3))
    vel = vel + 0.25 * vel_cloud[tracer, None] * rng.standard_normal((n, 3))
    return pos, vel, event


def _phase_mixed_tracers(
    rng, seed_event, x0, v0, r_jac, sigma_v, period, history, recipe, enclosed, r_e
):
    """Scheme 1: tracers start at infall and are read at random times.

    In a static potential, a star released at a later apocentre passage is the
    same orbit started later, so each tracer's trajectory, read at many times,
    stands for the stars stripped over many passages (uniform in [0.1, 1] of
    the tracer's run: continuous stripping). Every satellite is thus spread
    along its whole orbit at once.
    """
    m = len(seed_event)
    t_pos = x0[seed_event] + r_jac[seed_event, None] * rng.standard_normal((m, 3))
    t_vel = v0[seed_event] + sigma_v[seed_event, None] * rng.standard_normal((m, 3))
    t_end = np.minimum(
        history.t_infall[seed_event],
        recipe.max_orbits * period[seed_event] * rng.uniform(0.5, 1.0, m),
    )
    snaps, drift = _leapfrog(
        t_pos, t_vel, t_end / _KPC_PER_KMS_GYR, recipe.steps, recipe.snapshots,
        enclosed, r_e,
    )  # fmt: skip
    s_lo = int(0.1 * recipe.snapshots)

    def snap_of(tracer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        snap = rng.integers(s_lo, recipe.snapshots, len(tracer))
        return snaps[snap, tracer, :3], snaps[snap, tracer, 3:]

    return snap_of, drift, r_jac[seed_event], sigma_v[seed_event]


def _stream_tracers(
    rng, seed_event, x0, v0, r_jac, sigma_v, period, history, recipe, enclosed, r_e
):
    """Scheme 2: tracers stripped along each satellite's orbit, read now.

    The satellite itself is integrated from apocentre at infall; each tracer
    leaves it at a uniform time on that orbit from one of its two Lagrange
    points, ``±r_J`` along the radius with the tangential velocity scaled to
    keep the satellite's angular speed (the particle-spray recipe of Fardal,
    Huang & Weinberg 2015, MNRAS 452, 301), plus a dispersion of a fifth of
    ``r_J`` and of ``V r_J / r``. The inner point's stars are more bound and
    lead, the outer one's trail: recent events are streams (tangential orbits)
    or shells (radial ones), old ones have wound up into a halo.

    Both tracer schemes return ``(read, drift, pos_cloud, vel_cloud)``:
    ``read(tracer)`` gives the stars' positions and velocities now, ``drift``
    each tracer's relative energy error, and the clouds the per-tracer scales of
    the stars' jitter.
    """
    m = len(seed_event)
    t_sat = np.minimum(history.t_infall, recipe.max_orbits * period)
    # A satellite on a radial orbit stepped across the centre gains energy at
    # every pericentre and would fling all the tracers released from it
    # outwards (no tracer check sees that): its energy is held.
    orbit, _ = _leapfrog(
        x0, v0, t_sat / _KPC_PER_KMS_GYR, recipe.steps, recipe.snapshots,
        enclosed, r_e, hold_energy=True,
    )  # fmt: skip
    # Release at a uniform snapshot k, time (k + 1) / S of the satellite's run.
    k = rng.integers(0, recipe.snapshots, m)
    state = orbit[k, seed_event]
    x, v = state[:, :3], state[:, 3:]
    r = np.sqrt(np.einsum("ij,ij->i", x, x))
    r_hat = x / r[:, None]
    r_j = r * np.cbrt(history.mass[seed_event] / (3.0 * enclosed(r)))
    side = np.where(rng.random(m) < 0.5, -1.0, 1.0)
    v_rad = np.einsum("ij,ij->i", v, r_hat)[:, None] * r_hat
    speed = np.sqrt(np.einsum("ij,ij->i", v, v))
    pos = x + (side * r_j)[:, None] * r_hat
    pos += 0.2 * r_j[:, None] * rng.standard_normal((m, 3))
    vel = v_rad + (v - v_rad) * (1.0 + side * r_j / r)[:, None]
    v_j = speed * r_j / r
    vel += 0.2 * v_j[:, None] * rng.standard_normal((m, 3))
    t_left = t_sat[seed_event] * (1.0 - (k + 1) / recipe.snapshots)
    final, drift = _leapfrog(
        pos, vel, t_left / _KPC_PER_KMS_GYR, recipe.steps, 1, enclosed, r_e
    )

    def read(tracer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Stars stripped a little before or after their tracer lie a little
        # ahead or behind it on the same orbit: a shift along the velocity of
        # ~1.5 r_J turns the tracers' beads into continuous streams.
        x, v = final[0, tracer, :3], final[0, tracer, 3:]
        speed_now = np.sqrt(np.einsum("ij,ij->i", v, v)) + 1e-9
        dt = 1.5 * r_j[tracer] / speed_now * rng.standard_normal(len(tracer))
        return x + v * dt[:, None], v

    return read, drift, r_j, v_j


def _orbit_planes(rng: np.random.Generator, n: int, recipe: OrbitRecipe) -> np.ndarray:
    """(n, 3, 3) rotations taking the z axis to each event's angular momentum."""
    rot = Rotation.from_quat(rng.standard_normal((n, 4))).as_matrix()
    in_plane = rng.random(n) < recipe.disc_plane_fraction
    if in_plane.any():
        k = int(in_plane.sum())
        tilt = np.radians(recipe.disc_plane_max_deg) * np.sqrt(rng.random(k))
        # Prograde: angular momentum within `tilt` of +z (the disc spin axis).
        spin = Rotation.from_euler(
            "zxz", np.stack([rng.uniform(0, 2 * np.pi, k), tilt, np.zeros(k)], 1)
        )
        rot[in_plane] = spin.as_matrix()
    return rot


def _leapfrog(
    pos: np.ndarray,
    vel: np.ndarray,
    t_end: np.ndarray,
    steps: int,
    snapshots: int,
    enclosed: Callable[[np.ndarray], np.ndarray],
    r_scale: float,
    hold_energy: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Kick-drift-kick in a spherical potential, each orbit its own time step.

    ``hold_energy`` rescales each orbit's speed at every snapshot back to its
    initial energy (a projection step): a radial orbit stepped across the
    centre otherwise gains energy at every pericentre.

    Orbit ``i`` runs for ``t_end[i]`` in ``steps`` steps; ``snapshots`` states
    equally spaced in time are returned as an array (snapshots, N, 6) of
    positions and velocities, with each orbit's final relative energy error.
    ``g(r) = G M(<r) / r^3`` is tabulated once on a log grid: incomplete gamma
    functions per particle and step would dominate.
    """
    n_grid = 512
    log_grid = np.log(r_scale) + np.linspace(np.log(1e-4), np.log(10**3.5), n_grid)
    grid = np.exp(log_grid)
    log_g = np.log(G * enclosed(grid) / grid**3)
    inv_step = (n_grid - 1) / (log_grid[-1] - log_grid[0])
    u_core = (np.log(0.05 * r_scale) - log_grid[0]) * inv_step
    dt = (t_end / steps)[:, None]
    every = max(steps // snapshots, 1)

    def accel(x: np.ndarray) -> np.ndarray:
        # Linear interpolation on the uniform log grid by index arithmetic:
        # np.interp's binary search was 80% of the cost of a galaxy.
        lr = 0.5 * np.log(np.einsum("ij,ij->i", x, x) + 1e-300)
        # A harmonic core inside u_core (5% of R_e): the Sérsic cusp's diverging
        # g(r) would make close pericentre passages the leapfrog's energy leak.
        u = np.clip((lr - log_grid[0]) * inv_step, u_core, n_grid - 1.000001)
        i = u.astype(np.intp)
        w = u - i
        lg = log_g[i] + w * (log_g[i + 1] - log_g[i])
        # Beyond the grid the mass is converged: g falls as r^-3.
        lg -= 3.0 * np.maximum(lr - log_grid[-1], 0.0)
        return -np.exp(lg)[:, None] * x

    # Potential on the grid, dPhi/dln r = g r^2, for the energy check.
    dphi = np.exp(log_g) * grid**2
    seg = 0.5 * (dphi[1:] + dphi[:-1]) * np.diff(log_grid)
    tail = np.concatenate([np.cumsum(seg[::-1])[::-1], [0.0]])  # ∫_r^r_max
    phi_grid = -G * enclosed(grid[-1:]) / grid[-1] - tail

    def energy(x: np.ndarray, v: np.ndarray) -> np.ndarray:
        lr = 0.5 * np.log(np.einsum("ij,ij->i", x, x) + 1e-300)
        return 0.5 * np.einsum("ij,ij->i", v, v) + np.interp(lr, log_grid, phi_grid)

    out = np.empty((snapshots, len(pos), 6))
    e0 = energy(pos, vel)
    pos, vel = pos.copy(), vel.copy()
    acc = accel(pos)
    for k in range(every * snapshots):
        vel += 0.5 * dt * acc
        pos += dt * vel
        acc = accel(pos)
        vel += 0.5 * dt * acc
        if (k + 1) % every == 0:
            if hold_energy:
                kinetic = 0.5 * np.einsum("ij,ij->i", vel, vel)
                target = np.maximum(kinetic + e0 - energy(pos, vel), 0.0)
                vel *= np.sqrt(target / np.maximum(kinetic, 1e-300))[:, None]
            out[k // every, :, :3], out[k // every, :, 3:] = pos, vel
    return out, np.abs(energy(pos, vel) / e0 - 1.0)
