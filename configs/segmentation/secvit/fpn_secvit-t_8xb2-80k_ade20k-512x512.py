# Semantic FPN with a SECViT-T backbone on ADE20K, 512x512 crops, 80k iterations, 8 GPUs x 2
# images, with PVT's recipe (AdamW lr 1e-4, weight decay 1e-4, poly decay with power 0.9).
# The base of the SECViT Semantic FPN family: the -s/-b/-l configs change only the backbone.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py'
]
custom_imports = dict(imports=['sec_mm'], allow_failed_imports=False)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    # The backbone loads its own weights through init_cfg.
    pretrained=None,
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
        # The ImageNet-1k weights converted to mmpretrain keys (see the README).
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/secvit-t_in1k_mm.pth',
            prefix='backbone.')),
    neck=dict(in_channels=[64, 128, 256, 512]),
    decode_head=dict(num_classes=150))

# PVT's Semantic FPN optimizer: AdamW lr 1e-4, weight decay 1e-4, none on normalization layers.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.0001),
    paramwise_cfg=dict(norm_decay_mult=0.))
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=80000, by_epoch=False)
]

# 8 GPUs x 2 images per GPU.
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
