"""Small, learnable datasets in the real COCO, ADE20K and ImageNet formats.

Every image shows coloured geometric shapes (circle, square, triangle) on a textured, noisy
background: 1-6 objects of varied size, colour and rotation, partly overlapping. The class is
the shape, never the colour, so a model has to learn shape. A fixed seed makes the sets
reproducible.

Layouts (all read by the stock dataset classes):

- ``toy_coco``: ``annotations/instances_{train,val}2017.json`` and ``{train,val}2017/*.jpg``;
  boxes, polygon masks of the visible part, areas, ``iscrowd=0``; category ids 1..3. Read by
  mmdet ``CocoDataset`` with ``metainfo=dict(classes=CLASSES)``.
- ``toy_ade``: ``images/{training,validation}/*.jpg`` and ``annotations/{training,validation}
  /*.png`` label maps. Like ADE20K, label 0 is "no object" and the shapes are 1..3; unlike
  ADE20K, 0 is a real class here (the background), so configs read it with
  ``reduce_zero_label=False`` and the classes ``SEG_CLASSES`` = ('background', *CLASSES).
- ``toy_imagenet``: ``{train,val}/<class>/*.JPEG`` with one shape per image; mmpretrain's
  ``ImageNet``/``CustomDataset`` find the classes from the folder names (sorted, = CLASSES).

Usage::

    python tools/misc/make_toy_datasets.py {coco,ade,imagenet,all} --out-dir data \
        [--num-train N] [--num-val M] [--image-size S] [--seed 0] [--force]

A finished set holds a stamp file with its settings; running again with the same settings
does nothing, with other settings it stops and asks for ``--force``.
"""
import argparse
import json
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

CLASSES = ('circle', 'square', 'triangle')
SEG_CLASSES = ('background', ) + CLASSES
KINDS = ('coco', 'ade', 'imagenet')
STAMP = '.toy_dataset.json'
# Seed offsets keep the splits and formats from sharing scenes.
_SPLIT_SEED = {'train': 0, 'val': 1_000_003}
_KIND_SEED = {'coco': 0, 'ade': 17, 'imagenet': 31}


@dataclass(frozen=True)
class ToySettings:
    """What decides a toy set's content (stored in its stamp file)."""
    kind: str
    num_train: int
    num_val: int
    image_size: int
    seed: int
    version: int = 2


@dataclass
class ToyObject:
    """One shape of a scene: its class index and the mask of its visible pixels."""
    label: int
    mask: np.ndarray  # (H, W) bool


# ------------------------------------------------------------------------------------------
# Drawing
# ------------------------------------------------------------------------------------------
def make_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured, noisy background: smooth colour blobs, a faint pattern and pixel noise.

    Returns:
        np.ndarray: ``(size, size, 3)`` float32 image in [0, 255].
    """
    grid = int(rng.integers(2, 6))
    blobs = rng.uniform(40, 215, size=(grid, grid, 3)).astype(np.float32)
    image = cv2.resize(blobs, (size, size), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(4, 16) * size / 128
    phase = (np.cos(angle) * xx + np.sin(angle) * yy) * 2 * np.pi / period
    pattern = np.sin(phase) if rng.random() < 0.5 else np.sign(np.sin(phase))
    image += (rng.uniform(8, 25) * pattern)[..., None] * rng.uniform(0.5, 1, size=3)
    image += rng.normal(0, rng.uniform(4, 12), size=image.shape)
    return np.clip(image, 0, 255)


def shape_polygon(label: int, center: Tuple[float, float], radius: float,
                  angle: float) -> np.ndarray:
    """Vertices ``(N, 2)`` (x, y) of a shape of class ``CLASSES[label]``.

    ``radius`` is the circumradius; squares and triangles are rotated by ``angle``.
    """
    name = CLASSES[label]
    if name == 'circle':
        count, radius = 48, radius * 0.85  # a circle looks larger than a polygon of equal radius
    elif name == 'square':
        count = 4
    elif name == 'triangle':
        count = 3
    else:
        raise ValueError(f'No polygon for class {name!r}.')
    theta = angle + np.arange(count) * 2 * np.pi / count
    return np.stack([center[0] + radius * np.cos(theta), center[1] + radius * np.sin(theta)], 1)


def _rasterise(polygons: List[np.ndarray], size: int) -> np.ndarray:
    canvas = np.zeros((size, size), np.uint8)
    cv2.fillPoly(canvas, [np.round(p).astype(np.int32) for p in polygons], 1)
    return canvas.astype(bool)


def mask_to_polygons(mask: np.ndarray, min_area: float = 4.) -> List[np.ndarray]:
    """Outer outlines of a binary mask as ``(N, 2)`` (x, y) vertex arrays (COCO polygons).

    Traced at twice the resolution so the vertices lie on the pixels' outer edges rather than
    on the boundary pixels' centres: pycocotools then redraws exactly the mask.
    """
    doubled = cv2.resize(mask.astype(np.uint8), None, fx=2, fy=2,
                         interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(doubled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [(c[:, 0, :].astype(np.float64) + 0.5) / 2 for c in contours
            if len(c) >= 3 and cv2.contourArea(c) >= 4 * min_area]


def polygons_to_mask(polygons: List[np.ndarray], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons the way pycocotools (and so mmdet) does."""
    from pycocotools import mask as mask_utils
    rles = mask_utils.frPyObjects([p.reshape(-1).tolist() for p in polygons], height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def _polygons_match(mask: np.ndarray, min_iou: float = 0.95) -> bool:
    """Whether the mask's polygons redraw it faithfully (no holes, no lost slivers)."""
    polygons = mask_to_polygons(mask)
    if not polygons:
        return False
    redrawn = polygons_to_mask(polygons, *mask.shape)
    return (mask & redrawn).sum() / max((mask | redrawn).sum(), 1) >= min_iou


def _object_colour(rng: np.random.Generator, background: np.ndarray,
                   region: np.ndarray) -> np.ndarray:
    """A saturated colour that stands out from the background under the shape."""
    under = background[region].mean(0)
    best, best_dist = None, -1.
    for _ in range(8):
        hsv = np.uint8([[[rng.integers(0, 180), rng.integers(150, 256), rng.integers(90, 256)]]])
        colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
        dist = float(np.linalg.norm(colour - under))
        if dist > 90:
            return colour
        if dist > best_dist:
            best, best_dist = colour, dist
    return best


def render_scene(rng: np.random.Generator, size: int, num_objects: int,
                 max_occlusion: float = 0.5, labels: Optional[List[int]] = None,
                 radius_range: Tuple[float, float] = (0.07, 0.26)
                 ) -> Tuple[np.ndarray, List[ToyObject]]:
    """Draw ``num_objects`` shapes on a textured background.

    Later shapes cover earlier ones; a placement that would hide more than ``max_occlusion``
    of an earlier shape, or leave a mask its polygons cannot describe, is drawn again
    elsewhere (so a few scenes get fewer objects than asked for).

    Args:
        rng: Random generator.
        size: Image side in pixels.
        num_objects: Shapes to place.
        max_occlusion: Largest hidden fraction of any shape.
        labels: Class index of every shape; random if None.
        radius_range: Circumradius range as a fraction of ``size``.

    Returns:
        tuple: ``(image, objects)``; image ``(size, size, 3)`` uint8 RGB, objects with masks
        of their visible pixels, in drawing order.
    """
    image = make_background(rng, size)
    owner = np.full((size, size), -1, np.int32)  # which object a pixel shows
    full_areas, labels_out = [], []
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for index in range(num_objects):
        label = int(rng.integers(len(CLASSES))) if labels is None else labels[index]
        for _ in range(20):
            radius = rng.uniform(*radius_range) * size
            radius = max(radius, 6.)
            margin = radius * 0.6  # shapes may be cut by the image border a little
            center = (rng.uniform(margin, size - margin), rng.uniform(margin, size - margin))
            mask = _rasterise([shape_polygon(label, center, radius, rng.uniform(0, 2 * np.pi))],
                              size)
            if mask.sum() < 30:
                continue
            trial = owner.copy()
            trial[mask] = len(full_areas)
            fits = all((trial == j).sum() >= (1 - max_occlusion) * full_areas[j]
                       and _polygons_match(trial == j) for j in range(len(full_areas)))
            if fits and _polygons_match(mask):
                break
        else:
            continue
        owner = trial
        colour = _object_colour(rng, image, mask)
        # A soft gradient and noise on the shape, so colour alone is not a flat give-away.
        direction = rng.uniform(0, 2 * np.pi)
        gradient = ((xx - center[0]) * np.cos(direction) +
                    (yy - center[1]) * np.sin(direction)) / radius
        shade = colour * (1 + 0.15 * np.clip(gradient, -1, 1)[..., None])
        shade += rng.normal(0, 6, size=shade.shape)
        image[mask] = shade[mask]
        full_areas.append(int(mask.sum()))
        labels_out.append(label)
    objects = [ToyObject(label, owner == j) for j, label in enumerate(labels_out)]
    objects = [o for o in objects if o.mask.any()]
    image = cv2.GaussianBlur(image, (3, 3), 0.6)  # soften the aliased edges a bit
    return np.clip(image, 0, 255).astype(np.uint8), objects


def _save_image(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                       [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise OSError(f'Could not write {path}.')


def _scene_rng(settings: ToySettings, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(
        [settings.seed, _KIND_SEED[settings.kind], _SPLIT_SEED[split], index])


# ------------------------------------------------------------------------------------------
# Formats
# ------------------------------------------------------------------------------------------
def _coco_split(root: Path, split: str, count: int, settings: ToySettings) -> None:
    images, annotations = [], []
    for index in range(count):
        rng = _scene_rng(settings, split, index)
        image, objects = render_scene(rng, settings.image_size, int(rng.integers(1, 7)))
        image_id = index + 1
        file_name = f'{image_id:012d}.jpg'
        _save_image(root / f'{split}2017' / file_name, image)
        images.append(dict(id=image_id, file_name=file_name, height=image.shape[0],
                           width=image.shape[1]))
        for obj in objects:
            ys, xs = np.nonzero(obj.mask)
            x0, y0 = int(xs.min()), int(ys.min())
            polygons = mask_to_polygons(obj.mask)
            annotations.append(dict(
                id=len(annotations) + 1, image_id=image_id, category_id=obj.label + 1,
                bbox=[x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1],
                area=int(obj.mask.sum()), iscrowd=0,
                segmentation=[[round(float(v), 1) for v in p.reshape(-1)] for p in polygons]))
    categories = [dict(id=i + 1, name=name, supercategory='shape')
                  for i, name in enumerate(CLASSES)]
    ann_file = root / 'annotations' / f'instances_{split}2017.json'
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps(dict(
        info=dict(description='sec_mm toy shapes', version='1.0'), licenses=[],
        images=images, annotations=annotations, categories=categories)))


def _ade_split(root: Path, split: str, count: int, settings: ToySettings) -> None:
    folder = {'train': 'training', 'val': 'validation'}[split]
    prefix = {'train': 'ADE_train', 'val': 'ADE_val'}[split]
    for index in range(count):
        rng = _scene_rng(settings, split, index)
        image, objects = render_scene(rng, settings.image_size, int(rng.integers(1, 7)))
        label_map = np.zeros(image.shape[:2], np.uint8)  # 0 = background
        for obj in objects:
            label_map[obj.mask] = obj.label + 1
        name = f'{prefix}_{index + 1:08d}'
        _save_image(root / 'images' / folder / f'{name}.jpg', image)
        ann = root / 'annotations' / folder / f'{name}.png'
        ann.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(ann), label_map)


def _imagenet_split(root: Path, split: str, count: int, settings: ToySettings) -> None:
    for index in range(count):
        rng = _scene_rng(settings, split, index)
        label = index % len(CLASSES)  # balanced classes
        image, _ = render_scene(rng, settings.image_size, 1, labels=[label],
                                radius_range=(0.15, 0.4))
        _save_image(root / split / CLASSES[label] / f'{split}_{index + 1:06d}.JPEG', image)


_WRITERS = {'coco': _coco_split, 'ade': _ade_split, 'imagenet': _imagenet_split}


def make_toy_dataset(kind: str, out_dir, num_train: int = 200, num_val: int = 50,
                     image_size: int = 256, seed: int = 0, force: bool = False) -> Path:
    """Write one toy set to ``out_dir/toy_<kind>`` unless it is already there.

    Args:
        kind: ``'coco'``, ``'ade'`` or ``'imagenet'``.
        out_dir: Parent folder (e.g. ``data``).
        num_train, num_val: Images per split (ImageNet: spread evenly over the classes).
        image_size: Side of the square images in pixels.
        seed: Random seed; the same settings give the same files.
        force: Rebuild a set that exists with other settings.

    Returns:
        Path: the set's root folder.
    """
    if kind not in KINDS:
        raise ValueError(f'Unknown toy dataset kind {kind!r}; choose one of {KINDS}.')
    if num_train < 1 or num_val < 1:
        raise ValueError(f'Need at least one image per split, got num_train={num_train}, '
                         f'num_val={num_val}.')
    if image_size < 64:
        raise ValueError(f'image_size {image_size} is too small for the shapes; use >= 64.')
    settings = ToySettings(kind, num_train, num_val, image_size, seed)
    root = Path(out_dir) / f'toy_{kind}'
    stamp = root / STAMP
    if stamp.is_file():
        existing = json.loads(stamp.read_text())
        if existing == asdict(settings):
            print(f'[make_toy_datasets] {root} exists with these settings; nothing to do.')
            return root
        if not force:
            raise FileExistsError(
                f'{root} was made with other settings ({existing}); delete it or pass '
                f'--force (force=True) to rebuild it with {asdict(settings)}.')
        shutil.rmtree(root)
    elif root.exists() and any(root.iterdir()):
        if not force:
            raise FileExistsError(
                f'{root} exists but is not a finished toy set (no {STAMP}); delete it or '
                'pass --force (force=True) to overwrite it.')
        shutil.rmtree(root)
    print(f'[make_toy_datasets] writing {root}: {num_train} train + {num_val} val images of '
          f'{image_size} px (seed {seed})')
    for split, count in (('train', num_train), ('val', num_val)):
        _WRITERS[kind](root, split, count, settings)
    stamp.write_text(json.dumps(asdict(settings)))  # last: marks the set complete
    return root


def make_toy_datasets(kinds, out_dir, **kwargs) -> Dict[str, Path]:
    """:func:`make_toy_dataset` for several kinds; returns ``{kind: root}``."""
    return {kind: make_toy_dataset(kind, out_dir, **kwargs) for kind in kinds}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Make small learnable shape datasets in COCO / ADE20K / ImageNet format.')
    parser.add_argument('kind', choices=KINDS + ('all', ), help='which format(s) to write')
    parser.add_argument('--out-dir', default='data', help='parent folder (default: data)')
    parser.add_argument('--num-train', type=int, default=200, help='training images')
    parser.add_argument('--num-val', type=int, default=50, help='validation images')
    parser.add_argument('--image-size', type=int, default=256, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--force', action='store_true',
                        help='rebuild a set that exists with other settings')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    kinds = KINDS if args.kind == 'all' else (args.kind, )
    try:
        make_toy_datasets(kinds, args.out_dir, num_train=args.num_train, num_val=args.num_val,
                          image_size=args.image_size, seed=args.seed, force=args.force)
    except (FileExistsError, ValueError) as error:
        print(f'[make_toy_datasets] error: {error}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
