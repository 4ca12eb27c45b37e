"""sae-chat protocol v1 as plain data: framing, parsing and formatting.

This module does no I/O. It knows nothing of sockets, clocks or databases:
bytes go in and come out as frames and commands (``LineFramer``,
``parse_command``); server events go in and come out as bytes (the
``format_*`` functions); and, for the client, server lines come out as
``ServerEvent`` values (``parse_server_line``), and ``Exchange`` pairs
them with the requests they answer. The server (sae_server.py) and the
client (sae_client_curses.py) both build on it, so neither of them frames,
splits or pairs a line on its own. docs/PROTOCOL.md is the contract this
module implements.
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

# C0 controls except tab, DEL, and the C1 controls.
_CONTROL_RE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_SPACES_RE = re.compile(" +")

# Error codes on the wire.
BAD_REQUEST = 400
UNAUTHORIZED = 401
BANNED = 403
NOT_FOUND = 404
NAME_TAKEN = 409
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
# Verbs a connection may use before it has logged in.
PRE_LOGIN_VERBS = frozenset(("REGISTER", "LOGIN", "PING", "PONG", "QUIT", "HELP"))
# Verbs the server does not answer: PONG answers the server's PING.
UNANSWERED_VERBS = frozenset(("PONG",))
# Verbs that append a message to the history; they are batched.
MESSAGE_VERBS = frozenset(("SAY", "TELL"))

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
_MISSING = {verb: "usage: " + USAGE[verb][0] for verb in ("REGISTER", "LOGIN", "SAY", "TELL", "HISTORY")}


def decode_line(raw: bytes) -> Union[str, ProtocolError]:
    """A framed line as text, or the error that rejects it."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        return ProtocolError(BAD_REQUEST, "line is not valid UTF-8")
    if _CONTROL_RE.search(line):
        return ProtocolError(BAD_REQUEST, "control characters are not allowed")
    return line


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
    line = decode_line(raw)
    if isinstance(line, ProtocolError):
        return line
    line = line.lstrip(" ")
    if not line.strip(" \t"):
        return None
    verb, _, rest = line.partition(" ")
    # Upper-cased in ASCII only: str.upper() turns look-alikes into ASCII
    # letters (dotless i into I, long s into S), and "logın" is no LOGIN.
    if verb.isascii():
        verb = verb.upper()
    shape = VERBS.get(verb)
    if shape is None:
        return ProtocolError(UNKNOWN_VERB, "unknown command %s" % verb[:32])
    nfields, required = shape
    fields = split_fields(rest.lstrip(" "), nfields)
    if nfields == 1 and fields and not fields[0].strip(" \t"):
        fields = []
    if len(fields) < required or (
            verb in MESSAGE_VERBS and not fields[-1].strip(" \t")):
        return ProtocolError(BAD_REQUEST, _MISSING[verb])
    while len(fields) < nfields:
        fields.append("")
    return Command(verb, tuple(fields))


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


def parse_history(count: str, where: str, cap: int) -> Union[HistoryQuery, ProtocolError]:
    """The fields of HISTORY as a query; ``count`` is capped at ``cap``."""
    usage = ProtocolError(BAD_REQUEST, _MISSING["HISTORY"])
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


def format_users(names) -> bytes:
    names = sorted(names, key=str.lower)
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


def format_help() -> List[bytes]:
    """HELP's answer: an INFO line per verb, then OK HELP."""
    return [format_info("%s: %s" % USAGE[verb]) for verb in VERBS] + [format_ok("HELP")]


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
            count = int(detail) if what == "HISTORY" and detail.isdigit() else 0
            return ServerEvent(kind, name=what, text=detail, count=count)
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
    except ValueError:
        return None
    return None


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
#
# Every other line is unsolicited: PING, INFO, JOIN, LEAVE, KICKED, BANNED,
# BYE when no QUIT waits, other people's MSG and PRIV, and ERR when nothing
# waits (ERR 503 too many connections, before any request).

class Request(NamedTuple):
    """A line a client sent that the server will answer. ``tag`` is the
    client's own note of why it asked; the server never sees it."""
    verb: str
    fields: Tuple[str, ...] = ()
    tag: str = ""

    @property
    def text(self) -> str:
        """The message text of a SAY or TELL."""
        return self.fields[-1] if self.fields else ""

    @property
    def to(self) -> str:
        """The recipient of a TELL."""
        return self.fields[0] if self.verb == "TELL" else ""


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
        elif verb == "HISTORY":
            if kind == "OK" and event.name == "HISTORY":
                return self._done()
        elif verb == "SAY":
            if kind == "MSG" and event.name == self.account and event.text.strip(" ") == head.text.strip(" "):
                return self._done()
        elif verb == "TELL":
            if (kind == "PRIV" and event.name == self.account and event.to.lower() == head.to.lower()
                    and event.text.strip(" ") == head.text.strip(" ")):
                return self._done()
        elif (verb, kind) in _ONE_LINE_ANSWERS and (kind != "OK" or event.name == verb):
            return self._done()
        # A history's MSG lines come between its request and its OK HISTORY,
        # HELP's INFO lines before its OK HELP.
        if (kind == "MSG" and (stage == _HISTORY or verb == "HISTORY")) or (kind == "INFO" and verb == "HELP"):
            return Answer(head)
        return UNSOLICITED

    def _done(self) -> Answer:
        self._stage = _FIRST
        return Answer(self.waiting.popleft(), True)


# Answers that end at one line (HELP's INFO lines are taken above).
_ONE_LINE_ANSWERS = frozenset((("REGISTER", "OK"), ("WHO", "USERS"), ("PING", "PONG"), ("QUIT", "BYE"),
                               ("HELP", "OK")))
