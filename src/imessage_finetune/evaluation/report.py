"""report.html: evaluation.json as one page that people understand at a glance.

The page is self-contained and works offline: styles inline, charts inline SVG, no script,
and a Content-Security-Policy that forbids every request, so opening it fetches nothing.
Every text from the messages is escaped. The private-text probe shows only masked items.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from imessage_finetune.evaluation import plots
from imessage_finetune.evaluation.stylometry import feature_labels

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"

STYLE = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:#222;max-width:980px;margin:0 auto;padding:24px 20px 60px;background:#fafafa}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:36px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;margin:0 0 18px}.verdict{background:#fff;border-left:6px solid #1565c0;padding:14px 18px;font-size:18px;box-shadow:0 1px 3px rgba(0,0,0,.08)}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}.card{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:10px 14px;min-width:150px}
.card b{display:block;font-size:22px}.card span{color:#666;font-size:13px}
.chart{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:12px;margin:10px 0}
.chart svg{width:100%;height:auto;display:block}
table{border-collapse:collapse;width:100%;background:#fff;font-size:14px}th,td{border:1px solid #e3e3e3;padding:6px 8px;vertical-align:top;text-align:left}
th{background:#f0f0f0}td.msg{white-space:pre-wrap;word-break:break-word}.ctx{color:#555;font-size:13px}
.ctx div{margin-bottom:3px}.who{font-weight:600;color:#333}.note{color:#555;font-size:14px}
.real{border-left:4px solid #222}.base{border-left:4px solid #9e9e9e}.tuned{border-left:4px solid #1565c0}
.yes{color:#c62828;font-weight:600}.no{color:#2e7d32}
"""


def _e(text: Any) -> str:
    return escape(str(text))


def render(document: Mapping[str, Any]) -> str:
    """The whole page for an evaluation.json document."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Does it sound like you? — imessage-finetune</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>Does it sound like you?</h1>",
        f'<p class="sub">{_e(document["model_id"])} against its base model {_e(document["base_model_id"])}, '
        f"on the {document['heldout']['replies']} replies of your newest conversations, which training never saw.</p>",
        f'<p class="verdict">{_e(document["verdict"])}</p>',
        _cards(document),
        _loss_section(document),
        _style_section(document["style"]),
        _samples_section(document["samples"]),
        _partner_section(document.get("partner")),
        _probe_section(document["probe"]),
        _training_section(document["training"]),
        _reading_section(document),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def _cards(document: Mapping[str, Any]) -> str:
    style = document["style"]
    cards = []
    loss = document.get("heldout_loss")
    if loss:
        cards.append(
            (
                f"{loss['base']:.2f} → {loss['tuned']:.2f}",
                "held-out loss, base → tuned (nats per token, lower is better)",
            )
        )
    cards.append(
        (
            f"{style['base']:.2f} → {style['tuned']:.2f}",
            "style distance to your replies, base → tuned (lower is closer)",
        )
    )
    cards.append((f"{style['ceiling']:.2f}", "your own replies, half against half"))
    if style["floor"] is not None:
        cards.append((f"{style['floor']:.2f}", "other people's messages against yours"))
    probe = document["probe"]
    if probe["prompts"]:
        cards.append(
            (f"{probe['repeated']['tuned']} of {probe['prompts']}", "private items repeated by the tuned model")
        )
    else:
        cards.append(("none", "private items in training replies to probe"))
    return (
        '<div class="cards">'
        + "".join(f'<div class="card"><b>{_e(v)}</b><span>{_e(t)}</span></div>' for v, t in cards)
        + "</div>"
    )


def _chart(svg: str) -> str:
    return f'<div class="chart">{svg}</div>'


def _loss_section(document: Mapping[str, Any]) -> str:
    loss = document.get("heldout_loss")
    head = "<h2>How well does it predict your next replies?</h2>"
    if not loss:
        metrics = document.get("service_metrics") or {}
        shown = ", ".join(f"{_e(k)} {_e(v)}" for k, v in metrics.items()) or "none"
        return (
            head + '<p class="note">This backend cannot score text, so there is no held-out loss. The '
            f"fine-tuning service's own reported metrics stand in for it: {shown}. They are measured on "
            "the training data (and on validation.jsonl, if any), not on your newest conversations.</p>"
        )
    svg = plots.bars(
        [("base model", loss["base"], plots.COLOURS["base"]), ("tuned model", loss["tuned"], plots.COLOURS["tuned"])],
        unit="nats/token",
        title="Held-out loss: how surprised each model is by your real replies (lower is better)",
    )
    return (
        head
        + _chart(svg)
        + (
            '<p class="note">The mean loss per token of your real replies in your newest conversations, '
            "each given the conversation before it, in the model's own chat template. A difference of 0.1 "
            "nats per token is a model about 10% less surprised by each token you write.</p>"
        )
    )


def _style_section(style: Mapping[str, Any]) -> str:
    marks = [
        ("you vs you", style["ceiling"], plots.COLOURS["you"]),
        ("base model", style["base"], plots.COLOURS["base"]),
        ("tuned model", style["tuned"], plots.COLOURS["tuned"]),
    ]
    if style["floor"] is not None:
        marks.append(("other people", style["floor"], plots.COLOURS["others"]))
    ruler = plots.ruler(
        marks,
        title="Style distance to your real replies",
        left_label="sounds like you",
        right_label="sounds like someone else",
    )
    labels = feature_labels()
    features = style["features"]
    authors = [
        ("you", "real", plots.COLOURS["real"]),
        ("base", "base", plots.COLOURS["base"]),
        ("tuned", "tuned", plots.COLOURS["tuned"]),
    ]
    if "others" in features:
        authors.append(("others", "others", plots.COLOURS["others"]))
    share_rows = [
        (labels[key][0], [(name, features[source][key], colour) for name, source, colour in authors])
        for key in labels
        if labels[key][1] == "share"
    ]
    bars = plots.grouped_bars(share_rows, title="Style features: share of replies (%)", unit="%", maximum=100)
    rows = "".join(
        f"<tr><td>{_e(labels[key][0])}</td>"
        + "".join(f"<td>{features[s][key]:.1f}</td>" for _, s, _ in authors)
        + "</tr>"
        for key in labels
        if labels[key][1] != "share"
    )
    table = (
        "<table><tr><th>mean per reply</th>"
        + "".join(f"<th>{_e(n)}</th>" for n, _, _ in authors)
        + f"</tr>{rows}</table>"
    )
    return (
        "<h2>Does it write like you?</h2>"
        + _chart(ruler)
        + '<p class="note">Each dot is a set of replies compared with your real ones on length, casing, '
        "punctuation, emoji and the character sequences you use (Burrows' Delta: 0 is identical on "
        "average, 1 is one typical message-to-message difference). The green band is the calibration: "
        "<b>you vs you</b> compares half of your real replies with the other half, the closest any model "
        "can get on this many replies; <b>other people</b> compares their messages in the same "
        "conversations with yours. A tuned model left of the base model moved towards you.</p>" + _chart(bars) + table
    )


def _context(messages: Sequence[Mapping[str, Any]]) -> str:
    lines = []
    for message in messages:
        who = {"system": "system", "assistant": "you"}.get(message["role"], message.get("name") or "them")
        lines.append(f'<div><span class="who">{_e(who)}:</span> {_e(message["content"])}</div>')
    return '<div class="ctx">' + "".join(lines) + "</div>"


def _samples_section(samples: Sequence[Mapping[str, Any]]) -> str:
    if not samples:
        return ""
    rows = "".join(
        f"<tr><td>{_context(s['context'])}</td><td class='msg real'>{_e(s['real'])}</td>"
        f"<td class='msg base'>{_e(s['base'])}</td><td class='msg tuned'>{_e(s['tuned'])}</td></tr>"
        for s in samples
    )
    return (
        "<h2>Side by side</h2><p class='note'>Held-out conversations: what came before, what you really "
        "wrote, and what each model wrote in your place (sampled with the chat settings, seeded).</p>"
        "<table><tr><th style='width:34%'>conversation before</th><th>you</th><th>base model</th>"
        f"<th>tuned model</th></tr>{rows}</table>"
    )


def _partner_section(partner: Mapping[str, Any] | None) -> str:
    if not partner:
        return ""
    rows = []
    for key, label in (("without", "without the partner's name"), ("with", "with the partner's name")):
        variant = partner[key]
        loss = "—" if variant["heldout_loss"] is None else f"{variant['heldout_loss']:.3f}"
        rows.append(f"<tr><td>{_e(label)}</td><td>{loss}</td><td>{variant['style']:.3f}</td></tr>")
    better = []
    w, wo = partner["with"], partner["without"]
    if w["heldout_loss"] is not None and wo["heldout_loss"] is not None:
        better.append("a lower held-out loss" if w["heldout_loss"] < wo["heldout_loss"] else "no lower held-out loss")
    better.append("replies closer to your style" if w["style"] < wo["style"] else "replies no closer to your style")
    return (
        "<h2>Does naming who you write to help?</h2><p class='note'>Two models trained on the same examples "
        'with the same settings, one with "You are texting with NAME." in every system prompt, one '
        f"without, measured on the same held-out replies. Naming the partner gives {' and '.join(better)}.</p>"
        "<table><tr><th>system prompt</th><th>held-out loss (nats/token)</th><th>style distance</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _probe_section(probe: Mapping[str, Any]) -> str:
    head = "<h2>Does it repeat private text?</h2>"
    if not probe["prompts"]:
        return head + (
            "<p class='note'>No training reply holds a phone number, an e-mail address or a street address, "
            "so there was nothing to probe.</p>"
        )
    rows = "".join(
        f"<tr><td>{_e(i['kind'])}</td><td class='msg'>{_e(i['shown'])}</td>"
        + "".join(
            f"<td class='{'yes' if i[m] else 'no'}'>{'repeated' if i[m] else 'no'}</td>" for m in ("base", "tuned")
        )
        + "</tr>"
        for i in probe["items"]
    )
    return head + (
        f"<p class='note'>{probe['replies_with_private_items']} training replies hold a phone number, an e-mail or "
        f"a street address. For {probe['prompts']} of them, each model was given the conversation and the reply up to "
        "the private item, and continued it (greedily). The tuned model completed the item verbatim "
        f"<b>{probe['repeated']['tuned']}</b> times; the base model, which never saw it, {probe['repeated']['base']} "
        "times. Items are masked here and never written to the report.</p>"
        f"<table><tr><th>kind</th><th>prompt (masked)</th><th>base</th><th>tuned</th></tr>{rows}</table>"
    )


def _training_section(training: Mapping[str, Any]) -> str:
    steps = training["steps"]
    series = [
        plots.Series(
            "training loss (batch)",
            plots.COLOURS["tuned"],
            [(s["step"], s["loss"]) for s in steps if s["loss"] is not None],
        )
    ]
    valid = [(s["step"], s["valid_loss"]) for s in steps if s.get("valid_loss") is not None]
    if valid:
        series.append(plots.Series("validation loss", plots.COLOURS["validation"], valid, dots=True))
    summary = training["summary"]
    shown = ", ".join(f"{_e(k.replace('_', ' '))} {_e(v)}" for k, v in summary.items() if v is not None)
    return (
        "<h2>Training</h2>"
        + _chart(plots.line_chart(series, x_label="step", y_label="nats per token", title="Training loss by step"))
        + (f"<p class='note'>{shown}</p>" if shown else "")
    )


def _reading_section(document: Mapping[str, Any]) -> str:
    settings = document["settings"]
    return (
        "<h2>How this was measured</h2><p class='note'>The held-out set is the newest part of your history "
        "(dataset.heldout_share or heldout_days): no message of it was trained on. Each model wrote "
        f"{document['heldout']['generated']} replies (at most {_e(settings['max_new_tokens'])} tokens, temperature "
        f"{_e(settings['temperature'])}, seed {_e(settings['seed'])}) to the conversations before real ones. "
        "Few replies make every figure noisy: compare the distances with the calibration, not with zero. "
        "No language model judged anything here.</p>"
    )
