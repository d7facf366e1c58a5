"""The imessage-finetune command: data on stdout, errors as one clear line and exit 1."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from chatdb_builder import BASE_TIME, ChatDbBuilder
from imessage_finetune import artifacts
from imessage_finetune.cli import cli

ALICE = "+15555550101"


def project(tmp_path: Path, source: str) -> Path:
    config = tmp_path / "finetune.toml"
    config.write_text(f'[source]\npath = "{source}"\ncontacts = "none"\n[artifacts]\ndir = "out"\n')
    return config


def two_chats(builder: ChatDbBuilder) -> None:
    alice, bob = builder.handle(ALICE), builder.handle("bob@example.com")
    one = builder.chat(ALICE, [alice])
    group = builder.chat("chat7", [alice, bob], group=True, display_name="Trio")
    builder.message(one, "hi", handle=alice, at=BASE_TIME)
    builder.message(group, "a", from_me=True, at=BASE_TIME + 86400)
    builder.message(group, "b", handle=bob, at=BASE_TIME + 2 * 86400)
    builder.message(group, None, from_me=True, body="c", at=BASE_TIME + 3 * 86400)
    builder.message(group, "Loved “b”", handle=alice, associated_message_type=2000)
    builder.close()


def test_conversations_lists_counts_and_dates(builder: ChatDbBuilder, tmp_path: Path) -> None:
    """A table on stdout, most messages first; --json gives the same data."""
    two_chats(builder)
    config = project(tmp_path, str(builder.path))
    result = CliRunner().invoke(cli, ["--config", str(config), "conversations"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["IDENTIFIER", "NAME", "PARTICIPANTS", "MESSAGES", "FIRST", "LAST"]
    assert lines[1].split()[:2] == ["chat7", "Trio"] and "3" in lines[1].split()
    assert "2023-11-15" in lines[1] and "2023-11-17" in lines[1]
    assert "2 conversations, 4 messages" in result.stderr
    as_json = json.loads(CliRunner().invoke(cli, ["--config", str(config), "conversations", "--json"]).stdout)
    assert [(c["chat_identifier"], c["messages"]) for c in as_json] == [("chat7", 3), (ALICE, 1)]


def test_diagnose_reports_totals_and_exclusions(builder: ChatDbBuilder, tmp_path: Path) -> None:
    """Totals, attributedBody share, handle_id = 0 rows and exclusions by reason."""
    two_chats(builder)
    config = project(tmp_path, str(builder.path))
    result = CliRunner().invoke(cli, ["--config", str(config), "diagnose", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["message_rows"] == 5 and report["messages_kept"] == 4
    assert report["text_only_in_attributed_body"] == 1
    assert report["owner_rows_without_handle"] == 2
    assert report["excluded"] == {"tapback": 1}
    text = CliRunner().invoke(cli, ["--config", str(config), "diagnose"]).stdout
    assert "left out: tapback" in text and " 1 rows (20%)" in text
    # One set of counts: the kept figures are the sessions stage's own.
    run = CliRunner().invoke(cli, ["--config", str(config), "run", "sessions"])
    stats = json.loads((tmp_path / "out" / artifacts.SESSIONS.filename).read_text())["stats"]
    assert (report["kept_from_attributed_body"], report["kept_owner_without_handle"]) == (
        stats["text_from_attributed_body"],
        stats["owner_without_handle"],
    )
    said = f"({stats['text_from_attributed_body']} with text from attributedBody, {stats['owner_without_handle']} of your own"
    assert said in run.stderr


def test_run_builds_sessions(builder: ChatDbBuilder, tmp_path: Path) -> None:
    """`run` drives the same doit tasks as dodo.py."""
    two_chats(builder)
    config = project(tmp_path, str(builder.path))
    result = CliRunner().invoke(cli, ["--config", str(config), "run", "sessions"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / artifacts.SESSIONS.filename).exists()


def test_errors_are_one_line_with_what_to_do(tmp_path: Path) -> None:
    """A missing database or a bad key: 'Error: ...' on stderr, exit 1, no traceback."""
    config = project(tmp_path, str(tmp_path / "missing.db"))
    result = CliRunner().invoke(cli, ["--config", str(config), "diagnose"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: chat.db not found at ") and "Traceback" not in result.output
    config.write_text("[source]\npaht = 'x'\n")
    result = CliRunner().invoke(cli, ["--config", str(config), "conversations"])
    assert result.exit_code == 1 and "unknown key source.paht" in result.stderr


def test_every_command_has_help_with_an_example() -> None:
    """Help is the documentation: each command explains itself and shows an example."""
    for name, command in cli.commands.items():
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0 and "Example" in result.output, name


def test_run_force_rebuilds_an_up_to_date_stage(builder: ChatDbBuilder, tmp_path: Path) -> None:
    """--force forgets the stage and runs it again (doit's forget returns no exit code)."""
    two_chats(builder)
    config = project(tmp_path, str(builder.path))
    CliRunner().invoke(cli, ["--config", str(config), "run", "sessions"])
    result = CliRunner().invoke(cli, ["--config", str(config), "run", "sessions", "--force"])
    assert result.exit_code == 0, result.output
    assert "sessions: 4 messages" in result.output


def test_train_jobs_chat_and_forget_against_the_stand_in(
    tmp_path: Path, fake_openai, monkeypatch  # type: ignore[no-untyped-def]
) -> None:
    """run train --yes, then list and show the job, chat with the model (streamed, with the
    training system prompt), cancel is refused for a finished job, and forget drops receipts."""
    from fake_openai import API_KEY

    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.delenv("IMESSAGE_FINETUNE_YES", raising=False)
    config = tmp_path / "finetune.toml"
    config.write_text(
        '[source]\npath = "demo"\n[artifacts]\ndir = "out"\n[dataset]\nsystem_prompt = "You are me."\n'
        f'[finetune]\nbackend = "openai"\nbase_url = "{fake_openai.base_url}"\npoll_interval = 0.01\n'
    )
    base = ["--config", str(config)]
    result = CliRunner().invoke(cli, [*base, "run", "train", "--yes"])
    assert result.exit_code == 0, result.output
    [job_id] = fake_openai.state.jobs
    listing = CliRunner().invoke(cli, [*base, "jobs", "list"])
    assert job_id in listing.stdout and "succeeded" in listing.stdout
    shown = CliRunner().invoke(cli, [*base, "jobs", "show"])
    assert shown.stdout.startswith(f"{job_id}: succeeded") and "training loss" in shown.stdout
    chat = CliRunner().invoke(cli, [*base, "chat", "are you free tonight?"])
    assert chat.exit_code == 0 and chat.stdout.strip()
    assert len([r for r in fake_openai.state.requests if r.path == "/v1/chat/completions"]) == 1
    cancel = CliRunner().invoke(cli, [*base, "jobs", "cancel", job_id])
    assert cancel.exit_code == 1 and "already completed" in cancel.stderr
    forget = CliRunner().invoke(cli, [*base, "forget", "--yes"])
    assert forget.exit_code == 0 and not (tmp_path / "out" / "model.json").exists()
    assert (tmp_path / "out" / "train.jsonl").exists()


def _columns(text: str) -> int:
    """Terminal columns of `text`, by Unicode's own tables for the characters these tests use:
    wide (W/F) characters take two, combining marks none (an oracle independent of wcwidth)."""
    import unicodedata

    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text
    )


def test_conversations_align_names_with_emoji_cjk_and_combining_marks(builder: ChatDbBuilder, tmp_path: Path) -> None:
    """Each column starts at the same terminal column in every row, whatever the names hold;
    a control character in a name is shown as its escape, never sent to the terminal."""
    people = [builder.handle(f"+1555555010{i}") for i in range(5)]
    names = ["Paradox Club 🐢🐢", "東京の友達", "Zoe\u0301 & Rene\u0301e", "plain", "Bad\x1b[2Jname"]
    for i, name in enumerate(names):
        chat = builder.chat(f"chat{i}", people[:2], group=True, display_name=name)
        for n in range(5 - i):  # distinct counts: rows come out in this order
            builder.message(chat, f"m{n}", handle=people[0], at=BASE_TIME + n)
    builder.close()
    config = project(tmp_path, str(builder.path))
    result = CliRunner().invoke(cli, ["--config", str(config), "conversations"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "\x1b" not in result.stdout and "Bad\\x1b[2Jname" in lines[5]
    # IDENTIFIER is 10 columns wide, NAME 17 ("Paradox Club 🐢🐢": 13 + 2 + 2), two between.
    participants = lines[0].index("PARTICIPANTS")
    assert participants == 10 + 2 + 17 + 2
    for line in lines[1:]:
        assert _columns(line[: line.index("+1555555010")]) == participants, line
    first_date = lines[0].index("FIRST")
    assert all(_columns(line[: line.index("2023-")]) == first_date for line in lines[1:]), result.stdout


def _jsonl(path: Path, examples: int = 10, words: int = 3) -> Path:
    lines = [
        {"messages": [{"role": "user", "content": f"hi {i} " * words}, {"role": "assistant", "content": "hey"}]}
        for i in range(examples)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_validate_refuses_a_model_it_has_no_limits_for_unless_told_the_limit(tmp_path: Path) -> None:
    """A typo or another service's model is not checked against a limit that may not be its
    own: exit 2 naming the model and the way out; --token-limit checks against that limit."""
    data = _jsonl(tmp_path / "train.jsonl", words=50)
    known = CliRunner().invoke(cli, ["validate", str(data), "--model", "gpt-4o-mini-2024-07-18"])
    assert known.exit_code == 0, known.output
    assert "for gpt-4o-mini-2024-07-18, at most 65536 tokens per example" in known.stderr
    tuned = CliRunner().invoke(cli, ["validate", str(data), "--model", "ft:gpt-4.1-mini-2025-04-14:org:me:abc"])
    assert tuned.exit_code == 0 and "at most 65536 tokens" in tuned.stderr

    typo = CliRunner().invoke(cli, ["validate", str(data), "--model", "gpt4o-mini-2024-07-18"])
    assert typo.exit_code == 2 and typo.stdout == ""
    assert "no token limit is known for the model 'gpt4o-mini-2024-07-18' (--model)" in typo.stderr
    assert "--token-limit N" in typo.stderr and "gpt-4o*" in typo.stderr

    other = CliRunner().invoke(cli, ["validate", str(data), "--model", "llama-3-8b", "--token-limit", "40", "--json"])
    report = json.loads(other.stdout)
    assert (report["model"], report["token_limit"], report["exact_tokens"]) == ("llama-3-8b", 40, False)
    assert {p["code"] for p in report["problems"]} == {"over_token_limit"}

    config = tmp_path / "finetune.toml"
    config.write_text('[finetune]\nbackend = "openai"\nmodel = "my-own-model"\n')
    configured = CliRunner().invoke(cli, ["--config", str(config), "validate", str(data)])
    assert configured.exit_code == 2 and "'my-own-model' ([finetune] model)" in configured.stderr


def test_chat_never_sends_a_models_control_characters_to_the_terminal(
    tmp_path: Path, fake_openai, monkeypatch  # type: ignore[no-untyped-def]
) -> None:
    """A reply holding ESC sequences, BEL, a carriage return, C1 and bidi controls (the
    stand-in echoes the prompt) is shown with those as escapes; newlines and tabs stay, and
    stderr says what was replaced."""
    from fake_openai import API_KEY

    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    config = tmp_path / "finetune.toml"
    config.write_text(f'[source]\npath = "demo"\n[finetune]\nbackend = "openai"\nbase_url = "{fake_openai.base_url}"\n')
    prompt = "hi\x1b[2J\x1b]0;owned\x07 there\r\nnext\tline \x9b31m \u202eevil \ufffd"
    chat = CliRunner().invoke(cli, ["--config", str(config), "chat", "--model", "gpt-4o-mini-2024-07-18", prompt])
    assert chat.exit_code == 0, chat.output
    assert chat.stdout == (
        "You said: hi\\x1b[2J\\x1b]0;owned\\x07 there\\x0d\nnext\tline \\x9b31m \\u202eevil \ufffd\n"
    )
    assert "chat: in this reply, 6 control character(s) shown as escapes (such as \\x1b); 1 \ufffd (U+FFFD)" in chat.stderr
