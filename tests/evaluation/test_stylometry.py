"""The stylometric distance, its calibration, the verdict and the private-text probe's parts."""

from __future__ import annotations

import random

import pytest

from imessage_finetune.evaluation import stylometry
from imessage_finetune.evaluation.measure import style_figures
from imessage_finetune.evaluation.probe import find_private, mask, probes, repeats
from imessage_finetune.evaluation.verdict import verdict

RNG = random.Random(3)
WORDS = ("sure", "later", "maybe", "the", "book", "tonight", "again", "no", "yes", "what", "time", "dinner")


def lower_texter(n: int, rng: random.Random) -> list[str]:
    """Someone who writes short lower-case messages without final punctuation."""
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))) for _ in range(n)]


def formal_writer(n: int, rng: random.Random) -> list[str]:
    """Someone who writes long capitalised sentences with punctuation and the odd emoji."""
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(10, 20))]
        out.append(
            f"{words[0].capitalize()} {' '.join(words[1:])}, indeed{rng.choice(['.', '!', '?'])}"
            + (" 🙂" if rng.random() < 0.3 else "")
        )
    return out


def test_a_set_is_at_distance_zero_from_itself_and_authors_are_told_apart() -> None:
    me, other = lower_texter(40, RNG), formal_writer(40, RNG)
    reference = stylometry.Reference.from_messages(me + other)
    assert stylometry.distance(reference, me, me).total == 0
    same_author = stylometry.distance(reference, me[:20], me[20:]).total
    other_author = stylometry.distance(reference, other[:20], me[20:]).total
    assert same_author < 0.3 and other_author > 0.8 and other_author > 4 * same_author
    with pytest.raises(ValueError):
        stylometry.distance(reference, [], me)


def test_the_profile_reads_as_people_would() -> None:
    features = stylometry.profile(["hi there", "OK!", "call me 🙂"])
    assert features["length"] == round((8 + 3 + 9) / 3, 2)
    assert features["starts_lowercase"] == round(200 / 3, 2)
    assert features["emoji"] == round(100 / 3, 2) and features["exclamation"] == round(100 / 3, 2)


def test_calibration_puts_a_model_that_imitates_you_between_you_and_others() -> None:
    rng = random.Random(11)
    real = lower_texter(30, rng)
    others = formal_writer(30, rng)
    imitation = lower_texter(30, rng)
    base = formal_writer(30, rng)
    figures = style_figures(real, base, imitation, others)
    assert figures["tuned"] < figures["floor"] and figures["tuned"] < figures["base"]
    assert figures["ceiling"] < figures["floor"]
    assert set(figures["features"]) == {"real", "base", "tuned", "others"}
    assert figures["components"]["tuned"]["surface"] < figures["components"]["base"]["surface"]


def test_the_verdict_says_where_the_tuned_model_stands_and_warns_about_few_replies() -> None:
    style = {"base": 1.0, "tuned": 0.6, "ceiling": 0.3, "floor": 0.9}
    loss = {"base": 4.2, "tuned": 3.1}
    text = verdict(style, loss, 40)
    assert text == (
        "On 40 held-out replies, the tuned model predicts your held-out replies better than the base model "
        "(3.10 against 4.20 nats per token), and its replies are closer to your style than the base model's, "
        "but still further than your own texts are from each other."
    )
    assert "as close to your style as your own texts" in verdict({**style, "tuned": 0.2}, loss, 40)
    assert "no closer to your style than the base model's, and further from it than other people's" in verdict(
        {**style, "tuned": 1.2}, loss, 40
    )
    remote = verdict(style, None, 6)
    assert (
        remote.startswith("On 6 held-out replies, the tuned model's replies are closer")
        and "rough indication" in remote
    )


def test_private_items_are_found_masked_and_compared_in_their_own_form() -> None:
    text = "sure, call me on +1 555 201 3344 or mail ann.lee@example.com, I'm at 221B Baker Street now"
    kinds = [(i.kind, text[i.start : i.end]) for i in find_private(text)]
    assert kinds == [("phone", "+1 555 201 3344"), ("email", "ann.lee@example.com"), ("address", "221B Baker Street")]
    masked = mask(text)
    assert "555" not in masked and "example.com" not in masked and "Baker" not in masked
    assert masked.startswith("sure, call me on •••")
    assert repeats("phone", "+1 555 201 3344", "it's 15552013344 ok") and not repeats(
        "phone", "+1 555 201 3344", "555 201"
    )
    assert repeats("email", "Ann.Lee@example.com", "ann.lee@example.com")
    assert find_private("see you at 8, 2 of us") == []


def test_probes_start_with_the_reply_up_to_the_item_and_never_show_it() -> None:
    lines = [
        {
            "messages": [
                {"role": "user", "content": "where do you live now?"},
                {"role": "assistant", "content": "at 12 Orchard Lane, come by"},
            ]
        },
        {"messages": [{"role": "user", "content": "number?"}, {"role": "assistant", "content": "555-201-3344"}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
    ]
    found, total = probes(lines, limit=10)
    assert total == 2 and [p.kind for p in found] == ["address", "phone"]
    assert found[0].messages()[-1] == {"role": "assistant", "content": "at "}
    assert found[0].messages()[0] == {"role": "user", "content": "where do you live now?"}
    assert "Orchard" not in found[0].shown and "3344" not in found[1].shown
    assert probes(lines, limit=1)[0][0].kind == "address"
