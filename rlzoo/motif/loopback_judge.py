"""A local OpenAI-compatible chat-completions server with a deterministic, rule-based judge.

For tests and offline demos of the annotation pipeline where no LLM is available: it speaks the
same HTTP protocol as vLLM / llama.cpp / Ollama, so the real client is exercised end to end. The
judge prefers the description with more progress words (kills, gold, stairs). The `model` name picks
a behaviour, to test failure handling:
  judge            answers correctly
  judge-retry      first reply has no verdict; a retry turn gets one
  judge-garbage    never gives a verdict
  judge-slow       sleeps `slow_s` before answering
  judge-flaky      HTTP 500 for the first `flaky_failures` requests of each prompt
  judge-broken     HTTP 200 with a body that is not a chat completion
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from rlzoo.motif.labels import HELPFUL_TOKEN, UNHELPFUL_TOKEN

PROGRESS_WORDS = ("kill", "gold", "stairs", "destroy", "welcome to experience level")
_DESCRIPTION = re.compile(r'\{"description_([12])": ("(?:[^"\\]|\\.)*")\}')
_MESSAGE = re.compile(r'\{"message": ("(?:[^"\\]|\\.)*")\}')


def progress_score(text: str) -> int:
    text = text.lower()
    return sum(text.count(word) for word in PROGRESS_WORDS)


def judge(prompt: str) -> str:
    """The verdict line for a pair prompt or a single-message prompt."""
    pair = dict(_DESCRIPTION.findall(prompt))
    if len(pair) == 2:
        first, second = (progress_score(json.loads(pair[k])) for k in ("1", "2"))
        choice = "1" if first > second else "2" if second > first else "None"
        return f'Both descriptions are short. ("best_description": {choice})'
    message = _MESSAGE.search(prompt)
    if message:
        helpful = progress_score(json.loads(message.group(1))) > 0
        return ("<knowledge> NetHack is a roguelike. </knowledge>\n<analysis> A short message. </analysis>\n"
                f"<label> {HELPFUL_TOKEN if helpful else UNHELPFUL_TOKEN} </label>")
    return "I cannot find the descriptions."


class LoopbackJudge:
    """`with LoopbackJudge() as server: ... server.base_url ...` — serves on 127.0.0.1, a free port."""

    def __init__(self, slow_s: float = 0.5, flaky_failures: int = 2) -> None:
        self.slow_s = slow_s
        self.flaky_failures = flaky_failures
        self.requests: list[dict[str, Any]] = []   # every request: headers and JSON body
        self.lock = threading.Lock()
        self._attempts: Counter[str] = Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with server.lock:
                    server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": "not found"}})
                status, reply = server.respond(body)
                if status != 200:
                    return self._send(status, {"error": {"message": "judge failure"}})
                if reply is None:
                    return self._send(200, {"unexpected": True})
                self._send(200, {
                    "id": "cmpl-loopback", "object": "chat.completion", "model": body.get("model"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": reply}}],
                })

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="loopback-judge", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def respond(self, body: dict) -> tuple[int, str | None]:
        model = body.get("model", "judge")
        messages = body["messages"]
        prompt = next(m["content"] for m in messages if m["role"] == "user")
        is_retry = len(messages) > 2
        with self.lock:
            self._attempts[prompt + str(is_retry)] += 1
            attempt = self._attempts[prompt + str(is_retry)]
        if model == "judge-slow":
            time.sleep(self.slow_s)
        if model == "judge-flaky" and attempt <= self.flaky_failures:
            return 500, None
        if model == "judge-broken":
            return 200, None
        if model == "judge-garbage" or (model == "judge-retry" and not is_retry):
            return 200, "Both look interesting, hard to say."
        if is_retry:
            return 200, judge(prompt).split(". ")[-1]
        return 200, judge(prompt)

    def __enter__(self) -> "LoopbackJudge":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
