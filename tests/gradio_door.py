"""The app as its clients reach it, in process: Starlette's TestClient runs the real FastAPI app (Gradio's
queue included), and `Page` speaks Gradio's queue protocol as a browser tab or `gradio_client` does.

A page calls any event handler by its function name: the named API functions (`/login`, `/kb_upload`, ...)
and the page's own handlers (`sign_in`, `add_files`, ...), which are hidden from the API docs but callable
by any client, so they are a door of their own.
"""

from __future__ import annotations

import json
import uuid

from fastapi.testclient import TestClient


class GradioError(Exception):
    """A call refused by the app: the message its client shows (None when the app gave none)."""


class Page:
    """One browser session (Gradio's session hash) on one of the app's pages: the customer page at "" or the
    staff pages at "/staff"."""

    def __init__(self, client: TestClient, path: str = ""):
        self.client = client
        self.path = path
        self.session_hash = uuid.uuid4().hex[:12]
        config = client.get(f"{path}/config").json()
        self.handlers = {d["api_name"]: d for d in config["dependencies"]}
        self.component_types = {c["id"]: c["type"] for c in config["components"]}
        self.component_props = {c["id"]: c.get("props", {}) for c in config["components"]}

    def call(self, handler: str, *data):
        """The handler's outputs (one value, or a list for several); raises GradioError when refused."""
        dependency = self.handlers[handler]
        payload = {"data": list(data), "fn_index": dependency["id"], "session_hash": self.session_hash,
                   "event_data": None, "trigger_id": None}
        # Encoded here, escaping what is not ASCII, so that any string JSON can carry (a lone surrogate too) gets through.
        joined = self.client.post(f"{self.path}/gradio_api/queue/join", content=json.dumps(payload), headers={"Content-Type": "application/json"})
        joined.raise_for_status()
        event_id = joined.json()["event_id"]
        with self.client.stream("GET", f"{self.path}/gradio_api/queue/data?session_hash={self.session_hash}") as events:
            for line in events.iter_lines():
                message = json.loads(line[5:]) if line.startswith("data:") else {}
                if message.get("event_id") == event_id and message.get("msg") == "process_completed":
                    return _result(message, len(dependency["outputs"]))
        raise AssertionError(f"{handler}: the event stream ended without a result")

    def upload(self, name: str, data: bytes) -> dict:
        """Upload a file as the page's file input does; returns the FileData to pass to a handler."""
        response = self.client.post(f"{self.path}/gradio_api/upload", files=[("files", (name, data, "application/octet-stream"))])
        if response.status_code != 200:
            raise GradioError(response.text)
        return {"path": response.json()[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def _result(message: dict, outputs: int):
    output = message["output"]
    if not message["success"]:
        raise GradioError(output.get("error"))
    data = output["data"]
    return data[0] if outputs == 1 else data


def rest_call(client: TestClient, name: str, *data):
    """A named API function over Gradio's plain HTTP API (`POST /gradio_api/call/NAME`, then its event
    stream), as curl would call it; raises GradioError when refused."""
    started = client.post(f"/gradio_api/call/{name}", content=json.dumps({"data": list(data)}),
                          headers={"Content-Type": "application/json"})
    started.raise_for_status()
    stream = client.get(f"/gradio_api/call/{name}/{started.json()['event_id']}").text
    kind, payload = "", None
    for line in stream.splitlines():
        if line.startswith("event: "):
            kind = line[len("event: "):]
        elif line.startswith("data: "):
            payload = json.loads(line[len("data: "):])
    if kind == "error":
        raise GradioError(payload.get("error") if isinstance(payload, dict) else payload)
    return payload[0]
