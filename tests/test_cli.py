"""The `supportbot` command: JSON contracts, exit status, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import DATA, REPO
from helpers import write

from ui.cli import main

FAQ = """id,question,answer,category
gift-exp,Do gift cards expire?,Gift cards never expire.,Gift cards
acct-pw,How do I reset my password?,Use the reset link within 30 minutes.,Account
"""


@pytest.fixture
def run(tmp_path, tiny_embedder_path, capsys):
    """Run the CLI in-process on a fresh home with the tiny embedder; returns (status, stdout, stderr)."""

    def invoke(*args: str):
        status = main([*args, "--home", str(tmp_path / "home"), "--set", f"retrieval.embedder={tiny_embedder_path}", "-q"])
        out, err = capsys.readouterr()
        return status, out, err

    return invoke


def test_kb_commands_round_trip(run, tmp_path):
    path = write(tmp_path / "faq.csv", FAQ)
    status, out, _ = run("kb", "add", str(path), "--json")
    assert status == 0 and json.loads(out)["added"] == 2
    status, out, _ = run("kb", "list", "--json")
    assert [e["id"] for e in json.loads(out)["entries"]] == ["acct-pw", "gift-exp"]
    status, out, _ = run("kb", "stats", "--json")
    assert json.loads(out)["entries"] == 2 and json.loads(out)["index_kind"] == "flat"
    status, out, _ = run("search", "gift cards expire", "--json", "-k", "1")
    assert json.loads(out)["results"][0]["entry_id"] == "gift-exp"
    status, out, _ = run("kb", "remove", "gift-exp")
    assert status == 0 and "removed gift-exp" in out
    status, out, err = run("kb", "remove", "gift-exp")
    assert status == 1 and out == "" and err.strip() == "supportbot: error: no entry with id 'gift-exp' in knowledge base 'default'"


def test_separate_kbs_do_not_share_entries(run, tmp_path):
    run("kb", "add", str(write(tmp_path / "faq.csv", FAQ)), "--kb", "shop")
    _, out, _ = run("kb", "stats", "--json", "--kb", "other")
    assert json.loads(out)["entries"] == 0


def test_eval_retrieval_reports_the_contract_keys(run, tmp_path):
    run("kb", "add", str(write(tmp_path / "faq.csv", FAQ)))
    queries = write(tmp_path / "q.csv", "query,expected_id\ngift card expiry,gift-exp\nreset password,acct-pw\nweather today,\n")
    status, out, _ = run("eval", "retrieval", str(queries), "--json")
    report = json.loads(out)
    assert status == 0
    assert {"top1", "recall_at_5", "mrr", "latency_ms_p50", "latency_ms_p95", "n"} <= set(report)
    assert report["n"] == 2 and report["n_out_of_scope"] == 1 and report["top1"] == 1.0

    status, out, _ = run("eval", "retrieval", str(queries), "--json", "--perturb", "all")
    perturbed = json.loads(out)["perturbed"]
    assert status == 0 and set(perturbed) == {"typos", "lowercase", "chatty", "all"}
    assert all({"top1", "recall_at_5", "mrr"} == set(r) for r in perturbed.values())
    status, out, _ = run("eval", "retrieval", str(queries), "--perturb", "typos")
    assert status == 0 and "perturbed typos     top1" in out


def test_eval_calibrate_saves_the_fit(run, tmp_path):
    run("kb", "add", str(write(tmp_path / "faq.csv", FAQ)))
    queries = write(tmp_path / "q.csv", "query,expected_id\ngift card expiry,gift-exp\nreset password,acct-pw\nweather,\nsong,\n")
    status, out, _ = run("eval", "retrieval", str(queries), "--json", "--calibrate")
    assert status == 0
    saved = (tmp_path / "home" / "config.toml").read_text()
    assert "calibration" in saved and json.loads(out)["calibration"][0] != 9.0


@pytest.mark.parametrize(
    "queries, message",
    [
        ("question,expected_id\nq,gift-exp\n", "missing required column 'query'"),
        ("query,expected_id\nq,nope\n", "line 2: expected_id 'nope' is not in the knowledge base"),
    ],
)
def test_bad_eval_file_is_one_line_error(run, tmp_path, queries, message):
    run("kb", "add", str(write(tmp_path / "faq.csv", FAQ)))
    status, out, err = run("eval", "retrieval", str(write(tmp_path / "q.csv", queries)))
    assert status == 1 and out == "" and message in err and err.count("\n") == 1


def test_bad_kb_file_is_refused_with_nonzero_exit(run, tmp_path):
    status, out, err = run("kb", "add", str(write(tmp_path / "faq.csv", "questoin,answer\nq,a\n")))
    assert status == 1 and "did you mean 'question'" in err and err.count("\n") == 1


def test_console_script_json_output_is_only_json(tmp_path, tiny_embedder_path):
    """As a real process: stdout carries exactly one JSON object, progress goes to stderr."""
    env = {**os.environ, "SUPPORTBOT_HOME": str(tmp_path / "home"), "SUPPORTBOT_RETRIEVAL_EMBEDDER": str(tiny_embedder_path)}
    exe = os.path.join(os.path.dirname(sys.executable), "supportbot")
    proc = subprocess.run([exe, "kb", "add", str(DATA / "kb" / "faq.csv"), "--json"], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["entries"] >= 150
    proc = subprocess.run([exe, "search", "gift card", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert len(json.loads(proc.stdout)["results"]) == 5


@pytest.fixture
def run_bot(tmp_path, tiny_embedder_path, tiny_lm_path, capsys):
    """The CLI on a home with the tiny embedder and tiny LM, the demo-style FAQ loaded."""
    home = tmp_path / "home"
    flags = ["--home", str(home), "-q", "--set", f"retrieval.embedder={tiny_embedder_path}",
             "--set", f"model.path={tiny_lm_path}", "--set", "model.max_new_tokens=8", "--set", "model.temperature=1.0",
             "--set", "answer.handoff_confidence=0"]
    main(["kb", "add", str(write(tmp_path / "faq.csv", FAQ)), *flags])
    capsys.readouterr()

    def invoke(*args: str):
        status = main([*args, *flags])
        out, err = capsys.readouterr()
        return status, out, err

    return invoke


def test_ask_json_has_the_contract_keys(run_bot):
    status, out, _ = run_bot("ask", "Do gift cards expire?", "--json", "--set", "answer.mode=template")
    reply = json.loads(out)
    assert status == 0
    assert {"answer", "sources", "confidence", "handed_off", "latency_ms", "model"} <= set(reply)
    assert set(reply["sources"][0]) >= {"id", "title", "score"}
    assert reply["answer"].endswith("[1]") and reply["handed_off"] is False


def test_ask_continues_a_conversation_and_refuses_unknown_ones(run_bot):
    _, out, _ = run_bot("ask", "Do gift cards expire?", "--json", "--set", "answer.mode=template")
    conversation = json.loads(out)["conversation_id"]
    status, out, _ = run_bot("ask", "and passwords?", "--json", "--conversation", conversation, "--set", "answer.mode=template")
    assert status == 0 and json.loads(out)["conversation_id"] == conversation
    status, out, err = run_bot("ask", "hi", "--conversation", "nope")
    assert status == 1 and out == "" and "no conversation 'nope'" in err


def test_eval_answers_reports_the_contract_keys(run_bot, tmp_path):
    qa = write(tmp_path / "qa.csv", "question,answer,expected_id\nDo gift cards expire?,They never expire.,gift-exp\n"
                                    "Can I speak to a human?,,\n")
    status, out, _ = run_bot("eval", "answers", str(qa), "--json", "--mode", "generate")
    report = json.loads(out)
    assert status == 0
    assert {"answer_similarity", "grounding", "handoff_precision", "handoff_recall", "latency_ms_p50", "n"} <= set(report)
    assert report["n"] == 1 and report["n_out_of_scope"] == 1 and report["handoff_recall"] == 1.0


def test_chat_streams_several_turns_from_standard_input(tmp_path, tiny_embedder_path, tiny_lm_path):
    env = {**os.environ, "SUPPORTBOT_HOME": str(tmp_path / "home"), "SUPPORTBOT_RETRIEVAL_EMBEDDER": str(tiny_embedder_path),
           "SUPPORTBOT_MODEL_PATH": str(tiny_lm_path), "SUPPORTBOT_ANSWER_MODE": "template",
           "SUPPORTBOT_ANSWER_HANDOFF_CONFIDENCE": "0"}
    exe = os.path.join(os.path.dirname(sys.executable), "supportbot")
    subprocess.run([exe, "kb", "add", str(write(tmp_path / "faq.csv", FAQ)), "-q"], env=env, check=True, timeout=300, capture_output=True)
    proc = subprocess.run([exe, "chat", "-q"], input="Do gift cards expire?\nI want a human\n/quit\n",
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("bot> ") == 2 and "never expire" in proc.stdout and "handed off to a person" in proc.stdout


def test_models_export_gguf_writes_one_file_that_llama_cpp_serves(run_bot, tmp_path, tiny_lm_path):
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    from chatbot.llamacpp import LlamaCppBackend

    run_bot("ask", "Do gift cards expire?")  # registers the served model as a version
    served = next(v["version"] for v in json.loads(run_bot("models", "list", "--json")[1]) if v["serving"])
    status, out, err = run_bot("models", "export", served, str(tmp_path / "served.gguf"), "--gguf", "q8_0", "--json")
    assert status == 0, err
    exported = json.loads(out)
    assert status == 0 and exported["type"] == "q8_0"
    reader = GGUFReader(tmp_path / "served.gguf")
    assert reader.fields["general.name"].contents() == exported["version"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_path)
    reply = LlamaCppBackend(tmp_path / "served.gguf", tokenizer, "exported", threads=2, context=256).generate(
        [{"role": "user", "content": "Hello"}], 4)
    assert "".join(reply) and reply.completion_tokens == 4


def test_kb_sources_and_sync_from_the_command_line(run, tmp_path):
    folder = tmp_path / "docs"
    write(folder / "faq.csv", FAQ)
    status, out, _ = run("kb", "add", str(folder), "--json")
    assert status == 0 and json.loads(out)["sources"] == ["docs/"]
    write(folder / "faq.csv", FAQ.splitlines()[0] + "\n" + FAQ.splitlines()[1] + "\n")
    status, out, _ = run("kb", "sync", "--all")
    assert status == 0 and "0 added, 0 updated, 1 unchanged, 1 removed" in out
    status, out, _ = run("kb", "sources", "--json")
    (source,) = json.loads(out)["sources"]
    assert (source["name"], source["kind"], source["pages"], source["error"]) == ("docs/", "folder", 1, "")
    status, _, err = run("kb", "sync")
    assert status == 1 and "name the sources to sync, or give --all" in err
