"""Fusion of dense and lexical lists into entries, confidence, and its calibration."""

import math
import random

import numpy as np

from retrieval import RetrievalSettings
from retrieval.calibration import brier, fit_logistic
from retrieval.fusion import best_per_entry, confidence, features, fuse, variant_votes
from retrieval.prototypes import Prototypes, pull_weight


def test_an_entry_scores_by_its_best_unit():
    units = {1: ("a", "q1"), 2: ("a", "q2"), 3: ("b", "q3")}
    assert best_per_entry([(1, 0.5), (2, 0.9), (3, 0.7), (99, 1.0)], units) == [("a", 0.9, "q2"), ("b", 0.7, "q3")]


def test_lexical_evidence_breaks_a_near_tie_but_not_a_clear_dense_lead():
    s = RetrievalSettings(lexical_weight=0.15)
    near = fuse([("a", 0.80, ""), ("b", 0.79, "")], [("b", 12.0, ""), ("a", 3.0, "")], s)
    assert near[0].entry_id == "b"
    clear = fuse([("a", 0.90, ""), ("b", 0.60, "")], [("b", 12.0, "")], s)
    assert clear[0].entry_id == "a"


def test_single_modes_use_one_list():
    s = RetrievalSettings()
    dense = [("a", 0.8, ""), ("b", 0.7, "")]
    lexical = [("c", 5.0, ""), ("b", 4.0, "")]
    assert [c.entry_id for c in fuse(dense, lexical, s, mode="dense")] == ["a", "b"]
    assert [c.entry_id for c in fuse(dense, lexical, s, mode="lexical")] == ["c", "b"]
    assert {c.entry_id for c in fuse(dense, lexical, s)} == {"a", "b", "c"}


def test_margin_and_confidence_grow_with_a_clear_winner():
    s = RetrievalSettings()
    clear = fuse([("a", 0.9, ""), ("b", 0.5, "")], [], s)[0]
    close = fuse([("a", 0.9, ""), ("b", 0.88, "")], [], s)[0]
    assert abs(clear.margin - 0.4) < 1e-9 and abs(close.margin - 0.02) < 1e-9
    assert clear.confidence > close.confidence
    assert 0.0 < close.confidence < 1.0


def test_calibration_fit_separates_right_from_wrong_hits():
    rng = random.Random(0)
    x, y = [], []
    for _ in range(400):
        right = rng.random() < 0.5
        cosine = rng.gauss(0.75 if right else 0.45, 0.08)
        x.append(features(cosine, rng.gauss(0.1 if right else 0.01, 0.03), rng.choice([1, 2, None])))
        y.append(int(right))
    weights = fit_logistic(x, y)
    assert weights[0] > 0
    probs = [confidence(f, weights) for f in x]
    assert brier(probs, y) < 0.1 < brier([0.5] * len(y), y)


def test_an_entry_matched_by_several_variants_outranks_one_matched_by_a_single_close_variant():
    units = {1: ("a", "q1"), 2: ("a", "q2"), 3: ("a", "q3"), 4: ("b", "q4")}
    hits = [(4, 0.80), (1, 0.79), (2, 0.78), (3, 0.77)]
    assert variant_votes(hits, units, 0.0) == {}
    votes = variant_votes(hits, units, 0.02)
    assert set(votes) == {"a"} and 0 < votes["a"] < 0.02 * math.log(3) + 1e-9
    s = RetrievalSettings()
    dense = best_per_entry(hits, units)
    assert fuse(dense, [], s)[0].entry_id == "b"
    voted = fuse(dense, [], s, votes=votes)
    assert voted[0].entry_id == "a" and voted[0].dense == 0.79  # the calibration still reads the best cosine


def test_an_entry_whose_variants_surround_the_query_outranks_one_odd_close_variant():
    def unit(*xs):
        v = np.array(xs, dtype=np.float32)
        return v / np.linalg.norm(v)

    query = unit(1, 0, 0)
    # "a": two phrasings on either side of the query; "b": one phrasing a little closer than either
    vectors = np.stack([unit(1, 0.6, 0), unit(1, -0.6, 0), unit(1, 0, 0.5), unit(0, 0, 1)])
    prototypes = Prototypes(["a", "a", "b", "c"], vectors)
    assert len(prototypes) == 1  # "b" and "c" have one variant each: nothing to average
    units = {1: ("a", "q1"), 2: ("a", "q2"), 3: ("b", "q3"), 4: ("c", "q4")}
    dense = best_per_entry([(uid, float(vectors[uid - 1] @ query)) for uid in units], units)
    best_a = float(vectors[0] @ query)
    s = RetrievalSettings()
    assert fuse(dense, [], s)[0].entry_id == "b"
    pull = prototypes.pull(query, dense, 0.5, full_up_to=10)
    assert set(pull) == {"a"} and math.isclose(pull["a"], 0.5 * (1.0 - best_a), rel_tol=1e-5)
    ranked = fuse(dense, [], s, votes=pull)
    assert ranked[0].entry_id == "a" and ranked[0].dense == best_a  # the calibration still reads the best cosine
    assert prototypes.pull(query, dense, 0.0, full_up_to=10) == {}


def test_the_pull_to_the_prototype_shrinks_as_an_entry_gains_variants():
    """Synthetic clouds: "many" has 60 tight variants in two clusters, the query close to one of them (as a
    new phrasing of a well-covered entry is); "few" has 3 spread variants around the query. The prototype of
    "many" lies between its clusters, far from the query: pulled all the way at the full weight it would lose
    to "few", which its nearest variant beats."""
    rng = np.random.default_rng(0)

    def cloud(centre, n, spread):
        v = np.asarray(centre, dtype=np.float32) + spread * rng.standard_normal((n, 3)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    query = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    many = np.vstack([cloud([1, 0.05, 0], 30, 0.02), cloud([0, 1, 0], 30, 0.02)])
    few = cloud([1, 0.35, 0.3], 3, 0.15)
    ids = ["many"] * 60 + ["few"] * 3
    vectors = np.vstack([many, few])
    prototypes = Prototypes(ids, vectors)
    units = {i + 1: (entry_id, f"q{i}") for i, entry_id in enumerate(ids)}
    dense = best_per_entry([(uid, float(vectors[uid - 1] @ query)) for uid in units], units)
    assert dense[0][0] == "many"  # nearest variant alone
    s = RetrievalSettings()

    def top(full_up_to):
        return fuse(dense, [], s, votes=prototypes.pull(query, dense, 0.5, full_up_to))[0].entry_id

    assert top(full_up_to=0) == "few"  # the same pull at every size: the blurred mean of "many" loses
    assert top(full_up_to=10) == "many"  # shrunk to 0.5 * 10 / 60 for "many"
    pull = prototypes.pull(query, dense, 0.5, full_up_to=10)
    assert math.isclose(pull["few"] / (0.5 * (float(prototypes.matrix[prototypes.row["few"]] @ query) - dense[1][1])), 1.0, rel_tol=1e-4)
    assert pull_weight(0.5, 3, 10) == 0.5 and math.isclose(pull_weight(0.5, 60, 10), 0.5 / 6)
