"""Notice a lost process of a distributed run in bounded time, on any node.

torchrun notices a dead worker of its own node within a second or two, and a killed
process's sockets are reset, which fails a gloo collective waiting for it. A process whose
node crashed, froze or dropped off the network sends nothing, though: the others wait in
their next collective for the process group's timeout (30 minutes by default), printing
nothing.

Here every process of the run counts a heartbeat in the job's TCP store (the one at
``MASTER_ADDR:MASTER_PORT`` that torchrun and ``init_process_group`` already use) from a
background thread. Rank 0 watches every rank and the others watch rank 0; the Python main
thread may be busy or blocked in a collective meanwhile (evaluation on rank 0, a checkpoint
save, a hung all-reduce). A rank silent for longer than the limit is lost: the watcher logs
which rank (node, host) it was, tells the others through the store, and ends its own process
with exit code 1, so that every launcher of the job ends too. A rank that leaves through an
exception tells the others at once; one that finishes cleanly says so and is not missed.
"""
import atexit
import logging
import os
import socket
import sys
import threading
import time
from datetime import timedelta
from typing import Dict, List, Optional

import torch.distributed as torch_dist
from mmengine.logging import MMLogger, print_log

__all__ = ['DEFAULT_PEER_TIMEOUT', 'PeerWatchdog', 'start_peer_watchdog']

#: Seconds a rank may stay silent: long enough for a busy machine (the heartbeat thread also
#: beats while rank 0 evaluates or saves), short enough that a lost job ends within minutes.
DEFAULT_PEER_TIMEOUT = 120.
_EXIT_CODE = 1
_running = None  # this process's watchdog


def _describe_self() -> str:
    node = os.environ.get('GROUP_RANK', os.environ.get('SLURM_NODEID'))
    where = f'node {node}, ' if node is not None else ''
    return f'{where}host {socket.gethostname()}, pid {os.getpid()}'


class PeerWatchdog:
    """Heartbeats through the job's store; ends this process when a peer is lost.

    Args:
        rank: This process's rank.
        world_size: The number of processes.
        timeout: Seconds of silence after which a peer is lost.
        host: The store's address (``MASTER_ADDR``).
        port: The store's port (``MASTER_PORT``).
        namespace: Key prefix, unique per run (and torchrun restart).
    """

    def __init__(self, rank: int, world_size: int, timeout: float, host: str, port: int,
                 namespace: str) -> None:
        self.rank, self.world_size, self.timeout = rank, world_size, float(timeout)
        self.host, self.port, self.namespace = host, port, namespace
        # Several beats per timeout, so that lateness is told from silence; at most every 5 s
        # (rank 0 reads every rank's counter each round).
        self.interval = min(5., max(.2, self.timeout / 10))
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._run, name='sec_mm-peer-watchdog',
                                        daemon=True)

    # -- the store -------------------------------------------------------------------------
    def _connect(self, timeout: Optional[float] = None) -> torch_dist.Store:
        store = torch_dist.TCPStore(self.host, self.port, is_master=False,
                                    timeout=timedelta(seconds=timeout or self.timeout))
        return torch_dist.PrefixStore(self.namespace, store)

    def _beats(self, store, ranks: List[int]) -> Dict[int, int]:
        # add(key, 0) reads a counter without waiting for it to exist (get() would wait).
        return {r: store.add(f'beat/{r}', 0) for r in ranks}

    def _silent(self, store) -> List[str]:
        """The other ranks whose heartbeat stops over two beats (and that are not done)."""
        others = [r for r in range(self.world_size)
                  if r != self.rank and not store.check([f'done/{r}'])]
        before = self._beats(store, others)
        time.sleep(2.5 * self.interval)
        after = self._beats(store, others)
        return [self._describe(store, r) for r in others if after[r] == before[r]]

    def _describe(self, store, rank: int) -> str:
        key = f'info/{rank}'
        return (f'rank {rank} ({store.get(key).decode()})' if store.check([key]) else
                f'rank {rank}')

    # -- the thread ------------------------------------------------------------------------
    def start(self) -> 'PeerWatchdog':
        self._thread.start()
        atexit.register(self.finish)
        return self

    def _run(self) -> None:
        finished = set()
        try:
            store = self._connect()
            store.set(f'info/{self.rank}', _describe_self())
            watched = list(range(self.world_size)) if self.rank == 0 else [0]
            watched = [r for r in watched if r != self.rank]
            last_seen = {r: None for r in watched}
            last_change = {r: time.monotonic() for r in watched}
            last_round = time.monotonic()
            while not self._stop.is_set():
                store.add(f'beat/{self.rank}', 1)
                if store.check(['lost']):
                    self.end_process(f'Stopping: {store.get("lost").decode()}')
                now = time.monotonic()
                if now - last_round > 3 * self.interval:
                    # This process itself was paused (suspended job, debugger): the silence
                    # of the others is not theirs.
                    last_change = {r: now for r in watched}
                last_round = now
                finished = {r for r in watched if store.check([f'done/{r}'])}
                for rank, count in self._beats(store, [r for r in watched
                                                       if r not in finished]).items():
                    if count != last_seen[rank]:
                        last_seen[rank], last_change[rank] = count, now
                    elif now - last_change[rank] > self.timeout:
                        lost = self._describe(store, rank)
                        message = (f'{lost} has not been heard from for '
                                   f'{now - last_change[rank]:.0f} s (limit '
                                   f'env_cfg.peer_timeout={self.timeout:g} s): it or its node '
                                   'is gone')
                        store.set('lost', f'{message} (noticed by rank {self.rank}).')
                        self.end_process(f'{message}. Stopping this process (rank {self.rank}) '
                                  'instead of waiting for the collective timeout.')
                self._stop.wait(self.interval)
        except Exception as error:  # the store itself is gone: so is node 0's launcher
            if not self._stop.is_set() and 0 not in finished:
                self.end_process(f'Lost the job\'s store at {self.host}:{self.port} (node 0) for '
                          f'over {self.timeout:g} s ({type(error).__name__}: {error}). '
                          f'Stopping this process (rank {self.rank}).')

    def end_process(self, message: str) -> None:
        """Log ``message`` and end this process at once, with exit code 1.

        Called from the watchdog thread when a peer is lost; a subclass may record the
        message instead (the tests do).
        """
        print_log(message, logger='current', level=logging.ERROR)
        for handler in MMLogger.get_current_instance().handlers:
            handler.flush()
        sys.stderr.flush()
        os._exit(_EXIT_CODE)

    def stop(self) -> None:
        """Stop beating without telling the others: to them this rank goes silent."""
        self._stop.set()

    # -- the end of this process -----------------------------------------------------------
    def finish(self, error: Optional[BaseException] = None) -> None:
        """Stop beating; tell the others this rank is done (or, with ``error``, failed)."""
        if self._finished:
            return
        self._finished = True
        try:
            store = self._connect(timeout=min(self.timeout, 10.))
            message = None
            if error is not None:
                message = (f'rank {self.rank} ({_describe_self()}) failed: '
                           f'{type(error).__name__}: {error}'.strip())
                if isinstance(error, RuntimeError):
                    # Collective errors ("Connection reset by peer") do not say whose: the
                    # peers that went silent do. (This rank beats on meanwhile, so that
                    # ranks failing alike do not name each other.)
                    silent = self._silent(store)
                    if silent:
                        message += f'\nPeers that stopped with it: {"; ".join(silent)}.'
                        print_log(f'Peers that stopped: {"; ".join(silent)}.',
                                  logger='current', level=logging.ERROR)
            self._stop.set()
            if message is not None:
                store.set('lost', message)
            store.set(f'done/{self.rank}', '1')
            if self.rank == 0 and error is None and \
                    os.environ.get('TORCHELASTIC_USE_AGENT_STORE') != 'True':
                # The store lives in this process (not in torchrun's agent): keep it up until
                # the others have said they are done, or have gone silent.
                self._wait_for_the_others(store)
        except Exception:
            pass  # the store is gone with node 0: nobody is left to tell
        finally:
            self._stop.set()

    def _wait_for_the_others(self, store) -> None:
        deadline = time.monotonic() + self.timeout
        pending = list(range(1, self.world_size))
        last = self._beats(store, pending)
        while time.monotonic() < deadline:
            pending = [r for r in pending if not store.check([f'done/{r}'])]
            if not pending:
                return
            time.sleep(2.5 * self.interval)
            beats = self._beats(store, pending)
            if all(beats[r] == last[r] for r in pending):
                return  # silent: nothing to wait for
            last = beats


def start_peer_watchdog(launcher: str, timeout: Optional[float] = DEFAULT_PEER_TIMEOUT
                        ) -> Optional[PeerWatchdog]:
    """Start the heartbeat of this process of a distributed run.

    Needs only the launcher's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
    ``MASTER_PORT``), not the process group: it covers the process-group set-up too. An
    uncaught exception marks this rank failed, which stops the others at once. Idempotent;
    returns None while that environment is incomplete.

    Args:
        launcher: ``'none'`` (nothing to watch), ``'pytorch'`` or ``'slurm'``.
        timeout: Seconds of silence after which a peer is lost; None or 0 turns it off.

    Returns:
        PeerWatchdog | None: The running watchdog.
    """
    global _running
    # Checked in every run, so that a setting that is wrong fails where it is tried first
    # (often a one-process run), not on the cluster.
    number = isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
    if timeout is not None and not (number and (timeout == 0 or 1 <= timeout < float('inf'))):
        raise ValueError(f'env_cfg.peer_timeout must be a number of seconds >= 1 (or 0 / None '
                         f'to turn the peer watchdog off); got {timeout!r}.')
    if _running is not None or launcher == 'none' or not timeout:
        return _running
    if any(k not in os.environ for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')):
        return None  # not known yet (slurm on GPUs: mmengine's init_dist sets them)
    world_size = int(os.environ['WORLD_SIZE'])
    if world_size < 2:
        return None
    run = os.environ.get('TORCHELASTIC_RUN_ID', os.environ.get('SLURM_JOB_ID', 'run'))
    restart = os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')
    watchdog = PeerWatchdog(
        int(os.environ['RANK']), world_size, timeout, os.environ['MASTER_ADDR'],
        int(os.environ['MASTER_PORT']), namespace=f'sec_mm/peers/{run}/{restart}/').start()
    previous_hook = sys.excepthook

    def report_failure(kind, value, traceback):
        watchdog.finish(value)
        previous_hook(kind, value, traceback)

    sys.excepthook = report_failure
    _running = watchdog
    return watchdog
