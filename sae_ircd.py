"""The IRC listener's commands: what an IRC client's lines do on the server.

sae_irc.py says IRC (parsing, numerics, capabilities, SASL, CHATHISTORY's
grammar) without any I/O; sae_server.py owns the loop, the sessions, the
rooms, the accounts, the limits and the storage. This module is the glue
between them, and nothing else: one function per command, ``(server,
session, message)``, in a dispatch table (COMMANDS) like sae_server's, each
answering through the Server's methods (reply, reply_lines, accept_message,
joined, parted, go_online ...). A command that waits for storage or hashing
is a generator yielding ``storage(...)``/``hashing(...)`` exactly as
sae_server's commands do, and logging in or registering goes through the
same steps as protocol v1's LOGIN and REGISTER (sae_server.login_steps,
register_steps): one set of Guards, one login-failure delay, one ban
re-check after hashing.

How an IRC session goes:
  connected -> CAP LS / NICK / USER (and PASS, AUTHENTICATE, REGISTER)
  -> registration ends (CAP END, or NICK and USER without CAP) -> 001..005,
  LUSERS, MOTD -> logged in (by SASL or PASS before, or NickServ /
  REGISTER after) -> online: every room of the account is joined for the
  client (JOIN, topic, NAMES, the room's last messages).
A client that registers without logging in is told how to in one NOTICE,
may only log in, register, PING, QUIT, and is closed at --login-timeout,
like a v1 connection that never sends LOGIN.
"""

import collections
import itertools
import logging
import secrets
import socket
from typing import NamedTuple, Optional

import sae_irc as irc
import sae_protocol as proto
from sae_db import StorageUnavailable, name_key
from sae_db.sql import BEYOND_EVERY_ID
from sae_protocol import room_key
from sae_server import (BAD, BANNED, CLOSING, GONE, GUEST_HASH, HELD_LINE_COST, KICKED, NO_LINES, ONLINE, TAKEN,
                        TOO_FAST,
                        UNAVAILABLE, IrcSession, Refused, caught_up, clear_password_refusal, join_room,
                        login_checked,
                        login_steps,
                        hash_password, hashing, password_problem, register_steps, render_topic, storage,
                        wall_ms)

log = logging.getLogger("sae-server")

IRC_PORT = 6667
NETWORK = "sae-chat"
VERSION = "sae-chat"

# Commands that cost the server work (storage, hashing), rate-limited by the
# same flood bucket as v1's SAY, LOGIN, JOIN ...
COSTLY_COMMANDS = frozenset(("PRIVMSG", "NOTICE", "TAGMSG", "JOIN", "PART", "TOPIC", "LIST", "NAMES",
                             "CHATHISTORY", "AUTHENTICATE", "PASS", "REGISTER", "WHOIS", "WHO"))
MESSAGE_COMMANDS = frozenset(("PRIVMSG", "NOTICE"))
# What a client may send before registration has ended.
BEFORE_REGISTRATION = frozenset(("CAP", "NICK", "USER", "PASS", "AUTHENTICATE", "PING", "PONG", "QUIT",
                                 "REGISTER"))
# Commands that exist only for a client that enabled their capability: to
# any other they are unknown (421), as they were before it was offered.
CAPABILITY_COMMANDS = {"TAGMSG": "message-tags", "BATCH": irc.MULTILINE}
# Commands that read the line's tags, not only its parameters.
TAGGED_COMMANDS = frozenset(("TAGMSG", "PRIVMSG", "NOTICE", "BATCH"))
# What a registered client that has not logged in may still do.
WITHOUT_LOGIN = BEFORE_REGISTRATION | frozenset(("PRIVMSG", "MOTD", "LUSERS", "VERSION", "AWAY"))

HOW_TO_LOG_IN = ("This server needs an account. Log in with SASL: irssi: /network add -sasl_username NAME "
                 "-sasl_password PASSWORD -sasl_mechanism PLAIN <net>; WeeChat: /set irc.server.<net>.sasl_username "
                 "NAME and /set irc.server.<net>.sasl_password PASSWORD, then /reconnect. Or: /msg NickServ "
                 "IDENTIFY PASSWORD (new here: /msg NickServ REGISTER PASSWORD).")
KEEP_YOUR_NICK = ("You are a guest here. To keep your nick: /msg NickServ REGISTER <password>; to log in to "
                  "your account: /msg NickServ IDENTIFY <name> <password>")


class IrcOptions(NamedTuple):
    """What the IRC listener says of itself."""
    server_name: str = "sae-chat.local"
    network: str = NETWORK
    motd: Optional[str] = None
    created: str = ""
    guests: bool = False


def irc_options(server_name=None, network=NETWORK, motd_file=None, guests=False) -> IrcOptions:
    """The options from the command line; reads the MOTD file (OSError if it cannot)."""
    motd = None
    if motd_file:
        with open(motd_file, encoding="utf-8", errors="replace") as source:
            motd = source.read()
    name = server_name or socket.gethostname() or "sae-chat"
    # The name is the source of every reply: it must be one word.
    name = "".join(ch for ch in name if ch.isalnum() or ch in ".-_") or "sae-chat"
    created = proto.format_timestamp(wall_ms())
    return IrcOptions(name, network, motd, created, guests)


# --- sessions -------------------------------------------------------------------

def formatter(server, caps):
    return irc.IrcFormatter(server.irc.server_name, caps, server.room.info.name, server.guests)


def new_session(server, sock, ip, port, exempt):
    return IrcSession(sock, ip, port, exempt, server.now, server.limits.flood_burst, formatter(server, ()))


def take_input(server, session, data):
    """Bytes read from an IRC client: its lines, parsed, join the held ones."""
    held = session.held
    if held is NO_LINES:
        held = session.held = collections.deque()
    for frame in session.framer.feed(data):
        if frame.__class__ is bytes:
            message = irc.parse_line(frame)
            if message is None:
                continue
            cost = max(len(frame), HELD_LINE_COST)
        elif frame.__class__ is proto.LineTooLong:
            message, cost = irc.InputTooLong(), HELD_LINE_COST
        else:
            server.run_held(session)
            server.close_session(session, session.protocol.format_bye("line too long"), "line too long")
            return
        held.append((cost, message))
        session.held_bytes += cost
    server.run_held(session)


def run_held(server, session):
    """sae_server.Server.run_held for IRC lines: in order, as far as they
    may run (one command waiting at a time, but messages may join a batch
    behind earlier ones), costly ones paced by the flood bucket."""
    held = session.held
    guards = server.guards
    while held and session.state is not CLOSING:
        cost, line = held[0]
        if line.__class__ is irc.IrcMessage:
            command = line.command
            if session.inflight and not (
                    command in MESSAGE_COMMANDS and session.inflight == session.inflight_messages
                    and message_ready(server, session, line)):
                break
            if command in COSTLY_COMMANDS and not session.exempt:
                if session in guards.throttled:
                    break
                ready_at = guards.take_token(session, server.now)
                if ready_at is not None:
                    server.call_at(ready_at, lambda: server._throttle_over(session), owner=session)
                    break
        elif session.inflight:
            break
        held.popleft()
        session.held_bytes -= cost
        if line.__class__ is irc.InputTooLong:
            server.reply(session, numeric(server, session, irc.ERR_INPUTTOOLONG, "Input line was too long"))
            continue
        if line.__class__ is irc.BadLine:
            server.reply(session, irc.fail(server.irc.server_name, line.command, line.code, description=line.text))
            continue
        outer, server.running_for = server.running_for, session
        try:
            steps = dispatch(server, session, line)
            if steps is not None:
                server.start_command(session, steps)
        except Exception:
            server._fault(session, "the IRC %s command" % line.command)
            return
        finally:
            server.running_for = outer
    server.pace_reading(session, held)


def dispatch(server, session, message):
    command = message.command
    function = COMMANDS.get(command)
    if command in CAPABILITY_COMMANDS and CAPABILITY_COMMANDS[command] not in session.caps:
        function = None
    session.label = message.tags.get("label") if "labeled-response" in session.caps else None
    if not session.registered and command not in BEFORE_REGISTRATION:
        if function is None:
            return None  # a client probing before registration: RFC 1459 servers stay quiet
        answer(server, session, [numeric(server, session, irc.ERR_NOTREGISTERED, "You have not registered")])
        return None
    if function is None:
        answer(server, session, [numeric(server, session, irc.ERR_UNKNOWNCOMMAND, command, "Unknown command")])
        return None
    if session.account is None and command not in WITHOUT_LOGIN:
        answer(server, session, login_notices(server, session, "Log in first. " + HOW_TO_LOG_IN))
        if irc.is_channel(message.params[0] if message.params else ""):
            answer(server, session, [numeric(server, session, irc.ERR_NOTREGISTERED, "You must log in first")])
        return None
    if command in TAGGED_COMMANDS:
        return function(server, session, message.params, message.tags)
    return function(server, session, message.params)


def numeric(server, session, code, *params):
    return irc.numeric(server.irc.server_name, session.nick, code, *params)


def notice(server, session, text, source=None):
    return irc.format_line("NOTICE", session.nick or "*", text, source=source or server.irc.server_name)


def login_notices(server, session, text):
    """NOTICEs that tell the client how to log in (or keep its nick:
    ``text``), and after them, when --require-tls would refuse its password
    here, where to reconnect first: otherwise its first try would be its
    first news of it."""
    in_clear = clear_password_refusal(server, session)
    texts = [text, in_clear[0].upper() + in_clear[1:] + "."] if in_clear else [text]
    return [notice(server, session, line) for line in texts]


def answer(server, session, lines):
    """A command's answer, labeled if the client labeled the command."""
    label = getattr(session, "label", None)
    if label:
        session.label = None
        lines = irc.labeled(label, list(lines), server.irc.server_name)
    if lines:
        server.reply_lines(session, list(lines))


def me(server, session):
    return irc.hostmask(session.nick, server.irc.server_name)


def set_caps(server, session, caps):
    """New capabilities: a new formatter, and the session re-keyed in its rooms."""
    session.caps = frozenset(caps)
    session.echo = "echo-message" in session.caps
    new = formatter(server, session.caps)
    if new is session.protocol:
        return
    rooms = [room for room in session.rooms if room.has(session)]
    everyone = server.everyone.has(session)
    for room in rooms:
        room.discard(session)
    if everyone:
        server.everyone.discard(session)
    session.protocol = new
    for room in rooms:
        room.add(session)
    if everyone:
        server.everyone.add(session)


def kicked_lines(server, session, seconds, reason):
    """An operator's kick: out of every channel, then the ERROR line."""
    text = "kicked for %d s: %s" % (seconds, reason) if reason else "kicked for %d s" % seconds
    lines = [irc.kick_line(server.irc.server_name, room.info.name, session.nick, text)
             for room in sorted(session.rooms, key=lambda r: room_key(r.info.name))]
    return b"".join(lines) + session.protocol.format_kicked(seconds, reason, session.nick)


def message_not_sent(server, session, message, room, error, label=None):
    """A PRIVMSG that was not stored, as the IRC client is told (with the
    label of its command, if it had one). A NOTICE gets no error reply
    (RFC 1459), but is said to be lost."""
    if error is not None:
        line = notice(server, session, "storage unavailable, message not sent")
    elif message.notice:
        line = None
    elif room is not None:
        line = numeric(server, session, irc.ERR_CANNOTSENDTOCHAN, room.info.name, "Cannot send to channel")
    else:
        line = numeric(server, session, irc.ERR_NOSUCHNICK, message.recipient, "No such nick/channel")
    return own_message(server, label, line) if label is not None else line or b""


def own_message(server, label, echo):
    """The answer to a labeled PRIVMSG or NOTICE, once stored: its echo
    (rendered lines, echo-message) with the label, or an ACK without."""
    lines = [line + b"\r\n" for line in echo.split(b"\r\n") if line] if echo else []
    return b"".join(irc.labeled(label, lines, server.irc.server_name))


# --- registration -----------------------------------------------------------------

def cmd_cap(server, session, params):
    if not params:
        return answer(server, session, [numeric(server, session, irc.ERR_NEEDMOREPARAMS, "CAP",
                                                "Not enough parameters")])
    sub = params[0].upper()
    name = server.irc.server_name
    if sub == "LS":
        version = irc.cap_version(params[1]) if len(params) > 1 else 0
        session.cap_version = max(session.cap_version, version)
        if not session.registered:
            session.cap_negotiating = True
        if version >= 302:
            set_caps(server, session, session.caps | {irc.IMPLIED_BY_302})
        return answer(server, session, irc.cap_list_lines(name, session.nick, "LS", irc.CAPABILITIES,
                                                          irc.cap_values(), version))
    if sub == "LIST":
        return answer(server, session, irc.cap_list_lines(name, session.nick, "LIST", sorted(session.caps),
                                                          version=session.cap_version))
    if sub == "REQ":
        if not session.registered:
            session.cap_negotiating = True
        result = irc.cap_request(params[1] if len(params) > 1 else "", session.caps, version=session.cap_version)
        if result.ack:
            set_caps(server, session, result.enabled)
        return answer(server, session, [irc.format_line("CAP", session.nick or "*", "ACK" if result.ack else "NAK",
                                                        result.echo, source=name, trailing=True)])
    if sub == "END":
        session.cap_negotiating = False
        return end_registration(server, session)
    return answer(server, session, [numeric(server, session, "410", params[0], "Invalid CAP command")])


def cmd_nick(server, session, params):
    if not params or not params[0]:
        return answer(server, session, [numeric(server, session, irc.ERR_NONICKNAMEGIVEN, "No nickname given")])
    nick = params[0]
    if irc.check_nick(nick):
        return answer(server, session, [numeric(server, session, irc.ERR_ERRONEUSNICKNAME, nick,
                                                "Erroneous nickname")])
    if session.account is not None:
        if irc.nick_key(nick) != irc.nick_key(session.account.name):
            return answer(server, session, [numeric(server, session, irc.ERR_ERRONEUSNICKNAME, nick,
                                                    "Your nick is your account's name, %s" % session.account.name)])
        if nick != session.nick and session.registered:
            line = irc.format_line("NICK", nick, source=me(server, session))
            session.nick = nick
            return answer(server, session, [line])
        session.nick = nick
        return None
    if session.registered:
        # Not logged in: the nick names the account to log in as, for NickServ.
        line = irc.format_line("NICK", nick, source=me(server, session))
        session.nick = nick
        return answer(server, session, [line])
    session.nick = nick
    return end_registration(server, session)


def cmd_user(server, session, params):
    if session.registered:
        return answer(server, session, [numeric(server, session, irc.ERR_ALREADYREGISTERED,
                                                "You may not reregister")])
    if len(params) < 4 or not params[0] or not params[3]:
        return answer(server, session, [numeric(server, session, irc.ERR_NEEDMOREPARAMS, "USER",
                                                "Not enough parameters")])
    session.user_given = True
    session.realname = irc.clean_realname(params[3])
    return end_registration(server, session)


def cmd_pass(server, session, params):
    if session.registered:
        return answer(server, session, [numeric(server, session, irc.ERR_ALREADYREGISTERED,
                                                "You may not reregister")])
    if not params or not params[0]:
        return answer(server, session, [numeric(server, session, irc.ERR_NEEDMOREPARAMS, "PASS",
                                                "Not enough parameters")])
    in_clear = clear_password_refusal(server, session)
    if in_clear:
        # The password is dropped, not checked: registration goes on as if
        # no PASS came, and the client may log in again over TLS.
        return answer(server, session, [numeric(server, session, irc.ERR_PASSWDMISMATCH, in_clear)])
    session.credentials = irc.parse_pass(params[0])
    return None


def end_registration(server, session):
    """NICK, USER and CAP END all in: a PASS is checked, then 001..MOTD,
    then (logged in) the rooms. A generator when it has to wait."""
    if session.registered or session.cap_negotiating or not session.nick or not session.user_given:
        return None
    if session.inflight and session.sasl is not None:
        return None
    return _registration(server, session)


def _registration(server, session):
    credentials, session.credentials = session.credentials, None
    if credentials is not None and session.account is None and session.pending_login is None:
        name = credentials.account or session.nick
        outcome = yield from login_steps(server, session, name, credentials.password)
        if outcome.__class__ is Refused:
            if refused_login(server, session, outcome):
                return
            server.reply(session, numeric(server, session, irc.ERR_PASSWDMISMATCH, "Password incorrect"))
            server.close_session(session, session.protocol.format_bye("Bad password", session.nick),
                                 "bad password")
            return
        session.pending_login = outcome[:2]
    if session.state is CLOSING:
        return
    if session.pending_login is None and server.irc.guests:
        guest = yield from guest_account(server, session)
        if guest is None:
            return  # refused: the client may try another nick
        session.pending_login = guest
        session.guest = True
    if session.pending_login is not None:
        session.nick = session.pending_login[0].name
    session.registered = True
    server.reply_lines(session, welcome(server, session))
    if session.pending_login is not None:
        account, rooms = session.pending_login
        session.pending_login = None
        if session.guest:
            server.reply_lines(session, login_notices(server, session, KEEP_YOUR_NICK))
        yield from come_online(server, session, account, rooms)
    else:
        server.reply_lines(session, login_notices(server, session, HOW_TO_LOG_IN))


# A guest's account is a real row, so that its messages are stored and its
# history kept like anyone's, with GUEST_HASH for a hash that no password
# matches, so that nobody logs in to it; its guest (or anyone, while its
# guest is away: sae_server.claim_guest_account) may REGISTER it later.


def guest_account(server, session):
    """--irc-guests: (account, rooms) for a client that registered without
    logging in, under its nick, or None after saying why not (433: the
    nick is a registered account's, or a guest online has it)."""
    nick = session.nick
    try:
        account = yield storage(server.store.find_account, nick)
        known = account is not None
        if account is None:
            if not session.exempt:
                wait = server.guards.registration_wait(session.ip, server.now)
                if wait:
                    server.reply(session, notice(server, session, "Too many new nicks from your address: "
                                                 "try again in %d seconds" % max(1, int(wait + 0.999))))
                    return None
                server.count_registration(session.ip)
            account = yield storage(server.store.create_account, nick, GUEST_HASH, server.timestamp(),
                                    server.room.info.id)
            if account is not None:
                server.guests.add(name_key(account.name))
                log.info("%s is a guest as %s", session.address, account.name)
    except StorageUnavailable:
        server.reply(session, notice(server, session, "Storage unavailable, try again"))
        return None
    if account is None or account.password_hash != GUEST_HASH or name_key(nick) in server.online:
        # Not registered yet: the client has no nick until it gives one that works.
        session.nick = None
        server.reply(session, numeric(server, session, irc.ERR_NICKNAMEINUSE, nick,
                                      "Nickname is registered or in use: log in, or choose another"))
        return None
    if known:
        # A guest nick is whoever's takes it while it is free: the private
        # messages of the guests before are not this one's to read.
        try:
            yield storage(server.store.start_private_history, account.id)
        except StorageUnavailable:
            server.reply(session, notice(server, session, "Storage unavailable, try again"))
            return None
    checked = yield from login_checked(server, session, account.name)
    if checked.__class__ is Refused:
        refused_login(server, session, checked)
        return None
    return checked[:2]


def welcome(server, session):
    options = server.irc
    nick = session.nick
    lines = irc.welcome_lines(options.server_name, nick, options.network, VERSION, options.created or "at start")
    tokens = irc.isupport_tokens(options.network, chanlimit=server.limits.rooms_per_account,
                                 topiclen=server.limits.topic_max)
    lines += irc.isupport_lines(options.server_name, nick, tokens)
    lines += irc.lusers_lines(options.server_name, nick, len(server.online), len(server.rooms),
                              unknown=len(server.sessions) - len(server.everyone))
    lines += irc.motd_lines(options.server_name, nick, options.motd)
    return lines


def refused_login(server, session, outcome):
    """Say a refusal that is no wrong password; True if it was one of those."""
    kind = outcome.kind
    if kind == GONE:
        return True
    if kind == BANNED:
        server.reply(session, numeric(server, session, irc.ERR_YOUREBANNEDCREEP,
                                      "You are banned from this server: %s" % (outcome.detail or "banned")))
        server.close_session(session, session.protocol.format_banned(outcome.detail or "", session.nick or ""),
                             "banned")
        return True
    if kind == KICKED:
        server.reply(session, numeric(server, session, irc.ERR_YOUREBANNEDCREEP,
                                      "You are kicked: try again in %d seconds" % outcome.detail))
        server.close_session(session, session.protocol.format_bye(
            "kicked, try again in %d s" % outcome.detail, session.nick or ""), "kicked")
        return True
    if kind == TOO_FAST:
        server.reply(session, notice(server, session, "Too many failed logins: try again in %d seconds"
                                     % max(1, int(outcome.detail + 0.999))))
        return False
    if kind == UNAVAILABLE:
        server.reply(session, notice(server, session, "Storage unavailable, try again"))
        return False
    return False


def logged_in(server, session, account, rooms):
    """A login checked out (SASL, PASS, NickServ, REGISTER): online now if
    registration has ended, else when it does. A session that is a guest,
    or logged in to another account (SASL again, as IRCv3 allows at any
    time), leaves that one first. A generator."""
    if not session.registered:
        session.pending_login = (account, rooms)
        return
    shown = frozenset()
    if session.account is not None:
        if session.account.id == account.id:
            return  # the same account again: nothing changes
        shown = session.rooms
        server.log_out(session, "logged in as %s" % account.name)
        session.guest = False
    if session.nick != account.name:
        server.reply(session, irc.format_line("NICK", account.name, source=me(server, session)))
    session.nick = account.name
    if "account-notify" in session.caps:
        # The client's own account changed (it had none, a guest's, or
        # another): account-notify tells a client of its own too.
        server.reply(session, irc.account_line(server.irc.server_name, account.name, account.name))
    yield from come_online(server, session, account, rooms, shown)


def come_online(server, session, account, rooms, shown=frozenset()):
    """Online: the account's rooms joined for the client, each with its
    topic, its members and its last messages. ``shown`` are the channels
    the client shows already (those of the account it was logged in to
    before): those the new one is not in are parted, and those it is in
    get their members again (a NICK renamed the old account in them, which
    is still a member)."""
    key = name_key(account.name)
    # Back from being offline everywhere: what came while it was away is
    # replayed (a second session of an account online got it live). A
    # guest's nick is anyone's who takes it next: its messages are not.
    back = key not in server.online and not server.online_elsewhere(key) and not session.guest
    server.go_online(session, account, rooms)
    joined = sorted(session.rooms, key=lambda room: room_key(room.info.name))
    lines = [session.protocol.format_parted(room.info.name, account.name)
             for room in sorted(shown - session.rooms, key=lambda room: room_key(room.info.name))]
    count = server.limits.history
    try:
        state, (missed, more) = yield storage(
            login_state, server.store, [room.info.id for room in joined], count,
            [room.info.id for room in joined if room in shown], account.id if back and count else None)
    except StorageUnavailable:
        server.reply_lines(session, lines + [
            notice(server, session, "storage unavailable: your channels are not listed")])
        return
    if session.state is not ONLINE:
        return
    for room in joined:
        members, history = state.get(room.info.id, ([], []))
        if room in shown:
            lines += irc.names_lines(server.irc.server_name, session.nick, room.info.name, members,
                                     userhosts="userhost-in-names" in session.caps)
        else:
            lines += join_lines(server, session, room, members, history)
    lines += missed_lines(server, session, missed, more)
    if lines:
        server.reply_lines(session, lines)


def login_state(store, room_ids, count, without_history, missed_by):
    """On the storage thread: each room's members and last ``count``
    messages (none for the rooms in ``without_history``), and the private
    messages ``missed_by`` that account (an id, or None) while it was away."""
    rooms = {room_id: (store.room_members(room_id),
                       store.room_history(count, None, None, room_id) if count and room_id not in without_history
                       else [])
             for room_id in room_ids}
    return rooms, store.missed_private(missed_by, count) if missed_by is not None else ([], False)


def missed_lines(server, session, missed, more):
    """The private messages that came while the account was away: a NOTICE
    that says how many, then each conversation's, as history is replayed
    (a chathistory batch with batch, the time in front without server-time)."""
    if not missed:
        return []
    if more:
        text = ("More than %d private messages came while you were away: the last %d follow, the others are "
                "in each conversation's history (CHATHISTORY)." % (len(missed), len(missed)))
    else:
        text = "%d private message%s came while you were away:" % (len(missed), "" if len(missed) == 1 else "s")
    lines = [notice(server, session, text)]
    by_peer = {}
    for message in missed:
        by_peer.setdefault(message.sender, []).append(message)
    for peer, messages in by_peer.items():
        lines += session.protocol.history_lines(messages, peer, batch="batch" in session.caps)
    return lines


def join_lines(server, session, room, members, history, echo=True):
    """What a client gets on joining a channel: its JOIN, the topic, NAMES
    and the last messages (a chathistory batch, or PRIVMSGs with the time)."""
    name = room.info.name
    info = room.info
    options = server.irc
    lines = [session.protocol.format_joined(name, session.nick)] if echo else []
    if info.topic:
        lines += irc.topic_lines(options.server_name, session.nick, name, info.topic_set_by or "",
                                 info.topic_set_at or "", info.topic)
    lines += irc.names_lines(options.server_name, session.nick, name, members,
                             userhosts="userhost-in-names" in session.caps)
    if history:
        lines += session.protocol.history_lines(history, name, batch="batch" in session.caps)
    return lines


# --- accounts ------------------------------------------------------------------------

def cmd_authenticate(server, session, params):
    if "sasl" not in session.caps:
        return answer(server, session, [numeric(server, session, irc.ERR_SASLFAIL, "SASL authentication failed")])
    if not params:
        return answer(server, session, [numeric(server, session, irc.ERR_NEEDMOREPARAMS, "AUTHENTICATE",
                                                "Not enough parameters")])
    if session.pending_login is not None:
        # Logged in before registration ended; after it, a client may log
        # in again (to another account, or from being a guest) at any time.
        return answer(server, session, [numeric(server, session, irc.ERR_SASLALREADY,
                                                "You have already authenticated")])
    if session.sasl is None:
        if params[0] == "*":
            return answer(server, session, [numeric(server, session, irc.ERR_SASLABORTED,
                                                    "SASL authentication aborted")])
        in_clear = clear_password_refusal(server, session)
        if in_clear:
            # Refused at the mechanism, before the client sends its
            # password: with SASL it need not cross the network at all.
            return answer(server, session, [numeric(server, session, irc.ERR_SASLFAIL, in_clear)])
        session.sasl = irc.SaslPlain()
    step = session.sasl.receive(params[0])
    if step.__class__ is irc.SaslContinue:
        return answer(server, session, [irc.format_line("AUTHENTICATE", step.data)])
    if step.__class__ is irc.SaslMore:
        return None
    session.sasl = None
    if step.__class__ is irc.SaslFailure:
        return answer(server, session, irc.sasl_failure_lines(server.irc.server_name, session.nick, step))
    return sasl_login(server, session, step)


def sasl_login(server, session, credentials):
    outcome = yield from login_steps(server, session, credentials.account, credentials.password)
    if outcome.__class__ is Refused:
        if not refused_login(server, session, outcome):
            server.reply(session, numeric(server, session, irc.ERR_SASLFAIL, "SASL authentication failed"))
        return
    account, rooms, _ = outcome
    server.reply_lines(session, irc.logged_in_lines(server.irc.server_name, session.nick, account.name))
    yield from logged_in(server, session, account, rooms)


def cmd_register(server, session, params):
    """draft/account-registration: REGISTER <account|*> <email|*> <password>."""
    name = server.irc.server_name
    in_clear = len(params) >= 3 and clear_password_refusal(server, session)
    if in_clear:
        # UNACCEPTABLE_PASSWORD: not this password, on this connection; the
        # description says what to do.
        account = params[0] if params[0] != "*" else session.nick or "*"
        return answer(server, session, [irc.fail(name, "REGISTER", irc.UNACCEPTABLE_PASSWORD, account,
                                                 description=in_clear)])
    if session.guest and len(params) >= 3:
        return register_guest(server, session, params[2], via_nickserv=False)
    if session.account is not None or session.pending_login is not None:
        return answer(server, session, [irc.fail(name, "REGISTER", irc.ALREADY_AUTHENTICATED, session.nick or "*",
                                                 description="You are already logged in")])
    parsed = irc.parse_register(params, session.nick or "", server.limits.password_min_bytes)
    if parsed.__class__ is irc.Failure:
        return answer(server, session, [parsed.line(name)])
    return register_account(server, session, parsed.account, parsed.password, via_nickserv=False)


def register_account(server, session, account_name, password, via_nickserv):
    name = server.irc.server_name

    def refuse(code, text):
        if via_nickserv:
            server.reply(session, notice(server, session, text, source=nickserv_mask(server)))
        else:
            server.reply(session, irc.fail(name, "REGISTER", code, account_name, description=text))

    outcome = yield from register_steps(server, session, account_name, password)
    if outcome.__class__ is Refused:
        if outcome.kind == BAD:
            refuse(irc.WEAK_PASSWORD if "password" in outcome.detail else irc.BAD_ACCOUNT_NAME, outcome.detail)
        elif outcome.kind == TOO_FAST:
            refuse(irc.TEMPORARILY_UNAVAILABLE, "Too many registrations from your address, try again later")
        elif outcome.kind == TAKEN:
            refuse(irc.ACCOUNT_EXISTS, "Account %s already exists" % account_name)
        else:
            refuse(irc.TEMPORARILY_UNAVAILABLE, "Storage unavailable, try again")
        return
    checked = yield from login_checked(server, session, outcome.name)
    if checked.__class__ is Refused:
        refused_login(server, session, checked)
        return
    account, rooms, _ = checked
    if via_nickserv:
        server.reply(session, notice(server, session, "Account %s registered; you are logged in" % account.name,
                                     source=nickserv_mask(server)))
    else:
        server.reply(session, irc.register_success_line(name, account.name))
    server.reply(session, numeric(server, session, irc.RPL_LOGGEDIN, me(server, session), account.name,
                                  "You are now logged in as %s" % account.name))
    yield from logged_in(server, session, account, rooms)


def register_guest(server, session, password, via_nickserv):
    """A guest makes its guest account its own: the password replaces the
    guest mark, and from now on it logs in like anyone."""
    account = session.account
    source = nickserv_mask(server)
    problem = password_problem(password.rstrip(" \t"), server.limits.password_min_bytes)
    if problem:
        server.reply(session, notice(server, session, problem, source) if via_nickserv else irc.fail(
            server.irc.server_name, "REGISTER", irc.WEAK_PASSWORD, account.name, description=problem))
        return
    password_hash = yield hashing(hash_password, password.rstrip(" \t"), server.limits.scrypt_n)
    try:
        done = yield storage(server.store.replace_password, account.name, GUEST_HASH, password_hash)
    except StorageUnavailable:
        server.reply(session, notice(server, session, "Storage unavailable, try again"))
        return
    if not done:
        server.reply(session, notice(server, session, "Account %s is registered already" % account.name))
        return
    log.info("%s registered %s (was a guest)", session.address, account.name)
    if via_nickserv:
        server.reply(session, notice(server, session, "Account %s registered; you are logged in" % account.name,
                                     source))
    else:
        server.reply(session, irc.register_success_line(server.irc.server_name, account.name))
    server.reply(session, numeric(server, session, irc.RPL_LOGGEDIN, me(server, session), account.name,
                                  "You are now logged in as %s" % account.name))
    guest_registered(server, account.name, session.rooms)


def guest_registered(server, name, rooms, relay=True):
    """A guest's account ``name`` is registered (by its guest, or by anyone
    while it was away): an account from now on, its lines tagged with it,
    and those who share one of its ``rooms`` (Rooms of this server) and
    have account-notify are told so (the other servers of a cluster too)."""
    key = name_key(name)
    server.guests.discard(key)
    sessions = set(server.online.get(key, ()))
    for session in sessions:
        session.guest = False
    if relay:
        server.relay("account", n=name, rooms=[room.info.name for room in rooms])
    for room in rooms:
        sessions.update(room.sessions())
    line = irc.account_line(server.irc.server_name, name, name)
    for session in sessions:
        if session.__class__ is IrcSession and "account-notify" in session.caps:
            server.reply(session, line)


def account_heard(server, event):
    """Another server of the cluster says a guest's account was registered."""
    rooms = [server.rooms.get(room_key(name)) for name in event["rooms"] if irc.check_channel(name) is None]
    guest_registered(server, event["n"], [room for room in rooms if room is not None], relay=False)


def nickserv_mask(server):
    return irc.hostmask(irc.NICKSERV, server.irc.server_name)


def nickserv(server, session, text):
    command = irc.parse_nickserv(text)
    source = nickserv_mask(server)
    if command.verb == "HELP":
        return answer(server, session, [notice(server, session, line, source) for line in irc.NICKSERV_HELP])
    in_clear = (command.verb in ("IDENTIFY", "REGISTER") and command.password
                and clear_password_refusal(server, session))
    if in_clear:
        return answer(server, session, [notice(server, session, in_clear, source)])
    if command.verb == "IDENTIFY":
        if session.account is not None and not session.guest:
            return answer(server, session, [notice(server, session, "You are already logged in", source)])
        if not command.password:
            return answer(server, session, [notice(server, session, "usage: IDENTIFY [name] <password>", source)])
        return identify(server, session, command.account or session.nick, command.password)
    if command.verb == "REGISTER":
        if session.guest and command.password:
            return register_guest(server, session, command.password, via_nickserv=True)
        if session.account is not None:
            return answer(server, session, [notice(server, session, "You are already logged in", source)])
        if not command.password:
            return answer(server, session, [notice(server, session, "usage: REGISTER <password>", source)])
        return register_account(server, session, session.nick, command.password, via_nickserv=True)
    return answer(server, session, [notice(server, session, "Unknown command %s; try HELP" % command.verb, source)])


def identify(server, session, account_name, password):
    source = nickserv_mask(server)
    outcome = yield from login_steps(server, session, account_name, password)
    if outcome.__class__ is Refused:
        if not refused_login(server, session, outcome):
            server.reply(session, notice(server, session, "Wrong name or password", source))
        return
    account, rooms, _ = outcome
    server.reply(session, notice(server, session, "You are now identified as %s" % account.name, source))
    server.reply(session, numeric(server, session, irc.RPL_LOGGEDIN, me(server, session), account.name,
                                  "You are now logged in as %s" % account.name))
    yield from logged_in(server, session, account, rooms)


# --- rooms ------------------------------------------------------------------------------

def cmd_join(server, session, params):
    if not params or not params[0]:
        return answer(server, session, [numeric(server, session, irc.ERR_NEEDMOREPARAMS, "JOIN",
                                                "Not enough parameters")])
    if params[0] == "0":
        return None  # "part every channel": refused quietly, memberships are the account's
    return join_each(server, session, [name for name in params[0].split(",") if name])


class AnswerInParts:
    """The answer of a command that waits and answers as it goes (a JOIN
    or PART of several channels): line by line, or, when the client labeled
    the command, kept and sent at its end as one labeled response, since a
    labeled command's whole answer is one batch; the room's own event then
    skips the session (``unheard``): its JOIN or PART is in the batch."""

    __slots__ = ("server", "session", "label", "lines")

    def __init__(self, server, session):
        self.server = server
        self.session = session
        self.label, session.label = session.label, None
        self.lines = []

    def say(self, lines):
        if self.label:
            self.lines += lines
        else:
            self.server.reply_lines(self.session, lines)

    def unheard(self):
        """The session the room event leaves out, or None."""
        return self.session if self.label else None

    def end(self):
        if self.label:
            self.server.reply_lines(self.session, irc.labeled(self.label, self.lines, self.server.irc.server_name))


def join_each(server, session, names):
    limits = server.limits
    reply = AnswerInParts(server, session)
    for name in names:
        if irc.check_channel(name):
            reply.say([numeric(server, session, irc.ERR_NOSUCHCHANNEL, name, "No such channel")])
            continue
        room = server.rooms.get(room_key(name))
        if room is not None and room in session.rooms:
            continue  # already there: nothing to say
        if len(session.rooms) >= limits.rooms_per_account or (room is None and len(server.rooms) >= limits.rooms_max):
            reply.say([numeric(server, session, irc.ERR_TOOMANYCHANNELS, name, "You have joined too many channels")])
            continue
        account = session.account
        try:
            full, info, joined, members, history = yield storage(
                join_with_history, server.store, account.id, name, server.timestamp(), limits.rooms_max,
                limits.rooms_per_account, limits.history)
        except StorageUnavailable:
            reply.say([notice(server, session, "storage unavailable, try again")])
            continue
        if full:
            reply.say([numeric(server, session, irc.ERR_TOOMANYCHANNELS, name, "You have joined too many channels")])
            continue
        if session.state is not ONLINE:
            return
        if not any(name_key(member) == name_key(account.name) for member in members):
            reply.say([numeric(server, session, irc.ERR_NOSUCHCHANNEL, name, "No such channel")])
            continue
        room = server.make_room(info)
        sent = []
        if joined or room not in session.rooms:
            sent = server.joined(room, account, announce=joined, but=reply.unheard())
        reply.say(join_lines(server, session, room, members, history, echo=session not in sent))
    reply.end()


def join_with_history(store, account_id, name, at, rooms_max, rooms_per_account, count):
    full, info, joined, members = join_room(store, account_id, name, at, rooms_max, rooms_per_account)
    history = store.room_history(count, None, None, info.id) if info is not None and not full and count else []
    return full, info, joined, members, history


def cmd_part(server, session, params):
    if not params or not params[0]:
        return answer(server, session, [numeric(server, session, irc.ERR_NEEDMOREPARAMS, "PART",
                                                "Not enough parameters")])
    reason = params[1] if len(params) > 1 else ""
    return part_each(server, session, [name for name in params[0].split(",") if name], reason)


def part_each(server, session, names, reason):
    reply = AnswerInParts(server, session)
    for name in names:
        room = server.member_room(session, name)
        if room is None:
            code = irc.ERR_NOTONCHANNEL if room_key(name) in server.rooms else irc.ERR_NOSUCHCHANNEL
            reply.say([numeric(server, session, code, name, "You're not on that channel"
                               if code == irc.ERR_NOTONCHANNEL else "No such channel")])
            continue
        account = session.account
        try:
            left = yield storage(server.store.leave_room, account.id, room.info.id)
        except StorageUnavailable:
            reply.say([notice(server, session, "storage unavailable, try again")])
            continue
        if not left and room not in session.rooms:
            continue
        sent = server.parted(room, account, reason, but=reply.unheard())
        if session not in sent:
            reply.say([session.protocol.format_parted(room.info.name, account.name, reason)])
    reply.end()


def cmd_topic(server, session, params):
    if not params:
        return answer(server, session, [numeric(server, session, irc.ERR_NEEDMOREPARAMS, "TOPIC",
                                                "Not enough parameters")])
    room = server.member_room(session, params[0])
    if room is None:
        return answer(server, session, [numeric(server, session, irc.ERR_NOTONCHANNEL, params[0],
                                                "You're not on that channel")])
    info = room.info
    if len(params) < 2:
        return answer(server, session, irc.topic_lines(server.irc.server_name, session.nick, info.name,
                                                       info.topic_set_by or "", info.topic_set_at or "",
                                                       info.topic))
    return set_topic(server, session, room, params[1])


def set_topic(server, session, room, topic):
    if proto.check_topic(topic, server.limits.topic_max):
        server.reply(session, numeric(server, session, irc.ERR_INPUTTOOLONG, "Topic too long or not printable"))
        return
    try:
        info = yield storage(server.store.set_topic, room.info.id, topic, session.account.name, server.timestamp())
    except StorageUnavailable:
        server.reply(session, notice(server, session, "storage unavailable, try again"))
        return
    if info is None:
        return
    sent = server.topic_changed(room, info)
    if session not in sent:
        server.reply(session, render_topic(info)(session.protocol))


def cmd_names(server, session, params):
    if not params:
        return answer(server, session, [numeric(server, session, irc.RPL_ENDOFNAMES, "*", "End of /NAMES list.")])
    return names(server, session, params[0].split(",")[0])


def names(server, session, name):
    room = server.member_room(session, name)
    if room is None:
        server.reply(session, numeric(server, session, irc.RPL_ENDOFNAMES, name, "End of /NAMES list."))
        return
    try:
        members = yield storage(server.store.room_members, room.info.id)
    except StorageUnavailable:
        server.reply(session, notice(server, session, "storage unavailable, try again"))
        return
    answer(server, session, irc.names_lines(server.irc.server_name, session.nick, room.info.name, members,
                                            userhosts="userhost-in-names" in session.caps))


def cmd_list(server, session, params):
    try:
        listed = yield storage(server.store.list_rooms)
    except StorageUnavailable:
        server.reply(session, notice(server, session, "storage unavailable, try again"))
        return
    wanted = {room_key(name) for name in params[0].split(",")} if params and params[0] else None
    lines = [numeric(server, session, irc.RPL_LISTSTART, "Channel", "Users  Name")]
    for info, members in sorted(listed, key=lambda pair: room_key(pair[0].name)):
        if wanted is None or room_key(info.name) in wanted:
            lines.append(numeric(server, session, irc.RPL_LIST, info.name, str(members), info.topic or ""))
    lines.append(numeric(server, session, irc.RPL_LISTEND, "End of /LIST"))
    answer(server, session, lines)


def cmd_mode(server, session, params):
    if not params:
        return answer(server, session, [numeric(server, session, irc.ERR_NEEDMOREPARAMS, "MODE",
                                                "Not enough parameters")])
    target = params[0]
    if irc.is_channel(target):
        room = server.rooms.get(room_key(target))
        if room is None:
            return answer(server, session, [numeric(server, session, irc.ERR_NOSUCHCHANNEL, target,
                                                    "No such channel")])
        if len(params) == 1:
            seconds = irc.timestamp_seconds(room.info.created_at) or 0
            return answer(server, session, [numeric(server, session, irc.RPL_CHANNELMODEIS, room.info.name, "+n"),
                                            numeric(server, session, irc.RPL_CREATIONTIME, room.info.name,
                                                    str(seconds))])
        if params[1] in ("b", "+b") and len(params) == 2:
            return answer(server, session, [numeric(server, session, "368", room.info.name, "End of channel ban list")])
        return answer(server, session, [numeric(server, session, irc.ERR_CHANOPRIVSNEEDED, room.info.name,
                                                "You're not channel operator")])
    if irc.nick_key(target) != irc.nick_key(session.nick or ""):
        return answer(server, session, [numeric(server, session, "502", "Can't change mode for other users")])
    if len(params) == 1:
        return answer(server, session, [numeric(server, session, irc.RPL_UMODEIS, "+i")])
    if not params[1].strip("+-iw"):
        return None  # irssi and others set +i at connect: invisible is what everyone is already
    return answer(server, session, [numeric(server, session, "501", "Unknown MODE flag")])


def sessions_of(server, nick):
    return server.online.get(name_key(nick), ())


def cmd_who(server, session, params):
    mask = params[0] if params else "*"
    whox = params[1][1:] if len(params) > 1 and params[1].startswith("%") else None
    name = server.irc.server_name
    if irc.is_channel(mask):
        room = server.member_room(session, mask)
        people = sorted({s.account.name: s for r in [room] if r for s in r.sessions()}.items()) if room else []
        channel = room.info.name if room else mask
    else:
        found = sessions_of(server, mask)
        people = [(found[0].account.name, found[0])] if found else []
        channel = "*"
    lines = []
    for nick, other in people:
        flag = "G" if other.__class__ is IrcSession and other.away else "H"
        if whox is None:
            lines.append(numeric(server, session, irc.RPL_WHOREPLY, channel, nick, name, name, nick, flag,
                                 "0 %s" % realname(server, nick)))
        else:
            lines.append(whox_line(server, session, whox, channel, nick, flag))
    lines.append(numeric(server, session, irc.RPL_ENDOFWHO, mask, "End of /WHO list."))
    answer(server, session, lines)


def is_guest(server, nick):
    return name_key(nick) in server.guests


def realname(server, nick):
    """The real name WHO and WHOIS show: the one an IRC session of the
    account gave in USER, else the account's name (a v1 client, or an
    account online on another server of the cluster, gives none)."""
    found = sessions_of(server, nick)
    given = next((s.realname for s in found if s.__class__ is IrcSession and s.realname), "")
    return given or (found[0].account.name if found else nick)


def whox_line(server, session, fields, channel, nick, flag):
    """A WHOX (354) line: the fields asked for, in the protocol's order. A
    guest's account is "0", WHOX's word for none."""
    letters, _, token = fields.partition(",")
    name = server.irc.server_name
    values = {"t": token or "0", "c": channel, "u": nick, "i": "255.255.255.255", "h": name, "s": name, "n": nick,
              "f": flag, "d": "0", "l": "0", "a": "0" if is_guest(server, nick) else nick, "o": "0",
              "r": realname(server, nick)}
    params = [values[letter] for letter in "tcuihsnfdlaor" if letter in letters]
    return numeric(server, session, irc.RPL_WHOSPCRPL, *params)


def cmd_whois(server, session, params):
    if not params:
        return answer(server, session, [numeric(server, session, irc.ERR_NONICKNAMEGIVEN, "No nickname given")])
    nick = params[-1]
    found = sessions_of(server, nick)
    name = server.irc.server_name
    if not found and server.where_elsewhere(name_key(nick)):
        # Online on another server of the cluster: what this one knows.
        instance, account = server.where_elsewhere(name_key(nick))
        return answer(server, session, [
            numeric(server, session, irc.RPL_WHOISUSER, account, account, instance, "*", account),
            numeric(server, session, irc.RPL_WHOISSERVER, account, instance, server.irc.network),
            numeric(server, session, irc.RPL_WHOISACCOUNT, account, account, "is logged in as"),
            numeric(server, session, irc.RPL_ENDOFWHOIS, account, "End of /WHOIS list.")])
    if not found:
        return answer(server, session, [numeric(server, session, irc.ERR_NOSUCHNICK, nick, "No such nick/channel"),
                                        numeric(server, session, irc.RPL_ENDOFWHOIS, nick, "End of /WHOIS list.")])
    other = found[0]
    account = other.account.name
    lines = [numeric(server, session, irc.RPL_WHOISUSER, account, account, name, "*", realname(server, account)),
             numeric(server, session, irc.RPL_WHOISSERVER, account, name, server.irc.network)]
    channels = sorted(room.info.name for room in other.rooms)
    if channels:
        lines.append(numeric(server, session, irc.RPL_WHOISCHANNELS, account, " ".join(channels)))
    away = next((s.away for s in found if s.__class__ is IrcSession and s.away), "")
    if away:
        lines.append(numeric(server, session, irc.RPL_AWAY, account, away))
    if is_guest(server, account):
        lines.append(numeric(server, session, irc.RPL_WHOISSPECIAL, account,
                             "is a guest: logged in to no account"))
    else:
        lines.append(numeric(server, session, irc.RPL_WHOISACCOUNT, account, account, "is logged in as"))
    lines.append(numeric(server, session, irc.RPL_ENDOFWHOIS, account, "End of /WHOIS list."))
    answer(server, session, lines)


# --- messages ------------------------------------------------------------------------

def message_ready(server, session, message):
    """A PRIVMSG that may join a batch behind earlier ones: one that will be
    accepted as it is, not answered at once (its answer would overtake
    their echoes)."""
    params = message.params
    if len(params) < 2 or not params[1] or "batch" in message.tags:
        return False
    target = params[0]
    if irc.is_channel(target):
        return server.member_room(session, target) is not None
    return irc.nick_key(target) != irc.NICKSERV_KEY and irc.check_nick(target) is None


def cmd_privmsg(server, session, params, tags, command="PRIVMSG"):
    batch = session.multiline
    if "batch" in tags or (batch is not None and not batch.failed):
        if batch is not None and tags.get("batch") == batch.ref:
            return multiline_line(server, session, batch, params, tags, command)
        if batch is not None and not batch.failed:
            fail_multiline(server, session, batch, batch.fail(
                "MULTILINE_INVALID", description="A message came outside the multiline batch"))
        elif "batch" in tags:
            answer(server, session, [no_such_batch(server)])
        if "batch" in tags:
            return None  # a line of a batch that is not open goes with it
    if not params or not params[0]:
        return refuse(server, session, command, [numeric(server, session, irc.ERR_NORECIPIENT,
                                                         "No recipient given (%s)" % command)])
    if len(params) < 2 or not params[1]:
        return refuse(server, session, command, [numeric(server, session, irc.ERR_NOTEXTTOSEND, "No text to send")])
    target, text = params[0], params[1]
    if irc.nick_key(target) == irc.NICKSERV_KEY:
        return nickserv(server, session, text) if command == "PRIVMSG" else None
    if session.account is None:
        return refuse(server, session, command, login_notices(server, session, "Log in first. " + HOW_TO_LOG_IN))
    stored = irc.irc_text_for_store(text)
    if stored is None:
        return None  # a CTCP query other than ACTION: not something said
    if not (irc.irc_text_for_v1(stored) or "").strip():
        return refuse(server, session, command, [numeric(server, session, irc.ERR_NOTEXTTOSEND, "No text to send")])
    return say(server, session, command, target, stored, irc.client_only_tags(tags) if tags else None)


def refuse(server, session, command, lines):
    """A PRIVMSG's refusal; a NOTICE is never answered (RFC 1459: no
    automatic replies to it)."""
    return None if command == "NOTICE" else answer(server, session, lines)


def say(server, session, command, target, stored, client_tags):
    """A text to store and deliver (a PRIVMSG or NOTICE, or a multiline
    batch of them) to ``target``, a channel the account is in or a nick;
    its answer comes once it is stored (Server._deliver), with the label
    of the command it answers."""
    if irc.is_channel(target):
        room = server.member_room(session, target)
        if room is None:
            code = irc.ERR_CANNOTSENDTOCHAN if room_key(target) in server.rooms else irc.ERR_NOSUCHCHANNEL
            return refuse(server, session, command, [numeric(server, session, code, target, "Cannot send to channel"
                                                             if code == irc.ERR_CANNOTSENDTOCHAN
                                                             else "No such channel")])
        session.labels.append(session.label)
        server.accept_message(session, None, stored, room, notice=command == "NOTICE", client_tags=client_tags)
        return None
    if irc.check_nick(target):
        return refuse(server, session, command, [numeric(server, session, irc.ERR_NOSUCHNICK, target,
                                                         "No such nick/channel")])
    session.labels.append(session.label)
    server.accept_message(session, target, stored, notice=command == "NOTICE", client_tags=client_tags)
    return None


def cmd_notice(server, session, params, tags):
    return cmd_privmsg(server, session, params, tags, "NOTICE")


# --- draft/multiline ------------------------------------------------------------------------
# A client with draft/multiline (and batch) may send a message of several
# lines as ``BATCH +ref draft/multiline <target>``, PRIVMSG (or NOTICE)
# lines tagged batch=ref, ``BATCH -ref``: sae_irc.MultilineBatch puts it
# together, and the end of the batch says it as one message. Each line is a
# PRIVMSG to the flood bucket (run_held), so a batch is paced as its lines
# would be. A batch that fails (a limit, a wrong target) is dropped; one
# never closed goes with its connection.

def cmd_batch(server, session, params, tags):
    if not params:
        return answer(server, session, [numeric(server, session, irc.ERR_NEEDMOREPARAMS, "BATCH",
                                                "Not enough parameters")])
    name = server.irc.server_name
    if "batch" not in session.caps:
        return answer(server, session, [irc.multiline_failure(
            "MULTILINE_INVALID", description="A multiline batch needs the batch capability").line(name)])
    ref = params[0]
    batch = session.multiline
    if ref.startswith("+"):
        if batch is not None and not batch.failed:
            fail_multiline(server, session, batch, batch.fail(
                "MULTILINE_INVALID", description="A batch was opened inside the multiline batch"))
        batch = irc.open_multiline(params, tags, session.label)
        session.multiline = None
        if batch.__class__ is irc.Failure:
            return answer(server, session, [batch.line(name)])
        # The batch's end answers this line (labeled-response).
        session.label = None
        session.multiline = batch
        return None
    if not ref.startswith("-") or batch is None or batch.ref != ref[1:]:
        return answer(server, session, [no_such_batch(server)])
    session.multiline = None
    if batch.failed:
        return None  # its FAIL was said
    session.label = batch.label
    text = batch.end()
    if text.__class__ is irc.Failure:
        return answer(server, session, [text.line(name)])
    return say(server, session, batch.command, batch.target, text, batch.client_tags)


def multiline_line(server, session, batch, params, tags, command):
    failure = batch.add(command, params[0] if params else "", params[1] if len(params) > 1 else "",
                        irc.MULTILINE_CONCAT in tags)
    if failure is not None:
        fail_multiline(server, session, batch, failure)


def fail_multiline(server, session, batch, failure):
    """A batch's FAIL, as the answer to its BATCH line (with its label, not
    that of the line being run, which is answered as ever)."""
    own, session.label = session.label, batch.label
    answer(server, session, [failure.line(server.irc.server_name)])
    session.label = own


def no_such_batch(server):
    return irc.multiline_failure("MULTILINE_INVALID", description="No such multiline batch is open").line(
        server.irc.server_name)


# A TAGMSG is not stored, so its msgid cannot be one of the store's ids
# (CHATHISTORY would take it for a place in a history): it is a token of its
# own, a count after a prefix drawn at start, so that one named before a
# restart is not named again after it.
TAGMSG_ID_PREFIX = "t" + secrets.token_hex(4) + "-"
_tagmsg_numbers = itertools.count(1)


def cmd_tagmsg(server, session, params, tags):
    """TAGMSG <target> (message-tags): the client's tags for the others
    (typing notifications, reactions), relayed and not stored. Refused as
    a PRIVMSG to the same target would be."""
    if not params or not params[0]:
        return answer(server, session, [numeric(server, session, irc.ERR_NEEDMOREPARAMS, "TAGMSG",
                                                "Not enough parameters")])
    target = params[0]
    if irc.nick_key(target) == irc.NICKSERV_KEY:
        return answer(server, session, [])  # no client there to read tags
    if irc.is_channel(target):
        room = server.member_room(session, target)
        if room is None:
            code = irc.ERR_CANNOTSENDTOCHAN if room_key(target) in server.rooms else irc.ERR_NOSUCHCHANNEL
            return answer(server, session, [numeric(server, session, code, target, "Cannot send to channel"
                                                    if code == irc.ERR_CANNOTSENDTOCHAN else "No such channel")])
        return relay_tagmsg(server, session, room.info.name, tags, room.sessions())
    if irc.check_nick(target):
        return answer(server, session, [numeric(server, session, irc.ERR_NOSUCHNICK, target, "No such nick/channel")])
    found = sessions_of(server, target)
    if found:
        return relay_tagmsg(server, session, found[0].account.name, tags, found)
    return tagmsg_to_offline(server, session, target, tags)


def tagmsg_to_offline(server, session, nick, tags):
    """A TAGMSG to an account that is offline reaches nobody but the
    sender's other sessions; one to a nick that is no account is 401."""
    try:
        account = yield storage(server.store.find_account, nick)
    except StorageUnavailable:
        answer(server, session, [notice(server, session, "storage unavailable, try again")])
        return
    if account is None:
        answer(server, session, [numeric(server, session, irc.ERR_NOSUCHNICK, nick, "No such nick/channel")])
        return
    relay_tagmsg(server, session, account.name, tags, ())


def relay_tagmsg(server, session, target, tags, recipients):
    """The TAGMSG to ``recipients`` (a channel's sessions, or the target
    nick's) and the sender's other sessions, those with message-tags; to
    the sender itself with echo-message, as its answer."""
    sender = session.account.name
    msgid = TAGMSG_ID_PREFIX + str(next(_tagmsg_numbers))
    client_tags = irc.client_only_tags(tags)
    ts = server.timestamp()
    render = send_tagmsg(server, session, sender, target, client_tags, msgid, ts, recipients)
    # The other servers of a cluster have members of the channel, or the
    # nick, too (see tagmsg_heard).
    server.relay("tagmsg", s=sender, to=target, g=client_tags, m=msgid, ts=ts)
    answer(server, session, [render(session.protocol)] if session.echo else [])


def send_tagmsg(server, session, sender, target, client_tags, msgid, ts, recipients):
    """The TAGMSG to ``recipients`` and the sender's sessions here, those
    with message-tags, but ``session`` (its sender's, or None); the
    function that renders it."""
    everyone = set(recipients)
    everyone.update(sessions_of(server, sender))
    others = [other for other in everyone
              if other is not session and other.state is ONLINE and other.__class__ is IrcSession
              and "message-tags" in other.caps]

    def render(protocol):
        return protocol.format_tagmsg(msgid, ts, sender, target, client_tags)
    server.send_each(others, render)
    return render


def tagmsg_heard(server, event):
    """A TAGMSG another server of the cluster relayed: to this server's
    sessions of the channel, or of the nick, and of the sender."""
    target = event["to"]
    if irc.is_channel(target):
        room = server.rooms.get(room_key(target)) if irc.check_channel(target) is None else None
        recipients = room.sessions() if room is not None else ()
    else:
        recipients = sessions_of(server, target)
    send_tagmsg(server, None, event["s"], target, irc.relayed_tags(event["g"]), event["m"], event["ts"], recipients)


# --- the rest ---------------------------------------------------------------------------

def cmd_ping(server, session, params):
    if not params:
        return answer(server, session, [numeric(server, session, irc.ERR_NOORIGIN, "No origin specified")])
    # The token comes back as sent, even empty (the formatter's PONG, for
    # the server's own pings, would put the server's name in its place).
    name = server.irc.server_name
    answer(server, session, [irc.format_line("PONG", name, params[0], source=name)])


def cmd_pong(server, session, params):
    """Any line proves the client alive (Server._read): nothing to do."""


def cmd_quit(server, session, params):
    reason = params[0] if params else ""
    server.close_session(session, session.protocol.format_bye("Quit: %s" % reason if reason else "Quit",
                                                              session.nick or ""), reason or "quit")


def cmd_away(server, session, params):
    text = params[0] if params else ""
    session.away = text
    lines = [numeric(server, session, irc.RPL_NOWAWAY, "You have been marked as being away") if text
             else numeric(server, session, irc.RPL_UNAWAY, "You are no longer marked as being away")]
    answer(server, session, lines)
    if session.account is not None:
        source = me(server, session)
        line = (irc.format_line("AWAY", text, source=source, trailing=True) if text
                else irc.format_line("AWAY", source=source))
        others = [other for other in server.everyone.sessions()
                  if other is not session and other.__class__ is IrcSession and "away-notify" in other.caps]
        for other in others:
            server.reply(other, line)


def cmd_ison(server, session, params):
    nicks = " ".join(params).split()
    online = []
    for nick in nicks:
        here = sessions_of(server, nick)
        elsewhere = None if here else server.where_elsewhere(name_key(nick))
        if here or elsewhere:
            online.append(here[0].account.name if here else elsewhere[1])
    answer(server, session, [numeric(server, session, "303", " ".join(online))])


def cmd_userhost(server, session, params):
    replies = []
    for nick in params[:5]:
        found = sessions_of(server, nick)
        if found:
            other = found[0]
            away = "-" if other.__class__ is IrcSession and other.away else "+"
            replies.append("%s=%s%s@%s" % (other.account.name, away, other.account.name, server.irc.server_name))
    answer(server, session, [numeric(server, session, "302", " ".join(replies))])


def cmd_motd(server, session, params):
    answer(server, session, irc.motd_lines(server.irc.server_name, session.nick, server.irc.motd))


def cmd_lusers(server, session, params):
    answer(server, session, irc.lusers_lines(server.irc.server_name, session.nick, len(server.online),
                                             len(server.rooms)))


def cmd_version(server, session, params):
    answer(server, session, [numeric(server, session, "351", VERSION, server.irc.server_name, "sae-chat IRC")])


# --- CHATHISTORY ---------------------------------------------------------------------------

def cmd_chathistory(server, session, params):
    name = server.irc.server_name
    request = irc.parse_chathistory(params, irc.CHATHISTORY_MAX)
    if request.__class__ is irc.Failure:
        return answer(server, session, [request.line(name)])
    if request.subcommand == "TARGETS":
        return chathistory_targets(server, session, irc.targets_window(request))
    refs = request.refs
    if request.subcommand == "BETWEEN" and refs[0].kind != refs[1].kind:
        return answer(server, session, [irc.fail(name, "CHATHISTORY", "INVALID_PARAMS", "BETWEEN", "*",
                                                 description="Both references must be of one kind")])
    return chathistory(server, session, request)


def chathistory(server, session, request):
    name = server.irc.server_name
    target = request.target
    store = server.store
    if irc.is_channel(target):
        room = server.member_room(session, target)
        if room is None:
            answer(server, session, [irc.fail(name, "CHATHISTORY", "INVALID_TARGET", request.subcommand, target,
                                              description="Messages could not be retrieved")])
            return
        room_id = room.info.id

        def fetch(count, before, after):
            return store.room_history(count, before, after, room_id)
    else:
        account_id = session.account.id

        def fetch(count, before, after):
            peer = store.find_account(target)
            return None if peer is None else store.conversation_history(account_id, peer.id, count, before, after)
    # What is stored after the mark reaches the session live (it is in the
    # channel, or the conversation is its own): not in the answer too.
    upto = server.delivered_upto
    try:
        messages = yield storage(history_for, store, fetch, irc.history_windows(request))
    except StorageUnavailable:
        answer(server, session, [irc.fail(name, "CHATHISTORY", "MESSAGE_ERROR", request.subcommand, target,
                                          description="Storage unavailable, try again")])
        return
    if messages is None:
        answer(server, session, [irc.fail(name, "CHATHISTORY", "INVALID_TARGET", request.subcommand, target,
                                          description="Messages could not be retrieved")])
        return
    answer(server, session, session.protocol.history_lines(caught_up(messages, upto), target, batch=True))


def chathistory_targets(server, session, window):
    """CHATHISTORY TARGETS: the channels of the account and the nicks of
    its private conversations whose latest message is in the window, each
    with that message's time (Store.targets)."""
    name = server.irc.server_name
    found = []
    if window is not None:
        rooms = [room.info.id for room in session.rooms]
        try:
            found = yield storage(server.store.targets, session.account.id, rooms, window.after, window.before,
                                  window.limit, window.newest)
        except StorageUnavailable:
            answer(server, session, [irc.fail(name, "CHATHISTORY", "MESSAGE_ERROR", "TARGETS", "*",
                                              description="Storage unavailable, try again")])
            return
    answer(server, session, irc.targets_lines(name, found))


def history_for(store, fetch, windows):
    """On the storage thread: the messages of each window, in order.
    ``fetch(count, before, after)`` is room_history's shape, which takes one
    bound (``before`` for the newest, ``after`` for the oldest); the other
    bound filters what it returns (the newest N before B, those after A
    among them, are the newest N between them)."""
    found = []
    for window in windows:
        if window.newest:
            messages = fetch(window.count, bound_id(store, window.before, "before"), None)
        else:
            messages = fetch(window.count, None, bound_id(store, window.after, "after"))
        if messages is None:
            return None
        found += irc.select_history(messages, window)
    return found


def bound_id(store, bound, side):
    """A bound as store.room_history's exclusive id bound (None: none). A
    timestamp becomes the id of the message on its far side (Store.ids_at):
    ids grow with time."""
    if bound is None:
        return None
    ref = bound.ref
    if ref.kind == "msgid":
        if bound.inclusive:
            return ref.msg_id - 1 if side == "after" else ref.msg_id + 1
        return ref.msg_id
    last_until, first_from = store.ids_at(ref.timestamp)
    if side == "after":
        if bound.inclusive:  # created_at >= t
            return BEYOND_EVERY_ID if first_from is None else first_from - 1
        return last_until or 0  # created_at > t
    if bound.inclusive:  # created_at <= t
        return 1 if last_until is None else last_until + 1
    return first_from  # created_at < t; None: every message is before it


COMMANDS = {
    "CAP": cmd_cap,
    "NICK": cmd_nick,
    "USER": cmd_user,
    "PASS": cmd_pass,
    "AUTHENTICATE": cmd_authenticate,
    "REGISTER": cmd_register,
    "JOIN": cmd_join,
    "PART": cmd_part,
    "TOPIC": cmd_topic,
    "NAMES": cmd_names,
    "LIST": cmd_list,
    "MODE": cmd_mode,
    "WHO": cmd_who,
    "WHOIS": cmd_whois,
    "PRIVMSG": cmd_privmsg,
    "NOTICE": cmd_notice,
    "TAGMSG": cmd_tagmsg,
    "BATCH": cmd_batch,
    "PING": cmd_ping,
    "PONG": cmd_pong,
    "QUIT": cmd_quit,
    "AWAY": cmd_away,
    "ISON": cmd_ison,
    "USERHOST": cmd_userhost,
    "MOTD": cmd_motd,
    "LUSERS": cmd_lusers,
    "VERSION": cmd_version,
    "CHATHISTORY": cmd_chathistory,
}
