"""Everything the web app and its API do, as plain typed methods: the Gradio handlers, the `gradio_client`
API and the OpenAI-compatible route all call these, so each behaviour has one path.

Methods for agents and ops take a session token first and check its role before anything else.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

from chatbot import Config, LogError, SupportBot
from chatbot.analytics import analytics
from chatbot.evaluate import load_evals
from chatbot.policy import clean_message
from chatbot.versions import Versions, VersionError, is_plain_name
from training import METHODS, rollback
from chatbot.review import Suggestion, close, review_queue, send_reply, suggestion
from retrieval import IngestError

from .auth import AuthError, Sessions, parse_accounts, uses_demo_password
from .jobs import JobError, Jobs
from .ratelimit import Caller, RateLimited, RateLimiter

ACTIONS = ("approved", "edited", "rejected")
TRAINABLE = (*METHODS, "retriever")  # what `supportbot train` runs: the LM methods and the embedder
ROLES = ("lm", "reward", "retriever")  # what serves, each with its own pointer
MAX_UPLOAD_BYTES = 20_000_000  # per knowledge-base file uploaded through the app (the command line has no limit)
MAX_EPOCHS = 100
MAX_STEPS = 1_000_000


class ServiceError(ValueError):
    """A request refused with a message for the person who made it."""


class SupportService:
    def __init__(self, config: Config, bot: SupportBot | None = None, overrides: list[str] | None = None,
                 limiter: RateLimiter | None = None):
        accounts = parse_accounts(config.serve.users)
        if config.serve.production and uses_demo_password(accounts):
            raise ServiceError("production mode refuses to start with a default password: add accounts with `supportbot user add`")
        self.config = config
        self.bot = bot or SupportBot(config)
        self.sessions = Sessions(accounts, config.serve.session_minutes)
        self.jobs = Jobs(config.home)
        self.overrides = list(overrides or [])  # the `--set` flags this app was started with
        self.limiter = limiter or RateLimiter(config.limits)

    def warm_up(self) -> None:
        """Load the embedder and the model, and fit the out-of-scope guard, before the first customer waits for them."""
        self.bot.kb.search("warm up")
        self.bot.scope.model(self.bot.kb)
        self.bot.backend.count_tokens("warm up")

    # --- customers (no login) ---------------------------------------------------------------------

    def chat(self, message: str, conversation_id: str = "", caller: Caller | None = None) -> Iterator[dict]:
        """Stream a reply: dicts with the text so far; the last one also has the full reply. An unknown
        conversation id (a browser remembering a conversation this server does not have) starts anew."""
        self.limiter.take("chat", caller)
        if conversation_id and not self.bot.log.conversation(conversation_id):
            conversation_id = ""
        response = self.bot.respond(message, conversation_id or None, channel="web")
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
        return self.bot.respond(messages[-1]["content"], conversation_id, channel="api",
                                max_new_tokens=max_tokens, temperature=temperature)

    def history(self, conversation_id: str) -> list[dict]:
        """The conversation as the customer sees it (roles customer, bot, agent)."""
        if not conversation_id or not self.bot.log.conversation(conversation_id):
            return []
        return [
            {"id": m.id, "role": m.role, "text": m.text, "sources": m.sources, "handed_off": m.handed_off}
            for m in self.bot.log.history(conversation_id) if m.text
        ]

    def rate(self, message_id: int, thumbs_up: bool, comment: str = "") -> dict:
        feedback_id = self.bot.log.add_feedback(int(message_id), bool(thumbs_up), comment or "")
        return {"feedback_id": feedback_id}

    def talk_to_person(self, conversation_id: str) -> dict:
        if not conversation_id or not self.bot.log.conversation(conversation_id):
            conversation_id = self.bot.log.start("web")
        reply = self.bot.hand_off(conversation_id)
        return {"conversation_id": conversation_id, "text": reply.text, "message_id": reply.message_id}

    # --- sign-in ----------------------------------------------------------------------------------

    def login(self, user: str, password: str, caller: Caller | None = None) -> dict:
        """A staff session; failed attempts count against the caller's sign-in limit."""
        self.limiter.take("login", caller)
        token, session = self.sessions.login(user, password)
        self.limiter.give_back("login", caller)
        return {"token": token, "user": session.user, "role": session.role}

    # --- agents -----------------------------------------------------------------------------------

    def queue(self, token: str) -> dict:
        self.sessions.require(token, "agent")
        items = review_queue(self.bot, self.config.serve.copilot)
        counts = {reason: sum(i.reason == reason for i in items) for reason in ("handed_off", "disliked", "low_confidence", "copilot")}
        return {"items": [asdict(i) for i in items], "counts": counts}

    def review(self, token: str, conversation_id: str) -> dict:
        """The conversation and the bot's suggested reply, for an agent."""
        self.sessions.require(token, "agent")
        if not self.bot.log.conversation(conversation_id):
            raise ServiceError(f"no conversation {conversation_id!r}")
        return {"history": self.history(conversation_id), "suggestion": asdict(suggestion(self.bot, conversation_id)),
                "status": self.bot.log.conversation(conversation_id)["status"]}

    def send(self, token: str, conversation_id: str, action: str, text: str, draft: str,
             draft_message_id: int | None = None) -> dict:
        """Send as is ("approved"), edited ("edited") or the agent's own reply ("rejected")."""
        session = self.sessions.require(token, "agent")
        if action not in ACTIONS:
            raise ServiceError(f"action {action!r}: expected one of {', '.join(ACTIONS)}")
        suggested = Suggestion(draft, int(draft_message_id) if draft_message_id else None)
        action_id = send_reply(self.bot, conversation_id, suggested, text, action, session.user)
        return {"action_id": action_id}

    def close(self, token: str, conversation_id: str) -> dict:
        self.sessions.require(token, "agent")
        close(self.bot, conversation_id)
        return {"status": "resolved"}

    # --- ops --------------------------------------------------------------------------------------

    def kb_upload(self, token: str, paths: list[str], progress: Callable[[str, int, int], None] | None = None) -> dict:
        """Ingest uploaded files; a refusal names the file as it was uploaded, not the server's copy of it."""
        self.sessions.require(token, "ops")
        try:
            report = self.bot.kb.add([Path(p) for p in paths], progress=progress)
        except IngestError as err:
            message = str(err)
            for path in map(Path, paths):
                message = message.replace(str(path), path.name)
            raise IngestError(message) from None
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

    def kb_remove(self, token: str, entry_id: str) -> dict:
        self.sessions.require(token, "ops")
        if not self.bot.kb.remove(entry_id.strip()):
            raise ServiceError(f"no entry with id {entry_id!r}")
        return {"removed": entry_id}

    def analytics(self, token: str) -> dict:
        self.sessions.require(token, "ops")
        report = analytics(self.bot.log)
        return {**asdict(report), "shares": report.shares(), "thumbs_up_rate": report.thumbs_up_rate}

    def models(self, token: str) -> list[dict]:
        """Every version (the `supportbot models list --json` rows), newest first, with the latest
        `supportbot eval answers` numbers of each under metrics["eval"]."""
        self.sessions.require(token, "ops")
        versions = Versions(self.config.home)
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
        version = Versions(self.config.home).resolve(version.strip() or "latest")
        args = ["models", "promote", version, *(["--force"] if force else []), *self._settings_args()]
        return self.jobs.start(f"promote {version}", args).to_json()

    def rollback(self, token: str, role: str = "lm") -> dict:
        """Serve the previous version of `role` (lm, reward or retriever)."""
        self.sessions.require(token, "ops")
        if role not in ROLES:
            raise ServiceError(f"role {role!r}: expected one of {', '.join(ROLES)}")
        return {"serving": rollback(self.config, role) or "the configured retriever", "role": role}

    def job_list(self, token: str) -> list[dict]:
        self.sessions.require(token, "ops")
        return [job.to_json() for job in self.jobs.list()]

    def gate_report(self, token: str, version: str) -> dict:
        """The last gate comparison of a version: Markdown, and the plot's path."""
        self.sessions.require(token, "ops")
        folder = Versions(self.config.home).folder(version.strip()) / "gate"
        if not (folder / "report.md").exists():
            raise ServiceError(f"version {version!r} has not been through the gate yet")
        return {"markdown": (folder / "report.md").read_text(encoding="utf-8"), "plot": str(folder / "report.png")}

    def _settings_args(self) -> list[str]:
        """The app's own overrides (`--set` flags, the knowledge base) passed on to a job it starts."""
        return ["--kb", self.config.kb, *[f"--set={item}" for item in self.overrides]]


# Errors a person can act on: shown as a one-line message, never a stack trace.
USER_ERRORS = (AuthError, ServiceError, LogError, IngestError, JobError, VersionError, RateLimited)
