"""The Gradio app: customer chat, staff sign-in, agent review queue and ops console.

Each event handler does one thing: call a SupportService method and render its result. The same methods
are exposed through Gradio's API (`gr.api`) for `gradio_client`, so the UI and the API share one path.
"""

from __future__ import annotations

import functools
import inspect
import time
import types
import typing

import gradio as gr
import pandas as pd
from PIL import Image


from .ratelimit import Caller
from .service import ROLES, TRAINABLE, USER_ERRORS, ServiceError, SupportService

STREAM_INTERVAL = 0.08  # seconds between streamed updates: Gradio re-sends the whole message each time


def shown(fn):
    """Turn a refusal a person can act on into a Gradio error (a one-line toast / API error).
    Generator handlers stay generators, so Gradio still streams them."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def stream(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except USER_ERRORS as err:
                raise gr.Error(str(err)) from None

        return stream

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as err:
            raise gr.Error(str(err)) from None

    return call


def checked(fn):
    """Refuse API arguments of the wrong type before `fn` runs: any client can send any JSON, and a number
    for a string would otherwise fail deep inside with a message that names nothing the caller sent."""
    hints = typing.get_type_hints(fn)
    signature = inspect.signature(fn)

    def check(args, kwargs) -> None:
        for name, value in signature.bind(*args, **kwargs).arguments.items():
            if name in hints:
                _check_argument(name, value, hints[name])

    if inspect.isgeneratorfunction(fn):  # stays a generator function, so that Gradio still streams it

        @functools.wraps(fn)
        def stream(*args, **kwargs):
            check(args, kwargs)
            yield from fn(*args, **kwargs)

        return stream

    @functools.wraps(fn)
    def call(*args, **kwargs):
        check(args, kwargs)
        return fn(*args, **kwargs)

    return call


_INT64 = 2**63
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", type(None): "null"}


def _check_argument(name: str, value, expected) -> None:
    options = typing.get_args(expected) if typing.get_origin(expected) in (typing.Union, types.UnionType) else (expected,)
    if not any(_matches(value, kind) for kind in options):
        wanted = " or ".join(_TYPE_NAMES.get(kind, getattr(kind, "__name__", str(kind))) for kind in options)
        raise ServiceError(f"'{name}' must be {wanted}, got {type(value).__name__}")
    if isinstance(value, int) and not isinstance(value, bool) and not -_INT64 <= value < _INT64:
        raise ServiceError(f"'{name}' is out of range")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ServiceError(f"'{name}' is not valid text (character {err.start + 1} is half of a surrogate pair)") from None


def _matches(value, kind) -> bool:
    """isinstance, as JSON means it: a bool is not a number, an integer is a float."""
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typing.get_origin(kind) or kind)


def caller_of(request: gr.Request) -> Caller:
    """The rate-limited identity of a Gradio call: the client's address and its browser session."""
    return Caller(request.client.host if request.client else "", request.session_hash or "")


# --- rendering ------------------------------------------------------------------------------------


def sources_markdown(sources: list[dict]) -> str:
    links = [f"[{s['title']}]({s['url']})" if s.get("url") else s["title"] for s in sources]
    return f"\n\n*Sources: {'; '.join(links)}*" if links else ""


def render_chat(history: list[dict]) -> list[dict]:
    """Log messages as chat bubbles: the customer on the right, bot and agents on the left."""
    bubbles = []
    for m in history:
        if m["role"] == "customer":
            bubbles.append({"role": "user", "content": m["text"]})
        elif m["role"] == "bot":
            shown_sources = [] if m["handed_off"] else m["sources"]  # a hand-off cites nothing to the customer
            bubbles.append({"role": "assistant", "content": m["text"] + sources_markdown(shown_sources)})
        else:
            bubbles.append({"role": "assistant", "content": f"**Support agent:** {m['text']}"})
    return bubbles


def models_table(models: list[dict]) -> pd.DataFrame:
    """One row per version: what it is, whether it serves, its gate and training numbers."""
    rows = []
    for m in models:
        gate, train = m["metrics"].get("gate", {}), m["metrics"].get("train", {})
        rows.append({"version": m["version"], "kind": m["kind"], "serving": "yes" if m["serving"] else "",
                     "parent": m["parent"], "created": m["created"].replace("T", " ")[:19],
                     "similarity": gate.get("answer_similarity"), "grounding": gate.get("grounding"),
                     "hand-off P": gate.get("handoff_precision"), "hand-off R": gate.get("handoff_recall"),
                     "p50 ms": gate.get("latency_ms_p50"), "train loss": _rounded(train.get("train_loss")),
                     "train s": _rounded(train.get("seconds"), 0)})
    return pd.DataFrame(rows)


def jobs_table(jobs: list[dict]) -> pd.DataFrame:
    rows = [{"job": j["id"], "what": j["title"], "status": j["status"],
             "progress": f"{j['stage']} {j['done']}/{j['total']}" if j["total"] else "",
             "latest": j["error"] or j["last_line"][-120:]} for j in jobs]
    return pd.DataFrame(rows, columns=["job", "what", "status", "progress", "latest"])


def _rounded(value, digits: int = 4):
    return None if value is None else round(float(value), digits)


def queue_table(queue: dict) -> pd.DataFrame:
    rows = [[i["waiting_since"][:19].replace("T", " "), i["reason"], i["channel"], i["last_customer"][:120], i["conversation_id"]]
            for i in queue["items"]]
    return pd.DataFrame(rows, columns=["waiting since (UTC)", "why", "channel", "last customer message", "conversation"])


# --- the app --------------------------------------------------------------------------------------


def build_blocks(service: SupportService) -> gr.Blocks:
    company = service.config.answer.company
    with gr.Blocks(title=f"{company} support", analytics_enabled=False) as blocks:
        _api(service)  # first, so that the API names are not taken by the UI's private handlers
        token = gr.State("")
        with gr.Tab("Chat", id="chat"):
            _customer_tab(service, company, blocks)
        with gr.Tab("Staff sign-in", id="signin"):
            _signin_tab(service, token)
        with gr.Tab("Agent", id="agent"):
            _agent_tab(service, token)
        with gr.Tab("Ops", id="ops"):
            _ops_tab(service, token)
    return blocks


def _customer_tab(service: SupportService, company: str, blocks: gr.Blocks) -> None:
    gr.Markdown(f"### {company} support\nAsk about orders, shipping, returns, payments or your account.")
    conversation = gr.BrowserState("", storage_key="supportbot-conversation")
    ids = gr.State([])  # log message id of each bubble, for ratings
    chat = gr.Chatbot(label="Conversation", height=460, feedback_options=("Like", "Dislike"), buttons=["copy"],
                      group_consecutive_messages=False,
                      elem_id="customer-chat")
    with gr.Row():
        message = gr.Textbox(placeholder="Type your question and press Enter", show_label=False, scale=5, elem_id="customer-message")
        send = gr.Button("Send", variant="primary", scale=1, elem_id="customer-send")
    with gr.Row():
        person = gr.Button("Talk to a person", elem_id="talk-to-person")
        fresh = gr.Button("New conversation", elem_id="new-conversation")
        comment = gr.Textbox(placeholder="Optional comment with your rating", show_label=False, scale=3, elem_id="rating-comment")
    notice = gr.Markdown(elem_id="customer-notice")

    # The conversation id comes from the browser's storage, which a client may fill with anything: checked.
    def restore(conversation_id: str):
        history = service.history(conversation_id)
        return render_chat(history), [m["id"] for m in history], conversation_id if history else ""

    def ask(text: str, conversation_id: str, request: gr.Request):
        shown_history = service.history(conversation_id)
        bubbles = render_chat(shown_history) + [{"role": "user", "content": text}, {"role": "assistant", "content": ""}]
        last = 0.0
        for update in service.chat(text, conversation_id, caller_of(request)):
            if update["done"]:
                conversation_id = update["reply"]["conversation_id"]
                history = service.history(conversation_id)
                yield render_chat(history), [m["id"] for m in history], conversation_id, ""
            elif time.monotonic() - last >= STREAM_INTERVAL:
                last = time.monotonic()
                bubbles[-1]["content"] = update["text"]
                yield bubbles, gr.skip(), gr.skip(), ""

    def rate(data: gr.LikeData, message_ids, text):
        message_id = message_ids[data.index[0] if isinstance(data.index, (list, tuple)) else data.index]
        service.rate(message_id, bool(data.liked), text)
        return "Thanks for your feedback.", ""

    def hand_off(conversation_id: str):
        result = service.talk_to_person(conversation_id)
        history = service.history(result["conversation_id"])
        return render_chat(history), [m["id"] for m in history], result["conversation_id"]

    def poll(conversation_id: str, message_ids):
        """Agents' replies appear without a reload: re-render when the log has new messages."""
        history = service.history(conversation_id)
        if [m["id"] for m in history] == message_ids:
            return gr.skip(), gr.skip()
        return render_chat(history), [m["id"] for m in history]

    outputs = [chat, ids, conversation]
    gr.on([message.submit, send.click], shown(checked(ask)), [message, conversation], [*outputs, message], api_visibility="private",
          concurrency_limit=service.config.serve.concurrency)
    chat.like(shown(rate), [ids, comment], [notice, comment], api_visibility="private")
    person.click(shown(checked(hand_off)), [conversation], outputs, api_visibility="private")
    fresh.click(lambda: ([], [], ""), None, outputs, api_visibility="private")
    gr.Timer(service.config.serve.poll_seconds).tick(shown(checked(poll)), [conversation, ids], [chat, ids], api_visibility="private",
                                                     show_progress="hidden")
    blocks.load(shown(checked(restore)), [conversation], outputs, api_visibility="private")


def _signin_tab(service: SupportService, token: gr.State) -> None:
    gr.Markdown("### Staff sign-in\nAgents review the queue; ops manage the knowledge base and models.")
    user = gr.Textbox(label="User", elem_id="login-user")
    password = gr.Textbox(label="Password", type="password", elem_id="login-password")
    login = gr.Button("Sign in", variant="primary", elem_id="login-button")
    status = gr.Markdown("Not signed in.", elem_id="login-status")

    def sign_in(name: str, secret: str, request: gr.Request):
        session = service.login(name, secret, caller_of(request))
        return session["token"], f"Signed in as **{session['user']}** ({session['role']})."

    gr.on([login.click, password.submit], shown(checked(sign_in)), [user, password], [token, status], api_visibility="private")


def _agent_tab(service: SupportService, token: gr.State) -> None:
    counts = gr.Markdown("Sign in as an agent, then refresh the queue.", elem_id="queue-counts")
    refresh = gr.Button("Refresh queue", elem_id="queue-refresh")
    table = gr.Dataframe(label="Waiting for a person (oldest first)", interactive=False, elem_id="queue-table")
    selected = gr.Textbox(label="Conversation", elem_id="agent-conversation")
    history = gr.Chatbot(label="History", height=320, elem_id="agent-history")
    info = gr.Markdown(elem_id="agent-suggestion-info")
    reply = gr.Textbox(label="Suggested reply (edit it, or replace it with your own)", lines=4, elem_id="agent-reply")
    draft = gr.State("")
    draft_id = gr.State(None)
    with gr.Row():
        approve = gr.Button("Send as is", variant="primary", elem_id="agent-approve")
        edit = gr.Button("Send edited", elem_id="agent-edit")
        reject = gr.Button("Reject and send my own", elem_id="agent-reject")
        close = gr.Button("Close conversation", elem_id="agent-close")
    done = gr.Markdown(elem_id="agent-status")

    def load_queue(session_token):
        queue = service.queue(session_token)
        c = queue["counts"]
        text = (f"**{len(queue['items'])} waiting**: {c['handed_off']} handed off, {c['disliked']} rated down, "
                f"{c['low_confidence']} low confidence, {c['copilot']} copilot")
        return text, queue_table(queue)

    def pick(data: gr.SelectData, frame):
        return frame.iloc[data.index[0]]["conversation"]

    def open_conversation(session_token, conversation_id):
        if not conversation_id:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        review = service.review(session_token, conversation_id)
        s = review["suggestion"]
        sources = ", ".join(f"{x['title']} ({x.get('score', 0):.2f})" for x in s["sources"]) or "none"
        text = f"Bot confidence **{s['confidence']:.2f}**; sources: {sources}" + (f"; handed off: {s['handed_off_reason']}" if s["handed_off_reason"] else "")
        return render_chat(review["history"]), text, s["text"], s["text"], s["draft_message_id"]

    def act(action):
        def handler(session_token, conversation_id, text, suggested, suggested_id):
            service.send(session_token, conversation_id, action, text, suggested, suggested_id)
            return render_chat(service.history(conversation_id)), f"Sent ({action})."
        return handler

    def finish(session_token, conversation_id):
        service.close(session_token, conversation_id)
        return f"Conversation {conversation_id[:8]} resolved."

    refresh.click(shown(load_queue), [token], [counts, table], api_visibility="private")
    table.select(pick, [table], [selected], api_visibility="private")
    selected.change(shown(open_conversation), [token, selected], [history, info, reply, draft, draft_id], api_visibility="private")
    for button, action in ((approve, "approved"), (edit, "edited"), (reject, "rejected")):
        button.click(shown(act(action)), [token, selected, reply, draft, draft_id], [history, done], api_visibility="private")
    close.click(shown(finish), [token, selected], [done], api_visibility="private")


def _ops_tab(service: SupportService, token: gr.State) -> None:
    with gr.Tab("Knowledge base"):
        files = gr.File(label="Upload CSV, JSON, JSONL, Markdown or text", file_count="multiple", elem_id="kb-files")
        upload = gr.Button("Add to knowledge base", variant="primary", elem_id="kb-upload")
        uploaded = gr.Markdown(elem_id="kb-upload-status")
        query = gr.Textbox(label="Find entries (id, title or a question)", elem_id="kb-query")
        entries = gr.Dataframe(interactive=False, elem_id="kb-entries")
        entry_id = gr.Textbox(label="Entry id to remove", elem_id="kb-remove-id")
        remove = gr.Button("Remove entry", variant="stop", elem_id="kb-remove")
        removed = gr.Markdown()
    with gr.Tab("Analytics"):
        refresh = gr.Button("Refresh analytics", elem_id="analytics-refresh")
        summary = gr.Markdown(elem_id="analytics-summary")
        per_day = gr.BarPlot(x="day", y="conversations", title="Conversations per day")
        outcomes = gr.BarPlot(x="outcome", y="share", title="Outcomes")
        gaps = gr.Dataframe(label="Questions the bot could not answer (knowledge gaps)", interactive=False)
    with gr.Tab("Models"):
        models_refresh = gr.Button("Refresh models", elem_id="models-refresh")
        models = gr.Dataframe(interactive=False, elem_id="models-table")
        with gr.Row():
            version = gr.Textbox(label="Version", placeholder="a version from the table, or latest", elem_id="models-version")
            force = gr.Checkbox(label="Promote even if the gate finds a regression", elem_id="models-force")
        with gr.Row():
            promote = gr.Button("Run the gate and promote", variant="primary", elem_id="models-promote")
            report = gr.Button("Show gate report", elem_id="models-report")
            role = gr.Dropdown(list(ROLES), value="lm", label="Roll back", elem_id="models-role")
            rollback = gr.Button("Roll back", variant="stop", elem_id="models-rollback")
        models_status = gr.Markdown(elem_id="models-status")
        gate_text = gr.Markdown(elem_id="gate-report")
        gate_plot = gr.Image(label="Gate: serving vs candidate", type="filepath", elem_id="gate-plot")
    with gr.Tab("Training"):
        with gr.Row():
            method = gr.Dropdown(list(TRAINABLE), value="sft", label="Method", elem_id="train-method")
            epochs = gr.Number(1.0, label="Epochs", elem_id="train-epochs")
            max_steps = gr.Number(-1, precision=0, label="Max steps (-1: by epochs)", elem_id="train-steps")
        start = gr.Button("Start training", variant="primary", elem_id="train-start")
        started = gr.Markdown(elem_id="train-status")
        jobs = gr.Dataframe(interactive=False, label="Jobs (newest first)", elem_id="jobs-table")
        ticker = gr.Timer(3.0)

    def add_files(session_token, paths, progress=gr.Progress()):
        if not paths:
            raise gr.Error("choose one or more files first")
        report = service.kb_upload(session_token, paths, lambda stage, done, total: progress((done, total), desc=stage))
        return (f"Added {report['added']}, updated {report['updated']}, unchanged {report['unchanged']} entries "
                f"({report['embedded']} texts embedded, {report['seconds']:.1f} s).")

    def find(session_token, text):
        return pd.DataFrame(service.kb_entries(session_token, text))

    def drop(session_token, entry):
        return f"Removed {service.kb_remove(session_token, entry)['removed']}."

    def show_analytics(session_token):
        a = service.analytics(session_token)
        rate = "no ratings yet" if a["thumbs_up_rate"] is None else f"{a['thumbs_up_rate']:.0%} thumbs up"
        text = (f"**Conversations** {sum(a['statuses'].values())} ({', '.join(f'{k}: {v}' for k, v in a['statuses'].items())}); "
                f"**ratings** {rate} ({a['thumbs_up']} up, {a['thumbs_down']} down); "
                f"**reply latency** p50 {a['latency_ms_p50']:.0f} ms, p95 {a['latency_ms_p95']:.0f} ms")
        shares = pd.DataFrame([{"outcome": k, "share": v} for k, v in a["shares"].items()])
        return text, pd.DataFrame(a["per_day"], columns=["day", "conversations"]), shares, pd.DataFrame(a["gaps"])

    def list_models(session_token):
        return models_table(service.models(session_token))

    def run_gate(session_token, name, forced):
        job = service.promote(session_token, name or "latest", bool(forced))
        return f"Gate running for {name or 'latest'} (job {job['id']}); follow it on the Training tab."

    def roll_back(session_token, kind):
        return f"Now serving {service.rollback(session_token, kind)['serving']}.", models_table(service.models(session_token))

    def show_report(session_token, name):
        found = service.gate_report(session_token, name)
        # As an image, not a path: Gradio only sends files from its own folders, and the plot is in the home.
        return found["markdown"], Image.open(found["plot"])

    def start_job(session_token, name, epoch_count, steps):
        job = service.train(session_token, name, float(epoch_count or 1), int(steps if steps is not None else -1))
        return f"Started {job['title']} (job {job['id']}).", jobs_table(service.job_list(session_token))

    def refresh_jobs(session_token):
        """Every few seconds while the page is open; silent until someone with the ops role signs in."""
        try:
            return jobs_table(service.job_list(session_token))
        except USER_ERRORS:
            return gr.skip()

    upload.click(shown(add_files), [token, files], [uploaded], api_visibility="private")
    gr.on([query.submit, query.change], shown(find), [token, query], [entries], api_visibility="private", trigger_mode="always_last")
    remove.click(shown(drop), [token, entry_id], [removed], api_visibility="private")
    refresh.click(shown(show_analytics), [token], [summary, per_day, outcomes, gaps], api_visibility="private")
    models_refresh.click(shown(list_models), [token], [models], api_visibility="private")
    promote.click(shown(run_gate), [token, version, force], [models_status], api_visibility="private")
    rollback.click(shown(roll_back), [token, role], [models_status, models], api_visibility="private")
    report.click(shown(show_report), [token, version], [gate_text, gate_plot], api_visibility="private")
    start.click(shown(start_job), [token, method, epochs, max_steps], [started, jobs], api_visibility="private")
    ticker.tick(refresh_jobs, [token], [jobs], api_visibility="private", show_progress="hidden")


def _api(service: SupportService) -> None:
    """The same service methods, named for `gradio_client` (e.g. client.predict(..., api_name="/queue"))."""

    def chat(message: str, conversation_id: str = "", request: gr.Request = None) -> dict:
        """Ask the bot; streams dicts with the text so far, the last one with the full reply."""
        yield from service.chat(message, conversation_id, caller_of(request))

    def login(user: str, password: str, request: gr.Request) -> dict:
        """Sign in as staff; returns the token the staff functions take first."""
        return service.login(user, password, caller_of(request))

    for fn in (service.history, service.rate, service.talk_to_person, login, service.queue, service.review,
               service.send, service.close, service.kb_entries, service.kb_remove, service.analytics, service.models,
               service.train, service.promote, service.rollback, service.job_list, service.gate_report):
        gr.api(shown(checked(fn)), api_name=fn.__name__)
    gr.api(shown(checked(chat)), api_name="chat", concurrency_limit=service.config.serve.concurrency)
    gr.api(shown(checked(service.kb_upload_text)), api_name="kb_upload")
