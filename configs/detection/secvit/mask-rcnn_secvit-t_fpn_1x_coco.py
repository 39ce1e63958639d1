# Mask R-CNN with a SECViT-T backbone, 1x schedule (12 epochs, 800x1333) on COCO.
# The base of the SECViT Mask R-CNN 1x family: the -s/-b/-l configs change only the backbone.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py'
]
custom_imports = dict(imports=['sec_mm'], allow_failed_imports=False)

# The ImageNet-1k weights converted to mmpretrain keys (see the README:
# tools/model_converters/secvit_to_mm.py).
model = dict(
    backbone=dict(
        _delete_=True,
        type='SECViT',
        arch='t',
        # [32, 8, 2, global] clusters per stage at every input size, as in the papers.
        num_clusters=(32, 8, 2, -1),
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        # Every pyramid level gets a channel LayerNorm before the neck.
        out_norm_cfg=dict(type='LN2d', eps=1e-6),
        # Stem and downsample BatchNorms synchronised over GPUs, as in the authors' dense
        # prediction code (2 images per GPU); our tools run them as BN on CPU.
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/secvit-t_in1k_mm.pth',
            prefix='backbone.')),
    neck=dict(in_channels=[64, 128, 256, 512]))

# AdamW, lr 1e-4, weight decay 0.05, no weight decay on normalization layers.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        _delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[8, 11],
        gamma=0.1)
]
