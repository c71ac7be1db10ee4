"""The ops console's Widget tab: the line to paste into the company's site (ui/widget_api.py serves the widget)
and the origins allowed to use it (`serve.allowed_origins`, set in config.toml)."""

from __future__ import annotations

import gradio as gr

from .service import SupportService
from .web import checked, shown


def widget_tab(service: SupportService, token: gr.BrowserState, opened: list) -> None:
    gr.Markdown("Paste this line into the pages of your site, before `</body>`: customers get a chat button that talks "
                "to this bot. `data-title`, `data-greeting`, `data-color`, `data-position` and `data-lang` attributes "
                "change its look (docs/serving.md, The chat widget).")
    snippet = gr.Code(language="html", label="Snippet", interactive=False, elem_id="widget-snippet")
    origins = gr.Markdown(elem_id="widget-origins")

    def show_snippet(session_token: str, request: gr.Request):
        base = f"{request.headers.get('x-forwarded-proto', request.url.scheme)}://{request.headers.get('host', '')}"
        allowed = service.config.serve.allowed_origins
        where = (", ".join(f"`{o}`" for o in allowed) if allowed
                 else "only this bot's own pages: add your site's origin to `serve.allowed_origins` in config.toml")
        return service.widget_snippet(session_token, base), f"Sites allowed to use it: {where}."

    gr.on(opened, shown(checked(show_snippet)), [token], [snippet, origins], api_visibility="private")
