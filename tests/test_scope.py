"""The out-of-scope classifier (numpy, synthetic vectors) and the guard's settings and edge cases (tiny
embedder). Its behaviour on real questions is in test_answer_real.py."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
from helpers import write

import chatbot.scope
from chatbot import SupportBot
from chatbot.config import AnswerSettings, ConfigError
from chatbot.scope import ScopeGuard
from retrieval import fit_scope
from retrieval.scope import MIN_EXAMPLES, fit_logistic, min_inside


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


def test_too_few_examples_give_no_classifier_rather_than_more_false_alarms_than_asked():
    assert min_inside(0.003) == 334 and min_inside(0.1) == MIN_EXAMPLES and min_inside(0.0) == float("inf")
    inside, outside = clouds(333, 50, seed=3)
    assert fit_scope(inside, outside, false_alarms=0.003) is None  # the threshold could not be stricter than the top score
    assert fit_scope(inside, outside, false_alarms=0.01) is not None
    assert fit_scope(*clouds(50, MIN_EXAMPLES - 1, seed=3), false_alarms=0.1) is None
    assert fit_scope(*clouds(MIN_EXAMPLES, MIN_EXAMPLES, seed=3), false_alarms=0.1) is not None


def test_the_threshold_is_cross_validated_where_the_model_could_learn_its_examples_by_heart():
    rng = np.random.default_rng(4)  # 400 + 200 points in 384 dimensions: scores on its own examples mean nothing
    inside, outside = rng.normal(size=(400, 384)) + 0.05, rng.normal(size=(200, 384)) - 0.05
    model = fit_scope(inside, outside, false_alarms=0.05)
    flagged = model.outside(rng.normal(size=(5000, 384)) + 0.05).mean()
    assert flagged < 0.1, flagged


def test_bad_guard_settings_name_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="answer.scope_false_alarms"):
        ScopeGuard(AnswerSettings(scope_false_alarms=1.5))
    missing = tmp_path / "nope.txt"
    with pytest.raises(ConfigError, match=f"answer.out_of_scope_file: {missing}"):
        ScopeGuard(AnswerSettings(out_of_scope_file=str(missing)))


FAQ_ROWS = "\n".join(f"e{i},How do I do thing number {i}?,Do it like this {i}.,Thing {i}" for i in range(12))


@pytest.fixture
def guard_bot(home_config, tmp_path):
    home_config.answer.handoff_confidence = 0.0  # the tiny embedder's confidences mean nothing
    home_config.answer.scope_false_alarms = 0.1  # 12 variants can hold false alarms to 10%, not to 0.3%
    home_config.answer.out_of_scope_file = str(write(tmp_path / "outside.txt", "\n".join(f"Tell me joke {i}" for i in range(12))))
    bot = SupportBot(home_config)
    yield bot
    bot.log.close()
    bot.kb.close()


def test_the_guard_follows_the_knowledge_base_and_steps_aside_for_documents_only_or_close_matches(guard_bot, tmp_path):
    guard, kb = guard_bot.scope, guard_bot.kb
    kb.add([write(tmp_path / "policy.md", "".join(f"# Part {i}\n\nRule number {i} of the returns policy.\n\n" for i in range(12)))])
    assert guard.model(kb)[0] is None and not guard.outside(kb, ["Tell me joke 3"], 0.0)  # passages are not variants
    kb.add([write(tmp_path / "faq.csv", "id,question,answer,title\n" + FAQ_ROWS + "\n")])
    model = guard.model(kb)[0]
    assert model is not None and guard.model(kb)[0] is model  # fitted once per version of the knowledge base
    assert guard.outside(kb, ["Tell me joke 3"], 0.0)  # one of its outside examples
    assert not guard.outside(kb, ["Tell me joke 3"], 0.9)  # as close to an entry as that, the entry wins
    assert not guard.outside(kb, ["Tell me joke 3", "How do I do thing number 3?"], 0.0)  # read as a follow-up, inside
    kb.remove("e0")
    assert guard.model(kb)[0] is not model
    off = ScopeGuard(dataclasses.replace(guard_bot.config.answer, scope_false_alarms=0.0))
    assert not off.outside(kb, ["Tell me joke 3"], 0.0) and off.model(kb)[0] is None


def test_a_message_the_guard_puts_outside_gets_what_the_bot_can_do_or_a_hand_off(guard_bot, tmp_path, monkeypatch):
    guard_bot.kb.add([write(tmp_path / "faq.csv", "id,question,answer,title\n" + FAQ_ROWS + "\n")])
    guard_bot.settings.mode, guard_bot.settings.small_talk = "template", False  # "Tell me joke 3" is small talk too
    monkeypatch.setattr(chatbot.scope, "SURE_MATCH", 1.01)  # the tiny embedder puts every text close to every other
    reply = guard_bot.ask("Tell me joke 3")
    assert reply.text == guard_bot.messages.out_of_scope and reply.declined and not reply.handed_off and reply.sources
    assert guard_bot.log.message(reply.message_id).reason == "out_of_scope"
    assert guard_bot.log.conversation(reply.conversation_id)["status"] == "open"  # not the agents' business
    assert guard_bot.log.unanswered_questions() == []  # nor a gap in the knowledge base
    guard_bot.settings.out_of_scope_handoff = True
    reply = guard_bot.ask("Tell me joke 3")
    assert reply.handed_off and reply.reason == "out_of_scope"
    assert guard_bot.log.conversation(reply.conversation_id)["status"] == "handed_off"
    assert not guard_bot.ask("How do I do thing number 3?").declined


def test_concurrent_turns_fit_the_classifier_once(guard_bot, tmp_path, monkeypatch):
    guard_bot.kb.add([write(tmp_path / "faq.csv", "id,question,answer,title\n" + FAQ_ROWS + "\n")])
    calls = []
    monkeypatch.setattr(chatbot.scope, "fit_scope", lambda *args: calls.append(args) or fit_scope(*args))
    threads = [threading.Thread(target=guard_bot.scope.model, args=(guard_bot.kb,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1


def test_the_guard_reads_the_vector_the_search_just_made(guard_bot, tmp_path, monkeypatch):
    guard_bot.kb.add([write(tmp_path / "faq.csv", "id,question,answer,title\n" + FAQ_ROWS + "\n")])
    _, embedder = guard_bot.scope.model(guard_bot.kb)
    guard_bot.kb.search("  Tell me   joke 3 ")
    monkeypatch.setattr(embedder, "encode", lambda texts, **_: pytest.fail(f"embedded again: {texts}"))
    assert guard_bot.scope.outside(guard_bot.kb, ["Tell me joke 3"], 0.0)
