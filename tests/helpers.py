"""Small helpers for tests."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def tiny_llama(path: Path, initializer_range: float = 0.02) -> Path:
    """A 2-layer Llama with random weights (fixed seed) and the real SmolLM2 tokenizer and chat template, saved
    to `path`. Larger weights (`initializer_range`) make its outputs depend sharply on every input and position."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from chatbot.model import bundled_gguf

    gguf = bundled_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True,
                         initializer_range=initializer_range)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def first_token_logits_blocked(model, tokenizer, messages: list[dict], pieces: list[str]):
    """The first reply token's logits by transformers, with the passages computed apart: each block after the
    context alone (the system prompt and the message's lead-in), that pair moved so that the block sits where
    the prompt has it (RoPE's own positions, no key turned by hand), the rest of the prompt then attending to
    all. What the llama.cpp passage cache serves and block-attention training computes, written another way."""
    import torch
    from transformers import DynamicCache

    from chatbot.passage_cache import block_ranges

    ids = list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"])
    context, blocks = block_ranges(tokenizer, messages, ids, pieces)
    assert blocks, "the prompt's passages were not found as token blocks"

    def forward(tokens: list[int], first: int, cache=None):
        positions = torch.arange(first, first + len(tokens))[None]
        return model(torch.tensor([tokens]), position_ids=positions, cache=cache, use_cache=True)

    with torch.inference_mode():
        layers = [[layer.keys, layer.values] for layer in forward(ids[:blocks[0][0]], 0).past_key_values.layers]
        for a, b in blocks:
            alone = forward(context + ids[a:b], a - len(context)).past_key_values.layers
            for layer, part in zip(layers, alone):
                layer[0] = torch.cat([layer[0], part.keys[:, :, len(context):]], dim=2)
                layer[1] = torch.cat([layer[1], part.values[:, :, len(context):]], dim=2)
        end = blocks[-1][1]
        return forward(ids[end:], end, DynamicCache([tuple(layer) for layer in layers])).logits[0, -1].numpy()


def start_server(config, service=None):
    """Serve the whole app (Gradio + OpenAI routes) on a free loopback port in a thread, on `service` if given (a test
    then acts as staff through it); returns (base url, stop function)."""
    import uvicorn

    from ui.app import build_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build_app(config, service), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started and time.time() < deadline:
        time.sleep(0.1)

    def stop() -> None:
        server.should_exit = True
        server.force_exit = True  # no wait for open connections (a browser's, a stream's) to finish
        thread.join(10)

    return f"http://127.0.0.1:{port}", stop


def start_inference_server(backend) -> ThreadingHTTPServer:
    """A minimal OpenAI-compatible inference server (as vLLM or TGI serve) in front of a real in-process backend,
    on a free loopback port, in a thread; `.requests` counts the completions it streamed. Stop it with
    `.shutdown()`."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            generation = backend.generate(body["messages"], body["max_tokens"], body.get("temperature", 0))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for piece in generation:
                self.wfile.write(f"data: {json.dumps({'choices': [{'delta': {'content': piece}}]})}\n\n".encode())
            usage = {"prompt_tokens": generation.prompt_tokens, "completion_tokens": generation.completion_tokens}
            self.wfile.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\ndata: [DONE]\n\n".encode())
            server.requests += 1

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.requests = 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
