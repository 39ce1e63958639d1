# UperNet with a SECViT-L backbone on ADE20K, 512x512 crops, 160k iterations (Swin's recipe).
_base_ = './upernet_secvit-s_8xb2-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='l',
        drop_path_rate=0.5,
        init_cfg=dict(checkpoint='checkpoints/secvit-l_in1k_mm.pth')),
    decode_head=dict(in_channels=[112, 224, 448, 640]),
    auxiliary_head=dict(in_channels=448))
