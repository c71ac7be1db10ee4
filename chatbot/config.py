"""The one configuration object every entry point uses.

Layers, each overriding the one before: the defaults below, then `config.toml` in the home folder, then
`SUPPORTBOT_*` environment variables, then command-line flags. Nested sections are TOML tables
(`[retrieval]`), environment variables `SUPPORTBOT_RETRIEVAL_LEXICAL_WEIGHT`, flags `--set retrieval.lexical_weight=0.2`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from retrieval import RetrievalSettings
from retrieval.crawl import CrawlOptions
from retrieval.database import redacted
from retrieval.store import stored_names

ENV_PREFIX = "SUPPORTBOT_"


class ConfigError(ValueError):
    """A bad setting; the message names where it came from (file, variable or flag)."""


@dataclass
class ModelSettings:
    # A local Hugging Face causal-LM folder; empty means the bundled SmolLM2-135M-Instruct, converted
    # once from its GGUF into home/models/.
    path: str = ""
    adapter: str = ""  # optional LoRA adapter folder applied on top of `path`
    # "llama.cpp" (the served model exported to GGUF, run by llama-cpp-python: several times faster on a
    # CPU), "transformers" (in-process PyTorch), "auto" (llama.cpp when installed, else transformers) or
    # "openai": any OpenAI-compatible server (vLLM, TGI)
    backend: str = "auto"
    gguf_type: str = "q8_0"  # llama.cpp backend: f32, f16, q8_0, q4_1 or q4_0 (README: speed and quality of each)
    openai_url: str = ""  # e.g. http://127.0.0.1:8000/v1
    openai_model: str = ""
    openai_api_key: str = ""
    dtype: str = "float32"
    threads: int = 0  # torch or llama.cpp threads; 0: torch's default, or all cores for llama.cpp
    max_new_tokens: int = 100
    temperature: float = 0.0  # 0 = greedy
    repetition_penalty: float = 1.0  # >1 discourages copying the passages, which grounded answers need
    max_concurrent: int = 8  # generations running at once (= serve.concurrency); more wait their turn
    draft_tokens: int = 5  # llama.cpp, greedy: tokens guessed from the prompt, checked in one step (0 = off; README)
    # llama.cpp: keep each passage's computed state (in memory and in files beside the GGUF) and place it into
    # prompts instead of prefilling it, so that a passage sees only the system prompt: "on", "off", or "auto"
    # (on for a version trained with `train sft --block-attention`; docs/serving.md#passage-cache)
    passage_cache: str = "auto"
    passage_cache_mb: int = 512  # states kept in memory, the least recently used dropped first (files stay)
    # Best-of-n: sample this many replies and send the one the serving reward model scores highest
    # (1 = off; each extra sample costs a full generation, see README).
    best_of: int = 1
    best_of_temperature: float = 0.7


@dataclass
class AnswerSettings:
    company: str = "Tidewell Home & Outdoor"
    tone: str = "friendly, concise and professional"
    rules: list[str] = field(default_factory=lambda: [
        "Answer only with facts from the numbered passages and cite them like [1].",
        "If the passages do not answer the question, say you will pass the conversation to a colleague.",
        "Never ask for passwords or full card numbers.",
        "Never promise refunds, discounts or exceptions that the passages do not state.",
    ])
    passages: int = 4  # retrieved passages put in the prompt
    # A follow-up ("and how much is it?") is searched with its vector pulled this far towards the question it
    # continues (the message keeps weight 1): 0.7 read 0.689 of data/eval/conversations.jsonl's follow-ups
    # right against 0.642 for the joined text, with topic switches as right as asked alone (docs/answering.md).
    follow_up_weight: float = 0.7
    # Any other question after an answer is searched with its vector pulled this far towards the entry the
    # conversation is on (the latest reply's first source), so that "is there a fee" after a question about
    # cancelling Plus reads as that fee; a question naming another topic still finds it. 0.6 took
    # data/eval/conversations.jsonl's follow-ups from 0.705 to 0.777 right with topic switches as right as
    # asked alone (docs/benchmarks.md#conversations-supportbot-eval-conversations). 0 = off.
    on_topic_weight: float = 0.6
    # Such a question that alone would be handed off for low confidence ("what should I do") does not know its
    # topic and leans this far instead: 2.0 took data/eval/conversations.jsonl's follow-ups from 0.777 to 0.793
    # right, topic switches 0.840 -> 0.832 (asked alone: 0.840); on data/train/conversations.jsonl, written apart,
    # follow-ups 0.625 -> 0.633 with nothing lost.
    on_topic_unsure_weight: float = 2.0
    context_tokens: int = 2048  # prompt budget: system + passages + history + question
    # Hand-off: retrieval confidence below this, or a reply whose grounding is below grounding_min.
    handoff_confidence: float = 0.3
    grounding_min: float = 0.5
    # "generate": always the LM; "template": the top entry's curated answer when confident;
    # "auto": template at or above template_confidence for FAQ entries, the LM otherwise.
    mode: str = "auto"
    # Out-of-scope guard: hand off questions a classifier over their vectors puts outside the knowledge base's
    # subject (chit-chat, outside advice) even when retrieval is confident. It lets through all but this share
    # of the knowledge base's own question variants (0 = no guard; 0.003 chosen on data/eval, see README).
    scope_false_alarms: float = 0.003
    out_of_scope_file: str = ""  # its outside examples, one per line; empty = the bundled list
    template_confidence: float = 0.3  # = handoff_confidence: curated answers won in every band (README)
    # Outside the knowledge base's subject (the guard above): false = say what the bot can help with and stay
    # out of the agents' queue (the customer can still ask for a person); true = hand off.
    out_of_scope_handoff: bool = False
    small_talk: bool = True  # greetings, thanks and questions about the bot get a short reply in character
    # While a person has the conversation, a new question is answered (marked as such, the conversation stays
    # with the person) when retrieval is at least this confident; 0 = only acknowledge every message.
    answer_while_waiting: float = 0.6
    max_message_chars: int = 2000  # longer customer messages are cut (and the customer told)
    output_filter: list[str] = field(default_factory=list)  # regexes a reply must not match
    redact: list[str] = field(default_factory=lambda: ["email", "phone", "card", "iban"])  # [] = off


@dataclass
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 7860
    # More accounts as "name:role:password-hash" (role agent or ops), e.g. provisioned through the environment;
    # `supportbot user add` keeps accounts in the database instead, where every replica finds them. With no
    # account either way, the demo accounts agent/agent and ops/ops exist, which production mode refuses.
    users: list[str] = field(default_factory=list)
    production: bool = False
    session_minutes: int = 480
    copilot: bool = False  # agents review every bot reply, not only hand-offs and low confidence
    review_confidence: float = 0.6  # bot replies less confident than this wait in the agents' queue
    concurrency: int = 8  # customers streaming at once
    poll_seconds: float = 2.0  # how often an open chat page looks for agents' replies
    # The customer page's logo: an image file (png, jpg, gif, webp or svg, sent inline with the page, so no other
    # file is served) or an http(s) URL; empty = the company's initial on a badge.
    logo: str = ""
    greeting: str = ""  # the customer page's welcome text (Markdown); empty = one that names answer.company
    # Questions offered as one-click chips on the customer page's empty chat; empty = the ones the bot answered most
    # often lately (none at first).
    suggested_questions: list[str] = field(default_factory=list)
    sync_daily_at: str = ""  # "HH:MM" (the server's local time): `supportbot serve` syncs every source once a day; "" = never
    # Sites whose pages may embed the chat widget, as origins (https://shop.example.com); empty = the bot's own only.
    allowed_origins: list[str] = field(default_factory=list)
    # Receivers of conversation events, one string each: "URL [events=handoff+agent_reply+closed+rated] secret=SECRET" (or secret=env:VAR); see docs/operations.md
    webhooks: list[str] = field(default_factory=list)
    webhook_timeout: float = 5.0  # seconds a webhook receiver has to answer one delivery
    webhook_backoff: list[float] = field(default_factory=lambda: [1.0, 4.0, 16.0, 64.0])  # seconds before each retry of a delivery
    # The OpenAI route refuses calls without a valid API key (`supportbot apikey add`); false: keyless calls are
    # served under the per-address limits.
    require_api_key: bool = False
    # A customer-page or widget conversation with no customer message for this many minutes, not waiting for a person,
    # is closed as resolved by the bot (the chat then asks for a 1-5 rating); 0 = never.
    idle_close_minutes: int = 0
    # When people answer hand-offs, in serve.time_zone: "Mon-Fri 09:00-17:30", several allowed (["Mon-Fri 09:00-17:30",
    # "Sat 10:00-14:00"]); outside them a hand-off says when the team is back and takes an email address; empty = always open
    business_hours: list[str] = field(default_factory=list)
    time_zone: str = "UTC"  # the IANA time zone of serve.business_hours and serve.holidays, e.g. Europe/London
    holidays: list[str] = field(default_factory=list)  # days closed all day, as YYYY-MM-DD


@dataclass
class RateLimits:
    """How many events each session and each client address may cause per window (ui/ratelimit.py)."""

    login_failures_per_session: int = 5
    login_failures_per_address: int = 20
    login_window_s: float = 300.0
    chat_per_session: int = 20
    chat_per_address: int = 120
    chat_window_s: float = 60.0
    # A caller of the OpenAI route with an API key (`supportbot apikey add`) is counted by its key instead of its
    # address: this many messages per minute, unless the key was made with its own --limit.
    api_key_per_minute: int = 300


@dataclass
class GateSettings:
    """The evaluation gate every promotion passes: candidate and serving model on the same held-out questions."""

    # question,answer CSV; empty = data/eval/answers.csv of the project when present. Held-out logged
    # conversations (agent-approved replies) are always added.
    eval_file: str = ""
    questions: int = 48  # answerable and as many out-of-scope questions per run, spread evenly over the file (0 = all)
    max_new_tokens: int = 80
    tolerance: float = 0.02  # how far a quality metric may fall (absolute) before promotion is refused
    latency_tolerance: float = 0.5  # how much slower (relative, p50) a candidate may be
    heldout_share: float = 0.2  # share of logged conversations kept out of training for evaluation
    # Retriever promotions: a query,expected_id CSV; empty = data/eval/retrieval.csv of the project when the
    # knowledge base holds its ids. Held-out question variants and logged questions are always added.
    retrieval_file: str = ""


@dataclass
class LearnSettings:
    """What the learning loop proposes from the log (training/suggestions.py) and what it applies unreviewed."""

    # Suggestion kinds applied without review: new_entry, variant, revision (a flag only asks for a look).
    auto_accept: list[str] = field(default_factory=lambda: ["variant"])
    # Handed-off questions at least this similar (cosine of their vectors) ask the same thing: one suggestion.
    group_similarity: float = 0.7
    # A resolved wording this close to one of its entry's variants adds nothing.
    variant_similarity: float = 0.9
    min_revisions: int = 2  # agents' rewrites of an entry's answer before a new answer is proposed
    # An agent's edit of a curated answer rewrites it; an agent's own reply in its place does only when at least
    # this similar to it. A less similar one answers what the entry did not (the bot picked the wrong entry, often
    # on the same subject): a new entry. 0.6 turned 19 of 100 such replies into revisions of the wrong entry
    # (bench/feedback_loop.py).
    revision_similarity: float = 0.85
    # An entry is flagged when at least flag_min_bad of its replies were rated down or rejected, at a rate at
    # least flag_ratio times that of all replies.
    flag_min_bad: int = 3
    flag_ratio: float = 3.0
    # `supportbot learn` trains the LM and the retriever when agents wrote at least this many approved or edited
    # replies since its last run (each behind its gate); fewer, and it only refreshes the suggestions.
    min_new_replies: int = 20
    # What `learn` trains: "lm" (SFT on agents' replies; tens of minutes on a CPU) and "retriever" (minutes).
    roles: list[str] = field(default_factory=lambda: ["lm", "retriever"])
    epochs: float = 1.0  # SFT epochs over the log's examples
    max_steps: int = -1  # caps each training run of `learn` (>0; quick trials)
    daily_at: str = ""  # "HH:MM" (the server's local time): `supportbot serve` runs `learn` once a day; "" = never
    # `learn` refits answer.handoff_confidence from agents' actions and ratings (training/thresholds.py) so that at
    # least this share of hand-offs needed a person, once there are min_outcomes labelled decisions.
    handoff_precision: float = 0.7
    min_outcomes: int = 40
    # Off: the refitted threshold is reported, not written. On bench/feedback_loop.py it moved 0.3 -> 0.651 and
    # fewer week-2 questions were resolved (docs/learning-loop.md): ratings of imperfect answers push it up.
    apply_handoff_refit: bool = False


@dataclass
class StorageSettings:
    """Where the shared state lives: the home's SQLite files (the embedded default), or a PostgreSQL database that
    several app replicas share (docs/operations.md#running-on-several-machines). The database holds the conversation
    log, staff sessions and accounts, rate-limit windows, job leases, API keys, webhook deliveries, the model versions'
    cards and the serving pointer, and (on PostgreSQL) the knowledge bases."""

    database_url: str = ""  # "" = SQLite under the home; "postgresql://user:password@host:5432/name"
    # Where the model versions' files and converted models live; "" = the home. Replicas share one folder (a shared
    # file system) and the database: a version trained or promoted through one is served by all.
    models_dir: str = ""


@dataclass
class Config:
    home: Path = Path()
    kb: str = "default"  # which knowledge base (a folder under home/kb/)
    retrieval: RetrievalSettings = field(default_factory=RetrievalSettings)
    crawl: CrawlOptions = field(default_factory=CrawlOptions)  # how `kb add URL` and `kb sync` read a site
    model: ModelSettings = field(default_factory=ModelSettings)
    answer: AnswerSettings = field(default_factory=AnswerSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
    gate: GateSettings = field(default_factory=GateSettings)
    limits: RateLimits = field(default_factory=RateLimits)
    learn: LearnSettings = field(default_factory=LearnSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)

    def kb_dir(self, name: str | None = None) -> Path:
        name = name or self.kb
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name) or ".." in name:
            raise ConfigError(f"knowledge base name {name!r}: use letters, digits, '-', '_' or '.'")
        return self.home / "kb" / name

    def kb_names(self) -> list[str]:
        """The home's knowledge bases: those in the shared database when one is set, else the folders with a store."""
        return stored_names(self.storage.database_url) if self.storage.database_url else self.local_kb_names()

    def local_kb_names(self) -> list[str]:
        """The knowledge bases kept in SQLite files under the home."""
        return sorted(p.parent.name for p in (self.home / "kb").glob("*/kb.sqlite"))

    @property
    def config_file(self) -> Path:
        return self.home / "config.toml"

    @property
    def log_file(self) -> Path:
        return self.home / "conversations.sqlite"

    @property
    def log_database(self) -> Path | str:
        """The conversation log's database: the PostgreSQL URL when one is set, else the home's SQLite file."""
        return self.storage.database_url or self.log_file

    @property
    def models_root(self) -> Path:
        """The folder of model versions' files (versions/) and converted models (models/): storage.models_dir when
        set (shared by replicas), else the home."""
        return Path(self.storage.models_dir).expanduser() if self.storage.models_dir else self.home

    @property
    def models_dir(self) -> Path:
        return self.models_root / "models"


def default_home() -> Path:
    """$XDG_DATA_HOME/supportbot, else ~/.local/share/supportbot."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "supportbot"


def load_config(home: str | Path | None = None, overrides: list[str] | None = None, env: dict[str, str] | None = None) -> Config:
    """Build the config: `home` from the --home flag, else $SUPPORTBOT_HOME, else the default."""
    env = os.environ if env is None else env
    config = Config(home=Path(home or env.get(ENV_PREFIX + "HOME") or default_home()).expanduser())
    if config.config_file.exists():
        try:
            table = tomllib.loads(config.config_file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{config.config_file}: {err}") from None
        _apply_table(config, table, str(config.config_file))
    for name, value in sorted(env.items()):
        if name.startswith(ENV_PREFIX) and name != ENV_PREFIX + "HOME":
            _apply_env(config, name, value)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. retrieval.lexical_weight=0.2")
        _set(config, key.strip().split("."), value.strip(), f"--set {item}")
    return config


def save_settings(config: Config, updates: dict[str, object]) -> None:
    """Merge dotted `updates` into the home's config.toml (atomically) and into `config`."""
    table = tomllib.loads(config.config_file.read_text(encoding="utf-8")) if config.config_file.exists() else {}
    for dotted, value in updates.items():
        *sections, key = dotted.split(".")
        node = table
        for section in sections:
            node = node.setdefault(section, {})
        node[key] = value
        _set(config, dotted.split("."), value, "save_settings")
    config.home.mkdir(parents=True, exist_ok=True)
    tmp = config.config_file.with_suffix(".toml.tmp")
    tmp.write_text(_to_toml(table), encoding="utf-8")
    os.replace(tmp, config.config_file)


def as_dict(config: Config) -> dict:
    """The settings as they may be printed: secrets (the database password, the OpenAI key) hidden."""
    out = dataclasses.asdict(config)
    out["home"] = str(config.home)
    out["storage"]["database_url"] = redacted(config.storage.database_url) if config.storage.database_url else ""
    out["model"]["openai_api_key"] = "***" if config.model.openai_api_key else ""
    return out


def _apply_table(target: object, table: dict, where: str, prefix: str = "") -> None:
    for key, value in table.items():
        if isinstance(value, dict):
            section = getattr(target, key, None)
            if not dataclasses.is_dataclass(section):
                raise ConfigError(f"{where}: unknown section [{prefix}{key}]")
            _apply_table(section, value, where, f"{prefix}{key}.")
        else:
            _set(target, [key], value, f"{where}: {prefix}{key}")


def _apply_env(config: Config, name: str, value: str) -> None:
    """SUPPORTBOT_KB or SUPPORTBOT_<SECTION>_<KEY>; unknown variables are refused, not ignored."""
    rest = name[len(ENV_PREFIX):].lower()
    for f in dataclasses.fields(config):
        if rest == f.name:
            return _set(config, [f.name], value, name)
        if dataclasses.is_dataclass(getattr(config, f.name)) and rest.startswith(f.name + "_"):
            return _set(config, [f.name, rest[len(f.name) + 1:]], value, name)
    raise ConfigError(f"{name}: unknown setting")


def _set(target: object, path: list[str], value: object, where: str) -> None:
    for section in path[:-1]:
        target = getattr(target, section, None)
        if not dataclasses.is_dataclass(target):
            raise ConfigError(f"{where}: unknown section '{section}'")
    key = path[-1]
    hints = typing.get_type_hints(type(target))
    if key not in hints or dataclasses.is_dataclass(getattr(target, key)):
        raise ConfigError(f"{where}: unknown setting '{'.'.join(path)}'")
    setattr(target, key, _coerce(value, hints[key], where))


def _coerce(value: object, kind: type, where: str) -> object:
    origin = typing.get_origin(kind)
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                return value.lower() in ("1", "true", "yes", "on")
            return bool(value)
        if kind in (int, float, str):
            if kind is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return kind(value)
        if kind is Path:
            return Path(str(value)).expanduser()
        if origin is list:
            (item,) = typing.get_args(kind)
            items = json.loads(value) if isinstance(value, str) and value.startswith("[") else value
            items = items.split(",") if isinstance(items, str) else items
            return [_coerce(v, item, where) for v in items]
    except (ValueError, TypeError, json.JSONDecodeError):
        raise ConfigError(f"{where}: expected {getattr(kind, '__name__', kind)}, got {value!r}") from None
    return value


def _to_toml(table: dict, prefix: str = "") -> str:
    scalars = [f"{k} = {json.dumps(v)}" for k, v in table.items() if not isinstance(v, dict)]
    out = "\n".join(scalars) + ("\n" if scalars else "")
    for key, value in table.items():
        if isinstance(value, dict):
            out += f"\n[{prefix}{key}]\n" + _to_toml(value, f"{prefix}{key}.")
    return out
