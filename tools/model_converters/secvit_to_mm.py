"""Convert an authors' released SECViT checkpoint to an mmpretrain ImageClassifier checkpoint.

    python tools/model_converters/secvit_to_mm.py SRC DST [--ema]

SRC is a released file (a dict with ``model`` and ``model_ema``). DST loads into the configs of
``configs/classification/secvit`` (``load_from`` / ``tools/test.py``), and its ``backbone.`` part
into detection and segmentation backbones through
``init_cfg=dict(type='Pretrained', checkpoint=DST, prefix='backbone.')``.
Keys that do not map, or that the target model lacks, stop the conversion with their names.
"""
import argparse
import sys
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='released SECViT checkpoint (.pth)')
    parser.add_argument('dst', help='where to write the mmpretrain checkpoint')
    parser.add_argument('--ema', action='store_true',
                        help='convert the EMA weights (`model_ema`; the released S/B/L '
                        'accuracies are the EMA weights\')')
    return parser.parse_args(argv)


if __name__ == '__main__':
    parse_args()  # --help and bad arguments answer before the heavy imports below

import torch  # noqa: E402

from sec_mm.checkpoint import (CheckpointFileError, CheckpointMismatchError,  # noqa: E402
                               UnsafeCheckpointError, extract_state_dict, load_checkpoint)
from sec_mm.converters import convert_secvit_state_dict  # noqa: E402
from sec_mm.models import SECViT  # noqa: E402


def arch_name(arch: dict) -> str:
    """The short ``SECViT.arch_zoo`` name of ``arch`` (e.g. 't'), or 'custom'."""
    for name, settings in SECViT.arch_zoo.items():
        if name in ('tiny', 'small', 'base', 'large'):  # aliases of t/s/b/l
            continue
        if all(list(settings[k]) == list(arch[k])
               for k in ('embed_dims', 'depths', 'num_heads', 'layer_scales')):
            return name
    return 'custom'


def main(argv=None) -> int:
    args = parse_args(argv)
    # Weights-only, as every load of sec_mm: released files are dicts of tensors, numbers and
    # (DeiT-style releases) the argparse Namespace of the training options.
    try:
        checkpoint = load_checkpoint(args.src)
    except (CheckpointFileError, UnsafeCheckpointError, FileNotFoundError) as error:
        print(f'error: {error}', file=sys.stderr)  # the messages name the file
        return 1
    try:
        state_dict, arch = convert_secvit_state_dict(extract_state_dict(checkpoint, args.ema))
    except CheckpointMismatchError as error:
        print(f'error: {args.src}: {error}', file=sys.stderr)
        return 1
    name = arch_name(arch)
    Path(args.dst).parent.mkdir(parents=True, exist_ok=True)
    torch.save({'state_dict': state_dict,
                'meta': {'arch': name, 'arch_settings': arch, 'source': str(args.src),
                         'ema': args.ema}}, args.dst)
    print(f'Converted {len(state_dict)} tensors (arch {name!r}, {arch["num_classes"]} classes, '
          f'{"EMA" if args.ema else "plain"} weights) -> {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
