"""TextAssembler: UTF-8 safe incremental decoding and stop-sequence hold-back."""

from hypothesis import given
from hypothesis import strategies as st

from inkstand.engine.stops import TextAssembler


def feed_all(assembler: TextAssembler, pieces: list[bytes]) -> str:
    out = "".join(assembler.feed(p) for p in pieces)
    return out + assembler.flush()


def test_multibyte_character_split_across_tokens_is_released_whole():
    assembler = TextAssembler()
    raw = "é€".encode()
    assert assembler.feed(raw[:1]) == ""
    assert assembler.feed(raw[1:3]) == "é"
    assert assembler.feed(raw[3:]) == "€"


def test_stop_sequence_ends_text_before_it():
    assembler = TextAssembler(("END",))
    assert feed_all(assembler, [b"abc E", b"ND tail"]) == "abc "
    assert assembler.stopped


def test_possible_stop_prefix_is_held_then_released():
    assembler = TextAssembler(("STOP",))
    assert assembler.feed(b"ab ST") == "ab "
    assert assembler.feed(b"AR") == "STAR"
    assert not assembler.stopped


def test_held_text_is_flushed_at_the_end():
    assembler = TextAssembler(("xyz",))
    assert assembler.feed(b"abx") == "ab"
    assert assembler.flush() == "x"


def test_earliest_of_several_stops_wins():
    assembler = TextAssembler(("b", "a"))
    assert feed_all(assembler, [b"xxab"]) == "xx"


@given(
    text=st.text(min_size=0, max_size=40),
    stop=st.text(min_size=1, max_size=4),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=10),
)
def test_any_chunking_gives_the_same_text(text, stop, cuts):
    raw = text.encode()
    bounds = sorted({min(c, len(raw)) for c in cuts} | {0, len(raw)})
    pieces = [raw[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    whole = feed_all(TextAssembler((stop,)), [raw])
    chunked = feed_all(TextAssembler((stop,)), pieces)
    assert chunked == whole
    expected = text.split(stop, 1)[0] if stop in text else text
    assert whole == expected
