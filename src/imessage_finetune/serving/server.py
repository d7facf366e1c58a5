"""The OpenAI-compatible server: a Starlette application run by uvicorn.

One model is in memory and answers one request at a time, in arrival order: a request waits
its turn in a bounded queue, and past `queue_size` waiting requests the server answers 503
with Retry-After (OpenAI's clients retry those by themselves). Generation runs in a worker
thread; a streaming client that goes away closes its `Completion`, which stops the
generation at the next token, and the next request starts only once the model is free.

Every error reply has OpenAI's shape. Nothing here writes a traceback or a message's text to
the log: a request is logged as its size in tokens and how it ended.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

from imessage_finetune.backends.interface import (
    ChatModel,
    Completion,
    GenerationSettings,
)
from imessage_finetune.errors import ContextLengthExceeded, FinetuneError
from imessage_finetune.serving.openai_api import (
    ApiError,
    ChatRequest,
    chunk_body,
    completion_body,
    completion_id,
    invalid,
    model_body,
    models_body,
    parse_request,
)

LOG = logging.getLogger("imessage_finetune.serve")
MAX_BODY_BYTES = 4 * 1024 * 1024
"""A request body larger than this gets 413: a long conversation is tens of KB."""
DRAIN_BYTES = 64 * 1024 * 1024
"""An oversized body up to this size is read (and dropped) before the 413, so the client,
which is still sending, sees the reply instead of a reset connection."""
RETRY_AFTER_SECONDS = 5
DEFAULT_QUEUE_SIZE = 8
GRACEFUL_SECONDS = 3  # how long a stream in progress may go on after Ctrl-C or SIGTERM

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class ServeError(FinetuneError):
    """The server cannot start (the port is taken, the address is not this machine's...)."""


@dataclass(frozen=True)
class ServeOptions:
    """How to serve: where to listen, the bearer token (None: none needed), the queue."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    queue_size: int = DEFAULT_QUEUE_SIZE
    max_body_bytes: int = MAX_BODY_BYTES


def is_loopback(host: str) -> bool:
    """True when `host` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ModelQueue:
    """Admits requests to the model one at a time, in arrival order, with at most `size`
    waiting. (asyncio's Lock wakes its waiters first in, first out.)"""

    def __init__(self, size: int) -> None:
        import asyncio

        self.size = size
        self.waiting = 0
        self._lock = asyncio.Lock()

    async def acquire(self, number: int) -> None:
        """Wait for the model; ApiError 503 when `size` requests already wait."""
        if self._lock.locked() and self.waiting >= self.size:
            raise ApiError(
                503,
                f"the server is busy: {self.waiting} request(s) are waiting for the model; retry in a few seconds",
                type="server_error",
                code="server_busy",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        if self._lock.locked():
            LOG.info("request %d waits for the model (%d waiting before it)", number, self.waiting)
        self.waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self.waiting -= 1

    def release(self) -> None:
        """Give the model to the next request."""
        self._lock.release()


def create_app(model: ChatModel, options: ServeOptions, defaults: GenerationSettings, created: int = 0) -> Any:
    """The ASGI application serving `model`; requests without a parameter get `defaults`."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    queue: ModelQueue | None = None
    numbers = iter(range(1, 1 << 62))

    def get_queue() -> ModelQueue:
        nonlocal queue
        if queue is None:  # created in the server's event loop
            queue = ModelQueue(options.queue_size)
        return queue

    async def list_models(request: Request) -> Response:
        return JSONResponse(models_body(model.model_id, created))

    async def get_model(request: Request) -> Response:
        wanted = request.path_params["model"]
        if wanted != model.model_id:
            raise ApiError(404, f"The model `{wanted}` does not exist", param="model", code="model_not_found")
        return JSONResponse(model_body(model.model_id, created))

    async def chat_completions(request: Request) -> Response:
        number = next(numbers)
        body = await _read_json(request, options.max_body_bytes)
        checked = parse_request(body, model.model_id, model.system_prompt, defaults)
        await get_queue().acquire(number)
        try:
            completion = await _start(model, checked)
        except BaseException:
            get_queue().release()
            raise
        if checked.stream:
            return _stream(completion, checked, model.model_id, number, get_queue().release)
        try:
            return JSONResponse(await _whole(completion, model.model_id, number))
        finally:
            get_queue().release()

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = {404: f"no such endpoint: {request.url.path} (this server has /v1/models and /v1/chat/completions)"}
        status = exc.status_code
        text = message.get(
            status, f"{request.method} is not allowed on {request.url.path}" if status == 405 else exc.detail
        )
        return JSONResponse(ApiError(status, text).body, status_code=status, headers=exc.headers)

    async def internal_error(request: Request, exc: Exception) -> Response:
        # Starlette re-raises after this reply: `_Guard` logs it, in one line.
        return JSONResponse(
            ApiError(500, "internal error; the server log says why", type="server_error").body, status_code=500
        )

    routes = [
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", get_model, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={ApiError: api_error, HTTPException: http_error, Exception: internal_error},
    )
    return _Guard(app, options.api_key)


async def _read_json(request: Any, limit: int) -> Any:
    """The body as JSON; 413 past `limit` bytes, 400 when it is not JSON."""
    declared = request.headers.get("content-length")
    too_large = ApiError(
        413,
        f"the request body is larger than {limit // (1024 * 1024)} MiB: send a shorter conversation",
        code="request_too_large",
    )
    if declared is not None and declared.isdigit() and int(declared) > DRAIN_BYTES:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > DRAIN_BYTES:
            break
        if size <= limit:
            chunks.append(chunk)
    if size > limit:
        raise too_large
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError):
        raise invalid(
            "We could not parse the JSON body of your request: send a JSON object with model and messages",
            None,
        ) from None


async def _start(model: ChatModel, checked: ChatRequest) -> Completion:
    import anyio

    try:
        return await anyio.to_thread.run_sync(model.stream, checked.messages, checked.settings)
    except ContextLengthExceeded as exc:
        raise invalid(str(exc), "messages", code="context_length_exceeded") from None


def _next(completion: Completion) -> str | None:
    return next(completion, None)


async def _whole(completion: Completion, model_id: str, number: int) -> dict[str, Any]:
    import anyio

    started = time.monotonic()
    pieces = []
    try:
        while (piece := await anyio.to_thread.run_sync(_next, completion)) is not None:
            pieces.append(piece)
    finally:
        await _finish(completion)
    _log_done(number, completion, started, "")
    return completion_body(completion_id(), model_id, "".join(pieces), completion.usage)


async def _finish(completion: Completion) -> None:
    """Stop the generation and wait until the model is free (even when cancelled)."""
    import anyio

    completion.close()
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(_drain, completion)


def _drain(completion: Completion) -> None:
    with contextlib.suppress(Exception):
        for _ in completion:
            pass


def _log_done(number: int, completion: Completion, started: float, note: str) -> None:
    usage = completion.usage
    LOG.info(
        "request %d: %d prompt + %d completion tokens, finish_reason %s, %.2f s%s",
        number,
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.finish_reason,
        time.monotonic() - started,
        note,
    )


def _stream(
    completion: Completion, checked: ChatRequest, model_id: str, number: int, release: Callable[[], None]
) -> Any:
    id_, created = completion_id(), int(time.time())

    def event(body: dict[str, Any]) -> dict[str, str]:
        return {"data": json.dumps(body, ensure_ascii=False, separators=(",", ":"))}

    async def events() -> AsyncIterator[dict[str, str]]:
        import anyio

        started = time.monotonic()
        finished = False
        try:
            yield event(chunk_body(id_, model_id, created, {"role": "assistant", "content": ""}))
            try:
                while (piece := await anyio.to_thread.run_sync(_next, completion)) is not None:
                    yield event(chunk_body(id_, model_id, created, {"content": piece}))
            except Exception as exc:  # headers are sent: the error goes in the stream
                LOG.error("request %d failed while generating: %s", number, _reason(exc))
                yield event(
                    ApiError(
                        500, "the model failed while generating; the server log says why", type="server_error"
                    ).body
                )
                finished = True
                return
            yield event(chunk_body(id_, model_id, created, {}, completion.usage.finish_reason))
            if checked.include_usage:
                yield event(chunk_body(id_, model_id, created, None, usage=completion.usage))
            yield {"data": "[DONE]"}
            finished = True
        finally:
            await _finish(completion)
            _log_done(number, completion, started, "" if finished else "; the client went away, generation stopped")

    return _ReleasingStream(events(), completion, release)


def _reason(exc: BaseException) -> str:
    """One line about an unexpected error: its type and first line, never a traceback."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _ReleasingStream(events: AsyncIterator[dict[str, str]], completion: Completion, release: Callable[[], None]) -> Any:
    """An EventSourceResponse (OpenAI's framing: `data: ...` and a blank line) that stops the
    generation and gives the model back when the response ends, however it ends: also when
    the client left before the first event was sent, when the events' own `finally` never
    runs."""
    from sse_starlette.sse import EventSourceResponse

    class Releasing(EventSourceResponse):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await super().__call__(scope, receive, send)
            finally:
                with contextlib.suppress(Exception):
                    await events.aclose()  # type: ignore[attr-defined]
                await _finish(completion)  # (again, if the events did: it is idempotent)
                release()

    return Releasing(events, sep="\n", headers={"Cache-Control": "no-cache"})


class _Guard:
    """The outermost ASGI layer: the bearer token, OpenAI-shaped errors for everything
    (unknown paths and methods included), and no traceback ever, in a reply or the log."""

    def __init__(self, app: Any, api_key: str | None) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            self._authorize(scope)
            await self.app(scope, receive, tracking_send)
        except ApiError as exc:
            if not started:
                await _send_error(send, exc)
        except Exception as exc:  # any failure: one line in the log, OpenAI's shape in the reply
            LOG.error("%s %s failed: %s", scope.get("method"), scope.get("path"), _reason(exc))
            if not started:
                await _send_error(send, ApiError(500, "internal error; the server log says why", type="server_error"))

    def _authorize(self, scope: Scope) -> None:
        if self.api_key is None:
            return
        given = b""
        for name, value in scope.get("headers", []):
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                given = value[7:].strip()
        # Compared in constant time, so the reply's timing does not reveal the key.
        if not hmac.compare_digest(given, self.api_key):
            raise ApiError(
                401,
                "Incorrect or missing API key: send it as `Authorization: Bearer <key>` (the key given to `serve`)",
                code="invalid_api_key",
            )


async def _send_error(send: Send, exc: ApiError) -> None:
    body = json.dumps(exc.body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to `host`:`port` (0: a free port), before the model is loaded, so a
    port in use is said at once; ServeError with the way out otherwise."""
    import errno

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror:
        raise ServeError(f"--host {host!r} is not an address or a name this machine knows: use 127.0.0.1") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart reuses the port at once
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServeError(
                f"port {port} on {host} is already in use (another server, perhaps another `serve`): "
                "stop it, or choose another port with --port"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ServeError(
                f"{host} is not an address of this machine: use 127.0.0.1, or one of its own addresses"
            ) from None
        if exc.errno == errno.EACCES:
            raise ServeError(f"port {port} needs administrator rights: choose a port above 1023 with --port") from None
        raise ServeError(f"cannot listen on {host}:{port} ({exc.strerror}): choose another --host or --port") from None
    return sock


def address(sock: socket.socket) -> str:
    """The base URL clients use for a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/v1"


def run(app: Any, sock: socket.socket, on_ready: Callable[[], None] | None = None) -> int | None:
    """Serve `app` on `sock` until Ctrl-C or SIGTERM (a second Ctrl-C stops at once); streams
    in progress get GRACEFUL_SECONDS to finish, then are closed, which stops their generation.
    `on_ready` is called once the socket accepts connections. The signal that stopped it."""
    import uvicorn

    class Server(uvicorn.Server):
        stopped_by: int | None = None

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.stopped_by is None:
                self.stopped_by = sig
            super().handle_exit(sig, frame)

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and on_ready is not None:
                on_ready()

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn's own re-raises the signal once it has stopped, so that SIGTERM would kill
            # the process; here, stopping on a signal is the normal way to end.
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            originals = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in originals.items():
                    signal.signal(sig, handler)

    config = uvicorn.Config(
        app,
        log_config=None,  # the command's logging: one line per event, no traceback
        lifespan="off",
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        server_header=False,
    )
    running = Server(config)
    running.run(sockets=[sock])
    return running.stopped_by
