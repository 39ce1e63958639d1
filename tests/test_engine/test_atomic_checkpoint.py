"""sec_mm.engine: atomic writes, AtomicCheckpointHook and resume: checkpoints are complete
whenever they can be seen, and resuming skips the ones that are not."""
import os
import stat
from pathlib import Path

import pytest
import torch
from mmengine.fileio import get_file_backend
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import Dataset

from pickle_helpers import pickled_globals
from sec_mm.checkpoint import checkpoint_problem, register_checkpoint_safe_globals
from sec_mm.engine import AtomicCheckpointHook, atomic_backend
from sec_mm.engine.atomic_backend import AtomicLocalBackend, write_atomic
from sec_mm.engine.resume import find_resumable_checkpoint


def parts(folder: Path):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith('.part'))


def test_write_atomic_replaces_the_file_whole(tmp_path):
    target = tmp_path / 'sub' / 'file.bin'
    write_atomic(target, b'old')
    write_atomic(target, b'new contents')
    assert target.read_bytes() == b'new contents'
    assert parts(target.parent) == []
    # The permissions open() would give, not tempfile's 0o600.
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / 'iter_2.pth'
    write_atomic(target, b'complete')

    def disk_full(fd):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(atomic_backend.os, 'fsync', disk_full)
    # The file is named (torch and mmengine raise errno 28 without it).
    with pytest.raises(OSError, match=rf"No space left on device \(writing 1000 bytes\): "
                       rf"'{target}'"):
        write_atomic(target, b'x' * 1000)
    assert target.read_bytes() == b'complete'
    assert parts(tmp_path) == []


def test_backend_is_registered_for_backend_args():
    import sec_mm  # noqa: F401  (registers it)
    backend = get_file_backend('/tmp/x', backend_args=dict(backend='atomic_local'))
    assert isinstance(backend, AtomicLocalBackend)


def test_backend_text_and_bytes(tmp_path):
    backend = AtomicLocalBackend()
    backend.put_text('work_dirs/iter_4.pth', tmp_path / 'last_checkpoint')
    backend.put(b'\x00\x01', tmp_path / 'a.bin')
    assert (tmp_path / 'last_checkpoint').read_text() == 'work_dirs/iter_4.pth'
    assert (tmp_path / 'a.bin').read_bytes() == b'\x00\x01'


# ------------------------------------------------------------------------------------------
# checkpoint_problem / find_resumable_checkpoint
def save(path: Path, numel: int = 1000) -> Path:
    torch.save(dict(state_dict=dict(w=torch.arange(numel, dtype=torch.float32))), path)
    return path


def test_checkpoint_problem(tmp_path):
    good = save(tmp_path / 'good.pth')
    assert checkpoint_problem(str(good)) is None
    data = good.read_bytes()
    (tmp_path / 'truncated.pth').write_bytes(data[:len(data) // 2])
    assert 'incomplete' in checkpoint_problem(str(tmp_path / 'truncated.pth'))
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF  # inside the tensor bytes: torch.load would not notice
    (tmp_path / 'flipped.pth').write_bytes(bytes(flipped))
    assert 'damaged' in checkpoint_problem(str(tmp_path / 'flipped.pth'))
    (tmp_path / 'empty.pth').write_bytes(b'')
    assert 'empty' in checkpoint_problem(str(tmp_path / 'empty.pth'))
    # torch's legacy (non-zip) format is recognised by its magic number
    torch.save({'w': torch.ones(2)}, tmp_path / 'legacy.pth',
               _use_new_zipfile_serialization=False)
    assert checkpoint_problem(str(tmp_path / 'legacy.pth')) is None
    # What a failed download saves, text, other formats: named by first bytes and size.
    for name, data, kind in (('page.pth', b'<html><body>403</body></html>', 'HTML'),
                             ('reply.pth', b'{"error": "quota"}', 'JSON'),
                             ('notes.pth', b'just some text\n', 'text'),
                             ('model.pth', b'\x89HDF\r\n\x1a\n\x00\x00', 'binary')):
        (tmp_path / name).write_bytes(data)
        problem = checkpoint_problem(str(tmp_path / name))
        assert problem.startswith(f'not a PyTorch checkpoint: it starts with {data[:16]!r} '
                                  f'({len(data)} bytes; looks like'), problem
        assert kind in problem


def test_find_resumable_checkpoint(tmp_path):
    assert find_resumable_checkpoint(str(tmp_path)) == (None, [])
    for i in (1, 2, 10):
        save(tmp_path / f'iter_{i}.pth')
    save(tmp_path / 'best_accuracy_iter_2.pth')  # not a resumable training state
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_10.pth'))
    assert find_resumable_checkpoint(str(tmp_path)) == (str(tmp_path / 'iter_10.pth'), [])
    # The newest is cut short: the next by iteration number (10 > 2 > 1, not by name).
    (tmp_path / 'iter_10.pth').write_bytes(b'PK\x03\x04 cut')
    (tmp_path / 'iter_2.pth').write_bytes(b'')
    found, skipped = find_resumable_checkpoint(str(tmp_path))
    assert found == str(tmp_path / 'iter_1.pth')
    assert [(Path(p).name, reason.split(':')[0]) for p, reason in skipped] == [
        ('iter_10.pth', 'incomplete'), ('iter_2.pth', 'the file is empty (0 bytes)')]
    # last_checkpoint naming a file that is gone
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_99.pth'))
    found, skipped = find_resumable_checkpoint(str(tmp_path))
    assert found == str(tmp_path / 'iter_1.pth') and 'does not exist' in skipped[0][1]
    # a custom filename_tmpl
    save(tmp_path / 'step-0007.pth')
    assert find_resumable_checkpoint(str(tmp_path), ['step-000{}.pth'])[0] == str(
        tmp_path / 'step-0007.pth')


# ------------------------------------------------------------------------------------------
# AtomicCheckpointHook in a real Runner
class ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(inputs)
        return dict(loss=out.pow(2).mean()) if mode == 'loss' else out


class ToyData(Dataset):

    def __len__(self):
        return 8

    def __getitem__(self, index):
        return dict(inputs=torch.full((2, ), float(index)))


def toy_runner(work_dir, max_keep_ckpts, max_iters, resume=False, load_from=None):
    return Runner(
        model=ToyModel(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=ToyData(), batch_size=2, num_workers=0,
                              sampler=dict(type='InfiniteSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False,
                                           interval=1, max_keep_ckpts=max_keep_ckpts)),
        resume=resume, load_from=load_from, default_scope='mmengine',
        experiment_name=f'toy{max_iters}-{id(work_dir)}-{load_from}')


@pytest.fixture
def scope_restored():
    """The Runner makes its default scope the current one: put the previous one back."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmengine'):
        yield


def test_hook_keeps_the_old_checkpoint_until_the_new_one_is_complete(tmp_path, monkeypatch,
                                                                     scope_restored):
    import sec_mm  # noqa: F401  (registers the hook)
    register_checkpoint_safe_globals()  # as tools/train.py: resume reads our checkpoints
    toy_runner(tmp_path, max_keep_ckpts=1, max_iters=2).train()
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['iter_2.pth']
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_2.pth')

    # The save of iteration 3 dies half-way: iteration 2's checkpoint, the only one kept,
    # must still be there and named (mmengine's hook deletes it before saving).
    real_replace = os.replace

    def die_on_iter_3(src, dst):
        if str(dst).endswith('iter_3.pth'):
            raise KeyboardInterrupt('killed during the save')
        real_replace(src, dst)

    monkeypatch.setattr(atomic_backend.os, 'replace', die_on_iter_3)
    with pytest.raises(KeyboardInterrupt):
        toy_runner(tmp_path, max_keep_ckpts=1, max_iters=3, resume=True).train()
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['iter_2.pth']
    assert checkpoint_problem(str(tmp_path / 'iter_2.pth')) is None
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_2.pth')
    assert parts(tmp_path) == []


def test_hook_arguments_with_a_typo_fail_when_the_hook_is_built():
    with pytest.raises(TypeError, match=r"unknown argument\(s\) 'intervl' \(did you mean "
                       r"'interval'\?\).*takes.*max_keep_ckpts"):
        AtomicCheckpointHook(intervl=1)


def test_hook_never_overwrites_a_checkpoint_it_did_not_write(tmp_path, scope_restored):
    import sec_mm  # noqa: F401  (registers the hook)
    toy_runner(tmp_path, max_keep_ckpts=-1, max_iters=3).train()
    original = (tmp_path / 'iter_3.pth').read_bytes()
    # Back to iteration 1 (e.g. before a divergence) in the same work dir: iterations 2 and 3
    # are trained again; the files of the first attempt are kept aside, not overwritten.
    toy_runner(tmp_path, max_keep_ckpts=-1, max_iters=3, resume=True,
               load_from=str(tmp_path / 'iter_1.pth')).train()
    aside = sorted(tmp_path.glob('iter_3.before-*.pth'))
    assert len(aside) == 1 and aside[0].read_bytes() == original
    assert len(list(tmp_path.glob('iter_2.before-*.pth'))) == 1
    # Our checkpoints hold no numpy object: they load weights-only on every torch version.
    assert not any(name.startswith('numpy') for name in pickled_globals(tmp_path / 'iter_3.pth'))


def test_the_saves_of_killed_runs_are_cleaned_up(tmp_path, scope_restored):
    import sec_mm  # noqa: F401
    left = tmp_path / '.iter_7.pth.0123456789ab.part'
    left.write_bytes(b'half a checkpoint')
    other = tmp_path / '.not_ours.part'
    other.write_bytes(b'x')
    toy_runner(tmp_path, max_keep_ckpts=1, max_iters=1).train()
    assert not left.exists() and other.exists()
