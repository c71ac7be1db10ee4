"""The evaluation gate: a candidate serves only if it is not worse than the serving version.

Both answer the same held-out questions (the evaluation file, sampled evenly, plus questions from held-out
logged conversations with the agent's reply as reference), in "generate" mode so that the language
model, not the curated answers, is what is measured. A quality metric falling by more than the tolerance,
or latency growing by more than its relative tolerance, refuses the promotion unless forced. The serving
version's numbers are kept on its card per evaluation set, so each promotion evaluates one model.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from chatbot import Config, ConversationLog, SupportBot
from chatbot.engine import evaluated_backend, weights_backend
from chatbot.evaluate import evaluate_answers, load_answer_rows
from chatbot.reward import load_version, score
from chatbot.versions import Versions, VersionError, now, open_versions, role_of, write_json
from retrieval import EvalFileError, KnowledgeBase, evaluate_retrieval, load_queries

from .examples import deduplicate, log_examples, prompt_for, split
from .retriever import heldout_queries

DEMO_EVAL = Path(__file__).resolve().parents[1] / "data" / "eval" / "answers.csv"
DEMO_RETRIEVAL_EVAL = DEMO_EVAL.with_name("retrieval.csv")
# metric -> True when higher is better
METRICS = {"answer_similarity": True, "grounding": True, "handoff_precision": True, "handoff_recall": True,
           "reward": True, "latency_ms_p50": False}
REWARD_METRICS = {"pair_accuracy": True}
RETRIEVER_METRICS = {"top1": True, "recall_at_5": True, "mrr": True}


@dataclass
class GateResult:
    candidate: str
    serving: str
    passed: bool
    forced: bool = False
    promoted: bool = False
    rows: list[dict] = field(default_factory=list)  # metric, serving, candidate, delta, ok
    eval_set: str = ""
    questions: int = 0
    report: str = ""  # folder with report.md, report.json, report.png

    def to_json(self) -> dict:
        return asdict(self)


Progress = Callable[[str, int, int], None]


# --- the held-out questions -------------------------------------------------------------------------


def gate_questions(config: Config, bot: SupportBot) -> list[dict]:
    """Rows of question, answer ("" = should hand off): from the evaluation file, `gate.questions` answerable
    and as many out-of-scope questions, each sampled evenly (hand-off recall over a handful of questions
    would swing by a whole question's share), plus held-out logs."""
    path = Path(config.gate.eval_file) if config.gate.eval_file else DEMO_EVAL
    rows = load_answer_rows(path) if path.exists() else []
    rows = [r for part in ([r for r in rows if r["answer"]], [r for r in rows if not r["answer"]])
            for r in _evenly(part, config.gate.questions)]
    logged = deduplicate(log_examples(bot)["sft"])
    _, heldout = split(logged, config.gate.heldout_share)
    rows += [{"question": r["question"], "answer": r["completion"][-1]["content"], "expected_id": ""} for r in heldout]
    if not rows:
        raise VersionError("no held-out questions: set gate.eval_file to a question,answer CSV")
    return rows


def _evenly(rows: list[dict], n: int) -> list[dict]:
    if not n or len(rows) <= n:
        return rows
    step = len(rows) / n
    return [rows[int(i * step)] for i in range(n)]


def set_hash(rows: list[dict], config: Config) -> str:
    """The evaluation set and everything that changes its scores, the way versions are served included."""
    served = [evaluated_backend(config.model.backend), config.model.gguf_type, config.model.passage_cache]
    payload = json.dumps([rows, config.gate.max_new_tokens, config.model.best_of, asdict(config.answer), served],
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# --- evaluating one version -------------------------------------------------------------------------


def evaluate_version(config: Config, versions: Versions, version: str, rows: list[dict], progress: Progress | None = None) -> dict:
    """Gate metrics of an lm/adapter version, cached on its card under the evaluation set's hash."""
    key = set_hash(rows, config)
    cached = versions.card(version).metrics.get("gate", {})
    if cached.get("eval_set") == key:
        return cached
    path, adapter = versions.weights(version)
    settings = copy.deepcopy(config)
    settings.answer.mode = "generate"
    settings.model.max_new_tokens = config.gate.max_new_tokens
    settings.model.temperature = 0.0
    blocked = bool(versions.card(version).settings.get("block_attention"))
    backend = weights_backend(settings, version, path, adapter or "", blocked, progress)
    with tempfile.TemporaryDirectory() as tmp:
        bot = SupportBot(settings, backend=backend, log=ConversationLog(Path(tmp) / "gate.sqlite", config.answer.redact),
                         versions=versions)
        report = evaluate_answers(bot, rows, bot.kb.embedder, progress=lambda d, t: progress and progress(f"gate {version}", d, t))
        metrics = {k: getattr(report, k) for k in METRICS if k != "reward"}
        metrics["reward"] = _reward(bot, rows, report.rows)
        bot.log.close()
    if hasattr(backend, "close"):  # llama.cpp frees its model and context
        backend.close()
    metrics |= {"eval_set": key, "questions": len(rows), "at": now()}
    versions.update_metrics(version, {"gate": metrics})
    return metrics


def _reward(bot: SupportBot, rows: list[dict], replies: list[dict]) -> float | None:
    """Mean score of the answered replies by the serving reward model (None when none serves)."""
    scorer = bot.reward
    picked = [(row["question"], reply["answer"]) for row, reply in zip(rows, replies) if not reply["declined"]]
    if not scorer.available() or not picked:
        return None
    prompts = [prompt_for(bot, q, [], bot.sources(bot.retrieve(q, []))) for q, _ in picked]
    scores = scorer(prompts, [a for _, a in picked])
    return round(sum(scores) / len(scores), 4)


def heldout_pairs(config: Config, bot: SupportBot) -> list[dict]:
    """The log's preference pairs kept out of training (gate.heldout_share): what a reward model is judged on."""
    return split(deduplicate(log_examples(bot)["reward"]), config.gate.heldout_share)[1]


def reward_accuracy(versions: Versions, version: str, pairs: list[dict]) -> dict:
    """A reward model's share of held-out pairs where it scores the chosen reply higher."""
    model, tokenizer = load_version(versions, version)
    prompts = [p["prompt"] for p in pairs]
    chosen = score(model, tokenizer, prompts, [p["chosen"][-1]["content"] for p in pairs])
    rejected = score(model, tokenizer, prompts, [p["rejected"][-1]["content"] for p in pairs])
    return {"pair_accuracy": round(sum(c > r for c, r in zip(chosen, rejected)) / len(pairs), 4), "pairs": len(pairs)}


# --- comparing and promoting ------------------------------------------------------------------------


def compare(serving: dict, candidate: dict, config: Config, metrics: dict[str, bool]) -> list[dict]:
    out = []
    for name, higher in metrics.items():
        old, new = serving.get(name), candidate.get(name)
        if old is None or new is None:
            out.append({"metric": name, "serving": old, "candidate": new, "delta": None, "ok": True})
            continue
        if name.startswith("latency"):
            ok = new <= old * (1 + config.gate.latency_tolerance)
        else:
            ok = (new >= old - config.gate.tolerance) if higher else (new <= old + config.gate.tolerance)
        out.append({"metric": name, "serving": old, "candidate": new, "delta": round(new - old, 4), "ok": ok})
    return out


def promote(config: Config, version: str, force: bool = False, progress: Progress | None = None) -> GateResult:
    """Run the gate and, if it passes (or `force`), point serving at the candidate atomically."""
    with open_versions(config) as versions:
        return _promote(config, versions, version, force, progress)


def _promote(config: Config, versions: Versions, version: str, force: bool, progress: Progress | None) -> GateResult:
    version = versions.resolve(version)
    card = versions.card(version)
    role = role_of(card.kind)
    if role != "retriever":  # a retriever's gate only searches: no language model to register (or convert, ~20 s)
        versions.ensure_base(config.model.path, progress)
    serving = versions.serving_version(role)
    if serving == version:
        raise VersionError(f"{version} is already serving")
    if role == "retriever":
        return promote_retriever(config, versions, version, serving, force, progress)
    bot = SupportBot(config, versions=versions)
    if role == "lm":
        rows = gate_questions(config, bot)
        bot.log.close()
        old = evaluate_version(config, versions, serving, rows, progress)
        new = evaluate_version(config, versions, version, rows, progress)
        table, n = compare(old, new, config, METRICS), len(rows)
    else:
        pairs = heldout_pairs(config, bot)
        bot.log.close()
        if not pairs and not force:
            raise VersionError("no held-out preference pairs to evaluate a reward model on yet (use --force to promote anyway)")
        new = reward_accuracy(versions, version, pairs) if pairs else {}
        old = reward_accuracy(versions, serving, pairs) if serving and pairs else {"pair_accuracy": 0.5}
        versions.update_metrics(version, {"gate": new})
        table, n = compare(old, new, config, REWARD_METRICS), len(pairs)
    result = GateResult(version, serving, passed=all(r["ok"] for r in table), forced=force, rows=table,
                        eval_set=new.get("eval_set", ""), questions=n)
    if result.passed or force:
        versions.set_serving(role, version)
        result.promoted = True
    result.report = str(write_report(result, versions.folder(version) / "gate"))
    return result


def rollback(config: Config, role: str = "lm", progress: Progress | None = None) -> str:
    """Serve the previous version of `role`; a retriever first switches the knowledge bases back."""
    with open_versions(config) as versions:
        if role == "retriever":
            switch_retriever(config, versions, versions.rollback_target(role), progress)
        return versions.rollback(role)


# --- retrievers -------------------------------------------------------------------------------------


def promote_retriever(config: Config, versions: Versions, version: str, serving: str, force: bool,
                      progress: Progress | None) -> GateResult:
    """Search with the candidate embedder and with the serving one on a copy of the knowledge base (without
    the held-out variants it is asked), then, if it is not worse, switch every knowledge base to it."""
    kb = KnowledgeBase(config.kb_dir(), config.retrieval, database=config.storage.database_url)
    try:
        rows, without, eval_set = retriever_queries(config, kb)
        if not rows:
            raise VersionError(f"no held-out queries for knowledge base '{config.kb}': set gate.retrieval_file to a query,expected_id CSV")
        with tempfile.TemporaryDirectory(prefix="supportbot-gate-") as tmp:
            trial = kb.trial_copy(tmp, without)
            try:
                old = _retrieval_metrics(trial, rows, f"gate {serving or 'configured retriever'}", progress)
                trial.switch_embedder(str(versions.folder(version)), lambda stage, d, t: progress and progress(f"re-embed {stage}", d, t))
                new = _retrieval_metrics(trial, rows, f"gate {version}", progress)
            finally:
                trial.close()
            versions.update_metrics(version, {"gate": {**new, "eval_set": eval_set}})
            table = compare(old, new, config, RETRIEVER_METRICS)
            result = GateResult(version, serving, passed=all(r["ok"] for r in table), forced=force, rows=table,
                                eval_set=eval_set, questions=len(rows))
            if result.passed or force:
                kb.store.import_vectors(Path(tmp) / "kb.sqlite")  # the candidate's vectors: embedded once
    finally:
        kb.close()
    if result.passed or force:
        switch_retriever(config, versions, version, progress)
        versions.set_serving("retriever", version)
        result.promoted = True
    result.report = str(write_report(result, versions.folder(version) / "gate"))
    return result


def retriever_queries(config: Config, kb: KnowledgeBase) -> tuple[list[dict], list[tuple[str, str]], str]:
    """(query,expected_id rows, the variants to leave out of the index, a name for the set): the evaluation
    file (gate.retrieval_file, else the project's data/eval/retrieval.csv when this knowledge base holds its
    ids), the variants no retriever training uses and held-out resolved questions from the log."""
    rows = []
    path = Path(config.gate.retrieval_file) if config.gate.retrieval_file else DEMO_RETRIEVAL_EVAL
    try:
        rows = [r for r in load_queries(path, kb) if r["expected_id"]]
    except EvalFileError:
        if config.gate.retrieval_file:
            raise
    entries = [kb.entry(e.id) for e in kb.entries()]
    variants, logged = heldout_queries(config, entries)
    rows += [{"query": q, "expected_id": e, "line": 0} for q, e in variants + logged]
    digest = hashlib.sha256(json.dumps([[r["query"], r["expected_id"]] for r in rows]).encode()).hexdigest()[:16]
    return rows, [(e, q) for q, e in variants], digest


def _retrieval_metrics(kb: KnowledgeBase, rows: list[dict], stage: str, progress: Progress | None) -> dict:
    summary = evaluate_retrieval(kb, rows, progress=lambda d, t: progress and progress(stage, d, t)).summary()
    return {key: summary[key] for key in RETRIEVER_METRICS}


def switch_retriever(config: Config, versions: Versions, version: str, progress: Progress | None = None) -> None:
    """Every knowledge base of the home onto the retriever `version` ("" = the configured embedder)."""
    path = str(versions.folder(version)) if version else ""
    for name in config.kb_names():
        kb = KnowledgeBase(config.kb_dir(name), config.retrieval, database=config.storage.database_url)
        try:
            kb.switch_embedder(path, lambda stage, d, t: progress and progress(f"{name}: {stage}", d, t))
        finally:
            kb.close()


# --- the report -------------------------------------------------------------------------------------


def write_report(result: GateResult, folder: Path) -> Path:
    """report.json, report.md and report.png (serving vs candidate per metric) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "report.json", result.to_json())
    verdict = "promoted" if result.promoted else "refused"
    lines = [f"# Gate: {result.candidate} vs {result.serving or '(none)'}", "",
             f"{verdict}{' (forced)' if result.forced and not result.passed else ''}; {result.questions} held-out items", "",
             "| metric | serving | candidate | delta | ok |", "|---|---|---|---|---|"]
    lines += [f"| {r['metric']} | {r['serving']} | {r['candidate']} | {r['delta']} | {'yes' if r['ok'] else 'NO'} |" for r in result.rows]
    tmp = folder / "report.md.tmp"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(folder / "report.md")
    plot_comparison(result.rows, result.serving, result.candidate, verdict, folder / "report.png")
    return folder


def plot_comparison(rows: list[dict], serving: str, candidate: str, title: str, path: Path) -> None:
    """A bar chart of each metric (0-1; latency left out), the serving version against the candidate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["serving"] is not None and r["candidate"] is not None and not r["metric"].startswith("latency")]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["serving"] for r in rows], 0.4, label=f"serving ({serving})")
    ax.bar([i + 0.2 for i in x], [r["candidate"] for r in rows], 0.4, label=f"candidate ({candidate})")
    ax.set_xticks(list(x), [r["metric"] for r in rows], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    tmp = path.with_name("tmp-" + path.name)
    fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    tmp.replace(path)
