"""Unit tests of sae_protocol: framing, parsing and formatting, no sockets.

The framer is fed byte strings cut in every way a network could cut them;
the parser is fed lines as a client would type them (and as a fuzzer would).
Property tests use hypothesis with small limits so that the edges (a line
exactly at the limit, a run just past the unterminated limit) are reached
with short inputs.
"""

import calendar

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
            assert result.verb in p.VERBS
            assert len(result.args) == p.VERBS[result.verb][0]


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
