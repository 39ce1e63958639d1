"""tools/misc/learning_proof.py: reading mmengine's scalar logs and drawing the curves."""
import importlib.util
import json
import os
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    'learning_proof', Path(__file__).resolve().parents[2] / 'tools/misc/learning_proof.py')
proof = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(proof)


def write_scalars(run_dir: Path, records) -> None:
    (run_dir / 'vis_data').mkdir(parents=True)
    (run_dir / 'vis_data/scalars.json').write_text(
        ''.join(json.dumps(r) + '\n' for r in records))


def seg_records(final_miou):
    train = [dict(lr=1e-4, loss=2. / step, **{'decode.loss_ce': 1.5 / step}, iter=step,
                  step=step) for step in range(10, 110, 10)]
    val = [dict(aAcc=90., mIoU=final_miou / 2, mAcc=70., step=50),
           dict(aAcc=95., mIoU=final_miou, mAcc=80., step=100)]
    return train[:5] + val[:1] + train[5:] + val[1:]


def test_reads_the_newest_run_and_plots(tmp_path):
    write_scalars(tmp_path / '20260101_000000', seg_records(10.))
    write_scalars(tmp_path / '20260102_000000', seg_records(64.))
    os.utime(tmp_path / '20260101_000000/vis_data/scalars.json', (1, 1))
    records = proof.read_scalars(tmp_path)
    assert [r['mIoU'] for r in records if 'mIoU' in r] == [32., 64.]
    assert proof.normalise('mIoU', 64.) == pytest.approx(.64)
    assert proof.normalise('coco/bbox_mAP', .5) == .5
    out = tmp_path / 'docs/learning_proof_seg.png'
    proof.plot_curves(records, 'seg', out, 'test')
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and out.stat().st_size > 10_000


def test_missing_logs_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match='scalars.json'):
        proof.read_scalars(tmp_path)
