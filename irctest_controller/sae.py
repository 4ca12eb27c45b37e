"""An irctest controller for sae-server (progval/irctest, the IRC
conformance suite). It cannot run in CI, which has no copy of irctest; see
irctest_controller/README.md for how to run it by hand.

The server runs from this checkout with a database of its own in irctest's
temporary directory, its v1 port on a free port and its IRC listener on the
port irctest picks, with --irc-guests: most tests connect without logging
in (chathistory's too). Accounts that tests ask for are made with protocol
v1's REGISTER, whose lines may be long enough for any password (an IRC
line is not: sasl's 800-byte payload holds a 592-byte one).
"""

import os
import socket
import sys
from pathlib import Path
from typing import Optional, Set, Type

from irctest.basecontrollers import BaseServerController, DirectoryBasedController
from irctest.cases import BaseServerTestCase
from irctest.runner import NotImplementedByController

CHECKOUT = Path(__file__).resolve().parent.parent
PYTHON = os.environ.get("SAE_PYTHON", sys.executable)


class SaeController(BaseServerController, DirectoryBasedController):
    software_name = "sae-chat"
    supported_sasl_mechanisms: Set[str] = {"PLAIN"}
    supports_sts = False
    nickserv = "NickServ"

    def run(self, hostname: str, port: int, *, password: Optional[str], ssl: bool, run_services: bool,
            faketime: Optional[str], websocket_hostname: Optional[str], websocket_port: Optional[int]) -> None:
        if ssl:
            raise NotImplementedByController("TLS")
        if password is not None:
            # PASS logs in to an account here; there is no server password.
            raise NotImplementedByController("PASS")
        if websocket_hostname is not None or websocket_port is not None:
            raise NotImplementedByController("Websocket")
        assert self.proc is None
        self.port = port
        self.hostname = hostname
        self.create_config()
        assert self.directory
        (_, v1_port) = self.get_hostname_and_port()
        self.v1_port = v1_port
        arguments = [
            PYTHON, "-m", "sae_server", "--host", hostname, "--port", str(v1_port), "--irc-port", str(port),
            "--db", "sqlite:///%s" % (self.directory / "sae.db"), "--server-name", "My.Little.Server",
            "--password-min-bytes", "1",
        ]
        # Most tests, services ones included (chathistory), connect without
        # logging in: they chat as guests.
        arguments.append("--irc-guests")
        # The storage code is db/ in a checkout and sae_db once installed:
        # a link in the test's directory makes this checkout's the one
        # imported, whatever else is installed in SAE_PYTHON's environment.
        (self.directory / "sae_db").symlink_to(CHECKOUT / "db")
        environment = dict(os.environ, SAE_SCRYPT_N="1024", SAE_LOGIN_FAILURE_DELAY="0",
                           PYTHONPATH=os.pathsep.join((str(CHECKOUT), str(self.directory))))
        self.proc = self.execute(arguments, cwd=CHECKOUT, env=environment)

    def wait_for_services(self) -> None:
        # NickServ and SASL are the server's own: up when the port is.
        self.wait_for_port()

    def registerUser(self, case: BaseServerTestCase, username: str, password: Optional[str] = None) -> None:
        assert password
        # Both listeners are bound before the loop starts: once the IRC
        # port answers, so does the v1 port.
        self.wait_for_port()
        with socket.create_connection((self.hostname, self.v1_port), timeout=10) as v1:
            v1.sendall(("REGISTER %s %s\r\n" % (username, password)).encode("utf-8"))
            answer = b""
            while b"\n" not in answer:
                data = v1.recv(4096)
                assert data, "the server closed the connection: %r" % answer
                answer += data
        line = answer.split(b"\n", 1)[0].decode("utf-8").rstrip("\r")
        assert line == "OK REGISTER " + username, line


def get_irctest_controller_class() -> Type[SaeController]:
    return SaeController
