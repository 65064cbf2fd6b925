"""Client for any OpenAI-compatible chat-completions server (vLLM, llama.cpp, Ollama, FastChat).

Standard library only. One prompt per request; callers run many at once from threads (the client
is thread-safe: each request opens its own connection). Security: the API key is read from the
environment variable the config names and is only ever put in the Authorization header; requests go
to the configured base URL only (no redirects followed, no proxy), https verifies certificates, plain
http is refused except to this machine (loopback) unless `allow_insecure_http` says otherwise, and
the body carries nothing but the model name, sampling settings and the prompt.
"""
from __future__ import annotations

import http.client
import ipaddress
import json
import os
import random
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Mapping


class LLMError(RuntimeError):
    """The server answered, but not with a usable completion (after retries where that helps)."""


class LLMUnreachableError(LLMError):
    """No connection to the server could be made; nothing more can be labelled until it is back."""


@dataclass(frozen=True)
class LLMSettings:
    base_url: str                  # e.g. http://127.0.0.1:8000/v1 ; /chat/completions is appended
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout_s: float = 120.0
    max_retries: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    temperature: float = 0.1       # Motif's generation settings
    top_p: float | None = 0.95     # None: not sent (the server's default; ONI's setting)
    max_tokens: int = 1024
    max_concurrency: int = 16
    # http:// sends the key and prompts in clear text; it is allowed to a loopback host only, unless
    # this is true (a trusted network, e.g. a server on the same cluster node's private interface).
    allow_insecure_http: bool = False

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], key: str = "llm") -> "LLMSettings":
        if "api_key" in cfg:
            raise ValueError(f"{key}.api_key is not read: put the key in an environment variable named by {key}.api_key_env")
        allowed = set(cls.__dataclass_fields__)
        unknown = set(cfg) - allowed
        if unknown:
            raise ValueError(f"{key} has unknown fields {sorted(unknown)}; allowed: {sorted(allowed)}")
        settings = cls(**dict(cfg))
        settings.validate(key)
        return settings

    def validate(self, key: str = "llm") -> None:
        parsed = urllib.parse.urlsplit(self.base_url or "")
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"{key}.base_url={self.base_url!r} must be an http:// or https:// URL")
        if parsed.username or parsed.password or parsed.query or parsed.fragment:
            raise ValueError(f"{key}.base_url must not carry credentials, a query or a fragment")
        if not isinstance(self.allow_insecure_http, bool):
            raise ValueError(f"{key}.allow_insecure_http={self.allow_insecure_http!r} must be true or false")
        if parsed.scheme == "http" and not is_loopback(parsed.hostname) and not self.allow_insecure_http:
            raise ValueError(
                f"{key}.base_url={self.base_url!r}: plain http to {parsed.hostname} would send the API key "
                f"and prompts unencrypted; use https://, a loopback host (127.0.0.1, ::1, localhost), or set "
                f"{key}.allow_insecure_http=true if the network is trusted"
            )
        if not self.model:
            raise ValueError(f"{key}.model must name the served model")
        for name in ("timeout_s", "max_tokens", "max_concurrency"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{key}.{name}={getattr(self, name)!r} must be > 0")
        for name in ("max_retries", "backoff_s", "max_backoff_s", "temperature"):
            if getattr(self, name) < 0:
                raise ValueError(f"{key}.{name}={getattr(self, name)!r} must be >= 0")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"{key}.top_p={self.top_p!r} must be in (0, 1] or null")


def is_loopback(host: str) -> bool:
    """Whether `host` (a URL's host name) names this machine: localhost, 127.0.0.0/8 or ::1."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost
        return False


# Worth retrying: the server is overloaded, restarting or briefly failing.
_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class ChatClient:
    def __init__(self, settings: LLMSettings) -> None:
        settings.validate()
        self.settings = settings
        parsed = urllib.parse.urlsplit(settings.base_url)
        self._https = parsed.scheme == "https"
        self._host = parsed.hostname
        self._port = parsed.port
        self._path = parsed.path.rstrip("/") + "/chat/completions"
        self._ssl = ssl.create_default_context() if self._https else None
        self._api_key = os.environ.get(settings.api_key_env) if settings.api_key_env else None

    def chat(self, messages: list[dict[str, str]]) -> str:
        """Send one conversation; return the assistant's text. Retries transient failures with
        exponential back-off; raises LLMUnreachableError if no attempt could connect."""
        request = {
            "model": self.settings.model,
            "messages": messages,
            "temperature": self.settings.temperature,
            "top_p": self.settings.top_p,
            "max_tokens": self.settings.max_tokens,
        }
        body = json.dumps({k: v for k, v in request.items() if v is not None}).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        attempts = self.settings.max_retries + 1
        connected_once = False
        last_error = ""
        for attempt in range(attempts):
            if attempt:
                delay = min(self.settings.max_backoff_s, self.settings.backoff_s * 2 ** (attempt - 1))
                time.sleep(delay * random.uniform(0.5, 1.0))
            try:
                status, payload = self._post(body, headers)
            except (ConnectionError, socket.gaierror) as exc:  # refused, reset, DNS failure
                last_error = f"{type(exc).__name__}: {exc}"
                continue
            except (TimeoutError, socket.timeout):
                connected_once = True
                last_error = f"no answer within {self.settings.timeout_s} s"
                continue
            except (http.client.HTTPException, OSError) as exc:
                connected_once = True
                last_error = f"{type(exc).__name__}: {exc}"
                continue
            connected_once = True
            if status == 200:
                try:
                    return _completion_text(payload)
                except LLMError as exc:
                    last_error = str(exc)
                    continue
            snippet = payload[:200].decode("utf-8", errors="replace")
            last_error = f"HTTP {status}: {snippet}"
            if status not in _RETRY_STATUS:
                raise LLMError(f"LLM server {self.settings.base_url} refused the request ({last_error})")
        if not connected_once:
            raise LLMUnreachableError(
                f"cannot reach the LLM server at {self.settings.base_url} after {attempts} attempts "
                f"({last_error}); start it or fix llm.base_url"
            )
        raise LLMError(f"LLM server {self.settings.base_url} failed {attempts} times; last: {last_error}")

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self._https:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self._host, self._port, timeout=self.settings.timeout_s, context=self._ssl
            )
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self.settings.timeout_s)
        try:
            conn.request("POST", self._path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


def _completion_text(payload: bytes) -> str:
    try:
        content = json.loads(payload)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise LLMError(f"malformed chat-completions response: {payload[:200]!r}") from exc
    if not isinstance(content, str):
        raise LLMError(f"chat-completions content is not text: {content!r}")
    return content
