# Semantic FPN with a SECViT-S backbone on ADE20K, 512x512 crops, 80k iterations (PVT's recipe).
_base_ = './fpn_secvit-t_8xb2-80k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='s',
        drop_path_rate=0.15,
        init_cfg=dict(checkpoint='checkpoints/secvit-s_in1k_mm.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
