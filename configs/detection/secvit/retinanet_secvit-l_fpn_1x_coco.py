# RetinaNet with a SECViT-L backbone, 1x schedule (12 epochs, 800x1333) on COCO.
_base_ = './retinanet_secvit-t_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='l',
        drop_path_rate=0.5,
        init_cfg=dict(checkpoint='checkpoints/secvit-l_in1k_mm.pth')),
    neck=dict(in_channels=[224, 448, 640]))
