"""An OpenAI-compatible `POST /v1/chat/completions` on the app's server, so helpdesk tools and OpenAI client
libraries can call the bot. Answers come from the same engine (retrieval, policy, logging); the sources,
the hand-off flag and the conversation id travel in extra fields of the response."""

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

from .ratelimit import Caller, RateLimited
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
    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            chat = _parse(await _json_body(request))
        except RequestError as err:
            return _error(str(err), err.status)
        caller = Caller(request.client.host if request.client else "", chat.user)
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


async def _json_body(request: Request):
    """The parsed body; a body past MAX_BODY_BYTES is refused without reading the rest."""
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_BODY_BYTES:
            raise RequestError(f"the request body is over the limit of {MAX_BODY_BYTES:,} bytes", 413)
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        raise RequestError("request body is not valid JSON") from None


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


def _error(message: str, status: int = 400, kind: str = "invalid_request_error", headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status, headers=headers)


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
    """Server-sent events: content deltas, then a final chunk whose delta brings the final text's
    difference (the policy may have replaced the draft) with the sources."""
    created = int(time.time())

    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        payload = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": "supportbot",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(payload)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    streamed = ""
    for piece in response:
        streamed += piece
        yield chunk({"content": piece})
    reply = response.reply
    tail = reply.text[len(streamed):] if reply.text.startswith(streamed) else ""
    replaced = {} if reply.text.startswith(streamed) else {"replaced_content": reply.text}
    yield chunk({"content": tail} if tail else {}, "stop", **_extras(reply), **replaced)
    yield "data: [DONE]\n\n"
