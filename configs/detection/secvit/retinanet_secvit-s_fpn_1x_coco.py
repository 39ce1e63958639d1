# RetinaNet with a SECViT-S backbone, 1x schedule (12 epochs, 800x1333) on COCO.
_base_ = './retinanet_secvit-t_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='s',
        drop_path_rate=0.15,
        init_cfg=dict(checkpoint='checkpoints/secvit-s_in1k_mm.pth')),
    neck=dict(in_channels=[128, 256, 512]))
