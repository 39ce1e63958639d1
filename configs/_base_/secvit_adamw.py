# The optimizer of the SECViT dense prediction configs: AdamW, lr 1e-4, weight decay 0.05 (the
# Mask R-CNN recipe), and no weight decay on the parameters the authors' dense prediction code
# exempts: those whose names contain `norm` (the blocks' LayerNorms, the output norms) and the
# downsample BatchNorms (named `downsample.norm` in the release); the stem BatchNorms decay.
# Detection configs replace the stock SGD with
#   optim_wrapper = dict(secvit_optim_wrapper,
#                        optimizer=dict(secvit_optim_wrapper.optimizer, _delete_=True))
# segmentation configs with `optim_wrapper = dict(secvit_optim_wrapper, _delete_=True)` (which
# also drops mmseg's `clip_grad=None`); either may change lr / weight_decay in `optimizer`, the
# wrapper type (mixed precision) and `paramwise_cfg`. docs/recipes.md lists the sources.
secvit_optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'norm': dict(decay_mult=0.),
        'downsample.bn': dict(decay_mult=0.)
    }))
