"""LangChain's chat-loader interface over the correct reader.

`IMessageChatLoader` is a drop-in for `langchain_community.chat_loaders.IMessageChatLoader`
(same constructor argument, `load()` and `lazy_load()` yielding `ChatSession`s of
`HumanMessage`s with `sender`, `is_from_me` and `message_time` in `additional_kwargs`), but it
opens the database read-only, includes rows still in the WAL and the owner's `handle_id = 0`
messages, shows group messages once, decodes `attributedBody` properly and names senders
from Contacts. Each session also says which chat it is (`chat`: id, identifier, name, whether
it is a group, participants), as sessions.json does; `chat_utils` reads it for group chats,
redaction and the validation split.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from langchain_core.chat_loaders import BaseChatLoader
from langchain_core.messages import HumanMessage, messages_from_dict

from imessage_finetune.config import DEFAULT_CHAT_DB
from imessage_finetune.jsonio import read_stream
from imessage_finetune.langchain.chat_utils import IMessageChatSession
from imessage_finetune.sources.chatdb.connection import open_chat_db
from imessage_finetune.sources.chatdb.reader import ChatDbReader, ReaderOptions
from imessage_finetune.sources.contacts import contacts_sources, read_contacts
from imessage_finetune.stages.sessions import chat_dict, message_kwargs


class IMessageChatLoader(BaseChatLoader):
    """Load one `ChatSession` per chat from a macOS Messages database, streaming."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        contacts: str | Path | Sequence[str | Path] = "auto",
        options: ReaderOptions | None = None,
        busy_timeout: float = 10.0,
    ) -> None:
        """`path` defaults to ~/Library/Messages/chat.db; `contacts` is "auto", "none" or paths."""
        self.db_path = Path(path or DEFAULT_CHAT_DB).expanduser()
        if contacts == "auto":
            self.contacts_paths = contacts_sources(None)
        elif contacts == "none":
            self.contacts_paths = []
        elif isinstance(contacts, (str, Path)):
            self.contacts_paths = [Path(contacts).expanduser()]
        else:
            self.contacts_paths = [Path(p).expanduser() for p in contacts]
        self.options = options or ReaderOptions()
        self.busy_timeout = busy_timeout

    def lazy_load(self) -> Iterator[IMessageChatSession]:
        """Yield the chats one at a time, messages in date order."""
        book = read_contacts(self.contacts_paths, self.busy_timeout)
        with open_chat_db(self.db_path, busy_timeout=self.busy_timeout) as conn:
            reader = ChatDbReader(conn, self.options, book)
            for chat, messages in reader.conversations():
                yield IMessageChatSession(
                    messages=[HumanMessage(content=m.text, additional_kwargs=message_kwargs(m)) for m in messages],
                    chat=chat_dict(chat),
                )


def load_sessions_file(path: str | Path) -> list[IMessageChatSession]:
    """The chats of a sessions.json as LangChain `ChatSession`s (with their `chat`)."""
    _, sessions = read_stream(Path(path), "sessions")
    return [
        IMessageChatSession(messages=messages_from_dict(session.pop("messages")), chat=session) for session in sessions
    ]
