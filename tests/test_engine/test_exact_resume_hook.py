"""ExactResumeHook on a real Runner (toy_run.py: dropout, a random augmentation, a shuffling
sampler): a resumed run repeats the uninterrupted one bit for bit, in iteration- and
epoch-based loops, from checkpoints in and at the end of an epoch, across validation."""
import random
import shutil

import numpy as np
import pytest
import torch

from sec_mm.engine.hooks import ExactResumeHook
from sec_mm.engine.hooks.exact_resume_hook import (EXACT_RESUME_KEY, capture_rng_state,
                                                   restore_rng_state)
from toy_run import LossRecorder, toy_runner

pytestmark = pytest.mark.usefixtures('single_thread')


def train(work_dir, hooks=(), **kwargs) -> dict:
    recorder = LossRecorder()
    toy_runner(work_dir, hooks=[recorder, *hooks], **kwargs).train()
    return recorder.losses


def resume(run_dir, checkpoint: str, work_dir, hooks=(), **kwargs) -> dict:
    """Resume from a copy of ``run_dir/checkpoint`` (as if the run had been killed after
    saving it) in a new work dir."""
    work_dir.mkdir()
    shutil.copy(run_dir / checkpoint, work_dir)
    return train(work_dir, hooks, resume_from=str(work_dir / checkpoint), **kwargs)


# (loop, checkpoint to resume from, data workers): iteration-based; epoch-based in the middle
# of the second epoch and at its last iteration (4 batches per epoch, a checkpoint every
# iteration), with data workers started every epoch. (Iteration-based loops with a worker:
# test_tools/test_exact_resume.py; here the worker would take torch's 5 s shutdown timeout.)
CASES = [
    pytest.param(dict(max_iters=8), 'iter_4.pth', 0, id='iter_based'),
    pytest.param(dict(max_epochs=3), 'iter_6.pth', 0, id='mid_epoch'),
    pytest.param(dict(max_epochs=3), 'iter_6.pth', 1, id='mid_epoch-worker'),
    pytest.param(dict(max_epochs=3), 'iter_8.pth', 0, id='epoch_end'),
    pytest.param(dict(max_epochs=3), 'iter_8.pth', 1, id='epoch_end-worker'),
]


@pytest.mark.parametrize('loop,checkpoint,num_workers', CASES)
def test_resumed_runs_repeat_the_uninterrupted_one(tmp_path, loop, checkpoint, num_workers):
    # Validation every 2 iterations / every epoch: a resumed run does not repeat the one
    # that followed its checkpoint.
    kwargs = dict(loop, num_workers=num_workers, persistent_workers=False,
                  val_interval=1 if 'max_epochs' in loop else 2)
    full = train(tmp_path / 'full', [ExactResumeHook()], **kwargs)
    step = int(checkpoint[5:-4])
    resumed = resume(tmp_path / 'full', checkpoint, tmp_path / 'resumed', [ExactResumeHook()],
                     **kwargs)
    assert sorted(resumed) == list(range(step + 1, max(full) + 1))
    assert resumed == {k: v for k, v in full.items() if k > step}  # bit for bit


def test_without_the_hook_resumed_runs_differ(tmp_path):
    """What the hook fixes: mmengine alone resumes with other random numbers, and an
    epoch-based run resumed in the middle of an epoch trains that epoch again."""
    full = train(tmp_path / 'iter', max_iters=6)
    resumed = resume(tmp_path / 'iter', 'iter_3.pth', tmp_path / 'iter_resumed', max_iters=6)
    assert sorted(resumed) == [4, 5, 6]
    assert all(resumed[k] != full[k] for k in resumed)

    full = train(tmp_path / 'epoch', max_epochs=2)
    resumed = resume(tmp_path / 'epoch', 'iter_6.pth', tmp_path / 'epoch_resumed',
                     max_epochs=2)
    assert sorted(resumed) == list(range(7, 11))  # 4 iterations instead of 2


def test_checkpoints_hold_every_ranks_states_and_old_ones_resume_with_a_note(tmp_path, capsys):
    train(tmp_path / 'run', max_iters=3, hooks=[ExactResumeHook()])
    checkpoint = torch.load(tmp_path / 'run' / 'iter_3.pth', weights_only=True)
    entry = checkpoint[EXACT_RESUME_KEY]
    assert entry['world_size'] == 1 and len(entry['rng']) == 1
    assert set(entry['rng'][0]) == {'python', 'numpy', 'torch', 'cuda'}
    assert entry['sampler_seed'] == checkpoint['meta']['seed']

    del checkpoint[EXACT_RESUME_KEY]
    torch.save(checkpoint, tmp_path / 'old.pth')
    resumed = train(tmp_path / 'resumed', [ExactResumeHook()], max_iters=5,
                    resume_from=str(tmp_path / 'old.pth'))
    assert sorted(resumed) == [4, 5]
    assert 'Resuming from a checkpoint without random-number states' in capsys.readouterr().out


def test_rng_states_round_trip():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = capture_rng_state()
    drawn = (random.random(), np.random.normal(), torch.rand(2), np.random.normal())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    notes = restore_rng_state(state)
    assert notes == ([] if not torch.cuda.is_available() else notes)
    again = (random.random(), np.random.normal(), torch.rand(2), np.random.normal())
    assert drawn[:2] == again[:2] and torch.equal(drawn[2], again[2]) and drawn[3] == again[3]
