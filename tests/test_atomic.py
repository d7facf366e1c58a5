"""Folders published whole: a kill leaves the old folder or the new one, and the leftovers of
a killed run are removed by the next."""

from __future__ import annotations

from pathlib import Path

import pytest

from imessage_finetune.atomic import atomic_dir, clean_stale_temporaries


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "adapter"
    with atomic_dir(target) as staging:
        (staging / "weights").write_text("one")
    with pytest.raises(RuntimeError), atomic_dir(target) as staging:
        (staging / "weights").write_text("two, half")
        raise RuntimeError("killed while writing")
    assert (target / "weights").read_text() == "one"
    with atomic_dir(target) as staging:
        (staging / "other").write_text("three")
    assert [p.name for p in target.iterdir()] == ["other"]
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_leftover_temporary_folders_and_files_are_cleaned_at_any_depth(tmp_path: Path) -> None:
    nested = tmp_path / "local-model" / "checkpoints"
    nested.mkdir(parents=True)
    (nested / ".step-00000010.tmp-abc").mkdir()
    (nested / ".step-00000010.tmp-abc" / "trainer.pt").write_text("partial")
    (tmp_path / ".model.json.tmp-xyz").write_text("partial")
    (nested / "latest.json").write_text("{}")
    removed = clean_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".model.json.tmp-xyz", ".step-00000010.tmp-abc"]
    assert [p.name for p in nested.iterdir()] == ["latest.json"]
