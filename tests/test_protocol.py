"""Unit tests of sae_protocol: framing, parsing and formatting, no sockets.

The framer is fed byte strings cut in every way a network could cut them;
the parser is fed lines as a client would type them (and as a fuzzer would).
Property tests use hypothesis with small limits so that the edges (a line
exactly at the limit, a run just past the unterminated limit) are reached
with short inputs.
"""

import calendar
from typing import NamedTuple, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sae_protocol as p
from sae_protocol import (
    Command,
    HistoryQuery,
    LineFramer,
    LineTooLong,
    ProtocolError,
    Unterminated,
    parse_command,
    parse_server_line,
)

# The suite runs on five Python versions: enough examples to find edges,
# not so many that tox crawls.
PROPERTY = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def feed_all(framer, chunks):
    frames = []
    for chunk in chunks:
        frames.extend(framer.feed(chunk))
    return frames


def bytewise(data):
    return [data[i:i + 1] for i in range(len(data))]


# --- framing -------------------------------------------------------------

def test_a_line_split_across_chunks_comes_out_whole():
    framer = LineFramer()
    assert framer.feed(b"SAY hel") == []
    assert framer.feed(b"lo wor") == []
    assert framer.feed(b"ld\nPI") == [b"SAY hello world"]
    assert framer.buffered == 2
    assert framer.feed(b"NG\n") == [b"PING"]
    assert framer.buffered == 0


def test_several_lines_in_one_chunk_come_out_in_order():
    assert LineFramer().feed(b"LOGIN a password1\nSAY a\nSAY b\nPING x\n") == [
        b"LOGIN a password1", b"SAY a", b"SAY b", b"PING x"]


def test_one_carriage_return_before_the_newline_is_stripped():
    framer = LineFramer()
    assert framer.feed(b"SAY hi\r\n") == [b"SAY hi"]
    # Only one: a second "\r" is part of the line (the parser rejects it).
    assert framer.feed(b"SAY hi\r\r\n") == [b"SAY hi\r"]
    # A "\r" elsewhere is content, not a line end.
    assert framer.feed(b"SAY a\rb\n") == [b"SAY a\rb"]
    # "\r" and "\n" arriving in different chunks.
    assert framer.feed(b"SAY split\r") == []
    assert framer.feed(b"\n") == [b"SAY split"]


def test_empty_lines_are_frames():
    assert LineFramer().feed(b"\n\r\nPING\n") == [b"", b"", b"PING"]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_exactly_max_line_content_bytes_are_accepted(ending):
    line = b"S" * p.MAX_LINE_BYTES
    assert p.MAX_LINE_BYTES == 4096
    assert LineFramer().feed(line + ending) == [line]
    assert feed_all(LineFramer(), [line, ending]) == [line]
    assert feed_all(LineFramer(), bytewise(line + ending)) == [line]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_one_byte_over_max_line_is_too_long(ending):
    line = b"S" * (p.MAX_LINE_BYTES + 1)
    assert LineFramer().feed(line + ending) == [LineTooLong()]
    assert feed_all(LineFramer(), [line, ending]) == [LineTooLong()]
    assert feed_all(LineFramer(), bytewise(line + ending)) == [LineTooLong()]


def test_an_overlong_line_is_reported_once_and_framing_resumes_at_its_newline():
    framer = LineFramer()
    frames = framer.feed(b"SAY " + b"x" * 5000)
    assert frames == [LineTooLong()]
    # The rest of that line is discarded without a second report...
    assert framer.feed(b"y" * 10000) == []
    assert framer.buffered == 0
    # ...and the next line after its newline is a line again.
    assert framer.feed(b"z" * 100 + b"\nPING back\n") == [b"PING back"]


def test_an_overlong_line_in_one_chunk_between_good_lines():
    data = b"PING 1\n" + b"x" * 9000 + b"\r\nPING 2\n"
    assert LineFramer().feed(data) == [b"PING 1", LineTooLong(), b"PING 2"]
    assert feed_all(LineFramer(), [data[:3000], data[3000:7000], data[7000:]]) == [
        b"PING 1", LineTooLong(), b"PING 2"]


def test_unterminated_after_64_kib_without_a_newline():
    framer = LineFramer()
    assert p.MAX_UNTERMINATED_BYTES == 64 * 1024
    frames = []
    for _ in range(64):
        frames += framer.feed(b"x" * 1024)
    # 64 KiB exactly is still only an overlong line.
    assert frames == [LineTooLong()]
    assert framer.feed(b"x") == [Unterminated()]
    # Once unterminated, the framer swallows everything: the peer is closed.
    assert framer.feed(b"\nPING\n") == []
    assert framer.feed(b"x" * 100000) == []


def test_unterminated_in_one_big_chunk():
    assert LineFramer().feed(b"x" * (70 * 1024)) == [LineTooLong(), Unterminated()]


def test_unterminated_does_not_depend_on_how_the_stream_was_cut():
    # A newline-free run past the limit, then a newline: the verdict must be
    # the same whether the server's recv returned it in one piece or two.
    data = b"x" * (p.MAX_UNTERMINATED_BYTES + 10) + b"\nPING after\n"
    whole = LineFramer().feed(data)
    cut = feed_all(LineFramer(), [data[:p.MAX_UNTERMINATED_BYTES + 5],
                                  data[p.MAX_UNTERMINATED_BYTES + 5:]])
    assert whole == cut


def test_small_limits_are_honoured():
    framer = LineFramer(max_line=4, max_unterminated=10)
    assert framer.feed(b"abcd\nabcde\n") == [b"abcd", LineTooLong()]
    assert framer.feed(b"abcd\r\n") == [b"abcd"]
    assert framer.feed(b"x" * 11) == [LineTooLong(), Unterminated()]


# A stream model: lines with their one "\r" stripped, too-long content
# replaced by LineTooLong; a trailing partial line is reported as too long
# as soon as it cannot fit even with a "\r" yet to come.
def model_frames(stream, max_line):
    *lines, tail = stream.split(b"\n")
    frames = []
    for line in lines:
        content = line[:-1] if line.endswith(b"\r") else line
        frames.append(LineTooLong() if len(content) > max_line else content)
    if len(tail) > max_line + 1:
        frames.append(LineTooLong())
    return frames


# Pieces that make newlines, "\r" and line-length edges common.
_piece = st.one_of(
    st.sampled_from([b"\n", b"\r", b"\r\n", b"SAY hi", b"PING", b"\xff", b"\xc3", b"\xa9",
                     b"x" * 7, b"y" * 8, b"z" * 9, b"\t", b" ", b"\x00"]),
    st.binary(max_size=12),
)
streams = st.lists(_piece, max_size=40).map(b"".join)


@st.composite
def stream_and_cuts(draw):
    data = draw(streams)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    chunks = []
    start = 0
    for cut in cuts + [len(data)]:
        chunks.append(data[start:cut])
        start = cut
    return data, chunks


@PROPERTY
@given(stream_and_cuts())
def test_property_any_split_gives_the_same_frames_as_feeding_it_whole(case):
    data, chunks = case
    assert b"".join(chunks) == data
    whole = LineFramer(max_line=8, max_unterminated=24).feed(data)
    split = feed_all(LineFramer(max_line=8, max_unterminated=24), chunks)
    assert split == whole


@PROPERTY
@given(stream_and_cuts())
def test_property_any_split_gives_the_same_frames_at_the_real_limits(case):
    data, chunks = case
    assert feed_all(LineFramer(), chunks) == LineFramer().feed(data)


@PROPERTY
@given(stream_and_cuts())
def test_property_frames_match_the_line_model(case):
    data, chunks = case
    # The model ignores the unterminated limit; keep runs below it.
    if any(len(run) > 24 for run in data.split(b"\n")):
        return
    assert feed_all(LineFramer(max_line=8, max_unterminated=24), chunks) == \
        model_frames(data, 8)


@PROPERTY
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_property_arbitrary_bytes_never_raise(chunks):
    framer = LineFramer(max_line=64, max_unterminated=512)
    for chunk in chunks:
        for frame in framer.feed(chunk):
            assert isinstance(frame, (bytes, LineTooLong, Unterminated))
            if isinstance(frame, bytes):
                assert b"\n" not in frame
                assert len(frame) <= 64


@PROPERTY
@given(streams)
def test_property_every_frame_parses_to_a_command_an_error_or_nothing(data):
    for frame in LineFramer().feed(data + b"\n"):
        if not isinstance(frame, bytes):
            continue
        result = parse_command(frame)
        assert result is None or isinstance(result, (Command, ProtocolError))
        if isinstance(result, ProtocolError):
            assert result.code in (p.BAD_REQUEST, p.UNKNOWN_VERB)
            assert result.text
        if isinstance(result, Command):
            assert result.verb in p.ALL_VERBS
            assert len(result.args) == p.ALL_VERBS[result.verb][0]


@PROPERTY
@given(st.binary(max_size=300))
def test_property_parse_command_never_raises_on_arbitrary_bytes(raw):
    result = parse_command(raw)
    assert result is None or isinstance(result, (Command, ProtocolError))


@PROPERTY
@given(st.binary(max_size=300))
def test_property_parse_server_line_never_raises_on_arbitrary_bytes(raw):
    result = parse_server_line(raw)
    assert result is None or isinstance(result, p.ServerEvent)


# --- client commands -----------------------------------------------------

@pytest.mark.parametrize("line, command", [
    (b"REGISTER alice password1", Command("REGISTER", ("alice", "password1"))),
    (b"LOGIN alice password1", Command("LOGIN", ("alice", "password1"))),
    (b"SAY hello", Command("SAY", ("hello",))),
    (b"TELL bob hello", Command("TELL", ("bob", "hello"))),
    (b"WHO", Command("WHO", ())),
    (b"HISTORY 20", Command("HISTORY", ("20", ""))),
    (b"HISTORY 20 before=7", Command("HISTORY", ("20", "before=7"))),
    (b"HISTORY 20 after=7", Command("HISTORY", ("20", "after=7"))),
    (b"PING", Command("PING", ("",))),
    (b"PING tok", Command("PING", ("tok",))),
    (b"QUIT", Command("QUIT", ("",))),
    (b"QUIT gone fishing", Command("QUIT", ("gone fishing",))),
])
def test_every_verb_parses(line, command):
    assert parse_command(line) == command


@pytest.mark.parametrize("verb", ["say", "Say", "sAY"])
def test_verbs_are_case_insensitive(verb):
    assert parse_command(("%s hi" % verb).encode()) == Command("SAY", ("hi",))


def test_lowercase_verbs_for_every_verb():
    for verb in p.VERBS:
        result = parse_command(("%s a b" % verb.lower()).encode())
        assert isinstance(result, Command) and result.verb == verb


def test_the_last_field_keeps_the_rest_of_the_line():
    assert parse_command(b"SAY hello   big  world  ") == Command("SAY", ("hello   big  world  ",))
    assert parse_command(b"TELL bob  see you\tat  noon ") == \
        Command("TELL", ("bob", "see you\tat  noon "))
    assert parse_command(b"REGISTER alice correct horse battery") == \
        Command("REGISTER", ("alice", "correct horse battery"))
    assert parse_command(b"LOGIN alice  pass word ") == Command("LOGIN", ("alice", "pass word "))
    assert parse_command(b"PING a b c") == Command("PING", ("a b c",))


def test_text_keeps_non_ascii():
    assert parse_command("SAY héllo 👋 мир".encode()) == Command("SAY", ("héllo 👋 мир",))


@pytest.mark.parametrize("line", [b"", b" ", b"   ", b"\t", b" \t "])
def test_an_empty_line_is_nothing(line):
    assert parse_command(line) is None


@pytest.mark.parametrize("line", [
    b"REGISTER", b"REGISTER alice", b"REGISTER alice ",
    b"LOGIN", b"LOGIN alice", b"LOGIN alice   ",
    b"SAY", b"SAY ", b"SAY    ", b"SAY \t ",
    b"TELL", b"TELL bob", b"TELL bob ", b"TELL bob  \t",
    b"HISTORY", b"HISTORY ",
])
def test_missing_arguments_are_400(line):
    result = parse_command(line)
    assert isinstance(result, ProtocolError)
    assert result.code == 400
    assert result.text


@pytest.mark.parametrize("line", [b"FROB", b"frob x y", b"SAYS hi", b"SAY\thi", b"PINGPONG",
                                  "НЕТ da".encode()])
def test_unknown_verbs_are_421(line):
    result = parse_command(line)
    assert isinstance(result, ProtocolError)
    assert result.code == 421


# str.upper() maps some non-ASCII letters onto ASCII ones: dotless i to I,
# long s to S. A verb is matched in ASCII only, so these stay unknown verbs
# (and the Kelvin sign K, which lower() makes "k", is no "k" either).
@pytest.mark.parametrize("line", ["log\u0131n kate password1", "\u017fay hi", "\u017fAY hi", "pıng",
                                  "\uff33\uff21\uff39 hi"])
def test_verbs_are_matched_in_ascii_only(line):
    assert parse_command(line.encode()) == ProtocolError(421, "unknown command %s" % line.split(" ")[0])


def test_an_unknown_verb_is_421_even_without_arguments_a_known_verb_would_need():
    assert parse_command(b"FROB").code == 421
    assert parse_command(b"SAY").code == 400


def test_an_unknown_verb_in_the_error_text_is_bounded():
    result = parse_command(b"X" * 3000)
    assert result.code == 421
    assert len(result.text) < 100


@pytest.mark.parametrize("line", [b"SAY \xff", b"SAY caf\xc3", b"\xc3\x28", b"SAY \xed\xa0\x80",
                                  b"SAY \xc0\xaf", b"FROB \xff"])
def test_invalid_utf8_is_400(line):
    result = parse_command(line)
    assert isinstance(result, ProtocolError)
    assert result.code == 400


@pytest.mark.parametrize("char", [chr(c) for c in list(range(0, 9)) + list(range(10, 32))
                                  + [0x7F] + list(range(0x80, 0xA0))])
def test_control_characters_are_400(char):
    result = parse_command(("SAY a%sb" % char).encode("utf-8"))
    assert isinstance(result, ProtocolError), repr(char)
    assert result.code == 400


def test_a_control_character_in_the_verb_is_400_too():
    assert parse_command(b"PI\x00NG").code == 400


def test_tab_is_allowed():
    assert parse_command(b"SAY a\tb") == Command("SAY", ("a\tb",))


def test_characters_just_outside_the_control_ranges_are_allowed():
    for char in [" ", "~", "\xa0", "\u00a9"]:
        assert parse_command(("SAY a%sb" % char).encode()) == Command("SAY", ("a%sb" % char,))


# --- HISTORY, names, passwords -------------------------------------------

@pytest.mark.parametrize("count, where, query", [
    ("20", "", HistoryQuery(20)),
    ("0", "", HistoryQuery(0)),
    ("20", "before=7", HistoryQuery(20, before=7)),
    ("20", "after=7", HistoryQuery(20, after=7)),
    ("5000", "", HistoryQuery(1000)),
    ("9223372036854775807", "after=3", HistoryQuery(1000, after=3)),
    ("20", " before=7 ", HistoryQuery(20, before=7)),
    ("20", "before=9223372036854775807", HistoryQuery(20, before=2**63 - 1)),
    ("20", "after=0", HistoryQuery(20, after=0)),
    ("0020", "after=0009", HistoryQuery(20, after=9)),
])
def test_parse_history(count, where, query):
    assert p.parse_history(count, where, cap=1000) == query


@pytest.mark.parametrize("count, where", [
    ("", ""), ("x", ""), ("-1", ""), ("1.5", ""), ("٣", ""), ("²", ""),
    ("5", "before="), ("5", "before=x"), ("5", "after=-1"), ("5", "since=3"),
    ("5", "before=1 after=2"), ("5", "Before=3"), ("5", "before=٣"),
])
def test_parse_history_rejects_bad_fields(count, where):
    result = p.parse_history(count, where, cap=1000)
    assert isinstance(result, ProtocolError)
    assert result.code == 400


# Ids are BIGINT in MariaDB and INTEGER in SQLite: 64 bits, signed. A larger
# number cannot name a message; passed on, SQLite raised OverflowError and
# the client got ERR 503 for what is its own mistake.
@pytest.mark.parametrize("count, where", [
    ("5", "before=9223372036854775808"), ("5", "after=9223372036854775808"),
    ("5", "after=" + "9" * 4000), ("9223372036854775808", ""), ("9" * 4000, "before=3"),
])
def test_parse_history_rejects_numbers_beyond_64_bits_with_the_usage(count, where):
    assert p.parse_history(count, where, cap=1000) == ProtocolError(
        400, "usage: HISTORY <count> [before=<id>|after=<id>]")


def test_history_command_fields_go_through_parse_history():
    command = parse_command(b"history 10 before=42")
    assert p.parse_history(*command.args, cap=1000) == HistoryQuery(10, before=42)


@pytest.mark.parametrize("name", ["a", "Z", "alice", "a.b-c_D9", "x" * 32, "_", "-", "..."])
def test_good_names(name):
    assert p.check_name(name) is None


@pytest.mark.parametrize("name", ["", "x" * 33, "bad name", "bad!", "bäd", "a/b", "alice\n",
                                  "al\tice", "名前"])
def test_bad_names(name):
    assert p.check_name(name)


@pytest.mark.parametrize("password", ["12345678", "x" * 1024, "é" * 4, "correct horse", "p" * 8])
def test_good_passwords(password):
    assert p.check_password(password) is None


@pytest.mark.parametrize("password", ["", "1234567", "x" * 1025, "é" * 3 + "a", "é" * 513])
def test_bad_passwords(password):
    assert p.check_password(password)


# --- server lines --------------------------------------------------------

def frame_server_line(data):
    """A formatted server line, as the client's framer delivers it."""
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    frames = LineFramer().feed(data)
    assert len(frames) == 1
    return parse_server_line(frames[0])


def test_msg_round_trip():
    data = p.format_msg(17, "2026-11-24T13:05:01.123Z", "alice", "hello   big world")
    assert data == b"MSG 17 2026-11-24T13:05:01.123Z alice hello   big world\n"
    event = frame_server_line(data)
    assert event == p.ServerEvent("MSG", id=17, ts="2026-11-24T13:05:01.123Z", name="alice",
                                  text="hello   big world")


def test_priv_round_trip():
    data = p.format_priv(18, "2026-11-24T13:05:01.123Z", "alice", "bob", "psst  hi")
    assert data == b"PRIV 18 2026-11-24T13:05:01.123Z alice bob psst  hi\n"
    event = frame_server_line(data)
    assert (event.kind, event.id, event.ts, event.name, event.to, event.text) == (
        "PRIV", 18, "2026-11-24T13:05:01.123Z", "alice", "bob", "psst  hi")


def test_ok_and_err_round_trip():
    assert p.format_ok("LOGIN", "alice") == b"OK LOGIN alice\n"
    event = frame_server_line(p.format_ok("LOGIN", "alice"))
    assert (event.kind, event.name, event.text) == ("OK", "LOGIN", "alice")
    assert p.format_ok("HISTORY", 3) == b"OK HISTORY 3\n"
    event = frame_server_line(p.format_ok("HISTORY", 3))
    assert (event.kind, event.name, event.count) == ("OK", "HISTORY", 3)
    assert p.format_err(401, "bad name or password") == b"ERR 401 bad name or password\n"
    event = frame_server_line(p.format_err(401, "bad name or password"))
    assert (event.kind, event.code, event.text) == ("ERR", 401, "bad name or password")


def test_users_are_sorted_and_round_trip():
    data = p.format_users(["carol", "Bob", "alice"])
    assert data == b"USERS 3 alice Bob carol\n"
    event = frame_server_line(data)
    assert (event.kind, event.count, event.names) == ("USERS", 3, ("alice", "Bob", "carol"))
    assert p.format_users([]) == b"USERS 0\n"
    event = frame_server_line(p.format_users([]))
    assert (event.count, event.names) == (0, ())


def test_users_mark_guests_only_when_given_them():
    # The guests are name keys (A-Z folded), as the server keeps them.
    assert p.format_users(["carol", "Visitor", "alice"], {"visitor"}) == b"USERS 3 alice carol Visitor~\n"
    assert p.format_users(["carol", "Visitor", "alice"]) == b"USERS 3 alice carol Visitor\n"


@pytest.mark.parametrize("data, kind, fields", [
    (p.format_join("alice"), "JOIN", {"name": "alice"}),
    (p.format_leave("alice", "quit: bye now"), "LEAVE", {"name": "alice", "text": "quit: bye now"}),
    (p.format_info("server going down"), "INFO", {"text": "server going down"}),
    (p.format_bye("ping timeout"), "BYE", {"text": "ping timeout"}),
    (p.format_kicked(300, "be nice"), "KICKED", {"count": 300, "text": "be nice"}),
    (p.format_banned("spam"), "BANNED", {"text": "spam"}),
    (p.format_ping("t123"), "PING", {"text": "t123"}),
    (p.format_pong("a b"), "PONG", {"text": "a b"}),
    (p.format_pong(""), "PONG", {"text": ""}),
])
def test_event_lines_round_trip(data, kind, fields):
    event = frame_server_line(data)
    assert event.kind == kind
    for field, value in fields.items():
        assert getattr(event, field) == value


def test_exact_event_lines():
    assert p.format_join("alice") == b"JOIN alice\n"
    assert p.format_leave("alice", "quit") == b"LEAVE alice quit\n"
    assert p.format_kicked(300, "be nice") == b"KICKED 300 be nice\n"
    assert p.format_pong("") == b"PONG\n"
    assert p.format_pong("x") == b"PONG x\n"
    assert p.format_bye("bye") == b"BYE bye\n"


def test_parse_server_line_ignores_nonsense():
    for raw in [b"", b"HELLO there", b"MSG notanumber ts a b", b"ERR abc x", b"\xff\xfe",
                b"USERS x"]:
        assert parse_server_line(raw) is None


def test_format_command_and_parse_command_agree():
    data = p.format_command("TELL", "bob", "see  you")
    assert data == b"TELL bob see  you\n"
    assert parse_command(LineFramer().feed(data)[0]) == Command("TELL", ("bob", "see  you"))
    with pytest.raises(ValueError):
        p.format_command("SAY", "two\nlines")
    with pytest.raises(ValueError):
        p.format_command("SAY", "carriage\rreturn")


# What a client can say comes back to every client intact: SAY's text,
# formatted into MSG by the server and parsed by the client.
sayable = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"),
    min_size=1, max_size=60)


@PROPERTY
@given(st.text(alphabet=" \tab\x01é", max_size=8))
def test_property_say_s_shortcut_parses_as_any_other_spelling_of_say(text):
    """parse_command takes "SAY " by a shortcut; "say " goes the general way."""
    assert parse_command(("SAY " + text).encode()) == parse_command(("say " + text).encode())


@PROPERTY
@given(sayable, st.integers(1, 2**53), st.sampled_from(["alice", "B.o-b_9", "x" * 32]))
def test_property_said_text_survives_msg_and_priv(text, msg_id, name):
    command = parse_command(("SAY " + text).encode("utf-8"))
    if not isinstance(command, Command):
        return
    said = command.args[0]
    ts = p.format_timestamp(1795525501123)
    event = frame_server_line(p.format_msg(msg_id, ts, name, said))
    assert (event.kind, event.id, event.ts, event.name, event.text) == ("MSG", msg_id, ts, name, said)
    event = frame_server_line(p.format_priv(msg_id, ts, name, "carol", said))
    assert (event.kind, event.name, event.to, event.text) == ("PRIV", name, "carol", said)


# --- timestamps ----------------------------------------------------------

def test_format_timestamp():
    epoch_ms = calendar.timegm((2026, 11, 24, 13, 5, 1)) * 1000 + 123
    assert p.format_timestamp(epoch_ms) == "2026-11-24T13:05:01.123Z"
    assert p.format_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert p.format_timestamp(999) == "1970-01-01T00:00:00.999Z"
    assert p.format_timestamp(1000) == "1970-01-01T00:00:01.000Z"
    assert p.format_timestamp(calendar.timegm((2024, 2, 29, 23, 59, 59)) * 1000 + 7) == \
        "2024-02-29T23:59:59.007Z"


@PROPERTY
@given(st.integers(0, 253402300799999))
def test_property_timestamps_have_one_shape_and_sort_like_time(epoch_ms):
    ts = p.format_timestamp(epoch_ms)
    assert len(ts) == 24 and ts[10] == "T" and ts[19] == "." and ts.endswith("Z")
    later = p.format_timestamp(min(epoch_ms + 1, 253402300799999))
    assert later >= ts


# --- which line answers which request (Exchange) ----------------------------

ME = "alice"
TS = "2026-11-24T13:05:01.123Z"


def _answer_lines(request, ok):
    """The server lines that answer ``request``, as protocol v1 says."""
    verb, text = request.verb, request.text
    if not ok and verb not in ("PING", "QUIT", "HELP"):
        return ["ERR 400 refused"]
    if verb == "SAY":
        return ["MSG 9 %s %s %s" % (TS, ME, text)]
    if verb == "TELL":
        return ["PRIV 9 %s %s %s %s" % (TS, ME, request.to, text)]
    if verb == "WHO":
        return ["USERS 2 alice bob"]
    if verb == "HISTORY":
        return ["MSG %d %s bob old %d" % (i, TS, i) for i in range(1, 3)] + ["OK HISTORY 2"]
    if verb == "REGISTER":
        return ["OK REGISTER carol"]
    if verb == "PING":
        return ["PONG " + text]
    if verb == "QUIT":
        return ["BYE goodbye"]
    if verb == "HELP":
        return ["INFO SAY <text>: say it to the room", "INFO WHO: who is online", "OK HELP"]
    raise AssertionError(verb)


# What others say arrives between answers, never inside one: including
# lines that look like an answer to what is waiting (bob says the same text).
UNSOLICITED_LINES = [
    "PING 123", "INFO the server restarts at noon", "JOIN bob", "LEAVE bob quit",
    "MSG 10 %s bob same text" % TS, "PRIV 11 %s bob alice same text" % TS,
    "MSG 12 %s alice from my other session" % TS, "KICKED 30 calm down",
]

requests = st.lists(st.tuples(
    st.sampled_from([("SAY", "same text"), ("SAY", "other"), ("TELL", "bob", "same text"), ("WHO",),
                     ("HISTORY", "2"), ("REGISTER", "carol", "password1"), ("PING", "tok"), ("HELP",)]),
    st.booleans(),                                     # answered OK, or ERR
    st.lists(st.sampled_from(UNSOLICITED_LINES), max_size=2),   # heard before the answer
    st.integers(min_value=0, max_value=3),             # how many requests are sent ahead
), max_size=12)


@given(requests)
def test_an_exchange_stays_in_step_whatever_arrives_between_answers(script):
    exchange = p.Exchange()
    exchange.request("LOGIN", ME, "password1")
    for line in ["OK LOGIN alice", "MSG 1 %s bob hi" % TS, "OK HISTORY 1", "USERS 1 alice"]:
        answer = exchange.hear(p.parse_server_line(line.encode()))
        assert answer.request.verb == "LOGIN"
    assert answer.complete and not exchange and exchange.account == ME

    made = [p.Request(fields[0], tuple(fields[1:])) for fields, _, _, _ in script]
    sent = 0
    for index, (_, ok, others, ahead) in enumerate(script):
        # The client pipelines: up to ``ahead`` requests beyond this one are sent already.
        while sent < min(len(made), index + 1 + ahead):
            exchange.request(made[sent].verb, *made[sent].fields)
            sent += 1
        for line in others:
            answer = exchange.hear(p.parse_server_line(line.encode()))
            assert not answer.complete
            # A live MSG cannot be told from history while a HISTORY waits:
            # it is taken as part of that answer, which still ends where it should.
            # So is an INFO while a HELP waits.
            waiting = exchange.waiting[0].verb if exchange.waiting else None
            if not ((line.startswith("MSG") and waiting == "HISTORY")
                    or (line.startswith("INFO") and waiting == "HELP")):
                assert answer == p.UNSOLICITED
        lines = _answer_lines(made[index], ok)
        for position, line in enumerate(lines):
            answer = exchange.hear(p.parse_server_line(line.encode()))
            assert answer.request == made[index]
            assert answer.complete == (position == len(lines) - 1)
        assert len(exchange) == sent - index - 1
    assert not exchange
    # PONG answers the server's PING, so nothing waits for an answer to it.
    exchange.request("PONG", "123")
    assert not exchange


# --- protocol v1.1: rooms and private conversations ------------------------

@pytest.mark.parametrize("line, command", [
    (b"CAP rooms", Command("CAP", ("rooms",))),
    (b"cap ROOMS \t", Command("CAP", ("rooms",))),
    (b"CAP Guests", Command("CAP", ("guests",))),
    (b"JOIN #homework", Command("JOIN", ("#homework",))),
    (b"join #Home.Work-2_b  ", Command("JOIN", ("#Home.Work-2_b",))),
    (b"PART #homework", Command("PART", ("#homework", ""))),
    (b"PART #homework  off to bed  now", Command("PART", ("#homework", "off to bed  now"))),
    (b"TOPIC #homework", Command("TOPIC", ("#homework", ""))),
    (b"TOPIC #homework   ", Command("TOPIC", ("#homework", ""))),
    (b"TOPIC #homework Maths  until Friday \t", Command("TOPIC", ("#homework", "Maths  until Friday"))),
    (b"TOPIC #homework -", Command("TOPIC", ("#homework", p.CLEAR_TOPIC))),
    (b"RSAY #homework hello  all ", Command("RSAY", ("#homework", "hello  all "))),
    (b"RSAY #homework /me waves", Command("RSAY", ("#homework", "/me waves"))),
    (b"LIST", Command("LIST", ())),
    (b"LIST whatever", Command("LIST", ())),
    (b"ROOMS", Command("ROOMS", ())),
    (b"NAMES #homework", Command("NAMES", ("#homework",))),
    (b"HISTORY #homework 20", Command(p.ROOM_HISTORY, ("#homework", "20", ""))),
    (b"history  #homework  20  before=7", Command(p.ROOM_HISTORY, ("#homework", "20", "before=7"))),
    (b"HISTORY @bob 5 after=3", Command(p.ROOM_HISTORY, ("@bob", "5", "after=3"))),
    (b"HISTORY * 1000 after=0", Command(p.ROOM_HISTORY, ("*", "1000", "after=0"))),
    (b"HISTORY * 99999 after=12 ", Command(p.ROOM_HISTORY, ("*", "99999", "after=12"))),
])
def test_every_v1_1_verb_parses(line, command):
    assert parse_command(line) == command


def test_v1_history_is_parsed_as_it_always_was():
    # A first field that is no room, @name or * is v1's count, checked by
    # the server (parse_history) after LOGIN is asked for, as before.
    assert parse_command(b"HISTORY 20") == Command("HISTORY", ("20", ""))
    assert parse_command(b"HISTORY x") == Command("HISTORY", ("x", ""))
    assert parse_command(b"HISTORY 5 since=3") == Command("HISTORY", ("5", "since=3"))
    assert parse_command(b"HISTORY") == ProtocolError(400, "usage: HISTORY <count> [before=<id>|after=<id>]")


ROOM_RULE = "room names are # and 1 to 32 characters of A-Z a-z 0-9 _ . -"
HISTORY_USAGE = "usage: HISTORY <#room|@name|*> <count> [before=<id>|after=<id>]"


@pytest.mark.parametrize("line, text", [
    (b"CAP", "usage: CAP rooms|guests"),
    (b"CAP  ", "usage: CAP rooms|guests"),
    (b"CAP irc", "unknown capability irc (this server knows: rooms guests)"),
    (b"CAP rooms extra", "unknown capability rooms extra (this server knows: rooms guests)"),
    (b"JOIN", "usage: JOIN <#room>"),
    (b"JOIN homework", "usage: JOIN <#room> (%s)" % ROOM_RULE),
    (b"JOIN #", "usage: JOIN <#room> (%s)" % ROOM_RULE),
    (b"JOIN ##a", "usage: JOIN <#room> (%s)" % ROOM_RULE),
    (b"JOIN #a #b", "usage: JOIN <#room> (%s)" % ROOM_RULE),
    (b"JOIN #" + b"x" * 33, "usage: JOIN <#room> (%s)" % ROOM_RULE),
    ("JOIN #caf\u00e9".encode(), "usage: JOIN <#room> (%s)" % ROOM_RULE),
    (b"PART", "usage: PART <#room> [reason]"),
    (b"PART general", "usage: PART <#room> [reason] (%s)" % ROOM_RULE),
    (b"TOPIC", "usage: TOPIC <#room> [text|-]"),
    (b"TOPIC #a/b new", "usage: TOPIC <#room> [text|-] (%s)" % ROOM_RULE),
    (b"RSAY", "usage: RSAY <#room> <text>"),
    (b"RSAY #homework", "usage: RSAY <#room> <text>"),
    (b"RSAY #homework  \t ", "usage: RSAY <#room> <text>"),
    (b"RSAY homework hi", "usage: RSAY <#room> <text> (%s)" % ROOM_RULE),
    (b"NAMES", "usage: NAMES <#room>"),
    (b"NAMES #a!", "usage: NAMES <#room> (%s)" % ROOM_RULE),
    (b"HISTORY #homework", HISTORY_USAGE),
    (b"HISTORY #homework x", HISTORY_USAGE),
    (b"HISTORY #homework -1", HISTORY_USAGE),
    (b"HISTORY #homework 9223372036854775808", HISTORY_USAGE),
    (b"HISTORY #homework 5 since=3", HISTORY_USAGE),
    (b"HISTORY #homework 5 before=", HISTORY_USAGE),
    (b"HISTORY #homework 5 after=9223372036854775808", HISTORY_USAGE),
    (b"HISTORY #home!work 5", "%s (%s)" % (HISTORY_USAGE, ROOM_RULE)),
    (b"HISTORY @ 5", "%s (names are 1 to 32 characters of A-Z a-z 0-9 _ . -)" % HISTORY_USAGE),
    (b"HISTORY @bob! 5", "%s (names are 1 to 32 characters of A-Z a-z 0-9 _ . -)" % HISTORY_USAGE),
    (b"HISTORY *", HISTORY_USAGE),
    (b"HISTORY **", HISTORY_USAGE),
    (b"HISTORY * 10", "%s (* needs after=<id>)" % HISTORY_USAGE),
    (b"HISTORY * 10 before=5", "%s (* needs after=<id>)" % HISTORY_USAGE),
])
def test_v1_1_lines_with_bad_fields_are_400_with_the_usage(line, text):
    assert parse_command(line) == ProtocolError(400, text)


def test_the_v1_1_history_command_is_not_a_verb_to_type():
    assert parse_command(("%s #a 5" % p.ROOM_HISTORY).encode()).code == 421


def test_only_cap_of_the_v1_1_verbs_works_before_login():
    assert "CAP" in p.PRE_LOGIN_VERBS
    assert not (set(p.ROOM_VERBS) - {"CAP"}) & p.PRE_LOGIN_VERBS
    assert "RSAY" in p.MESSAGE_VERBS


def test_lowercase_v1_1_verbs():
    for line in [b"cap rooms", b"join #a", b"part #a", b"topic #a", b"rsay #a hi", b"list", b"rooms",
                 b"names #a", b"history #a 5"]:
        assert isinstance(parse_command(line), Command), line


@pytest.mark.parametrize("room", ["#a", "#general", "#Home.Work-2_b", "#" + "x" * 32, "#-", "#..."])
def test_good_room_names(room):
    assert p.check_room(room) is None


@pytest.mark.parametrize("room", ["", "#", "general", "@general", "##", "#" + "x" * 33, "#a b", "#a,b",
                                  "#caf\u00e9", "#\u212aelvin", "#a\t", "#名前", " #a"])
def test_bad_room_names(room):
    assert p.check_room(room) == ROOM_RULE


def test_room_names_are_compared_with_ascii_letters_folded_only():
    assert p.room_key("#HomeWork") == p.room_key("#homework") == "#homework"
    assert p.room_key("#A.B-C_9") == "#a.b-c_9"
    # The Kelvin sign is no K (and is no room name either).
    assert p.room_key("#\u212a") != p.room_key("#k")


def test_check_topic():
    assert p.check_topic("") is None
    assert p.check_topic("x" * 300) is None
    assert p.check_topic("é" * 150) is None
    assert p.check_topic("x" * 301) == "topic too long (max 300 bytes)"
    assert p.check_topic("é" * 151) == "topic too long (max 300 bytes)"
    assert p.check_topic("x" * 20, max_bytes=10) == "topic too long (max 10 bytes)"
    assert p.check_topic("a\x07b") == "control characters are not allowed"


def test_room_refusals_read_the_same_whether_or_not_the_room_exists():
    assert p.format_err(*p.not_in_room("#secret")) == b"ERR 404 no such room #secret, or you are not in it\n"
    assert p.format_err(*p.too_many_rooms(64)) == b"ERR 405 too many rooms: an account may be in at most 64\n"
    assert p.format_err(*p.too_many_rooms(10000, on_server=True)) == \
        b"ERR 405 too many rooms: the server keeps at most 10000\n"


def test_a_v1_1_history_command_gives_its_target_and_query():
    command = parse_command(b"HISTORY #homework 5000 before=42")
    target, count, where = command.args
    assert p.history_target(target) == p.HistoryTarget("room", "#homework")
    assert p.parse_history(count, where, cap=1000) == HistoryQuery(1000, before=42)
    command = parse_command(b"HISTORY @Bob 3")
    assert p.history_target(command.args[0]) == p.HistoryTarget("peer", "Bob")
    assert p.parse_history(*command.args[1:], cap=1000) == HistoryQuery(3)
    command = parse_command(b"HISTORY * 50 after=7")
    assert p.history_target(command.args[0]) == p.HistoryTarget("everything")
    assert p.parse_history(*command.args[1:], cap=1000) == HistoryQuery(50, after=7)


@PROPERTY
@given(st.sampled_from([b"CAP ", b"JOIN ", b"PART ", b"TOPIC ", b"RSAY ", b"LIST ", b"ROOMS ", b"NAMES ",
                        b"HISTORY #", b"HISTORY @", b"HISTORY * ", b"HISTORY "]),
       st.lists(st.sampled_from([b"#a", b"#", b"@bob", b"*", b" ", b"5", b"after=3", b"before=x", b"rooms",
                                 b"-", b"\t", b"#B.c", b"x" * 33, b"\xc3\xa9"]), max_size=6))
def test_property_v1_1_lines_parse_to_a_checked_command_or_a_400(verb, pieces):
    result = parse_command(verb + b"".join(pieces))
    assert isinstance(result, (Command, ProtocolError))
    if isinstance(result, ProtocolError):
        assert result.code == 400 and result.text
        return
    assert len(result.args) == p.ALL_VERBS[result.verb][0]
    if result.verb in ("JOIN", "PART", "TOPIC", "RSAY", "NAMES"):
        assert p.check_room(result.args[0]) is None
    if result.verb == p.ROOM_HISTORY:
        target, count, where = result.args
        assert isinstance(p.parse_history(count, where, cap=1000), HistoryQuery)
        if target == "*":
            assert p.parse_history(count, where, cap=1000).after is not None


# --- v1.1 server lines -------------------------------------------------------

def test_rmsg_round_trip():
    data = p.format_rmsg(42, TS, "#Homework", "alice", "page 12,  exercise 3")
    assert data == b"RMSG 42 2026-11-24T13:05:01.123Z #Homework alice page 12,  exercise 3\n"
    assert frame_server_line(data) == p.ServerEvent(
        "RMSG", id=42, ts=TS, room="#Homework", name="alice", text="page 12,  exercise 3")


@pytest.mark.parametrize("data, line, fields", [
    (p.format_joined("#homework", "bob"), b"JOINED #homework bob", {"room": "#homework", "name": "bob"}),
    (p.format_parted("#homework", "bob", "off to bed"), b"PARTED #homework bob off to bed",
     {"room": "#homework", "name": "bob", "text": "off to bed"}),
    (p.format_parted("#homework", "bob"), b"PARTED #homework bob", {"room": "#homework", "name": "bob", "text": ""}),
    (p.format_topic("#homework", "bob", TS, "Maths  until Friday"),
     b"TOPIC #homework bob 2026-11-24T13:05:01.123Z Maths  until Friday",
     {"room": "#homework", "name": "bob", "ts": TS, "text": "Maths  until Friday"}),
    # Cleared by bob: who and when, no text.
    (p.format_topic("#homework", "bob", TS), b"TOPIC #homework bob 2026-11-24T13:05:01.123Z",
     {"room": "#homework", "name": "bob", "ts": TS, "text": ""}),
    # Never had a topic.
    (p.format_topic("#homework"), b"TOPIC #homework", {"room": "#homework", "name": "", "ts": "", "text": ""}),
    (p.format_room("#homework", 2, 7, "Maths  until Friday"), b"ROOM #homework 2 7 Maths  until Friday",
     {"room": "#homework", "online": 2, "count": 7, "text": "Maths  until Friday"}),
    (p.format_room("#quiet", 0, 1), b"ROOM #quiet 0 1", {"room": "#quiet", "online": 0, "count": 1, "text": ""}),
    (p.format_deleted("#spam", "spam, sorry"), b"DELETED #spam spam, sorry", {"room": "#spam", "text": "spam, sorry"}),
    (p.format_cap("#lobby"), b"OK CAP rooms #lobby", {"kind": "OK", "name": "CAP", "room": "#lobby"}),
    (p.format_cap(), b"OK CAP rooms #general", {"name": "CAP", "room": "#general", "text": "rooms #general"}),
    (p.format_cap("#lobby", "guests"), b"OK CAP guests", {"name": "CAP", "room": "", "text": "guests"}),
    (p.format_ok("JOIN", "#Homework"), b"OK JOIN #Homework", {"name": "JOIN", "room": "#Homework"}),
    (p.format_ok("PART", "#homework"), b"OK PART #homework", {"name": "PART", "room": "#homework"}),
    (p.format_ok("TOPIC", "#homework"), b"OK TOPIC #homework", {"name": "TOPIC", "room": "#homework"}),
    (p.format_ok("NAMES", "#homework"), b"OK NAMES #homework", {"name": "NAMES", "room": "#homework"}),
    (p.format_ok("LIST", 12), b"OK LIST 12", {"name": "LIST", "count": 12, "room": ""}),
    (p.format_ok("ROOMS", 3), b"OK ROOMS 3", {"name": "ROOMS", "count": 3}),
    (p.format_ok("HISTORY", 0), b"OK HISTORY 0", {"name": "HISTORY", "count": 0}),
])
def test_v1_1_lines_are_exact_and_round_trip(data, line, fields):
    assert data == line + b"\n"
    event = frame_server_line(data)
    for field, value in fields.items():
        assert getattr(event, field) == value, field


def test_members_round_trip_sorted():
    lines = p.format_members("#homework", ["carol", "Bob", "alice"])
    assert lines == [b"MEMBERS #homework 3 alice Bob carol\n"]
    event = frame_server_line(lines[0])
    assert (event.kind, event.room, event.count, event.names) == ("MEMBERS", "#homework", 3, ("alice", "Bob", "carol"))
    assert p.format_members("#empty", []) == [b"MEMBERS #empty 0\n"]


def test_a_big_room_s_members_come_in_lines_a_client_can_read():
    names = ["m%031d" % i for i in range(1000)]  # 32 bytes each: 33 KB of names
    lines = p.format_members("#" + "r" * 32, reversed(names))
    assert len(lines) > 1
    heard = []
    for data in lines:
        assert len(data) - 1 <= p.MAX_LINE_BYTES
        event = frame_server_line(data)
        assert (event.kind, event.count) == ("MEMBERS", 1000)
        heard += event.names
    assert heard == names


def test_v1_1_lines_that_make_no_sense_are_ignored():
    for raw in [b"RMSG x ts #a bob hi", b"ROOM #a x 3", b"ROOM #a 1", b"MEMBERS #a many a b", b"MEMBERS"]:
        assert parse_server_line(raw) is None, raw


class Stored(NamedTuple):
    """A stored message as a store that keeps rooms hands it over."""
    id: int
    created_at: str
    sender: str
    recipient: Optional[str]
    body: str
    room: Optional[str] = None


class V1Message(NamedTuple):
    """A stored message as v1's store hands it over: no room."""
    id: int
    created_at: str
    sender: str
    recipient: Optional[str]
    body: str


def test_a_stored_message_is_the_line_of_its_room_or_conversation():
    assert p.format_message(Stored(1, TS, "bob", None, "hi all", "#General"), "#general") == \
        p.format_msg(1, TS, "bob", "hi all")
    assert p.format_message(Stored(2, TS, "bob", None, "page 12", "#homework"), "#general") == \
        p.format_rmsg(2, TS, "#homework", "bob", "page 12")
    assert p.format_message(Stored(3, TS, "bob", "alice", "psst", None), "#general") == \
        p.format_priv(3, TS, "bob", "alice", "psst")
    # A message from a store that knows no rooms (v1's Message) is the default room's.
    assert p.format_message(V1Message(4, TS, "bob", None, "old")) == p.format_msg(4, TS, "bob", "old")


def test_a_v1_1_history_answer():
    messages = [Stored(1, TS, "bob", None, "hi", "#general"), Stored(2, TS, "bob", None, "p. 12", "#homework"),
                Stored(3, TS, "alice", "bob", "psst", None)]
    assert p.format_history_of(messages, "#general") == [
        b"MSG 1 2026-11-24T13:05:01.123Z bob hi\n",
        b"RMSG 2 2026-11-24T13:05:01.123Z #homework bob p. 12\n",
        b"PRIV 3 2026-11-24T13:05:01.123Z alice bob psst\n",
        b"OK HISTORY 3\n"]
    assert p.format_history_of([]) == [b"OK HISTORY 0\n"]


def test_help_is_v1_s_unless_the_session_opted_in():
    v1 = p.format_help()
    assert v1 == p.format_help(rooms=False)
    assert [line.split()[1].rstrip(b":").decode() for line in v1[:-1]] == list(p.VERBS)
    assert not any(b"#room" in line or line.startswith(b"INFO CAP") for line in v1)
    rooms = p.format_help(rooms=True)
    assert rooms[:len(v1) - 1] == v1[:-1] and rooms[-1] == b"OK HELP\n"
    added = [line.decode().rstrip("\n") for line in rooms[len(v1) - 1:-1]]
    assert [line.split()[1].rstrip(":") for line in added] == [
        "CAP", "JOIN", "PART", "TOPIC", "RSAY", "LIST", "ROOMS", "NAMES", "HISTORY"]
    assert "INFO JOIN <#room>: join a room (it is made if it does not exist)" in added
    assert all(len(line) <= p.MAX_LINE_BYTES for line in rooms)


room_names = st.from_regex(r"#[A-Za-z0-9_.-]{1,32}", fullmatch=True)


@PROPERTY
@given(sayable, st.integers(1, 2**63 - 1), room_names, st.sampled_from(["alice", "B.o-b_9", "x" * 32]))
def test_property_said_text_survives_rmsg(text, msg_id, room, name):
    command = parse_command(("RSAY %s %s" % (room, text)).encode("utf-8"))
    if not isinstance(command, Command):
        return
    said_room, said = command.args
    assert said_room == room
    event = frame_server_line(p.format_rmsg(msg_id, TS, said_room, name, said))
    assert (event.kind, event.id, event.room, event.name, event.text) == ("RMSG", msg_id, room, name, said)


@PROPERTY
@given(room_names, sayable)
def test_property_a_topic_survives_topic_and_room_lines(room, text):
    command = parse_command(("TOPIC %s %s" % (room, text)).encode("utf-8"))
    if not isinstance(command, Command) or command.args[1] in ("", p.CLEAR_TOPIC):
        return
    topic = command.args[1]
    assert topic == topic.rstrip(" \t")
    event = frame_server_line(p.format_topic(room, "bob", TS, topic))
    assert (event.room, event.name, event.ts, event.text) == (room, "bob", TS, topic)
    event = frame_server_line(p.format_room(room, 1, 2, topic))
    assert (event.room, event.online, event.count, event.text) == (room, 1, 2, topic)


# --- v1.1: which line answers which request ------------------------------------

def hear_all(exchange, lines):
    return [exchange.hear(p.parse_server_line(line.encode())) for line in lines]


def logged_in_exchange(cap=True):
    exchange = p.Exchange()
    if cap:
        exchange.request("CAP", "rooms")
        assert hear_all(exchange, ["OK CAP rooms #general"])[-1].complete
        assert exchange.default_room == "#general"
    exchange.request("LOGIN", ME, "password1")
    assert hear_all(exchange, ["OK LOGIN alice", "OK HISTORY 0", "USERS 1 alice"])[-1].complete
    return exchange


def test_cap_is_answered_by_ok_cap_or_err():
    exchange = p.Exchange()
    exchange.request("CAP", "irc")
    answer, = hear_all(exchange, ["ERR 400 unknown capability irc (this server knows: rooms guests)"])
    assert answer.complete and answer.request.verb == "CAP" and exchange.default_room == ""


def test_join_is_answered_by_topic_members_and_ok_join():
    exchange = logged_in_exchange()
    exchange.request("JOIN", "#homework")
    answers = hear_all(exchange, [
        "JOINED #Homework alice",                       # the account's join, to all its sessions: news
        "TOPIC #random bob %s other room" % TS,          # another room's topic: news
        "TOPIC #Homework bob %s Maths" % TS,
        "MEMBERS #Homework 2 alice bob",
        "OK JOIN #Homework"])
    assert [a.request and a.request.verb for a in answers] == [None, None, "JOIN", "JOIN", "JOIN"]
    assert [a.complete for a in answers] == [False, False, False, False, True]
    assert not exchange


def test_rsay_is_answered_by_our_own_rmsg_in_that_room():
    exchange = logged_in_exchange()
    exchange.request("RSAY", "#homework", "page 12")
    answers = hear_all(exchange, [
        "RMSG 5 %s #homework bob page 12" % TS,         # bob said the same
        "RMSG 6 %s #random alice page 12" % TS,         # we said it in another room
        "MSG 7 %s alice page 12" % TS,                  # and in the default room
        "RMSG 8 %s #HomeWork alice page 12" % TS])
    assert [a.complete for a in answers] == [False, False, False, True]
    assert answers[-1].request.verb == "RSAY"


def test_rsay_to_the_default_room_is_answered_by_msg():
    exchange = logged_in_exchange()
    exchange.request("RSAY", "#General", "hello")
    assert hear_all(exchange, ["RMSG 5 %s #other alice hello" % TS, "MSG 6 %s alice hello" % TS]) == [
        p.UNSOLICITED, p.Answer(p.Request("RSAY", ("#General", "hello")), True)]


def test_without_ok_cap_an_rsay_may_be_answered_by_a_msg_too():
    # A session that opted in by JOIN alone does not know the default room's
    # name: the echo of its RSAY may be either line.
    exchange = logged_in_exchange(cap=False)
    exchange.request("RSAY", "#general", "hello")
    assert hear_all(exchange, ["MSG 6 %s alice hello" % TS])[-1].complete
    exchange.request("RSAY", "#homework", "hello")
    assert hear_all(exchange, ["RMSG 7 %s #homework alice hello" % TS])[-1].complete


@pytest.mark.parametrize("request_fields, lines", [
    (("PART", "#homework", "bye"), ["OK PART #homework"]),
    (("TOPIC", "#homework"), ["TOPIC #homework", "OK TOPIC #homework"]),
    (("TOPIC", "#homework", "-"), ["TOPIC #homework alice %s" % TS, "OK TOPIC #homework"]),
    (("NAMES", "#homework"), ["MEMBERS #homework 3 a b", "MEMBERS #homework 3 c", "OK NAMES #homework"]),
    (("LIST",), ["ROOM #general 2 9 welcome", "ROOM #homework 1 3", "OK LIST 2"]),
    (("ROOMS",), ["OK ROOMS 0"]),
    (("HISTORY", "#homework", "2"), ["RMSG 1 %s #homework bob a" % TS, "RMSG 2 %s #homework bob b" % TS,
                                     "OK HISTORY 2"]),
    (("HISTORY", "#general", "1"), ["MSG 1 %s bob a" % TS, "OK HISTORY 1"]),
    (("HISTORY", "@Bob", "2", "before=9"), ["PRIV 1 %s bob alice a" % TS, "PRIV 2 %s alice bob b" % TS,
                                            "OK HISTORY 2"]),
    (("HISTORY", "*", "3", "after=0"), ["MSG 1 %s bob a" % TS, "RMSG 2 %s #homework bob b" % TS,
                                        "PRIV 3 %s bob alice c" % TS, "OK HISTORY 3"]),
    (("HISTORY", "#secret", "5"), ["ERR 404 no such room #secret, or you are not in it"]),
    (("JOIN", "#x"), ["ERR 405 too many rooms: an account may be in at most 64"]),
])
def test_each_v1_1_answer_ends_where_it_should(request_fields, lines):
    exchange = logged_in_exchange()
    exchange.request(*request_fields)
    answers = hear_all(exchange, lines)
    assert all(a.request == p.Request(request_fields[0], request_fields[1:]) for a in answers)
    assert [a.complete for a in answers] == [False] * (len(lines) - 1) + [True]


def test_a_room_history_does_not_take_other_rooms_or_conversations():
    exchange = logged_in_exchange()
    exchange.request("HISTORY", "#homework", "5")
    assert hear_all(exchange, ["RMSG 9 %s #random bob live" % TS, "MSG 10 %s bob live" % TS,
                               "PRIV 11 %s bob alice live" % TS]) == [p.UNSOLICITED] * 3
    exchange.clear()
    exchange.request("HISTORY", "@bob", "5")
    assert hear_all(exchange, ["PRIV 12 %s carol alice live" % TS, "RMSG 9 %s #random bob live" % TS,
                               "PRIV 13 %s bob alice live" % TS]) == [p.UNSOLICITED] * 2 + [
        p.Answer(p.Request("HISTORY", ("@bob", "5")))]


# A v1.1 client's script: requests, each answered OK or refused, with lines
# from others arriving before each answer. Some of those lines cannot be
# told from the answer's own (docs/PROTOCOL.md says which); the model below
# says which, and the rest must stay unsolicited.
ROOM_REQUESTS = [
    ("RSAY", "#homework", "same text"), ("RSAY", "#General", "same text"), ("RSAY", "#random", "other"),
    ("JOIN", "#homework"), ("PART", "#homework", "bye"), ("TOPIC", "#homework"), ("TOPIC", "#homework", "new"),
    ("LIST",), ("ROOMS",), ("NAMES", "#homework"), ("HISTORY", "#homework", "2"), ("HISTORY", "#general", "2"),
    ("HISTORY", "@bob", "2"), ("HISTORY", "*", "3", "after=0"), ("CAP", "rooms"),
    ("SAY", "same text"), ("TELL", "bob", "same text"), ("HISTORY", "2"), ("WHO",), ("PING", "tok"), ("HELP",),
]


def _room_answer_lines(request, ok):
    verb, fields = request.verb, request.fields
    if not ok and verb not in ("PING", "QUIT", "HELP"):
        return ["ERR 404 no such room %s, or you are not in it" % request.room]
    if verb == "RSAY":
        if p.room_key(request.room) == "#general":
            return ["MSG 30 %s %s %s" % (TS, ME, request.text)]
        return ["RMSG 30 %s %s %s %s" % (TS, request.room, ME, request.text)]
    if verb == "JOIN":
        return ["TOPIC %s bob %s Maths" % (request.room, TS), "MEMBERS %s 2 alice bob" % request.room,
                "OK JOIN %s" % request.room]
    if verb == "PART":
        return ["OK PART %s" % request.room]
    if verb == "TOPIC":
        line = "TOPIC %s alice %s %s" % (request.room, TS, fields[1]) if len(fields) > 1 else \
            "TOPIC %s" % request.room
        return [line, "OK TOPIC %s" % request.room]
    if verb == "LIST":
        return ["ROOM #general 2 9 welcome", "ROOM #homework 1 3", "OK LIST 2"]
    if verb == "ROOMS":
        return ["ROOM #homework 1 3", "OK ROOMS 1"]
    if verb == "NAMES":
        return ["MEMBERS %s 3 alice bob" % request.room, "MEMBERS %s 3 carol" % request.room,
                "OK NAMES %s" % request.room]
    if verb == "CAP":
        return ["OK CAP rooms #general"]
    if verb == "HISTORY" and fields[0] == "#homework":
        return ["RMSG %d %s #homework bob old %d" % (i, TS, i) for i in (1, 2)] + ["OK HISTORY 2"]
    if verb == "HISTORY" and fields[0] == "#general":
        return ["MSG %d %s bob old %d" % (i, TS, i) for i in (1, 2)] + ["OK HISTORY 2"]
    if verb == "HISTORY" and fields[0] == "@bob":
        return ["PRIV 1 %s bob alice old" % TS, "PRIV 2 %s alice bob old" % TS, "OK HISTORY 2"]
    if verb == "HISTORY" and fields[0] == "*":
        return ["MSG 1 %s bob a" % TS, "RMSG 2 %s #random bob b" % TS, "PRIV 3 %s carol alice c" % TS,
                "OK HISTORY 3"]
    return _answer_lines(request, ok)


ROOM_UNSOLICITED_LINES = UNSOLICITED_LINES + [
    "RMSG 20 %s #homework bob same text" % TS,      # someone else, same text, same room
    "RMSG 21 %s #random alice same text" % TS,      # our account, same text, another room
    "RMSG 22 %s #homework alice from my other session" % TS,
    "JOINED #homework carol", "JOINED #homework alice", "PARTED #homework carol off to bed",
    "TOPIC #homework bob %s new topic" % TS, "TOPIC #random bob %s other" % TS,
    "DELETED #random spam", "PRIV 23 %s carol alice hi" % TS,
]


def taken_into_the_answer(waiting, line):
    """Whether PROTOCOL.md says ``line``, arriving unsolicited while
    ``waiting`` is the oldest request, cannot be told from its answer."""
    if waiting is None:
        return False
    event = p.parse_server_line(line.encode())
    verb, kind, fields = waiting.verb, event.kind, waiting.fields
    if verb == "HELP":
        return kind == "INFO"
    if verb in ("JOIN", "TOPIC") and kind == "TOPIC":
        return p.room_key(event.room) == p.room_key(waiting.room)
    if verb != "HISTORY" or kind not in ("MSG", "RMSG", "PRIV"):
        return False
    target = fields[0]
    if target == "*":
        return True
    if target == "@bob":
        return kind == "PRIV" and {event.name, event.to} == {"alice", "bob"}
    if target.startswith("#") and p.room_key(target) != "#general":
        return kind == "RMSG" and p.room_key(event.room) == p.room_key(target)
    return kind == "MSG"  # v1's HISTORY <count>, or the default room's


room_script = st.lists(st.tuples(
    st.sampled_from(ROOM_REQUESTS),
    st.booleans(),                                          # answered OK, or ERR
    st.lists(st.sampled_from(ROOM_UNSOLICITED_LINES), max_size=3),   # heard before the answer
    st.integers(min_value=0, max_value=3),                  # how many requests are sent ahead
), max_size=14)


@PROPERTY
@given(room_script)
def test_property_a_v1_1_exchange_stays_in_step_with_room_lines_in_between(script):
    exchange = logged_in_exchange()
    made = [p.Request(fields[0], tuple(fields[1:])) for fields, _, _, _ in script]
    sent = 0
    for index, (_, ok, others, ahead) in enumerate(script):
        while sent < min(len(made), index + 1 + ahead):
            exchange.request(made[sent].verb, *made[sent].fields)
            sent += 1
        for line in others:
            waiting = exchange.waiting[0] if exchange.waiting else None
            answer = exchange.hear(p.parse_server_line(line.encode()))
            assert not answer.complete, line
            if taken_into_the_answer(waiting, line):
                assert answer == p.Answer(waiting)
            else:
                assert answer == p.UNSOLICITED, (waiting, line)
        lines = _room_answer_lines(made[index], ok)
        for position, line in enumerate(lines):
            answer = exchange.hear(p.parse_server_line(line.encode()))
            assert answer.request == made[index], line
            assert answer.complete == (position == len(lines) - 1)
        assert len(exchange) == sent - index - 1
    assert not exchange
    assert exchange.default_room == "#general"
