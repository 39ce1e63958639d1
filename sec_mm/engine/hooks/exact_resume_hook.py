"""Resume a run exactly where it stopped: the random-number states and the data stream.

mmengine's ``--resume`` restores the weights, optimizer, schedulers, message hub and the
iteration and epoch counters, and an iteration-based loop replays its data loader up to the
iteration (loading the batches, so that the data workers' random state is replayed too). It
does not restore the random-number generators of the training processes (dropout, drop path,
Mixup/CutMix and other batch augmentations draw from them), and an epoch-based loop resumed
from a checkpoint saved in the middle of an epoch starts that epoch over. So a resumed run
draws other random numbers than the run it continues, and its losses differ from the first
iteration on.

:class:`ExactResumeHook` closes that gap:

- Every checkpoint holds the random-number states of every rank (Python ``random``, NumPy,
  torch CPU and CUDA), gathered to the saving rank, under the key ``'exact_resume'``.
- On resume, each rank gets its states back right before the first batch after the
  checkpoint is fetched (after the replayed batches), which is where the original run took
  them. An epoch-based loop resumed in the middle of an epoch replays the epoch's batches
  already trained instead of training them again.
- Validation inside training draws from saved-and-restored states, so that a resumed run
  (which does not repeat the validation of its checkpoint's iteration) and an uninterrupted
  one continue from the same states.

With the same data, processes and seed (``tools/train.py --resume`` keeps the checkpoint's
seed), a resumed run then repeats the uninterrupted one, bit for bit on CPU. A checkpoint
without these states still resumes, with a note.
"""
import logging
import random
from contextlib import contextmanager
from typing import Any, Callable, Iterator, List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop

__all__ = ['EXACT_RESUME_KEY', 'capture_rng_state', 'restore_rng_state', 'ExactResumeHook']

#: The checkpoint key of what this hook saves.
EXACT_RESUME_KEY = 'exact_resume'
_FORMAT = 1


def capture_rng_state() -> dict:
    """This process's random-number states, as tensors and plain values (weights-only safe).

    Returns:
        dict: ``python`` (``random``), ``numpy`` (the global ``np.random``), ``torch`` (CPU)
        and ``cuda`` (the current device's, or None without an initialised CUDA).
    """
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    cuda = (torch.cuda.get_rng_state() if torch.cuda.is_available()
            and torch.cuda.is_initialized() else None)
    return dict(
        python=dict(version=version, internal=torch.tensor(internal, dtype=torch.int64),
                    gauss_next=gauss_next),
        numpy=dict(name=name, keys=torch.from_numpy(keys.astype(np.int64)), pos=int(pos),
                   has_gauss=int(has_gauss), cached_gaussian=float(cached_gaussian)),
        torch=torch.get_rng_state(),
        cuda=cuda)


def restore_rng_state(state: dict) -> List[str]:
    """Set this process's random-number states from :func:`capture_rng_state`'s result.

    Returns:
        list: Notes on what could not be restored (CUDA states without CUDA, or the reverse).
    """
    notes = []
    python = state['python']
    random.setstate((python['version'], tuple(int(v) for v in python['internal'].tolist()),
                     python['gauss_next']))
    numpy = state['numpy']
    np.random.set_state((numpy['name'], numpy['keys'].numpy().astype(np.uint32), numpy['pos'],
                         numpy['has_gauss'], numpy['cached_gaussian']))
    torch.set_rng_state(state['torch'])
    cuda_here = torch.cuda.is_available() and torch.cuda.is_initialized()
    if state.get('cuda') is not None and cuda_here:
        torch.cuda.set_rng_state(state['cuda'])
    elif state.get('cuda') is not None or cuda_here:
        notes.append('CUDA random states were ' + ('saved but this run has no CUDA' if
                     state.get('cuda') is not None else 'not saved (a run without CUDA)'))
    return notes


class _RestoreBeforeBatch:
    """An iterator that calls ``before(...)`` right before its ``at``-th item is fetched.

    Replaces an iteration-based loop's ``dataloader_iterator``; hands the loop back its own
    iterator once done.
    """

    def __init__(self, inner: Iterator, at: int, before: Callable[[], None], loop) -> None:
        self.inner, self.at, self.before, self.loop = inner, at, before, loop
        self.fetched = 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.fetched == self.at:
            self.before()
            self.loop.dataloader_iterator = self.inner
        self.fetched += 1
        return next(self.inner)


class _SkipTrainedBatches:
    """A data loader whose next iteration replays (loads) and drops its first ``skip``
    batches, then calls ``before()``; everything else is the wrapped loader's."""

    def __init__(self, dataloader, skip: int, before: Callable[[], None]) -> None:
        self._dataloader, self._skip, self._before = dataloader, skip, before

    def __iter__(self):
        iterator = iter(self._dataloader)
        for _ in range(self._skip):
            next(iterator)
        self._before()
        return iterator

    def __len__(self) -> int:
        return len(self._dataloader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dataloader, name)


class ExactResumeHook(Hook):
    """Save every rank's random-number states in each checkpoint; restore them on resume.

    See the module docstring. Needs nothing from the config. The data order after a resume
    is the original run's when the train sampler's seed is (mmengine's ``DefaultSampler`` and
    ``InfiniteSampler`` take the run's seed; ``tools/train.py --resume`` sets
    ``randomness.seed`` to the checkpoint's); otherwise a warning names the two seeds.

    Limits: random states of data loader workers are replayed, not saved: exact with
    ``num_workers=0``, with iteration-based loops, and with epoch-based loops whose workers
    are started every epoch (``persistent_workers=False``). With persistent workers, an
    epoch-based loop's workers restart on resume, and their augmentations draw other numbers
    than an uninterrupted run's (everything else is resumed exactly). States are restored
    when the run has as many processes as the checkpoint's.
    """

    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self._loaded: Optional[dict] = None
        self._loaded_seed = None
        self._in_val: Optional[dict] = None
        self._gathered: Optional[list] = None
        self._original_dataloader = None

    # -- saving ----------------------------------------------------------------------------
    def _training_stream_state(self) -> dict:
        # Inside validation (a best-checkpoint save) the training stream's states are the
        # ones taken before validation.
        return self._in_val if self._in_val is not None else capture_rng_state()

    @contextmanager
    def every_ranks_states(self):
        """Gather every rank's states for the checkpoint saved inside the block.

        To be entered by every rank: mmengine's ``Runner.save_checkpoint`` (and so
        ``before_save_checkpoint``) runs on rank 0 only. The checkpoint hooks' saves are
        wrapped in it (see :meth:`before_train`); other code that saves a checkpoint on every
        rank can use it too (:class:`PreemptionHook` does).
        """
        state = self._training_stream_state()
        self._gathered = all_gather_object(state) if get_world_size() > 1 else [state]
        try:
            yield
        finally:
            self._gathered = None

    def _gather_around_checkpoint_saves(self, runner) -> None:
        for hook in runner.hooks:
            if isinstance(hook, CheckpointHook) and \
                    '_save_checkpoint_with_step' not in vars(hook):
                save = hook._save_checkpoint_with_step  # called on every rank

                def save_with_every_ranks_states(runner, step, meta, save=save):
                    with self.every_ranks_states():
                        save(runner, step, meta)

                hook._save_checkpoint_with_step = save_with_every_ranks_states

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        states = self._gathered
        if states is None:
            # Saved on rank 0 alone (a best checkpoint, other code): the other ranks' states
            # are not known here.
            states = [self._training_stream_state()] + [None] * (get_world_size() - 1)
        entry = dict(format=_FORMAT, world_size=len(states), rng=states)
        sampler_seed = getattr(getattr(runner.train_dataloader, 'sampler', None), 'seed', None)
        if isinstance(sampler_seed, int):
            entry['sampler_seed'] = sampler_seed
        checkpoint[EXACT_RESUME_KEY] = entry

    def before_val(self, runner) -> None:
        self._in_val = capture_rng_state()

    def after_val(self, runner) -> None:
        if self._in_val is not None:
            restore_rng_state(self._in_val)
            self._in_val = None

    # -- resuming --------------------------------------------------------------------------
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Called for load_from too: what is kept here is used only if the run resumes.
        if not isinstance(checkpoint, dict):
            self._loaded, self._loaded_seed = False, None
            return
        self._loaded = checkpoint.get(EXACT_RESUME_KEY) or False
        self._loaded_seed = (self._loaded.get('sampler_seed') if self._loaded else None)
        if self._loaded_seed is None:
            self._loaded_seed = (checkpoint.get('meta') or {}).get('seed')

    def before_train(self, runner) -> None:
        self._gather_around_checkpoint_saves(runner)
        loop = runner.train_loop
        loaded, self._loaded = self._loaded, None
        if loaded is None or (loop.iter == 0 and loop.epoch == 0):
            return  # a fresh start (or weights loaded to fine-tune)
        if loaded is False:
            print_log('Resuming from a checkpoint without random-number states (saved without '
                      'ExactResumeHook): training continues from it, but draws other random '
                      'numbers (dropout, augmentations) than an uninterrupted run would.',
                      logger='current', level=logging.WARNING)
            restore = None
        else:
            restore = self._restorer(loaded)
        self._check_sampler_seed(runner)
        if isinstance(loop, IterBasedTrainLoop):
            if restore is not None:
                # The loop replays `iter` batches first (mmengine); restore right after them.
                loop.dataloader_iterator = _RestoreBeforeBatch(loop.dataloader_iterator,
                                                               loop.iter, restore, loop)
            return
        if isinstance(loop, EpochBasedTrainLoop):
            trained = loop.iter - loop.epoch * len(loop.dataloader)
            # (All of it: the epoch's end, its hooks and validation, is still to come.)
            if 0 < trained <= len(loop.dataloader):
                print_log(f'Resuming in the middle of epoch {loop.epoch + 1}: replaying its '
                          f'{trained} batches already trained (loaded, not trained).',
                          logger='current')
                self._original_dataloader = loop.dataloader
                loop.dataloader = _SkipTrainedBatches(loop.dataloader, trained,
                                                      restore or (lambda: None))
                return
            if trained != 0:
                print_log(f'The checkpoint says iteration {loop.iter} of epoch '
                          f'{loop.epoch + 1}, which does not fit {len(loop.dataloader)} '
                          'batches per epoch (another batch size or number of processes?): '
                          'the epoch starts over.', logger='current', level=logging.WARNING)
        if restore is not None:
            restore()

    def after_train_epoch(self, runner) -> None:
        if self._original_dataloader is not None:
            runner.train_loop.dataloader = self._original_dataloader
            self._original_dataloader = None

    def _restorer(self, loaded: dict) -> Optional[Callable[[], None]]:
        states = loaded.get('rng') or []
        world_size = get_world_size()
        if len(states) != world_size:
            print_log(f'The checkpoint holds the random-number states of {len(states)} '
                      f'process(es), this run has {world_size}: they are not restored, and '
                      'the resumed run draws other random numbers than an uninterrupted one.',
                      logger='current', level=logging.WARNING)
            return None
        state = states[get_rank()]
        if state is None:
            print_log(f'The checkpoint holds no random-number states of rank {get_rank()} (it '
                      'was saved outside the checkpoint hook): they are not restored.',
                      logger='current', level=logging.WARNING)
            return None

        def restore() -> None:
            for note in restore_rng_state(state):
                print_log(f'Resume: {note}.', logger='current', level=logging.WARNING)

        return restore

    def _check_sampler_seed(self, runner) -> None:
        sampler = getattr(runner.train_loop.dataloader, 'sampler', None)
        seed = getattr(sampler, 'seed', None)
        if self._loaded_seed is None or not isinstance(seed, int) or seed == self._loaded_seed:
            return
        print_log(f'The train sampler was seeded with {seed}, the resumed run with '
                  f'{self._loaded_seed}: the data order after the checkpoint differs from the '
                  f'original run\'s. Set randomness.seed={self._loaded_seed} in the config '
                  '(tools/train.py --resume does) for an exact resume.', logger='current',
                  level=logging.WARNING)
