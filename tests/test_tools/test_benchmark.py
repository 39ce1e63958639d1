"""tools/analysis_tools/benchmark.py: a tiny CPU run through the command line, its table and
its section of the results file; the section update (benchmarks/harness.py) and bad
arguments."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tool_helpers import load_tool

from benchmarks import harness

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / 'tools' / 'analysis_tools' / 'benchmark.py'


def table_rows(text: str, first_header: str):
    """The rows of the markdown table whose first column is ``first_header``, as dicts."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f'| {first_header} |'))
    titles = [cell.strip() for cell in lines[start].strip('|').split('|')]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith('|'):
            break
        rows.append(dict(zip(titles, (cell.strip() for cell in line.strip('|').split('|')))))
    return rows


def number(cell: str) -> float:
    return float(cell.rstrip('x'))


def cpu_model_name() -> str:
    for line in Path('/proc/cpuinfo').read_text().splitlines():
        if line.startswith('model name'):
            return line.split(':', 1)[1].strip()
    raise AssertionError('no model name in /proc/cpuinfo')


def test_cpu_run_writes_table(tmp_path):
    out = tmp_path / 'results.md'
    other = '<!-- BEGIN sec_connector -->\nconnector table\n<!-- END sec_connector -->'
    out.write_text(f'# Benchmarks\n\n{other}\n')
    command = [sys.executable, str(TOOL), '--device', 'cpu', '--batch', '1', '--dense-shapes',
               '1x3x224x256', '--warmup', '1', '--iters', '1', '--threads', '1', '--out',
               str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    text = out.read_text()
    assert text.startswith('# Benchmarks') and other in text  # other sections are kept
    key = f'{cpu_model_name()}, float32, NCHW'
    begin = text.index(harness.begin_marker(f'benchmark.py [{key}]'))
    section = text[begin:text.index(harness.end_marker(f'benchmark.py [{key}]'))]
    section = section.split('\n', 1)[1].strip()
    assert section in result.stdout  # the printed table is the written one
    assert f'- device: CPU: {cpu_model_name()}' in section
    assert f'- torch {torch.__version__}, Python' in section and '1 CPU threads' in section
    assert '- dtype: float32; memory format: NCHW' in section
    assert 'median of 1 iterations after 1 warm-up' in section
    assert "CPU allocator's events" in section
    assert 'CPU defaults' not in section
    # The profiler's start/stop lines do not leak into the output.
    assert 'profiler_start' not in result.stderr + result.stdout

    classifiers = table_rows(section, 'model')
    assert [row['model'] for row in classifiers] == ['SECViT-T', 'SECViT-S', 'Swin-T']
    by_name = {row['model']: row for row in classifiers}
    assert number(by_name['Swin-T']['speed vs Swin-T']) == 1.0
    for row in classifiers:
        ms, images_per_s = number(row['ms / batch']), number(row['images/s'])
        assert ms > 0 and images_per_s == pytest.approx(1e3 / ms, rel=0.01, abs=0.01)
        assert number(row['peak MiB']) > 0
        assert number(row['speed vs Swin-T']) == pytest.approx(
            number(by_name['Swin-T']['ms / batch']) / ms, abs=0.01)
        assert number(row['train step ms']) > 0 and number(row['train peak MiB']) > 0
        assert number(row['train speed vs Swin-T']) == pytest.approx(
            number(by_name['Swin-T']['train step ms']) / number(row['train step ms']), rel=0.05)
    assert 13 < number(by_name['SECViT-T']['params (M)']) < 17  # the 15M-parameter SECViT-T
    assert 27 < number(by_name['Swin-T']['params (M)']) < 30

    dense = table_rows(section, 'input')
    assert [(row['input'], row['backbone']) for row in dense] == [
        ('1x3x224x256', 'SECViT-T'), ('1x3x224x256', 'SECViT-T cluster_size=98'),
        ('1x3x224x256', 'Swin-T')]
    for row in dense:
        assert number(row['fwd+bwd ms']) > 0 and number(row['peak MiB']) > 0
    # Stage 1 of 224x256 has 56x64 = 3584 tokens: 32 clusters of 112, 37 of at most 97
    # (cluster_size=98), or Swin's 7x7 windows.
    assert [int(row['stage-1 tokens / group']) for row in dense] == [112, 97, 49]
    assert number(dense[2]['speed vs Swin-T']) == number(dense[2]['memory / Swin-T']) == 1.0
    # memory / Swin-T: the model's peak over Swin-T's.
    assert number(dense[0]['memory / Swin-T']) == pytest.approx(
        number(dense[0]['peak MiB']) / number(dense[2]['peak MiB']), rel=0.05)


def test_section_is_replaced_and_others_kept(tmp_path):
    out = tmp_path / 'results.md'
    harness.write_section(out, 'benchmark.py [GPU X, autocast float16, NCHW]', 'fp16 old')
    harness.write_section(out, 'benchmark.py [GPU X, autocast bfloat16, NCHW]', 'bf16')
    harness.write_section(out, 'benchmark.py [GPU X, autocast float16, NCHW]', 'fp16 new')
    text = out.read_text()
    assert text.startswith('# Benchmarks')
    assert 'fp16 old' not in text and text.index('fp16 new') < text.index('bf16')


@pytest.mark.parametrize('argv, message', [
    (['--device', 'cpu', '--dense-shapes', '2x100x100'], 'a side of 100 px is below 224'),
    (['--device', 'cpu', '--dense-shapes', '2x4x512x512'], "'2x4x512x512' is not a shape"),
    (['--device', 'cpu', '--image-size', '64'], '--image-size: a side of 64 px'),
    (['--device', 'cpu', '--tf32', 'on'], '--tf32 on: TF32 is a CUDA setting'),
    (['--device', 'cpu', '--batch', '0'], '--batch 0: must be at least 1'),
])
def test_bad_arguments(argv, message, capsys):
    tool = load_tool('analysis_tools/benchmark.py')
    with pytest.raises(SystemExit) as error:
        tool.parse_args(argv)
    assert error.value.code == 2
    assert message in capsys.readouterr().err


def test_defaults_follow_the_device():
    tool = load_tool('analysis_tools/benchmark.py')
    cpu = tool.parse_args(['--device', 'cpu'])
    # The dense shapes of detection and segmentation, on every device.
    dense = [(2, 512, 512), (1, 800, 1344), (1, 1024, 1024)]
    assert (cpu.batch, cpu.dense_shapes, cpu.warmup, cpu.iters) == (4, dense, 1, 5)
    assert cpu.amp is None and not cpu.channels_last
    assert cpu.out is None  # a plain run writes no file (benchmarks/results.md stays clean)
    assert cpu.tables == ['classifiers', 'dense']
    if torch.cuda.is_available():
        cuda = tool.parse_args(['--device', 'cuda', '--amp', 'bf16'])
        assert (cuda.batch, cuda.dense_shapes) == (64, dense)
    else:
        with pytest.raises(SystemExit):
            tool.parse_args(['--device', 'cuda'])
