"""sae-client: the curses terminal client of sae-chat.

The file reads top to bottom in two halves. The first half is the client's
model, plain Python with no curses and no sockets, which the tests drive
directly: display widths and wrapping, the scrollback, the windows (one
per room and per private conversation, each with its own scrollback and
activity), the input line editor, command parsing, the login form and
``Chat``, the connection state machine that turns keys and server bytes into
protocol lines, scrollback entries and timers (sans-I/O, in the manner of
sae_protocol.py, whose framing and parsing it uses). The second half is thin: ``View`` draws a ``Chat`` with curses, and
``Loop`` is the one thread, a selectors loop over the server socket, the
keyboard and a signal wake-up pipe, with the model's timers as its timeout.

    sae-client [--host H[:P][,H2[:P2]...]] [--port P] [--user NAME]
               [--tls] [--tls-ca FILE] [--tls-fingerprint SHA256]

Several servers of one chat (instances sharing a database) are tried in
turn: the first login goes down the list until one answers, and a lost
connection goes on to the next at once, the lost one last, backing off
only once all have failed.

With --tls the connection is encrypted and the server's certificate
checked (system CAs and host name, or --tls-ca); a certificate nothing
vouches for is shown by fingerprint and trusted on first use, as ssh does,
in $XDG_CONFIG_HOME/sae-chat/known_servers. The password is asked for on the login screen (never echoed), or taken from
the SAE_PASSWORD environment variable for scripted use.
"""

import argparse
import bisect
import collections
import curses
import datetime
import errno
import hashlib
import ipaddress
import locale
import os
import random
import re
import select
import selectors
import signal
import socket
import ssl
import sys
import tempfile
import time
import unicodedata
import zlib
from typing import Callable, Deque, Dict, List, NamedTuple, Optional, Set, Tuple

import sae_protocol as proto
from sae_protocol import (
    MAX_LINE_BYTES, MAX_SERVER_LINE_BYTES, Exchange, LineFramer, Request, check_name, check_password, format_command,
    parse_server_line,
)

# --- limits and defaults -------------------------------------------------

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 12345
# The server's protocol v1 over TLS (its --tls-port), taken with --tls.
DEFAULT_TLS_PORT = 12346
# A TLS handshake that has not finished by then never will: a stalled
# server, or a port that does not speak TLS and waits for a line.
TLS_HANDSHAKE_TIMEOUT = 10.0
# Certificates trusted on first use, under $XDG_CONFIG_HOME (~/.config).
KNOWN_SERVERS = os.path.join("sae-chat", "known_servers")
# Older room messages fetched per PgUp past the oldest line.
HISTORY_PAGE = 50
# Messages asked for per HISTORY after= while catching up after a reconnect;
# the server caps a request at 1000, and we repeat until fewer come back.
RESYNC_PAGE = 500
# Seconds before each reconnection attempt; the last one repeats. A random
# quarter is added so that clients of a restarted server do not all return
# in the same instant.
RECONNECT_DELAYS = (0.5, 1, 2, 4, 8, 15, 30)
# Silence from the server after which we PING it, and how long it then has
# to say anything before the connection is taken for dead (a half-open TCP
# connection, e.g. after a NAT or Wi-Fi change, would otherwise hang forever).
KEEPALIVE_IDLE = 90.0
KEEPALIVE_GRACE = 30.0
# A connection attempt, or a login, that takes longer has failed; it is
# retried like a lost connection.
CONNECT_TIMEOUT = 15.0
# How long /quit may take to get QUIT out to a slow server.
QUIT_FLUSH_SECONDS = 1.0
# Below this the chat screen cannot show a line of scrollback, a status line
# and an input line that is worth typing in.
MIN_COLS = 20
MIN_ROWS = 5
# The list of who is online, at the right of the scrollback, is shown (when
# toggled on, as it is at first) only where the scrollback keeps 80 columns.
NAMES_MIN_COLS = 100
NAMES_PANE = 18             # a separator, a space and 16 cells of name
PROMPT = "> "
# Window 1: the room protocol v1's SAY, MSG and HISTORY are about.
DEFAULT_ROOM = "#general"
# Pasted lines sent and not yet echoed at any moment. The server holds back
# what comes faster than its flood rate and disconnects a client once the
# held lines pass 64 KiB; a few lines in flight (each at most 4 KiB) keep a
# paste of any length well under that, paced by the server's own echo.
PASTE_IN_FLIGHT = 4
# A bracketed paste whose end marker never comes (a terminal that lost it)
# must not swallow the keyboard for good.
PASTE_MAX_CHARS = 1 << 20
# The terminal's markers around pasted text, once bracketed paste is on
# (xterm's "bracketed paste mode", which most terminals now speak).
PASTE_ON, PASTE_OFF = "\x1b[?2004h", "\x1b[?2004l"
PASTE_START, PASTE_END = "200~", "\x1b[201~"


def clock() -> float:
    """The one clock for timers (reconnect backoff, keepalive)."""
    return time.monotonic()


def local_now() -> str:
    """Wall time for lines the client writes itself, as HH:MM."""
    return datetime.datetime.now().strftime("%H:%M")


def local_time(timestamp: str) -> str:
    """A protocol timestamp (UTC, 2026-11-24T13:05:01.123Z) as local HH:MM."""
    return local_when(timestamp)[0]


def local_when(timestamp: str) -> Tuple[str, Optional[datetime.date]]:
    """A protocol timestamp as local HH:MM and the local day it falls on."""
    try:
        when = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return "--:--", None
    when = when.replace(tzinfo=datetime.timezone.utc).astimezone()
    return when.strftime("%H:%M"), when.date()


def day_words(day: datetime.date) -> str:
    """A day as the user reads it: Tuesday 1 December 2026."""
    return "%s %d %s" % (day.strftime("%A"), day.day, day.strftime("%B %Y"))


# --- display width -------------------------------------------------------
# A terminal cell holds one narrow character; CJK ideographs and most emoji
# take two; combining accents, joiners and variation selectors take none and
# ride on the character before them. Wrapping and the cursor both count cells.

def char_width(ch: str) -> int:
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return 0
    if unicodedata.east_asian_width(ch) in ("W", "F"):
        return 2
    return 1


def text_width(text: str) -> int:
    return sum(char_width(ch) for ch in text)


def printable(text: str) -> str:
    """Text safe to hand to the terminal: a tab becomes a space (it would
    jump to a tab stop and break the column count) and any other control
    character, which a hostile peer could use to drive the terminal, becomes
    U+FFFD."""
    if text.isprintable():
        return text
    return "".join(" " if ch == "\t" else ch if ch.isprintable() or ch == " "
                   or unicodedata.category(ch) in ("Mn", "Me", "Cf", "Zs")
                   else "\ufffd" for ch in text)


Span = Tuple[str, str]          # (text, style)
Row = List[Span]


def wrap(spans: List[Span], width: int, indent: int = 0) -> List[Row]:
    """Lay styled text out in rows of at most ``width`` cells.

    Rows break after the last space that fits, or anywhere in a word longer
    than a row; a wide character never straddles the edge. Continuation rows
    start with ``indent`` blank cells so that a message's text lines up
    under itself rather than under its timestamp.
    """
    width = max(1, width)
    if indent * 2 > width:
        indent = 0
    lead = [(" ", "")] * indent
    rows = []
    row: List[Span] = []
    used = 0
    space_at = -1          # index in ``row`` of the last space, a break point
    for text, style in spans:
        for ch in text:
            cells = char_width(ch)
            if used + cells > width and len(row) > len(lead):
                if ch == " ":
                    rest = []           # the space itself is the break
                elif space_at > len(lead):
                    rest = row[space_at + 1:]
                    del row[space_at:]
                else:
                    rest = []
                rows.append(row)
                row = lead + rest
                used = indent + sum(char_width(c) for c, _ in rest)
                space_at = -1
                if ch == " ":
                    continue
            row.append((ch, style))
            used += cells
            if ch == " ":
                space_at = len(row) - 1
    rows.append(row)
    return [_merge(r) for r in rows]


def _merge(cells: List[Span]) -> Row:
    """Join neighbouring cells of the same style back into spans."""
    spans: Row = []
    for ch, style in cells:
        if spans and spans[-1][1] == style:
            spans[-1] = (spans[-1][0] + ch, style)
        else:
            spans.append((ch, style))
    return spans


def row_text(row: Row) -> str:
    return "".join(text for text, _ in row)


# --- scrollback ----------------------------------------------------------

class Entry:
    """One line of a window's scrollback: a room message, a private message, a
    join or a leave, or a notice (info/error) from the server or the client.
    Messages carry the server's id; the client's own lines have id 0.
    ``day`` is the local day it was said on (None if not known), from which
    the scrollback derives its "Day changed" lines."""

    __slots__ = ("kind", "id", "time", "day", "name", "to", "text", "order", "highlight",
                 "_width", "_rows")

    def __init__(self, kind, text="", name="", to="", msg_id=0, time="", day=None):
        self.kind = kind
        self.id = msg_id
        if not time:
            now = datetime.datetime.now()
            time, day = now.strftime("%H:%M"), day or now.date()
        self.time = time
        self.day = day
        self.order = (msg_id, 0, 0)     # set by Scrollback.add
        self.highlight = False          # someone else's message that names the user
        self.name = name
        self.to = to
        self.text = printable(text)
        self._width = None
        self._rows = []

    def spans(self) -> Tuple[List[Span], int]:
        """The entry as styled text, and the indent for its continuation rows."""
        # /help is reference text, not something said at a time.
        head = [(self.time + " ", "time")] if self.kind != "help" else []
        action = proto.action_text(self.text) if self.kind in ("message", "private") else None
        if self.kind in ("message", "private"):
            # A private message is shown in its conversation's window, where
            # it reads like a room message, as in irssi's query windows.
            head += [("* ", ""), (self.name, "@" + self.name), (" ", "")] if action is not None else [
                ("<", ""), (self.name, "@" + self.name), ("> ", "")]
            body = [(self.text if action is None else action, "highlight" if self.highlight else "")]
        elif self.kind in ("join", "online"):
            # Without rooms, "joined" is coming online (v1's JOIN); with
            # rooms, joining the room ``to``, and coming online is said so.
            head += [("--> ", "join")]
            body = [(self.name, "@" + self.name), (
                " came online" if self.kind == "online" else " joined" + (" " + self.to if self.to else ""), "join")]
        elif self.kind in ("leave", "offline"):
            head += [("<-- ", "leave")]
            body = [(self.name, "@" + self.name), (
                (" went offline" if self.kind == "offline" else " left" + (" " + self.to if self.to else ""))
                + (" (%s)" % self.text if self.text else ""), "leave")]
        elif self.kind == "help":
            head += [("-!- ", "info"), (self.name.ljust(HELP_COLUMN), "info")]
            body = [(self.text, "")]
        elif self.kind == "error":
            head += [("!!! ", "error")]
            body = [(self.text, "error")]
        else:
            head += [("-!- ", "info")]
            body = [(self.text, "info")]
        return head + body, sum(text_width(text) for text, _ in head)

    def rows(self, width: int) -> List[Row]:
        if self._width != width:
            spans, indent = self.spans()
            self._rows = wrap(spans, width, indent)
            self._width = width
        return self._rows


class Scrollback:
    """Every line the user has seen, in time order, and where the view is.

    Messages are kept in id order, whatever order they arrive in (live, in
    the login burst, catching up after a reconnect, paging back), and each id
    is shown once. The client's own lines (notices, errors, joins) have no id:
    each is ordered after the newest message id known when it was written,
    and after the lines written before it, so that older pages fetched later
    go above it and messages said after it below. ``scroll`` counts the rows
    hidden below the view, so 0 is the live bottom and prepending older
    history never moves what is shown. "Day changed" lines are not entries:
    they are derived from the entries' days whenever rows are laid out, so
    they stay right whatever is inserted where.
    """

    def __init__(self):
        self.entries: List[Entry] = []
        self.orders: List[tuple] = []       # each entry's order, for bisect
        self.seen = set()
        self.newest = 0                     # the newest message id known
        self.written = 0                    # the client's own lines so far
        self.scroll = 0
        self.unseen = 0             # messages that arrived while scrolled up
        self.mentions = 0           # of which name the user
        self.width = 80
        self.height = 20
        self.oldest_reached = False

    def add(self, entry: Entry, live: bool = True, at_top: bool = False) -> bool:
        """Add an entry; False (and nothing changes) if its id was seen.
        ``at_top`` puts a line of the client's above every message."""
        if entry.id:
            key = (entry.kind, entry.id)
            if key in self.seen:
                return False
            self.seen.add(key)
            self.newest = max(self.newest, entry.id)
            entry.order = (entry.id, 0, 0)
        else:
            self.written += 1
            entry.order = (-1 if at_top else self.newest, 1, self.written)
        position = bisect.bisect(self.orders, entry.order)
        if self.scroll:
            rows, starts = self.layout(self.width)
            below = len(rows) - (starts[position] if position < len(starts) else len(rows))
        self.entries.insert(position, entry)
        self.orders.insert(position, entry.order)
        if self.scroll:
            if below <= self.scroll:
                # Keep the rows the reader is looking at where they are (a
                # day line may have come with the entry).
                self.scroll += len(self.layout(self.width)[0]) - len(rows)
            if live and entry.kind in ("message", "private"):
                self.unseen += 1
                self.mentions += entry.highlight
        return True

    def oldest_id(self) -> Optional[int]:
        ids = [e.id for e in self.entries if e.kind in ("message", "private")]
        return min(ids) if ids else None

    def layout(self, width: int) -> Tuple[List[Row], List[int]]:
        """All rows, with a day line wherever the local day changes (and one
        at the top when the oldest line is not from today), and the index of
        each entry's first row."""
        rows: List[Row] = []
        starts = []
        today = datetime.date.today()
        last_day = None
        for entry in self.entries:
            if entry.day is not None and entry.day != last_day:
                if last_day is not None:
                    rows += wrap([("-!- Day changed to " + day_words(entry.day), "info")], width, 4)
                elif entry.day != today:
                    rows += wrap([("-!- " + day_words(entry.day), "info")], width, 4)
                last_day = entry.day
            starts.append(len(rows))
            rows.extend(entry.rows(width))
        return rows, starts

    def all_rows(self, width: int) -> List[Row]:
        return self.layout(width)[0]

    def view(self, width: int, height: int) -> List[Row]:
        """The rows to show in a pane of this size, oldest first."""
        self.width, self.height = width, max(1, height)
        rows = self.all_rows(width)
        self.scroll = max(0, min(self.scroll, len(rows) - self.height))
        end = len(rows) - self.scroll
        return rows[max(0, end - self.height):end]

    def _page(self) -> int:
        return max(1, self.height - 1)

    def page_up(self) -> bool:
        """Scroll one page back; True when the oldest row is now in view."""
        top = max(0, len(self.all_rows(self.width)) - self.height)
        self.scroll = min(self.scroll + self._page(), top)
        return self.scroll >= top

    def page_down(self):
        self.scroll = max(0, self.scroll - self._page())
        if not self.scroll:
            self.unseen = self.mentions = 0

    def to_bottom(self):
        self.scroll = 0
        self.unseen = self.mentions = 0


# --- windows -------------------------------------------------------------
# As in irssi and WeeChat: a window per room and per private conversation,
# numbered from 1 in the order they were opened (closing one renumbers those
# after it), each with its own scrollback, which keeps its scroll position
# while another window is shown. A window that is not shown remembers whether
# something was said in it since it was last looked at.

ROOM, CONVERSATION = "room", "conversation"
# Activity, in increasing order: what a window not shown has had since it
# was last shown. A private message from someone else, like a message that
# names the user, is for the user: a mention.
QUIET, ACTIVITY, MENTION = 0, 1, 2
ACTIVITY_MARKS = {QUIET: "", ACTIVITY: "*", MENTION: "!"}


class Window:
    """A room or a private conversation, as the user sees it."""

    def __init__(self, kind: str, name: str):
        self.kind = kind                # ROOM or CONVERSATION
        self.name = name                # "#general", or the other account's name
        self.scrollback = Scrollback()
        self.activity = QUIET
        # Protocol v1.1. Whether the account is in the room: a room window
        # stays open, saying so, when the room is left from another session
        # or deleted, and window 1 stays when the default room is left.
        self.joined = True
        self.members: List[str] = []    # the room's members, online or not
        self.topic = ""
        # Whether the room's or conversation's recent history has been
        # asked for: it is, the first time the window is shown.
        self.loaded = False

    @property
    def key(self) -> str:
        # Room and account names are unique case-insensitively, in ASCII
        # only (str.lower would fold look-alikes such as the Kelvin sign).
        return proto.room_key(self.name)

    @property
    def label(self) -> str:
        """The window's name in the window list: a room the account is not
        in is in parentheses, as irssi shows a channel it has left."""
        return self.name if self.joined else "(%s)" % self.name


class Windows:
    """The windows in their numbered order, and which one is shown.

    Window 1 is the default room and is never closed; conversations open
    after it as they begin. ``previous`` is the window shown before the
    current one, where closing the current one goes back to.
    """

    def __init__(self, room: str = DEFAULT_ROOM, on_show: Optional[Callable[[Window], None]] = None):
        self.windows: List[Window] = [Window(ROOM, room)]
        self.active = self.windows[0]
        self.previous: Optional[Window] = None
        # Told of every window that comes into view (Chat fetches its
        # recent history there the first time).
        self.on_show = on_show

    def __iter__(self):
        return iter(self.windows)

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def room(self) -> Window:
        """The default room's window."""
        return self.windows[0]

    def number(self, window: Window) -> int:
        return self.windows.index(window) + 1

    def get(self, number: int) -> Optional[Window]:
        return self.windows[number - 1] if 1 <= number <= len(self.windows) else None

    def find(self, kind: str, name: str) -> Optional[Window]:
        key = proto.room_key(name)
        return next((w for w in self.windows if w.kind == kind and w.key == key), None)

    def open(self, kind: str, name: str) -> Window:
        """The window of that room or conversation, opened at the end if
        there is none yet (it is not shown: ``show`` does that)."""
        window = self.find(kind, name)
        if window is None:
            window = Window(kind, name)
            self.windows.append(window)
        return window

    def show(self, window: Window):
        if window is not self.active:
            self.previous, self.active = self.active, window
        window.activity = QUIET
        if self.on_show is not None:
            self.on_show(window)

    def step(self, delta: int):
        """The next (1) or previous (-1) window, round the end."""
        index = (self.windows.index(self.active) + delta) % len(self.windows)
        self.show(self.windows[index])

    def close(self, window: Window):
        index = self.windows.index(window)
        del self.windows[index]
        if window is self.active:
            back = self.previous if self.previous in self.windows else self.windows[max(0, index - 1)]
            self.show(back)
        if self.previous is window:
            self.previous = None

    def notice(self, window: Window, level: int) -> bool:
        """Something of ``level`` was said in ``window``: remembered if the
        window is not shown. True if it was not shown."""
        if window is self.active:
            return False
        window.activity = max(window.activity, level)
        return True


# --- input line editor ---------------------------------------------------

def _cleaned_input(text: str) -> str:
    """Typed or pasted text as it may go into a protocol line: no line
    breaks or control characters (the server would refuse the line)."""
    return "".join(" " if ch in "\t\r\n" else ch for ch in text
                   if ch in "\t\r\n" or unicodedata.category(ch) != "Cc")


class InputLine:
    """A one-line editor with readline/irssi keys and its own history.

    The cursor is an index into ``text`` that always sits on a character
    boundary as the user sees it: a base character and the combining marks
    after it move and delete together. ``view`` scrolls the line sideways
    when it is wider than the pane.
    """

    def __init__(self, text: str = ""):
        self.text = text
        self.cursor = len(text)
        self.offset = 0             # index of the first character shown
        self.history: List[str] = []
        self.history_pos = 0
        self.draft = ""             # the line being typed while browsing history
        self.killed = ""            # for Ctrl-Y

    def set(self, text: str):
        self.text = text
        self.cursor = len(text)
        self.offset = 0

    def _next(self, index: int) -> int:
        index += 1
        while index < len(self.text) and char_width(self.text[index]) == 0:
            index += 1
        return min(index, len(self.text))

    def _prev(self, index: int) -> int:
        index -= 1
        while index > 0 and char_width(self.text[index]) == 0:
            index -= 1
        return max(index, 0)

    def insert(self, text: str):
        text = _cleaned_input(text)
        self.text = self.text[:self.cursor] + text + self.text[self.cursor:]
        self.cursor += len(text)

    def left(self):
        self.cursor = self._prev(self.cursor)

    def right(self):
        self.cursor = self._next(self.cursor)

    def home(self):
        self.cursor = 0

    def end(self):
        self.cursor = len(self.text)

    def backspace(self):
        if self.cursor:
            start = self._prev(self.cursor)
            self.text = self.text[:start] + self.text[self.cursor:]
            self.cursor = start

    def delete(self):
        if self.cursor < len(self.text):
            self.text = self.text[:self.cursor] + self.text[self._next(self.cursor):]

    def kill_to_start(self):
        self.killed = self.text[:self.cursor]
        self.text = self.text[self.cursor:]
        self.cursor = 0

    def kill_to_end(self):
        self.killed = self.text[self.cursor:]
        self.text = self.text[:self.cursor]

    def kill_word(self):
        start = self.cursor
        while start and self.text[start - 1] == " ":
            start -= 1
        while start and self.text[start - 1] != " ":
            start -= 1
        self.killed = self.text[start:self.cursor]
        self.text = self.text[:start] + self.text[self.cursor:]
        self.cursor = start

    def yank(self):
        self.insert(self.killed)

    def history_prev(self):
        if self.history_pos == 0:
            return
        if self.history_pos == len(self.history):
            self.draft = self.text
        self.history_pos -= 1
        self.set(self.history[self.history_pos])

    def history_next(self):
        if self.history_pos >= len(self.history):
            return
        self.history_pos += 1
        if self.history_pos == len(self.history):
            self.set(self.draft)
        else:
            self.set(self.history[self.history_pos])

    def remember(self, line: str):
        """Put a line into the history (what was sent, or given back)."""
        if line and (not self.history or self.history[-1] != line):
            self.history.append(line)
        self.history_pos = len(self.history)
        self.draft = ""

    def commit(self) -> str:
        """The line as entered; it goes into the history and the editor empties."""
        line = self.text
        self.remember(line)
        self.set("")
        return line

    KEYS = {
        "KEY_LEFT": left, "\x02": left,
        "KEY_RIGHT": right, "\x06": right,
        "KEY_HOME": home, "\x01": home,
        "KEY_END": end, "\x05": end,
        "KEY_BACKSPACE": backspace, "\x7f": backspace, "\x08": backspace,
        "KEY_DC": delete, "\x04": delete,
        "\x15": kill_to_start, "\x0b": kill_to_end, "\x17": kill_word, "\x19": yank,
        # Ctrl-P and Ctrl-N are not history keys here: in the chat screen
        # they go to the previous and next window, as in irssi.
        "KEY_UP": history_prev, "KEY_DOWN": history_next,
    }

    def key(self, key: str) -> bool:
        """Apply one key (a character, a pasted string, a control character,
        or a curses key name such as KEY_LEFT); False if it is not an
        editing key."""
        action = self.KEYS.get(key)
        if action:
            action(self)
            return True
        if key.startswith("KEY_") or (len(key) == 1 and not key.isprintable() and key != " "):
            return False
        self.insert(key)
        return True

    def view(self, width: int, mask: str = "") -> Tuple[str, int]:
        """The part of the line that fits in ``width`` cells, and the cursor's
        column in it. With ``mask``, each character shows as that (passwords)."""
        text = mask * len(self.text) if mask else self.text
        width = max(1, width)
        if text_width(text) < width:
            self.offset = 0
        elif self.cursor < self.offset:
            # Jump back a third of the pane, so that the user sees what is
            # before the cursor rather than creeping one character at a time.
            start = self.cursor
            while start and text_width(text[start:self.cursor]) < width // 3:
                start = self._prev(start)
            self.offset = start
        while text_width(text[self.offset:self.cursor]) > width - 1:
            self.offset = self._next(self.offset)
        shown, used = [], 0
        for ch in text[self.offset:]:
            cells = char_width(ch)
            if used + cells > width:
                break
            shown.append(ch)
            used += cells
        return "".join(shown), text_width(text[self.offset:self.cursor])


# --- commands ------------------------------------------------------------

class Action(NamedTuple):
    """What a line typed in the chat screen asks for."""
    kind: str                   # say, tell, query, window, close, who, names, help, quit, local
    name: str = ""
    text: str = ""


# /help: one short line per command or key, so that it reads at any width
# (the description wraps at spaces, indented under itself).
HELP = (
    ("text", "say it in this window: the room, or the conversation"),
    ("//text", "say a line that begins with /"),
    ("/msg NAME text", "a private message, in NAME's window"),
    ("/query NAME", "open (or go to) the conversation with NAME"),
    ("/me action", "say what you do: * alice waves"),
    ("/win N", "go to window N"),
    ("/close, /wc", "close this conversation's window"),
    ("/join #room", "join a room (made if new) and go to its window"),
    ("/part [reason]", "leave the room of this window"),
    ("/topic [text]", "show or set this room's topic (- clears it)"),
    ("/list", "every room: members online, members, topic"),
    ("/who", "who is online"),
    ("/names", "this room's members, who of them is online"),
    ("/names, F2", "show or hide the list of who is online (100+ columns)"),
    ("F2", "show or hide the list of who is online (100+ columns)"),
    ("/help", "this list"),
    ("/quit [reason]", "leave"),
    ("Alt-1..9, 0", "window 1 to 9, 10; or Esc, then the digit"),
    ("Ctrl-N / P", "next / previous window (also Alt-Right / Left)"),
    ("PgUp / PgDn", "scroll; past the oldest line loads older messages"),
    ("End", "end of the input; again: back to the newest messages"),
    ("Up / Down", "lines sent before"),
    ("Tab", "complete a name or /command; again: the next one"),
    ("Ctrl-A / E", "start / end of the input"),
    ("Ctrl-U / K / W", "cut to the start / to the end / the word before"),
    ("Ctrl-Y", "paste what was cut"),
    ("Ctrl-L", "redraw the screen"),
    ("Ctrl-C", "quit"),
)
HELP_COLUMN = max(len(command) for command, _ in HELP) + 2
# Lines of /help that only a server with rooms makes true, and the one
# that only a server without them does (/names is a room's members there).
HELP_ROOMS = frozenset(("/join #room", "/part [reason]", "/topic [text]", "/list", "/names", "F2"))
HELP_V1 = frozenset(("/names, F2",))


def help_lines(rooms: bool) -> List[Tuple[str, str]]:
    return [(command, words) for command, words in HELP
            if command not in (HELP_V1 if rooms else HELP_ROOMS)]


def _window_number(text: str) -> Optional[int]:
    return int(text) if text.isdigit() and len(text) <= 4 else None


def _parse_msg(rest: str) -> Action:
    name, _, text = rest.partition(" ")
    if not name or not text.strip():
        return Action("local", text="usage: /msg NAME text")
    return Action("tell", name=name, text=text.strip())


def _parse_query(rest: str) -> Action:
    name = rest.split(" ")[0] if rest else ""
    if not name:
        return Action("local", text="usage: /query NAME (then what you type goes to NAME)")
    return Action("query", name=name)


def _parse_me(rest: str) -> Action:
    if not rest:
        return Action("local", text="usage: /me action (shown as * you action)")
    return Action("say", text=proto.ACTION_PREFIX + rest)


def _parse_window(rest: str) -> Action:
    if _window_number(rest) is None:
        return Action("local", text="usage: /win N (the window's number in the status line)")
    return Action("window", text=rest)


def _parse_close(rest: str) -> Action:
    if rest and _window_number(rest) is None:
        return Action("local", text="usage: /close [N] (this window, or window N)")
    return Action("close", text=rest)


def _parse_join(rest: str) -> Action:
    room = rest.split(" ")[0] if rest else ""
    if not room:
        return Action("local", text="usage: /join #room (it is made if it does not exist)")
    if not room.startswith("#"):
        room = "#" + room           # as irssi does: /join homework is #homework
    problem = proto.check_room(room)
    if problem:
        return Action("local", text="/join %s: %s" % (room, problem))
    return Action("join", name=room)


def _parse_part(rest: str) -> Action:
    """/part [reason] leaves the room shown; /part #room [reason] that one."""
    if rest.startswith("#"):
        room, _, reason = rest.partition(" ")
        problem = proto.check_room(room)
        if problem:
            return Action("local", text="/part %s: %s" % (room, problem))
        return Action("part", name=room, text=reason.strip())
    return Action("part", text=rest)


# Commands of rooms (protocol v1.1): against a server without rooms they
# say so and send nothing (Chat.room_command).
ROOM_VERBS = ("join", "part", "topic", "list")


# Every /command: its words (the first one is what Tab completes; the others
# are aliases) and what turns the rest of the line into an Action.
COMMAND_TABLE: Tuple[Tuple[Tuple[str, ...], Callable[[str], Action]], ...] = (
    (("close", "wc"), _parse_close),
    (("help", "?"), lambda rest: Action("help")),
    (("me",), _parse_me),
    (("msg", "tell", "m"), _parse_msg),
    (("names",), lambda rest: Action("names")),
    # /quit before /query, so that /q and Tab offers it first: leaving is
    # what a lone /q has always meant here.
    (("quit", "exit"), lambda rest: Action("quit", text=rest)),
    (("query",), _parse_query),
    (("who",), lambda rest: Action("who")),
    (("win", "window"), _parse_window),
    (("join", "j"), _parse_join),
    (("part", "leave"), _parse_part),
    (("topic", "t"), lambda rest: Action("topic", text=rest)),
    (("list",), lambda rest: Action("list")),
)
COMMAND_PARSERS: Dict[str, Callable[[str], Action]] = {
    word: parse for words, parse in COMMAND_TABLE for word in words}
# What Tab completes at the start of a line: one candidate per command
# (aliases left out); the rooms' commands only where the server has rooms.
COMMANDS = tuple("/" + words[0] for words, _ in COMMAND_TABLE)
V1_COMMANDS = tuple(command for command in COMMANDS if command[1:] not in ROOM_VERBS)


def parse_input(line: str) -> Optional[Action]:
    """A line from the input pane as an Action; None for a blank line.
    Plain text is a "say": to the room or to the conversation of the
    window it is typed in, which Chat knows and this does not."""
    if not line.strip():
        return None
    if line.startswith("//"):
        return Action("say", text=line[1:])
    if not line.startswith("/"):
        return Action("say", text=line)
    word, _, rest = line[1:].partition(" ")
    parse = COMMAND_PARSERS.get(word.lower())
    if parse is None:
        return Action("local", text="unknown command /%s; /help lists the commands" % word[:32])
    return parse(rest.strip())


# --- login form ----------------------------------------------------------

class LoginForm:
    """The login screen: server, name, password, and a line of feedback."""

    LABELS = ("Server", "Name", "Password")

    def __init__(self, server: str, name: str, password: str):
        self.fields = [InputLine(server), InputLine(name), InputLine(password)]
        self.focus = next((i for i, f in enumerate(self.fields) if not f.text), 2)
        self.error = ""
        self.notice = ""

    @property
    def server(self) -> str:
        return self.fields[0].text.strip()

    @property
    def name(self) -> str:
        return self.fields[1].text.strip()

    @property
    def password(self) -> str:
        return self.fields[2].text

    def missing(self) -> Optional[int]:
        return next((i for i, f in enumerate(self.fields) if not f.text.strip()), None)

    def move(self, step: int):
        self.focus = (self.focus + step) % len(self.fields)


# A port as typed: ASCII digits only (str.isdigit also takes "²" and "٣").
_PORT = re.compile(r"[0-9]{1,5}")
# What no host name or address holds: a URL's punctuation, brackets out of
# place, spaces and control characters (a pasted "http://host/" or a typo).
_NOT_IN_HOST = re.compile(r"[\s/@?#\[\],\x00-\x1f\x7f]")


def _check_port(entry: str, port: str) -> int:
    if not (_PORT.fullmatch(port) and 0 < int(port) < 65536):
        raise ValueError("%r: the port must be a number from 1 to 65535" % entry)
    return int(port)


def split_server(text: str, default_port: int = DEFAULT_PORT) -> Tuple[str, int]:
    """One server as typed: "host", "host:port", "[v6]:port", "[v6]" or a
    bare "v6" address, as (host, port); ValueError, naming the entry and
    what is wrong with it, for anything else."""
    entry = text.strip()
    if not entry:
        raise ValueError("an empty server in the list (two commas in a row, or one at an end)")
    if entry.startswith("["):
        host, bracket, rest = entry[1:].partition("]")
        if not bracket:
            raise ValueError("%r: no ']' after the IPv6 address" % entry)
        if rest and not rest.startswith(":"):
            raise ValueError("%r: after ']' comes ':port' or nothing" % entry)
        port = _check_port(entry, rest[1:]) if rest else default_port
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("%r: brackets are for an IPv6 address, and %r is not one" % (entry, host)) from None
        return host, port
    if _NOT_IN_HOST.search(entry):
        raise ValueError("%r: not a host name or address (give host or host:port, not a URL)" % entry)
    if entry.count(":") > 1:
        # Bare IPv6, as getaddrinfo takes it; with a port it needs brackets,
        # since "::1:5000" is an address too.
        try:
            ipaddress.IPv6Address(entry)
        except ValueError:
            raise ValueError("%r: not an IPv6 address; with a port, one is written [::1]:12345" % entry) from None
        return entry, default_port
    host, colon, port = entry.partition(":")
    if not host:
        raise ValueError("%r: no host before the port" % entry)
    return host, _check_port(entry, port) if colon else default_port


def parse_servers(text: str, default_port: int = DEFAULT_PORT) -> List[Tuple[str, int]]:
    """The servers of one chat, comma-separated, each as split_server takes
    it, in the order given; an entry without a port gets ``default_port``.
    A server named twice is kept once, where it first appears."""
    servers: List[Tuple[str, int]] = []
    keys = set()
    for entry in text.split(","):
        host, port = split_server(entry, default_port)
        if server_key(host, port) not in keys:
            keys.add(server_key(host, port))
            servers.append((host, port))
    return servers


def join_server(host: str, port: int) -> str:
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def join_servers(servers: List[Tuple[str, int]]) -> str:
    """The servers as parse_servers reads them back: "a:1,[::1]:2"."""
    return ",".join(join_server(host, port) for host, port in servers)


# --- TLS: whom the client trusts -----------------------------------------
# A server's certificate is trusted when the system's CAs (or --tls-ca)
# vouch for it and its host name; when nothing vouches for it (a classroom
# server's self-signed certificate), its SHA-256 fingerprint is shown and,
# once the user says yes, kept in known_servers, as ssh keeps host keys in
# known_hosts: from then on that server must show exactly that certificate.

class TlsOptions(NamedTuple):
    """What the command line said about TLS; None in Chat means plain TCP."""
    ca_file: str = ""           # verify against this CA file, not the system's
    pinned: str = ""            # --tls-fingerprint: exactly this certificate, no question
    known_servers: str = ""     # the known_servers file (known_servers_path())


class TlsPlan(NamedTuple):
    """How the I/O layer is to make the next connection's handshake.
    ``verify``: the CAs and the host name decide (``ca_file`` or the
    system's); ``pin``: any certificate is taken, and the model compares its
    fingerprint with ``expected``; ``probe``: fetch the certificate to ask
    the user about it, then hang up."""
    mode: str
    ca_file: str = ""
    expected: str = ""


def fingerprint(der: bytes) -> str:
    """A certificate's SHA-256 fingerprint as openssl prints it (``openssl
    x509 -noout -fingerprint -sha256``): upper-case hex pairs and colons."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def fingerprint_lines(label: str, print_: str) -> List[str]:
    """A fingerprint in two lines of 16 pairs, the second under the first:
    whole, it is 95 characters and would wrap in the middle of a pair."""
    head = "%s SHA256 " % label if label else "SHA256 "
    return [head + print_[:48], " " * len(head) + print_[48:]]


def parse_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as typed or pasted (hex with or without colons,
    any case, spaces, or openssl's whole ``sha256 Fingerprint=...`` line) in
    the form ``fingerprint`` gives; ValueError if it is not one."""
    text = text.strip()
    if "=" in text:
        text = text.rpartition("=")[2]
    elif text.lower().startswith("sha256:"):
        text = text[len("sha256:"):]
    digits = re.sub(r"[\s:]", "", text)
    if not re.fullmatch(r"[0-9A-Fa-f]{64}", digits):
        raise ValueError("a SHA-256 fingerprint is 64 hex digits (colons allowed), "
                         "as openssl x509 -noout -fingerprint -sha256 prints it")
    digits = digits.upper()
    return ":".join(digits[i:i + 2] for i in range(0, 64, 2))


def known_servers_path(environ=None) -> str:
    """$XDG_CONFIG_HOME/sae-chat/known_servers, ~/.config/... without it
    (an empty or relative value is ignored, as the XDG spec says)."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(environ.get("HOME") or os.path.expanduser("~"), ".config")
    return os.path.join(base, KNOWN_SERVERS)


def server_key(host: str, port: int) -> str:
    """How known_servers names a server: host:port, [v6]:port; host names
    are case-insensitive."""
    return join_server(host.lower(), port)


KNOWN_SERVERS_HEADER = (
    "# sae-client: server certificates trusted on first use, one line per server:\n"
    "# host:port SHA-256 fingerprint. Delete a server's line to be asked again.\n")


def read_known_servers(text: str) -> Dict[str, str]:
    """known_servers' lines as {host:port: fingerprint}. Comments, blank
    lines and lines that are not a server and a fingerprint are skipped, so a
    hand-edited file never stops the client; a later line for the same
    server wins."""
    known = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 2 or line.lstrip().startswith("#"):
            continue
        try:
            known[fields[0].lower()] = parse_fingerprint(fields[1])
        except ValueError:
            continue
    return known


def with_known_server(text: str, key: str, print_: str) -> str:
    """known_servers' text with ``key``'s line set to ``print_``: in place
    if the server has a line, else appended; every other line as it was."""
    lines, found = [], False
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and not line.lstrip().startswith("#") and fields[0].lower() == key:
            if found:
                continue
            line, found = "%s %s" % (key, print_), True
        lines.append(line)
    if not found:
        lines.append("%s %s" % (key, print_))
    return (KNOWN_SERVERS_HEADER if not text else "") + "\n".join(lines) + "\n"


def load_known_servers(path: str) -> Dict[str, str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return read_known_servers(file.read())
    except FileNotFoundError:
        return {}


def remember_server(path: str, key: str, print_: str):
    """Write ``key``'s fingerprint to known_servers atomically (a new file,
    mode 0600 from the start, renamed over the old one), so that a crash or
    a second client writing at the same time never leaves half a file."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, mode=0o700, exist_ok=True)
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            text = file.read()
    except FileNotFoundError:
        text = ""
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".known_servers.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), 0o600)
            file.write(with_known_server(text, key, print_))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


# What can go wrong in a TLS handshake, from OpenSSL's verify codes
# (X509_V_ERR_*) and reasons, in the few kinds the user acts on differently.
_UNKNOWN_CA_CODES = {18, 19, 20, 21, 27}    # self-signed, in chain, no issuer, ..., untrusted
_EXPIRED_CODES = {9, 10}                    # not yet valid, expired
_HOSTNAME_CODES = {62, 64}                  # host name, IP address mismatch
_NOT_TLS_REASONS = {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL", "RECORD_LAYER_FAILURE",
                    "PACKET_LENGTH_TOO_LONG", "UNEXPECTED_EOF_WHILE_READING", "WRONG_SSL_VERSION"}


def tls_failure(exc: Exception) -> Tuple[str, str]:
    """A failed handshake's exception as (kind, detail): kind is unknown-ca,
    expired, hostname, untrusted (another certificate problem), not-tls (the
    server answered with something that is not TLS, or hung up), or other."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code, detail = exc.verify_code, exc.verify_message or str(exc)
        if code in _UNKNOWN_CA_CODES:
            return "unknown-ca", detail
        if code in _EXPIRED_CODES:
            return "expired", detail
        if code in _HOSTNAME_CODES:
            return "hostname", detail
        return "untrusted", detail
    if isinstance(exc, (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError)):
        return "not-tls", "the server closed the connection during the TLS handshake"
    if isinstance(exc, ssl.SSLError) and (exc.reason in _NOT_TLS_REASONS):
        return "not-tls", "the server's answer is not TLS (%s)" % exc.reason.lower().replace("_", " ")
    if isinstance(exc, ssl.SSLError):
        return "other", (exc.reason or str(exc)).lower().replace("_", " ")
    return "other", getattr(exc, "strerror", None) or str(exc)


# --- the client's state machine ------------------------------------------

# Server error codes in words, for the user. The server's own text follows
# them only where it adds something (a ban's reason, a usage line): it often
# repeats the code in words ("ERR 404 no such account nobody").
ERROR_WORDS = {
    proto.BAD_REQUEST: "the server refused the line",
    proto.UNAUTHORIZED: "wrong name or password",
    proto.BANNED: "this account is banned",
    proto.NOT_FOUND: "no such account",
    proto.TOO_MANY_ROOMS: "too many rooms",
    proto.NAME_TAKEN: "that name is taken",
    proto.TOO_LONG: "too long",
    proto.UNKNOWN_VERB: "unknown command",
    proto.KICKED: "kicked",
    proto.SLOW_DOWN: "too fast",
    proto.UNAVAILABLE: "the server cannot store messages right now",
}
# Words that a server clause may hold and still say nothing new.
_FILLER = {"a", "an", "the", "try", "later", "please", "again"}


def _words(text: str) -> set:
    return set(re.findall(r"\w+", text.lower()))


def _news(text: str, said: str) -> str:
    """The comma-separated parts of the server's ``text`` that say something
    ``said`` does not already say."""
    known = _words(said) | _FILLER
    return ", ".join(part.strip() for part in text.split(",")
                     if part.strip() and not _words(part) <= known)


def error_in_words(code: int, text: str, name: str = "") -> str:
    """An ERR line as one sentence for the user, each thing said once.
    ``name`` is the account a refused request was about, if any."""
    words = ERROR_WORDS.get(code)
    if code == proto.NOT_FOUND and text.startswith("no such room"):
        return text                 # v1.1: the room, and that you may not be in it
    if code == proto.NOT_FOUND:
        # The server says "no such account NAME"; the request knows the name.
        name = name or (text[len(words):].strip() if text.lower().startswith(words) else "")
        return "%s has no account here" % name if name else words
    if code in (proto.KICKED, proto.SLOW_DOWN):
        seconds, _, reason = text.partition(" ")
        if seconds.isdigit():
            said = ("kicked: you can log in again in %s seconds" if code == proto.KICKED
                    else "too fast: try again in %s seconds") % seconds
            reason = _news(reason, said)
            return said + (" (%s)" % reason if reason else "")
    if code == proto.UNAUTHORIZED and "password" not in text:
        return "not logged in"
    if code == proto.UNAVAILABLE:
        # Storage trouble is all the user needs to know; anything else is
        # the server turning connections away.
        return words if not text or "storage" in text else "the server is busy: %s" % text
    if not words:
        return "error %d: %s" % (code, text) if text else "error %d" % code
    if words in text.lower():
        return text                 # the server's text says it, and more
    news = _news(text, words)
    return "%s: %s" % (words, news) if news and code != proto.NAME_TAKEN else words


class Chat:
    """The whole client without a screen or a socket.

    Keys come in through ``key``; bytes from the server through
    ``receive``; the I/O layer reports ``connection_made`` and
    ``connection_lost`` and calls ``tick`` when ``next_deadline`` comes.
    What the client wants done is left in plain attributes: ``outbox`` (bytes
    to send), ``want_connect`` (open a connection to ``host``:``port``, the
    one of ``servers`` whose turn it is),
    ``want_close`` (close the socket; the model has already done its own
    bookkeeping, see ``drop``), ``done`` (exit).
    """

    def __init__(self, host=DEFAULT_HOST, port=DEFAULT_PORT, name="", password="",
                 tls: Optional[TlsOptions] = None, servers: Optional[List[Tuple[str, int]]] = None):
        # The servers of the chat (several share one database in a cluster),
        # tried in turn; ``host`` and ``port`` are the one whose turn it is.
        # ``port`` stays the default for a server typed without one.
        self.servers = list(servers) if servers else [(host, port)]
        self.turn = 0
        self.host, self.port = self.servers[0]
        self.default_port = port
        # Servers that failed one after the other since the last login or
        # the last back-off: once each has, a round is over and the back-off
        # comes before the next; until then the next one is tried at once.
        # On the login screen, why each could not be reached.
        self.failed_in_round = 0
        self.unreachable: List[str] = []
        # Servers whose certificate was refused during this login: skipped
        # while another is left.
        self.refused_servers: Set[str] = set()
        # Servers this client has been connected to, for the words of a
        # certificate refused on one it has never met.
        self.connected_servers: Set[str] = set()
        # TLS (None: plain TCP). ``secure``: the connection up now finished
        # its handshake and its certificate was accepted. Fingerprints the
        # user trusted in this session are kept here too, so that reconnects
        # hold to them even if known_servers could not be written.
        self.tls = tls
        self.secure = False
        self.session_trust: Dict[str, str] = {}
        self.probing = False                # this connection only fetches the certificate
        self.trust_question: Optional[Tuple[str, str]] = None   # (server, fingerprint) asked about
        self.tls_refused = False            # a certificate was refused: no reconnecting
        self.handshake_deadline: Optional[float] = None
        self.name, self.password = name, password
        self.form = LoginForm(join_servers(self.servers), name, password)
        self.windows = Windows(on_show=self.window_shown)
        self.input = InputLine()
        self.screen = "login"               # login, chat
        self.state = "offline"              # offline, connecting, logging in, online
        self.register_first = False
        self.logged_in_once = False
        self.users: List[str] = []
        # room_keys of the users whom USERS marked as IRC guests (CAP guests)
        self.guests: Set[str] = set()
        # Whether the server has rooms (protocol v1.1): None until it has
        # answered CAP (before LOGIN's answer: requests are answered in
        # order), False if it said ERR 421, as a v1.0 server does. Without
        # rooms the client is what it was for protocol v1.
        self.rooms: Optional[bool] = None
        self.told_no_rooms = False
        self.default_room = DEFAULT_ROOM    # as OK CAP rooms names it
        # Rooms the client has heard of (its own, /list's), for Tab after /join.
        self.known_rooms: Dict[str, str] = {}
        # A multi-line answer's lines until its OK: ROOM lines of ROOMS,
        # MEMBERS' names per room of JOIN or NAMES.
        self.room_lines: List[proto.ServerEvent] = []
        self.member_lines: Dict[str, List[str]] = {}
        self.notices: List[str] = []        # said once LOGIN's history is in
        # The newest message id seen: after a reconnect we ask for
        # everything after it, so nothing said meanwhile is missed. Without
        # rooms, of the room's messages only (v1's HISTORY has nothing else);
        # with rooms, of every message line, as one HISTORY * covers them.
        self.last_id = 0
        self.exchange = Exchange()          # requests sent, and what answers them
        self.history_newest = 0             # the last id of the history answer being read
        self.greeting = ""                  # said at the end of LOGIN's history
        self.resumed = False                # this login catches up after a drop
        # While Tab cycles: the start of the word, the candidates, which one
        # is in, where it ends, and the line and cursor Tab left; any other
        # key ends it.
        self.completion: Optional[tuple] = None
        self.loading_older = False
        # SAY/TELL lines not confirmed when the connection dropped.
        self.unconfirmed: List[Request] = []
        self.framer: Optional[LineFramer] = None
        self.outbox = bytearray()
        self.want_connect = False
        self.want_close = ""
        self.done = False
        self.redraw_all = False
        self.bells = 0                      # terminal bells to ring: mentions of the user
        self.show_names = True              # the list of who is online, where it fits
        self.attempt = 0
        self.reconnect_at: Optional[float] = None
        self.connect_deadline = 0.0
        self.kicked_for = 0
        self.banned = False
        self.ban_reason = ""
        self.last_heard = 0.0
        self.ping_sent_at: Optional[float] = None
        # Keys after Esc: None, or what has come since it ("" or "[..." for
        # a terminal's sequence that curses did not turn into a key).
        self.escape: Optional[str] = None
        # Bracketed paste: the characters of a paste under way; then the
        # lines waiting for Enter or Esc, the window they are for, and the
        # input line as it was; then those being sent, a few at a time.
        self.pasting: Optional[List[str]] = None
        self.paste_lines: List[Tuple[str, ...]] = []
        self.paste_window: Optional[Window] = None
        self.paste_draft = ("", 0)
        self.paste_queue: Deque[Tuple[str, ...]] = collections.deque()

    @property
    def scrollback(self) -> Scrollback:
        """The scrollback of the window shown."""
        return self.windows.active.scrollback

    # -- what the user sees ------------------------------------------------

    def say(self, kind: str, text: str):
        """A line from the client itself in the scrollback."""
        self.scrollback.add(Entry(kind, text))

    # What the status line gives up as the terminal narrows, in this order:
    # the server's address (long, and the user chose it), the user's own
    # name, how many are online, then the window list shortens to the
    # shown window and those with activity (level 1), and last the shown
    # window is left as its number (level 2). The connection state,
    # "loading history", the paste under way and the scroll marker stay:
    # they are what changes.
    STATUS_STEPS = ("server", "name", "count", "windows 1", "windows 2")

    def status_fields(self) -> List[Tuple[str, str]]:
        state = self.state
        if state == "offline" and self.reconnect_at is not None:
            state = "reconnecting in %ds" % max(0, round(self.reconnect_at - clock()))
        elif self.banned:
            state = "banned"
        elif self.tls_refused:
            state = "certificate refused"
        fields = [("server", join_server(self.host, self.port)), ("name", self.name or "-"),
                  ("state", state)]
        if self.secure:
            # The connection is encrypted: words, not a colour or a glyph a
            # font may lack, so that NO_COLOR and any terminal show it.
            fields.insert(0, ("tls", "tls"))
        if self.state == "online":
            fields.append(("count", "%d online" % len(self.users)))
        if self.loading_older:
            fields.append(("loading", "loading history"))
        if self.paste_queue:
            fields.append(("paste", "pasting: %d left" % len(self.paste_queue)))
        return fields

    def status(self) -> str:
        return " | ".join(text for _, text in self.status_fields())

    def window_list(self, level: int = 0) -> List[Span]:
        """The windows as ``[1:#general 2:bob* 3:carol!]`` (``*``: something
        was said there, ``!``: something for the user), once there is more
        than one. Shorter at higher levels: 1 leaves out the quiet windows
        and the names of those not shown (``[1* 2:bob 3!]``), 2 the name of
        the one shown too. Styles: window-shown, window-activity,
        window-mention."""
        if len(self.windows) < 2:
            return []
        spans: List[Span] = [("[", "")]
        for number, window in enumerate(self.windows, start=1):
            shown = window is self.windows.active
            if level and not shown and not window.activity:
                continue
            label = "%d:%s" % (number, window.label) if level == 0 or (shown and level == 1) else str(number)
            style = ("window-shown" if shown else "window-mention" if window.activity == MENTION
                     else "window-activity" if window.activity else "")
            if len(spans) > 1:
                spans.append((" ", ""))
            spans.append((label + ACTIVITY_MARKS[window.activity], style))
        spans.append(("]", ""))
        return spans

    def status_spans(self, width: int) -> Tuple[List[Span], str]:
        """The status line for a terminal ``width`` cells wide: its styled
        text (with a leading space) and the marker for its right end; whole
        fields only, the least useful left out first (STATUS_STEPS)."""
        marker = self.marker()
        room = width - 1 - (text_width(marker) + 1 if marker else 0)
        fields = self.status_fields()
        level = 0
        for step in (None,) + self.STATUS_STEPS:
            if step is not None and step.startswith("windows"):
                level = int(step.split()[1])
            elif step is not None:
                fields = [field for field in fields if field[0] != step]
            windows = self.window_list(level)
            spans = windows + ([(" ", "")] if windows and fields else []) + [
                (" | ".join(text for _, text in fields), "")]
            if sum(text_width(text) for text, _ in spans) <= room:
                break
        return [(" ", "")] + spans, marker

    def status_line(self, width: int) -> Tuple[str, str]:
        """The status line's text and marker, without styles."""
        spans, marker = self.status_spans(width)
        return "".join(text for text, _ in spans), marker

    def prompt(self, width: int) -> str:
        """What stands before the input line: a question about a paste, or
        where Enter sends (``> `` in the room, ``bob> `` talking to bob,
        his name cut to a third of the line on a narrow terminal)."""
        if self.paste_lines:
            count = len(self.paste_lines)
            for question in ("paste %d lines to %s? Enter/Esc " % (count, self.paste_window.name),
                             "paste %d lines? Enter/Esc " % count):
                if text_width(question) < width:
                    return question
            return "%d lines? Enter/Esc " % count
        window = self.windows.active
        if window.kind == ROOM and window is self.windows.room:
            return PROMPT
        name, most = window.name, max(1, width // 3 - len(PROMPT))
        if text_width(name) > most:
            name = name[:max(0, most - 1)] + "\u2026"
        return name + PROMPT

    def marker(self) -> str:
        """Shown at the right of the status line while scrolled up."""
        if not self.scrollback.scroll:
            return ""
        if self.scrollback.mentions:
            return "[%d new, %d for you, End]" % (self.scrollback.unseen, self.scrollback.mentions)
        if self.scrollback.unseen:
            return "[%d new, End]" % self.scrollback.unseen
        return "[scrolled, End]"

    # -- keys -------------------------------------------------------------

    def key(self, key: str):
        """One key: a character, or a curses key name such as KEY_LEFT."""
        if self.pasting is not None:
            self.paste_key(key)
            return
        if key == "\x03":
            self.quit("quit")
            return
        if self.trust_question is not None:
            self.answer_trust(key)
            return
        if self.escape is not None:
            key = self.after_escape(key)
            if key is None:
                return
        if key == "\x1b":
            # Esc answers "paste N lines?" at once; it may also begin Alt-
            # something or a sequence curses did not know, which the next
            # keys tell (Alt-1 comes as Esc and 1).
            if self.paste_lines:
                self.drop_paste()
            self.escape = ""
        elif key == "\x0c":
            self.redraw_all = True
        elif self.screen == "login":
            self.login_key(key)
        elif self.paste_lines:
            if key in ("\r", "\n", "KEY_ENTER"):
                self.send_paste()
        else:
            self.chat_key(key)

    def after_escape(self, key: str) -> Optional[str]:
        """The key after Esc, or after Esc [ and some of a sequence: None
        when it was taken here, else the key to handle as usual (Esc and
        then an ordinary key is that key)."""
        sequence, self.escape = self.escape, None
        if sequence == "":
            if key == "[":
                self.escape = "["
                return None
            if self.screen != "chat":
                return key
            if len(key) == 1 and key.isdigit() and key.isascii():
                self.go_to_window(int(key) or 10)       # Alt-0: window 10, as in irssi
                return None
            if key in ("KEY_LEFT", "KEY_RIGHT"):        # Alt-Left/Right on the linux console, rxvt
                self.step_window(1 if key == "KEY_RIGHT" else -1)
                return None
            return key
        # Esc [ parameters, then one final character: ECMA-48's CSI, which
        # is how terminals send bracketed paste's markers and, where
        # terminfo does not list them, Alt with the arrows.
        if len(key) == 1 and "\x40" <= key <= "\x7e":
            self.csi(sequence[1:] + key)
            return None
        if len(key) == 1 and "\x20" <= key <= "\x3f" and len(sequence) < 16:
            self.escape = sequence + key
            return None
        return key                  # not a sequence after all: what is said is lost

    def csi(self, sequence: str):
        if sequence == PASTE_START:
            self.pasting = []
        elif self.screen == "chat" and sequence in ("1;3D", "1;3C"):
            self.step_window(1 if sequence.endswith("C") else -1)

    def paste_key(self, key: str):
        """A key inside a bracketed paste: text, until the end marker."""
        if key == "KEY_ENTER":
            key = "\n"
        if len(key) != 1:
            return                  # a key curses recognised in pasted text
        self.pasting.append(key)
        if key == PASTE_END[-1] and "".join(self.pasting[-len(PASTE_END):]) == PASTE_END:
            del self.pasting[-len(PASTE_END):]
        elif len(self.pasting) < PASTE_MAX_CHARS:
            return
        text, self.pasting = "".join(self.pasting), None
        self.pasted(text)

    def login_key(self, key: str):
        form = self.form
        if key in ("\t", "KEY_DOWN"):
            form.move(1)
        elif key in ("KEY_BTAB", "KEY_UP"):
            form.move(-1)
        elif key in ("\r", "\n", "KEY_ENTER"):
            missing = form.missing()
            if missing is None:
                self.submit_login(register=False)
            else:
                form.focus = missing
                form.error = "%s, please" % form.LABELS[missing].lower()
        elif key == "\x12":                 # Ctrl-R
            self.submit_login(register=True)
        else:
            form.fields[form.focus].key(key)

    def chat_key(self, key: str):
        if key == "\t":
            self.complete()
            return
        self.completion = None
        if key in ("\r", "\n", "KEY_ENTER"):
            self.submit()
        elif key in ("\x0e", "KEY_kRIT3"):     # Ctrl-N, and Alt-Right where terminfo knows it
            self.step_window(1)
        elif key in ("\x10", "KEY_kLFT3"):     # Ctrl-P, Alt-Left
            self.step_window(-1)
        elif key == "KEY_F(2)":
            self.toggle_names()
        elif key == "KEY_PPAGE":
            if self.scrollback.page_up():
                self.load_older()
        elif key == "KEY_NPAGE":
            self.scrollback.page_down()
        elif key == "KEY_END" and self.input.cursor == len(self.input.text):
            # End moves the cursor first; once it is at the end of the line,
            # End goes back to the live bottom of the scrollback.
            self.scrollback.to_bottom()
        else:
            self.input.key(key)

    def completion_names(self) -> List[str]:
        """Names Tab offers, as irssi does: those who spoke most recently
        first, then the rest of who is online; never the user's own."""
        names, seen = [], {self.name.lower()}
        for entry in reversed(self.scrollback.entries):
            for name in ((entry.name, entry.to) if entry.kind in ("message", "private")
                         else (entry.name,) if entry.kind != "help" else ()):
                if name and name.lower() not in seen:
                    seen.add(name.lower())
                    names.append(name)
        for name in sorted(self.users, key=str.lower):
            if name.lower() not in seen:
                seen.add(name.lower())
                names.append(name)
        return names

    def completion_rooms(self) -> List[str]:
        """Rooms Tab offers: those with a window, in window order, then the
        others heard of (the account's, /list's), sorted."""
        rooms = [w.name for w in self.windows if w.kind == ROOM]
        keys = {proto.room_key(room) for room in rooms}
        return rooms + sorted((room for key, room in self.known_rooms.items() if key not in keys),
                              key=proto.room_key)

    def complete(self):
        """Tab: complete the word before the cursor as a /command at the
        start of the line, else as a name (``name: `` at the start of the
        line, to address someone, ``name `` elsewhere); Tab again puts the
        next candidate in its place."""
        line = self.input
        if self.completion is not None and (line.text, line.cursor) != self.completion[4:]:
            self.completion = None          # the line changed since the last Tab
        if self.completion is None:
            start = line.text.rfind(" ", 0, line.cursor) + 1
            word = line.text[start:line.cursor].lower()
            if start == 0 and word.startswith("/"):
                commands = COMMANDS if self.rooms else V1_COMMANDS
                candidates = [command + " " for command in commands if command.startswith(word)]
            elif self.rooms and (word.startswith("#") or re.match(r"/(join|j|part|leave) +\Z", line.text[:start])):
                prefix = proto.room_key(word if word.startswith("#") else "#" + word)
                candidates = [room + " " for room in self.completion_rooms()
                              if proto.room_key(room).startswith(prefix)]
            else:
                suffix = ": " if start == 0 else " "
                candidates = [name + suffix for name in self.completion_names()
                              if name.lower().startswith(word)]
            if not candidates:
                return
            self.completion = (start, candidates, -1, line.cursor, line.text, line.cursor)
        start, candidates, index, end = self.completion[:4]
        index = (index + 1) % len(candidates)
        line.text = line.text[:start] + candidates[index] + line.text[end:]
        line.cursor = start + len(candidates[index])
        self.completion = (start, candidates, index, line.cursor, line.text, line.cursor)

    # -- login ------------------------------------------------------------

    def submit_login(self, register: bool):
        form = self.form
        form.error = form.notice = ""
        try:
            servers = parse_servers(form.server or DEFAULT_HOST, self.default_port)
        except ValueError as exc:
            form.error, form.focus = str(exc), 0
            return
        problem = check_name(form.name)
        if problem:
            form.error, form.focus = problem, 1
            return
        if register and check_password(form.password):
            form.error, form.focus = check_password(form.password), 2
            return
        if not form.password:
            form.error, form.focus = "password, please", 2
            return
        if self.state != "offline":
            self.drop("logging in again")
            form.error = ""
        self.servers, self.turn = servers, 0
        self.host, self.port = servers[0]
        self.failed_in_round, self.unreachable = 0, []
        self.refused_servers = set()
        self.name, self.password = form.name, form.password
        self.register_first = register
        self.tls_refused = False
        form.notice = self.logging_in_words()
        self.open_connection()

    def logging_in_words(self) -> str:
        return "%s to %s%s ..." % ("registering" if self.register_first else "logging in",
                                  join_server(self.host, self.port), " over TLS" if self.tls else "")

    def open_connection(self):
        self.want_connect = True
        self.reconnect_at = None
        self.connect_deadline = clock() + CONNECT_TIMEOUT
        self.state = "connecting"

    def next_server(self):
        """The next server's turn (after the last comes the first again),
        skipping those whose certificate was refused."""
        for _ in self.servers:
            self.turn = (self.turn + 1) % len(self.servers)
            self.host, self.port = self.servers[self.turn]
            if server_key(self.host, self.port) not in self.refused_servers:
                return

    def servers_left(self) -> int:
        """How many servers a round goes through: those not refused."""
        return sum(server_key(*server) not in self.refused_servers for server in self.servers)

    def drop(self, reason: str):
        """Give up on the connection ourselves: the same bookkeeping as when
        the server goes away, and the I/O layer closes the socket."""
        self.want_close = reason
        self.connection_lost(reason)

    def send(self, verb: str, *fields: str, tag: str = ""):
        """Queue a line; sae_protocol.Exchange remembers what will answer it."""
        self.outbox += self.exchange.request(verb, *fields, tag=tag)

    # -- TLS ----------------------------------------------------------------

    def tls_plan(self) -> Optional[TlsPlan]:
        """How the next connection's handshake goes (None: no TLS). A
        certificate the user trusted (--tls-fingerprint, known_servers, or
        earlier in this session) is compared by fingerprint, which is
        stronger than any CA; otherwise the CAs and the host name decide."""
        if self.tls is None:
            return None
        if self.probing:
            return TlsPlan("probe")
        expected = self.trusted_fingerprint()[0]
        if expected:
            return TlsPlan("pin", expected=expected)
        return TlsPlan("verify", ca_file=self.tls.ca_file)

    def trusted_fingerprint(self) -> Tuple[str, str]:
        """The fingerprint this server must show, and where it comes from:
        pinned, known (known_servers) or session; ("", "") if none."""
        if self.tls.pinned:
            return self.tls.pinned, "pinned"
        key = server_key(self.host, self.port)
        known = ""
        if self.tls.known_servers:
            try:
                known = load_known_servers(self.tls.known_servers).get(key, "")
            except OSError:
                known = ""          # unreadable: as if unknown, so the user is asked
        if known:
            return known, "known"
        if key in self.session_trust:
            return self.session_trust[key], "session"
        return "", ""

    def handshake_started(self):
        """The TCP connection is up; the TLS handshake begins."""
        self.handshake_deadline = clock() + TLS_HANDSHAKE_TIMEOUT

    def secured(self, print_: str):
        """The handshake is done and the server showed the certificate whose
        fingerprint is ``print_``: go on, ask the user, or refuse."""
        self.handshake_deadline = None
        if self.probing:
            # The certificate was all this connection was for.
            self.probing = False
            self.want_close = "certificate fetched"
            self.framer = None
            self.state = "offline"
            self.trust_question = (server_key(self.host, self.port), print_)
            self.form.notice = ""
            return
        expected, source = self.trusted_fingerprint()
        if expected and expected != print_:
            self.refuse_certificate(self.changed_words(expected, print_, source))
            return
        self.secure = True
        self.connection_made()

    def changed_words(self, expected: str, offered: str, source: str) -> List[str]:
        """ssh's warning, in our words: what changed, both fingerprints,
        what it may mean, and what to do."""
        server = join_server(self.host, self.port)
        if source == "pinned":
            head = "WARNING: THE CERTIFICATE OF %s DOES NOT MATCH --tls-fingerprint" % server
            reset = ("If the server's operator confirms the new fingerprint, "
                     "give that one with --tls-fingerprint.")
        else:
            head = "WARNING: THE CERTIFICATE OF %s HAS CHANGED" % server
            reset = ("If the server's operator confirms the new fingerprint, delete the line "
                     "\"%s ...\" from %s and connect again to be asked about it."
                     % (server_key(self.host, self.port), self.tls.known_servers)
                     if source == "known" else "If the server's operator confirms the new fingerprint, "
                     "restart sae-client to be asked about it.")
        return [head,
                "Someone may be intercepting the connection to read passwords and messages, "
                "or the server was given a new certificate.",
                *fingerprint_lines("trusted:", expected),
                *fingerprint_lines("offered:", offered),
                "Not connecting. " + reset]

    def refuse_certificate(self, lines: List[str]):
        """Refuse the server for good (until the user logs in again): on the
        login form, or loud in the scrollback. While reconnecting, the
        other servers of the chat are still tried; once none is left, no
        more reconnecting."""
        server = server_key(self.host, self.port)
        self.refused_servers.add(server)
        if self.screen == "login":
            self.tls_refused = True
            self.form.error, self.form.notice = "\n".join(lines), ""
        else:
            for line in lines:
                self.say("error", line)
            if self.servers_left():
                self.say("error", "%s is left out from now on; reconnecting to the other servers" % server)
            else:
                self.tls_refused = True
        self.drop("certificate refused")

    def tls_failed(self, kind: str, detail: str):
        """The handshake failed (see tls_failure); the I/O layer has closed
        the socket. A certificate nothing vouches for is asked about on the
        login screen (trust on first use); other certificate problems are
        refused; a server that does not speak TLS is retried like one that
        is down."""
        self.handshake_deadline = None
        server = join_server(self.host, self.port)
        if kind == "unknown-ca" and self.screen == "login" and not self.tls.ca_file and not self.probing:
            # Fetch the certificate on a connection of its own (the failed
            # handshake leaves nothing to read it from), then ask.
            self.probing = True
            self.open_connection()
            return
        if kind == "unknown-ca":
            if self.tls.ca_file:
                why = "it is not signed by the CA in %s (%s)" % (self.tls.ca_file, detail)
            elif server_key(self.host, self.port) not in self.connected_servers:
                why = ("nothing vouches for it (%s), and a certificate is only asked about on the login "
                       "screen: give --tls-fingerprint, or log in to %s once by itself" % (detail, server))
            else:
                why = ("nothing vouches for it (%s), and the certificate this client trusted "
                       "was signed by a known CA; not asking in the middle of a session" % detail)
            self.refuse_certificate(["the certificate of %s cannot be verified: %s" % (server, why)])
        elif kind == "expired":
            self.refuse_certificate(["the certificate of %s is out of date (%s): the server's operator "
                                     "must renew it; not connecting" % (server, detail)])
        elif kind == "hostname":
            self.refuse_certificate(["the certificate of %s is for another host name (%s); connect with "
                                     "a name it is for; not connecting" % (server, detail)])
        elif kind == "untrusted":
            self.refuse_certificate(["the certificate of %s is refused: %s; not connecting" % (server, detail)])
        elif kind == "not-tls":
            self.probing = False
            self.connection_lost("%s; is the server started with --tls-cert? Its plain port, %d by "
                                 "default, takes sae-client without --tls" % (detail, DEFAULT_PORT))
        else:
            self.probing = False
            self.connection_lost("TLS failed: %s" % detail)

    def answer_trust(self, key: str):
        """y trusts the certificate asked about, and connects; n or Esc
        does not. Other keys are ignored, so that typing on does not answer."""
        server, print_ = self.trust_question
        if key in ("y", "Y"):
            self.trust_question = None
            self.session_trust[server] = print_
            self.form.error = ""
            try:
                remember_server(self.tls.known_servers, server, print_)
                self.form.notice = "trusted, and kept in %s; logging in ..." % self.tls.known_servers
            except OSError as exc:
                self.form.notice = "trusted for this session only: cannot write %s (%s); logging in ..." % (
                    self.tls.known_servers, exc.strerror or exc)
            self.open_connection()
        elif key in ("n", "N", "\x1b"):
            self.trust_question = None
            self.form.error = "not connecting: the certificate of %s was not trusted" % join_server(
                self.host, self.port)
            self.form.notice = ""

    def trust_question_lines(self) -> List[str]:
        server, print_ = self.trust_question
        return ["The certificate of %s cannot be verified: it is self-signed, or signed by a CA this "
                "computer does not know." % join_server(self.host, self.port),
                *fingerprint_lines("", print_),
                "Trust it only if this is the fingerprint the server's operator gave you (openssl x509 "
                "-noout -fingerprint -sha256 -in cert.pem). It is kept in %s." % self.tls.known_servers,
                "Trust it and connect? y/n"]

    def connection_made(self):
        self.connected_servers.add(server_key(self.host, self.port))
        self.framer = LineFramer(max_line=MAX_SERVER_LINE_BYTES)
        self.want_connect = False
        self.state = "logging in"
        self.last_heard, self.ping_sent_at = clock(), None
        self.exchange.clear()
        # Asked on every connection, since a restarted server may be a newer
        # (or older) one; answered before LOGIN is, so the client knows
        # which protocol it speaks before the chat screen shows.
        self.send("CAP", proto.ROOMS_CAPABILITY)
        # IRC guests (a server with --irc-guests) are then marked in USERS.
        # A server without guests refuses it, which changes nothing else.
        self.send("CAP", proto.GUESTS_CAPABILITY)
        if self.register_first:
            self.send("REGISTER", self.name, self.password)
        else:
            self.send_login()

    def send_login(self):
        self.send("LOGIN", self.name, self.password)

    def login_failed(self, code: int, text: str):
        words = error_in_words(code, text)
        if code == proto.KICKED and self.logged_in_once:
            # Kicked for a while: wait it out, then carry on by ourselves.
            seconds = text.partition(" ")[0]
            self.kicked_for = int(seconds) + 1 if seconds.isdigit() else 60
            self.say("error", words)
            self.drop("kicked")
            return
        self.screen = "login"
        self.form.error, self.form.notice = words, ""
        self.form.focus = 1 if code == proto.NAME_TAKEN else 2
        self.drop("login failed")

    # -- the server speaks ------------------------------------------------

    def receive(self, data: bytes):
        self.last_heard, self.ping_sent_at = clock(), None
        if self.framer is None:
            return
        for frame in self.framer.feed(data):
            if not isinstance(frame, bytes):
                continue            # an overlong line: not the protocol we know
            event = parse_server_line(frame)
            if event is None:
                continue            # a client ignores what it does not understand
            handler = getattr(self, "on_" + event.kind.lower(), None)
            answer = self.exchange.hear(event)
            if handler:
                handler(event, answer)
        if self.paste_queue:
            self.pump_paste()

    def _is_me(self, name: str) -> bool:
        return proto.room_key(name) == proto.room_key(self.name)

    def mentions_me(self, event) -> bool:
        """Someone else's message naming the user as a word of its own:
        "alice:", "thanks alice." and "@alice" do; "malice" and "alice_2"
        do not."""
        if self._is_me(event.name) or not self.name:
            return False
        pattern = r"(?<![A-Za-z0-9_.-])%s(?![A-Za-z0-9_-])(?!\.[A-Za-z0-9_-])" % re.escape(self.name)
        return re.search(pattern, event.text, re.IGNORECASE) is not None

    def add_message(self, window: Window, entry: Entry, event, live: bool, unread: bool):
        """A message into its window. ``live``: said just now; ``unread``:
        new to the user (live, or caught up after a reconnect), which marks
        a window not shown."""
        entry.highlight = self.mentions_me(event)
        if not window.scrollback.add(entry, live=live) or not unread or self._is_me(event.name):
            return
        private = entry.kind == "private"
        elsewhere = self.windows.notice(window, MENTION if entry.highlight or private else ACTIVITY)
        if live and (entry.highlight or (private and elsewhere)):
            # One bell per message, not for history: what was said while
            # away is seen at once. A private message rings when it lands
            # in a window not shown, as irssi's does.
            self.bells += 1

    def is_default_room(self, room: str) -> bool:
        return proto.room_key(room) == proto.room_key(self.default_room)

    def room_window(self, room: str) -> Window:
        """The window of a room, opened at the end if there is none yet
        (not shown), with the room's name as the server spells it."""
        window = self.windows.room if self.is_default_room(room) else self.windows.open(ROOM, room)
        window.name = room
        self.known_rooms[proto.room_key(room)] = room
        return window

    def message_window(self, event) -> Window:
        """Where a MSG, RMSG or PRIV goes: MSG to the default room, RMSG to
        its room's window, PRIV to the conversation with the other account
        (each opened on its first message, with the name as the server
        spells it)."""
        if event.kind == "MSG":
            return self.windows.room
        if event.kind == "RMSG":
            return self.room_window(event.room)
        peer = event.to if self._is_me(event.name) else event.name
        window = self.windows.open(CONVERSATION, peer)
        window.name = peer
        return window

    def on_msg(self, event, answer):
        # A message line inside an answer that is not complete is a line of
        # history (LOGIN's, or a HISTORY's); the one that completes a SAY,
        # RSAY or TELL is its echo, said just now.
        request = answer.request
        history = request is not None and not answer.complete
        if history:
            # A history answer's lines come oldest first and uninterrupted:
            # the last one read is its newest.
            self.history_newest = event.id
        if event.kind == "MSG" or self.rooms:
            self.last_id = max(self.last_id, event.id)
        private = event.kind == "PRIV"
        if private:
            self._forget_unconfirmed(("TELL",), event.name, event.text, event.to)
        else:
            self._forget_unconfirmed(("SAY", "RSAY"), event.name, event.text,
                                     event.room or self.default_room)
        time, day = local_when(event.ts)
        # What the first login brings and pages fetched with PgUp are old
        # news; what a reconnection catches up on is not.
        unread = not history or request.tag == "after" or (request.verb == "LOGIN" and self.resumed)
        entry = Entry("private" if private else "message", event.text, event.name,
                      event.to if private else "", msg_id=event.id, time=time, day=day)
        self.add_message(self.message_window(event), entry, event, live=not history, unread=unread)

    on_rmsg = on_msg
    on_priv = on_msg

    def on_ok(self, event, answer):
        request = answer.request
        if request is None:
            return
        if event.name == "CAP":
            if request.fields[:1] != (proto.GUESTS_CAPABILITY,):
                self.rooms_offered(event.room or DEFAULT_ROOM)
        elif event.name == "REGISTER":
            self.form.notice = "registered %s; logging in ..." % event.text
            self.register_first = False
            self.send_login()
        elif event.name == "LOGIN":
            self.logged_in(event.text or self.name)
        elif event.name == "HISTORY":
            self.history_received(request, event.count)
        elif event.name == "ROOMS":
            self.rooms_received()
        elif event.name == "LIST":
            self.say("info", "%d room%s; /join #room joins one" % (
                event.count, "" if event.count == 1 else "s"))
        elif event.name in ("JOIN", "NAMES"):
            self.members_received(request, event.room or request.room)

    def rooms_offered(self, default_room: str):
        """OK CAP rooms: the server speaks v1.1. Window 1 is its default
        room, whatever that is called there."""
        if self.rooms is False:
            self.say("info", "the server has rooms now: /join #room, /list")
        self.rooms = True
        self.default_room = default_room
        self.room_window(default_room)

    def no_rooms(self):
        """ERR to CAP: a server of protocol v1.0. The client stays as it was
        for v1 (one room, private conversations), and says so once."""
        self.rooms = False
        if not self.told_no_rooms:
            self.told_no_rooms = True
            self.notices.append("this server has no rooms (protocol v1): one room, %s, "
                                "and private conversations" % self.windows.room.name)

    def logged_in(self, name: str):
        resuming = self.logged_in_once and self.last_id > 0
        self.resumed = resuming
        self.name = name
        self.state = "online"
        self.screen = "chat"
        self.form.notice = self.form.error = ""
        self.attempt = 0
        self.failed_in_round, self.unreachable = 0, []
        self.kicked_for = 0
        self.banned = False
        self.history_newest = 0
        if self.rooms:
            # Which rooms the account is in now (another session may have
            # joined or left some meanwhile); their windows follow it.
            self.room_lines = []
            self.send("ROOMS")
        # Which server, since in a cluster it may be another than before.
        back = "reconnected to %s as %s" % (join_server(self.host, self.port), name)
        if resuming:
            self.say("info", back + "; fetching what was said meanwhile")
            self.send_resync(self.last_id)
        elif self.logged_in_once:
            # Nothing seen before the drop: LOGIN's history is all there is.
            self.say("info", back)
        else:
            # Said once LOGIN's history is in, so that it comes after that
            # history in the scrollback, as it does in time.
            self.logged_in_once = True
            self.greeting = "logged in as %s; /help lists the commands" % name
        self.windows.room.loaded = True     # LOGIN's history is the default room's

    def send_resync(self, after: int):
        """Ask for what came after ``after``: with rooms, in every room and
        private conversation at once (HISTORY *); else in the room."""
        if self.rooms:
            self.send("HISTORY", proto.EVERYTHING, str(RESYNC_PAGE), "after=%d" % after, tag="after")
        else:
            self.send("HISTORY", str(RESYNC_PAGE), "after=%d" % after, tag="after")

    def history_window(self, request: Request) -> Optional[Window]:
        """The window a HISTORY request fetched for (None: HISTORY *, or a
        window closed since)."""
        target = request.fields[0] if request.fields else ""
        if target.startswith("#"):
            return self.windows.find(ROOM, target) or (
                self.windows.room if self.is_default_room(target) else None)
        if target.startswith("@"):
            return self.windows.find(CONVERSATION, target[1:])
        return None if target == proto.EVERYTHING else self.windows.room

    def history_received(self, request: Request, count: int):
        """OK HISTORY: the end of LOGIN's history, or of a HISTORY we asked for."""
        room = self.windows.room.scrollback
        if request.verb == "LOGIN":
            if count == 0 and not room.oldest_id():
                room.oldest_reached = True
            if self.greeting:
                self.say("info", self.greeting)
                self.greeting = ""
            for notice in self.notices:
                self.say("info", notice)
            self.notices = []
        elif request.tag == "after":
            if count >= RESYNC_PAGE:
                self.send_resync(self.history_newest)
            else:
                self.give_back_unconfirmed()
        elif request.tag == "before":
            self.loading_older = False
            window = self.history_window(request)
            if window is not None:
                if count < HISTORY_PAGE:
                    window.scrollback.oldest_reached = True
                    self.say_at_top(window, "no older messages")
                # The PgUp that asked for this page could not move; now it
                # can (the user's own scrolling meanwhile is kept: this adds
                # to it).
                window.scrollback.page_up()
        elif request.tag == "recent":
            window = self.history_window(request)
            if window is not None and count < HISTORY_PAGE:
                window.scrollback.oldest_reached = True
        self.history_newest = 0

    def say_at_top(self, window: Window, text: str):
        entry = Entry("info", text)
        entry.day = None            # above every day line, not a day of its own
        window.scrollback.add(entry, at_top=True)

    def on_err(self, event, answer):
        head = answer.request or Request("")
        if head.verb == "CAP":
            if head.fields[:1] != (proto.GUESTS_CAPABILITY,):
                self.no_rooms()
        elif head.verb in ("LOGIN", "REGISTER"):
            self.login_failed(event.code, event.text)
        elif head.verb in ("SAY", "TELL", "RSAY"):
            # Said in the window the message was for, where the user looks
            # for it; marked there if another window is shown.
            window = self.request_window(head)
            window.scrollback.add(Entry("error", "not sent: %s" % error_in_words(event.code, event.text, head.to)))
            self.windows.notice(window, ACTIVITY)
            if event.code in (proto.UNAVAILABLE, proto.SLOW_DOWN):   # worth trying again as it is
                self.give_back(head)
        elif head.verb == "HISTORY" and head.tag == "recent" and event.code == proto.NOT_FOUND \
                and head.fields[0].startswith("@"):
            pass        # a conversation with no such account: what is said there says so
        elif head.verb == "HISTORY":
            if head.tag == "before":
                self.loading_older = False
            if head.tag == "recent" and event.code == proto.UNAVAILABLE:
                window = self.history_window(head)
                if window is not None:
                    window.loaded = False       # asked again when next shown
            self.say("error", "history unavailable: %s" % error_in_words(event.code, event.text))
        elif head.verb == "JOIN":
            window = self.windows.find(ROOM, head.room)
            if window is not None and not window.joined and window is not self.windows.room \
                    and not window.scrollback.oldest_id():
                self.windows.close(window)      # opened for this JOIN only
            self.say("error", "cannot join %s: %s" % (head.room, error_in_words(event.code, event.text)))
        elif head.room:
            window = self.windows.find(ROOM, head.room) or self.windows.active
            window.scrollback.add(Entry("error", error_in_words(event.code, event.text)))
        else:
            self.say("error", error_in_words(event.code, event.text))

    def request_window(self, request: Request) -> Window:
        """The window a SAY, RSAY or TELL was said in (the one shown, if
        that window has been closed since)."""
        if request.verb == "TELL":
            return self.windows.find(CONVERSATION, request.to) or self.windows.active
        if request.verb == "RSAY" and not self.is_default_room(request.room):
            return self.windows.find(ROOM, request.room) or self.windows.active
        return self.windows.room

    def give_back(self, request: Request):
        """Keep refused text for resending: back in the input line if it is
        empty and Enter would send it where it was meant to go, else in the
        input history."""
        line = request.text
        if request.verb == "TELL":
            line = "/msg %s %s" % (request.to, line)
        elif line.startswith("/"):
            line = "/" + line
        if not self.input.text and (request.verb == "TELL" or self.windows.active is self.request_window(request)):
            self.input.set(line)
            self.say("info", "the text is back in the input line: Enter sends it again")
        else:
            self.input.remember(line)
            self.say("info", "the text is in the input history: Up recalls it")

    def _forget_unconfirmed(self, verbs, name, text, where):
        """A message of ours came back: it is no longer unconfirmed.
        ``where`` is its room, or the account it was told to."""
        if not self.unconfirmed or not self._is_me(name):
            return
        for index, request in enumerate(self.unconfirmed):
            if request.verb not in verbs or request.text.strip() != text.strip():
                continue
            if request.verb == "TELL" and proto.room_key(request.to) != proto.room_key(where):
                continue
            if request.verb == "RSAY" and proto.room_key(request.room) != proto.room_key(where):
                continue
            del self.unconfirmed[index]
            return

    def give_back_unconfirmed(self):
        """After catching up: what we sent before the drop and did not see
        come back was probably lost."""
        for request in self.unconfirmed:
            self.say("error", "not confirmed before the connection dropped: %s" % request.text)
            self.give_back(request)
        self.unconfirmed = []

    def on_users(self, event, answer):
        mark = proto.GUEST_MARK
        self.users = [name[:-len(mark)] if name.endswith(mark) else name for name in event.names]
        self.guests = {proto.room_key(name[:-len(mark)]) for name in event.names if name.endswith(mark)}
        self.say("info", "%d online: %s" % (len(self.users), " ".join(self.shown_name(name) for name in self.users)))

    def shown_name(self, name: str) -> str:
        """A user's name as the lists of who is online show it."""
        return name + " (guest)" if proto.room_key(name) in self.guests else name

    def is_online(self, name: str) -> bool:
        key = proto.room_key(name)
        return any(proto.room_key(user) == key for user in self.users)

    def presence_windows(self, name: str) -> List[Window]:
        """Where a JOIN or LEAVE (an account came online, went offline) is
        shown: without rooms, the room (everyone online is in it); with
        rooms, each room of the user's that the account is a member of, as
        irssi shows a quit in every channel shared with the one who quits.
        And the conversation with that account, if open."""
        key = proto.room_key(name)
        if self.rooms:
            windows = [w for w in self.windows if w.kind == ROOM and w.joined
                       and any(proto.room_key(member) == key for member in w.members)]
        else:
            windows = [self.windows.room]
        conversation = self.windows.find(CONVERSATION, name)
        return windows + ([conversation] if conversation else [])

    def on_join(self, event, answer):
        if not self.is_online(event.name):
            self.users.append(event.name)
        kind = "online" if self.rooms else "join"
        for window in self.presence_windows(event.name):
            window.scrollback.add(Entry(kind, name=event.name))

    def on_leave(self, event, answer):
        key = proto.room_key(event.name)
        self.users = [u for u in self.users if proto.room_key(u) != key]
        self.guests.discard(key)
        kind = "offline" if self.rooms else "leave"
        for window in self.presence_windows(event.name):
            window.scrollback.add(Entry(kind, event.text, name=event.name))

    # -- rooms (protocol v1.1) ---------------------------------------------

    def on_room(self, event, answer):
        request = answer.request
        if request is None:
            return
        self.known_rooms[proto.room_key(event.room)] = event.room
        if request.verb == "ROOMS":
            self.room_lines.append(event)
        elif request.verb == "LIST":
            self.say("info", "%s  %d of %d online%s" % (
                event.room, event.online, event.count, "  " + event.text if event.text else ""))

    def rooms_received(self):
        """OK ROOMS: the rooms the account is in, at login or after a
        reconnect. Each gets its window, opened at the end in the server's
        order (sorted); a room window the account is no longer in stays
        open and says so. Window 1 stays the default room's even if the
        account has left it (see docs/CLIENT.md)."""
        listed = {}
        for line in self.room_lines:
            window = self.room_window(line.room)
            window.joined = True
            window.topic = line.text
            listed[window.key] = window
        self.room_lines = []
        for window in self.windows:
            if window.kind == ROOM and window.joined and window.key not in listed:
                self.left(window, "you are not in %s: /join %s to go back in" % (window.name, window.name))
        for window in listed.values():
            # Their members: who is in them, for /names, Tab and where a
            # JOIN or LEAVE is shown. NAMES costs nothing against flood.
            self.send("NAMES", window.name, tag="quiet")
        self.window_shown(self.windows.active)

    def left(self, window: Window, why: str):
        """The account is no longer in the room of ``window``."""
        window.joined = False
        window.loaded = False       # joined again, its history is asked for again
        window.members = []
        window.scrollback.add(Entry("info", why))

    def on_joined(self, event, answer):
        window = self.room_window(event.room)
        if self._is_me(event.name):
            window.joined = True
        if not any(proto.room_key(member) == proto.room_key(event.name) for member in window.members):
            window.members.append(event.name)
        window.scrollback.add(Entry("join", name=event.name, to=event.room))

    def on_parted(self, event, answer):
        window = self.windows.find(ROOM, event.room)
        if window is None:
            return
        key = proto.room_key(event.name)
        if not self._is_me(event.name):
            window.members = [m for m in window.members if proto.room_key(m) != key]
            window.scrollback.add(Entry("leave", event.text, name=event.name, to=event.room))
            return
        reason = " (%s)" % event.text if event.text else ""
        if window is self.windows.room:
            # Window 1 stays, saying how to come back.
            self.left(window, "you left %s%s; /join %s to go back in" % (window.name, reason, window.name))
        else:
            # As irssi does: leaving a room closes its window; where the user
            # lands, a line says what became of it.
            self.windows.close(window)
            self.say("info", "you left %s%s" % (window.name, reason))

    def on_topic(self, event, answer):
        window = self.windows.find(ROOM, event.room) or (
            self.windows.room if self.is_default_room(event.room) else None)
        if window is None:
            return
        request = answer.request
        asked = request is not None and (
            request.verb == "JOIN" or (request.verb == "TOPIC" and not "".join(request.fields[1:])))
        window.topic = event.text
        if not event.name:
            text = "%s has no topic" % window.name
        elif asked:
            text = ("topic of %s: %s (set by %s, %s)" % (window.name, event.text, event.name, self.when(event.ts))
                    if event.text else "%s has no topic (cleared by %s, %s)" % (
                        window.name, event.name, self.when(event.ts)))
        elif event.text:
            text = "%s changed the topic of %s to: %s" % (event.name, window.name, event.text)
        else:
            text = "%s cleared the topic of %s" % (event.name, window.name)
        if asked or event.name:
            window.scrollback.add(Entry("info", text))

    @staticmethod
    def when(timestamp: str) -> str:
        """A protocol timestamp as the day and time the user reads."""
        time, day = local_when(timestamp)
        return "%s %s" % (day.strftime("%d %b %Y").lstrip("0"), time) if day else time

    def on_members(self, event, answer):
        if answer.request is not None:
            self.member_lines.setdefault(proto.room_key(event.room), []).extend(event.names)

    def members_received(self, request: Request, room: str):
        """OK JOIN or OK NAMES: the room's members are all in."""
        names = self.member_lines.pop(proto.room_key(room), [])
        window = self.windows.find(ROOM, room) or (self.windows.room if self.is_default_room(room) else None)
        if window is None:
            return
        if request.verb == "JOIN":
            window = self.room_window(room)     # as the server spells it
            window.joined = True
        window.members = names
        if request.tag != "quiet":
            window.scrollback.add(Entry("info", self.members_in_words(window)))
        if request.verb == "JOIN" and window is self.windows.active:
            self.window_shown(window)

    def members_in_words(self, window: Window) -> str:
        """A room's members, who of them is online first: "#homework: 3
        members, 2 online: alice bob; offline: carol"."""
        online = [m for m in window.members if self.is_online(m)]
        offline = [m for m in window.members if not self.is_online(m)]
        count = len(window.members)
        text = "%s: %d member%s, %d online" % (window.name, count, "" if count == 1 else "s", len(online))
        text += ": " + " ".join(online) if online else ""
        return text + ("; offline: " + " ".join(offline) if offline else "")

    def on_deleted(self, event, answer):
        window = self.windows.find(ROOM, event.room)
        if window is None:
            return
        reason = " (%s)" % event.text if event.text else ""
        self.left(window, "%s was deleted by the server's operator%s; /join %s makes a new room"
                  % (window.name, reason, window.name))
        self.windows.notice(window, ACTIVITY)

    def window_shown(self, window: Window):
        """A window came into view: with rooms, the first time a room's or
        conversation's window is shown its recent history is fetched (the
        default room's comes with LOGIN), as Slack shows a channel's."""
        if not self.rooms or self.state != "online" or window.loaded or not window.joined:
            return
        window.loaded = True
        self.send("HISTORY", self.history_target(window), str(HISTORY_PAGE), tag="recent")

    def history_target(self, window: Window) -> str:
        return window.name if window.kind == ROOM else "@" + window.name

    def on_info(self, event, answer):
        self.say("info", event.text)

    def on_bye(self, event, answer):
        if not self.done:
            self.say("info", "the server closes the connection: %s" % event.text)

    def on_kicked(self, event, answer):
        self.kicked_for = event.count + 1
        self.say("error", "you were kicked for %d seconds%s" % (
            event.count, ": %s" % event.text if event.text else ""))

    def on_banned(self, event, answer):
        self.banned = True
        self.ban_reason = event.text
        self.say("error", self.banned_words())

    def banned_words(self) -> str:
        # A ban is for good: the client will not reconnect, so it says what
        # is left to do rather than promising to send anything later.
        return "you are banned from this server%s; /quit to leave" % (
            " (%s)" % self.ban_reason if self.ban_reason else "")

    def on_ping(self, event, answer):
        self.send("PONG", *([event.text] if event.text else []))

    # -- the user speaks --------------------------------------------------

    def submit(self):
        action = parse_input(self.input.text)
        if action is None:
            return
        handler, needs_server = self.ACTIONS[action.kind]
        if needs_server and self.banned:
            self.refuse(self.banned_words())
        elif needs_server and self.state != "online":
            self.refuse("not connected; Up recalls the line to send it once we are back")
        else:
            handler(self, action)

    def do_help(self, action: Action):
        self.input.commit()
        for command, words in help_lines(bool(self.rooms)):
            self.scrollback.add(Entry("help", words, command))

    def do_local(self, action: Action):
        self.refuse(action.text)

    def do_names(self, action: Action):
        """/names: with rooms, in a room's window, that room's members
        (asked afresh); elsewhere, and without rooms, shows or hides the
        list of who is online, as F2 does."""
        window = self.windows.active
        if self.rooms and window.kind == ROOM:
            if self.room_command(action, window) is not None:
                self.input.commit()
                self.send("NAMES", window.name)
            return
        self.input.commit()
        self.toggle_names()

    def do_quit(self, action: Action):
        self.input.commit()
        self.quit(action.text or "quit")

    def do_window(self, action: Action):
        number = int(action.text)
        if self.windows.get(number) is None:
            self.refuse("there is no window %d: %s" % (number, self.windows_in_words()))
            return
        self.input.commit()
        self.go_to_window(number)

    def do_query(self, action: Action):
        problem = check_name(action.name)
        if problem:
            self.refuse("/query %s: %s" % (action.name, problem))
            return
        self.input.commit()
        self.windows.show(self.windows.open(CONVERSATION, action.name))

    def do_close(self, action: Action):
        window = self.windows.get(int(action.text)) if action.text else self.windows.active
        if window is None:
            self.refuse("there is no window %s: %s" % (action.text, self.windows_in_words()))
        elif window is self.windows.room:
            self.refuse("window %d is the room %s; it stays open" % (self.windows.number(window), window.name))
        elif window.kind == ROOM and window.joined:
            self.refuse("window %d is the room %s: /part leaves it and closes its window"
                        % (self.windows.number(window), window.name))
        else:
            self.input.commit()
            self.windows.close(window)

    def do_who(self, action: Action):
        self.input.commit()
        self.send("WHO")

    def do_say(self, action: Action):
        """Text typed in a window goes to that window's room or conversation."""
        window = self.windows.active
        if window.kind == ROOM and not window.joined:
            self.refuse("you are not in %s: /join %s to go back in" % (window.name, window.name))
            return
        line = self.message_fields(window, action.text)
        if not self.too_long(line):
            self.input.commit()
            self.send(*line)

    def do_tell(self, action: Action):
        """/msg NAME text: sent, and NAME's window opened (or gone to), so
        that the answer is read where it comes."""
        problem = check_name(action.name)
        if problem:
            self.refuse("/msg %s: %s" % (action.name, problem))
            return
        line = ("TELL", action.name, action.text)
        if not self.too_long(line):
            self.input.commit()
            self.windows.show(self.windows.open(CONVERSATION, action.name))
            self.send(*line)

    def room_command(self, action: Action, window: Optional[Window] = None) -> Optional[Window]:
        """The room window a room command is about (``window``, else the one
        shown), or None after saying why there is none: the server has no
        rooms, the window is a conversation, or the account left the room."""
        verb = "/" + action.kind
        if not self.rooms:
            self.refuse("%s needs rooms, which this server does not offer yet" % verb)
            return None
        window = window or self.windows.active
        if window.kind != ROOM:
            self.refuse("%s is about a room, and this window is the conversation with %s" % (verb, window.name))
            return None
        if not window.joined:
            self.refuse("you are not in %s: /join %s to go back in" % (window.name, window.name))
            return None
        return window

    def do_join(self, action: Action):
        """/join #room: its window is opened (or gone to) at once, and the
        answer fills it: topic, members, then its recent history."""
        if not self.rooms:
            self.room_command(action)
            return
        self.input.commit()
        window = self.windows.find(ROOM, action.name)
        if window is None and self.is_default_room(action.name):
            window = self.windows.room
        if window is None:
            window = self.windows.open(ROOM, action.name)
            window.joined = False           # until the server says so
        self.windows.show(window)
        self.send("JOIN", action.name)

    def do_part(self, action: Action):
        window = None
        if action.name:
            window = self.windows.find(ROOM, action.name)
            if window is None and self.rooms:
                self.refuse("you are not in %s" % action.name)
                return
        window = self.room_command(action, window)
        if window is not None:
            self.input.commit()
            self.send("PART", window.name, *([action.text] if action.text else []))

    def do_topic(self, action: Action):
        window = self.room_command(action)
        if window is None:
            return
        topic = action.text.strip()
        line = ("TOPIC", window.name) + ((topic,) if topic else ())
        if not self.too_long(line):
            self.input.commit()
            self.send(*line)

    def do_list(self, action: Action):
        if not self.rooms:
            self.room_command(action)
            return
        self.input.commit()
        self.send("LIST")

    # What each Action does, and whether it needs the server (refused while
    # offline or banned).
    ACTIONS: Dict[str, Tuple[Callable[["Chat", Action], None], bool]] = {
        "help": (do_help, False), "local": (do_local, False), "names": (do_names, False),
        "quit": (do_quit, False), "window": (do_window, False), "query": (do_query, False),
        "close": (do_close, False), "who": (do_who, True), "say": (do_say, True), "tell": (do_tell, True),
        "join": (do_join, True), "part": (do_part, True), "topic": (do_topic, True), "list": (do_list, True),
    }

    def message_fields(self, window: Window, text: str) -> Tuple[str, ...]:
        """The request that says ``text`` in ``window``: SAY in the default
        room, RSAY in another, TELL to the other account in a conversation."""
        if window.kind == CONVERSATION:
            return ("TELL", window.name, text)
        if window is self.windows.room or not self.rooms:
            return ("SAY", text)
        return ("RSAY", window.name, text)

    def too_long(self, line: Tuple[str, ...]) -> bool:
        """Refuse a line the server would refuse for its length."""
        size = len(format_command(*line)) - 1       # without its newline
        if size > MAX_LINE_BYTES:
            self.refuse("too long to send: %d bytes, at most %d" % (size, MAX_LINE_BYTES))
            return True
        return False

    # -- windows ----------------------------------------------------------

    def go_to_window(self, number: int):
        """Alt-digit, Esc digit, /win N: a window that is not there is
        nothing to go to (as in irssi, the key does nothing)."""
        window = self.windows.get(number)
        if window is not None:
            self.windows.show(window)

    def step_window(self, delta: int):
        self.windows.step(delta)

    def windows_in_words(self) -> str:
        count = len(self.windows)
        return "there is only window 1" if count == 1 else "windows are 1 to %d" % count

    # -- bracketed paste ---------------------------------------------------

    def pasted(self, text: str):
        """A bracketed paste is over. One line joins the input line, as if
        typed; several become a question (``prompt``): Enter sends them,
        each a message to the window they were pasted in, Esc drops them."""
        lines = re.split(r"\r\n|\r|\n", text)
        if self.screen == "login":
            self.form.fields[self.form.focus].insert(next((line for line in lines if line), ""))
            return
        said = [line for line in lines if line.strip()]
        if len(said) <= 1:
            self.input.insert(said[0] if said else text)
            return
        # What was typed before and after the cursor is part of the first
        # and last pasted lines, as it would be had the paste been typed.
        draft = self.input
        whole = draft.text[:draft.cursor] + text + draft.text[draft.cursor:]
        window = self.windows.active
        messages = []
        for line in re.split(r"\r\n|\r|\n", whole):
            line = _cleaned_input(line)
            if not line.strip():
                continue            # nothing to say; the server refuses a blank SAY
            message = self.message_fields(window, line)
            size = len(format_command(*message)) - 1
            if size > MAX_LINE_BYTES:
                self.say("error", "paste not sent: its line %d is %d bytes, at most %d"
                         % (len(messages) + 1, size, MAX_LINE_BYTES))
                return
            messages.append(message)
        self.paste_lines, self.paste_window = messages, window
        self.paste_draft = (draft.text, draft.cursor)
        draft.set("")

    def _restore_draft(self):
        self.input.set(self.paste_draft[0])
        self.input.cursor = self.paste_draft[1]
        self.paste_lines, self.paste_window = [], None

    def drop_paste(self):
        count = len(self.paste_lines)
        self._restore_draft()
        self.say("info", "%d pasted lines dropped" % count)

    def send_paste(self):
        lines = self.paste_lines
        if self.banned or self.state != "online":
            self._restore_draft()
            self.say("error", self.banned_words() if self.banned else "not connected: the paste was not sent")
            return
        self.paste_lines, self.paste_window = [], None
        self.paste_queue.extend(lines)
        self.pump_paste()

    def pump_paste(self):
        """Send pasted lines while fewer than PASTE_IN_FLIGHT messages wait
        for their echo; each echo lets the next one go."""
        if self.state != "online":
            return
        in_flight = sum(request.verb in proto.MESSAGE_VERBS for request in self.exchange.waiting)
        while self.paste_queue and in_flight < PASTE_IN_FLIGHT:
            self.send(*self.paste_queue.popleft())
            in_flight += 1

    def refuse(self, why: str):
        """A line that cannot go out: say why and empty the input, as irssi
        does, so that what is typed next is not glued onto it; the line
        stays in the input history for Up to bring back and correct."""
        self.input.commit()
        self.say("error", why)

    def toggle_names(self):
        self.show_names = not self.show_names
        # Hidden until now, the scrollback was as wide as the terminal.
        if self.show_names and self.scrollback.width < NAMES_MIN_COLS:
            self.say("info", "the list of who is online shows on terminals %d columns wide or more; "
                     "/who lists them here" % NAMES_MIN_COLS)

    def names_width(self, cols: int) -> int:
        """Columns the list of who is online takes at the right (0: none)."""
        return NAMES_PANE if self.show_names and cols >= NAMES_MIN_COLS else 0

    def names_pane(self, height: int) -> List[Tuple[str, str]]:
        """The list of who is online, a (text, style) per row: how many,
        then the names sorted, the last row saying how many more there
        are when they do not all fit."""
        if self.state != "online":
            return [("offline", "")]
        width = NAMES_PANE - 2
        rows = [("%d online" % len(self.users), "")]
        names = sorted(self.users, key=str.lower)
        if len(names) > height - 1:
            shown = max(0, height - 2)
            names, more = names[:shown], len(names) - shown
        else:
            more = 0
        for name in names:
            shown = self.shown_name(name)
            if text_width(shown) > width:
                shown = shown[:width - 1] + "\u2026"
            rows.append((shown, "@" + name))
        if more:
            rows.append(("+%d more" % more, ""))
        return rows[:max(0, height)]

    def load_older(self):
        """PgUp past the oldest line of the window shown: ask for the page
        of messages before it, where the protocol can."""
        window = self.windows.active
        if window.kind == CONVERSATION and not self.rooms:
            self.load_older_conversation(window)
            return
        room = window.scrollback
        if (self.loading_older or room.oldest_reached or self.state != "online" or not window.joined):
            return
        oldest = room.oldest_id()
        if oldest is not None and oldest <= 1:
            room.oldest_reached = True
            return
        if not self.rooms:
            if oldest is None:
                room.oldest_reached = True
                return
            self.loading_older = True
            self.send("HISTORY", str(HISTORY_PAGE), "before=%d" % oldest, tag="before")
            return
        # With rooms: the room's or the conversation's own history, the
        # newest page first if nothing of it is on hand yet.
        self.loading_older = True
        bound = ("before=%d" % oldest,) if oldest is not None else ()
        self.send("HISTORY", self.history_target(window), str(HISTORY_PAGE), *bound, tag="before")

    def load_older_conversation(self, window: Window):
        """Protocol v1's HISTORY is the room's only: the server stores
        private messages but gives none back (v1.1's HISTORY @name does)."""
        if not window.scrollback.oldest_reached:
            window.scrollback.oldest_reached = True
            self.say_at_top(window, "older private messages cannot be fetched from this server")

    def quit(self, reason: str):
        if self.framer is not None:
            self.send("QUIT", reason)
        self.done = True

    # -- the connection drops, timers fire ---------------------------------

    def connection_lost(self, reason: str):
        if self.state == "offline":
            return                  # already dealt with (we dropped it first)
        was_online = self.state == "online"
        self.secure = False
        self.handshake_deadline = None
        self.probing = False
        self.framer = None
        self.want_connect = False
        self.outbox.clear()
        # Whatever we said that the server had not echoed may be lost; the
        # catch-up after reconnecting tells (see give_back_unconfirmed).
        for request in self.exchange.clear():
            if request.verb in proto.MESSAGE_VERBS:
                self.unconfirmed.append(request)
            elif request.tag == "recent":
                window = self.history_window(request)
                if window is not None:
                    window.loaded = False   # asked again when next shown
        self.room_lines, self.member_lines = [], {}
        self.users = []
        self.guests = set()
        self.loading_older = False
        self.ping_sent_at = None
        if self.paste_queue:
            self.say("error", "%d pasted lines not sent: the connection dropped" % len(self.paste_queue))
            self.paste_queue.clear()
        if self.done:
            self.state = "offline"
            return
        lost = join_server(self.host, self.port)
        self.state = "offline"
        if self.screen == "login":
            if not self.form.error:
                self.first_login_failed(reason)
            return
        if self.banned or self.tls_refused:
            return
        # The next server is tried at once, so that a dead one costs no
        # wait. The loss is the round's first failure, so the server just
        # lost comes last, after the others and the back-off; a refused one
        # is out of the rounds altogether.
        if server_key(self.host, self.port) not in self.refused_servers:
            self.failed_in_round += 1
        delay = 0.0
        if self.failed_in_round >= self.servers_left():
            delay = RECONNECT_DELAYS[min(self.attempt, len(RECONNECT_DELAYS) - 1)]
            delay *= 1 + random.random() / 4
            self.attempt += 1
            self.failed_in_round = 0
        delay = max(delay, self.kicked_for)
        self.kicked_for = 0
        self.next_server()
        self.reconnect_at = clock() + delay
        if was_online and len(self.servers) > 1:
            self.say("error", "connection to %s lost (%s); reconnecting to %s"
                     % (lost, reason, join_server(self.host, self.port)))
        elif was_online:
            self.say("error", "connection lost (%s); reconnecting" % reason)

    def first_login_failed(self, reason: str):
        """The login screen's connection failed before any login: the
        servers are tried in order until one answers; when none has, the
        form says why for each."""
        self.unreachable.append("%s (%s)" % (join_server(self.host, self.port), reason))
        self.failed_in_round += 1
        if self.failed_in_round < len(self.servers):
            self.next_server()
            self.form.notice = "cannot reach %s; %s" % (self.unreachable[-1], self.logging_in_words())
            self.open_connection()
            return
        if len(self.servers) == 1:
            self.form.error = "cannot reach %s: %s" % (join_server(self.host, self.port), reason)
        else:
            self.form.error = "cannot reach any of the servers: %s" % ", ".join(self.unreachable)
        self.form.notice = ""

    def next_deadline(self) -> Optional[float]:
        deadlines = []
        if self.reconnect_at is not None:
            # Once a second as well, for the countdown in the status line.
            deadlines += [self.reconnect_at, clock() + 1.0]
        if self.state in ("connecting", "logging in"):
            deadlines.append(self.connect_deadline)
        if self.handshake_deadline is not None:
            deadlines.append(self.handshake_deadline)
        if self.state == "online":
            if self.ping_sent_at is None:
                deadlines.append(self.last_heard + KEEPALIVE_IDLE)
            else:
                deadlines.append(self.ping_sent_at + KEEPALIVE_GRACE)
        return min(deadlines) if deadlines else None

    def tick(self, now: float):
        if self.reconnect_at is not None and now >= self.reconnect_at:
            self.open_connection()
        if self.handshake_deadline is not None and now >= self.handshake_deadline:
            self.drop("the TLS handshake did not finish within %g seconds: the server is stalled, or "
                      "that port does not speak TLS" % TLS_HANDSHAKE_TIMEOUT)
        if self.state in ("connecting", "logging in") and now >= self.connect_deadline:
            self.drop("no answer within %d seconds" % CONNECT_TIMEOUT)
        if self.state != "online":
            return
        # Compared with the very sums next_deadline hands out, so that the
        # loop never wakes for a deadline that tick then thinks is not due.
        if self.ping_sent_at is None and now >= self.last_heard + KEEPALIVE_IDLE:
            self.ping_sent_at = now
            self.send("PING", "keepalive")
        elif self.ping_sent_at is not None and now >= self.ping_sent_at + KEEPALIVE_GRACE:
            self.drop("no answer from the server")


# --- curses view ---------------------------------------------------------

NAME_COLOURS = (curses.COLOR_RED, curses.COLOR_GREEN, curses.COLOR_YELLOW,
                curses.COLOR_BLUE, curses.COLOR_MAGENTA, curses.COLOR_CYAN)
STYLE_COLOURS = {"time": None, "join": curses.COLOR_GREEN, "leave": curses.COLOR_YELLOW,
                 "info": curses.COLOR_CYAN, "error": curses.COLOR_RED}


def name_colour(name: str) -> int:
    """The same colour for a name in every session and on every machine
    (crc32, unlike hash(), does not change between runs)."""
    return NAME_COLOURS[zlib.crc32(name.lower().encode("utf-8")) % len(NAME_COLOURS)]


class View:
    """Draws a Chat with curses; knows nothing of sockets."""

    def __init__(self, stdscr, colour: bool):
        self.stdscr = stdscr
        self.pairs = {}
        background = curses.COLOR_BLACK
        if curses.has_colors():
            # Even without colours of our own: this tells curses to leave the
            # terminal's own foreground and background alone (without it,
            # ncurses paints white on black on some terminals).
            try:
                curses.start_color()
                curses.use_default_colors()
                background = -1
            except curses.error:
                pass
        if colour:
            for number, colour_id in enumerate(sorted(set(NAME_COLOURS) | {
                    c for c in STYLE_COLOURS.values() if c is not None}), start=1):
                curses.init_pair(number, colour_id, background)
                self.pairs[colour_id] = curses.color_pair(number)

    def attr(self, style: str) -> int:
        if style.startswith("@"):
            return curses.A_BOLD | self.pairs.get(name_colour(style[1:]), 0)
        if style == "error":
            return curses.A_BOLD | self.pairs.get(curses.COLOR_RED, 0)
        if style == "highlight":
            return curses.A_BOLD | self.pairs.get(curses.COLOR_YELLOW, curses.A_UNDERLINE)
        if style == "time":
            return curses.A_DIM if not self.pairs else 0
        colour = STYLE_COLOURS.get(style)
        return self.pairs.get(colour, 0) if colour is not None else 0

    def status_attr(self, style: str) -> int:
        """The status line is in reverse video; the window shown stands out
        of it like a tab, windows with activity are bold, and those with
        something for the user are in the highlight's colour."""
        if style == "window-shown":
            return curses.A_BOLD
        if style == "window-activity":
            return curses.A_REVERSE | curses.A_BOLD
        if style == "window-mention":
            return curses.A_REVERSE | self.attr("highlight")
        return curses.A_REVERSE

    def put(self, y: int, x: int, text: str, attr: int = 0, width: int = 0):
        """Write text clipped to the screen; curses refuses the bottom-right
        cell (the cursor cannot move past it), which is not an error to us."""
        rows, cols = self.stdscr.getmaxyx()
        limit = cols - x if not width else min(width, cols - x)
        shown, used = [], 0
        for ch in text:
            cells = char_width(ch)
            if used + cells > limit:
                break
            shown.append(ch)
            used += cells
        try:
            self.stdscr.addstr(y, x, "".join(shown), attr)
        except curses.error:
            pass
        return used

    def draw(self, chat: Chat):
        screen = self.stdscr
        if chat.redraw_all:
            screen.clear()
            chat.redraw_all = False
        screen.erase()
        for _ in range(chat.bells):
            curses.beep()
        chat.bells = 0
        rows, cols = screen.getmaxyx()
        if rows < MIN_ROWS or cols < MIN_COLS:
            message = "terminal too small: %dx%d, needs %dx%d" % (cols, rows, MIN_COLS, MIN_ROWS)
            for y, row in enumerate(wrap([(message, "")], cols)[:rows]):
                self.put(y, 0, row_text(row))
            screen.noutrefresh()
            curses.doupdate()
            return
        if chat.screen == "login":
            self.draw_login(chat, rows, cols)
        else:
            self.draw_chat(chat, rows, cols)
        curses.doupdate()

    def draw_chat(self, chat: Chat, rows: int, cols: int):
        pane = rows - 2
        names = chat.names_width(cols)
        shown = chat.scrollback.view(cols - names, pane)
        top = pane - len(shown)             # the newest line sits on the status line
        for y, row in enumerate(shown, start=top):
            x = 0
            for text, style in row:
                x += self.put(y, x, text, self.attr(style))
        if names:
            lines = chat.names_pane(pane)
            for y in range(pane):
                self.put(y, cols - names, "\u2502")
                if y < len(lines):
                    text, style = lines[y]
                    self.put(y, cols - names + 2, text, self.attr(style) if style else curses.A_BOLD)
        spans, marker = chat.status_spans(cols)
        self.put(pane, 0, " " * cols, curses.A_REVERSE)
        # The model fits the text to the whole width, or up to the marker.
        x, end = 0, cols - text_width(marker) - 1 if marker else cols
        for text, style in spans:
            if x >= end:
                break
            x += self.put(pane, x, text, self.status_attr(style), end - x)
        if marker:
            self.put(pane, cols - text_width(marker) - 1, marker, curses.A_REVERSE | curses.A_BOLD)
        prompt = chat.prompt(cols)
        prompt_width = self.put(rows - 1, 0, prompt, curses.A_BOLD if chat.paste_lines else 0)
        text, cursor = chat.input.view(max(1, cols - prompt_width))
        self.put(rows - 1, prompt_width, text)
        self.stdscr.move(rows - 1, min(cols - 1, prompt_width + cursor))
        self.stdscr.noutrefresh()

    def draw_login(self, chat: Chat, rows: int, cols: int):
        form = chat.form
        self.put(0, 1, "sae-chat", curses.A_BOLD)
        label_width = max(len(label) for label in form.LABELS) + 2
        cursor = (0, 0)
        for index, (label, field) in enumerate(zip(form.LABELS, form.fields)):
            y = 2 + index
            if y >= rows:
                break
            attr = curses.A_BOLD if index == form.focus else 0
            self.put(y, 1, label + ":", attr)
            text, column = field.view(cols - label_width - 2, mask="*" if index == 2 else "")
            self.put(y, 1 + label_width, text)
            if index == form.focus:
                cursor = (y, 1 + label_width + column)
        lines = [("Enter: log in   Ctrl-R: register   Tab: next field   Ctrl-C: quit", 0)]
        if form.notice:
            lines.append((form.notice, 0))
        if form.error:
            lines += [(line, self.attr("error")) for line in form.error.split("\n")]
        if chat.trust_question is not None:
            lines += [(line, curses.A_BOLD) for line in chat.trust_question_lines()]
        y = 6
        for text, attr in lines:
            # A certificate's warning or question is longer than a line.
            for row in wrap([(text, "")], max(1, cols - 2), 2):
                if y < rows:
                    self.put(y, 1, row_text(row), attr)
                y += 1
        self.stdscr.move(*cursor)
        self.stdscr.noutrefresh()


# --- the loop ------------------------------------------------------------

def tls_context(plan: TlsPlan) -> ssl.SSLContext:
    """The ssl module's secure defaults, TLS 1.2 or newer. ``verify``: the
    system's CAs (or only ``ca_file``) and the host name; otherwise the
    certificate is taken as it comes and the model judges its fingerprint."""
    if plan.mode == "verify":
        context = ssl.create_default_context(cafile=plan.ca_file or None)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    # Python 3.9's default context still allows TLS 1.0 and 1.1.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class Link:
    """The connection to the server, plain or TLS, that never blocks the
    loop: a non-blocking connect, then (with TLS) a handshake driven by
    want-read / want-write, then reads and writes. It does what the model
    asks (``sync``) and tells it what happens; it decides nothing. Writes
    go out directly; only what the kernel does not take waits for
    EVENT_WRITE, registered while (and only while) bytes are pending."""

    def __init__(self, chat: Chat, selector: selectors.BaseSelector):
        self.chat = chat
        self.selector = selector
        self.sock: Optional[socket.socket] = None
        self.stage = ""             # connecting, handshake, open
        self.plan: Optional[TlsPlan] = None

    def sync(self):
        """Do what the model asked for: close, connect, send."""
        chat = self.chat
        if chat.want_close:
            self.close()
            chat.want_close = ""
        if chat.want_connect and not self.sock and not chat.done:
            self.connect()
        self.write()

    def connect(self):
        chat = self.chat
        chat.want_connect = False
        self.plan = chat.tls_plan()
        try:
            # Name resolution blocks; for the few hosts a chat client talks
            # to it is quick, and it happens only on (re)connecting.
            family, kind, proto, _, address = socket.getaddrinfo(
                chat.host, chat.port, type=socket.SOCK_STREAM)[0]
            self.sock = socket.socket(family, kind, proto)
            self.sock.setblocking(False)
            code = self.sock.connect_ex(address)
        except OSError as exc:
            self.close()
            chat.connection_lost(exc.strerror or str(exc))
            return
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            self.lost(self.unreachable(code))
            return
        self.stage = "connecting"
        self.selector.register(self.sock, selectors.EVENT_WRITE, self.on_socket)

    def unreachable(self, code: int) -> str:
        if code == errno.ECONNREFUSED and self.plan is not None:
            return ("connection refused: is the server started with --tls-cert? It takes TLS on its "
                    "--tls-port, %d by default" % DEFAULT_TLS_PORT)
        return os.strerror(code)

    def close(self):
        if self.sock is not None:
            try:
                self.selector.unregister(self.sock)
            except (KeyError, ValueError):
                pass
            self.sock.close()
            self.sock = None
        self.stage = ""

    def lost(self, reason: str):
        self.close()
        self.chat.connection_lost(reason)

    def on_socket(self, mask: int):
        if self.stage == "connecting":
            code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self.lost(self.unreachable(code))
            elif self.plan is None:
                self.stage = "open"
                self.selector.modify(self.sock, selectors.EVENT_READ, self.on_socket)
                self.chat.connection_made()
            else:
                self.start_tls()
            return
        if self.stage == "handshake":
            self.handshake()
            return
        if mask & selectors.EVENT_READ:
            self.read()
        # EVENT_WRITE: the pending bytes go out in write(), after this.

    def start_tls(self):
        # The TLS socket is a new object on the same descriptor: the
        # selector forgets the plain one first.
        self.selector.unregister(self.sock)
        try:
            self.sock = tls_context(self.plan).wrap_socket(
                self.sock, server_hostname=self.chat.host, do_handshake_on_connect=False)
        except (OSError, ValueError) as exc:
            self.sock.close()
            self.sock = None
            self.stage = ""
            self.chat.connection_lost("TLS failed: %s" % exc)
            return
        self.stage = "handshake"
        self.selector.register(self.sock, selectors.EVENT_READ, self.on_socket)
        self.chat.handshake_started()
        self.handshake()

    def handshake(self):
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self.selector.modify(self.sock, selectors.EVENT_READ, self.on_socket)
            return
        except ssl.SSLWantWriteError:
            self.selector.modify(self.sock, selectors.EVENT_WRITE, self.on_socket)
            return
        except (OSError, ValueError) as exc:
            # SSLError is an OSError: a refused certificate, a server that
            # is not TLS, a reset; the model says which in words.
            self.close()
            self.chat.tls_failed(*tls_failure(exc))
            return
        self.stage = "open"
        self.selector.modify(self.sock, selectors.EVENT_READ, self.on_socket)
        self.chat.secured(fingerprint(self.sock.getpeercert(binary_form=True)))

    def read(self):
        try:
            data = self.sock.recv(65536)
            # TLS may hold decrypted bytes that no readiness event will
            # announce again: take them now.
            while isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
                data += self.sock.recv(self.sock.pending())
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except ssl.SSLError as exc:
            self.lost("TLS error: %s" % (exc.reason or exc).lower().replace("_", " "))
            return
        except OSError as exc:
            self.lost(exc.strerror or str(exc))
            return
        if not data:
            self.lost("the server closed the connection")
            return
        self.chat.receive(data)

    def write(self):
        if self.sock is None or self.stage != "open":
            return
        outbox = self.chat.outbox
        if outbox:
            try:
                sent = self.sock.send(outbox)
                del outbox[:sent]
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                # TLS: the same bytes (or more after them) are offered again
                # later, which is what OpenSSL needs of a retried write.
                pass
            except OSError as exc:
                self.lost(exc.strerror or str(exc))
                return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if outbox else 0)
        if self.selector.get_key(self.sock).events != events:
            self.selector.modify(self.sock, events, self.on_socket)

    def flush_before_exit(self):
        """Give QUIT a moment to leave; the terminal is restored either way."""
        deadline = clock() + QUIT_FLUSH_SECONDS
        while self.sock and self.stage == "open" and self.chat.outbox and clock() < deadline:
            self.write()
            if self.chat.outbox and self.sock:
                _, writable, _ = select.select([], [self.sock], [], max(0.0, deadline - clock()))
                if not writable:
                    break


class Loop:
    """One thread: a selectors loop over the server's Link, the keyboard
    and a wake-up pipe for signals, with the model's deadlines as its
    timeout."""

    def __init__(self, stdscr, chat: Chat, view: View):
        self.stdscr = stdscr
        self.chat = chat
        self.view = view
        self.selector = selectors.DefaultSelector()
        self.link = Link(chat, self.selector)
        self.selector.register(sys.stdin.fileno(), selectors.EVENT_READ, self.on_keyboard)
        # Signals (resize, hang-up, terminate) arrive as bytes on this pipe,
        # so they are handled by the loop like everything else, between two
        # steps of the model rather than in the middle of one.
        self.wakeup_read, self.wakeup_write = socket.socketpair()
        for end in (self.wakeup_read, self.wakeup_write):
            end.setblocking(False)
        self.selector.register(self.wakeup_read, selectors.EVENT_READ, self.on_signal)
        signal.set_wakeup_fd(self.wakeup_write.fileno())
        for signum in (signal.SIGWINCH, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, lambda *_: None)

    def run(self):
        try:
            while not self.chat.done:
                self.link.sync()
                self.view.draw(self.chat)
                deadline = self.chat.next_deadline()
                timeout = None if deadline is None else max(0.0, deadline - clock())
                for key, mask in self.selector.select(timeout):
                    key.data(mask)
                self.chat.tick(clock())
            self.link.sync()
            self.link.flush_before_exit()
        finally:
            signal.set_wakeup_fd(-1)
            self.link.close()

    # -- the terminal -----------------------------------------------------

    def on_keyboard(self, mask: int):
        while True:
            try:
                key = self.stdscr.get_wch()
            except curses.error:
                return              # nothing more buffered
            if key == curses.KEY_RESIZE:
                self.resize()
                continue
            if isinstance(key, int):
                name = curses.keyname(key).decode("ascii", "replace")
                if name.startswith("kEND"):     # Ctrl-End and friends
                    name = "KEY_END"
                elif not name.startswith("KEY_"):
                    # terminfo's extended keys (kLFT3: Alt-Left, kDC5:
                    # Ctrl-Delete, ...) are keys, never text to type.
                    name = "KEY_" + name
                self.chat.key(name)
            else:
                self.chat.key(key)
            if self.chat.done:
                return

    def on_signal(self, mask: int):
        try:
            signums = self.wakeup_read.recv(512)
        except (BlockingIOError, InterruptedError):
            return
        for signum in signums:
            if signum == signal.SIGWINCH:
                self.resize()
            elif signum in (signal.SIGTERM, signal.SIGHUP):
                self.chat.quit("terminal closed")

    def resize(self):
        try:
            cols, rows = os.get_terminal_size(sys.stdout.fileno())
        except OSError:
            return
        if (rows, cols) != self.stdscr.getmaxyx():
            curses.resizeterm(rows, cols)
        # Repaint everything: after a resize the terminal's idea of the
        # screen and curses' idea of it no longer match.
        self.chat.redraw_all = True


def run(stdscr, chat: Chat):
    curses.raw()                # Ctrl-C is a key for us: quit cleanly, send QUIT
    curses.noecho()
    stdscr.keypad(True)
    stdscr.nodelay(True)
    try:
        curses.curs_set(1)
    except curses.error:
        pass
    # https://no-color.org: a NO_COLOR that is set and not empty means none.
    colour = curses.has_colors() and not os.environ.get("NO_COLOR")
    loop = Loop(stdscr, chat, View(stdscr, colour))
    if chat.form.missing() is None:
        chat.submit_login(register=False)
    # Bracketed paste: the terminal marks pasted text, so that a paste of
    # several lines is asked about rather than sent line by line. Terminals
    # that do not know the mode ignore it; it is switched off on the way
    # out whatever happens, or the shell would get the markers.
    terminal = sys.stdout.fileno()
    os.write(terminal, PASTE_ON.encode("ascii"))
    try:
        loop.run()
    finally:
        os.write(terminal, PASTE_OFF.encode("ascii"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="sae-client", description="Terminal client for sae-chat.",
        epilog="The password is asked for, or read from the SAE_PASSWORD environment variable.")
    parser.add_argument("--host", default=DEFAULT_HOST, metavar="HOST[:PORT][,...]",
                        help="server address (default %s); several servers of one chat, comma-separated, "
                             "are tried in turn, e.g. a.example,b.example:7000,[::1]:12345; "
                             "one without a port uses --port" % DEFAULT_HOST)
    parser.add_argument("--port", default=None,
                        help="server port (default %d, or %d with TLS)" % (DEFAULT_PORT, DEFAULT_TLS_PORT))
    parser.add_argument("--user", default="", help="account name")
    parser.add_argument("--tls", action="store_true",
                        help="encrypt the connection and check the server's certificate (system CAs and "
                             "host name); one nothing vouches for is asked about once, as ssh does")
    parser.add_argument("--tls-ca", metavar="FILE", default="",
                        help="check the certificate against this CA file (PEM) instead of the system's "
                             "(implies --tls)")
    parser.add_argument("--tls-fingerprint", metavar="SHA256", default="",
                        help="accept exactly the certificate with this SHA-256 fingerprint, without asking "
                             "(implies --tls; for scripts)")
    args = parser.parse_args(argv)
    if args.tls_fingerprint:
        try:
            args.tls_fingerprint = parse_fingerprint(args.tls_fingerprint)
        except ValueError as exc:
            parser.error("--tls-fingerprint: %s" % exc)
    args.tls = args.tls or bool(args.tls_ca or args.tls_fingerprint)
    if args.tls_ca:
        try:
            tls_context(TlsPlan("verify", ca_file=args.tls_ca))
        except (OSError, ssl.SSLError) as exc:
            parser.error("--tls-ca %s: cannot read a CA certificate from it (%s)"
                         % (args.tls_ca, getattr(exc, "strerror", None) or exc))
    if args.port is None:
        args.port = DEFAULT_TLS_PORT if args.tls else DEFAULT_PORT
    elif _PORT.fullmatch(args.port.strip()) and 0 < int(args.port) < 65536:
        args.port = int(args.port)
    else:
        parser.error("argument --port: %r is not a port number (1 to 65535)" % args.port)
    try:
        args.servers = parse_servers(args.host, args.port)
    except ValueError as exc:
        parser.error("argument --host: %s" % exc)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("sae-client: needs a terminal", file=sys.stderr)
        return 2
    # Taken out of the environment so that nothing started later inherits it.
    password = os.environ.pop("SAE_PASSWORD", "")
    tls = TlsOptions(args.tls_ca, args.tls_fingerprint, known_servers_path()) if args.tls else None
    chat = Chat(port=args.port, name=args.user, password=password, tls=tls, servers=args.servers)
    locale.setlocale(locale.LC_ALL, "")
    # A lone Esc would otherwise freeze the keyboard for a second.
    os.environ.setdefault("ESCDELAY", "25")
    try:
        curses.wrapper(run, chat)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
