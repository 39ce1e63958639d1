"""sec_mm.engine.data_audit: data faults of the toy COCO, ADE and ImageNet sets are named before
a run starts (real configs, real dataset classes, files made by make_toy_datasets)."""
import copy
import json
import shutil
import uuid
from pathlib import Path

import pytest

from sec_mm.engine.data_audit import DataFaultError, audit_datasets
from sec_mm.engine.launch import load_config

REPO = Path(__file__).resolve().parents[2]
DET = REPO / 'configs/detection/secvit/toy/mask-rcnn_secvit-t_fpn_toy-coco.py'
SEG = REPO / 'configs/segmentation/secvit/toy/upernet_secvit-t_toy-ade-192x192.py'
CLS = REPO / 'tests/fixtures/configs/tiny-secvit_toy-imagenet.py'


@pytest.fixture
def data(tmp_path, toy_data_root) -> Path:
    """A copy of the toy sets that a test may damage."""
    root = tmp_path / 'data'
    shutil.copytree(toy_data_root, root)
    return root


@pytest.fixture(scope='module')
def configs():
    return {name: load_config(str(path)) for name, path in
            (('det', DET), ('seg', SEG), ('cls', CLS))}


def config(configs, name, data: Path):
    cfg = copy.deepcopy(configs[name])
    for phase in ('train', 'val', 'test'):
        dataset = cfg[f'{phase}_dataloader']['dataset']
        dataset['data_root'] = str(data / Path(dataset['data_root']).name)
    return cfg


def current_log(tmp_path):
    from mmengine.logging import MMLogger
    log = tmp_path / 'audit.log'
    MMLogger.get_instance(f'audit-{uuid.uuid4().hex}', log_file=str(log))
    return log


def test_clean_toy_sets_pass_silently(configs, data, tmp_path):
    log = current_log(tmp_path)
    for name in ('det', 'seg', 'cls'):
        audit_datasets(config(configs, name, data), ('train', 'val', 'test'))
    assert 'WARNING' not in log.read_text()


def test_annotations_the_stock_code_drops_are_counted_once_by_image(configs, data, tmp_path):
    log = current_log(tmp_path)
    path = data / 'toy_coco/annotations/instances_train2017.json'
    coco = json.loads(path.read_text())
    names = {im['id']: im['file_name'] for im in coco['images']}
    anns = coco['annotations']
    anns[0]['bbox'][2] = 0.5  # under a pixel wide
    anns[1]['segmentation'] = [[1, 1, 5, 5]]  # two points: the instance loses its mask
    anns[2]['segmentation'].append([3, 3, 4, 4])  # one bad part among good ones
    anns[3]['bbox'] = [500, 500, 10, 10]  # outside the 128 px image
    path.write_text(json.dumps(coco))
    audit_datasets(config(configs, 'det', data), ('train', ))
    text = log.read_text()
    assert text.count('WARNING') == 1
    image = names[anns[0]['image_id']]
    assert (f'1 box(es) under 1 pixel wide or high, or of area 0 (dropped by the dataset) in '
            f'{image}') in text
    outside = names[anns[3]['image_id']]
    assert f'1 box(es) outside their image (dropped by the dataset) in {outside}' in text
    assert '2 polygon(s) with fewer than 3 points (dropped by LoadAnnotations)' in text
    assert f'1 instance(s) left without a polygon (ignored in training) in ' \
           f'{names[anns[1]["image_id"]]}' in text


def test_a_training_set_without_annotations_says_so(configs, data):
    path = data / 'toy_coco/annotations/instances_train2017.json'
    coco = json.loads(path.read_text())
    coco['annotations'] = []
    path.write_text(json.dumps(coco))
    with pytest.raises(DataFaultError, match=r'The train dataset \(CocoDataset, .*'
                       r'instances_train2017\.json\) has no annotation to train on: 6 images, '
                       r'0 annotations'):
        audit_datasets(config(configs, 'det', data), ('train', ))


@pytest.mark.parametrize('name, folder', [('det', 'toy_coco/train2017'),
                                          ('seg', 'toy_ade/images/training'),
                                          ('seg', 'toy_ade/annotations/training'),
                                          ('cls', 'toy_imagenet/train/square')])
def test_empty_files_are_named(configs, data, name, folder):
    victim = sorted((data / folder).iterdir())[0]
    victim.write_bytes(b'')
    with pytest.raises(DataFaultError, match=rf'1 empty \(0-byte\) file\(s\): .*'
                       rf'{victim.name}\. Restore'):
        audit_datasets(config(configs, name, data), ('train', ))


def test_missing_files_and_empty_folders_are_named(configs, data):
    victim = sorted((data / 'toy_coco/val2017').iterdir())[0]
    victim.unlink()
    with pytest.raises(DataFaultError, match=rf'The val dataset .*1 missing file\(s\): .*'
                       rf'{victim.name}'):
        audit_datasets(config(configs, 'det', data), ('val', ))
    for image in (data / 'toy_ade/images/training').iterdir():
        image.unlink()
    with pytest.raises(DataFaultError, match=r'The train dataset \(BaseSegDataset, '
                       r'img_path=.*images/training.*\) has no samples'):
        audit_datasets(config(configs, 'seg', data), ('train', ))
