"""Generation backends: chat messages in, a stream of text pieces out.

The in-process transformers backend is the default; the OpenAI-compatible HTTP backend lets the same
engine use vLLM or TGI on GPUs. Both return a `Generation`: iterate it for text as it is produced; after
the loop it holds the token counts.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

Messages = list[dict[str, str]]


@dataclass
class Generation:
    """A reply being produced: iterate for text pieces; counts are final once iteration ends."""

    pieces: Iterator[str]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    text: str = ""

    def __iter__(self) -> Iterator[str]:
        for piece in self.pieces:
            self.text += piece
            yield piece


class Backend(Protocol):
    name: str  # the model version logged with every reply

    def count_tokens(self, text: str) -> int: ...

    def generate(self, messages: Messages, max_new_tokens: int, temperature: float = 0.0,
                 passages: Sequence[str] = ()) -> Generation:
        """`passages`: the prompt's passages as the prompt shows them, which a backend may keep computed."""


class BackendError(RuntimeError):
    """The model could not produce a reply (server down, bad response)."""


class TransformersBackend:
    """A local causal LM run in-process. Each request decodes in its own thread and streams through a
    queue; `max_concurrent` bounds how many decode at once (the rest wait)."""

    def __init__(self, model, tokenizer, name: str, max_concurrent: int = 4, repetition_penalty: float = 1.0):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.repetition_penalty = repetition_penalty
        self._slots = threading.BoundedSemaphore(max(1, max_concurrent))

    @classmethod
    def from_folder(cls, path: Path, name: str, adapter: str = "", dtype: str = "float32", **kwargs) -> TransformersBackend:
        from .model import load_causal_lm

        model, tokenizer = load_causal_lm(path, adapter, dtype)
        return cls(model, tokenizer, name, **kwargs)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, messages: Messages):
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)

    def generate(self, messages: Messages, max_new_tokens: int, temperature: float = 0.0,
                 passages: Sequence[str] = ()) -> Generation:
        from transformers import TextIteratorStreamer

        inputs = self.prompt_ids(messages)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        generation = Generation(iter(streamer), prompt_tokens=int(inputs["input_ids"].shape[1]))
        options = dict(
            max_new_tokens=max_new_tokens,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_p=0.95 if temperature > 0 else None,
            repetition_penalty=self.repetition_penalty,
            pad_token_id=self.tokenizer.pad_token_id,
            streamer=streamer,
        )
        failure: list[BaseException] = []

        def run() -> None:
            import torch

            with self._slots, torch.inference_mode():
                try:
                    out = self.model.generate(**inputs, **options)
                    generation.completion_tokens = int(out.shape[1] - inputs["input_ids"].shape[1])
                except BaseException as err:  # surfaced to the reader below, never lost in the thread
                    failure.append(err)
                    streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()

        def pieces() -> Iterator[str]:
            yield from streamer
            thread.join()
            if failure:
                raise BackendError(f"generation failed: {failure[0]}") from failure[0]

        generation.pieces = pieces()
        return generation


class OpenAIBackend:
    """Any server speaking OpenAI's /v1/chat/completions with server-sent events (vLLM, TGI, ...)."""

    def __init__(self, base_url: str, model: str, api_key: str = "", timeout: float = 120.0, tokenizer=None):
        if not base_url:
            raise ValueError("model.openai_url is empty: set it to the server's base URL, e.g. http://127.0.0.1:8000/v1")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.name = f"openai:{model or base_url}"
        self.api_key = api_key
        self.timeout = timeout
        self.tokenizer = tokenizer  # for prompt budgeting when the served model's tokenizer is at hand

    def count_tokens(self, text: str) -> int:
        if self.tokenizer is not None:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return max(1, len(text) // 4)  # the usual estimate for English text

    def generate(self, messages: Messages, max_new_tokens: int, temperature: float = 0.0,
                 passages: Sequence[str] = ()) -> Generation:
        body = {
            "model": self.model, "messages": messages, "max_tokens": max_new_tokens, "temperature": temperature,
            "stream": True, "stream_options": {"include_usage": True},
        }
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        generation = Generation(iter(()), prompt_tokens=sum(self.count_tokens(m["content"]) for m in messages))

        def pieces() -> Iterator[str]:
            try:
                response = urllib.request.urlopen(request, timeout=self.timeout)
            except (urllib.error.URLError, OSError) as err:
                raise BackendError(f"{self.url}: {err}") from err
            counted = 0
            with response:
                for raw in response:
                    line = raw.decode("utf-8", "replace").strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        chunk = json.loads(data)
                    except json.JSONDecodeError as err:
                        raise BackendError(f"{self.url}: bad event {data[:80]!r}") from err
                    if chunk.get("usage"):
                        generation.prompt_tokens = chunk["usage"].get("prompt_tokens", generation.prompt_tokens)
                        counted = chunk["usage"].get("completion_tokens", counted)
                    for choice in chunk.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content") or ""
                        if piece:
                            yield piece
            generation.completion_tokens = counted or self.count_tokens(generation.text)

        generation.pieces = pieces()
        return generation
