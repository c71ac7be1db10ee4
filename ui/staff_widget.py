"""The ops console's Widget tab: the line to paste into the company's site (ui/widget_api.py serves the widget)
and the sites allowed to use it (`serve.allowed_origins`, saved to config.toml from here or edited there)."""

from __future__ import annotations

import gradio as gr

from .service import SupportService
from .web import checked, shown


def widget_tab(service: SupportService, token: gr.BrowserState, opened: list) -> None:
    gr.Markdown("Paste this line into the pages of your site, before `</body>`: customers get a chat button that talks "
                "to this bot. `data-title`, `data-greeting`, `data-color`, `data-position` and `data-lang` attributes "
                "change its look (docs/serving.md, The chat widget).")
    snippet = gr.Code(language="html", label="Snippet", interactive=False, elem_id="widget-snippet")
    origins = gr.Textbox(label="Sites allowed to use it, one per line (e.g. https://shop.example.com; empty: only this "
                         "bot's own pages)", lines=3, elem_id="widget-origins")
    save = gr.Button("Save", size="sm", scale=0, min_width=100, elem_id="widget-origins-save")
    saved = gr.Markdown(elem_id="widget-origins-saved")

    def show_snippet(session_token: str, request: gr.Request):
        base = f"{request.headers.get('x-forwarded-proto', request.url.scheme)}://{request.headers.get('host', '')}"
        return service.widget_snippet(session_token, base), "\n".join(service.config.serve.allowed_origins)

    def save_origins(session_token: str, text: str):
        kept = service.set_allowed_origins(session_token, text.splitlines())
        return f"Saved: {', '.join(kept) or 'only this bot’s own pages'}. The widget follows at once."

    gr.on(opened, shown(checked(show_snippet)), [token], [snippet, origins], api_visibility="private")
    save.click(shown(checked(save_origins)), [token, origins], [saved], api_visibility="private")
