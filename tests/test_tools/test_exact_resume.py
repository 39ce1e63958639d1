"""Exact resume end to end: tools/train.py resumed from a checkpoint of a run repeats that
run's losses bit for bit (the two-process case, with a stop by SIGTERM, is
test_preemption.py)."""
import shutil

import pytest

from training_helpers import RANDOM_CONFIG, iteration_losses, run, train_command


@pytest.fixture(scope='module')
def workspace(tmp_path_factory, toy_data_root):
    root = tmp_path_factory.mktemp('exact_resume')
    (root / 'data').symlink_to(toy_data_root, target_is_directory=True)
    (root / 'tiny_random.py').write_text(RANDOM_CONFIG)
    return root


@pytest.mark.e2e
def test_a_run_resumed_from_its_checkpoint_repeats_its_losses(workspace):
    # No seed in the config: the run draws one, and --resume must keep it.
    options = ['--cfg-options', 'train_cfg.max_iters=6', 'randomness.seed=None']
    full = workspace / 'full'
    done = run(train_command(workspace / 'tiny_random.py', full, *options), workspace,
               workspace / 'full.log')
    assert done.returncode == 0, done.stdout[-5000:]
    # As if the run had been killed right after saving iteration 4 (SIGKILL leaves the
    # checkpoints complete): that checkpoint alone, in another work dir.
    resumed = workspace / 'resumed'
    resumed.mkdir()
    shutil.copy(full / 'iter_4.pth', resumed)
    done = run(train_command(workspace / 'tiny_random.py', resumed, '--resume',
                             resumed / 'iter_4.pth', *options), workspace,
               workspace / 'resumed.log')
    assert done.returncode == 0, done.stdout[-5000:]
    assert '--resume: randomness.seed=' in done.stdout
    assert 'without random-number states' not in done.stdout
    full_losses, resumed_losses = iteration_losses(full), iteration_losses(resumed)
    assert sorted(full_losses) == [1, 2, 3, 4, 5, 6]
    assert resumed_losses == {k: v for k, v in full_losses.items() if k > 4}
