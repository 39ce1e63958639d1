# Mask R-CNN with an SEC-Swin-S backbone, 1x schedule (12 epochs, 800x1333) on COCO; as the
# SEC-Swin-T config with the deeper backbone and Swin-S's stochastic depth.
_base_ = './mask-rcnn_sec-swin-t_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='s',
        drop_path_rate=0.3,
        # ImageNet-1k weights of configs/classification/sec_swin/sec-swin-s_16xb64_in1k.py.
        init_cfg=dict(checkpoint='checkpoints/sec-swin-s_in1k.pth')))
