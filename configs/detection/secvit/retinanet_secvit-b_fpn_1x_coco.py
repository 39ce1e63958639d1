# RetinaNet with a SECViT-B backbone, 1x schedule (12 epochs, 800x1333) on COCO.
_base_ = './retinanet_secvit-t_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='b',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint='checkpoints/secvit-b_in1k_mm.pth')),
    neck=dict(in_channels=[160, 320, 512]))
