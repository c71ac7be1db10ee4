"""The out-of-scope classifier (numpy, synthetic vectors) and the guard's settings and edge cases (tiny
embedder). Its behaviour on real questions is in test_answer_real.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers import write

from chatbot import SupportBot
from chatbot.config import AnswerSettings, ConfigError
from chatbot.scope import ScopeGuard
from retrieval import fit_scope
from retrieval.scope import MIN_EXAMPLES, fit_logistic


def clouds(n_inside: int, n_outside: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping clouds of unit vectors in 16 dimensions."""
    rng = np.random.default_rng(seed)
    centre = np.zeros(16)
    centre[0] = 1.0
    inside = rng.normal(size=(n_inside, 16)) + centre
    outside = rng.normal(size=(n_outside, 16)) - centre
    unit = lambda m: m / np.linalg.norm(m, axis=1, keepdims=True)  # noqa: E731
    return unit(inside), unit(outside)


def test_the_threshold_lets_through_all_but_the_asked_share_of_new_inside_questions():
    inside, outside = clouds(2000, 1000, seed=0)
    fresh_inside, fresh_outside = clouds(20000, 20000, seed=1)
    strict, loose = fit_scope(inside, outside, false_alarms=0.01), fit_scope(inside, outside, false_alarms=0.1)
    assert loose.threshold < strict.threshold
    for model, share in ((strict, 0.01), (loose, 0.1)):
        flagged = model.outside(fresh_inside).mean()
        assert share / 2 < flagged < share * 2, (share, flagged)  # the cross-validated threshold holds on new data
    assert strict.outside(fresh_outside).mean() < loose.outside(fresh_outside).mean()
    assert loose.outside(fresh_outside).mean() > 0.5


def test_logistic_regression_reaches_the_penalised_optimum():
    inside, outside = clouds(300, 100, seed=2)
    x, y = np.vstack([inside, outside]), np.r_[np.zeros(300), np.ones(100)]
    weights, bias = fit_logistic(x, y, l2=0.5)
    p = 1 / (1 + np.exp(-(x @ weights + bias)))
    sample = np.where(y == 1, 400 / 200, 400 / 600)  # each class weighs as much in all
    assert np.abs(x.T @ (sample * (p - y)) + 0.5 * weights).max() < 1e-6
    assert abs(np.sum(sample * (p - y))) < 1e-6  # the bias is not penalised


def test_too_few_examples_on_either_side_give_no_classifier():
    inside, outside = clouds(MIN_EXAMPLES - 1, 50, seed=3)
    assert fit_scope(inside, outside) is None
    assert fit_scope(outside, inside) is None
    assert fit_scope(*clouds(MIN_EXAMPLES, MIN_EXAMPLES, seed=3)) is not None


def test_bad_guard_settings_name_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="answer.scope_false_alarms"):
        ScopeGuard(AnswerSettings(scope_false_alarms=1.5))
    missing = tmp_path / "nope.txt"
    with pytest.raises(ConfigError, match=f"answer.out_of_scope_file: {missing}"):
        ScopeGuard(AnswerSettings(out_of_scope_file=str(missing)))


FAQ_ROWS = "\n".join(f"e{i},How do I do thing number {i}?,Do it like this {i}.,Thing {i}" for i in range(12))


@pytest.fixture
def guard_bot(home_config, tmp_path):
    home_config.answer.handoff_confidence = 0.0
    home_config.answer.out_of_scope_file = str(write(tmp_path / "outside.txt", "\n".join(f"Tell me joke {i}" for i in range(12))))
    bot = SupportBot(home_config)
    yield bot
    bot.log.close()
    bot.kb.close()


def test_the_guard_follows_the_knowledge_base_and_steps_aside_for_documents_only_or_close_matches(guard_bot, tmp_path):
    guard, kb = guard_bot.scope, guard_bot.kb
    kb.add([write(tmp_path / "policy.md", "# Returns\n\nItems can be returned within 45 days.\n")])
    assert guard.model(kb) is None and not guard.outside(kb, ["Tell me joke 3"], 0.0)  # no variants: no guard
    kb.add([write(tmp_path / "faq.csv", "id,question,answer,title\n" + FAQ_ROWS + "\n")])
    model = guard.model(kb)
    assert model is not None and guard.model(kb) is model  # fitted once per version of the knowledge base
    assert guard.outside(kb, ["Tell me joke 3"], 0.0)  # one of its outside examples
    assert not guard.outside(kb, ["Tell me joke 3"], 0.9)  # as close to an entry as that, the entry wins
    assert not guard.outside(kb, ["Tell me joke 3", "How do I do thing number 3?"], 0.0)  # read as a follow-up, inside
    kb.remove("e0")
    assert guard.model(kb) is not model
    off = ScopeGuard(dataclasses.replace(guard_bot.config.answer, scope_false_alarms=0.0))
    assert not off.outside(kb, ["Tell me joke 3"], 0.0)
