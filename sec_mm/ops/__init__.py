"""Pure PyTorch operators (no OpenMMLab imports).

:mod:`.sec_attention` is the SEC algorithm; :mod:`.dispatch` runs its primitives (and the
layers' depthwise conv, RoPE and residual additions), picking the kernels of :mod:`.cpu`
where they were measured to pay.
"""
from . import dispatch
from .rope import apply_rope, rotate_pairs
from .sec_attention import (cluster_attention, gather_tokens, inverse_permutation,
                            permute_tokens, resolve_num_clusters, restore_tokens,
                            sec_attention, sec_cluster_sizes, sec_order)
from .sec_merge import SEC_MERGE_MODES, sec_merge_attention, sec_merge_groups

__all__ = [
    'dispatch', 'sec_attention', 'sec_order', 'cluster_attention', 'sec_cluster_sizes',
    'resolve_num_clusters', 'gather_tokens', 'permute_tokens', 'inverse_permutation',
    'restore_tokens', 'apply_rope', 'rotate_pairs', 'SEC_MERGE_MODES', 'sec_merge_groups',
    'sec_merge_attention'
]
