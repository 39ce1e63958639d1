"""tools/misc/learning_proof.py: reading mmengine's scalar logs and drawing the curves."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tool_helpers import load_tool

proof = load_tool('misc/learning_proof.py')
TOOL = Path(__file__).resolve().parents[2] / 'tools' / 'misc' / 'learning_proof.py'


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


def test_validation_logged_by_epoch_gets_the_iteration(tmp_path):
    # A logger with log_metric_by_epoch=True stamps validation with the epoch (here 1).
    records = [dict(loss=1., step=10), dict(loss=.5, step=20), dict(mIoU=30., step=1)]
    write_scalars(tmp_path / 'run', records)
    assert [r['step'] for r in proof.read_scalars(tmp_path)] == [10, 20, 20]


def test_plot_only_redraws_and_rewrites_the_result(tmp_path, capsys):
    work_dir, out_dir = tmp_path / 'work', tmp_path / 'docs'
    write_scalars(work_dir / 'seg' / '20260101_000000', seg_records(64.))
    args = ['seg', '--plot-only', '--work-dir', str(work_dir), '--out-dir', str(out_dir)]
    with pytest.raises(FileNotFoundError, match='timing of an earlier run'):
        proof.main(args)
    out_dir.mkdir()
    (out_dir / 'learning_proof_seg.json').write_text(json.dumps(dict(minutes=12.5)))
    proof.main(args)
    result = json.loads((out_dir / 'learning_proof_seg.json').read_text())
    assert result['minutes'] == 12.5 and result['iterations'] == 100
    assert result['final']['mIoU'] == pytest.approx(.64) and result['reached'] is True
    assert (out_dir / 'learning_proof_seg.png').stat().st_size > 10_000
    assert '| seg | 100 | 12.5 |' in capsys.readouterr().out


def test_plot_only_without_an_earlier_run_names_what_to_run(tmp_path):
    # A fresh clone: neither the training log nor the timing file exists.
    result = subprocess.run(
        [sys.executable, str(TOOL), 'det', '--plot-only', '--work-dir', str(tmp_path / 'work'),
         '--out-dir', str(tmp_path / 'docs')], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert f'{tmp_path}/work/det/*/vis_data/scalars.json' in result.stderr
    assert f'{tmp_path}/docs/learning_proof_det.json' in result.stderr
    assert f'`python tools/misc/learning_proof.py det --work-dir {tmp_path}/work' in result.stderr
