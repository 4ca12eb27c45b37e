"""The client's model without curses or sockets: display widths and
wrapping, the input editor, command parsing, the scrollback, and the
connection state machine fed server lines by hand."""

import time

import pytest
from freezegun import freeze_time
from hypothesis import given
from hypothesis import strategies as st

import sae_client_curses as client
from sae_client_curses import (
    Chat, Entry, InputLine, Scrollback, char_width, parse_input, row_text, text_width, wrap,
)

TS = "2026-11-24T13:05:01.123Z"


def rows_text(rows):
    return [row_text(row) for row in rows]


# --- display width and wrapping -------------------------------------------

def test_character_widths():
    assert char_width("a") == 1
    assert char_width("é") == 1
    assert char_width("日") == 2
    assert char_width("😀") == 2
    assert char_width("\u0301") == 0            # combining acute accent
    assert char_width("\u200d") == 0            # zero-width joiner
    assert char_width("\ufe0f") == 0            # emoji presentation selector
    assert text_width("e\u0301te\u0301") == 3
    assert text_width("日本語 ok") == 9


def test_wrap_breaks_at_spaces_and_indents_under_the_text():
    spans = [("12:00 ", "time"), ("<bob> ", ""), ("hello world this is a long line", "")]
    assert rows_text(wrap(spans, 20, 12 - 6)) == [
        "12:00 <bob> hello",
        "      world this is",
        "      a long line",
    ]


def test_wrap_cuts_a_word_longer_than_a_row():
    assert rows_text(wrap([("abcdefghij", "")], 4)) == ["abcd", "efgh", "ij"]


def test_wrap_never_splits_a_wide_character_across_the_edge():
    rows = rows_text(wrap([("a日本語", "")], 4))
    assert rows == ["a日", "本語"]
    assert [text_width(r) for r in rows] == [3, 4]


def test_wrap_keeps_emoji_and_combining_marks_whole():
    text = "😀😀 cafe\u0301 😀"
    rows = rows_text(wrap([(text, "")], 5))
    assert rows == ["😀😀", "cafe\u0301", "😀"]


def test_wrap_keeps_styles():
    rows = wrap([("ab", "x"), ("cd", "y")], 3)
    assert rows == [[("ab", "x"), ("c", "y")], [("d", "y")]]


@given(st.text(alphabet=st.sampled_from("ab 日😀é\u0301-"), max_size=80),
       st.integers(min_value=2, max_value=30))
def test_wrap_rows_fit_and_lose_nothing_but_break_spaces(text, width):
    rows = rows_text(wrap([(text, "")], width))
    assert all(text_width(row) <= width for row in rows)
    assert "".join(rows).replace(" ", "") == text.replace(" ", "")


def test_entry_shows_local_time(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        entry = Entry("message", "hi", "bob", msg_id=1, time=client.local_time(TS))
        assert rows_text(entry.rows(80)) == ["22:05 <bob> hi"]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_server_text_cannot_drive_the_terminal():
    entry = Entry("message", "evil\x1b[2Jtab\there", "bob", msg_id=1, time="12:00")
    assert rows_text(entry.rows(80)) == ["12:00 <bob> evil\ufffd[2Jtab here"]


# --- input editor --------------------------------------------------------

def typed(*keys):
    line = InputLine()
    for key in keys:
        line.key(key)
    return line


def test_editor_moves_and_inserts():
    line = typed(*"helo", "KEY_LEFT", "l")
    assert (line.text, line.cursor) == ("hello", 4)
    line.key("\x01")                                # Ctrl-A
    line.key(">")
    line.key("\x05")                                # Ctrl-E
    line.key("!")
    assert line.text == ">hello!"
    line.key("KEY_HOME")
    line.key("KEY_RIGHT")
    line.key("KEY_DC")
    assert line.text == ">ello!"
    line.key("KEY_END")
    line.key("KEY_BACKSPACE")
    assert (line.text, line.cursor) == (">ello", 5)


def test_editor_cuts_and_yanks():
    line = typed(*"say hello world")
    line.key("\x17")                                # Ctrl-W: the word before the cursor
    assert line.text == "say hello "
    line.key("\x19")                                # Ctrl-Y
    assert line.text == "say hello world"
    for _ in range(6):
        line.key("KEY_LEFT")
    line.key("\x0b")                                # Ctrl-K: to the end
    assert line.text == "say hello"
    line.key("KEY_LEFT")
    line.key("\x15")                                # Ctrl-U: to the start
    assert (line.text, line.cursor) == ("o", 0)


def test_editor_treats_combining_marks_and_wide_characters_as_one():
    line = typed(*"cafe\u0301", "日")
    line.key("KEY_LEFT")
    line.key("KEY_LEFT")
    assert line.cursor == 3                         # before "e" + accent
    line.key("KEY_DC")
    assert line.text == "caf日"
    line.key("KEY_END")
    line.key("KEY_BACKSPACE")
    assert line.text == "caf"


def test_editor_pasted_text_loses_line_breaks_and_controls():
    line = typed("one\ntwo\tthree\x07")
    assert line.text == "one two three"


def test_editor_history_keeps_the_draft():
    line = InputLine()
    for sent in ("first", "second"):
        line.set(sent)
        line.commit()
    for key in "dra":
        line.key(key)
    line.key("KEY_UP")
    assert line.text == "second"
    line.key("KEY_UP")
    line.key("KEY_UP")
    assert line.text == "first"
    line.key("KEY_DOWN")
    assert line.text == "second"
    line.key("KEY_DOWN")
    assert line.text == "dra"


def test_editor_scrolls_a_long_line_sideways():
    line = typed(*"abcdefghijklmnopqrstuvwxyz")
    shown, column = line.view(10)
    assert shown.endswith("z") and text_width(shown) <= 10 and column == text_width(shown)
    assert column < 10                              # room for the cursor after "z"
    line.key("KEY_HOME")
    shown, column = line.view(10)
    assert (shown, column) == ("abcdefghij", 0)
    for _ in range(12):
        line.key("KEY_RIGHT")
    shown, column = line.view(10)
    assert shown[column] == "m" if column < len(shown) else False


def test_editor_scrolls_wide_characters_by_cells():
    line = typed(*"日本語のテキストです")
    shown, column = line.view(9)
    assert text_width(shown) <= 9 and column <= 8
    assert shown.endswith("す")


def test_password_field_shows_stars():
    line = typed(*"secret12")
    assert line.view(20, mask="*") == ("********", 8)


# --- commands ------------------------------------------------------------

@pytest.mark.parametrize("line, action", [
    ("hello", ("say", "", "hello")),
    ("  hello  ", ("say", "", "  hello  ")),
    ("//etc/passwd is a file", ("say", "", "/etc/passwd is a file")),
    ("/msg bob hi there", ("tell", "bob", "hi there")),
    ("/MSG bob  hi", ("tell", "bob", "hi")),
    ("/msg bob", ("local", "", "usage: /msg NAME text")),
    ("/who", ("who", "", "")),
    ("/me waves", ("say", "", "/me waves")),
    ("/ME  waves at bob", ("say", "", "/me waves at bob")),
    ("/me", ("local", "", "usage: /me action (shown as * you action)")),
    ("/help", ("help", "", "")),
    ("/quit gone fishing", ("quit", "", "gone fishing")),
    ("/dance", ("local", "", "unknown command /dance; /help lists the commands")),
])
def test_parse_input(line, action):
    assert tuple(parse_input(line)) == action


def test_an_action_is_shown_in_the_third_person():
    chat = online()
    hear(chat, msg(5, "/me waves", "bob"), "PRIV 6 %s bob alice /me winks" % TS, msg(7, "/me", "bob"))
    screen = screen_text(chat)
    assert "* bob waves" in screen
    assert "<bob> /me" in screen  # nothing after it: no action, said as typed
    chat.key("\x0e")                                # Ctrl-N: the conversation with bob
    assert "* bob winks" in screen_text(chat)


def test_blank_line_is_nothing():
    assert parse_input("   ") is None


# --- scrollback ----------------------------------------------------------

def message(msg_id, text=None, name="bob"):
    return Entry("message", text or "message %d" % msg_id, name, msg_id=msg_id, time="12:00")


def test_scrollback_shows_each_id_once_in_id_order():
    scrollback = Scrollback()
    for msg_id in (1, 2):
        assert scrollback.add(message(msg_id))
    scrollback.add(Entry("info", "reconnected", time="12:01"))
    # The login burst brings 5 and 6; 3 and 4, said while we were away,
    # come with HISTORY after=2 and belong before them.
    assert scrollback.add(message(5), live=False)
    assert not scrollback.add(message(5))
    scrollback.add(message(6))
    scrollback.add(message(3), live=False)
    scrollback.add(message(4), live=False)
    assert rows_text(scrollback.view(80, 10)) == [
        "12:00 <bob> message 1", "12:00 <bob> message 2",
        "12:01 -!- reconnected",
        "12:00 <bob> message 3", "12:00 <bob> message 4",
        "12:00 <bob> message 5", "12:00 <bob> message 6",
    ]


def test_scrollback_pages_up_and_down():
    scrollback = Scrollback()
    for msg_id in range(1, 31):
        scrollback.add(message(msg_id))
    assert rows_text(scrollback.view(80, 10))[-1].endswith("message 30")
    assert not scrollback.page_up()
    view = rows_text(scrollback.view(80, 10))
    assert view[0].endswith("message 12") and view[-1].endswith("message 21")
    assert not scrollback.page_up()
    assert scrollback.page_up()                     # the oldest row is in view
    assert rows_text(scrollback.view(80, 10))[0].endswith("message 1")
    scrollback.page_down()
    assert rows_text(scrollback.view(80, 10))[-1].endswith("message 19")
    scrollback.to_bottom()
    assert rows_text(scrollback.view(80, 10))[-1].endswith("message 30")


def test_scrolled_up_view_stays_put_and_counts_new_messages():
    scrollback = Scrollback()
    for msg_id in range(1, 31):
        scrollback.add(message(msg_id))
    scrollback.view(80, 10)
    scrollback.page_up()
    before = rows_text(scrollback.view(80, 10))
    scrollback.add(message(31))
    scrollback.add(message(32, "a long message " * 10))
    assert rows_text(scrollback.view(80, 10)) == before
    assert scrollback.unseen == 2
    scrollback.page_down()
    scrollback.page_down()
    assert scrollback.unseen == 0
    assert rows_text(scrollback.view(80, 10))[-1].strip().endswith("a long message")


def test_older_history_keeps_the_view():
    scrollback = Scrollback()
    for msg_id in range(51, 71):
        scrollback.add(message(msg_id))
    scrollback.view(80, 10)
    scrollback.page_up()
    scrollback.page_up()
    before = rows_text(scrollback.view(80, 10))
    for msg_id in range(1, 51):
        scrollback.add(message(msg_id), live=False)
    assert rows_text(scrollback.view(80, 10)) == before
    assert scrollback.oldest_id() == 1


# --- the connection state machine ----------------------------------------

def sent(chat):
    lines = bytes(chat.outbox).decode().splitlines()
    chat.outbox.clear()
    return lines


def screen_text(chat, width=80, height=50):
    return "\n".join(rows_text(chat.scrollback.view(width, height)))


def hear(chat, *lines):
    chat.receive("".join(line + "\n" for line in lines).encode())


# What a server of protocol v1.0, which has no rooms, answers to the
# client's two CAP lines (rooms, guests).
NO_ROOMS = "ERR 421 unknown command CAP\nERR 421 unknown command CAP"


def online(name="alice", history=(), users=("alice", "bob")):
    """A client logged in to a server without rooms (protocol v1.0)."""
    chat = Chat("127.0.0.1", 12345, name, "password1")
    chat.submit_login(register=False)
    assert chat.want_connect and chat.state == "connecting"
    chat.connection_made()
    assert sent(chat) == ["CAP rooms", "CAP guests", "LOGIN %s password1" % name]
    hear(chat, NO_ROOMS, "OK LOGIN %s" % name, *history, "OK HISTORY %d" % len(history),
         "USERS %d %s" % (len(users), " ".join(users)))
    assert chat.state == "online" and chat.screen == "chat" and chat.rooms is False
    return chat


def msg(msg_id, text=None, name="bob"):
    return "MSG %d %s %s %s" % (msg_id, TS, name, text or "message %d" % msg_id)


def test_login_shows_history_and_who_is_online():
    chat = online(history=[msg(1), msg(2)])
    assert chat.users == ["alice", "bob"]
    assert "message 2" in screen_text(chat)
    assert not chat.exchange
    assert "2 online" in chat.status()


# What the server really sends (sae_server.py, sae_protocol.py) for each code.
@pytest.mark.parametrize("code, text, words", [
    (400, "usage: SAY <text>", "the server refused the line: usage: SAY <text>"),
    (401, "wrong name or password", "wrong name or password"),
    (401, "log in first", "not logged in"),
    (403, "banned", "this account is banned"),
    (403, "spamming", "this account is banned: spamming"),
    (404, "no such account nobody", "nobody has no account here"),
    (409, "name bob is taken", "that name is taken"),
    (413, "line too long (max 4096 bytes)", "line too long (max 4096 bytes)"),
    (421, "unknown command FOO", "unknown command FOO"),
    (423, "120 kicked, try again in 120 seconds", "kicked: you can log in again in 120 seconds"),
    (429, "60 too many failed logins, try again later",
     "too fast: try again in 60 seconds (too many failed logins)"),
    (429, "60 too many registrations from your address",
     "too fast: try again in 60 seconds (too many registrations from your address)"),
    (503, "storage unavailable, message not sent", "the server cannot store messages right now"),
    (503, "storage unavailable, try again", "the server cannot store messages right now"),
    (503, "too many connections", "the server is busy: too many connections"),
])
def test_errors_are_said_once_in_words(code, text, words):
    said = client.error_in_words(code, text)
    assert said == words
    long_words = [word for word in said.replace(":", " ").replace(",", " ").split() if len(word) > 3]
    assert len(long_words) == len(set(long_words))


def test_a_message_to_nobody_says_so_once():
    chat = online()
    chat.input.set("/msg nobody hello")
    chat.key("\r")
    hear(chat, "ERR 404 no such account nobody")
    assert [e.text for e in chat.scrollback.entries if e.kind == "error"] == [
        "not sent: nobody has no account here"]


def test_register_then_log_in():
    chat = Chat("127.0.0.1", 12345, "carol", "password1")
    chat.key("\x12")                                # Ctrl-R
    chat.connection_made()
    assert sent(chat) == ["CAP rooms", "CAP guests", "REGISTER carol password1"]
    hear(chat, NO_ROOMS, "OK REGISTER carol")
    assert sent(chat) == ["LOGIN carol password1"]


@pytest.mark.parametrize("line, words", [
    ("ERR 401 wrong name or password", "wrong name or password"),
    ("ERR 403 spamming", "this account is banned: spamming"),
    ("ERR 423 120 kicked, try again in 120 seconds", "kicked: you can log in again in 120 seconds"),
])
def test_failed_login_says_why_and_lets_the_user_retry(line, words):
    chat = Chat("127.0.0.1", 12345, "alice", "wrong-password")
    chat.submit_login(register=False)
    chat.connection_made()
    sent(chat)
    hear(chat, NO_ROOMS, line)
    assert chat.screen == "login" and chat.form.error == words
    assert chat.want_close
    chat.connection_lost("login failed")
    assert chat.reconnect_at is None                # no retry loop on the login screen
    assert chat.form.error == words
    chat.form.fields[2].set("password1")
    chat.key("\r")
    assert chat.want_connect and not chat.form.error


def test_name_taken_on_register():
    chat = Chat("127.0.0.1", 12345, "bob", "password1")
    chat.submit_login(register=True)
    chat.connection_made()
    hear(chat, NO_ROOMS, "ERR 409 name taken")
    assert chat.form.error == "that name is taken"


def test_login_form_asks_for_what_is_missing():
    chat = Chat("127.0.0.1", 12345, "alice", "")
    assert chat.form.focus == 2
    chat.key("\r")
    assert not chat.want_connect and chat.form.error == "password, please"
    for key in "password1":
        chat.key(key)
    chat.key("\r")
    assert chat.want_connect and chat.password == "password1"


def test_plain_text_says_and_commands_tell_and_who():
    chat = online()
    for key in "hello all":
        chat.key(key)
    chat.key("\r")
    chat.input.set("/msg bob psst")
    chat.key("\r")
    chat.input.set("/who")
    chat.key("\r")
    assert sent(chat) == ["SAY hello all", "TELL bob psst", "WHO"]
    hear(chat, msg(7, "hello all", "alice"),
         "PRIV 8 %s alice bob psst" % TS, "USERS 1 alice")
    assert not chat.exchange
    # /msg went to the conversation's window, where the echo is shown.
    assert chat.windows.active.name == "bob" and "<alice> psst" in screen_text(chat)
    assert chat.input.text == ""


def test_unknown_command_stays_local():
    chat = online()
    chat.input.set("/dance")
    chat.key("\r")
    assert sent(chat) == []
    assert "unknown command /dance" in screen_text(chat)


@pytest.mark.parametrize("refused, why", [
    ("/foo", "unknown command /foo"),
    ("/msg dave", "usage: /msg NAME text"),
    ("x" * 5000, "too long to send"),
])
def test_a_refused_line_leaves_the_input_empty_and_in_the_history(refused, why):
    chat = online()
    chat.input.set(refused)
    chat.key("\r")
    assert why in screen_text(chat)
    # What is typed next is a line of its own, not glued onto the refused one.
    for key in "msg dave hi":
        chat.key(key)
    assert chat.input.text == "msg dave hi"
    chat.input.set("")
    chat.key("KEY_UP")
    assert chat.input.text == refused
    assert sent(chat) == []


def test_a_line_entered_while_offline_is_not_lost():
    chat = online()
    chat.connection_lost("reset")
    chat.input.set("said in the dark")
    chat.key("\r")
    assert "not connected; Up recalls the line" in screen_text(chat)
    assert chat.input.text == ""
    chat.key("KEY_UP")
    assert chat.input.text == "said in the dark"


def test_say_refused_by_storage_keeps_the_text():
    chat = online()
    chat.input.set("important")
    chat.key("\r")
    sent(chat)
    hear(chat, "ERR 503 storage unavailable")
    assert "not sent: the server cannot store messages right now" in screen_text(chat)
    assert chat.input.text == "important"
    chat.key("\r")
    assert sent(chat) == ["SAY important"]


def test_rate_limited_text_goes_to_history_when_the_input_is_busy():
    chat = online()
    chat.input.set("first")
    chat.key("\r")
    chat.input.set("half typed")
    hear(chat, "ERR 429 slow down")
    assert chat.input.text == "half typed"
    chat.key("KEY_UP")
    assert chat.input.text == "first"


def test_ping_is_answered_and_nothing_waits_for_an_answer_to_the_pong():
    chat = online()
    chat.input.set("in flight")
    chat.key("\r")
    hear(chat, "PING abc123")
    assert sent(chat) == ["SAY in flight", "PONG abc123"]
    assert [request.verb for request in chat.exchange.waiting] == ["SAY"]
    hear(chat, msg(9, "in flight", "alice"))
    assert not chat.exchange


def test_pgup_past_the_oldest_line_loads_older_history():
    chat = online(history=[msg(i) for i in range(51, 61)])
    chat.scrollback.view(80, 20)
    chat.key("KEY_PPAGE")
    assert sent(chat) == ["HISTORY 50 before=51"]
    assert "loading history" in chat.status()
    chat.key("KEY_PPAGE")
    assert sent(chat) == []                         # one request at a time
    hear(chat, *[msg(i) for i in range(1, 51)], "OK HISTORY 50")
    assert not chat.loading_older
    assert chat.scrollback.oldest_id() == 1
    chat.key("KEY_PPAGE")
    assert sent(chat) == []                         # id 1 is the first message


def test_the_login_notice_follows_the_history_it_brought_and_older_pages_go_above_it():
    chat = online(history=[msg(i) for i in range(51, 61)])
    text = screen_text(chat)
    assert text.index("message 60") < text.index("logged in as alice")
    chat.scrollback.view(80, 20)
    chat.key("KEY_PPAGE")
    assert sent(chat) == ["HISTORY 50 before=51"]
    hear(chat, *[msg(i) for i in range(1, 51)], "OK HISTORY 50")
    hear(chat, msg(61))
    text = screen_text(chat, height=200)
    assert (text.index("message 1\n") < text.index("message 50") < text.index("message 60")
            < text.index("logged in as alice") < text.index("message 61"))


def dated(msg_id, ts):
    return "MSG %d %s bob message %d" % (msg_id, ts, msg_id)


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.delenv("TZ")
    time.tzset()


def test_day_changed_lines_between_days_also_when_older_pages_come(utc):
    with freeze_time("2026-12-01 10:00:00"):
        chat = online(history=[dated(11, "2026-11-30T23:00:00.000Z"), dated(12, "2026-11-30T23:30:00.000Z"),
                               dated(13, "2026-12-01T09:00:00.000Z")])
        assert screen_text(chat).splitlines()[:5] == [
            "-!- Monday 30 November 2026",
            "23:00 <bob> message 11",
            "23:30 <bob> message 12",
            "-!- Day changed to Tuesday 1 December 2026",
            "09:00 <bob> message 13",
        ]
        chat.scrollback.view(80, 50)
        chat.key("KEY_PPAGE")
        assert sent(chat) == ["HISTORY 50 before=11"]
        hear(chat, dated(9, "2026-11-29T12:00:00.000Z"), dated(10, "2026-11-30T08:00:00.000Z"), "OK HISTORY 2")
        lines = screen_text(chat).splitlines()
        assert lines[:9] == [
            "10:00 -!- no older messages",
            "-!- Sunday 29 November 2026",
            "12:00 <bob> message 9",
            "-!- Day changed to Monday 30 November 2026",
            "08:00 <bob> message 10",
            "23:00 <bob> message 11",
            "23:30 <bob> message 12",
            "-!- Day changed to Tuesday 1 December 2026",
            "09:00 <bob> message 13",
        ]
        assert sum("Tuesday 1 December" in line for line in lines) == 1


def test_a_day_line_arriving_below_a_scrolled_up_view_does_not_move_it(utc):
    with freeze_time("2026-11-30 23:00:00") as frozen:
        chat = online(history=[dated(i, "2026-11-30T22:00:00.000Z") for i in range(1, 40)])
        chat.scrollback.view(80, 10)
        chat.key("KEY_PPAGE")
        before = rows_text(chat.scrollback.view(80, 10))
        frozen.move_to("2026-12-01 00:30:00")
        hear(chat, dated(40, "2026-12-01T00:30:00.000Z"))
        assert rows_text(chat.scrollback.view(80, 10)) == before
        chat.key("KEY_END")
        assert rows_text(chat.scrollback.view(80, 10))[-2:] == [
            "-!- Day changed to Tuesday 1 December 2026", "00:30 <bob> message 40"]


def test_end_goes_back_to_the_live_bottom_once_the_cursor_is_at_the_end():
    chat = online(history=[msg(i) for i in range(1, 40)])
    chat.scrollback.view(80, 10)
    chat.key("KEY_PPAGE")
    chat.input.set("draft")
    chat.input.home()
    chat.key("KEY_END")
    assert chat.scrollback.scroll and chat.input.cursor == 5
    chat.key("KEY_END")
    assert chat.scrollback.scroll == 0


def test_reconnect_fetches_what_was_missed_without_duplicates():
    chat = online(history=[msg(1), msg(2)])
    with freeze_time("2026-11-24 13:06:00") as frozen:
        chat.connection_lost("the server closed the connection")
        assert chat.state == "offline" and "connection lost" in screen_text(chat)
        assert chat.reconnect_at is not None
        chat.tick(client.clock())
        assert not chat.want_connect                # backoff: not at once
        frozen.tick(1.0)
        chat.tick(client.clock())
        assert chat.want_connect
    chat.input.set("typed while away")
    chat.key("\r")
    assert chat.input.text == ""                    # in the history until we are back
    chat.connection_made()
    assert sent(chat) == ["CAP rooms", "CAP guests", "LOGIN alice password1"]
    # The login burst holds only the newest messages; 3 and 4 fell in the gap.
    hear(chat, NO_ROOMS, "OK LOGIN alice")
    assert sent(chat) == ["HISTORY 500 after=2"]
    hear(chat, msg(5), msg(6), "OK HISTORY 2", "USERS 2 alice bob",
         msg(3), msg(4), msg(5), msg(6), "OK HISTORY 4")
    text = screen_text(chat)
    for msg_id in range(1, 7):
        assert text.count("message %d\n" % msg_id) + text.endswith("message %d" % msg_id) == 1
    assert text.index("message 3") < text.index("message 5")
    assert chat.attempt == 0
    chat.key("KEY_UP")
    chat.key("\r")
    assert sent(chat) == ["SAY typed while away"]


def test_catching_up_repeats_until_a_short_page():
    chat = online(history=[msg(10)])
    chat.connection_lost("reset")
    chat.tick(chat.reconnect_at)
    chat.connection_made()
    sent(chat)
    hear(chat, NO_ROOMS, "OK LOGIN alice", "OK HISTORY 0", "USERS 1 alice")
    assert sent(chat) == ["HISTORY 500 after=10"]
    hear(chat, *[msg(i) for i in range(11, 511)], "OK HISTORY 500")
    assert sent(chat) == ["HISTORY 500 after=510"]
    hear(chat, msg(511), "OK HISTORY 1")
    assert sent(chat) == []
    assert chat.last_id == 511


def test_backoff_grows_and_kick_waits_it_out():
    chat = online()
    delays = []
    for _ in range(4):
        now = client.clock()
        chat.connection_lost("refused")
        delays.append(chat.reconnect_at - now)
        chat.tick(chat.reconnect_at)
        assert chat.want_connect
    assert delays == sorted(delays) and delays[0] < 1 and delays[-1] >= 4
    chat.connection_made()
    hear(chat, NO_ROOMS, "OK LOGIN alice", "OK HISTORY 0", "USERS 1 alice")
    hear(chat, "KICKED 30 behave")
    chat.connection_lost("the server closed the connection")
    assert chat.reconnect_at - client.clock() >= 30
    assert "you were kicked for 30 seconds: behave" in screen_text(chat)


def test_banned_does_not_reconnect():
    chat = online()
    hear(chat, "BANNED spam")
    chat.connection_lost("the server closed the connection")
    assert chat.reconnect_at is None and chat.status().endswith("banned")


def test_banned_says_what_is_left_to_do_and_promises_nothing():
    chat = online()
    hear(chat, "BANNED spam")
    chat.connection_lost("the server closed the connection")
    chat.input.set("can I still talk?")
    chat.key("\r")
    errors = [e.text for e in chat.scrollback.entries if e.kind == "error"]
    assert errors == ["you are banned from this server (spam); /quit to leave"] * 2
    assert "reconnect" not in screen_text(chat) and "until you can send" not in screen_text(chat)
    assert chat.input.text == "" and sent(chat) == []


def test_unconfirmed_say_is_given_back_after_catching_up():
    chat = online(history=[msg(1)])
    chat.input.set("did this arrive?")
    chat.key("\r")
    chat.input.set("lost one")
    chat.key("\r")
    sent(chat)
    chat.connection_lost("reset")
    chat.tick(chat.reconnect_at)
    chat.connection_made()
    hear(chat, NO_ROOMS, "OK LOGIN alice", "OK HISTORY 0", "USERS 1 alice")
    hear(chat, msg(2, "did this arrive?", "alice"), "OK HISTORY 1")
    assert "not confirmed before the connection dropped: lost one" in screen_text(chat)
    assert "did this arrive?" not in chat.input.history[-1:]
    assert chat.input.text == "lost one"


def test_keepalive_pings_a_silent_server_and_gives_up():
    chat = online()
    start = chat.last_heard
    chat.tick(start + client.KEEPALIVE_IDLE)
    assert sent(chat) == ["PING keepalive"]
    chat.tick(start + client.KEEPALIVE_IDLE + client.KEEPALIVE_GRACE)
    assert chat.want_close


def test_connection_attempt_that_hangs_is_given_up():
    chat = Chat("192.0.2.1", 12345, "alice", "password1")
    chat.submit_login(register=False)
    chat.want_connect = False                       # the I/O layer started it
    chat.tick(chat.next_deadline())
    assert chat.want_close and chat.state == "offline"
    assert chat.form.error == "cannot reach 192.0.2.1:12345: no answer within 15 seconds"


def test_logging_in_again_replaces_the_connection():
    chat = Chat("127.0.0.1", 12345, "alice", "password1")
    chat.submit_login(register=False)
    chat.connection_made()
    chat.form.fields[1].set("bob")
    chat.key("\r")
    assert chat.want_close and chat.want_connect and not chat.form.error
    chat.connection_made()
    assert sent(chat)[-1] == "LOGIN bob password1"


def test_ctrl_c_sends_quit():
    chat = online()
    chat.key("\x03")
    assert chat.done and sent(chat) == ["QUIT quit"]


def test_join_and_leave_update_who_is_online():
    chat = online(users=("alice",))
    hear(chat, "JOIN carol")
    assert chat.users == ["alice", "carol"]
    hear(chat, "LEAVE carol ping timeout")
    assert chat.users == ["alice"]
    text = screen_text(chat)
    assert "--> carol joined" in text and "<-- carol left (ping timeout)" in text


def help_rows(chat, width):
    chat.input.set("/help")
    chat.key("\r")
    rows = rows_text(chat.scrollback.all_rows(width))
    first = next(i for i, row in enumerate(rows) if row.startswith("-!- text "))
    return rows[first:]


@pytest.mark.parametrize("width", [80, 40])
def test_help_is_a_line_per_command_wrapped_at_spaces_with_an_indent(width):
    rows = help_rows(online(), width)
    lines = client.help_lines(False)
    known = {word for command, words in lines for word in (command + " " + words).split()}
    for row in rows:
        assert text_width(row) <= width
        assert set(row.split()) - {"-!-"} <= known          # no word cut in two
        assert row.startswith("-!- ") or row.startswith(" " * (4 + client.HELP_COLUMN))
    commands = [row[4:4 + client.HELP_COLUMN].strip() for row in rows if row.startswith("-!- ")]
    assert commands == [command for command, _ in lines]
    if width == 80:
        assert len(rows) == len(lines)


def test_status_line_leaves_out_whole_fields_as_the_terminal_narrows():
    chat = online()
    chat.host = "chat.example.org"
    assert chat.status_line(80) == (" chat.example.org:12345 | alice | online | 2 online", "")
    assert chat.status_line(40) == (" alice | online | 2 online", "")
    assert chat.status_line(24) == (" online | 2 online", "")
    assert chat.status_line(16) == (" online", "")
    chat.scrollback.add(Entry("info", "x\n" * 100))
    for i in range(1, 60):
        chat.scrollback.add(message(i))
    chat.scrollback.view(80, 10)
    chat.key("KEY_PPAGE")
    hear(chat, msg(60))
    assert chat.status_line(40) == (" alice | online | 2 online", "[1 new, End]")
    assert chat.status_line(36) == (" online | 2 online", "[1 new, End]")


def test_tab_completes_names_and_commands_and_cycles():
    chat = online(history=[msg(1, "hi", "bobby"), msg(2, "hey", "Bea")],
                  users=("alice", "bob", "bobby", "Bea", "carol"))
    for key in "b\t":
        chat.key(key)
    assert chat.input.text == "Bea: "               # at the start: addressed; latest speaker first
    chat.key("\t")
    assert chat.input.text == "bobby: "
    chat.key("\t")
    assert chat.input.text == "bob: "
    chat.key("\t")
    assert chat.input.text == "Bea: "               # round again
    for key in "ask c\t":
        chat.key(key)
    assert chat.input.text == "Bea: ask carol "     # elsewhere: just the name
    chat.input.set("hello al")
    chat.key("\t")
    assert chat.input.text == "hello al"            # never your own name
    chat.input.set("/m")
    chat.key("\t")
    assert chat.input.text == "/me "
    chat.key("\t")
    assert chat.input.text == "/msg "
    for key in "car\tthere":
        chat.key(key)
    assert chat.input.text == "/msg carol there"
    chat.input.set("/q")
    chat.key("\t")
    assert chat.input.text == "/quit "


def test_tab_completes_in_the_middle_of_a_line():
    chat = online(users=("alice", "dave"))
    chat.input.set("tell d about it")
    for _ in range(len(" about it")):
        chat.key("KEY_LEFT")
    chat.key("\t")
    assert (chat.input.text, chat.input.cursor) == ("tell dave  about it", len("tell dave "))


@pytest.mark.parametrize("text, mentioned", [
    ("alice: lunch?", True),
    ("thanks Alice.", True),
    ("ping @alice", True),
    ("malice aforethought", False),
    ("alice_2 is someone else", False),
    ("alice.smith too", False),
])
def test_a_mention_of_your_name_is_highlighted_and_rings_once(text, mentioned):
    chat = online()
    hear(chat, msg(7, text))
    [entry] = [e for e in chat.scrollback.entries if e.id == 7]
    assert entry.highlight is mentioned
    assert ("highlight" in [style for _, style in entry.spans()[0]]) is mentioned
    assert chat.bells == mentioned


def test_your_own_words_and_history_do_not_ring():
    chat = online(history=[msg(1, "alice said this yesterday")])
    assert chat.scrollback.entries[0].highlight and chat.bells == 0
    hear(chat, msg(2, "I am alice", "alice"))
    assert chat.bells == 0 and not chat.scrollback.entries[-1].highlight


def test_marker_counts_mentions_while_scrolled_up():
    chat = online(history=[msg(i) for i in range(1, 40)])
    chat.scrollback.view(80, 10)
    chat.key("KEY_PPAGE")
    hear(chat, msg(40, "alice, are you there?"), msg(41), msg(42, "ALICE!"))
    assert chat.marker() == "[3 new, 2 for you, End]" and chat.bells == 2
    chat.key("KEY_END")
    assert chat.marker() == ""


def test_irc_guests_are_marked_as_guests_where_the_online_are_listed():
    # The client asks CAP guests; the server puts a ~ after each guest's
    # name in USERS, which is no part of the name.
    chat = online(users=("alice", "bob", "visitor~"))
    assert chat.users == ["alice", "bob", "visitor"]
    assert "3 online: alice bob visitor (guest)" in screen_text(chat)
    assert chat.names_pane(10) == [("3 online", ""), ("alice", "@alice"), ("bob", "@bob"),
                                   ("visitor (guest)", "@visitor")]
    hear(chat, "LEAVE visitor bye", "JOIN visitor")      # JOIN names a guest as anyone
    assert [text for text, _ in chat.names_pane(10)][1:] == ["alice", "bob", "visitor"]


def test_the_list_of_who_is_online_shows_where_wide_enough_and_toggles():
    chat = online(users=("alice", "bob", "a-very-long-name-for-a-list"))
    chat.scrollback.view(120 - client.NAMES_PANE, 20)    # a 120-column terminal
    assert chat.names_width(client.NAMES_MIN_COLS) == client.NAMES_PANE
    assert chat.names_width(client.NAMES_MIN_COLS - 1) == 0
    assert [text for text, _ in chat.names_pane(10)] == ["3 online", "a-very-long-nam\u2026", "alice", "bob"]
    assert [text for text, _ in chat.names_pane(3)] == ["3 online", "a-very-long-nam\u2026", "+2 more"]
    hear(chat, "JOIN carol")
    assert "carol" in [text for text, _ in chat.names_pane(10)]
    chat.key("KEY_F(2)")
    assert chat.names_width(120) == 0
    chat.input.set("/names")
    chat.key("\r")
    assert chat.names_width(120) == client.NAMES_PANE and sent(chat) == []
    assert "columns wide" not in screen_text(chat, width=120)
    chat.key("KEY_F(2)")
    chat.scrollback.view(80, 20)                    # an 80-column terminal
    chat.key("KEY_F(2)")
    assert chat.scrollback.entries[-1].text == (
        "the list of who is online shows on terminals 100 columns wide or more; /who lists them here")


def test_marker_when_new_messages_arrive_while_scrolled_up():
    chat = online(history=[msg(i) for i in range(1, 40)])
    chat.scrollback.view(80, 10)
    chat.key("KEY_PPAGE")
    hear(chat, msg(40))
    assert chat.marker() == "[1 new, End]"
    chat.key("KEY_END")
    assert chat.marker() == ""


# --- windows -------------------------------------------------------------

def priv(msg_id, text, name="bob", to="alice"):
    return "PRIV %d %s %s %s %s" % (msg_id, TS, name, to, text)


def press(chat, *keys):
    """Keys as the terminal sends them, one character (or curses key name)
    at a time: Alt-2 is Esc then 2."""
    for key in keys:
        for part in ([key] if key.startswith("KEY_") else key):
            chat.key(part)


def window_names(chat):
    return [window.name for window in chat.windows]


def test_a_private_message_opens_a_window_of_its_own_and_asks_for_attention():
    chat = online()
    hear(chat, msg(1, "in the room"), priv(2, "psst"))
    assert window_names(chat) == ["#general", "bob"]
    assert chat.windows.active.name == "#general"           # not taken there
    assert "psst" not in screen_text(chat)
    assert chat.status_line(80)[0].startswith(" [1:#general 2:bob!] ")
    assert chat.bells == 1                                  # for you, and not shown
    press(chat, "\x1b2")                                    # Alt-2
    assert chat.windows.active.name == "bob" and chat.prompt(80) == "bob> "
    assert "<bob> psst" in screen_text(chat) and "in the room" not in screen_text(chat)
    assert chat.status_line(80)[0].startswith(" [1:#general 2:bob] ")
    # Typed in the conversation, text goes to bob; /me too.
    press(chat, "hi there\r", "/me waves\r")
    assert sent(chat) == ["TELL bob hi there", "TELL bob /me waves"]
    hear(chat, priv(3, "hi there", "alice", "bob"), priv(4, "answer", "bob"))
    assert chat.bells == 1                                  # shown: no bell
    assert screen_text(chat).splitlines()[-3:] == [
        "13:05 <bob> psst", "13:05 <alice> hi there", "13:05 <bob> answer"]


def test_messages_from_another_session_of_mine_go_to_the_conversation_quietly():
    chat = online()
    hear(chat, priv(5, "sent from my phone", "alice", "Bob"))
    [window] = [w for w in chat.windows if w.kind == client.CONVERSATION]
    assert window.name == "Bob" and window.activity == client.QUIET and chat.bells == 0
    hear(chat, priv(6, "ok", "bob"))                        # one window, whatever the case
    assert window_names(chat) == ["#general", "bob"]


def test_activity_in_the_room_while_reading_a_conversation():
    chat = online(history=[msg(1)])
    hear(chat, priv(2, "psst"))
    press(chat, "\x0e")                                     # Ctrl-N
    assert chat.windows.active.name == "bob"
    hear(chat, msg(3, "chatter"))
    assert chat.status_line(80)[0].startswith(" [1:#general* 2:bob] ")
    assert chat.bells == 1
    hear(chat, msg(4, "alice, look"))
    assert chat.status_line(80)[0].startswith(" [1:#general! 2:bob] ")
    assert chat.bells == 2
    styles = [style for text, style in chat.window_list() if text.strip("[] ")]
    assert styles == ["window-mention", "window-shown"]
    hear(chat, msg(5, "more chatter"))                     # a mention stays a mention
    assert chat.windows.room.activity == client.MENTION
    hear(chat, msg(6, "my own words", "alice"))
    press(chat, "\x10")                                     # Ctrl-P: back, and seen
    assert chat.windows.room.activity == client.QUIET
    assert chat.status_line(80)[0].startswith(" [1:#general 2:bob] ")


def test_what_a_reconnection_catches_up_on_is_activity_and_older_pages_are_not():
    chat = online(history=[msg(i) for i in range(21, 31)])
    hear(chat, priv(31, "psst"))
    press(chat, "\x1b2")
    chat.connection_lost("reset")
    chat.tick(chat.reconnect_at)
    chat.connection_made()
    hear(chat, NO_ROOMS, "OK LOGIN alice", msg(30), "OK HISTORY 1", "USERS 2 alice bob")
    assert chat.windows.room.activity == client.QUIET       # nothing new yet
    assert sent(chat)[-1] == "HISTORY 500 after=30"
    hear(chat, msg(32, "said while you were away"), "OK HISTORY 1")
    assert chat.windows.room.activity == client.ACTIVITY and chat.bells == 1
    press(chat, "\x1b1")
    chat.scrollback.view(80, 5)
    page_up_to_the_top(chat)
    assert sent(chat) == ["HISTORY 50 before=21"]
    press(chat, "\x1b2")
    hear(chat, "OK HISTORY 0")
    assert chat.windows.room.activity == client.QUIET       # an old page is no news


def page_up_to_the_top(chat):
    """PgUp until the client asks the server for older messages (or 50 times)."""
    for _ in range(50):
        press(chat, "KEY_PPAGE")
        if chat.outbox or chat.scrollback.oldest_reached:
            return


def conversations(chat, *names):
    hear(chat, *[priv(100 + i, "hello", name) for i, name in enumerate(names)])


@pytest.mark.parametrize("keys, number", [
    (["\x1b3"], 3),                         # Alt-3 (or Esc, then 3)
    (["\x1b", "3"], 3),
    (["\x1b0"], 10),                        # Alt-0: window 10
    (["\x1b9", "\x1b7"], 7),
    (["\x1b5"], 1),                         # no window 5 here: nothing happens
    (["\x0e", "\x0e"], 3),                  # Ctrl-N twice
    (["\x10"], 4),                          # Ctrl-P from window 1: round the end
    (["KEY_kRIT3", "KEY_kRIT3"], 3),        # Alt-Right, where terminfo knows it
    (["KEY_kLFT3"], 4),                     # Alt-Left
    (["\x1b\x1b", "KEY_LEFT"], 4),          # Alt-Left on the linux console: Esc, then Left
    (["\x1b", "KEY_RIGHT"], 2),
    (["\x1b[1;3C"], 2),                     # xterm's Alt-Right, unknown to curses
])
def test_window_keys(keys, number):
    chat = online()
    if number == 10 or keys == ["\x1b9", "\x1b7"]:
        conversations(chat, *["user%d" % i for i in range(2, 11)])
    else:
        conversations(chat, "bob", "carol", "dave")
    press(chat, *keys)
    assert chat.windows.number(chat.windows.active) == number
    assert chat.input.text == "" and sent(chat) == []


def test_esc_and_then_an_ordinary_key_is_that_key():
    chat = online()
    press(chat, "\x1bx", "\x1b", "y")
    assert chat.input.text == "xy"


def test_win_goes_to_a_window_and_says_which_there_are():
    chat = online()
    conversations(chat, "bob", "carol")
    press(chat, "/win 3\r")
    assert chat.windows.active.name == "carol"
    press(chat, "/window 9\r")
    assert chat.windows.active.name == "carol"
    assert "there is no window 9: windows are 1 to 3" in screen_text(chat)
    press(chat, "/win\r")
    assert "usage: /win N" in screen_text(chat)
    assert sent(chat) == []


def test_each_window_keeps_its_scroll_position_and_its_own_lines():
    chat = online(history=[msg(i) for i in range(1, 41)])
    chat.scrollback.view(80, 10)
    press(chat, "KEY_PPAGE")
    room_view = rows_text(chat.scrollback.view(80, 10))
    conversations(chat, "bob")
    press(chat, "\x1b2", "/who\r")
    hear(chat, "USERS 3 alice bob carol")
    assert "3 online: alice bob carol" in screen_text(chat)     # said where it was asked
    hear(chat, msg(41, "while away"))
    press(chat, "\x1b1")
    assert rows_text(chat.scrollback.view(80, 10)) == room_view
    assert chat.marker() == "[1 new, End]"
    assert "3 online" not in screen_text(chat)


def test_query_opens_a_conversation_and_close_goes_back():
    chat = online()
    conversations(chat, "bob")
    press(chat, "/query carol\r")
    assert window_names(chat) == ["#general", "bob", "carol"] and chat.windows.active.name == "carol"
    press(chat, "/query BOB\r")                             # the window there is
    assert chat.windows.active.name == "bob" and len(chat.windows) == 3
    press(chat, "/close\r")                                 # back to carol, renumbered
    assert window_names(chat) == ["#general", "carol"] and chat.windows.active.name == "carol"
    press(chat, "/wc 1\r")
    assert "window 1 is the room #general; it stays open" in screen_text(chat)
    press(chat, "/query not/a/name\r")
    assert len(chat.windows) == 2 and "names are 1 to 32 characters" in screen_text(chat)
    press(chat, "/wc\r")
    assert window_names(chat) == ["#general"] and chat.windows.active.name == "#general"
    press(chat, "/close\r")
    assert "window 1 is the room #general; it stays open" in screen_text(chat)
    assert sent(chat) == []


def test_msg_sends_and_goes_to_the_conversation_where_the_answer_comes():
    chat = online()
    press(chat, "/msg carol are you there?\r")
    assert sent(chat) == ["TELL carol are you there?"]
    assert chat.windows.active.name == "carol" and chat.prompt(80) == "carol> "
    hear(chat, "ERR 404 no such account carol")
    assert "not sent: carol has no account here" in screen_text(chat)
    press(chat, "/msg no!such hi\r")
    assert sent(chat) == [] and "names are 1 to 32 characters" in screen_text(chat)


def test_a_say_refused_while_elsewhere_is_said_in_the_room_and_kept():
    chat = online()
    press(chat, "important\r")
    conversations(chat, "bob")
    press(chat, "\x1b2")
    hear(chat, "ERR 503 storage unavailable")
    assert chat.windows.room.activity == client.ACTIVITY
    assert "not sent" not in screen_text(chat)
    assert chat.input.text == ""                    # Enter here would send it to bob
    press(chat, "KEY_UP")
    assert chat.input.text == "important"
    press(chat, "\x1b1")
    assert "not sent: the server cannot store messages right now" in screen_text(chat)


def test_pgup_in_a_conversation_asks_the_server_for_nothing():
    chat = online()
    conversations(chat, "bob")
    press(chat, "\x1b2")
    chat.scrollback.view(80, 10)
    press(chat, "KEY_PPAGE", "KEY_PPAGE")
    assert sent(chat) == []
    text = screen_text(chat)
    assert text.count("older private messages cannot be fetched from this server") == 1
    assert text.index("cannot be fetched") < text.index("<bob> hello")


def test_joins_and_leaves_show_in_the_room_and_in_that_persons_conversation():
    chat = online()
    conversations(chat, "bob")
    hear(chat, "LEAVE bob quit", "JOIN carol")
    assert "<-- bob left (quit)" in screen_text(chat) and "--> carol joined" in screen_text(chat)
    press(chat, "\x1b2")
    assert "<-- bob left (quit)" in screen_text(chat) and "carol" not in screen_text(chat)
    assert chat.windows.room.activity == client.QUIET       # presence is no activity


def test_room_commands_against_a_server_without_rooms():
    chat = online()
    for command in ("/join #homework", "/part", "/topic hello", "/list"):
        press(chat, command + "\r")
        assert chat.scrollback.entries[-1].text == (
            "%s needs rooms, which this server does not offer yet" % command.split()[0])
    assert sent(chat) == [] and len(chat.windows) == 1


def test_tab_completes_window_commands_and_the_person_talked_to_first():
    chat = online(history=[msg(1, "hi", "bea")], users=("alice", "bea", "bob"))
    conversations(chat, "bob")
    press(chat, "\x1b2", "b\t")
    assert chat.input.text == "bob: "                       # who spoke here last
    chat.input.set("/w")
    press(chat, "\t", "\t", "\t")
    assert chat.input.text == "/who "                       # /wc is an alias: not offered
    chat.input.set("/cl")
    press(chat, "\t")
    assert chat.input.text == "/close "


def test_the_window_list_narrows_with_the_terminal():
    chat = online()
    chat.host = "chat.example.org"
    conversations(chat, "bob", "carol-with-a-long-name", "dave")
    press(chat, "\x1b3")
    hear(chat, msg(5, "alice?"))
    assert chat.status_line(200)[0] == (
        " [1:#general! 2:bob! 3:carol-with-a-long-name 4:dave!] chat.example.org:12345 | alice | online | 2 online")
    assert chat.status_line(80)[0] == (
        " [1:#general! 2:bob! 3:carol-with-a-long-name 4:dave!] alice | online | 2 online")
    assert chat.status_line(60)[0] == " [1! 2! 3:carol-with-a-long-name 4!] online"
    press(chat, "\x1b2", "\x1b3")                           # bob's seen: quiet, and left out
    assert chat.status_line(60)[0] == " [1:#general! 2:bob 3:carol-with-a-long-name 4:dave!] online"
    assert chat.status_line(40)[0] == " [1! 3:carol-with-a-long-name 4!] online"
    assert chat.status_line(30)[0] == " [1! 3 4!] online"
    for width in (20, 30, 40, 60, 80, 200):
        assert text_width(chat.status_line(width)[0]) <= width


def test_the_prompt_names_the_conversation_within_a_third_of_the_line():
    chat = online()
    conversations(chat, "a-rather-long-name-for-a-person")
    press(chat, "\x1b2")
    assert chat.prompt(200) == "a-rather-long-name-for-a-person> "
    assert chat.prompt(30) == "a-rathe\u2026> "
    assert text_width(chat.prompt(30)) <= 10


# --- bracketed paste ----------------------------------------------------

def paste(chat, text):
    """What a terminal in bracketed paste mode sends for pasted text."""
    press(chat, "\x1b[200~" + text + "\x1b[201~")


def test_a_pasted_block_is_asked_about_then_sent_a_few_lines_at_a_time():
    chat = online()
    lines = ["line %d" % n for n in range(1, 8)]
    paste(chat, "\r".join(lines) + "\r")
    assert chat.prompt(80) == "paste 7 lines to #general? Enter/Esc "
    assert sent(chat) == []
    press(chat, "x", "KEY_UP")                              # nothing but Enter and Esc
    assert chat.input.text == "" and sent(chat) == []
    press(chat, "\r")
    assert chat.prompt(80) == "> "
    assert sent(chat) == ["SAY " + line for line in lines[:client.PASTE_IN_FLIGHT]]
    assert chat.status().endswith("pasting: 3 left")
    # Each echo lets the next line go: the server's flood control paces
    # them, and never holds more than a few of them.
    hear(chat, msg(1, "line 1", "alice"))
    assert sent(chat) == ["SAY line 5"]
    hear(chat, msg(2, "line 2", "alice"), msg(3, "line 3", "alice"))
    assert sent(chat) == ["SAY line 6", "SAY line 7"]
    assert "pasting" not in chat.status()


def test_esc_drops_a_paste_and_gives_the_draft_back():
    chat = online()
    press(chat, "draft")
    paste(chat, "one\ntwo")
    assert chat.input.text == "" and chat.prompt(80).startswith("paste 2 lines")
    press(chat, "\x1b")
    assert chat.prompt(80) == "> " and chat.input.text == "draft"
    assert "2 pasted lines dropped" in screen_text(chat)
    press(chat, "\r")
    assert sent(chat) == ["SAY draft"]


def test_a_paste_joins_what_is_typed_around_the_cursor():
    chat = online()
    press(chat, "before after", *["KEY_LEFT"] * 5)
    paste(chat, "one\r\r  \rtwo ")
    assert chat.prompt(80) == "paste 2 lines to #general? Enter/Esc "    # blank lines left out
    press(chat, "\r")
    assert sent(chat) == ["SAY before one", "SAY two after"]


def test_one_pasted_line_is_typed_not_sent():
    chat = online()
    press(chat, "say: ")
    paste(chat, "pasted\tword\r")
    assert chat.input.text == "say: pasted word" and sent(chat) == []
    assert chat.prompt(80) == "> "


def test_a_paste_in_a_conversation_goes_to_that_person():
    chat = online()
    conversations(chat, "bob")
    press(chat, "\x1b2")
    paste(chat, "first\nsecond")
    assert chat.prompt(80) == "paste 2 lines to bob? Enter/Esc "
    press(chat, "\x1b1", "\x1b2")       # Esc answers at once; Alt-1 still goes to window 1
    assert chat.windows.active.name == "bob" and sent(chat) == []
    paste(chat, "first\nsecond")
    press(chat, "\r")
    assert sent(chat) == ["TELL bob first", "TELL bob second"]


def test_a_paste_with_a_line_too_long_is_refused_whole():
    chat = online()
    paste(chat, "short\n" + "x" * 5000)
    assert chat.prompt(80) == "> " and sent(chat) == []
    assert "paste not sent: its line 2 is 5004 bytes, at most 4096" in screen_text(chat)


def test_a_paste_waiting_when_the_connection_drops():
    chat = online()
    paste(chat, "\n".join("line %d" % n for n in range(10)))
    press(chat, "\r")
    sent(chat)
    chat.connection_lost("reset")
    assert "6 pasted lines not sent: the connection dropped" in screen_text(chat)
    paste(chat, "a\nb")
    press(chat, "\r")
    assert "not connected: the paste was not sent" in screen_text(chat)
    assert chat.input.text == "" and sent(chat) == []


def test_a_password_can_be_pasted_on_the_login_screen():
    chat = Chat("127.0.0.1", 12345, "alice", "")
    paste(chat, "password1\n")
    assert chat.form.password == "password1"
    chat.key("\r")
    assert chat.want_connect


# --- rooms (protocol v1.1) -------------------------------------------------

def said(chat):
    """The lines of the window shown, each whole, however long."""
    return [entry.text for entry in chat.scrollback.entries]


def rmsg(msg_id, room, text, name="bob", ts=TS):
    return "RMSG %d %s %s %s %s" % (msg_id, ts, room, name, text)


def in_rooms(name="alice", history=(), users=("alice", "bob"), rooms=None, default="#general"):
    """A client logged in to a server with rooms. ``rooms`` maps each room
    the account is in to its members (the default room with everyone
    online unless said otherwise)."""
    if rooms is None:
        rooms = {default: users}
    chat = Chat("127.0.0.1", 12345, name, "password1")
    chat.submit_login(register=False)
    chat.connection_made()
    assert sent(chat) == ["CAP rooms", "CAP guests", "LOGIN %s password1" % name]
    hear(chat, "OK CAP rooms %s" % default, "OK CAP guests", "OK LOGIN %s" % name, *history,
         "OK HISTORY %d" % len(history), "USERS %d %s" % (len(users), " ".join(users)))
    assert chat.rooms is True and chat.state == "online"
    assert sent(chat) == ["ROOMS"]
    hear(chat, *["ROOM %s %d %d" % (room, len(members), len(members)) for room, members in rooms.items()],
         "OK ROOMS %d" % len(rooms))
    # Each room's members are asked for, quietly, for /names, Tab and presence.
    assert sent(chat) == ["NAMES %s" % room for room in rooms]
    for room, members in rooms.items():
        hear(chat, "MEMBERS %s %d %s" % (room, len(members), " ".join(members)), "OK NAMES %s" % room)
    assert not chat.exchange
    return chat


def test_a_server_without_rooms_is_said_once_and_room_commands_say_so():
    chat = online()
    assert said(chat).count("this server has no rooms (protocol v1): one room, #general, "
                            "and private conversations") == 1
    chat.connection_lost("reset")
    chat.tick(chat.reconnect_at)
    chat.connection_made()
    hear(chat, NO_ROOMS, "OK LOGIN alice", "OK HISTORY 0", "USERS 1 alice")
    assert sum("this server has no rooms" in line for line in said(chat)) == 1
    sent(chat)
    press(chat, "/join #homework\r")
    assert chat.scrollback.entries[-1].text == "/join needs rooms, which this server does not offer yet"
    press(chat, "/j", "\t")
    assert chat.input.text == "/j"                         # no /join to complete
    press(chat, "\x15", "/help\r")
    assert "/join #room" not in screen_text(chat, height=200)
    assert sent(chat) == []


def test_login_with_rooms_opens_a_window_per_room_of_the_account():
    chat = in_rooms(rooms={"#general": ("alice", "bob"), "#Homework": ("alice", "bob", "carol")})
    assert window_names(chat) == ["#general", "#Homework"]
    assert chat.status_line(80)[0].startswith(" [1:#general 2:#Homework] ")
    assert "no rooms" not in screen_text(chat)
    assert [w.members for w in chat.windows] == [["alice", "bob"], ["alice", "bob", "carol"]]
    press(chat, "/help\r")
    assert "/join #room" in screen_text(chat, height=200)


def test_a_room_window_fetches_its_recent_history_the_first_time_it_is_shown():
    chat = in_rooms(rooms={"#general": ("alice", "bob"), "#homework": ("alice", "bob")})
    press(chat, "\x1b2")
    assert sent(chat) == ["HISTORY #homework 50"]
    assert "loading" not in chat.status()
    hear(chat, rmsg(3, "#homework", "page 12"), rmsg(5, "#homework", "alice, exercise 3?"), "OK HISTORY 2")
    assert screen_text(chat).splitlines()[-2:] == ["13:05 <bob> page 12", "13:05 <bob> alice, exercise 3?"]
    assert chat.bells == 0                                  # history rings nothing
    press(chat, "\x1b1", "\x1b2", "KEY_PPAGE")
    assert sent(chat) == []                                 # once, and no older page than a short one


def test_typing_in_a_room_window_says_it_there_and_in_window_1_as_in_v1():
    chat = in_rooms(rooms={"#general": ("alice", "bob"), "#homework": ("alice", "bob")})
    press(chat, "hello all\r", "\x1b2")
    assert sent(chat) == ["SAY hello all", "HISTORY #homework 50"]
    hear(chat, msg(1, "hello all", "alice"), "OK HISTORY 0")
    press(chat, "page 12\r", "/me waves\r")
    assert sent(chat) == ["RSAY #homework page 12", "RSAY #homework /me waves"]
    assert chat.prompt(80) == "#homework> "
    hear(chat, rmsg(2, "#homework", "page 12", "alice"),
         rmsg(3, "#homework", "/me waves", "alice"))
    assert not chat.exchange
    assert screen_text(chat).splitlines()[-2:] == ["13:05 <alice> page 12", "13:05 * alice waves"]
    press(chat, "\x1b1")
    assert "<alice> hello all" in screen_text(chat) and "page 12" not in screen_text(chat)


def test_room_messages_go_to_their_window_with_activity_and_mentions():
    chat = in_rooms(rooms={"#general": ("alice", "bob"), "#homework": ("alice", "bob")})
    hear(chat, rmsg(7, "#homework", "anyone?"))
    assert chat.status_line(80)[0].startswith(" [1:#general 2:#homework*] ")
    assert chat.bells == 0
    hear(chat, rmsg(8, "#HOMEWORK", "alice: you?"))
    assert chat.status_line(80)[0].startswith(" [1:#general 2:#HOMEWORK!] ")  # as the server spells it
    assert chat.bells == 1 and window_names(chat) == ["#general", "#HOMEWORK"]
    hear(chat, rmsg(9, "#random", "a room joined from another session"))
    assert window_names(chat) == ["#general", "#HOMEWORK", "#random"]
    press(chat, "\x1b2")
    [entry] = [e for e in chat.scrollback.entries if e.id == 8]
    assert entry.highlight and "anyone?" in screen_text(chat)
    assert chat.last_id == 9


def test_join_goes_to_the_window_at_once_then_shows_topic_members_and_history():
    chat = in_rooms(users=("alice", "bob", "carol"))
    press(chat, "/join homework\r")
    assert sent(chat) == ["JOIN #homework"]
    assert chat.windows.active.name == "#homework" and chat.status_line(80)[0].startswith(
        " [1:#general 2:(#homework)] ")
    hear(chat, "JOINED #Homework alice", "TOPIC #Homework bob %s Maths until Friday" % TS,
         "MEMBERS #Homework 3 alice bob dave", "OK JOIN #Homework")
    assert chat.status_line(80)[0].startswith(" [1:#general 2:#Homework] ")
    text = screen_text(chat)
    assert "--> alice joined #Homework" in text
    assert "topic of #Homework: Maths until Friday (set by bob, 24 Nov 2026 13:05)" in text
    assert "#Homework: 3 members, 2 online: alice bob; offline: dave" in text
    assert sent(chat) == ["HISTORY #Homework 50"]          # what was said there before
    hear(chat, rmsg(4, "#Homework", "before you came"), "OK HISTORY 1")
    assert "<bob> before you came" in screen_text(chat)
    press(chat, "/join #general\r")                         # a room of the account's: its window
    assert chat.windows.active is chat.windows.room and sent(chat) == ["JOIN #general"]
    press(chat, "/join #no/t\r")
    assert sent(chat) == [] and "room names are # and 1 to 32 characters" in screen_text(chat)


def test_a_refused_join_closes_the_window_it_opened():
    chat = in_rooms()
    press(chat, "/join #sixty-fifth\r")
    sent(chat)
    hear(chat, "ERR 405 too many rooms: an account may be in at most 64")
    assert window_names(chat) == ["#general"] and chat.windows.active is chat.windows.room
    assert "cannot join #sixty-fifth: too many rooms: an account may be in at most 64" in said(chat)


def test_others_joining_and_leaving_a_room_show_there_without_activity():
    chat = in_rooms(rooms={"#general": ("alice", "bob"), "#homework": ("alice",)})
    hear(chat, "JOINED #homework carol", "PARTED #homework carol bye")
    window = chat.windows.get(2)
    assert window.activity == client.QUIET and window.members == ["alice"]
    press(chat, "\x1b2")
    sent(chat)
    assert screen_text(chat).splitlines()[-2:] == [
        client.local_now() + " --> carol joined #homework", client.local_now() + " <-- carol left #homework (bye)"]


def test_coming_online_and_going_offline_show_in_the_rooms_shared_with_that_person():
    chat = in_rooms(rooms={"#general": ("alice", "bob"), "#homework": ("alice", "carol")})
    hear(chat, "JOIN carol", "LEAVE bob ping timeout")
    assert "carol came online" in "\n".join(rows_text(chat.windows.get(2).scrollback.all_rows(80)))
    text = screen_text(chat)
    assert "<-- bob went offline (ping timeout)" in text and "carol" not in text
    assert chat.users == ["alice", "carol"]


def test_part_leaves_the_room_and_closes_its_window():
    chat = in_rooms(rooms={"#general": ("alice", "bob"), "#homework": ("alice", "bob")})
    press(chat, "\x1b2", "/part done for today\r")
    assert sent(chat) == ["HISTORY #homework 50", "PART #homework done for today"]
    hear(chat, "OK HISTORY 0", "PARTED #homework alice done for today", "OK PART #homework")
    assert window_names(chat) == ["#general"] and chat.windows.active is chat.windows.room
    assert "you left #homework (done for today)" in screen_text(chat)
    conversations(chat, "bob")
    press(chat, "\x1b2", "/part\r")
    assert "/part is about a room, and this window is the conversation with bob" in screen_text(chat)
    press(chat, "\x1b1", "/part #nowhere\r")
    assert "you are not in #nowhere" in screen_text(chat)
    assert sent(chat) == ["HISTORY @bob 50"]               # the conversation's, when shown


def test_a_room_left_from_another_session_closes_there_too():
    chat = in_rooms(rooms={"#general": ("alice",), "#homework": ("alice",)})
    hear(chat, "PARTED #homework alice")
    assert window_names(chat) == ["#general"] and "you left #homework" in screen_text(chat)


def test_window_1_stays_when_the_default_room_is_left():
    chat = in_rooms(rooms={"#general": ("alice", "bob"), "#homework": ("alice",)})
    press(chat, "/part\r")
    assert sent(chat) == ["PART #general"]
    hear(chat, "PARTED #general alice", "OK PART #general")
    assert chat.status_line(80)[0].startswith(" [1:(#general) 2:#homework] ")
    assert "you left #general; /join #general to go back in" in screen_text(chat)
    press(chat, "anyone?\r", "/topic\r")
    assert sent(chat) == []
    assert screen_text(chat).count("you are not in #general: /join #general to go back in") == 2
    press(chat, "/close\r")
    assert "window 1 is the room #general; it stays open" in screen_text(chat)
    press(chat, "/join #general\r")
    hear(chat, "JOINED #general alice", "TOPIC #general", "MEMBERS #general 2 alice bob", "OK JOIN #general")
    assert chat.status_line(80)[0].startswith(" [1:#general 2:#homework] ")
    assert sent(chat) == ["JOIN #general", "HISTORY #general 50"]


def test_logging_in_after_leaving_the_default_room():
    chat = in_rooms(rooms={"#homework": ("alice", "bob")})
    assert window_names(chat) == ["#general", "#homework"]
    assert chat.status_line(80)[0].startswith(" [1:(#general) 2:#homework] ")
    assert "you are not in #general: /join #general to go back in" in screen_text(chat)


def test_topic_is_shown_set_and_cleared():
    chat = in_rooms(rooms={"#general": ("alice", "bob"), "#homework": ("alice", "bob")})
    press(chat, "\x1b2")
    hear(chat, "OK HISTORY 0")
    sent(chat)
    press(chat, "/topic\r")
    assert sent(chat) == ["TOPIC #homework"]
    hear(chat, "TOPIC #homework", "OK TOPIC #homework")
    assert "#homework has no topic" in screen_text(chat)
    press(chat, "/topic Maths until Friday\r")
    assert sent(chat) == ["TOPIC #homework Maths until Friday"]
    hear(chat, "TOPIC #homework alice %s Maths until Friday" % TS, "OK TOPIC #homework")
    assert "alice changed the topic of #homework to: Maths until Friday" in screen_text(chat)
    hear(chat, "TOPIC #homework bob %s" % TS)
    assert "bob cleared the topic of #homework" in screen_text(chat)
    assert chat.windows.active.topic == ""
    press(chat, "/topic " + "x" * 5000 + "\r")
    assert sent(chat) == [] and "too long to send" in screen_text(chat)
    hear(chat, "ERR 413 topic too long (max 300 bytes)")   # said where the room is
    press(chat, "/topic -\r")
    assert sent(chat) == ["TOPIC #homework -"]


def test_list_shows_every_room_and_tab_completes_room_names():
    chat = in_rooms()
    press(chat, "/list\r")
    assert sent(chat) == ["LIST"]
    hear(chat, "ROOM #general 2 2", "ROOM #Homework 1 3 Maths until Friday", "OK LIST 2")
    text = screen_text(chat)
    assert "#general  2 of 2 online\n" in text and "#Homework  1 of 3 online  Maths until Friday" in text
    assert "2 rooms; /join #room joins one" in text
    press(chat, "/join h", "\t")
    assert chat.input.text == "/join #Homework "
    press(chat, "\x15", "see #g", "\t")
    assert chat.input.text == "see #general "
    press(chat, "\x15", "/jo", "\t")
    assert chat.input.text == "/join "


def test_names_lists_the_rooms_members_online_first():
    chat = in_rooms(users=("alice", "bob", "carol"),
                    rooms={"#general": ("alice", "bob"), "#homework": ("alice", "bob", "carol", "dave")})
    press(chat, "\x1b2", "/names\r")
    assert sent(chat) == ["HISTORY #homework 50", "NAMES #homework"]
    hear(chat, "OK HISTORY 0", "MEMBERS #homework 4 alice bob", "MEMBERS #homework 4 carol dave",
         "OK NAMES #homework")
    assert "#homework: 4 members, 3 online: alice bob carol; offline: dave" in screen_text(chat)
    show_names = chat.show_names
    conversations(chat, "bob")
    press(chat, "\x1b3", "/names\r")                        # no room here: the list of who is online
    assert chat.show_names is not show_names


def test_a_deleted_rooms_window_says_so():
    chat = in_rooms(rooms={"#general": ("alice",), "#homework": ("alice",)})
    hear(chat, "DELETED #homework spam")
    assert chat.status_line(80)[0].startswith(" [1:#general 2:(#homework)*] ")
    press(chat, "\x1b2")
    sent(chat)
    assert ("#homework was deleted by the server's operator (spam); /join #homework makes a new room"
            in said(chat))
    press(chat, "still here?\r")
    assert sent(chat) == [] and "you are not in #homework" in screen_text(chat)


def test_pgup_pages_back_through_a_rooms_and_a_conversations_history():
    chat = in_rooms(rooms={"#general": ("alice", "bob"), "#homework": ("alice", "bob")})
    press(chat, "\x1b2")
    sent(chat)
    hear(chat, *[rmsg(100 + i, "#homework", "line %d" % i) for i in range(50)], "OK HISTORY 50")
    chat.scrollback.view(80, 10)
    page_up_to_the_top(chat)
    assert sent(chat) == ["HISTORY #homework 50 before=100"]
    assert "loading history" in chat.status()
    hear(chat, rmsg(60, "#homework", "older"), "OK HISTORY 1")
    text = screen_text(chat, height=200)
    assert text.index("no older messages") < text.index("older") < text.index("line 0")
    hear(chat, priv(200, "psst"))
    press(chat, "\x1b3")
    assert sent(chat) == ["HISTORY @bob 50"]
    hear(chat, *[priv(150 + i, "old %d" % i) for i in range(49)], priv(200, "psst"), "OK HISTORY 50")
    assert screen_text(chat, height=200).count("psst") == 1
    chat.scrollback.view(80, 10)
    page_up_to_the_top(chat)
    assert sent(chat) == ["HISTORY @bob 50 before=150"]


def reconnect(chat, *rooms):
    chat.connection_lost("reset")
    chat.tick(chat.reconnect_at)
    chat.connection_made()
    assert sent(chat) == ["CAP rooms", "CAP guests", "LOGIN alice password1"]
    hear(chat, "OK CAP rooms #general", "OK CAP guests", "OK LOGIN alice", "OK HISTORY 0", "USERS 2 alice bob")
    lines = sent(chat)
    hear(chat, *["ROOM %s 1 1" % room for room in rooms], "OK ROOMS %d" % len(rooms))
    return lines


def test_reconnect_catches_up_every_window_with_history_star():
    chat = in_rooms(history=[msg(1)], rooms={"#general": ("alice", "bob"), "#homework": ("alice", "bob")})
    hear(chat, rmsg(2, "#homework", "before the drop"), priv(3, "psst"))
    assert reconnect(chat, "#general", "#homework") == ["ROOMS", "HISTORY * 500 after=3"]
    assert sent(chat) == ["NAMES #general", "NAMES #homework"]
    # Repeats of what was seen are dropped by id; a private message received
    # while away opens its conversation with activity.
    hear(chat, rmsg(2, "#homework", "before the drop"), msg(4, "in general"),
         rmsg(5, "#homework", "in homework"), priv(6, "while you were away", "carol"), "OK HISTORY 4")
    assert window_names(chat) == ["#general", "#homework", "bob", "carol"]
    assert [w.activity for w in chat.windows] == [
        client.QUIET, client.ACTIVITY, client.MENTION, client.MENTION]
    assert chat.bells == 1                                  # bob's live psst only
    press(chat, "\x1b2")
    assert screen_text(chat).count("before the drop") == 1 and "in homework" in screen_text(chat)
    press(chat, "\x1b4")
    assert "<carol> while you were away" in screen_text(chat)
    assert chat.last_id == 6


def test_catching_up_with_history_star_repeats_until_a_short_page():
    chat = in_rooms(history=[msg(10)])
    assert reconnect(chat, "#general")[-1] == "HISTORY * 500 after=10"
    hear(chat, "MEMBERS #general 1 alice", "OK NAMES #general")
    sent(chat)
    hear(chat, *[priv(i, "p%d" % i) if i % 2 else rmsg(i, "#x", "r%d" % i) for i in range(11, 511)],
         "OK HISTORY 500")
    assert sent(chat) == ["HISTORY * 500 after=510"]
    hear(chat, msg(511), "OK HISTORY 1")
    assert sent(chat) == [] and chat.last_id == 511


def test_a_room_left_while_away_says_so_after_the_reconnect():
    chat = in_rooms(rooms={"#general": ("alice",), "#homework": ("alice",)})
    reconnect(chat, "#general")
    assert chat.status_line(80)[0].startswith(" [1:#general 2:(#homework)] ")
    press(chat, "\x1b2")
    assert "you are not in #homework: /join #homework to go back in" in screen_text(chat)


def test_an_unconfirmed_room_message_is_given_back_after_catching_up():
    chat = in_rooms(history=[msg(1)], rooms={"#general": ("alice",), "#homework": ("alice",)})
    press(chat, "\x1b2")
    hear(chat, "OK HISTORY 0")
    press(chat, "did this arrive?\r", "lost one\r")
    sent(chat)
    reconnect(chat, "#general", "#homework")
    hear(chat, rmsg(2, "#homework", "did this arrive?", "alice"), "OK HISTORY 1")
    assert "not confirmed before the connection dropped: lost one" in screen_text(chat)
    assert chat.input.text == "lost one"
    press(chat, "\r")
    assert sent(chat)[-1] == "RSAY #homework lost one"


def test_a_paste_in_a_room_window_goes_to_that_room():
    chat = in_rooms(rooms={"#general": ("alice",), "#homework": ("alice",)})
    press(chat, "\x1b2")
    hear(chat, "OK HISTORY 0")
    sent(chat)
    paste(chat, "one\ntwo")
    assert chat.prompt(80) == "paste 2 lines to #homework? Enter/Esc "
    press(chat, "\r")
    assert sent(chat) == ["RSAY #homework one", "RSAY #homework two"]


def test_day_changed_lines_and_wide_characters_in_a_room_window(utc):
    chat = in_rooms(rooms={"#general": ("alice",), "#homework": ("alice",)})
    press(chat, "\x1b2")
    hear(chat, rmsg(1, "#homework", "日本語 ok", ts="2026-11-30T23:59:00.000Z"),
         rmsg(2, "#homework", "next day", ts="2026-12-01T00:01:00.000Z"), "OK HISTORY 2")
    rows = screen_text(chat, width=20).splitlines()
    assert rows[:5] == ["-!- Monday 30", "    November 2026", "23:59 <bob> 日本語", "ok",
                        "-!- Day changed to"]
    assert rows[5].startswith("    Tuesday 1") and rows[-1].endswith("<bob> next day")
    assert all(text_width(row) <= 20 for row in rows)


def test_a_default_room_of_another_name_is_window_1():
    chat = in_rooms(default="#lobby", rooms={"#lobby": ("alice", "bob")})
    assert window_names(chat) == ["#lobby"] and chat.prompt(80) == "> "
    press(chat, "hi\r", "/part\r")
    assert sent(chat) == ["SAY hi", "PART #lobby"]


# --- several servers of one chat ------------------------------------------

@pytest.mark.parametrize("typed, servers", [
    ("chat.example", [("chat.example", 12345)]),
    (" a.example:7000 , b.example ", [("a.example", 7000), ("b.example", 12345)]),
    ("[::1]:12346,127.0.0.1", [("::1", 12346), ("127.0.0.1", 12345)]),
    ("::1", [("::1", 12345)]),                              # bare IPv6: no port possible
    ("[fe80::1%eth0]", [("fe80::1%eth0", 12345)]),
    ("a:00080", [("a", 80)]),
    ("A.example,a.example:12345,b,a.example", [("A.example", 12345), ("b", 12345)]),  # once each
    ("bücher.example:1", [("bücher.example", 1)]),
])
def test_servers_are_read_from_a_comma_separated_list(typed, servers):
    assert client.parse_servers(typed, 12345) == servers
    assert client.parse_servers(client.join_servers(servers), 1) == servers


@pytest.mark.parametrize("typed, words", [
    ("", "an empty server in the list"),
    ("a,,b", "an empty server in the list"),
    ("a,", "an empty server in the list"),
    ("a:", "'a:': the port must be a number from 1 to 65535"),
    ("a:0", "'a:0': the port must be a number from 1 to 65535"),
    ("a:65536", "'a:65536': the port must be"),
    ("a:٣", "'a:٣': the port must be"),                    # a digit, but not one a port is typed with
    ("a:-1", "'a:-1': the port must be"),
    (":12345", "':12345': no host before the port"),
    ("[::1", "'[::1': no ']' after the IPv6 address"),
    ("[::1]12345", "'[::1]12345': after ']' comes ':port' or nothing"),
    ("[127.0.0.1]:1", "brackets are for an IPv6 address, and '127.0.0.1' is not one"),
    ("[]:1", "brackets are for an IPv6 address"),
    ("a:b:c", "'a:b:c': not an IPv6 address; with a port, one is written [::1]:12345"),
    ("http://chat.example", "'http://chat.example': not a host name or address (give host or host:port, not a URL)"),
    ("http://chat.example:7000", "not a host name or address"),
    ("chat.example/x", "'chat.example/x': not a host name or address"),
    ("alice@chat.example", "not a host name or address"),
    ("two words", "not a host name or address"),
    ("tab\there", "not a host name or address"),
])
def test_a_server_that_cannot_be_one_is_refused_in_words(typed, words):
    with pytest.raises(ValueError) as refused:
        client.parse_servers(typed, 12345)
    assert words in str(refused.value)


def test_the_command_line_takes_several_servers_and_refuses_a_bad_one(capsys):
    args = client.parse_args(["--host", "a,b:7000", "--port", "6000"])
    assert args.servers == [("a", 6000), ("b", 7000)]
    assert client.parse_args(["--tls", "--host", "a"]).servers == [("a", 12346)]
    assert client.parse_args([]).servers == [("127.0.0.1", 12345)]
    for argv, words in [(["--host", "a,,b"], "argument --host: an empty server in the list"),
                        (["--host", "a:x"], "argument --host: 'a:x': the port must be a number"),
                        (["--port", "70000"], "argument --port: '70000' is not a port number (1 to 65535)"),
                        (["--port", "0"], "argument --port: '0' is not a port number")]:
        with pytest.raises(SystemExit) as stopped:
            client.parse_args(argv)
        assert stopped.value.code == 2
        assert words in capsys.readouterr().err


SERVERS = [("a.example", 12345), ("b.example", 12345), ("c.example", 7000)]


def at(chat):
    return client.join_server(chat.host, chat.port)


def test_the_first_login_tries_the_servers_in_order_until_one_answers():
    chat = Chat(name="alice", password="password1", servers=SERVERS)
    assert chat.form.server == "a.example:12345,b.example:12345,c.example:7000"
    chat.submit_login(register=False)
    assert chat.want_connect and at(chat) == "a.example:12345"
    chat.connection_lost("connection refused")
    # The next one at once, and the form says why.
    assert chat.want_connect and at(chat) == "b.example:12345" and chat.reconnect_at is None
    assert chat.form.notice == "cannot reach a.example:12345 (connection refused); logging in to b.example:12345 ..."
    chat.connection_made()
    assert sent(chat) == ["CAP rooms", "CAP guests", "LOGIN alice password1"]
    hear(chat, NO_ROOMS, "OK LOGIN alice", "OK HISTORY 0", "USERS 1 alice")
    assert chat.status().startswith("b.example:12345 | alice | online")


def test_when_no_server_answers_the_form_says_why_for_each_and_enter_starts_again():
    chat = Chat(name="alice", password="password1", servers=SERVERS)
    chat.submit_login(register=False)
    for reason in ("connection refused", "no route to host"):
        chat.connection_lost(reason)
    chat.drop("no answer within 15 seconds")
    assert not chat.want_connect and chat.reconnect_at is None and chat.state == "offline"
    assert chat.form.error == ("cannot reach any of the servers: a.example:12345 (connection refused), "
                               "b.example:12345 (no route to host), c.example:7000 (no answer within 15 seconds)")
    chat.key("\r")
    assert chat.want_connect and at(chat) == "a.example:12345" and not chat.form.error


def test_a_wrong_password_is_not_taken_to_the_next_server():
    chat = Chat(name="alice", password="wrong", servers=SERVERS)
    chat.submit_login(register=False)
    chat.connection_made()
    hear(chat, NO_ROOMS, "ERR 401 wrong name or password")
    chat.connection_lost("login failed")
    assert not chat.want_connect and at(chat) == "a.example:12345"
    assert chat.form.error == "wrong name or password"


def test_the_form_takes_a_list_too_and_says_what_is_wrong_with_it():
    chat = Chat("a.example", 7000, "alice", "password1")
    chat.form.fields[0].set("a.example, [::1]")
    chat.key("\r")
    assert chat.servers == [("a.example", 7000), ("::1", 7000)] and at(chat) == "a.example:7000"
    chat = Chat("a.example", 7000, "alice", "password1")
    chat.form.fields[0].set("a.example,b.example:x")
    chat.key("\r")
    assert not chat.want_connect and chat.form.error == "'b.example:x': the port must be a number from 1 to 65535"


def failover_online(servers=SERVERS):
    chat = Chat(name="alice", password="password1", servers=servers)
    chat.submit_login(register=False)
    chat.connection_made()
    sent(chat)
    hear(chat, "OK CAP rooms #general", "OK CAP guests", "OK LOGIN alice", msg(7), "OK HISTORY 1", "USERS 1 alice")
    hear(chat, "ROOM #general 1 1", "OK ROOMS 1", "MEMBERS #general 1 alice", "OK NAMES #general")
    sent(chat)
    return chat


def test_a_lost_server_is_skipped_at_once_and_the_back_off_comes_after_a_round():
    with freeze_time("2026-11-24 13:06:00"):
        chat = failover_online()
        chat.connection_lost("the server closed the connection")
        assert ("connection to a.example:12345 lost (the server closed the connection); "
                "reconnecting to b.example:12345") in screen_text(chat, width=300)
        # No wait for the next server: due now.
        assert chat.reconnect_at == client.clock() and at(chat) == "b.example:12345"
        chat.tick(client.clock())
        assert chat.want_connect
        chat.connection_lost("connection refused")
        assert chat.reconnect_at == client.clock() and at(chat) == "c.example:7000"
        chat.tick(client.clock())
        # The one lost comes last, after the back-off: it failed first in this round.
        chat.connection_lost("connection refused")
        assert at(chat) == "a.example:12345"
        assert 0.5 <= chat.reconnect_at - client.clock() <= 0.625
        assert chat.status().startswith("a.example:12345 | alice | reconnecting in 1s")
        chat.tick(chat.reconnect_at)
        assert chat.want_connect
        for expected in ("b.example:12345", "c.example:7000"):
            chat.connection_lost("connection refused")
            assert chat.reconnect_at == client.clock() and at(chat) == expected
            chat.tick(client.clock())
        chat.connection_lost("connection refused")
        assert at(chat) == "a.example:12345"
        assert 1 <= chat.reconnect_at - client.clock() <= 1.25          # the next step of the back-off


def test_wherever_it_lands_it_says_so_and_catches_up_after_the_last_id():
    chat = failover_online()
    chat.connection_lost("reset")
    chat.tick(chat.reconnect_at)
    chat.connection_made()
    assert sent(chat) == ["CAP rooms", "CAP guests", "LOGIN alice password1"]
    hear(chat, "OK CAP rooms #general", "OK CAP guests", "OK LOGIN alice", "OK HISTORY 0", "USERS 1 alice")
    # Message ids are the cluster's, so after= means the same on any server.
    assert sent(chat) == ["ROOMS", "HISTORY * 500 after=7"]
    assert "reconnected to b.example:12345 as alice; fetching what was said meanwhile" in screen_text(chat, width=300)
    assert chat.status().startswith("b.example:12345 | alice | online")
    # Once back, a round starts afresh: the next loss goes on at once.
    chat.connection_lost("reset")
    assert chat.reconnect_at <= client.clock() and at(chat) == "c.example:7000"


def test_one_server_backs_off_as_before():
    chat = failover_online(servers=[("a.example", 12345)])
    now = client.clock()
    chat.connection_lost("reset")
    assert at(chat) == "a.example:12345" and chat.reconnect_at - now >= 0.5
    assert "connection lost (reset); reconnecting" in screen_text(chat, width=300)


PRINT_A, PRINT_B = "A1:" * 31 + "A1", "B2:" * 31 + "B2"


def test_a_refused_certificate_leaves_that_server_out_and_the_others_are_still_tried():
    tls = client.TlsOptions(pinned=PRINT_A)
    chat = Chat(name="alice", password="password1", tls=tls, servers=SERVERS[:2])
    chat.submit_login(register=False)
    assert chat.tls_plan() == client.TlsPlan("pin", expected=PRINT_A)
    chat.secured(PRINT_A)
    hear(chat, NO_ROOMS, "OK LOGIN alice", "OK HISTORY 0", "USERS 1 alice")
    chat.connection_lost("reset")
    chat.tick(chat.reconnect_at)
    # --tls-fingerprint holds for every server of the chat.
    assert at(chat) == "b.example:12345" and chat.tls_plan() == client.TlsPlan("pin", expected=PRINT_A)
    chat.secured(PRINT_B)
    text = screen_text(chat, width=300)
    assert "WARNING: THE CERTIFICATE OF b.example:12345 DOES NOT MATCH --tls-fingerprint" in text
    assert "b.example:12345 is left out from now on; reconnecting to the other servers" in text
    assert chat.want_close and not chat.tls_refused and at(chat) == "a.example:12345"
    assert chat.reconnect_at > client.clock()               # a's round was over: the back-off
    chat.tick(chat.reconnect_at)
    chat.connection_lost("connection refused")
    assert at(chat) == "a.example:12345"                    # b is skipped
    chat.tick(chat.reconnect_at)
    chat.secured(PRINT_B)                                   # and now a shows another one too
    assert chat.tls_refused and chat.reconnect_at is None
    assert chat.status().endswith("certificate refused")


def test_a_reconnect_before_any_message_names_the_server_too():
    chat = Chat(name="alice", password="password1", servers=SERVERS[:2])
    chat.submit_login(register=False)
    chat.connection_made()
    hear(chat, NO_ROOMS, "OK LOGIN alice", "OK HISTORY 0", "USERS 1 alice")
    chat.connection_lost("reset")
    chat.tick(chat.reconnect_at)
    chat.connection_made()
    sent(chat)
    hear(chat, NO_ROOMS, "OK LOGIN alice", "OK HISTORY 0", "USERS 1 alice")
    assert sent(chat) == []                                 # nothing to catch up after
    entries = [e.text for e in chat.scrollback.entries if e.kind == "info"]
    assert entries.count("logged in as alice; /help lists the commands") == 1
    assert "reconnected to b.example:12345 as alice" in entries


def test_a_refused_server_does_not_count_towards_the_round():
    chat = Chat(name="alice", password="password1", tls=client.TlsOptions(pinned=PRINT_A), servers=SERVERS)
    chat.submit_login(register=False)
    chat.secured(PRINT_A)
    hear(chat, NO_ROOMS, "OK LOGIN alice", "OK HISTORY 0", "USERS 1 alice")
    chat.connection_lost("reset")
    chat.tick(chat.reconnect_at)
    chat.secured(PRINT_B)                                   # b: refused, and c is next at once
    assert at(chat) == "c.example:7000" and chat.reconnect_at <= client.clock()
    chat.tick(client.clock())
    chat.connection_lost("connection refused")              # c: the round is over
    assert at(chat) == "a.example:12345" and chat.reconnect_at > client.clock()
    chat.tick(chat.reconnect_at)
    chat.connection_lost("connection refused")
    assert at(chat) == "c.example:7000"                     # b is passed over
