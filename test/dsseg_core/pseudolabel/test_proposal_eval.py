from __future__ import annotations

import json
import math

import numpy as np
import pytest
from lidar_scene import STREET, simulate_scan

from dsseg_core.cli import main
from dsseg_core.errors import DatasetError
from dsseg_core.pseudolabel.proposal_eval import evaluate_proposals

CAR, ROAD, BUILDING, PERSON, UNLABELED = 10, 40, 50, 30, 0


def _scene():
    """Car A (100 pts, inst 1), car B (50 pts, inst 2), person (30 pts, inst 3),
    building (60 pts), road (100 pts), unlabeled (10 pts)."""
    sem = np.repeat([CAR, CAR, PERSON, BUILDING, ROAD, UNLABELED], [100, 50, 30, 60, 100, 10])
    inst = np.repeat([1, 2, 3, 0, 0, 0], [100, 50, 30, 60, 100, 10])
    return sem, inst


def test_perfect_proposals():
    sem, inst = _scene()
    seg = np.repeat([0, 1, 2, 3, -1, -1], [100, 50, 30, 60, 100, 10])
    ground = sem == ROAD
    r = evaluate_proposals(seg, ground, sem, inst)
    assert r.num_instances == 3 and r.instances_found == 3
    assert r.car_recall == 1.0 and r.thing_recall == 1.0
    assert r.over_segmentation_rate == 0.0 and r.under_segmentation_rate == 0.0
    assert r.ground_precision == 1.0 and r.ground_recall == 1.0
    assert r.per_class == {'car': {'total': 2, 'found': 2}, 'person': {'total': 1, 'found': 1}}
    assert r.proposal_coverage == 1.0


def test_split_merge_and_ground_errors():
    sem, inst = _scene()
    seg = np.full(sem.size, -1)
    seg[:60] = 0            # car A split 60 / 40
    seg[60:100] = 1
    seg[100:150] = 2        # car B merged with the building
    seg[180:240] = 2
    seg[150:180] = -1       # person missed
    ground = np.zeros(sem.size, bool)
    ground[240:320] = True  # 80 of 100 road points
    ground[180:190] = True  # 10 building points called ground
    ground[340:350] = True  # unlabeled points are ignored
    r = evaluate_proposals(seg, ground, sem, inst)
    # car A: best IoU 0.6 -> found; car B: IoU 50/110 -> missed; person missed
    assert r.instances_found == 1 and r.car_recall == 0.5
    assert math.isclose(r.thing_recall, 1 / 3)
    assert r.instances_over_segmented == 1
    assert r.proposals_under_segmented == 1 and r.num_proposals == 3
    assert r.thing_proposals == 3 and r.thing_proposals_under_segmented == 1
    assert r.ground_tp == 80 and r.ground_fp == 10 and r.ground_fn == 20
    assert math.isclose(r.ground_precision, 80 / 90) and r.ground_recall == 0.8
    assert r.ground_fp_classes == {'building': 10}
    merged = r.merge(r)
    assert merged.instances_found == 2 and merged.per_class['car'] == {'total': 4, 'found': 2}
    assert math.isclose(merged.thing_recall, r.thing_recall)
    d = r.to_dict()
    assert d['car_recall'] == 0.5 and json.dumps(d)


def test_range_and_size_filters_and_empty():
    sem, inst = _scene()
    xyz = np.zeros((sem.size, 3))
    xyz[:100, 0] = 70.0  # car A far away
    seg = np.full(sem.size, -1)
    r = evaluate_proposals(seg, np.zeros(sem.size, bool), sem, inst, xyz=xyz, max_range=50.0,
                           min_instance_points=40)
    assert r.num_instances == 1 and r.num_instances_skipped == 2  # far car A, small person
    assert r.thing_recall == 0.0 and r.num_proposals == 0
    e = evaluate_proposals(np.zeros(0, int), np.zeros(0, bool), np.zeros(0, int),
                           np.zeros(0, int))
    assert e.num_instances == 0 and math.isnan(e.car_recall) and math.isnan(e.ground_recall)
    with pytest.raises(DatasetError, match='instance has shape'):
        evaluate_proposals(seg, np.zeros(sem.size, bool), sem, inst[:-1])


def _write_scan(tmp_path):
    xyz, _, truth = simulate_scan(STREET, num_beams=32, num_azimuth=1024)
    raw = np.array([ROAD, CAR, CAR, PERSON, BUILDING])[truth]
    inst = np.where(np.isin(truth, [1, 2, 3]), truth, 0)
    pts = np.concatenate([xyz, np.zeros((len(xyz), 1), np.float32)], 1)
    pts.tofile(tmp_path / 's.bin')
    ((inst.astype(np.uint32) << 16) | raw.astype(np.uint32)).astype('<u4').tofile(
        tmp_path / 's.label')
    return tmp_path / 's.bin', tmp_path / 's.label'


def test_cli_on_a_simulated_scan(tmp_path, capsys):
    scan, label = _write_scan(tmp_path)
    cfg = tmp_path / 'c.yaml'
    cfg.write_text('lidar_proposals:\n  range_image: {width: 1024}\n')
    out = tmp_path / 'scores.json'
    rc = main(['eval-proposals', str(scan), '--labels', str(label), '--config', str(cfg),
               '--json', str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert 'car recall@IoU0.5:        100.0%' in text
    data = json.loads(out.read_text())
    assert data['scores']['thing_recall'] == 1.0
    assert data['scores']['ground_precision'] > 0.99
    assert (tmp_path / 'scores.config.yaml').read_text().startswith('lidar_proposals:')
    rc = main(['eval-proposals', str(scan), '--labels', str(label), '--method', 'dbscan',
               '--ground-method', 'ransac'])
    assert rc == 0 and 'proposals=dbscan' in capsys.readouterr().out


def test_cli_errors(tmp_path, capsys):
    scan, label = _write_scan(tmp_path)
    np.zeros(5, '<u4').tofile(tmp_path / 'short.label')
    assert main(['eval-proposals', str(scan), '--labels', str(tmp_path / 'short.label')]) == 1
    assert 'short.label' in capsys.readouterr().err
    assert main(['eval-proposals', str(scan), str(scan), '--labels', str(label)]) == 1
    assert 'one --labels file per scan' in capsys.readouterr().err
    bad = tmp_path / 'bad.yaml'
    bad.write_text('proposals: {min_points: -3}\n')
    assert main(['eval-proposals', str(scan), '--labels', str(label), '--config',
                 str(bad)]) == 1
    assert 'min_points' in capsys.readouterr().err
