import numpy as np

from faceswap_ela import parallel, seeding


def test_rng_depends_only_on_seed_and_identity():
    a = seeding.rng(1, "fake", "i000qa-fn", 0).random(4)
    b = seeding.rng(1, "fake", "i000qa-fn", 0).random(4)
    c = seeding.rng(1, "fake", "i000qa-fn", 1).random(4)
    d = seeding.rng(2, "fake", "i000qa-fn", 0).random(4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)
    assert seeding.key("a", 1) == seeding.key("a", 1) != seeding.key("a1")


def _square_and_draw(item):
    return item * item, seeding.rng(7, "item", item).integers(1 << 30)


def test_ordered_map_is_the_same_with_any_worker_count():
    items = list(range(23))
    one = list(parallel.ordered_map(_square_and_draw, items, workers=1))
    two = list(parallel.ordered_map(_square_and_draw, items, workers=2, chunksize=3))
    assert one == two
    assert [r[0] for r in one] == [i * i for i in items]
    assert parallel.n_workers(0) >= 1 and parallel.n_workers(3) == 3


def test_ordered_thread_map_keeps_order():
    items = list(range(50))
    assert list(parallel.ordered_thread_map(_square_and_draw, items, workers=3)) == [
        _square_and_draw(i) for i in items
    ]
