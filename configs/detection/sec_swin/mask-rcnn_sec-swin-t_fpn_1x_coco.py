# Mask R-CNN with an SEC-Swin-T backbone, 1x schedule (12 epochs, 800x1333) on COCO: mmdet's
# Swin-T Mask R-CNN config (AdamW lr 1e-4, weight decay 0.05, no decay on norms) with only the
# backbone changed. Paper (strict comparison with Swin-T 43.7 box AP / 39.8 mask AP): SEC-Swin-T
# 48.3 / 43.4. The -s config changes only the backbone.
_base_ = [
    'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py',
    '../../_base_/sec_run_hooks.py',
]
custom_imports = dict(imports=['sec_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='SECSwinTransformer',
        arch='t',
        # [32, 8, 2, global] clusters per stage at every input size, as in the papers.
        num_clusters=(32, 8, 2, -1),
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3),
        # ImageNet-1k weights of configs/classification/sec_swin/sec-swin-t_16xb64_in1k.py. A
        # stock Swin-T checkpoint loads too (its window-attention keys are skipped).
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/sec-swin-t_in1k.pth',
            prefix='backbone.')),
    neck=dict(in_channels=[96, 192, 384, 768]))
