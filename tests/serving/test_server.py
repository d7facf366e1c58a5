"""`imessage-finetune serve`: the real server on 127.0.0.1, talked to by the real `openai`
client, LangChain's `ChatOpenAI` (the seed's last step) and raw HTTP for bad requests.

The model is the demo model trained briefly (`trained_demo`); its replies are a few random
characters, which is enough to tell whether two replies are the same.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

pytest.importorskip("peft", reason="the local backend's extra is not installed: pip install -e '.[local]'")
pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install -e '.[serve]'")

from click.testing import CliRunner
from serve_process import ServeProcess
from trained_demo import SYSTEM_PROMPT

from imessage_finetune.cli import REPLY_KEEPS, cli
from imessage_finetune.terminal import printable

PROMPT = "are you free tonight?"
# Greedy, this prompt makes the demo model repeat itself without ending its turn: a reply
# that runs for as long as it is allowed (checked in the disconnect test).
LONG = {"messages": [{"role": "user", "content": "hi there"}], "temperature": 0}


@pytest.fixture(scope="module")
def server(trained_demo: Path) -> Iterator[ServeProcess]:
    served = ServeProcess(trained_demo, "--port", "0")
    yield served
    served.kill()


@pytest.fixture(scope="module")
def model_id(trained_demo: Path) -> str:
    return str(json.loads((trained_demo.parent / "out" / "model.json").read_text())["model_id"])


def client(server: ServeProcess, **options: Any) -> Any:
    import openai

    return openai.OpenAI(base_url=server.url, api_key=options.pop("api_key", "unused"), max_retries=0, **options)


def chat_reply(config: Path, prompt: str) -> str:
    """What `imessage-finetune chat PROMPT` prints (a reply's control characters as escapes)."""
    result = CliRunner().invoke(cli, ["--config", str(config), "chat", prompt])
    assert result.exit_code == 0, result.output
    return result.stdout.removesuffix("\n")


def shown(reply: str | None) -> str:
    """A served reply as `chat` shows it: serve sends the model's text as it is, while chat
    escapes its control characters (the demo model, barely trained, says some)."""
    assert reply is not None
    return printable(reply, keep=REPLY_KEEPS)


def post(
    server: ServeProcess, body: bytes | str, headers: dict[str, str] | None = None, path: str = "/v1/chat/completions"
) -> tuple[int, dict[str, str], Any]:
    """A raw HTTP request; the status, headers and decoded JSON reply."""
    parts = urlsplit(server.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        text = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(text)
    finally:
        connection.close()


def request_body(model_id: str, **fields: Any) -> str:
    return json.dumps({"model": model_id, "messages": [{"role": "user", "content": PROMPT}], **fields})


def test_the_openai_client_lists_the_model_and_gets_chats_reply_streamed_and_not(
    server: ServeProcess, model_id: str, trained_demo: Path
) -> None:
    """Same seed and settings as `chat` (the defaults: chat's own) → the same reply, whole or
    streamed; usage counts the prompt and the reply."""
    api = client(server)
    assert [m.id for m in api.models.list().data] == [model_id]
    expected = chat_reply(trained_demo, PROMPT)
    assert len(expected) >= 3, "the demo model should say a few characters at temperature 1.3"

    whole = api.chat.completions.create(model=model_id, messages=[{"role": "user", "content": PROMPT}])
    assert shown(whole.choices[0].message.content) == expected
    assert whole.choices[0].finish_reason in ("stop", "length") and whole.model == model_id
    assert whole.usage.prompt_tokens > 10 and 1 <= whole.usage.completion_tokens <= 24
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens

    chunks = list(
        api.chat.completions.create(
            model=model_id,
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert shown("".join(c.choices[0].delta.content or "" for c in chunks if c.choices)) == expected
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens

    # chat's settings given explicitly are the same request; another seed is another reply.
    explicit = api.chat.completions.create(
        model=model_id,
        messages=[{"role": "user", "content": PROMPT}],
        temperature=1.3,
        top_p=0.95,
        seed=7,
        max_tokens=24,
    )
    assert shown(explicit.choices[0].message.content) == expected
    question = [{"role": "user", "content": PROMPT}]
    others = {
        shown(api.chat.completions.create(model=model_id, messages=question, seed=seed).choices[0].message.content)
        for seed in (1, 2, 3)
    }
    assert others - {expected}


def test_langchains_chatopenai_talks_to_it_as_the_readme_shows(
    server: ServeProcess, model_id: str, trained_demo: Path
) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model=model_id, base_url=server.url, api_key="unused", max_retries=0)
    expected = chat_reply(trained_demo, PROMPT)
    assert shown(str(llm.invoke(PROMPT).content)) == expected
    assert shown("".join(str(chunk.content) for chunk in llm.stream(PROMPT))) == expected


def test_the_training_system_prompt_is_used_when_the_request_has_none(server: ServeProcess, model_id: str) -> None:
    api = client(server)

    def ask(messages: list[dict[str, str]]) -> Any:
        return api.chat.completions.create(model=model_id, messages=messages, seed=3)

    implicit = ask([{"role": "user", "content": PROMPT}])
    explicit = ask([{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": PROMPT}])
    other = ask([{"role": "system", "content": "Answer in French, always."}, {"role": "user", "content": PROMPT}])
    assert implicit.usage.prompt_tokens == explicit.usage.prompt_tokens != other.usage.prompt_tokens
    assert implicit.choices[0].message.content == explicit.choices[0].message.content


def test_max_tokens_stop_and_temperature_zero_do_what_openai_says(server: ServeProcess, model_id: str) -> None:
    api = client(server)

    def ask(**options: Any) -> Any:
        return api.chat.completions.create(model=model_id, **LONG, **options)

    greedy = ask(max_tokens=12)
    assert greedy.choices[0].finish_reason == "length" and greedy.usage.completion_tokens == 12
    assert ask(max_tokens=12, seed=99).choices[0].message.content == greedy.choices[0].message.content
    newer = ask(max_completion_tokens=5)
    assert newer.usage.completion_tokens == 5 and greedy.choices[0].message.content.startswith(
        newer.choices[0].message.content
    )

    text = greedy.choices[0].message.content
    stop = text.strip()[0]  # a character the reply contains: it ends just before its first one
    cut = ask(max_tokens=12, stop=[stop, "never said"])
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop" and cut.usage.completion_tokens < 12


BAD_REQUESTS = [
    # body, status, param, what the message says
    ("{not json", 400, None, "could not parse the JSON body"),
    ('["a list"]', 400, None, "must be a JSON object"),
    ('{"model": "%s"}', 400, "messages", "messages"),
    ('{"model": "%s", "messages": []}', 400, "messages", "non-empty"),
    (
        '{"model": "%s", "messages": [{"role": "robot", "content": "hi"}]}',
        400,
        "messages[0].role",
        "role must be one of",
    ),
    ('{"model": "%s", "messages": [{"role": "tool", "content": "hi"}]}', 400, "messages[0].role", "no tools"),
    ('{"model": "%s", "messages": [{"role": "user", "content": 7}]}', 400, "messages[0].content", "string"),
    ('{"messages": [{"role": "user", "content": "hi"}]}', 400, "model", "model"),
    ('{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}', 404, "model", "does not exist"),
    ('{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "n": 2}', 400, "n", "n must be 1"),
    (
        '{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "temperature": 3}',
        400,
        "temperature",
        "from 0 to 2",
    ),
    (
        '{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}',
        400,
        "max_tokens",
        "at least 1",
    ),
    ('{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "stop": [1]}', 400, "stop", "stop must be"),
    ('{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "seed": "x"}', 400, "seed", "integer"),
    ('{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}', 400, "stream", "boolean"),
    (
        '{"model": "%s", "messages": [{"role": "user", "content": "' + "x" * 5000 + '"}]}',
        400,
        "messages",
        "reads at most 4096",
    ),
]


@pytest.mark.parametrize(("body", "status", "param", "says"), BAD_REQUESTS)
def test_a_bad_request_gets_openais_error_naming_the_field(
    server: ServeProcess, model_id: str, body: str, status: int, param: str | None, says: str
) -> None:
    got, _, reply = post(server, body.replace("%s", model_id))
    assert got == status, reply
    assert set(reply) == {"error"} and set(reply["error"]) == {"message", "type", "param", "code"}
    assert reply["error"]["param"] == param and says in reply["error"]["message"]
    assert reply["error"]["type"] == "invalid_request_error"


def test_ten_megabytes_get_413_and_unknown_paths_404_in_openais_shape(server: ServeProcess, model_id: str) -> None:
    huge = request_body(model_id).replace(PROMPT, "x" * (10 * 1024 * 1024))
    status, _, reply = post(server, huge)
    assert status == 413 and reply["error"]["code"] == "request_too_large"
    status, _, reply = post(server, "{}", path="/v1/completions")
    assert status == 404 and "no such endpoint" in reply["error"]["message"]


def test_a_client_that_leaves_mid_stream_stops_the_generation(server: ServeProcess, model_id: str) -> None:
    api = client(server)
    assert api.chat.completions.create(model=model_id, **LONG, max_tokens=60).choices[0].finish_reason == "length"
    done_before = len([line for line in server.lines if "client went away" in line])
    parts = urlsplit(server.url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=60)
    body = json.dumps({"model": model_id, **LONG, "max_tokens": 2000, "stream": True}).encode()
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    received = b""
    while received.count(b"data: ") < 3:  # the role chunk and two pieces of the reply
        received += sock.recv(65536)
    sock.close()
    line = server.wait_for("client went away", timeout=60)
    assert len([x for x in server.lines if "client went away" in x]) == done_before + 1
    completion_tokens = int(line.split(" prompt + ")[1].split(" ")[0])
    assert completion_tokens < 2000, line  # uninterrupted, the reply runs to max_tokens
    # The model is free again at once.
    assert api.chat.completions.create(model=model_id, **LONG, max_tokens=3).usage.completion_tokens == 3


def test_a_second_server_on_a_busy_port_says_so_and_the_first_keeps_serving(
    server: ServeProcess, model_id: str, trained_demo: Path
) -> None:
    port = str(urlsplit(server.url).port)
    second = ServeProcess(trained_demo, "--port", port, wait=False)
    assert second.wait() == 1
    assert f"Error: port {port} on 127.0.0.1 is already in use" in second.log and "--port" in second.log
    assert "Traceback" not in second.log
    exposed = ServeProcess(trained_demo, "--host", "0.0.0.0", "--port", port, wait=False)
    assert exposed.wait() == 1
    assert "WARNING: listening on 0.0.0.0" in exposed.log and "private messages" in exposed.log
    assert client(server).models.list().data[0].id == model_id


def test_a_key_is_required_when_set_and_a_full_queue_answers_503(
    trained_demo: Path, model_id: str, tmp_path: Path
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("s3cret-key\n")
    served = ServeProcess(trained_demo, "--port", "0", "--api-key-file", str(key_file), "--queue", "1")
    try:
        import openai

        for wrong in ("unused", "s3cret-kez"):
            with pytest.raises(openai.AuthenticationError) as refused:
                client(served, api_key=wrong).models.list()
            assert refused.value.code == "invalid_api_key"
        status, _, reply = post(served, request_body(model_id))
        assert status == 401 and reply["error"]["code"] == "invalid_api_key"
        api = client(served, api_key="s3cret-key")
        assert api.models.list().data[0].id == model_id

        # One request holds the model (a long stream), one waits, the next is turned away.
        holding = api.chat.completions.create(model=model_id, **LONG, max_tokens=2000, stream=True)
        next(iter(holding))
        waited: list[Any] = []
        waiter = threading.Thread(
            target=lambda: waited.append(api.chat.completions.create(model=model_id, **LONG, max_tokens=4))
        )
        waiter.start()
        served.wait_for(r"request \d+ waits for the model \(0 waiting before it\)")
        status, headers, reply = post(served, request_body(model_id), headers={"Authorization": "Bearer s3cret-key"})
        assert status == 503 and headers["retry-after"] == "5" and reply["error"]["code"] == "server_busy"
        holding.close()
        waiter.join(timeout=120)
        assert waited and waited[0].usage.completion_tokens == 4
        assert served.stop(signal.SIGTERM) == 0
        assert served.lines[-1] == "serve: stopped"
        assert "s3cret" not in served.log and "Traceback" not in served.log
    finally:
        served.kill()


def test_with_the_openai_backend_there_is_nothing_to_serve(tmp_path: Path) -> None:
    from imessage_finetune import artifacts

    (tmp_path / "out").mkdir()
    config = tmp_path / "finetune.toml"
    config.write_text('[artifacts]\ndir = "out"\n[finetune]\nbackend = "openai"\n')
    remote = {
        "backend": "openai", "endpoint": "https://api.openai.com/v1", "model_id": "ft:gpt-4.1-mini:me::abc",
        "job_id": "ftjob-1", "base_model": "gpt-4.1-mini-2025-04-14", "training_file": "file-1",
        "validation_file": None, "hyperparameters": {}, "seed": 42, "suffix": "imessage",
        "trained_tokens": 100, "cost_usd": 0.01,
    }  # fmt: skip
    (tmp_path / "out" / artifacts.MODEL.filename).write_text(json.dumps(remote))
    result = CliRunner().invoke(cli, ["--config", str(config), "serve"])
    assert result.exit_code == 1
    assert "nothing to serve here: ft:gpt-4.1-mini:me::abc runs at the fine-tuning service" in result.stderr
    assert "ChatOpenAI(model=model_id)" in result.stderr


def test_the_readmes_chatopenai_step_works_against_serve(
    server: ServeProcess, trained_demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's snippet, run as written but for the port and the artifacts folder."""
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    [code] = [
        b for b in re.findall(r"```python\n(.*?)```", readme, re.DOTALL) if 'base_url="http://127.0.0.1:8000/v1"' in b
    ]
    code = code.replace("http://127.0.0.1:8000/v1", server.url)
    code = code.replace('"artifacts/model.json"', repr(str(trained_demo.parent / "out" / "model.json")))
    expected = chat_reply(trained_demo, PROMPT)
    capsys.readouterr()
    exec(compile(code, "README.md", "exec"), {})
    assert shown(capsys.readouterr().out) == f"{expected}\n{expected}"  # invoke, then the stream


# Last: it stops the module's server.
def test_ctrl_c_stops_the_server_cleanly_and_the_log_holds_no_text_or_traceback(server: ServeProcess) -> None:
    assert server.stop(signal.SIGINT) == 130  # as Ctrl-C ends any command
    assert server.lines[-1] == "serve: stopped (Ctrl-C)"
    # One line, the last: uvicorn's own comings and goings are said only with --verbose.
    assert not [line for line in server.lines if "server process" in line or "Shutting down" in line]
    assert "Traceback" not in server.log
    for private in (PROMPT, SYSTEM_PROMPT, "hi there"):
        assert private not in server.log
