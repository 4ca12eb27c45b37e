"""The server's own TLS (issue 15): protocol v1 over TLS end to end, the
handshake in the loop (slow, stalled, plain text on the TLS port, TLS on the
plain port), certificate reloads while clients chat, the certificate's
subject and expiry as the log gives them, the expiry warning, --require-tls,
running out of descriptors on the TLS listeners, and how a TLS session ends
(close_notify; the BYE of a client cut at its sendq).

Certificates are made at test time by trustme; the server is a real
sae-server process; clients are real TLS sockets that verify the server's
certificate as sae-client does (the test's CA, the host name).
"""

import datetime
import logging
import os
import re
import resource
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid

import pytest

trustme = pytest.importorskip("trustme")

from conftest import TIMEOUT, LineClient, ServerProcess, chat_until_cut  # noqa: E402
from sae_server import ACCEPT_PAUSE, TlsCertificate, TlsSocket, describe_certificate  # noqa: E402

PASSWORD = "password1"


class Certificates:
    """The test's CA, and server certificates it signs, written as the PEM
    files --tls-cert reads (key first, then the chain, as certbot's
    fullchain plus privkey would be if put in one file)."""

    def __init__(self, folder):
        self.folder = folder
        self.ca = trustme.CA()
        self.made = 0

    def server(self, **kwargs):
        leaf = self.ca.issue_cert("127.0.0.1", "localhost", **kwargs)
        self.made += 1
        chain = self.folder / ("server%d.pem" % self.made)
        leaf.private_key_and_cert_chain_pem.write_to_path(str(chain))
        return chain, ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())

    def client_context(self):
        """What sae-client --tls --tls-ca does: verify the chain and the name."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


class TlsLineClient(LineClient):
    """LineClient over TLS (LineClient.read_line knows TLS's pending bytes)."""

    def __init__(self, port, context, server_hostname="localhost"):
        raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock = context.wrap_socket(raw, server_hostname=server_hostname)
        self.buffer = b""
        self.seen = []


@pytest.fixture
def certificates(tmp_path):
    return Certificates(tmp_path)


def tls_port_of(server):
    for line in server.log:
        match = re.match(r".*listening for TLS v1 on 127\.0\.0\.1:(\d+)", line)
        if match:
            return int(match.group(1))
    raise AssertionError("no TLS listener in the log: %s" % "".join(server.log))


@pytest.fixture
def tls_server(make_server, certificates):
    """``start(*args)``: a server with a certificate of the test's CA on a
    free TLS port; its ``tls_port`` and ``chain`` (the --tls-cert file) set."""
    def start(*args, chain=None, **kwargs):
        chain = chain or certificates.server()[0]
        server = make_server("--tls-cert", str(chain), "--tls-port", "0", *args, **kwargs)
        server.tls_port = tls_port_of(server)
        server.chain = chain
        return server
    return start


def tls_client(server, certificates):
    client = TlsLineClient(server.tls_port, certificates.client_context())
    server.clients.append(client)
    return client


def peer_certificate(port, certificates):
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
        with certificates.client_context().wrap_socket(raw, server_hostname="localhost") as sock:
            return sock.getpeercert(binary_form=True)


def round_trip(alice, bob, text):
    """alice says ``text``; both see it: the time it took."""
    started = time.monotonic()
    alice.send("SAY " + text)
    alice.expect(r"MSG \S+ \S+ alice %s$" % re.escape(text))
    bob.expect(r"MSG \S+ \S+ alice %s$" % re.escape(text))
    return time.monotonic() - started


# --- protocol v1 over TLS -----------------------------------------------------

def test_v1_over_tls_end_to_end_beside_a_plain_client(tls_server, certificates):
    server = tls_server()
    alice = tls_client(server, certificates)
    alice.register("alice")
    alice.login("alice")
    bob = server.client()
    bob.register("bob")
    bob.login("bob")
    alice.expect(r"JOIN bob$")
    round_trip(alice, bob, "over TLS, verified against our CA")
    bob.send("SAY and back in plain text")
    alice.expect(r"MSG \S+ \S+ bob and back in plain text$")
    # A long answer (more than a TLS record, more than a socket buffer) arrives whole.
    for n in range(60):
        bob.send("SAY line %d %s" % (n, "x" * 3000))
    bob.expect(r"MSG \S+ \S+ bob line 59 ")
    alice.expect(r"MSG \S+ \S+ bob line 59 ")
    alice.send("HISTORY 1000")
    lines = alice.lines_until(r"OK HISTORY \d+")
    assert sum(1 for line in lines if " bob line " in line) == 60
    assert re.match(r".*connection from 127\.0\.0\.1:\d+ \(TLSv1\.[23]\)", "".join(server.log), re.S)


def test_the_server_says_its_certificate_and_listener_at_start(tls_server, certificates):
    server = tls_server()
    log = "".join(server.log)
    assert re.search(r"INFO TLS certificate .*server\d\.pem: .*expires \d{4}-\d\d-\d\d", log)
    assert "listening for TLS v1 on 127.0.0.1:%d" % server.tls_port in log


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_tls_1_1_is_refused_with_one_log_line(tls_server, certificates):
    server = tls_server()
    context = certificates.client_context()
    try:
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, AttributeError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with socket.create_connection(("127.0.0.1", server.tls_port), timeout=TIMEOUT) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            context.wrap_socket(raw, server_hostname="localhost")
    server.wait_log(r".*TLS handshake with 127\.0\.0\.1:\d+ failed: ")
    assert "Traceback" not in "".join(server.log)


# --- the handshake in the loop -----------------------------------------------

def test_plain_text_on_the_tls_port_is_closed_cleanly(tls_server):
    server = tls_server()
    plain = LineClient(server.tls_port)
    plain.send("REGISTER alice password1")
    assert plain.expect_closed() == []
    server.wait_log(r".*TLS handshake with 127\.0\.0\.1:\d+ failed: ")
    assert "Traceback" not in "".join(server.log)


def test_tls_on_the_plain_port_gets_a_hint_naming_the_tls_port(tls_server, certificates):
    server = tls_server()
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        certificates.client_context().wrap_socket(raw, server_hostname="localhost")
    # What a person sees with a raw client: the ClientHello's bytes, then the hint.
    hello = LineClient(server.port)
    hello.send_raw(b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03" + os.urandom(32))
    assert hello.expect_closed() == [
        "ERR 400 this port speaks plain text; use TLS on port %d" % server.tls_port]
    server.wait_log(r".*closing 127\.0\.0\.1:\d+ \(not logged in\): TLS sent to the plain port")


def test_tls_on_the_plain_port_of_a_server_without_tls(server):
    hello = server.client()
    hello.send_raw(b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03" + os.urandom(32))
    assert hello.expect_closed() == ["ERR 400 this port speaks plain text, and this server has no TLS"]


def test_a_hundred_stalled_handshakes_do_not_slow_chat_and_time_out(tls_server, certificates):
    server = tls_server("--tls-handshake-timeout", "3", "--max-per-address", "300")
    alice = tls_client(server, certificates)
    alice.register("alice")
    alice.login("alice")
    bob = server.client()
    bob.register("bob")
    bob.login("bob")
    quiet = round_trip(alice, bob, "before")
    # Fifty say nothing at all; fifty stop half-way through their ClientHello.
    stalled = [socket.create_connection(("127.0.0.1", server.tls_port), timeout=TIMEOUT) for _ in range(100)]
    for sock in stalled[50:]:
        sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(20))
    started = time.monotonic()
    slowest = max(round_trip(alice, bob, "while they stall %d" % n) for n in range(20))
    assert slowest < max(0.5, 20 * quiet), "a round trip took %.3fs beside 100 stalled handshakes" % slowest
    # The server is idle meanwhile: the stalled ones cost no CPU.
    with open("/proc/%d/stat" % server.proc.pid) as stat:
        cpu_before = sum(int(field) for field in stat.read().split(")")[1].split()[11:13])
    for sock in stalled:
        sock.settimeout(max(0.1, started + TIMEOUT - time.monotonic()))
        assert sock.recv(1024) == b"", "a stalled handshake was not closed at its timeout"
        sock.close()
    took = time.monotonic() - started
    assert 2.0 <= took < 8.0, "stalled handshakes closed after %.1fs, the timeout is 3s" % took
    with open("/proc/%d/stat" % server.proc.pid) as stat:
        cpu_after = sum(int(field) for field in stat.read().split(")")[1].split()[11:13])
    assert (cpu_after - cpu_before) / os.sysconf("SC_CLK_TCK") < 1.0
    # The log is read by a thread of its own: its last lines may still be on the way.
    with server._log_changed:
        logged = server._log_changed.wait_for(
            lambda: sum(1 for line in server.log if "timed out after 3s" in line) == 100, timeout=TIMEOUT)
    assert logged, "not every stalled handshake was logged as timed out"
    round_trip(alice, bob, "after")
    assert "Traceback" not in "".join(server.log)


def test_a_slow_handshake_that_finishes_in_time_is_served(tls_server, certificates):
    """A client that sends its ClientHello a few bytes at a time."""
    server = tls_server()
    context = certificates.client_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    sock = socket.create_connection(("127.0.0.1", server.tls_port), timeout=TIMEOUT)
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            pending = outgoing.read()
            for start in range(0, len(pending), 7):
                sock.sendall(pending[start:start + 7])
            if not pending:
                incoming.write(sock.recv(65536))
    sock.sendall(outgoing.read())
    tls.write(b"REGISTER slow password1\n")
    sock.sendall(outgoing.read())
    answer = b""
    while b"\n" not in answer:
        try:
            answer += tls.read(4096)
        except ssl.SSLWantReadError:
            incoming.write(sock.recv(65536))
            sock.sendall(outgoing.read())
    assert answer == b"OK REGISTER slow\n"
    sock.close()


# --- certificates: reload, expiry ------------------------------------------------

def test_sighup_reloads_the_certificate_for_new_connections_only(tls_server, certificates):
    server = tls_server()
    first = peer_certificate(server.tls_port, certificates)
    alice = tls_client(server, certificates)
    alice.register("alice")
    alice.login("alice")
    bob = tls_client(server, certificates)
    bob.register("bob")
    bob.login("bob")
    renewed, renewed_der = certificates.server()
    server.chain.write_bytes(renewed.read_bytes())  # certbot's deploy hook, then:
    server.proc.send_signal(signal.SIGHUP)
    server.wait_log(r".*INFO TLS certificate reloaded")
    assert peer_certificate(server.tls_port, certificates) == renewed_der != first
    # The open connections go on with theirs.
    assert alice.sock.getpeercert(binary_form=True) == first
    round_trip(alice, bob, "still here after the renewal")
    carol = tls_client(server, certificates)
    carol.register("carol")
    carol.login("carol")
    round_trip(alice, carol, "and the newcomer too")


def test_a_bad_file_keeps_the_certificate_in_use(tls_server, certificates):
    server = tls_server()
    first = peer_certificate(server.tls_port, certificates)
    server.chain.write_text("not a certificate\n")
    server.proc.send_signal(signal.SIGHUP)
    server.wait_log(r".*ERROR TLS reload failed, keeping the certificate in use: ")
    assert peer_certificate(server.tls_port, certificates) == first
    assert "Traceback" not in "".join(server.log)


def test_the_operator_reloads_with_reload_tls(tls_server, certificates, tmp_path):
    path = str(tmp_path / "admin.sock")
    server = tls_server("--admin-socket", path)
    renewed, renewed_der = certificates.server()
    server.chain.write_bytes(renewed.read_bytes())
    done = subprocess.run([sys.executable, "-m", "sae_server", "admin", "--admin-socket", path, "reload-tls"],
                          capture_output=True, text=True, timeout=TIMEOUT, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert re.match(r"reloaded: .*server\d\.pem: .*expires ", done.stdout)
    assert peer_certificate(server.tls_port, certificates) == renewed_der
    server.chain.write_text("broken\n")
    done = subprocess.run([sys.executable, "-m", "sae_server", "admin", "--admin-socket", path, "reload-tls"],
                          capture_output=True, text=True, timeout=TIMEOUT, cwd=str(tmp_path))
    assert done.stdout.startswith("reload failed, the certificate in use is kept: ")
    assert peer_certificate(server.tls_port, certificates) == renewed_der


def test_a_certificate_close_to_expiry_is_warned_about(tls_server, certificates):
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=3)
    chain, _ = certificates.server(not_after=soon)
    server = tls_server(chain=chain)
    assert any(re.match(r".* WARNING TLS certificate expires in 3\.0 days: ", line) for line in server.log), \
        "".join(server.log)


# The certificate as the log gives it: its subject and expiry, read from the
# file by sae-server itself (the ssl module has no public way to).

def self_signed_pem(name, not_after):
    """A self-signed certificate's PEM and its key's, made with cryptography
    (trustme's own library) for subjects trustme does not make."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc))
                   .not_valid_after(not_after).sign(key, hashes.SHA256()))
    return (certificate.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


@pytest.mark.parametrize("not_after", [
    datetime.datetime(2031, 5, 17, 12, 34, 56, tzinfo=datetime.timezone.utc),  # a UTCTime
    datetime.datetime(2050, 1, 1, 0, 0, 1, tzinfo=datetime.timezone.utc),  # a GeneralizedTime
], ids=["before 2050", "from 2050"])
def test_the_certificate_subject_and_expiry_are_read_from_the_file(tmp_path, not_after):
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    name = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "FI"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Kerho ry"),
        x509.NameAttribute(NameOID.COMMON_NAME, "chät.lan \u2615"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Kerhohuone"),
        x509.NameAttribute(NameOID.EMAIL_ADDRESS, "ops@chat.lan"),
        x509.NameAttribute(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), "oma"),
    ])
    certificate, key = self_signed_pem(name, not_after)
    _, other_key = self_signed_pem(name, not_after)
    other, _ = self_signed_pem(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "the CA")]), not_after)
    # The key first, then the chain (one file for both): the first certificate is the server's.
    together = tmp_path / "together.pem"
    together.write_bytes(key + certificate + other)
    subject = ("countryName=FI, organizationName=Kerho ry, commonName=chät.lan \u2615, "
               "organizationalUnitName=Kerhohuone, emailAddress=ops@chat.lan, 1.3.6.1.4.1.99999.1=oma")
    assert describe_certificate(str(together)) == (subject, not_after.timestamp())
    assert TlsCertificate(str(together), None).summary() == "%s: %s, expires %s UTC" % (
        together, subject, not_after.strftime("%Y-%m-%d %H:%M"))


def test_a_file_without_a_readable_certificate_is_described_as_unknown(tmp_path, certificates):
    chain, _ = certificates.server()
    pem = chain.read_text()
    begin = pem.index("-----BEGIN CERTIFICATE-----")
    body = pem[begin:pem.index("-----END CERTIFICATE-----", begin)]
    for name, text in [("key only", pem[:begin]),
                       ("cut short", body[:len(body) // 2] + "\n-----END CERTIFICATE-----\n"),
                       ("not base64", "-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n"),
                       ("empty", "")]:
        path = tmp_path / ("%s.pem" % name.replace(" ", "-"))
        path.write_text(text)
        assert describe_certificate(str(path)) is None, name
    assert describe_certificate(str(tmp_path / "missing.pem")) is None


def test_an_expired_certificate_is_warned_about_at_start(tls_server, certificates):
    now = datetime.datetime.now(datetime.timezone.utc)
    chain, _ = certificates.server(not_before=now - datetime.timedelta(days=90),
                                   not_after=now - datetime.timedelta(days=2))
    server = tls_server(chain=chain)
    assert any(re.match(r".* WARNING TLS certificate EXPIRED 2 days ago: .*server\d\.pem: ", line)
               for line in server.log), "".join(server.log)


# --- command line ---------------------------------------------------------------

def failed_start(tmp_path, *args):
    done = subprocess.run([sys.executable, "-m", "sae_server", "--port", "0", "--db",
                           "sqlite:///%s" % (tmp_path / "sae.db")] + list(args),
                          capture_output=True, text=True, timeout=TIMEOUT, cwd=str(tmp_path))
    return done.returncode, done.stderr


def test_options_that_cannot_work_stop_the_start_with_a_reason(tmp_path, certificates):
    chain, _ = certificates.server()
    status, log = failed_start(tmp_path, "--require-tls")
    assert status == 1 and "--require-tls needs --tls-cert" in log
    status, log = failed_start(tmp_path, "--tls-cert", str(tmp_path / "missing.pem"))
    assert status == 1 and "cannot use the TLS certificate" in log and "Traceback" not in log
    status, log = failed_start(tmp_path, "--tls-cert", str(chain), "--tls-port", "nope")
    assert status == 2 and "'nope' is not a port number (0 to 65535) or off" in log


def test_irc_over_tls(tls_server, certificates):
    """With a certificate, IRC clients have a TLS port of their own; the
    same registration as on the plain IRC port."""
    server = tls_server("--irc-port", "0", "--irc-tls-port", "0")
    port = int(next(re.match(r".*listening for TLS irc on 127\.0\.0\.1:(\d+)", line).group(1)
                    for line in server.log if "listening for TLS irc" in line))
    client = TlsLineClient(port, certificates.client_context())
    server.clients.append(client)
    client.sock.sendall(b"CAP LS 302\r\nNICK alice\r\nUSER alice 0 * :alice\r\n")
    assert re.match(r":\S+ CAP \* LS .*sasl", client.expect(r":\S+ CAP ").string)


def test_tls_port_off_leaves_only_the_plain_port(make_server, certificates):
    chain, _ = certificates.server()
    server = make_server("--tls-cert", str(chain), "--tls-port", "off")
    assert not any("listening for TLS" in line for line in server.log)


# --- --require-tls -----------------------------------------------------------------

def test_require_tls_lets_loopback_log_in_on_the_plain_port(tls_server, certificates):
    server = tls_server("--require-tls")
    alice = server.client()
    alice.register("alice")
    alice.login("alice")


@pytest.fixture
def network_namespace():
    """A network namespace linked to this one by a veth pair: (the address
    of this side, a command prefix that runs in the other side)."""
    name = "saetls%s" % uuid.uuid4().hex[:8]
    here, there = "vh%s" % name[-8:], "vt%s" % name[-8:]
    subnet = 10 + os.getpid() % 200
    steps = [["ip", "netns", "add", name],
             ["ip", "link", "add", here, "type", "veth", "peer", "name", there],
             ["ip", "link", "set", there, "netns", name],
             ["ip", "addr", "add", "10.%d.77.1/24" % subnet, "dev", here],
             ["ip", "link", "set", here, "up"],
             ["ip", "netns", "exec", name, "ip", "addr", "add", "10.%d.77.2/24" % subnet, "dev", there],
             ["ip", "netns", "exec", name, "ip", "link", "set", there, "up"]]
    try:
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, timeout=TIMEOUT)
            if done.returncode:
                pytest.skip("cannot make a network namespace here (%s: %s)" % (" ".join(step), done.stderr.strip()))
    except FileNotFoundError:
        pytest.skip("no `ip` command: cannot make a network namespace")
    try:
        yield "10.%d.77.1" % subnet, ["ip", "netns", "exec", name]
    finally:
        subprocess.run(["ip", "link", "del", here], capture_output=True, timeout=TIMEOUT)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=TIMEOUT)


class AnyAddressServer(ServerProcess):
    """A server on every address (--host 0.0.0.0), for clients from elsewhere."""

    def start(self, port=0):
        self.args += ["--host", "0.0.0.0"]
        original, self.wait_log = self.wait_log, lambda pattern: original(r".*listening on 0\.0\.0\.0:(\d+)")
        try:
            return super().start(port)
        finally:
            del self.wait_log


REMOTE_CLIENT = """
import socket, ssl, sys
host, port, tls_port, ca = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def ask(sock, line):
    sock.sendall(line.encode() + b"\\n")
    answer = b""
    while not answer.endswith(b"\\n"):
        answer += sock.recv(4096)
    print(answer.decode().strip())
plain = socket.create_connection((host, port), timeout=10)
ask(plain, "REGISTER remote password1")
ask(plain, "LOGIN remote password1")
context = ssl.create_default_context(cafile=ca)
context.check_hostname = False
secure = context.wrap_socket(socket.create_connection((host, tls_port), timeout=10))
ask(secure, "REGISTER remote password1")
"""


def test_require_tls_refuses_passwords_in_clear_from_another_machine(tmp_path, certificates, network_namespace):
    address, inside = network_namespace
    chain, _ = certificates.server()
    ca = tmp_path / "ca.pem"
    certificates.ca.cert_pem.write_to_path(str(ca))
    server = AnyAddressServer(tmp_path, "--tls-cert", str(chain), "--tls-port", "0", "--require-tls").start()
    try:
        tls_port = int(next(re.match(r".*listening for TLS v1 on 0\.0\.0\.0:(\d+)", line).group(1)
                            for line in server.log if "listening for TLS" in line))
        done = subprocess.run(inside + [sys.executable, "-c", REMOTE_CLIENT, address, str(server.port),
                                        str(tls_port), str(ca)],
                              capture_output=True, text=True, timeout=TIMEOUT)
        assert done.returncode == 0, done.stderr
        refusal = "ERR 400 passwords are only accepted over TLS here: reconnect with TLS to port %d" % tls_port
        assert done.stdout.splitlines() == [refusal, refusal, "OK REGISTER remote"]
    finally:
        server.stop()


def test_require_tls_lets_loopback_log_in_over_irc_on_the_plain_port(tls_server, certificates):
    from test_ircd import IrcClient
    server = tls_server("--require-tls", "--irc-port", "0", "--irc-tls-port", "0")
    irc_port = int(re.search(r"IRC port [^ ]*:(\d+)", "".join(server.log)).group(1))
    server.client().register("alice")
    server.client().register("bob")
    alice = IrcClient(irc_port)
    server.clients.append(alice)
    alice.register_connection("alice", sasl=("alice", PASSWORD))
    alice.expect(r"366 alice #general ")
    bob = IrcClient(irc_port)
    server.clients.append(bob)
    bob.register_connection("bob")
    bob.send("PRIVMSG NickServ :IDENTIFY " + PASSWORD)
    bob.expect(r"NOTICE bob :You are now identified as bob")


REMOTE_IRC_CLIENT = """
import re, socket, ssl, sys
host, port, tls_port, ca = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
class Irc:
    def __init__(self, sock):
        self.sock, self.buffer = sock, b""
    def send(self, line):
        self.sock.sendall(line.encode() + b"\\r\\n")
    def until(self, pattern):
        while True:
            while b"\\n" not in self.buffer:
                chunk = self.sock.recv(4096)
                if not chunk:
                    sys.exit("closed while waiting for %r" % pattern)
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\\n", 1)
            text = line.decode().rstrip("\\r")
            if re.search(pattern, text):
                print(text)
                return
plain = Irc(socket.create_connection((host, port), timeout=5))
plain.send("CAP LS 302")
plain.until(" CAP \\\\* LS ")
plain.send("CAP REQ :sasl")
plain.until(" CAP \\\\* ACK ")
plain.send("PASS remote:password1")
plain.until(" 464 ")
plain.send("NICK remote")
plain.send("USER remote 0 * :remote")
plain.send("AUTHENTICATE PLAIN")
plain.until(" 90[0-9] |AUTHENTICATE")
plain.send("REGISTER * * password1")
plain.until(" FAIL | REGISTER ")
plain.send("CAP END")
plain.until(" 001 ")
plain.send("PRIVMSG NickServ :IDENTIFY password1")
plain.until("^:NickServ")
plain.send("PRIVMSG NickServ :REGISTER password1")
plain.until("^:NickServ")
plain.send("PING still-here")
plain.until(" PONG ")
context = ssl.create_default_context(cafile=ca)
context.check_hostname = False
secure = Irc(context.wrap_socket(socket.create_connection((host, tls_port), timeout=5)))
secure.send("NICK remote")
secure.send("USER remote 0 * :remote")
secure.until(" 001 ")
secure.send("PRIVMSG NickServ :REGISTER password1")
secure.until("^:NickServ")
"""


def test_require_tls_refuses_irc_passwords_in_clear_from_another_machine(tmp_path, certificates,
                                                                         network_namespace):
    """From another machine on the plain IRC port, each way of sending a
    password is refused with the reply its client shows, naming the IRC TLS
    port; nothing is logged in and the connection stays. Over TLS the same
    client registers."""
    address, inside = network_namespace
    chain, _ = certificates.server()
    ca = tmp_path / "ca.pem"
    certificates.ca.cert_pem.write_to_path(str(ca))
    server = AnyAddressServer(tmp_path, "--tls-cert", str(chain), "--tls-port", "0", "--require-tls",
                              "--irc-port", "0", "--irc-tls-port", "0", "--server-name", "irc.test").start()
    try:
        log = "".join(server.log)
        irc_port = int(re.search(r"listening for irc on 0\.0\.0\.0:(\d+)", log).group(1))
        irc_tls_port = int(re.search(r"listening for TLS irc on 0\.0\.0\.0:(\d+)", log).group(1))
        done = subprocess.run(inside + [sys.executable, "-c", REMOTE_IRC_CLIENT, address, str(irc_port),
                                        str(irc_tls_port), str(ca)],
                              capture_output=True, text=True, timeout=TIMEOUT)
        assert done.returncode == 0, done.stderr + done.stdout
        refusal = "passwords are only accepted over TLS here: reconnect with TLS to port %d" % irc_tls_port
        lines = done.stdout.splitlines()
        assert lines[2:] == [
            ":irc.test 464 * :" + refusal,
            ":irc.test 904 remote :" + refusal,
            ":irc.test FAIL REGISTER UNACCEPTABLE_PASSWORD remote :" + refusal,
            ":irc.test 001 remote :Welcome to the sae-chat IRC network, remote",
            ":NickServ!NickServ@irc.test NOTICE remote :" + refusal,
            ":NickServ!NickServ@irc.test NOTICE remote :" + refusal,
            ":irc.test PONG irc.test still-here",
            ":irc.test 001 remote :Welcome to the sae-chat IRC network, remote",
            ":NickServ!NickServ@irc.test NOTICE remote :Account remote registered; you are logged in"]
    finally:
        server.stop()


REMOTE_TRANSCRIPT = """
import socket, sys
host, port, lines = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
sock = socket.create_connection((host, port), timeout=5)
sock.sendall("".join(line + "\\r\\n" for line in lines + ["PING end-of-transcript"]).encode())
received = b""
while b"end-of-transcript" not in received:
    chunk = sock.recv(65536)
    if not chunk:
        sys.exit("closed: %r" % received)
    received += chunk
sys.stdout.write(received.decode())
"""


def transcript_from(inside, address, port, *lines):
    """What a client on the other machine reads after sending ``lines``
    (and a PING whose PONG ends it), line by line."""
    done = subprocess.run(inside + [sys.executable, "-c", REMOTE_TRANSCRIPT, address, str(port)] + list(lines),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr + done.stdout
    return [line.rstrip("\r") for line in done.stdout.splitlines()]


def test_require_tls_says_where_to_log_in_before_any_password_is_sent(tmp_path, certificates, network_namespace):
    """From another machine on the plain ports, what a client reads before
    it sends a password already names the TLS port: IRC's NOTICE on how to
    log in (at registration and on each refused command), v1's HELP and
    ERR 401. From loopback, where passwords are accepted, nothing of it."""
    from test_ircd import IrcClient
    address, inside = network_namespace
    chain, _ = certificates.server()
    server = AnyAddressServer(tmp_path, "--tls-cert", str(chain), "--tls-port", "0", "--require-tls",
                              "--irc-port", "0", "--irc-tls-port", "0", "--server-name", "irc.test").start()
    try:
        log = "".join(server.log)
        tls_port = int(re.search(r"listening for TLS v1 on 0\.0\.0\.0:(\d+)", log).group(1))
        irc_port = int(re.search(r"listening for irc on 0\.0\.0\.0:(\d+)", log).group(1))
        irc_tls_port = int(re.search(r"listening for TLS irc on 0\.0\.0\.0:(\d+)", log).group(1))
        irc_lines = transcript_from(inside, address, irc_port, "NICK remote", "USER remote 0 * :remote",
                                    "JOIN #general", "PRIVMSG #general :hello?")
        how = "This server needs an account. Log in with SASL: irssi: "
        tls = ":irc.test NOTICE remote :Passwords are only accepted over TLS here: reconnect with TLS to port %d." \
            % irc_tls_port
        notices = [line for line in irc_lines if " NOTICE " in line or " 451 " in line]
        # (The how-to's irssi and WeeChat recipes, which test_ircd reads, cut short.)
        assert [line.split(how)[0] + how if how in line else line for line in notices] == [
            ":irc.test NOTICE remote :" + how, tls,
            ":irc.test NOTICE remote :Log in first. " + how, tls, ":irc.test 451 remote :You must log in first",
            ":irc.test NOTICE remote :Log in first. " + how, tls]
        v1_lines = transcript_from(inside, address, server.port, "HELP", "SAY hi")
        refusal = "passwords are only accepted over TLS here: reconnect with TLS to port %d" % tls_port
        assert v1_lines[-4:] == ["INFO LOGIN, REGISTER: " + refusal, "OK HELP",
                                 "ERR 401 log in first, over TLS here: reconnect with TLS to port %d" % tls_port,
                                 "PONG end-of-transcript"]
        # On the server's own machine the same ports take passwords: not a word of TLS.
        local = IrcClient(irc_port)
        server.clients.append(local)
        local.send("NICK local")
        local.send("USER local 0 * :local")
        local.expect(r"NOTICE local :" + how)
        local.send("PING here")
        assert local.next().endswith(" PONG irc.test here")
        v1 = server.client()
        v1.send("HELP")
        v1.expect("OK HELP")
        v1.send("SAY hi")
        assert v1.next() == "ERR 401 log in first"
        assert not any("TLS" in line for line in local.seen + v1.seen)
    finally:
        server.stop()


def test_require_tls_tells_a_remote_guest_that_irc_has_no_tls_port(tmp_path, certificates, network_namespace):
    """A guest from another machine chats without a password, but keeping
    its nick needs one: with IRC's TLS port off, it is told that no port of
    this server takes one from it, rather than sent to a port that is not."""
    address, inside = network_namespace
    chain, _ = certificates.server()
    server = AnyAddressServer(tmp_path, "--tls-cert", str(chain), "--tls-port", "0", "--require-tls",
                              "--irc-port", "0", "--irc-tls-port", "off", "--irc-guests",
                              "--server-name", "irc.test").start()
    try:
        irc_port = int(re.search(r"listening for irc on 0\.0\.0\.0:(\d+)", "".join(server.log)).group(1))
        lines = transcript_from(inside, address, irc_port, "NICK roamer", "USER roamer 0 * :roamer",
                                "PRIVMSG NickServ :REGISTER password1")
        no_port = "passwords are only accepted over TLS here, and this server has no TLS port for IRC"
        assert [line for line in lines if " NOTICE " in line] == [
            ":irc.test NOTICE roamer :You are a guest here. To keep your nick: /msg NickServ REGISTER <password>; "
            "to log in to your account: /msg NickServ IDENTIFY <name> <password>",
            ":irc.test NOTICE roamer :P" + no_port[1:] + ".",
            ":NickServ!NickServ@irc.test NOTICE roamer :" + no_port]
    finally:
        server.stop()


# --- out of file descriptors -----------------------------------------------------

def listeners_watched(server):
    """The listeners the loop watches for connections, as (protocol, TLS or not)."""
    watched = []
    for listener in server.listeners:
        try:
            server.selector.get_key(listener.sock)
        except KeyError:
            continue
        watched.append((listener.kind, listener.tls is not None))
    return watched


@pytest.fixture
def chain(certificates):
    """A server certificate's --tls-cert file, made before a test's
    ``harness`` freezes the clock (cryptography wants real datetimes)."""
    return certificates.server()[0]


def test_out_of_descriptors_on_the_tls_listeners_every_listener_pauses_and_recovers(
        chain, certificates, harness, caplog):
    """As on the plain port (test_limits): a connection that cannot be
    accepted waits in the backlog, those connected are served, accepting
    resumes when descriptors do; here on the v1 and IRC TLS listeners at
    once, their newcomers' handshakes done once they are accepted."""
    caplog.set_level(logging.INFO, logger="sae-server")
    make, clock = harness
    h = make(tls=TlsCertificate(str(chain), None), irc=True)
    context = certificates.client_context()
    alice = h.logged_in("alice")
    bob = h.connect_tls(h.tls_port, context)
    bob.sendall(b"REGISTER bob password1\nLOGIN bob password1\n")
    h.expect(bob, r"USERS ")
    h.expect(alice, r"JOIN bob")
    # One newcomer per TLS listener; its descriptor is made before the limit.
    v1_newcomer, irc_newcomer = (context.wrap_socket(socket.socket(), server_hostname="localhost",
                                                     do_handshake_on_connect=False) for _ in range(2))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    probe = os.open(os.devnull, os.O_RDONLY)
    os.close(probe)
    try:
        # Every descriptor below the lowest free one is taken: nothing more opens.
        resource.setrlimit(resource.RLIMIT_NOFILE, (probe, hard))
        for newcomer, port in ((v1_newcomer, h.tls_port), (irc_newcomer, h.irc_tls_port)):
            newcomer.settimeout(TIMEOUT)
            newcomer.connect(("127.0.0.1", port))  # into the backlog
            newcomer.setblocking(False)
            h.buffers[newcomer] = b""
            with pytest.raises(ssl.SSLWantReadError):
                newcomer.do_handshake()  # its ClientHello waits with it
        for _ in range(50):
            h.turn()
            if not listeners_watched(h.server):
                break
        assert listeners_watched(h.server) == [], "a listener is still watched after EMFILE"
        # Those connected are served meanwhile, over TLS as in clear.
        alice.sendall(b"SAY still chatting\n")
        h.expect(bob, r"MSG \S+ \S+ alice still chatting$")
        bob.sendall(b"PING bob over TLS\n")
        h.expect(bob, r"PONG bob over TLS")
        # The pause ends while descriptors are still short: paused again.
        clock.tick(ACCEPT_PAUSE)
        for _ in range(3):
            h.turn()
        assert listeners_watched(h.server) == []
        for newcomer in (v1_newcomer, irc_newcomer):
            with pytest.raises(ssl.SSLWantReadError):
                newcomer.do_handshake()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    clock.tick(ACCEPT_PAUSE)
    h.finish_handshake(v1_newcomer)
    v1_newcomer.sendall(b"PING let me in\n")
    assert h.expect(v1_newcomer, r"PONG ") == "PONG let me in"
    h.finish_handshake(irc_newcomer)
    irc_newcomer.sendall(b"CAP LS 302\r\n")
    h.expect(irc_newcomer, r":\S+ CAP \* LS ")
    assert sorted(listeners_watched(h.server)) == [("irc", False), ("irc", True), ("v1", False), ("v1", True)]
    bob.sendall(b"SAY all well\n")
    h.expect(alice, r"MSG \S+ \S+ bob all well$")
    said = [record.getMessage() for record in caplog.records]
    assert len([line for line in said if line.startswith("cannot accept")]) == 1, said
    assert not [record for record in caplog.records if record.exc_info], said


# --- the end of a TLS session --------------------------------------------------------

def strict_tls_client(port, certificates):
    """A TLS client whose end of stream is an empty read only after the
    server's close_notify: a bare TCP close raises SSLEOFError."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    client = LineClient.__new__(LineClient)
    client.sock = certificates.client_context().wrap_socket(raw, server_hostname="localhost",
                                                            suppress_ragged_eofs=False)
    client.buffer, client.seen = b"", []
    return client


def read_to_the_end(client):
    """Every line until the end of the TLS stream, which must be a clean one."""
    data = client.buffer
    while True:
        chunk = client.sock.recv(65536)  # SSLEOFError here: no close_notify came
        if not chunk:
            client.sock.close()
            return data.decode().splitlines()
        data += chunk


@pytest.mark.parametrize("how", ["QUIT", "kick", "login timeout", "shutdown"])
def test_the_server_ends_a_tls_session_with_close_notify(tls_server, certificates, tmp_path, how):
    path = str(tmp_path / "admin.sock")
    server = tls_server("--login-timeout", "1" if how == "login timeout" else "60", "--admin-socket", path)
    alice = strict_tls_client(server.tls_port, certificates)
    server.clients.append(alice)
    alice.register("alice")
    if how == "QUIT":
        alice.send("QUIT")
    elif how == "kick":
        alice.login("alice")
        done = subprocess.run([sys.executable, "-m", "sae_server", "admin", "--admin-socket", path, "kick", "alice",
                               "300", "a break"], capture_output=True, text=True, timeout=TIMEOUT, cwd=str(tmp_path))
        assert done.returncode == 0, done.stderr
    elif how == "shutdown":
        alice.send("PING are you there")
        alice.expect(r"PONG are you there")
        server.proc.terminate()
    lines = read_to_the_end(alice)
    assert lines[-1] == {"QUIT": "BYE goodbye", "kick": "KICKED 300 a break", "login timeout": "BYE login timeout",
                         "shutdown": "BYE server shutting down (SIGTERM)"}[how]


def test_an_irc_session_over_tls_ends_with_close_notify(tls_server, certificates):
    server = tls_server("--irc-port", "0", "--irc-tls-port", "0")
    port = int(re.search(r"listening for TLS irc on 127\.0\.0\.1:(\d+)", "".join(server.log)).group(1))
    client = strict_tls_client(port, certificates)
    server.clients.append(client)
    client.send("NICK alice\r\nUSER alice 0 * :alice\r\nQUIT :gone\r\n")
    assert read_to_the_end(client)[-1].startswith("ERROR :Closing Link: ")


def test_close_notify_is_not_waited_for_when_the_socket_is_full(chain, certificates):
    """The loop's close_notify is an attempt that never waits: to a client
    that reads nothing, with the kernel's buffers full, it gives up at once
    and the connection is closed without it."""
    listener = socket.create_server(("127.0.0.1", 0))
    client_end = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
    server_end, _ = listener.accept()
    listener.close()
    for end in (server_end, client_end):
        end.setblocking(False)
    server_tls = TlsCertificate(str(chain), None).context.wrap_socket(
        server_end, server_side=True, do_handshake_on_connect=False)
    client_tls = certificates.client_context().wrap_socket(client_end, server_hostname="localhost",
                                                           do_handshake_on_connect=False)
    assert server_tls.__class__ is TlsSocket
    shaking = [server_tls, client_tls]
    deadline = time.monotonic() + TIMEOUT
    while shaking and time.monotonic() < deadline:
        for end in list(shaking):
            try:
                end.do_handshake()
                shaking.remove(end)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
    assert not shaking, "the handshake did not end"
    with pytest.raises(BlockingIOError):
        for _ in range(10000):
            server_tls.send(b"x" * 65536)
    started = time.monotonic()
    assert server_tls.close_notify() is False
    assert time.monotonic() - started < 0.5
    server_tls.close()
    client_tls.close()


def test_a_tls_client_that_stops_reading_gets_bye_sendq_exceeded_after_whole_lines(tls_server, certificates):
    """As in clear (test_limits): a client that stops reading is cut at its
    sendq, and when it reads again it finds whole lines, then the BYE saying
    why; the others chat on."""
    server = tls_server("--sendq-max", "65536")
    for name in ("alice", "bob", "carol"):
        server.client().register(name)
    alice, bob = server.client(), server.client()
    alice.login("alice")
    bob.login("bob")
    # carol's window is small, so the server's own queue for her grows soon.
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(TIMEOUT)
    raw.connect(("127.0.0.1", server.tls_port))
    carol = LineClient.__new__(LineClient)
    carol.sock = certificates.client_context().wrap_socket(raw, server_hostname="localhost",
                                                           suppress_ragged_eofs=False)
    carol.buffer, carol.seen = b"", []
    server.clients.append(carol)
    carol.login("carol")
    bob.expect(r"JOIN carol")
    # carol reads no more from here on.
    padding = "x" * 3000
    chat_until_cut(server, alice, bob, "carol", most=4000, padding=padding)
    server.wait_log(r".*carol.*sendq exceeded")
    rest = read_to_the_end(carol)
    assert rest and rest[-1] == "BYE sendq exceeded", [line[:40] for line in rest[-3:]]
    assert all(re.match(r"MSG \d+ \S+ alice \d+ x+$", line) for line in rest[:-1]), \
        [line[:40] + "..." + line[-10:] for line in rest if not line.endswith(padding)]
    bob.send("SAY still here")
    alice.expect(r"MSG \S+ \S+ bob still here$")


def test_a_tls_connection_over_the_cap_is_closed_without_plain_text(tls_server, certificates):
    # A client that expects a handshake and reads "ERR 503" reports a TLS
    # error; one that gets a clean close reports the connection closed.
    server = tls_server("--max-connections", "1")
    first = tls_client(server, certificates)
    first.send("PING first")
    assert first.next() == "PONG first"
    raw = socket.create_connection(("127.0.0.1", server.tls_port), timeout=TIMEOUT)
    try:
        assert raw.recv(4096) == b""  # nothing, then the end
    finally:
        raw.close()
    server.wait_log(r".*refused connection from 127\.0\.0\.1: too many connections")
    first.send("PING still here")
    assert first.next() == "PONG still here"
