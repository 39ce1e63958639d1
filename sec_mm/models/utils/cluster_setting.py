"""The ``num_clusters`` / ``cluster_size`` argument shared by the SEC backbones."""
from typing import Dict, List, Optional, Sequence, Union

from .argument_checks import is_int

ClusterSetting = Optional[Union[int, Sequence[int]]]


def expand_cluster_setting(model_name: str, num_clusters: ClusterSetting,
                           cluster_size: ClusterSetting, default_num_clusters: Sequence[int],
                           count: int, unit: str = 'stage') -> List[Dict[str, int]]:
    """One ``{'num_clusters': n}`` or ``{'cluster_size': s}`` per stage (or layer).

    Args:
        model_name (str): Named in error messages.
        num_clusters (int | Sequence[int], optional): Clusters, one value for all or one per
            ``unit``.
        cluster_size (int | Sequence[int], optional): Tokens per cluster instead.
        default_num_clusters (Sequence[int]): Used when neither is given.
        count (int): Stages (or layers) of the model.
        unit (str): ``'stage'`` or ``'layer'``, for the error messages.

    Returns:
        list[dict]: ``count`` keyword dicts for the attention layers.
    """
    if num_clusters is not None and cluster_size is not None:
        raise ValueError(f'Give {model_name} either `num_clusters` or `cluster_size`, '
                         'not both.')
    if num_clusters is None and cluster_size is None:
        num_clusters = default_num_clusters
    key, value = (('num_clusters', num_clusters) if cluster_size is None else
                  ('cluster_size', cluster_size))
    meaning = ('clusters; <= 1 means global attention' if key == 'num_clusters' else
               'tokens per cluster, >= 1')
    values = [value] * count if is_int(value) else value
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or \
            not all(is_int(v) for v in values):
        raise TypeError(f'`{key}` of {model_name} must be an int ({meaning}) or a sequence '
                        f'of one int per {unit}; got {value!r} ({type(value).__name__}).')
    if len(values) != count:
        raise ValueError(f'`{key}` of {model_name} needs one value for all {unit}s or one per '
                         f'{unit} ({count}), got {value!r}.')
    if key == 'cluster_size' and any(v < 1 for v in values):
        raise ValueError(f'`cluster_size` of {model_name} must be >= 1 (tokens per cluster); '
                         f'got {value!r}.')
    return [{key: int(v)} for v in values]
