"""The ops console's Webhooks tab: the latest deliveries of conversation events to the receivers of
`serve.webhooks` (ui/webhooks.py), each with its status, attempts and last error. Read only: receivers are
configured in config.toml, and a failed delivery is not sent again from here."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from .service import SupportService
from .web import ago, checked, shown

DELIVERY_COLUMNS = ["created", "event", "receiver", "status", "attempts", "last error", "delivered"]
STATUS_WORDS = {"pending": "pending (retrying)", "delivered": "delivered", "failed": "failed"}


def webhooks_tab(service: SupportService, token: gr.BrowserState, opened: list) -> None:
    gr.Markdown("Hand-offs, agents' replies, closed conversations and customers' ratings sent to the receivers in "
                "`serve.webhooks` (docs/operations.md, Webhooks): the latest 200, newest first. A receiver that fails or "
                "does not answer is retried with backoff; customers never wait for it.")
    refresh = gr.Button("Refresh", size="sm", scale=0, min_width=100, elem_id="webhooks-refresh")
    summary = gr.Markdown(elem_id="webhooks-summary")
    table = gr.Dataframe(pd.DataFrame(columns=DELIVERY_COLUMNS), label="Webhook deliveries", interactive=False, wrap=True,
                         buttons=[], max_height=700, column_widths=["12%", "10%", "28%", "12%", "8%", "18%", "12%"],
                         elem_id="webhook-deliveries")

    def show_deliveries(session_token: str):
        rows = service.webhook_deliveries(session_token)
        frame = pd.DataFrame([[ago(d["created"]), d["event"], d["url"], STATUS_WORDS.get(d["status"], d["status"]), d["attempts"],
                               d["last_error"], ago(d["delivered"])] for d in rows], columns=DELIVERY_COLUMNS)
        return frame, _summary(rows, bool(service.config.serve.webhooks))

    gr.on([*opened, refresh.click], shown(checked(show_deliveries)), [token], [table, summary], api_visibility="private")


def _summary(rows: list[dict], configured: bool) -> str:
    if not rows:
        return "No deliveries yet." if configured else "No receivers configured: add them to `serve.webhooks` in config.toml."
    counts = {status: sum(d["status"] == status for d in rows) for status in STATUS_WORDS}
    return ", ".join(f"{n} {status}" for status, n in counts.items() if n) + f" of the latest {len(rows)}."
