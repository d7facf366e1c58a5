"""Stage `evaluate`: does the tuned model sound like its owner? (`evaluation.json`, `report.html`)

After `train`: the tuned model and its base model, loaded through the backend interface
(`ChatModel.score` and `stream`, whatever the backend), are measured on the held-out set of
the newest conversations (`heldout.jsonl`): held-out loss, calibrated style distances,
replies side by side, the private-text probe, and a one-sentence verdict, printed with the
report's path. A backend that sends data (a remote service) shows what will be sent and its
estimated cost, and asks, before any held-out conversation leaves the machine.

Both files are written atomically once everything is measured: Ctrl-C or a kill leaves the
previous report or none, never half of one. The report folder is checked first, so an
unwritable one fails in a second, not after the measurement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from imessage_finetune import artifacts
from imessage_finetune.atomic import atomic_write
from imessage_finetune.backends import backend_for, backend_module
from imessage_finetune.backends.interface import Backend, TrainingCallbacks, TrainingStep
from imessage_finetune.config import Config, ConfigLike, ConfigView
from imessage_finetune.errors import FinetuneError
from imessage_finetune.evaluation import measure as measuring
from imessage_finetune.evaluation.report import render
from imessage_finetune.jsonio import dump_json, load_json
from imessage_finetune.schema_check import validate_document
from imessage_finetune.stages.stage import Stage, StageContext


class EvaluationError(FinetuneError):
    """The evaluation cannot run as configured (no held-out replies, no report folder...)."""


@dataclass(frozen=True)
class Reporter:
    """How the measurement talks to the person running it."""

    say: Callable[[str], None]
    progress: Callable[[str, int, int], None] | None = None
    confirm: Callable[[str], bool | None] | None = None  # None (or an answer None): nobody to ask
    assume_yes: bool = False  # `run --yes`: sending was agreed to beforehand


def settings_of(config: ConfigLike) -> measuring.EvaluationSettings:
    """The measurement's settings from `[evaluation]`."""
    e = config.evaluation
    return measuring.EvaluationSettings(
        replies=e.replies,
        max_new_tokens=e.max_new_tokens,
        temperature=e.temperature,
        seed=e.seed,
        samples=e.samples,
        probe_prompts=e.probe_prompts,
    )


def report_path(config: ConfigLike) -> Path:
    """Where report.html is written: `[evaluation] report_dir` (relative to the config file),
    else the artifacts folder."""
    folder = config.evaluation.report_dir
    if not folder:
        return artifacts.REPORT.path(config.artifacts_dir)
    return (config.base_dir / Path(folder).expanduser()).resolve() / artifacts.REPORT.filename


def report_artifact(config: ConfigLike) -> artifacts.Artifact:
    """report.html as this configuration places it. An absolute file name stays absolute
    under the artifacts folder (`Path / absolute` is the absolute path), so a report written
    elsewhere is still a target of the stage."""
    path = report_path(config)
    if path.parent == config.artifacts_dir:
        return artifacts.REPORT
    return artifacts.Artifact(artifacts.REPORT.name, str(path))


def check_report_folder(folder: Path) -> None:
    """Fail now, with what to do, if report.html cannot be written into `folder`."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".report-check"):
            pass
    except OSError as exc:
        raise EvaluationError(
            f"cannot write the report into {folder} ({exc.strerror or exc}): set [evaluation] report_dir "
            'to a folder you can write, or "" for the artifacts folder; nothing was evaluated'
        ) from None


def read_lines(path: Path) -> list[dict[str, Any]]:
    """A JSONL artifact's lines."""
    with open(path, "rb") as handle:
        return [load_json(line) for line in handle if line.strip()]


def heldout_lines(artifacts_dir: Path) -> list[dict[str, Any]]:
    """heldout.jsonl, refused with what to do when it has too few replies to measure."""
    path = artifacts.HELDOUT.path(artifacts_dir)
    if not path.is_file():
        raise EvaluationError(
            "there is no held-out set to evaluate on: set [dataset] heldout_share (e.g. 0.1) or "
            "heldout_days, then run `imessage-finetune run evaluate`"
        )
    lines = read_lines(path)
    try:
        measuring.heldout_set(lines)
    except measuring.NoHeldoutReply as exc:
        raise EvaluationError(
            f"cannot evaluate: {exc} ({len(lines)} held-out conversations). The history is too short to "
            "hold out its newest part: raise [dataset] heldout_share or heldout_days, or include more chats"
        ) from None
    return lines


def estimated_sending(lines: Sequence[dict[str, Any]], config: ConfigLike, probes: int) -> tuple[int, int, float]:
    """What evaluating through a remote service sends: conversations, tokens (prompts and the
    longest replies, for both models), and the estimated cost in US dollars."""
    from imessage_finetune.tokens import counter_for

    counter = counter_for(config.finetune.model)
    held = measuring.read_heldout(lines)
    chosen = measuring.evenly([r for r in held.replies if measuring._answers_someone(r)], config.evaluation.replies)
    prompt_tokens = sum(
        counter.count_example(measuring.trimmed_context(r.context, measuring.CONTEXT_MESSAGES)) for r in chosen
    )
    output_tokens = len(chosen) * config.evaluation.max_new_tokens + probes * measuring.PROBE_TOKENS
    inputs, outputs = 2 * prompt_tokens, 2 * output_tokens
    price_in, price_out = config.evaluation.chat_price_per_million_tokens
    return len(chosen), inputs + outputs, round((inputs * price_in + outputs * price_out) / 1e6, 2)


def confirm_sending(lines: Sequence[dict[str, Any]], config: ConfigLike, endpoint: str, reporter: Reporter) -> None:
    """Show what the evaluation will send and ask, as the upload does."""
    replies, tokens, cost = estimated_sending(lines, config, config.evaluation.probe_prompts)
    reporter.say(
        f"about to send the contexts of {replies} held-out replies (and up to "
        f"{config.evaluation.probe_prompts} probe prompts) to {endpoint}, to the base and the tuned model: "
        f"about {tokens} tokens, estimated cost ${cost:.2f}"
    )
    if not config.finetune.confirm or reporter.assume_yes:
        return
    answer = reporter.confirm("Send them?") if reporter.confirm is not None else None
    if answer is None:
        raise EvaluationError(
            "evaluating sends held-out conversations and needs a confirmation, and there is no terminal to "
            "ask on: run `imessage-finetune run evaluate --yes`, or set [finetune] confirm = false; nothing was sent"
        )
    if not answer:
        raise EvaluationError("not confirmed; nothing was sent")


def training_section(artifacts_dir: Path) -> dict[str, Any]:
    """The train stage's loss log, for the plot (empty before a backend kept one)."""
    path = artifacts.TRAINING_LOG.path(artifacts_dir)
    if not path.is_file():
        return {"steps": [], "summary": {}}
    log = load_json(path.read_bytes())
    return {"steps": log["steps"], "summary": log["summary"]}


def variant_config(config: Config) -> Config:
    """The same project with the other partner_in_prompt setting, in its own folder."""
    folder = artifacts.PARTNER_VARIANT.path(config.artifacts_dir)
    return replace(
        config,
        dataset=replace(config.dataset, partner_in_prompt=not config.dataset.partner_in_prompt),
        artifacts=replace(config.artifacts, dir=str(folder)),
    )


def compare_partner(config: Config, backend: Backend, reporter: Reporter, main: dict[str, Any]) -> dict[str, Any]:
    """Train a model on the same examples with the other partner setting and measure it on
    the same held-out replies: does naming who you write to help?"""
    from imessage_finetune.stages.dataset import write_dataset
    from imessage_finetune.tokens import counter_for

    if backend.sends_data:
        raise EvaluationError(
            "[evaluation] compare_partner trains a second model, which this backend would do (and bill) "
            "at the service: set compare_partner = false, or compare with the local backend"
        )
    other = variant_config(config)
    folder = other.artifacts_dir
    artifacts.ensure_private_dir(folder)
    write_dataset(
        artifacts.MERGED.path(config.artifacts_dir),
        folder,
        other.dataset,
        other.finetune,
        counter_for(other.finetune.model),
    )
    reporter.say(
        f"training a second model {'with' if other.dataset.partner_in_prompt else 'without'} partner names, "
        "for the comparison"
    )
    other_backend = backend_for(other)

    def step(event: TrainingStep) -> None:
        if reporter.progress is not None and event.total_steps:
            reporter.progress("training the comparison model", event.step, event.total_steps)

    model_json = other_backend.train(folder, TrainingCallbacks(on_step=step))
    tuned = other_backend.load(model_json, tuned=True)
    variant = measuring.measure_variant(
        tuned, read_lines(artifacts.HELDOUT.path(folder)), settings_of(config), progress=reporter.progress
    )
    this = {
        "model_id": main["model_id"],
        "heldout_loss": main.get("heldout_loss", {}).get("tuned"),
        "style": main["style"]["tuned"],
    }
    if config.dataset.partner_in_prompt:
        return {"with": this, "without": variant}
    return {"with": variant, "without": this}


def evaluate(config: ConfigView, backend: Backend, reporter: Reporter, endpoint: str = "") -> dict[str, Any]:
    """Measure, then publish evaluation.json and report.html; return the document."""
    out = config.artifacts_dir
    report = report_path(config)
    check_report_folder(report.parent)
    model_json = load_json(artifacts.MODEL.path(out).read_bytes())
    lines = heldout_lines(out)
    if backend.sends_data:
        confirm_sending(lines, config, endpoint, reporter)
    reporter.say(f"loading {model_json['model_id']} and its base model")
    base, tuned = backend.load(model_json, tuned=False), backend.load(model_json, tuned=True)
    document = measuring.measure(
        base, tuned, lines, read_lines(artifacts.TRAIN.path(out)), settings_of(config), progress=reporter.progress
    )
    document["training"] = training_section(out)
    if "heldout_loss" not in document:
        document["service_metrics"] = dict(document["training"]["summary"])
    if config.evaluation.compare_partner:
        # The variant is the whole project with one setting changed: it needs the whole
        # configuration, whose dataset and finetune tables this stage declares in that case.
        document["partner"] = compare_partner(config.config, backend, reporter, document)
    validate_document(artifacts.EVALUATION, document)
    page = render(document)
    with atomic_write(artifacts.EVALUATION.path(out)) as handle:
        handle.write(dump_json(document))
    with atomic_write(report) as handle:
        handle.write(page.encode("utf-8"))
    return document


# What the measurement depends on: its settings and the backend that runs the models; with
# compare_partner also everything the second dataset and model depend on.
KEYS = ("evaluation", "finetune.backend")
# Read to reach the models (the backend's settings: its endpoint and key, the local device)
# and to place heldout.jsonl; what they change reaches the outputs through model.json and
# heldout.jsonl, which are inputs.
SIDE_KEYS = ("finetune", "dataset.heldout_share", "dataset.heldout_days")


def keys(config: Config) -> tuple[str, ...]:
    """The evaluation settings, and for the partner comparison the dataset and training ones."""
    return (*KEYS, "dataset", "finetune") if config.evaluation.compare_partner else KEYS


def inputs(config: ConfigView) -> list[artifacts.Artifact]:
    """model.json, the training file (the private-text probe's prompts), the training log,
    heldout.jsonl when one is written (without it the stage says what to set), and merged.json
    for the partner comparison."""
    read = [artifacts.MODEL, artifacts.TRAIN, artifacts.TRAINING_LOG]
    if config.dataset.heldout_share > 0 or config.dataset.heldout_days > 0:
        read.append(artifacts.HELDOUT)
    if config.evaluation.compare_partner:
        read.append(artifacts.MERGED)
    return read


def outputs(config: ConfigView) -> list[artifacts.Artifact]:
    """evaluation.json and report.html."""
    return [artifacts.EVALUATION, report_artifact(config)]


def code(config: ConfigView) -> list[str]:
    """The configured backend's module: its code generates and scores."""
    return [backend_module(config)]


def check(ctx: StageContext) -> None:
    """An unwritable report folder fails in a second, not after the measurement."""
    check_report_folder(report_path(ctx.config).parent)


def run(ctx: StageContext) -> None:
    """Measure the tuned model against its base; say the verdict and where the report is."""
    backend = backend_for(ctx.config, options=ctx.options)
    # Where a backend that sends data sends it (its training parameters name the endpoint).
    endpoint = str(backend.training().params.get("endpoint", "")) if backend.sends_data else ""
    with ctx.progress() as bar:
        last = ""

        def progress(what: str, done: int, total: int) -> None:
            nonlocal last
            if bar is not None:
                bar(done, total)
            elif done == total or what != last:
                last = what
                ctx.say(f"{what} ({done}/{total})")

        reporter = Reporter(say=ctx.say, progress=progress, confirm=ctx.ask, assume_yes=ctx.options.assume_yes)
        document = evaluate(ctx.config, backend, reporter, endpoint)
    ctx.say(f"{document['verdict']} Report: {report_path(ctx.config)}")


STAGE = Stage(
    name="evaluate",
    doc="Measure the tuned model against its base on the held-out set; writes evaluation.json and report.html.",
    run=run,
    reads=inputs,
    writes=outputs,
    keys=keys,
    side_keys=SIDE_KEYS,
    code=code,
    check=check,
)
