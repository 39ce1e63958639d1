"""tools/misc/make_toy_datasets.py: real formats read by the stock dataset classes."""
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from tool_helpers import load_tool

toy = load_tool('misc/make_toy_datasets.py')


def settings(root: Path) -> dict:
    """The settings a toy set was made with (its stamp file)."""
    return json.loads((root / toy.STAMP).read_text())


def test_coco_loads_through_mmdet_coco_dataset(toy_data_root):
    from mmdet.datasets import CocoDataset
    from mmdet.utils import register_all_modules
    from mmengine.registry import DefaultScope
    # As mmdet's tools and configs do: its modules registered, its scope current (whatever
    # scope earlier tests left) and unprefixed transform names.
    register_all_modules(init_default_scope=False)
    root = toy_data_root / 'toy_coco'
    made = settings(root)
    for split, count in (('train', made['num_train']), ('val', made['num_val'])):
        with DefaultScope.overwrite_default_scope('mmdet'):
            dataset = CocoDataset(
                data_root=str(root), ann_file=f'annotations/instances_{split}2017.json',
                data_prefix=dict(img=f'{split}2017/'), metainfo=dict(classes=toy.CLASSES),
                pipeline=[dict(type='LoadImageFromFile'),
                          dict(type='LoadAnnotations', with_bbox=True, with_mask=True)])
        assert len(dataset) == count
        assert dataset.metainfo['classes'] == toy.CLASSES
        sample = dataset[0]
        size = made['image_size']
        assert sample['img'].shape == (size, size, 3)
        num = len(sample['gt_bboxes'])
        assert 1 <= num <= 6
        assert sample['gt_masks'].masks.shape == (num, size, size)
        boxes = sample['gt_bboxes'].tensor.numpy()
        assert (boxes[:, 2:] > boxes[:, :2]).all() and boxes.min() >= 0 and boxes.max() <= size
        assert set(sample['gt_bboxes_labels'].tolist()) <= {0, 1, 2}


def test_coco_annotations_are_consistent(toy_data_root):
    """Box = extent of the polygon mask, area = its pixels; ids as COCO has them."""
    data = json.loads((toy_data_root / 'toy_coco/annotations/instances_train2017.json')
                      .read_text())
    assert [c['id'] for c in data['categories']] == [1, 2, 3]
    assert [c['name'] for c in data['categories']] == list(toy.CLASSES)
    images = {im['id']: im for im in data['images']}
    assert len({a['id'] for a in data['annotations']}) == len(data['annotations'])
    for ann in data['annotations']:
        image = images[ann['image_id']]
        assert ann['iscrowd'] == 0 and ann['category_id'] in (1, 2, 3)
        assert all(len(p) >= 6 and len(p) % 2 == 0 for p in ann['segmentation'])
        rles = mask_utils.frPyObjects(ann['segmentation'], image['height'], image['width'])
        mask = mask_utils.decode(mask_utils.merge(rles)).astype(bool)
        ys, xs = np.nonzero(mask)
        x, y, w, h = ann['bbox']
        assert abs(xs.min() - x) <= 1 and abs(ys.min() - y) <= 1
        assert abs(xs.max() + 1 - (x + w)) <= 1 and abs(ys.max() + 1 - (y + h)) <= 1
        assert abs(mask.sum() - ann['area']) <= 0.05 * ann['area']


def test_scenes_are_varied_and_overlap():
    """Every class, 1-6 objects, varied sizes, some objects overlapping."""
    rng = np.random.default_rng(0)
    labels, counts, areas, overlapping = [], [], [], 0
    for _ in range(30):
        image, objects = toy.render_scene(rng, 128, int(rng.integers(1, 7)))
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        assert image.std() > 20  # textured, not flat
        labels += [o.label for o in objects]
        counts.append(len(objects))
        areas += [o.mask.sum() for o in objects]
        masks = [o.mask for o in objects]
        assert not any((a & b).any() for i, a in enumerate(masks) for b in masks[i + 1:])
        for i, a in enumerate(objects):
            ya, xa = np.nonzero(a.mask)
            for b in objects[i + 1:]:
                yb, xb = np.nonzero(b.mask)
                if (xa.min() <= xb.max() and xb.min() <= xa.max() and ya.min() <= yb.max()
                        and yb.min() <= ya.max()):
                    overlapping += 1
    assert set(labels) == {0, 1, 2}
    assert min(counts) >= 1 and max(counts) <= 6 and len(set(counts)) >= 4
    assert max(areas) > 8 * min(areas)
    assert overlapping > 0


def test_ade_loads_through_mmseg_with_background_class(toy_data_root):
    from mmcv.transforms import LoadImageFromFile
    from mmseg.datasets import BaseSegDataset
    from mmseg.datasets.transforms import LoadAnnotations

    # Classes rather than registry names: the registries' default scope is whatever earlier
    # tests left behind.
    dataset = BaseSegDataset(
        data_root=str(toy_data_root / 'toy_ade'), img_suffix='.jpg', seg_map_suffix='.png',
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        metainfo=dict(classes=toy.SEG_CLASSES), reduce_zero_label=False,
        pipeline=[dict(type=LoadImageFromFile),
                  dict(type=LoadAnnotations, reduce_zero_label=False)])
    assert len(dataset) == settings(toy_data_root / 'toy_ade')['num_train']
    labels = Counter()
    for i in range(len(dataset)):
        sample = dataset[i]
        assert sample['gt_seg_map'].shape == sample['img'].shape[:2]
        labels.update(np.unique(sample['gt_seg_map']).tolist())
    assert set(labels) <= {0, 1, 2, 3} and 0 in labels and len(labels) >= 3


def test_ade_files_follow_ade20k_layout(toy_data_root):
    from mmseg.datasets import ADE20KDataset
    root = toy_data_root / 'toy_ade'
    images = sorted((root / 'images/validation').glob('*.jpg'))
    labels = sorted((root / 'annotations/validation').glob('*.png'))
    num_val = settings(root)['num_val']
    assert len(images) == len(labels) == num_val
    assert [p.stem for p in images] == [p.stem for p in labels]
    # The stock ADE20K class finds the pairs too (with its own 150-class metainfo).
    dataset = ADE20KDataset(
        data_root=str(root), data_prefix=dict(img_path='images/validation',
                                              seg_map_path='annotations/validation'),
        pipeline=[])
    assert len(dataset) == num_val


def test_imagenet_loads_through_mmpretrain(toy_data_root):
    from mmpretrain.datasets import ImageNet
    dataset = ImageNet(data_root=str(toy_data_root / 'toy_imagenet'), split='train',
                       metainfo=dict(classes=toy.CLASSES), pipeline=[])
    assert len(dataset) == settings(toy_data_root / 'toy_imagenet')['num_train']
    assert dataset.CLASSES == toy.CLASSES
    for info in dataset.load_data_list():
        assert toy.CLASSES[info['gt_label']] in info['img_path']
    assert set(dataset.get_gt_labels().tolist()) == {0, 1, 2}


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    a = toy.make_toy_dataset('ade', tmp_path / 'a', num_train=2, num_val=1, image_size=64)
    b = toy.make_toy_dataset('ade', tmp_path / 'b', num_train=2, num_val=1, image_size=64)
    c = toy.make_toy_dataset('ade', tmp_path / 'c', num_train=2, num_val=1, image_size=64,
                             seed=1)
    files = sorted(p.relative_to(a) for p in a.rglob('*.*'))
    assert files == sorted(p.relative_to(b) for p in b.rglob('*.*'))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    png = 'annotations/training/ADE_train_00000001.png'
    assert (a / png).read_bytes() != (c / png).read_bytes()


def test_rerun_skips_and_other_settings_need_force(tmp_path, capsys):
    root = toy.make_toy_dataset('coco', tmp_path, num_train=2, num_val=1, image_size=64)
    ann = root / 'annotations/instances_train2017.json'
    stamp = ann.stat().st_mtime_ns
    assert toy.main(['coco', '--out-dir', str(tmp_path), '--num-train', '2', '--num-val', '1',
                     '--image-size', '64']) == 0
    assert 'nothing to do' in capsys.readouterr().out
    assert ann.stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match='--force'):
        toy.make_toy_dataset('coco', tmp_path, num_train=3, num_val=1, image_size=64)
    assert toy.main(['coco', '--out-dir', str(tmp_path), '--num-train', '3']) == 2
    toy.make_toy_dataset('coco', tmp_path, num_train=3, num_val=1, image_size=64, force=True)
    assert len(json.loads(ann.read_text())['images']) == 3


def test_bad_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match='kind'):
        toy.make_toy_dataset('voc', tmp_path)
    with pytest.raises(ValueError, match='image_size'):
        toy.make_toy_dataset('coco', tmp_path, image_size=32)
    with pytest.raises(ValueError, match='at least one'):
        toy.make_toy_dataset('coco', tmp_path, num_val=0)
    (tmp_path / 'toy_ade').mkdir()
    (tmp_path / 'toy_ade' / 'mine.txt').write_text('not a toy set')
    with pytest.raises(FileExistsError, match='not a finished toy set'):
        toy.make_toy_dataset('ade', tmp_path)
