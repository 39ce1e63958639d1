"""expand_cluster_setting: the num_clusters / cluster_size argument of the SEC backbones."""
import pytest

from sec_mm.models.utils import expand_cluster_setting


def test_values_per_stage():
    assert expand_cluster_setting('M', None, None, (32, 8, 2, -1), 4) == [
        {'num_clusters': 32}, {'num_clusters': 8}, {'num_clusters': 2}, {'num_clusters': -1}]
    assert expand_cluster_setting('M', 4, None, (32, 8), 2) == [{'num_clusters': 4}] * 2
    assert expand_cluster_setting('M', None, [49, 98], (32, 8), 2) == [
        {'cluster_size': 49}, {'cluster_size': 98}]


def test_bad_settings_name_the_model_and_the_fix():
    with pytest.raises(ValueError, match='Give M either `num_clusters` or `cluster_size`'):
        expand_cluster_setting('M', 4, 8, (32, 8), 2)
    with pytest.raises(ValueError, match=r'`cluster_size` of M needs one value for all layers '
                       r'or one per layer \(3\), got \[1, 2\]'):
        expand_cluster_setting('M', None, [1, 2], (1, 1, 1), 3, 'layer')
