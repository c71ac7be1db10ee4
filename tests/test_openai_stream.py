"""A streamed reply on the OpenAI route shows a standard client only text the policy has passed: the draft
that grounding replaces by a hand-off is never sent (such a client would keep showing it)."""

from __future__ import annotations

import json

from helpers import write

FAQ = "id,question,answer\ngift-exp,Do gift cards expire?,Gift cards never expire and have no fees.\n"


def test_the_stream_carries_only_the_final_text_never_a_replaced_draft(home_config):
    from fastapi.testclient import TestClient

    from retrieval import KnowledgeBase
    from ui.app import build_app
    from ui.service import SupportService

    config = home_config  # the tiny LM's random words are not grounded in the passage: the policy replaces them
    config.answer.mode, config.answer.handoff_confidence, config.answer.small_talk = "generate", 0.0, False
    kb = KnowledgeBase(config.kb_dir(), config.retrieval)
    kb.add([write(config.home / "faq.csv", FAQ)])
    kb.close()
    service = SupportService(config)
    with TestClient(build_app(config, service)) as client:
        body = {"messages": [{"role": "user", "content": "Do gift cards expire?"}], "stream": True}
        raw = client.post("/v1/chat/completions", json=body).text
    events = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]
    contents = [e["choices"][0]["delta"]["content"] for e in events if e["choices"][0]["delta"].get("content")]
    final = events[-1]
    logged = service.bot.log.history(final["conversation_id"])[-1]
    assert logged.reason == "not_grounded" and logged.draft and final["handed_off"]
    assert contents == [logged.text] and "replaced_content" not in final
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""} and final["choices"][0]["finish_reason"] == "stop"
