"""The SSE decoder: WHATWG line and field rules, events as eventsource-parser dispatches them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from trigger_django.client import ServerSentEvent, SSEDecoder


def decode(*chunks: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    return events


def test_fields_and_dispatch():
    events = decode(b'event: batch\nid: 3,1,9\ndata: {"a":1}\n\ndata: plain\n\n')
    assert events == [
        ServerSentEvent('{"a":1}', "batch", "3,1,9"),
        ServerSentEvent("plain", "message", None),
    ]


def test_multi_line_data_is_joined_with_newlines():
    assert decode(b"data: one\ndata:two\ndata:  three\ndata\n\n") == [
        ServerSentEvent("one\ntwo\n three\n")
    ]


def test_comments_and_pings_are_ignored():
    body = b': ping\n\nevent: ping\ndata: {"timestamp":1}\n\n:\n\ndata: x\n\n'
    assert decode(body) == [
        ServerSentEvent('{"timestamp":1}', "ping"),
        ServerSentEvent("x"),
    ]


def test_blocks_without_data_are_not_dispatched():
    # An id-only, retry-only or event-only block is no event (unlike httpx-sse).
    decoder = SSEDecoder()
    assert decoder.feed(b"retry: 1500\n\nid: 7\n\nevent: batch\n\n\n\n") == []
    assert decoder.retry == 1500
    assert decoder.feed(b"retry: soon\n\ndata: y\n\n") == [ServerSentEvent("y")]
    assert decoder.retry == 1500


def test_empty_data_is_an_event():
    assert decode(b"data:\n\ndata\n\n") == [ServerSentEvent(""), ServerSentEvent("")]


def test_id_is_per_event_and_ignores_nul():
    events = decode(b"id: 1-0\ndata: a\n\ndata: b\n\nid: x\0y\ndata: c\n\n")
    assert [e.id for e in events] == ["1-0", None, None]


def test_unknown_fields_and_no_space_after_colon():
    assert decode(b"foo: bar\nevent:batch\ndata:{}\n\n") == [ServerSentEvent("{}", "batch")]


def test_incomplete_event_at_end_of_body_is_discarded():
    assert decode(b"data: done\n\ndata: partial\n") == [ServerSentEvent("done")]


def test_all_line_terminators():
    body = b"data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\r"
    assert decode(body) == [ServerSentEvent("a\nb\nc"), ServerSentEvent("d")]


def test_crlf_split_across_chunks_is_one_terminator():
    # "\r" ends a chunk and its "\n" starts the next: one line end, not an empty line.
    assert decode(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n") == [ServerSentEvent("a\nb")]


def test_leading_byte_order_mark_is_dropped_even_when_split():
    assert decode(b"\xef", b"\xbb", b"\xbfdata: x\n\n") == [ServerSentEvent("x")]
    assert decode(b"\xef\xbb\xbfdata: \xef\xbb\xbfy\n\n") == [ServerSentEvent("\ufeffy")]


def test_invalid_utf8_becomes_replacement_characters():
    assert decode(b"data: a\xffb\n\n") == [ServerSentEvent("a\ufffdb")]


SAMPLE = (
    "event: batch\r\nid: 4,2,60\r\n"
    'data: {"records":[{"seq_num":4,"body":'
    '"{\\"data\\":\\"h\u00e9llo \u2603 \U0001f600\\"}"}]}\r\n\r\n'
    ": ping\r\r"
    "data: caf\u00e9\ndata: \u65e5\u672c\u8a9e\n\n"
    "event: ping\rdata: {}\r\r"
).encode()


def test_split_at_every_byte_boundary():
    expected = decode(SAMPLE)
    assert len(expected) == 3
    assert expected[1].data == "caf\u00e9\n\u65e5\u672c\u8a9e"
    for cut in range(len(SAMPLE) + 1):
        assert decode(SAMPLE[:cut], SAMPLE[cut:]) == expected, cut


def test_one_byte_at_a_time():
    assert decode(*(SAMPLE[i : i + 1] for i in range(len(SAMPLE)))) == decode(SAMPLE)


texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\0"),
    max_size=12,
)
field_lines = st.one_of(
    st.tuples(st.just("data"), texts),
    st.tuples(st.just("event"), texts),
    st.tuples(st.just("id"), texts),
    st.tuples(st.just(":"), texts),
)


@settings(max_examples=300, deadline=None)
@given(
    blocks=st.lists(st.lists(field_lines, max_size=4), max_size=6),
    terminators=st.lists(st.sampled_from(["\n", "\r", "\r\n"]), min_size=1, max_size=5),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_any_chunking_gives_the_same_events(blocks, terminators, cuts):
    lines: list[str] = []
    expected: list[ServerSentEvent] = []
    for block in blocks:
        data: list[str] = []
        event = ""
        event_id = None
        for name, value in block:
            if name == ":":
                lines.append(":" + value)
                continue
            lines.append(f"{name}: {value}")
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value
            else:
                event_id = value
        lines.append("")
        if data:
            expected.append(ServerSentEvent("\n".join(data), event or "message", event_id))
    encoded = []
    previous = ""
    for i, line in enumerate(lines):
        terminator = terminators[i % len(terminators)]
        if previous == "\r" and terminator == "\n":
            terminator = "\r\n"  # a lone "\n" after "\r" would be the same line end
        encoded.append(line + terminator)
        previous = terminator
    body = "".join(encoded).encode()
    points = sorted({min(c, len(body)) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    assert decode(*chunks) == expected
