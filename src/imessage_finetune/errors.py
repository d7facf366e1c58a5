"""Typed errors, one family per domain. Each message says what went wrong and what to do.

Library code only raises them. The CLI turns them into a one-line error and exit 1 in one
place (`cli._Group.invoke`); in doit runs a failing stage reports its message through
`tasks.stage_action`, and dodo.py does the same for configuration errors.
"""

from __future__ import annotations


class FinetuneError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(FinetuneError):
    """The configuration file is missing, malformed, or has an unknown key or wrong type."""


class ChatDbError(FinetuneError):
    """The Messages database cannot be read."""


class ChatDbNotFound(ChatDbError):
    """No file at the configured path."""


class ChatDbIsDirectory(ChatDbError):
    """The configured path is a folder."""


class NotSqlite(ChatDbError):
    """The file is not a SQLite database."""


class NotAChatDb(ChatDbError):
    """A SQLite database without the Messages tables."""


class ChatDbPermissionDenied(ChatDbError):
    """The operating system refused to open the file (on macOS: Full Disk Access)."""


class ChatDbBusy(ChatDbError):
    """The database stayed locked by another process for longer than the bounded wait."""


class ContactsError(FinetuneError):
    """The Contacts (AddressBook) database cannot be read."""


class TypedStreamError(FinetuneError):
    """An `attributedBody` blob is not a typedstream this decoder understands."""


class SchemaValidationError(FinetuneError):
    """An artifact does not match its JSON Schema; nothing was published."""

    def __init__(self, artifact: str, pointer: str, message: str) -> None:
        self.artifact, self.pointer, self.detail = artifact, pointer, message
        super().__init__(
            f"{artifact}{pointer}: {message} (the artifact was not written; "
            "this is a bug in imessage-finetune, please report it)"
        )


class ChatSessionError(FinetuneError, ValueError):
    """A chat session cannot be shaped as asked (non-text content, missing time, bad parameter).

    Also a `ValueError`, which is what LangChain's chat-loader helpers raise for the same inputs,
    so code written against them keeps working.
    """


class DatasetError(FinetuneError):
    """The conversations cannot be turned into training data as configured."""
