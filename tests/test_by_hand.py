"""The protocol typed by hand (nc, bash's /dev/tcp): HELP says what to
type, before LOGIN too; a trailing space is not part of a password; a failed
LOGIN tells nothing about which names exist.
"""

import sae_protocol as proto


def test_help_lists_every_verb_before_and_after_login(server):
    client = server.client()
    client.send("help")
    lines = client.lines_until(r"OK HELP$")
    assert lines[-1] == "OK HELP" and all(line.startswith("INFO ") for line in lines[:-1])
    assert [line.split()[1].rstrip(":") for line in lines[:-1]] == list(proto.VERBS)
    assert "INFO REGISTER <name> <password>: create an account (it does not log in)" in lines
    assert "INFO HISTORY <count> [before=<id>|after=<id>]: older or newer room messages" in lines
    client.register("alice")
    client.login("alice")
    client.send("HELP me please")  # extra words are ignored, as for WHO
    assert client.lines_until(r"OK HELP$") == lines
    client.send("PING after help")
    assert client.next() == "PONG after help"


def test_trailing_spaces_are_not_part_of_a_password(server):
    client = server.client()
    client.send("REGISTER alice correct-horse  \t")
    assert client.next() == "OK REGISTER alice"
    client.login("alice", "correct-horse")
    other = server.client()
    other.send("REGISTER bob battery-staple")
    assert other.next() == "OK REGISTER bob"
    other.login("bob", "battery-staple ")
    # Spaces inside the password still count.
    third = server.client()
    third.send("LOGIN bob battery -staple")
    assert third.next() == "ERR 401 wrong name or password"


def test_a_failed_login_reads_the_same_whether_or_not_the_name_exists(server):
    client = server.client()
    client.register("alice")
    client.send("LOGIN alice wrong-password")
    wrong_password = client.next()
    client.send("LOGIN nobody-here wrong-password")
    assert client.next() == wrong_password == "ERR 401 wrong name or password"
