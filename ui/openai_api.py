"""An OpenAI-compatible `POST /v1/chat/completions` on the app's server, so helpdesk tools and OpenAI client
libraries can call the bot. Answers come from the same engine (retrieval, policy, logging); the sources,
the hand-off flag and the conversation id travel in extra fields of the response. A server-to-server caller
sends an API key (`Authorization: Bearer sb_...`, ui/apikeys.py) and is rate-limited by it, not by its address."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from chatbot import Reply

from .apikeys import ApiKeyError, ApiKeys
from .ratelimit import RateLimited
from .service import SupportService

MAX_TOKENS_LIMIT = 2048
MAX_BODY_BYTES = 1_000_000
MAX_MESSAGES = 100


class RequestError(ValueError):
    """A refused request: its one-line message and HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class ChatRequest:
    messages: list[dict]
    max_tokens: int | None
    temperature: float | None
    stream: bool
    user: str  # the caller's id for its end user (OpenAI's `user`): the session its rate limit counts in


def add_openai_routes(app: FastAPI, service: SupportService) -> None:
    api_keys = ApiKeys(service.bot.log.db)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            chat = _parse(await read_json(request))
        except RequestError as err:
            return _error(str(err), err.status)
        try:
            caller = await run_in_threadpool(api_keys.caller, request.headers.get("authorization", ""),
                                             request.client.host if request.client else "", chat.user,
                                             service.config.serve.require_api_key)
        except ApiKeyError as err:
            return _error(str(err), 401, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        try:
            response = await run_in_threadpool(service.openai_chat, chat.messages, chat.max_tokens, chat.temperature, caller)
        except RateLimited as err:
            return _error(str(err), 429, "rate_limit_error", {"Retry-After": str(max(1, round(err.retry_after)))})
        if chat.stream:
            return StreamingResponse(_events(response, completion_id), media_type="text/event-stream")
        reply = await run_in_threadpool(response.result)
        return JSONResponse(_completion(reply, completion_id))

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": "supportbot", "object": "model", "owned_by": "supportbot"}]}


async def read_json(request: Request, limit: int = MAX_BODY_BYTES):
    """The parsed body; a body past `limit` bytes is refused without reading the rest (also for the widget's API)."""
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise RequestError(f"the request body is over the limit of {limit:,} bytes", 413)
    try:
        return json.loads(body) if body else {}
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        raise RequestError("the request body is not valid JSON") from None


def _parse(body) -> ChatRequest:
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list")
    if len(messages) > MAX_MESSAGES:
        raise RequestError(f"'messages' has {len(messages)} items, over the limit of {MAX_MESSAGES}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str):
            raise RequestError(f"messages[{i}] must be an object with role system|user|assistant and string content")
    if messages[-1]["role"] != "user":
        raise RequestError("the last message must have role 'user'")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= MAX_TOKENS_LIMIT):
        raise RequestError(f"'max_tokens' must be an integer from 1 to {MAX_TOKENS_LIMIT}")
    temperature = body.get("temperature")
    if temperature is not None and (not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not 0 <= temperature <= 2):
        raise RequestError("'temperature' must be a number from 0 to 2")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError("'stream' must be true or false")
    user = body.get("user", "")
    if not isinstance(user, str):
        raise RequestError("'user' must be a string")
    return ChatRequest(messages, max_tokens, temperature, stream, user)


def _error(message: str, status: int = 400, kind: str = "invalid_request_error", headers: dict | None = None,
           code: str | None = None) -> JSONResponse:
    error = {"message": message, "type": kind, **({"code": code} if code else {})}
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def _extras(reply: Reply) -> dict:
    data = reply.to_json()
    return {key: data[key] for key in ("sources", "handed_off", "confidence", "conversation_id")}


def _completion(reply: Reply, completion_id: str) -> dict:
    return {
        "id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": reply.model or "supportbot",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.reply_tokens,
                  "total_tokens": reply.prompt_tokens + reply.reply_tokens},
        **_extras(reply),
    }


def _events(response, completion_id: str) -> Iterator[str]:
    """Server-sent events: the role at once, then the reply's final text, then a last chunk with the sources.

    The model's draft is not streamed: the policy checks a generated reply only whole (citations, links,
    leaks, offers, grounding: chatbot/engine.py `_generate`) and may replace it, and a standard OpenAI client
    cannot take back text it has shown. Checking the sentences so far as they come does not help: a reply
    whose first sentences pass can still fail whole (grounding is a share of the whole reply), and such
    sentences would have been shown (bench/stream_safety.py; docs/operations.md). The cost is a
    first token when the reply is done; curated and policy replies come whole anyway."""
    created = int(time.time())

    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        payload = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": "supportbot",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(payload)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    reply = response.result()
    if reply.text:
        yield chunk({"content": reply.text})
    yield chunk({}, "stop", **_extras(reply))
    yield "data: [DONE]\n\n"
