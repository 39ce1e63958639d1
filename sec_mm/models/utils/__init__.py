"""Helpers of the SEC models that are not models: argument checks and the cluster setting."""
from .argument_checks import (check_int, check_out_indices, check_positive_number,
                              check_probability, is_int)
from .cluster_setting import ClusterSetting, expand_cluster_setting

__all__ = [
    'is_int', 'check_int', 'check_out_indices', 'check_positive_number', 'check_probability',
    'ClusterSetting', 'expand_cluster_setting'
]
