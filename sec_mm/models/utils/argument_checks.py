"""Checks of the SEC backbones' arguments: a bad value stops with the argument's name, the
value and what is allowed, instead of a TypeError deep inside a comparison or a conv."""
import math
import numbers
from typing import Any, Optional, Sequence, Tuple

__all__ = ['is_int', 'check_int', 'check_bool', 'check_out_indices', 'check_positive_number',
           'check_probability']


def is_int(value: Any) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    return f'{value!r} ({type(value).__name__})'


def check_int(model_name: str, name: str, value: Any, low: int,
              high: Optional[int] = None, meaning: str = '') -> int:
    """An int in ``[low, high]`` (no upper bound if ``high`` is None), else TypeError /
    ValueError naming it; ``meaning`` explains the values in the message."""
    allowed = f'an int >= {low}' if high is None else f'an int in [{low}, {high}]'
    allowed += f' ({meaning})' if meaning else ''
    if not is_int(value):
        raise TypeError(f'`{name}` of {model_name} must be {allowed}; got {_shown(value)}.')
    if value < low or (high is not None and value > high):
        raise ValueError(f'`{name}` of {model_name} must be {allowed}; got {value!r}.')
    return int(value)


def check_bool(model_name: str, name: str, value: Any) -> bool:
    """A bool (``'no'`` is a string, and a true one), else TypeError naming it."""
    if not isinstance(value, bool):
        raise TypeError(f'`{name}` of {model_name} must be True or False; got {_shown(value)}.')
    return value


def check_out_indices(model_name: str, out_indices: Any,
                      num_stages: Optional[int] = None) -> Tuple[int, ...]:
    """``out_indices`` as a tuple of ints; with ``num_stages``, in ``[0, num_stages)``.

    Args:
        model_name: Named in the message.
        out_indices: An int or a sequence of ints; negative ones count from the end.
        num_stages: The stage count, to check the range and make the indices non-negative;
            None leaves the range to the caller (e.g. mmpretrain's own check).

    Raises:
        TypeError: Not an int or a sequence of ints (``'3'`` is a string, not an index).
        ValueError: An index outside ``[-num_stages, num_stages)``, or none at all.
    """
    allowed = ('an int or a sequence of ints' + (
        f' in [0, {num_stages}) (negative ones count from the end)' if num_stages else ''))
    indices = [out_indices] if is_int(out_indices) else out_indices
    if isinstance(indices, (str, bytes)) or not isinstance(indices, Sequence) or \
            not all(is_int(i) for i in indices):
        raise TypeError(f'`out_indices` of {model_name} must be {allowed}; got '
                        f'{_shown(out_indices)}.')
    if not indices:
        raise ValueError(f'`out_indices` of {model_name} is empty; give {allowed}.')
    if num_stages is None:
        return tuple(int(i) for i in indices)
    bad = [i for i in indices if not -num_stages <= i < num_stages]
    if bad:
        raise ValueError(f'`out_indices` of {model_name} must be {allowed}; got '
                         f'{out_indices!r} ({bad} out of range).')
    return tuple(int(i) % num_stages for i in indices)


def check_positive_number(model_name: str, name: str, value: Any) -> float:
    """A finite real number > 0 (an FFN ratio, a layer scale), else TypeError / ValueError
    naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f'`{name}` of {model_name} must be a positive number; got '
                        f'{_shown(value)}.')
    if not 0 < value < math.inf:
        raise ValueError(f'`{name}` of {model_name} must be a positive number; got {value!r}'
                         + (' (a finite one)' if value == math.inf else '') + '.')
    return value


def check_probability(model_name: str, name: str, value: Any) -> float:
    """A number in ``[0, 1)`` (a drop rate), else TypeError / ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f'`{name}` of {model_name} must be a number in [0, 1); got '
                        f'{_shown(value)}.')
    if not 0 <= value < 1:
        raise ValueError(f'`{name}` of {model_name} must be in [0, 1); got {value!r}.')
    return value
