"""The whole measurement: a base and a tuned model on the held-out set, as evaluation.json.

Works on any backend through `ChatModel` alone (`score` for the held-out loss, `stream` for
replies), so nothing here asks which backend it is. A backend that cannot score text (a
remote service) gives no held-out loss; the train stage's log then stands in for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from imessage_finetune.backends.interface import ChatModel, GenerationSettings
from imessage_finetune.evaluation import stylometry
from imessage_finetune.evaluation.probe import Probe, probes, repeats
from imessage_finetune.evaluation.replies import HeldoutReply, HeldoutSet, evenly, read_heldout, trimmed_context
from imessage_finetune.evaluation.verdict import verdict

FORMAT = "imessage-finetune/evaluation"
VERSION = 1
CONTEXT_MESSAGES = 12  # messages of context a reply is generated from (system prompt aside)
PROBE_TOKENS = 32  # enough for a phone number, an e-mail or an address and a little more

Progress = Callable[[str, int, int], None]  # what, done, total


class NoHeldoutReply(ValueError):
    """The held-out set has too few replies of the learned voice to measure anything."""


@dataclass(frozen=True)
class EvaluationSettings:
    """What the evaluation does: how many replies each model writes, how, and how many of
    them the report shows and the private-text probe tries."""

    replies: int = 40
    max_new_tokens: int = 64
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 42
    samples: int = 8
    probe_prompts: int = 20

    def generation(self) -> GenerationSettings:
        """The settings replies are generated with (seeded: the same replies every run)."""
        return GenerationSettings(
            max_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p, seed=self.seed
        )


def generate(model: ChatModel, messages: Sequence[Mapping[str, Any]], settings: GenerationSettings) -> str:
    """A whole reply (the pieces joined)."""
    completion = model.stream(messages, settings)
    try:
        return "".join(completion).strip()
    finally:
        completion.close()


def heldout_set(lines: Iterable[Mapping[str, Any]]) -> HeldoutSet:
    """The held-out set, refused when it has fewer than two replies to compare."""
    held = read_heldout(lines)
    answerable = [r for r in held.replies if _answers_someone(r)]
    if len(answerable) < 2:
        raise NoHeldoutReply(
            f"the held-out set has {len(answerable)} reply of the learned voice to another message; "
            "at least 2 are needed"
        )
    return held


def _answers_someone(reply: HeldoutReply) -> bool:
    """A reply to something: generation needs a message to answer."""
    return any(m["role"] == "user" for m in reply.context)


def measure(
    base: ChatModel,
    tuned: ChatModel,
    heldout_lines: Sequence[Mapping[str, Any]],
    train_lines: Iterable[Mapping[str, Any]],
    settings: EvaluationSettings,
    *,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Held-out loss, calibrated style distances, samples and the private-text probe of
    `tuned` against `base`, as the evaluation.json document (without its training log)."""
    held = heldout_set(heldout_lines)
    report = progress or (lambda what, done, total: None)
    losses: dict[str, float] = {}
    report("scoring held-out replies", 0, 2)
    for index, (name, model) in enumerate((("base", base), ("tuned", tuned))):
        value = model.score(held.conversations)
        if value is not None:
            losses[name] = round(value, 4)
        report("scoring held-out replies", index + 1, 2)

    chosen = evenly([r for r in held.replies if _answers_someone(r)], settings.replies)
    generation = settings.generation()
    written: dict[str, list[str]] = {"base": [], "tuned": []}
    total = 2 * len(chosen)
    for index, reply in enumerate(chosen):
        prompt = trimmed_context(reply.context, CONTEXT_MESSAGES)
        for name, model in (("base", base), ("tuned", tuned)):
            written[name].append(generate(model, prompt, generation))
            report("writing replies", 2 * index + (name == "tuned") + 1, total)
    real = [r.real for r in chosen]
    style = style_figures(real, written["base"], written["tuned"], list(held.others))
    shown = set(_sample_indices(len(chosen), settings.samples))
    samples = [
        {
            "context": trimmed_context(reply.context, 4),
            "real": reply.real,
            "base": written["base"][i],
            "tuned": written["tuned"][i],
        }
        for i, reply in enumerate(chosen)
        if i in shown
    ]
    found, with_private = probes(train_lines, settings.probe_prompts)
    probe = probe_figures(base, tuned, found, with_private, report)
    document: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "model_id": tuned.model_id,
        "base_model_id": base.model_id,
        "settings": asdict(settings),
        "heldout": {
            "conversations": len(held.conversations),
            "replies": len(held.replies),
            "generated": len(chosen),
        },
        "style": style,
        "samples": samples,
        "probe": probe,
    }
    if len(losses) == 2:
        document["heldout_loss"] = losses
    document["verdict"] = verdict(style, document.get("heldout_loss"), len(chosen))
    return document


def measure_variant(
    tuned: ChatModel,
    heldout_lines: Sequence[Mapping[str, Any]],
    settings: EvaluationSettings,
    *,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Held-out loss and style distance of another tuned model on the same held-out replies
    (the partner comparison: same examples, another system prompt)."""
    held = heldout_set(heldout_lines)
    report = progress or (lambda what, done, total: None)
    chosen = evenly([r for r in held.replies if _answers_someone(r)], settings.replies)
    written = []
    for index, reply in enumerate(chosen):
        written.append(generate(tuned, trimmed_context(reply.context, CONTEXT_MESSAGES), settings.generation()))
        report("writing replies (other partner setting)", index + 1, len(chosen))
    loss = tuned.score(held.conversations)
    style = style_figures([r.real for r in chosen], written, written, list(held.others))
    return {
        "model_id": tuned.model_id,
        "heldout_loss": None if loss is None else round(loss, 4),
        "style": style["tuned"],
    }


def _sample_indices(count: int, wanted: int) -> list[int]:
    return evenly(list(range(count)), wanted)


def style_figures(
    real: Sequence[str], base: Sequence[str], tuned: Sequence[str], others: Sequence[str]
) -> dict[str, Any]:
    """Style distances to the real replies, with their calibration.

    The replies are split into two halves (alternately, so both span the whole period). Each
    model's replies to one half's contexts are compared with the other half's real replies,
    and the two directions averaged; the ceiling compares the real halves with each other,
    the floor other people's messages (as many as a half) with a half. So every distance is
    between sets of the same sizes against the same references, and only the author differs.
    """
    halves = [list(range(0, len(real), 2)), list(range(1, len(real), 2))]
    reference = stylometry.Reference.from_messages([*real, *others])
    other_halves = [evenly(list(others[0::2]), len(halves[0])), evenly(list(others[1::2]), len(halves[1]))]

    def against_real(texts: Sequence[str]) -> stylometry.Distance:
        parts = [
            stylometry.distance(reference, [texts[i] for i in halves[side]], [real[i] for i in halves[1 - side]])
            for side in (0, 1)
        ]
        return stylometry.Distance(surface=sum(p.surface for p in parts) / 2, ngrams=sum(p.ngrams for p in parts) / 2)

    distances = {
        "base": against_real(base),
        "tuned": against_real(tuned),
        "ceiling": stylometry.distance(reference, [real[i] for i in halves[0]], [real[i] for i in halves[1]]),
    }
    if all(other_halves):
        parts = [
            stylometry.distance(reference, other_halves[side], [real[i] for i in halves[1 - side]]) for side in (0, 1)
        ]
        distances["floor"] = stylometry.Distance(
            surface=sum(p.surface for p in parts) / 2, ngrams=sum(p.ngrams for p in parts) / 2
        )
    figures: dict[str, Any] = {name: round(d.total, 4) for name, d in distances.items()}
    figures.setdefault("floor", None)
    figures["components"] = {
        name: {"surface": round(d.surface, 4), "ngrams": round(d.ngrams, 4)} for name, d in distances.items()
    }
    figures["features"] = {
        "real": stylometry.profile(real),
        "base": stylometry.profile(base),
        "tuned": stylometry.profile(tuned),
        **({"others": stylometry.profile(others)} if others else {}),
    }
    return figures


def probe_figures(
    base: ChatModel, tuned: ChatModel, found: Sequence[Probe], with_private: int, report: Progress
) -> dict[str, Any]:
    """Run the private-text probe on both models (greedy: the likeliest continuation)."""
    greedy = GenerationSettings(max_tokens=PROBE_TOKENS, temperature=0.0, seed=0)
    items = []
    for index, probe in enumerate(found):
        outcome = {
            name: repeats(probe.kind, probe.item, generate(model, probe.messages(), greedy))
            for name, model in (("base", base), ("tuned", tuned))
        }
        items.append({"kind": probe.kind, "shown": probe.shown, **outcome})
        report("probing for private text", index + 1, len(found))
    return {
        "replies_with_private_items": with_private,
        "prompts": len(items),
        "repeated": {name: sum(i[name] for i in items) for name in ("base", "tuned")},
        "items": items,
    }
