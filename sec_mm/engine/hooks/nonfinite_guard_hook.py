"""Stop a run at the first non-finite loss or gradient norm; never keep non-finite weights.

Without a guard, a diverging run (a learning rate far too high, one corrupt image) trains on
with loss ``nan``, saves checkpoints of ``nan`` weights, names them in ``last_checkpoint`` and
exits 0; testing such a checkpoint scores 0 without a word. mmdet's ``CheckInvalidLossHook``
stops on a non-finite total loss, every ``interval`` iterations, in mmdet only.
:class:`NonFiniteGuardHook` does it for any codebase, every iteration, on every loss term and
the gradient norm, with the batch's images in the message, and refuses to save or load
non-finite weights.
"""
import logging
import math
from typing import Any, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from mmengine.dist import all_gather_object, all_reduce, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmengine.runner import EpochBasedTrainLoop

__all__ = ['NonFiniteError', 'non_finite_tensors', 'describe_non_finite_tensors',
           'NonFiniteGuardHook']


class NonFiniteError(FloatingPointError):
    """A loss, gradient norm or weight that is NaN or infinite."""


def _tensors(obj: Any, prefix: str = '') -> Iterator[Tuple[str, torch.Tensor]]:
    if torch.is_tensor(obj):
        yield prefix, obj
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from _tensors(value, f'{prefix}.{key}' if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _tensors(value, f'{prefix}.{i}' if prefix else str(i))


def non_finite_tensors(obj: Any) -> Tuple[List[Tuple[str, int, int]], int]:
    """The floating-point tensors inside ``obj`` that hold a NaN or an infinity.

    Args:
        obj: A tensor, or nested dicts / lists / tuples of them (a state dict, a checkpoint's
            ``optimizer`` entry); other values are ignored.

    Returns:
        tuple: ``(name, non-finite values, values)`` for each such tensor (names are the keys
        joined by dots), and the number of floating-point tensors looked at.
    """
    found, total = [], 0
    for name, tensor in _tensors(obj):
        if not tensor.is_floating_point() and not tensor.is_complex():
            continue
        total += 1
        bad = int((~torch.isfinite(tensor.detach())).sum())
        if bad:
            found.append((name, bad, tensor.numel()))
    return found, total


def describe_non_finite_tensors(found: Sequence[Tuple[str, int, int]], total: int,
                                limit: int = 8) -> str:
    """``'backbone.x (12 of 4096 values), ... (2 of 130 tensors)'`` for the user."""
    shown = ', '.join(f'{name} ({bad} of {numel} values)' for name, bad, numel in found[:limit])
    more = f', and {len(found) - limit} more' if len(found) > limit else ''
    return f'{shown}{more} ({len(found)} of {total} tensors)'


def _as_float(value: Any) -> Optional[float]:
    if torch.is_tensor(value) and value.numel() == 1 and value.is_floating_point():
        return float(value.detach())
    if isinstance(value, float):
        return value
    return None


def _batch_files(data_batch: Any) -> Tuple[List[str], List[str]]:
    """The batch's image files (else sample indices), and those whose pixels are not finite."""
    if not isinstance(data_batch, Mapping):
        return [], []
    samples = data_batch.get('data_samples') or []
    names = []
    for i, sample in enumerate(samples):
        meta = getattr(sample, 'metainfo', None) or {}
        name = meta.get('img_path') or meta.get('filename')
        if name is None:
            name = f"sample {meta['sample_idx']}" if 'sample_idx' in meta else f'item {i}'
        names.append(str(name))
    inputs = data_batch.get('inputs')
    if torch.is_tensor(inputs):
        inputs = list(inputs)
    bad = []
    if isinstance(inputs, (list, tuple)):
        for i, image in enumerate(inputs):
            if torch.is_tensor(image) and image.is_floating_point() and \
                    not bool(torch.isfinite(image).all()):
                bad.append(names[i] if i < len(names) else f'item {i}')
    return names, bad


class NonFiniteGuardHook(Hook):
    """Stop training at the first non-finite loss or gradient norm; refuse non-finite weights.

    After every training iteration, every loss term (the ``log_vars`` whose name contains
    ``'loss'``, the total ``loss`` included) and, where the optimizer wrapper reports one (a
    ``clip_grad`` of type ``'norm'``), the gradient norm of the step must be finite. Otherwise
    the run stops with :class:`NonFiniteError` (exit code 1), naming the iteration, the
    non-finite terms, the batch's image files and those of its images whose pixels are not
    finite, on every rank, all ranks at the same iteration. It runs before the checkpoint hook
    of the same iteration, so no checkpoint of the weights that step produced is written.

    Mixed precision with a loss scaler (``AmpOptimWrapper``, float16): a step the scaler skips
    because the gradients overflowed is normal and does not stop the run; the loss scale
    collapsing does: ``max_skipped_steps`` skipped steps in a row, or the scale below
    ``min_loss_scale``.

    Checkpoints: a checkpoint about to be saved (weights, EMA weights, optimizer state) with a
    non-finite value is refused, naming the tensors; so is one being loaded (``--resume``,
    ``load_from``, ``tools/test.py``) before it reaches the model.

    Args:
        min_loss_scale (float): Stop when the dynamic loss scale falls below this. Defaults to
            1 (as DeepSpeed's fp16 ``min_loss_scale``): below it, float16 gradients of a
            loss of order 1 underflow, the scale cannot recover.
        max_skipped_steps (int): Stop after this many steps in a row skipped for gradient
            overflow. Defaults to 20 (a handful is normal at the start and after spikes).
    """

    priority = 'LOW'  # after the logger (the iteration's line is printed), before checkpoints

    def __init__(self, min_loss_scale: float = 1., max_skipped_steps: int = 20) -> None:
        if isinstance(min_loss_scale, bool) or not isinstance(min_loss_scale, (int, float)) \
                or not math.isfinite(min_loss_scale) or min_loss_scale < 0:
            raise ValueError('NonFiniteGuardHook: min_loss_scale must be a finite number >= 0; '
                             f'got {min_loss_scale!r}.')
        if isinstance(max_skipped_steps, bool) or not isinstance(max_skipped_steps, int) or \
                max_skipped_steps < 1:
            raise ValueError('NonFiniteGuardHook: max_skipped_steps must be an int >= 1; got '
                             f'{max_skipped_steps!r}.')
        self.min_loss_scale = float(min_loss_scale)
        self.max_skipped_steps = max_skipped_steps
        self._scale: Optional[float] = None
        self._skipped_in_a_row = 0

    # -- training --------------------------------------------------------------------------
    @staticmethod
    def _loss_scaler(runner):
        wrapper = getattr(runner, 'optim_wrapper', None)
        scaler = getattr(wrapper, 'loss_scaler', None)
        if scaler is None or not hasattr(scaler, 'get_scale'):
            return None
        return scaler if getattr(scaler, 'is_enabled', lambda: True)() else None

    def before_train(self, runner) -> None:
        scaler = self._loss_scaler(runner)
        self._scale = float(scaler.get_scale()) if scaler is not None else None
        self._skipped_in_a_row = 0

    def _step_problems(self, runner) -> List[str]:
        """Problems of this iteration's optimizer step (none while accumulating gradients)."""
        wrapper = runner.optim_wrapper
        if not isinstance(wrapper, OptimWrapper) or not wrapper.should_update():
            return []
        norm = None
        if wrapper.clip_grad_kwargs and getattr(wrapper, 'grad_name', None) == 'grad_norm':
            history = runner.message_hub.log_scalars.get('train/grad_norm')
            norm = history.current() if history is not None else None
        norm_bad = norm is not None and not math.isfinite(norm)
        scaler = self._loss_scaler(runner)
        if scaler is None:
            return [f'gradient norm {norm}'] if norm_bad else []
        # A loss scaler skips the step when the gradients overflow: a dynamic scale then
        # drops (a static one stays, but the gradient norm, if clipped, is not finite).
        scale = float(scaler.get_scale())
        skipped = norm_bad or (self._scale is not None and scale < self._scale)
        self._scale = scale
        self._skipped_in_a_row = self._skipped_in_a_row + 1 if skipped else 0
        if self._skipped_in_a_row >= self.max_skipped_steps:
            return [f'the loss scaler skipped {self._skipped_in_a_row} steps in a row for '
                    f'gradient overflow (loss scale {scale:g}, gradient norm {norm}; '
                    f'max_skipped_steps={self.max_skipped_steps})']
        if scale < self.min_loss_scale:
            return [f'the loss scale fell to {scale:g}, below min_loss_scale='
                    f'{self.min_loss_scale:g}']
        return []

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: Optional[Mapping] = None) -> None:
        problems = []
        values = {k: _as_float(v) for k, v in (outputs or {}).items() if 'loss' in k}
        bad_terms = [k for k, v in values.items() if v is not None and not math.isfinite(v)]
        if bad_terms:
            shown = ', '.join(f'{k}={values[k]}' for k in values)
            problems.append(f'non-finite loss term(s) {", ".join(bad_terms)} ({shown})')
        problems += self._step_problems(runner)
        report = None
        if problems:
            files, bad_images = _batch_files(data_batch)
            report = '; '.join(problems)
            if files:
                report += f'. Batch: {", ".join(files)}'
            if bad_images:
                report += f'. Images with non-finite pixels: {", ".join(bad_images)}'
        reports = self._gather(report)
        if not any(reports):
            return
        where = f'Iteration {runner.iter + 1}'
        if isinstance(runner.train_loop, EpochBasedTrainLoop):
            where += f' (epoch {runner.epoch + 1})'
        lines = [f'rank {r}: {text}' if len(reports) > 1 else text
                 for r, text in enumerate(reports) if text]
        last = runner.message_hub.get_info('last_ckpt')
        message = (f'{where}: {"; ".join(lines)}. Training stopped before anything of this '
                   'step was saved; the last checkpoint is '
                   f'{last if last else "none (nothing was saved yet)"}. Lower the learning '
                   'rate, clip gradients (optim_wrapper.clip_grad), or check the images named.')
        print_log(message, logger='current', level=logging.ERROR)
        raise NonFiniteError(message)

    @staticmethod
    def _gather(report: Optional[str]) -> List[Optional[str]]:
        # Every rank learns whether any rank saw a problem (one small all-reduce); only then
        # are the reports gathered, so that all ranks stop at the same iteration.
        if get_world_size() < 2:
            return [report]
        flag = torch.tensor([1 if report else 0], dtype=torch.int32)
        all_reduce(flag, op='max')
        if not int(flag.item()):
            return [None]
        return all_gather_object(report)

    # -- checkpoints -----------------------------------------------------------------------
    @staticmethod
    def _non_finite_parts(checkpoint: dict, keys: Sequence[str]):
        # The weights by their names in the model; the rest under their checkpoint key.
        found, total = non_finite_tensors(checkpoint.get('state_dict', {}))
        more, more_total = non_finite_tensors({k: checkpoint[k] for k in keys if k in checkpoint})
        return found + more, total + more_total

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        found, total = self._non_finite_parts(checkpoint, ('ema_state_dict', 'optimizer'))
        if found:
            message = (f'Refusing to save a checkpoint at iteration {runner.iter + 1}: it holds '
                       f'non-finite values: {describe_non_finite_tensors(found, total)}. The '
                       'last saved checkpoint is '
                       f'{runner.message_hub.get_info("last_ckpt") or "none"}.')
            print_log(message, logger='current', level=logging.ERROR)
            raise NonFiniteError(message)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not isinstance(checkpoint, dict):
            return
        if 'state_dict' in checkpoint:
            found, total = self._non_finite_parts(checkpoint, ('ema_state_dict', ))
        else:
            found, total = non_finite_tensors(checkpoint)  # a bare state dict
        if found:
            source = getattr(runner, '_load_from', None) or 'the checkpoint'
            raise NonFiniteError(
                f'{source} holds non-finite weights: {describe_non_finite_tensors(found, total)}'
                '. It is not loaded (testing it would score garbage, resuming would train on '
                'NaN); use an earlier checkpoint of the run (--resume PATH / CHECKPOINT).')
