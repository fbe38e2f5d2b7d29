from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import yaml

from dsseg_core.cli import main
from dsseg_core.pseudolabel.dataset import PseudoLabelDataset

# the ray-casting LiDAR helper lives next to the pseudolabel tests
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'pseudolabel'))
from lidar_scene import STREET, simulate_scan  # noqa: E402


def test_pseudo_label_gallery_on_the_sample_bag(sample_bag, tmp_path, capsys) -> None:
    out = tmp_path / 'ds'
    rc = main(['pseudo-label', str(sample_bag), '--out', str(out), '--k', '4',
               '--max-frames', '2', '--seed', '3'])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert 'frames: 2' in text and 'labelled pixels:' in text and 'class histogram' in text
    ds = PseudoLabelDataset(out)
    assert len(ds) == 2 and ds.num_classes == 5
    cfg = yaml.safe_load((out / 'config.yaml').read_text())
    assert cfg['pseudo_label']['clustering']['seed'] == 3 and 'frames' in cfg
    # rerun without --resume is refused with a clear one-line error
    rc = main(['pseudo-label', str(sample_bag), '--out', str(out), '--max-frames', '2'])
    assert rc == 1 and '--resume' in capsys.readouterr().err
    rc = main(['pseudo-label', str(sample_bag), '--out', str(out), '--max-frames', '2',
               '--k', '4', '--seed', '3', '--resume'])
    assert rc == 0 and '2 reused from the cache' in capsys.readouterr().out
    # two worker processes (shards 0/2 and 1/2) + gather give the same labels
    par = tmp_path / 'par'
    rc = main(['pseudo-label', str(sample_bag), '--out', str(par), '--k', '4',
               '--max-frames', '2', '--seed', '3', '--workers', '2'])
    assert rc == 0, capsys.readouterr().err
    for p in sorted((out / 'labels').glob('*.png')):
        assert (par / 'labels' / p.name).read_bytes() == p.read_bytes()
    rc = main(['gallery', str(out), '--per-class', '1'])
    assert rc == 0 and (out / 'gallery' / 'gallery.html').exists()
    assert (out / 'gallery' / 'contact_sheet.png').exists()


def test_pseudo_label_errors(tmp_path, capsys) -> None:
    rc = main(['pseudo-label', str(tmp_path / 'nope'), '--out', str(tmp_path / 'o')])
    assert rc == 1 and 'bag not found' in capsys.readouterr().err
    rc = main(['pseudo-label', str(tmp_path), '--out', str(tmp_path / 'o'), '--shard', '3/2'])
    assert rc == 1 and 'shard' in capsys.readouterr().err
    rc = main(['gallery', str(tmp_path)])
    assert rc == 1 and 'dataset.yaml' in capsys.readouterr().err


def test_eval_points_cli(tmp_path, capsys) -> None:
    xyz, _, truth = simulate_scan(STREET, num_beams=32, num_azimuth=512)
    scan = tmp_path / 'scan.bin'
    np.column_stack([xyz, np.zeros(len(xyz), np.float32)]).astype(np.float32).tofile(scan)
    # ground -> road (40), boxes -> car (10), building (50)
    raw = np.array([40, 10, 10, 10, 50], np.uint32)[np.clip(truth, 0, None)]
    raw[truth < 0] = 0
    labels = tmp_path / 'scan.label'
    raw.astype('<u4').tofile(labels)
    cfg = tmp_path / 'cfg.yaml'
    cfg.write_text('pseudo_label:\n  range_image:\n    width: 512\n')
    rc = main(['eval-points', str(scan), '--labels', str(labels), '--k', '4',
               '--config', str(cfg)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert 'hungarian matching' in text and 'many_to_one matching' in text
    assert 'unmatched pseudo-classes and unlabelled points count as wrong' in text
    assert 'road' in text and 'car' in text
    pred = tmp_path / 'pred.npy'
    np.save(pred, np.where(truth >= 0, truth, -1))
    rc = main(['eval-points', str(scan), '--labels', str(labels), '--pred', str(pred),
               '--policy', 'many_to_one'])
    text = capsys.readouterr().out
    assert rc == 0 and 'mIoU 100.0' in text
    rc = main(['eval-points', str(scan), '--labels', str(tmp_path / 'x.label')])
    assert rc == 1 and 'not found' in capsys.readouterr().err
