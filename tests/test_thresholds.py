"""The hand-off threshold refitted from outcomes (training/thresholds.py): agents' actions and customers' ratings
label the bot's decisions, the threshold moves where they say, and only when the newest outcomes agree."""

from __future__ import annotations

import tomllib

from chatbot import ConversationLog, load_config
from training.thresholds import outcomes, refit


def decision(log: ConversationLog, confidence: float, handed_off: bool, outcome: str) -> None:
    conversation = log.start("web")
    log.add_message(conversation, "customer", f"question at {confidence}")
    bot = log.add_message(conversation, "bot", "reply", confidence=confidence, handed_off=int(handed_off),
                          reason="low_confidence" if handed_off else "")
    if outcome in ("up", "down"):
        log.add_feedback(bot, outcome == "up")
    else:
        log.add_agent_action(conversation, bot, "An agent's reply.", outcome, "ann")


def test_each_verdict_labels_the_decision_it_judges(tmp_path):
    log = ConversationLog(tmp_path / "log.sqlite")
    for confidence, handed_off, outcome in [(0.2, True, "approved"), (0.2, True, "rejected"), (0.6, False, "rejected"),
                                            (0.6, False, "approved"), (0.6, False, "edited"), (0.7, False, "down"), (0.8, False, "up")]:
        decision(log, confidence, handed_off, outcome)
    assert [(o.confidence, o.needed_person) for o in outcomes(log)] == [
        (0.2, False), (0.2, True), (0.6, True), (0.6, False), (0.7, True), (0.8, False)]  # the edited answer says neither
    log.close()


def test_the_threshold_moves_to_where_agents_say_a_person_was_needed(tmp_path):
    config = load_config(tmp_path / "home", ["learn.min_outcomes=20", "learn.handoff_precision=0.8"], env={})
    log = ConversationLog(config.log_file)
    for i in range(60):  # below 0.45 agents rewrite the bot's reply; above it they send it as is
        confidence = 0.1 + (i * 7 % 60) / 100
        handed_off = confidence < config.answer.handoff_confidence
        decision(log, confidence, handed_off, "rejected" if confidence < 0.45 else "approved")
    proposed = refit(config, log)  # by default proposed, not written
    assert 0.44 < proposed.proposed <= 0.46 and not proposed.applied and not config.config_file.exists()
    config.learn.apply_handoff_refit = True
    result = refit(config, log)
    assert result.applied and 0.44 < result.proposed <= 0.46 and result.right > result.right_before
    saved = tomllib.loads(config.config_file.read_text())["answer"]["handoff_confidence"]
    assert saved == result.proposed == load_config(config.home, env={}).answer.handoff_confidence
    log.close()


def test_too_few_outcomes_change_nothing(tmp_path):
    config = load_config(tmp_path / "home", env={})
    log = ConversationLog(config.log_file)
    decision(log, 0.9, False, "rejected")
    result = refit(config, log)
    assert not result.applied and "fewer than learn.min_outcomes" in result.why and not config.config_file.exists()
    log.close()


def test_a_threshold_the_newest_outcomes_disagree_with_is_not_applied(tmp_path):
    config = load_config(tmp_path / "home", ["learn.min_outcomes=20"], env={})
    log = ConversationLog(config.log_file)
    for i in range(60):  # at first agents rewrote the low-confidence replies; lately they send every one as is
        confidence = 0.1 + (i * 7 % 60) / 100
        decision(log, confidence, confidence < 0.3, "rejected" if confidence < 0.45 and i < 42 else "approved")
    result = refit(config, log)
    assert result.proposed and not result.applied and "held-out hand-off precision" in result.why
    assert not config.config_file.exists()
    log.close()
