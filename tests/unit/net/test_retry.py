"""mk8s/net/retry.py: the retry budget: bytes moved earn more tries, but not for ever;
stalled tries and timeouts end it; a wait that would outlast the total time is not made."""

from __future__ import annotations

from mk8s import net


def test_bytes_moved_do_not_reset_the_retry_budget_forever() -> None:
    budget = net.RetryBudget(net.RetryPolicy(retries=2, backoff=0.0), 60, sleep=lambda s: None)
    tries = 1
    while budget.retry(progressed=True):
        tries += 1
    assert tries == net.TRIES_PER_ATTEMPT * 3


def test_stalled_tries_and_timeouts_end_the_budget() -> None:
    stalled = net.RetryBudget(net.RetryPolicy(retries=2, backoff=0.0), 60, sleep=lambda s: None)
    assert [stalled.retry(), stalled.retry(), stalled.retry()] == [True, True, False]
    slow = net.RetryBudget(net.RetryPolicy(retries=9, backoff=0.0), 60, sleep=lambda s: None)
    timeout = net.DeadlineExceeded("slow")
    assert [slow.retry(error=timeout), slow.retry(error=timeout)] == [True, False]
    late = net.RetryBudget(net.RetryPolicy(retries=9, backoff=5.0), 1.0, sleep=lambda s: None)
    assert late.retry() is False  # the wait would outlast the total time
