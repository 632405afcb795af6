"""Tests of sbi_exsitu.data.parallel: order, errors, local processes, Dask."""

from __future__ import annotations

import operator
import time

import pytest

from sbi_exsitu.data.parallel import parallel_map


def slow_square(x: int) -> int:
    # Early items are slower, so completion order differs from input order.
    time.sleep(0.02 * (5 - x) if x < 5 else 0)
    return x * x


def fail_on_three(x: int) -> int:
    if x == 3:
        raise KeyError("three")
    return x


def test_serial_keeps_order() -> None:
    assert list(parallel_map(operator.neg, [1, 2, 3])) == [-1, -2, -3]
    assert list(parallel_map(operator.neg, [])) == []


def test_processes_keep_order_and_raise_at_the_failing_item() -> None:
    # One test for both: starting a spawn pool costs seconds.
    items = list(range(8))
    assert list(parallel_map(slow_square, items, workers=2)) == [x * x for x in items]
    gen = parallel_map(fail_on_three, list(range(5)), workers=2)
    assert [next(gen) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(KeyError, match="three"):
        next(gen)


def test_bad_workers() -> None:
    with pytest.raises(ValueError, match="workers must be >= 1"):
        list(parallel_map(abs, [1], workers=0))


def test_dask_scheduler() -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=1, processes=False, dashboard_address=None
    ) as cluster:
        got = list(
            parallel_map(slow_square, range(6), scheduler=cluster.scheduler_address)
        )
    assert got == [x * x for x in range(6)]
