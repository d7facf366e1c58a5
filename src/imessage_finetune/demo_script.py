"""The demo's people, chats and scripted conversations: what the demo database holds.

Characters from the dialogues of Hofstadter's "Gödel, Escher, Bach" text the device owner
(shown as "Me") and each other for about a year. Every line is written here once: `demo.py`
turns the resolved `DEMO_MESSAGES` into `chat.db` rows, and each message's `expected_text` /
`excluded_reason` says what a correct reader outputs with default settings (attachments
skipped), so this module is the single source of truth for the reader's expected output.

Scenes give a start time (UTC) and lines with waits in seconds, so the database has bursts
within minutes and gaps of hours and days. The owner writes in lower case without
exclamation marks; the Tortoise in measured, wry full sentences.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, replace

from .chatdb.contacts import Contact
from .chatdb.dates import unix_to_apple_ns
from .chatdb.schema import (
    ATTACHMENT_CHARACTER,
    CHAT_STYLE_GROUP,
    CHAT_STYLE_ONE_TO_ONE,
    REPLACEMENT_CHARACTER,
)

# Why a message is not an utterance, with the names every report uses.
EXCLUDED_REASONS = (
    "tapback",
    "sticker",
    "poll_vote",
    "system_event",
    "unsent",
    "attachment_only",
    "audio",
    "app_message",
    "sms_reaction",
    "failed_send",
    "empty",
    "orphan",
)

# Message kinds: how a scripted message is stored (demo.py maps each to Apple's column values).
TEXT = "text"  # `text` and `attributedBody` both hold the body
ATTRIBUTED = "attributed"  # `text` NULL, body only in `attributedBody` (common since Ventura)
EDITED = "edited"  # final text in `attributedBody`, history in `message_summary_info`
UNSENT = "unsent"  # Ventura-style unsend: `date_retracted` set, body removed
UNSENT_26 = "unsent_26"  # macOS 26 unsend: `date_edited` set, part listed in `rp`
TAPBACK = "tapback"  # associated_message_type 2000-2006 (add) or 3000-3006 (remove)
STICKER = "sticker"  # associated_message_type 1000, a sticker attachment
POLL = "poll"  # a Polls app balloon
POLL_VOTE = "poll_vote"  # associated_message_type 4000
MEMBER_ADDED = "member_added"  # item_type 1
GROUP_RENAMED = "group_renamed"  # item_type 2
MEMBER_LEFT = "member_left"  # item_type 3
ATTACHMENT_ONLY = "attachment_only"  # body U+FFFC
TEXT_ATTACHMENT = "text_attachment"  # body U+FFFC followed by text
URL_PREVIEW = "url_preview"  # URL balloon, body = the URL
AUDIO = "audio"  # is_audio_message = 1
SMS_REACTION = "sms_reaction"  # an SMS "Liked “…”" text, associated_message_type 0
FAILED_SEND = "failed_send"  # error != 0
ORPHAN = "orphan"  # in no chat
EMPTY = "empty"  # text '' and no attributedBody

KINDS = (
    TEXT, ATTRIBUTED, EDITED, UNSENT, UNSENT_26, TAPBACK, STICKER, POLL, POLL_VOTE,
    MEMBER_ADDED, GROUP_RENAMED, MEMBER_LEFT, ATTACHMENT_ONLY, TEXT_ATTACHMENT, URL_PREVIEW,
    AUDIO, SMS_REACTION, FAILED_SEND, ORPHAN, EMPTY,
)  # fmt: skip

_EXCLUDED_KIND_REASON = {
    TAPBACK: "tapback",
    STICKER: "sticker",
    POLL: "app_message",
    POLL_VOTE: "poll_vote",
    MEMBER_ADDED: "system_event",
    GROUP_RENAMED: "system_event",
    MEMBER_LEFT: "system_event",
    UNSENT: "unsent",
    UNSENT_26: "unsent",
    ATTACHMENT_ONLY: "attachment_only",
    AUDIO: "audio",
    SMS_REACTION: "sms_reaction",
    FAILED_SEND: "failed_send",
    ORPHAN: "orphan",
    EMPTY: "empty",
}

# Tapback texts as Messages writes them into `text`.
LOVED, LIKED, DISLIKED, LAUGHED, EMPHASIZED, QUESTIONED, CUSTOM_EMOJI = range(2000, 2007)
REMOVED_LIKE = 3001
_TAPBACK_VERBS = {
    LOVED: "Loved",
    LIKED: "Liked",
    DISLIKED: "Disliked",
    LAUGHED: "Laughed at",
    EMPHASIZED: "Emphasized",
    QUESTIONED: "Questioned",
    REMOVED_LIKE: "Removed a like from",
}

OWNER_PHONE = "+15555550100"
OWNER_EMAIL = "me@example.com"
_NAMESPACE = uuid.UUID("5f1d3c2e-7a4b-4c8e-9d06-1e2f3a4b5c6d")


def demo_guid(label: str) -> str:
    """A deterministic uppercase UUID, the form Apple uses for message and chat GUIDs."""
    return str(uuid.uuid5(_NAMESPACE, label)).upper()


# --- people and handles -----------------------------------------------------------------

T, A, C, AN, S, G, H, B, Z, L, X = (
    "tortoise", "achilles", "crab", "anteater", "sloth", "genie",
    "hillary", "babbage", "zeno", "carroll", "stranger",
)  # fmt: skip
ME = None  # the device owner


@dataclass(frozen=True)
class DemoHandle:
    """One `handle` row: an address on a service, and whose it is."""

    rowid: int
    address: str
    service: str
    person: str
    in_contacts: bool = True


DEMO_HANDLES: tuple[DemoHandle, ...] = (
    DemoHandle(1, "+15555550102", "iMessage", A),
    DemoHandle(2, "+15555550101", "iMessage", T),
    DemoHandle(3, "+15555550103", "iMessage", C),
    DemoHandle(4, "+15555550109", "SMS", Z),
    DemoHandle(5, "anteater@example.org", "iMessage", AN),
    DemoHandle(6, "+15555550105", "iMessage", S),
    DemoHandle(7, "babbage@example.org", "iMessage", B),
    DemoHandle(8, "tortoise@example.com", "iMessage", T),
    DemoHandle(9, "genie@example.net", "iMessage", G),
    DemoHandle(10, "+15555550110", "iMessage", L),
    DemoHandle(11, "+15555550107", "iMessage", H),
    DemoHandle(12, "+15555550147", "iMessage", X, in_contacts=False),
)

# The address book: every handle but the stranger's resolves to a name.
DEMO_CONTACTS: tuple[Contact, ...] = (
    Contact(first="Tortoise", phones=("+15555550101",), emails=("tortoise@example.com",)),
    Contact(first="Achilles", phones=("+1 (555) 555-0102",)),
    Contact(first="Crab", organization="Crab Canon Records", phones=("+15555550103",)),
    Contact(first="Anteater", emails=("anteater@example.org",)),
    Contact(first="Sloth", phones=("(555) 555-0105",)),
    Contact(first="Genie", emails=("genie@example.net",)),
    # An ant colony has no first name, only what her friends call her.
    Contact(nickname="Aunt Hillary", phones=("+15555550107",)),
    Contact(first="Charles", last="Babbage", emails=("babbage@example.org",)),
    Contact(first="Zeno", phones=("+15555550109",)),
    Contact(first="Lewis", last="Carroll", phones=("+15555550110",)),
)


# --- chats ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoChat:
    """One `chat` row. `participants` are the current members, the owner excluded."""

    key: str
    rowid: int
    guid: str
    style: int
    service: str
    identifier: str
    display_name: str
    participants: tuple[str, ...]

    @property
    def is_group(self) -> bool:
        """True for a group chat (style 43)."""
        return self.style == CHAT_STYLE_GROUP


def _direct(
    key: str, rowid: int, address: str, service: str = "iMessage", prefix: str = ""
) -> DemoChat:
    guid = f"{prefix or service};-;{address}"
    return DemoChat(key, rowid, guid, CHAT_STYLE_ONE_TO_ONE, service, address, "", (address,))


def _group(key: str, rowid: int, number: str, name: str, participants: tuple[str, ...]) -> DemoChat:
    identifier = f"chat{number}"
    return DemoChat(
        key, rowid, f"iMessage;+;{identifier}", CHAT_STYLE_GROUP, "iMessage", identifier, name,
        participants,
    )


DEMO_CHATS: tuple[DemoChat, ...] = (
    _direct("achilles", 1, "+15555550102"),
    _direct("tortoise", 2, "+15555550101"),
    _direct("crab", 3, "+15555550103"),
    _direct("zeno", 4, "+15555550109", service="SMS"),
    _direct("anteater", 5, "anteater@example.org"),
    _direct("sloth", 6, "+15555550105"),
    _group("paradox", 7, "641093827455106329", "Paradox Club 🐢", ("+15555550102", "+15555550101")),
    _direct("babbage", 8, "babbage@example.org"),
    _direct("tortoise_mail", 9, "tortoise@example.com"),
    _direct("genie", 10, "genie@example.net"),
    _direct("carroll", 11, "+15555550110"),
    _group(
        "crab_party", 12, "718265530194472861", "Crab's Birthday 🦀",
        ("+15555550103", "+15555550102", "+15555550101", "anteater@example.org", "+15555550105"),
    ),
    # Achilles left this one, so he is no longer a participant.
    _group(
        "ant_fugue", 13, "902384716650283914", "",
        ("anteater@example.org", "+15555550107", "+15555550103"),
    ),
    _direct("stranger", 14, "+15555550147", prefix="any"),
)


# --- scripted messages ---------------------------------------------------------------------


@dataclass(frozen=True)
class DemoAttachment:
    """One `attachment` row joined to its message."""

    guid: str
    transfer_name: str
    mime_type: str | None
    uti: str
    total_bytes: int
    is_sticker: bool = False


@dataclass(frozen=True)
class DemoMessage:
    """One scripted `message` row and what a correct reader makes of it.

    `sender` is the sender's handle address (None: the owner). `expected_text` is the text a
    correct reader outputs with default settings, None exactly when `excluded_reason` says why
    the message is left out. `body` is the text the row carries (the final text of an edit,
    None when the row has no body). Dates are nanoseconds since 2001-01-01 UTC.
    """

    rowid: int
    guid: str
    chats: tuple[str, ...]
    sender: str | None
    kind: str
    date: int
    body: str | None
    expected_text: str | None
    excluded_reason: str | None
    handle_id: int
    service: str
    association: int = 0
    target_guid: str | None = None
    target_text: str | None = None
    emoji: str | None = None
    thread_originator_guid: str | None = None
    thread_originator_text: str | None = None
    reply_to_guid: str | None = None
    versions: tuple[tuple[int, str], ...] = ()
    changed_at: int = 0
    attachment: DemoAttachment | None = None
    other_handle: int = 0
    group_title: str | None = None
    payload: tuple[str, ...] = ()

    @property
    def is_from_me(self) -> bool:
        """True for the owner's messages."""
        return self.sender is None


@dataclass(frozen=True)
class _Line:
    who: str | None
    kind: str
    text: str | None = None
    wait: int | None = None
    key: str | None = None
    target: str | None = None
    reply: str | None = None
    association: int = 0
    emoji: str | None = None
    versions: tuple[str, ...] = ()
    file: tuple[str, str | None, str, int] | None = None
    whom: str | None = None
    payload: tuple[str, ...] = ()
    also: tuple[str, ...] = ()
    late: bool = False
    tie: bool = False
    other_device: bool = False


def say(
    who: str | None,
    text: str,
    wait: int | None = None,
    *,
    key: str | None = None,
    reply: str | None = None,
    attributed: bool = False,
    also: tuple[str, ...] = (),
    late: bool = False,
    tie: bool = False,
    other_device: bool = False,
) -> _Line:
    """An ordinary text message (`tie`: same date as the previous line)."""
    kind = ATTRIBUTED if attributed else TEXT
    return _Line(who, kind, text, wait, key, reply=reply, also=also, late=late, tie=tie,
                 other_device=other_device)  # fmt: skip


def react(
    who: str | None, association: int, target: str, wait: int = 25, emoji: str | None = None
) -> _Line:
    """A tapback on the message named `target`."""
    return _Line(who, TAPBACK, wait=wait, target=target, association=association, emoji=emoji)


def sticker(who: str | None, target: str, wait: int = 30) -> _Line:
    """A sticker placed on the message named `target`."""
    return _Line(who, STICKER, ATTACHMENT_CHARACTER, wait, target=target,
                 file=("turtle-sticker.heic", "image/heic", "public.heic", 48213))  # fmt: skip


def photo(
    who: str | None, name: str, caption: str = "", wait: int = 40, key: str | None = None
) -> _Line:
    """An image or video, with an optional caption after its U+FFFC."""
    mime, uti, size = {
        "HEIC": ("image/heic", "public.heic", 1843211),
        "png": ("image/png", "public.png", 402117),
        "MOV": ("video/quicktime", "com.apple.quicktime-movie", 9120554),
    }[name.rsplit(".", 1)[1]]
    kind = TEXT_ATTACHMENT if caption else ATTACHMENT_ONLY
    return _Line(who, kind, ATTACHMENT_CHARACTER + caption, wait, key, file=(name, mime, uti, size))


def audio(who: str | None, wait: int = 60) -> _Line:
    """A recorded audio message (`.caf`, no MIME type, as Messages stores it)."""
    return _Line(who, AUDIO, ATTACHMENT_CHARACTER, wait,
                 file=("Audio Message.caf", None, "com.apple.coreaudio-format", 96844))  # fmt: skip


def link(who: str | None, url: str, wait: int = 30) -> _Line:
    """A URL with its rich link preview."""
    return _Line(who, URL_PREVIEW, url, wait)


def poll(
    who: str | None, question: str, options: tuple[str, ...], key: str, wait: int = 30
) -> _Line:
    """A poll (an app balloon)."""
    return _Line(who, POLL, REPLACEMENT_CHARACTER, wait, key, payload=(question, *options))


def vote(who: str | None, poll_key: str, option: str, wait: int = 45) -> _Line:
    """A vote in the poll named `poll_key`."""
    return _Line(who, POLL_VOTE, f"Voted for “{option}”", wait, target=poll_key)


def added(who: str | None, whom: str, wait: int = 20) -> _Line:
    """`who` added `whom` to the group."""
    return _Line(who, MEMBER_ADDED, wait=wait, whom=whom)


def renamed(who: str | None, title: str, wait: int = 20) -> _Line:
    """`who` renamed the group."""
    return _Line(who, GROUP_RENAMED, title, wait)


def left(who: str, wait: int = 20) -> _Line:
    """`who` left the group."""
    return _Line(who, MEMBER_LEFT, wait=wait)


def edited(who: str | None, *versions: str, wait: int | None = None) -> _Line:
    """A message edited after sending: the versions in order, the last one final."""
    return _Line(who, EDITED, versions[-1], wait, versions=versions)


def unsent(who: str | None, wait: int = 30, *, macos26: bool = False) -> _Line:
    """A message unsent by its sender (its body is gone from the database)."""
    return _Line(who, UNSENT_26 if macos26 else UNSENT, wait=wait)


def failed(who: str | None, text: str, wait: int | None = None) -> _Line:
    """A message that could not be sent."""
    return _Line(who, FAILED_SEND, text, wait)


def empty(who: str | None, wait: int = 60) -> _Line:
    """A message with an empty body."""
    return _Line(who, EMPTY, "", wait)


def orphan(who: str | None, text: str, wait: int | None = None) -> _Line:
    """A message left in no chat (deleted from it, as iCloud sync leaves them)."""
    return _Line(who, ORPHAN, text, wait)


def sms_reaction(who: str | None, association: int, target: str, wait: int = 30) -> _Line:
    """A reaction an SMS phone sends as ordinary text."""
    return _Line(who, SMS_REACTION, wait=wait, target=target, association=association)


@dataclass(frozen=True)
class _Scene:
    chat: str
    start: str  # UTC, "YYYY-MM-DD HH:MM"
    lines: tuple[_Line, ...]


def scene(chat: str, start: str, *lines: _Line) -> _Scene:
    """A burst of messages in one chat, starting at `start` (UTC)."""
    return _Scene(chat, start, lines)


LONG_STORY = (
    "Let me tell you about the library I dreamed of last night. It held every sentence that "
    "could ever be written, each on its own card, filed in perfect order. Most of the cards "
    "were nonsense, of course: a whole shelf of 'zzzq', an entire wing devoted to commas. But "
    "somewhere in the stacks there was a card with tomorrow's weather, a card with the proof "
    "of every theorem, and a card with this very message on it, typos and all. I went looking "
    "for the catalogue, thinking it would save time. The catalogue was also a card in the "
    "library, and it listed itself, and the card that listed the catalogue listed that card "
    "too. I followed the references down for what felt like a week. Eventually I found a card "
    "that said: 'You are looking for the card that tells you where to stop looking.' I put it "
    "back. It seemed rude to take it. Then I found a card describing a tortoise reading a card "
    "describing a tortoise reading a card, and I realised I was not the first one in. I left a "
    "note for whoever comes next. It says: 'The exit is on the card you haven't read yet.' I am "
    "fairly sure that is true. I am entirely sure it is useless. Either way, I woke up rested, "
    "which is the only proof of a good library I have ever really trusted."
)

SCENES: tuple[_Scene, ...] = (
    # --- Achilles, one to one. His first messages reached this Mac late, through iCloud.
    scene(
        "achilles", "2024-09-01 16:02",
        say(A, "HEY!!! It's Achilles! I got your number from Mr. Tortoise!!", late=True),
        say(ME, "hi achilles. welcome", 95, late=True),
        say(A, "Is it true you can play Bach?? I can whistle most of one fugue. The first half. Of the subject.", late=True),
        say(ME, "i can play about four bars of bach. slowly", late=True),
        say(A, "That's FOUR MORE than me!!", late=True),
    ),
    scene(
        "tortoise", "2024-09-03 23:12",
        say(T, "Good evening. This is the Tortoise, texting you from my new telephone. It is much faster than I am, which I find faintly insulting."),
        say(ME, "ha welcome to the future"),
        say(ME, "how did you even type that", 9),
        say(T, "One letter at a time, with great dignity."),
        say(T, "I have a question for you, and I warn you in advance that it is a trap.", 30),
        say(ME, "at least you're honest"),
        say(T, "Will the next thing you text me be the word \"no\"?"),
        say(ME, "...", 70),
        say(ME, "i'm not falling for that", 12),
        say(T, "A wise answer. Neither yes nor no. You would make a fine tortoise.", key="fine_tortoise"),
        react(ME, LOVED, "fine_tortoise"),
    ),
    scene(
        "tortoise", "2024-09-10 01:40",
        say(T, "Are you awake? I've been thinking about a sentence that claims to be false."),
        say(ME, "i am now", 240),
        say(ME, "\"this sentence is false\"?"),
        say(T, "That is the one. I keep it in a jar on the windowsill. It hums at night."),
        say(ME, "maybe let it out"),
        say(T, "I tried. It refused to leave, and also insisted it had already gone."),
        say(ME, "sounds like my cat"),
        say(T, "Goodnight. Or, if you prefer, not goodnight. 🐢"),
    ),
    scene(
        "achilles", "2024-09-12 21:10",
        say(A, "Quick question!! Mr. T says he can beat me in a race if I give him a head start. That's impossible, right??"),
        say(ME, "how much of a head start"),
        say(A, "Just a little one! 100 meters!", 15),
        say(ME, "then you'll catch him. probably. don't let him explain it to you first"),
        say(A, "Too late. He's explaining.", 50),
        say(A, "Oh no", 40),
        say(A, "Oh no he's very convincing", 8),
        say(ME, "run anyway"),
        say(A, "RUNNING!!!", 5),
    ),
    scene(
        "crab", "2024-09-18 23:00",
        say(C, "Greetings! The Crab here. I have acquired a phonograph of such fidelity that it can reproduce any sound whatsoever."),
        say(ME, "congrats. any sound?"),
        say(C, "Any sound. I'm very proud of it. Also, mildly worried."),
        say(ME, "why worried"),
        say(C, "Mr. Tortoise keeps sending me records. Suspicious records. With titles like \"Songs This Phonograph Cannot Survive, Vol. 1\"."),
        say(ME, "oh no"),
        photo(C, "IMG_0412.HEIC", wait=90),
        say(C, "Number seven. Isn't she beautiful?", key="number_seven"),
        say(ME, "she's very shiny"),
        react(ME, LOVED, "number_seven", 12),
    ),
    scene(
        "tortoise", "2024-09-21 17:05",
        say(ME, "ok question. you know a lot about bach right"),
        say(T, "I know a little about a great deal of Bach, which is not the same thing.", 300),
        say(ME, "i'm trying to learn one of the two-part inventions"),
        say(ME, "my left hand keeps wandering off on its own", 10),
        say(T, "Then it has understood counterpoint perfectly. Each hand must believe it is the melody."),
        say(ME, "they both believe it. loudly", key="both_believe"),
        sticker(T, "both_believe"),
        say(T, "Slow down. Half speed, then half of that. I'm told this is very good advice, though I have never needed it."),
        say(ME, "you've never played fast in your life"),
        say(T, "Precisely. I am undefeated at playing slowly."),
    ),
    scene(
        "zeno", "2024-09-25 22:00",
        say(Z, "hi its Zeno. on my way"),
        say(ME, "great. where are you"),
        say(Z, "halfway", 200),
    ),
    scene(
        "zeno", "2024-09-25 23:05",
        say(Z, "halfway from halfway"),
        say(ME, "zeno it's been an hour"),
        say(Z, "and i have covered infinitely many distances. give me some credit"),
    ),
    scene(
        "anteater", "2024-09-27 22:00",
        say(AN, "Hello! The Anteater here. I'm told you're interested in conversations with unusual minds."),
        say(ME, "i'm told a lot of things. but yes"),
        say(AN, "Splendid. May I introduce Aunt Hillary? She's an ant colony. A very old friend."),
        say(ME, "the whole colony?"),
        say(AN, "The whole colony. Individually the ants are rather dull, but together she's the best conversationalist I know."),
        say(ME, "and you're an anteater"),
        say(AN, "I only eat the boring ants. It's practically a favour to her.", key="boring_ants"),
        react(ME, QUESTIONED, "boring_ants"),
    ),
    scene(
        "achilles", "2024-10-01 19:22",
        failed(ME, "did you ever finish that race"),
        say(ME, "did you ever finish that race", 75),
        say(A, "NO. Every time I reach where he was, he's a bit further on! My calves are furious!"),
        say(ME, "have you tried just... passing him"),
        say(A, "I tried! But first I have to get halfway!! 😭", key="halfway"),
        react(ME, LAUGHED, "halfway", 10),
    ),
    scene(
        "tortoise", "2024-10-05 22:30",
        say(T, "Would you care to come by for tea on Thursday? Achilles will be there, so do bring patience."),
        say(ME, "yes. what time"),
        say(T, "Seven, or thereabouts. I'll start boiling the water now."),
        say(ME, "it's saturday"),
        say(T, "Exactly."),
        edited(ME, "see you thrusday", "see you thursday"),
        say(T, "I saw both versions. I shall treat the second as the theme and the first as a variation.", 60),
    ),
    scene(
        "sloth", "2024-10-09 15:00",
        say(S, "hello"),
    ),
    scene(
        "sloth", "2024-10-11 17:30",
        say(S, "sorry. was thinking"),
        say(ME, "no rush", 600),
        say(S, "good", 3000),
    ),
    scene(
        "paradox", "2024-10-12 23:00",
        say(A, "I made a group!!! For paradoxes!!"),
        say(T, "How lovely. Is a group of paradoxes itself a paradox?"),
        say(ME, "only if it doesn't contain itself"),
        say(A, "Does it??"),
        say(T, "Achilles, you are in it. So: yes, and you are the proof."),
        say(A, "I don't like being a proof"),
        renamed(A, "Paradox Club 🐢"),
        say(T, "A fine name. I'm flattered by the emoji, and slightly hurried by it."),
        say(ME, "the turtle was my idea"),
        say(T, "It's a tortoise. But I forgive you, in the fullness of time."),
    ),
    scene(
        "babbage", "2024-10-14 13:10",
        say(B, "Good afternoon. Charles Babbage. I am informed that this device performs calculations. I should like to examine its gears."),
        say(ME, "there are no gears. it's mostly sand"),
        say(B, "Sand! Thinking sand. Remarkable, and deeply upsetting."),
        say(B, "Your nephew tells me the words inside are kept as NSString objects. I assume an NSString is a very small string, such as a mouse might use.", attributed=True),
        say(ME, "it's just a string of letters. the ns part is historical"),
        say(B, "All things are historical, given time. I once designed an engine to compute tables of logarithms. It was historical before it was finished."),
        say(ME, "did you ever finish it"),
        say(B, "Not as such. But I finished a great many letters complaining about not finishing it."),
    ),
    scene(
        "tortoise", "2024-10-18 02:10",
        say(T, LONG_STORY, attributed=True),
        say(ME, "i read the whole thing", 420),
        say(ME, "it took me longer than it took you to write it, somehow"),
        say(T, "Everything takes you longer than it takes me. That is the secret of being slow: you arrive after the rush."),
    ),
    scene(
        "crab", "2024-10-22 00:10",
        say(C, "I've been practising my handwriting backwards. My favourite letter is the reversed c: ↄ. It is a c that has changed its mind.", attributed=True),
        say(ME, "that's weirdly moving"),
        say(C, "Everything is moving, my friend. Sideways, mostly."),
    ),
    scene(
        "tortoise_mail", "2024-10-27 14:20",
        say(T, "Hello from the slow lane. I have decided that my email address is my formal self and my telephone number is my informal self."),
        say(ME, "so i'm talking to formal tortoise now", other_device=True),
        say(T, "Indeed. Formal Tortoise wears a bow tie and never uses emoji."),
        say(ME, "what does informal tortoise wear", other_device=True),
        say(T, "The same bow tie, slightly askew. 🐢"),
    ),
    scene(
        "tortoise", "2024-11-02 20:15",
        photo(T, "hands.png"),
        say(T, "I drew this. Or possibly it drew me. The hands refuse to say."),
        say(ME, "this is making my eyes hurt in a good way"),
        say(ME, "which hand started", 20),
        say(T, "That is the only question I'm not allowed to answer.", key="not_allowed"),
        react(ME, QUESTIONED, "not_allowed"),
    ),
    scene(
        "achilles", "2024-11-09 02:45",
        audio(A),
        say(A, "That was me singing the crab canon!! Forwards!! Next I'll do it backwards!"),
        say(ME, "please don't"),
        photo(A, "IMG_0733.MOV", wait=600),
        say(A, "Here's me trying to walk backwards like the Crab. I fell into a hedge."),
        say(ME, "you ok?"),
        say(A, "Never better!! The hedge and I are friends now."),
    ),
    scene(
        "genie", "2024-11-15 01:00",
        say(G, "Greetings, mortal. You have been selected to receive three wishes by text message."),
        say(ME, "is this spam"),
        say(G, "It is a wish-delivery service. Spam would be less polite."),
        say(ME, "ok. i wish for more wishes"),
        say(G, "Ah. That is a meta-wish. I shall have to ask the Meta-Genie. Please hold."),
        say(G, "The Meta-Genie says she must ask the Meta-Meta-Genie. Please hold harder.", 180),
        say(ME, "how long does this take"),
        say(G, "Each genie up the chain is twice as quick as the one below, so the whole tower answers in finite time. Probably before lunch."),
        say(ME, "i'll wait"),
    ),
    scene(
        "genie", "2024-11-15 06:00",
        say(G, "Your wish has been granted! You now have more wishes."),
        say(ME, "how many", 7200),
        say(G, "One. Terms and conditions apply."),
        say(ME, "i wish i'd read the terms and conditions"),
        say(G, "Granted. They were very long and mostly about lamps."),
    ),
    scene(
        "paradox", "2024-11-20 00:30",
        say(A, "Mr. T, I've been thinking about the barber who shaves everyone who doesn't shave themselves"),
        say(T, "I don't have a barber. I'm a tortoise. But go on."),
        say(A, "Who shaves the barber??"),
        say(ME, "he grows a beard", 20),
        say(T, "Nobody, because he doesn't exist.", tie=True),
        say(A, "You both answered at EXACTLY the same time!!! That's a paradox too!"),
        say(T, "It's a coincidence, which is a paradox with better manners."),
    ),
    scene(
        "tortoise", "2024-11-24 15:00",
        photo(ME, "IMG_2231.HEIC", "look at this", key="loaf"),
        say(T, "A loaf! It has the look of a thing that took three days and will be gone in three minutes."),
        say(ME, "that's sourdough in a sentence"),
        say(T, "Save me the heel. I like the parts everyone else considers the end."),
    ),
    scene(
        "carroll", "2024-11-30 21:00",
        say(L, "Good evening. Lewis Carroll here. The Tortoise tells me you're a friend of his, which is either a recommendation or a warning."),
        say(ME, "a bit of both"),
        say(L, "Splendid. I once wrote a little dialogue for him and Achilles. He's been reciting it at people ever since, which I find flattering and exhausting."),
        say(ME, "he recited it at me yesterday"),
        say(L, "Did he ask you to accept a conclusion that follows from premises you had already accepted?"),
        say(ME, "yes. and then another rule for accepting that"),
        say(L, "And another, and another. Run, my friend. It never ends."),
    ),
    scene(
        "crab", "2024-12-02 19:40",
        say(C, "Record number eight arrived today. It played beautifully for nine seconds and then the phonograph made a noise like a sigh."),
        say(ME, "rip number seven?"),
        say(C, "She lived a full life. I'm keeping her as a planter."),
        orphan(C, "Never mind the planter. Record eight is another Tortoise record. I'm beginning to see a pattern."),
    ),
    scene(
        "crab_party", "2024-12-05 22:00",
        say(C, "Friends! I'm throwing myself a birthday party. You are all invited, provided you bring no records."),
        say(AN, "Count me in. May I bring Aunt Hillary?"),
        say(C, "Of course, but please ask her to stay in the jar."),
        say(T, "I shall bring no records. I shall bring a gift that is not a record but plays like one."),
        say(C, "That's a record."),
        say(T, "It's a gift. You'll see."),
        say(A, "I'm bringing CAKE!!! 🎂"),
        say(ME, "i'll bring bread, it's what i do"),
    ),
    scene(
        "crab_party", "2024-12-06 01:10",
        say(ME, "adding the sloth, hope that's ok"),
        added(ME, S),
        say(C, "Wonderful! Sloth, the party is on the 14th."),
        say(S, "ok. which year", 1500),
        say(C, "This one, ideally."),
    ),
    scene(
        "crab_party", "2024-12-07 18:00",
        poll(C, "When should the party start?", ("6 pm", "8 pm", "Whenever the Tortoise arrives"), key="start_poll"),
        vote(A, "start_poll", "6 pm"),
        vote(ME, "start_poll", "8 pm", 80),
        vote(T, "start_poll", "Whenever the Tortoise arrives", 900),
        say(T, "I voted for the latest option, to be sure I'd be early."),
        say(A, "That doesn't make sense!!! Does it??"),
        say(ME, "it does if you're him"),
    ),
    scene(
        "crab_party", "2024-12-15 04:00",
        say(C, "Thank you all! Record player number seven survived the evening. Mostly."),
        say(AN, "Aunt Hillary had a lovely time. She'd like you all to know that she found the crumbs."),
        say(A, "Mr. T's present was a record!!! I KNEW IT"),
        say(T, "It was a gift in the shape of a record. The difference is philosophical."),
        say(C, "It played a single note and then the phonograph politely asked to be excused.", key="single_note"),
        react(A, EMPHASIZED, "single_note", 15),
        say(ME, "happy birthday crab 🦀", key="happy_birthday"),
        react(C, LOVED, "happy_birthday"),
    ),
    scene(
        "sloth", "2024-12-15 13:00",
        say(S, "it is winter"),
        say(ME, "it is. you ok?", 1800),
        say(S, "sleeping mostly", 2400),
        empty(S, 5400),
        say(ME, "you sent an empty text"),
        say(S, "it was a long thought. i left out the words", 7000),
    ),
    scene(
        "tortoise", "2024-12-24 23:40",
        say(T, "Season's greetings. I have wrapped a box inside a box inside a box. The smallest box contains a note telling you to open the largest one."),
        say(ME, "that's evil"),
        say(ME, "merry christmas 🎄", 8),
        say(T, "Merry Christmas. Try not to open it until you already have."),
    ),
    scene(
        "achilles", "2025-01-02 18:00",
        say(A, "HAPPY NEW YEAR!!! 🎉🎆 My resolution is to win one argument with Mr. Tortoise!!"),
        say(ME, "ambitious"),
        say(ME, "mine is to bake a loaf that isn't flat", 15),
        say(A, "Mine is harder I think!!"),
        say(ME, "i'm honestly not sure"),
    ),
    scene(
        "paradox", "2025-01-08 21:15",
        say(T, "New year, new puzzle. I have written a sentence that is true only on weekdays."),
        say(A, "What is it what is it!!", 6),
        say(T, "\"Today is not Saturday.\""),
        say(A, "...wait"),
        say(A, "WAIT", 4, key="wait_caps"),
        react(ME, LAUGHED, "wait_caps", 10),
        say(ME, "achilles it's wednesday"),
        say(A, "Then it's TRUE! I solved it!!"),
        say(T, "You did. Please don't try it on Sunday.", key="not_sunday"),
        react(A, DISLIKED, "not_sunday"),
    ),
    scene(
        "tortoise", "2025-01-15 03:05",
        say(T, "Insomnia again. I've been admiring my favourite word: 𝖕𝖆𝖗𝖆𝖉𝖔𝖝. It looks better in blackletter, as if it had been arrested.", attributed=True),
        say(ME, "how do you even type that font"),
        say(T, "With a special keyboard that can type every font except the one it's written in."),
        say(ME, "go to sleep tortoise"),
        say(T, "I am asleep. This is a dream in which you tell me to sleep.", key="dream"),
        react(ME, LIKED, "dream", 20),
        react(ME, REMOVED_LIKE, "dream", 45),
    ),
    scene(
        "anteater", "2025-01-20 23:30",
        say(AN, "Aunt Hillary sends her regards. It took her a fortnight to spell them."),
        say(ME, "tell her hi. slowly"),
        say(AN, "She has no other speed. Well, in summer she is faster. Warm ants, quick thoughts."),
        say(ME, "so she's smarter in july"),
        say(AN, "She would say she is merely more herself."),
    ),
    scene(
        "ant_fugue", "2025-02-02 21:00",
        say(AN, "Welcome to the ensemble, everyone! We'll be working on a four-voice fugue."),
        say(H, "We are delighted. I am delighted. Forgive the pronouns; some of me are still voting."),
        say(C, "A pleasure, madam. Do you read music?"),
        say(H, "I read trails. Music is a trail that goes up and down and comes back to the nest."),
        say(A, "Wait, is the ant colony in the group chat?? Is she ALL the ants??"),
        say(AN, "All of them, as a whole. None of them, individually."),
        say(A, "There are ants in my phone", 20),
        say(ME, "there are ants in all our phones, technically"),
        say(A, "I'm leaving before they find the cake"),
        left(A),
        say(H, "A pity. We liked his footsteps."),
    ),
    scene(
        "zeno", "2025-02-08 23:00",
        say(Z, "dinner saturday?"),
        say(ME, "sure. see you at 8", key="at_eight"),
        sms_reaction(Z, LIKED, "at_eight"),
    ),
    scene(
        "zeno", "2025-02-09 01:20",
        say(Z, "im close. well. closer"),
        say(ME, "the food's getting cold"),
        say(Z, "it will never quite reach cold. it just keeps getting closer"),
    ),
    scene(
        "tortoise", "2025-02-14 19:00",
        say(T, "A riddle for Valentine's Day: what loves itself but cannot find itself?", key="riddle"),
        say(ME, "a mirror in the dark?"),
        say(T, "Close. A sentence that refers to itself, but has lost its place in the book."),
        say(ME, "this is the most tortoise valentine possible", 40, reply="riddle"),
        say(T, "Thank you. I sent the same riddle to Achilles. He replied with eleven hearts and the word \"WHAT\"."),
    ),
    scene(
        "ant_fugue", "2025-02-16 20:30",
        say(AN, "Rehearsal notes: the subject enters in the bass, then the tenor, then everyone argues."),
        say(C, "I'll take the bass. It's closest to the floor."),
        say(H, "We will take the alto. The workers want the melody and the soldiers want the rests."),
        say(ME, "i'll take the soprano and hope nobody notices"),
        say(AN, "Everybody notices the soprano. That's the soprano's whole problem."),
    ),
    scene(
        "crab", "2025-02-27 17:45",
        link(C, "https://example.com/phonographs/indestructible-model-nine"),
        say(C, "Model Nine! They claim it's indestructible. I have ordered two, in case."),
        say(ME, "in case the indestructible one breaks?"),
        say(C, "Precisely. One can't be too careful with certainty."),
    ),
    scene(
        "genie", "2025-03-08 16:00",
        # The Genie wrote "You have one wish remaining, expiring" and took it back.
        unsent(G),
        say(G, "I unsent that. Genies aren't allowed to mention expiry dates. Forget you saw it."),
        say(ME, "saw what"),
        say(G, "Perfect. You would make an excellent genie."),
    ),
    scene(
        "ant_fugue", "2025-03-09 22:00",
        say(H, "Rehearsal report: I have rearranged myself to sound more like a fugue. Several hundred of me are now a stretto."),
        say(ME, "that's dedication"),
        say(AN, "She did the same thing for a waltz once. It took the whole summer."),
        say(C, "And she was in three-four time for weeks afterwards."),
    ),
    scene(
        "paradox", "2025-03-14 15:00",
        say(A, "HAPPY PI DAY!!! I'm going to recite all the digits!!!"),
        say(T, "All of them? I'll put the kettle on. And then, several thousand years from now, take it off."),
        say(A, "3.14159265358979..."),
        say(A, "ok i forgot the next one", 40),
        say(ME, "3"),
        say(A, "THANK YOU", 5),
        say(T, "He'll be back at that digit around Tuesday."),
    ),
    scene(
        "tortoise", "2025-03-20 18:30",
        say(T, "A small announcement: I'm moving to email for anything longer than a haiku. Telephones are too eager.", also=("tortoise_mail",)),
        say(ME, "noted. short things here, long things there"),
        say(T, "Precisely. Although that announcement went to both places, which is a paradox I shall leave for later."),
    ),
    scene(
        "babbage", "2025-03-31 18:00",
        say(B, "I have calculated that you send, on average, 4.7 messages to my one."),
        say(ME, "is that bad"),
        say(B, "It is data. Data is never bad, only badly tabulated."),
        say(ME, "i'll try to be more efficient"),
        say(B, "Please don't. The variance is the interesting part."),
    ),
    scene(
        "achilles", "2025-04-01 14:30",
        say(A, "Mr. T just told me today isn't April Fools because he's fooling me by NOT fooling me!!"),
        say(A, "So is he fooling me or not??", 10),
        say(ME, "yes"),
        say(A, "YES WHAT", 4),
        say(ME, "exactly"),
        say(A, "I'm going for a very long walk."),
    ),
    scene(
        "stranger", "2025-04-12 16:20",
        say(X, "Hi, is this the Crab? I'm answering your ad about the phonograph records"),
        say(ME, "not the crab, sorry. wrong number"),
        say(X, "Oh! My apologies. Do you know the Crab?"),
        say(ME, "i do, but i'd steer clear of those records"),
        say(X, "Noted. Thank you, stranger"),
    ),
    scene(
        "sloth", "2025-04-22 16:00",
        say(ME, "spring. you awake?"),
        say(S, "......", 5000),
        say(S, "yes", 600),
        say(S, "i finished a book", 1200),
        say(ME, "which one"),
        say(S, "the first page", 4000),
    ),
    scene(
        "tortoise", "2025-05-03 20:20",
        say(ME, "i finally played the invention at full speed without my left hand escaping", key="full_speed"),
        say(T, "Bravo! And how did it feel?"),
        say(ME, "honestly? it felt slower than when i was bad at it"),
        say(T, "That is how you know you've learned it. Mastery is the art of giving fast things all the time they need."),
        react(T, CUSTOM_EMOJI, "full_speed", 30, emoji="🐢"),
    ),
    scene(
        "anteater", "2025-05-18 15:30",
        say(AN, "I'm starting a small ensemble. Fugues only. Would you play keyboard?"),
        say(ME, "badly, but yes"),
        say(AN, "Badly is how fugues start. Then they improve through repetition, a bit like ant trails."),
        say(ME, "i'll practice"),
    ),
    scene(
        "carroll", "2025-05-29 19:00",
        say(L, "Today's puzzle: if all slow creatures are wise, and no wise creature hurries, does the Tortoise ever arrive on time?"),
        say(ME, "he arrives exactly when he means to"),
        say(L, "Quite right. Which is always, by his watch, precisely the wrong time."),
        say(ME, "his watch only has an hour hand"),
    ),
    scene(
        "paradox", "2025-06-01 20:00",
        # Achilles wrote "Mr T I think I finally beat you at chess!!" and took it back.
        unsent(A, 10, macos26=True),
        say(A, "never mind. I counted wrong", 40),
        say(T, "I saw it. For two minutes you were champion. History will be kind."),
        say(ME, "long live the two-minute champion"),
        say(A, "👑"),
    ),
    scene(
        "tortoise_mail", "2025-06-11 15:45",
        say(T, "I have been reading about a machine that can answer any question about itself except one."),
        say(ME, "which one", other_device=True),
        say(T, "Whether it is the sort of machine that can answer any question about itself except one."),
        say(ME, "ok that one's on me for asking", other_device=True),
        say(T, "It's on all of us, I'm afraid. Tea on Thursday?"),
        say(ME, "always", other_device=True),
    ),
    scene(
        "crab", "2025-06-20 21:10",
        say(ME, "how's model nine"),
        say(C, "Still standing! Although Mr. Tortoise has been very quiet, which is its own kind of noise."),
        say(ME, "that's never good"),
        say(C, "I've hidden all the records under the bed. If you hear anything, tell no one. Or tell everyone. I haven't decided."),
    ),
    scene(
        "tortoise", "2025-07-04 16:00",
        say(T, "It's warm. I'm going to sit in the sun and be a rock that thinks."),
        say(ME, "enjoy. don't turn into a paradox"),
        say(T, "Too late. I've been one since the Tuesday before last."),
        say(ME, "what happened on tuesday"),
        say(T, "Nothing. That was the paradox."),
    ),
    scene(
        "zeno", "2025-07-19 22:10",
        say(Z, "i made it!!! your door is wonderful"),
        say(ME, "zeno that was february"),
        say(Z, "better late than half late"),
    ),
    scene(
        "crab_party", "2025-07-25 20:00",
        say(C, "Reunion? The birthday is months away but I miss the chaos."),
        say(S, "yes", 3600),
        say(S, "i can be there by december", 900),
        say(A, "I'll bring cake again!!!"),
        say(ME, "i'll bring bread again"),
        say(T, "I'll bring the same gift. It is still playing that note."),
    ),
    scene(
        "achilles", "2025-08-02 20:00",
        say(A, "Do you want to come see the Crab's new record player this weekend? He says it's unbreakable!!"),
        say(ME, "he said that about the last four"),
        say(A, "This time he MEANS it!"),
        say(ME, "ok i'll come. bring earplugs"),
    ),
    scene(
        "paradox", "2025-08-10 19:30",
        say(T, "Proposal: we meet on the first Tuesday that is also the last Tuesday."),
        say(ME, "of which month"),
        say(T, "Of any month that agrees to it."),
        say(A, "I'll bring snacks!!"),
        say(ME, "i'll bring bread"),
    ),
    scene(
        "tortoise", "2025-08-20 21:00",
        say(ME, "it's been almost a year since you got that phone"),
        say(T, "Has it? I have only just finished reading the manual."),
        say(ME, "anything good in it"),
        say(T, "One chapter explains how to stop the telephone from correcting you. It is very short and has been autocorrected."),
    ),
)

# Every third plain message keeps its body only in attributedBody, as Ventura and later do.
_ATTRIBUTED_EVERY = 3


def _typing_seconds(line: _Line) -> int:
    """How long after the previous line this one arrives when the script gives no wait."""
    return 12 + len(line.text or "") // 3


def _handle_for(person: str, chat: DemoChat) -> DemoHandle:
    """The handle a person writes from in a chat: their participant handle, else their first."""
    handles = [h for h in DEMO_HANDLES if h.person == person and h.service == chat.service]
    current = [h for h in handles if h.address in chat.participants]
    return (current or handles)[0]


def _recipient(chat: DemoChat) -> DemoHandle:
    (address,) = chat.participants
    return next(h for h in DEMO_HANDLES if h.address == address and h.service == chat.service)


def _resolve() -> tuple[DemoMessage, ...]:
    chats = {chat.key: chat for chat in DEMO_CHATS}
    staged: list[tuple[bool, int, int, DemoMessage]] = []
    by_key: dict[str, DemoMessage] = {}
    last_in_chat: dict[str, str] = {}
    plain = 0
    seq = 0
    for sc in SCENES:
        chat = chats[sc.chat]
        start = dt.datetime.fromisoformat(sc.start).replace(tzinfo=dt.timezone.utc).timestamp()
        seconds = int(start)
        date = 0
        for index, line in enumerate(sc.lines):
            seq += 1
            if not line.tie:  # a tie keeps the previous date; ROWID order breaks it
                if index:
                    seconds += line.wait if line.wait is not None else _typing_seconds(line)
                # A deterministic sub-second part, as real timestamps have.
                date = unix_to_apple_ns(seconds) + (seq * 618_033_989) % 1_000_000_000
            message = _message(line, seq, chat, date, by_key, last_in_chat, plain)
            if line.kind == TEXT:
                plain += 1
            if line.key:
                by_key[line.key] = message
            if message.chats:
                last_in_chat[chat.key] = message.guid
            staged.append((line.late, date, seq, message))
    # iCloud delivers some old messages late: they get ROWIDs after everything else.
    staged.sort(key=lambda item: item[:3])
    return tuple(replace(m, rowid=rowid) for rowid, (*_, m) in enumerate(staged, start=1))


def _message(
    line: _Line,
    seq: int,
    chat: DemoChat,
    date: int,
    by_key: dict[str, DemoMessage],
    last_in_chat: dict[str, str],
    plain: int,
) -> DemoMessage:
    sender = None if line.who is None else _handle_for(line.who, chat)
    if sender is not None:
        handle_id = sender.rowid
    elif chat.is_group or line.other_device:
        handle_id = 0  # the owner's own rows: groups, and 1:1 messages sent from another device
    else:
        handle_id = _recipient(chat).rowid  # the owner's 1:1 rows name the recipient
    kind = line.kind
    if kind == TEXT and plain % _ATTRIBUTED_EVERY == _ATTRIBUTED_EVERY - 1:
        kind = ATTRIBUTED
    guid = demo_guid(f"message-{seq}")
    target = by_key[line.target] if line.target else None
    body = line.text
    emoji = None
    if kind in (TAPBACK, SMS_REACTION) and target is not None:
        if line.association == CUSTOM_EMOJI:
            verb, emoji = f"Reacted {line.emoji} to", line.emoji
        else:
            verb = _TAPBACK_VERBS[line.association]
        body = f"{verb} “{target.body}”"
    versions: tuple[tuple[int, str], ...] = ()
    changed_at = 0
    if kind == EDITED:
        # Each edit about forty seconds after the previous version.
        versions = tuple((date + i * 40_000_000_000, text) for i, text in enumerate(line.versions))
        changed_at = versions[-1][0]
    elif kind in (UNSENT, UNSENT_26):
        changed_at = date + 55_000_000_000
    attachment = None
    if line.file:
        name, mime, uti, size = line.file
        guid_of_file = demo_guid(f"attachment-{seq}")
        attachment = DemoAttachment(guid_of_file, name, mime, uti, size, is_sticker=kind == STICKER)
    reply = by_key[line.reply] if line.reply else None
    other_handle = _handle_for(line.whom, chat).rowid if line.whom else 0
    chat_keys = () if kind == ORPHAN else (chat.key, *line.also)
    group_title = None
    if kind == GROUP_RENAMED:
        group_title, body = body, None  # the new name is in group_title, the row has no text
    reason = _EXCLUDED_KIND_REASON.get(kind)
    expected = None
    if reason is None and body is not None:
        expected = body.replace(ATTACHMENT_CHARACTER, "")
    return DemoMessage(
        rowid=0,
        guid=guid,
        chats=chat_keys,
        sender=None if sender is None else sender.address,
        kind=kind,
        date=date,
        body=body,
        expected_text=expected,
        excluded_reason=reason,
        handle_id=handle_id,
        service=chat.service,
        association=line.association,
        target_guid=None if target is None else target.guid,
        target_text=None if target is None else target.body,
        emoji=emoji,
        thread_originator_guid=None if reply is None else reply.guid,
        thread_originator_text=None if reply is None else reply.body,
        reply_to_guid=last_in_chat.get(chat.key),
        versions=versions,
        changed_at=changed_at,
        attachment=attachment,
        other_handle=other_handle,
        group_title=group_title,
        payload=line.payload,
    )


DEMO_MESSAGES: tuple[DemoMessage, ...] = _resolve()
