"""sec_mm.engine.launch: the train/test tools' options, for mmdet, mmseg and mmpretrain configs."""
import copy
import uuid
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from sec_mm.engine.launch import (ExistingCheckpointsError, apply_test_options,
                                  apply_train_options, load_config)

REPO = Path(__file__).resolve().parents[2]
DET = REPO / 'configs/detection/secvit/toy/mask-rcnn_secvit-t_fpn_toy-coco.py'
SEG = REPO / 'configs/segmentation/secvit/toy/upernet_secvit-t_toy-ade-192x192.py'
CLS = REPO / 'configs/classification/secvit/secvit-t_8xb128_in1k.py'


@pytest.fixture(scope='module')
def configs():
    return {name: load_config(str(path)) for name, path in
            (('det', DET), ('seg', SEG), ('cls', CLS))}


def fresh(configs, name) -> Config:
    return copy.deepcopy(configs[name])


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / 'iter_2.pth'
    torch.save(dict(state_dict=dict(w=torch.ones(1))), path)
    return str(path)


def test_load_config_merges_options_and_checks_the_file():
    cfg = load_config(str(DET), {'train_cfg.max_iters': 3})
    assert cfg.train_cfg.max_iters == 3
    with pytest.raises(FileNotFoundError, match='nope.py'):
        load_config('configs/nope.py')


def test_work_dir_priority(configs):
    cfg = apply_train_options(fresh(configs, 'det'), str(DET), work_dir='wd')
    assert cfg.work_dir == 'wd'
    cfg = fresh(configs, 'det')
    cfg.work_dir = 'from_config'
    assert apply_train_options(cfg, str(DET)).work_dir == 'from_config'
    cfg = apply_train_options(fresh(configs, 'det'), str(DET))
    assert cfg.work_dir == './work_dirs/mask-rcnn_secvit-t_fpn_toy-coco'


def test_resume_modes(configs, checkpoint, tmp_path):
    cfg = apply_train_options(fresh(configs, 'det'), str(DET))
    assert cfg.resume is False and cfg.load_from is None
    # auto: the work dir's newest checkpoint ...
    work_dir = Path(checkpoint).parent
    cfg = apply_train_options(fresh(configs, 'det'), str(DET), resume='auto',
                              work_dir=str(work_dir))
    assert cfg.resume is True and cfg.load_from == checkpoint
    # ... and with none there, a fresh start.
    cfg = apply_train_options(fresh(configs, 'det'), str(DET), resume='auto',
                              work_dir=str(tmp_path / 'empty'))
    assert cfg.resume is False and cfg.load_from is None
    cfg = apply_train_options(fresh(configs, 'seg'), str(SEG), resume=checkpoint)
    assert cfg.resume is True and cfg.load_from == checkpoint
    with pytest.raises(FileNotFoundError, match='--resume'):
        apply_train_options(fresh(configs, 'det'), str(DET), resume='missing.pth')


def truncate(path, keep=0.5):
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:int(len(data) * keep)])


def current_log(tmp_path, name):
    """A fresh current mmengine logger writing to a file; returns the file."""
    from mmengine.logging import MMLogger
    log = tmp_path / f'{name}.log'
    MMLogger.get_instance(f'{name}-{uuid.uuid4().hex}', log_file=str(log))
    return log


def test_resume_auto_passes_over_incomplete_checkpoints(configs, checkpoint, tmp_path):
    log = current_log(tmp_path, 'resume')
    work_dir = Path(checkpoint).parent
    newest = work_dir / 'iter_3.pth'
    torch.save(dict(state_dict=dict(w=torch.ones(1000))), newest)
    (work_dir / 'last_checkpoint').write_text(str(newest))
    truncate(newest)
    cfg = apply_train_options(fresh(configs, 'det'), str(DET), resume='auto',
                              work_dir=str(work_dir))
    assert cfg.resume is True and cfg.load_from == checkpoint  # iter_2
    out = log.read_text()
    assert f'checkpoint {newest} is incomplete' in out and f'resuming from {checkpoint}' in out
    # Nothing complete at all: no silent fresh start over the files, unless asked for (with
    # the config's own load_from).
    truncate(checkpoint)
    with pytest.raises(ExistingCheckpointsError, match=r'found no complete checkpoint.*'
                       r'--start-fresh'):
        apply_train_options(fresh(configs, 'det'), str(DET), resume='auto',
                            work_dir=str(work_dir))
    cfg = fresh(configs, 'det')
    cfg.load_from = 'pretrained.pth'
    cfg = apply_train_options(cfg, str(DET), resume='auto', work_dir=str(work_dir),
                              start_fresh=True)
    assert cfg.resume is False and cfg.load_from == 'pretrained.pth'


def save_steps(folder, steps):
    folder.mkdir(parents=True, exist_ok=True)
    for step in steps:
        torch.save(dict(state_dict=dict(w=torch.full((1, ), float(step)))),
                   folder / f'iter_{step}.pth')
    (folder / 'last_checkpoint').write_text(str(folder / f'iter_{max(steps)}.pth'))


def test_a_moved_work_dir_resumes_from_its_own_checkpoints(configs, tmp_path):
    old, new = tmp_path / 'old' / 'run', tmp_path / 'new' / 'run'
    save_steps(old, (6, 8, 10))
    new.parent.mkdir()
    old.rename(new)
    # last_checkpoint still names old/run/iter_10.pth, which is gone.
    assert (new / 'last_checkpoint').read_text() == str(old / 'iter_10.pth')
    cfg = apply_train_options(fresh(configs, 'det'), str(DET), resume='auto',
                              work_dir=str(new))
    assert cfg.resume is True and cfg.load_from == str(new / 'iter_10.pth')


def test_a_fresh_start_over_checkpoints_is_refused(configs, tmp_path):
    save_steps(tmp_path / 'run', (2, 4))
    with pytest.raises(ExistingCheckpointsError) as error:
        apply_train_options(fresh(configs, 'det'), str(DET), work_dir=str(tmp_path / 'run'))
    message = str(error.value)
    for part in (str(tmp_path / 'run'), 'iter_4.pth, iter_2.pth', 'from scratch', '--resume',
                 '--work-dir', '--start-fresh'):
        assert part in message, (part, message)
    cfg = apply_train_options(fresh(configs, 'det'), str(DET), work_dir=str(tmp_path / 'run'),
                              start_fresh=True)
    assert cfg.resume is False
    # Files that only look like checkpoints by name elsewhere do not count.
    (tmp_path / 'other').mkdir()
    (tmp_path / 'other' / 'best_coco_bbox_mAP_iter_4.pth').write_bytes(b'x')
    apply_train_options(fresh(configs, 'det'), str(DET), work_dir=str(tmp_path / 'other'))


def test_incomplete_checkpoint_given_by_path_is_named(configs, checkpoint):
    truncate(checkpoint)
    with pytest.raises(ValueError, match=rf'--resume {checkpoint}: the checkpoint is '
                       r'incomplete.*without a path'):
        apply_train_options(fresh(configs, 'det'), str(DET), resume=checkpoint)
    with pytest.raises(ValueError, match=rf'{checkpoint}: the checkpoint is incomplete'):
        apply_test_options(fresh(configs, 'det'), str(DET), checkpoint)


def test_checkpoints_are_written_atomically(configs):
    cfg = apply_train_options(fresh(configs, 'det'), str(DET))
    assert cfg.default_hooks.checkpoint.type == 'AtomicCheckpointHook'
    assert cfg.default_hooks.checkpoint.max_keep_ckpts == 2  # the other arguments stay
    cfg = fresh(configs, 'det')
    cfg.default_hooks.checkpoint = None  # checkpoints turned off stay off
    assert apply_train_options(cfg, str(DET)).default_hooks.checkpoint is None


@pytest.fixture
def pretend_gpu(monkeypatch):
    """Take the accelerator branch of our helpers whatever the host has (only our logic runs)."""
    from sec_mm.engine import dist, launch
    monkeypatch.setattr(launch, 'accelerator_available', lambda: True)
    monkeypatch.setattr(dist, 'accelerator_available', lambda: True)
    monkeypatch.setattr(dist, 'cuda_available', lambda: True)


@pytest.fixture
def pretend_cpu(monkeypatch):
    """Take the CPU branch of our helpers whatever the host has."""
    from sec_mm.engine import dist, launch
    monkeypatch.setattr(launch, 'accelerator_available', lambda: False)
    monkeypatch.setattr(dist, 'accelerator_available', lambda: False)
    monkeypatch.setattr(dist, 'cuda_available', lambda: False)
    monkeypatch.setattr(dist, 'visible_nvidia_gpus', lambda: [])


@pytest.mark.parametrize('name', ['det', 'seg', 'cls'])
@pytest.mark.parametrize('amp,dtype', [(True, 'float16'), ('auto', 'float16'),
                                       ('fp16', 'float16'), ('bf16', 'bfloat16')])
def test_amp_on_gpus(configs, name, amp, dtype, pretend_gpu):
    cfg = apply_train_options(fresh(configs, name), 'x.py', amp=amp)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.dtype == dtype
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.optim_wrapper.optimizer == configs[name].optim_wrapper.optimizer
    # Already AMP (the dense recipes train in fp16): the type is kept, an explicit one taken.
    assert apply_train_options(cfg, 'x.py', amp=True).optim_wrapper.dtype == dtype
    assert apply_train_options(cfg, 'x.py', amp='bf16').optim_wrapper.dtype == 'bfloat16'


@pytest.mark.parametrize('amp,dtype', [(True, 'bfloat16'), ('bf16', 'bfloat16'),
                                       ('fp16', 'float16')])
def test_amp_on_cpu(configs, amp, dtype, pretend_cpu):
    cfg = apply_train_options(fresh(configs, 'det'), str(DET), amp=amp)
    assert cfg.optim_wrapper.type == 'CPUAmpOptimWrapper'
    assert cfg.optim_wrapper.dtype == dtype


def test_fp16_recipes_run_in_bfloat16_on_cpu(pretend_cpu):
    # The authors trained the detectors in fp16 (AmpOptimWrapper): mmengine's wrapper needs an
    # accelerator, so on CPU the same config trains under bfloat16 autocast.
    config = REPO / 'configs/detection/secvit/mask-rcnn_secvit-t_fpn_1x_coco.py'
    cfg = load_config(str(config))
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    cfg = apply_train_options(cfg, str(config))
    assert cfg.optim_wrapper.type == 'CPUAmpOptimWrapper'
    assert cfg.optim_wrapper.dtype == 'bfloat16' and 'loss_scale' not in cfg.optim_wrapper


def test_amp_off_and_bad_values(configs):
    cfg = apply_train_options(fresh(configs, 'det'), str(DET), amp=None)
    assert cfg.optim_wrapper.type == 'OptimWrapper'
    with pytest.raises(ValueError, match='fp16 or bf16.*fp8'):
        apply_train_options(fresh(configs, 'det'), str(DET), amp='fp8')


def test_amp_refuses_other_wrappers(configs, pretend_gpu):
    cfg = fresh(configs, 'det')
    cfg.optim_wrapper.type = 'MyWrapper'
    with pytest.raises(ValueError, match='--amp'):
        apply_train_options(cfg, str(DET), amp=True)


def test_distributed_on_cpu_adapts_the_config(configs, pretend_cpu):
    cfg = apply_train_options(fresh(configs, 'seg'), str(SEG), launcher='pytorch')
    assert cfg.launcher == 'pytorch'
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg.device_ids is None
    assert 'SyncBN' in str(configs['seg'].model) and 'SyncBN' not in str(cfg.model)


@pytest.mark.parametrize('apply', ['train', 'test'])
def test_visible_gpus_that_torch_cannot_use_stop_the_tools(configs, checkpoint, apply,
                                                          pretend_cpu, monkeypatch):
    from sec_mm.engine import dist
    monkeypatch.setattr(dist, 'visible_nvidia_gpus',
                        lambda: ['GPU 0: NVIDIA H200 (UUID: GPU-0)', 'GPU 1: NVIDIA H200'])

    def run(**kwargs):
        if apply == 'train':
            return apply_train_options(fresh(configs, 'det'), str(DET), **kwargs)
        return apply_test_options(fresh(configs, 'det'), str(DET), checkpoint, **kwargs)

    with pytest.raises(RuntimeError, match=r'2 NVIDIA GPU\(s\) are visible \(GPU 0: NVIDIA '
                       r'H200.*torch.cuda.is_available\(\) is False.*--force-cpu'):
        run()
    assert run(force_cpu=True).env_cfg.dist_cfg.backend == 'gloo'


def test_hidden_gpus_mean_cpu(monkeypatch):
    from sec_mm.engine.dist import check_gpus_usable, visible_nvidia_gpus
    for hidden in ('', '-1'):
        monkeypatch.setenv('CUDA_VISIBLE_DEVICES', hidden)
        assert visible_nvidia_gpus() == []
        check_gpus_usable()  # nothing to complain about


def test_test_options_per_codebase(configs, checkpoint):
    det = apply_test_options(fresh(configs, 'det'), str(DET), checkpoint, show_dir='vis',
                             out='results.pkl')
    assert det.load_from == checkpoint
    assert det.default_hooks.visualization.draw is True
    assert det.default_hooks.visualization.test_out_dir == 'vis'

    seg = apply_test_options(fresh(configs, 'seg'), str(SEG), checkpoint, show_dir='vis',
                             out='pred_maps')
    assert seg.visualizer.save_dir == 'vis' and seg.default_hooks.visualization.draw is True
    assert seg.test_evaluator.output_dir == 'pred_maps' and seg.test_evaluator.keep_results

    cls = apply_test_options(fresh(configs, 'cls'), str(CLS), checkpoint, show_dir='vis')
    assert cls.default_hooks.visualization.enable is True
    assert cls.default_hooks.visualization.out_dir == 'vis'


def test_test_options_errors(configs, checkpoint):
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        apply_test_options(fresh(configs, 'det'), str(DET), 'missing.pth')
    with pytest.raises(ValueError, match='.pkl'):
        apply_test_options(fresh(configs, 'det'), str(DET), checkpoint, out='results.json')
    cfg = fresh(configs, 'det')
    cfg.default_hooks.pop('visualization')
    with pytest.raises(ValueError, match='DetVisualizationHook'):
        apply_test_options(cfg, str(DET), checkpoint, show=True)


def test_tta(configs, checkpoint):
    det = apply_test_options(fresh(configs, 'det'), str(DET), checkpoint, tta=True)
    assert det.model.type == 'DetTTAModel' and det.model.module.type == 'MaskRCNN'
    flips = det.test_dataloader.dataset.pipeline[-1]
    assert flips.type == 'TestTimeAug' and flips.transforms[1][0].type == 'PackDetInputs'
    # mmseg configs bring their own (multi-scale) TTA.
    seg = apply_test_options(fresh(configs, 'seg'), str(SEG), checkpoint, tta=True)
    assert seg.model.type == 'SegTTAModel' and seg.model.module.type == 'EncoderDecoder'
    assert seg.test_dataloader.dataset.pipeline == configs['seg'].tta_pipeline
    cfg = fresh(configs, 'seg')
    cfg.pop('tta_model')
    with pytest.raises(ValueError, match='tta_model'):
        apply_test_options(cfg, str(SEG), checkpoint, tta=True)


def test_config_options_and_syntax_errors_are_named(tmp_path):
    from sec_mm.engine.launch import parse_cfg_options
    assert parse_cfg_options(['a.b=1', 'c=[1,2]', 'd=x']) == {'a.b': 1, 'c': [1, 2], 'd': 'x'}
    for wrong in ('train_cfg.max_iters', '=3'):
        with pytest.raises(ValueError, match=rf"--cfg-options '{wrong}': every option is "
                           r'KEY=VALUE'):
            parse_cfg_options(['a=1', wrong])
    broken = tmp_path / 'broken_cfg.py'
    broken.write_text(f"_base_ = [{str(CLS)!r}]\nmodel = dict(type='X'\n")
    with pytest.raises(SyntaxError) as error:
        load_config(str(broken))
    assert error.value.filename == str(broken) and error.value.lineno == 2
    # An error in a base file: the config that inherits it is named.
    child = tmp_path / 'child_cfg.py'
    child.write_text(f'_base_ = [{str(broken)!r}]\n')
    with pytest.raises(SyntaxError, match=rf'_base_ files of config {child}'):
        load_config(str(child))
