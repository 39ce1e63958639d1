# SEC-Swin-B on ImageNet-1k: mmpretrain's Swin-B config (300 epochs, AdamW, 16 GPUs x 64 images,
# DeiT augmentation) with only the backbone changed: every (shifted) window attention becomes
# SEC attention, [32, 8, 2, global] clusters per stage, with RoPE and LCE as in the released
# SEC layer. The papers' strict comparison: 88M params, 16.2G FLOPs, 85.3 top-1 (Swin-B 83.5).
_base_ = [
    'mmpretrain::swin_transformer/swin-base_16xb64_in1k.py',
    '../../_base_/sec_run_hooks.py',
]
custom_imports = dict(imports=['sec_mm'], allow_failed_imports=False)

model = dict(backbone=dict(type='SECSwinTransformer'))
