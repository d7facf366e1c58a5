"""IMessageChatLoader: the LangChain chat-loader interface over the correct reader."""

from __future__ import annotations

from langchain_core.chat_loaders import BaseChatLoader
from langchain_core.messages import HumanMessage

from chatdb_builder import ChatDbBuilder
from imessage_finetune.langchain.loader import IMessageChatLoader, load_sessions_file
from imessage_finetune.stages.sessions import write_sessions
from imessage_finetune.sources.contacts import ContactBook
from imessage_finetune.sources.chatdb.reader import ReaderOptions


def test_lazy_load_streams_one_chat_session_per_chat(builder: ChatDbBuilder, tmp_path) -> None:
    """A BaseChatLoader whose sessions hold HumanMessages with sender and is_from_me."""
    a = builder.chat("+15555550101", [builder.handle("+15555550101")])
    b = builder.chat("+15555550102", [builder.handle("+15555550102")])
    builder.message(a, "to a", from_me=True)
    builder.message(b, "from b", handle=2)
    builder.close()
    loader = IMessageChatLoader(builder.path, contacts="none")
    assert isinstance(loader, BaseChatLoader)
    stream = loader.lazy_load()
    first = next(stream)
    assert [(m.content, m.additional_kwargs["is_from_me"]) for m in first["messages"]] == [("to a", True)]
    assert all(isinstance(m, HumanMessage) for m in first["messages"])
    [second] = list(stream)
    assert second["messages"][0].additional_kwargs["sender"] == "+15555550102"
    assert [s["messages"] for s in loader.load()] == [first["messages"], second["messages"]]

    sessions_file = tmp_path / "sessions.json"
    write_sessions(builder.path, ContactBook.from_contacts([]), sessions_file, ReaderOptions())
    assert [s["messages"] for s in load_sessions_file(sessions_file)] == [first["messages"], second["messages"]]
