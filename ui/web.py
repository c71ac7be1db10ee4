"""What the Gradio pages share: refusals shown as one line, API arguments checked, the caller's identity,
chat rendering, and the named API (`gr.api`) that `gradio_client` calls.

The customer page (`ui/customer.py`) is served at `/`, the staff pages (`ui/staff.py`) at `/staff`. Each event
handler does one thing: call a SupportService method and render its result, so the UI and the API share one path.
"""

from __future__ import annotations

import functools
import inspect
import logging
import types
import typing
from datetime import datetime, timezone

import gradio as gr

from retrieval.database import DatabaseError

from .ratelimit import Caller
from .service import UNAVAILABLE, USER_ERRORS, ServiceError, SupportService


def shown(fn):
    """Turn a refusal a person can act on into a Gradio error (a one-line toast / API error), and a database that
    cannot be reached into one that says so without its address. Generator handlers stay generators, so Gradio
    still streams them."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def stream(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except USER_ERRORS as err:
                raise gr.Error(str(err)) from None
            except DatabaseError as err:
                raise _unavailable(err) from None

        return stream

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as err:
            raise gr.Error(str(err)) from None
        except DatabaseError as err:
            raise _unavailable(err) from None

    return call


def _unavailable(err: DatabaseError) -> gr.Error:
    logging.getLogger("supportbot").error("%s", err)
    return gr.Error(UNAVAILABLE)


def checked(fn):
    """Refuse API arguments of the wrong type before `fn` runs: any client can send any JSON, and a number
    for a string would otherwise fail deep inside with a message that names nothing the caller sent."""
    hints = typing.get_type_hints(fn)
    signature = inspect.signature(fn)

    def check(args, kwargs) -> None:
        for name, value in signature.bind(*args, **kwargs).arguments.items():
            if name in hints:
                _check_argument(name, value, hints[name])

    if inspect.isgeneratorfunction(fn):  # stays a generator function, so that Gradio still streams it

        @functools.wraps(fn)
        def stream(*args, **kwargs):
            check(args, kwargs)
            yield from fn(*args, **kwargs)

        return stream

    @functools.wraps(fn)
    def call(*args, **kwargs):
        check(args, kwargs)
        return fn(*args, **kwargs)

    return call


_INT64 = 2**63
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", type(None): "null"}


def _check_argument(name: str, value, expected) -> None:
    options = typing.get_args(expected) if typing.get_origin(expected) in (typing.Union, types.UnionType) else (expected,)
    if not any(_matches(value, kind) for kind in options):
        wanted = " or ".join(_TYPE_NAMES.get(kind, getattr(kind, "__name__", str(kind))) for kind in options)
        raise ServiceError(f"'{name}' must be {wanted}, got {type(value).__name__}")
    if isinstance(value, int) and not isinstance(value, bool) and not -_INT64 <= value < _INT64:
        raise ServiceError(f"'{name}' is out of range")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ServiceError(f"'{name}' is not valid text (character {err.start + 1} is half of a surrogate pair)") from None


def _matches(value, kind) -> bool:
    """isinstance, as JSON means it: a bool is not a number, an integer is a float."""
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typing.get_origin(kind) or kind)


def caller_of(request: gr.Request) -> Caller:
    """The rate-limited identity of a Gradio call: the client's address and its browser session."""
    return Caller(request.client.host if request.client else "", request.session_hash or "")


# --- rendering ------------------------------------------------------------------------------------


def sources_markdown(sources: list[dict]) -> str:
    """The passages an answer cites, as links under it, numbered as the answer's [n] markers."""
    links = [f"[{s['title']}]({s['url']})" if s.get("url") else s["title"] for s in sources]
    numbered = [f"\\[{s['n']}\\] {link}" if s.get("n") else link for s, link in zip(sources, links)]
    label = "Source" if len(numbered) == 1 else "Sources"
    return f"\n\n*{label}: {'; '.join(numbered)}*" if numbered else ""


def render_chat(history: list[dict]) -> list[dict]:
    """Log messages as chat bubbles: the customer on the right, bot and agents on the left, each message its own
    bubble. An agent's reply is headed by a label (class agent-name: the customer page styles it and offers no
    thumbs on it, since only the bot's replies are rated)."""
    bubbles = []
    for m in history:
        if m["role"] == "customer":
            bubbles.append({"role": "user", "content": m["text"]})
        elif m["role"] == "bot":
            shown_sources = [] if m["handed_off"] else m["sources"]  # a hand-off cites nothing to the customer
            bubbles.append({"role": "assistant", "content": m["text"] + sources_markdown(shown_sources)})
        else:
            bubbles.append({"role": "assistant", "content": f'<span class="agent-name">Support agent</span>\n\n{m["text"]}'})
    return bubbles


def api(service: SupportService) -> None:
    """The same service methods, named for `gradio_client` (e.g. client.predict(..., api_name="/queue"))."""

    def chat(message: str, conversation_id: str = "", request: gr.Request = None) -> dict:
        """Ask the bot; streams dicts with the text so far, the last one with the full reply."""
        yield from service.chat(message, conversation_id, caller_of(request))

    def login(user: str, password: str, request: gr.Request) -> dict:
        """Sign in as staff; returns the token the staff functions take first."""
        return service.login(user, password, caller_of(request))

    for fn in (service.history, service.status, service.rate, service.talk_to_person, service.leave_queue, login, service.queue, service.review,
               service.state, service.rate_conversation, service.leave_email,
               service.send, service.close, service.kb_entries, service.kb_remove, service.analytics, service.models,
               service.train, service.promote, service.rollback, service.job_list, service.gate_report, service.suggestions,
               service.decide, service.learn, service.kb_sources, service.add_site, service.sync, service.webhook_deliveries):
        gr.api(shown(checked(fn)), api_name=fn.__name__)
    gr.api(shown(checked(chat)), api_name="chat", concurrency_limit=service.config.serve.concurrency)
    gr.api(shown(checked(service.kb_upload_text)), api_name="kb_upload")


def ago(stamp: str, now: datetime | None = None) -> str:
    """A logged time as people say it ("4 min ago"), not as the log keeps it (UTC, ISO 8601)."""
    if not stamp:
        return ""
    then = datetime.fromisoformat(stamp)
    minutes = int(((now or datetime.now(timezone.utc)) - then).total_seconds() // 60)
    if minutes < 1:
        return "just now"
    if minutes < 60:
        return f"{minutes} min ago"
    if minutes < 24 * 60:
        return f"{minutes // 60} h ago"
    days = minutes // (24 * 60)
    if days < 30:
        return "yesterday" if days == 1 else f"{days} days ago"
    return then.astimezone().strftime("%d %b %Y")
