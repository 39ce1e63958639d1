"""``import sec_mm`` alone (what a config's ``custom_imports`` does) readies the process."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# A fresh interpreter: a Runner-like checkpoint is written and read with torch.load's default
# (weights-only from torch 2.6) through mmengine's loader, before and after `import sec_mm`.
SCRIPT = r'''
import pickle, sys
import torch
from mmengine.logging import MessageHub
from mmengine.runner.checkpoint import CheckpointLoader
from mmengine.utils import digit_version

def save(path):
    hub = MessageHub.get_instance('fresh')
    hub.update_scalar('train/loss', 0.5)
    torch.save(dict(meta=dict(iter=1), state_dict=dict(w=torch.ones(1)),
                    message_hub=hub.state_dict()), path)

weights_only_default = digit_version(torch.__version__) >= digit_version('2.6.0')
save(sys.argv[1])
try:
    CheckpointLoader.load_checkpoint(sys.argv[1], map_location='cpu')
    refused = False
except pickle.UnpicklingError:
    refused = True
assert refused == weights_only_default, (refused, torch.__version__)

import sec_mm
save(sys.argv[2])
loaded = CheckpointLoader.load_checkpoint(sys.argv[2], map_location='cpu')
assert loaded['message_hub']['log_scalars']['train/loss'].current() == 0.5
print('loaded after import sec_mm')
'''


def test_import_sec_mm_alone_makes_runner_checkpoints_load(tmp_path):
    env = dict(os.environ)
    env.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO), env.get('PYTHONPATH')]))
    done = subprocess.run(
        [sys.executable, '-c', SCRIPT, str(tmp_path / 'before.pth'), str(tmp_path / 'after.pth')],
        env=env, cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        timeout=300)
    assert done.returncode == 0, done.stdout[-4000:]
    assert 'loaded after import sec_mm' in done.stdout
