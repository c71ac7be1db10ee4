"""`supportbot serve`: one FastAPI server with the customer page at /, the staff pages at /staff and the
OpenAI-compatible API at /v1."""

from __future__ import annotations

import logging

import gradio as gr
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from chatbot import Config
from retrieval.database import DatabaseError

from .openai_api import add_openai_routes
from .widget_api import add_widget_routes
from .service import MAX_UPLOAD_BYTES, UNAVAILABLE, SupportService
from .customer import build_customer_blocks, page_look
from .daily import start_daily_jobs, start_idle_closing
from .staff import build_staff_blocks


def build_app(config: Config, service: SupportService | None = None) -> FastAPI:
    service = service or SupportService(config)
    app = FastAPI(title=f"{config.answer.company} support")
    app.add_exception_handler(DatabaseError, _unavailable)
    add_openai_routes(app, service)
    add_widget_routes(app, service)  # /widget.js and its API under /api/widget/
    # The staff pages first: the customer page at the root would otherwise take their paths. Each page with its look
    # (CSS, theme, icon): Gradio 6 takes these here, not from gr.Blocks.
    pages = (("/staff", build_staff_blocks(service), {}), ("", build_customer_blocks(service), page_look(config)))
    for path, blocks, look in pages:
        # Several customers stream at once: each queued event may run this many copies concurrently.
        blocks.queue(default_concurrency_limit=config.serve.concurrency)
        app = gr.mount_gradio_app(app, blocks, path=path, footer_links=[], max_file_size=MAX_UPLOAD_BYTES, **look)
        # Gradio checks that a file a client sends was uploaded (not any path on this machine) only once its
        # app "has launched", which mount_gradio_app never marks: without this, a client could name any file
        # here as an upload, have it copied into Gradio's cache and download it from there.
        blocks.has_launched = True
    return app


async def _unavailable(request: Request, err: DatabaseError) -> JSONResponse:
    """The OpenAI route and the widget's API when the shared database cannot be reached: 503, the detail logged."""
    logging.getLogger("supportbot").error("%s %s: %s", request.method, request.url.path, err)
    return JSONResponse({"error": {"message": UNAVAILABLE, "type": "service_unavailable"}}, status_code=503,
                        headers={"Retry-After": "5"})


def serve(config: Config, service: SupportService | None = None, overrides: list[str] | None = None) -> None:
    import uvicorn

    from chatbot import SupportBot

    from .progress import TerminalProgress

    service = service or SupportService(config, SupportBot(config, progress=TerminalProgress()), overrides)
    service.warm_up()  # converts the bundled model on first use, with progress on the terminal
    start_daily_jobs(service)
    start_idle_closing(service)  # serve.idle_close_minutes
    uvicorn.run(build_app(config, service), host=config.serve.host, port=config.serve.port, log_level="warning")
