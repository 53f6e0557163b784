"""yt-dlp as a library against a loopback server: caption choice, formats, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from falcon.errors import ValidationError
from falcon.research.youtube import NoCaptions, check_youtube_url, fetch_transcript

from .conftest import VTT, FileServer, InfoJson

JSON3 = json.dumps({"events": [
    {"tStartMs": 1000, "segs": [{"utf8": "automatic"}, {"utf8": " words"}]},
    {"tStartMs": 3000, "segs": [{"utf8": "more words"}]},
]})
SRV3 = '<timedtext format="3"><body><p t="2000" d="1000">srv three</p></body></timedtext>'
GERMAN = "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nKaufen wenn RSI unter 30.\n"


def test_manual_captions_are_preferred(info_json: InfoJson, files: FileServer) -> None:
    path = info_json(manual={"en": {"vtt": VTT}}, automatic={"en": {"json3": JSON3}})
    transcript = fetch_transcript(info_json=path, lang="en")
    assert transcript.kind == "manual"
    assert transcript.format == "vtt"
    assert transcript.segments[0].start_s == 5.0
    assert "RSI closes below 30" in transcript.text
    assert files.hits == ["/manual/vid00000001/en.vtt"]  # the automatic track was not fetched
    video = transcript.video
    assert (video.video_id, video.title, video.channel, video.upload_date, video.duration_s) == (
        "vid00000001", "RSI swing trading", "Trader Joe", "2024-03-15", 754.0)
    assert video.url == "https://www.youtube.com/watch?v=vid00000001"
    assert len(transcript.sha256) == 64


def test_automatic_captions_when_no_manual_ones(info_json: InfoJson) -> None:
    # json3 is preferred over srv3 and vtt when YouTube offers all three.
    path = info_json(automatic={"en": {"vtt": VTT, "srv3": SRV3, "json3": JSON3}})
    transcript = fetch_transcript(info_json=path)
    assert (transcript.kind, transcript.format) == ("automatic", "json3")
    assert transcript.text == "automatic words\nmore words"


def test_srv3_is_read(info_json: InfoJson) -> None:
    transcript = fetch_transcript(info_json=info_json(automatic={"en": {"srv3": SRV3}}))
    assert transcript.format == "srv3"
    assert transcript.text == "srv three"


def test_language_selection(info_json: InfoJson, files: FileServer) -> None:
    path = info_json(manual={"en": {"vtt": VTT}, "de": {"vtt": GERMAN}})
    transcript = fetch_transcript(info_json=path, lang="de")
    assert transcript.language == "de"
    assert transcript.text == "Kaufen wenn RSI unter 30."
    assert files.hits == ["/manual/vid00000001/de.vtt"]


def test_no_captions_in_the_language_is_a_clear_error(info_json: InfoJson) -> None:
    path = info_json(manual={"de": {"vtt": GERMAN}}, automatic={"fr": {"vtt": GERMAN}})
    with pytest.raises(NoCaptions, match=r"no captions in 'en' \(available: de \(manual\), "
                                         r"fr \(automatic\)\)"):
        fetch_transcript(info_json=path, lang="en")
    with pytest.raises(NoCaptions, match="available: none"):
        fetch_transcript(info_json=info_json(id="nocaps00001"))


def test_empty_captions_are_a_clear_error(info_json: InfoJson) -> None:
    with pytest.raises(NoCaptions, match="empty"):
        fetch_transcript(info_json=info_json(manual={"en": {"vtt": "WEBVTT\n\n"}}))


def test_urls_must_be_youtube_and_languages_plain() -> None:
    assert check_youtube_url("https://youtu.be/abc") == "https://youtu.be/abc"
    for bad in ("http://127.0.0.1:9/watch?v=x", "file:///etc/passwd", "https://evil.com/youtube.com"):
        with pytest.raises(ValidationError, match="not a YouTube video URL"):
            fetch_transcript(bad)
    for bad_lang in ("all", "en.*", "-en", ""):
        with pytest.raises(ValidationError, match="not a language tag"):
            fetch_transcript("https://youtu.be/abc", lang=bad_lang)


def test_playlists_and_redirects_in_an_info_json_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.info.json"
    path.write_text(json.dumps({"id": "x", "_type": "url", "url": "http://127.0.0.1:9/"}))
    with pytest.raises(ValidationError, match="single video"):
        fetch_transcript(info_json=path)
    path.write_text("not json")
    with pytest.raises(ValidationError, match="not a yt-dlp info JSON"):
        fetch_transcript(info_json=path)
