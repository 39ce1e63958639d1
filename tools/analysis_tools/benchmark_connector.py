"""Time and memory of LLaVA with fewer image tokens: vision encoder + connector + LLM prefill.

For every model size and every number of image tokens ``G`` this builds the real mmpretrain
LLaVA (``G = 576``: the stock ``Llava`` with its MLP projector) or ``SECLlava`` (``G < 576``: the
SEC connector) with random weights (a CLIP-like mmpretrain ``VisionTransformer`` at 336 px /
patch 14, i.e. 576 patch tokens, and a random LLaMA from a ``transformers`` config with a
32000-word vocabulary), and times one image plus a ``--prompt-length``-token prompt:

- ``vision``: the vision encoder; ``connector``: MLP projector or SEC connector;
- ``prefill``: the language model's first forward (with KV cache) on prompt + image tokens;
- ``total``: the whole ``LlavaLlamaForCausalLM`` forward that generation starts with.

A size's models are built first and timed in turns by ``benchmarks/harness.py`` (every repeat
runs every call of every G once), so the load of a shared machine hits all rows alike; times
are medians. Peak memory is the extra memory allocated at the peak of one ``total`` forward
(harness: the CUDA allocator's peak, or the CPU allocator's events).

The table is printed; ``--out FILE`` also writes it into this tool's section of FILE::

    python tools/analysis_tools/benchmark_connector.py --sizes tiny medium \
        --out benchmarks/results.md

On a CPU that other jobs share, ``--threads 1`` gives far steadier numbers (two threads that
wait for each other lose whenever one of them is descheduled).
"""
import argparse
import datetime
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
SECTION = 'sec_connector'

from benchmarks.harness import (add_output_arguments, markdown_table,  # noqa: E402
                                peak_memory_mib, time_in_turns, write_section)

IMAGE_SIZE, PATCH_SIZE = 336, 14  # LLaVA-1.5: 576 patch tokens
NUM_PATCHES = (IMAGE_SIZE // PATCH_SIZE)**2

# Random stand-ins for LLaVA-1.5's parts, small enough for a CPU.
SIZES = {
    'tiny': dict(
        vision=dict(embed_dims=192, num_layers=2, num_heads=3, feedforward_channels=768),
        llm=dict(hidden_size=256, intermediate_size=688, num_hidden_layers=2,
                 num_attention_heads=4)),
    'medium': dict(
        vision=dict(embed_dims=384, num_layers=6, num_heads=6, feedforward_channels=1536),
        llm=dict(hidden_size=1024, intermediate_size=2752, num_hidden_layers=8,
                 num_attention_heads=16)),
}
VOCAB_SIZE = 32000


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', nargs='+', default=['tiny', 'medium'], choices=list(SIZES))
    parser.add_argument('--tokens', nargs='+', type=int, default=[576, 288, 144],
                        help='image tokens G handed to the LLM (576 = stock MLP projector)')
    parser.add_argument('--prompt-length', type=int, default=64, help='text tokens')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--device', default='cpu')
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    bad = [g for g in args.tokens if not 1 <= g <= NUM_PATCHES]
    if bad:
        parser.error(f'--tokens must be between 1 and {NUM_PATCHES} (the patch tokens), got {bad}')
    return args


if __name__ == '__main__':
    parse_args()  # --help and bad arguments answer before the heavy imports below

import torch  # noqa: E402


def write_local_llm(folder: str, llm: dict) -> None:
    """A LLaMA config and a 32000-word tokenizer that ``from_pretrained`` reads locally."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    words = ['<unk>', '<s>', '</s>'] + [f'w{i}' for i in range(VOCAB_SIZE - 3)]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token='<unk>'))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token='<s>', eos_token='</s>', unk_token='<unk>',
        pad_token='<unk>').save_pretrained(folder)
    LlamaConfig(vocab_size=VOCAB_SIZE, max_position_embeddings=2048, **llm).save_pretrained(folder)


def build_model(size: str, num_tokens: int, folder: str):
    import sec_mm  # noqa: F401  (registers SECLlava / SECConnector)
    from mmpretrain.registry import MODELS

    arch = SIZES[size]
    cfg = dict(
        type='Llava',
        tokenizer=dict(type='AutoTokenizer', name_or_path=folder),
        vision_encoder=dict(
            type='VisionTransformer', arch=arch['vision'], img_size=IMAGE_SIZE,
            patch_size=PATCH_SIZE, pre_norm=True, final_norm=False, out_type='raw'),
        mm_hidden_size=arch['vision']['embed_dims'],
        use_im_patch=False,
        use_im_start_end=False,
        mm_proj_depth=2,
        lang_encoder=dict(type='AutoModelForCausalLM', name_or_path=folder),
        task='vqa',
        prompt_tmpl='<image>')
    if num_tokens != NUM_PATCHES:
        cfg.update(type='SECLlava', connector=dict(
            type='SECConnector', num_tokens=num_tokens,
            num_heads=arch['vision']['num_heads']))
    return MODELS.build(cfg).eval()


class Workload:
    """One built model (one size, one G) and the four timed calls on fixed inputs."""

    def __init__(self, size: str, num_tokens: int, folder: str, args) -> None:
        torch.manual_seed(0)
        device = args.device
        self.model = build_model(size, num_tokens, folder).to(device)
        llava = self.model.model  # mmpretrain's LlavaLlamaForCausalLM
        batch = args.batch_size
        images = torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, device=device)
        # Prompt: the image placeholder (-200) first, then the text tokens.
        text = torch.randint(3, VOCAB_SIZE, (batch, args.prompt_length), device=device)
        input_ids = torch.cat([text.new_full((batch, 1), -200), text], dim=1)
        attention_mask = torch.ones_like(input_ids)
        with torch.no_grad():
            patches = llava.vision_tower(images)[-1][:, 1:]
            image_tokens = llava.lang_encoder.model.mm_projector(patches)
            embeds = torch.cat([image_tokens, llava.embed_tokens(text)], dim=1)

        self.calls = dict(
            vision=lambda: llava.vision_tower(images),
            connector=lambda: llava.lang_encoder.model.mm_projector(patches),
            prefill=lambda: llava.lang_encoder(inputs_embeds=embeds, use_cache=True),
            total=lambda: llava(input_ids=input_ids, attention_mask=attention_mask,
                                images=images, use_cache=True))
        self.row = dict(
            size=size,
            num_tokens=num_tokens,
            llm_tokens=embeds.shape[1],
            hidden_size=SIZES[size]['llm']['hidden_size'],
            num_layers=SIZES[size]['llm']['num_hidden_layers'])


def time_workloads(workloads: List[Workload], args) -> None:
    """Median wall time (ms) of every call of every workload, into ``workload.row``; all
    calls of a size in turns (harness), so load changes hit all rows alike."""
    steps = {(i, name): call for i, w in enumerate(workloads) for name, call in w.calls.items()}
    with torch.no_grad():
        times = time_in_turns(steps, args.device, args.repeats, args.warmup)
    for (i, name), timing in times.items():
        workloads[i].row[f'{name}_ms'] = timing.median * 1e3


def benchmark_size(size: str, args) -> List[Dict[str, float]]:
    """All rows of one model size."""
    with tempfile.TemporaryDirectory() as folder:
        write_local_llm(folder, SIZES[size]['llm'])
        workloads = [Workload(size, g, folder, args) for g in args.tokens]
    time_workloads(workloads, args)
    rows = [w.row for w in workloads]
    for workload in workloads:
        with torch.no_grad():
            workload.row['peak_mib'] = peak_memory_mib(workload.calls['total'], args.device)
    return rows


COLUMNS = [('model', 'model (LLM hidden / layers)', '{}'), ('g', 'image tokens G', '{}'),
           ('llm_tokens', 'LLM tokens', '{}'), ('vision_ms', 'vision ms', '{:.1f}'),
           ('connector_ms', 'connector ms', '{:.1f}'), ('prefill_ms', 'LLM prefill ms', '{:.1f}'),
           ('total_ms', 'total ms', '{:.1f}'), ('prefill_up', 'prefill speed-up', '{:.2f}x'),
           ('total_up', 'total speed-up', '{:.2f}x'), ('peak_mib', 'peak extra MiB', '{:.0f}')]


def format_table(rows: List[Dict[str, float]]) -> str:
    """The rows with their speed-ups over the stock MLP projector (G = 576) of their size."""
    baseline = {r['size']: r for r in rows if r['num_tokens'] == NUM_PATCHES}
    cells = []
    for r in rows:
        base = baseline.get(r['size'])
        cells.append(dict(
            r, model=f"{r['size']} ({r['hidden_size']} / {r['num_layers']})",
            g=f"{r['num_tokens']} ({'MLP' if r['num_tokens'] == NUM_PATCHES else 'SEC'})",
            prefill_up=base and base['prefill_ms'] / r['prefill_ms'],
            total_up=base and base['total_ms'] / r['total_ms']))
    return markdown_table(cells, COLUMNS)


def acceptance(rows: List[Dict[str, float]], prompt_length: int) -> List[str]:
    """The issue's target: G=144 prefill >= 2x faster than G=576 on a >=512 x >=4 LLaMA."""
    notes = []
    for size in dict.fromkeys(r['size'] for r in rows):
        by_tokens = {r['num_tokens']: r for r in rows if r['size'] == size}
        if NUM_PATCHES not in by_tokens or 144 not in by_tokens:
            continue
        big = by_tokens[144]['hidden_size'] >= 512 and by_tokens[144]['num_layers'] >= 4
        speedup = by_tokens[NUM_PATCHES]['prefill_ms'] / by_tokens[144]['prefill_ms']
        verdict = ('met' if speedup >= 2 else 'NOT met') if big and prompt_length == 64 else \
            'not applicable (needs hidden >= 512, >= 4 layers, 64-token prompt)'
        notes.append(f'- {size}: prefill 576 -> 144 tokens is {speedup:.2f}x faster; '
                     f'target >= 2x: {verdict}.')
    return notes


def main(argv=None) -> str:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for size in args.sizes:
        for row in benchmark_size(size, args):
            rows.append(row)
            print(f"{size} G={row['num_tokens']}: prefill {row['prefill_ms']:.1f} ms, "
                  f"total {row['total_ms']:.1f} ms, peak {row['peak_mib']:.0f} MiB",
                  file=sys.stderr)

    command = ' '.join(['python', 'tools/analysis_tools/benchmark_connector.py'] +
                       [a for a in (argv if argv is not None else sys.argv[1:])])
    body = '\n'.join([
        '## SEC vision-language connector: LLaVA image tokens vs. speed',
        '',
        f'Random-weight LLaVA (mmpretrain `Llava` with its MLP projector for G = 576, '
        f'`SECLlava` otherwise), one {IMAGE_SIZE} px image ({NUM_PATCHES} patch tokens) + '
        f'{args.prompt_length} prompt tokens, batch {args.batch_size}, device `{args.device}`, '
        f'CPU threads: {torch.get_num_threads()}, torch {torch.__version__}; median of '
        f'{args.repeats} runs after {args.warmup} warm-up; '
        f"{datetime.date.today().isoformat()}; rows of a size timed round robin. Vision "
        'encoders: tiny = ViT 192 x 2 layers, medium = ViT 384 x 6 layers; LLMs: random '
        'LLaMA, 32000-word vocabulary. "vision", "connector", "LLM prefill" are timed alone; '
        '"total" is the whole forward that generation starts with (vision + connector + '
        'prefill). "peak extra MiB": extra memory at the peak of one total forward.',
        '',
        format_table(rows),
        '',
        *acceptance(rows, args.prompt_length),
        '',
        f'Command: `{command}`',
    ])
    print(body)
    if args.out:
        write_section(args.out, SECTION, body)
        print(f'\nwritten to {args.out}', file=sys.stderr)
    return body


if __name__ == '__main__':
    main()
