"""sae-client over TLS (issue 15, the client's part).

The first tests of verification run against the server's own TLS listener;
the rest keep a TlsTerminator (conftest) in front of a real sae-server,
which can also stall or be cut at will. Certificates are made here by trustme. The client is its model (Chat) and
its I/O (Link) on a selectors loop of the test's, as its Loop runs them
without the terminal; the prompt and the status line are read through a
real pty (test_client_pty's Terminal). Nothing is mocked: real handshakes,
real certificates, a real known_servers file in the test's folder.
"""

import datetime
import hashlib
import os
import selectors
import socket
import ssl
import stat
import subprocess
import time

import pytest

trustme = pytest.importorskip("trustme")

import sae_client_curses as client  # noqa: E402
from conftest import TIMEOUT, TlsTerminator  # noqa: E402
from sae_client_curses import (  # noqa: E402
    Chat, Link, TlsOptions, fingerprint, fingerprint_lines, known_servers_path, parse_args, parse_fingerprint,
    read_known_servers, remember_server, row_text, with_known_server,
)

PASSWORD = "password1"
FOLD = "A1:" * 31 + "A1"        # a well-formed fingerprint, for the pure tests


# --- certificates ------------------------------------------------------------

class Certificates:
    """A CA of the test's and the files a TlsTerminator or the client reads."""

    def __init__(self, folder):
        self.folder = folder
        self.ca = trustme.CA()
        self.ca_file = folder / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.made = 0

    def server(self, *names, **kwargs):
        """A certificate for ``names`` signed by the CA: (chain file, its
        fingerprint)."""
        leaf = self.ca.issue_cert(*(names or ("127.0.0.1", "localhost")), **kwargs)
        self.made += 1
        chain = self.folder / ("server%d.pem" % self.made)
        leaf.private_key_and_cert_chain_pem.write_to_path(str(chain))
        return chain, fingerprint(ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode()))

    def self_signed(self):
        """A certificate that vouches for itself, as `openssl req -x509`
        makes for a classroom server: (chain file, its fingerprint)."""
        own = trustme.CA()
        self.made += 1
        chain = self.folder / ("self%d.pem" % self.made)
        chain.write_bytes(own.private_key_pem.bytes() + own.cert_pem.bytes())
        return chain, fingerprint(ssl.PEM_cert_to_DER_cert(own.cert_pem.bytes().decode()))


@pytest.fixture
def certificates(tmp_path):
    return Certificates(tmp_path)


@pytest.fixture
def fronts():
    """Start TlsTerminators in front of a server; all closed at the end."""
    started = []

    def start(target_port, chain_file, stall=False):
        started.append(TlsTerminator(target_port, chain_file, stall=stall))
        return started[-1]

    yield start
    for front in started:
        front.close()


# --- the client without its terminal ---------------------------------------

class Driver:
    """A Chat and its Link on a selectors loop, as the client's Loop runs
    them, without a terminal; logging in as soon as it is made."""

    def __init__(self, port, name, tls, password=PASSWORD, host="127.0.0.1", servers=None):
        self.chat = Chat(host, port, name, password, tls, servers=servers)
        self.selector = selectors.DefaultSelector()
        self.link = Link(self.chat, self.selector)
        self.chat.submit_login(register=False)

    def turn(self):
        self.link.sync()
        deadline = self.chat.next_deadline()
        wait = 0.05 if deadline is None else max(0.0, min(0.05, deadline - client.clock()))
        for key, mask in self.selector.select(wait):
            key.data(mask)
        self.chat.tick(client.clock())
        self.link.sync()

    def until(self, what, predicate, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("never %s; login form: %r / %r; scrollback:\n%s"
                                     % (what, self.chat.form.notice, self.chat.form.error, self.screen()))
            self.turn()

    def online(self):
        self.until("online", lambda: self.chat.state == "online" and not self.chat.exchange)
        return self

    def refused(self):
        """Wait for the login form to say why it did not connect."""
        self.until("an error on the login form", lambda: self.chat.form.error and self.chat.state == "offline")
        return self.chat.form.error

    def screen(self):
        return "\n".join(row_text(row) for row in self.chat.scrollback.view(200, 200))

    def close(self):
        self.link.close()
        self.selector.close()


@pytest.fixture
def drivers():
    started = []

    def start(*args, **kwargs):
        started.append(Driver(*args, **kwargs))
        return started[-1]

    yield start
    for driver in started:
        driver.close()


@pytest.fixture
def alice(server, unique_name):
    name = unique_name("alice")
    account = server.client()
    account.register(name, PASSWORD)
    return name


def known_file(tmp_path):
    return str(tmp_path / "config" / "sae-chat" / "known_servers")


# --- pure parts ----------------------------------------------------------------

def test_a_fingerprint_reads_as_openssl_prints_it():
    der = b"not really a certificate, but bytes all the same"
    digest = hashlib.sha256(der).hexdigest().upper()
    assert fingerprint(der) == ":".join(digest[i:i + 2] for i in range(0, 64, 2))
    assert len(fingerprint(der)) == 64 + 31


def test_a_fingerprint_is_shown_in_two_lines_that_fit_a_narrow_terminal():
    lines = fingerprint_lines("offered:", FOLD)
    assert lines == ["offered: SHA256 " + "A1:" * 16, " " * 16 + "A1:" * 15 + "A1"]
    assert max(len(line) for line in lines) < 80


@pytest.mark.parametrize("typed", [
    FOLD, FOLD.lower(), FOLD.replace(":", ""), " " + FOLD.replace(":", "").lower() + "\n",
    "sha256 Fingerprint=" + FOLD, "SHA256:" + FOLD.replace(":", ""),
])
def test_a_fingerprint_is_taken_with_or_without_colons_in_any_case(typed):
    assert parse_fingerprint(typed) == FOLD


@pytest.mark.parametrize("typed", ["", "A1:B2", FOLD + ":C3", FOLD.replace("A1", "G1", 1)])
def test_a_fingerprint_that_is_not_one_is_refused_in_words(typed):
    with pytest.raises(ValueError, match="64 hex digits"):
        parse_fingerprint(typed)


def test_known_servers_lines_are_read_forgivingly():
    text = ("# a comment\n\n127.0.0.1:12346 %s\nbroken line here\nHost.Example:12346 %s\n"
            "other:1 not-a-fingerprint\n127.0.0.1:12346 %s\n" % (FOLD, FOLD.lower(), "B2:" * 31 + "B2"))
    assert read_known_servers(text) == {"127.0.0.1:12346": "B2:" * 31 + "B2", "host.example:12346": FOLD}


def test_a_server_is_added_or_replaced_and_every_other_line_kept():
    first = with_known_server("", "a:1", FOLD)
    assert first.startswith("#") and first.endswith("a:1 %s\n" % FOLD)
    both = with_known_server(first + "# mine\n", "b:2", FOLD)
    changed = with_known_server(both, "a:1", "B2:" * 31 + "B2")
    assert changed.splitlines()[:2] == first.splitlines()[:2]      # the header
    assert "# mine" in changed and "b:2 %s" % FOLD in changed
    assert read_known_servers(changed) == {"a:1": "B2:" * 31 + "B2", "b:2": FOLD}
    assert changed.count("a:1 ") == 1


def test_known_servers_is_written_whole_and_private(tmp_path):
    path = known_file(tmp_path)
    remember_server(path, "127.0.0.1:12346", FOLD)
    remember_server(path, "[::1]:12346", FOLD)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert os.listdir(os.path.dirname(path)) == ["known_servers"]   # no temporary left behind
    with open(path) as file:
        assert read_known_servers(file.read()) == {"127.0.0.1:12346": FOLD, "[::1]:12346": FOLD}


def test_known_servers_lives_under_xdg_config_home():
    assert known_servers_path({"XDG_CONFIG_HOME": "/cfg", "HOME": "/home/a"}) == "/cfg/sae-chat/known_servers"
    assert known_servers_path({"HOME": "/home/a"}) == "/home/a/.config/sae-chat/known_servers"
    # A relative XDG_CONFIG_HOME is to be ignored, says the XDG spec.
    assert known_servers_path({"XDG_CONFIG_HOME": "cfg", "HOME": "/home/a"}) == \
        "/home/a/.config/sae-chat/known_servers"


def test_the_command_line_takes_tls_and_its_port(capsys):
    assert parse_args([]).port == 12345 and not parse_args([]).tls
    assert parse_args(["--tls"]).port == 12346
    assert parse_args(["--tls", "--port", "7000"]).port == 7000
    pinned = parse_args(["--tls-fingerprint", FOLD.replace(":", "").lower()])
    assert pinned.tls and pinned.port == 12346 and pinned.tls_fingerprint == FOLD
    with pytest.raises(SystemExit):
        parse_args(["--tls-fingerprint", "abc"])
    assert "64 hex digits" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--tls-ca", "/nonexistent/ca.pem"])
    assert "--tls-ca /nonexistent/ca.pem" in capsys.readouterr().err


# --- verification ----------------------------------------------------------------

def tls_listener(make_server, chain, unique_name):
    """The server's own TLS listener (--tls-cert): its port, and an account on it."""
    server = make_server("--tls-cert", str(chain), "--tls-port", "0")
    port = next(int(line.rsplit(":", 1)[1]) for line in server.log if "listening for TLS v1 on " in line)
    name = unique_name("alice")
    server.client().register(name, PASSWORD)
    return port, name


def test_a_certificate_signed_by_the_given_ca_is_verified(make_server, unique_name, certificates, drivers, tmp_path):
    chain, _ = certificates.server()
    port, alice = tls_listener(make_server, chain, unique_name)
    driver = drivers(port, alice, TlsOptions(str(certificates.ca_file), "", known_file(tmp_path))).online()
    assert driver.chat.secure
    assert driver.chat.status().startswith("tls | 127.0.0.1:%d | %s | online" % (port, alice))
    assert not os.path.exists(known_file(tmp_path))     # verified: nothing to remember


def test_a_certificate_for_another_host_name_is_refused(make_server, unique_name, certificates, drivers, tmp_path):
    chain, _ = certificates.server("chat.example.org")
    port, alice = tls_listener(make_server, chain, unique_name)
    error = drivers(port, alice, TlsOptions(str(certificates.ca_file), "", known_file(tmp_path))).refused()
    assert "for another host name" in error and "127.0.0.1" in error
    assert not os.path.exists(known_file(tmp_path))


def test_an_expired_certificate_is_refused(server, alice, certificates, fronts, drivers, tmp_path):
    chain, _ = certificates.server(not_before=datetime.datetime(2020, 1, 1),
                                   not_after=datetime.datetime(2021, 1, 1))
    front = fronts(server.port, chain)
    error = drivers(front.port, alice, TlsOptions(str(certificates.ca_file), "", known_file(tmp_path))).refused()
    assert "out of date" in error and "expired" in error and "renew" in error


def test_a_certificate_the_given_ca_did_not_sign_is_refused_without_asking(
        server, alice, certificates, fronts, drivers, tmp_path):
    chain, _ = certificates.self_signed()
    front = fronts(server.port, chain)
    driver = drivers(front.port, alice, TlsOptions(str(certificates.ca_file), "", known_file(tmp_path)))
    error = driver.refused()
    assert "cannot be verified" in error and "not signed by the CA in %s" % certificates.ca_file in error
    assert driver.chat.trust_question is None


# --- trust on first use ------------------------------------------------------------

def test_a_self_signed_certificate_is_asked_about_then_known(server, alice, certificates, fronts, drivers, tmp_path):
    chain, print_ = certificates.self_signed()
    front = fronts(server.port, chain)
    options = TlsOptions("", "", known_file(tmp_path))
    first = drivers(front.port, alice, options)
    first.until("asked about the certificate", lambda: first.chat.trust_question is not None)
    lines = first.chat.trust_question_lines()
    assert lines[1:3] == fingerprint_lines("", print_) and lines[-1] == "Trust it and connect? y/n"
    assert first.chat.state == "offline" and not os.path.exists(known_file(tmp_path))
    first.chat.key("x")                     # not an answer
    assert first.chat.trust_question is not None
    first.chat.key("y")
    first.online()
    assert first.chat.secure and first.chat.status().startswith("tls | ")
    assert stat.S_IMODE(os.stat(known_file(tmp_path)).st_mode) == 0o600
    with open(known_file(tmp_path)) as file:
        assert read_known_servers(file.read()) == {"127.0.0.1:%d" % front.port: print_}

    # The next client knows the server: not a question, not a word.
    second = drivers(front.port, alice, options)
    second.until("online", lambda: second.chat.state == "online" or second.chat.trust_question is not None)
    assert second.chat.trust_question is None and second.chat.secure
    assert "tls | 127.0.0.1:%d" % front.port in second.chat.status()


def test_saying_no_to_a_certificate_writes_nothing(server, alice, certificates, fronts, drivers, tmp_path):
    chain, _ = certificates.self_signed()
    front = fronts(server.port, chain)
    driver = drivers(front.port, alice, TlsOptions("", "", known_file(tmp_path)))
    driver.until("asked about the certificate", lambda: driver.chat.trust_question is not None)
    driver.chat.key("\x1b")
    assert driver.chat.form.error == "not connecting: the certificate of 127.0.0.1:%d was not trusted" % front.port
    assert not os.path.exists(known_file(tmp_path))


def test_a_changed_certificate_is_refused_loudly_and_nothing_written(
        server, alice, certificates, fronts, drivers, tmp_path):
    chain, print_ = certificates.self_signed()
    front = fronts(server.port, chain)
    key = "127.0.0.1:%d" % front.port
    remember_server(known_file(tmp_path), key, FOLD)
    with open(known_file(tmp_path)) as file:
        before = file.read()
    driver = drivers(front.port, alice, TlsOptions("", "", known_file(tmp_path)))
    error = driver.refused()
    assert error.splitlines()[0] == "WARNING: THE CERTIFICATE OF %s HAS CHANGED" % key
    assert "\n".join(fingerprint_lines("trusted:", FOLD) + fingerprint_lines("offered:", print_)) in error
    assert 'delete the line "%s ..." from %s' % (key, known_file(tmp_path)) in error
    assert driver.chat.trust_question is None and driver.chat.status().endswith("certificate refused")
    with open(known_file(tmp_path)) as file:
        assert file.read() == before
    # No reconnecting on its own: the refusal stands until the user acts.
    assert driver.chat.next_deadline() is None


def test_a_pinned_fingerprint_connects_without_asking_or_writing(
        server, alice, certificates, fronts, drivers, tmp_path):
    chain, print_ = certificates.self_signed()
    front = fronts(server.port, chain)
    pinned = print_.replace(":", "").lower()
    driver = drivers(front.port, alice, TlsOptions("", parse_fingerprint(pinned), known_file(tmp_path))).online()
    assert driver.chat.secure
    assert not os.path.exists(known_file(tmp_path))


def test_a_wrong_pinned_fingerprint_is_refused(server, alice, certificates, fronts, drivers, tmp_path):
    chain, print_ = certificates.server()
    front = fronts(server.port, chain)
    error = drivers(front.port, alice, TlsOptions("", FOLD, known_file(tmp_path))).refused()
    assert error.splitlines()[0] == "WARNING: THE CERTIFICATE OF 127.0.0.1:%d DOES NOT MATCH --tls-fingerprint" \
        % front.port
    assert "\n".join(fingerprint_lines("offered:", print_)) in error and "--tls-fingerprint" in error.splitlines()[-1]
    assert not os.path.exists(known_file(tmp_path))


# --- servers that do not, or not quite, speak TLS ------------------------------------

def test_tls_to_a_plain_port_says_to_use_the_tls_port(server, alice, drivers, tmp_path):
    error = drivers(server.port, alice, TlsOptions("", "", known_file(tmp_path))).refused()
    assert error.startswith("cannot reach 127.0.0.1:%d: " % server.port)
    assert "is the server started with --tls-cert? Its plain port, 12345 by default, takes sae-client " \
           "without --tls" in error


def test_a_stalled_handshake_times_out(server, alice, certificates, fronts, drivers, tmp_path, monkeypatch):
    monkeypatch.setattr(client, "TLS_HANDSHAKE_TIMEOUT", 0.5)
    chain, _ = certificates.server()
    front = fronts(server.port, chain, stall=True)
    started = time.monotonic()
    error = drivers(front.port, alice, TlsOptions(str(certificates.ca_file), "", known_file(tmp_path))).refused()
    assert "the TLS handshake did not finish within 0.5 seconds: the server is stalled" in error
    assert time.monotonic() - started < client.CONNECT_TIMEOUT


def test_nothing_listening_on_the_tls_port_says_so(drivers, tmp_path):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    error = drivers(port, "alice", TlsOptions("", "", known_file(tmp_path))).refused()
    assert "connection refused: is the server started with --tls-cert?" in error


# --- reconnecting ----------------------------------------------------------------------

def test_reconnects_keep_tls_and_refuse_a_changed_certificate(
        server, alice, certificates, fronts, drivers, tmp_path, unique_name, monkeypatch):
    monkeypatch.setattr(client, "RECONNECT_DELAYS", (0.05,))
    chain, print_ = certificates.self_signed()
    front = fronts(server.port, chain)
    options = TlsOptions("", print_, known_file(tmp_path))
    driver = drivers(front.port, alice, options).online()
    # A message seen first, so that the reconnection has something to catch up from.
    bob, bob_name = server.client(), unique_name("bob")
    bob.register(bob_name, PASSWORD)
    bob.login(bob_name, PASSWORD)
    bob.send("SAY before the drop")
    driver.until("bob heard", lambda: "before the drop" in driver.screen())

    front.cut()
    driver.until("reconnected", lambda: "reconnected to 127.0.0.1:%d as %s" % (front.port, alice) in driver.screen()
                 and driver.chat.state == "online")
    assert driver.chat.secure and front.handshakes == 2

    other, other_print = certificates.self_signed()
    front.use_certificate(other)
    front.cut()
    driver.until("refused", lambda: "certificate refused" in driver.chat.status())
    screen = driver.screen()
    assert "WARNING: THE CERTIFICATE OF 127.0.0.1:%d DOES NOT MATCH --tls-fingerprint" % front.port in screen
    assert all(line in screen for line in fingerprint_lines("offered:", other_print))
    assert not driver.chat.secure and driver.chat.next_deadline() is None


# --- several servers of one chat ----------------------------------------------------

def test_each_server_is_verified_for_its_own_address_and_one_refused_is_left_out(
        server, alice, certificates, fronts, drivers, tmp_path, monkeypatch):
    monkeypatch.setattr(client, "RECONNECT_DELAYS", (0.05,))
    chain, _ = certificates.server("127.0.0.1")
    first, second = fronts(server.port, chain), fronts(server.port, chain)
    servers = [("127.0.0.1", first.port), ("127.0.0.1", second.port)]
    options = TlsOptions(str(certificates.ca_file), "", known_file(tmp_path))
    driver = drivers(first.port, alice, options, servers=servers).online()
    assert driver.chat.status().startswith("tls | 127.0.0.1:%d | " % first.port)

    first.close()
    driver.until("reconnected to the second", lambda: driver.chat.state == "online" and driver.chat.secure
                 and "reconnected to 127.0.0.1:%d as %s" % (second.port, alice) in driver.screen())
    # The second now shows a certificate for another name: refused, loudly,
    # and left out; the first is still tried (it may come back).
    other, _ = certificates.server("chat.example.org")
    second.use_certificate(other)
    second.cut()
    driver.until("refused", lambda: "is left out from now on" in driver.screen())
    assert "the certificate of 127.0.0.1:%d is for another host name" % second.port in driver.screen()
    driver.until("back to the first", lambda: driver.chat.port == first.port and driver.chat.state == "offline")
    assert not driver.chat.tls_refused and driver.chat.next_deadline() is not None
    assert "certificate refused" not in driver.chat.status()


def test_known_servers_vouches_for_one_server_only(server, alice, certificates, fronts, drivers, tmp_path):
    # Two servers with one self-signed certificate; the user trusted the
    # first on first use, never the second.
    chain, print_ = certificates.self_signed()
    first, second = fronts(server.port, chain), fronts(server.port, chain)
    remember_server(known_file(tmp_path), "127.0.0.1:%d" % first.port, print_)
    servers = [("127.0.0.1", first.port), ("127.0.0.1", second.port)]
    driver = drivers(first.port, alice, TlsOptions("", "", known_file(tmp_path)), servers=servers).online()
    first.close()
    # Not asked in the middle of a session: said, with what to do.
    driver.until("refused", lambda: "is left out from now on" in driver.screen())
    screen = " ".join(driver.screen().split())              # unwrapped
    assert ("the certificate of 127.0.0.1:%d cannot be verified: nothing vouches for it" % second.port) in screen
    assert ("a certificate is only asked about on the login screen: give --tls-fingerprint, or log in to "
            "127.0.0.1:%d once by itself" % second.port) in screen
    with open(known_file(tmp_path)) as file:
        assert list(read_known_servers(file.read())) == ["127.0.0.1:%d" % first.port]


# --- in the terminal ------------------------------------------------------------------

def test_the_prompt_and_the_status_line_in_a_terminal(server, alice, certificates, fronts, tmp_path, monkeypatch):
    pyte_terminals = pytest.importorskip("test_client_pty")
    chain, print_ = certificates.self_signed()
    front = fronts(server.port, chain)
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "NO_COLOR": "1"}
    started = []

    def terminal(**kwargs):
        # Terminal knows --host, --port and --user; --tls goes after them.
        real_popen = subprocess.Popen
        with monkeypatch.context() as patch:
            patch.setattr(subprocess, "Popen", lambda cmd, **kw: real_popen(cmd + ["--tls"], **kw))
            started.append(pyte_terminals.Terminal(front.port, user=alice, env=env, **kwargs))
        return started[-1]

    try:
        term = terminal(cols=100)
        # The fingerprint and the question, before anything is sent.
        text = term.wait_for("Trust it and connect? y/n")
        assert "\n".join(" " + line for line in fingerprint_lines("", print_)) in text
        term.type("y")
        term.wait_for(pyte_terminals.shows("logged in as %s" % alice,
                                           " tls | 127.0.0.1:%d | %s | online |" % (front.port, alice)))
        assert stat.S_IMODE(os.stat(known_file(tmp_path)).st_mode) == 0o600
        term.type("/quit\r")
        assert term.wait_exit() == 0

        # A new certificate on the same server: the warning, whole, and no chat.
        other, other_print = certificates.self_signed()
        front.use_certificate(other)
        term = terminal(cols=100, rows=30)
        text = term.wait_for("Not connecting.")
        assert "WARNING: THE CERTIFICATE OF 127.0.0.1:%d HAS CHANGED" % front.port in text
        expected = fingerprint_lines("trusted:", print_) + fingerprint_lines("offered:", other_print)
        assert "\n".join(" " + line for line in expected) in text
        assert "logged in as" not in text
    finally:
        for each in started:
            each.close()
