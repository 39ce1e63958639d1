# UperNet with a SECViT-B backbone on ADE20K, 512x512 crops, 160k iterations (Swin's recipe).
_base_ = './upernet_secvit-s_8xb2-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='b',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint='checkpoints/secvit-b_in1k_mm.pth')),
    decode_head=dict(in_channels=[80, 160, 320, 512]),
    auxiliary_head=dict(in_channels=320))
