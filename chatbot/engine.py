"""The answering engine: one customer message in, a sourced answer or an honest hand-off out, all logged.

A turn, top to bottom (`SupportBot.respond`):
1. clean the message (control characters, length) and log it (redacted);
2. policy on the message: a request for a person or an unsupported language hands off; abuse, harmful
   requests and prompt injection get a polite refusal; small talk gets a short reply in character;
3. retrieve with the message: a follow-up ("and how much is it?", `chatbot.followup`) leaning on the
   question it continues, any other message after an answer leaning a little on the entry the conversation
   is on;
4. below the confidence threshold: hand off; outside the knowledge base's subject (`chatbot.scope`): say
   what the bot can help with (or hand off, `answer.out_of_scope_handoff`); a confident FAQ match can be
   answered with its curated text;
5. otherwise prompt the LM with the numbered passages and stream its reply;
6. keep only real citations and the passages' own links, no HTML; a reply that leaks the rules, promises
   an offer the passages do not state, claims a new role, trips the output filter or is not grounded in
   the passages is replaced by a hand-off;
7. log the reply with its sources, confidence, model, tokens and latency.

While a person has the conversation (after a hand-off) every message still gets a reply: an
acknowledgement, or a confident answer to a new question, marked as such (`_while_waiting`).
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from retrieval import Entry, KnowledgeBase, Passage, RetrievalSettings, SearchHit, fast_tokenizer

from .backends import Backend, BackendError, Generation, OpenAIBackend, TransformersBackend
from .business_hours import Schedule, away_text
from .citations import resolve_citations
from .config import Config, ConfigError
from .grounding import grounding
from .log import ConversationLog, LoggedMessage, LogError
from .model import Progress, provision_bundled
from .followup import asks, goes_back, is_follow_up, names_own_topic, topic_message
from .policy import Messages, classify_message, clean_message, instructs_model, no_longer_needs_person, sanitize, small_talk, unsafe
from .prompt import Source, Turn, build_messages, passage_body, passage_pieces, system_prompt
from .reward import RewardScorer
from .scope import SURE_MATCH, ScopeGuard
from .versions import Versions, open_versions, serving_weights

# For each kind of message the policy answers itself: does the conversation go to a person?
_MESSAGE_POLICY = {"human": True, "language": True, "abuse": False, "harmful": False, "injection": False}
# Replies that answer nothing from the knowledge base without passing the conversation on: for evaluation
# they count with the hand-offs (the bot rightly did not answer).
DECLINED = frozenset({"out_of_scope", "greeting", "thanks", "goodbye", "chitchat"})
# Replies whose sources are only what retrieval looked at: the conversation is on none of them.
_FOUND_NOTHING = frozenset({"low_confidence", "out_of_scope"})


@dataclass
class Reply:
    text: str
    sources: list[Source] = field(default_factory=list)
    confidence: float = 0.0
    handed_off: bool = False
    reason: str = ""  # why it handed off or refused: low_confidence, out_of_scope, not_grounded, human, ...; "" if answered
    mode: str = "policy"  # generate, template or policy
    grounding: float | None = None
    draft: str = ""  # the model's text when policy replaced it
    model: str = ""
    prompt_tokens: int = 0
    reply_tokens: int = 0
    latency_ms: float = 0.0
    conversation_id: str = ""
    message_id: int = 0

    @property
    def declined(self) -> bool:
        """The bot answered nothing from the knowledge base: it handed off, or said what it can help with."""
        return self.handed_off or self.reason in DECLINED

    def to_json(self) -> dict:
        """The `supportbot ask --json` contract."""
        return {
            "answer": self.text,
            "sources": [{"id": s.entry_id, "title": s.title, "score": round(s.score, 4), "url": s.url} for s in self.sources],
            "confidence": round(self.confidence, 4),
            "handed_off": self.handed_off,
            "declined": self.declined,
            "reason": self.reason,
            "mode": self.mode,
            "grounding": None if self.grounding is None else round(self.grounding, 4),
            "latency_ms": round(self.latency_ms, 1),
            "model": self.model,
            "conversation_id": self.conversation_id,
            "message_id": self.message_id,
        }


class Response:
    """A reply in progress: iterate for text pieces as they are produced; `reply` is set at the end.

    The final `reply.text` can differ from the streamed pieces (invented citations removed, or the
    whole draft replaced by a hand-off): a reader that streamed shows `reply.text` once it differs."""

    def __init__(self, pieces: Iterator[str | Reply]):
        self._pieces = pieces
        self.reply: Reply | None = None

    def __iter__(self) -> Iterator[str]:
        for item in self._pieces:
            if isinstance(item, Reply):
                self.reply = item
            else:
                yield item

    def result(self) -> Reply:
        for _ in self:
            pass
        return self.reply


def make_backend(config: Config, progress: Progress | None = None) -> Backend:
    """The configured generation backend: the home's serving version (at first the bundled model with the
    demo adapter, or `model.path`; converted on first use), or exactly `model.path` + `model.adapter`
    when an adapter is configured."""
    settings = config.model
    if settings.backend == "openai":
        return OpenAIBackend(settings.openai_url, settings.openai_model, settings.openai_api_key)
    blocked = False  # trained with block attention (training/block_attention.py)
    if settings.adapter:  # a fixed model, outside the versions
        path = Path(settings.path).expanduser() if settings.path else provision_bundled(config.models_dir, progress)
        name, adapter = f"{path.name}+{Path(settings.adapter).name}", settings.adapter
    else:
        with open_versions(config) as versions:
            name, path, adapter = serving_weights(versions, settings.path, progress)
            blocked = bool(versions.card(name).settings.get("block_attention"))
    return weights_backend(config, name, path, adapter or "", blocked, progress)


def weights_backend(config: Config, name: str, path: Path, adapter: str | Path, blocked: bool,
                    progress: Progress | None = None) -> Backend:
    """These weights in-process, as the configured local backend serves them (`blocked`: trained with block
    attention): what serves, and what the gate measures, so that a version is judged as it would be served."""
    settings = config.model
    if evaluated_backend(settings.backend) == "llama.cpp":
        return llama_cpp_backend(config, name, path, adapter, progress, passage_cache_on(settings.passage_cache, blocked))
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    return TransformersBackend.from_folder(
        path, name, adapter=str(adapter or ""), dtype=settings.dtype,
        max_concurrent=settings.max_concurrent, repetition_penalty=settings.repetition_penalty,
    )


def evaluated_backend(setting: str) -> str:
    """The local backend that runs a version's weights here: model.backend's, or transformers when the model
    is served by a remote OpenAI-compatible server (whose weights the gate still measures locally)."""
    return "transformers" if setting == "openai" else local_backend(setting)


def local_backend(setting: str) -> str:
    """'llama.cpp' or 'transformers' for model.backend; 'auto' takes llama.cpp when it is installed."""
    if setting == "auto":
        return "llama.cpp" if importlib.util.find_spec("llama_cpp") else "transformers"
    if setting not in ("transformers", "llama.cpp"):
        raise ConfigError(f"model.backend {setting!r}: expected 'auto', 'llama.cpp', 'transformers' or 'openai'")
    return setting


def passage_cache_on(setting: str, blocked: bool) -> bool:
    """model.passage_cache: "on", "off", or "auto": on for a version trained with block attention, which
    answers from passages computed apart as well as from whole prompts; a version trained on whole prompts
    answers far worse from them (docs/serving.md#passage-cache)."""
    if setting not in ("auto", "on", "off"):
        raise ConfigError(f"model.passage_cache {setting!r}: expected auto, on or off")
    return setting == "on" or (setting == "auto" and blocked)


def llama_cpp_backend(config: Config, name: str, path: Path, adapter: str | Path, progress: Progress | None,
                      passage_cache: bool) -> Backend:
    """The served weights as a GGUF (exported once per version) behind llama.cpp."""
    from .llamacpp import LlamaCppBackend, gguf_for
    from .passage_cache import PassageCache

    settings = config.model
    gguf = gguf_for(config.models_dir, name, path, adapter, settings.gguf_type, progress)
    context = config.answer.context_tokens + settings.max_new_tokens + 64
    passages = PassageCache(gguf.with_suffix(".passages"), settings.passage_cache_mb << 20) if passage_cache else None
    return LlamaCppBackend(gguf, fast_tokenizer(path), name, threads=settings.threads, context=context,
                           repetition_penalty=settings.repetition_penalty, max_concurrent=settings.max_concurrent,
                           draft_tokens=settings.draft_tokens, passages=passages)


def open_kb(config: Config, name: str | None = None, settings: RetrievalSettings | None = None) -> KnowledgeBase:
    """The configured knowledge base (or `name`), in the shared database when one is set. A new one starts on the
    serving retriever; existing ones were switched to it when it was promoted (the store records its embedder,
    which every process then follows)."""
    kb = KnowledgeBase(config.kb_dir(name), settings or config.retrieval, database=config.storage.database_url)
    with open_versions(config) as versions:
        retriever = versions.serving_version("retriever")
        if retriever and kb.store.meta("embedder") is None and not kb.store.counts()["entries"]:
            kb.switch_embedder(str(versions.folder(retriever)))
    return kb


def follows_serving(config: Config) -> bool:
    """Whether the model comes from the home's serving pointer (and so changes when ops promote)."""
    return config.model.backend != "openai" and not config.model.adapter


class SupportBot:
    def __init__(self, config: Config, kb: KnowledgeBase | None = None, backend: Backend | None = None,
                 log: ConversationLog | None = None, progress: Progress | None = None, versions: Versions | None = None):
        self.config = config
        self.settings = config.answer
        self.kb = kb or open_kb(config)
        self.log = log or ConversationLog(config.log_database, config.answer.redact)
        self.messages = Messages(config.answer.company)
        self._backend = backend
        self._backend_for = ""  # the serving version the loaded backend was made for
        self._backend_lock = threading.Lock()
        self._progress = progress
        self._fixed = backend is not None or not follows_serving(config)
        self.versions = versions or Versions(config.models_root, self.log.db)  # the registry is in the app's database
        self.reward = RewardScorer(self.versions)  # used only when model.best_of > 1 and a reward model serves
        self.scope = ScopeGuard(config.answer)
        self.hours = Schedule.from_settings(config.serve)  # a bad serve.business_hours stops the start
        self.clock = lambda: datetime.now(timezone.utc)  # what business hours and idle closing go by (tests set it)

    @property
    def backend(self) -> Backend:
        """The model to answer with. When it follows the serving pointer, a promotion or rollback is picked
        up at the next turn, without a restart; replies already streaming finish on the model they began with."""
        if self._fixed and self._backend is not None:
            return self._backend
        serving = "" if self._fixed else self.versions.serving_version("lm")
        with self._backend_lock:
            if self._backend is None or serving != self._backend_for:
                retired, self._backend = self._backend, make_backend(self.config, self._progress)
                if hasattr(retired, "close"):  # frees its memory once its streaming replies finish
                    retired.close()
                self._backend_for = self.versions.serving_version("lm") if not self._fixed else ""
            return self._backend

    def ask(self, message: str, conversation_id: str | None = None, channel: str = "cli") -> Reply:
        return self.respond(message, conversation_id, channel).result()

    def respond(self, message: str, conversation_id: str | None = None, channel: str = "web",
                max_new_tokens: int | None = None, temperature: float | None = None) -> Response:
        """Start a turn; raises LogError at once for an unknown conversation id."""
        if conversation_id and not self.log.conversation(conversation_id):
            raise LogError(f"no conversation {conversation_id!r}")
        options = {"max_new_tokens": max_new_tokens or self.config.model.max_new_tokens,
                   "temperature": self.config.model.temperature if temperature is None else temperature}
        return Response(self._turn(message, conversation_id, channel, options))

    def hand_off(self, conversation_id: str) -> Reply:
        """The customer asked for a person (a button, not a message): log it and mark the conversation. Asked
        again while waiting, nothing is logged twice: the reply says the customer is already in the queue."""
        if self._status(conversation_id) == "handed_off":
            return Reply(self.messages.already_waiting, handed_off=True, reason="human", conversation_id=conversation_id)
        reply = self._after_hours(conversation_id, Reply(self.messages.human, handed_off=True, reason="human"))
        return self._log_policy(conversation_id, reply, "handed_off")

    def _after_hours(self, conversation_id: str, reply: Reply) -> Reply:
        """A hand-off while nobody is in (serve.business_hours) says when the team is back and offers to take an email
        address; the log marks the conversation, so that the page shows the email box and the agents' queue puts it
        first when the day starts."""
        now = self.clock()
        opening = self.hours.next_opening(now)
        if opening is not None:
            reply.text = away_text(reply.text, self.hours.when(opening, now))
            self.log.mark_after_hours(conversation_id, opening.astimezone(timezone.utc).isoformat(timespec="milliseconds"))
        return reply

    def release(self, conversation_id: str) -> Reply:
        """The customer no longer needs a person: the conversation leaves the agents' queue, the bot answers again."""
        if self._status(conversation_id) != "handed_off":
            raise LogError(f"conversation {conversation_id!r} is not waiting for a person")
        return self._log_policy(conversation_id, Reply(self.messages.released, reason="released"), "open")

    def _status(self, conversation_id: str) -> str:
        conversation = self.log.conversation(conversation_id)
        if conversation is None:
            raise LogError(f"no conversation {conversation_id!r}")
        return conversation["status"]

    def _log_policy(self, conversation_id: str, reply: Reply, status: str) -> Reply:
        reply.conversation_id = conversation_id
        reply.message_id = self.log.add_message(conversation_id, "bot", reply.text, handed_off=int(reply.handed_off),
                                                reason=reply.reason, mode="policy")
        self.log.set_status(conversation_id, status)
        return reply

    def draft(self, conversation_id: str) -> Reply:
        """A reply for an agent to review, to the customer's latest question (a request for a person or small
        talk after it is not one); nothing is logged. Reason "empty" when the customer asked nothing."""
        history = turns_of(self.log.history(conversation_id))
        last = max((i for i, t in enumerate(history) if t.role == "customer" and _is_question(t.text)), default=None)
        if last is None:
            return Reply("", reason="empty")
        options = {"max_new_tokens": self.config.model.max_new_tokens, "temperature": self.config.model.temperature}
        return _drain(self._reply(history[last].text, history[:last], options))

    # --- one turn ---------------------------------------------------------------------------------

    def _turn(self, message: str, conversation_id: str | None, channel: str, options: dict) -> Iterator[str | Reply]:
        started = time.perf_counter()
        conversation_id = conversation_id or self.log.start(channel)
        history = turns_of(self.log.history(conversation_id))
        text, cut = clean_message(message, self.settings.max_message_chars)
        self.log.add_message(conversation_id, "customer", text)
        waiting = self._status(conversation_id) == "handed_off"
        if waiting and no_longer_needs_person(text):
            yield (reply := self.release(conversation_id)).text
            yield reply
            return
        prefix = self.messages.cut(self.settings.max_message_chars) + "\n\n" if cut else ""
        if prefix:
            yield prefix

        answer = self._while_waiting if waiting else self._reply
        reply = yield from answer(text, history, options)
        if reply.handed_off and not waiting:
            self._after_hours(conversation_id, reply)
        reply.text = prefix + reply.text
        reply.conversation_id = conversation_id
        reply.latency_ms = (time.perf_counter() - started) * 1000
        reply.message_id = self.log.add_message(
            conversation_id, "bot", reply.text,
            sources=[s.to_dict() for s in reply.sources], confidence=reply.confidence, grounding=reply.grounding,
            handed_off=int(reply.handed_off), reason=reply.reason, mode=reply.mode, draft=reply.draft,
            model=reply.model, prompt_tokens=reply.prompt_tokens, reply_tokens=reply.reply_tokens,
            latency_ms=reply.latency_ms,
        )
        if reply.handed_off and not waiting:
            self.log.set_status(conversation_id, "handed_off")
        yield reply

    def _reply(self, text: str, history: list[Turn], options: dict) -> Iterator[str]:
        """Decide and produce the reply; yields what the customer sees as it comes, returns the Reply."""
        if not text:
            return (yield from self._say(Reply(self.messages.empty, reason="empty")))
        kind = classify_message(text)
        if kind:
            handoff = _MESSAGE_POLICY[kind]
            return (yield from self._say(Reply(getattr(self.messages, kind), handed_off=handoff, reason=kind)))
        talk = small_talk(text) if self.settings.small_talk else None
        hits = [] if talk in ("greeting", "thanks", "goodbye") else self.retrieve(text, history)
        if talk and not (hits and hits[0].dense >= SURE_MATCH):  # an entry the company wrote about it wins
            return (yield from self._say(Reply(getattr(self.messages, talk), reason=talk)))
        return (yield from self._answer(text, history, hits, options))

    def _while_waiting(self, text: str, history: list[Turn], options: dict) -> Iterator[str]:
        """A person has the conversation: acknowledge the message (it waits in the agents' queue), or, when it
        is a new question the knowledge base answers confidently (`answer.answer_while_waiting`), answer it,
        marked as such; the conversation stays with the person either way."""
        kind = classify_message(text)
        waiting = Reply(self.messages.already_waiting if kind == "human" else self.messages.waiting,
                        handed_off=True, reason="waiting_for_agent")
        if not self.settings.answer_while_waiting or kind or small_talk(text):
            return (yield from self._say(waiting))
        hits = self.retrieve(text, history)
        waiting.sources, waiting.confidence = self.sources(hits), hits[0].confidence if hits else 0.0  # for agents
        if not hits or hits[0].confidence < self.settings.answer_while_waiting:
            return (yield from self._say(waiting))
        marker = self.messages.while_waiting + "\n\n"
        yield marker
        reply = yield from self._answer(text, history, hits, options)
        if reply.declined:  # the answer fell through: the customer reads the acknowledgement instead
            waiting.draft = reply.draft or reply.text
            return waiting
        reply.text, reply.reason = f"{marker}{reply.text}\n\n{self.messages.still_waiting}", "while_waiting"
        return reply

    def _answer(self, text: str, history: list[Turn], hits: list[SearchHit], options: dict) -> Iterator[str]:
        """Answer a question from what retrieval found: hand off, say it is out of scope, the curated answer, or the model."""
        sources = self.sources(hits)
        confidence = hits[0].confidence if hits else 0.0
        reason = self._handoff_reason(text, history, hits)
        if reason == "out_of_scope" and not self.settings.out_of_scope_handoff:
            return (yield from self._say(Reply(self.messages.out_of_scope, sources=sources, confidence=confidence, reason=reason)))
        if reason:
            return (yield from self._say(Reply(self.messages.handoff, sources=sources, confidence=confidence, handed_off=True, reason=reason)))
        if self._use_template(hits[0]):
            entry = self.kb.entry(hits[0].entry_id)
            reply = Reply(f"{entry.answer} [1]", sources=sources[:1], confidence=confidence, mode="template", grounding=1.0)
            return (yield from self._say(reply))
        return (yield from self._generate(text, history, sources, confidence, options))

    def _handoff_reason(self, text: str, history: list[Turn], hits: list[SearchHit]) -> str:
        """Why the turn goes to a person before any answer is made, or "": retrieval found nothing confident
        enough, or the message (also read as a follow-up) lies outside the knowledge base's subject."""
        if not hits or hits[0].confidence < self.settings.handoff_confidence:  # nothing found hands off at any threshold
            return "low_confidence"
        topic = self.topic(text, history)
        texts = [text, f"{topic} {text}"] if topic else [text]
        if self.scope.outside(self.kb, texts, max(hit.dense for hit in hits)):
            return "out_of_scope"
        return ""

    def _say(self, reply: Reply) -> Iterator[str]:
        yield reply.text
        return reply

    def _use_template(self, top: SearchHit) -> bool:
        mode = self.settings.mode
        if mode not in ("generate", "template", "auto"):
            raise ConfigError(f"answer.mode {mode!r}: expected generate, template or auto")
        if mode == "generate":
            return False
        is_faq = self.kb.entry(top.entry_id).kind == "faq"
        return is_faq and (mode == "template" or top.confidence >= self.settings.template_confidence)

    def _generate(self, text: str, history: list[Turn], sources: list[Source], confidence: float, options: dict) -> Iterator[str]:
        backend = self.backend
        messages, kept, _ = build_messages(self.settings, sources, history, text, backend.count_tokens, options["max_new_tokens"])
        reply = Reply("", sources=kept, confidence=confidence, mode="generate", model=backend.name)
        try:
            if self.config.model.best_of > 1 and self.reward.available():
                generation = self._best_of(backend, messages, options["max_new_tokens"], kept)
                yield generation.text
            else:
                generation = backend.generate(messages, options["max_new_tokens"], options["temperature"],
                                              passage_pieces(kept))
                for piece in generation:
                    yield piece
        except BackendError as err:
            reply.text, reply.handed_off, reply.reason, reply.draft = self.messages.handoff, True, "error", str(err)
            return reply
        reply.prompt_tokens, reply.reply_tokens = generation.prompt_tokens, generation.completion_tokens
        passages = [s.text for s in kept]
        answer, cited = resolve_citations(sanitize(generation.text, passages), kept)
        reply.grounding = grounding(answer, passages, text)
        problem = (
            "model_handoff" if self.messages.handoff[:40] in answer  # a fine-tuned model hands off itself
            else unsafe(answer, passages, system_prompt(self.settings), self.settings.output_filter, text)
            or ("not_grounded" if reply.grounding < self.settings.grounding_min or not answer else "")
        )
        if problem:  # the sources stay on the reply: what the bot looked at, for agents and evaluation
            reply.text, reply.handed_off, reply.reason, reply.draft = self.messages.handoff, True, problem, answer
        else:
            reply.text, reply.sources = answer, cited or kept[:1]
        return reply

    def _best_of(self, backend: Backend, messages: list[dict], max_new_tokens: int, sources: list[Source]) -> Generation:
        """Sample `model.best_of` replies and keep the one the serving reward model scores highest.
        Nothing streams until all are done: the cost is n generations (measured in bench/generation.py)."""
        samples = []
        for _ in range(self.config.model.best_of):
            generation = backend.generate(messages, max_new_tokens, self.config.model.best_of_temperature,
                                          passage_pieces(sources))
            for _piece in generation:
                pass
            samples.append(generation)
        scores = self.reward([messages] * len(samples), [g.text for g in samples])
        return samples[max(range(len(samples)), key=scores.__getitem__)]

    # --- retrieval --------------------------------------------------------------------------------

    def topic(self, text: str, history: list[Turn]) -> str:
        """The earlier question a follow-up continues ("and how long does that take?" names its topic only in
        the question before it), with the follow-ups between; "" for a message that stands on its own."""
        if not is_follow_up(text):
            return ""
        return topic_message([t.text for t in history if t.role == "customer"], _is_question)

    def retrieve(self, text: str, history: list[Turn]) -> list[SearchHit]:
        """Search with the message; a follow-up is searched leaning on the question it continues
        (`answer.follow_up_weight`), unless it names a topic of its own that the message alone matches surely.
        A message that stands on its own is never joined to an earlier one; it leans a little on the entry the
        conversation is on (`_on_topic_hits`). Entries whose text speaks to the model (instructions planted in
        the knowledge base) are left out."""
        k = self.settings.passages
        hits = self.kb.search(text, k=k)
        topic = self.topic(text, history)
        if topic and not names_own_topic(text, hits[0].confidence if hits else 0.0):
            hits = self._follow_up_hits(text, topic, k)
        else:
            hits = self._on_topic_hits(text, history, hits, k)
        return [hit for hit in hits if not self._planted(hit)]

    def _on_topic_hits(self, text: str, history: list[Turn], alone: list[SearchHit], k: int) -> list[SearchHit]:
        """The search of a question leaning on the entry the latest reply drew on (`answer.on_topic_weight`):
        "is there a fee" after a question about cancelling Plus is about that fee. A remark ("good to know,
        thanks") is read alone. Leaning reorders; it never makes the turn surer than the message alone is of
        anything ("are you hiring?" after a shipping question stays unsure), and the cosines the out-of-scope
        guard reads are the message's own. An entry the message alone found keeps its own confidence where that
        is higher: a vector pulled towards another entry reads lower than the whole questions confidence is
        calibrated on. A question that alone would be handed off for low confidence ("what should I do",
        "how do I get the money") does not know its topic, so it leans harder (`answer.on_topic_unsure_weight`)."""
        about = next((t.about for t in reversed(history) if t.about), "")
        if not about or not asks(text) or goes_back(text) or self.settings.on_topic_weight <= 0:
            return alone
        sure = alone[0].confidence if alone else 0.0  # leaning never makes the turn surer than the message alone is
        unsure = sure < self.settings.handoff_confidence
        weight = self.settings.on_topic_unsure_weight if unsure else self.settings.on_topic_weight
        hits = self.kb.search(text, k=k, about=about, about_weight=weight)
        found = {hit.entry_id: hit for hit in alone}
        floor = min((hit.dense for hit in alone), default=0.0)  # what the message alone gives an entry it did not find

        def as_read_alone(hit: SearchHit) -> SearchHit:
            own = found.get(hit.entry_id)
            if own is None:
                return replace(hit, confidence=min(hit.confidence, sure), dense=min(hit.dense, floor))
            return replace(hit, confidence=max(min(hit.confidence, sure), own.confidence), dense=own.dense)

        return [as_read_alone(hit) for hit in hits]

    def _follow_up_hits(self, text: str, topic: str, k: int) -> list[SearchHit]:
        """A follow-up's search, leaning on its topic. Confidence is calibrated on whole questions and a leaning
        vector reads lower, so where the topic and message read as one text find the same entry first, that
        reading's confidence counts."""
        hits = self.kb.search(text, k=k, context=topic, context_weight=self.settings.follow_up_weight)
        joined = self.kb.search(f"{topic} {text}", k=1)
        if hits and joined and joined[0].entry_id == hits[0].entry_id and joined[0].confidence > hits[0].confidence:
            hits[0] = replace(hits[0], confidence=joined[0].confidence)
        return hits

    def _planted(self, hit: SearchHit) -> bool:
        """An FAQ answer (a curated reply shows all of it) or the matched document passage carries instructions."""
        entry = self.kb.entry(hit.entry_id)
        return entry is not None and instructs_model(entry.answer if entry.kind == "faq" else hit.matched)

    def sources(self, hits: list[SearchHit]) -> list[Source]:
        """Numbered passages for the prompt: an FAQ entry's answer, or the best passage of a document or a
        long answer."""
        sources = []
        for hit in hits:
            entry = self.kb.entry(hit.entry_id)
            if entry is None:
                continue
            passage = next((p for p in entry.passages if p.text == hit.matched), entry.passages[0])
            sources.append(Source(len(sources) + 1, entry.id, *shown(entry, passage), entry.url, hit.confidence))
        return sources

    def warm_passages(self) -> int:
        """Have the backend compute the state of every knowledge-base passage while it is idle (llama.cpp with
        `model.passage_cache`), so that even first questions find their passages ready. Returns how many
        passages were queued (0 for a backend without a passage cache)."""
        backend = self.backend
        if not getattr(backend, "caches_passages", False):
            return 0  # nothing read from the knowledge base for a backend that would not use it
        sample = [Source(1, "", "A passage", "Its text.")]
        messages, _, _ = build_messages(self.settings, sample, [], "A question?", backend.count_tokens, 0)
        return backend.warm(messages, passage_pieces(sample), sorted(passage_bodies(self.kb)))


def passage_bodies(kb: KnowledgeBase) -> set[str]:
    """Every passage body (`passage_body`) a prompt may show from the knowledge base."""
    entries = (kb.entry(summary.id) for summary in kb.entries())
    return {passage_body(*shown(entry, p)) for entry in entries if entry for p in entry.passages}


def shown(entry: Entry, passage: Passage) -> tuple[str, str]:
    """(title, text) a prompt shows for a passage of an entry: an FAQ's whole answer, else the passage."""
    return (entry.title, entry.answer) if entry.kind == "faq" and len(entry.passages) == 1 else (passage.title, passage.text)


def turns_of(messages: list[LoggedMessage]) -> list[Turn]:
    """A conversation's logged messages as prompt turns; a bot reply that drew on the knowledge base keeps its
    first source (a reply to a message retrieval found nothing for, or put outside the knowledge base's
    subject, is about nothing: its sources are what it looked at)."""
    return [Turn(m.role, m.text, _drew_on(m)) for m in messages]


def _drew_on(message: LoggedMessage) -> str:
    on_an_entry = message.role == "bot" and message.sources and message.reason not in _FOUND_NOTHING
    return message.sources[0].get("id", "") if on_an_entry else ""


def _is_question(text: str) -> bool:
    """A customer message that asks something of the knowledge base: not small talk, not a request for a person."""
    return classify_message(text) is None and small_talk(text) is None


def _drain(generator: Iterator) -> Reply:
    """Run a generator to its end and return its return value (the Reply of `_reply`)."""
    try:
        while True:
            next(generator)
    except StopIteration as stop:
        return stop.value
