"""IRC as plain data, the way sae_protocol.py is protocol v1: no sockets, no clock, no database.

An IRC listener in the server (issue 14) needs four things from this module,
and each of them goes one way:

  bytes -> ``new_framer()`` (sae_protocol.LineFramer with IRC's limits) ->
  ``parse_line`` -> an ``IrcMessage`` (tags, source, command, params), or a
  value that says what to answer instead (``InputTooLong``: 417; ``BadLine``:
  FAIL ... INVALID_UTF8).

  a server event -> an ``IrcFormatter`` -> IRC bytes. A formatter has the
  format_* methods the server already calls on sae_protocol for room and
  broadcast events (format_msg, format_rmsg, format_priv, format_join, ...),
  with the same signatures, so a session's ``protocol`` may be either, and a
  room keeps rendering each event once per protocol object. Formatters are
  interned per server name, default room and the capabilities that change
  the bytes (server-time, message-tags, account-tag, extended-join,
  away-notify, draft/multiline), so every IRC session with the same set
  shares one object and one rendering.

  a reply -> ``format_line``/``numeric``/``fail`` and the builders below
  (CAP LS, ISUPPORT, NAMES, MOTD, history batches, labeled responses):
  anything addressed to one client by its nick is built per session, never
  by a shared formatter.

  a client's text -> ``irc_text_for_store`` / ``irc_text_for_v1`` and
  back with ``v1_text_for_irc``: IRC's formatting codes travel between IRC
  clients as they are, protocol v1 clients get a form without control
  characters, and CTCP ACTION is v1's ``/me ``.

Plus the small state machines and parsers with rules of their own: capability
negotiation (``cap_request``), SASL PLAIN (``SaslPlain``), CHATHISTORY
(``parse_chathistory`` -> ``history_windows``), a multiline message a
client sends (``open_multiline`` -> ``MultilineBatch``), nick rules (a nick
is an account name).

Choices the server relies on, each explained where it is made:
  * invalid UTF-8 is refused, not guessed (UTF8ONLY in ISUPPORT);
  * an account's presence (v1 JOIN/LEAVE) is AWAY/back for clients with
    away-notify and nothing for the others: on IRC, as with Ergo's always-on
    accounts, a room's members stay in its channel while offline;
  * a text longer than one IRC line is cut at characters into several
    lines: one draft/multiline batch where the client has it, else several
    PRIVMSGs of which only the first carries the msgid;
  * a multiline message is one stored message, its lines joined by a line
    feed (see LINE_BREAK): v1 clients get it on one line.
"""

import base64
import binascii
import datetime
import itertools
import re
from typing import Container, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import sae_protocol as proto
from sae_protocol import ACTION_PREFIX, DEFAULT_ROOM, LineFramer, action_text, room_key

# --- limits --------------------------------------------------------------
# RFC 1459: 512 bytes with the CR LF; IRCv3 message-tags adds up to 8191
# bytes of tags (with the "@" and the space after them) in front of a
# server's line, of which a client may send 4096: the rest is room for the
# tags a server adds (time, msgid, account, batch ...) to what it relays.
MAX_LINE_BYTES = 510
MAX_TAGS_BYTES = 8191
MAX_CLIENT_TAGS_BYTES = 4096
# What the framer lets through before parse_line measures the two parts:
# a line longer than both together is too long whatever its split.
MAX_FRAME_BYTES = MAX_CLIENT_TAGS_BYTES + MAX_LINE_BYTES
# An account's name is a nick, a room's name a channel (sae_protocol).
NICKLEN = 32
CHANNELLEN = 33
TOPICLEN = proto.TOPIC_MAX_BYTES
# What a guest (--irc-guests) is called where an extended JOIN shows a
# real name: a JOIN is the account's, rendered once for every session, and
# so names the account (a guest has none to name), not one client's USER.
GUEST_REALNAME = "guest"
# The real name a client gives in USER, as WHOIS and WHO show it, is cut
# to this many bytes: it is free text, shown in lines that hold two nicks
# and the server's name besides.
REALNAME_MAX_BYTES = 64
NO_GUESTS: frozenset = frozenset()
# The most messages one CHATHISTORY may ask for (ISUPPORT CHATHISTORY=).
CHATHISTORY_MAX = 100
# SASL (IRCv3 sasl-3.1): AUTHENTICATE carries at most 400 bytes of base64.
SASL_CHUNK_BYTES = 400
# PLAIN's payload is authzid NUL authcid NUL password: two names of 32 bytes
# and the longest password v1 accepts fit in 1456 base64 characters. Four
# chunks hold that; anything longer is no login of ours and is refused (904)
# before it is decoded (or buffered any further).
SASL_MAX_ENCODED = 4 * SASL_CHUNK_BYTES
SASL_MECHANISMS = ("PLAIN",)
# draft/multiline: a message of several lines (a paste) is stored as one
# message, its lines joined by LINE_BREAK, and where a client split a long
# line (draft/multiline-concat) by LINE_GOES_ON: neither can be in a stored
# text any other way (both protocols refuse them inside a line), so there
# they are the message's shape and nothing else. v1 has no line break in a
# message: its clients see V1_LINE_BREAK in its place.
LINE_BREAK = "\n"
LINE_GOES_ON = "\r"
V1_LINE_BREAK = " \u21b5 "
MULTILINE_CONCAT = "draft/multiline-concat"
# Each line of a batch goes out as a line of its own to every member, with
# some 100 bytes of source, target and tags in front of its text: a screen
# of pasted code, or the longest v1 message cut into IRC lines (some 10).
MULTILINE_MAX_LINES = 32
# A multiline message is stored as one message, so it must be one that a
# v1 client could have said, in its stored form and in the form v1 clients
# get: no longer than the longest SAY (4092 bytes), once each line break
# is V1_LINE_BREAK (4 bytes more each). That leaves 3968 bytes of lines and
# line feeds, as max-bytes counts them; the stored form's LINE_GOES_ON
# bytes (31 at most) fit in the rest.
V1_TEXT_MAX_BYTES = proto.MAX_LINE_BYTES - len("SAY ")
MULTILINE_MAX_BYTES = V1_TEXT_MAX_BYTES - (MULTILINE_MAX_LINES - 1) * (len(V1_LINE_BREAK.encode("utf-8")) - 1)
# A line the server sends cannot be longer either; the 005 lines carry at
# most 13 tokens (the RFC's 15 parameters, less the nick and the text).
ISUPPORT_TOKENS_PER_LINE = 13


# --- numerics --------------------------------------------------------------
# Named as the modern IRC documentation names them.
RPL_WELCOME = "001"
RPL_YOURHOST = "002"
RPL_CREATED = "003"
RPL_MYINFO = "004"
RPL_ISUPPORT = "005"
RPL_UMODEIS = "221"
RPL_LUSERCLIENT = "251"
RPL_LUSEROP = "252"
RPL_LUSERUNKNOWN = "253"
RPL_LUSERCHANNELS = "254"
RPL_LUSERME = "255"
RPL_LOCALUSERS = "265"
RPL_GLOBALUSERS = "266"
RPL_AWAY = "301"
RPL_UNAWAY = "305"
RPL_NOWAWAY = "306"
RPL_WHOISSPECIAL = "320"
RPL_WHOISUSER = "311"
RPL_WHOISSERVER = "312"
RPL_ENDOFWHO = "315"
RPL_WHOISIDLE = "317"
RPL_ENDOFWHOIS = "318"
RPL_WHOISCHANNELS = "319"
RPL_LISTSTART = "321"
RPL_LIST = "322"
RPL_LISTEND = "323"
RPL_CHANNELMODEIS = "324"
RPL_CREATIONTIME = "329"
RPL_WHOISACCOUNT = "330"
RPL_NOTOPIC = "331"
RPL_TOPIC = "332"
RPL_TOPICWHOTIME = "333"
RPL_WHOREPLY = "352"
RPL_NAMREPLY = "353"
RPL_WHOSPCRPL = "354"
RPL_ENDOFNAMES = "366"
RPL_MOTD = "372"
RPL_MOTDSTART = "375"
RPL_ENDOFMOTD = "376"
ERR_NOSUCHNICK = "401"
ERR_NOSUCHCHANNEL = "403"
ERR_CANNOTSENDTOCHAN = "404"
ERR_TOOMANYCHANNELS = "405"
ERR_NOORIGIN = "409"
ERR_NORECIPIENT = "411"
ERR_NOTEXTTOSEND = "412"
ERR_INPUTTOOLONG = "417"
ERR_UNKNOWNCOMMAND = "421"
ERR_NOMOTD = "422"
ERR_NONICKNAMEGIVEN = "431"
ERR_ERRONEUSNICKNAME = "432"
ERR_NICKNAMEINUSE = "433"
ERR_NICKCOLLISION = "436"
ERR_NOTONCHANNEL = "442"
ERR_NOTREGISTERED = "451"
ERR_NEEDMOREPARAMS = "461"
ERR_ALREADYREGISTERED = "462"
ERR_PASSWDMISMATCH = "464"
ERR_YOUREBANNEDCREEP = "465"
ERR_CHANNELISFULL = "471"
ERR_UNKNOWNMODE = "472"
ERR_INVITEONLYCHAN = "473"
ERR_BANNEDFROMCHAN = "474"
ERR_BADCHANNELKEY = "475"
ERR_BADCHANMASK = "476"
ERR_NOCHANMODES = "477"
ERR_CHANOPRIVSNEEDED = "482"
RPL_LOGGEDIN = "900"
RPL_LOGGEDOUT = "901"
ERR_NICKLOCKED = "902"
RPL_SASLSUCCESS = "903"
ERR_SASLFAIL = "904"
ERR_SASLTOOLONG = "905"
ERR_SASLABORTED = "906"
ERR_SASLALREADY = "907"
RPL_SASLMECHS = "908"

# IRCv3 standard replies: FAIL stops the command, WARN and NOTE do not.
FAIL = "FAIL"
WARN = "WARN"
NOTE = "NOTE"


# --- capabilities ----------------------------------------------------------
# Everything CAP LS offers, in the order it lists them. msgid is no
# capability: it is a tag sent to clients that have message-tags.
CAPABILITIES = (
    # ACCOUNT when a nick's account changes: a guest's nick registered (by
    # its guest, or by anyone while it is away) becomes that account, and a
    # client that logs in after registration is told its own.
    "account-notify",
    "account-tag",
    "away-notify",
    "batch",
    "cap-notify",
    "draft/account-registration",
    "draft/chathistory",
    "draft/multiline",
    "echo-message",
    "extended-join",
    "labeled-response",
    "message-tags",
    # Every client can have it for free: no member of a room has a prefix
    # yet (no operator modes), so NAMES says the same with or without it.
    "multi-prefix",
    "sasl",
    "server-time",
    # NAMES with each member's nick!user@host, as WHO would give them: the
    # host is the server's name for everyone (see hostmask), so it costs
    # nothing and saves a client a WHO per channel.
    "userhost-in-names",
)
# The capabilities that change the bytes of a room or broadcast event, and
# so the only ones an IrcFormatter is told apart by. The others change who
# gets a line (echo-message), what a reply is (batch, labeled-response,
# chathistory) or what a client may send (sasl, account-registration).
# draft/multiline counts only beside batch, which is how it is sent.
MULTILINE = "draft/multiline"
RENDERING_CAPABILITIES = frozenset(("server-time", "message-tags", "account-tag", "extended-join", "away-notify",
                                    MULTILINE))
# CAP LS 302 (and later) turns it on without a REQ, and it cannot be turned off.
IMPLIED_BY_302 = "cap-notify"


def cap_values(sasl_mechanisms: Sequence[str] = SASL_MECHANISMS,
               registration: str = "before-connect") -> Dict[str, Optional[str]]:
    """Each capability with the value CAP LS 302 gives it (None: none).
    draft/account-registration's "before-connect" says REGISTER works
    before NICK/USER end, as it does for SASL; an account is always named
    after the nick, so "custom-account-name" is not offered."""
    values: Dict[str, Optional[str]] = dict.fromkeys(CAPABILITIES)
    values["sasl"] = ",".join(sasl_mechanisms) or None
    values["draft/account-registration"] = registration or None
    values[MULTILINE] = "max-bytes=%d,max-lines=%d" % (MULTILINE_MAX_BYTES, MULTILINE_MAX_LINES)
    return values


def cap_version(param: str) -> int:
    """The version a ``CAP LS [version]`` asked for: 0 for none (3.1), a
    number for 302 and later; anything else counts as none."""
    return int(param) if param.isascii() and param.isdigit() and len(param) < 6 else 0


def cap_list_lines(server_name: str, nick: str, subcommand: str, caps: Iterable[str],
                   values: Optional[Dict[str, Optional[str]]] = None, version: int = 302) -> List[bytes]:
    """``CAP <nick> LS|LIST ...`` lines. With version 302 or later, values
    are shown (``sasl=PLAIN``) and the list is split over as many lines as
    its length needs, each line but the last saying ``*`` before its list;
    a 3.1 client gets names only, on one line, as it cannot read more."""
    words = []
    for cap in caps:
        value = values.get(cap) if values and version >= 302 else None
        words.append(cap if value is None else "%s=%s" % (cap, value))
    if version < 302:
        return [format_line("CAP", nick or "*", subcommand, " ".join(words), source=server_name)]
    # Room for the words on one line: the line with an empty list and the
    # "* " continuation marker, whose colon is already counted.
    overhead = len(format_line("CAP", nick or "*", subcommand, "*", "", source=server_name)) - 2
    room = MAX_LINE_BYTES - overhead
    chunks: List[List[str]] = [[]]
    size = 0
    for word in words:
        length = len(word.encode("utf-8"))
        if chunks[-1] and size + 1 + length > room:
            chunks.append([])
            size = 0
        size += length + (1 if chunks[-1] else 0)
        chunks[-1].append(word)
    lines = []
    for index, chunk in enumerate(chunks):
        more = ("*",) if index < len(chunks) - 1 else ()
        lines.append(format_line("CAP", nick or "*", subcommand, *more, " ".join(chunk), source=server_name))
    return lines


class CapAnswer(NamedTuple):
    """CAP REQ's outcome: ``ack`` or not, the capabilities enabled after
    it (unchanged on NAK), and the list to echo in ``CAP * ACK|NAK :...``."""
    ack: bool
    enabled: frozenset
    echo: str


def cap_request(requested: str, enabled: Iterable[str], available: Iterable[str] = CAPABILITIES,
                version: int = 0) -> CapAnswer:
    """A CAP REQ list against what is enabled: all of it is applied (ACK)
    or none of it (NAK). ``-name`` turns a capability off; an unknown name,
    an empty list, or turning off cap-notify after CAP LS 302 is a NAK."""
    enabled = frozenset(enabled)
    available = frozenset(available)
    echo = requested.strip(" ")
    words = echo.split()
    result = set(enabled)
    for word in words:
        off = word.startswith("-")
        name = word[1:] if off else word
        if name not in available or (off and name == IMPLIED_BY_302 and version >= 302):
            return CapAnswer(False, enabled, echo)
        if off:
            result.discard(name)
        else:
            result.add(name)
    if not words:
        return CapAnswer(False, enabled, echo)
    return CapAnswer(True, frozenset(result), echo)


# --- parsing -----------------------------------------------------------------

class IrcMessage(NamedTuple):
    """One client line. ``command`` is upper-cased in ASCII; ``params``
    holds the middle parameters and, last, the trailing one if any."""
    tags: Dict[str, str]
    source: Optional[str]
    command: str
    params: List[str]


class InputTooLong(NamedTuple):
    """A line over 510 bytes (without its tags) or with over 4096 bytes of
    tags: answered ERR_INPUTTOOLONG (417) and otherwise ignored."""


class BadLine(NamedTuple):
    """A line that cannot be read. ``code`` is the standard reply's code
    (INVALID_UTF8, ...) and ``command`` the command it seems to be, for
    ``FAIL <command> <code> :<text>``."""
    command: str
    code: str
    text: str


def new_framer() -> LineFramer:
    """The framer of an IRC connection: v1's, with room for a line and its
    tags. LineTooLong from it is answered like InputTooLong."""
    return LineFramer(max_line=MAX_FRAME_BYTES)


_TAG_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_TAG_ESCAPE_RE = re.compile(r"\\(.?)", re.S)
_TAG_ESCAPES = str.maketrans({";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"})
_TAG_KEY_RE = re.compile(r"\+?(?:[A-Za-z0-9.-]+/)?[A-Za-z0-9-]+\Z")


def client_only_tags(tags: Dict[str, str]) -> Dict[str, str]:
    """The tags a client meant for other clients (``+typing``, ``+draft/react``
    ...): the only ones a server relays. Any other tag a client sends is
    for the server to set, and is dropped."""
    return {key: value for key, value in tags.items() if key.startswith("+")}


def relayed_tags(tags) -> Dict[str, str]:
    """Client tags another server of the cluster relayed, as client_only_tags
    left them there: what could not have come from it (not a dict, a key
    that is no client tag, a value that is no string) is dropped, so that
    a bad publication cannot make a line fail to render, or inject one."""
    if not isinstance(tags, dict):
        return {}
    return {key: value for key, value in tags.items()
            if isinstance(key, str) and key.startswith("+") and _TAG_KEY_RE.match(key) and isinstance(value, str)}


def unescape_tag_value(value: str) -> str:
    """A tag value as sent (``\\:`` for ";", ``\\s`` for a space ...) as
    meant. A backslash before any other character is dropped, and one at
    the end of the value is dropped too, as the spec says."""
    if "\\" not in value:
        return value
    return _TAG_ESCAPE_RE.sub(lambda m: _TAG_UNESCAPES.get(m.group(1), m.group(1)), value)


def escape_tag_value(value: str) -> str:
    return value.translate(_TAG_ESCAPES)


def parse_tags(text: str) -> Dict[str, str]:
    """``key=value;key2;+client/key=...`` (without its "@") as a dict. A
    key without a value, or with an empty one, maps to "". Of a key given
    twice the last one counts; a key that is no valid key is left out."""
    tags: Dict[str, str] = {}
    for item in text.split(";"):
        key, _, value = item.partition("=")
        if _TAG_KEY_RE.match(key):
            tags[key] = unescape_tag_value(value)
    return tags


def parse_line(raw: bytes) -> Union[IrcMessage, InputTooLong, BadLine, None]:
    """A framed client line (no CR LF) as an IrcMessage; InputTooLong or
    BadLine when it cannot be one; None for a line with no command, which
    is ignored as RFC 1459 says of empty messages.

    Invalid UTF-8 is refused rather than decoded as latin-1: the text is
    stored and shown to v1 clients, and a guess that is wrong for some of
    them is worse than a clear FAIL INVALID_UTF8 that tells the user to
    switch their client to UTF-8 (the default of every client still
    maintained). ISUPPORT says so with UTF8ONLY."""
    tag_bytes = b""
    body = raw
    if raw[:1] == b"@":
        space = raw.find(b" ")
        if space < 0:
            return None if len(raw) <= MAX_CLIENT_TAGS_BYTES else InputTooLong()
        tag_bytes, body = raw[1:space], raw[space + 1:].lstrip(b" ")
        # The limit counts the "@" and the space after the tags.
        if space + 1 > MAX_CLIENT_TAGS_BYTES:
            return InputTooLong()
    if len(body) > MAX_LINE_BYTES:
        return InputTooLong()
    try:
        text = body.decode("utf-8")
        tag_text = tag_bytes.decode("utf-8")
    except UnicodeDecodeError:
        command = body.lstrip(b" ").split(b" ", 1)[0]
        if command[:1] == b":":
            command = body.lstrip(b" ").split(b" ", 2)[1:2] or [b""]
            command = command[0]
        return BadLine(_ascii_upper(command.decode("latin-1"))[:32] or "*", "INVALID_UTF8",
                       "Line is not valid UTF-8; set your client's encoding to UTF-8")
    if "\0" in text or "\r" in text or "\n" in text:
        return BadLine(_ascii_upper(text.split(" ", 1)[0])[:32] or "*", "INVALID_CHARACTERS",
                       "NUL and CR are not allowed inside a line")
    tags = parse_tags(tag_text) if tag_text else {}
    text = text.lstrip(" ")
    source = None
    if text.startswith(":"):
        source, _, text = text[1:].partition(" ")
        text = text.lstrip(" ")
    command, _, rest = text.partition(" ")
    if not command:
        return None
    params: List[str] = []
    while rest:
        rest = rest.lstrip(" ")
        if rest.startswith(":"):
            params.append(rest[1:])
            break
        if not rest:
            break
        param, _, rest = rest.partition(" ")
        params.append(param)
    return IrcMessage(tags, source, _ascii_upper(command), params)


_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _ascii_upper(word: str) -> str:
    # Only a-z: str.upper() makes "PRİVMSG"-like look-alikes into commands
    # (on ASCII it does no more than that, and is much faster).
    return word.upper() if word.isascii() else word.translate(_ASCII_UPPER)


# --- formatting ----------------------------------------------------------------

def format_tags(tags: Optional[Dict[str, Optional[str]]]) -> str:
    """``@key=value;key `` (with its space), or "" for no tags."""
    if not tags:
        return ""
    items = []
    for key, value in tags.items():
        if not _TAG_KEY_RE.match(key):
            raise ValueError("not a tag key: %r" % key)
        items.append(key if value is None or value == "" else "%s=%s" % (key, escape_tag_value(str(value))))
    return "@" + ";".join(items) + " "


def format_line(command: str, *params, tags: Optional[Dict[str, Optional[str]]] = None,
                source: Optional[str] = None, trailing: bool = False) -> bytes:
    """One IRC line with its CR LF. The last parameter gets its ":" when it
    needs one (empty, a space in it, or a leading ":"), or always with
    ``trailing`` (a human text, which reads the same whatever its words); a middle parameter
    that would need one is a bug of the caller's, and so is a line break
    or NUL anywhere, which would let a text smuggle a second command."""
    words = [str(param) for param in params]
    for index, word in enumerate(words):
        if "\r" in word or "\n" in word or "\0" in word:
            raise ValueError("a parameter cannot hold CR, LF or NUL")
        if index < len(words) - 1 and (not word or " " in word or word.startswith(":")):
            raise ValueError("only the last parameter can be empty, hold a space or start with ':'")
    if words and (trailing or not words[-1] or " " in words[-1] or words[-1].startswith(":")):
        words[-1] = ":" + words[-1]
    head = format_tags(tags) + (":%s " % source if source else "")
    return (head + " ".join([command] + words) + "\r\n").encode("utf-8")


def numeric(server_name: str, nick: str, code, *params, tags=None) -> bytes:
    """A numeric reply: ``:server 123 nick params...``; a client that has
    no nick yet is called "*"."""
    code = code if isinstance(code, str) else "%03d" % code
    return format_line(code, nick or "*", *params, tags=tags, source=server_name)


def standard_reply(kind: str, server_name: str, command: str, code: str, *context, description: str,
                   tags=None) -> bytes:
    """``FAIL|WARN|NOTE <command> <code> [context...] :<description>``."""
    return format_line(kind, command or "*", code, *context, description or code, tags=tags, source=server_name,
                       trailing=True)


def fail(server_name: str, command: str, code: str, *context, description: str, tags=None) -> bytes:
    return standard_reply(FAIL, server_name, command, code, *context, description=description, tags=tags)


def warn(server_name: str, command: str, code: str, *context, description: str, tags=None) -> bytes:
    return standard_reply(WARN, server_name, command, code, *context, description=description, tags=tags)


def note(server_name: str, command: str, code: str, *context, description: str, tags=None) -> bytes:
    return standard_reply(NOTE, server_name, command, code, *context, description=description, tags=tags)


class Failure(NamedTuple):
    """A refusal as a standard reply, before it is bytes: what a parser of
    this module returns so that the server only adds its name."""
    command: str
    code: str
    context: Tuple[str, ...]
    description: str

    def line(self, server_name: str, tags=None) -> bytes:
        # A context parameter echoes what the client sent, which may be the
        # last parameter it sent (empty, spaces): made fit for the middle.
        context = [word.replace(" ", "_").lstrip(":")[:64] or "*" for word in self.context]
        return fail(server_name, self.command, self.code, *context, description=self.description, tags=tags)


def hostmask(nick: str, host: str) -> str:
    """Who a line is from: the nick is the account, and so is the user
    name (there is no ident to ask); the host is the server's name, since
    an address is nobody else's business."""
    return "%s!%s@%s" % (nick, nick, host)


# --- nicks and channels ------------------------------------------------------
# A nick is an account's name and a channel a room's, so IRC's rules are
# sae_protocol's: NAME_RE and ROOM_RE, compared with A-Z folded to a-z and
# nothing else (CASEMAPPING=ascii, which is sae_db.name_key's folding).
# Names may start with a digit, "." or "-", which RFC 2812 forbids in a
# nick; the clients tried show them, and refusing them would lock out
# accounts that exist.

def check_nick(nick: str) -> Optional[str]:
    """Why ``nick`` cannot be a nick (ERR_ERRONEUSNICKNAME), or None."""
    return proto.check_name(nick)


def nick_key(nick: str) -> str:
    """The form in which nicks (account names) are compared."""
    return room_key(nick)


def is_channel(target: str) -> bool:
    return target.startswith("#")


def check_channel(channel: str) -> Optional[str]:
    """Why ``channel`` cannot be a room's name (ERR_BADCHANMASK /
    ERR_NOSUCHCHANNEL), or None."""
    return proto.check_room(channel)


# --- text between the protocols ---------------------------------------------
# IRC formatting: bold \x02, colour \x03[fg[,bg]] (one or two digits each),
# hex colour \x04[rrggbb[,rrggbb]], reset \x0f, monospace \x11, reverse
# \x16, italics \x1d, strikethrough \x1e, underline \x1f. Digits are ASCII
# only: \d would take other scripts' digits as part of a colour.
_FORMATTING_RE = re.compile(
    "\x03(?:[0-9]{1,2}(?:,[0-9]{1,2})?)?"
    "|\x04(?:[0-9A-Fa-f]{6}(?:,[0-9A-Fa-f]{6})?)?"
    "|[\x02\x0f\x11\x16\x1d\x1e\x1f]")
# What is left that protocol v1 refuses (sae_protocol's rule: C0 but tab,
# DEL, C1), a terminal escape among them.
_V1_CONTROL_RE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")
CTCP_DELIMITER = "\x01"


def parse_ctcp(text: str) -> Optional[Tuple[str, str]]:
    """A CTCP message's (command, parameters), or None if ``text`` is no
    CTCP. The closing \\x01 is optional (some clients leave it out)."""
    if not text.startswith(CTCP_DELIMITER):
        return None
    body = text[1:-1] if text.endswith(CTCP_DELIMITER) and len(text) > 1 else text[1:]
    command, _, params = body.partition(" ")
    return _ascii_upper(command), params


def irc_text_for_store(text: str) -> Optional[str]:
    """What an IRC PRIVMSG's text is stored as: a CTCP ACTION becomes v1's
    ``/me `` form (so v1 clients and the history see an action), formatting
    codes stay (IRC clients get them back as sent). Any other CTCP
    (VERSION, PING, DCC ...) is None: it is a query to a client program,
    not something said, and is neither stored nor relayed, since a query
    that reaches the other side's users as text would only confuse them."""
    ctcp = parse_ctcp(text)
    if ctcp is None:
        return text
    if ctcp[0] == "ACTION":
        return ACTION_PREFIX + ctcp[1]
    return None


def irc_text_for_v1(text: str) -> Optional[str]:
    """An IRC text (as sent, or as stored) in a form protocol v1 accepts:
    formatting codes with their colour numbers removed, ACTION as ``/me``,
    a multiline message's lines joined by V1_LINE_BREAK (and its long
    lines' pieces by nothing), every other control character removed (a
    terminal escape would reach the curses client's screen otherwise).
    None for a CTCP that is not an action. The result may be blank (a
    message of nothing but codes)."""
    stored = irc_text_for_store(text)
    if stored is None:
        return None
    if stored.isprintable():  # the common case: nothing to strip
        return stored
    if LINE_BREAK in stored or LINE_GOES_ON in stored:
        stored = stored.replace(LINE_GOES_ON, "").replace(LINE_BREAK, V1_LINE_BREAK)
    return _V1_CONTROL_RE.sub("", _FORMATTING_RE.sub("", stored))


def clean_realname(text: str) -> str:
    """USER's real name as others may be shown it: no formatting codes nor
    control characters (it reaches every client that asks WHOIS), no spaces
    around it, at most REALNAME_MAX_BYTES cut between characters; "" when
    nothing is left, for the account's name to stand in."""
    if not text.isprintable():
        text = _V1_CONTROL_RE.sub("", _FORMATTING_RE.sub("", text.replace("\t", " ")))
    text = text.strip()
    return split_text(text, REALNAME_MAX_BYTES)[0].rstrip() if text else ""


def v1_text_for_irc(text: str) -> str:
    """A stored text as IRC clients expect it: v1's ``/me waves`` is a CTCP
    ACTION; everything else is sent as it is."""
    action = action_text(text)
    if action is None:
        return text
    return CTCP_DELIMITER + "ACTION " + action + CTCP_DELIMITER


def split_text(text: str, limit: int) -> List[str]:
    """``text`` in pieces of at most ``limit`` UTF-8 bytes, cut between
    characters (after a space when one is in the second half of a piece, so
    words stay whole), never dropping anything: the pieces joined are the
    text. A text that fits is one piece."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return [text]
    if limit < 4:
        raise ValueError("a piece must hold at least one character")
    pieces = []
    start = 0
    while len(data) - start > limit:
        end = start + limit
        # Back to the first byte of a character: UTF-8 continuation bytes
        # are 0b10xxxxxx.
        while data[end] & 0xC0 == 0x80:
            end -= 1
        space = data.rfind(b" ", start + limit // 2, end)
        if space >= 0:
            end = space + 1
        pieces.append(data[start:end].decode("utf-8"))
        start = end
    pieces.append(data[start:].decode("utf-8"))
    return pieces


def message_lines(text: str, room: int) -> List[Tuple[str, bool]]:
    """A stored text as IRC lines of at most ``room`` bytes, each with
    whether it goes on from the line before (draft/multiline-concat): a
    multiline message's lines as its sender split them, each cut further
    where it is too long for ``room`` (its source may be longer than its
    sender's line had), and any other text cut where it is too long."""
    lines = []
    for line in text.split(LINE_BREAK):
        for index, part in enumerate(line.split(LINE_GOES_ON)):
            for number, piece in enumerate(split_text(part, room)):
                lines.append((piece, index > 0 or number > 0))
    return lines


# --- multiline batches a client sends ---------------------------------------------

def multiline_failure(code: str, *context: str, description: str) -> Failure:
    return Failure("BATCH", code, context, description)


class MultilineBatch:
    """A draft/multiline batch a client is sending: ``BATCH +ref
    draft/multiline <target>`` (``open_multiline``), PRIVMSG or NOTICE
    lines to that target tagged ``batch=ref`` (``add``), ``BATCH -ref``
    (``end``: the message in its stored form, see LINE_BREAK). A line the
    batch cannot take fails it: ``add`` returns the FAIL to answer, and
    the batch is ``failed``, so that the rest of its lines and its end
    are dropped without a word. ``label`` and ``client_tags`` are those
    of the BATCH line, which the message's answer and relay carry."""

    __slots__ = ("ref", "target", "label", "client_tags", "command", "parts", "lines", "size", "seen", "failed")

    def __init__(self, ref: str, target: str, label: Optional[str] = None,
                 client_tags: Optional[Dict[str, str]] = None):
        self.ref = ref
        self.target = target
        self.label = label
        self.client_tags = client_tags
        self.command = None  # PRIVMSG or NOTICE, as its first line says
        self.parts: List[str] = []  # each line, after what joins it to the one before
        self.lines = 0
        self.size = 0  # bytes of the lines and the line feeds between them (max-bytes)
        self.seen = False  # a line with something to read in it has come
        self.failed = False

    def add(self, command: str, target: str, text: str, concat: bool) -> Optional[Failure]:
        """One line of the batch: None if taken, else the FAIL to answer."""
        if self.failed:
            return None
        if self.command is None:
            self.command = command
        elif command != self.command:
            return self.fail("MULTILINE_INVALID", description="A multiline batch is all PRIVMSG or all NOTICE")
        if nick_key(target) != nick_key(self.target):
            return self.fail("MULTILINE_INVALID_TARGET", self.target, target,
                              description="Invalid multiline target")
        if concat and not text:
            return self.fail("MULTILINE_INVALID", description="A blank line cannot go on from the line before")
        if text.startswith(CTCP_DELIMITER):
            return self.fail("MULTILINE_INVALID", description="CTCP cannot be sent in a multiline batch")
        self.lines += 1
        if self.lines > MULTILINE_MAX_LINES:
            return self.fail("MULTILINE_MAX_LINES", str(MULTILINE_MAX_LINES),
                              description="Multiline batch max-lines exceeded")
        joint = "" if self.lines == 1 else LINE_GOES_ON if concat else LINE_BREAK
        self.size += len(text.encode("utf-8")) + (joint == LINE_BREAK)
        if self.size > MULTILINE_MAX_BYTES:
            return self.fail("MULTILINE_MAX_BYTES", str(MULTILINE_MAX_BYTES),
                              description="Multiline batch max-bytes exceeded")
        self.parts.append(joint + text)
        self.seen = self.seen or bool((irc_text_for_v1(text) or "").strip())
        return None

    def end(self) -> Union[str, Failure]:
        """The message as stored, or the FAIL to answer: a batch of no line,
        or of blank lines only, says nothing."""
        if not self.seen:
            return self.fail("MULTILINE_INVALID", description="A multiline message needs a line that is not blank")
        return "".join(self.parts)

    def fail(self, code: str, *context: str, description: str) -> Failure:
        """Fail the batch: the FAIL to answer; what it held is dropped."""
        self.failed = True
        self.parts = []
        return multiline_failure(code, *context, description=description)


def open_multiline(params: Sequence[str], tags: Dict[str, str],
                   label: Optional[str] = None) -> Union[MultilineBatch, Failure]:
    """``BATCH +ref draft/multiline <target>`` as a batch to fill, or the
    FAIL to answer: the only batch a client may open here is a multiline
    message to one channel or nick."""
    if len(params) < 3 or len(params[0]) < 2 or params[1] != MULTILINE:
        return multiline_failure("MULTILINE_INVALID", description="Only BATCH +ref draft/multiline <target> "
                                 "is accepted")
    target = params[2]
    if check_channel(target) if is_channel(target) else check_nick(target):
        return multiline_failure("MULTILINE_INVALID", description="Invalid multiline target")
    if nick_key(target) == nick_key(NICKSERV):
        return multiline_failure("MULTILINE_INVALID", description="NickServ reads one line at a time")
    return MultilineBatch(params[0][1:], target, label, client_only_tags(tags))


# --- the room-facing formatter -------------------------------------------------

class IrcFormatter:
    """Room and broadcast events as the IRC bytes one capability set gets.

    Its format_* methods are sae_protocol's, with the same names and
    signatures, so the server renders through ``session.protocol`` without
    knowing which protocol it is; ``Room.render`` then calls each method
    once per formatter, that is once per capability set among the members.
    ``IrcFormatter(server_name, caps, default_room, guests)`` returns the
    same object for the same arguments (only the capabilities in
    RENDERING_CAPABILITIES count), which is what makes that sharing work.

    ``guests`` is the server's collection of the nick_keys of guest
    accounts (--irc-guests), which it keeps up to date, the same object
    for every formatter of a server (told apart by identity): a guest is
    logged in to no account, so its lines carry no ``account`` tag and its
    extended JOIN says ``*``, whoever renders them.

    Nothing here is addressed to one client by its nick (numerics, CAP,
    a KICK of one member): those are built per session with ``numeric``
    and the functions below. A broadcast NOTICE (format_info) goes to "*".
    """

    __slots__ = ("server_name", "caps", "default_room", "guests", "host", "server_time", "message_tags",
                 "account_tag", "extended_join", "away_notify", "multiline", "__weakref__")
    _interned: Dict[tuple, "IrcFormatter"] = {}

    def __new__(cls, server_name: str, caps: Iterable[str] = (), default_room: str = DEFAULT_ROOM,
                guests: Container[str] = NO_GUESTS):
        given = frozenset(caps)
        caps = given & RENDERING_CAPABILITIES
        if MULTILINE in caps and "batch" not in given:
            caps = caps - {MULTILINE}
        # By identity: the collection changes, the formatter keeps it (and
        # so keeps its id from being reused).
        key = (server_name, caps, default_room, id(guests))
        formatter = cls._interned.get(key)
        if formatter is None:
            formatter = object.__new__(cls)
            formatter.server_name = server_name
            formatter.caps = caps
            formatter.default_room = default_room
            formatter.guests = guests
            formatter.host = server_name
            formatter.server_time = "server-time" in caps
            formatter.message_tags = "message-tags" in caps
            formatter.account_tag = "account-tag" in caps
            formatter.extended_join = "extended-join" in caps
            formatter.away_notify = "away-notify" in caps
            formatter.multiline = MULTILINE in caps
            # A handful of formatters per server at most (2^6 capability
            # sets): interning them for good costs nothing.
            cls._interned[key] = formatter
        return formatter

    def __init__(self, server_name: str, caps: Iterable[str] = (), default_room: str = DEFAULT_ROOM,
                 guests: Container[str] = NO_GUESTS):
        pass  # everything is set once, in __new__

    def __repr__(self):
        return "<IrcFormatter %s %s>" % (self.server_name, " ".join(sorted(self.caps)) or "-")

    # -- messages --

    def message_tags_for(self, msg_id: int, ts: str, sender: str) -> Dict[str, str]:
        """The tags a stored message carries for this capability set."""
        tags = {}
        if self.server_time and ts:
            tags["time"] = ts  # the store's form is server-time's already
        if self.message_tags and msg_id:
            tags["msgid"] = str(msg_id)
        if self.account_tag and nick_key(sender) not in self.guests:
            tags["account"] = sender
        return tags

    def privmsg_lines(self, msg_id: int, ts: str, sender: str, target: str, text: str,
                      client_tags: Optional[Dict[str, str]] = None, batch: Optional[str] = None,
                      prefix: str = "", command: str = "PRIVMSG") -> List[bytes]:
        """A stored message as PRIVMSG lines. v1 allows 4096 bytes, an IRC
        line about 400 once the source and target are in front, so a long
        text needs several lines, cut at characters (and at a space when
        there is one), and a multiline message (see LINE_BREAK) one per
        line at least. With draft/multiline they are one ``draft/multiline``
        batch, whose BATCH line carries the message's tags, each piece of a
        cut line tagged ``draft/multiline-concat``. Without, they are
        several PRIVMSGs, a multiline message's blank lines left out (as
        the spec says); all carry the same time, account and client tags,
        and the msgid goes on the first only, since a msgid names one line
        to a client (it may answer or fetch history by it) and the first is
        where the message starts. An action stays an action in every piece.

        ``client_tags`` are the sender's (``+draft/reply`` ...): the caller
        gives them to formatters with message-tags only. ``batch`` is the
        reference of the batch the message is in (a chathistory batch)."""
        tags = self.message_tags_for(msg_id, ts, sender)
        if client_tags:
            tags = {**client_tags, **tags}
        if batch:
            tags["batch"] = batch
        action = action_text(text)
        body = prefix + (action if action is not None else text)
        source = hostmask(sender, self.host)
        head = ":%s %s %s :" % (source, command, target)
        room = MAX_LINE_BYTES - len(head.encode("utf-8"))
        if action is not None:
            room -= len("\x01ACTION \x01")
        if LINE_BREAK in body or LINE_GOES_ON in body:
            shaped = message_lines(body, room)
        else:
            pieces = split_text(body, room)
            if len(pieces) == 1:  # the common case: one line
                piece = pieces[0] if action is None else "\x01ACTION " + pieces[0] + "\x01"
                return [(format_tags(tags) + head + piece + "\r\n").encode("utf-8")]
            shaped = [(piece, index > 0) for index, piece in enumerate(pieces)]
        lines = []
        if self.multiline:
            ref = new_batch_ref()
            lines.append(format_line("BATCH", "+" + ref, MULTILINE, target, tags=tags, source=source))
            first, goes_on = format_tags({"batch": ref}), format_tags({"batch": ref, MULTILINE_CONCAT: None})
        for piece, concat in shaped:
            if not self.multiline and not piece.strip():
                continue
            if action is not None:
                piece = "\x01ACTION " + piece + "\x01"
            if self.multiline:
                lines.append(((goes_on if concat else first) + head + piece + "\r\n").encode("utf-8"))
            else:
                lines.append((format_tags(tags) + head + piece + "\r\n").encode("utf-8"))
                tags.pop("msgid", None)
        if self.multiline:
            lines.append(format_line("BATCH", "-" + ref, tags={"batch": batch} if batch else None, source=source))
        return lines

    def format_msg(self, msg_id: int, ts: str, sender: str, text: str) -> bytes:
        """A message in the default room (v1's MSG)."""
        return b"".join(self.privmsg_lines(msg_id, ts, sender, self.default_room, text))

    def format_rmsg(self, msg_id: int, ts: str, room: str, sender: str, text: str) -> bytes:
        return b"".join(self.privmsg_lines(msg_id, ts, sender, room, text))

    def format_priv(self, msg_id: int, ts: str, sender: str, recipient: str, text: str) -> bytes:
        """A private message: the same bytes for the recipient, the
        sender's other sessions and (with echo-message) the sender's own."""
        return b"".join(self.privmsg_lines(msg_id, ts, sender, recipient, text))

    def format_live(self, message, target: str) -> bytes:
        """A message as the IRC clients that get it live see it, with what
        the store does not keep (a sae_db.LiveMessage): a NOTICE if an IRC
        client sent it as one (a bot answers no NOTICE, which is what keeps
        two bots from answering each other for ever), and its sender's
        client-only tags for the clients with message-tags. History gives
        it back as a PRIVMSG, without them."""
        client_tags = message.client_tags if self.message_tags else None
        return b"".join(self.privmsg_lines(message.id, message.created_at, message.sender, target, message.body,
                                           client_tags=client_tags,
                                           command="NOTICE" if message.notice else "PRIVMSG"))

    def format_tagmsg(self, msgid: str, ts: str, sender: str, target: str, client_tags: Dict[str, str]) -> bytes:
        """A TAGMSG (message-tags): a client's tags for other clients (a
        typing notification, a reaction) and no text. Only clients with
        message-tags get it, b"" for the others: without tags it says
        nothing. ``msgid`` names this TAGMSG alone: it is not stored, so no
        history has it."""
        if not self.message_tags:
            return b""
        tags = dict(client_tags)
        tags.update(self.message_tags_for(0, ts, sender))
        tags["msgid"] = msgid
        return format_line("TAGMSG", target, tags=tags, source=hostmask(sender, self.host))

    def format_message(self, message, default_room: Optional[str] = None) -> bytes:
        """A stored message (sae_db.Message) as its PRIVMSG lines."""
        return b"".join(self.privmsg_lines(message.id, message.created_at, message.sender,
                                           self.target_of(message, default_room), message.body))

    def target_of(self, message, default_room: Optional[str] = None) -> str:
        if message.recipient is not None:
            return message.recipient
        return getattr(message, "room", None) or default_room or self.default_room

    # -- presence --
    # v1's JOIN and LEAVE say an account came online or went offline, on
    # the whole server. IRC has no such event, and its QUIT would take the
    # account out of every channel in the client's view, with no JOIN to
    # bring it back when it returns (v1 says nothing per room). So, as for
    # Ergo's always-on accounts, a member stays in the channel while
    # offline (NAMES lists every member), and online/offline is away/back:
    # AWAY lines for clients with away-notify, nothing for the others.

    def format_join(self, name: str) -> bytes:
        if not self.away_notify:
            return b""
        return format_line("AWAY", source=hostmask(name, self.host))

    def format_leave(self, name: str, reason: str) -> bytes:
        if not self.away_notify:
            return b""
        return format_line("AWAY", "offline (%s)" % reason if reason else "offline",
                           source=hostmask(name, self.host))

    # -- rooms --

    def format_joined(self, room: str, name: str) -> bytes:
        """An account became a member of a room (v1.1 JOINED): IRC's JOIN,
        with the account and the real name (the account's name: there is
        no other) where extended-join is on; for a guest, no account ("*")
        and the real name "guest"."""
        if self.extended_join:
            if nick_key(name) in self.guests:
                return format_line("JOIN", room, "*", GUEST_REALNAME, source=hostmask(name, self.host))
            return format_line("JOIN", room, name, name, source=hostmask(name, self.host))
        return format_line("JOIN", room, source=hostmask(name, self.host))

    def format_parted(self, room: str, name: str, reason: str = "") -> bytes:
        if reason:
            return format_line("PART", room, reason, source=hostmask(name, self.host))
        return format_line("PART", room, source=hostmask(name, self.host))

    def format_topic(self, room: str, setter: str = "", ts: str = "", text: str = "") -> bytes:
        """A topic set (or cleared: empty text) by ``setter``. A room that
        never had a topic is no event on IRC: b"" (the TOPIC query's
        answer, 331/332/333, is per client: ``topic_lines``)."""
        if not setter:
            return b""
        tags = {"time": ts} if self.server_time and ts else None
        return format_line("TOPIC", room, text, tags=tags, source=hostmask(setter, self.host))

    def format_deleted(self, room: str, reason: str = "") -> bytes:
        """The operator deleted the room: a NOTICE to the channel. The
        server must then take each IRC member out of the channel with
        ``kick_line`` (a KICK names its target, so it is per session)."""
        text = "this room was deleted" + (": %s" % reason if reason else "")
        return format_line("NOTICE", room, text, source=self.server_name)

    # -- the server speaking --

    def format_info(self, text: str) -> bytes:
        return format_line("NOTICE", "*", text, source=self.server_name)

    def format_err(self, code: int, text: str) -> bytes:
        """A v1 ERR where the server has no IRC numeric for it (storage
        unavailable ...): a server NOTICE that the user will read."""
        return format_line("NOTICE", "*", "error %d: %s" % (code, text), source=self.server_name)

    def format_ping(self, token: str) -> bytes:
        return format_line("PING", token or self.server_name)

    def format_pong(self, token: str) -> bytes:
        return format_line("PONG", self.server_name, token or self.server_name, source=self.server_name)

    def format_bye(self, reason: str, who: str = "") -> bytes:
        """The last line before the server closes the connection."""
        return format_line("ERROR", "Closing Link: %s (%s)" % (who or self.server_name, reason))

    def format_kicked(self, seconds: int, reason: str, who: str = "") -> bytes:
        return self.format_bye("kicked for %d s: %s" % (seconds, reason) if reason
                               else "kicked for %d s" % seconds, who)

    def format_banned(self, reason: str, who: str = "") -> bytes:
        return self.format_bye("banned: %s" % reason if reason else "banned", who)

    # -- history --

    def history_lines(self, messages, target: str, batch: bool = False, ref: Optional[str] = None,
                      default_room: Optional[str] = None) -> List[bytes]:
        """Stored messages (oldest first) as a history replay or a
        CHATHISTORY answer for ``target`` (a channel, or the peer's nick).
        With ``batch`` (the client has it): ``BATCH +ref chathistory target``,
        each message tagged ``batch=ref``, ``BATCH -ref``; an empty history
        is an empty batch, as CHATHISTORY wants. Without it: the messages
        alone, and without server-time their text starts with the time
        (``[2026-11-24 13:05 UTC] ``) so that the user sees when it was said."""
        lines = []
        if batch:
            ref = ref or new_batch_ref()
            lines.append(format_line("BATCH", "+" + ref, "chathistory", target, source=self.server_name))
        for message in messages:
            prefix = "" if self.server_time else history_time_prefix(message.created_at)
            lines += self.privmsg_lines(message.id, message.created_at, message.sender,
                                        self.target_of(message, default_room), message.body,
                                        batch=ref if batch else None, prefix=prefix)
        if batch:
            lines.append(format_line("BATCH", "-" + ref, source=self.server_name))
        return lines


def history_time_prefix(ts: str) -> str:
    """``2026-11-24T13:05:01.123Z`` as ``[2026-11-24 13:05 UTC] ``: the date
    too, since a replay may go back days; UTC, since the server has no idea
    of the user's zone."""
    if len(ts) >= 16 and ts[10:11] == "T":
        return "[%s %s UTC] " % (ts[:10], ts[11:16])
    return "[%s] " % ts if ts else ""


_batch_refs = itertools.count(1)


def new_batch_ref() -> str:
    """A batch reference no other open batch of this process has."""
    return "h%x" % next(_batch_refs)


def kick_line(server_name: str, room: str, nick: str, reason: str, by: Optional[str] = None,
              host: Optional[str] = None) -> bytes:
    """``nick`` is taken out of ``room``: for a deleted room or a kick from
    the console (``by`` None: the server did it)."""
    source = hostmask(by, host or server_name) if by else server_name
    return format_line("KICK", room, nick, reason or nick, source=source)


# --- replies built per session -------------------------------------------------

def _text_room(line: bytes, text: str) -> int:
    """Bytes left for the last parameter of a line like ``line`` (formatted
    with ``text`` as that parameter) within MAX_LINE_BYTES."""
    return MAX_LINE_BYTES - (len(line) - 2 - len(text.encode("utf-8")))


def welcome_lines(server_name: str, nick: str, network: str, version: str, created: str,
                  user_modes: str = "i", channel_modes: str = "n") -> List[bytes]:
    """001 to 004, the first lines a client reads after registering."""
    return [
        numeric(server_name, nick, RPL_WELCOME, "Welcome to the %s IRC network, %s" % (network, nick)),
        numeric(server_name, nick, RPL_YOURHOST, "Your host is %s, running %s" % (server_name, version)),
        numeric(server_name, nick, RPL_CREATED, "This server was created %s" % created),
        numeric(server_name, nick, RPL_MYINFO, server_name, version, user_modes, channel_modes),
    ]


def isupport_tokens(network: str, chathistory: int = CHATHISTORY_MAX, nicklen: int = NICKLEN,
                    channellen: int = CHANNELLEN, topiclen: int = TOPICLEN,
                    chanlimit: int = proto.ROOMS_PER_ACCOUNT, extra: Sequence[str] = ()) -> List[str]:
    """The 005 tokens. Beyond what the issue names (CHANTYPES, CASEMAPPING,
    NICKLEN, CHANNELLEN, TOPICLEN, NETWORK, CHATHISTORY) clients look for:
    PREFIX and CHANMODES (how to read NAMES and MODE; the conventional
    values, though nobody has a prefix yet and the one mode is +n, since a
    non-member cannot speak in a room), CHANLIMIT (rooms per account),
    MSGREFTYPES (what CHATHISTORY takes), TARGMAX (one target per
    PRIVMSG: each is a stored message), UTF8ONLY (see parse_line) and
    WHOX (354)."""
    tokens = [
        "CASEMAPPING=ascii",
        "CHANLIMIT=#:%d" % chanlimit,
        "CHANMODES=,,,n",
        "CHANNELLEN=%d" % channellen,
        "CHANTYPES=#",
        "CHATHISTORY=%d" % chathistory,
        "MSGREFTYPES=msgid,timestamp",
        "NETWORK=%s" % network,
        "NICKLEN=%d" % nicklen,
        "PREFIX=(ov)@+",
        "SAFELIST",
        "TARGMAX=JOIN:,NAMES:1,NOTICE:1,PART:,PRIVMSG:1,WHOIS:1",
        "TOPICLEN=%d" % topiclen,
        "UTF8ONLY",
        "WHOX",
    ]
    return tokens + list(extra)


def isupport_lines(server_name: str, nick: str, tokens: Sequence[str]) -> List[bytes]:
    """005 lines of at most 13 tokens each."""
    step = ISUPPORT_TOKENS_PER_LINE
    return [numeric(server_name, nick, RPL_ISUPPORT, *tokens[i:i + step], "are supported by this server")
            for i in range(0, len(tokens), step)]


def motd_lines(server_name: str, nick: str, motd: Optional[str]) -> List[bytes]:
    """375, a 372 per line of ``motd``, 376; or 422 without one. Lines are
    cut to fit (an MOTD file is the operator's, not checked elsewhere)."""
    if not motd:
        return [numeric(server_name, nick, ERR_NOMOTD, "MOTD File is missing")]
    lines = [numeric(server_name, nick, RPL_MOTDSTART, "- %s Message of the day -" % server_name)]
    room = _text_room(numeric(server_name, nick, RPL_MOTD, "- x"), "- x")
    for text in motd.splitlines():
        text = _V1_CONTROL_RE.sub("", text.replace("\t", " "))
        for piece in split_text("- " + text, room) if text else ["-"]:
            lines.append(numeric(server_name, nick, RPL_MOTD, piece))
    lines.append(numeric(server_name, nick, RPL_ENDOFMOTD, "End of /MOTD command."))
    return lines


def names_lines(server_name: str, nick: str, channel: str, names: Iterable[str],
                userhosts: bool = False) -> List[bytes]:
    """353 lines (``= #room :name name ...``), as many as the names need,
    then 366. Names are sorted case-insensitively; nobody has a prefix.
    With ``userhosts`` (userhost-in-names) each is ``nick!user@host``."""
    names = sorted(names, key=nick_key)
    if userhosts:
        names = [hostmask(name, server_name) for name in names]
    room = _text_room(numeric(server_name, nick, RPL_NAMREPLY, "=", channel, "x y"), "x y")
    lines = []
    chunk: List[str] = []
    size = 0
    for name in names:
        if chunk and size + 1 + len(name) > room:
            lines.append(numeric(server_name, nick, RPL_NAMREPLY, "=", channel, " ".join(chunk)))
            chunk, size = [], 0
        size += len(name) + (1 if chunk else 0)
        chunk.append(name)
    if chunk:
        lines.append(numeric(server_name, nick, RPL_NAMREPLY, "=", channel, " ".join(chunk)))
    lines.append(numeric(server_name, nick, RPL_ENDOFNAMES, channel, "End of /NAMES list."))
    return lines


def topic_lines(server_name: str, nick: str, channel: str, setter: str = "", ts: str = "",
                text: str = "") -> List[bytes]:
    """A TOPIC query's or a JOIN's answer: 332 and 333 (who set it, when,
    in seconds since the epoch), or 331 without a topic."""
    if not text:
        return [numeric(server_name, nick, RPL_NOTOPIC, channel, "No topic is set")]
    lines = [numeric(server_name, nick, RPL_TOPIC, channel, text)]
    seconds = timestamp_seconds(ts)
    if setter and seconds is not None:
        lines.append(numeric(server_name, nick, RPL_TOPICWHOTIME, channel, setter, str(seconds)))
    return lines


def labeled(label: str, lines: List[bytes], server_name: str, ref: Optional[str] = None) -> List[bytes]:
    """A reply to a command the client labeled (labeled-response): no line
    is ``ACK``; one line, or one batch that is the whole reply, carries the
    label; more lines go in a ``labeled-response`` batch, each line not in
    a batch of its own tagged with it."""
    if not lines:
        return [format_line("ACK", tags={"label": label}, source=server_name)]
    if len(lines) == 1:
        return [add_tags(lines[0], {"label": label})]
    first, last = lines[0], lines[-1]
    if _batch_start(first) and _batch_end(last) == _batch_start(first) and _is_one_batch(lines):
        return [add_tags(first, {"label": label})] + lines[1:]
    ref = ref or new_batch_ref()
    out = [format_line("BATCH", "+" + ref, "labeled-response", tags={"label": label}, source=server_name)]
    for line in lines:
        out.append(line if _has_tag(line, "batch") else add_tags(line, {"batch": ref}))
    out.append(format_line("BATCH", "-" + ref, source=server_name))
    return out


def add_tags(line: bytes, tags: Dict[str, str]) -> bytes:
    """``line`` (a formatted line) with more tags in front of its own."""
    new = format_tags(tags)
    if line.startswith(b"@"):
        return new[:-1].encode("utf-8") + b";" + line[1:]
    return new.encode("utf-8") + line


def _has_tag(line: bytes, key: str) -> bool:
    if not line.startswith(b"@"):
        return False
    tags = line[1:line.index(b" ")].decode("utf-8")
    return any(item.partition("=")[0] == key for item in tags.split(";"))


def _batch_start(line: bytes) -> Optional[str]:
    message = parse_line(line.rstrip(b"\r\n"))
    if isinstance(message, IrcMessage) and message.command == "BATCH" and message.params and \
            message.params[0].startswith("+") and "batch" not in message.tags:
        return message.params[0][1:]
    return None


def _batch_end(line: bytes) -> Optional[str]:
    message = parse_line(line.rstrip(b"\r\n"))
    if isinstance(message, IrcMessage) and message.command == "BATCH" and message.params and \
            message.params[0].startswith("-"):
        return message.params[0][1:]
    return None


def _is_one_batch(lines: List[bytes]) -> bool:
    ref = _batch_start(lines[0])
    return all(_has_tag(line, "batch") for line in lines[1:-1]) and ref is not None


def lusers_lines(server_name: str, nick: str, users: int, channels: int, unknown: int = 0,
                 max_users: Optional[int] = None) -> List[bytes]:
    """The LUSERS answer (and the registration burst's): one server, no
    operators, every account online counted as a visible user."""
    most = max(users, max_users or 0)
    return [
        numeric(server_name, nick, RPL_LUSERCLIENT, "There are %d users and 0 invisible on 1 servers" % users),
        numeric(server_name, nick, RPL_LUSEROP, "0", "operator(s) online"),
        numeric(server_name, nick, RPL_LUSERUNKNOWN, str(unknown), "unknown connection(s)"),
        numeric(server_name, nick, RPL_LUSERCHANNELS, str(channels), "channels formed"),
        numeric(server_name, nick, RPL_LUSERME, "I have %d clients and 0 servers" % users),
        numeric(server_name, nick, RPL_LOCALUSERS, str(users), str(most),
                "Current local users %d, max %d" % (users, most)),
        numeric(server_name, nick, RPL_GLOBALUSERS, str(users), str(most),
                "Current global users %d, max %d" % (users, most)),
    ]


# --- logging in and registering without SASL -----------------------------------

class Credentials(NamedTuple):
    """A name and password to check. ``account`` "" means the nick the
    client gives (PASS may come before NICK)."""
    account: str
    password: str


def parse_pass(param: str) -> Credentials:
    """PASS as bouncers take it: ``name:password``, or the password alone
    for the account named by NICK. A password may hold ":" itself, so the
    part before the first ":" is a name only if it can be one."""
    name, colon, password = param.partition(":")
    if colon and check_nick(name) is None and password:
        return Credentials(name, password)
    return Credentials("", param)


# draft/account-registration's FAIL REGISTER codes.
ACCOUNT_EXISTS = "ACCOUNT_EXISTS"
# Ergo's (and irctest's) code when the name is a connected guest's nick.
USERNAME_EXISTS = "USERNAME_EXISTS"
BAD_ACCOUNT_NAME = "BAD_ACCOUNT_NAME"
ACCOUNT_NAME_MUST_BE_NICK = "ACCOUNT_NAME_MUST_BE_NICK"
NEED_NICK = "NEED_NICK"
ALREADY_AUTHENTICATED = "ALREADY_AUTHENTICATED"
WEAK_PASSWORD = "WEAK_PASSWORD"
UNACCEPTABLE_PASSWORD = "UNACCEPTABLE_PASSWORD"
COMPLETE_CONNECTION_REQUIRED = "COMPLETE_CONNECTION_REQUIRED"
TEMPORARILY_UNAVAILABLE = "TEMPORARILY_UNAVAILABLE"


def parse_register(params: Sequence[str], nick: str,
                   password_min_bytes: int = proto.PASSWORD_MIN_BYTES) -> Union[Credentials, Failure]:
    """``REGISTER <account|*> <email|*> <password>`` checked: the account to
    make (always the nick: "*" names it, another name is refused) and its
    password, or the FAIL to answer. The e-mail address is not kept: the
    server has no mail to send."""
    if len(params) < 3:
        return Failure("REGISTER", "NEED_MORE_PARAMS", ("*",), "usage: REGISTER * * <password>")
    account, _, password = params[0], params[1], params[2]
    if not nick:
        return Failure("REGISTER", NEED_NICK, ("*",), "Send NICK first: your account is named after it")
    if account == "*":
        account = nick
    if check_nick(account):
        return Failure("REGISTER", BAD_ACCOUNT_NAME, (account,), check_nick(account))
    if nick_key(account) != nick_key(nick):
        return Failure("REGISTER", ACCOUNT_NAME_MUST_BE_NICK, (account,),
                       "An account is named after its nick: change your nick to %s first" % account)
    size = len(password.encode("utf-8"))
    if size < password_min_bytes:
        return Failure("REGISTER", WEAK_PASSWORD, (account,),
                       "Passwords are at least %d bytes" % password_min_bytes)
    if size > proto.PASSWORD_MAX_BYTES or password == "*":
        return Failure("REGISTER", UNACCEPTABLE_PASSWORD, (account,),
                       "Passwords are at most %d bytes" % proto.PASSWORD_MAX_BYTES)
    return Credentials(account, password)


NICKSERV = "NickServ"
NICKSERV_KEY = nick_key(NICKSERV)  # every PRIVMSG's target is compared with it
NICKSERV_HELP = (
    "REGISTER <password>: make an account named after your nick",
    "IDENTIFY [name] <password>: log in",
    "HELP: this list",
)


class NickServCommand(NamedTuple):
    """A PRIVMSG to NickServ, parsed: ``verb`` REGISTER, IDENTIFY or HELP
    (upper case), ``account`` ("" for the nick) and ``password``. An
    unknown verb comes back as it is, for the server's "unknown command"
    NOTICE."""
    verb: str
    account: str = ""
    password: str = ""


def parse_nickserv(text: str) -> NickServCommand:
    """What a user typed to NickServ (``/msg NickServ IDENTIFY hunter22``).
    A password is the rest of the text after the name, so it may hold
    spaces; IDENTIFY with one word takes it as the password."""
    verb, _, rest = text.strip(" ").partition(" ")
    verb = _ascii_upper(verb)
    rest = rest.strip(" ")
    if verb == "IDENTIFY":
        name, _, password = rest.partition(" ")
        if password and check_nick(name) is None:
            return NickServCommand(verb, name, password.strip(" "))
        return NickServCommand(verb, "", rest)
    if verb == "REGISTER":
        return NickServCommand(verb, "", rest)
    return NickServCommand(verb or "HELP")


def register_success_line(server_name: str, account: str, tags=None) -> bytes:
    return format_line("REGISTER", "SUCCESS", account, "Account %s registered" % account, tags=tags,
                       source=server_name, trailing=True)


# --- SASL PLAIN ----------------------------------------------------------------

class SaslContinue(NamedTuple):
    """Send ``AUTHENTICATE <data>`` ("+": go on, send your payload)."""
    data: str = "+"


class SaslMore(NamedTuple):
    """A 400-byte chunk arrived: wait for the next one, send nothing."""


class SaslCredentials(NamedTuple):
    """The payload decoded: check ``password`` for ``account``, then send
    900 and 903 (or 904 if it is wrong). ``account`` is as the client
    spelled it; the account's own spelling goes in 900."""
    account: str
    password: str


class SaslFailure(NamedTuple):
    """Send ``code`` (904, 905 or 906; 908 listing the mechanisms first
    when ``mechanisms``) and forget the exchange."""
    code: str
    text: str
    mechanisms: bool = False


SaslStep = Union[SaslContinue, SaslMore, SaslCredentials, SaslFailure]


class SaslPlain:
    """One AUTHENTICATE exchange of a session, fed each AUTHENTICATE's
    parameter in turn. The first names the mechanism; then base64 comes in
    chunks of 400 bytes, the last shorter (or "+" when the payload is a
    multiple of 400, or empty); "*" aborts. Once ``done``, a new exchange
    needs a new object."""

    __slots__ = ("_mechanism", "_chunks", "_size", "done")

    def __init__(self):
        self._mechanism = None
        self._chunks: List[str] = []
        self._size = 0
        self.done = False

    def receive(self, param: str) -> SaslStep:
        if self.done:
            raise ValueError("this SASL exchange is over")
        if param == "*":
            return self._end(SaslFailure(ERR_SASLABORTED, "SASL authentication aborted"))
        if self._mechanism is None:
            if _ascii_upper(param) not in SASL_MECHANISMS:
                return self._end(SaslFailure(ERR_SASLFAIL, "SASL authentication failed", mechanisms=True))
            self._mechanism = _ascii_upper(param)
            return SaslContinue()
        if len(param) > SASL_CHUNK_BYTES:
            return self._end(SaslFailure(ERR_SASLTOOLONG, "SASL message too long"))
        if param != "+":
            self._size += len(param)
            if self._size > SASL_MAX_ENCODED:
                # 905 is for one AUTHENTICATE over 400 bytes (sasl-3.1);
                # chunks that never end are a failed login, as other
                # servers answer it.
                return self._end(SaslFailure(ERR_SASLFAIL, "SASL authentication failed: payload too long"))
            self._chunks.append(param)
            if len(param) == SASL_CHUNK_BYTES:
                return SaslMore()
        return self._end(decode_plain("".join(self._chunks)))

    def _end(self, step: SaslStep) -> SaslStep:
        self.done = True
        self._chunks = []
        return step


_SASL_FAILED = SaslFailure(ERR_SASLFAIL, "SASL authentication failed")


def decode_plain(encoded: str) -> Union[SaslCredentials, SaslFailure]:
    """PLAIN's payload (RFC 4616: authzid NUL authcid NUL password, in
    base64). An authorization identity other than the account itself is
    refused: nobody may act as another account here."""
    try:
        payload = base64.b64decode(encoded.encode("ascii"), validate=True)
        authzid, authcid, password = payload.decode("utf-8").split("\0")
    except (binascii.Error, UnicodeError, ValueError):
        return _SASL_FAILED
    if check_nick(authcid) or not password:
        return _SASL_FAILED
    if authzid and nick_key(authzid) != nick_key(authcid):
        return _SASL_FAILED
    return SaslCredentials(authcid, password)


def authenticate_chunks(payload: bytes) -> List[str]:
    """The AUTHENTICATE parameters that carry ``payload``: base64 in pieces
    of 400, and "+" after a last piece of exactly 400 (or for nothing)."""
    encoded = base64.b64encode(payload).decode("ascii")
    chunks = [encoded[i:i + SASL_CHUNK_BYTES] for i in range(0, len(encoded), SASL_CHUNK_BYTES)]
    if not chunks or len(chunks[-1]) == SASL_CHUNK_BYTES:
        chunks.append("+")
    return chunks


def account_line(server_name: str, nick: str, account: Optional[str]) -> bytes:
    """account-notify's ACCOUNT: ``nick`` is now logged in to ``account``
    (None: to none, "*"). The same bytes for everyone who gets it."""
    return format_line("ACCOUNT", account or "*", source=hostmask(nick, server_name))


def logged_in_lines(server_name: str, nick: str, account: str) -> List[bytes]:
    """900 and 903: what a successful SASL login is answered."""
    return [numeric(server_name, nick, RPL_LOGGEDIN, hostmask(nick or account, server_name), account,
                    "You are now logged in as %s" % account),
            numeric(server_name, nick, RPL_SASLSUCCESS, "SASL authentication successful")]


def sasl_failure_lines(server_name: str, nick: str, failure: SaslFailure) -> List[bytes]:
    lines = []
    if failure.mechanisms:
        lines.append(numeric(server_name, nick, RPL_SASLMECHS, ",".join(SASL_MECHANISMS),
                             "are available SASL mechanisms"))
    lines.append(numeric(server_name, nick, failure.code, failure.text))
    return lines


# --- CHATHISTORY ----------------------------------------------------------------

class HistoryRef(NamedTuple):
    """A point in a history: ``kind`` "msgid" (``msg_id``, our message id),
    "timestamp" (``timestamp``, in the store's form) or "*" (now)."""
    kind: str
    msg_id: int = 0
    timestamp: str = ""


NOW = HistoryRef("*")


class ChathistoryRequest(NamedTuple):
    """A CHATHISTORY command, checked. ``target`` is a channel or a nick
    ("" for TARGETS); ``refs`` are its one or two references; ``limit`` is
    already capped at the server's maximum."""
    subcommand: str
    target: str
    refs: Tuple[HistoryRef, ...]
    limit: int


class HistoryBound(NamedTuple):
    ref: HistoryRef
    inclusive: bool = False


class HistoryWindow(NamedTuple):
    """One store query: the messages strictly after ``after`` and before
    ``before`` (or at them when the bound is inclusive), the newest
    ``count`` of them if ``newest`` else the oldest, returned oldest first.

    A msgid bound is an id bound (store.room_history's before=/after=);
    a timestamp bound compares created_at, which the store keeps as text
    that sorts as time does. A timestamp becomes an id bound as the id of
    the first message at or after it (for ``before``, or an inclusive
    ``after``), or of the last at or before it (for ``after``)."""
    count: int
    newest: bool
    after: Optional[HistoryBound] = None
    before: Optional[HistoryBound] = None


CHATHISTORY_SUBCOMMANDS = ("LATEST", "BEFORE", "AFTER", "AROUND", "BETWEEN", "TARGETS")
_TIMESTAMP_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?Z\Z")


def parse_timestamp(text: str) -> Optional[str]:
    """An IRCv3 timestamp (``2026-11-24T13:05:01.123Z``; any number of
    fraction digits, or none) in the store's form, milliseconds exactly, or
    None if it is no such time."""
    match = _TIMESTAMP_RE.match(text)
    if not match:
        return None
    year, month, day, hour, minute, second, fraction = match.groups()
    try:
        datetime.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
    except ValueError:
        return None
    millis = ((fraction or "") + "000")[:3]
    return "%s-%s-%sT%s:%s:%s.%sZ" % (year, month, day, hour, minute, second, millis)


def timestamp_seconds(ts: str) -> Optional[int]:
    """A store timestamp in whole seconds since the epoch (333, 329)."""
    if parse_timestamp(ts) is None:
        return None
    moment = datetime.datetime.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return int(moment.timestamp())


def parse_history_ref(text: str, allow_now: bool = False) -> Optional[HistoryRef]:
    if text == "*":
        return NOW if allow_now else None
    kind, _, value = text.partition("=")
    if kind == "msgid":
        msg_id = proto.whole_number(value, 1)
        return None if msg_id is None else HistoryRef("msgid", msg_id=msg_id)
    if kind == "timestamp":
        ts = parse_timestamp(value)
        return None if ts is None else HistoryRef("timestamp", timestamp=ts)
    return None


def parse_chathistory(params: Sequence[str], max_limit: int = CHATHISTORY_MAX
                      ) -> Union[ChathistoryRequest, Failure]:
    """CHATHISTORY's parameters as a request, or the FAIL to answer. Only
    syntax is checked here: whether the target exists and the client may
    read it is the server's (FAIL CHATHISTORY INVALID_TARGET, the same for
    both, so that nobody learns which rooms exist). A limit over the
    server's maximum is lowered to it, and 0 means the maximum."""
    if not params:
        return Failure("CHATHISTORY", "NEED_MORE_PARAMS", ("*",), "Missing parameters")
    sub = _ascii_upper(params[0])
    if sub not in CHATHISTORY_SUBCOMMANDS:
        return Failure("CHATHISTORY", "UNKNOWN_COMMAND", (params[0][:32] or "*",), "Unknown subcommand")
    # LATEST|BEFORE|AFTER|AROUND <target> <ref> <limit>,
    # BETWEEN <target> <ref> <ref> <limit>, TARGETS <ref> <ref> <limit>.
    count = 5 if sub == "BETWEEN" else 4
    if len(params) < count:
        return Failure("CHATHISTORY", "NEED_MORE_PARAMS", (sub,), "Missing parameters")
    limit_text = params[count - 1]
    if sub == "TARGETS":
        target, ref_texts = "", params[1:3]
    else:
        target, ref_texts = params[1], params[2:count - 1]
        if check_channel(target) if is_channel(target) else check_nick(target):
            return Failure("CHATHISTORY", "INVALID_TARGET", (sub, target[:64] or "*"), "Invalid target")
    refs = []
    for text in ref_texts:
        ref = parse_history_ref(text, allow_now=sub == "LATEST")
        if ref is None or (sub == "TARGETS" and ref.kind != "timestamp"):
            return Failure("CHATHISTORY", "INVALID_PARAMS", (sub, text[:64] or "*"), "Invalid message reference")
        refs.append(ref)
    limit = proto.whole_number(limit_text)
    if limit is None:
        return Failure("CHATHISTORY", "INVALID_PARAMS", (sub, limit_text[:32] or "*"), "Invalid limit")
    if limit == 0 or limit > max_limit:
        limit = max_limit
    return ChathistoryRequest(sub, target, tuple(refs), limit)


def history_windows(request: ChathistoryRequest) -> List[HistoryWindow]:
    """The store queries that answer a request, in the order their results
    are sent. BETWEEN's two references must be of one kind (a server that
    meets a msgid and a timestamp turns the msgid into its message's time
    first); from the later to the earlier, it reads backwards: the newest
    messages between them. AROUND gives half the limit before the reference
    and the rest from it on, so the message referred to is in the answer."""
    sub, refs, limit = request.subcommand, request.refs, request.limit
    if sub == "LATEST":
        after = None if refs[0].kind == "*" else HistoryBound(refs[0])
        return [HistoryWindow(limit, True, after=after)]
    if sub == "BEFORE":
        return [HistoryWindow(limit, True, before=HistoryBound(refs[0]))]
    if sub == "AFTER":
        return [HistoryWindow(limit, False, after=HistoryBound(refs[0]))]
    if sub == "AROUND":
        earlier = limit // 2
        windows = [HistoryWindow(earlier, True, before=HistoryBound(refs[0]))] if earlier else []
        return windows + [HistoryWindow(limit - earlier, False, after=HistoryBound(refs[0], inclusive=True))]
    if sub == "BETWEEN":
        first, second = refs
        if first.kind != second.kind:
            raise ValueError("BETWEEN needs two references of one kind")
        if _ref_order(first) == _ref_order(second):
            return []
        if _ref_order(first) < _ref_order(second):
            return [HistoryWindow(limit, False, after=HistoryBound(first), before=HistoryBound(second))]
        return [HistoryWindow(limit, True, after=HistoryBound(second), before=HistoryBound(first))]
    raise ValueError("TARGETS is read with targets_window and answered with targets_lines, not messages")


def _ref_order(ref: HistoryRef):
    return ref.msg_id if ref.kind == "msgid" else ref.timestamp


def _within(message, bound: HistoryBound, side: str) -> bool:
    ref = bound.ref
    value = message.id if ref.kind == "msgid" else message.created_at
    point = _ref_order(ref)
    if side == "after":
        return value >= point if bound.inclusive else value > point
    return value <= point if bound.inclusive else value < point


def select_history(messages: Sequence, window: HistoryWindow) -> list:
    """A window applied to a list of messages sorted oldest first: what a
    store query for it returns. The server's store does this with SQL; this
    is the reference its answers are tested against."""
    chosen = [m for m in messages
              if (window.after is None or _within(m, window.after, "after"))
              and (window.before is None or _within(m, window.before, "before"))]
    if window.count <= 0:
        return []
    return chosen[-window.count:] if window.newest else chosen[:window.count]


class TargetsWindow(NamedTuple):
    """What CHATHISTORY TARGETS asks the store for (Store.targets): the
    conversations whose latest message is strictly between ``after`` and
    ``before`` (store timestamps), the ``limit`` first of them, or the last
    when ``newest``."""
    after: str
    before: str
    limit: int
    newest: bool


def targets_window(request: ChathistoryRequest) -> Optional[TargetsWindow]:
    """TARGETS' two timestamps as BETWEEN reads them: from the first towards
    the second, forwards or backwards in time, the limit counted from the
    first (from the later one, the latest conversations). None when they
    are one moment: nothing is strictly between."""
    first, second = (ref.timestamp for ref in request.refs)
    if first == second:
        return None
    if first < second:
        return TargetsWindow(first, second, request.limit, False)
    return TargetsWindow(second, first, request.limit, True)


def targets_lines(server_name: str, targets: Iterable[Tuple[str, str]], ref: Optional[str] = None) -> List[bytes]:
    """CHATHISTORY TARGETS' answer: the conversations (channels and nicks)
    with their latest message's time, in a draft/chathistory-targets batch."""
    ref = ref or new_batch_ref()
    lines = [format_line("BATCH", "+" + ref, "draft/chathistory-targets", source=server_name)]
    for target, ts in targets:
        lines.append(format_line("CHATHISTORY", "TARGETS", target, ts, tags={"batch": ref}, source=server_name))
    lines.append(format_line("BATCH", "-" + ref, source=server_name))
    return lines

