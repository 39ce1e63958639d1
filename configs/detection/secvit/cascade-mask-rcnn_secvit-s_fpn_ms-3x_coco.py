# Cascade Mask R-CNN with a SECViT-S backbone, 3x schedule (36 epochs) with the multi-scale and
# crop policy of mask-rcnn_secvit-s_fpn_ms-3x_coco.py. The box heads are the 4conv-1fc GIoU heads
# that Swin's and ConvNeXt's Cascade Mask R-CNN use. The base of the SECViT Cascade Mask R-CNN
# family.
_base_ = [
    'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
    '../../_base_/secvit_dense_backbone.py',
    '../../_base_/secvit_adamw.py',
    '../../_base_/sec_run_hooks.py',
]
custom_imports = dict(imports=['sec_mm'], allow_failed_imports=False)

# Box regression targets of the three cascade stages (tighter at every stage).
stage_target_stds = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
                     [0.033, 0.033, 0.067, 0.067]]
model = dict(
    backbone=dict(
        _base_.secvit_backbone,
        _delete_=True,
        arch='s',
        drop_path_rate=0.15,
        init_cfg=dict(
            _base_.secvit_backbone.init_cfg, checkpoint='checkpoints/secvit-s_in1k_mm.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]),
    roi_head=dict(bbox_head=[
        dict(
            type='ConvFCBBoxHead',
            num_shared_convs=4,
            num_shared_fcs=1,
            in_channels=256,
            conv_out_channels=256,
            fc_out_channels=1024,
            roi_feat_size=7,
            num_classes=80,
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder',
                target_means=[0., 0., 0., 0.],
                target_stds=stds),
            reg_class_agnostic=False,
            reg_decoded_bbox=True,
            norm_cfg=dict(type='SyncBN', requires_grad=True),
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='GIoULoss', loss_weight=10.0))
        for stds in stage_target_stds
    ]))

multi_scale = [(1333, short) for short in range(480, 801, 32)]
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [dict(type='RandomChoiceResize', scales=multi_scale, keep_ratio=True)],
            [
                dict(
                    type='RandomChoiceResize',
                    scales=[(1333, 400), (1333, 500), (1333, 600)],
                    keep_ratio=True),
                dict(
                    type='RandomCrop',
                    crop_type='absolute_range',
                    crop_size=(384, 600),
                    allow_negative_crop=True),
                dict(type='RandomChoiceResize', scales=multi_scale, keep_ratio=True)
            ]
        ]),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

# AdamW, lr 1e-4 (the papers; the authors' RMT configs use 4e-4, 2e-4 for B: add
# `--cfg-options optim_wrapper.optimizer.lr=4e-4`), weight decay 0.05, none on any norm layer
# (the authors' Cascade config exempts every norm, the stem's and the box heads' BatchNorms
# too), float16 mixed precision with dynamic loss scaling, as the authors' detectors.
optim_wrapper = dict(
    _base_.secvit_optim_wrapper,
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(_base_.secvit_optim_wrapper.optimizer, _delete_=True),
    paramwise_cfg=dict(norm_decay_mult=0.))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
# 500 warm-up iterations, as the authors' detection configs.
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[27, 33],
        gamma=0.1)
]
