"""A real mmengine Runner on a toy regression model, small enough to train in a test in a second:
for the run hooks (non-finite guard, exact resume, preemption), with the randomness a real
recipe has (dropout in the model, a random augmentation in the dataset, a shuffling sampler)."""
import uuid
from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmengine.structures import BaseDataElement
from torch.utils.data import Dataset

WEIGHTS = torch.tensor([0.5, -1.0, 2.0, 0.25])


class ToyDataset(Dataset):
    """``size`` samples ``x`` (4 values) with target ``x . WEIGHTS``; every read adds noise
    from the global numpy RNG (an augmentation). ``nan_samples`` are all NaN."""

    def __init__(self, size: int = 8, nan_samples: Sequence[int] = ()) -> None:
        self.x = torch.linspace(-1, 1, size * 4).reshape(size, 4)
        self.nan_samples = set(nan_samples)
        self.metainfo = dict(name='toy')

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        x = self.x[i] + torch.from_numpy(np.random.normal(0, 0.1, 4).astype(np.float32))
        if i in self.nan_samples:
            x = torch.full_like(x, float('nan'))
        sample = BaseDataElement(metainfo=dict(img_path=f'img_{i}.png', sample_idx=i))
        sample.target = (self.x[i] * WEIGHTS).sum()
        return dict(inputs=x, data_samples=sample)


class ToyModel(BaseModel):
    """A linear layer behind dropout; losses ``loss_fit`` (squared error) and ``loss_reg``.
    With ``inf_gradient``, ``loss_reg`` also gets ``sqrt(0)``: a finite loss whose gradient
    is not finite."""

    def __init__(self, inf_gradient: bool = False) -> None:
        super().__init__()
        self.dropout = nn.Dropout(0.2)
        self.linear = nn.Linear(4, 1)
        self.inf_gradient = inf_gradient

    def forward(self, inputs, data_samples=None, mode: str = 'tensor'):
        out = self.linear(self.dropout(torch.stack(inputs))).squeeze(1)
        if mode == 'loss':
            target = torch.stack([s.target for s in data_samples])
            reg = 1e-3 * out.abs().mean()
            if self.inf_gradient:
                reg = reg + torch.sqrt((out - out.detach()).abs()).sum()
            return dict(loss_fit=((out - target) ** 2).mean(), loss_reg=reg)
        return [BaseDataElement(pred=o.detach(), target=s.target)
                for o, s in zip(out, data_samples)]


class ToyMetric(BaseMetric):
    """Mean squared error of the predictions."""

    def process(self, data_batch, data_samples) -> None:
        self.results += [float((s['pred'] - s['target']) ** 2) for s in data_samples]

    def compute_metrics(self, results) -> dict:
        return dict(mse=sum(results) / len(results))


class LossRecorder(Hook):
    """Records the loss of every training iteration (1-based) and the iterations trained."""

    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self.losses: Dict[int, float] = {}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.losses[runner.iter + 1] = float(outputs['loss'].detach())


def toy_runner(work_dir, *, hooks: Sequence[Hook] = (), max_iters: int = 6,
               max_epochs: Optional[int] = None, interval: int = 1, by_epoch: bool = False,
               num_workers: int = 0, persistent_workers: bool = True,
               nan_samples: Sequence[int] = (), lr: float = 0.1,
               optim_wrapper: Optional[dict] = None, val_interval: Optional[int] = None,
               inf_gradient: bool = False, resume_from: Optional[str] = None,
               load_from: Optional[str] = None, checkpoints: bool = True,
               dataset_size: int = 8) -> Runner:
    """A Runner for the toy model: iteration-based (``max_iters``) unless ``max_epochs``;
    batches of 2; atomic checkpoints every ``interval`` iterations (epochs with
    ``by_epoch``; none without ``checkpoints``); the given hooks as custom hooks; resuming
    from ``resume_from``, or loading the weights of ``load_from``."""
    torch.manual_seed(0)
    epoch_based = max_epochs is not None
    loader = dict(
        dataset=ToyDataset(dataset_size, nan_samples), batch_size=2, num_workers=num_workers,
        persistent_workers=num_workers > 0 and persistent_workers,
        collate_fn=dict(type='pseudo_collate'),
        sampler=dict(type='DefaultSampler' if epoch_based else 'InfiniteSampler',
                     shuffle=True))
    train_cfg = (dict(by_epoch=True, max_epochs=max_epochs) if epoch_based else
                 dict(by_epoch=False, max_iters=max_iters))
    val = {}
    if val_interval is not None:
        train_cfg['val_interval'] = val_interval
        val = dict(val_dataloader=dict(loader, sampler=dict(type='DefaultSampler',
                                                            shuffle=False)),
                   val_cfg=dict(), val_evaluator=[ToyMetric()])
    return Runner(
        model=ToyModel(inf_gradient), work_dir=str(work_dir),
        experiment_name=f'toy_{uuid.uuid4().hex}', train_dataloader=loader,
        optim_wrapper=optim_wrapper or dict(optimizer=dict(type='SGD', lr=lr)),
        train_cfg=train_cfg, **val,
        default_hooks=dict(
            checkpoint=dict(type='AtomicCheckpointHook', interval=interval, by_epoch=by_epoch)
            if checkpoints else None,
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=list(hooks), randomness=dict(seed=0), load_from=resume_from or load_from,
        resume=resume_from is not None, log_level='WARNING',
        default_scope=None)  # no current scope left behind for later tests
