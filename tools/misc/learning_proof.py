"""Learning proof: train SECViT-T from scratch on the toy sets and plot the curves.

    python tools/misc/learning_proof.py {det,seg,all} [--gpus 2] [--data-dir data]
        [--work-dir work_dirs/learning_proof] [--out-dir docs] [--cfg-options k=v ...]
        [--plot-only]

- ``det``: SECViT-T Mask R-CNN on toy COCO (configs/detection/secvit/toy/...), COCO bbox/segm
  mAP on the val split.
- ``seg``: SECViT-T UperNet on toy ADE (configs/segmentation/secvit/toy/...), mIoU on val.

Each run goes through ``tools/dist_train.sh`` (validation at the config's interval), then
the loss and metric curves are drawn from the run's ``vis_data/scalars.json`` into
``<out-dir>/learning_proof_<task>.png`` and the final numbers and wall time are printed and
written to ``<out-dir>/learning_proof_<task>.json``. A benchmark, not a test: each run trains
for hundreds of iterations (the README has the times on CPU).
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TASKS = {
    'det': dict(
        config='configs/detection/secvit/toy/mask-rcnn_secvit-t_fpn_toy-coco.py',
        dataset='coco', metrics=('coco/bbox_mAP', 'coco/segm_mAP', 'coco/bbox_mAP_50'),
        main_metric='coco/bbox_mAP', target=0.5, data_options=lambda d: [
            f'train_dataloader.dataset.data_root={d}/toy_coco/',
            f'val_dataloader.dataset.data_root={d}/toy_coco/',
            f'val_evaluator.ann_file={d}/toy_coco/annotations/instances_val2017.json']),
    'seg': dict(
        config='configs/segmentation/secvit/toy/upernet_secvit-t_toy-ade-192x192.py',
        dataset='ade', metrics=('mIoU', 'aAcc', 'mAcc'), main_metric='mIoU', target=0.6,
        data_options=lambda d: [f'train_dataloader.dataset.data_root={d}/toy_ade/',
                                f'val_dataloader.dataset.data_root={d}/toy_ade/']),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def read_scalars(work_dir: Path) -> list:
    """The newest run's logged scalars (mmengine's LocalVisBackend, one JSON per line).

    A validation record gets the iteration of the training record logged just before it (a
    logger with ``log_metric_by_epoch=True`` would have stamped it with the epoch, 0).
    """
    files = sorted(work_dir.glob('*/vis_data/scalars.json'), key=lambda p: p.stat().st_mtime)
    if not files:
        raise FileNotFoundError(f'No */vis_data/scalars.json under {work_dir}.')
    records, last_train_step = [], 0
    for line in files[-1].read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if 'loss' in record:
            last_train_step = record['step']
        else:
            record['step'] = max(record.get('step', 0), last_train_step)
        records.append(record)
    return records


def normalise(name: str, value: float) -> float:
    # mmseg reports percentages; the targets are fractions.
    return value / 100 if name in ('mIoU', 'aAcc', 'mAcc') else value


def plot_curves(records: list, task: str, out_file: Path, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    spec = TASKS[task]
    train = [r for r in records if 'loss' in r]
    val = [r for r in records if spec['main_metric'] in r]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4))
    loss_keys = sorted(k for k in train[0] if k.startswith(('loss', 'decode.loss', 'aux.loss')))
    for key in loss_keys:
        ax_loss.plot([r['step'] for r in train], [r[key] for r in train], label=key,
                     linewidth=2.2 if key == 'loss' else 1)
    ax_loss.set_xlabel('iteration')
    ax_loss.set_ylabel('training loss')
    ax_loss.set_yscale('log')
    ax_loss.legend(fontsize=7)
    ax_loss.grid(alpha=.3)
    for name in spec['metrics']:
        if val and name in val[0]:
            ax_metric.plot([r['step'] for r in val], [normalise(name, r[name]) for r in val],
                           marker='o', label=name)
    ax_metric.axhline(spec['target'], color='grey', linestyle='--',
                      label=f"target {spec['main_metric']} {spec['target']}")
    ax_metric.set_xlabel('iteration')
    ax_metric.set_ylabel('val metric')
    ax_metric.set_ylim(0, 1)
    ax_metric.legend(fontsize=7)
    ax_metric.grid(alpha=.3)
    fig.suptitle(title)
    fig.tight_layout()
    out_file.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_file, dpi=110)
    plt.close(fig)


def run_task(task: str, args) -> dict:
    spec = TASKS[task]
    data_dir = Path(args.data_dir)
    work_dir = Path(args.work_dir) / task
    out_dir = Path(args.out_dir)
    result_file = out_dir / f'learning_proof_{task}.json'
    if args.plot_only:
        # Redrawing needs both outputs of an earlier training run of this tool.
        missing = []
        if not list(work_dir.glob('*/vis_data/scalars.json')):
            missing.append(f'the training log ({work_dir}/*/vis_data/scalars.json)')
        if not result_file.is_file():
            missing.append(f'the timing of an earlier run ({result_file})')
        if missing:
            train = (f'python tools/misc/learning_proof.py {task} --work-dir {args.work_dir} '
                     f'--out-dir {args.out_dir}')
            raise FileNotFoundError(
                f'--plot-only {task}: missing {" and ".join(missing)}. Train first with '
                f'`{train}` (about half an hour on 2 CPU cores); --plot-only then redraws '
                'that run.')
        minutes = json.loads(result_file.read_text())['minutes']
    else:
        subprocess.run([sys.executable, str(REPO / 'tools/misc/make_toy_datasets.py'),
                        spec['dataset'], '--out-dir', str(data_dir)], check=True)
        command = ['bash', str(REPO / 'tools/dist_train.sh'), str(REPO / spec['config']),
                   str(args.gpus), '--work-dir', str(work_dir), '--cfg-options',
                   *spec['data_options'](str(data_dir)), *(args.cfg_options or [])]
        print('[learning_proof]', ' '.join(command), flush=True)
        start = time.time()
        subprocess.run(command, check=True, env=dict(os.environ, PYTHON=sys.executable,
                                                     PORT=str(free_port())))
        minutes = (time.time() - start) / 60
    records = read_scalars(work_dir)
    val = [r for r in records if spec['main_metric'] in r]
    if not val:
        raise RuntimeError(f'The {task} run logged no {spec["main_metric"]}; is validation on?')
    final = {name: normalise(name, val[-1][name]) for name in spec['metrics'] if name in val[-1]}
    best = max(normalise(spec['main_metric'], r[spec['main_metric']]) for r in val)
    result = dict(task=task, config=spec['config'], iterations=val[-1]['step'],
                  processes=args.gpus, minutes=round(minutes, 1), final=final,
                  best=best, target=spec['target'],
                  reached=final[spec['main_metric']] >= spec['target'])
    title = (f"SECViT-T {'Mask R-CNN / toy COCO' if task == 'det' else 'UperNet / toy ADE'}"
             f" from scratch: {minutes:.1f} min on {args.gpus} processes")
    plot_curves(records, task, out_dir / f'learning_proof_{task}.png', title)
    result_file.write_text(json.dumps(result, indent=2) + '\n')
    return result


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('task', choices=list(TASKS) + ['all'])
    parser.add_argument('--gpus', type=int, default=2, help='training processes')
    parser.add_argument('--data-dir', default='data', help='parent of toy_coco / toy_ade')
    parser.add_argument('--work-dir', default='work_dirs/learning_proof')
    parser.add_argument('--out-dir', default='docs', help='where the PNG/JSON results go')
    parser.add_argument('--cfg-options', nargs='+', help='passed on to tools/train.py')
    parser.add_argument('--plot-only', action='store_true',
                        help='no training: redraw the curves of the last run in --work-dir')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    tasks = list(TASKS) if args.task == 'all' else [args.task]
    results = [run_task(task, args) for task in tasks]
    print('\n| task | iterations | minutes | final | target | reached |')
    print('|---|---|---|---|---|---|')
    for r in results:
        final = ', '.join(f'{k} {v:.3f}' for k, v in r['final'].items())
        print(f"| {r['task']} | {r['iterations']} | {r['minutes']} | {final} | "
              f"{TASKS[r['task']]['main_metric']} >= {r['target']} | {r['reached']} |")


if __name__ == '__main__':
    try:
        main()
    except FileNotFoundError as error:
        sys.exit(f'error: {error}')
