# SEC-DeiT-B on ImageNet-1k: mmpretrain's DeiT-B config (300 epochs, AdamW, batch 1024, DeiT
# augmentation, drop path 0.1, EMA) on 4 GPUs x 256 images, with only the backbone changed: every
# attention becomes SEC attention with 4 clusters of patch tokens (the class token stays global).
# The papers: 86M params, 14.8G FLOPs, 82.4 top-1 (DeiT-B 81.8, 17.6G).
_base_ = 'mmpretrain::deit/deit-base_16xb64_in1k.py'
custom_imports = dict(imports=['sec_mm'], allow_failed_imports=False)

model = dict(backbone=dict(type='SECVisionTransformer', num_clusters=4))

# 4 GPUs x 256 images: the same total batch of 1024 as the stock 16 x 64.
train_dataloader = dict(batch_size=256)
