# SECViT-S: released top-1 84.2 (EMA weights).
_base_ = './secvit-t_8xb128_in1k.py'

model = dict(backbone=dict(arch='s', drop_path_rate=0.15))
