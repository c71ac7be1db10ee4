"""The ops console's Sources tab: the help-centre sites, files and folders the knowledge base was read from,
adding a site, and syncing (retrieval/sources.py). Crawls and syncs run as background jobs; the tab follows the
latest one's progress."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from .service import USER_ERRORS, SupportService
from .web import ago, checked, shown

SOURCE_COLUMNS = ["source", "kind", "pages", "last sync", "state"]
KIND_WORDS = {"web": "site", "file": "file", "folder": "folder", "upload": "upload"}
REFRESH_SECONDS = 3.0


def sources_tab(service: SupportService, token: gr.BrowserState, opened: list) -> None:
    gr.Markdown("Where the knowledge base comes from. A sync reads a source again: new pages are added, changed ones "
                "updated, pages that are gone removed, all at once. Uploaded files are updated by uploading them again.")
    with gr.Row(equal_height=True):
        url = gr.Textbox(label="Help-centre address", placeholder="https://help.example.com/", scale=4, elem_id="source-url")
        max_pages = gr.Number(0, precision=0, label="Page limit (0: the configured one)", scale=1, elem_id="source-max-pages")
        add = gr.Button("Add site", variant="primary", scale=0, min_width=120, elem_id="source-add")
    table = gr.Dataframe(pd.DataFrame(columns=SOURCE_COLUMNS), label="Sources (click one to select it)", interactive=False, wrap=True,
                         buttons=[], column_widths=["34%", "10%", "10%", "16%", "30%"], elem_id="sources")
    names = gr.State([])  # the source of each row shown
    chosen = gr.State("")
    with gr.Row():
        sync_one = gr.Button("Sync selected", size="sm", interactive=False, elem_id="source-sync")
        sync_all = gr.Button("Sync all", size="sm", elem_id="source-sync-all")
    job_id = gr.State("")  # the crawl or sync this page started
    status = gr.Markdown(elem_id="source-status")

    def show_sources(session_token: str):
        rows = service.kb_sources(session_token)
        frame = pd.DataFrame([[s["name"], KIND_WORDS.get(s["kind"], s["kind"]), s["pages"], ago(s["synced_at"]),
                               f"last sync failed: {s['error']}" if s["error"] else "ok"] for s in rows], columns=SOURCE_COLUMNS)
        return frame, [s["name"] for s in rows], "", gr.Button(interactive=False)

    def choose(source_names: list, row: gr.SelectData):
        return source_names[row.index[0]], gr.Button(interactive=True)

    def add_site(session_token: str, address: str, limit: float | None):
        job = service.add_site(session_token, address, int(limit or 0))
        return job["id"], f"Reading {address.strip()}…"

    def sync_sources(session_token: str, name: str, clicked: gr.EventData):
        every = getattr(clicked.target, "elem_id", "") == "source-sync-all"
        job = service.sync(session_token, [] if every or not name else [name])
        return job["id"], f"Syncing {'all sources' if every or not name else name}…"

    def follow_job(session_token: str, following: str):
        """Every few seconds: the progress of the job this page started, then its outcome and the sources as they
        are now (once)."""
        unchanged = [gr.skip()] * 4
        if not following:
            return gr.skip(), gr.skip(), *unchanged
        try:
            job = next((j for j in service.job_list(session_token) if j["id"] == following), None)
        except USER_ERRORS:
            return gr.skip(), gr.skip(), *unchanged
        if job is None or job["status"] == "running":
            progress = f"{job['title']}: {job['stage']} {job['done']}/{job['total']}" if job and job["total"] else gr.skip()
            return gr.skip(), progress, *unchanged
        return "", _outcome(job), *show_sources(session_token)

    listing = dict(fn=shown(checked(show_sources)), inputs=[token], outputs=[table, names, chosen, sync_one], api_visibility="private")
    gr.on(opened, **listing)
    table.select(choose, [names], [chosen, sync_one], api_visibility="private")
    add.click(shown(checked(add_site)), [token, url, max_pages], [job_id, status], api_visibility="private")
    gr.on([sync_one.click, sync_all.click], shown(checked(sync_sources)), [token, chosen], [job_id, status], api_visibility="private")
    gr.Timer(REFRESH_SECONDS).tick(shown(checked(follow_job)), [token, job_id], [job_id, status, table, names, chosen, sync_one],
                                   api_visibility="private", show_progress="hidden")


def _outcome(job: dict) -> str:
    """A finished job's result in words: what changed, and any page it skipped."""
    if job["status"] != "done":
        return f"{job['title']} failed: {job['error'] or job['last_line']}"
    r = job["result"]
    notes = "".join(f"\n- {n}" for n in r.get("notes", [])[:20])
    return (f"{job['title']}: {r.get('entries', 0)} entries — {r.get('added', 0)} added, {r.get('updated', 0)} updated, "
            f"{r.get('unchanged', 0)} unchanged, {r.get('removed', 0)} removed." + (f"\n\nNotes:{notes}" if notes else ""))
