"""Strategy research: YouTube captions → LLM extraction → validated spec → backtest → lifecycle.

Modules, in the order a video goes through them:

- :mod:`~falcon.research.youtube`: metadata and captions through yt-dlp (never the video);
- :mod:`~falcon.research.captions`: vtt, json3 and srv3 into clean ``[MM:SS] text``;
- :mod:`~falcon.research.extract`: the LLM call(s), chunking, the one repair round;
- :mod:`~falcon.research.spec`: the strategy schema and validator from :mod:`falcon.strategy`;
- :mod:`~falcon.research.evaluate`: backtest on a basket and the look-ahead check;
- :mod:`~falcon.research.pipeline`: all of it, stored with provenance;
- :mod:`~falcon.research.lifecycle`: extracted → backtested → paper → retired, with reasons;
- :mod:`~falcon.research.jobs`: the ``research`` job for workers.

Transcripts, titles and LLM answers are untrusted data throughout: they are parsed and validated,
never executed, and no URL in them is ever fetched.
"""
