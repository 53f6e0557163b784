"""A video's metadata and captions through yt-dlp, used as a library; the video is never downloaded.

Two ways in, one way through:

- a YouTube URL (``https://www.youtube.com/watch?v=...``, ``youtu.be/...``, shorts, live): the URL
  is checked to be YouTube's and handed to yt-dlp's YouTube extractor only (never the generic one,
  so a URL cannot make Falcon crawl an arbitrary page, and playlists are not expanded);
- a yt-dlp info JSON (what ``yt-dlp --write-info-json --skip-download URL`` writes): read from a
  file and processed exactly like a freshly extracted one. This is the honest seam for working
  offline and for the tests, which serve the caption files the info JSON points at from a
  loopback HTTP server; nothing else differs from the URL path.

Either way yt-dlp's own subtitle selection runs (``writesubtitles`` + ``writeautomaticsub`` with
one language: the uploader's captions win over automatic ones for the same language; formats
json3, then srv3, then vtt) and writes the chosen file into a temporary folder, which
:mod:`falcon.research.captions` turns into clean, timestamped text.

Example::

    transcript = fetch_transcript("https://youtu.be/dQw4w9WgXcQ", lang="en")
    transcript.video.title, transcript.kind, len(transcript.segments)
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from falcon.errors import ExternalServiceError, NotFound, ValidationError
from falcon.research.captions import Segment, parse_captions, plain_text

log = logging.getLogger(__name__)

__all__ = [
    "MAX_CAPTION_BYTES",
    "NoCaptions",
    "Transcript",
    "VideoInfo",
    "VideoUnavailable",
    "check_language",
    "check_youtube_url",
    "fetch_transcript",
]

#: Caption files larger than this are refused (a three-hour talk's json3 is a few MB).
MAX_CAPTION_BYTES = 20 * 1024 * 1024
_YOUTUBE_HOSTS = {
    "youtube.com", "www.youtube.com", "m.youtube.com", "music.youtube.com", "youtu.be",
    "www.youtube-nocookie.com", "youtube-nocookie.com",
}
_LANG = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8}){0,3}")
_SUB_FORMATS = "json3/srv3/vtt/srv1"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class NoCaptions(NotFound):
    """The video has no captions Falcon can read in the requested language."""


class VideoUnavailable(ExternalServiceError):
    """yt-dlp could not get the video's metadata or its caption file."""


@dataclass(frozen=True)
class VideoInfo:
    """What the research record says about the video (all of it untrusted text from the web)."""

    video_id: str
    url: str
    title: str
    channel: str | None = None
    upload_date: str | None = None  # ISO date
    duration_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form for provenance."""
        return {"video_id": self.video_id, "url": self.url, "title": self.title,
                "channel": self.channel, "upload_date": self.upload_date,
                "duration_s": self.duration_s}


@dataclass(frozen=True)
class Transcript:
    """Clean caption text of one video, one :class:`Segment` per line."""

    video: VideoInfo
    language: str
    kind: Literal["manual", "automatic"]
    format: str
    segments: tuple[Segment, ...]
    raw_sha256: str = field(default="")

    @property
    def text(self) -> str:
        """The words alone, one line per segment."""
        return plain_text(self.segments)

    @property
    def sha256(self) -> str:
        """SHA-256 of :attr:`text` (what the provenance records)."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def check_youtube_url(url: str) -> str:
    """``url`` if it is an http(s) YouTube address; :class:`ValidationError` otherwise."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or host not in _YOUTUBE_HOSTS:
        raise ValidationError(
            f"not a YouTube video URL: {url[:200]!r} (expected https://www.youtube.com/watch?v=... "
            "or https://youtu.be/...; for an info JSON use --info-json)"
        )
    return url.strip()


def check_language(lang: str) -> str:
    """``lang`` if it is a plain language tag (``en``, ``pt-BR``); yt-dlp reads it as a regex."""
    # "all" would ask yt-dlp for every track; anything else is matched as a regex by yt-dlp.
    if not _LANG.fullmatch(lang or "") or lang.lower() == "all":
        raise ValidationError(f"not a language tag: {lang!r} (expected e.g. en, de, pt-BR)")
    return lang


def _text(value: Any, limit: int) -> str | None:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return None
    text = _CONTROL.sub(" ", str(value)).strip()
    return text[:limit] or None


def _video_info(info: dict[str, Any], fallback_url: str | None) -> VideoInfo:
    video_id = _text(info.get("id"), 64) or "unknown"
    raw_date = _text(info.get("upload_date"), 8) or ""
    upload = (f"{raw_date[:4]}-{raw_date[4:6]}-{raw_date[6:8]}"
              if re.fullmatch(r"\d{8}", raw_date) else None)
    duration = info.get("duration")
    return VideoInfo(
        video_id=video_id,
        url=_text(info.get("webpage_url"), 500) or fallback_url or f"youtube:{video_id}",
        title=_text(info.get("title"), 300) or "(untitled)",
        channel=_text(info.get("channel") or info.get("uploader"), 200),
        upload_date=upload,
        duration_s=float(duration) if isinstance(duration, int | float)
        and not isinstance(duration, bool) and duration >= 0 else None,
    )


class _QuietLogger:
    """yt-dlp's chatter goes to our log at debug level, never to the user's stdout."""

    def debug(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def info(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def warning(self, msg: str) -> None:
        log.info("yt-dlp: %s", msg)

    def error(self, msg: str) -> None:
        log.info("yt-dlp: %s", msg)


def _options(folder: Path, lang: str) -> dict[str, Any]:
    return {
        "skip_download": True,           # metadata and captions only, never the video
        "writesubtitles": True,          # the uploader's captions ...
        "writeautomaticsub": True,       # ... else YouTube's automatic ones
        "subtitleslangs": [lang],
        "subtitlesformat": _SUB_FORMATS,
        "ignore_no_formats_error": True,  # we need no playable format
        "noplaylist": True,
        # Only YouTube's own extractor is loaded: no generic page crawling, and a fast start.
        "allowed_extractors": ["youtube"],
        "outtmpl": {"default": str(folder / "%(id)s.%(ext)s")},
        "paths": {"home": str(folder), "temp": str(folder)},
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "logger": _QuietLogger(),
        "cachedir": False,
    }


def _available(info: dict[str, Any]) -> str:
    names = []
    for key, kind in (("subtitles", "manual"), ("automatic_captions", "automatic")):
        tracks = info.get(key)
        if isinstance(tracks, dict):
            names += [f"{lang} ({kind})" for lang in sorted(tracks)[:20] if lang != "live_chat"]
    return ", ".join(names) or "none"


def _load_info_json(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise NotFound(f"{path}: cannot be read ({exc.strerror})") from None
    except ValueError:
        raise ValidationError(f"{path}: not a yt-dlp info JSON (not valid JSON)") from None
    if not isinstance(info, dict) or not info.get("id"):
        raise ValidationError(f"{path}: not a yt-dlp info JSON (no video id)")
    return info


def _single_video(info: Any) -> dict[str, Any]:
    # A "url" or "playlist" result would make yt-dlp go and extract something else: a video, one.
    if not isinstance(info, dict) or info.get("_type", "video") != "video":
        raise ValidationError("expected a single video, got a playlist or a redirect")
    return info


def fetch_transcript(
    url: str | None = None,
    *,
    info_json: Path | None = None,
    lang: str = "en",
) -> Transcript:
    """Metadata and clean captions of one video, from a YouTube ``url`` or an ``info_json`` file.

    Raises :class:`NoCaptions` when the video has no readable captions in ``lang`` (the message
    lists the languages it has), :class:`VideoUnavailable` when yt-dlp fails, and
    :class:`~falcon.errors.ValidationError` for a URL that is not YouTube's.
    """
    import yt_dlp
    from yt_dlp.utils import DownloadError, ExtractorError

    check_language(lang)
    if info_json is None and not url:
        raise ValidationError("give a YouTube URL or an info JSON file")
    raw_info = _load_info_json(info_json) if info_json is not None else None
    if raw_info is None and url is not None:
        url = check_youtube_url(url)

    with tempfile.TemporaryDirectory(prefix="falcon-yt-") as tmp:
        folder = Path(tmp)
        try:
            with yt_dlp.YoutubeDL(_options(folder, lang)) as ydl:
                if raw_info is None:
                    raw_info = ydl.extract_info(url, download=False, process=False,
                                                ie_key="Youtube")
                info = ydl.process_ie_result(_single_video(raw_info), download=True)
        except (DownloadError, ExtractorError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise VideoUnavailable(f"yt-dlp could not get the video: {first[:300]}") from None
        info = _single_video(info)
        video = _video_info(info, url)
        chosen = (info.get("requested_subtitles") or {}).get(lang)
        if not chosen or not chosen.get("filepath"):
            raise NoCaptions(
                f"video {video.video_id} has no captions in {lang!r} "
                f"(available: {_available(info)}); try --lang with one of those"
            )
        ext = str(chosen.get("ext") or "")
        path = Path(chosen["filepath"])
        if not path.is_file():
            raise VideoUnavailable(f"yt-dlp did not write the {lang} captions of {video.video_id}")
        if path.stat().st_size > MAX_CAPTION_BYTES:
            raise VideoUnavailable(f"the {lang} captions of {video.video_id} are larger than "
                                   f"{MAX_CAPTION_BYTES // 2**20} MB; refusing them")
        data = path.read_bytes()

    try:
        segments = parse_captions(data.decode("utf-8", errors="replace"), ext)
    except ValueError:
        raise NoCaptions(f"video {video.video_id} has {lang} captions only in the {ext!r} "
                         "format, which Falcon cannot read") from None
    if not segments:
        raise NoCaptions(f"the {lang} captions of video {video.video_id} are empty")
    manual = isinstance(info.get("subtitles"), dict) and lang in info["subtitles"]
    return Transcript(
        video=video, language=lang, kind="manual" if manual else "automatic", format=ext,
        segments=tuple(segments), raw_sha256=hashlib.sha256(data).hexdigest(),
    )
