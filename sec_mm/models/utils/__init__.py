"""Helpers of the SEC models that are not models: argument checks, the cluster setting,
``frozen_stages`` / ``norm_eval`` and strict loading of stock weights."""
from .argument_checks import (check_bool, check_int, check_out_indices, check_positive_number,
                              check_probability, is_int)
from .cluster_setting import ClusterSetting, expand_cluster_setting
from .frozen_stages import FrozenStagesMixin
from .strict_pretrained import StrictPretrainedMixin

__all__ = [
    'is_int', 'check_int', 'check_bool', 'check_out_indices', 'check_positive_number', 'check_probability',
    'ClusterSetting', 'expand_cluster_setting', 'FrozenStagesMixin', 'StrictPretrainedMixin'
]
