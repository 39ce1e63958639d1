"""Pure PyTorch operators (no OpenMMLab imports)."""
from .attention import dot_product_attention
from .depthwise_conv import depthwise_conv2d
from .sec_attention import (gather_tokens, inverse_permutation, permute_tokens,
                            resolve_num_clusters, restore_tokens, sec_attention,
                            sec_cluster_sizes, sec_order)
from .sec_merge import SEC_MERGE_MODES, sec_merge_attention, sec_merge_groups

__all__ = [
    'dot_product_attention', 'depthwise_conv2d', 'sec_attention', 'sec_order',
    'sec_cluster_sizes', 'resolve_num_clusters', 'gather_tokens', 'permute_tokens',
    'inverse_permutation', 'restore_tokens', 'SEC_MERGE_MODES', 'sec_merge_groups',
    'sec_merge_attention'
]
