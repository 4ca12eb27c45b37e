"""sae-chat protocol v1 and v1.1 as plain data: framing, parsing and formatting.

This module does no I/O. It knows nothing of sockets, clocks or databases:
bytes go in and come out as frames and commands (``LineFramer``,
``parse_command``); server events go in and come out as bytes (the
``format_*`` functions); and, for the client, server lines come out as
``ServerEvent`` values (``parse_server_line``), and ``Exchange`` pairs
them with the requests they answer. The server (sae_server.py) and the
client (sae_client_curses.py) both build on it, so neither of them frames,
splits or pairs a line on its own. docs/PROTOCOL.md is the contract this
module implements.

Protocol v1.1 adds rooms and private conversations on top of v1 without
changing a byte of what a v1 client sees: its verbs (CAP, JOIN, PART,
TOPIC, RSAY, LIST, ROOMS, NAMES, and HISTORY with a room, ``@name`` or
``*`` in front of the count) opt a session in, and only opted-in sessions
are sent its lines (RMSG, JOINED, PARTED, TOPIC, MEMBERS, ROOM, DELETED).
The default room is v1's room: its messages are MSG lines for everybody.
"""

import collections
import re
import time
from typing import Deque, List, NamedTuple, Optional, Tuple, Union

# A line's content, not counting its "\r\n" or "\n", may be this long.
MAX_LINE_BYTES = 4096
# A server line carries a client's text with more in front (MSG, id,
# timestamp, names): the client reads lines this much longer.
MAX_SERVER_LINE_BYTES = MAX_LINE_BYTES + 128
# Bytes without any newline after which the peer is not speaking the
# protocol at all (a flood or a binary stream): the connection is closed.
MAX_UNTERMINATED_BYTES = 64 * 1024

# Message ids are 64-bit signed integers in both databases (SQLite INTEGER,
# MariaDB BIGINT), so no number on the wire is larger: a bigger one would
# reach the database as an error of ours (ERR 503) instead of the client's.
MAX_NUMBER = 2 ** 63 - 1

NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,32}\Z")
PASSWORD_MIN_BYTES = 8
PASSWORD_MAX_BYTES = 1024

# Protocol v1.1. A room's name is "#" and then what an account's name may
# be; rooms, like accounts, are told apart with A-Z folded to a-z only.
ROOM_RE = re.compile(r"#[A-Za-z0-9_.-]{1,32}\Z")
# The room of v1's SAY, HISTORY <count> and MSG (the server's --default-room).
DEFAULT_ROOM = "#general"
# What CAP can turn on. "rooms" is protocol v1.1; "guests" marks IRC guests
# in USERS, which a client must ask for: a v1 client reads every word of
# USERS as a name it may TELL and see JOIN and LEAVE.
ROOMS_CAPABILITY = "rooms"
GUESTS_CAPABILITY = "guests"
CAPABILITIES = (ROOMS_CAPABILITY, GUESTS_CAPABILITY)
# After a guest's name in USERS (for a session with CAP guests): no name
# holds it, so the name is the rest.
GUEST_MARK = "~"
# HISTORY's first field that asks for everything the account may read
# (all its rooms and private conversations) after an id.
EVERYTHING = "*"
# TOPIC <#room> with this as its text clears the topic.
CLEAR_TOPIC = "-"
# The defaults of the server's room limits; its options set the real ones.
TOPIC_MAX_BYTES = 300
ROOMS_PER_ACCOUNT = 64
ROOMS_MAX = 10000

# C0 controls except tab, DEL, and the C1 controls.
_CONTROL_RE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_SPACES_RE = re.compile(" +")

# Error codes on the wire.
BAD_REQUEST = 400
UNAUTHORIZED = 401
BANNED = 403
# No such account; and (v1.1) a room the account is not in, said the same
# way whether or not the room exists.
NOT_FOUND = 404
# v1.1: the account is in as many rooms as it may be, or the server keeps
# as many rooms as it may (IRC's numeric for "too many channels").
TOO_MANY_ROOMS = 405
NAME_TAKEN = 409
# A line too long; (v1.1) a topic too long.
TOO_LONG = 413
UNKNOWN_VERB = 421
KICKED = 423
SLOW_DOWN = 429
UNAVAILABLE = 503


# --- framing -------------------------------------------------------------

class LineTooLong(NamedTuple):
    """A line over MAX_LINE_BYTES; it is discarded up to its newline."""


class Unterminated(NamedTuple):
    """More than MAX_UNTERMINATED_BYTES without a newline: close the peer."""


Frame = Union[bytes, LineTooLong, Unterminated]


class LineFramer:
    """Turns a byte stream, in chunks split anywhere, into complete lines.

    ``feed`` returns, in stream order, each complete line (bytes without its
    "\\n" and without one "\\r" before it), ``LineTooLong()`` once for each
    line over the limit, and ``Unterminated()`` once when the peer sends far
    too much without a newline (after which the framer swallows everything).
    The result does not depend on how the stream was cut into chunks.
    """

    __slots__ = ("_pending", "_discarding", "_dead", "max_line", "max_unterminated")

    def __init__(self, max_line=MAX_LINE_BYTES, max_unterminated=MAX_UNTERMINATED_BYTES):
        self.max_line = max_line
        self.max_unterminated = max_unterminated
        self._pending = bytearray()
        # Bytes of an overlong line discarded so far, or -1 when not discarding.
        self._discarding = -1
        self._dead = False

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for a newline."""
        return len(self._pending)

    def feed(self, data: bytes) -> List[Frame]:
        if self._dead:
            return []
        frames: List[Frame] = []
        if self._discarding >= 0:
            end = data.find(b"\n")
            if end < 0:
                self._discarding += len(data)
                if self._discarding > self.max_unterminated:
                    self._dead = True
                    frames.append(Unterminated())
                return frames
            if self._discarding + end > self.max_unterminated:
                self._dead = True
                return [Unterminated()]
            data = data[end + 1:]
            self._discarding = -1
        pending = self._pending
        pending += data
        start = 0
        limit = self.max_line
        while True:
            end = pending.find(b"\n", start)
            if end < 0:
                break
            stop = end - 1 if end > start and pending[end - 1] == 13 else end
            if end - start > self.max_unterminated:
                frames += [LineTooLong(), Unterminated()]
                self._dead = True
                pending.clear()
                return frames
            if stop - start > limit:
                frames.append(LineTooLong())
            else:
                frames.append(bytes(pending[start:stop]))
            start = end + 1
        if start:
            del pending[:start]
        # One "\r" may still be stripped when its "\n" arrives, hence the +1.
        if len(pending) > limit + 1:
            frames.append(LineTooLong())
            self._discarding = len(pending)
            pending.clear()
            if self._discarding > self.max_unterminated:
                self._dead = True
                frames.append(Unterminated())
        return frames


# --- client commands -----------------------------------------------------

class Command(NamedTuple):
    """One client line, parsed. ``args`` holds the verb's fields, the last
    one taking the rest of the line; a missing optional field is ""."""
    verb: str
    args: Tuple[str, ...]


class ProtocolError(NamedTuple):
    """A line that cannot be executed: answered with ``ERR code text``."""
    code: int
    text: str


# verb -> (number of fields, number of them that are required)
VERBS = {
    "REGISTER": (2, 2),
    "LOGIN": (2, 2),
    "SAY": (1, 1),
    "TELL": (2, 2),
    "WHO": (0, 0),
    "HISTORY": (2, 1),
    "PING": (1, 0),
    "PONG": (1, 0),
    "QUIT": (1, 0),
    "HELP": (0, 0),
}
# Protocol v1.1's verbs, in the same shape. HISTORY's v1.1 form (a room,
# @name or * before the count) is parsed as the command ROOM_HISTORY, so
# that every command keeps one shape and v1's HISTORY stays as it was.
ROOM_HISTORY = "HISTORY*"
ROOM_VERBS = {
    "CAP": (1, 1),
    "JOIN": (1, 1),
    "PART": (2, 1),
    "TOPIC": (2, 1),
    "RSAY": (2, 2),
    "LIST": (0, 0),
    "ROOMS": (0, 0),
    "NAMES": (1, 1),
    ROOM_HISTORY: (3, 2),
}
# Every command parse_command can return, v1 and v1.1, with its shape.
ALL_VERBS = dict(VERBS, **ROOM_VERBS)
# What may be typed as a verb (ROOM_HISTORY is HISTORY's second form).
_WIRE_VERBS = {verb: shape for verb, shape in ALL_VERBS.items() if verb != ROOM_HISTORY}
# Verbs a connection may use before it has logged in.
PRE_LOGIN_VERBS = frozenset(("REGISTER", "LOGIN", "PING", "PONG", "QUIT", "HELP", "CAP"))
# Verbs the server does not answer: PONG answers the server's PING.
UNANSWERED_VERBS = frozenset(("PONG",))
# Verbs that append a message to the history; they are batched.
MESSAGE_VERBS = frozenset(("SAY", "TELL", "RSAY"))

# Each verb's usage and what it does: HELP's answer, one INFO line each,
# and (usage only) the ERR 400 for a line that misses a field.
USAGE = {
    "REGISTER": ("REGISTER <name> <password>", "create an account (it does not log in)"),
    "LOGIN": ("LOGIN <name> <password>", "log in: the recent history, then who is online"),
    "SAY": ("SAY <text>", "say it to the room"),
    "TELL": ("TELL <name> <text>", "a private message"),
    "WHO": ("WHO", "who is online"),
    "HISTORY": ("HISTORY <count> [before=<id>|after=<id>]", "older or newer room messages"),
    "PING": ("PING [token]", "answered PONG [token]"),
    "PONG": ("PONG [token]", "the answer to the server's PING"),
    "QUIT": ("QUIT [reason]", "leave"),
    "HELP": ("HELP", "this list (REGISTER, LOGIN, PING, PONG, QUIT and HELP work before LOGIN)"),
}
# v1.1's verbs; HELP lists them only to a session that has opted in, so
# that a v1 client's HELP reads as it always did.
ROOM_USAGE = {
    "CAP": ("CAP rooms|guests", "turn on protocol v1.1, rooms and private conversations (works before LOGIN);"
                                " guests: also a ~ after each IRC guest's name in USERS"),
    "JOIN": ("JOIN <#room>", "join a room (it is made if it does not exist)"),
    "PART": ("PART <#room> [reason]", "leave a room"),
    "TOPIC": ("TOPIC <#room> [text|-]", "a room's topic: show it, set it, or (-) clear it"),
    "RSAY": ("RSAY <#room> <text>", "say it to a room"),
    "LIST": ("LIST", "every room: name, members online, members, topic"),
    "ROOMS": ("ROOMS", "the rooms you are in"),
    "NAMES": ("NAMES <#room>", "who is in a room"),
    ROOM_HISTORY: ("HISTORY <#room|@name|*> <count> [before=<id>|after=<id>]",
                   "a room's or a private conversation's messages; * with after=<id>: all you missed"),
}
_MISSING = {verb: "usage: " + USAGE[verb][0] for verb in ("REGISTER", "LOGIN", "SAY", "TELL", "HISTORY")}
_MISSING.update((verb, "usage: " + usage) for verb, (usage, _) in ROOM_USAGE.items())
_ROOM_RULE = "room names are # and 1 to 32 characters of A-Z a-z 0-9 _ . -"


def split_fields(rest: str, count: int) -> List[str]:
    """Split ``rest`` into at most ``count`` fields separated by runs of
    spaces, the last field keeping the rest of the line as it is."""
    fields: List[str] = []
    while rest and len(fields) < count - 1:
        head, sep, rest = rest.partition(" ")
        fields.append(head)
        rest = rest.lstrip(" ")
    if rest and count:
        fields.append(rest)
    return fields


def parse_command(raw: bytes) -> Union[Command, ProtocolError, None]:
    """A framed client line as a Command, a ProtocolError, or None for an
    empty line (which is ignored). Only syntax is checked here; whether the
    connection may use the verb is the server's business."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        return ProtocolError(BAD_REQUEST, "line is not valid UTF-8")
    if _CONTROL_RE.search(line):
        return ProtocolError(BAD_REQUEST, "control characters are not allowed")
    if line[:4] == "SAY ":
        # Most lines a server reads, and the cheapest to tell apart: the
        # same Command as below, with half the work. A blank one is left to
        # the general case, which refuses it.
        text = line[4:].lstrip(" ")
        if text.strip(" \t"):
            return Command("SAY", (text,))
    line = line.lstrip(" ")
    if not line.strip(" \t"):
        return None
    verb, _, rest = line.partition(" ")
    # Upper-cased in ASCII only: str.upper() turns look-alikes into ASCII
    # letters (dotless i into I, long s into S), and "logın" is no LOGIN.
    if verb.isascii():
        verb = verb.upper()
    rest = rest.lstrip(" ")
    if verb == "HISTORY" and rest[:1] in ("#", "@", EVERYTHING):
        verb = ROOM_HISTORY  # v1.1: HISTORY <#room|@name|*> <count> [bound]
        shape = ROOM_VERBS[verb]
    else:
        shape = _WIRE_VERBS.get(verb)
    if shape is None:
        return ProtocolError(UNKNOWN_VERB, "unknown command %s" % verb[:32])
    nfields, required = shape
    if nfields == 1:  # SAY and the like, most lines: the rest is the field
        fields = [rest] if rest.strip(" \t") else []
    else:
        fields = split_fields(rest, nfields)
    if len(fields) < required or (
            verb in MESSAGE_VERBS and not fields[-1].strip(" \t")):
        return ProtocolError(BAD_REQUEST, _MISSING[verb])
    while len(fields) < nfields:
        fields.append("")
    if verb in ROOM_VERBS:
        return _check_room_command(verb, fields)
    return Command(verb, tuple(fields))


def _check_room_command(verb: str, fields: List[str]) -> Union[Command, ProtocolError]:
    """A v1.1 command whose fields are all there, with their syntax checked:
    room names, counts and bounds are refused here (ERR 400 usage), before
    LOGIN is asked for, so that the server only checks what needs its state.
    Trailing spaces and tabs, which nobody means, are dropped from a room
    name, a capability and a topic; a message keeps its text as it is."""
    if verb == "CAP":
        wanted = fields[0].strip(" \t")
        capability = wanted.lower() if wanted.isascii() else wanted
        if capability not in CAPABILITIES:
            return ProtocolError(BAD_REQUEST, "unknown capability %s (this server knows: %s)" % (
                wanted[:32], " ".join(CAPABILITIES)))
        return Command(verb, (capability,))
    if verb == ROOM_HISTORY:
        return _check_room_history(fields)
    if verb in ("LIST", "ROOMS"):
        return Command(verb, ())
    room = fields[0].rstrip(" \t")
    problem = check_room(room)
    if problem:
        return ProtocolError(BAD_REQUEST, "%s (%s)" % (_MISSING[verb], problem))
    if verb == "TOPIC":
        return Command(verb, (room, fields[1].rstrip(" \t")))
    return Command(verb, (room,) + tuple(fields[1:]))


def _check_room_history(fields: List[str]) -> Union[Command, ProtocolError]:
    target, count, where = fields[0], fields[1], fields[2].strip(" ")
    usage = _MISSING[ROOM_HISTORY]
    if target[:1] == "#":
        problem = check_room(target)
    elif target[:1] == "@":
        problem = check_name(target[1:])
    else:
        problem = None if target == EVERYTHING else usage
    if problem:
        return ProtocolError(BAD_REQUEST, usage if problem == usage else "%s (%s)" % (usage, problem))
    query = parse_history(count, where, MAX_NUMBER, usage)
    if isinstance(query, ProtocolError):
        return query
    if target == EVERYTHING and query.after is None:
        return ProtocolError(BAD_REQUEST, "%s (* needs after=<id>)" % usage)
    return Command(ROOM_HISTORY, (target, count, where))


def check_name(name: str) -> Optional[str]:
    """Why ``name`` cannot be an account name, or None if it can."""
    if NAME_RE.match(name):
        return None
    return "names are 1 to 32 characters of A-Z a-z 0-9 _ . -"


def check_password(password: str) -> Optional[str]:
    """Why ``password`` cannot be a password, or None if it can."""
    size = len(password.encode("utf-8"))
    if PASSWORD_MIN_BYTES <= size <= PASSWORD_MAX_BYTES:
        return None
    return "passwords are %d to %d bytes" % (PASSWORD_MIN_BYTES, PASSWORD_MAX_BYTES)


def check_room(room: str) -> Optional[str]:
    """Why ``room`` cannot be a room's name, or None if it can."""
    if ROOM_RE.match(room):
        return None
    return _ROOM_RULE


# A-Z to a-z and nothing else, as account names are compared (db.name_key):
# str.lower() would fold look-alikes such as the Kelvin sign into ASCII.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def room_key(room: str) -> str:
    """The form in which room names are compared: #Homework is #homework."""
    # Only A-Z is folded; on ASCII text str.lower() does just that, ten
    # times faster than translate(), and every line that names a room or
    # a nick comes here.
    return room.lower() if room.isascii() else room.translate(_ASCII_LOWER)


def check_topic(topic: str, max_bytes: int = TOPIC_MAX_BYTES) -> Optional[str]:
    """Why ``topic`` cannot be a room's topic, or None if it can."""
    if len(topic.encode("utf-8")) > max_bytes:
        return "topic too long (max %d bytes)" % max_bytes
    return check_text(topic)


def check_text(text: str) -> Optional[str]:
    """Why ``text`` cannot be sent inside a line, or None if it can."""
    if _CONTROL_RE.search(text):
        return "control characters are not allowed"
    return None


class HistoryQuery(NamedTuple):
    count: int
    before: Optional[int] = None
    after: Optional[int] = None


def whole_number(field: str, low: int = 0, high: int = MAX_NUMBER) -> Optional[int]:
    """``field`` as a whole number from ``low`` to ``high``, or None if it
    is not one (ASCII digits only: "²" is a digit to str.isdigit)."""
    if not field.isascii() or not field.isdigit():
        return None
    digits = field.lstrip("0") or "0"
    # Checked before int(): thousands of digits are refused, not converted.
    if len(digits) > len(str(high)) or not low <= int(digits) <= high:
        return None
    return int(digits)


def parse_history(count: str, where: str, cap: int,
                  usage_text: str = _MISSING["HISTORY"]) -> Union[HistoryQuery, ProtocolError]:
    """The fields of HISTORY as a query; ``count`` is capped at ``cap``.
    For v1.1's form, give it the count and bound of a ROOM_HISTORY command
    (its target is ``history_target(args[0])``)."""
    usage = ProtocolError(BAD_REQUEST, usage_text)
    limit = whole_number(count)
    if limit is None:
        return usage
    limit = min(limit, cap)
    if not where:
        return HistoryQuery(limit)
    key, _, value = where.strip(" ").partition("=")
    bound = whole_number(value)
    if key not in ("before", "after") or bound is None:
        return usage
    if key == "before":
        return HistoryQuery(limit, before=bound)
    return HistoryQuery(limit, after=bound)


def not_in_room(room: str) -> ProtocolError:
    """The refusal of a request about a room the account is not in: the
    same words whether or not the room exists."""
    return ProtocolError(NOT_FOUND, "no such room %s, or you are not in it" % room)


def too_many_rooms(limit: int, on_server: bool = False) -> ProtocolError:
    """The refusal of a JOIN beyond the account's or the server's limit."""
    if on_server:
        return ProtocolError(TOO_MANY_ROOMS, "too many rooms: the server keeps at most %d" % limit)
    return ProtocolError(TOO_MANY_ROOMS, "too many rooms: an account may be in at most %d" % limit)


class HistoryTarget(NamedTuple):
    """Whose history a v1.1 HISTORY asks for: ``kind`` is "room" (``name``
    a room), "peer" (``name`` an account: the private conversation with
    it) or "everything" (all the account's rooms and conversations)."""
    kind: str
    name: str = ""


def history_target(field: str) -> HistoryTarget:
    """The first field of a ROOM_HISTORY command (already checked by
    parse_command) as a HistoryTarget."""
    if field.startswith("#"):
        return HistoryTarget("room", field)
    if field.startswith("@"):
        return HistoryTarget("peer", field[1:])
    return HistoryTarget("everything")


# --- actions -------------------------------------------------------------
# A message (SAY or TELL) whose text starts with "/me " is an action, said
# in the third person: clients show "/me waves" from alice as "* alice waves".
# It is stored and delivered as any other message, so a client that knows
# nothing of actions still shows something readable, and an IRC client's
# CTCP ACTION can travel the same way.

ACTION_PREFIX = "/me "


def action_text(text: str) -> Optional[str]:
    """What an action says the sender does, or None if ``text`` is no action."""
    if text.startswith(ACTION_PREFIX) and text[len(ACTION_PREFIX):].strip(" "):
        return text[len(ACTION_PREFIX):]
    return None


# --- server lines --------------------------------------------------------
# Each returns one encoded line. Callers that send the same line to many
# sessions encode it once and hand the same bytes to all of them.

def _line(*fields) -> bytes:
    return (" ".join(str(f) for f in fields if f != "") + "\n").encode("utf-8")


def format_msg(msg_id: int, ts: str, sender: str, text: str) -> bytes:
    return ("MSG %d %s %s %s\n" % (msg_id, ts, sender, text)).encode("utf-8")


def format_priv(msg_id: int, ts: str, sender: str, recipient: str, text: str) -> bytes:
    return ("PRIV %d %s %s %s %s\n" % (msg_id, ts, sender, recipient, text)).encode("utf-8")


def format_ok(what: str, detail="") -> bytes:
    return _line("OK", what, detail)


def format_err(code: int, text: str) -> bytes:
    return _line("ERR", code, text)


def format_users(names, guests=()) -> bytes:
    """USERS: the names, sorted; those whose room_key is in ``guests`` (for
    a session with CAP guests) with GUEST_MARK after them."""
    names = sorted(names, key=str.lower)
    if guests:
        names = [name + GUEST_MARK if room_key(name) in guests else name for name in names]
    return _line("USERS", len(names), " ".join(names))


def format_join(name: str) -> bytes:
    return _line("JOIN", name)


def format_leave(name: str, reason: str) -> bytes:
    return _line("LEAVE", name, reason)


def format_info(text: str) -> bytes:
    return _line("INFO", text)


def format_bye(reason: str) -> bytes:
    return _line("BYE", reason)


def format_kicked(seconds: int, reason: str) -> bytes:
    return _line("KICKED", seconds, reason)


def format_banned(reason: str) -> bytes:
    return _line("BANNED", reason)


def format_history(messages) -> List[bytes]:
    """A history's lines: a MSG per room message, oldest first, then OK HISTORY n."""
    lines = [format_msg(m.id, m.created_at, m.sender, m.body) for m in messages]
    lines.append(format_ok("HISTORY", str(len(lines))))
    return lines


def format_help(rooms: bool = False) -> List[bytes]:
    """HELP's answer: an INFO line per verb, then OK HELP. v1.1's verbs are
    listed only to a session that has opted in (``rooms``)."""
    lines = [format_info("%s: %s" % USAGE[verb]) for verb in VERBS]
    if rooms:
        lines += [format_info("%s: %s" % ROOM_USAGE[verb]) for verb in ROOM_VERBS]
    return lines + [format_ok("HELP")]


# --- protocol v1.1 server lines --------------------------------------------
# Sent only to sessions that opted in (CAP rooms, or any v1.1 verb). A room
# is written as it was spelled when it was made (#Homework), however the
# request spelled it.

def format_rmsg(msg_id: int, ts: str, room: str, sender: str, text: str) -> bytes:
    """A message in a room other than the default one (whose are MSG lines)."""
    return ("RMSG %d %s %s %s %s\n" % (msg_id, ts, room, sender, text)).encode("utf-8")


def format_joined(room: str, name: str) -> bytes:
    return _line("JOINED", room, name)


def format_parted(room: str, name: str, reason: str = "") -> bytes:
    return _line("PARTED", room, name, reason)


def format_topic(room: str, setter: str = "", ts: str = "", text: str = "") -> bytes:
    """A room's topic, set (or cleared, with no text) by ``setter`` at
    ``ts``; ``TOPIC <#room>`` alone says it never had one."""
    return _line("TOPIC", room, setter, ts, text)


def format_deleted(room: str, reason: str = "") -> bytes:
    return _line("DELETED", room, reason)


def format_room(room: str, online: int, members: int, topic: str = "") -> bytes:
    """A room as LIST and ROOMS show it: members online, members, topic."""
    return _line("ROOM", room, online, members, topic)


# A MEMBERS line's names are cut to keep it within a client line: 4096
# bytes hold the room, the count and over a hundred names of 32 bytes.
_MEMBERS_BYTES = MAX_LINE_BYTES


def format_members(room: str, names) -> List[bytes]:
    """``MEMBERS <#room> <count> <name> ...`` lines: every member once,
    sorted case-insensitively. ``count`` is the room's whole count; a room
    with more names than one line holds gets several MEMBERS lines, each
    with the same count and the next names, and the answer's OK ends them."""
    names = sorted(names, key=room_key)
    head = "MEMBERS %s %d" % (room, len(names))
    lines, chunk, size = [], [], len(head)
    for name in names:
        if chunk and size + 1 + len(name) > _MEMBERS_BYTES:
            lines.append(_line(head, " ".join(chunk)))
            chunk, size = [], len(head)
        chunk.append(name)
        size += 1 + len(name)
    lines.append(_line(head, " ".join(chunk)))
    return lines


def format_cap(default_room: str = DEFAULT_ROOM, capability: str = ROOMS_CAPABILITY) -> bytes:
    """CAP's answer: v1.1 is on, and which room's messages are MSG lines;
    or ``OK CAP guests``."""
    if capability == GUESTS_CAPABILITY:
        return format_ok("CAP", GUESTS_CAPABILITY)
    return format_ok("CAP", "%s %s" % (ROOMS_CAPABILITY, default_room))


def format_message(message, default_room: str = DEFAULT_ROOM) -> bytes:
    """A stored message as the line a v1.1 session gets: PRIV if it has a
    recipient, MSG in the default room (or with no room: a v1 store), RMSG
    in any other. ``message`` has id, created_at, sender, recipient, body
    and, from a store that keeps rooms, room."""
    if message.recipient is not None:
        return format_priv(message.id, message.created_at, message.sender, message.recipient, message.body)
    room = getattr(message, "room", None)
    if room is None or room_key(room) == room_key(default_room):
        return format_msg(message.id, message.created_at, message.sender, message.body)
    return format_rmsg(message.id, message.created_at, room, message.sender, message.body)


def format_history_of(messages, default_room: str = DEFAULT_ROOM) -> List[bytes]:
    """A v1.1 HISTORY's answer: each message as format_message says, oldest
    first, then OK HISTORY n."""
    lines = [format_message(m, default_room) for m in messages]
    lines.append(format_ok("HISTORY", str(len(lines))))
    return lines


def format_ping(token: str) -> bytes:
    return _line("PING", token)


def format_pong(token: str) -> bytes:
    return _line("PONG", token)


def format_timestamp(epoch_ms: int) -> str:
    """Milliseconds since the epoch as ISO 8601 UTC: 2026-11-24T13:05:01.123Z."""
    seconds, millis = divmod(epoch_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + ".%03dZ" % millis


# --- what the client hears -----------------------------------------------

class ServerEvent(NamedTuple):
    """One server line as the client sees it. ``kind`` is the verb
    (MSG, PRIV, OK, ERR, ...); the other fields are filled as it has them."""
    kind: str
    id: int = 0
    ts: str = ""
    name: str = ""
    to: str = ""
    text: str = ""
    code: int = 0
    count: int = 0
    names: Tuple[str, ...] = ()
    room: str = ""      # v1.1: the room a line is about
    online: int = 0     # v1.1: a ROOM line's members online (``count``: all its members)


def _padded(rest: str, count: int) -> List[str]:
    fields = split_fields(rest, count)
    return fields + [""] * (count - len(fields))


def parse_server_line(raw: bytes) -> Optional[ServerEvent]:
    """A framed server line as a ServerEvent, or None if it makes no sense
    (a client ignores what it does not understand)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    kind, _, rest = line.partition(" ")
    try:
        if kind == "MSG":
            msg_id, ts, name, text = _padded(rest, 4)
            return ServerEvent(kind, id=int(msg_id), ts=ts, name=name, text=text)
        if kind == "PRIV":
            msg_id, ts, name, to, text = _padded(rest, 5)
            return ServerEvent(kind, id=int(msg_id), ts=ts, name=name, to=to, text=text)
        if kind == "OK":
            what, _, detail = rest.partition(" ")
            count = int(detail) if what in _COUNTED_OK and detail.isdigit() else 0
            # OK JOIN/PART/TOPIC/NAMES <#room>; OK CAP rooms <#default room>.
            room = detail.rpartition(" ")[2] if what in _ROOM_OK else ""
            room = room if room.startswith("#") else ""
            return ServerEvent(kind, name=what, text=detail, count=count, room=room)
        if kind == "ERR":
            code, _, text = rest.partition(" ")
            return ServerEvent(kind, code=int(code), text=text)
        if kind == "USERS":
            count, _, names = rest.partition(" ")
            return ServerEvent(kind, count=int(count), names=tuple(names.split()))
        if kind == "JOIN":
            return ServerEvent(kind, name=rest)
        if kind == "LEAVE":
            name, _, reason = rest.partition(" ")
            return ServerEvent(kind, name=name, text=reason)
        if kind == "KICKED":
            seconds, _, reason = rest.partition(" ")
            return ServerEvent(kind, count=int(seconds), text=reason)
        if kind in ("INFO", "BYE", "BANNED", "PING", "PONG"):
            return ServerEvent(kind, text=rest)
        if kind in _ROOM_LINES:
            return _parse_room_line(kind, rest)
    except ValueError:
        return None
    return None


_COUNTED_OK = frozenset(("HISTORY", "LIST", "ROOMS"))
_ROOM_OK = frozenset(("JOIN", "PART", "TOPIC", "NAMES", "CAP"))
_ROOM_LINES = frozenset(("RMSG", "JOINED", "PARTED", "TOPIC", "MEMBERS", "ROOM", "DELETED"))


def _parse_room_line(kind: str, rest: str) -> Optional[ServerEvent]:
    """A v1.1 line (every one of them names its room first) as a ServerEvent."""
    if kind == "RMSG":
        msg_id, ts, room, name, text = _padded(rest, 5)
        return ServerEvent(kind, id=int(msg_id), ts=ts, room=room, name=name, text=text)
    if kind in ("JOINED", "PARTED"):
        room, name, reason = _padded(rest, 3)
        return ServerEvent(kind, room=room, name=name, text=reason)
    if kind == "TOPIC":
        room, setter, ts, text = _padded(rest, 4)
        return ServerEvent(kind, room=room, name=setter, ts=ts, text=text)
    if kind == "MEMBERS":
        room, count, names = _padded(rest, 3)
        return ServerEvent(kind, room=room, count=int(count), names=tuple(names.split()))
    if kind == "ROOM":
        room, online, members, topic = _padded(rest, 4)
        return ServerEvent(kind, room=room, online=int(online), count=int(members), text=topic)
    room, reason = _padded(rest, 2)  # DELETED
    return ServerEvent(kind, room=room, text=reason)


# --- what the client says ------------------------------------------------

def format_command(verb: str, *fields: str) -> bytes:
    """A client line. The last field may hold spaces; none may hold a newline."""
    for field in fields:
        if "\n" in field or "\r" in field:
            raise ValueError("a field cannot hold a line break")
    return _line(verb, *fields)


# --- which line answers which request ------------------------------------
# The server answers each connection's requests in the order they were sent,
# each with exactly one answer of one or more lines, and never puts another
# line inside a multi-line answer. The answers, by request:
#
#   REGISTER  OK REGISTER, or ERR
#   LOGIN     OK LOGIN, the login history (MSG ..., OK HISTORY n), USERS; or ERR
#   SAY       the MSG of the requester's own account with the same text; or ERR
#   TELL      the PRIV from the requester to that name with the same text; or ERR
#   WHO       USERS, or ERR
#   HISTORY   MSG ..., OK HISTORY n; or ERR
#   PING      PONG
#   QUIT      BYE
#   HELP      INFO ..., OK HELP
#   PONG      nothing (it answers the server's PING)
# and in protocol v1.1:
#   CAP            OK CAP rooms <#default room>, or ERR
#   JOIN #r        TOPIC #r, MEMBERS #r ..., OK JOIN #r; or ERR
#   PART #r        OK PART #r, or ERR
#   TOPIC #r       TOPIC #r, OK TOPIC #r; or ERR
#   RSAY #r        the RMSG of the requester's own account in #r with the same
#                  text (MSG if #r is the default room); or ERR
#   LIST, ROOMS    ROOM ..., OK LIST n / OK ROOMS n; or ERR
#   NAMES #r       MEMBERS #r ..., OK NAMES #r; or ERR
#   HISTORY #r|@name|* ...
#                  the room's MSG or RMSG lines, the conversation's PRIV lines,
#                  or all of these, then OK HISTORY n; or ERR
#
# Every other line is unsolicited: PING, INFO, JOIN, LEAVE, KICKED, BANNED,
# BYE when no QUIT waits, other people's MSG, PRIV and RMSG, JOINED, PARTED,
# DELETED, a TOPIC someone set, and ERR when nothing waits (ERR 503 too many
# connections, before any request).

# Requests of v1.1 whose first field is the room they are about.
_ROOM_REQUESTS = frozenset(("JOIN", "PART", "TOPIC", "RSAY", "NAMES"))


class Request(NamedTuple):
    """A line a client sent that the server will answer. ``tag`` is the
    client's own note of why it asked; the server never sees it."""
    verb: str
    fields: Tuple[str, ...] = ()
    tag: str = ""

    @property
    def text(self) -> str:
        """The message text of a SAY, TELL or RSAY."""
        return self.fields[-1] if self.fields else ""

    @property
    def to(self) -> str:
        """The recipient of a TELL."""
        return self.fields[0] if self.verb == "TELL" else ""

    @property
    def room(self) -> str:
        """The room a v1.1 request is about, or "" (HISTORY: its #room)."""
        if self.fields and (self.verb in _ROOM_REQUESTS
                            or (self.verb == "HISTORY" and self.fields[0].startswith("#"))):
            return self.fields[0]
        return ""


class Answer(NamedTuple):
    """What a server line is to the client: part of the answer to
    ``request`` (None: unsolicited), and whether it ends that answer."""
    request: Optional[Request]
    complete: bool = False


UNSOLICITED = Answer(None)
# Where an answer of several lines is: waiting for its first line, in the
# MSG lines of a history, or (after LOGIN's history) waiting for USERS.
_FIRST, _HISTORY, _USERS = range(3)


class Exchange:
    """The client's half of the pairing, without I/O: ``request`` makes the
    line to send and remembers what will answer it; ``hear`` says, for each
    server line in turn, which request it answers. Requests are answered in
    order, so only the oldest one can be answered by the next line."""

    def __init__(self):
        self.waiting: Deque[Request] = collections.deque()
        self.account = ""  # the name OK LOGIN gave: whose MSG answers our SAY
        # The room whose messages are MSG lines, as OK CAP names it ("" until
        # then: an RSAY is then taken to be answered by a MSG as well).
        self.default_room = ""
        self._stage = _FIRST

    def __len__(self) -> int:
        return len(self.waiting)

    def request(self, verb: str, *fields: str, tag: str = "") -> bytes:
        """The line for ``verb``; it is expected to be answered unless the
        protocol says that nothing answers it (PONG)."""
        line = format_command(verb, *fields)
        if verb not in UNANSWERED_VERBS:
            self.waiting.append(Request(verb, tuple(fields), tag))
        return line

    def clear(self) -> List[Request]:
        """Forget every request (the connection is gone); returns them."""
        lost, self.waiting = list(self.waiting), collections.deque()
        self._stage = _FIRST
        return lost

    def hear(self, event: "ServerEvent") -> Answer:
        if not self.waiting:
            return UNSOLICITED
        head = self.waiting[0]
        verb, kind, stage = head.verb, event.kind, self._stage
        if stage == _FIRST and kind == "ERR":
            return self._done()
        if verb == "LOGIN":
            if stage == _FIRST and kind == "OK" and event.name == "LOGIN":
                self.account = event.text
                self._stage = _HISTORY
                return Answer(head)
            if stage == _HISTORY and kind == "OK" and event.name == "HISTORY":
                self._stage = _USERS
                return Answer(head)
            if stage == _USERS and kind == "USERS":
                return self._done()
        elif verb == "SAY":
            if kind == "MSG" and self._said(head, event):
                return self._done()
        elif verb == "TELL":
            if kind == "PRIV" and event.to.lower() == head.to.lower() and self._said(head, event):
                return self._done()
        elif verb == "RSAY":
            if self._said(head, event) and (
                    (kind == "RMSG" and room_key(event.room) == room_key(head.room))
                    or (kind == "MSG" and self._is_default(head.room))):
                return self._done()
        elif kind == "OK" and event.name in _ENDED_BY_OK.get(verb, ()):
            if verb == "CAP" and event.room:
                self.default_room = event.room
            return self._done()
        elif (verb, kind) in _ONE_LINE_ANSWERS:
            return self._done()
        if (stage == _HISTORY and kind == "MSG") or self._inside(head, event):
            return Answer(head)
        return UNSOLICITED

    def _said(self, head: Request, event: "ServerEvent") -> bool:
        """Whether a message line is our account's with the text we sent."""
        return event.name == self.account and event.text.strip(" ") == head.text.strip(" ")

    def _is_default(self, room: str) -> bool:
        return not self.default_room or room_key(room) == room_key(self.default_room)

    def _inside(self, head: Request, event: "ServerEvent") -> bool:
        """Whether ``event`` is one of the lines before the OK that ends
        ``head``'s answer (a history's messages, HELP's INFO lines, ...)."""
        verb, kind = head.verb, event.kind
        if verb == "HELP":
            return kind == "INFO"
        if verb in ("LIST", "ROOMS"):
            return kind == "ROOM"
        if verb in ("JOIN", "TOPIC", "NAMES"):
            return (kind in _ROOM_ANSWER_LINES[verb]
                    and room_key(event.room) == room_key(head.room))
        if verb != "HISTORY" or kind not in ("MSG", "RMSG", "PRIV"):
            return False
        target = head.fields[0] if head.fields else ""
        if target == EVERYTHING:
            return True
        if target.startswith("#"):
            if kind == "RMSG":
                return room_key(event.room) == room_key(target)
            return kind == "MSG" and self._is_default(target)
        if target.startswith("@"):
            peer, me = room_key(target[1:]), room_key(self.account)
            return kind == "PRIV" and {room_key(event.name), room_key(event.to)} == {peer, me}
        return kind == "MSG"  # v1: HISTORY <count>

    def _done(self) -> Answer:
        self._stage = _FIRST
        return Answer(self.waiting.popleft(), True)


# Answers that end at one line (HELP's INFO lines are taken above).
_ONE_LINE_ANSWERS = frozenset((("WHO", "USERS"), ("PING", "PONG"), ("QUIT", "BYE")))
# Answers that end at an OK <verb>, whatever came before it.
_ENDED_BY_OK = {verb: (verb,) for verb in (
    "REGISTER", "HELP", "HISTORY", "CAP", "JOIN", "PART", "TOPIC", "LIST", "ROOMS", "NAMES")}
# The lines a v1.1 answer about one room holds before its OK.
_ROOM_ANSWER_LINES = {"JOIN": ("TOPIC", "MEMBERS"), "TOPIC": ("TOPIC",), "NAMES": ("MEMBERS",)}
