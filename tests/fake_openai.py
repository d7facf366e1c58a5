"""A stand-in for OpenAI's files, fine-tuning and chat API on 127.0.0.1, for tests.

A real HTTP server (stdlib `ThreadingHTTPServer` in a thread) so that the `openai` client runs
unchanged over real sockets, timeouts and dropped connections; replies follow the SDK's models
closely enough for `_strict_response_validation=True`. The `fake_openai` fixture starts one per
test, blocks sockets to anything but 127.0.0.1 and clears the `OPENAI_*` and proxy variables.

Jobs move one step per `GET /fine_tuning/jobs/{id}` (or per `advance()` with
`auto_advance = False`): validating_files → queued → running (one metric event per step,
`total_steps` steps) → succeeded, or failed when the training file has fewer than 10 examples
(`invalid_n_examples`) or is not chat-formatted (`invalid_training_file`). Faults are one-shot
(or `times`-shot) actions on requests matching a method and a path prefix, see `add_fault`.
Everything is deterministic: ids count up and timestamps come from a virtual clock.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

API_KEY = "sk-test-fakeopenai-0123456789abcdefABCDEF"
ORGANIZATION = "imessage-finetune"
MIN_EXAMPLES = 10
START = 1_790_000_000  # virtual clock: Unix time of the first object

FAULT_ACTIONS = ("error", "drop_before", "drop_after", "slow_before", "slow_after", "truncated", "bad_json")
TERMINAL = ("succeeded", "failed", "cancelled")

Json = dict[str, Any]


class ApiError(Exception):
    """An error reply in OpenAI's shape: `{"error": {message, type, param, code}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers or {}
        self.body = {"error": {"message": message, "type": type, "param": param, "code": code}}


@dataclass
class Fault:
    """What to do to the next `times` requests matching `method` and `path_prefix`."""

    method: str
    path_prefix: str
    action: str
    times: int = 1
    status: int = 500
    retry_after_ms: int | None = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RequestRecord:
    """One request as received; `status` is None when the connection was dropped."""

    method: str
    path: str
    query: dict[str, str]
    retry_count: int | None
    status: int | None = None
    body: bytes = b""


@dataclass
class FakeFile:
    """An uploaded file."""

    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int

    def to_json(self) -> Json:
        """The `FileObject` reply."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


@dataclass
class FakeJob:
    """A fine-tuning job and its event log (oldest first)."""

    id: str
    model: str
    training_file: str
    validation_file: str | None
    suffix: str | None
    seed: int
    hyperparameters: Json
    metadata: dict[str, str] | None
    created_at: int
    status: str = "validating_files"
    step: int = 0
    error: Json | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    trained_tokens: int | None = None
    result_files: list[str] = field(default_factory=list)
    events: list[Json] = field(default_factory=list)

    def to_json(self) -> Json:
        """The `FineTuningJob` reply."""
        return {
            "id": self.id,
            "object": "fine_tuning.job",
            "created_at": self.created_at,
            "error": self.error,
            "fine_tuned_model": self.fine_tuned_model,
            "finished_at": self.finished_at,
            "hyperparameters": self.hyperparameters,
            "model": self.model,
            "organization_id": f"org-{ORGANIZATION}",
            "result_files": self.result_files,
            "seed": self.seed,
            "status": self.status,
            "trained_tokens": self.trained_tokens,
            "training_file": self.training_file,
            "validation_file": self.validation_file,
            "estimated_finish": None,
            "integrations": [],
            "metadata": self.metadata,
            "method": {"type": "supervised", "supervised": {"hyperparameters": self.hyperparameters}},
        }


@dataclass
class FakeState:
    """Everything the server holds; read it to assert what the service saw."""

    files: dict[str, FakeFile] = field(default_factory=dict)
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    requests: list[RequestRecord] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    refusal: ApiError | None = None
    clock: int = START
    counters: dict[str, int] = field(default_factory=dict)

    def new_id(self, prefix: str) -> str:
        """The next id for `prefix` (file, ftjob, ftevent, chatcmpl, req)."""
        self.counters[prefix] = self.counters.get(prefix, 0) + 1
        return f"{prefix}-fake{self.counters[prefix]:06d}"

    def tick(self) -> int:
        """Advance the virtual clock by one second and return it."""
        self.clock += 1
        return self.clock


def _page(items: list[Json], query: dict[str, str], default_limit: int) -> Json:
    """A cursor page: the items after the one named by `after`, at most `limit` of them."""
    after = query.get("after")
    if after is not None:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    limit = int(query.get("limit", default_limit))
    return {"object": "list", "data": items[:limit], "has_more": len(items) > limit}


def _examples(content: bytes) -> list[bytes]:
    """The non-blank lines of a training file."""
    return [line for line in content.splitlines() if line.strip()]


def _auto_epochs(examples: int) -> int:
    """OpenAI's documented default number of epochs for `examples` training examples."""
    if 3 * examples < 100:
        return min(25, 100 // examples)
    if 3 * examples > 25_000:
        return max(1, 25_000 // examples)
    return 3


class FakeOpenAI:
    """The server, its state, and the knobs tests turn (faults, refusal, job progression)."""

    def __init__(self) -> None:
        self.state = FakeState()
        self.lock = threading.Lock()
        self.api_key = API_KEY
        self.auto_advance = True
        self.total_steps = 3
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        # A short poll interval: shutdown() waits for it, at every test's teardown.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, name="fake-openai", daemon=True
        )

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self._server.shutdown()
        self._server.server_close()

    # -- knobs -------------------------------------------------------------------------------

    def add_fault(
        self,
        method: str,
        path_prefix: str,
        action: str,
        *,
        times: int = 1,
        status: int = 500,
        retry_after_ms: int | None = None,
        delay: float = 0.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Disturb the next `times` requests whose method and path (e.g. /v1/files) match.

        Actions: `error` (reply `status`, with `retry-after-ms` and extra `headers` if given,
        without doing the work), `drop_before` / `drop_after` (close the connection without a
        reply, before / after doing the work), `slow_before` / `slow_after` (sleep `delay`
        seconds before / after doing the work: after = the work is done even if the client
        gave up), `truncated` (do the work, announce more bytes than sent), `bad_json`.
        """
        if action not in FAULT_ACTIONS:
            raise ValueError(f"unknown fault action {action!r}; expected one of {FAULT_ACTIONS}")
        fault = Fault(method.upper(), path_prefix, action, times, status, retry_after_ms, delay, headers or {})
        with self.lock:
            self.state.faults.append(fault)

    def refuse_fine_tuning(
        self,
        status: int = 403,
        message: str = (
            "This organization does not have access to fine-tuning. Self-serve fine-tuning "
            "is no longer available for new training jobs."
        ),
        code: str | None = None,
    ) -> None:
        """Answer every job creation as for an organisation that may no longer fine-tune.

        The wording is a plausible stand-in: OpenAI's exact refusal body is not documented.
        """
        with self.lock:
            self.state.refusal = ApiError(status, message, code=code)

    def advance(self, job_id: str | None = None, steps: int = 1) -> None:
        """Move one job (or every unfinished job) `steps` steps through its life."""
        with self.lock:
            for job in [self.state.jobs[job_id]] if job_id else list(self.state.jobs.values()):
                for _ in range(steps):
                    self._step(job)

    def requests_to(self, method: str, path_prefix: str) -> list[RequestRecord]:
        """The logged requests with this method whose path starts with `path_prefix`."""
        with self.lock:
            return [r for r in self.state.requests if r.method == method and r.path.startswith(path_prefix)]

    # -- request handling (called by the handler, under the lock) ------------------------------

    def take_fault(self, method: str, path: str) -> Fault | None:
        """Consume one use of the first fault matching this request."""
        for fault in self.state.faults:
            if fault.method == method and path.startswith(fault.path_prefix):
                fault.times -= 1
                if fault.times == 0:
                    self.state.faults.remove(fault)
                return fault
        return None

    def handle(
        self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes
    ) -> tuple[int, Any]:
        """Route one request; returns (status, reply) where reply is JSON, bytes or SSE events."""
        self._authenticate(headers.get("Authorization"))
        routes: list[tuple[str, str, Any]] = [
            ("POST", r"/v1/files", self._upload),
            ("GET", r"/v1/files", self._list_files),
            ("GET", r"/v1/files/([^/]+)", self._get_file),
            ("DELETE", r"/v1/files/([^/]+)", self._delete_file),
            ("GET", r"/v1/files/([^/]+)/content", self._file_content),
            ("POST", r"/v1/fine_tuning/jobs", self._create_job),
            ("GET", r"/v1/fine_tuning/jobs", self._list_jobs),
            ("GET", r"/v1/fine_tuning/jobs/([^/]+)", self._retrieve_job),
            ("GET", r"/v1/fine_tuning/jobs/([^/]+)/events", self._list_events),
            ("POST", r"/v1/fine_tuning/jobs/([^/]+)/cancel", self._cancel_job),
            ("POST", r"/v1/chat/completions", self._chat),
        ]
        for route_method, pattern, action in routes:
            match = re.fullmatch(pattern, path)
            if match and route_method == method:
                return action(*match.groups(), query=query, headers=headers, body=body)
        raise ApiError(404, f"Invalid URL ({method} {path})")

    def _authenticate(self, authorization: str | None) -> None:
        if not authorization or not authorization.startswith("Bearer "):
            raise ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization "
                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        key = authorization.removeprefix("Bearer ")
        if key != self.api_key:
            # OpenAI masks the key here; this echoes it whole, as a careless compatible server
            # might, so that tests prove the client never repeats it.
            raise ApiError(
                401,
                f"Incorrect API key provided: {key}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )

    # files

    def _upload(self, *, headers: Any, body: bytes, **_: Any) -> tuple[int, Json]:
        raw = b"Content-Type: " + headers["Content-Type"].encode() + b"\r\n\r\n" + body
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
        fields: dict[str, Any] = {}
        filename = "upload"
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            fields[str(name)] = part.get_payload(decode=True)
            if name == "file":
                filename = part.get_filename() or filename
        if "file" not in fields or "purpose" not in fields:
            raise ApiError(400, "Missing required parameter: 'file' or 'purpose'.")
        purpose = fields["purpose"].decode()
        content: bytes = fields["file"]
        if purpose == "fine-tune":
            for number, line in enumerate(content.splitlines(), 1):
                try:
                    value = json.loads(line) if line.strip() else {}
                except ValueError:
                    value = None
                if not isinstance(value, dict):
                    raise ApiError(
                        400,
                        "Expected file to have JSONL format, where every line is a JSON dictionary. "
                        f"Line {number} is not a dictionary.",
                        param="file",
                    )
        file = FakeFile(self.state.new_id("file"), filename, purpose, content, self.state.tick())
        self.state.files[file.id] = file
        return 200, file.to_json()

    def _list_files(self, *, query: dict[str, str], **_: Any) -> tuple[int, Json]:
        files = [f for f in self.state.files.values() if query.get("purpose") in (None, f.purpose)]
        files.sort(key=lambda f: (f.created_at, f.id), reverse=query.get("order", "desc") == "desc")
        return 200, _page([f.to_json() for f in files], query, 10_000)

    def _file(self, file_id: str) -> FakeFile:
        if file_id not in self.state.files:
            raise ApiError(404, f"No such File object: {file_id}", param="id")
        return self.state.files[file_id]

    def _get_file(self, file_id: str, **_: Any) -> tuple[int, Json]:
        return 200, self._file(file_id).to_json()

    def _delete_file(self, file_id: str, **_: Any) -> tuple[int, Json]:
        del self.state.files[self._file(file_id).id]
        return 200, {"id": file_id, "object": "file", "deleted": True}

    def _file_content(self, file_id: str, **_: Any) -> tuple[int, bytes]:
        return 200, self._file(file_id).content

    # jobs

    def _create_job(self, *, body: bytes, **_: Any) -> tuple[int, Json]:
        if self.state.refusal is not None:
            raise self.state.refusal
        request = json.loads(body)
        model, training = request.get("model"), request.get("training_file")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "Missing required parameter: 'model'.", param="model")
        for param in ("training_file", "validation_file"):
            file_id = request.get(param)
            if (param == "training_file" or file_id is not None) and (
                file_id not in self.state.files or self.state.files[file_id].purpose != "fine-tune"
            ):
                raise ApiError(400, f"invalid {param}: {file_id}", param=param)
        suffix = request.get("suffix")
        if suffix is not None and len(suffix) > 64:
            raise ApiError(400, "suffix must be no longer than 64 characters", param="suffix")
        metadata = request.get("metadata")
        if metadata is not None and (
            len(metadata) > 16 or any(len(k) > 64 or len(str(v)) > 512 for k, v in metadata.items())
        ):
            raise ApiError(400, "Invalid 'metadata': at most 16 pairs, keys ≤ 64, values ≤ 512", param="metadata")
        given = (request.get("method") or {}).get("supervised", {}).get("hyperparameters", {})
        names = ("batch_size", "learning_rate_multiplier", "n_epochs")
        hyperparameters = {name: given.get(name, "auto") for name in names}
        job_id = self.state.new_id("ftjob")
        job = FakeJob(
            id=job_id,
            model=model,
            training_file=training,
            validation_file=request.get("validation_file"),
            suffix=suffix,
            seed=request.get("seed", 1000 + self.state.counters["ftjob"]),
            hyperparameters=hyperparameters,
            metadata=metadata,
            created_at=self.state.tick(),
        )
        self._event(job, f"Created fine-tuning job: {job_id}")
        self._event(job, f"Validating training file: {training}")
        self.state.jobs[job_id] = job
        return 200, job.to_json()

    def _list_jobs(self, *, query: dict[str, str], **_: Any) -> tuple[int, Json]:
        wanted = {k[9:-1]: v for k, v in query.items() if k.startswith("metadata[") and k.endswith("]")}
        if query.get("metadata") == "null":
            jobs = [j for j in self.state.jobs.values() if j.metadata is None]
        else:
            jobs = [j for j in self.state.jobs.values() if wanted.items() <= (j.metadata or {}).items()]
        jobs.sort(key=lambda j: (j.created_at, j.id), reverse=True)
        return 200, _page([j.to_json() for j in jobs], query, 20)

    def _job(self, job_id: str) -> FakeJob:
        if job_id not in self.state.jobs:
            raise ApiError(
                404, f"No such fine-tuning job: {job_id}", param="fine_tuning_job_id", code="fine_tune_not_found"
            )
        return self.state.jobs[job_id]

    def _retrieve_job(self, job_id: str, **_: Any) -> tuple[int, Json]:
        job = self._job(job_id)
        if self.auto_advance:
            self._step(job)
        return 200, job.to_json()

    def _list_events(self, job_id: str, *, query: dict[str, str], **_: Any) -> tuple[int, Json]:
        return 200, _page(self._job(job_id).events[::-1], query, 20)

    def _cancel_job(self, job_id: str, **_: Any) -> tuple[int, Json]:
        job = self._job(job_id)
        if job.status in TERMINAL:
            raise ApiError(400, f"Job has already completed: {job_id}", param="fine_tuning_job_id")
        job.status, job.finished_at = "cancelled", self.state.tick()
        self._event(job, "Fine-tuning job cancelled")
        return 200, job.to_json()

    def _event(self, job: FakeJob, message: str, *, level: str = "info", data: Json | None = None) -> None:
        job.events.append(
            {
                "id": self.state.new_id("ftevent"),
                "object": "fine_tuning.job.event",
                "created_at": self.state.tick(),
                "level": level,
                "message": message,
                "data": data,
                "type": "metrics" if data else "message",
            }
        )

    def _step(self, job: FakeJob) -> None:
        """One step of the job's life; nothing once it is terminal."""
        if job.status == "validating_files":
            examples = _examples(self.state.files[job.training_file].content)
            if not all("messages" in json.loads(line) for line in examples):
                self._fail(
                    job,
                    "invalid_training_file",
                    "Unexpected file format, expected either prompt/completion pairs or chat messages.",
                )
            elif len(examples) < MIN_EXAMPLES:
                self._fail(
                    job,
                    "invalid_n_examples",
                    f"Training file has {len(examples)} example(s), "
                    f"but must have at least {MIN_EXAMPLES} examples",
                )
            else:
                job.status = "queued"
                self._event(job, "Files validated, moving job to queued state")
        elif job.status == "queued":
            job.status = "running"
            self._event(job, "Fine-tuning job started")
        elif job.status == "running" and job.step < self.total_steps:
            job.step += 1
            loss = round(2.0 / (job.step + 1), 4)
            self._event(
                job,
                f"Step {job.step}/{self.total_steps}: training loss={loss}",
                data={"step": job.step, "train_loss": loss, "total_steps": self.total_steps},
            )
        elif job.status == "running":
            self._succeed(job)

    def _fail(self, job: FakeJob, code: str, message: str) -> None:
        job.status, job.finished_at = "failed", self.state.tick()
        job.error = {"code": code, "message": message, "param": "training_file"}
        self._event(job, message, level="error")

    def _succeed(self, job: FakeJob) -> None:
        content = self.state.files[job.training_file].content
        epochs = job.hyperparameters["n_epochs"]
        epochs = _auto_epochs(len(_examples(content))) if epochs == "auto" else int(epochs)
        job.status, job.finished_at = "succeeded", self.state.tick()
        job.fine_tuned_model = f"ft:{job.model}:{ORGANIZATION}:{job.suffix or ''}:{job.id.rsplit('-', 1)[-1]}"
        job.trained_tokens = len(content) // 4 * epochs
        results_id = self.state.new_id("file")
        results = FakeFile(results_id, "step_metrics.csv", "fine-tune-results", b"step,train_loss\n", self.state.tick())
        self.state.files[results.id] = results
        job.result_files = [results.id]
        self._event(job, f"New fine-tuned model created: {job.fine_tuned_model}")
        self._event(job, "The job has successfully completed")

    # chat

    def _chat(self, *, body: bytes, **_: Any) -> tuple[int, Any]:
        request = json.loads(body)
        model = request.get("model")
        trained = {j.fine_tuned_model for j in self.state.jobs.values() if j.fine_tuned_model}
        if not isinstance(model, str) or (model.startswith("ft:") and model not in trained):
            raise ApiError(
                404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found"
            )
        users = [m.get("content") for m in request.get("messages", []) if m.get("role") == "user"]
        reply = f"You said: {users[-1] if users else ''}"
        completion_id, created = self.state.new_id("chatcmpl"), self.state.tick()
        base = {"id": completion_id, "created": created, "model": model}
        if not request.get("stream"):
            message = {"role": "assistant", "content": reply, "refusal": None}
            choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
            return 200, {**base, "object": "chat.completion", "choices": [choice]}
        # The first chunk carries the role, the last only the finish reason, as OpenAI's do.
        deltas: list[tuple[Json, str | None]] = [({"role": "assistant", "content": ""}, None)]
        deltas += [({"content": piece}, None) for piece in re.findall(r"\S+\s*", reply)]
        deltas.append(({}, "stop"))
        chunks = [
            {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            }
            for delta, finish in deltas
        ]
        if (request.get("stream_options") or {}).get("include_usage"):
            # As OpenAI does: one more chunk, with no choices, carrying the counts (words here).
            prompt = sum(len(str(m.get("content", "")).split()) for m in request.get("messages", []))
            completion = len(deltas) - 2
            usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
            chunks.append({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
        return 200, [json.dumps(c) for c in chunks] + ["[DONE]"]


def _fault_body(status: int) -> Json:
    """OpenAI's wording for an injected 429 or 5xx, any other status gets a generic message."""
    if status == 429:
        return ApiError(429, "Rate limit reached for requests", type="requests", code="rate_limit_exceeded").body
    if status >= 500:
        return ApiError(
            status, "The server had an error while processing your request. Sorry about that!", type="server_error"
        ).body
    return ApiError(status, f"Injected error {status}").body


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], fake: FakeOpenAI
    ) -> None:
        super().__init__(address, handler)
        self.fake = fake

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out has closed its end; writing the late reply fails. Expected.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle's algorithm each reply would wait
    # for the client's delayed ACK (40 ms).
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while size := int(self.rfile.readline().split(b";")[0], 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return body
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve(self, method: str) -> None:
        fake = self.server.fake
        url = urlsplit(self.path)
        body = self._read_body()
        retry = self.headers.get("x-stainless-retry-count")
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        record = RequestRecord(method, url.path, query, int(retry) if retry else None, body=body)
        with fake.lock:
            fake.state.requests.append(record)
            fault = fake.take_fault(method, url.path)
        action = fault.action if fault else None
        if fault and action == "slow_before":
            time.sleep(fault.delay)
        if fault and action == "drop_before":
            self.close_connection = True
            return
        if fault and action == "error":
            status, reply, headers = fault.status, _fault_body(fault.status), dict(fault.headers)
            if fault.retry_after_ms is not None:
                headers["retry-after-ms"] = str(fault.retry_after_ms)
        else:
            headers = {}
            with fake.lock:
                try:
                    status, reply = fake.handle(method, url.path, query, self.headers, body)
                except ApiError as error:
                    status, reply, headers = error.status, error.body, error.headers
        if fault and action == "drop_after":
            self.close_connection = True
            return
        if fault and action == "slow_after":
            time.sleep(fault.delay)
        record.status = status
        with fake.lock:
            request_id = fake.state.new_id("req")
        if isinstance(reply, list):
            self._send_events(status, reply, request_id)
            return
        data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
        if action == "bad_json":
            data = data[: len(data) // 2]
        self.send_response(status)
        content_type = "application/octet-stream" if isinstance(reply, bytes) else "application/json"
        self.send_header("Content-Type", content_type)
        self.send_header("x-request-id", request_id)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data) + (100 if action == "truncated" else 0)))
        self.end_headers()
        self.wfile.write(data)
        if action == "truncated":
            self.close_connection = True

    def _send_events(self, status: int, events: list[str], request_id: str) -> None:
        """Server-sent events, one HTTP chunk each, as OpenAI streams them."""
        self.send_response(status)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("x-request-id", request_id)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in events:
            data = f"data: {event}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


class NetworkBlocked(OSError):
    """A test tried to open a socket to something other than 127.0.0.1."""


def _block_non_loopback(monkeypatch: pytest.MonkeyPatch, attempts: list[Any]) -> None:
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] != "127.0.0.1":
            attempts.append(address)
            raise NetworkBlocked(f"tests may only connect to 127.0.0.1, not {address!r}")
        real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture
def fake_openai(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    """A running stand-in; sockets to anything but 127.0.0.1 fail (and fail the test)."""
    openai_variables = ("API_KEY", "ADMIN_KEY", "BASE_URL", "ORG_ID", "PROJECT_ID", "CUSTOM_HEADERS")
    for name in [f"OPENAI_{v}" for v in openai_variables] + ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"]:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    blocked: list[Any] = []
    _block_non_loopback(monkeypatch, blocked)
    fake = FakeOpenAI()
    fake.start()
    yield fake
    fake.stop()
    assert not blocked, f"a test tried to leave 127.0.0.1: {blocked}"


class VirtualTime:
    """A clock that only moves when the code under test sleeps; the sleeps are recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def monotonic(self) -> float:
        return self.now
