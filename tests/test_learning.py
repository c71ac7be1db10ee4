"""The learning loop on tiny random models: exports from a real log, the KB seed, versions, the gate
(pass, refusal, forced promotion), rollback, hot switching, the CLI and background jobs
(crashes: test_crash.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers import write

from chatbot import SupportBot, load_config
from chatbot.versions import VersionError
from retrieval import KnowledgeBase
from training import RunRequest, TrainSettings, export_logs, promote, rollback, run_training, seed_examples
from training.examples import out_of_scope_examples, read_jsonl, redact_row, worked_examples
from training.runs import TrainError, examples_for, read_worked
from training.gate import gate_questions
from ui.cli import main

FAQ = """id,question,answer,title,category,url
ship-ca,How long does delivery to Canada take?,Canada orders arrive in 5-10 business days.,Canada shipping,Shipping,
ship-ca,Do you ship to Toronto?,Canada orders arrive in 5-10 business days.,Canada shipping,Shipping,
gift-exp,Do gift cards expire?,Gift cards never expire and have no fees.,Gift card expiry,Gift cards,
gift-exp,Is there an expiry date on gift cards?,Gift cards never expire and have no fees.,Gift card expiry,Gift cards,
phone,What is your phone number?,Call us on 1-800-555-0142 from 8am to 8pm.,Phone support,Contact,
phone,How can I call you?,Call us on 1-800-555-0142 from 8am to 8pm.,Phone support,Contact,
"""
EVAL = "question,answer\nWhen will my Canadian order arrive?,Canada orders arrive in 5-10 business days.\nWhat is the weather on Mars?,\n"
STEP = ["--max-steps", "1", "--batch-size", "2", "-q"]


@pytest.fixture
def overrides(tmp_path, tiny_embedder_path, tiny_lm_path):
    return [f"retrieval.embedder={tiny_embedder_path}", f"model.path={tiny_lm_path}", "model.max_new_tokens=8",
            "model.temperature=1.0", "answer.handoff_confidence=0.0", "answer.mode=generate", "answer.grounding_min=0.0",
            f"gate.eval_file={write(tmp_path / 'eval.csv', EVAL)}", "gate.max_new_tokens=8", "gate.heldout_share=0.0"]


@pytest.fixture
def config(tmp_path, overrides):
    config = load_config(tmp_path / "home", overrides, env={})
    kb = KnowledgeBase(config.kb_dir(), config.retrieval)
    kb.add([write(tmp_path / "faq.csv", FAQ)])
    kb.close()
    return config


@pytest.fixture
def bot(config):
    bot = SupportBot(config)
    yield bot
    bot.log.close()


def traffic(bot: SupportBot) -> dict[str, str]:
    """Four conversations: a liked reply, a disliked one an agent edited, an approved one, a rejected one."""
    liked = bot.ask("How long does delivery to Canada take?", channel="web")
    bot.log.add_feedback(liked.message_id, True)
    disliked = bot.ask("Do gift cards expire? Write to me at jane.doe@example.com", channel="web")
    bot.log.add_feedback(disliked.message_id, False)
    bot.log.add_agent_action(disliked.conversation_id, disliked.message_id, "Gift cards never expire and have no fees. [1]", "edited", "ann")
    approved = bot.ask("Do you ship to Toronto?", channel="web")
    bot.log.add_agent_action(approved.conversation_id, approved.message_id, approved.text, "approved", "ann")
    bot.log.add_agent_action(approved.conversation_id, approved.message_id, approved.text, "approved", "ann")  # a double click
    rejected = bot.ask("How can I call you?", channel="web")
    bot.log.add_agent_action(rejected.conversation_id, rejected.message_id,
                             "Call us on 1-800-555-0142. Never send your card 4111 1111 1111 1111 in chat.", "rejected", "bo")
    return {"liked": liked.conversation_id, "disliked": disliked.conversation_id,
            "approved": approved.conversation_id, "rejected": rejected.conversation_id}


# --- exports ----------------------------------------------------------------------------------------


def test_export_writes_each_kind_redacted_deduplicated_and_split_by_conversation(bot, tmp_path):
    traffic(bot)
    report = export_logs(bot, tmp_path / "out", heldout_share=0.5)
    rows = {f"{k}.{s}": read_jsonl(tmp_path / "out" / f"{k}.{s}.jsonl") for k in ("sft", "kto", "dpo", "reward") for s in ("train", "heldout")}
    total = {k: len(rows[f"{k}.train"]) + len(rows[f"{k}.heldout"]) for k in ("sft", "kto", "dpo", "reward")}
    # sft: the edit and the approval (the double click counted once); kto: two ratings; dpo: edit and rejection
    assert total == {"sft": 2, "kto": 2, "dpo": 2, "reward": 2}
    assert report.counts["sft"]["train"] + report.counts["sft"]["heldout"] == 2
    for kind in ("sft", "kto", "dpo", "reward"):
        train = {r["conversation_id"] for r in rows[f"{kind}.train"]}
        assert not train & {r["conversation_id"] for r in rows[f"{kind}.heldout"]}
    text = "".join((tmp_path / "out" / f"{name}.jsonl").read_text() for name in rows)
    assert "jane.doe@example.com" not in text and "4111 1111 1111 1111" not in text and "[EMAIL]" in text
    kto = {r["label"] for r in rows["kto.train"] + rows["kto.heldout"]}
    assert kto == {True, False}
    dpo = rows["dpo.train"] + rows["dpo.heldout"]
    assert all(r["prompt"][0]["role"] == "system" and r["chosen"][0]["content"] != r["rejected"][0]["content"] for r in dpo)
    # the prompt holds the passages the bot answered from, as serving builds it
    edited = next(r for r in dpo if "gift" in r["question"].lower())
    assert "Gift cards never expire" in edited["prompt"][-1]["content"]


def test_export_skips_evaluation_conversations(bot, tmp_path):
    reply = bot.ask("Do gift cards expire?", channel="eval")
    bot.log.add_feedback(reply.message_id, True)
    report = export_logs(bot, tmp_path / "out")
    assert all(c == {"train": 0, "heldout": 0} for c in report.counts.values())


def test_redaction_keeps_the_companys_own_numbers_from_the_passages():
    row = {"prompt": [{"role": "system", "content": "rules"}, {"role": "user", "content": "Passages: Call 1-800-555-0142.\n\nCustomer question: call me on +44 20 7946 0958"}],
           "completion": [{"role": "assistant", "content": "Call us on 1-800-555-0142, or we call +44 20 7946 0958."}],
           "passages": ["Call 1-800-555-0142."]}
    clean = redact_row(row, ["phone"])
    assert "1-800-555-0142" in clean["completion"][0]["content"] and "7946 0958" not in clean["completion"][0]["content"]
    assert "7946 0958" not in clean["prompt"][1]["content"]


def test_seed_examples_teach_citing_the_right_passage_and_handing_off(bot):
    rows = seed_examples(bot, handoff_every=3)
    assert len(rows) == 6  # one per question variant
    handoffs = [r for r in rows if r["source"] == "kb_handoff"]
    assert len(handoffs) == 2
    for row in rows:
        entry = next(e for e in (bot.kb.entry(i) for i in ("ship-ca", "gift-exp", "phone")) if row["question"] in e.questions)
        prompt, reply = row["prompt"][-1]["content"], row["completion"][0]["content"]
        if row in handoffs:
            assert reply == bot.messages.handoff and entry.answer not in prompt
        else:
            number = int(reply.rsplit("[", 1)[1].rstrip("]"))
            assert reply.startswith(entry.answer) and f"[{number}] {entry.title}\n{entry.answer}" in prompt


def test_worked_examples_teach_an_answer_that_reasons_over_its_entry(bot, config, tmp_path):
    worked = write(tmp_path / "worked.csv", "question,answer,expected_id\n"
                   "I'm in Toronto and ordered on Monday; is it there by Friday?,\"Maybe not: Canada takes 5-10 business days, so expect it between the next Monday and the Monday after.\",ship-ca\n")
    rows = worked_examples(bot, read_worked(bot, str(worked)))
    assert len(rows) == 1 and rows[0]["source"] == "worked"
    reply, prompt = rows[0]["completion"][0]["content"], rows[0]["prompt"][-1]["content"]
    number = int(reply.rsplit("[", 1)[1].rstrip("]"))
    assert reply.startswith("Maybe not: Canada takes") and f"[{number}] Canada shipping\nCanada orders arrive" in prompt
    assert "ordered on Monday" in prompt
    unknown = write(tmp_path / "unknown.csv", "question,answer,expected_id\nIs it there by Friday?,Yes.,ship-mars\n")
    with pytest.raises(TrainError, match=r"unknown.csv: line 2: .*expected_id"):
        read_worked(bot, str(unknown))
    request = RunRequest("sft", worked=str(worked), out_of_scope="")
    assert sum(r["source"] == "worked" for r in examples_for(config, bot, request)) == 1


def test_out_of_scope_questions_teach_handing_off_hardest_first(bot):
    questions = ["Write me a poem about the sea", "What is the capital of Peru?", "Do you like jazz?"]
    rows = seed_examples(bot, handoff_every=0, out_of_scope=questions, out_of_scope_every=4)
    extra = [r for r in rows if r["source"] == "out_of_scope"]
    assert len(rows) == 7 and len(extra) == 1  # at most one for every four variants
    hardest = max(questions, key=lambda q: max(h.confidence for h in bot.kb.search(q, k=bot.settings.passages)))
    assert extra[0]["question"] == hardest and extra[0]["completion"][0]["content"] == bot.messages.handoff
    assert extra[0]["passages"] and hardest in extra[0]["prompt"][-1]["content"]
    bot.settings.handoff_confidence = 0.0  # all three reach the model
    beside = seed_examples(bot, handoff_every=0, out_of_scope=questions, out_of_scope_every=4, also_answered=2)
    assert sum(r["source"] == "out_of_scope" for r in beside) == 2  # worked answers trained beside count too


def test_out_of_scope_questions_handed_off_before_the_model_are_left_out(bot):
    questions = ["Write me a poem about the sea", "What is the capital of Peru?", "Do you like jazz?"]
    confidence = {q: max(h.confidence for h in bot.kb.search(q, k=bot.settings.passages)) for q in questions}
    lowest, second = sorted(confidence.values())[:2]
    assert lowest < second
    bot.settings.handoff_confidence = (lowest + second) / 2
    rows = out_of_scope_examples(bot, questions, limit=10)
    assert sorted(r["question"] for r in rows) == sorted(q for q in questions if confidence[q] > lowest)


def test_a_missing_out_of_scope_file_refuses_the_run_in_one_line(config):
    with pytest.raises(ValueError, match="nope.txt: cannot read"):
        run_training(config, RunRequest("sft", TrainSettings(max_steps=1), out_of_scope="nope.txt"))


def test_gate_samples_answerable_and_out_of_scope_questions_alike(tmp_path, config, bot):
    rows = "".join(f"Question {i}?,Answer {i}.\n" for i in range(6)) + "".join(f"Off topic {i}?,\n" for i in range(6))
    config.gate.eval_file, config.gate.questions = str(write(tmp_path / "many.csv", "question,answer\n" + rows)), 3
    picked = gate_questions(config, bot)
    assert sum(bool(r["answer"]) for r in picked) == 3 and sum(not r["answer"] for r in picked) == 3


# --- versions, the gate, rollback -------------------------------------------------------------------


def one_step(method: str = "sft") -> RunRequest:
    return RunRequest(method, TrainSettings(max_steps=1, batch_size=2))


def test_training_writes_a_version_that_does_not_serve_until_promoted(config, tiny_lm_path, registry):
    card = run_training(config, one_step())
    versions = registry(config)
    assert card.kind == "adapter" and card.parent == tiny_lm_path.name and card.base == tiny_lm_path.name
    assert (versions.folder(card.version) / "adapter_config.json").exists() and card.data_hash
    assert card.metrics["train"]["steps"] == 1
    assert versions.serving_version("lm") == tiny_lm_path.name


def test_gate_refuses_a_regression_and_force_promotes_and_rollback_restores(config, bot, tiny_lm_path, registry):
    card = run_training(config, one_step())
    config.gate.tolerance = -1.0  # demand an impossible improvement: the candidate cannot pass
    refused = promote(config, card.version)
    assert not refused.passed and not refused.promoted
    assert any(not r["ok"] for r in refused.rows)
    assert registry(config).serving_version("lm") == tiny_lm_path.name
    report = registry(config).folder(card.version) / "gate"
    assert "refused" in (report / "report.md").read_text() and (report / "report.png").stat().st_size > 1000
    assert json.loads((report / "report.json").read_text())["candidate"] == card.version

    assert bot.backend.name == tiny_lm_path.name
    forced = promote(config, card.version, force=True)
    assert forced.promoted and forced.forced
    assert bot.backend.name == card.version  # the running bot switched without a restart
    assert bot.ask("Do gift cards expire?").model == card.version

    assert rollback(config) == tiny_lm_path.name
    assert bot.backend.name == tiny_lm_path.name
    with pytest.raises(VersionError, match="nothing to roll back"):
        rollback(config)


def test_gate_passes_within_tolerance_and_caches_the_serving_numbers(config, registry):
    card = run_training(config, one_step())
    config.gate.tolerance, config.gate.latency_tolerance = 1.0, 100.0
    result = promote(config, "latest")
    assert result.passed and result.promoted and result.candidate == card.version
    serving = registry(config).card(result.serving).metrics["gate"]
    assert serving["eval_set"] == result.eval_set and serving["questions"] == 2


def test_a_crash_mid_training_leaves_versions_and_serving_untouched(config, monkeypatch, tiny_lm_path, registry):
    import training.runs

    def crash(method, base, rows, out_dir, *args, **kwargs):
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "adapter_model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed")

    registry(config).ensure_base(config.model.path)
    before = registry(config).listing()
    monkeypatch.setattr(training.runs, "train", crash)
    with pytest.raises(RuntimeError):
        run_training(config, one_step())
    versions = registry(config)
    assert versions.listing() == before and versions.serving_version("lm") == tiny_lm_path.name
    assert not list(versions.root.glob("*.partial"))


def test_preference_methods_train_from_the_log(config, bot, registry):
    traffic(bot)
    for method in ("kto", "dpo", "reward"):
        card = run_training(config, one_step(method))
        assert card.metrics["train"]["examples"] == 2
    assert registry(config).card(card.version).kind == "reward"


def test_preference_training_without_feedback_says_what_is_missing(config):
    with pytest.raises(ValueError, match="agents have edited no drafts"):
        run_training(config, one_step("dpo"))


# --- the command line and background jobs -----------------------------------------------------------


def run_cli(capsys, config, overrides, *args) -> tuple[int, str]:
    code = main([*args, "--home", str(config.home), *[f"--set={o}" for o in overrides]])
    return code, capsys.readouterr().out


def test_cli_export_train_list_promote_rollback(config, bot, overrides, capsys, tmp_path, tiny_lm_path):
    traffic(bot)
    code, out = run_cli(capsys, config, overrides, "logs", "export", "--out", str(tmp_path / "x"), "--json")
    assert code == 0 and json.loads(out)["counts"]["dpo"]["train"] == 2
    code, out = run_cli(capsys, config, overrides, "train", "dpo", "--data", str(tmp_path / "x" / "dpo.train.jsonl"), *STEP, "--json")
    version = json.loads(out)["version"]
    assert code == 0 and version.startswith("dpo-")
    code, out = run_cli(capsys, config, overrides, "models", "list", "--json")
    listed = {r["version"]: r for r in json.loads(out)}
    assert listed[tiny_lm_path.name]["serving"] and not listed[version]["serving"] and listed[version]["kind"] == "adapter"
    code, out = run_cli(capsys, config, overrides, "models", "promote", "latest", "--force", "--json")
    assert code == 0 and json.loads(out)["promoted"]
    code, out = run_cli(capsys, config, overrides, "models", "list", "--json")
    assert next(r for r in json.loads(out) if r["version"] == version)["serving"]
    code, out = run_cli(capsys, config, overrides, "models", "rollback", "--json")
    assert code == 0 and json.loads(out)["serving"] == tiny_lm_path.name


def test_cli_refuses_a_bad_data_file_in_one_line(config, overrides, capsys, tmp_path):
    bad = write(tmp_path / "bad.jsonl", '{"prompt": []}\nnot json\n')
    code = main(["train", "sft", "--data", str(bad), "--home", str(config.home), *[f"--set={o}" for o in overrides]])
    err = capsys.readouterr().err
    assert code == 1 and "bad.jsonl: line 2" in err and len(err.strip().splitlines()) == 1


def test_ops_start_training_in_the_background_and_see_it_finish(config, overrides):
    from ui.service import SupportService

    service = SupportService(config, overrides=overrides)
    token = service.login("ops", "ops")["token"]
    job = service.train(token, "sft", max_steps=1)
    deadline = time.time() + 300
    while time.time() < deadline and service.job_list(token)[0]["status"] == "running":
        time.sleep(1)
    finished = service.job_list(token)[0]
    assert finished["id"] == job["id"] and finished["status"] == "done", finished
    assert finished["result"]["version"] in {m["version"] for m in service.models(token)}
    agent = service.login("agent", "agent")["token"]
    with pytest.raises(Exception, match="ops"):
        service.train(agent, "sft")


def test_grpo_trains_against_the_grounding_reward(config):
    request = RunRequest("grpo", TrainSettings(max_steps=1, batch_size=2, num_generations=2, max_completion_length=8))
    card = run_training(config, request)
    assert card.method == "grpo" and card.kind == "adapter" and card.metrics["train"]["steps"] == 1


def test_best_of_n_sends_the_reply_the_reward_model_prefers(config, bot, registry):
    traffic(bot)
    reward = run_training(config, one_step("reward"))
    assert promote(config, reward.version, force=True).promoted
    assert registry(config).serving_version("reward") == reward.version
    seen = []
    real = bot.reward

    def recording(prompts, replies):
        scores = real(prompts, replies)
        seen.append((replies, scores))
        return scores

    bot.reward = recording
    bot.reward.available = real.available
    bot.config.model.best_of = 3
    reply = bot.ask("Do gift cards expire?")
    (replies, scores), = seen
    assert len(replies) == 3 and reply.mode == "generate"
    best = replies[max(range(3), key=scores.__getitem__)]
    assert best.split()[0] in reply.text + reply.draft
    # `learn` reports how often the serving reward model ranks held-out preference pairs right.
    from training.learn import learn

    config.gate.heldout_share = 1.0  # every pair of the log held out, to be judged on
    measured = learn(config, train=False).reward
    assert measured["version"] == reward.version and measured["pairs"] >= 2 and 0 <= measured["pair_accuracy"] <= 1


def test_learn_trains_and_gates_only_once_agents_have_written_enough(config, bot, overrides, capsys, registry):
    traffic(bot)
    flags = [*overrides, "learn.max_steps=1", "learn.min_new_replies=5"]
    code, out = run_cli(capsys, config, flags, "learn", "--json")
    report = json.loads(out)
    assert code == 0 and [r["role"] for r in report["trained"]] == ["lm", "retriever"]
    assert all("fewer than learn.min_new_replies (5)" in r["skipped"] for r in report["trained"])
    code, out = run_cli(capsys, config, [*overrides, "learn.max_steps=1", "learn.min_new_replies=0"], "learn", "--json")
    lm, retriever = json.loads(out)["trained"]
    assert lm["version"].startswith("sft-") and isinstance(lm["passed"], bool) and lm["rows"]
    assert "version" in retriever or "held-out" in retriever["skipped"]
    assert lm["promoted"] == (registry(config).serving_version("lm") == lm["version"])
    report = Path(json.loads(out)["report"])
    assert (report / "lm.png").read_bytes().startswith(b"\x89PNG") and "(lm.png)" in (report / "report.md").read_text()
