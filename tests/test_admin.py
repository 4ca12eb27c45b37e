"""The operator's side: the console on the server's terminal, the admin
socket behind `sae-server admin`, and shutdown by command or signal.

The console tests run the server in a real pseudo-terminal and type into it
as an operator would; what the commands do is checked through the sockets of
connected clients.
"""

import os
import pty
import re
import select
import signal
import stat
import subprocess
import sys
import time

import pytest

from conftest import TEST_ENV, TIMEOUT, LineClient, ServerProcess
from sae_admin import ADMIN_USAGE

ADMIN_PASSWORD = "op-secret-42"


class Console:
    """The server's terminal: a pty whose output we read and where we type."""

    def __init__(self, master):
        self.master = master
        self.screen = ""

    def type(self, text):
        os.write(self.master, text.encode("utf-8"))

    def expect(self, pattern, timeout=TIMEOUT):
        """Wait until the terminal shows text matching ``pattern`` after what
        earlier expects consumed; returns the match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.screen)
            if match:
                self.screen = self.screen[match.end():]
                return match
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("console never showed %r; it shows %r" % (pattern, self.screen[-500:]))
            if select.select([self.master], [], [], left)[0]:
                try:
                    self.screen += os.read(self.master, 65536).decode("utf-8", "replace")
                except OSError:
                    raise AssertionError("console closed waiting for %r; it showed %r"
                                         % (pattern, self.screen[-500:])) from None


class ConsoleServer(ServerProcess):
    """sae-server with its stdin and stdout on a pty, as when run in a terminal."""

    def start(self, port=0):
        master, slave = pty.openpty()
        self.console = Console(master)
        try:
            return super().start(port, stdin=slave, stdout=slave)
        finally:
            os.close(slave)

    def stop(self):
        super().stop()
        if self.console.master is not None:
            os.close(self.console.master)
            self.console.master = None


@pytest.fixture
def console_server(tmp_path):
    started = []

    def start(*args, password=ADMIN_PASSWORD):
        env = {"SAE_ADMIN_PASSWORD": password} if password else {}
        server = ConsoleServer(tmp_path, *args, env=env).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def online(server, name):
    client = server.client()
    client.register(name)
    client.login(name)
    return client


def test_console_wants_the_password_first_and_survives_a_wrong_one(console_server):
    server = console_server()
    console = server.console
    console.expect(r"admin password: ")
    console.type("kill\n")  # a command typed before the password is only a wrong password
    console.expect(r"wrong admin password")
    console.expect(r"admin password: ")
    client = server.client()
    client.send("PING alive")
    assert client.next() == "PONG alive"
    console.type(ADMIN_PASSWORD + "\n")
    console.expect(r"admin password accepted")
    console.type("help\n")
    assert "kick NAME [seconds] [reason]" in console.expect(r"commands: .*").group(0)
    console.type("frobnicate now\n")
    console.expect(r"unknown command: frobnicate")


def test_the_password_prompt_stays_in_sight_under_the_log(tmp_path):
    # The log (stderr) on the console's terminal too, as when an operator
    # starts the server by hand: whatever is logged while the console waits
    # for the password must not leave the question buried above it.
    master, slave = pty.openpty()
    env = dict(os.environ, **TEST_ENV, SAE_ADMIN_PASSWORD=ADMIN_PASSWORD)
    server = subprocess.Popen(
        [sys.executable, "-m", "sae_server", "--host", "127.0.0.1", "--port", "0",
         "--db", "sqlite:///%s" % (tmp_path / "sae.db")],
        stdin=slave, stdout=slave, stderr=slave, env=env, cwd=str(tmp_path))
    os.close(slave)
    console = Console(master)
    try:
        port = int(console.expect(r"listening on 127\.0\.0\.1:(\d+)").group(1))
        console.expect(r"admin password: ")
        visitor = LineClient(port)
        visitor.send("PING hello")
        visitor.expect(r"PONG hello")
        console.expect(r"connection from 127\.0\.0\.1:\d+\r?\n(admin password: )")
        visitor.close()
        console.type(ADMIN_PASSWORD + "\n")
        console.expect(r"admin password accepted")
    finally:
        server.terminate()
        server.wait(TIMEOUT)
        os.close(master)


def test_password_is_not_echoed_or_logged(console_server):
    server = console_server()
    server.console.expect(r"admin password: ")
    server.console.type(ADMIN_PASSWORD + "\n")
    seen = server.console.expect(r"admin password accepted")
    server.stop()
    assert ADMIN_PASSWORD not in seen.string
    assert ADMIN_PASSWORD not in "".join(server.log)


def test_console_kick_ban_say_who(console_server):
    server = console_server()
    console = server.console
    console.expect(r"admin password: ")
    console.type(ADMIN_PASSWORD + "\n")
    console.expect(r"accepted")
    alice, bob, carol = online(server, "alice"), online(server, "bob"), online(server, "carol")

    console.type("WHO\n")
    listing = console.expect(r"(?s)(.*)3 connections, 3 online").group(1)
    assert all(name in listing for name in ("alice", "bob", "carol"))

    console.type("say maintenance at noon\n")
    console.expect(r"said to 3 sessions")
    for client in (alice, bob, carol):
        client.expect(r"INFO maintenance at noon$")
    alice.send("SAY noted")
    for client in (alice, bob, carol):
        client.expect(r"MSG \d+ \S+ alice noted$")
    console.type("stats\n")
    console.expect(r"up \d+s: 1 messages stored in 1 batches \(1\.0 per batch\), \d+ passes over the room "
                   r"\(\d\.\d messages per pass\), \d+ loop turns; 3 connections, 3 online")

    console.type("kick bob 300 spamming the room\n")
    console.expect(r"kicked bob for 300s \(1 session closed\)")
    assert bob.expect_closed() == ["KICKED 300 spamming the room"]
    alice.expect(r"LEAVE bob kicked$")
    again = server.client()
    again.send("LOGIN bob password1")
    assert re.match(r"ERR 423 (29\d|300) ", again.next())
    assert again.expect_closed() == []

    console.type("ban carol flooding\n")
    console.expect(r"banned carol \(1 session closed\)")
    assert carol.expect_closed()[-1] == "BANNED flooding"
    alice.expect(r"LEAVE carol banned$")
    again = server.client()
    again.send("LOGIN carol password1")
    assert again.next() == "ERR 403 flooding"
    console.type("bans\n")
    console.expect(r"carol: flooding\s+1 banned")
    console.type("unban carol\n")
    console.expect(r"unbanned carol")
    server.client().login("carol")
    console.type("ban nobody-here\n")
    console.expect(r"no such account: nobody-here")


def test_console_kill_says_bye_and_keeps_every_message(console_server):
    server = console_server(password=None)
    console = server.console
    console.expect(r"console ready")
    alice, bob = online(server, "alice"), online(server, "bob")
    alice.send_raw(b"".join(b"SAY message %d\n" % n for n in range(100)))
    bob.expect(r"MSG \d+ \S+ alice message 99$")
    console.type("kill back in five minutes\n")
    assert alice.expect_closed()[-1] == "BYE back in five minutes"
    assert bob.expect_closed()[-1] == "BYE back in five minutes"
    assert server.proc.wait(TIMEOUT) == 0
    server.stop()
    restarted = ServerProcess(server.tmp_path).start()
    try:
        reader = online(restarted, "carol")
        reader.send("HISTORY 1000")
        history = [reader.next() for _ in range(101)]
        assert history[-1] == "OK HISTORY 100"
        assert [line.split(" ", 4)[4] for line in history[:-1]] == ["message %d" % n for n in range(100)]
    finally:
        restarted.stop()


def test_console_end_of_input_leaves_the_server_serving(console_server):
    server = console_server(password=None)
    server.console.expect(r"console ready")
    server.console.type("\x04")  # Ctrl-D on an empty line: end of input
    server.wait_log(r".*console closed")
    client = online(server, "alice")
    client.send("SAY still here")
    client.expect(r"MSG \d+ \S+ alice still here$")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_shut_down_gracefully(server, signum):
    alice = online(server, "alice")
    alice.send_raw(b"".join(b"SAY before the end %d\n" % n for n in range(50)))
    alice.expect(r"MSG \d+ \S+ alice before the end 49$")
    server.proc.send_signal(signum)
    assert alice.expect_closed()[-1].startswith("BYE server shutting down")
    assert server.proc.wait(TIMEOUT) == 0
    server.stop()
    assert "Traceback" not in "".join(server.log)
    server.start()
    reader = online(server, "bob")
    reader.send("HISTORY 50")
    assert reader.expect(r"OK HISTORY \d+").group(0) == "OK HISTORY 50"


def admin(socket_path, *command, password=ADMIN_PASSWORD):
    env = dict(os.environ)
    env.pop("SAE_ADMIN_PASSWORD", None)
    if password:
        env["SAE_ADMIN_PASSWORD"] = password
    return subprocess.run([sys.executable, "-m", "sae_server", "admin", "--admin-socket", socket_path]
                          + list(command), env=env, capture_output=True, text=True, timeout=TIMEOUT)


def test_admin_socket(make_server, tmp_path):
    path = str(tmp_path / "admin.sock")
    server = make_server("--admin-socket", path, env={"SAE_ADMIN_PASSWORD": ADMIN_PASSWORD})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    alice, bob = online(server, "alice"), online(server, "bob")

    refused = admin(path, "kill", password="guess")
    assert refused.returncode == 1 and refused.stdout == "wrong admin password\n"
    refused = admin(path, "who", password=None)
    assert refused.returncode == 1 and "wrong admin password" in refused.stdout

    who = admin(path, "who")
    assert who.returncode == 0 and who.stdout.endswith("2 connections, 2 online\n")
    kicked = admin(path, "kick", "bob", "needs a break")
    assert kicked.stdout == "kicked bob for 120s (1 session closed)\n"
    assert bob.expect_closed() == ["KICKED 120 needs a break"]
    alice.expect(r"LEAVE bob kicked$")
    assert admin(path, "ban", "bob", "enough").stdout == "banned bob (0 sessions closed)\n"
    assert admin(path, "bans").stdout == "bob: enough\n1 banned\n"
    assert admin(path, "nonsense").stdout == "unknown command: nonsense\n"

    assert admin(path, "kill", "upgrade").stdout == "shutting down\n"
    assert alice.expect_closed()[-1] == "BYE upgrade"
    assert server.proc.wait(TIMEOUT) == 0
    assert not os.path.exists(path)


@pytest.mark.parametrize("backend", ["sqlite", "mysql"])
def test_ban_survives_a_restart(make_server, tmp_path):
    path = str(tmp_path / "admin.sock")
    server = make_server("--admin-socket", path, env={"SAE_ADMIN_PASSWORD": ADMIN_PASSWORD})
    online(server, "mallory")
    assert admin(path, "ban", "MALLORY", "spam").stdout == "banned MALLORY (1 session closed)\n"
    server.restart()
    client = server.client()
    client.send("LOGIN mallory password1")
    assert client.next() == "ERR 403 spam"
    assert admin(path, "unban", "mallory").stdout == "unbanned mallory\n"
    server.client().login("mallory")


def failed_start(tmp_path, *args):
    """Start sae-server where it must refuse to start: its exit status and log."""
    server = ServerProcess(tmp_path, *args)
    try:
        with pytest.raises(AssertionError, match="server exited"):
            server.start()
    finally:
        server.stop()
    return server.proc.returncode, "".join(server.log)


def test_admin_socket_on_a_regular_file_is_refused_and_the_file_kept(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("who said what, and when\n")
    status, log = failed_start(tmp_path, "--admin-socket", str(notes))
    assert status == 1
    assert "cannot listen: %s exists and is not a socket" % notes in log
    assert notes.read_text() == "who said what, and when\n"


def test_admin_socket_on_the_database_keeps_every_account(tmp_path):
    server = ServerProcess(tmp_path).start()
    online(server, "alice")
    server.stop()
    status, log = failed_start(tmp_path, "--admin-socket", str(tmp_path / "sae.db"))
    assert status == 1 and "exists and is not a socket" in log
    server.start()
    server.client().login("alice")
    server.stop()


def test_a_socket_left_by_a_killed_server_is_replaced(make_server, tmp_path):
    path = str(tmp_path / "admin.sock")
    server = make_server("--admin-socket", path)
    server.proc.kill()  # no clean-up: the socket file stays behind
    server.proc.wait(TIMEOUT)
    server.stop()
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    server.start()
    assert admin(path, "who", password=None).stdout == "0 connections, 0 online\n"


def test_admin_look_alike_names_leave_the_account_alone(make_server, tmp_path):
    path = str(tmp_path / "admin.sock")
    server = make_server("--admin-socket", path)
    kate = online(server, "kate")
    lookalike = "\u212aate"  # the Kelvin sign, which str.lower() turns into "k"
    admin(path, "kick", lookalike, "300", "not you", password=None)
    admin(path, "ban", lookalike, "not you either", password=None)
    assert admin(path, "\u212aick", "kate", password=None).stdout == "unknown command: \u212aick\n"
    kate.send("PING still here")
    assert kate.next() == "PONG still here"
    server.client().login("kate")  # neither kicked nor banned


@pytest.fixture
def admin_socket(make_server, tmp_path):
    """A server with an admin socket and no admin password: (server, ask),
    where ask("kick", "bob") sends one command and returns (status, answer)."""
    path = str(tmp_path / "admin.sock")
    server = make_server("--admin-socket", path)

    def ask(*command):
        done = admin(path, *command, password=None)
        return done.returncode, done.stdout
    return server, ask


def test_a_kick_longer_than_a_year_is_refused_and_the_server_serves_on(admin_socket):
    server, ask = admin_socket
    bob = online(server, "bob")
    # 10**400 seconds used to overflow the monotonic deadline and stop the server.
    for seconds in ["1" + "0" * 400, "1000000000000000000000000", "31536001"]:
        assert ask("kick", "bob", seconds) == (
            1, "usage: kick NAME [seconds] [reason] (seconds must be 1 to 31536000)\n")
    bob.send("PING not kicked")
    assert bob.next() == "PONG not kicked"
    assert ask("kick", "bob", "31536000", "see you next year") == (0, "kicked bob for 31536000s (1 session closed)\n")
    assert bob.expect_closed() == ["KICKED 31536000 see you next year"]


@pytest.mark.parametrize("command, problem", [
    (["kick", "bob", "0", "too short"], "(seconds must be 1 to 31536000)"),
    (["kick", "bob", "-5"], "(seconds must be 1 to 31536000)"),
    (["kick", "bob", "1.5", "minutes"], "(seconds must be 1 to 31536000)"),
    (["kick", "bob", "\u00b2"], "(seconds must be 1 to 31536000)"),
    (["kick"], ""),
    (["kick", "bob!"], "(not a valid name: bob!)"),
    (["kick", "\u212aate", "60"], "(not a valid name: \u212aate)"),
    (["kick", "bob", "60", "bye\x1b[2J"], "(control characters are not allowed)"),
    (["ban"], ""),
    (["ban", "b" * 33, "spam"], "(not a valid name: %s)" % ("b" * 33)),
    (["ban", "bob", "\x07ring"], "(control characters are not allowed)"),
    (["ban", "b", "x" * 4090], "(too long for one line to clients)"),  # ERR 403 <reason> would be 4098 bytes
    (["unban"], ""),
    (["unban", "bob", "carol"], ""),
    (["unban", "b\u00f6b"], "(not a valid name: b\u00f6b)"),
    (["unkick"], ""),
    (["unkick", "bob", "now"], ""),
    (["unkick", "b\u00f6b"], "(not a valid name: b\u00f6b)"),
    (["say"], ""),
    (["say", "clear\x1b[2J"], "(control characters are not allowed)"),
    (["say", "x" * 4092], "(too long for one line to clients)"),  # INFO <text>: 4097 bytes
    (["kill", "now\rBYE"], "(control characters are not allowed)"),
    (["who", "bob"], "(no arguments)"),
    (["bans", "all"], "(no arguments)"),
    (["help", "kick"], "(no arguments)"),
])
def test_admin_arguments_are_checked_before_anything_is_done(admin_socket, command, problem):
    server, ask = admin_socket
    bob = online(server, "bob")
    status, answer = ask(*command)
    usage = "usage: %s %s" % (command[0], ADMIN_USAGE[command[0]]) if ADMIN_USAGE[command[0]] else \
        "usage: " + command[0]
    assert (status, answer) == (1, (usage + " " + problem).rstrip() + "\n")
    bob.send("PING untouched")
    assert bob.next() == "PONG untouched"
    assert ask("bans") == (0, "0 banned\n")


def test_kick_and_ban_of_a_name_with_no_account_are_refused_alike(admin_socket):
    server, ask = admin_socket
    online(server, "bob")
    # A typo (bobb) must not look like a kick that worked.
    assert ask("kick", "bobb", "60") == (1, "no such account: bobb\n")
    assert ask("ban", "bobb") == (1, "no such account: bobb\n")
    client = server.client()
    client.register("bobb")
    client.login("bobb")  # nothing was kept against the name


def test_unkick_lifts_a_kick_and_unban_says_when_there_was_none(admin_socket):
    server, ask = admin_socket
    bob = online(server, "bob")
    assert ask("kick", "bob", "300", "cool down")[0] == 0
    assert bob.expect_closed() == ["KICKED 300 cool down"]
    client = server.client()
    client.send("LOGIN bob password1")
    assert client.next().startswith("ERR 423 ")
    status, answer = ask("unkick", "BOB")
    assert status == 0 and re.fullmatch(r"unkicked BOB \((300|299)s were left\)\n", answer)
    server.client().login("bob")
    assert ask("unkick", "bob") == (1, "bob is not kicked\n")
    assert ask("unban", "bob") == (1, "bob is not banned\n")
    assert ask("unban", "nobody") == (1, "no such account: nobody\n")
    assert ask("ban", "bob", "spam") == (0, "banned bob (1 session closed)\n")
    assert ask("unban", "bob") == (0, "unbanned bob\n")


@pytest.mark.parametrize("password", ["kill now", "a-secret-42"])
def test_a_password_given_to_a_server_without_one_is_never_a_command(admin_socket, tmp_path, password):
    server, _ = admin_socket
    alice = online(server, "alice")
    done = admin(str(tmp_path / "admin.sock"), "who", password=password)
    # It used to be sent as a first command: echoed back as unknown, or run.
    assert done.returncode == 0 and done.stdout.endswith("1 connection, 1 online\n")
    assert password not in done.stdout + done.stderr
    assert "this server has no admin password; the one given was ignored" in done.stderr
    alice.send("PING still serving")
    assert alice.next() == "PONG still serving"


def test_a_password_that_looks_like_a_command_is_only_a_password(make_server, tmp_path):
    path = str(tmp_path / "admin.sock")
    server = make_server("--admin-socket", path, env={"SAE_ADMIN_PASSWORD": "kill it all"})
    alice = online(server, "alice")
    refused = admin(path, "who", password="kill")
    assert (refused.returncode, refused.stdout) == (1, "wrong admin password\n")
    # A command sent where the password should be is not taken for one either.
    refused = admin(path, "kill", "it", "all", password=None)
    assert refused.returncode == 1 and refused.stdout.startswith("wrong admin password: none was given")
    assert admin(path, "who", password="kill it all").stdout.endswith("1 connection, 1 online\n")
    alice.send("PING still serving")
    assert alice.next() == "PONG still serving"


def test_kick_seconds_option_is_checked_at_start(tmp_path):
    status, log = failed_start(tmp_path, "--kick-seconds", "0")
    assert status == 1 and "--kick-seconds must be 1 to 31536000" in log
