"""Names of the tables and columns the reader uses, and the values that identify message kinds.

No other module spells a chat.db column name. Optional columns (added by later macOS
releases) are read as NULL when a database lacks them.
"""

from __future__ import annotations

REQUIRED_TABLES = ("message", "chat", "handle", "chat_message_join", "chat_handle_join")

# Columns every supported release (10.12 onwards) has.
MESSAGE_COLUMNS = (
    "ROWID",
    "guid",
    "text",
    "attributedBody",
    "handle_id",
    "service",
    "date",
    "is_from_me",
    "item_type",
    "associated_message_type",
    "cache_has_attachments",
    "balloon_bundle_id",
    "is_audio_message",
    "error",
)
# Columns later releases added; absent ones are selected as NULL.
OPTIONAL_MESSAGE_COLUMNS = (
    "thread_originator_guid",
    "date_edited",
    "date_retracted",
    "message_summary_info",
)

CHAT_STYLE_GROUP = 43
CHAT_STYLE_ONE_TO_ONE = 45

URL_BALLOON = "com.apple.messages.URLBalloonProvider"

# associated_message_type values: 2 and 3 occur on ordinary messages and count as 0.
ORDINARY_ASSOCIATION = (0, 2, 3)
STICKER = 1000
POLL_VOTE = 4000
TAPBACK_RANGE = range(2000, 4000)  # 2000-2007 add, 3000-3007 remove

ATTACHMENT_CHARACTER = "\ufffc"
REPLACEMENT_CHARACTER = "\ufffd"
