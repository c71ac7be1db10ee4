"""The chat widget that any site embeds with one line (docs/serving.md#the-chat-widget):

    <script src="https://BOT/widget.js" defer></script>

`GET /widget.js` serves ui/static/widget.js (plain JavaScript, no build step); the widget talks to the small JSON and
server-sent-events API under /api/widget/ added here. Each route calls the SupportService method the customer page
calls (one path per behaviour) and answers only pages from the bot's own origin or one of `serve.allowed_origins`:
a page from another origin gets a 403 without CORS headers, so its browser hands it nothing.

    GET  /api/widget/config                           company, greeting, suggested questions, poll interval
    GET  /api/widget/conversation?conversation_id=ID  the conversation as the customer sees it, and its status
    POST /api/widget/chat            {message, conversation_id, visitor}    text/event-stream of the answer
    POST /api/widget/rate            {conversation_id, message_id, thumbs_up, comment}
    POST /api/widget/talk_to_person  {conversation_id}
    POST /api/widget/leave_queue     {conversation_id}
    POST /api/widget/csat            {conversation_id, score, comment}      the 1-5 rating of a closed conversation
    POST /api/widget/email           {conversation_id, email}               an address for an out-of-hours answer
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse


from .openai_api import RequestError, read_json
from .origins import parse_origins
from .ratelimit import Caller, RateLimited
from .service import USER_ERRORS, SupportService

WIDGET_JS = Path(__file__).parent / "static" / "widget.js"
PREFIX = "/api/widget"
MAX_BODY_BYTES = 64_000  # a message is cut at answer.max_message_chars anyway
MAX_ID_CHARS = 64  # conversation and visitor ids (the log's are 32 hex characters)
STREAM_INTERVAL = 0.05  # seconds between streamed drafts: each carries the whole text so far
REFUSED = "this site may not use the chat: its origin is not in serve.allowed_origins"

Handler = Callable[[Request], Awaitable[Response]]


def allowed_origin(request: Request, origins: frozenset[str]) -> str | None:
    """The request's Origin when the bot may answer it ("" for a request without one: not a cross-site browser
    call), None when its page's origin is neither the bot's own nor a listed one."""
    origin = request.headers.get("origin")
    if origin is None:
        return ""
    value = origin.lower().rstrip("/")
    if value in origins or "*" in origins:
        return origin
    own = request.headers.get("host", "").lower()
    return origin if own and value != "null" and urlsplit(value).netloc == own else None


def add_widget_routes(app: FastAPI, service: SupportService) -> None:
    parse_origins(service.config.serve.allowed_origins)  # a bad origin stops the start, not each request
    script = WIDGET_JS.read_bytes()

    def origins() -> frozenset[str]:
        return _parsed(tuple(service.config.serve.allowed_origins))  # per request: a changed setting applies at once

    @app.get("/widget.js", include_in_schema=False)
    async def widget_js():
        # Public by design (any page loads it with a <script> tag); it holds no settings and no secrets.
        return Response(script, media_type="text/javascript; charset=utf-8",
                        headers={"Cache-Control": "public, max-age=300"})

    @app.options(PREFIX + "/{path:path}", include_in_schema=False)
    async def preflight(request: Request, path: str):
        origin = allowed_origin(request, origins())
        if not origin:
            return JSONResponse({"error": REFUSED}, 403, headers={"Vary": "Origin"})
        return Response(status_code=204, headers={**_cors(origin), "Access-Control-Allow-Methods": "GET, POST",
                                                  "Access-Control-Allow-Headers": "Content-Type",
                                                  "Access-Control-Max-Age": "600"})

    def route(method: str, path: str):
        """A widget route: refused for other origins, CORS headers for allowed ones, one-line errors as JSON."""

        def register(handler: Handler) -> Handler:
            @functools.wraps(handler)
            async def answer(request: Request) -> Response:
                origin = allowed_origin(request, origins())
                if origin is None:
                    return JSONResponse({"error": REFUSED}, 403, headers={"Vary": "Origin"})
                try:
                    response = await handler(request)
                except RequestError as err:
                    response = JSONResponse({"error": str(err)}, err.status)
                except RateLimited as err:
                    retry = str(max(1, round(err.retry_after)))
                    response = JSONResponse({"error": str(err)}, 429, headers={"Retry-After": retry})
                except USER_ERRORS as err:
                    response = JSONResponse({"error": str(err)}, 400)
                response.headers.update(_cors(origin))
                return response

            app.add_api_route(PREFIX + path, answer, methods=[method], include_in_schema=False)
            return handler

        return register

    def conversation(conversation_id: str) -> dict:
        """The conversation as the widget shows it, with its state (closed, rated, away, email_left: see
        SupportService.state); an unknown id (a new or forgotten conversation) has none."""
        state = service.state(conversation_id)
        return {"conversation_id": conversation_id if state["status"] else "", **state,
                "messages": [_message(m) for m in service.history(conversation_id)]}

    @route("GET", "/config")
    async def config(request: Request):
        welcome = await run_in_threadpool(service.welcome)
        return JSONResponse({**welcome, "poll_seconds": service.config.serve.poll_seconds,
                             "max_message_chars": service.config.answer.max_message_chars})

    @route("GET", "/conversation")
    async def get_conversation(request: Request):
        conversation_id = _id(request.query_params.get("conversation_id", ""), "conversation_id")
        return JSONResponse(await run_in_threadpool(conversation, conversation_id))

    @route("POST", "/chat")
    async def chat(request: Request):
        body = await _body(request)
        message = _string(body, "message", service.config.answer.max_message_chars * 4)
        if not message.strip():
            raise RequestError("'message' is empty")
        conversation_id = _id(_string(body, "conversation_id"), "conversation_id")
        visitor = _id(_string(body, "visitor"), "visitor")
        caller = Caller(request.client.host if request.client else "", visitor)
        updates = service.chat(message, conversation_id, caller)
        # The first update runs the rate limit and the start of the turn: a refusal is an HTTP error, not an event.
        first = await run_in_threadpool(next, updates, None)
        return StreamingResponse(_events(first, updates, conversation), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @route("POST", "/rate")
    async def rate(request: Request):
        body = await _body(request)
        conversation_id = _id(_string(body, "conversation_id"), "conversation_id")
        message_id, thumbs_up = body.get("message_id"), body.get("thumbs_up")
        if not isinstance(message_id, int) or isinstance(message_id, bool):
            raise RequestError("'message_id' must be an integer")
        if thumbs_up is not None and not isinstance(thumbs_up, bool):
            raise RequestError("'thumbs_up' must be true, false or null")
        comment = _string(body, "comment", service.config.answer.max_message_chars)
        # Only the bot's replies of the caller's own conversation: its id is what the widget holds.
        history = await run_in_threadpool(service.history, conversation_id)
        if not any(m["id"] == message_id and m["role"] == "bot" for m in history):
            raise RequestError(f"no answer {message_id} in this conversation", 404)
        return JSONResponse(await run_in_threadpool(service.rate, message_id, thumbs_up, comment))

    @route("POST", "/talk_to_person")
    async def talk_to_person(request: Request):
        conversation_id = _id(_string(await _body(request), "conversation_id"), "conversation_id")
        handed = await run_in_threadpool(service.talk_to_person, conversation_id)
        return JSONResponse(await run_in_threadpool(conversation, handed["conversation_id"]))

    @route("POST", "/leave_queue")
    async def leave_queue(request: Request):
        conversation_id = _id(_string(await _body(request), "conversation_id"), "conversation_id")
        await run_in_threadpool(service.leave_queue, conversation_id)
        return JSONResponse(await run_in_threadpool(conversation, conversation_id))

    @route("POST", "/csat")
    async def csat(request: Request):
        body = await _body(request)
        conversation_id = _id(_string(body, "conversation_id"), "conversation_id")
        score = body.get("score")
        if not isinstance(score, int) or isinstance(score, bool):
            raise RequestError("'score' must be a whole number from 1 to 5")
        comment = _string(body, "comment", service.config.answer.max_message_chars)
        await run_in_threadpool(service.rate_conversation, conversation_id, score, comment)
        return JSONResponse(await run_in_threadpool(conversation, conversation_id))

    @route("POST", "/email")
    async def email(request: Request):
        body = await _body(request)
        conversation_id = _id(_string(body, "conversation_id"), "conversation_id")
        await run_in_threadpool(service.leave_email, conversation_id, _string(body, "email", 1000))
        return JSONResponse(await run_in_threadpool(conversation, conversation_id))


@functools.lru_cache(maxsize=8)
def _parsed(origins: tuple[str, ...]) -> frozenset[str]:
    return parse_origins(list(origins))


def _cors(origin: str) -> dict:
    # Vary: a cache between the bot and browsers must not hand one site's answer to another.
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"} if origin else {"Vary": "Origin"}


def _message(m: dict) -> dict:
    """A logged message as the widget shows it: a hand-off cites nothing to the customer (as on the chat page)."""
    sources = [] if m["handed_off"] or m["role"] != "bot" else m["sources"]
    return {"id": m["id"], "role": m["role"], "text": m["text"], "created_at": m["created_at"],
            "sources": [{"n": s.get("n"), "title": s.get("title", ""), "url": s.get("url", "")} for s in sources],
            "rating": m["rating"], "comment": m["comment"]}


def _events(first: dict | None, updates: Iterator[dict], conversation: Callable[[str], dict]) -> Iterator[str]:
    """Server-sent events: {"done": false, "text": draft so far} while the answer streams, then {"done": true, "text",
    "message_id", "handed_off", "conversation"}: the logged conversation, whose last reply replaces the draft (the
    policy may have changed it). A failure midway is an {"error"} event."""
    last = 0.0
    try:
        for update in _chain(first, updates):
            if update["done"]:
                reply = update["reply"]
                yield _event({"done": True, "text": update["text"], "message_id": reply["message_id"],
                              "handed_off": reply["handed_off"], "conversation": conversation(reply["conversation_id"])})
            elif update["text"].strip() and time.monotonic() - last >= STREAM_INTERVAL:
                last = time.monotonic()
                yield _event({"done": False, "text": update["text"]})
    except USER_ERRORS as err:
        yield _event({"error": str(err)})


def _chain(first: dict | None, updates: Iterator[dict]) -> Iterator[dict]:
    if first is not None:
        yield first
        yield from updates


def _event(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _body(request: Request) -> dict:
    parsed = await read_json(request, MAX_BODY_BYTES)
    if not isinstance(parsed, dict):
        raise RequestError("the body must be a JSON object")
    return parsed


def _string(body: dict, name: str, limit: int = MAX_ID_CHARS) -> str:
    value = body.get(name) or ""
    if not isinstance(value, str):
        raise RequestError(f"'{name}' must be a string")
    if len(value) > limit:
        raise RequestError(f"'{name}' has {len(value):,} characters, over the limit of {limit:,}")
    return value


def _id(value: str, name: str) -> str:
    if len(value) > MAX_ID_CHARS or not all(c.isascii() and (c.isalnum() or c in "-_") for c in value):
        raise RequestError(f"'{name}' must be an id of letters, digits, '-' and '_'")
    return value
