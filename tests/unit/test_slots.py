"""GPU placement for parallel trials (tuner.search.slots): table tests."""

from __future__ import annotations

from typing import Any

import pytest

from tuner.search.slots import Placement, PlacementError, parse_gpus, size_rule, trial_size

UUIDS = ("GPU-aaaa", "GPU-bbbb", "GPU-cccc", "GPU-dddd")


@pytest.mark.parametrize(
    ("text", "detected", "want"),
    [
        ("all", ("0", "1", "2", "3"), ("0", "1", "2", "3")),
        ("ALL", UUIDS, UUIDS),
        ("0,1,2,3", (), ("0", "1", "2", "3")),
        (" 2, 5 ", (), ("2", "5")),
        ("GPU-aaaa,GPU-cccc", (), ("GPU-aaaa", "GPU-cccc")),
        ("MIG-1234", (), ("MIG-1234",)),
        ([0, 1, 2], (), ("0", "1", "2")),
    ],
)
def test_parse_gpus(text: Any, detected: tuple[str, ...], want: tuple[str, ...]) -> None:
    assert parse_gpus(text, detected) == want


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("all", "no GPU found"),
        ("", "comma-separated"),
        ("0,,1", "comma-separated"),
        ("0,0", "named twice"),
        ("-1", "neither"),
        ("cuda:0", "neither"),
        ([], "comma-separated"),
    ],
)
def test_parse_gpus_refuses(text: Any, why: str) -> None:
    with pytest.raises(PlacementError, match=why):
        parse_gpus(text)


@pytest.mark.parametrize(
    ("flags", "size"),
    [
        ({}, 1),
        ({"tensor-parallel-size": 2}, 2),
        ({"tensor-parallel-size": 2, "pipeline-parallel-size": 2}, 4),
        ({"pipeline-parallel-size": "4"}, 4),
        ({"tensor-parallel-size": 8.0, "max-num-seqs": 64}, 8),
    ],
)
def test_trial_size(flags: dict[str, Any], size: int) -> None:
    assert trial_size(flags) == size


@pytest.mark.parametrize(
    ("flags", "n", "heads", "layers", "why"),
    [
        ({"tensor-parallel-size": 2}, 4, 32, 32, None),
        ({"tensor-parallel-size": 8}, 8, 64, 80, None),
        ({"tensor-parallel-size": 3}, 6, 24, 32, None),  # odd GPU count, a size that divides it
        ({"tensor-parallel-size": 8}, 4, None, None, "needs 8 GPUs; the host has 4"),
        ({"tensor-parallel-size": 2}, 3, None, None, "does not divide the host's 3 GPUs"),
        ({"tensor-parallel-size": 3}, 4, None, None, "does not divide the host's 4 GPUs"),
        ({"tensor-parallel-size": 4}, 8, 6, None, "does not divide the model's 6 attention heads"),
        ({"pipeline-parallel-size": 4}, 4, 32, 2, "exceeds the model's 2 layers"),
        ({"tensor-parallel-size": 0}, 4, None, None, "not a positive whole number"),
        ({"tensor-parallel-size": 1.5}, 4, None, None, "not a positive whole number"),
        ({"tensor-parallel-size": "two"}, 4, None, None, "not a whole number"),
    ],
)
def test_size_rule(
    flags: dict[str, Any], n: int, heads: int | None, layers: int | None, why: str | None
) -> None:
    got = size_rule(flags, n, heads=heads, layers=layers)
    if why is None:
        assert got is None
    else:
        assert got is not None and why in got


def _disjoint(sets: list[tuple[str, ...]]) -> bool:
    flat = [g for s in sets for g in s]
    return len(flat) == len(set(flat))


@pytest.mark.parametrize(
    ("gpus", "sizes", "want"),
    [
        # mixed TP sizes on 8 GPUs: aligned blocks, no overlap
        (
            tuple("01234567"),
            [1, 2, 4, 1],
            [("0",), ("2", "3"), ("4", "5", "6", "7"), ("1",)],
        ),
        # four single-GPU slots, then a fifth waits
        (tuple("0123"), [1, 1, 1, 1, 1], [("0",), ("1",), ("2",), ("3",), None]),
        # odd count: 3 GPUs, singles
        (tuple("012"), [1, 1, 1, 1], [("0",), ("1",), ("2",), None]),
        # 6 GPUs, TP 3 twice
        (tuple("012345"), [3, 3, 1], [("0", "1", "2"), ("3", "4", "5"), None]),
        # UUIDs come back as given
        (UUIDS, [2, 2], [UUIDS[:2], UUIDS[2:]]),
        # a TP-2 trial does not fit beside three singles on 4 GPUs
        (tuple("0123"), [1, 1, 1, 2], [("0",), ("1",), ("2",), None]),
    ],
)
def test_placement_table(gpus: tuple[str, ...], sizes: list[int], want: list[tuple[str, ...] | None]) -> None:
    p = Placement(gpus)
    got = [p.place(s) for s in sizes]
    assert got == want
    assert _disjoint([g for g in got if g is not None])


def test_waiting_trial_fits_once_a_release_makes_room() -> None:
    p = Placement(tuple("0123"))
    a, b, c = p.place(1), p.place(1), p.place(2)
    assert (a, b, c) == (("0",), ("1",), ("2", "3"))
    assert p.place(2) is None  # waits
    p.release(a or ())
    assert p.place(2) is None  # 1 GPU free is not enough
    p.release(b or ())
    assert p.place(2) == ("0", "1") and p.free == 0


def test_unaligned_free_gpus_still_used() -> None:
    p = Placement(tuple("0123"))
    held = [p.place(1) for _ in range(4)]
    p.release(held[1] or ())
    p.release(held[2] or ())
    assert p.place(2) == ("1", "2")  # no aligned pair free: the lowest free GPUs


def test_placement_refuses_impossible_sizes_and_bad_releases() -> None:
    p = Placement(("0", "1"))
    with pytest.raises(PlacementError):
        p.place(3)
    with pytest.raises(PlacementError):
        p.place(0)
    with pytest.raises(PlacementError):
        p.release(("0",))
    with pytest.raises(PlacementError):
        p.release(("7",))
    with pytest.raises(PlacementError):
        Placement(())


def test_gpus_set_aside_are_not_placed_until_released() -> None:
    p = Placement(("0", "1", "2", "3"))
    assert p.take(("1",)) is True  # another process filled GPU 1
    assert p.free == 3
    assert p.place(2) == ("2", "3")  # the aligned block 0-1 is not free
    assert p.place(1) == ("0",)
    assert p.place(1) is None
    assert p.take(("0",)) is False and p.take(("9",)) is False and p.take(()) is False
    p.release(("1",))
    assert p.place(1) == ("1",)


def test_blocked_gpus_of_a_slot() -> None:
    from tuner.measure.gpufree import GpuBusy, GpuMemory, GpuProcess, check_free
    from tuner.search.parallel import blocked_gpus

    full = GpuMemory(3, 1000, 900, 100, (GpuProcess(4242),))
    busy = GpuBusy(check_free((GpuMemory(2, 1000, 0, 1000), full), 0.5), 1)
    assert blocked_gpus(("2", "3"), busy) == ("3",)
    assert blocked_gpus(("GPU-a", "GPU-b"), busy) == ("GPU-a", "GPU-b")  # UUIDs: the whole set
