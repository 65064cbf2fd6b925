"""The real OpenAI-compatible client against a real HTTP server on 127.0.0.1 with a scripted judge."""
import socket
import time

import pytest

from rlzoo.motif.annotators import judge_pair
from rlzoo.motif.labels import Label
from rlzoo.motif.llm_client import ChatClient, LLMError, LLMSettings, LLMUnreachableError
from rlzoo.motif.loopback_judge import LoopbackJudge

pytestmark = pytest.mark.unit


@pytest.fixture
def server():
    with LoopbackJudge(slow_s=1.0, flaky_failures=2) as judge:
        yield judge


def client(base_url, model="judge", **kw):
    return ChatClient(LLMSettings(base_url=base_url, model=model, backoff_s=0.01, max_backoff_s=0.02, **kw))


def test_judge_labels_through_http(server):
    c = client(server.base_url)
    assert judge_pair(c, "You kill the newt!", "It's a wall.", "score")[0] is Label.FIRST
    assert judge_pair(c, "It's a wall.", "$ - 5 gold pieces.", "score")[0] is Label.SECOND
    assert judge_pair(c, "It's a wall.", "It's solid stone.", "score")[0] is Label.TIE
    body = server.requests[0]["body"]
    # Only the model, the sampling settings and the two chat messages are sent.
    assert set(body) == {"model", "messages", "temperature", "top_p", "max_tokens"}
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["temperature"] == 0.1 and body["top_p"] == 0.95


def test_a_null_top_p_is_not_sent(server):
    judge_pair(client(server.base_url, top_p=None, max_tokens=4096), "You kill the newt!", "It's a wall.", "score")
    body = server.requests[0]["body"]
    assert set(body) == {"model", "messages", "temperature", "max_tokens"} and body["max_tokens"] == 4096
    with pytest.raises(ValueError, match="top_p=1.5 must be in"):
        client(server.base_url, top_p=1.5)


def test_unparseable_reply_is_asked_again_once(server):
    label, reply = judge_pair(client(server.base_url, "judge-retry"), "You kill the newt!", "It's a wall.", "score")
    assert label is Label.FIRST
    assert len(server.requests) == 2
    retry = server.requests[1]["body"]["messages"]
    assert [m["role"] for m in retry] == ["system", "user", "assistant", "user"]

    server.requests.clear()
    label, _ = judge_pair(client(server.base_url, "judge-garbage"), "You kill the newt!", "It's a wall.", "score")
    assert label is Label.UNKNOWN
    assert len(server.requests) == 2  # asked, re-asked once, then given up


def test_server_errors_are_retried_with_backoff(server):
    c = client(server.base_url, "judge-flaky", max_retries=3)
    assert judge_pair(c, "You kill the newt!", "It's a wall.", "score")[0] is Label.FIRST
    assert len(server.requests) == 3  # two HTTP 500s, then the answer


def test_persistent_server_errors_raise_after_retries(server):
    c = client(server.base_url, "judge-flaky", max_retries=1)
    with pytest.raises(LLMError, match="failed 2 times.*HTTP 500"):
        c.chat([{"role": "user", "content": "x"}])
    with pytest.raises(LLMError, match="malformed"):
        client(server.base_url, "judge-broken", max_retries=0).chat([{"role": "user", "content": "x"}])


def test_client_errors_are_not_retried(server):
    c = ChatClient(LLMSettings(base_url=server.base_url.replace("/v1", "/v2"), model="judge", max_retries=5))
    with pytest.raises(LLMError, match="HTTP 404"):
        c.chat([{"role": "user", "content": "x"}])
    assert len(server.requests) == 1


def test_slow_reply_times_out(server):
    c = client(server.base_url, "judge-slow", timeout_s=0.2, max_retries=1)
    start = time.monotonic()
    with pytest.raises(LLMError, match="no answer within 0.2 s"):
        c.chat([{"role": "user", "content": "x"}])
    assert time.monotonic() - start < 2.0


def test_unreachable_server_gives_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    c = client(f"http://127.0.0.1:{port}/v1", max_retries=2)
    with pytest.raises(LLMUnreachableError, match=f"cannot reach the LLM server at http://127.0.0.1:{port}/v1 after 3 attempts"):
        c.chat([{"role": "user", "content": "x"}])


def test_api_key_comes_from_the_named_environment_variable_only(server, monkeypatch):
    monkeypatch.setenv("RLZOO_TEST_LLM_KEY", "sk-test-secret")
    client(server.base_url, api_key_env="RLZOO_TEST_LLM_KEY").chat([{"role": "user", "content": "x"}])
    assert server.requests[-1]["headers"]["Authorization"] == "Bearer sk-test-secret"
    assert "sk-test-secret" not in str(server.requests[-1]["body"])
    monkeypatch.delenv("RLZOO_TEST_LLM_KEY")
    client(server.base_url, api_key_env="RLZOO_TEST_LLM_KEY").chat([{"role": "user", "content": "x"}])
    assert "Authorization" not in server.requests[-1]["headers"]
    with pytest.raises(ValueError, match="api_key is not read"):
        LLMSettings.from_config({"base_url": server.base_url, "model": "judge", "api_key": "sk-x"})


@pytest.mark.parametrize(
    "url, message",
    [("ftp://host/v1", "http:// or https://"), ("http://user:pw@host/v1", "credentials"), ("host:8000", "http")],
)
def test_bad_base_url_is_rejected(url, message):
    with pytest.raises(ValueError, match=message):
        LLMSettings.from_config({"base_url": url, "model": "m"})


def test_unknown_setting_is_rejected():
    with pytest.raises(ValueError, match=r"unknown fields \['temprature'\]"):
        LLMSettings.from_config({"base_url": "http://h/v1", "model": "m", "temprature": 0.1})
