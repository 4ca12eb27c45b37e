"""Unit tests of sae_irc: IRC lines in, IRC lines out, no sockets.

Each part is tested the way an IRC client or the server will meet it: lines
as irssi, WeeChat or irctest send them (the examples of the IRCv3 specs
among them), events as the server renders them for a room, and properties
(hypothesis) for what must hold of every input: a parsed line formats back
to itself, a long message is split without losing a byte, the text a v1
client gets never holds a control character.
"""

import base64
import inspect
from typing import NamedTuple, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sae_irc as irc
import sae_protocol as proto
from sae_db import LiveMessage, Message, name_key
from sae_irc import BadLine, InputTooLong, IrcFormatter, IrcMessage, parse_line

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SERVER = "irc.example.org"


def lines_of(data: bytes):
    """Rendered bytes as the lines a client reads, each parsed."""
    assert data.endswith(b"\r\n") or data == b""
    return [parse_line(line) for line in data.split(b"\r\n")[:-1]]


def feed_all(framer, chunks):
    frames = []
    for chunk in chunks:
        frames.extend(framer.feed(chunk))
    return frames


class Stored(NamedTuple):
    """A message as sae_db stores it."""
    id: int
    created_at: str
    sender: str
    recipient: Optional[str]
    body: str
    room: Optional[str] = None


# --- framing and parsing -----------------------------------------------------

def test_the_framer_passes_a_line_with_full_tags_and_a_full_body():
    tags = b"@" + b"a" * (irc.MAX_CLIENT_TAGS_BYTES - 2) + b" "
    body = b"PRIVMSG #general :" + b"x" * (irc.MAX_LINE_BYTES - 18)
    line = tags + body
    frames = feed_all(irc.new_framer(), [line[i:i + 1000] for i in range(0, len(line), 1000)] + [b"\r\n"])
    assert frames == [line]
    message = parse_line(frames[0])
    assert message.command == "PRIVMSG" and message.params == ["#general", "x" * (irc.MAX_LINE_BYTES - 18)]


def test_a_body_over_510_bytes_is_input_too_long_with_or_without_tags():
    body = b"PRIVMSG #general :" + b"x" * (irc.MAX_LINE_BYTES - 17)
    assert parse_line(body) == InputTooLong()
    assert parse_line(b"@time=x " + body) == InputTooLong()
    assert isinstance(parse_line(body[:-1]), IrcMessage)


def test_a_client_sending_over_4096_bytes_of_tags_is_input_too_long():
    # As irctest's message-tags length test: "@" and the space count.
    assert parse_line(b"@foo=bar;+baz=" + b"a" * 4082 + b" TAGMSG #test") == InputTooLong()
    at_the_limit = parse_line(b"@foo=bar;+baz=" + b"a" * 4081 + b" TAGMSG #test")
    assert at_the_limit.tags == {"foo": "bar", "+baz": "a" * 4081}
    assert parse_line(b"@" + b"a" * 5000) == InputTooLong()


def test_only_client_only_tags_are_relayed():
    assert irc.client_only_tags({"+typing": "active", "time": "x", "+draft/react": "\U0001f44d", "label": "1"}) \
        == {"+typing": "active", "+draft/react": "\U0001f44d"}


def test_a_tagmsg_carries_the_client_tags_and_the_server_s_and_only_to_message_tags():
    rich = IrcFormatter("irc.test", ("message-tags", "server-time", "account-tag"))
    line = rich.format_tagmsg("t1-5", "2026-11-24T13:05:01.123Z", "alice", "#general", {"+typing": "active;x"})
    assert line == (b"@+typing=active\\:x;time=2026-11-24T13:05:01.123Z;account=alice;msgid=t1-5 "
                    b":alice!alice@irc.test TAGMSG #general\r\n")
    assert IrcFormatter("irc.test", ("server-time", "account-tag")).format_tagmsg(
        "t1-5", "2026-11-24T13:05:01.123Z", "alice", "#general", {"+typing": "active"}) == b""


def test_a_line_longer_than_tags_and_body_together_is_cut_off_by_the_framer():
    framer = irc.new_framer()
    frames = feed_all(framer, [b"PRIVMSG #general :" + b"x" * irc.MAX_FRAME_BYTES, b"\r\nPING a\r\n"])
    assert frames == [proto.LineTooLong(), b"PING a"]


def test_parse_a_plain_line_as_irssi_sends_it():
    assert parse_line(b"PRIVMSG #general :hello there") == IrcMessage({}, None, "PRIVMSG", ["#general", "hello there"])
    assert parse_line(b"privmsg bob hi") == IrcMessage({}, None, "PRIVMSG", ["bob", "hi"])
    assert parse_line(b"USER alice 0 * :Alice Liddell").params == ["alice", "0", "*", "Alice Liddell"]
    assert parse_line(b"CAP LS 302") == IrcMessage({}, None, "CAP", ["LS", "302"])


def test_parse_spaces_trailing_and_source():
    assert parse_line(b":alice!a@h  PRIVMSG   #general   :  two  spaces ") == IrcMessage(
        {}, "alice!a@h", "PRIVMSG", ["#general", "  two  spaces "])
    assert parse_line(b"TOPIC #general :").params == ["#general", ""]
    assert parse_line(b"JOIN #a,#b ").params == ["#a,#b"]
    assert parse_line(b"QUIT").params == []


def test_parse_tags_with_escapes_as_the_message_tags_spec_shows_them():
    message = parse_line(b"@aaa=bbb;ccc;example.com/ddd=eee :nick!ident@host.com PRIVMSG me :Hello")
    assert message.tags == {"aaa": "bbb", "ccc": "", "example.com/ddd": "eee"}
    assert message.source == "nick!ident@host.com"
    message = parse_line(rb"@k=a\:b\sc\\d\re\nf\xg\ :s CMD")
    assert message.tags == {"k": "a;b c\\d\re\nfxg"}


def test_client_only_tags_keep_their_plus_and_the_last_duplicate_wins():
    message = parse_line(b"@+draft/reply=42;+example.com/x=1;+example.com/x=2;label=L TAGMSG #general")
    assert message.tags == {"+draft/reply": "42", "+example.com/x": "2", "label": "L"}
    assert message.command == "TAGMSG"


def test_a_command_is_upper_cased_in_ascii_only():
    # A dotless i is not an i: "prıvmsg" is no PRIVMSG.
    assert parse_line("prıvmsg bob hi".encode()).command == "PRıVMSG"


def test_empty_lines_and_lines_without_a_command_are_ignored():
    assert parse_line(b"") is None
    assert parse_line(b"   ") is None
    assert parse_line(b"@a=b") is None
    assert parse_line(b":source") is None


def test_invalid_utf8_is_refused_with_the_command_it_came_with():
    assert parse_line(b"PRIVMSG #general :caf\xe9") == BadLine(
        "PRIVMSG", "INVALID_UTF8", "Line is not valid UTF-8; set your client's encoding to UTF-8")
    assert parse_line(b":me privmsg #general :caf\xe9").command == "PRIVMSG"
    assert parse_line(b"@k=\xff PING x").code == "INVALID_UTF8"


def test_nul_and_a_lone_cr_inside_a_line_are_refused():
    assert parse_line(b"PRIVMSG #general :a\0b").code == "INVALID_CHARACTERS"
    assert parse_line(b"PRIVMSG #general :a\rQUIT").code == "INVALID_CHARACTERS"


def test_the_framer_ends_lines_at_lf_and_drops_one_cr_whatever_the_chunks():
    data = b"NICK alice\r\nUSER alice 0 * :A\nPING :x y\r\n"
    whole = irc.new_framer().feed(data)
    assert whole == [b"NICK alice", b"USER alice 0 * :A", b"PING :x y"]
    assert feed_all(irc.new_framer(), [data[i:i + 1] for i in range(len(data))]) == whole


# --- formatting --------------------------------------------------------------

def test_format_line_puts_a_colon_on_the_last_param_only_when_needed():
    assert irc.format_line("PRIVMSG", "#general", "hi") == b"PRIVMSG #general hi\r\n"
    assert irc.format_line("PRIVMSG", "#general", "hi there") == b"PRIVMSG #general :hi there\r\n"
    assert irc.format_line("PRIVMSG", "#general", ":)") == b"PRIVMSG #general ::)\r\n"
    assert irc.format_line("TOPIC", "#general", "") == b"TOPIC #general :\r\n"
    assert irc.format_line("PING", source="srv") == b":srv PING\r\n"


def test_format_line_refuses_what_would_break_the_line():
    with pytest.raises(ValueError):
        irc.format_line("PRIVMSG", "#general", "hi\r\nQUIT")
    with pytest.raises(ValueError):
        irc.format_line("PRIVMSG", "#gen eral", "hi")
    with pytest.raises(ValueError):
        irc.format_line("PRIVMSG", "", "hi")
    with pytest.raises(ValueError):
        irc.format_line("PRIVMSG", "x", tags={"bad key": "v"})


def test_format_line_escapes_tag_values():
    line = irc.format_line("TAGMSG", "#general", tags={"+x": "a;b c\\d\r\n", "flag": None})
    assert line == b"@+x=a\\:b\\sc\\\\d\\r\\n;flag TAGMSG #general\r\n"
    assert parse_line(line.rstrip(b"\r\n")).tags == {"+x": "a;b c\\d\r\n", "flag": ""}


def test_numerics_name_the_client_or_star_before_registration():
    assert irc.numeric(SERVER, "alice", irc.RPL_WELCOME, "Welcome") == b":irc.example.org 001 alice Welcome\r\n"
    assert irc.numeric(SERVER, "", irc.ERR_NOTREGISTERED, "You have not registered") == \
        b":irc.example.org 451 * :You have not registered\r\n"
    assert irc.numeric(SERVER, "alice", 5, "A=1", "are supported") == \
        b":irc.example.org 005 alice A=1 :are supported\r\n"


def test_standard_replies():
    assert irc.fail(SERVER, "PRIVMSG", "INVALID_UTF8", description="not UTF-8") == \
        b":irc.example.org FAIL PRIVMSG INVALID_UTF8 :not UTF-8\r\n"
    assert irc.warn(SERVER, "REHASH", "CONFIG_BAD", "x", description="careful") == \
        b":irc.example.org WARN REHASH CONFIG_BAD x :careful\r\n"
    assert irc.note(SERVER, "", "OK", description="fine") == b":irc.example.org NOTE * OK :fine\r\n"


def test_every_numeric_the_brief_names_is_a_three_digit_constant():
    wanted = ("001 002 003 004 005 221 251 252 253 254 255 265 266 301 305 306 311 312 317 318 319 330 315 "
              "352 354 321 322 323 324 329 331 332 333 353 366 372 375 376 422 401 403 404 405 409 411 412 "
              "417 421 431 432 433 436 442 451 461 462 464 465 471 472 473 474 475 476 477 482 900 901 902 "
              "903 904 905 906 907 908").split()
    constants = {value for name, value in vars(irc).items() if name[:4] in ("RPL_", "ERR_")}
    assert set(wanted) <= constants


params_text = st.text(st.characters(blacklist_characters="\r\n\0", blacklist_categories=("Cs",)), max_size=40)
middle = st.text(st.characters(blacklist_characters="\r\n\0 ", blacklist_categories=("Cs",)),
                 min_size=1, max_size=20).filter(lambda p: not p.startswith(":"))
tag_keys = st.from_regex(r"\A\+?([a-z0-9.-]{1,8}/)?[a-zA-Z0-9-]{1,10}\Z")


@PROPERTY
@given(st.lists(middle, max_size=5), params_text, st.dictionaries(tag_keys, params_text, max_size=4),
       st.sampled_from(["PRIVMSG", "NOTICE", "001", "TAGMSG"]))
def test_a_formatted_line_parses_back_to_what_was_formatted(middles, last, tags, command):
    line = irc.format_line(command, *middles, last, tags=tags, source="srv")
    message = parse_line(line[:-2])
    assert message == IrcMessage(tags, "srv", command, middles + [last])


# --- capabilities -------------------------------------------------------------

def test_cap_ls_302_lists_values_on_one_line_when_they_fit():
    values = irc.cap_values()
    [line] = irc.cap_list_lines(SERVER, "", "LS", irc.CAPABILITIES, values, version=302)
    message = parse_line(line[:-2])
    assert message.params[:2] == ["*", "LS"]
    caps = dict(word.partition("=")[::2] for word in message.params[2].split())
    assert caps["sasl"] == "PLAIN"
    assert caps["draft/account-registration"] == "before-connect"
    for name in ("cap-notify", "server-time", "message-tags", "echo-message", "batch", "labeled-response",
                 "account-notify", "account-tag", "extended-join", "away-notify", "draft/chathistory"):
        assert name in caps


def test_account_notify_says_which_account_a_nick_is_logged_in_to():
    assert irc.account_line(SERVER, "Visitor", "Visitor") == b":Visitor!Visitor@irc.example.org ACCOUNT Visitor\r\n"
    assert irc.account_line(SERVER, "drifter", None) == b":drifter!drifter@irc.example.org ACCOUNT *\r\n"


def test_cap_ls_302_splits_a_long_list_with_star_continuations():
    caps = ["vendor.example/capability-number-%03d" % i for i in range(40)]
    lines = irc.cap_list_lines(SERVER, "alice", "LS", caps, {caps[0]: "v" * 50}, version=302)
    assert len(lines) > 2
    parsed = [parse_line(line[:-2]) for line in lines]
    assert all(len(line) <= 512 for line in lines)
    assert all(m.params[:3] == ["alice", "LS", "*"] for m in parsed[:-1])
    assert parsed[-1].params[:2] == ["alice", "LS"] and parsed[-1].params[2] != "*"
    words = [w for m in parsed for w in m.params[-1].split()]
    assert words == [caps[0] + "=" + "v" * 50] + caps[1:]


def test_cap_ls_for_a_3_1_client_has_no_values_and_no_continuation():
    [line] = irc.cap_list_lines(SERVER, "", "LS", irc.CAPABILITIES, irc.cap_values(), version=0)
    message = parse_line(line[:-2])
    assert message.params[2] != "*" and "=" not in message.params[2]


def test_cap_list_with_nothing_enabled_is_an_empty_param():
    assert irc.cap_list_lines(SERVER, "", "LIST", [], version=302) == [b":irc.example.org CAP * LIST :\r\n"]


def test_cap_version():
    assert irc.cap_version("302") == 302
    assert irc.cap_version("") == 0
    assert irc.cap_version("x") == 0


def test_cap_req_is_all_or_nothing_and_echoes_the_exact_list():
    answer = irc.cap_request("foo multi-prefix bar", set())
    assert answer == irc.CapAnswer(False, frozenset(), "foo multi-prefix bar")
    answer = irc.cap_request("server-time echo-message", {"sasl"})
    assert answer == irc.CapAnswer(True, frozenset({"sasl", "server-time", "echo-message"}),
                                   "server-time echo-message")
    assert irc.cap_request(" ", {"sasl"}).ack is False


def test_cap_req_minus_turns_off_except_cap_notify_after_ls_302():
    answer = irc.cap_request("-server-time", {"server-time", "echo-message"})
    assert answer.ack and answer.enabled == {"echo-message"}
    assert not irc.cap_request("-cap-notify", {"cap-notify"}, version=302).ack
    assert irc.cap_request("-cap-notify", {"cap-notify"}, version=0).ack


# --- the room-facing formatter ----------------------------------------------

ALL_RENDERING = ("server-time", "message-tags", "account-tag", "extended-join", "away-notify")


def test_formatters_are_shared_by_sessions_with_the_same_rendering_capabilities():
    plain = IrcFormatter(SERVER, [])
    assert IrcFormatter(SERVER, ["sasl", "echo-message", "batch"]) is plain
    tagged = IrcFormatter(SERVER, ["server-time", "sasl"])
    assert tagged is IrcFormatter(SERVER, {"server-time"}) and tagged is not plain
    assert IrcFormatter("other.example", []) is not plain
    assert IrcFormatter(SERVER, [], "#lobby") is not plain
    # Usable as a key of Room.members, like the sae_protocol module.
    assert len({plain: 1, tagged: 2, proto: 3}) == 3


def test_a_room_message_without_capabilities_is_a_bare_privmsg():
    formatter = IrcFormatter(SERVER, [])
    assert formatter.format_msg(7, "2026-11-24T13:05:01.123Z", "alice", "hello all") == \
        b":alice!alice@irc.example.org PRIVMSG #general :hello all\r\n"
    assert formatter.format_rmsg(8, "2026-11-24T13:05:01.123Z", "#Homework", "bob", "hi") == \
        b":bob!bob@irc.example.org PRIVMSG #Homework :hi\r\n"


def test_tags_come_only_with_the_capabilities_that_ask_for_them():
    ts = "2026-11-24T13:05:01.123Z"
    assert IrcFormatter(SERVER, ["server-time"]).format_msg(7, ts, "alice", "yo") == \
        b"@time=2026-11-24T13:05:01.123Z :alice!alice@irc.example.org PRIVMSG #general :yo\r\n"
    assert IrcFormatter(SERVER, ["message-tags"]).format_msg(7, ts, "alice", "yo").startswith(b"@msgid=7 :")
    assert IrcFormatter(SERVER, ["account-tag"]).format_msg(7, ts, "alice", "yo").startswith(b"@account=alice :")
    [message] = lines_of(IrcFormatter(SERVER, ALL_RENDERING).format_msg(7, ts, "alice", "yo"))
    assert message.tags == {"time": ts, "msgid": "7", "account": "alice"}


def test_a_private_message_names_its_recipient_for_everyone_who_gets_it():
    line = IrcFormatter(SERVER, []).format_priv(9, "2026-11-24T13:05:01.123Z", "alice", "bob", "psst")
    assert line == b":alice!alice@irc.example.org PRIVMSG bob :psst\r\n"


def test_a_v1_action_is_a_ctcp_action():
    line = IrcFormatter(SERVER, []).format_msg(7, "t", "alice", "/me waves")
    assert line == b":alice!alice@irc.example.org PRIVMSG #general :\x01ACTION waves\x01\r\n"


def test_a_long_v1_message_becomes_several_privmsgs_with_the_msgid_on_the_first():
    text = "word " * 800 + "end"  # 4003 bytes, a full v1 line
    data = IrcFormatter(SERVER, ALL_RENDERING).format_msg(12, "2026-11-24T13:05:01.123Z", "alice", text)
    raw_lines = data.split(b"\r\n")[:-1]
    messages = lines_of(data)
    assert len(messages) == 9
    assert all(len(raw.split(b" ", 1)[1]) + 2 <= 512 for raw in raw_lines)
    assert "".join(m.params[1] for m in messages) == text
    assert messages[0].tags["msgid"] == "12"
    assert all("msgid" not in m.tags and m.tags["time"] == "2026-11-24T13:05:01.123Z" for m in messages[1:])
    # Cut after a space: words stay whole.
    assert all(m.params[1].endswith(" ") for m in messages[:-1])


def test_a_live_message_has_its_client_tags_with_message_tags_only_and_a_notice_stays_one():
    ts = "2026-11-24T13:05:01.123Z"
    live = LiveMessage(Message(5, ts, "alice", None, "yes " * 150, "#general"), notice=True,
                       client_tags={"+draft/reply": "4", "+draft/react": "a;b"})
    tagged = lines_of(IrcFormatter(SERVER, ["message-tags"]).format_live(live, "#general"))
    assert len(tagged) == 2 and all(m.command == "NOTICE" for m in tagged)
    assert tagged[0].tags == {"+draft/reply": "4", "+draft/react": "a;b", "msgid": "5"}
    assert tagged[1].tags == {"+draft/reply": "4", "+draft/react": "a;b"}
    plain = IrcFormatter(SERVER, ["server-time"]).format_live(live, "#general")
    assert all(m.tags == {"time": ts} for m in lines_of(plain))
    private = LiveMessage(Message(6, ts, "alice", "bob", "hm"), client_tags={"+typing": "done"})
    assert IrcFormatter(SERVER, ["message-tags"]).format_live(private, "bob") == \
        b"@+typing=done;msgid=6 :alice!alice@irc.example.org PRIVMSG bob :hm\r\n"


def test_a_long_action_stays_an_action_in_every_piece():
    messages = lines_of(IrcFormatter(SERVER, []).format_msg(1, "t", "alice", "/me " + "é" * 2000))
    assert len(messages) > 1
    assert all(m.params[1].startswith("\x01ACTION ") and m.params[1].endswith("\x01") for m in messages)
    assert "".join(m.params[1][8:-1] for m in messages) == "é" * 2000


@PROPERTY
@given(st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=1500),
       st.sampled_from(["#general", "#a", "bob"]))
def test_splitting_never_cuts_a_character_nor_loses_one(text, target):
    formatter = IrcFormatter(SERVER, ALL_RENDERING)
    data = formatter.format_rmsg(1, "2026-11-24T13:05:01.123Z", target, "a" * 32, text)
    for raw in data.split(b"\r\n")[:-1]:
        assert len(raw.split(b" ", 1)[1]) + 2 <= 512
        raw.decode("utf-8")  # every line is whole UTF-8
    messages = lines_of(data)
    action = proto.action_text(text)
    if action is None:
        assert "".join(m.params[1] for m in messages) == text
    else:
        assert "".join(m.params[1][8:-1] for m in messages) == action


def test_split_text_cuts_between_characters():
    assert irc.split_text("abc", 10) == ["abc"]
    assert irc.split_text("ééé", 4) == ["éé", "é"]
    assert irc.split_text("aaaa bbbb", 7) == ["aaaa ", "bbbb"]
    assert irc.split_text("🙂🙂", 5) == ["🙂", "🙂"]


def test_presence_is_away_and_back_for_away_notify_and_nothing_otherwise():
    plain, notified = IrcFormatter(SERVER, []), IrcFormatter(SERVER, ["away-notify"])
    assert plain.format_join("alice") == b"" and plain.format_leave("alice", "quit") == b""
    assert notified.format_join("alice") == b":alice!alice@irc.example.org AWAY\r\n"
    assert notified.format_leave("alice", "ping timeout") == \
        b":alice!alice@irc.example.org AWAY :offline (ping timeout)\r\n"


def test_joining_and_leaving_a_room_are_join_and_part():
    assert IrcFormatter(SERVER, []).format_joined("#Homework", "bob") == \
        b":bob!bob@irc.example.org JOIN #Homework\r\n"
    assert IrcFormatter(SERVER, ["extended-join"]).format_joined("#Homework", "bob") == \
        b":bob!bob@irc.example.org JOIN #Homework bob bob\r\n"
    assert IrcFormatter(SERVER, []).format_parted("#Homework", "bob", "see you") == \
        b":bob!bob@irc.example.org PART #Homework :see you\r\n"
    assert IrcFormatter(SERVER, []).format_parted("#Homework", "bob") == b":bob!bob@irc.example.org PART #Homework\r\n"


def test_topic_info_deletion_and_the_end_of_a_connection():
    formatter = IrcFormatter(SERVER, ["server-time"])
    assert formatter.format_topic("#general", "alice", "2026-11-24T13:05:01.123Z", "exams on friday") == \
        b"@time=2026-11-24T13:05:01.123Z :alice!alice@irc.example.org TOPIC #general :exams on friday\r\n"
    assert formatter.format_topic("#general", "alice", "2026-11-24T13:05:01.123Z", "").endswith(b"TOPIC #general :\r\n")
    assert formatter.format_topic("#general") == b""
    assert formatter.format_info("restart at 18:00") == b":irc.example.org NOTICE * :restart at 18:00\r\n"
    assert formatter.format_deleted("#old", "spam") == b":irc.example.org NOTICE #old :this room was deleted: spam\r\n"
    assert formatter.format_kicked(60, "flooding", "alice") == \
        b"ERROR :Closing Link: alice (kicked for 60 s: flooding)\r\n"
    assert formatter.format_bye("quit") == b"ERROR :Closing Link: irc.example.org (quit)\r\n"
    assert formatter.format_ping("12") == b"PING 12\r\n"
    assert formatter.format_pong("x y") == b":irc.example.org PONG irc.example.org :x y\r\n"
    assert irc.kick_line(SERVER, "#old", "bob", "room deleted") == b":irc.example.org KICK #old bob :room deleted\r\n"


# The sae_protocol functions the server calls through ``session.protocol``
# for room and broadcast events (sae_server on the rooms branch).
SERVER_CALLS = ("format_msg", "format_rmsg", "format_priv", "format_join", "format_leave", "format_info",
                "format_joined", "format_parted", "format_topic", "format_deleted", "format_message",
                "format_ping", "format_pong", "format_bye", "format_kicked", "format_banned", "format_err")


@pytest.mark.parametrize("name", SERVER_CALLS)
def test_the_formatter_answers_every_call_the_server_makes_with_the_same_parameters(name):
    v1 = inspect.signature(getattr(proto, name))
    mine = inspect.signature(getattr(IrcFormatter(SERVER, []), name))
    v1_params = list(v1.parameters.values())
    mine_params = list(mine.parameters.values())[:len(v1_params)]
    if name == "format_message":
        # None: the formatter's own default room (v1's names #general).
        v1_params[-1] = v1_params[-1].replace(default=None)
    assert [(p.name, p.default) for p in mine_params] == [(p.name, p.default) for p in v1_params]
    extra = list(mine.parameters.values())[len(v1_params):]
    assert all(p.default is not inspect.Parameter.empty for p in extra)


def test_a_room_renders_once_per_formatter_for_many_sessions():
    # Room.render's loop: {protocol: render(protocol)} over the members' protocols.
    calls = []
    sessions = [IrcFormatter(SERVER, caps) for caps in
                ([], ["sasl"], ["server-time"], ["server-time", "batch"], [], ["echo-message"])] + [proto]
    members = {}
    for protocol in sessions:
        members.setdefault(protocol, []).append(protocol)

    def render(protocol):
        calls.append(protocol)
        return protocol.format_msg(1, "2026-11-24T13:05:01.123Z", "alice", "hi")

    rendered = {protocol: render(protocol) for protocol in members}
    assert len(calls) == 3
    assert rendered[proto] == b"MSG 1 2026-11-24T13:05:01.123Z alice hi\n"


# --- text between the protocols ------------------------------------------------

def test_formatting_codes_are_stripped_for_v1():
    assert irc.irc_text_for_v1("\x02bold\x02 \x1ditalic\x1d \x1funder\x1f \x16rev\x16 \x0freset") == \
        "bold italic under rev reset"
    assert irc.irc_text_for_v1("\x0304red\x03 \x0304,12on blue\x03 \x034,5x \x03,5 comma") == \
        "red on blue x ,5 comma"
    assert irc.irc_text_for_v1("\x03123") == "3"  # two digits at most
    assert irc.irc_text_for_v1("\x04FF0000red\x04 \x11mono\x11 \x1estrike\x1e") == "red mono strike"
    assert irc.irc_text_for_v1("\x1b[31mred\x07") == "[31mred"
    assert irc.irc_text_for_v1("tab\tstays") == "tab\tstays"


def test_ctcp_action_is_v1s_me_and_other_ctcp_is_not_a_message():
    assert irc.irc_text_for_v1("\x01ACTION waves\x01") == "/me waves"
    assert irc.irc_text_for_v1("\x01ACTION waves") == "/me waves"
    assert irc.irc_text_for_v1("\x01ACTION \x02waves\x02\x01") == "/me waves"
    assert irc.irc_text_for_v1("\x01VERSION\x01") is None
    assert irc.irc_text_for_store("\x01PING 123\x01") is None
    assert irc.irc_text_for_store("\x01ACTION \x02waves\x02\x01") == "/me \x02waves\x02"
    assert irc.parse_ctcp("\x01DCC SEND x\x01") == ("DCC", "SEND x")
    assert irc.parse_ctcp("plain") is None


def test_a_real_name_loses_codes_and_controls_and_is_cut_between_characters():
    assert irc.clean_realname("  Alice  Liddell ") == "Alice  Liddell"
    assert irc.clean_realname("\x02bold\x02 \x0304,01red\x03\x1b[31m\tx") == "bold red[31m x"
    assert irc.clean_realname("\x02\x03") == ""
    cut = irc.clean_realname("\u00e9" * 100)
    assert cut == "\u00e9" * (irc.REALNAME_MAX_BYTES // 2)
    assert len(irc.clean_realname("word " * 30).encode()) <= irc.REALNAME_MAX_BYTES


def test_v1_text_for_irc():
    assert irc.v1_text_for_irc("/me waves") == "\x01ACTION waves\x01"
    assert irc.v1_text_for_irc("/me ") == "/me "
    assert irc.v1_text_for_irc("hello /me") == "hello /me"
    stored = irc.irc_text_for_store("\x01ACTION \x02waves\x02\x01")
    assert irc.v1_text_for_irc(stored) == "\x01ACTION \x02waves\x02\x01"


@PROPERTY
@given(st.text(max_size=200))
def test_the_v1_form_never_holds_a_control_character_v1_refuses(text):
    v1 = irc.irc_text_for_v1(text)
    if v1 is not None:
        assert proto.check_text(v1) is None


@PROPERTY
@given(st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=100))
def test_text_without_controls_passes_unchanged_both_ways(text):
    if not text.startswith("/me "):
        assert irc.v1_text_for_irc(text) == text
    assert irc.irc_text_for_v1(irc.v1_text_for_irc(text)) == text


# --- draft/multiline ---------------------------------------------------------------

MULTILINE = ("draft/multiline", "batch", "message-tags", "server-time", "account-tag")
TS = "2026-11-24T13:05:01.123Z"


def assemble(lines, target="#chan"):
    """A MultilineBatch fed ``lines`` (text, or (text, concat)): the text it
    ends with, or the first Failure."""
    batch = irc.open_multiline(["+b", "draft/multiline", target], {})
    for line in lines:
        text, concat = line if isinstance(line, tuple) else (line, False)
        failure = batch.add("PRIVMSG", target, text, concat)
        if failure is not None:
            return failure
    return batch.end()


def test_multiline_is_offered_with_limits_any_v1_client_can_read():
    assert irc.cap_values()["draft/multiline"] == "max-bytes=3968,max-lines=32"
    # The biggest batch there is: 32 lines, 3968 bytes with the line feeds.
    lines = ["\u00e9" * 60] * 31 + ["x" * (3968 - 31 * 121)]
    stored = assemble(lines)
    assert len(stored.encode()) == 3968
    v1 = irc.irc_text_for_v1(stored)
    assert len(v1.encode()) == 4096 - len("SAY ")  # the longest SAY, exactly
    assert proto.check_text(v1) is None and "\n" not in v1
    concat = assemble([lines[0]] + [(line, True) for line in lines[1:31]] + [lines[31]])
    assert len(concat.encode()) <= 4096 - len("SAY ")


def test_multiline_changes_the_bytes_only_beside_batch():
    assert IrcFormatter(SERVER, ["draft/multiline"]) is IrcFormatter(SERVER, [])
    assert IrcFormatter(SERVER, ["draft/multiline", "batch"]) is not IrcFormatter(SERVER, ["batch"])
    assert IrcFormatter(SERVER, ["draft/multiline", "batch"]).multiline


def test_a_multiline_message_is_one_batch_as_the_spec_shows_it():
    stored = assemble(["hello", "how is ", ("everyone?", True)])
    assert stored == "hello\nhow is \reveryone?"
    data = IrcFormatter(SERVER, MULTILINE).format_rmsg(7, TS, "#chan", "n", stored)
    lines = data.split(b"\r\n")[:-1]
    ref = lines[0].split(b" +")[1].split(b" ")[0]
    assert lines == [
        b"@time=%s;msgid=7;account=n :n!n@irc.example.org BATCH +%s draft/multiline #chan" % (TS.encode(), ref),
        b"@batch=%s :n!n@irc.example.org PRIVMSG #chan :hello" % ref,
        b"@batch=%s :n!n@irc.example.org PRIVMSG #chan :how is " % ref,
        b"@batch=%s;draft/multiline-concat :n!n@irc.example.org PRIVMSG #chan :everyone?" % ref,
        b":n!n@irc.example.org BATCH -%s" % ref]


def test_without_multiline_each_line_is_a_privmsg_blank_ones_left_out_the_msgid_on_the_first():
    stored = assemble(["", "how is ", ("everyone?", True), " ", "bye"])
    messages = lines_of(IrcFormatter(SERVER, ["message-tags", "server-time"]).format_rmsg(7, TS, "#chan", "n", stored))
    assert [m.params[1] for m in messages] == ["how is ", "everyone?", "bye"]
    assert [m.tags.get("msgid") for m in messages] == ["7", None, None]
    assert all(m.tags["time"] == TS for m in messages)
    assert irc.irc_text_for_v1(stored) == " \u21b5 how is everyone? \u21b5   \u21b5 bye"


def test_a_short_message_is_one_privmsg_for_multiline_clients_too():
    assert IrcFormatter(SERVER, MULTILINE).format_msg(7, TS, "n", "hi") == \
        IrcFormatter(SERVER, MULTILINE[2:]).format_msg(7, TS, "n", "hi")


def test_a_long_line_is_cut_with_concat_and_an_action_stays_one_in_every_line():
    messages = lines_of(IrcFormatter(SERVER, MULTILINE).format_msg(7, TS, "n", "/me " + "waves " * 200))
    assert messages[0].command == "BATCH" and messages[-1].command == "BATCH"
    inside = messages[1:-1]
    assert len(inside) == 3 and all(m.params[1].startswith("\x01ACTION ") for m in inside)
    assert [irc.MULTILINE_CONCAT in m.tags for m in inside] == [False, True, True]
    assert "".join(m.params[1][8:-1] for m in inside) == "waves " * 200


def test_in_a_history_batch_a_multiline_batch_is_nested():
    message = Stored(9, TS, "n", None, "one\ntwo", "#chan")
    lines = lines_of(b"".join(IrcFormatter(SERVER, MULTILINE).history_lines([message], "#chan", batch=True,
                                                                             ref="h")))
    assert [(m.command, m.params[:2], m.tags.get("batch")) for m in lines] == [
        ("BATCH", ["+h", "chathistory"], None),
        ("BATCH", [lines[1].params[0], "draft/multiline"], "h"),
        ("PRIVMSG", ["#chan", "one"], lines[1].params[0][1:]),
        ("PRIVMSG", ["#chan", "two"], lines[1].params[0][1:]),
        ("BATCH", ["-" + lines[1].params[0][1:]], "h"),
        ("BATCH", ["-h"], None)]
    assert lines[1].tags["msgid"] == "9"
    labeled = irc.labeled("L", IrcFormatter(SERVER, MULTILINE).history_lines([message], "#chan", batch=True), SERVER)
    assert parse_line(labeled[0].rstrip(b"\r\n")).tags["label"] == "L" and len(labeled) == 6


@PROPERTY
@given(st.lists(st.tuples(st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=450), st.booleans()),
                min_size=1, max_size=8))
def test_every_multiline_message_goes_out_whole_in_lines_that_fit(lines):
    lines = [(text, concat and bool(text) and index > 0) for index, (text, concat) in enumerate(lines)]
    stored = assemble(lines)
    if stored.__class__ is irc.Failure:
        assert stored.code == "MULTILINE_INVALID" and not any(text.strip() for text, _ in lines)
        return
    for caps in (MULTILINE, ["message-tags"]):
        data = IrcFormatter(SERVER, caps).format_rmsg(1, TS, "#chan", "n" * 32, stored)
        for raw in data.split(b"\r\n")[:-1]:
            assert len(raw.split(b" ", 1)[1]) + 2 <= 512
        messages = lines_of(data)
        if caps is MULTILINE:
            assert messages[0].command == "BATCH" or len(messages) == 1
            pieces = [m for m in messages if m.command == "PRIVMSG"]
            text = "".join(("" if irc.MULTILINE_CONCAT in m.tags or not index else "\n") + m.params[1]
                           for index, m in enumerate(pieces))
            assert text == stored.replace("\r", "")
        else:
            assert "".join(m.params[1] for m in messages) == \
                "".join(line for line in stored.replace("\r", "\n").split("\n") if line.strip())


def test_a_multiline_batch_breaking_a_rule_is_the_spec_s_fail_and_takes_no_more():
    assert assemble(["hi"] * 33).line(SERVER) == \
        b":irc.example.org FAIL BATCH MULTILINE_MAX_LINES 32 :Multiline batch max-lines exceeded\r\n"
    # max-bytes counts the line feeds between lines, not the joints of concat lines.
    assert assemble(["x" * 3968]) == "x" * 3968 and assemble(["x" * 3969]).code == "MULTILINE_MAX_BYTES"
    assert assemble(["x" * 3967, ""]) == "x" * 3967 + "\n"
    assert assemble(["x" * 3967, "y"]).code == "MULTILINE_MAX_BYTES"
    assert assemble(["x" * 3967, ("y", True)]) == "x" * 3967 + "\ry"
    assert assemble(["x" * 3968, ("y", True)]).code == "MULTILINE_MAX_BYTES"
    batch = irc.open_multiline(["+b", "draft/multiline", "#Chan"], {"+draft/reply": "3", "label": "x"}, "x")
    assert batch.client_tags == {"+draft/reply": "3"} and batch.label == "x"
    assert batch.add("PRIVMSG", "#chan", "same channel", False) is None
    assert batch.add("PRIVMSG", "#other", "hi", False).line(SERVER) == \
        b":irc.example.org FAIL BATCH MULTILINE_INVALID_TARGET #Chan #other :Invalid multiline target\r\n"
    assert batch.failed and batch.add("PRIVMSG", "#chan", "more", False) is None
    for lines in ([("hi", False), ("", True)], ["\x01ACTION waves\x01"], [], ["", "  ", "\x02\x02"]):
        assert assemble(lines).code == "MULTILINE_INVALID"
    batch = irc.open_multiline(["+b", "draft/multiline", "bob"], {})
    batch.add("NOTICE", "BOB", "one", False)
    assert batch.add("PRIVMSG", "bob", "two", False).code == "MULTILINE_INVALID"
    for params in (["+b", "netsplit", "a"], ["+", "draft/multiline", "#chan"], ["+b", "draft/multiline"],
                   ["+b", "draft/multiline", "#bad,chan"], ["+b", "draft/multiline", "NickServ"]):
        assert irc.open_multiline(params, {}).code == "MULTILINE_INVALID"


# --- nicks and channels ------------------------------------------------------------

def test_a_nick_is_an_account_name_and_compares_as_sae_db_does():
    assert irc.check_nick("alice") is None and irc.check_nick("a.b-c_1") is None
    assert irc.check_nick("al ice") and irc.check_nick("") and irc.check_nick("x" * 33)
    assert irc.check_nick("ålice")
    for nick in ("Alice", "BOB_2", "K\u212aelvin", "İx"):
        assert irc.nick_key(nick) == name_key(nick)
    assert irc.check_channel("#general") is None and irc.check_channel("general")
    assert irc.is_channel("#x") and not irc.is_channel("x")


# --- SASL PLAIN ----------------------------------------------------------------------

def test_sasl_plain_as_irctest_sends_it():
    sasl = irc.SaslPlain()
    assert sasl.receive("PLAIN") == irc.SaslContinue("+")
    assert sasl.receive("amlsbGVzAGppbGxlcwBzZXNhbWU=") == irc.SaslCredentials("jilles", "sesame")
    assert sasl.done


def test_sasl_plain_without_authzid_and_with_a_non_ascii_password():
    sasl = irc.SaslPlain()
    sasl.receive("plain")
    assert sasl.receive("AGppbGxlcwBzZXNhbWU=") == irc.SaslCredentials("jilles", "sesame")
    payload = base64.b64encode("foo\0foo\0".encode() + ("é" * 100).encode()).decode()
    sasl = irc.SaslPlain()
    sasl.receive("PLAIN")
    assert sasl.receive(payload) == irc.SaslCredentials("foo", "é" * 100)


@pytest.mark.parametrize("password", ["bar" * 100, "bar" * 97])
def test_sasl_payloads_over_400_bytes_come_in_chunks(password):
    chunks = irc.authenticate_chunks(b"foo\0foo\0" + password.encode())
    assert all(len(chunk) <= 400 for chunk in chunks)
    if len(password) == 291:
        assert chunks[-1] == "+" and len(chunks[0]) == 400
    sasl = irc.SaslPlain()
    sasl.receive("PLAIN")
    steps = [sasl.receive(chunk) for chunk in chunks]
    assert steps[:-1] == [irc.SaslMore()] * (len(chunks) - 1)
    assert steps[-1] == irc.SaslCredentials("foo", password)


def test_sasl_failures_map_to_their_numerics():
    def run(*params):
        sasl = irc.SaslPlain()
        return [sasl.receive(p) for p in params][-1]

    assert run("SCRAM-SHA-256") == irc.SaslFailure(irc.ERR_SASLFAIL, "SASL authentication failed", True)
    assert run("PLAIN", "*").code == irc.ERR_SASLABORTED
    assert run("*").code == irc.ERR_SASLABORTED
    assert run("PLAIN", "x" * 401).code == irc.ERR_SASLTOOLONG
    # One chunk too long is 905; chunks that go on past any login of ours, 904.
    assert run("PLAIN", *["A" * 400] * 4, "AAAA") == irc.SaslFailure(
        irc.ERR_SASLFAIL, "SASL authentication failed: payload too long")
    assert run("PLAIN", "not base64!").code == irc.ERR_SASLFAIL
    assert run("PLAIN", "+").code == irc.ERR_SASLFAIL
    assert run("PLAIN", base64.b64encode(b"bob\0alice\0secret").decode()).code == irc.ERR_SASLFAIL
    assert run("PLAIN", base64.b64encode(b"ALICE\0alice\0secret").decode()) == irc.SaslCredentials("alice", "secret")
    assert run("PLAIN", base64.b64encode(b"\0bad name\0secret").decode()).code == irc.ERR_SASLFAIL
    assert run("PLAIN", base64.b64encode(b"\0alice\0").decode()).code == irc.ERR_SASLFAIL
    assert run("PLAIN", base64.b64encode(b"\0alice\xff\0secret").decode()).code == irc.ERR_SASLFAIL
    assert run("PLAIN", base64.b64encode(b"\0alice\0a\0b").decode()).code == irc.ERR_SASLFAIL
    sasl = irc.SaslPlain()
    sasl.receive("*")
    with pytest.raises(ValueError):
        sasl.receive("PLAIN")


def test_sasl_reply_lines():
    assert irc.logged_in_lines(SERVER, "alice", "Alice") == [
        b":irc.example.org 900 alice alice!alice@irc.example.org Alice :You are now logged in as Alice\r\n",
        b":irc.example.org 903 alice :SASL authentication successful\r\n"]
    failure = irc.SaslFailure(irc.ERR_SASLFAIL, "SASL authentication failed", True)
    assert irc.sasl_failure_lines(SERVER, "*", failure) == [
        b":irc.example.org 908 * PLAIN :are available SASL mechanisms\r\n",
        b":irc.example.org 904 * :SASL authentication failed\r\n"]


@PROPERTY
@given(st.binary(max_size=1100))
def test_any_payload_chunked_arrives_whole(payload):
    sasl = irc.SaslPlain()
    sasl.receive("PLAIN")
    steps = [sasl.receive(chunk) for chunk in irc.authenticate_chunks(payload)]
    assert all(step == irc.SaslMore() for step in steps[:-1])
    assert isinstance(steps[-1], (irc.SaslCredentials, irc.SaslFailure))
    if isinstance(steps[-1], irc.SaslCredentials):
        assert payload.endswith(steps[-1].password.encode())


# --- CHATHISTORY -----------------------------------------------------------------

def test_parse_chathistory_requests():
    assert irc.parse_chathistory(["LATEST", "#general", "*", "10"]) == \
        irc.ChathistoryRequest("LATEST", "#general", (irc.NOW,), 10)
    assert irc.parse_chathistory(["before", "bob", "msgid=42", "500"]) == \
        irc.ChathistoryRequest("BEFORE", "bob", (irc.HistoryRef("msgid", 42),), irc.CHATHISTORY_MAX)
    assert irc.parse_chathistory(["AFTER", "#general", "timestamp=2026-11-24T13:05:01Z", "0"]) == \
        irc.ChathistoryRequest("AFTER", "#general",
                               (irc.HistoryRef("timestamp", timestamp="2026-11-24T13:05:01.000Z"),), 100)
    request = irc.parse_chathistory(["BETWEEN", "#general", "msgid=1", "timestamp=2026-11-24T13:05:01.123456Z", "5"])
    assert request.refs == (irc.HistoryRef("msgid", 1),
                            irc.HistoryRef("timestamp", timestamp="2026-11-24T13:05:01.123Z"))
    request = irc.parse_chathistory(["TARGETS", "timestamp=2026-01-01T00:00:00Z",
                                     "timestamp=2027-01-01T00:00:00Z", "20"])
    assert request.subcommand == "TARGETS" and request.target == "" and request.limit == 20


@pytest.mark.parametrize("params, code, context", [
    ([], "NEED_MORE_PARAMS", ("*",)),
    (["LATEST", "#general", "*"], "NEED_MORE_PARAMS", ("LATEST",)),
    (["BETWEEN", "#general", "msgid=1", "10"], "NEED_MORE_PARAMS", ("BETWEEN",)),
    (["SOMETIME", "#general", "*", "10"], "UNKNOWN_COMMAND", ("SOMETIME",)),
    (["LATEST", "#no such", "*", "10"], "INVALID_TARGET", ("LATEST", "#no such")),
    (["LATEST", "bad nick", "*", "10"], "INVALID_TARGET", ("LATEST", "bad nick")),
    (["BEFORE", "#general", "*", "10"], "INVALID_PARAMS", ("BEFORE", "*")),
    (["BEFORE", "#general", "msgid=abc", "10"], "INVALID_PARAMS", ("BEFORE", "msgid=abc")),
    (["BEFORE", "#general", "msgid=0", "10"], "INVALID_PARAMS", ("BEFORE", "msgid=0")),
    (["BEFORE", "#general", "timestamp=2026-13-01T00:00:00Z", "10"], "INVALID_PARAMS",
     ("BEFORE", "timestamp=2026-13-01T00:00:00Z")),
    (["BEFORE", "#general", "id=4", "10"], "INVALID_PARAMS", ("BEFORE", "id=4")),
    (["BEFORE", "#general", "msgid=4", "ten"], "INVALID_PARAMS", ("BEFORE", "ten")),
    (["TARGETS", "msgid=1", "timestamp=2026-01-01T00:00:00Z", "10"], "INVALID_PARAMS", ("TARGETS", "msgid=1")),
])
def test_bad_chathistory_requests_are_fail_replies(params, code, context):
    failure = irc.parse_chathistory(params)
    assert failure.code == code and failure.context == context
    line = parse_line(failure.line(SERVER)[:-2])
    assert line.command == "FAIL" and line.params[:2] == ["CHATHISTORY", code]
    assert line.params[2:-1] == [word.replace(" ", "_") for word in context]


def ten_messages():
    """Ten room messages 20 ms apart, as irctest's chathistory tests make."""
    return [Stored(100 + i, "2026-11-24T13:05:01.%03dZ" % (20 * i), "bar", None, "this is message %d" % i,
                   "#chan") for i in range(10)]


def history(request_params):
    messages = ten_messages()
    request = irc.parse_chathistory(request_params)
    return [m.id - 100 for window in irc.history_windows(request)
            for m in irc.select_history(messages, window)]


@pytest.mark.parametrize("kind", ["msgid", "timestamp"])
def test_chathistory_windows_answer_what_irctest_expects(kind):
    messages = ten_messages()

    def ref(i):
        return "msgid=%d" % messages[i].id if kind == "msgid" else "timestamp=" + messages[i].created_at

    assert history(["LATEST", "#chan", "*", "20"]) == list(range(10))
    assert history(["LATEST", "#chan", "*", "5"]) == [5, 6, 7, 8, 9]
    assert history(["LATEST", "#chan", "*", "1"]) == [9]
    assert history(["LATEST", "#chan", ref(4), "20"]) == [5, 6, 7, 8, 9]
    assert history(["BEFORE", "#chan", ref(6), "20"]) == [0, 1, 2, 3, 4, 5]
    assert history(["BEFORE", "#chan", ref(6), "2"]) == [4, 5]
    assert history(["AFTER", "#chan", ref(3), "20"]) == [4, 5, 6, 7, 8, 9]
    assert history(["AFTER", "#chan", ref(3), "3"]) == [4, 5, 6]
    assert history(["BETWEEN", "#chan", ref(0), ref(9), "20"]) == list(range(1, 9))
    assert history(["BETWEEN", "#chan", ref(9), ref(0), "20"]) == list(range(1, 9))
    assert history(["BETWEEN", "#chan", ref(0), ref(9), "3"]) == [1, 2, 3]
    assert history(["BETWEEN", "#chan", ref(9), ref(0), "3"]) == [6, 7, 8]
    assert history(["BETWEEN", "#chan", ref(4), ref(4), "3"]) == []
    assert history(["AROUND", "#chan", ref(7), "1"]) == [7]
    assert history(["AROUND", "#chan", ref(7), "3"]) == [6, 7, 8]
    assert history(["AROUND", "#chan", ref(7), "4"]) == [5, 6, 7, 8]


def test_between_with_two_kinds_of_reference_is_for_the_server_to_resolve():
    request = irc.parse_chathistory(["BETWEEN", "#chan", "msgid=1", "timestamp=2026-11-24T13:05:01Z", "5"])
    with pytest.raises(ValueError):
        irc.history_windows(request)


def test_a_history_batch_for_clients_with_batch_and_server_time():
    formatter = IrcFormatter(SERVER, ["server-time", "message-tags"])
    lines = formatter.history_lines(ten_messages()[:2], "#chan", batch=True, ref="r1")
    assert lines[0] == b":irc.example.org BATCH +r1 chathistory #chan\r\n"
    assert lines[-1] == b":irc.example.org BATCH -r1\r\n"
    first = parse_line(lines[1][:-2])
    assert first.tags == {"time": "2026-11-24T13:05:01.000Z", "msgid": "100", "batch": "r1"}
    assert first.params == ["#chan", "this is message 0"]
    assert formatter.history_lines([], "#chan", batch=True, ref="r2") == [
        b":irc.example.org BATCH +r2 chathistory #chan\r\n", b":irc.example.org BATCH -r2\r\n"]


def test_history_for_clients_without_server_time_starts_each_text_with_its_time():
    formatter = IrcFormatter(SERVER, [])
    messages = [Stored(5, "2026-11-24T13:05:01.123Z", "alice", None, "hello", None),
                Stored(6, "2026-11-24T13:06:00.000Z", "alice", "bob", "/me waves", None)]
    assert formatter.history_lines(messages, "#general") == [
        b":alice!alice@irc.example.org PRIVMSG #general :[2026-11-24 13:05 UTC] hello\r\n",
        b":alice!alice@irc.example.org PRIVMSG bob :\x01ACTION [2026-11-24 13:06 UTC] waves\x01\r\n"]


def test_chathistory_targets_batch():
    lines = irc.targets_lines(SERVER, [("#general", "2026-11-24T13:05:01.123Z"), ("bob", "2026-11-24T12:00:00.000Z")],
                              ref="t")
    assert lines == [b":irc.example.org BATCH +t draft/chathistory-targets\r\n",
                     b"@batch=t :irc.example.org CHATHISTORY TARGETS #general 2026-11-24T13:05:01.123Z\r\n",
                     b"@batch=t :irc.example.org CHATHISTORY TARGETS bob 2026-11-24T12:00:00.000Z\r\n",
                     b":irc.example.org BATCH -t\r\n"]


def test_chathistory_targets_window_reads_its_timestamps_as_between_does():
    def window(first, second, limit="50"):
        return irc.targets_window(irc.parse_chathistory(["TARGETS", first, second, limit]))

    earlier, later = "timestamp=2026-11-24T13:05:01.5Z", "timestamp=2026-11-24T13:05:02Z"
    # Forwards: the first ones after the earlier moment; backwards: the
    # last ones before the later; both strictly between.
    assert window(earlier, later) == irc.TargetsWindow("2026-11-24T13:05:01.500Z", "2026-11-24T13:05:02.000Z",
                                                       50, False)
    assert window(later, earlier, "3") == irc.TargetsWindow("2026-11-24T13:05:01.500Z",
                                                            "2026-11-24T13:05:02.000Z", 3, True)
    assert window(earlier, later, "0").limit == irc.CHATHISTORY_MAX
    # One moment twice: nothing is strictly between, whatever its spelling.
    assert window("timestamp=2026-11-24T13:05:01.5Z", "timestamp=2026-11-24T13:05:01.500000Z") is None
    # Only BETWEEN's windows are messages.
    with pytest.raises(ValueError):
        irc.history_windows(irc.parse_chathistory(["TARGETS", earlier, later, "5"]))


def test_timestamps():
    assert irc.parse_timestamp("2026-11-24T13:05:01.123Z") == "2026-11-24T13:05:01.123Z"
    assert irc.parse_timestamp("2026-11-24T13:05:01.1Z") == "2026-11-24T13:05:01.100Z"
    assert irc.parse_timestamp("2026-02-30T13:05:01Z") is None
    assert irc.parse_timestamp("2026-11-24 13:05:01Z") is None
    assert irc.parse_timestamp("２026-11-24T13:05:01Z") is None
    assert irc.timestamp_seconds("1970-01-01T00:01:00.500Z") == 60
    assert irc.history_time_prefix("2026-11-24T13:05:01.123Z") == "[2026-11-24 13:05 UTC] "


# --- per-session replies ---------------------------------------------------------------

def test_isupport_has_what_clients_need_in_lines_of_13_tokens():
    tokens = irc.isupport_tokens("sae-chat", chathistory=50)
    for token in ("CHANTYPES=#", "CASEMAPPING=ascii", "NICKLEN=32", "CHANNELLEN=33", "TOPICLEN=300",
                  "NETWORK=sae-chat", "CHATHISTORY=50", "PREFIX=(ov)@+", "CHANMODES=,,,n", "UTF8ONLY"):
        assert token in tokens
    lines = irc.isupport_lines(SERVER, "alice", tokens + ["X%d" % i for i in range(10)])
    parsed = [parse_line(line[:-2]) for line in lines]
    assert len(parsed) == 2
    assert all(len(m.params) - 2 <= 13 for m in parsed)
    assert all(m.command == "005" and m.params[0] == "alice" and m.params[-1] == "are supported by this server"
               for m in parsed)
    assert [t for m in parsed for t in m.params[1:-1]] == tokens + ["X%d" % i for i in range(10)]


def test_welcome_and_motd():
    lines = irc.welcome_lines(SERVER, "alice", "sae-chat", "sae-chat-0.1", "2026-11-24")
    assert [parse_line(line[:-2]).command for line in lines] == ["001", "002", "003", "004"]
    assert irc.motd_lines(SERVER, "alice", None) == [b":irc.example.org 422 alice :MOTD File is missing\r\n"]
    lines = irc.motd_lines(SERVER, "alice", "Welcome\n\n" + "long " * 200 + "\x1b[31m")
    commands = [parse_line(line[:-2]).command for line in lines]
    assert commands[0] == "375" and commands[-1] == "376" and set(commands[1:-1]) == {"372"}
    assert all(len(line) <= 512 and b"\x1b" not in line for line in lines)


def test_names_are_split_over_353_lines_within_512_bytes():
    names = ["member%02d%s" % (i, "x" * 20) for i in range(60)]
    lines = irc.names_lines(SERVER, "alice", "#general", reversed(names))
    parsed = [parse_line(line[:-2]) for line in lines]
    assert len(parsed) > 2 and all(len(line) <= 512 for line in lines)
    assert all(m.command == "353" and m.params[:3] == ["alice", "=", "#general"] for m in parsed[:-1])
    assert [n for m in parsed[:-1] for n in m.params[3].split()] == names
    assert parsed[-1].command == "366" and parsed[-1].params[1] == "#general"


def test_names_with_userhost_in_names_are_full_hostmasks():
    lines = irc.names_lines(SERVER, "alice", "#general", ["bob", "Alice"], userhosts=True)
    assert lines[0] == b":irc.example.org 353 alice = #general :Alice!Alice@irc.example.org bob!bob@irc.example.org\r\n"
    names = ["member%02d%s" % (i, "x" * 20) for i in range(40)]
    lines = irc.names_lines(SERVER, "alice", "#general", names, userhosts=True)
    assert len(lines) > 3 and all(len(line) <= 512 for line in lines)


def test_topic_replies():
    assert irc.topic_lines(SERVER, "alice", "#general") == [b":irc.example.org 331 alice #general :No topic is set\r\n"]
    assert irc.topic_lines(SERVER, "alice", "#general", "bob", "1970-01-01T00:01:00.000Z", "hi all") == [
        b":irc.example.org 332 alice #general :hi all\r\n",
        b":irc.example.org 333 alice #general bob 60\r\n"]


def test_labeled_responses():
    assert irc.labeled("a1", [], SERVER) == [b"@label=a1 :irc.example.org ACK\r\n"]
    assert irc.labeled("a1", [b":s PONG s x\r\n"], SERVER) == [b"@label=a1 :s PONG s x\r\n"]
    assert irc.labeled("a1", [b"@time=t :s PONG s x\r\n"], SERVER) == [b"@label=a1;time=t :s PONG s x\r\n"]
    batch = IrcFormatter(SERVER, ["server-time"]).history_lines(ten_messages()[:2], "#chan", batch=True, ref="h")
    assert irc.labeled("a2", batch, SERVER) == [b"@label=a2 " + batch[0]] + batch[1:]
    names = irc.names_lines(SERVER, "alice", "#general", ["bob"])
    wrapped = irc.labeled("a3", names + batch, SERVER, ref="L")
    assert wrapped[0] == b"@label=a3 :irc.example.org BATCH +L labeled-response\r\n"
    assert wrapped[-1] == b":irc.example.org BATCH -L\r\n"
    parsed = [parse_line(line[:-2]) for line in wrapped[1:-1]]
    assert [m.tags.get("batch") for m in parsed] == ["L", "L", "L", "h", "h", "L"]


def test_lusers():
    lines = irc.lusers_lines(SERVER, "alice", users=3, channels=2, max_users=5)
    parsed = [parse_line(line[:-2]) for line in lines]
    assert [m.command for m in parsed] == ["251", "252", "253", "254", "255", "265", "266"]
    assert parsed[3].params[1] == "2" and parsed[5].params[1:3] == ["3", "5"]


# --- PASS and REGISTER -----------------------------------------------------------------

def test_pass_takes_name_colon_password_or_the_password_alone():
    assert irc.parse_pass("alice:correct-horse") == irc.Credentials("alice", "correct-horse")
    assert irc.parse_pass("correct-horse") == irc.Credentials("", "correct-horse")
    # Not a name before the colon: all of it is the password.
    assert irc.parse_pass("a b:c:d") == irc.Credentials("", "a b:c:d")
    assert irc.parse_pass("alice:pass:word") == irc.Credentials("alice", "pass:word")
    assert irc.parse_pass("alice:") == irc.Credentials("", "alice:")


def test_register_names_the_account_after_the_nick():
    assert irc.parse_register(["*", "*", "shivarampassphrase"], "bar") == irc.Credentials("bar", "shivarampassphrase")
    assert irc.parse_register(["BAR", "bar@example.org", "shivarampassphrase"], "bar") == \
        irc.Credentials("BAR", "shivarampassphrase")
    assert irc.parse_register(["baz", "*", "shivarampassphrase"], "bar").code == irc.ACCOUNT_NAME_MUST_BE_NICK
    assert irc.parse_register(["*", "*", "shivarampassphrase"], "").code == irc.NEED_NICK
    assert irc.parse_register(["*", "*", "short"], "bar").code == irc.WEAK_PASSWORD
    assert irc.parse_register(["*", "*", "short"], "bar", password_min_bytes=4) == irc.Credentials("bar", "short")
    assert irc.parse_register(["*", "*", "x" * 1025], "bar").code == irc.UNACCEPTABLE_PASSWORD
    assert irc.parse_register(["b r", "*", "shivarampassphrase"], "bar").code == irc.BAD_ACCOUNT_NAME
    assert irc.parse_register(["*", "*"], "bar").code == "NEED_MORE_PARAMS"
    line = parse_line(irc.parse_register(["b r", "*", "x"], "bar").line(SERVER)[:-2])
    assert line.params[:3] == ["REGISTER", "BAD_ACCOUNT_NAME", "b_r"]
    assert irc.register_success_line(SERVER, "bar") == \
        b":irc.example.org REGISTER SUCCESS bar :Account bar registered\r\n"


def test_nickserv_commands_as_users_type_them():
    assert irc.parse_nickserv("IDENTIFY hunter22xx") == irc.NickServCommand("IDENTIFY", "", "hunter22xx")
    assert irc.parse_nickserv("identify alice hunter22xx") == irc.NickServCommand("IDENTIFY", "alice", "hunter22xx")
    assert irc.parse_nickserv("REGISTER correct horse") == irc.NickServCommand("REGISTER", "", "correct horse")
    assert irc.parse_nickserv("") == irc.NickServCommand("HELP")
    assert irc.parse_nickserv("GHOST bob").verb == "GHOST"
