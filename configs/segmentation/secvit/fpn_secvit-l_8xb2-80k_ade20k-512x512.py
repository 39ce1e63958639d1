# Semantic FPN with a SECViT-L backbone on ADE20K, 512x512 crops, 80k iterations (PVT's recipe).
_base_ = './fpn_secvit-t_8xb2-80k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='l',
        drop_path_rate=0.5,
        init_cfg=dict(checkpoint='checkpoints/secvit-l_in1k_mm.pth')),
    neck=dict(in_channels=[112, 224, 448, 640]))
