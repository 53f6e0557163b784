"""Caption files (WebVTT, YouTube json3, YouTube srv3/srv1) into clean, timestamped text.

Every parser returns a list of :class:`Segment` (start in seconds, one line of text) that is

- clean: markup, inline timing tags and sound labels (``[Music]``) removed, entities decoded,
  whitespace collapsed;
- deduplicated: YouTube's automatic captions "roll", each cue repeating the line before it, and
  json3 events sometimes grow a line word by word; :func:`dedupe` removes both, and is idempotent;
- ordered: start times never decrease (a file with a cue out of order keeps its reading order, the
  stray time is clamped to the one before).

Caption files come from the internet and are untrusted: the parsers never raise on junk (they
return what they could read, possibly nothing) and never resolve entities or fetch anything; the XML
formats are read with the standard library's lenient HTML tokenizer, which has no DTDs to expand.

Example::

    segments = parse_captions(Path("talk.en.vtt").read_text(), "vtt")
    print(render(segments))        # "[00:12] buy when RSI(14) drops below 30 ..."
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

__all__ = [
    "FORMATS",
    "Segment",
    "dedupe",
    "format_ts",
    "paragraphs",
    "parse_captions",
    "parse_json3",
    "parse_srv3",
    "parse_vtt",
    "plain_text",
    "render",
]

#: The caption formats we can read, in order of preference (json3 keeps word timing best).
FORMATS = ("json3", "srv3", "vtt")


@dataclass(frozen=True)
class Segment:
    """One line of caption text and when it starts (seconds from the start of the video)."""

    start_s: float
    text: str


_TAG = re.compile(r"<[^>]*>")
_SOUND = re.compile(r"\[(?:music|applause|laughter|inaudible|silence)\]", re.IGNORECASE)
_SPACE = re.compile(r"\s+")
_VTT_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{1,2})(?:[.,](\d{1,3}))?")


def _clean(text: str) -> str:
    """Markup stripped, entities decoded, sound labels dropped, whitespace collapsed."""
    text = _TAG.sub(" ", text)
    text = html.unescape(text)
    text = _SOUND.sub(" ", text)
    text = text.replace(">>", " ")  # YouTube's speaker-change marker
    return _SPACE.sub(" ", text).strip()


def _norm(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def _finite(value: Any) -> float | None:
    """``value`` as a non-negative finite float, or None (junk times are dropped, not raised)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if not math.isfinite(number) or number < 0:
        return None
    return number


def dedupe(segments: Iterable[Segment]) -> list[Segment]:
    """Empty, repeated and growing lines collapsed; times made non-decreasing.

    A segment equal to the one before is dropped; a segment that extends the one before by whole
    words ("buy the" then "buy the dip") replaces it and keeps the earlier start. Applying it twice
    gives the same result as applying it once.
    """
    out: list[Segment] = []
    last_start = 0.0
    for seg in segments:
        text = _norm(seg.text)
        if not text:
            continue
        start = seg.start_s if math.isfinite(seg.start_s) and seg.start_s >= 0 else last_start
        start = max(start, last_start)
        last_start = start
        out.append(Segment(start, text))
        # Collapse the top of the stack until its last two lines differ and neither grows into
        # the other; checking again after each merge keeps the result stable under a second pass.
        while len(out) >= 2:
            prev, top = out[-2], out[-1]
            if top.text == prev.text or top.text.startswith(prev.text + " "):
                out[-2:] = [Segment(prev.start_s, top.text)]
            else:
                break
    return out


# --- WebVTT ----------------------------------------------------------------------------------


def _vtt_seconds(stamp: str) -> float | None:
    match = _VTT_TIME.fullmatch(stamp.strip())
    if not match:
        return None
    hours, minutes, seconds, millis = match.groups()
    return (int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds)
            + int((millis or "0").ljust(3, "0")) / 1000)


def parse_vtt(text: str) -> list[Segment]:
    """WebVTT cues as segments; rolling repeats (YouTube automatic captions) removed."""
    emitted: list[str] = []
    raw: list[Segment] = []
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for i, line in enumerate(lines):
        if "-->" not in line:
            continue  # header, NOTE, STYLE and REGION blocks, cue identifiers, stray text
        start = _vtt_seconds(line.split("-->", 1)[0])
        # A cue's text runs to the next empty line; YouTube's cues contain lines of one space,
        # which are not cue separators.
        payload: list[str] = []
        j = i + 1
        while j < len(lines) and lines[j] != "" and "-->" not in lines[j]:
            payload.append(lines[j])
            j += 1
        if j < len(lines) and "-->" in lines[j] and payload and payload[-1].strip().isdigit():
            payload.pop()  # the next cue's numeric identifier, not text
        if start is None:
            continue
        cue_lines = [c for c in (_clean(p) for p in payload) if c]
        # A rolling cue starts with the line(s) the previous cue ended with: skip that overlap.
        overlap = 0
        for k in range(min(len(cue_lines), len(emitted)), 0, -1):
            if cue_lines[:k] == emitted[-k:]:
                overlap = k
                break
        for new in cue_lines[overlap:]:
            emitted.append(new)
            raw.append(Segment(start, new))
        emitted = emitted[-4:]
    return dedupe(raw)


# --- json3 -----------------------------------------------------------------------------------


def parse_json3(text: str) -> list[Segment]:
    """YouTube's json3 captions (``events[].segs[].utf8``, times in ms) as segments."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return []
    events = doc.get("events") if isinstance(doc, dict) else None
    if not isinstance(events, list):
        return []
    raw: list[Segment] = []
    for event in events:
        if not isinstance(event, dict):
            continue
        segs = event.get("segs")
        start_ms = _finite(event.get("tStartMs", 0))
        if not isinstance(segs, list) or start_ms is None:
            continue
        parts = [s.get("utf8") for s in segs if isinstance(s, dict)]
        line = _clean("".join(p for p in parts if isinstance(p, str)))
        if line:
            raw.append(Segment(start_ms / 1000, line))
    return dedupe(raw)


# --- srv3 / srv1 (XML) -----------------------------------------------------------------------


class _TimedTextParser(HTMLParser):
    """Collects ``<p t=ms>`` (srv3) and ``<text start=s>`` (srv1) elements and their text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.items: list[tuple[float, str]] = []
        self._start: float | None = None
        self._buf: list[str] = []

    def _close(self) -> None:
        if self._start is not None:
            self.items.append((self._start, "".join(self._buf)))
        self._start, self._buf = None, []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "p":
            self._close()
            ms = _finite(found.get("t", 0))
            self._start = None if ms is None else ms / 1000
        elif tag == "text":
            self._close()
            self._start = _finite(found.get("start", 0))
        elif tag == "br" and self._start is not None:
            self._buf.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("p", "text"):
            self._close()

    def handle_data(self, data: str) -> None:
        if self._start is not None:
            self._buf.append(data)


def parse_srv3(text: str) -> list[Segment]:
    """YouTube's srv3 (``<p t="ms">``) or srv1 (``<text start="s">``) XML captions as segments."""
    parser = _TimedTextParser()
    try:
        parser.feed(text)
        parser.close()
    except (AssertionError, ValueError):  # pragma: no cover - the tokenizer is lenient
        pass
    parser._close()  # a file cut off inside its last element still counts
    raw = [Segment(start, line) for start, body in parser.items if (line := _clean(body))]
    return dedupe(raw)


_PARSERS = {"vtt": parse_vtt, "json3": parse_json3, "srv3": parse_srv3, "srv1": parse_srv3}


def parse_captions(text: str, ext: str) -> list[Segment]:
    """Parse a caption file by its format name (``vtt``, ``json3``, ``srv3`` or ``srv1``)."""
    try:
        parser = _PARSERS[ext.lower()]
    except KeyError:
        raise ValueError(f"unsupported caption format {ext!r} "
                         f"(supported: {', '.join(_PARSERS)})") from None
    return parser(text)


# --- rendering -------------------------------------------------------------------------------


def format_ts(seconds: float) -> str:
    """``MM:SS`` below an hour, ``H:MM:SS`` above (what a viewer types into the player)."""
    total = int(seconds) if math.isfinite(seconds) and seconds > 0 else 0
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def paragraphs(segments: Sequence[Segment], max_chars: int = 400) -> list[Segment]:
    """Consecutive segments joined into paragraphs of at most about ``max_chars`` characters.

    Each paragraph keeps the start of its first line, so a quote can still be cited to within a
    few seconds while the LLM reads far fewer timestamps.
    """
    out: list[Segment] = []
    start: float | None = None
    buf: list[str] = []
    size = 0
    for seg in segments:
        if start is not None and size + len(seg.text) + 1 > max_chars:
            out.append(Segment(start, " ".join(buf)))
            start, buf, size = None, [], 0
        if start is None:
            start = seg.start_s
        buf.append(seg.text)
        size += len(seg.text) + 1
    if start is not None:
        out.append(Segment(start, " ".join(buf)))
    return out


def render(segments: Sequence[Segment]) -> str:
    """One ``[MM:SS] text`` line per segment."""
    return "\n".join(f"[{format_ts(s.start_s)}] {s.text}" for s in segments)


def plain_text(segments: Sequence[Segment]) -> str:
    """The words alone, one line per segment (what the transcript hash is taken over)."""
    return "\n".join(s.text for s in segments)
