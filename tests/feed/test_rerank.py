"""Page assembly, the value formula, the ranker's file format and cursors, on data whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from feed.cursor import Cursor, CursorError, id_hashes
from feed.errors import ArtifactError
from feed.features import FEATURES
from feed.ranker import HEADS, Ranker, ValueFormula
from feed.rerank import PageConfig, PageInput, assemble, thompson_pick


def page_input(n: int, rng: np.random.Generator, groups: int) -> PageInput:
    unit = rng.normal(size=(n, 4))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    return PageInput(rng.random(n), rng.integers(-1, groups, n), rng.integers(-1, groups, n),
                     rng.integers(-1, max(groups // 2, 1), n), unit)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 80), limit=st.integers(1, 30), groups=st.integers(1, 20), seed=st.integers(0, 10**6),
       caps=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4)), lam=st.floats(0.0, 1.0))
def test_assemble_is_a_maximal_page_under_the_caps(n, limit, groups, seed, caps, lam):
    rng = np.random.default_rng(seed)
    page = page_input(n, rng, groups)
    config = PageConfig(max_per_creator=caps[0], max_per_product=caps[1], max_per_merchant=caps[2], mmr_lambda=lam)
    slots = {int(p): int(i) for p, i in zip(rng.integers(0, limit, 2), rng.integers(0, max(n, 1), 2),
                                                strict=True)} if n else {}
    chosen = assemble(page, limit, config, slots)
    assert len(chosen) == len(set(chosen)) <= limit
    counts = {}
    for i in chosen:
        for name, keys, cap in (("c", page.creator, caps[0]), ("p", page.product, caps[1]),
                                ("m", page.merchant, caps[2])):
            if keys[i] >= 0:
                counts[name, keys[i]] = counts.get((name, keys[i]), 0) + 1
                assert counts[name, keys[i]] <= cap
    if len(chosen) < limit:  # nothing left could join without breaking a cap: the page is as full as it can be
        for i in set(range(n)) - set(chosen):
            assert any(keys[i] >= 0 and counts.get((name, keys[i]), 0) >= cap for name, keys, cap in (
                ("c", page.creator, caps[0]), ("p", page.product, caps[1]), ("m", page.merchant, caps[2])))


def test_assemble_with_distinct_groups_fills_the_page_in_relevance_order():
    n = 30
    page = PageInput(np.linspace(1, 0, n), np.arange(n), np.arange(n), np.arange(n), np.zeros((n, 2)))
    assert assemble(page, 10, PageConfig(mmr_lambda=1.0), {}) == list(range(10))


def test_slots_take_their_positions():
    n = 30
    page = PageInput(np.linspace(1, 0, n), np.arange(n), np.arange(n), np.arange(n), np.zeros((n, 2)))
    chosen = assemble(page, 10, PageConfig(mmr_lambda=1.0), {3: 29, 6: 28})
    assert chosen[3] == 29 and chosen[6] == 28 and chosen[:3] == [0, 1, 2] and len(chosen) == 10


def test_mmr_skips_near_duplicates():
    unit = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    page = PageInput(np.array([1.0, 0.99, 0.9]), np.arange(3), np.arange(3), np.arange(3), unit)
    assert assemble(page, 2, PageConfig(mmr_lambda=0.5), {}) == [0, 2]
    assert assemble(page, 2, PageConfig(mmr_lambda=1.0), {}) == [0, 1]


def test_thompson_sampling_prefers_the_better_arm_and_still_explores():
    views, buys = np.array([1000.0, 1000.0, 2.0]), np.array([100.0, 5.0, 0.0])
    picks = np.bincount([thompson_pick(buys, views, (1.0, 50.0), seed) for seed in range(2000)], minlength=3)
    assert picks[0] > picks[1] and picks[2] > 0  # the unknown arm still gets drawn sometimes
    assert thompson_pick(np.zeros(0), np.zeros(0), (1.0, 1.0), 0) == -1
    assert thompson_pick(buys, views, (1.0, 50.0), 7) == thompson_pick(buys, views, (1.0, 50.0), 7)  # seeded


def test_thompson_draws_follow_their_beta_distributions():
    """An arm without a purchase (Beta(1, 60): drawn by its inverse CDF) against one with a purchase
    (Beta(2, 59): gamma draws) wins with P(X > Y) = E[(1 − Y)^60] = B(2, 119) / B(2, 59)."""
    from scipy.special import beta

    views, buys = np.array([10.0, 10.0]), np.array([0.0, 1.0])
    expected = beta(2, 119) / beta(2, 59)
    n = 6000
    won = sum(thompson_pick(buys, views, (1.0, 50.0), seed) == 0 for seed in range(n)) / n
    assert abs(won - expected) < 4 * np.sqrt(expected * (1 - expected) / n), (won, expected)


@settings(max_examples=300, deadline=None)
@given(probs=arrays(np.float32, (20, 3), elements=st.floats(0, 1, width=32)),
       price=arrays(np.float32, 20, elements=st.floats(0, 1000, width=32)),
       rate=arrays(np.float32, 20, elements=st.floats(0, 1, width=32)), cap=st.floats(0.0, 0.9))
def test_commission_never_exceeds_its_cap(probs, price, rate, cap):
    formula = ValueFormula(commission_cap=cap, commission_weight=100.0)
    without = ValueFormula(commission_cap=cap, commission_weight=0.0).value(probs, price, rate)
    value = formula.value(probs, price, rate)
    commission = value - without
    assert np.all(commission >= -1e-4) and np.all(commission <= cap * value + 1e-3 * (1 + np.abs(value)))


def test_a_high_commission_cannot_overtake_a_clearly_better_video():
    formula = ValueFormula()
    probs = np.array([[0.5, 0.05, 0.02], [0.1, 0.01, 0.002]], dtype=np.float32)  # the first is 10x likelier
    value = formula.value(probs, np.array([20.0, 20.0]), np.array([0.0, 1.0]))
    assert value[0] > value[1]


def test_value_formula_round_trips():
    formula = ValueFormula(version=3, weights={"watch": 2.0, "share": 1.0, "purchase": 9.0}, commission_cap=0.2)
    assert ValueFormula.from_dict(formula.to_dict()) == formula


def make_ranker(hidden: int = 4) -> Ranker:
    rng = np.random.default_rng(0)
    f = len(FEATURES)
    return Ranker(FEATURES, np.zeros(f, np.float32), np.ones(f, np.float32), rng.normal(size=(f, hidden)).astype(
        np.float32), np.zeros(hidden, np.float32), rng.normal(size=(hidden, len(HEADS))).astype(np.float32),
        np.zeros(len(HEADS), np.float32))


def test_ranker_round_trips_and_predicts_probabilities(tmp_path):
    ranker = make_ranker()
    ranker.save(tmp_path / "ranker.npz")
    loaded = Ranker.load(tmp_path / "ranker.npz")
    x = np.random.default_rng(1).normal(size=(50, len(FEATURES))).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x), ranker.predict(x), rtol=1e-6)
    assert loaded.predict(x).min() >= 0 and loaded.predict(x).max() <= 1


def test_a_ranker_for_other_features_is_refused(tmp_path):
    ranker = make_ranker()
    ranker.features = (*FEATURES[:-1], "something_else")
    ranker.save(tmp_path / "ranker.npz")
    with pytest.raises(ArtifactError, match="retrain"):
        Ranker.load(tmp_path / "ranker.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ArtifactError, match="bad.npz"):
        Ranker.load(tmp_path / "bad.npz")


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), page=st.integers(0, 65535),
       ids=st.lists(st.text(min_size=1, max_size=12), max_size=60))
def test_cursor_round_trips(seed, page, ids):
    cursor = Cursor.first(seed).next(seed, id_hashes(np.array(ids, dtype=object)), 10**6)
    cursor = Cursor(seed, page, cursor.shown)
    decoded = Cursor.decode(cursor.encode())
    assert (decoded.seed, decoded.page) == (seed, page)
    np.testing.assert_array_equal(decoded.shown, id_hashes(np.array(ids, dtype=object)))


def test_cursor_ends_at_max_depth():
    cursor = Cursor.first(1).next(1, id_hashes(np.array(["a", "b"], dtype=object)), 3)
    assert cursor is not None and cursor.next(1, id_hashes(np.array(["c"], dtype=object)), 3) is None


def test_id_hashes_are_stable_across_processes():
    # fixed values: a cursor issued by one replica or version must mean the same on another
    assert id_hashes(np.array(["v000001", "u42"], dtype=object)).tolist() == [1412705694, 1237614238]


def test_a_cursor_that_inflates_beyond_any_issued_one_is_refused():
    import base64
    import struct
    import zlib

    body = struct.pack("<BIH", 1, 1, 1) + np.zeros(200_000, dtype="<u4").tobytes()  # 200k hashes compress tiny
    packed = zlib.compress(body, 9)
    text = base64.urlsafe_b64encode(packed + struct.pack("<I", zlib.crc32(packed))).decode().rstrip("=")
    assert len(text) < 16_384
    with pytest.raises(CursorError, match="larger"):
        Cursor.decode(text)


def _signed(record: bytes) -> str:
    """A cursor's text for a record as it would be stored (crc32 appended, base64url unpadded)."""
    import base64
    import struct
    import zlib

    return base64.urlsafe_b64encode(record + struct.pack("<I", zlib.crc32(record))).decode().rstrip("=")


def test_a_cursor_issued_in_the_compressed_format_still_decodes():
    import struct
    import zlib

    hashes = id_hashes(np.array(["v1", "v2", "v3"], dtype=object))
    legacy = _signed(zlib.compress(struct.pack("<BIH", 1, 77, 2) + hashes.astype("<u4").tobytes(), 1))
    decoded = Cursor.decode(legacy)
    assert (decoded.seed, decoded.page, decoded.shown.tolist()) == (77, 2, hashes.tolist())
    fresh = Cursor.decode(Cursor(77, 2, hashes).encode())  # written uncompressed now, read back the same
    assert Cursor(77, 2, hashes).encode() != legacy
    assert (fresh.seed, fresh.page, fresh.shown.tolist()) == (77, 2, hashes.tolist())


@pytest.mark.parametrize("record", [
    b"\x02\x01\x00",  # shorter than the header
    b"\x02" + bytes(6) + b"\x01\x02",  # hashes not a whole number of 4 bytes
    b"\x03" + bytes(6),  # neither format
    b"\x02" + bytes(6) + bytes(4 * 10_001),  # more hashes than any cursor this service issues
])
def test_a_damaged_uncompressed_cursor_is_refused(record):
    with pytest.raises(CursorError):
        Cursor.decode(_signed(record))


def test_a_compressed_record_claiming_the_new_format_is_refused():
    import struct
    import zlib

    with pytest.raises(CursorError, match="format 2"):
        Cursor.decode(_signed(zlib.compress(struct.pack("<BIH", 2, 1, 1), 1)))


def test_the_last_page_number_ends_the_feed_instead_of_overflowing():
    cursor = Cursor(1, 65_535, np.zeros(0, dtype=np.uint32))
    assert cursor.next(1, np.array([5], dtype=np.uint32), 10**6) is None
