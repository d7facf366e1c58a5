"""LangChain adapters over the package: the chat loader, the chat-session helpers, the chat
model of a locally trained adapter."""
