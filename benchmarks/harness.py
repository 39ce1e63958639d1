"""The timing harness of every sec_mm benchmark: how steps are timed, how peak memory is read,
how a run describes its machine and how its tables are written.

- :func:`time_in_turns`: warm-up runs first, then every repeat runs each step once, the order
  alternating between repeats, so that load from other processes hits all steps alike; CUDA
  work is synchronised around every timed run. Medians and minimums are kept.
- :func:`peak_memory_mib`: the most memory allocated during one run of a step beyond what was
  allocated before it (weights and inputs are not counted): the CUDA allocator's peak, or on
  CPU the allocator events that ``torch.profiler`` records (the resident size would also count
  memory that glibc keeps after a free).
- :func:`markdown_table`, :func:`environment_lines` and :func:`write_section`: one table
  format, one header, and a results file in which each tool rewrites only its own section
  (between ``<!-- NAME: begin ... -->`` and ``<!-- NAME: end -->``), and only when asked
  (``--out``): a plain run prints and writes nothing.
"""
import contextlib
import datetime
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

Columns = Sequence[Tuple[str, str, str]]  # (row key, title, format), e.g. ('ms', 'ms', '{:.1f}')


class Timing(NamedTuple):
    """Seconds of the timed runs of one step."""
    runs: List[float]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def min(self) -> float:
        return min(self.runs)


def synchronize(device) -> None:
    import torch  # here, not above: tools import this module before parsing arguments
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)


def time_in_turns(steps: Dict[str, Callable[[], object]], device='cpu', repeats: int = 5,
                  warmup: int = 1) -> Dict[str, Timing]:
    """Time every step ``repeats`` times after ``warmup`` untimed runs, the steps in turns."""
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    runs = {name: [] for name in names}
    for repeat in range(repeats):
        for name in (names if repeat % 2 == 0 else names[::-1]):
            synchronize(device)
            start = time.perf_counter()
            steps[name]()
            synchronize(device)
            runs[name].append(time.perf_counter() - start)
    return {name: Timing(values) for name, values in runs.items()}


@contextlib.contextmanager
def without_profiler_lines():
    """Drop the lines the profiler's C++ library prints to stderr (``profiler_start``,
    ``profiler_stop``, a failed GPU count), keep everything else written there."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode='w+b') as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            noise = ('profiler_start', 'profiler_stop', 'gpuGetDeviceCount')
            for line in captured.read().decode(errors='replace').splitlines(keepends=True):
                if not any(word in line for word in noise):
                    sys.stderr.write(line)


def peak_memory_mib(step: Callable[[], object], device='cpu') -> float:
    """MiB allocated at the peak of one ``step()`` beyond what was allocated before it."""
    import torch
    device = torch.device(device)
    if device.type == 'cuda':
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    from torch.profiler import ProfilerActivity, profile
    with without_profiler_lines(), profile(activities=[ProfilerActivity.CPU],
                                           profile_memory=True) as prof:
        step()
    # Replay allocations and frees in time order: the running sum's maximum is the peak.
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == '[memory]'
                    and e.device_type() == torch.autograd.DeviceType.CPU)
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak / 2**20


def relative_error(ours, reference) -> float:
    """``||ours - reference|| / ||reference||`` (Frobenius norms, in float64)."""
    reference = reference.double()
    return ((ours.double() - reference).norm() / reference.norm().clamp_min(1e-30)).item()


def device_name(device='cpu') -> str:
    """The GPU's name, or the CPU's model name (what ``lscpu`` calls it)."""
    import torch
    device = torch.device(device)
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    return platform.processor() or platform.machine()


def environment_lines(device, tool: str, argv: Sequence[str]) -> List[str]:
    """Markdown list lines: device, software, threads, load, date and the command."""
    import torch
    device = torch.device(device)
    if device.type == 'cuda':
        where = (f'{device_name(device)} (CUDA {torch.version.cuda}, cuDNN '
                 f'{torch.backends.cudnn.version()})')
    else:
        where = f'CPU: {device_name(device)}, {os.cpu_count()} logical CPUs'
    return [f'- device: {where}',
            f'- torch {torch.__version__}, Python {platform.python_version()}, '
            f'{torch.get_num_threads()} CPU threads',
            f'- load average (1 min): {os.getloadavg()[0]:.2f} (other processes slow a CPU '
            'run)',
            f'- date: {datetime.datetime.now().isoformat(timespec="minutes")}; command: `'
            + shlex.join(['python', tool, *argv]) + '`']


def format_cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '-'
    return fmt.format(value)


def markdown_table(rows: Sequence[dict], columns: Columns) -> str:
    lines = ['| ' + ' | '.join(title for _, title, _ in columns) + ' |',
             '|' + '---|' * len(columns)]
    lines += ['| ' + ' | '.join(format_cell(row.get(key), fmt) for key, _, fmt in columns)
              + ' |' for row in rows]
    return '\n'.join(lines)


def print_row(row: dict, columns: Columns) -> None:
    print('  ' + ', '.join(f'{title}: {format_cell(row.get(key), fmt)}'
                           for key, title, fmt in columns), flush=True)


def begin_marker(name: str) -> str:
    return f'<!-- {name}: begin (written by a benchmark tool; edits inside are replaced) -->'


def end_marker(name: str) -> str:
    return f'<!-- {name}: end -->'


def write_section(path, name: str, section: str) -> None:
    """Put ``section`` between the markers of ``name`` in ``path`` (appended the first time);
    everything else in the file is kept."""
    path = Path(path)
    text = path.read_text() if path.exists() else '# Benchmarks\n'
    block = f'{begin_marker(name)}\n{section.strip()}\n{end_marker(name)}'
    begin = text.find(f'<!-- {name}: begin')
    end = text.find(end_marker(name), max(begin, 0))
    if begin != -1 and end != -1:
        text = text[:begin] + block + text[end + len(end_marker(name)):]
    else:
        text = text.rstrip('\n') + '\n\n' + block + '\n'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def add_output_arguments(parser, threads_default: Optional[int] = None) -> None:
    """``--out`` and ``--threads``, alike in every tool."""
    parser.add_argument('--out', '--output', dest='out', metavar='FILE',
                        help="also write the tables into this tool's section of FILE (e.g. "
                        'benchmarks/results.md); default: print only')
    default = "torch's" if threads_default is None else threads_default
    parser.add_argument('--threads', type=int, default=threads_default,
                        help=f'CPU threads for torch (default: {default})')
