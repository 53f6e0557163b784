"""Caption parsers: real-shaped vtt, json3 and srv3 files, and property tests on junk."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from falcon.research.captions import (
    Segment,
    dedupe,
    format_ts,
    paragraphs,
    parse_captions,
    parse_json3,
    parse_srv3,
    parse_vtt,
    render,
)

# The shape YouTube's automatic captions have in WebVTT: each cue repeats the line before it,
# with word timing tags, and a 10 ms cue that only holds the previous line.
ROLLING_VTT = """WEBVTT
Kind: captions
Language: en

00:00:00.000 --> 00:00:02.350 align:start position:0%
<SP>
buy<00:00:00.480><c> when</c><00:00:00.960><c> the</c><00:00:01.200><c> RSI</c>

00:00:02.350 --> 00:00:02.360 align:start position:0%
buy when the RSI
<SP>

00:00:02.360 --> 00:00:05.000 align:start position:0%
buy when the RSI
drops<00:00:02.800><c> below</c><00:00:03.000><c> 30</c>

00:00:05.000 --> 00:00:05.010 align:start position:0%
drops below 30
<SP>

00:00:05.010 --> 00:00:08.000 align:start position:0%
drops below 30
and<c> sell</c> above 70 &amp; [Music]
""".replace("<SP>", " ")  # YouTube puts lines of one space inside its cues

MANUAL_VTT = """WEBVTT

NOTE this is a comment

1
00:01:02.500 --> 00:01:05.000
<v Speaker>First rule:</v> <b>never</b> average down.

2
01:00:10.000 --> 01:00:12.000
Second line
continues here.
"""


def test_rolling_vtt_is_deduplicated_with_timestamps() -> None:
    segments = parse_vtt(ROLLING_VTT)
    assert [s.text for s in segments] == ["buy when the RSI", "drops below 30",
                                          "and sell above 70 &"]
    assert [s.start_s for s in segments] == [0.0, 2.36, 5.01]


def test_manual_vtt_tags_stripped_and_multiline_kept() -> None:
    segments = parse_vtt(MANUAL_VTT)
    assert segments == [Segment(62.5, "First rule: never average down."),
                        Segment(3610.0, "Second line"), Segment(3610.0, "continues here.")]
    assert render(segments[:1]) == "[01:02] First rule: never average down."
    assert format_ts(3610) == "1:00:10"


def test_json3_events_and_growing_lines() -> None:
    doc = {"wireMagic": "pb3", "events": [
        {"tStartMs": 0, "dDurationMs": 5000, "id": 1},
        {"tStartMs": 160, "dDurationMs": 4000, "wWinId": 1,
         "segs": [{"utf8": "buy"}, {"utf8": " the", "tOffsetMs": 400}]},
        {"tStartMs": 900, "wWinId": 1, "segs": [{"utf8": "buy the dip"}]},
        {"tStartMs": 2000, "aAppend": 1, "segs": [{"utf8": "\n"}]},
        {"tStartMs": 2100, "segs": [{"utf8": "[Music]"}]},
        {"tStartMs": 2200, "segs": [{"utf8": "stop at 5%"}]},
    ]}
    assert parse_json3(json.dumps(doc)) == [Segment(0.16, "buy the dip"),
                                            Segment(2.2, "stop at 5%")]


def test_srv3_and_srv1() -> None:
    srv3 = ('<?xml version="1.0" encoding="utf-8" ?><timedtext format="3"><head>'
            '<ws id="1"/></head><body><w t="0" id="1"/>'
            '<p t="1500" d="2000" w="1"><s ac="0">golden</s><s t="300" ac="0"> cross</s></p>'
            '<p t="3500" d="10" w="1" a="1">\n</p>'
            '<p t="4000" d="2000">50 day &amp; 200<br/>day averages</p></body></timedtext>')
    assert parse_srv3(srv3) == [Segment(1.5, "golden cross"),
                                Segment(4.0, "50 day & 200 day averages")]
    srv1 = '<transcript><text start="0.5" dur="1">hold &#39;til</text><text start="2">exit</text>'
    assert parse_captions(srv1, "srv1") == [Segment(0.5, "hold 'til"), Segment(2.0, "exit")]


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported caption format"):
        parse_captions("x", "ttml")


def test_paragraphs_keep_first_timestamp() -> None:
    segments = [Segment(float(i), f"word{i}") for i in range(10)]
    paras = paragraphs(segments, max_chars=20)
    assert paras[0] == Segment(0.0, "word0 word1 word2")
    assert " ".join(p.text for p in paras) == " ".join(s.text for s in segments)


# --- properties ------------------------------------------------------------------------------

_texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=400)
_junk_vtt = st.lists(
    st.one_of(
        st.sampled_from(["WEBVTT", "", "00:00:01.000 --> 00:00:02.000", "-->", "99:99 --> x",
                         "<c>a</c>", "&amp;", "NOTE x", "12:34.5 --> 12:35.000 align:start"]),
        _texts),
    max_size=40).map("\n".join)
_segments = st.lists(st.builds(
    Segment,
    st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 10**6)),
    st.sampled_from(["a", "a b", "a b c", "b", "", "  a  b ", "x y"]) | _texts), max_size=30)


def _check(segments: list[Segment]) -> None:
    starts = [s.start_s for s in segments]
    assert starts == sorted(starts)
    assert all(s.text and s.text == s.text.strip() for s in segments)
    assert dedupe(segments) == segments


@settings(max_examples=150, deadline=None)
@given(_junk_vtt)
def test_vtt_never_crashes_on_junk(text: str) -> None:
    _check(parse_vtt(text))


@settings(max_examples=150, deadline=None)
@given(st.one_of(_texts, st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(
        st.sampled_from(["events", "segs", "utf8", "tStartMs", "x"]), kids, max_size=5),
    max_leaves=30).map(json.dumps)))
def test_json3_never_crashes_on_junk(text: str) -> None:
    _check(parse_json3(text))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(
    st.sampled_from(['<p t="100">', "</p>", '<p t="-1">', '<p t="nan">', "<text start='x'>",
                     "</text>", "<br/>", "<!DOCTYPE x [<!ENTITY a 'b'>]>", "&a;", "<s>", "<"]),
    _texts), max_size=40).map("".join))
def test_srv3_never_crashes_on_junk(text: str) -> None:
    _check(parse_srv3(text))


@settings(max_examples=300, deadline=None)
@given(_segments)
def test_dedupe_is_idempotent_and_ordered(segments: list[Segment]) -> None:
    once = dedupe(segments)
    _check(once)
    assert dedupe(once) == once
