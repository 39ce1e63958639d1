# SEC-DeiT-S on ImageNet-1k: mmpretrain's DeiT-S config (300 epochs, AdamW, 4 GPUs x 256 images,
# DeiT augmentation) with only the backbone changed: every attention becomes SEC attention with
# 4 clusters of patch tokens (the class token stays global). The papers: 22M params; 4.3G / 4.1G /
# 3.9G FLOPs and 80.6 / 80.5 / 80.1 top-1 with 2 / 4 / 8 clusters (DeiT-S 79.8, 4.6G).
_base_ = 'mmpretrain::deit/deit-small_4xb256_in1k.py'
custom_imports = dict(imports=['sec_mm'], allow_failed_imports=False)

model = dict(backbone=dict(type='SECVisionTransformer', num_clusters=4))
