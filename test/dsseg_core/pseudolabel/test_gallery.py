from __future__ import annotations

import numpy as np
import yaml
from PIL import Image
from pl_scene import street_frame

from dsseg_core.pseudolabel.dataset import PseudoLabelDataset
from dsseg_core.pseudolabel.gallery import crop_tile, lidar_views, make_gallery
from dsseg_core.pseudolabel.pipeline import PseudoLabelConfig, run_pseudo_label


def test_crop_tile_tints_and_outlines_the_mask() -> None:
    img = np.full((50, 80, 3), 100, np.uint8)
    mask = np.zeros((50, 80), bool)
    mask[10:30, 20:60] = True
    tile = crop_tile(img, mask, np.array([255.0, 0.0, 0.0]))
    assert tile.shape == (128, 192, 3)
    red = (tile[..., 0] > 220) & (tile[..., 1] < 40)
    assert red.sum() > 100  # outline drawn in the class colour
    tinted = (tile[..., 0] > 150) & (tile[..., 1] < 80)
    assert tinted.sum() > red.sum()


def test_lidar_views_draw_the_points() -> None:
    xyz = np.array([[5, 0, 0], [5, 0, 2], [6, 1, 1], [30, 30, 0]], np.float32)
    sel = np.array([True, True, True, False])
    img = lidar_views(xyz, sel, np.array([0, 255, 0], np.uint8), size=64)
    assert img.shape == (64, 128, 3)
    green = (img[..., 1] == 255) & (img[..., 0] == 0)
    assert green[:, :64].sum() >= 2 and green[:, 64:].sum() >= 3


def test_gallery_of_a_small_dataset(tmp_path) -> None:
    cfg = PseudoLabelConfig(min_segment_pixels=10)
    cfg.range_image.width = 512
    cfg.clustering.k = 3
    cfg.clustering.n_init = 1
    ds_dir = tmp_path / 'ds'
    run_pseudo_label([street_frame(i, shift=0.4 * i) for i in range(3)], ds_dir, cfg)
    (ds_dir / 'classes.yaml').unlink()
    res = make_gallery(ds_dir, tmp_path / 'g', per_class=2)
    page = res.html.read_text()
    assert '<table>' in page and 'class_01' in page
    sheet = np.asarray(Image.open(res.contact_sheet))
    assert sheet.shape[0] == 128 * 4  # one row per class (ground + 3)
    assert res.examples[0] >= 1 and sum(res.examples.values()) >= 4
    tiles = list((tmp_path / 'g' / 'tiles').glob('*.png'))
    assert len(tiles) == sum(res.examples.values())
    names = yaml.safe_load(res.classes_yaml.read_text())
    assert names == {0: 'ground', 1: 'class_01', 2: 'class_02', 3: 'class_03'}
    # edited names are kept by the gallery and read by the dataset
    res.classes_yaml.write_text('0: road\n2: car\n')
    make_gallery(ds_dir, tmp_path / 'g2', per_class=1)
    ds = PseudoLabelDataset(ds_dir)
    assert ds.class_names[0] == 'road' and ds.class_names[2] == 'car'
    assert ds.class_names[1] == 'class_01'
    assert 'car' in (tmp_path / 'g2' / 'gallery.html').read_text()
