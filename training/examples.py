"""Training examples from the conversation log and from the knowledge base.

Every example's prompt is built by the chatbot's own prompt builder from the question, the history before
it and the passages retrieved for it, so training and serving see identical prompts. Kinds (trl's
conversational formats, one JSON object per line):

- sft:    prompt, completion                 (agent-approved or agent-edited replies; KB seed)
- kto:    prompt, completion, label          (bot replies a customer rated up or down)
- dpo:    prompt, chosen, rejected           (the agent's edit or own reply over the bot's draft)
- reward: prompt, chosen, rejected           (the dpo pairs, plus disliked replies an agent then answered)

Each row also carries `question` (what the customer asked, for evaluation), `conversation_id` (the split is by conversation, so no conversation is in both
train and held-out) and `source`. Text is redacted again on export: the log redacts what customers and
agents type, and this also catches personal data that reached a bot reply.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from chatbot import SupportBot, Turn, build_messages
from chatbot.citations import renumber_citations
from chatbot.engine import turns_of
from chatbot.log import LoggedMessage
from chatbot.prompt import Source
from chatbot.redact import redact
from retrieval import SearchHit

KINDS = ("sft", "kto", "dpo", "reward")
RATED_MODES = ("generate", "template")  # policy refusals say nothing about the model
MODEL_HANDOFFS = ("low_confidence", "out_of_scope", "not_grounded", "model_handoff")
PREFETCH = 32  # questions whose query vectors are made in one batch before they are searched (KnowledgeBase.prefetch)


@dataclass
class ExportReport:
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> {"train": n, "heldout": n}
    files: list[str] = field(default_factory=list)


# --- prompts ----------------------------------------------------------------------------------------


def prompt_for(bot: SupportBot, question: str, history: list[Turn], sources: list[Source]) -> list[dict]:
    return build_messages(bot.settings, sources, history, question, bot.backend.count_tokens, bot.config.model.max_new_tokens)[0]


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def passages_for(bot: SupportBot, question: str, history: list[Turn], must_have: list[dict]) -> tuple[list[Source], dict[int, int]]:
    """The passages retrieved for the question now, with every entry the logged reply cited put back in if
    retrieval no longer ranks it (it takes the place of the weakest other passage); and how the logged
    citation numbers map onto the new numbering."""
    sources = bot.sources(bot.retrieve(question, history))
    have = {s.entry_id for s in sources}
    missing = [s for s in must_have if s.get("id") not in have and bot.kb.entry(s.get("id", ""))]
    for logged in missing:
        replaceable = [i for i, s in enumerate(sources) if s.entry_id not in {m.get("id") for m in must_have}]
        hit = bot.sources([_pseudo_hit(logged["id"], logged.get("score", 0.0))])
        if replaceable:
            sources[replaceable[-1]] = hit[0]
        else:
            sources.append(hit[0])
    sources = [Source(i + 1, s.entry_id, s.title, s.text, s.url, s.score) for i, s in enumerate(sources)]
    number = {s.entry_id: s.number for s in sources}
    mapping = {m["n"]: number[m["id"]] for m in must_have if m.get("id") in number and "n" in m}
    return sources, mapping


def _pseudo_hit(entry_id: str, confidence: float) -> SearchHit:
    """A hit for an entry retrieval did not rank, so `bot.sources` renders its passage the usual way."""
    return SearchHit(entry_id, "", 0.0, confidence, 0.0, 0.0, None, "")


# --- from the log -----------------------------------------------------------------------------------


@dataclass
class _Context:
    question: str
    history: list[Turn]


def _context(messages: list[LoggedMessage], before_id: int) -> _Context | None:
    """The last customer message before `before_id` and the turns before it."""
    earlier = [m for m in messages if m.id < before_id]
    last = max((i for i, m in enumerate(earlier) if m.role == "customer"), default=None)
    if last is None:
        return None
    return _Context(earlier[last].text, [t for t in turns_of(earlier[:last]) if t.text])


def log_examples(bot: SupportBot, progress: Callable[[str, int, int], None] | None = None) -> dict[str, list[dict]]:
    """All examples the log holds, by kind (not yet redacted, de-duplicated or split)."""
    out: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    ratings = {}
    for row in bot.log.feedback():  # the latest rating of a message counts
        ratings[row["message_id"]] = row["rating"]
    actions = bot.log.agent_actions()
    conversations = {r["conversation_id"] for r in actions} | {bot.log.message(m).conversation_id for m in ratings}
    conversations = sorted(c for c in conversations if bot.log.conversation(c)["channel"] != "eval")
    for i, conversation_id in enumerate(conversations):
        messages = bot.log.history(conversation_id)
        by_id = {m.id: m for m in messages}
        for m in messages:
            if m.id in ratings and m.role == "bot":
                _rated(bot, m, ratings[m.id] > 0, messages, out)
        for action in (a for a in actions if a["conversation_id"] == conversation_id):
            _acted(bot, action, by_id.get(action["draft_message_id"]), messages, ratings, out)
        if progress:
            progress("export", i + 1, len(conversations))
    return out


def _rated(bot: SupportBot, m: LoggedMessage, up: bool, messages: list[LoggedMessage], out: dict) -> None:
    if not (m.mode in RATED_MODES or m.reason in MODEL_HANDOFFS) or not m.text:
        return
    context = _context(messages, m.id)
    if context is None:
        return
    sources, numbers = passages_for(bot, context.question, context.history, m.sources)
    prompt = prompt_for(bot, context.question, context.history, sources)
    out["kto"].append({"prompt": prompt, "completion": assistant(renumber_citations(m.text, numbers)), "label": up,
                       "question": context.question, "passages": [s.text for s in sources],
                       "conversation_id": m.conversation_id, "source": "thumbs"})


def _acted(bot: SupportBot, action: dict, draft: LoggedMessage | None, messages: list[LoggedMessage],
           ratings: dict[int, int], out: dict) -> None:
    context = _context(messages, action["reply_message_id"])
    if context is None:
        return
    sources, numbers = passages_for(bot, context.question, context.history, draft.sources if draft else [])
    prompt = prompt_for(bot, context.question, context.history, sources)
    final = action["final"]
    meta = {"question": context.question, "passages": [s.text for s in sources], "conversation_id": action["conversation_id"], "source": f"agent_{action['action']}"}
    if action["action"] in ("approved", "edited"):
        out["sft"].append({"prompt": prompt, "completion": assistant(final), **meta})
    rejected = renumber_citations(action["draft"], numbers) if action["draft"] else ""
    if rejected and action["action"] in ("edited", "rejected") and rejected.strip() != final.strip():
        pair = {"prompt": prompt, "chosen": assistant(final), "rejected": assistant(rejected), **meta}
        out["dpo"].append(pair)
        out["reward"].append(pair)
    elif draft is not None and ratings.get(draft.id, 0) < 0 and draft.text.strip() != final.strip():
        # The customer disliked the bot's reply and an agent answered instead: a preference for the reward model.
        out["reward"].append({"prompt": prompt, "chosen": assistant(final),
                              "rejected": assistant(renumber_citations(draft.text, numbers)), **meta, "source": "thumbs_agent"})


# --- from the knowledge base ------------------------------------------------------------------------


def seed_examples(bot: SupportBot, handoff_every: int = 0, max_variants: int = 0, seed: int = 0,
                  out_of_scope: list[str] | None = None, out_of_scope_every: int = 5, also_answered: int = 0,
                  progress: Callable[[str, int, int], None] | None = None) -> list[dict]:
    """SFT examples a fresh install can train on before any traffic.

    Each question variant of an FAQ entry with the passages retrieved for it (the right one put in if
    retrieval missed it, the rest are real distractors) gives the entry's curated answer citing its
    passage. `max_variants` > 0 keeps that many variants per entry (a shorter run that still covers every
    entry). `out_of_scope` questions (one for every `out_of_scope_every` answerable examples at most, counting
    `also_answered` examples trained beside the seed, such as worked answers) give the hand-off reply, see
    `out_of_scope_examples`: with 129 worked answers beside the demo seed and its 33 out-of-scope examples,
    hand-off recall fell from 0.90 to 0.75 (docs/learning-loop.md). With `handoff_every` > 0, every
    `handoff_every`-th variant is shown without its entry's passage and hands off too. Off by default: on the demo data those examples taught
    the model to hand off answerable questions, while near-subject out-of-scope ones in their place raised
    hand-off recall (README, "The default model is fine-tuned"). A sixth of the examples hand off: a quarter
    (every 10th variant as well) cut answer similarity from 0.47 to 0.36.
    """
    rng = random.Random(seed)
    entries = [bot.kb.entry(row.id) for row in bot.kb.entries()]
    variants = [(e, q) for e in entries if e.kind == "faq" for q in e.questions[: max_variants or None]]
    rows = []
    for i, (entry, question) in enumerate(variants):
        if i % PREFETCH == 0:  # one forward pass per question was most of the time this takes
            bot.kb.prefetch([q for _, q in variants[i : i + PREFETCH]])
        handoff = handoff_every > 0 and i % handoff_every == handoff_every - 1
        if handoff:
            hits = bot.kb.search(question, k=bot.settings.passages + 1)
            sources = bot.sources([h for h in hits if h.entry_id != entry.id][: bot.settings.passages])
            rows.append(_seed_row(bot, question, sources, bot.messages.handoff, "kb_handoff"))
        else:
            rows.append(_answer_row(bot, question, entry.id, entry.answer, rng, "kb"))
        if progress:
            progress("seed examples", i + 1, len(variants))
    limit = (len(variants) + also_answered) // max(1, out_of_scope_every)
    return rows + out_of_scope_examples(bot, out_of_scope or [], limit)


def worked_examples(bot: SupportBot, rows: list[dict], seed: int = 0) -> list[dict]:
    """SFT examples from answers the team wrote that reason over one entry (`question,answer,expected_id`
    rows: a refund worked out from the fees, a deadline from a window, one part of a set). The seed alone
    teaches the curated answer verbatim, and a model that has only seen that hands off a question whose answer
    must restate the customer's numbers (docs/learning-loop.md)."""
    rng = random.Random(seed)
    return [_answer_row(bot, row["question"], row["expected_id"], row["answer"], rng, "worked") for row in rows]


def _answer_row(bot: SupportBot, question: str, entry_id: str, answer: str, rng: random.Random, source: str) -> dict:
    """The question with the passages retrieved for it, its entry's put in where retrieval ranked it (else
    anywhere) and the rest real distractors, answered by `answer` citing the entry's passage."""
    k = bot.settings.passages
    hits = bot.kb.search(question, k=k + 1)
    chosen = [h for h in hits if h.entry_id != entry_id][: k - 1]
    rank = next((j for j, h in enumerate(hits) if h.entry_id == entry_id), None)
    chosen.insert(min(rank, len(chosen)) if rank is not None else rng.randrange(len(chosen) + 1), _pseudo_hit(entry_id, 1.0))
    sources = bot.sources(chosen)
    number = next(s.number for s in sources if s.entry_id == entry_id)
    return _seed_row(bot, question, sources, f"{answer} [{number}]", source)


def _seed_row(bot: SupportBot, question: str, sources: list[Source], completion: str, source: str) -> dict:
    return {"prompt": prompt_for(bot, question, [], sources), "completion": assistant(completion), "question": question,
            "passages": [s.text for s in sources], "conversation_id": "kb:" + _digest(question), "source": source}


def out_of_scope_examples(bot: SupportBot, questions: list[str], limit: int) -> list[dict]:
    """Out-of-scope questions with the passages retrieved for them give the hand-off reply. Only those that
    get past the confidence check at serving time are kept (the rest never reach the model), the ones
    retrieval is most confident about first: they come with plausible-looking but beside-the-point passages.
    The out-of-scope guard stops many of these at serving time too; they still teach the model the hand-off
    for questions like them that it does not catch."""
    scored = []
    for i, question in enumerate(questions):
        if i % PREFETCH == 0:
            bot.kb.prefetch(questions[i : i + PREFETCH])
        hits = bot.kb.search(question, k=bot.settings.passages)
        confidence = max((h.confidence for h in hits), default=0.0)
        if confidence >= bot.settings.handoff_confidence:
            scored.append((confidence, question, hits))
    scored.sort(key=lambda item: -item[0])
    return [_seed_row(bot, question, bot.sources(hits), bot.messages.handoff, "out_of_scope") for _, question, hits in scored[:limit]]


# --- cleaning, splitting, files ---------------------------------------------------------------------


def redact_row(row: dict, kinds: Iterable[str]) -> dict:
    """Redact every message; personal-data look-alikes that also appear in the passages (the company's
    own phone number) are kept, so the model still learns to give them."""
    kinds = tuple(kinds)
    if not kinds:
        return row
    passages = "\n".join(row.get("passages", []))
    clean = dict(row)
    for key in ("prompt", "completion", "chosen", "rejected"):
        if key in row:
            clean[key] = [{**m, "content": redact(m["content"], kinds, keep=passages if key != "prompt" else "")
                           if m["role"] != "system" else m["content"]} for m in row[key]]
    return clean


def deduplicate(rows: list[dict]) -> list[dict]:
    seen, out = set(), []
    for row in rows:
        key = _digest(json.dumps({k: row[k] for k in ("prompt", "completion", "chosen", "rejected", "label") if k in row}, sort_keys=True))
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def is_heldout(row: dict, share: float) -> bool:
    """Stable by conversation: the same conversation always lands on the same side."""
    return int(_digest(row["conversation_id"])[:8], 16) / 0xFFFFFFFF < share


def split(rows: list[dict], share: float) -> tuple[list[dict], list[dict]]:
    train = [r for r in rows if not is_heldout(r, share)]
    heldout = [r for r in rows if is_heldout(r, share)]
    return train, heldout


def export_logs(bot: SupportBot, out_dir: Path, heldout_share: float = 0.2,
                progress: Callable[[str, int, int], None] | None = None) -> ExportReport:
    """`supportbot logs export`: `<kind>.train.jsonl` and `<kind>.heldout.jsonl` for every kind."""
    report = ExportReport()
    out_dir.mkdir(parents=True, exist_ok=True)
    for kind, rows in log_examples(bot, progress).items():
        rows = deduplicate([redact_row(r, bot.log.redact_kinds) for r in rows])
        train, heldout = split(rows, heldout_share)
        report.counts[kind] = {"train": len(train), "heldout": len(heldout)}
        for name, part in (("train", train), ("heldout", heldout)):
            path = out_dir / f"{kind}.{name}.jsonl"
            write_jsonl(path, part)
            report.files.append(str(path))
    return report


def write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with Path(path).open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}: line {n}: not JSON ({err.msg})") from None
    return rows


def data_hash(rows: list[dict]) -> str:
    return _digest("\n".join(json.dumps(r, sort_keys=True) for r in rows))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
