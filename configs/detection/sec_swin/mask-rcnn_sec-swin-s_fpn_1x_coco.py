# Mask R-CNN with an SEC-Swin-S backbone, 1x schedule (12 epochs, 800x1333) on COCO; as the
# SEC-Swin-T config with the deeper backbone (stochastic depth 0.2, as mmdet's Swin-S Mask R-CNN).
_base_ = './mask-rcnn_sec-swin-t_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='s',
        # ImageNet-1k weights of configs/classification/sec_swin/sec-swin-s_16xb64_in1k.py.
        init_cfg=dict(checkpoint='checkpoints/sec-swin-s_in1k.pth')))
