"""The ops console's Suggestions tab: what the log suggests adding to the knowledge base or changing in it
(training/suggestions.py), each with its evidence; accept (after editing), reject, or run the learning loop."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from .service import SupportService
from .web import checked, shown

SUGGESTION_COLUMNS = ["kind", "entry", "asked", "wording or answer", "last"]
KIND_WORDS = {"new_entry": "new entry", "variant": "new wording", "revision": "new answer", "flag": "check this entry"}
KIND_CHOICES = [("all kinds", ""), *[(words, kind) for kind, words in KIND_WORDS.items()]]


def suggestions_tab(service: SupportService, token: gr.BrowserState, opened: list) -> None:
    gr.Markdown("Questions agents answered that the knowledge base could not, customers' new wordings, answers agents "
                "keep rewriting, and entries customers dislike. Nothing changes until you accept it.")
    with gr.Row(equal_height=True):
        kind = gr.Dropdown(KIND_CHOICES, value="", label="Show", scale=1, elem_id="suggestion-kind")
        learn = gr.Button("Learn now", size="sm", scale=0, min_width=140, elem_id="learn-now")
    learning = gr.Markdown(elem_id="learn-status")
    table = gr.Dataframe(pd.DataFrame(columns=SUGGESTION_COLUMNS), label="Open suggestions (click one to review it)", interactive=False,
                         wrap=True, buttons=[], max_height=600, column_widths=["14%", "22%", "8%", "44%", "12%"], elem_id="suggestions")
    shown_rows = gr.State([])  # the suggestion of each row shown (read with the ops session that listed them)
    chosen = gr.State(0)
    with gr.Column(visible=False) as review:
        evidence = gr.Markdown(elem_id="suggestion-evidence")
        questions = gr.Textbox(label="Customers' wordings (one per line)", lines=3, elem_id="suggestion-questions")
        answer = gr.Textbox(label="Answer", lines=4, elem_id="suggestion-answer")
        with gr.Row():
            accept = gr.Button("Accept", variant="primary", elem_id="suggestion-accept")
            reject = gr.Button("Reject", variant="stop", elem_id="suggestion-reject")
    decided = gr.Markdown(elem_id="suggestion-decided")

    def show_suggestions(session_token: str, which: str):
        rows = service.suggestions(session_token, which)
        frame = pd.DataFrame([_row(s) for s in rows], columns=SUGGESTION_COLUMNS)
        return frame, rows, gr.Column(visible=False)

    def review_suggestion(suggestions: list, row: gr.SelectData):
        s = suggestions[row.index[0]]
        return (s["id"], _evidence(s), gr.Textbox(value="\n".join(s["questions"]), visible=s["kind"] in ("new_entry", "variant")),
                gr.Textbox(value=s["answer"], visible=s["kind"] in ("new_entry", "revision")), gr.Column(visible=True), "")

    def decide_suggestion(session_token: str, suggestion_id: int, wordings: str, text: str, clicked: gr.EventData):
        how = "accept" if getattr(clicked.target, "elem_id", "") == "suggestion-accept" else "reject"
        edited = [w.strip() for w in wordings.splitlines() if w.strip()]
        s = service.decide(session_token, suggestion_id, how, text if how == "accept" else None, (edited or None) if how == "accept" else None)
        what = f"{KIND_WORDS[s['kind']]} for {s['entry_id']}"
        return f"{'Accepted' if how == 'accept' else 'Rejected'} the {what}." + (" Customers get it from now on." if how == "accept" and s["kind"] != "flag" else "")

    def start_learning(session_token: str):
        job = service.learn(session_token)
        return f"Started {job['title']} (job {job['id']}); follow it under Training."

    listing = dict(fn=shown(checked(show_suggestions)), inputs=[token, kind], outputs=[table, shown_rows, review], api_visibility="private")
    gr.on([*opened, kind.change], **listing)
    table.select(review_suggestion, [shown_rows], [chosen, evidence, questions, answer, review, decided], api_visibility="private")
    gr.on([accept.click, reject.click], shown(checked(decide_suggestion)), [token, chosen, questions, answer], [decided],
          api_visibility="private").success(**listing)
    learn.click(shown(checked(start_learning)), [token], [learning], api_visibility="private")


def _row(s: dict) -> list:
    text = s["questions"][0] if s["kind"] in ("new_entry", "variant") else s["answer"] or s["entry_id"]
    return [KIND_WORDS[s["kind"]], s["entry_id"], s["evidence"].get("count", 0), text, s["evidence"].get("last", "")[:10]]


def _evidence(s: dict) -> str:
    e = s["evidence"]
    lines = [f"**{KIND_WORDS[s['kind']].capitalize()}** for `{s['entry_id']}`: asked in {e.get('count', 0)} conversation"
             f"{'s' * (e.get('count', 0) != 1)}, {e.get('first', '')[:10]} to {e.get('last', '')[:10]}."]
    if s["kind"] == "flag":
        lines.append(f"{e['bad_rate']:.0%} of its {e['answers']} answers were rated down or rewritten by agents "
                     f"(other entries: {e['others_bad_rate']:.0%}). Accept once you have looked at the entry.")
    if s["previous"]:
        lines.append(f"Current answer: {s['previous']}")
    lines.append("Conversations: " + ", ".join(f"`{c[:8]}`" for c in e.get("conversations", [])[:10]))
    return "\n\n".join(lines)
