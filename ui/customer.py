"""The customer's page, served at `/`: the chat and nothing else (staff pages live at `/staff`).

The company's name and logo head the page; an empty chat greets the customer and offers a few questions to start
from. The conversation is kept in the browser across reloads until the customer starts a new one. Each answer takes
a thumb and an optional comment; a customer can ask for a person, and change their mind while waiting. A closed
conversation asks once for a 1-5 rating (CSAT) with an optional comment; a hand-off while the team is away (outside
serve.business_hours) offers a box for an email address for the answer.
"""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path

import gradio as gr

from chatbot import Config, ConfigError

from .service import USER_ERRORS, SupportService
from .web import api, caller_of, checked, render_chat, shown

STREAM_INTERVAL = 0.08  # seconds between streamed updates: Gradio re-sends the whole message each time
STATIC = Path(__file__).parent / "static"
# What the browser remembers for a new conversation. Gradio's BrowserState never writes a falsy value, so storing
# "" kept the old id there and a reload brought the old conversation back. No conversation has this id (the log's
# are hex), and the service starts a new conversation for an id it does not know.
NEW_CONVERSATION = "new"
TYPING = '<span class="typing" aria-label="The assistant is typing"><span></span><span></span><span></span></span>'
WAITING = "**Waiting for a person…** An agent will reply here."
CSAT_QUESTION = "**How did we do?** Rate this conversation from 1 (poor) to 5 (excellent)."
CSAT_THANKS = "Thanks for rating us!"
LOGO_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
              ".webp": "image/webp", ".svg": "image/svg+xml"}
MAX_LOGO_BYTES = 512_000
# Focus the comment box after a thumb, where a mouse is used: on a phone it would pop the keyboard up each time.
FOCUS_COMMENT = """() => { const box = document.querySelector('#rating-comment textarea');
    if (box && !box.value && matchMedia('(pointer: fine)').matches) box.focus(); }"""
# The page's look (see page_look). Gradio 6 applies it only when given to launch() or mount_gradio_app, not to
# gr.Blocks. System fonts: the default theme would fetch Google's, which a shop's privacy notice would have to
# mention and which an offline install cannot reach. Light only: the page's colours are the company's, and
# Gradio's dark mode (on when the system prefers it) would write light text on the light bubbles.
LOOK = {"css_paths": [STATIC / "customer.css"], "js": "() => document.body.classList.remove('dark')",
        "theme": gr.themes.Default(primary_hue="blue", font=["system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"],
                                   font_mono=["ui-monospace", "monospace"])}


def page_look(config: Config) -> dict:
    """What mount_gradio_app takes besides the Blocks: the page's look, and the company's logo (else its initial) as
    the browser tab's icon in place of Gradio's."""
    icon = logo_src(config.serve.logo) or initial_icon(config.answer.company)
    return {**LOOK, "head": f'<link rel="icon" href="{html.escape(icon)}">'}


def build_customer_blocks(service: SupportService) -> gr.Blocks:
    welcome = service.welcome()
    with gr.Blocks(title=f"{welcome['company']} support", fill_height=True, analytics_enabled=False) as blocks:
        api(service)  # first, so that the API names are not taken by the UI's private handlers
        CustomerPage(service).build(blocks, welcome, logo_src(service.config.serve.logo))
    return blocks


def logo_src(logo: str) -> str:
    """An image's `src` for the configured logo: a URL as is, a file inline (a data: URL), so that serving the
    logo exposes no other file on this machine; "" for none."""
    if not logo or logo.startswith(("https://", "http://")):
        return logo
    path = Path(logo).expanduser()
    kind = LOGO_TYPES.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(f"serve.logo {logo}: expected an image file ({', '.join(LOGO_TYPES)}) or an http(s) URL")
    if not path.is_file():
        raise ConfigError(f"serve.logo {logo}: no such file")
    data = path.read_bytes()
    if len(data) > MAX_LOGO_BYTES:
        raise ConfigError(f"serve.logo {logo}: {len(data):,} bytes, over the limit of {MAX_LOGO_BYTES:,} (it is sent with every page)")
    return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"


def initial(company: str) -> str:
    return html.escape(company.strip()[:1].upper())


def initial_icon(company: str) -> str:
    """The company's initial on a badge, as an image (a data: URL)."""
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="8" fill="#2563eb"/>'
           '<text x="16" y="23" font-family="sans-serif" font-size="19" font-weight="700" fill="#fff" text-anchor="middle">'
           f'{initial(company)}</text></svg>')
    return f"data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode('ascii')}"


def header_html(company: str, logo: str) -> str:
    """The company's logo (else its initial in a badge) and name."""
    name = html.escape(company)
    mark = (f'<img class="brand-logo" src="{html.escape(logo)}" alt="">' if logo
            else f'<div class="brand-mark" aria-hidden="true">{initial(company)}</div>')
    title = f'<div><div class="brand-name">{name}</div><div class="brand-tag">Customer support</div></div>'
    return f'<header class="brand">{mark}{title}</header>'


def suggestions(welcome: dict) -> list[dict]:
    """The suggested questions as the Chatbot's examples: chips that send their text when clicked."""
    return [{"text": question} for question in welcome["suggested_questions"]]


def feedback_values(history: list[dict]) -> list[str | None]:
    """The stored thumb of each assistant bubble, in order, as the Chatbot's `feedback_value` shows it."""
    return [{1: "Like", -1: "Dislike"}.get(m["rating"]) for m in history if m["role"] != "customer"]


def rateable_ids(history: list[dict]) -> list[int]:
    """The log id behind each bubble, 0 where there is nothing to rate (the customer's and agents' messages)."""
    return [m["id"] if m["role"] == "bot" else 0 for m in history]


def rated_id(ids: list[int], index: int | list[int]) -> int:
    """The log id of the bubble a thumb was clicked on; 0 for the reply still being typed."""
    position = index[0] if isinstance(index, (list, tuple)) else index
    return ids[position] if 0 <= position < len(ids) else 0


class CustomerPage:
    """The page's components and handlers; each handler calls one SupportService method and shows the result."""

    def __init__(self, service: SupportService):
        self.service = service

    def build(self, blocks: gr.Blocks, welcome: dict, logo: str) -> None:
        gr.HTML(header_html(welcome["company"], logo), js_on_load=None, elem_id="customer-header")
        self.conversation = gr.BrowserState("", storage_key="supportbot-conversation")
        # What the chat shows: the log id behind each bubble (for ratings) and the conversation's status.
        self.shown = gr.State({"ids": [], "status": ""})
        self.rated = gr.State(None)  # {"id", "up"}: the last thumb given, which a comment sent after it joins
        self.chat = gr.Chatbot(show_label=False, container=False, scale=1, height="100%", min_height=240, layout="bubble",
                               placeholder=welcome["greeting"], examples=suggestions(welcome), buttons=[],
                               feedback_options=("Like", "Dislike"), group_consecutive_messages=False, elem_id="customer-chat")
        with gr.Row(visible=False, elem_id="waiting-notice") as self.waiting:
            gr.Markdown(WAITING)
            self.leave = gr.Button("No longer need a person", size="sm", scale=0, min_width=0, elem_id="leave-queue")
        with gr.Row(visible=False, equal_height=True, elem_id="rating-row") as self.feedback:
            self.comment = gr.Textbox(placeholder="Add a comment (optional)", show_label=False, lines=1,
                                      max_lines=3, container=False, scale=1, min_width=0, elem_id="rating-comment")
            self.comment_send = gr.Button("Send", scale=0, min_width=0, elem_id="rating-send")
        with gr.Column(visible=False, elem_id="csat") as self.csat:
            gr.Markdown(CSAT_QUESTION, elem_id="csat-question")
            with gr.Row(equal_height=True, elem_id="csat-scores"):
                self.scores = [gr.Button(str(n), size="sm", min_width=0, elem_id=f"csat-{n}") for n in range(1, 6)]
            self.csat_comment = gr.Textbox(placeholder="Add a comment (optional), then pick a score", show_label=False,
                                           lines=1, max_lines=3, container=False, elem_id="csat-comment")
        with gr.Row(visible=False, equal_height=True, elem_id="away-email") as self.away:
            self.away_text = gr.Markdown(elem_id="away-email-text")
            self.email = gr.Textbox(placeholder="you@example.com", show_label=False, lines=1, max_lines=1, container=False,
                                    scale=1, min_width=0, elem_id="away-email-address")
            self.email_send = gr.Button("Send", scale=0, min_width=0, elem_id="away-email-send")
        self.notice = gr.Markdown(elem_id="customer-notice")
        with gr.Row(equal_height=True, elem_id="customer-input"):
            self.message = gr.Textbox(placeholder="Type your question…", show_label=False, lines=1, max_lines=4,
                                      container=False, scale=1, min_width=0, autofocus=True, elem_id="customer-message")
            self.send = gr.Button("Send", variant="primary", scale=0, min_width=0, elem_id="customer-send")
        with gr.Row(elem_id="customer-actions"):
            self.person = gr.Button("Talk to a person", size="sm", scale=0, elem_id="talk-to-person")
            self.fresh = gr.Button("New conversation", size="sm", scale=0, elem_id="new-conversation")
        self._wire(blocks)

    def _wire(self, blocks: gr.Blocks) -> None:
        view = [self.chat, self.shown, self.waiting, self.person, self.feedback, self.csat, self.away, self.away_text,
                self.conversation]
        quiet = {"api_visibility": "private", "show_progress": "hidden"}
        asking = {"concurrency_limit": self.service.config.serve.concurrency, **quiet}
        # The stored id may reach the page after its load event (Gradio reads the browser's storage as the component
        # mounts): restore on both, and restore nothing while the id is still unknown.
        for restored in (blocks.load, self.conversation.change):
            restored(shown(checked(self.restore)), [self.conversation], view, **quiet)
        blocks.load(self.suggest, None, [self.chat], **quiet)
        gr.on([self.message.submit, self.send.click], shown(checked(self.ask)), [self.message, self.conversation],
              [*view, self.message], **asking)
        self.chat.example_select(shown(checked(self.ask_suggested)), [self.conversation], [*view, self.message], **asking)
        self.chat.like(shown(checked(self.thumb)), [self.conversation, self.shown, self.comment],
                       [self.chat, self.rated, self.comment, self.notice], **quiet).then(None, js=FOCUS_COMMENT)
        gr.on([self.comment.submit, self.comment_send.click], shown(checked(self.send_comment)), [self.rated, self.comment],
              [self.comment, self.notice], **quiet)
        self.person.click(shown(checked(self.hand_off)), [self.conversation], view, **quiet)
        self.leave.click(shown(checked(self.leave_queue)), [self.conversation], view, **quiet)
        self.fresh.click(self.new_conversation, None, [*view, self.rated, self.comment, self.notice], **quiet)
        for score, button in enumerate(self.scores, 1):
            button.click(shown(checked(self._rate_with(score))), [self.conversation, self.csat_comment],
                         [*view, self.csat_comment, self.notice], **quiet)
        gr.on([self.email.submit, self.email_send.click], shown(checked(self.leave_email)), [self.conversation, self.email],
              [*view, self.email, self.notice], **quiet)
        gr.Timer(self.service.config.serve.poll_seconds).tick(shown(checked(self.poll)), [self.conversation, self.shown], view, **quiet)

    # --- what the page shows ----------------------------------------------------------------------

    def _view(self, conversation_id: str) -> dict:
        """The logged conversation with its ratings, and what its state allows (a person asked for, or not; a rating of
        the closed conversation; an email address while the team is away)."""
        return self._render(self.service.history(conversation_id), self.service.state(conversation_id), conversation_id)

    def _render(self, history: list[dict], state: dict, conversation_id: str) -> dict:
        status = state.get("status", "")
        waiting, ids = status == "handed_off", rateable_ids(history)
        asks_email = bool(state.get("away")) and not state.get("email_left")
        return {self.chat: gr.Chatbot(value=render_chat(history), feedback_value=feedback_values(history)),
                self.shown: {"ids": ids, "state": state}, self.waiting: gr.Row(visible=waiting),
                self.person: gr.Button(visible=not waiting), self.feedback: gr.Row(visible=any(ids)),
                self.csat: gr.Column(visible=bool(history) and state.get("closed", False) and not state.get("rated")),
                self.away: gr.Row(visible=asks_email),
                self.away_text: f"Our team is back {state['away']}. Leave your email address for the answer:" if asks_email else "",
                self.conversation: conversation_id if history else NEW_CONVERSATION}

    def _answered(self, conversation_id: str) -> dict:
        """The view after a turn, with the bubbles alone: the thumbs the page shows are right already (the new reply
        has none), and a plain list is what any client of the chat box reads."""
        history = self.service.history(conversation_id)
        return {**self._render(history, self.service.state(conversation_id), conversation_id), self.chat: render_chat(history)}

    # --- handlers ---------------------------------------------------------------------------------

    # The conversation id comes from the browser's storage, which a client may fill with anything: checked.
    def restore(self, conversation_id: str) -> dict:
        """The conversation this browser was in, as the log has it (an unknown id shows an empty chat); "" is what the
        page holds until the browser's storage is read, and overwriting the stored id with it would lose it."""
        return self._view(conversation_id) if conversation_id else gr.skip()

    def suggest(self) -> gr.Chatbot:
        """Questions to start from, as chips on the empty chat: the most answered ones change as customers ask."""
        return gr.Chatbot(examples=suggestions(self.service.welcome()))

    def ask(self, text: str, conversation_id: str, request: gr.Request):
        """The question shows at once with a typing bubble, the answer streams into it, then the logged turn replaces
        both (the policy may have changed the streamed text)."""
        if text.strip():
            yield from self._ask(text, conversation_id, caller_of(request))

    def ask_suggested(self, conversation_id: str, selected: gr.SelectData, request: gr.Request):
        """A suggested question clicked: asked as if typed."""
        yield from self._ask(selected.value["text"], conversation_id, caller_of(request))

    def _ask(self, text: str, conversation_id: str, caller):
        bubbles = render_chat(self.service.history(conversation_id))
        bubbles += [{"role": "user", "content": text}, {"role": "assistant", "content": TYPING}]
        yield {self.chat: bubbles, self.message: ""}
        last = 0.0
        try:
            for update in self.service.chat(text, conversation_id, caller):
                if update["done"]:
                    yield self._answered(update["reply"]["conversation_id"])
                elif update["text"].strip() and time.monotonic() - last >= STREAM_INTERVAL:
                    last = time.monotonic()
                    bubbles[-1]["content"] = update["text"]
                    yield {self.chat: bubbles}
        except USER_ERRORS:  # refused (e.g. too many messages): the question goes back to the input, not lost
            yield {**self._view(conversation_id), self.message: text}
            raise

    def thumb(self, conversation_id: str, shown: dict, comment: str, data: gr.LikeData) -> dict:
        """A thumb rates that reply at once, with any comment already typed; the same thumb again clears the rating
        (Gradio then sends liked ""). A comment sent afterwards joins this rating."""
        message_id = rated_id(shown.get("ids", []), data.index)
        if not message_id:
            return gr.skip()
        thumbs_up = None if data.liked == "" else bool(data.liked)
        self.service.rate(message_id, thumbs_up, comment if thumbs_up is not None else "")
        # The stored thumbs, as the chat's own: else the next bubbles it is given would show the old ones.
        thumbs = gr.Chatbot(feedback_value=feedback_values(self.service.history(conversation_id)))
        if thumbs_up is None:
            return {self.chat: thumbs, self.rated: None, self.notice: "Rating removed."}
        rated = {"id": message_id, "up": thumbs_up}
        if comment.strip():
            return {self.chat: thumbs, self.rated: rated, self.comment: "", self.notice: "Thanks for your feedback."}
        return {self.chat: thumbs, self.rated: rated, self.notice: "Thanks! Tell us more below if you like."}

    def send_comment(self, rated: dict | None, comment: str) -> dict:
        """A comment sent after a thumb updates that same rating (one rating, with its comment)."""
        if not comment.strip():
            return gr.skip()
        if not rated:
            return {self.notice: "Rate an answer with 👍 or 👎 and your comment goes with it."}
        self.service.rate(rated["id"], rated["up"], comment)
        return {self.comment: "", self.notice: "Thanks for your feedback."}

    def hand_off(self, conversation_id: str) -> dict:
        """Ask for a person; asked again while waiting, nothing new is posted."""
        return self._view(self.service.talk_to_person(conversation_id)["conversation_id"])

    def leave_queue(self, conversation_id: str) -> dict:
        """The customer no longer needs a person: the bot takes the conversation back."""
        return self._view(self.service.leave_queue(conversation_id)["conversation_id"])

    def _rate_with(self, score: int):
        def rate_conversation(conversation_id: str, comment: str) -> dict:
            """A score button of "How did we do?": rates the closed conversation, with the comment typed above it."""
            self.service.rate_conversation(conversation_id, score, comment)
            return {**self._view(conversation_id), self.csat_comment: "", self.notice: CSAT_THANKS}

        return rate_conversation

    def leave_email(self, conversation_id: str, email: str) -> dict:
        """An address for the answer, while the team is away; the box then goes."""
        if not email.strip():
            return gr.skip()
        self.service.leave_email(conversation_id, email)
        return {**self._view(conversation_id), self.email: "",
                self.notice: "Thanks! We'll also send the answer to the address you left."}

    def new_conversation(self) -> dict:
        """An empty chat, remembered as such by the browser, so that a reload does not bring the old one back."""
        return {**self._render([], {}, ""), self.rated: None, self.comment: "", self.notice: ""}

    def poll(self, conversation_id: str, shown: dict) -> dict:
        """Agents' replies (and an agent closing the conversation, or idle closing) appear without a reload."""
        history, state = self.service.history(conversation_id), self.service.state(conversation_id)
        if shown == {"ids": rateable_ids(history), "state": state}:
            return gr.skip()
        return self._render(history, state, conversation_id)
