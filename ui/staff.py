"""The staff pages, served at `/staff`: sign-in, the agents' queue and the ops console.

The sign-in token is kept in the browser (encrypted local storage), so that a reload keeps a person signed in
until the server's session expires. Every handler passes it to one SupportService method, which checks it.
"""

from __future__ import annotations


import gradio as gr
import pandas as pd
from PIL import Image

from .service import QUEUE_REASONS, ROLES, TRAINABLE, USER_ERRORS, SupportService
from .staff_sources import sources_tab
from .staff_suggestions import suggestions_tab
from .staff_webhooks import webhooks_tab
from .staff_widget import widget_tab
from .web import ago, caller_of, checked, render_chat, shown

REFRESH_SECONDS = 3.0  # how often the queue and the jobs table look for news
PAGE_SIZE = 20  # knowledge-base entries per page
QUEUE_COLUMNS = ["waiting", "why", "customer's last message"]
ENTRY_COLUMNS = ["id", "title", "category", "content", "updated"]
MODEL_COLUMNS = ["version", "type", "serving", "created", "answer similarity", "grounding", "hand-off P / R", "median reply"]
GAP_COLUMNS = ["question", "times", "last asked"]
JOB_COLUMNS = ["job", "what", "status", "progress", "latest"]
STATUS_WORDS = {"open": "with the bot", "handed_off": "waiting for a person", "resolved": "closed"}  # by an agent, or idle
CSAT_OUTCOME_WORDS = {"bot": "answered by the bot", "handed_off": "handed off"}
KIND_WORDS = {"lm": "language model", "adapter": "adapter", "reward": "reward model", "retriever": "retriever"}
ROLE_WORDS = {"lm": "language model", "reward": "reward model", "retriever": "retriever"}  # what serves, by ROLES
CHOOSE = "Select a conversation in the queue to answer it."
# The agent's three ways of replying: the button clicked says which one was meant.
ACTION_BUTTONS = {"agent-approve": "approved", "agent-edit": "edited", "agent-reject": "rejected"}
# Client-side steps of the hidden page number before the knowledge-base listing runs.
FIRST_PAGE, PAGE_BEFORE, PAGE_AFTER = ("(t, q, p) => [t, q, 1]", "(t, q, p) => [t, q, p - 1]", "(t, q, p) => [t, q, p + 1]")


def build_staff_blocks(service: SupportService) -> gr.Blocks:
    company = service.config.answer.company
    with gr.Blocks(title=f"{company} support: staff", analytics_enabled=False) as blocks:
        token = gr.BrowserState("", storage_key="supportbot-staff-session")
        with gr.Row(equal_height=True):
            gr.Markdown(f"### {company} support: staff")
            status = gr.Markdown("Not signed in.", elem_id="login-status")
            sign_out = gr.Button("Sign out", size="sm", scale=0, min_width=100, visible=False, elem_id="sign-out")
        with gr.Tabs() as tabs:
            with gr.Tab("Staff sign-in", id="signin"):
                account = [token, status, sign_out, tabs]
                _signin_tab(service, account)
            with gr.Tab("Agent", id="agent"):
                _agent_tab(service, token)
            with gr.Tab("Ops", id="ops") as ops:
                _ops_tab(service, token, ops)

        def restore(session_token: str):
            """A reload: the browser's token signs its person back in while the session lives; else quietly nothing."""
            try:
                return _signed_in(session_token, service.session(session_token))
            except USER_ERRORS:  # the page as loaded already shows no one signed in
                return "", gr.skip(), gr.skip(), gr.skip()

        def end(session_token: str):
            service.logout(session_token)
            return "", "Signed out.", gr.Button(visible=False), gr.Tabs(selected="signin")

        blocks.load(shown(checked(restore)), [token], account, api_visibility="private")
        sign_out.click(shown(checked(end)), [token], account, api_visibility="private")
    return blocks


def _signed_in(session_token: str, session: dict) -> tuple:
    """The page for a signed-in person: the token kept, who they are, and their role's tab."""
    return (session_token, f"Signed in as **{session['user']}** ({session['role']}).", gr.Button(visible=True),
            gr.Tabs(selected="ops" if session["role"] == "ops" else "agent"))


def _signin_tab(service: SupportService, account: list) -> None:
    gr.Markdown("Agents answer the customers waiting for a person; ops manage the knowledge base, analytics and models.")
    user = gr.Textbox(label="User", elem_id="login-user")
    password = gr.Textbox(label="Password", type="password", elem_id="login-password")
    login = gr.Button("Sign in", variant="primary", elem_id="login-button")

    def sign_in(name: str, secret: str, request: gr.Request):
        session = service.login(name, secret, caller_of(request))
        return _signed_in(session["token"], session)

    gr.on([login.click, password.submit], shown(checked(sign_in)), [user, password], account, api_visibility="private")


# --- agents ---------------------------------------------------------------------------------------


def _agent_tab(service: SupportService, token: gr.BrowserState) -> None:
    counts = gr.Markdown("Sign in as an agent to see the customers waiting for a person.", elem_id="queue-counts")
    ids = gr.State([])  # the conversation of each queue row, in order
    selected = gr.State("")  # the conversation in the editor
    suggested = gr.State({})  # the suggestion shown (text and the bot message it drafts from), as sent back
    with gr.Row():
        with gr.Column(scale=2, min_width=340):
            table = gr.Dataframe(pd.DataFrame(columns=QUEUE_COLUMNS), label="Waiting for a person (oldest first)", interactive=False,
                                 wrap=True, column_widths=["20%", "32%", "48%"], max_height=720, buttons=[], elem_id="queue-table")
        with gr.Column(scale=3, min_width=420):
            heading = gr.Markdown(CHOOSE, elem_id="agent-heading")
            history = gr.Chatbot(label="Conversation", height=400, group_consecutive_messages=False, buttons=[], elem_id="agent-history")
            info = gr.Markdown(elem_id="agent-suggestion-info")
            reply = gr.Textbox(label="Reply to the customer (start from the suggestion, or write your own)", lines=4, elem_id="agent-reply")
            with gr.Row():
                approve = gr.Button("Send as is", variant="primary", interactive=False, elem_id="agent-approve")
                edit = gr.Button("Send edited", interactive=False, elem_id="agent-edit")
                reject = gr.Button("Reject and send my own", interactive=False, elem_id="agent-reject")
                close = gr.Button("Close conversation", interactive=False, elem_id="agent-close")
            done = gr.Markdown(elem_id="agent-status")
    editor = [selected, heading, history, info, reply, suggested, approve, edit, reject, close, done]

    def refresh_queue(session_token: str):
        """Every few seconds and after each action; silent until someone with the agent role signs in."""
        try:
            queue = service.queue(session_token)
        except USER_ERRORS:
            return gr.skip(), gr.skip(), gr.skip()
        return _queue_counts(queue), _queue_frame(queue["items"]), [i["conversation_id"] for i in queue["items"]]

    def pick(conversation_ids: list, row: gr.SelectData):
        """The clicked row's conversation, in an emptied editor: nothing of the previous one can be sent to it."""
        return _editor(conversation_ids[row.index[0]], heading="Opening the conversation\u2026")

    def open_conversation(session_token: str, conversation_id: str):
        return _editor(conversation_id, service.review(session_token, conversation_id))

    def send_reply(session_token: str, conversation_id: str, text: str, suggestion: dict, clicked: gr.EventData):
        action = ACTION_BUTTONS.get(getattr(clicked.target, "elem_id", None), "")
        service.send(session_token, conversation_id, action, text, suggestion.get("text", ""), suggestion.get("draft_message_id"))
        # The suggestion answered what the customer had asked: spent once sent.
        return _staff_chat(service.history(conversation_id)), "", "", {}, gr.Button(interactive=False), "Sent to the customer."

    def close_conversation(session_token: str, conversation_id: str):
        service.close(session_token, conversation_id)
        return _editor(note="Conversation closed: it has left the queue.")

    queue_view = dict(fn=shown(checked(refresh_queue)), inputs=[token], outputs=[counts, table, ids], api_visibility="private",
                      show_progress="hidden")
    gr.Timer(REFRESH_SECONDS).tick(**queue_view)
    table.select(pick, [ids], editor, api_visibility="private").success(
        shown(checked(open_conversation)), [token, selected], editor, api_visibility="private")
    # A refusal (an empty reply) shows on the line under the buttons, not over the conversation and the reply.
    gr.on([approve.click, edit.click, reject.click], shown(checked(send_reply)), [token, selected, reply, suggested],
          [history, info, reply, suggested, approve, done], api_visibility="private", show_progress_on=[done]).success(**queue_view)
    close.click(shown(checked(close_conversation)), [token, selected], editor, api_visibility="private",
                show_progress_on=[done]).success(**queue_view)


def _queue_counts(queue: dict) -> str:
    waiting = len(queue["items"])
    if not waiting:
        return "**Nobody is waiting.** New conversations appear here by themselves."
    counts = ", ".join(f"{n} {QUEUE_REASONS[reason]}" for reason, n in queue["counts"].items() if n)
    return f"**{waiting} waiting**: {counts}"


def _queue_frame(items: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([[ago(i["waiting_since"]), i["why"], i["last_customer"]] for i in items], columns=QUEUE_COLUMNS)


def _editor(conversation_id: str = "", review: dict | None = None, heading: str = CHOOSE, note: str = "") -> tuple:
    """The conversation editor's values: a conversation under review, or (no review) emptied with its buttons off;
    `note` is the line under the buttons."""
    if review is None:
        off = gr.Button(interactive=False)
        return conversation_id, heading, [], "", "", {}, off, off, off, off, note
    s, history = review["suggestion"], review["history"]
    started = ago(history[0]["created_at"]) if history else ""
    heading = f"**Conversation started {started}**, {STATUS_WORDS.get(review['status'], review['status'])}."
    if review.get("contact_email"):  # left while the team was away: answer there too
        heading += f" The customer asked for the answer by email too: **{review['contact_email']}**."
    on = gr.Button(interactive=True)
    suggestion = {"text": s["text"], "draft_message_id": s["draft_message_id"]}
    return (conversation_id, heading, _staff_chat(history), _suggestion_info(s), s["text"], suggestion,
            gr.Button(interactive=bool(s["text"].strip())), on, on, on, note)


def _staff_chat(history: list[dict]) -> list[dict]:
    """The conversation as the customer saw it (render_chat gives one bubble per message), with the customer's
    rating and comment under each rated bot reply."""
    bubbles = render_chat(history)
    for bubble, message in zip(bubbles, history):
        if message.get("rating"):
            verdict = "Rated helpful" if message["rating"] > 0 else "Rated down"
            comment = f": \u201c{message['comment']}\u201d" if message.get("comment") else ""
            bubble["content"] += f"\n\n*{verdict} by the customer{comment}*"
    return bubbles


def _suggestion_info(s: dict) -> str:
    """Where the suggested reply comes from and why the customer did not get it, with its sources."""
    sources = ", ".join(f"[{x['title']}]({x['url']})" if x.get("url") else x["title"] for x in s["sources"])
    parts = [f"**Suggestion.** {s['note'] or 'Nothing to suggest: write your reply.'}"]
    if sources:
        parts.append(f"Sources: {sources}; bot confidence {s['confidence']:.0%}.")
    return " ".join(parts)


# --- ops ------------------------------------------------------------------------------------------


def _ops_tab(service: SupportService, token: gr.BrowserState, ops: gr.Tab) -> None:
    with gr.Tab("Knowledge base") as kb:
        _kb_tab(service, token, [ops.select, kb.select])
    with gr.Tab("Sources") as sourced:
        sources_tab(service, token, [sourced.select])
    with gr.Tab("Suggestions") as suggested:
        suggestions_tab(service, token, [suggested.select])
    with gr.Tab("Analytics") as stats:
        _analytics_tab(service, token, stats)
    with gr.Tab("Models") as models:
        _models_tab(service, token, models)
    with gr.Tab("Training"):
        _training_tab(service, token)
    with gr.Tab("Widget") as widget:
        widget_tab(service, token, [widget.select])
    with gr.Tab("Webhooks") as hooked:
        webhooks_tab(service, token, [hooked.select])


def _kb_tab(service: SupportService, token: gr.BrowserState, opened: list) -> None:
    with gr.Accordion("Add files to the knowledge base", open=False):
        files = gr.File(label="CSV, JSON, JSONL, Markdown or text files", file_count="multiple", height=120, elem_id="kb-files")
        upload = gr.Button("Add to knowledge base", variant="primary", elem_id="kb-upload")
        uploaded = gr.Markdown(elem_id="kb-upload-status")
    query = gr.Textbox(label="Find entries", placeholder="an id, a title or a question", elem_id="kb-query")
    entries = gr.Dataframe(pd.DataFrame(columns=ENTRY_COLUMNS), label="Entries (click one to select it)", interactive=False, wrap=True,
                           buttons=[], max_height=900, column_widths=["18%", "38%", "18%", "12%", "14%"], elem_id="kb-entries")
    page = gr.Number(1, precision=0, visible=False)  # stepped in the browser by the previous / next buttons
    ids = gr.State([])  # the entry of each row shown
    chosen = gr.State("")  # the entry selected for removal
    with gr.Row(equal_height=True):
        previous = gr.Button("\u2190 Previous", size="sm", scale=0, min_width=120, interactive=False, elem_id="kb-previous")
        count = gr.Markdown(elem_id="kb-count")
        following = gr.Button("Next \u2192", size="sm", scale=0, min_width=120, interactive=False, elem_id="kb-next")
        remove = gr.Button("Remove selected", variant="stop", size="sm", scale=0, min_width=160, interactive=False, elem_id="kb-remove")
    with gr.Row(visible=False, equal_height=True) as confirmation:
        question = gr.Markdown(elem_id="kb-remove-question")
        confirm = gr.Button("Yes, remove it", variant="stop", size="sm", scale=0, min_width=140, elem_id="kb-remove-confirm")
        cancel = gr.Button("Cancel", size="sm", scale=0, min_width=100, elem_id="kb-remove-cancel")
    removed = gr.Markdown(elem_id="kb-removed")

    def add_files(session_token: str, paths: list | None, progress=gr.Progress()):
        if not paths:
            raise gr.Error("choose one or more files first")
        report = service.kb_upload(session_token, paths, lambda stage, done, total: progress((done, total), desc=stage))
        return (f"Added {report['added']}, updated {report['updated']}, unchanged {report['unchanged']} entries "
                f"({report['embedded']} texts embedded, {report['seconds']:.1f} s).")

    def show_entries(session_token: str, text: str, number: float | None):
        found = service.kb_page(session_token, text, int(number or 1), PAGE_SIZE)
        start = (found["page"] - 1) * PAGE_SIZE
        shown_count = (f"Entries {start + 1}\u2013{start + len(found['entries'])} of {found['total']}" if found["total"]
                       else "No entries match." if text else "The knowledge base is empty: add files above.")
        off = gr.Button(interactive=False)  # a new page clears the selection
        return (_entries_frame(found["entries"]), [e["id"] for e in found["entries"]], found["page"], shown_count,
                gr.Button(interactive=found["page"] > 1), gr.Button(interactive=found["page"] < found["pages"]),
                "", off, gr.Row(visible=False))

    def choose(entry_ids: list, row: gr.SelectData):
        entry_id, title = entry_ids[row.index[0]], row.row_value[1]
        return (entry_id, gr.Button(interactive=True), gr.Row(visible=False),
                f"Remove \u201c{title}\u201d ({entry_id}) from the knowledge base? Customers will no longer get its answer.")

    def drop(session_token: str, entry_id: str):
        return f"Removed {service.kb_remove(session_token, entry_id)['removed']}.", gr.Row(visible=False)

    listing = dict(fn=shown(checked(show_entries)), inputs=[token, query, page],
                   outputs=[entries, ids, page, count, previous, following, chosen, remove, confirmation], api_visibility="private")
    gr.on([*opened, query.change], js=FIRST_PAGE, trigger_mode="always_last", **listing)
    previous.click(js=PAGE_BEFORE, **listing)
    following.click(js=PAGE_AFTER, **listing)
    upload.click(shown(checked(add_files)), [token, files], [uploaded], api_visibility="private").success(**listing)
    entries.select(choose, [ids], [chosen, remove, confirmation, question], api_visibility="private")
    remove.click(lambda: gr.Row(visible=True), None, [confirmation], api_visibility="private")
    cancel.click(lambda: gr.Row(visible=False), None, [confirmation], api_visibility="private")
    confirm.click(shown(checked(drop)), [token, chosen], [removed, confirmation], api_visibility="private").success(**listing)


def _entries_frame(entries: list[dict]) -> pd.DataFrame:
    rows = [[e["id"], e["title"], e["category"],
             f"{e['variants']} question{'s' * (e['variants'] != 1)}" if e["kind"] == "faq" else f"{e['passages']} passages",
             ago(e["updated_at"])] for e in entries]
    return pd.DataFrame(rows, columns=ENTRY_COLUMNS)


def _analytics_tab(service: SupportService, token: gr.BrowserState, tab: gr.Tab) -> None:
    with gr.Row(equal_height=True):
        summary = gr.Markdown(elem_id="analytics-summary")
        refresh = gr.Button("Refresh", size="sm", scale=0, min_width=100, elem_id="analytics-refresh")
    with gr.Row():
        # Typed even while empty: the chart keeps the axis types of its first value.
        per_day = gr.BarPlot(pd.DataFrame({"day": pd.Series(dtype=str), "conversations": pd.Series(dtype=int)}), x="day",
                             y="conversations", title="Conversations per day", y_axis_format="d", y_lim=[0, 10], elem_id="analytics-per-day")
        outcomes = gr.BarPlot(pd.DataFrame({"outcome": pd.Series(dtype=str), "share": pd.Series(dtype=float)}), x="outcome",
                              y="share", title="Where conversations are", y_title="share of conversations", y_axis_format=".0%",
                              y_lim=[0, 1], sort=list(STATUS_WORDS.values()), elem_id="analytics-outcomes")
        csat = gr.BarPlot(pd.DataFrame({"day": pd.Series(dtype=str), "CSAT": pd.Series(dtype=float)}), x="day", y="CSAT",
                          title="Customer satisfaction per day (1-5)", y_title="average rating", y_lim=[0, 5],
                          elem_id="analytics-csat")
    gaps = gr.Dataframe(pd.DataFrame(columns=GAP_COLUMNS), label="Knowledge gaps: questions handed off for want of an answer",
                        interactive=False, wrap=True, column_widths=["70%", "10%", "20%"], buttons=[], elem_id="analytics-gaps")

    def show_analytics(session_token: str):
        a = service.analytics(session_token)
        days = pd.DataFrame(a["per_day"], columns=["day", "conversations"]).astype({"day": str, "conversations": int})
        shares = pd.DataFrame([{"outcome": STATUS_WORDS.get(k, k), "share": v} for k, v in a["shares"].items()])
        gap_rows = pd.DataFrame([[g["question"], g["times"], ago(g["last_asked"])] for g in a["gaps"]], columns=GAP_COLUMNS)
        # Integer ticks: from 0 (one day's bar has a height) to at least 10, so that the axis never steps by fractions.
        top = max([10, *days["conversations"]])
        csat_days = pd.DataFrame([{"day": d["day"], "CSAT": d["average"]} for d in a["csat_per_day"]],
                                 columns=["day", "CSAT"]).astype({"day": str, "CSAT": float})
        return _analytics_summary(a), gr.BarPlot(days, y_lim=[0, top]), shares, csat_days, gap_rows

    gr.on([tab.select, refresh.click], shown(checked(show_analytics)), [token], [summary, per_day, outcomes, csat, gaps],
          api_visibility="private")


def _analytics_summary(a: dict) -> str:
    statuses = ", ".join(f"{n} {STATUS_WORDS.get(k, k)}" for k, n in a["statuses"].items())
    rate = ("no ratings yet" if a["thumbs_up_rate"] is None
            else f"{a['thumbs_up_rate']:.0%} thumbs up ({a['thumbs_up']} up, {a['thumbs_down']} down)")
    total = sum(a["statuses"].values())
    return (f"**{total} conversation{'s' * (total != 1)}** ({statuses}) \u00b7 **ratings**: {rate} \u00b7 "
            f"**CSAT**: {_csat_summary(a)} \u00b7 "
            f"**bot reply time**: median {_duration(a['latency_ms_p50'])}, 95th percentile {_duration(a['latency_ms_p95'])}")


def _csat_summary(a: dict) -> str:
    """The conversations' 1-5 ratings: the average, then by outcome ("4.2 / 5 (12; answered by the bot 4.5, ...)")."""
    if not a.get("csat_count"):
        return "no conversation rated yet"
    parts = [f"{CSAT_OUTCOME_WORDS.get(k, k)} {v['average']:.1f} ({v['count']})" for k, v in a["csat_by_outcome"].items() if v["count"]]
    return f"{a['csat_average']:.1f} / 5 from {a['csat_count']} rated conversation{'s' * (a['csat_count'] != 1)} ({'; '.join(parts)})"


def _models_tab(service: SupportService, token: gr.BrowserState, tab: gr.Tab) -> None:
    refresh = gr.Button("Refresh", size="sm", scale=0, min_width=100, elem_id="models-refresh")
    models = gr.Dataframe(pd.DataFrame(columns=MODEL_COLUMNS), label="Versions (newest first): click one to pick it", interactive=False,
                          wrap=True, buttons=[], column_widths=["20%", "14%", "9%", "12%", "12%", "10%", "12%", "11%"],
                          elem_id="models-table")
    with gr.Row(equal_height=True):
        version = gr.Textbox(label="Version", placeholder="a version from the table, or latest", elem_id="models-version")
        force = gr.Checkbox(label="Promote even if the gate finds a regression", elem_id="models-force")
    with gr.Row(equal_height=True):
        promote = gr.Button("Run the gate and promote", variant="primary", elem_id="models-promote")
        report = gr.Button("Show gate report", elem_id="models-report")
        role = gr.Dropdown([(ROLE_WORDS[r], r) for r in ROLES], value="lm", label="Roll back", elem_id="models-role")
        rollback = gr.Button("Roll back", variant="stop", elem_id="models-rollback")
    models_status = gr.Markdown(elem_id="models-status")
    gate_text = gr.Markdown(elem_id="gate-report")
    gate_plot = gr.Image(label="Gate: serving vs candidate", type="filepath", buttons=[], visible=False, elem_id="gate-plot")

    def list_models(session_token: str):
        return models_table(service.models(session_token))

    def pick_version(row: gr.SelectData):
        return row.row_value[0]

    def run_gate(session_token: str, name: str, forced: bool):
        job = service.promote(session_token, name or "latest", bool(forced))
        return f"Gate running for {name or 'latest'} (job {job['id']}); follow it on the Training tab."

    def roll_back(session_token: str, kind: str):
        return f"Now serving {service.rollback(session_token, kind)['serving']}.", models_table(service.models(session_token))

    def show_report(session_token: str, name: str):
        found = service.gate_report(session_token, name)
        # As an image, not a path: Gradio only sends files from its own folders, and the plot is in the home.
        plot = Image.open(found["plot"]) if found["plot"] else None
        return found["markdown"], gr.Image(plot, visible=plot is not None)

    gr.on([tab.select, refresh.click], shown(checked(list_models)), [token], [models], api_visibility="private")
    models.select(pick_version, None, [version], api_visibility="private")
    promote.click(shown(checked(run_gate)), [token, version, force], [models_status], api_visibility="private")
    rollback.click(shown(checked(roll_back)), [token, role], [models_status, models], api_visibility="private")
    report.click(shown(checked(show_report)), [token, version], [gate_text, gate_plot], api_visibility="private")


def models_table(models: list[dict]) -> pd.DataFrame:
    """One row per version: what it is, whether it serves, and its gate scores."""
    return pd.DataFrame([_model_row(m) for m in models], columns=MODEL_COLUMNS)


def _model_row(m: dict) -> list[str]:
    gate = m["metrics"].get("gate", {})
    kind = KIND_WORDS.get(m["kind"], m["kind"])
    precision, recall, latency = gate.get("handoff_precision"), gate.get("handoff_recall"), gate.get("latency_ms_p50")
    return [m["version"], f"{kind}, {m['method']}" if m["method"] else kind, "serving" if m["serving"] else "", ago(m["created"]),
            _score(gate.get("answer_similarity")), _score(gate.get("grounding")),
            f"{_score(precision)} / {_score(recall)}" if None not in (precision, recall) else "",
            _duration(latency) if latency is not None else ""]


def _training_tab(service: SupportService, token: gr.BrowserState) -> None:
    with gr.Row():
        method = gr.Dropdown(list(TRAINABLE), value="sft", label="Method", elem_id="train-method")
        epochs = gr.Number(1.0, label="Epochs", elem_id="train-epochs")
        max_steps = gr.Number(-1, precision=0, label="Max steps (-1: by epochs)", elem_id="train-steps")
    start = gr.Button("Start training", variant="primary", elem_id="train-start")
    started = gr.Markdown(elem_id="train-status")
    jobs = gr.Dataframe(pd.DataFrame(columns=JOB_COLUMNS), interactive=False, wrap=True, label="Jobs (newest first)", buttons=[],
                        column_widths=["10%", "20%", "10%", "20%", "40%"], elem_id="jobs-table")

    def start_job(session_token: str, name: str, epoch_count: float | None, steps: float | None):
        job = service.train(session_token, name, float(epoch_count or 1), int(steps if steps is not None else -1))
        return f"Started {job['title']} (job {job['id']}).", jobs_table(service.job_list(session_token))

    def refresh_jobs(session_token: str):
        """Every few seconds while the page is open; silent until someone with the ops role signs in."""
        try:
            return jobs_table(service.job_list(session_token))
        except USER_ERRORS:
            return gr.skip()

    start.click(shown(checked(start_job)), [token, method, epochs, max_steps], [started, jobs], api_visibility="private")
    gr.Timer(REFRESH_SECONDS).tick(shown(checked(refresh_jobs)), [token], [jobs], api_visibility="private", show_progress="hidden")


def jobs_table(jobs: list[dict]) -> pd.DataFrame:
    rows = [[j["id"], j["title"], j["status"], f"{j['stage']} {j['done']}/{j['total']}" if j["total"] else "",
             j["error"] or j["last_line"][-120:]] for j in jobs]
    return pd.DataFrame(rows, columns=JOB_COLUMNS)


# --- words for numbers and times --------------------------------------------------------------------


def _duration(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def _score(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"
