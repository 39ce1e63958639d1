"""sec_mm.checkpoint.loading: every checkpoint load is weights-only and checked, whatever the
path or scheme; a file that would run code is refused before any of it runs."""
import functools
import http.server
import os
import threading

import pytest
import torch
from mmengine.runner.checkpoint import CheckpointLoader

import sec_mm  # noqa: F401  (puts the loaders behind mmengine's CheckpointLoader)
from sec_mm.checkpoint import (SCHEMES, CheckpointFileError, UnsafeCheckpointError,
                               load_checkpoint, secure_checkpoint_loaders)
from sec_mm.checkpoint.loading import load_from_unknown_scheme

HTML = b'<!DOCTYPE html>\n<html><head><title>Quota exceeded</title></head></html>\n'


class Payload:
    """Unpickling this runs ``exec``: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f'open({self.marker!r}, "w").close()', )


def save_payload(path, marker):
    torch.save({'state_dict': {'w': torch.ones(2)}, 'meta': Payload(marker)}, path)
    return path


@pytest.fixture
def payload(tmp_path):
    marker = tmp_path / 'code_ran'
    return save_payload(tmp_path / 'payload.pth', marker), marker


@pytest.fixture
def served(tmp_path, monkeypatch):
    """An HTTP server on localhost serving ``tmp_path/www``; torch's hub cache in tmp_path."""
    www = tmp_path / 'www'
    www.mkdir()
    monkeypatch.setattr(torch.hub, '_hub_dir', str(tmp_path / 'hub'))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield www, f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()


def test_every_scheme_of_mmengine_is_weights_only():
    secure_checkpoint_loaders()
    ours = set(SCHEMES.values()) | {load_from_unknown_scheme}
    loaders = dict(CheckpointLoader._schemes)
    assert {'', 'http://', 'https://', 'torchvision://', 'open-mmlab://'} <= set(loaders)
    assert {prefix: loader for prefix, loader in loaders.items() if loader not in ours} == {}


def test_payload_is_refused_by_every_in_process_loader(payload):
    from mmengine.model import BaseModule
    from mmengine.runner import load_checkpoint as mmengine_load_checkpoint

    from sec_mm.models import SECViT
    path, marker = payload
    model = torch.nn.Linear(2, 1)
    loads = {
        'sec_mm': lambda: load_checkpoint(str(path)),
        'CheckpointLoader (load_from, --resume, test tools)':
            lambda: CheckpointLoader.load_checkpoint(str(path), map_location='cpu'),
        'mmengine load_checkpoint (inferencers)':
            lambda: mmengine_load_checkpoint(model, str(path)),
        'SECViT Pretrained': lambda: SECViT(arch=dict(
            embed_dims=[8, 16, 32, 64], depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8]),
            init_cfg=dict(type='Pretrained', checkpoint=str(path))).init_weights(),
        'stock Pretrained': lambda: BaseModule(
            init_cfg=dict(type='Pretrained', checkpoint=str(path))).init_weights(),
    }
    for name, load in loads.items():
        with pytest.raises(UnsafeCheckpointError, match=r'refused.*not weights \(exec\)'):
            load()
        assert not marker.exists(), f'{name} ran the code of the checkpoint'


def test_downloads_are_checked_and_weights_only(served, payload, tmp_path):
    www, url = served
    torch.save({'state_dict': {'w': torch.arange(3.)}}, www / 'good.pth')
    (www / 'page.pth').write_bytes(HTML)
    path, marker = payload
    (www / 'payload.pth').write_bytes(path.read_bytes())

    for load in (load_checkpoint, CheckpointLoader.load_checkpoint):
        assert load(f'{url}/good.pth')['state_dict']['w'].tolist() == [0., 1., 2.]
    with pytest.raises(CheckpointFileError, match=r"not a PyTorch checkpoint: it starts with "
                       r"b'<!DOCTYPE html>.*HTML.*downloaded from http://127.0.0.1:\d+/page\.pth"):
        CheckpointLoader.load_checkpoint(f'{url}/page.pth')
    with pytest.raises(UnsafeCheckpointError, match='refused'):
        CheckpointLoader.load_checkpoint(f'{url}/payload.pth')
    assert not marker.exists()
    # Downloads land in torch's hub cache, as mmengine's http loader keeps them.
    assert (tmp_path / 'hub' / 'checkpoints' / 'good.pth').is_file()


def test_not_a_checkpoint_is_said_so_and_never_gets_the_unsafe_advice(tmp_path):
    page = tmp_path / 'secvit_t.pth'
    page.write_bytes(HTML)
    for load in (load_checkpoint, CheckpointLoader.load_checkpoint):
        with pytest.raises(CheckpointFileError) as error:
            load(str(page))
        message = str(error.value)
        assert str(page) in message and f'({len(HTML)} bytes' in message
        assert "b'<!DOCTYPE html>" in message and 'HTML' in message
        assert 'weights_only=False' not in message
        assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' not in message
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        load_checkpoint(str(tmp_path / 'missing.pth'))


def test_schemes_without_a_safe_loader_are_refused():
    with pytest.raises(CheckpointFileError, match='pavi://'):
        CheckpointLoader.load_checkpoint('pavi://some/model.pth')


def test_mmengine_checkpoints_and_plain_state_dicts_load(tmp_path):
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance('test_loading')
    hub.update_scalar('train/loss', 0.5)
    torch.save(dict(meta=dict(iter=3), state_dict=dict(w=torch.ones(2)),
                    message_hub=hub.state_dict()), tmp_path / 'runner.pth')
    torch.save({'w': torch.zeros(1)}, tmp_path / 'plain.pth')
    assert load_checkpoint(str(tmp_path / 'runner.pth'))['meta']['iter'] == 3
    assert load_checkpoint(str(tmp_path / 'plain.pth'))['w'].tolist() == [0.]


def test_converter_reads_releases_weights_only(tmp_path, repo_root, reference_dir):
    import argparse
    import subprocess
    import sys
    fixture = torch.load(reference_dir / 'official_secvit_tiny_fixture.pth', weights_only=True)
    release = tmp_path / 'release.pth'
    # A DeiT-style release: the weights, the epoch and the argparse options.
    torch.save({'model': fixture['state_dict'], 'epoch': 299,
                'args': argparse.Namespace(model='SecViT_T', lr=1e-3)}, release)
    payload = save_payload(tmp_path / 'payload.pth', tmp_path / 'code_ran')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(repo_root), os.environ.get('PYTHONPATH')])))

    def convert(src):
        return subprocess.run(
            [sys.executable, 'tools/model_converters/secvit_to_mm.py', str(src),
             str(tmp_path / 'out.pth')], cwd=repo_root, env=env, capture_output=True,
            text=True, timeout=300)

    done = convert(release)
    assert done.returncode == 0, done.stderr[-3000:]
    refused = convert(payload)
    assert refused.returncode == 1
    assert 'refused' in refused.stderr and '(exec)' in refused.stderr
    assert not (tmp_path / 'code_ran').exists()
