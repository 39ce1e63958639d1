"""sec_mm.engine.peer_watchdog: a silent rank is noticed within the limit; a finished one is
not missed. Two watchdogs in this process share a real TCPStore; ending the process is
replaced by recording the message."""
import time
from datetime import timedelta

import pytest
import torch.distributed as torch_dist

from sec_mm.engine.peer_watchdog import PeerWatchdog, start_peer_watchdog

from net_helpers import free_port


class Recorded(PeerWatchdog):
    """A watchdog whose end is recorded instead of ending the process."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ended = []

    def end_process(self, message):
        self.ended.append(message)
        self.stop()  # the thread's loop ends


STARTED = []


@pytest.fixture
def store():
    port = free_port()
    server = torch_dist.TCPStore('127.0.0.1', port, is_master=True,
                                 timeout=timedelta(seconds=10), wait_for_workers=False)
    yield port
    while STARTED:  # while the store is up (their exit handlers would wait for it)
        STARTED.pop().finish()
    del server


def pair(port, timeout=1.):
    watchdogs = [Recorded(rank, 2, timeout, '127.0.0.1', port, namespace=f'test{port}/')
                 for rank in (0, 1)]
    STARTED.extend(watchdogs)
    return watchdogs


def wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.05)
    return predicate()


def test_a_silent_rank_is_named_within_the_limit(store):
    rank0, rank1 = pair(store)
    rank0.start()
    rank1.start()
    time.sleep(0.5)
    rank1.stop()  # rank 1 goes silent without a word, as a frozen or dead process
    start = time.monotonic()
    assert wait_for(lambda: rank0.ended, timeout=5)
    assert time.monotonic() - start < 1. + 3 * rank0.interval
    assert rank0.ended[0].startswith('rank 1 (host ')
    assert 'has not been heard from for 1 s (limit env_cfg.peer_timeout=1 s)' in rank0.ended[0]


def test_a_finished_rank_is_not_missed_and_a_failed_one_stops_the_others(store):
    rank0, rank1 = pair(store)
    rank0.start()
    rank1.start()
    time.sleep(0.5)
    rank1.finish()  # done: it may go quiet
    time.sleep(2.5)
    assert rank0.ended == []
    rank0.stop()

    rank0, rank1 = pair(store)
    rank0.namespace = rank1.namespace = f'second{store}/'  # a second run
    rank0.start()
    rank1.start()
    time.sleep(0.5)
    rank0.finish(ValueError('bad config'))
    assert wait_for(lambda: rank1.ended, timeout=5)
    assert rank1.ended[0].startswith('Stopping: rank 0 (') and \
        rank1.ended[0].endswith('failed: ValueError: bad config')


def test_peer_timeout_is_checked():
    assert start_peer_watchdog('none', 120) is None
    assert start_peer_watchdog('pytorch', 0) is None  # turned off
    with pytest.raises(ValueError, match=r'env_cfg\.peer_timeout must be a number of seconds '
                       r">= 1 .*got '2m'"):
        start_peer_watchdog('pytorch', '2m')
    # Also where there is nothing to watch (one process), and for numbers that are no limit.
    for wrong in ('2m', -5, 0.5, float('nan'), float('inf'), True):
        with pytest.raises(ValueError, match=r'env_cfg\.peer_timeout .*got'):
            start_peer_watchdog('none', wrong)
