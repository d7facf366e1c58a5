"""report.html from an evaluation.json: every section, text escaped, nothing fetched, private
items never written; rendered in real headless Chromium."""

from __future__ import annotations

import json
from pathlib import Path
from html.parser import HTMLParser
from typing import Any

import jsonschema
import pytest

from headless_chromium import chromium, open_page
from imessage_finetune import artifacts
from imessage_finetune.evaluation import stylometry
from imessage_finetune.evaluation.report import render


class Tags(HTMLParser):
    """Every tag and attribute name of a page."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)


HOSTILE = '<script>alert(1)</script><img src="https://example.com/x.png">'


def document(**changes: Any) -> dict[str, Any]:
    """A complete evaluation.json, every optional section included."""
    profile = stylometry.profile(["sure, later", "no way 🙂", "ok"])
    doc: dict[str, Any] = {
        "format": "imessage-finetune/evaluation",
        "version": 1,
        "model_id": "m+lora-abc",
        "base_model_id": "m",
        "settings": {
            "replies": 40,
            "max_new_tokens": 64,
            "temperature": 0.7,
            "top_p": 0.95,
            "seed": 42,
            "samples": 8,
            "probe_prompts": 20,
        },
        "heldout": {"conversations": 5, "replies": 12, "generated": 10},
        "heldout_loss": {"base": 4.2, "tuned": 3.1},
        "style": {
            "base": 1.2,
            "tuned": 0.7,
            "ceiling": 0.3,
            "floor": 0.9,
            "components": {k: {"surface": 0.5, "ngrams": 0.4} for k in ("base", "tuned", "ceiling", "floor")},
            "features": {"real": profile, "base": profile, "tuned": profile, "others": profile},
        },
        "samples": [
            {
                "context": [
                    {"role": "system", "content": "You are me."},
                    {"role": "user", "content": HOSTILE, "name": "Crab"},
                ],
                "real": "ha & <b>no</b>",
                "base": "I am an AI assistant.",
                "tuned": "lol no",
            }
        ],
        "probe": {
            "replies_with_private_items": 3,
            "prompts": 2,
            "repeated": {"base": 0, "tuned": 1},
            "items": [
                {"kind": "phone", "shown": "call me on •••••••••••", "base": False, "tuned": True},
                {"kind": "address", "shown": "I'm at •••••••••••••••", "base": False, "tuned": False},
            ],
        },
        "partner": {
            "with": {"model_id": "m+lora-abc", "heldout_loss": 3.1, "style": 0.7},
            "without": {"model_id": "m+lora-def", "heldout_loss": 3.2, "style": 0.8},
        },
        "training": {
            "steps": [{"step": i, "loss": 5 - i / 10} for i in range(1, 30)],
            "summary": {"train_loss_start": 5.0, "train_loss": 2.1},
        },
        "verdict": "On 10 held-out replies, the tuned model's replies are closer to your style.",
    }
    doc.update(changes)
    return doc


def test_the_document_matches_the_schema_and_the_page_escapes_every_text() -> None:
    doc = document()
    jsonschema.validate(doc, json.loads(artifacts.EVALUATION.schema_path.read_text()))
    page = render(doc)
    tags = Tags(page)
    assert not tags.tags & {"script", "img", "link", "iframe", "object", "embed", "a", "form"}
    assert not tags.attributes & {"src", "href", "srcset", "action", "xlink:href"}
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "ha &amp; &lt;b&gt;no&lt;/b&gt;" in page
    assert "default-src 'none'" in page
    assert (
        "Does naming who you write to help?" in page
        and "a lower held-out loss and replies closer to your style" in page
    )
    assert "completed the item verbatim <b>1</b> times" in page
    assert render(doc) == page, "the same evaluation gives the same page"


def test_a_backend_that_cannot_score_shows_the_services_metrics_instead() -> None:
    doc = document(service_metrics={"last_train_loss": 0.41, "last_valid_loss": None, "job_id": "ftjob-1"})
    del doc["heldout_loss"], doc["partner"]
    jsonschema.validate(doc, json.loads(artifacts.EVALUATION.schema_path.read_text()))
    page = render(doc)
    assert "cannot score text, so there is no held-out loss" in page and "last_train_loss 0.41" in page
    assert "Does naming who you write to help?" not in page


@pytest.mark.skipif(chromium() is None, reason="chromium is not installed (CI installs it: apt-get install chromium)")
def test_every_section_renders_in_chromium_without_errors_or_requests(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render(document()))
    visit = open_page(page)
    assert visit.errors == [], visit.console
    assert visit.requests == [page.resolve().as_uri()]
    assert visit.screenshot.startswith(b"\x89PNG") and visit.height > 2000
    (tmp_path / "report.png").write_bytes(visit.screenshot)
