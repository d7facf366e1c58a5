"""The `imessage-finetune` command: the pipeline's stages, and tools to look at a database.

A thin layer: it drives the same doit tasks as `dodo.py` and calls the same library
functions. Data goes to stdout, chatter to stderr. Every FinetuneError becomes a one-line
error and exit status 1 in `_Group.invoke`; set IMESSAGE_FINETUNE_RAISE_ERRORS=1 to see the
traceback instead.
"""

from __future__ import annotations

import dataclasses
import shutil
import signal
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from imessage_finetune import __version__, artifacts, stages
from imessage_finetune.backends import backend_for
from imessage_finetune.config import CONFIG_ENV, Config, FinetuneConfig, RunOptions, find_config, load_config
from imessage_finetune.errors import FinetuneError, SchemaValidationError
from imessage_finetune.jsonio import dump_json, load_json
from imessage_finetune.pipeline import run_lock
from imessage_finetune.pipeline.explain import StageStatus, dag_lines, plan, stage_statuses
from imessage_finetune.pipeline.lockfile import verify
from imessage_finetune.pipeline.reporter import INTERRUPTED
from imessage_finetune.pipeline.tasks import DEFAULT_TARGET, active_stages, doit_namespace, run_doit
from imessage_finetune.schema_check import validate_document
from imessage_finetune.sources.chatdb.connection import open_chat_db
from imessage_finetune.sources.chatdb.overview import conversations, diagnose
from imessage_finetune.sources.contacts import ContactBook, contacts_sources, read_contacts
from imessage_finetune.stages.dataset import partner_prompt
from imessage_finetune.stages.sessions import reader_options
from imessage_finetune.stages.snapshot import contacts_databases, source_database
from imessage_finetune.terminal import count_unsafe, printable, table_lines


class StageName(click.Choice):
    """A registered stage's name (the list is read when the command runs, so it is always
    the declarations': a stage registered in `stages.STAGES` is a valid name)."""

    def __init__(self) -> None:
        super().__init__([])

    @property  # type: ignore[override]
    def choices(self) -> list[str]:
        """The registered stages' names, in order."""
        return [stage.name for stage in stages.STAGES]

    @choices.setter
    def choices(self, value: Any) -> None:
        pass


def _options(ctx: click.Context) -> RunOptions:
    options: RunOptions = ctx.find_root().obj["options"]
    return options


def _config(ctx: click.Context) -> Config:
    path = ctx.find_root().obj["config_path"] or find_config(Path.cwd())
    return load_config(Path(path))


@contextmanager
def _database(ctx: click.Context, db: Path | None) -> Iterator[tuple[Path, Path, ContactBook, Config]]:
    """The database to open, the path to show for it, and its contact names: --db (with the
    Mac's own Contacts, or the configured ones), else the configured source. A demo not built
    yet is built in a temporary folder: looking writes nothing into the artifacts. A backup
    folder's sms.db is copied (or decrypted) into a private folder inside the artifacts
    folder, the only place its plaintext may go, and removed afterwards; its names come from
    its own Contacts unless [source] contacts lists others."""
    config = _config(ctx)
    source = db.expanduser() if db is not None else source_database(config)
    if not config.uses_demo and source.is_dir():
        from imessage_finetune.pipeline.console import Console
        from imessage_finetune.sources.ios_backup import backup_database
        from imessage_finetune.stages.snapshot import backup_password

        console = Console(_options(ctx))
        password = backup_password(config, console.secret)
        timeout = config.source.busy_timeout
        # The build lock prepares the private folder (and removes a copy a killed run left) and
        # keeps a build from cleaning it while the copy is read.
        with run_lock.held(config.artifacts_dir, config.artifacts.lock_timeout, console.say):
            with backup_database(source, config.artifacts_dir, password, config.contacts_paths(), timeout) as found:
                yield found.sms_db, source, found.book, config
        return
    with tempfile.TemporaryDirectory(prefix="imessage-finetune-demo-") as scratch:
        if db is not None:
            path, contacts = source, contacts_sources(config.contacts_paths())
        else:
            path, contacts = source, contacts_databases(config)
            if config.uses_demo and not path.exists():
                from imessage_finetune.fixtures.demo import build_demo

                built = build_demo(Path(scratch) / artifacts.DEMO_SOURCE_DIR)
                path = built.chat_db
                if config.contacts_paths() is None:
                    contacts = [built.addressbook]
        yield path, path, read_contacts(contacts, config.source.busy_timeout), config


class _Group(click.Group):
    """Turns every FinetuneError into a ClickException, and Ctrl-C into one line and exit
    status 130: the one place errors are mapped."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FinetuneError as exc:
            options = (ctx.obj or {}).get("options") or RunOptions.from_environ()
            if options.raise_errors:
                raise
            raise click.ClickException(str(exc)) from exc
        except KeyboardInterrupt:
            click.echo("interrupted; nothing was changed", err=True)
            raise click.exceptions.Exit(INTERRUPTED) from None


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="imessage-finetune")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Config file (default: ${CONFIG_ENV}, else ./finetune.toml).",
)
@click.option("--quiet", "-q", is_flag=True, help="Say only errors and the closing summary.")
@click.option("--verbose", "-v", is_flag=True, help="Say more about what is checked.")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, quiet: bool, verbose: bool) -> None:
    """Fine-tune a language model on your own iMessage history.

    \b
    Quick start, on the built-in demo data:
      imessage-finetune run
      imessage-finetune conversations
      imessage-finetune validate artifacts/train.jsonl
    """
    if quiet and verbose:
        raise click.UsageError("use just one of --quiet and --verbose")
    options = RunOptions.from_environ()
    if quiet or verbose:
        options = dataclasses.replace(options, verbosity=0 if quiet else 2)
    ctx.obj = {"config_path": config_path, "options": options}


@cli.command()
@click.argument("stage", required=False, type=StageName(), default=DEFAULT_TARGET)
@click.option("--force", "-f", is_flag=True, help="Rebuild STAGE even if it is up to date.")
@click.option("--yes", "-y", is_flag=True, help="Send to the fine-tuning service without asking.")
@click.pass_context
def run(ctx: click.Context, stage: str, force: bool, yes: bool) -> None:
    """Build STAGE (default: dataset) and whatever it needs that is stale.

    \b
    Example:
      imessage-finetune run snapshot --force
    """
    config = _config(ctx)
    declared = stages.stage_named(stage)
    if not declared.applies(config):
        raise click.UsageError(declared.not_applicable.format(backend=config.finetune.backend))
    options = _options(ctx)
    options = dataclasses.replace(
        options,
        assume_yes=options.assume_yes or yes,
        forced=options.forced | {stage} if force else options.forced,
    )
    code = run_doit(config, [stage], options)
    if code:
        raise click.exceptions.Exit(code)


@cli.command(name="conversations")
@click.option(
    "--db",
    type=click.Path(path_type=Path),
    help="A chat.db or an iPhone backup folder (default: the configured source).",
)
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_context
def conversations_command(ctx: click.Context, db: Path | None, as_json: bool) -> None:
    """List conversations with their message counts, to choose filters.

    \b
    Example:
      imessage-finetune conversations --db ~/Library/Messages/chat.db
    """
    with _database(ctx, db) as (path, _, contacts, config):
        with open_chat_db(path, busy_timeout=config.source.busy_timeout) as conn:
            found = conversations(conn, contacts, config.sessions.owner_name)
    if as_json:
        click.echo(
            dump_json(
                [
                    {
                        "chat_identifier": c.chat.identifier,
                        "name": c.chat.title,
                        "is_group": c.chat.is_group,
                        "participants": [p.name or p.handle for p in c.chat.participants],
                        "messages": c.messages,
                        "first": c.first,
                        "last": c.last,
                    }
                    for c in found
                ]
            ).decode(),
            nl=False,
        )
        return
    rows = [("IDENTIFIER", "NAME", "PARTICIPANTS", "MESSAGES", "FIRST", "LAST")]
    for c in found:
        rows.append(
            (
                c.chat.identifier,
                c.chat.title,
                ", ".join(p.name or p.handle for p in c.chat.participants),
                str(c.messages),
                (c.first or "")[:10],
                (c.last or "")[:10],
            )
        )
    _table(rows)
    click.echo(f"{len(found)} conversations, {sum(c.messages for c in found)} messages", err=True)


@cli.command(name="diagnose")
@click.option(
    "--db",
    type=click.Path(path_type=Path),
    help="A chat.db or an iPhone backup folder (default: the configured source).",
)
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_context
def diagnose_command(ctx: click.Context, db: Path | None, as_json: bool) -> None:
    """Summarise a database: totals, dates, what is kept and what is left out, and why.

    \b
    Example:
      imessage-finetune diagnose --json
    """
    with _database(ctx, db) as (path, shown, contacts, config):
        with open_chat_db(path, busy_timeout=config.source.busy_timeout) as conn:
            report = diagnose(conn, shown, contacts, reader_options(config))
    if as_json:
        click.echo(dump_json(dataclasses.asdict(report)).decode(), nl=False)
        return
    share = report.text_only_in_attributed_body / report.message_rows if report.message_rows else 0
    named = report.handles_named / report.handles if report.handles else 0
    lines = [
        ("database", report.path),
        ("message rows", str(report.message_rows)),
        ("chats", str(report.chats)),
        ("date range", f"{report.first} .. {report.last}"),
        ("text only in attributedBody", f"{report.text_only_in_attributed_body} rows ({share:.0%})"),
        ("own messages with handle_id = 0", f"{report.owner_rows_without_handle} rows"),
        (
            "messages kept",
            str(report.messages_kept)
            + (
                f" ({report.kept_in_several_chats} joined to two or more chats, counted in each)"
                if report.kept_in_several_chats
                else ""
            ),
        ),
        ("  text from attributedBody", str(report.kept_from_attributed_body)),
        ("  own, with handle_id = 0", str(report.kept_owner_without_handle)),
        ("handles with resolved names", f"{report.handles_named}/{report.handles} ({named:.0%})"),
    ]
    lines += [(f"left out: {reason}", str(n)) for reason, n in report.excluded.items()]
    _table(lines)


@cli.command(name="backups")
@click.option(
    "--path",
    "paths",
    multiple=True,
    type=click.Path(path_type=Path),
    help="A folder of backups, or one backup (repeatable; default: where Finder and iTunes keep them).",
)
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
def backups_command(paths: tuple[Path, ...], as_json: bool) -> None:
    """List iPhone and iPad backups: device, iOS version, date, encrypted, folder.

    Set [source] path to a backup's FOLDER to train on its messages. Without --path, looks
    where Finder (macOS) and iTunes or Apple Devices (Windows) keep backups; on Linux give the
    folder idevicebackup2 wrote to.

    \b
    Example:
      imessage-finetune backups --path ~/iphone-backups
    """
    from imessage_finetune.sources.ios_backup import default_backup_roots, find_backups

    roots = [p.expanduser() for p in paths] or default_backup_roots()
    if not roots:
        raise click.UsageError(
            "there is no usual backup folder on this system: give the folder idevicebackup2 wrote to with --path"
        )
    for root in roots[: len(paths)]:
        if not root.exists():
            raise click.ClickException(f"{root} not found; give a folder of backups or a backup folder")
    found = find_backups(roots)
    if as_json:
        document = [
            {
                "folder": str(b.path),
                "device_name": b.device_name,
                "ios_version": b.ios_version,
                "product_type": b.product_type,
                "udid": b.udid,
                "date": b.date.isoformat() if b.date else None,
                "encrypted": b.encrypted,
                "finished": b.finished,
                "problem": b.problem,
            }
            for b in found
        ]
        click.echo(dump_json(document).decode(), nl=False)
        return
    if not found:
        click.echo(f"no backups in {', '.join(str(r) for r in roots)}", err=True)
        return
    rows = [("DEVICE", "IOS", "DATE (UTC)", "ENCRYPTED", "FOLDER")]
    for b in found:
        rows.append(
            (
                b.device_name or f"({b.problem or 'unknown device'})",
                b.ios_version or "?",
                (f"{b.date:%Y-%m-%d %H:%M}" if b.date else "?") + ("" if b.finished else " (unfinished)"),
                "?" if b.problem else "yes" if b.encrypted else "no",
                str(b.path),
            )
        )
    _table(rows)
    click.echo(f"{len(found)} backup(s); set [source] path to a FOLDER to use it", err=True)


@cli.command(name="validate")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", help="Target model: sets the tokenizer and token limit (default: [finetune] model).")
@click.option(
    "--token-limit",
    type=click.IntRange(min=1),
    help="Tokens per example the target model accepts: needed for a model without known limits.",
)
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_context
def validate_command(ctx: click.Context, path: Path, model: str | None, token_limit: int | None, as_json: bool) -> None:
    """Check a fine-tuning JSONL file against OpenAI's rules; exit 1 when it has errors.

    Each problem names its line and field; message text is never shown. A model whose limits
    are not known (a typo, or another service's model) is refused unless --token-limit says
    its limit, rather than checked against a limit that may not be its own.

    \b
    Example:
      imessage-finetune validate artifacts/train.jsonl --model gpt-4o-mini-2024-07-18
    """
    from imessage_finetune.openai_file import validate_file
    from imessage_finetune.stages.dataset import token_stats
    from imessage_finetune.tokens import TOKEN_LIMITS, known_token_limit

    source = "--model"
    if model is None:
        has_config = ctx.obj["config_path"] or find_config(Path.cwd()).exists()
        model = _config(ctx).finetune.model if has_config else FinetuneConfig().model
        source = "[finetune] model"
    limit = token_limit or known_token_limit(model)
    if limit is None:
        families = ", ".join(f"{prefix}*" for prefix, _ in TOKEN_LIMITS)
        raise click.UsageError(
            f"no token limit is known for the model {model!r} ({source}), so the examples' length "
            f"cannot be checked: check the name (known: {families}, and ft: models of them), or give "
            "--token-limit N with the number of tokens per example it accepts"
        )
    result = validate_file(path, model=model, token_limit=limit)
    if as_json:
        document = {
            "path": str(path),
            "model": model,
            "token_limit": limit,
            "ok": result.ok,
            "examples": result.examples,
            "tokens_per_example": token_stats(list(result.tokens_per_example)),
            "exact_tokens": result.exact_tokens,
            "problems": [dataclasses.asdict(p) for p in result.problems],
        }
        click.echo(dump_json(document).decode(), nl=False)
    else:
        for problem in result.problems:
            click.echo(f"{problem.severity}: {problem}")
        label = "" if result.exact_tokens else "; token counts are estimates"
        click.echo(
            f"{path}: {result.examples} examples, {len(result.errors)} errors, "
            f"{len(result.warnings)} warnings (for {model}, at most {limit} tokens per example{label})",
            err=True,
        )
    if not result.ok:
        raise click.exceptions.Exit(1)


def _backend(ctx: click.Context) -> tuple[Any, Config]:
    """The fine-tuning service of the configured backend, for `jobs`."""
    config = _config(ctx)
    backend = backend_for(config, options=_options(ctx))
    if not backend.sends_data:
        raise click.UsageError(
            f"the {backend.name} backend has no jobs: it trains during `imessage-finetune run train` "
            'on this machine (see artifacts/model.json); jobs are for [finetune] backend = "openai"'
        )
    service: Any = backend  # a backend that sends data has a service (`OpenAIBackend.service`)
    return service.service(), config


@cli.group(name="jobs")
def jobs_group() -> None:
    """Fine-tuning jobs of this project at the service: list, show, cancel.

    \b
    Example:
      imessage-finetune jobs show
    """


@jobs_group.command(name="list")
@click.pass_context
def jobs_list(ctx: click.Context) -> None:
    """List this project's jobs (tagged by the pipeline), newest first.

    \b
    Example:
      imessage-finetune jobs list
    """
    from imessage_finetune.backends.openai.jobs import PIPELINE_TAG

    backend, _ = _backend(ctx)
    rows = [("JOB", "STATUS", "BASE MODEL", "FINE-TUNED MODEL")]
    for job in backend.list_jobs({"pipeline": PIPELINE_TAG}):
        rows.append((job.id, job.status, job.model, job.fine_tuned_model or ""))
    _table(rows)


@jobs_group.command(name="show")
@click.argument("job_id", required=False)
@click.pass_context
def jobs_show(ctx: click.Context, job_id: str | None) -> None:
    """Show a job's status and its events (default: the job in artifacts/job.json).

    \b
    Example:
      imessage-finetune jobs show ftjob-abc123
    """
    from imessage_finetune.backends.openai.jobs import recorded_job_id

    backend, config = _backend(ctx)
    job_id = job_id or recorded_job_id(config.artifacts_dir)
    if not job_id:
        raise click.UsageError("no job recorded yet: give a JOB_ID (see `imessage-finetune jobs list`)")
    job = backend.get_job(job_id)
    click.echo(f"{job.id}: {job.status} ({job.model} -> {job.fine_tuned_model or 'not yet'})")
    if job.error_code:
        click.echo(f"error {job.error_code}: {job.error_message}")
    for event in backend.events(job_id, after=None):
        click.echo(f"  {event.level}: {event.message}")


@jobs_group.command(name="cancel")
@click.argument("job_id")
@click.pass_context
def jobs_cancel(ctx: click.Context, job_id: str) -> None:
    """Cancel a job at the service (what Ctrl-C during `run train` never does).

    \b
    Example:
      imessage-finetune jobs cancel ftjob-abc123
    """
    backend, _ = _backend(ctx)
    job = backend.cancel(job_id)
    click.echo(f"{job.id}: {job.status}")


@cli.command(name="chat")
@click.argument("prompt", required=False)
@click.option("--model", "model_id", help="Model id (default: the one in artifacts/model.json).")
@click.option(
    "--to", "partner", metavar="NAME", help="Who you are writing to (a Contacts name), as training named them."
)
@click.pass_context
def chat_command(ctx: click.Context, prompt: str | None, model_id: str | None, partner: str | None) -> None:
    """Talk to the fine-tuned model: one PROMPT, or an interactive loop. Replies stream.

    Uses the system prompt the model was trained with ([dataset] system_prompt). A model
    trained by the local backend runs on this machine; --model names a remote one. --to NAME
    adds "You are texting with NAME." to it, as [dataset] partner_in_prompt did in training.

    \b
    Example:
      imessage-finetune chat "are you free tonight?"
      imessage-finetune chat --to Tortoise "are you free tonight?"
    """
    config = _config(ctx)
    trained = _trained_model(config)
    if model_id is None and trained is None:
        raise click.UsageError("no model yet: run `imessage-finetune run train` or give --model")
    if model_id is not None:  # a model at the service, whatever trained artifacts/model.json
        document: dict[str, Any] = {"backend": "openai", "model_id": model_id}
    else:
        assert trained is not None
        document = trained
    # The prompt the model was trained with (model.json's), else the configured one.
    document = {**document, "system_prompt": document.get("system_prompt", config.dataset.system_prompt)}
    backend = backend_for(config, document["backend"], options=_options(ctx))
    if not backend.sends_data:
        click.echo(f"chat: loading {document['model_id']} ({backend.name})", err=True)
    if document.get("demonstration"):
        click.echo(f"chat: {document['notice']}", err=True)
    model = backend.load(document)
    system_prompt = model.system_prompt
    if partner is not None:
        if not document.get("partner_in_prompt", config.dataset.partner_in_prompt):
            click.echo(
                "chat: this model was trained without partner names ([dataset] partner_in_prompt = false), "
                "so --to may change little",
                err=True,
            )
        system_prompt = partner_prompt(system_prompt, partner)
    history: list[dict[str, str]] = []
    if system_prompt:
        history.append({"role": "system", "content": system_prompt})
    prompts = [prompt] if prompt else None
    while True:
        if prompts is not None:
            if not prompts:
                return
            text = prompts.pop()
        else:
            try:
                text = click.prompt("you", prompt_suffix="> ", err=True)
            except click.exceptions.Abort:
                click.echo(err=True)
                return
        history.append({"role": "user", "content": text})
        pieces = []
        for piece in model.stream(history):
            # A model's control characters never reach the terminal raw: shown as escapes.
            click.echo(printable(piece, keep=REPLY_KEEPS), nl=False)
            pieces.append(piece)
        click.echo()
        answer = "".join(pieces)
        _say_what_was_shown(answer)
        history.append({"role": "assistant", "content": answer})


# Kept as they are in a reply: line breaks and tabs. Every other control character is escaped.
REPLY_KEEPS = "\n\t"


def _say_what_was_shown(answer: str) -> None:
    """On stderr, what the reply held that is not shown as the model wrote it."""
    notes = []
    controls = count_unsafe(answer, keep=REPLY_KEEPS)
    if controls:
        notes.append(f"{controls} control character(s) shown as escapes (such as \\x1b)")
    replaced = answer.count("\ufffd")
    if replaced:
        notes.append(f"{replaced} \ufffd (U+FFFD) standing for bytes that are not valid UTF-8 text")
    if notes:
        click.echo(f"chat: in this reply, {'; '.join(notes)}", err=True)


CHAT_OPENAI_SNIPPET = """\
    import json
    from langchain_openai import ChatOpenAI

    model_id = json.load(open("artifacts/model.json"))["model_id"]
    llm = ChatOpenAI(model=model_id)          # add base_url=... for a compatible endpoint
    print(llm.invoke("are you free tonight?").content)"""


@cli.command(name="serve")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on (this machine only by default)."
)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one).")
@click.option(
    "--api-key", help="Require this bearer token (visible to other users in the process list: prefer --api-key-file)."
)
@click.option(
    "--api-key-file", type=click.Path(dir_okay=False, path_type=Path), help="Require the bearer token in this file."
)
@click.option(
    "--queue",
    "queue_size",
    default=8,
    show_default=True,
    type=click.IntRange(0, 10_000),
    help="Requests that may wait for the model; past that, 503.",
)
@click.pass_context
def serve_command(
    ctx: click.Context, host: str, port: int, api_key: str | None, api_key_file: Path | None, queue_size: int
) -> None:
    """Serve the trained model with OpenAI's Chat Completions API, until Ctrl-C.

    Any OpenAI client works against it (base URL http://127.0.0.1:8000/v1): the `openai`
    package, LangChain's ChatOpenAI, chat apps. Requests without a system message get the
    one the model was trained with; absent parameters take `chat`'s values.

    \b
    Example:
      imessage-finetune serve --port 8000
    """
    import logging

    from imessage_finetune import serving
    from imessage_finetune.serving import server

    config = _config(ctx)
    trained = _trained_model(config)
    if trained is None:
        raise click.ClickException("no model yet: run `imessage-finetune run train` first")
    backend = backend_for(config, trained["backend"], options=_options(ctx))
    if backend.sends_data:  # trained at a service: the service serves it already
        click.echo(
            f"serve: nothing to serve here: {trained['model_id']} runs at the fine-tuning service, "
            "which already speaks this API. From LangChain:\n\n" + CHAT_OPENAI_SNIPPET,
            err=True,
        )
        raise click.exceptions.Exit(1)
    serving.require()
    key = _serve_api_key(api_key, api_key_file)
    if not server.is_loopback(host):
        click.echo(
            f"serve: WARNING: listening on {host}, reachable from other machines. The model was trained "
            "on your private messages and may repeat them"
            + ("" if key else "; set --api-key-file so that only those with the key can use it"),
            err=True,
        )
    sock = server.bind(host, port)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("serve: %(message)s"))
    verbosity = _options(ctx).verbosity
    # By default: one line per request (no message text) and the server's warnings; uvicorn's
    # own comings and goings (started, shutting down, finished) only with --verbose.
    levels = {"imessage_finetune.serve": 1, "uvicorn.access": 1, "uvicorn.error": 2}
    for name, shown_from in levels.items():
        log = logging.getLogger(name)
        log.handlers[:] = [handler]
        log.setLevel(logging.INFO if verbosity >= shown_from else logging.WARNING)
        log.propagate = False
    try:
        click.echo(f"serve: loading {trained['model_id']} ({backend.name})", err=True)
        if trained.get("demonstration"):
            click.echo(f"serve: {trained['notice']}", err=True)
        model = backend.load(trained)
        created = int(artifacts.MODEL.path(config.artifacts_dir).stat().st_mtime)
        options = server.ServeOptions(host, port, key, queue_size)
        app = server.create_app(model, options, model.default_settings(), created)
        url = server.address(sock)
        ready = f"serve: {trained['model_id']} at {url} (Ctrl-C stops)" + ("; bearer token required" if key else "")
        stopped_by = server.run(app, sock, on_ready=lambda: click.echo(ready, err=True))
    finally:
        sock.close()
    if stopped_by == signal.SIGINT:  # Ctrl-C ends serve as it ends any command: exit status 130
        click.echo("serve: stopped (Ctrl-C)", err=True)
        raise click.exceptions.Exit(INTERRUPTED)
    click.echo("serve: stopped", err=True)  # SIGTERM: a service manager's normal stop, status 0


@cli.command(name="export")
@click.argument("folder", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Write even inside a git work tree where the folder is not ignored.")
@click.pass_context
def export_command(ctx: click.Context, folder: Path | None, force: bool) -> None:
    """Write the trained model as a folder Ollama and other runtimes load (default:
    artifacts/export): the adapter merged into the base weights, and an Ollama Modelfile.

    The folder holds what the model learned from your messages: it is private to you
    (0700/0600), and never written into a git work tree unless ignored there or --force.

    \b
    Example:
      imessage-finetune export ~/models/me && ollama create me -f ~/models/me/Modelfile
    """
    from imessage_finetune.serving.export import check_destination, export

    config = _config(ctx)
    trained = _trained_model(config)
    if trained is None:
        raise click.ClickException("no model yet: run `imessage-finetune run train` first")
    backend = backend_for(config, trained["backend"], options=_options(ctx))
    if backend.sends_data:  # trained at a service: said before any work, in one line
        raise click.ClickException(
            f"nothing to export here: {trained['model_id']} was fine-tuned at the service and its weights stay "
            'there; export works for models trained on this machine ([finetune] backend = "local")'
        )
    target = folder if folder is not None else artifacts.EXPORT.path(config.artifacts_dir)
    check_destination(target, force)  # a folder refused is said before any work
    click.echo(f"export: merging the adapter of {trained['model_id']} into {trained['base_model']}'s weights", err=True)
    done = export(
        target,
        lambda path: backend.export(trained, path),
        model_id=trained["model_id"],
        system_prompt=trained.get("system_prompt") or "",
        force=force,
    )
    click.echo(
        f"export: wrote {done.folder} (merged weights {done.weights_bytes / 1e6:.1f} MB, Modelfile; stop tokens "
        f"{', '.join(done.stops)})",
        err=True,
    )
    click.echo(
        "export: PRIVATE: it holds what the model learned from your messages and can repeat them; the folder "
        "is readable by you only (0700/0600): do not share or upload it",
        err=True,
    )
    click.echo(f"export: next: ollama create NAME -f {done.folder / 'Modelfile'}", err=True)
    click.echo(str(done.folder))


def _serve_api_key(api_key: str | None, api_key_file: Path | None) -> str | None:
    if api_key and api_key_file:
        raise click.UsageError("use just one of --api-key and --api-key-file")
    if api_key_file is not None:
        try:
            lines = api_key_file.expanduser().read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise click.ClickException(f"cannot read --api-key-file {api_key_file}: {exc.strerror}") from None
        api_key = lines[0].strip() if lines else ""
        if not api_key:
            raise click.ClickException(f"--api-key-file {api_key_file} is empty: write the key on its first line")
    if api_key is not None and not api_key.strip():
        raise click.UsageError("--api-key is empty")
    return api_key.strip() if api_key else None


def _trained_model(config: Config) -> dict[str, Any] | None:
    """artifacts/model.json, checked against its schema; None before the first training."""
    path = artifacts.MODEL.path(config.artifacts_dir)
    if not path.is_file():
        return None
    try:
        document = load_json(path.read_bytes())
        validate_document(artifacts.MODEL, document)
    except (ValueError, SchemaValidationError):
        raise click.ClickException(f"{path} is damaged: run `imessage-finetune run train` to rebuild it") from None
    return document


@cli.command(name="forget")
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@click.pass_context
def forget_command(ctx: click.Context, yes: bool) -> None:
    """Forget the upload receipt, the job and the model (they stay at the service).

    The next `run train` then uploads (or finds) the files and starts a new job. With the
    local backend: delete model.json, the adapter and any checkpoint, so the next `run train`
    trains from the start.

    \b
    Example:
      imessage-finetune forget --yes
    """
    config = _config(ctx)
    forgettable = backend_for(config).training().forgettable
    present = [a.path(config.artifacts_dir) for a in forgettable if a.path(config.artifacts_dir).exists()]
    if not present:
        click.echo("nothing to forget", err=True)
        return
    if not yes and not click.confirm(f"Forget {', '.join(p.name for p in present)}?", err=True):
        raise click.exceptions.Exit(1)
    # The stages that wrote them are forgotten too, so the next run builds them again.
    names = {a.name for a in forgettable}
    writers = [
        stage.name for stage in active_stages(config) if names & {a.name for a in stage.outputs(stage.view(config))}
    ]
    say = lambda text: click.echo(text, err=True)  # noqa: E731
    with run_lock.held(config.artifacts_dir, config.artifacts.lock_timeout, say):
        for path in present:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        run_doit(config, ["forget", *writers], _options(ctx))
    click.echo(f"forgot {', '.join(p.name for p in present)}", err=True)


def _stage_rows(statuses: list[StageStatus]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [("STAGE", "STATE", "WHY")]
    for stage in statuses:
        state = {"up-to-date": "up to date", "run": "stale"}.get(stage.status, stage.status)
        if stage.reasons == ("never built",):
            state = "never built"
        rows.append((stage.name, state, "; ".join(stage.reasons)))
    return rows


def _say_if_building(config: Config) -> None:
    """Tell, without waiting or writing, that a build is running on the artifacts folder."""
    holder = run_lock.running_build(config.artifacts_dir)
    if holder is not None:
        click.echo(
            f"a build is running on {config.artifacts_dir} ({holder.describe()}); "
            "what it has not finished yet shows as stale",
            err=True,
        )


@cli.command(name="status")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_context
def status_command(ctx: click.Context, as_json: bool) -> None:
    """Show each stage on its own: up to date, or stale and why. Exit 1 when any is stale.

    \b
    Example:
      imessage-finetune status --json
    """
    config = _config(ctx)
    _say_if_building(config)
    statuses = stage_statuses(doit_namespace(config, _options(ctx)))
    if as_json:
        click.echo(dump_json([dataclasses.asdict(s) for s in statuses]).decode(), nl=False)
    else:
        _table(_stage_rows(statuses))
    if any(s.status != "up-to-date" for s in statuses):
        raise click.exceptions.Exit(1)


@cli.command(name="plan")
@click.argument("stage", required=False, type=StageName(), default=DEFAULT_TARGET)
@click.pass_context
def plan_command(ctx: click.Context, stage: str) -> None:
    """Dry run: list the stages `run STAGE` would run, and why, without running anything.

    Changes are passed downstream: a stage whose input will be rebuilt is listed too.

    \b
    Example:
      imessage-finetune plan dataset
    """
    config = _config(ctx)
    declared = stages.stage_named(stage)
    if not declared.applies(config):
        raise click.UsageError(declared.not_applicable.format(backend=config.finetune.backend))
    _say_if_building(config)
    steps = plan(doit_namespace(config, _options(ctx)), [stage])
    _table(_stage_rows(steps))
    running = [s.name for s in steps if s.status == "run"]
    click.echo(f"{len(running)} stage(s) would run: {', '.join(running) or 'none'}", err=True)


@cli.command(name="dag")
@click.option("--mermaid", is_flag=True, help="A Mermaid flowchart instead of text.")
@click.pass_context
def dag_command(ctx: click.Context, mermaid: bool) -> None:
    """Show the stages, what each needs and the artifacts it writes.

    \b
    Example:
      imessage-finetune dag --mermaid
    """
    for line in dag_lines(doit_namespace(_config(ctx), _options(ctx)), mermaid=mermaid):
        click.echo(line)


@cli.command(name="verify")
@click.pass_context
def verify_command(ctx: click.Context) -> None:
    """Re-hash the artifacts against pipeline.lock.json; exit 1 if any changed since built.

    \b
    Example:
      imessage-finetune verify
    """
    checked, mismatches = verify(_config(ctx).artifacts_dir)
    for mismatch in mismatches:
        click.echo(f"{mismatch.artifact}: {mismatch.problem} (stage {mismatch.stage})")
    click.echo(f"{checked} artifact(s) checked, {len(mismatches)} mismatch(es)", err=True)
    if mismatches:
        raise click.exceptions.Exit(1)


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    # Aligned by terminal columns (an emoji or a CJK character takes two), names made printable.
    for line in table_lines(rows):
        click.echo(line)


main = cli
