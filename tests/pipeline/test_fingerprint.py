"""Stage fingerprints: a code change in anything a stage imports makes it stale, and says so."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from imessage_finetune.pipeline import fingerprint
from imessage_finetune.pipeline.fingerprint import FilesUnchanged, StageFingerprint, files_state, module_closure


@pytest.fixture
def package_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the package's sources that the test may edit."""
    copy = tmp_path / "imessage_finetune"
    shutil.copytree(fingerprint.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(fingerprint, "PACKAGE_DIR", copy)
    return copy


def test_a_stage_depends_on_every_module_it_imports(package_copy: Path) -> None:
    """stages/merged.py reaches the shaping rules, tokens, openai_file, jsonio... through its imports."""
    closure = module_closure("stages/merged.py")
    assert {"stages/merged.py", "shaping/runs.py", "tokens.py", "openai_file.py", "jsonio.py", "atomic.py"} <= closure
    assert "stages/dataset.py" not in closure and "cli.py" not in closure
    assert "langchain/chat_utils.py" not in closure


def test_editing_an_imported_module_makes_the_stage_stale(package_copy: Path) -> None:
    """A change two imports away (jsonio.py) is a code change for the stage, explained."""
    saved = StageFingerprint("merged", {"a": 1}, "stages/merged.py")
    values = {saved.key: saved.current}
    assert StageFingerprint("merged", {"a": 1}, "stages/merged.py")(None, values)
    jsonio = package_copy / "jsonio.py"
    jsonio.write_text(jsonio.read_text() + "\n# a change\n")
    now = StageFingerprint("merged", {"a": 1}, "stages/merged.py")
    assert not now(None, values)
    assert now.explain(values) == ["its code changed"]
    assert StageFingerprint("merged", {"a": 2}, "stages/merged.py").explain(values) == ["a: 1 -> 2", "its code changed"]


def test_touched_but_identical_files_are_unchanged(tmp_path: Path) -> None:
    """A new mtime with the same bytes is no change; different bytes of the same size are."""
    path = tmp_path / "x.json"
    path.write_text("abc")
    check = FilesUnchanged("targets", [path], save_after=True)
    values = {"targets": files_state([path])}
    os.utime(path, ns=(1, 1))
    assert check(None, values)
    path.write_text("abd")
    assert not check(None, values)
    assert check.explain(values) == ["x.json was edited or damaged since it was built"]


def test_digests_follow_the_file_and_doits_check_uses_them(tmp_path: Path) -> None:
    """A remembered digest is given only for the same file version: bytes rewritten in place
    (same size, new mtime) are hashed again, and doit's file_dep check sees the change."""
    from imessage_finetune.digests import file_digest
    from imessage_finetune.pipeline.fingerprint import DigestChecker

    path = tmp_path / "dep.json"
    path.write_text("abc")
    first = file_digest(path)
    assert file_digest(path) == first
    checker = DigestChecker()
    state = checker.get_state(str(path), None)
    assert not checker.check_modified(str(path), path.stat(), state)
    path.write_text("abd")
    os.utime(path, ns=(1, 1))  # a new mtime, the same size
    assert file_digest(path) != first
    assert checker.check_modified(str(path), path.stat(), state)
