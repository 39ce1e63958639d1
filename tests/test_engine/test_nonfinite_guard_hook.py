"""NonFiniteGuardHook on a real Runner (the toy regression model of toy_run.py): where it
stops, what it names, what it never saves or loads, and mixed precision's skipped steps."""
import math

import pytest
import torch
from mmengine.optim import OptimWrapper

from sec_mm.engine.hooks import NonFiniteError, NonFiniteGuardHook
from sec_mm.engine.hooks.nonfinite_guard_hook import (describe_non_finite_tensors,
                                                      non_finite_tensors)
from toy_run import LossRecorder, toy_runner

pytestmark = pytest.mark.usefixtures('single_thread')


def checkpoints(work_dir) -> list:
    return sorted(p.name for p in work_dir.glob('iter_*.pth'))


def test_a_non_finite_loss_stops_the_run_before_its_checkpoint(tmp_path):
    # Batches of 2 from a shuffled sampler: sample 5 (all NaN) comes in iteration 3.
    recorder = LossRecorder()
    runner = toy_runner(tmp_path, hooks=[recorder, NonFiniteGuardHook()], nan_samples=[5])
    with pytest.raises(NonFiniteError) as error:
        runner.train()
    stopped_at = max(recorder.losses)
    assert math.isnan(recorder.losses[stopped_at])
    assert all(math.isfinite(v) for k, v in recorder.losses.items() if k < stopped_at)
    message = str(error.value)
    assert message.startswith(f'Iteration {stopped_at}: non-finite loss term(s) loss, '
                              'loss_fit, loss_reg (loss=nan')
    assert 'Images with non-finite pixels: img_5.png' in message
    assert 'Batch: img_' in message and 'img_5.png' in message.split('Batch: ')[1]
    # Nothing of the bad step was saved; last_checkpoint names the step before.
    last = tmp_path / f'iter_{stopped_at - 1}.pth'
    assert checkpoints(tmp_path) == sorted(f'iter_{i}.pth' for i in range(1, stopped_at))
    assert (tmp_path / 'last_checkpoint').read_text() == str(last)
    assert f'the last checkpoint is {last}' in message


def test_a_non_finite_gradient_norm_stops_the_run(tmp_path):
    recorder = LossRecorder()
    runner = toy_runner(
        tmp_path, hooks=[recorder, NonFiniteGuardHook()], inf_gradient=True,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1), clip_grad=dict(max_norm=1.)))
    with pytest.raises(NonFiniteError, match=r'^Iteration 1: gradient norm (nan|inf)\. Batch'):
        runner.train()
    assert math.isfinite(recorder.losses[1])  # the loss itself was finite
    assert checkpoints(tmp_path) == []


class ScalerOptimWrapper(OptimWrapper):
    """mmengine's AmpOptimWrapper steps (scaled backward, unscale, clip, scaler step and
    update) with torch's CPU GradScaler: AmpOptimWrapper itself needs an accelerator."""

    def __init__(self, init_scale: float = 2.**16, **kwargs) -> None:
        super().__init__(**kwargs)
        self.loss_scaler = torch.amp.GradScaler('cpu', init_scale=init_scale)

    def backward(self, loss, **kwargs) -> None:
        self.loss_scaler.scale(loss).backward(**kwargs)
        self._inner_count += 1

    def step(self, **kwargs) -> None:
        if self.clip_grad_kwargs:
            self.loss_scaler.unscale_(self.optimizer)
            self._clip_grad()
        self.loss_scaler.step(self.optimizer, **kwargs)
        self.loss_scaler.update()


def scaler_wrapper(init_scale: float, clip: bool = True) -> dict:
    return dict(type=ScalerOptimWrapper, init_scale=init_scale,
                optimizer=dict(type='SGD', lr=0.1),
                clip_grad=dict(max_norm=1e3) if clip else None)


def test_skipped_loss_scaler_steps_are_normal(tmp_path):
    # A scale near float32's limit: the first steps overflow and are skipped, then the scale
    # has come down far enough and training goes on.
    runner = toy_runner(tmp_path, hooks=[NonFiniteGuardHook()],
                        optim_wrapper=scaler_wrapper(3e38))
    runner.train()
    assert runner.optim_wrapper.loss_scaler.get_scale() < 3e38  # steps were skipped
    assert checkpoints(tmp_path) == [f'iter_{i}.pth' for i in range(1, 7)]


@pytest.mark.parametrize('clip', [True, False], ids=['clip_grad', 'no_clip_grad'])
def test_a_collapsing_loss_scale_stops_the_run(tmp_path, clip):
    # Every step overflows: the scale halves each time (4, 2, 1, 0.5).
    runner = toy_runner(tmp_path / 'floor', hooks=[NonFiniteGuardHook(min_loss_scale=1.)],
                        inf_gradient=True, optim_wrapper=scaler_wrapper(4., clip))
    with pytest.raises(NonFiniteError,
                       match=r'^Iteration 3: the loss scale fell to 0\.5, below '
                             r'min_loss_scale=1'):
        runner.train()
    runner = toy_runner(tmp_path / 'row', hooks=[NonFiniteGuardHook(max_skipped_steps=3)],
                        inf_gradient=True, optim_wrapper=scaler_wrapper(2.**16, clip))
    with pytest.raises(NonFiniteError,
                       match=r'^Iteration 3: the loss scaler skipped 3 steps in a row for '
                             r'gradient overflow \(loss scale 8192'):
        runner.train()
    # The skipped steps left the weights finite, and they were saved as usual.
    assert checkpoints(tmp_path / 'row') == ['iter_1.pth', 'iter_2.pth']


def test_non_finite_weights_are_never_saved_nor_loaded(tmp_path):
    runner = toy_runner(tmp_path / 'run', max_iters=2, hooks=[NonFiniteGuardHook()])
    runner.train()
    checkpoint = torch.load(tmp_path / 'run' / 'iter_2.pth', weights_only=True)
    checkpoint['state_dict']['linear.weight'][0, 1] = float('inf')
    poisoned = tmp_path / 'poisoned.pth'
    torch.save(checkpoint, poisoned)

    hook = NonFiniteGuardHook()
    with pytest.raises(NonFiniteError, match=r'^Refusing to save a checkpoint at iteration '
                       r'3: it holds non-finite values: linear\.weight \(1 of 4 '
                       r'values\) \(1 of \d+ tensors\)\. The last saved checkpoint is '):
        hook.before_save_checkpoint(runner, checkpoint)

    # --resume, load_from and tools/test.py all load through Runner.load_checkpoint.
    for how in ('resume_from', 'load_from'):
        runner = toy_runner(tmp_path / how, hooks=[NonFiniteGuardHook()],
                            **{how: str(poisoned)})
        with pytest.raises(NonFiniteError, match=rf'^{poisoned} holds non-finite weights: '
                           r'linear\.weight \(1 of 4 values\)'):
            runner.train()


def test_non_finite_tensors_are_found_and_named():
    state = dict(a=torch.ones(3), b=dict(c=torch.tensor([1., float('nan'), float('-inf')])),
                 steps=torch.tensor([3]), lr=[0.1, torch.tensor(float('inf'))], name='x')
    found, total = non_finite_tensors(state)
    assert found == [('b.c', 2, 3), ('lr.1', 1, 1)] and total == 3
    assert describe_non_finite_tensors(found, total, limit=1) == \
        'b.c (2 of 3 values), and 1 more (2 of 3 tensors)'


@pytest.mark.parametrize('kwargs', [dict(min_loss_scale=-1), dict(min_loss_scale=math.inf),
                                    dict(max_skipped_steps=0), dict(max_skipped_steps=2.5)])
def test_bad_arguments_are_named(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f'NonFiniteGuardHook: {name} must be'):
        NonFiniteGuardHook(**kwargs)
