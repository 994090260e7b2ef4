"""A lane copy against a plain list of refs: whatever joins or leaves the lane, the copy gives the same
refs, head and places, including refs out of number order, of other counters or days, and of other
shapes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from token_service.queue.lanes import LaneCopy

PREFIXES = ("OPD1.20261122.", "OPD1.20261123.", "ORTHO.20261122.")


def _ref(prefix: int, number: int, width: int = 5) -> str:
    return f"{PREFIXES[prefix]}{number:0{width}d}"


refs = st.one_of(
    st.builds(_ref, st.integers(0, 2), st.integers(1, 400)),
    st.builds(_ref, st.integers(0, 2), st.integers(1, 400), st.integers(1, 6)),
    st.sampled_from(["walk-in", "OPD1.x.y", "OPD1.20261122.", "OPD1.20261122.٣"]),  # no number, or not ASCII
)


def _check(copy: LaneCopy, model: list[str], dropped: list[str]) -> None:
    assert copy.refs == model
    assert len(copy) == len(model)
    assert copy.head() == (model[0] if model else None)
    view = copy.view()
    for i, ref in enumerate(model):
        assert view.index(ref) == i
    for ref in dropped:
        if ref not in model:
            assert copy.place(ref) is None


@settings(max_examples=300, deadline=None)
@given(
    start=st.lists(refs, max_size=30, unique=True),
    steps=st.lists(st.tuples(st.integers(0, 40), st.lists(refs, max_size=12)), max_size=25),
)
def test_a_copy_follows_its_lane(start: list[str], steps: list[tuple[int, list[str]]]) -> None:
    copy = LaneCopy(start, (0, 0, 0))
    model = list(start)
    dropped: list[str] = []
    _check(copy, model, dropped)
    for step, (drop, new) in enumerate(steps):
        drop = min(drop, len(model))
        items = [r for r in dict.fromkeys(new) if r not in model]  # a ref is in a lane once
        dropped += model[:drop]
        copy.advance(len(model) - drop, items, (step, step, 0))
        model = model[drop:] + items
        _check(copy, model, dropped)
        assert copy.counts == (step, step, 0)


def test_a_view_keeps_its_places_while_the_copy_moves_on() -> None:
    copy = LaneCopy([_ref(0, n) for n in range(1, 11)], (0, 0, 0))
    view = copy.view()
    copy.advance(7, [_ref(0, 11), _ref(0, 3, 4)], (1, 1, 0))  # three called; a new token and an odd one
    assert view.index(_ref(0, 1)) is None  # called since: no place
    assert view.index(_ref(0, 5)) == 4  # its place as of the view
    assert view.index(_ref(0, 11)) is None  # joined after the view
    assert copy.view().index(_ref(0, 11)) == 7
    assert copy.view().index(_ref(0, 3, 4)) == 8


def test_a_long_day_of_calls_and_arrivals_keeps_the_arrays_short() -> None:
    copy = LaneCopy([], (0, 0, 0))
    model: list[str] = []
    number = 0
    for _ in range(200):  # 20,000 tokens through a line that stays about 100 long
        new = [_ref(0, n) for n in range(number + 1, number + 101)]
        number += 100
        drop = len(model) // 2
        copy.advance(len(model) - drop, new, (0, 0, 0))
        model = model[drop:] + new
        assert copy.head() == model[0] and len(copy) == len(model)
    assert copy.refs == model
    assert copy.view().index(model[-1]) == len(model) - 1
    run = copy.runs[0][2]
    assert len(copy.order) < 10_000 and len(run.numbers) < 10_000  # the called part was let go
