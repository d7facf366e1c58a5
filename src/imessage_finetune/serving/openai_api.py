"""OpenAI's Chat Completions API, as far as one local model can honour it.

`parse_request` checks a request body the way OpenAI does (an error names the field, as
`param`) and returns the conversation and the `GenerationSettings` to answer it with; a
parameter that is absent takes the value `imessage-finetune chat` uses, so the same request
gets the same reply as `chat`. Parameters that change what a reply is and that this server
cannot honour (several choices, tools, a JSON response format, log probabilities) are
refused; the rest of what clients commonly send (penalties at their defaults, `user`,
`metadata`...) is accepted and ignored.

The reply shapes follow OpenAI's `ChatCompletion` and `ChatCompletionChunk` objects.
Pure functions, no I/O: the server module does the HTTP.
"""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from imessage_finetune.backends.interface import GenerationSettings, Usage

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MAX_STOP_STRINGS = 4  # as OpenAI


class ApiError(Exception):
    """A reply in OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}
        self.body = {"error": {"message": message, "type": type, "param": param, "code": code}}


@dataclass(frozen=True)
class ChatRequest:
    """A checked request: the conversation as the model gets it, and how to answer."""

    messages: list[dict[str, str]]
    settings: GenerationSettings
    stream: bool
    include_usage: bool


def invalid(message: str, param: str | None, code: str | None = None) -> ApiError:
    """A 400: the request is malformed; `param` names the field."""
    return ApiError(400, message, param=param, code=code)


def parse_request(body: Any, model_id: str, system_prompt: str, defaults: GenerationSettings) -> ChatRequest:
    """Check `body` (a decoded JSON value) and return what to generate; raise ApiError (400,
    or 404 for another model) naming the field otherwise."""
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object", None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("you must provide a model parameter (a string)", "model")
    if model != model_id:
        raise ApiError(
            404,
            f"The model `{model}` does not exist: this server serves only `{model_id}` (GET /v1/models)",
            param="model",
            code="model_not_found",
        )
    messages = _messages(body.get("messages"))
    if not any(m["role"] == "system" for m in messages) and system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    _refuse_unsupported(body)
    settings = dataclasses.replace(
        defaults,
        temperature=_number(body, "temperature", 0, 2, defaults.temperature),
        top_p=_number(body, "top_p", 0, 1, defaults.top_p),
        max_tokens=_max_tokens(body, defaults.max_tokens),
        seed=_integer(body, "seed", defaults.seed),
        stop=_stop(body.get("stop")),
    )
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid("stream must be a boolean", "stream")
    options = body.get("stream_options")
    if options is not None and (
        not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool)
    ):
        raise invalid('stream_options must be an object such as {"include_usage": true}', "stream_options")
    if options is not None and not stream:
        raise invalid("stream_options is only allowed when stream is true", "stream_options")
    return ChatRequest(messages, settings, bool(stream), bool(options and options.get("include_usage")))


def _messages(value: Any) -> list[dict[str, str]]:
    if value is None:
        raise invalid("you must provide a messages parameter", "messages")
    if not isinstance(value, list) or not value:
        raise invalid("messages must be a non-empty array of {role, content} objects", "messages")
    checked = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid(f"{where} must be an object with role and content", where)
        role = message.get("role")
        if role not in ROLES:
            raise invalid(
                f"{where}.role must be one of 'system', 'developer', 'user' or 'assistant'"
                + (
                    f" (this model takes no {role!r} messages: it has no tools)" if role in ("tool", "function") else ""
                ),
                f"{where}.role",
            )
        if message.get("tool_calls"):
            raise invalid(f"{where}.tool_calls: this model has no tools", f"{where}.tool_calls")
        entry = {"role": ROLES[role], "content": _content(message.get("content"), f"{where}.content")}
        name = message.get("name")
        if name is not None:
            if not isinstance(name, str):
                raise invalid(f"{where}.name must be a string", f"{where}.name")
            if name:
                entry["name"] = name
        checked.append(entry)
    return checked


def _content(value: Any, where: str) -> str:
    """A string, or an array of text parts (joined); images and audio are refused."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for j, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise invalid(
                    f'{where}[{j}] must be a text part ({{"type": "text", "text": ...}}): this model reads text only',
                    f"{where}[{j}]",
                )
            texts.append(part["text"])
        return "".join(texts)
    raise invalid(f"{where} must be a string or an array of text parts", where)


def _number(body: dict[str, Any], key: str, low: float, high: float, default: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise invalid(f"{key} must be a number from {low} to {high}", key)
    return float(value)


def _integer(body: dict[str, Any], key: str, default: int | None) -> int | None:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"{key} must be an integer", key)
    return value


def _max_tokens(body: dict[str, Any], default: int) -> int:
    value = default
    for key in ("max_tokens", "max_completion_tokens"):  # the newer name wins when both are given
        given = _integer(body, key, None)
        if given is not None:
            if given < 1:
                raise invalid(f"{key} must be at least 1", key)
            value = given
    return value


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value) or len(value) > MAX_STOP_STRINGS:
        raise invalid(f"stop must be a string or an array of at most {MAX_STOP_STRINGS} strings", "stop")
    return tuple(s for s in value if s)


def _refuse_unsupported(body: dict[str, Any]) -> None:
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or n != 1):
        raise invalid("n must be 1: this server generates one choice per request", "n")
    for key in ("tools", "functions"):
        if body.get(key):
            raise invalid(f"{key}: this model has no tools", key)
    response_format = body.get("response_format")
    if response_format is not None and (not isinstance(response_format, dict) or response_format.get("type") != "text"):
        raise invalid('response_format: this model writes plain text only ({"type": "text"})', "response_format")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise invalid("logprobs are not available from this server", "logprobs")


def completion_id() -> str:
    """A new id in OpenAI's form."""
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage_body(usage: Usage) -> dict[str, int]:
    """OpenAI's `usage` object."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def completion_body(id_: str, model_id: str, text: str, usage: Usage, created: int | None = None) -> dict[str, Any]:
    """A `chat.completion` object with one choice."""
    return {
        "id": id_,
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": model_id,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": usage.finish_reason,
            }
        ],
        "usage": usage_body(usage),
        "system_fingerprint": None,
    }


def chunk_body(
    id_: str,
    model_id: str,
    created: int,
    delta: dict[str, Any] | None,
    finish_reason: str | None = None,
    usage: Usage | None = None,
) -> dict[str, Any]:
    """A `chat.completion.chunk`: a delta of the one choice, or (delta None) the closing
    usage chunk with no choices, as OpenAI sends it for `stream_options.include_usage`."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
    body: dict[str, Any] = {
        "id": id_,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model_id,
        "choices": choices,
        "system_fingerprint": None,
    }
    if usage is not None:
        body["usage"] = usage_body(usage)
    return body


def models_body(model_id: str, created: int) -> dict[str, Any]:
    """`GET /v1/models`: the one model."""
    return {"object": "list", "data": [model_body(model_id, created)]}


def model_body(model_id: str, created: int) -> dict[str, Any]:
    """`GET /v1/models/{id}`."""
    return {"id": model_id, "object": "model", "created": created, "owned_by": "imessage-finetune"}
