"""The entry classifier: fitted on the knowledge base's own variants, kept only where its held-out variants
say it helps, and blended into search."""

from __future__ import annotations

import time

import numpy as np
from helpers import write

from retrieval.entry_classifier import MIN_MEAN_VARIANTS, Scoring, dense_scores, fit_entry_classifier

SCORING = Scoring(variant_vote=0.02, prototype_weight=0.5, prototype_full_up_to=10)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def noisy_entries(rng, entries: int, per_entry: int, dim: int = 24, noise: float = 0.9):
    """Phrasings scattered widely around each entry's direction: a new phrasing's nearest neighbour is often
    another entry's, while a linear model sees the directions."""
    centres = unit(rng.standard_normal((entries, dim)))
    labels = np.repeat(np.arange(entries), per_entry)
    return centres, [f"e{i}" for i in labels], unit(centres[labels] + noise * rng.standard_normal((len(labels), dim)) / np.sqrt(dim) * 4)


def test_kept_where_held_out_variants_say_it_helps_and_it_does():
    rng = np.random.default_rng(0)
    centres, ids, vectors = noisy_entries(rng, entries=12, per_entry=20)
    classifier = fit_entry_classifier(ids, vectors, SCORING)
    assert classifier is not None and classifier.heldout["top1_with"] >= classifier.heldout["top1_without"] + 0.005
    # new phrasings: better ranked with it than by the product's dense scoring alone
    labels = np.repeat(np.arange(12), 30)
    queries = unit(centres[labels] + 0.9 * rng.standard_normal((len(labels), 24)) / np.sqrt(24) * 4)
    base = dense_scores(queries.astype(np.float64), vectors.astype(np.float64), np.array([int(i[1:]) for i in ids]), 12, SCORING)
    said = np.array([[classifier.scores(q)[f"e{j}"] for j in range(12)] for q in queries])
    assert ((base + said).argmax(1) == labels).mean() > (base.argmax(1) == labels).mean() + 0.02
    assert all(abs(sum(classifier.scores(q).values()) - classifier.blend) < 1e-6 for q in queries[:3])  # blend x probabilities


def test_dropped_where_it_does_not_help_and_not_tried_on_few_variants():
    rng = np.random.default_rng(1)
    # each entry asked two opposite ways (directions +c and -c): no linear model tells them apart, nearest
    # variant does (scored without prototypes, which such an entry blurs)
    centres = unit(rng.standard_normal((8, 24)))
    signs = np.tile([1.0, -1.0], 80)
    labels = np.repeat(np.arange(8), 20)
    vectors = unit(signs[:, None] * centres[labels] + 0.05 * rng.standard_normal((160, 24)))
    assert fit_entry_classifier([f"e{i}" for i in labels], vectors, Scoring(0.02, 0.0, 10)) is None
    _, ids, few = noisy_entries(rng, entries=12, per_entry=int(MIN_MEAN_VARIANTS) - 1)
    assert fit_entry_classifier(ids, few, SCORING) is None  # too few variants: the prototype does this job


def test_search_uses_it_once_fitted(make_kb, tmp_path, tiny_embedder):
    """A knowledge base with many variants per entry: the classifier is fitted in the background (search goes
    on without it) or by `prepare`, and then search adds its say to the entries' scores."""
    rows = ["id,question,answer"]
    topics = ["refund", "delivery", "password", "warranty", "gift card", "invoice"]
    for t in topics:
        rows += [f"{t.replace(' ', '-')},{q},About {t}." for q in (
            f"{t} question", f"how does {t} work", f"tell me about {t}", f"help with {t}", f"{t} please", f"my {t}",
            f"what about the {t}", f"{t} problem", f"question on {t} today")]
    kb = make_kb()
    kb.add([write(tmp_path / "faq.csv", "\n".join(rows) + "\n")])
    before = {h.entry_id: h.score for h in kb.search("help me with my refund", k=6, mode="dense")}  # starts the fit
    deadline = time.monotonic() + 60
    while kb._derived.get("classifier") is None:
        assert time.monotonic() < deadline, "the classifier was never fitted"
        time.sleep(0.05)
    token, classifier = kb._derived["classifier"]
    assert token == kb.store.index_token() and classifier is not None
    after = {h.entry_id: h.score for h in kb.search("help me with my refund", k=6, mode="dense")}
    assert set(after) == set(before)
    assert sum(after.values()) - sum(before.values()) > 0.5 * classifier.blend  # its probabilities, blended in
    kb.add([write(tmp_path / "more.csv", "id,question,answer\nhours,When are you open?,9 to 5.\n")])
    kb.prepare()  # refitted for the new index version at once
    assert kb._derived["classifier"][0] == kb.store.index_token()


def test_a_classifier_that_does_not_help_is_not_fitted_again_for_the_same_index(make_kb, tmp_path):
    kb = make_kb()
    kb.add([write(tmp_path / "faq.csv", "id,question,answer\na,How do I cancel?,Here.\nb,Where is my parcel?,There.\n")])
    kb.prepare()
    assert kb._derived["classifier"] == (kb.store.index_token(), None)  # one variant each: not tried
    kb.search("cancel", mode="dense")
    assert not kb._rebuilding
