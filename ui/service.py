"""Everything the web app and its API do, as plain typed methods: the Gradio handlers, the `gradio_client`
API and the OpenAI-compatible route all call these, so each behaviour has one path.

Methods for agents and ops take a session token first and check its role before anything else.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import datetime
from itertools import islice
from pathlib import Path

from chatbot import Config, ConfigError, LogError, Response, SupportBot, save_settings
from chatbot.analytics import analytics
from chatbot.evaluate import load_evals
from chatbot.log import import_legacy
from chatbot.policy import clean_message
from chatbot.redact import find_personal_data
from chatbot.versions import Versions, VersionError, is_plain_name
from training import METHODS, rollback
from training.suggestions import SuggestionError, accept, refresh, reject, revert
from chatbot.review import REASONS, Suggestion, close, close_idle, review_queue, send_reply, suggestion
from retrieval import IngestError
from retrieval.sources import is_url

from .auth import Accounts, AuthError, Sessions, uses_demo_password
from .jobs import JobError, Jobs
from .origins import parse_origins
from .ratelimit import Caller, RateLimited, RateLimiter
from .webhooks import Webhooks, agent_reply_data, handoff_data, rated_data

ACTIONS = ("approved", "edited", "rejected")
TRAINABLE = (*METHODS, "retriever")  # what `supportbot train` runs: the LM methods and the embedder
ROLES = ("lm", "reward", "retriever")  # what serves, each with its own pointer
MAX_UPLOAD_BYTES = 20_000_000  # per knowledge-base file uploaded through the app (the command line has no limit)
MAX_EPOCHS = 100
MAX_EMAIL_CHARS = 254  # the longest address SMTP carries
MAX_STEPS = 1_000_000
# Why a conversation waits in the agents' queue (review_queue's reasons), in words.
QUEUE_REASONS = {"handed_off": "handed off", "disliked": "rated down", "low_confidence": "low confidence", "copilot": "copilot"}
# The evaluation gate's metrics (training/gate.py), in words.
GATE_METRICS = {"answer_similarity": "answer similarity", "grounding": "grounding", "handoff_precision": "hand-off precision",
                "handoff_recall": "hand-off recall", "reward": "reward score", "latency_ms_p50": "median reply time (ms)",
                "pair_accuracy": "preference pairs ranked right", "top1": "top-1 accuracy", "recall_at_5": "recall at 5",
                "mrr": "mean reciprocal rank"}


class ServiceError(ValueError):
    """A request refused with a message for the person who made it."""


class SupportService:
    def __init__(self, config: Config, bot: SupportBot | None = None, overrides: list[str] | None = None,
                 clock: Callable[[], float] = time.time):
        """`clock`: the rate limits' (tests move it instead of sleeping)."""
        self.config = config
        self.bot = bot or SupportBot(config)
        accounts = Accounts(config.serve.users, self.bot.log.db)
        if config.serve.production and uses_demo_password(accounts.all()):
            raise ServiceError("production mode refuses to start with a default password: add accounts with `supportbot user add`")
        self.sessions = Sessions(accounts, config.serve.session_minutes, self.bot.log.db)
        self.jobs = Jobs(config.home, self.bot.log.db)
        self.overrides = list(overrides or [])  # the `--set` flags this app was started with
        self.limiter = RateLimiter(config.limits, self.bot.log.db, clock)
        import_legacy(self.bot.log.db, config.home)  # API keys and webhook deliveries an older version kept in files
        self.webhooks = Webhooks(config, self.bot.log.db)  # serve.webhooks: each receiver sent events by its own background worker

    def warm_up(self) -> None:
        """Load the embedder and the model, and fit the out-of-scope guard, before the first customer waits for them."""
        self.bot.kb.search("warm up")
        self.bot.scope.model(self.bot.kb)
        self.bot.backend.count_tokens("warm up")
        self.bot.warm_passages()  # with model.passage_cache: computed while no customer waits

    # --- customers (no login) ---------------------------------------------------------------------

    def chat(self, message: str, conversation_id: str = "", caller: Caller | None = None) -> Iterator[dict]:
        """Stream a reply: dicts with the text so far; the last one also has the full reply. An unknown
        conversation id (a browser remembering a conversation this server does not have) starts anew."""
        self.limiter.take("chat", caller)
        if conversation_id and not self.bot.log.conversation(conversation_id):
            conversation_id = ""
        response = self._respond(message, conversation_id or None, channel="web")
        text = ""
        for piece in response:
            text += piece
            yield {"text": text, "done": False}
        yield {"text": response.reply.text, "done": True, "reply": response.reply.to_json()}

    def openai_chat(self, messages: list[dict], max_tokens: int | None, temperature: float | None,
                    caller: Caller | None = None):
        """A chat-completions call as a logged conversation: earlier turns are logged (cleaned and cut like
        the customer's message), the last user message is answered (a system message from the caller is
        not an instruction to the bot)."""
        self.limiter.take("chat", caller)
        conversation_id = self.bot.log.start("api")
        for m in messages[:-1]:
            text, _ = clean_message(m["content"], self.config.answer.max_message_chars)
            if m["role"] in ("user", "assistant") and text:
                self.bot.log.add_message(conversation_id, "customer" if m["role"] == "user" else "bot", text)
        return self._respond(messages[-1]["content"], conversation_id, channel="api",
                             max_new_tokens=max_tokens, temperature=temperature)

    def _respond(self, message: str, conversation_id: str | None, channel: str, **options) -> Response:
        """The bot's turn, for both doors: a hand-off it decides on (not an acknowledgement while the customer
        already waits) goes to the webhooks once the reply is logged, before the stream's last item."""
        response = self.bot.respond(message, conversation_id, channel=channel, **options)

        def pieces() -> Iterator:
            yield from response
            reply = response.reply
            if reply.handed_off and reply.reason != "waiting_for_agent":
                self.webhooks.emit("handoff", handoff_data(self.bot.log, reply.conversation_id, reply.reason))
            yield reply

        return Response(pieces())

    def history(self, conversation_id: str) -> list[dict]:
        """The conversation as the customer sees it (roles customer, bot, agent)."""
        if not conversation_id or not self.bot.log.conversation(conversation_id):
            return []
        ratings = self.bot.log.ratings(conversation_id)
        return [
            {"id": m.id, "role": m.role, "text": m.text, "sources": m.sources, "handed_off": m.handed_off, "reason": m.reason,
             "created_at": m.created_at, **ratings.get(m.id, {"rating": 0, "comment": ""})}
            for m in self.bot.log.history(conversation_id) if m.text
        ]

    def status(self, conversation_id: str) -> str:
        """"open", "handed_off" (waiting for a person) or "resolved"; "" for no such conversation. An open conversation
        idle for serve.idle_close_minutes is closed here too, so that the page asks for its rating at once (the
        background closing runs only every minute)."""
        conversation = self.bot.log.conversation(conversation_id) if conversation_id else None
        if conversation and conversation["status"] == "open" and self.close_idle(conversation_id):
            return "resolved"
        return conversation["status"] if conversation else ""

    def state(self, conversation_id: str) -> dict:
        """What the chat shows around the conversation: `status` (as `status`), `closed` and `rated` (a closed
        conversation not rated yet asks "How did we do?" once; `csat` is the rating given), and, for a hand-off
        outside business hours not answered yet, `away` (when the team is back, in words: "" when someone is in)
        and `email_left` (the customer left an address for the answer)."""
        status = self.status(conversation_id)
        log = self.bot.log
        csat = log.csat(conversation_id) if status else None
        back = log.after_hours_waiting([conversation_id]).get(conversation_id) if status == "handed_off" else None
        now = self.bot.clock()
        opening = datetime.fromisoformat(back) if back else None
        away = self.bot.hours.when(opening, now) if opening and opening > now else ""
        return {"status": status, "closed": status == "resolved", "rated": csat is not None,
                "csat": {"score": csat["score"], "comment": csat["comment"]} if csat else None,
                "away": away, "email_left": bool(away and log.contact_email(conversation_id))}

    def rate_conversation(self, conversation_id: str, score: int, comment: str = "") -> dict:
        """The customer's 1-5 rating of a closed conversation (CSAT), with an optional comment: one per conversation,
        a second replaces the first."""
        status = self.status(conversation_id)
        if not status:
            raise ServiceError(f"no conversation {conversation_id!r}")
        if status != "resolved":
            raise ServiceError("this conversation is still open: rate it once it is closed")
        if isinstance(score, float) and score.is_integer():
            score = int(score)  # a JSON or Gradio number
        self.bot.log.set_csat(conversation_id, score, comment or "")
        return {"conversation_id": conversation_id, "score": score}

    def leave_email(self, conversation_id: str, email: str) -> dict:
        """An address for the answer to a hand-off made while nobody was in (one per conversation: a second replaces
        the first). It is kept apart from the conversation's text: never in exports, training data or webhooks."""
        email = (email or "").strip()
        if not self.bot.log.conversation(conversation_id or ""):
            raise ServiceError(f"no conversation {conversation_id!r}")
        if not self.bot.log.after_hours_waiting([conversation_id]):
            raise ServiceError("an email address is taken only for a question handed to our team while they are away")
        if len(email) > MAX_EMAIL_CHARS or find_personal_data(email, ["email"]) != [("email", 0, len(email))]:
            raise ServiceError(f"{email[:60]!r} is not an email address: expected one such as name@example.com")
        self.bot.log.set_contact_email(conversation_id, email)
        return {"conversation_id": conversation_id, "email_left": True}

    def close_idle(self, conversation_id: str | None = None) -> list[str]:
        """Close the open conversations (all, or one) idle for serve.idle_close_minutes, as resolved by the bot; each
        is announced to the `closed` webhooks with no agent."""
        closed = close_idle(self.bot.log, self.config.serve.idle_close_minutes, self.bot.clock(), conversation_id)
        for closed_id in closed:
            self.webhooks.emit("closed", {"conversation_id": closed_id, "agent": "", "idle": True})
        return closed

    def rate(self, message_id: int, thumbs_up: bool | None, comment: str = "") -> dict:
        """Rate a bot reply, with an optional comment, in one action: it replaces the reply's earlier rating and
        comment; thumbs_up None clears them."""
        feedback_id = self.bot.log.add_feedback(int(message_id), thumbs_up, comment or "")
        self.webhooks.emit("rated", rated_data(self.bot.log, int(message_id)))
        return {"feedback_id": feedback_id}

    def talk_to_person(self, conversation_id: str) -> dict:
        """Hand the conversation to a person; asked again while waiting, nothing new is posted (message_id 0)."""
        if not conversation_id or not self.bot.log.conversation(conversation_id):
            conversation_id = self.bot.log.start("web")
        reply = self.bot.hand_off(conversation_id)
        if reply.message_id:  # not when it was waiting already
            self.webhooks.emit("handoff", handoff_data(self.bot.log, conversation_id, reply.reason))
        return {"conversation_id": conversation_id, "text": reply.text, "message_id": reply.message_id}

    def leave_queue(self, conversation_id: str) -> dict:
        """The customer no longer needs a person: the conversation leaves the agents' queue."""
        reply = self.bot.release(conversation_id)
        return {"conversation_id": conversation_id, "text": reply.text, "message_id": reply.message_id}

    def welcome(self, limit: int = 4) -> dict:
        """What an empty chat shows: the company, its greeting and questions to start from (the configured ones,
        else the `limit` the bot answered most often), so that a customer sees at once what the bot is for."""
        serve, company = self.config.serve, self.config.answer.company
        greeting = serve.greeting or (f"Hi! I'm the {company} virtual assistant. Ask me a question and I'll answer "
                                      "from our help center; you can ask for a person at any time.")
        return {"company": company, "greeting": greeting,
                "suggested_questions": list(serve.suggested_questions) or self._most_asked(limit)}

    def _most_asked(self, limit: int) -> list[str]:
        """The knowledge-base entries the bot answered most often lately, each as its curated question: never a
        customer's own words, which may be personal."""
        entries = (self.bot.kb.entry(entry_id) for entry_id in self.bot.log.most_cited_entries())
        return list(islice((e.questions[0] for e in entries if e and e.questions), limit))

    # --- sign-in ----------------------------------------------------------------------------------

    def login(self, user: str, password: str, caller: Caller | None = None) -> dict:
        """A staff session; failed attempts count against the caller's sign-in limit."""
        self.limiter.take("login", caller)
        token, session = self.sessions.login(user, password)
        self.limiter.give_back("login", caller)
        return {"token": token, "user": session.user, "role": session.role}

    def session(self, token: str) -> dict:
        """Who a token kept by a browser belongs to, if its session is still live (a reload keeps staff signed in
        until the session expires)."""
        session = self.sessions.require(token, "agent")  # every staff role may do what agents do
        return {"user": session.user, "role": session.role}

    def logout(self, token: str) -> None:
        """End the session now, not when it expires (a shared computer)."""
        self.sessions.logout(token)

    # --- agents -----------------------------------------------------------------------------------

    def queue(self, token: str) -> dict:
        """Conversations waiting for a person, oldest first; each item also says why in words (`why`) and, for a
        hand-off, the log's reason for it (`handoff_reason`)."""
        self.sessions.require(token, "agent")
        items = review_queue(self.bot, self.config.serve.copilot)
        handoffs = self.bot.log.handoff_reasons([i.conversation_id for i in items if i.reason == "handed_off"])
        counts = {reason: sum(i.reason == reason for i in items) for reason in QUEUE_REASONS}
        rows = []
        for item in items:
            cause = handoffs.get(item.conversation_id, "")
            after = " (handed off out of hours)" if item.after_hours else ""
            rows.append({**asdict(item), "handoff_reason": cause, "why": _why(item.reason, cause) + after})
        return {"items": rows, "counts": counts}

    def review(self, token: str, conversation_id: str) -> dict:
        """The conversation and the bot's suggested reply, for an agent."""
        self.sessions.require(token, "agent")
        if not self.bot.log.conversation(conversation_id):
            raise ServiceError(f"no conversation {conversation_id!r}")
        return {"history": self.history(conversation_id), "suggestion": asdict(suggestion(self.bot, conversation_id)),
                "status": self.bot.log.conversation(conversation_id)["status"],
                "contact_email": self.bot.log.contact_email(conversation_id)}  # left out of hours: to answer by email too

    def send(self, token: str, conversation_id: str, action: str, text: str, draft: str,
             draft_message_id: int | None = None) -> dict:
        """Send as is ("approved"), edited ("edited") or the agent's own reply ("rejected")."""
        session = self.sessions.require(token, "agent")
        if action not in ACTIONS:
            raise ServiceError(f"action {action!r}: expected one of {', '.join(ACTIONS)}")
        suggested = Suggestion(draft, int(draft_message_id) if draft_message_id else None)
        action_id = send_reply(self.bot, conversation_id, suggested, text, action, session.user)
        self.webhooks.emit("agent_reply", agent_reply_data(self.bot.log, conversation_id, session.user, action))
        return {"action_id": action_id}

    def close(self, token: str, conversation_id: str) -> dict:
        session = self.sessions.require(token, "agent")
        already = self.status(conversation_id) == "resolved"
        close(self.bot, conversation_id)
        if not already:  # closed twice is announced once
            self.webhooks.emit("closed", {"conversation_id": conversation_id, "agent": session.user})
        return {"status": "resolved"}

    # --- ops --------------------------------------------------------------------------------------

    def kb_upload(self, token: str, paths: list[str], progress: Callable[[str, int, int], None] | None = None) -> dict:
        """Ingest uploaded files; a refusal names the file as it was uploaded, not the server's copy of it."""
        self.sessions.require(token, "ops")
        try:
            report = self.bot.kb.add([Path(p) for p in paths], progress=progress, uploaded=True)
        except IngestError as err:
            message = str(err)
            for path in map(Path, paths):
                message = message.replace(str(path), path.name)
            raise IngestError(message) from None
        self.bot.warm_passages()
        return {k: v for k, v in asdict(report).items() if k != "ids"}

    def kb_upload_text(self, token: str, filename: str, content: str) -> dict:
        """Add one knowledge-base file given as text (the API's upload). The name must be a plain file name
        (no `../`, no folders): its extension picks the format."""
        self.sessions.require(token, "ops")
        if not is_plain_name(filename):
            raise ServiceError(f"file name {filename[:100]!r}: give a plain file name such as faq.csv, without folders")
        data = content.encode("utf-8")
        if len(data) > MAX_UPLOAD_BYTES:
            raise ServiceError(f"{filename}: {len(data) / 1e6:.1f} MB, over the upload limit of {MAX_UPLOAD_BYTES / 1e6:g} MB")
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / filename
            path.write_bytes(data)
            return self.kb_upload(token, [str(path)])

    def kb_entries(self, token: str, query: str = "") -> list[dict]:
        """Entries whose id or title contains `query`, or, failing that, the search results for it."""
        self.sessions.require(token, "ops")
        limit = self.config.answer.max_message_chars  # a search longer than a customer's message is not a search
        if len(query) > limit:
            raise ServiceError(f"the search text has {len(query):,} characters, over the limit of {limit:,}")
        rows = [asdict(e) for e in self.bot.kb.entries(contains=query or None)]
        if query and not rows:
            found = {h.entry_id for h in self.bot.kb.search(query, k=10)}
            rows = [asdict(e) for e in self.bot.kb.entries() if e.id in found]
        return rows

    def kb_page(self, token: str, query: str = "", page: int = 1, size: int = 20) -> dict:
        """One page of `kb_entries`, for browsing: the page number is kept within the pages there are."""
        rows = self.kb_entries(token, query)
        pages = max(1, math.ceil(len(rows) / size))
        page = min(max(1, page), pages)
        return {"entries": rows[(page - 1) * size:page * size], "page": page, "pages": pages, "total": len(rows)}

    def kb_remove(self, token: str, entry_id: str) -> dict:
        self.sessions.require(token, "ops")
        if not self.bot.kb.remove(entry_id.strip()):
            raise ServiceError(f"no entry with id {entry_id!r}")
        return {"removed": entry_id}

    def kb_sources(self, token: str) -> list[dict]:
        """The sites, files and folders the knowledge base was read from, with their last sync and its error."""
        self.sessions.require(token, "ops")
        return [s.to_dict() for s in self.bot.kb.sources()]

    def add_site(self, token: str, url: str, max_pages: int = 0) -> dict:
        """Crawl a help-centre site into the knowledge base as a background job (`kb add URL`), with progress."""
        self.sessions.require(token, "ops")
        url = url.strip()
        if not is_url(url):
            raise ServiceError(f"{url[:100]!r}: give the help centre's address, starting with http:// or https://")
        args = ["kb", "add", url, *([f"--max-pages={int(max_pages)}"] if max_pages else [])]
        return self.jobs.start(f"add {url[:60]}", [*args, *self._settings_args()]).to_json()

    def sync(self, token: str, names: list[str] | None = None) -> dict:
        """Sync sources (all of them when none are named) as a background job, with progress."""
        self.sessions.require(token, "ops")
        return self.start_sync(names or []).to_json()

    def start_sync(self, names: list[str], title: str = "sync"):
        """The sync job itself, for the ops console and the daily sync (ui/daily.py)."""
        return self.jobs.start(f"{title} {', '.join(names) or 'all sources'}"[:80],
                               ["kb", "sync", *(names or ["--all"]), *self._settings_args()])

    def analytics(self, token: str) -> dict:
        self.sessions.require(token, "ops")
        report = analytics(self.bot.log)
        return {**asdict(report), "shares": report.shares(), "thumbs_up_rate": report.thumbs_up_rate}

    def models(self, token: str) -> list[dict]:
        """Every version (the `supportbot models list --json` rows), newest first, with the latest
        `supportbot eval answers` numbers of each under metrics["eval"]."""
        self.sessions.require(token, "ops")
        versions = self.bot.versions
        versions.ensure_base(self.config.model.path)
        evals = load_evals(self.config.home).get("answers", {})
        rows = list(reversed(versions.listing()))
        for row in rows:
            row["metrics"]["eval"] = {k: v for k, v in evals.items() if k.split(":")[0] == row["version"]}
        return rows

    def train(self, token: str, method: str, epochs: float = 1.0, max_steps: int = -1) -> dict:
        """Start a training run in the background; its progress shows in `jobs`."""
        self.sessions.require(token, "ops")
        if method not in TRAINABLE:
            raise ServiceError(f"method {method!r}: expected one of {', '.join(TRAINABLE)}")
        if not (math.isfinite(epochs) and 0 < epochs <= MAX_EPOCHS):
            raise ServiceError(f"epochs {epochs}: expected a number above 0 and at most {MAX_EPOCHS}")
        if not (max_steps == -1 or 1 <= max_steps <= MAX_STEPS):
            raise ServiceError(f"max steps {max_steps}: expected -1 (train by epochs) or 1 to {MAX_STEPS:,}")
        args = ["train", method, "--epochs", str(float(epochs)), "--max-steps", str(int(max_steps)), *self._settings_args()]
        return self.jobs.start(f"train {method}", args).to_json()

    def promote(self, token: str, version: str, force: bool = False) -> dict:
        """Run the evaluation gate in the background; the app serves the version once it passes."""
        self.sessions.require(token, "ops")
        version = self.bot.versions.resolve(version.strip() or "latest")
        args = ["models", "promote", version, *(["--force"] if force else []), *self._settings_args()]
        return self.jobs.start(f"promote {version}", args).to_json()

    def rollback(self, token: str, role: str = "lm") -> dict:
        """Serve the previous version of `role` (lm, reward or retriever)."""
        self.sessions.require(token, "ops")
        if role not in ROLES:
            raise ServiceError(f"role {role!r}: expected one of {', '.join(ROLES)}")
        return {"serving": rollback(self.config, role) or "the configured retriever", "role": role}

    # --- what the log suggests (training/suggestions.py) -----------------------------------------------

    def suggestions(self, token: str, kind: str = "", status: str = "open") -> list[dict]:
        """The suggestions of `status` (all: ""), refreshed from the log first: newest, most asked first."""
        self.sessions.require(token, "ops")
        refresh(self.bot, self.config.learn)
        return self.bot.log.suggestions(status or None, kind or None)

    def decide(self, token: str, suggestion_id: int, decision: str, answer: str | None = None,
               questions: list[str] | None = None) -> dict:
        """Accept (with the answer and wordings as ops edited them), reject or revert one suggestion."""
        session = self.sessions.require(token, "ops")
        try:
            if decision == "accept":
                return accept(self.bot, int(suggestion_id), session.user, answer, questions)
            if decision in ("reject", "revert"):
                return (reject if decision == "reject" else revert)(self.bot, int(suggestion_id), session.user)
        except SuggestionError as err:
            raise ServiceError(str(err)) from None
        raise ServiceError(f"decision {decision!r}: expected accept, reject or revert")

    def learn(self, token: str, train: bool = True) -> dict:
        """`supportbot learn` in the background; its progress shows in `jobs`."""
        self.sessions.require(token, "ops")
        return self.start_learning(train).to_json()

    def start_learning(self, train: bool = True, title: str = "learn"):
        """The learning job itself, for the ops console and the daily run (ui/daily.py)."""
        return self.jobs.start(title if train else f"{title} (knowledge only)", ["learn", *([] if train else ["--no-train"]), *self._settings_args()])

    def job_list(self, token: str) -> list[dict]:
        self.sessions.require(token, "ops")
        return [job.to_json() for job in self.jobs.list()]

    def webhook_deliveries(self, token: str) -> list[dict]:
        """The latest webhook deliveries, newest first: id, event, url, status (pending, delivered, failed),
        attempts, last_error, created, delivered."""
        self.sessions.require(token, "ops")
        return self.webhooks.recent()

    def widget_snippet(self, token: str, base_url: str = "") -> str:
        """The line that puts the chat widget on a site's pages (ui/widget_api.py), for pages of the origins in
        serve.allowed_origins. `base_url` is the bot's address as browsers reach it (the console's own); by default
        the configured host and port."""
        self.sessions.require(token, "ops")
        base = (base_url or f"http://{self.config.serve.host}:{self.config.serve.port}").strip().rstrip("/")
        if not is_url(base) or any(c in base for c in "\"'<> "):
            raise ServiceError(f"{base[:100]!r}: give the bot's address, starting with http:// or https://")
        return f'<script src="{base}/widget.js" defer></script>'

    def set_allowed_origins(self, token: str, origins: list[str]) -> list[str]:
        """The sites that may carry the chat widget, saved to config.toml; the widget's routes read them on each
        request, so a change applies at once."""
        self.sessions.require(token, "ops")
        cleaned = [o.strip() for o in origins if o.strip()]
        try:
            parse_origins(cleaned)
        except ConfigError as err:
            raise ServiceError(str(err)) from None
        save_settings(self.config, {"serve.allowed_origins": cleaned})
        return cleaned

    def gate_report(self, token: str, version: str) -> dict:
        """What the gate found for a version, as Markdown with the plot's path ("" when there is none): the latest
        comparison it took part in, as the candidate or as the serving version (the gate keeps a comparison in
        the candidate's folder only), else the scores on its card (a version that came with them, such as the
        committed demo adapter)."""
        self.sessions.require(token, "ops")
        versions = self.bot.versions
        version = versions.resolve(version.strip() or "latest")
        found = _latest_gate_report(versions, version)
        if found:
            path, report = found
            return {"markdown": _comparison_markdown(version, report), "plot": str(path.with_name("report.png"))}
        scores = versions.card(version).metrics.get("gate")
        if scores:
            return {"markdown": _scores_markdown(version, scores), "plot": ""}
        raise ServiceError(f"version {version!r} has not been through the gate yet")

    def _settings_args(self) -> list[str]:
        """The app's own overrides (`--set` flags, the knowledge base) passed on to a job it starts."""
        return ["--kb", self.config.kb, *[f"--set={item}" for item in self.overrides]]


def _why(reason: str, handoff_reason: str) -> str:
    """Why a conversation waits, in words: the queue's reason and, for a hand-off, what caused it."""
    words = QUEUE_REASONS.get(reason, reason)
    return f"{words}: {REASONS[handoff_reason]}" if handoff_reason in REASONS else words


def _latest_gate_report(versions: Versions, version: str) -> tuple[Path, dict] | None:
    """The newest gate report (report.json's path and content) in which `version` was the candidate or the serving one."""
    found = []
    for path in versions.root.glob("*/gate/report.json"):
        report = json.loads(path.read_text(encoding="utf-8"))
        if version in (report.get("candidate"), report.get("serving")):
            found.append((path.stat().st_mtime, path, report))
    return max(found, key=lambda f: f[0])[1:] if found else None


def _comparison_markdown(version: str, report: dict) -> str:
    role = "candidate" if report["candidate"] == version else "serving version"
    verdict = "promoted" if report["promoted"] else "refused"
    forced = " (forced past a regression)" if report["forced"] and not report["passed"] else ""
    lines = [f"### Gate: {report['candidate']} against {report['serving'] or 'nothing serving'}",
             f"{version} was the {role}. The candidate was **{verdict}**{forced}; {report['questions']} held-out items.", "",
             f"| metric | serving ({report['serving'] or '-'}) | candidate ({report['candidate']}) | change | within tolerance |",
             "|---|---|---|---|---|"]
    lines += [f"| {_metric(r['metric'])} | {_number(r['serving'])} | {_number(r['candidate'])} | {_number(r['delta'])} | "
              f"{'yes' if r['ok'] else '**no**'} |" for r in report["rows"]]
    return "\n".join(lines)


def _scores_markdown(version: str, scores: dict) -> str:
    when = f" on {scores['at'][:10]}" if scores.get("at") else ""
    items = f", {scores['questions']} held-out items" if scores.get("questions") else ""
    lines = [f"### Gate scores of {version}",
             f"Measured{when}{items}. No comparison of it is kept in this home: it came with these scores.", "",
             "| metric | score |", "|---|---|"]
    lines += [f"| {_metric(name)} | {_number(value)} |" for name, value in scores.items() if name in GATE_METRICS]
    return "\n".join(lines)


def _metric(name: str) -> str:
    return GATE_METRICS.get(name, name.replace("_", " "))


def _number(value) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


# Errors a person can act on: shown as a one-line message, never a stack trace.
USER_ERRORS = (AuthError, ServiceError, LogError, IngestError, JobError, VersionError, RateLimited)
# What a person is told when the shared database cannot be reached (the detail goes to the server's log).
UNAVAILABLE = "the service is briefly unavailable (its database cannot be reached); please try again in a moment"
