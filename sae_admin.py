"""The operator's side of sae-chat: the admin console and the admin socket.

The operator types commands on the server's terminal (stdin, read by the
server's loop) or, for a server run as a service, sends them through a Unix
socket with ``sae-server admin COMMAND`` (``admin_main``, the client, is at
the end of this file). Both are an ``AdminLink``: lines in, one answer per
command out; where an admin password is set, a link must give it before any
command (the console at a prompt; the socket as a ``PASSWORD <secret>``
line, never mistaken for a command). The server (sae_server.py) owns the sockets and the loop; this file
holds what the operator can say and what is answered, through the server's
public methods (kick, unkick, end_account, store_call, room_deleted, stop).
"""

import argparse
import hmac
import logging
import os
import re
import socket
import sys

import sae_protocol as proto

log = logging.getLogger("sae-server")

# The longest kick the operator may give (kick NAME SECONDS, --kick-seconds):
# a kick is a cool-off, a ban is for good; and the deadline, monotonic time
# plus seconds, must stay a float (a 400-digit kick overflowed it).
KICK_SECONDS_MAX = 365 * 24 * 3600


# --- one operator's channel ----------------------------------------------

PASSWORD_PROMPT = "admin password: "


class AdminLink:
    """One operator's channel: the terminal, or one admin socket connection."""

    def __init__(self, server, read_fd, write, close, prompt=False):
        self.server = server
        self.read_fd = read_fd
        self.write = write  # write(text): queue text for the operator
        self.close = close
        self.prompt = prompt  # a terminal gets prompts; a socket only answers
        self.framer = proto.LineFramer()
        self.authenticated = server.admin_password is None
        self.waiting = 0  # commands whose answer needs the database
        self.ended = False

    def start(self):
        if not self.authenticated:
            self._ask_password()
        elif self.prompt:
            self.write("console ready, type help for the commands\n")

    def _ask_password(self):
        if self.prompt:
            set_terminal_echo(self.read_fd, False)
            self.write(PASSWORD_PROMPT)

    def ask_again(self):
        """Repeat the password prompt (the server's log, on the same terminal,
        has just buried it), if the console is still waiting for it."""
        if self.prompt and not self.authenticated and not self.ended:
            self.write(PASSWORD_PROMPT)

    def feed(self, data):
        for frame in self.framer.feed(data):
            if self.ended:
                return
            if frame.__class__ is not bytes:
                self.write("line too long\n")
                continue
            line = frame.decode("utf-8", "replace").strip()
            verb, _, secret = line.partition(" ")
            # On the socket the password comes as PASSWORD <secret>, so that
            # it is never taken for a command, nor a command for it. The
            # console asks for it at a prompt, where a line is the password.
            if not self.prompt and verb.lower() == "password":
                self._password_given(secret)
            elif not self.authenticated:
                self._check_password(line if self.prompt else "")
            elif line:
                self.run(line)

    def _password_given(self, secret):
        if not self.authenticated:
            self._check_password(secret)
        elif self.server.admin_password is None:
            log.info("an admin password was given on the admin socket, which needs none: ignored")
            self.write("note: this server has no admin password; the one given was ignored\n")
        else:
            self.write("note: already authenticated; PASSWORD ignored\n")

    def _check_password(self, line):
        if self.prompt:
            set_terminal_echo(self.read_fd, True)
            self.write("\n")
        if line and hmac.compare_digest(line.encode("utf-8"), self.server.admin_password.encode("utf-8")):
            self.authenticated = True
            log.info("operator authenticated on the %s", "console" if self.prompt else "admin socket")
            self.write("admin password accepted, type help for the commands\n" if self.prompt else "")
            return
        log.warning("wrong admin password on the %s", "console" if self.prompt else "admin socket")
        self.write("wrong admin password\n" if self.prompt or line else
                   "wrong admin password: none was given (set SAE_ADMIN_PASSWORD or --admin-password-file)\n")
        if self.prompt:
            self._ask_password()
        else:
            self.end()

    def run(self, line):
        verb, _, rest = line.partition(" ")
        # In ASCII only, as client verbs: str.lower() makes the Kelvin sign a "k".
        command = ADMIN_COMMANDS.get(verb.lower()) if verb.isascii() else None
        if command is None:
            self.answer("unknown command: %s" % verb)
            return
        command(self.server, self, rest.strip())

    def answer(self, text):
        self.write(text + "\n")

    def end(self):
        if not self.ended:
            self.ended = True
            self.close()


def set_terminal_echo(fd, on):
    """Hide what the operator types while it is a password."""
    try:
        import termios
        attrs = termios.tcgetattr(fd)
        attrs[3] = attrs[3] | termios.ECHO if on else attrs[3] & ~termios.ECHO
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    except (ImportError, OSError):
        pass  # not a terminal after all: nothing is echoed anyway


# Every argument is checked before anything is done; a refusal is a usage
# answer, on which `sae-server admin` exits with status 1.

def admin_usage(link, command, problem=""):
    link.answer(" ".join(part for part in ("usage:", command, ADMIN_USAGE[command],
                                            "(%s)" % problem if problem else "") if part))


def admin_fields(rest, count):
    """``count`` fields of an admin line, the last keeping the rest; "" where missing."""
    fields = proto.split_fields(rest, count)
    return fields + [""] * (count - len(fields))


def name_problem(name):
    """Why ``name`` names no account, without asking the store."""
    return "not a valid name: %s" % name if proto.check_name(name) else None


def text_problem(text, line):
    """Why ``text`` cannot reach clients in ``line``, the longest line that carries it."""
    if proto.check_text(text):
        return proto.check_text(text)
    if len(line) - 1 > proto.MAX_LINE_BYTES:
        return "too long for one line to clients"
    return None


def seconds_like(field):
    """Whether ``field`` is meant as a number of seconds, valid or not ("0",
    "-5", "1.5", "²"), rather than the first word of a reason ("3rd")."""
    body = field[1:] if field[:1] in ("+", "-") else field
    return body[:1].isdigit() and all(char.isdigit() or char in ".,_" for char in body)


def kick_seconds(field):
    """``field`` as a kick's length, or None if it is not 1..KICK_SECONDS_MAX."""
    return proto.whole_number(field, 1, KICK_SECONDS_MAX)


def ask_store(server, link, doing, answer, work, *args):
    """An operator's command that needs the database: ``work(*args)`` on the
    storage thread, then ``answer(result)`` on the loop, or "cannot <doing>:
    storage unavailable". The link stays open for the answer."""
    def done(result, error):
        link.waiting -= 1
        if error is not None:
            link.answer("cannot %s: storage unavailable" % doing)
        else:
            answer(result)
    link.waiting += 1
    server.store_call(done, work, *args)


def admin_help(server, link, rest):
    if rest:
        return admin_usage(link, "help", "no arguments")
    link.answer("commands: " + ", ".join(
        "%s %s" % (name, args) if args else name for name, args in ADMIN_USAGE.items()))


def admin_kill(server, link, rest):
    problem = text_problem(rest, proto.format_bye(rest))
    if problem:
        return admin_usage(link, "kill", problem)
    link.answer("shutting down")
    log.info("kill from the operator")
    server.stop(rest or "server shutting down")


def admin_kick(server, link, rest):
    name, rest = admin_fields(rest, 2)
    if not name:
        return admin_usage(link, "kick")
    seconds, reason = server.limits.kick_seconds, rest
    first, after_first = admin_fields(rest, 2)
    if seconds_like(first):
        seconds, reason = kick_seconds(first), after_first
        if seconds is None:
            return admin_usage(link, "kick", "seconds must be 1 to %d" % KICK_SECONDS_MAX)
    reason = reason.strip() or "kicked by the operator"
    problem = name_problem(name) or text_problem(reason, proto.format_kicked(seconds, reason))
    if problem:
        return admin_usage(link, "kick", problem)
    # The kick itself is kept in memory, but a typo must not look like a
    # kick: the account is looked up first, as ban does.
    def found(account):
        if account is None:
            return link.answer("no such account: %s" % name)
        ended = server.kick(name, seconds, reason)
        link.answer("kicked %s for %ds (%d session%s closed)" % (name, seconds, ended, "" if ended == 1 else "s"))
    ask_store(server, link, "kick " + name, found, server.store.find_account, name)


def admin_unkick(server, link, rest):
    name, extra = admin_fields(rest, 2)
    if not name or extra:
        return admin_usage(link, "unkick")
    if name_problem(name):
        return admin_usage(link, "unkick", name_problem(name))
    left = server.unkick(name)
    link.answer("unkicked %s (%ds were left)" % (name, left) if left else "%s is not kicked" % name)


def admin_ban(server, link, rest):
    name, reason = admin_fields(rest, 2)
    reason = reason.strip() or "banned by the operator"
    if not name:
        return admin_usage(link, "ban")
    # The reason is what a banned account's LOGIN is answered: ERR 403 <reason>.
    problem = name_problem(name) or text_problem(reason, proto.format_err(proto.BANNED, reason))
    if problem:
        return admin_usage(link, "ban", problem)

    def stored(found):
        if not found:
            return link.answer("no such account: %s" % name)
        ended = server.banned(name, reason)
        log.info("operator banned %s: %s", name, reason)
        link.answer("banned %s (%d session%s closed)" % (name, ended, "" if ended == 1 else "s"))
    ask_store(server, link, "ban " + name, stored, server.store.set_ban, name, reason, server.timestamp())


def admin_unban(server, link, rest):
    name, extra = admin_fields(rest, 2)
    if not name or extra:
        return admin_usage(link, "unban")
    if name_problem(name):
        return admin_usage(link, "unban", name_problem(name))

    def stored(lifted):
        if lifted is None:
            link.answer("no such account: %s" % name)
        elif not lifted:
            link.answer("%s is not banned" % name)
        else:
            log.info("operator unbanned %s", name)
            server.unbanned(name)
            link.answer("unbanned %s" % name)
    ask_store(server, link, "unban " + name, stored, lift_ban, server.store, name, server.timestamp())


def lift_ban(store, name, timestamp):
    """On the storage thread: True if the account's ban was lifted, False
    if it had none, None if there is no such account."""
    account = store.find_account(name)
    if account is None or not account.banned:
        return None if account is None else False
    return store.set_ban(name, None, timestamp)


def admin_bans(server, link, rest):
    if rest:
        return admin_usage(link, "bans", "no arguments")

    def found(accounts):
        lines = ["%s: %s" % (account.name, account.ban_reason) for account in accounts]
        link.answer("\n".join(lines + ["%d banned" % len(accounts)]))
    ask_store(server, link, "list bans", found, server.store.banned_accounts)


# `who` names a session's rooms up to this many, and counts them beyond.
WHO_ROOMS_NAMED = 5


def session_rooms(server, session):
    """The rooms a session is in, as `who` says them: the default room for
    every session of a member, the others for one that opted in to v1.1."""
    rooms = sorted((room.info.name for room in session.rooms if room is server.room or session.rooms_on),
                   key=proto.room_key)
    if len(rooms) > WHO_ROOMS_NAMED:
        return "in %d rooms" % len(rooms)
    return "in " + " ".join(rooms) if rooms else "in no room"


def admin_who(server, link, rest):
    if rest:
        return admin_usage(link, "who", "no arguments")
    now = server.now
    lines = ["%s %s connected %s ago, idle %s%s" % (
        session.name or "-", session.address, duration(now - session.connected_at),
        duration(now - session.last_heard), ", " + session_rooms(server, session) if session.account else "")
        for session in server.sessions.values()]
    total = "%d connection%s, %d online" % (len(lines), "" if len(lines) == 1 else "s", len(server.online))
    if server.cluster is not None:
        # The other servers' accounts, by server: where to look for them.
        for instance, peer in sorted(server.elsewhere.items()):
            lines.extend("%s on %s" % (name, instance) for name in sorted(peer.accounts.values()))
        total += " here (%s), %d in the cluster" % (server.instance, len(server.online_names()))
    link.answer("\n".join(lines + [total]))


def admin_stats(server, link, rest):
    if rest:
        return admin_usage(link, "stats", "no arguments")
    cluster = ""
    if server.cluster is not None:
        others = sorted(server.elsewhere)
        cluster = "; instance %s, Redis %s, %d other server%s: %s" % (
            server.instance, {True: "up", False: "DOWN", None: "not yet reached"}[server.redis_up],
            len(others), "" if len(others) == 1 else "s", ", ".join(others) or "-")
    link.answer("%s; %d connections, %d online, %d storage jobs in flight%s" % (
        server.counters.describe(server.now), len(server.sessions), len(server.online),
        server.workers.storage_jobs, cluster))


def admin_say(server, link, rest):
    if not rest:
        return admin_usage(link, "say")
    problem = text_problem(rest, proto.format_info(rest))
    if problem:
        return admin_usage(link, "say", problem)
    said_to = server.operator_say(rest)
    link.answer("said to %d session%s" % (said_to, "" if said_to == 1 else "s"))


def admin_rooms(server, link, rest):
    if rest:
        return admin_usage(link, "rooms", "no arguments")

    def found(listed):
        lines = []
        for info, members in sorted(listed, key=lambda pair: proto.room_key(pair[0].name)):
            room = server.rooms.get(proto.room_key(info.name))
            online = len(room.accounts) if room is not None and room.info.id == info.id else 0
            lines.append("%s %d/%d online%s%s" % (info.name, online, members, ": " if info.topic else "",
                                                 info.topic))
        link.answer("\n".join(lines + ["%d room%s" % (len(lines), "" if len(lines) == 1 else "s")]))
    ask_store(server, link, "list rooms", found, server.store.list_rooms)


# What delete-room does with the room's messages: the operator must say.
HISTORY_CHOICES = {"keep-history": True, "delete-history": False}


def admin_delete_room(server, link, rest):
    name, choice, extra = admin_fields(rest, 3)
    if not name or extra or choice not in HISTORY_CHOICES:
        return admin_usage(link, "delete-room", "say keep-history or delete-history" if name and not extra else "")
    if proto.check_room(name):
        return admin_usage(link, "delete-room", "not a room name: %s" % name)
    if proto.room_key(name) == proto.room_key(server.room.info.name):
        return link.answer("cannot delete the default room %s" % server.room.info.name)
    keep = HISTORY_CHOICES[choice]

    def stored(deleted):
        if deleted is None:
            return link.answer("no such room: %s" % name)
        online = server.room_deleted(deleted, "deleted by the operator")
        log.info("operator deleted the room %s (%s), %s", deleted.name, deleted.id,
                 "its history kept" if keep else "its history deleted")
        link.answer("deleted %s, %s (%d member%s online)" % (
            deleted.name, "history kept" if keep else "history deleted", online, "" if online == 1 else "s"))
    ask_store(server, link, "delete " + name, stored, delete_room, server.store, name, keep, server.room.info.id)


def delete_room(store, name, keep_history, default_room_id):
    """On the storage thread: the room deleted (its RoomInfo), or None if
    there is no such room."""
    info = store.find_room(name)
    if info is None or info.id == default_room_id or not store.delete_room(info.id, keep_history):
        return None
    return info


def admin_reload_tls(server, link, rest):
    if rest:
        return admin_usage(link, "reload-tls", "no arguments")
    link.answer(server.reload_tls())


def duration(seconds):
    seconds = int(seconds)
    if seconds < 60:
        return "%ds" % seconds
    if seconds < 3600:
        return "%dm%02ds" % divmod(seconds, 60)
    return "%dh%02dm" % divmod(seconds // 60, 60)


ADMIN_COMMANDS = {
    "help": admin_help,
    "who": admin_who,
    "stats": admin_stats,
    "say": admin_say,
    "kick": admin_kick,
    "unkick": admin_unkick,
    "ban": admin_ban,
    "unban": admin_unban,
    "bans": admin_bans,
    "rooms": admin_rooms,
    "delete-room": admin_delete_room,
    "reload-tls": admin_reload_tls,
    "kill": admin_kill,
}
ADMIN_USAGE = {
    "help": "", "who": "", "stats": "", "say": "TEXT", "kick": "NAME [seconds] [reason]", "unkick": "NAME",
    "ban": "NAME [reason]", "unban": "NAME", "bans": "", "rooms": "",
    "delete-room": "#ROOM keep-history|delete-history", "reload-tls": "", "kill": "[reason]",
}


# --- sae-server admin: the client ---------------------------------------

def add_admin_options(parser):
    env = os.environ
    parser.add_argument("--admin-socket", default=env.get("SAE_ADMIN_SOCKET", ""),
                        help="Unix socket for `sae-server admin` (default: none)")
    parser.add_argument("--admin-password-file", default=env.get("SAE_ADMIN_PASSWORD_FILE", ""),
                        help="file holding the admin password (or set SAE_ADMIN_PASSWORD)")


def admin_password(args):
    """The admin password from --admin-password-file or SAE_ADMIN_PASSWORD, or None."""
    if args.admin_password_file:
        with open(args.admin_password_file, encoding="utf-8") as secret:
            return secret.readline().rstrip("\r\n") or None
    return os.environ.get("SAE_ADMIN_PASSWORD") or None


def admin_main(argv):
    """`sae-server admin COMMAND ...`: one command to a running server."""
    parser = argparse.ArgumentParser(prog="sae-server admin",
                                     description="Send one command to a running sae-server.")
    add_admin_options(parser)
    parser.add_argument("command", nargs="+", help="e.g. who, kick NAME 300 spamming, ban NAME, kill")
    args = parser.parse_args(argv)
    if not args.admin_socket:
        parser.error("give --admin-socket PATH (or set SAE_ADMIN_SOCKET)")
    try:
        password = admin_password(args)
        link = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        link.settimeout(30)
        link.connect(args.admin_socket)
        request = ("PASSWORD %s\n" % password if password else "") + " ".join(args.command) + "\n"
        link.sendall(request.encode("utf-8"))
        link.shutdown(socket.SHUT_WR)
        answer = b""
        while True:
            chunk = link.recv(65536)
            if not chunk:
                break
            answer += chunk
    except OSError as error:
        print("sae-server admin: %s: %s" % (args.admin_socket, error.strerror or error), file=sys.stderr)
        return 1
    lines = answer.decode("utf-8", "replace").splitlines(keepends=True)
    for note in (line for line in lines if line.startswith("note: ")):
        sys.stderr.write("sae-server admin: " + note)
    text = "".join(line for line in lines if not line.startswith("note: "))
    sys.stdout.write(text)
    return 1 if REFUSED.match(text) or not text else 0


# The answers that mean "nothing was done as asked": `sae-server admin`
# exits with status 1 on them, so that a script notices a typo'd name.
REFUSED = re.compile(r"wrong admin password|unknown command|usage:|internal error|no such account|no such room|cannot "
                     r"|\S+ is not (banned|kicked)$", re.M)


