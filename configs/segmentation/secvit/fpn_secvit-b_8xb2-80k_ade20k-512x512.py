# Semantic FPN with a SECViT-B backbone on ADE20K, 512x512 crops, 80k iterations (PVT's recipe).
_base_ = './fpn_secvit-t_8xb2-80k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='b',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint='checkpoints/secvit-b_in1k_mm.pth')),
    neck=dict(in_channels=[80, 160, 320, 512]))
