"""`supportbot serve`: one FastAPI server with the Gradio app at / and the OpenAI-compatible API at /v1."""

from __future__ import annotations

import gradio as gr
from fastapi import FastAPI

from chatbot import Config

from .openai_api import add_openai_routes
from .service import SupportService
from .web import build_blocks


def build_app(config: Config, service: SupportService | None = None) -> FastAPI:
    service = service or SupportService(config)
    blocks = build_blocks(service)
    # Several customers stream at once: each queued event may run this many copies concurrently.
    blocks.queue(default_concurrency_limit=config.serve.concurrency)
    app = FastAPI(title=f"{config.answer.company} support")
    add_openai_routes(app, service)
    return gr.mount_gradio_app(app, blocks, path="", footer_links=["api"])


def serve(config: Config, service: SupportService | None = None, overrides: list[str] | None = None) -> None:
    import uvicorn

    from chatbot import SupportBot

    from .progress import TerminalProgress

    service = service or SupportService(config, SupportBot(config, progress=TerminalProgress()), overrides)
    service.warm_up()  # converts the bundled model on first use, with progress on the terminal
    uvicorn.run(build_app(config, service), host=config.serve.host, port=config.serve.port, log_level="warning")
