# The optimizer of the SECViT dense prediction configs: AdamW, lr 1e-4, weight decay 0.05 (the
# Mask R-CNN recipe), no weight decay on normalization layers. Detection configs replace the
# stock SGD with
#   optim_wrapper = dict(secvit_optim_wrapper,
#                        optimizer=dict(secvit_optim_wrapper.optimizer, _delete_=True))
# segmentation configs with `optim_wrapper = dict(secvit_optim_wrapper, _delete_=True)` (which
# also drops mmseg's `clip_grad=None`); either may change lr / weight_decay in `optimizer`.
secvit_optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.))
