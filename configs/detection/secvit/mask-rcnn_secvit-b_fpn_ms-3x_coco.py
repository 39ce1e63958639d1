# Mask R-CNN with a SECViT-B backbone, 3x schedule with multi-scale training (480-800).
_base_ = './mask-rcnn_secvit-s_fpn_ms-3x_coco.py'

model = dict(
    backbone=dict(
        arch='b',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint='checkpoints/secvit-b_in1k_mm.pth')),
    neck=dict(in_channels=[80, 160, 320, 512]))
