# SECViT as the backbone of a detector or segmentor: the SECViT-T defaults of the dense
# prediction configs. A config takes it as
#   model = dict(backbone=dict(secvit_backbone, _delete_=True, arch=..., ...))
# (`_delete_` drops the stock ResNet/Swin backbone of the mmdet/mmseg model base).
secvit_backbone = dict(
    type='SECViT',
    arch='t',
    # [32, 8, 2, global] clusters per stage at every input size, as in the papers.
    num_clusters=(32, 8, 2, -1),
    drop_path_rate=0.1,
    out_indices=(0, 1, 2, 3),
    # Every pyramid level gets a channel LayerNorm before the neck or decode head.
    out_norm_cfg=dict(type='LN2d', eps=1e-6),
    # Stem and downsample BatchNorms synchronised over GPUs, as in the authors' dense
    # prediction code (2 images per GPU); on CPU the tools run them as BN.
    norm_cfg=dict(type='SyncBN', requires_grad=True),
    # The ImageNet-1k weights converted to mmpretrain keys (see the README, "Converting the
    # released checkpoints").
    init_cfg=dict(
        type='Pretrained',
        checkpoint='checkpoints/secvit-t_in1k_mm.pth',
        prefix='backbone.'))
