"""`supportbot eval conversations`: the file format's refusals (fast), and the multi-turn numbers on
data/eval/conversations.jsonl with the real embedder and curated answers (slow: about two minutes)."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import DATA
from helpers import write

from chatbot.conversation_eval import load_conversations
from retrieval import EvalFileError


@pytest.mark.parametrize("line, error", [
    ("{not json", "line 2: not JSON"),
    ('{"turns": []}', "line 2: expected an object with a non-empty list 'turns'"),
    ('{"turns": [{"message": "", "kind": "first"}]}', "line 2: turn 1: 'message' must be a non-empty string"),
    ('{"turns": [{"message": "hi", "kind": "sideways"}]}', "line 2: turn 1: 'kind' must be one of first, follow_up"),
])
def test_a_bad_line_is_refused_with_the_file_and_line(tmp_path, line, error):
    good = json.dumps({"turns": [{"message": "Do gift cards expire?", "expected_id": "gift-exp", "kind": "first"}]})
    path = write(tmp_path / "conversations.jsonl", f"{good}\n{line}\n")
    with pytest.raises(EvalFileError, match=f"conversations.jsonl: {error}"):
        load_conversations(path)


def test_the_shipped_file_loads():
    conversations = load_conversations(DATA / "eval" / "conversations.jsonl")
    kinds = [turn.kind for turns in conversations for turn in turns]
    assert len(conversations) >= 150 and min(kinds.count(k) for k in ("follow_up", "switch", "chitchat", "return")) >= 20
    assert all(turn.standalone for turns in conversations for turn in turns if turn.kind == "follow_up")


@pytest.mark.parametrize("path", ["eval/conversations.jsonl", "train/conversations.jsonl"])
def test_every_expected_entry_is_in_the_demo_knowledge_base(path):
    """The eval file and the development file apart from it name real entries (FAQ ids, policy files)."""
    entries = {row["id"] for row in csv.DictReader((DATA / "kb" / "faq.csv").open(encoding="utf-8"))}
    entries |= {doc.stem for doc in (DATA / "kb").glob("*.md")}
    expected = {turn.expected_id for turns in load_conversations(DATA / path) for turn in turns if turn.expected_id}
    assert expected and expected <= entries, sorted(expected - entries)


@pytest.mark.slow
def test_a_new_topic_is_answered_as_if_asked_alone_and_follow_ups_keep_their_topic(tmp_path, demo_kb_into, tiny_lm_path, capsys):
    from chatbot import load_config
    from ui.cli import main

    flags = [f"model.path={tiny_lm_path}", "model.backend=transformers", "model.max_new_tokens=8"]
    config = load_config(tmp_path / "home", flags, env={})
    demo_kb_into(config.kb_dir())
    status = main(["eval", "conversations", str(DATA / "eval" / "conversations.jsonl"), "--mode", "template", "--json",
                   "--home", str(config.home), "-q", *[f"--set={flag}" for flag in flags]])
    report = json.loads(capsys.readouterr().out)
    kinds = {row["kind"]: row for row in report["by_kind"]}
    assert status == 0 and report["conversations"] >= 150
    # Measured 2026-12-08: switch 0.832 (alone 0.840); follow-ups 0.793, 0.905 of their standalone wording asked
    # alone (0.876); before questions unsure of their own topic leaned harder: 0.777; before any question leaned
    # on the entry the conversation is on: 0.705; joined to their question as one text: 0.637. Small talk and
    # out-of-scope turns declined 0.81. Joining every message to the one before scored 0.38 on switches.
    assert kinds["switch"]["correct"] >= kinds["switch"]["correct_alone"] - 0.01
    assert kinds["follow_up"]["correct"] >= 0.9 * kinds["follow_up"]["correct_alone"] and kinds["return"]["correct"] >= 0.65
    assert kinds["chitchat"]["correct"] >= 0.75 and report["handoff_recall"] >= 0.75
