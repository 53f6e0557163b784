"""Long work (backtests, optimisations, research) queued in the database and run by workers.

- :mod:`falcon.jobs.queue`: submit, claim, heartbeat, complete, fail, reap, cancel (the rows);
- :mod:`falcon.jobs.registry`: which handler runs each kind of job (import paths, lazily);
- :mod:`falcon.jobs.worker`: the loop that runs them (``falcon worker run``, or a thread).
"""
