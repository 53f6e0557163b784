"""Properties of the backoff schedule, the cooldown and the breaker (Hypothesis)."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from falcon.alerts.channels import mask_url, scrub
from falcon.alerts.delivery import CircuitBreaker, backoff_delay
from falcon.alerts.rules import cooldown_allows
from falcon.alerts.settings import RetryPolicy

policies = st.builds(
    lambda base, extra, n: RetryPolicy(n, base, base + extra),
    st.floats(0, 100), st.floats(0, 10_000), st.integers(1, 50),
)


@given(policies, st.integers(1, 200), st.integers(0, 2**32))
def test_backoff_is_jittered_exponential_and_capped(policy: RetryPolicy, attempt: int,
                                                    seed: int) -> None:
    ceiling = min(policy.backoff_cap_s, policy.backoff_base_s * 2.0 ** (attempt - 1))
    delay = backoff_delay(attempt, policy, random.Random(seed))
    assert ceiling / 2 <= delay <= ceiling <= policy.backoff_cap_s
    # The ceiling never shrinks from one try to the next.
    nxt = min(policy.backoff_cap_s, policy.backoff_base_s * 2.0 ** attempt)
    assert nxt >= ceiling


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=60), st.integers(0, 3_000))
def test_cooldown_spaces_firings(offsets: list[int], cooldown: int) -> None:
    start = datetime(2024, 1, 2, tzinfo=UTC)
    last = None
    fired = []
    for t in sorted(offsets):
        now = start + timedelta(seconds=t)
        if cooldown_allows(last, now, cooldown):
            fired.append(t)
            last = now
        else:
            # Suppressed only inside the cooldown of the last firing.
            assert fired and t - fired[-1] < cooldown
    assert all(b - a >= cooldown for a, b in itertools.pairwise(fired))
    assert fired[0] == min(offsets)


@given(st.lists(st.booleans(), max_size=80), st.integers(1, 6))
def test_breaker_never_allows_while_open(outcomes: list[bool], threshold: int) -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold, 10.0, clock=lambda: now[0])
    streak = 0
    for ok in outcomes:
        allowed = breaker.allowance(5)
        if breaker.opened_at is not None and now[0] - breaker.opened_at < 10.0:
            assert allowed == 0
            now[0] += 11.0
            continue
        if allowed == 0:
            now[0] += 11.0
            continue
        if ok:
            breaker.success()
            streak = 0
        else:
            breaker.failure()
            streak += 1
        if streak >= threshold:
            assert breaker.state == "open"
        now[0] += 1.0


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=8, max_size=40))
def test_scrub_hides_webhook_paths(token: str) -> None:
    url = f"https://hooks.example.com/services/T1/{token}"
    text = scrub(f"POST {url} failed; path /services/T1/{token}", [url])
    assert token not in text
    assert mask_url(url) == "https://hooks.example.com"
