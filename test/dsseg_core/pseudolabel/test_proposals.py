from __future__ import annotations

import numpy as np
import pytest
from lidar_scene import STREET, simulate_scan

from dsseg_core.config import load_config
from dsseg_core.errors import ConfigError
from dsseg_core.pseudolabel.proposals import (
    ProposalConfig,
    ProposalsConfig,
    compute_proposals,
    filter_segments,
    segment_proposals,
)
from dsseg_core.pseudolabel.range_image import RangeImageConfig

RI = RangeImageConfig(width=1024)


def _check_objects(segments, truth, ids):
    """Every object is (almost) one segment of its own; ground is never segmented."""
    assert segments.dtype == np.int32
    assert (segments[truth == 0] == -1).all()
    owners = []
    for k in ids:
        seg = segments[truth == k]
        vals, counts = np.unique(seg[seg >= 0], return_counts=True)
        assert vals.size >= 1, k
        main = vals[np.argmax(counts)]
        assert counts.max() >= 0.95 * seg.size, (k, vals, counts)
        owners.append(int(main))
        # the segment holds nothing but this object
        assert (truth[segments == main] == k).all()
    assert len(set(owners)) == len(owners)


@pytest.mark.parametrize('method', ['range_image', 'dbscan'])
@pytest.mark.parametrize('use_ring', [True, False])
def test_each_object_is_one_segment(method, use_ring):
    xyz, ring, truth = simulate_scan(STREET, num_beams=32, num_azimuth=1024)
    ground = truth == 0
    segments = segment_proposals(xyz, ground, ring if use_ring else None,
                                 ProposalConfig(method=method), range_image_cfg=RI)
    _check_objects(segments, truth, [1, 2, 3, 4])
    assert segments.max() + 1 == 4  # ids are compact 0..K-1


def test_object_across_the_rear_wraps_around():
    box = [(-9.0, -7.0, -1.0, 1.0, -1.73, 0.0)]  # behind the car: azimuth +-180 deg
    xyz, ring, truth = simulate_scan(box, num_beams=32, num_azimuth=1024)
    y = xyz[truth == 1, 1]
    assert (y > 0).any() and (y < 0).any()
    segments = segment_proposals(xyz, truth == 0, ring, range_image_cfg=RI)
    _check_objects(segments, truth, [1])


def test_size_and_range_limits():
    boxes = [(8.0, 12.5, -1.0, 1.0, -1.73, -0.2),   # car, many points
             (6.0, 6.05, 3.0, 3.05, -1.73, -1.5),   # tiny stone
             (55.0, 59.0, -2.0, 2.0, -1.73, 3.0)]   # truck beyond 50 m
    xyz, ring, truth = simulate_scan(boxes, num_beams=32, num_azimuth=1024)
    assert 0 < (truth == 2).sum() < 20 and (truth == 3).sum() >= 20
    segments = segment_proposals(xyz, truth == 0, ring, range_image_cfg=RI)
    assert (segments[truth == 2] == -1).all()
    assert (segments[truth == 3] == -1).all()
    assert (segments[truth == 1] >= 0).all()
    far = segment_proposals(xyz, truth == 0, ring, ProposalConfig(max_range=80.0),
                            range_image_cfg=RI)
    assert (far[truth == 3] >= 0).mean() > 0.9
    capped = segment_proposals(xyz, truth == 0, ring,
                               ProposalConfig(max_points=(truth == 1).sum() - 1),
                               range_image_cfg=RI)
    assert (capped[truth == 1] == -1).all()


def test_close_objects_are_split_by_the_angle_criterion():
    # two boxes 0.6 m apart along the line of sight: one behind the other, partly visible
    boxes = [(10.0, 11.0, -1.0, 0.0, -1.73, 0.0), (11.6, 12.6, -0.2, 1.5, -1.73, 0.5)]
    xyz, ring, truth = simulate_scan(boxes, num_beams=64, num_azimuth=2048)
    segments = segment_proposals(xyz, truth == 0, ring,
                                 range_image_cfg=RangeImageConfig(width=2048))
    _check_objects(segments, truth, [1, 2])


@pytest.mark.parametrize('method', ['range_image', 'dbscan'])
def test_empty_all_ground_and_tiny_scans(method):
    cfg = ProposalConfig(method=method)
    empty = segment_proposals(np.zeros((0, 3), np.float32), np.zeros(0, bool), None, cfg)
    assert empty.shape == (0,) and empty.dtype == np.int32
    xyz, ring, truth = simulate_scan([], num_beams=16, num_azimuth=256)
    all_ground = segment_proposals(xyz, np.ones(len(xyz), bool), ring, cfg)
    assert (all_ground == -1).all()
    tiny = np.array([[5, 0, 0], [5, 0.1, 0], [5, 0.2, 0]], np.float32)
    assert (segment_proposals(tiny, None, None, cfg) == -1).all()
    assert (segment_proposals(tiny, None, None, cfg.model_copy(update={'min_points': 1}))
            .shape == (3,))


def test_compute_proposals_end_to_end_without_ring():
    xyz, _, truth = simulate_scan(STREET, num_beams=32, num_azimuth=1024)
    res = compute_proposals(xyz, None, ProposalsConfig(range_image=RI))
    assert res.range_image is not None and res.range_image.row_source == 'scan_order'
    assert set(res.timings_ms) == {'range_image', 'ground', 'segments', 'total'}
    # ground hidden behind a box (smoothing across the box edge) may form an extra segment,
    # a known limit of the reference method; every object still owns one segment
    assert 4 <= res.num_segments <= 6
    for k in (1, 2, 3, 4):
        seg = res.segments[truth == k]
        main = np.bincount(seg[seg >= 0]).argmax()
        assert (seg == main).mean() > 0.95
        assert np.isin(truth[res.segments == main], [0, k]).all()
        assert (truth[res.segments == main] == k).mean() > 0.95
    empty = compute_proposals(np.zeros((0, 3), np.float32))
    assert empty.segments.shape == (0,) and empty.ground.shape == (0,)
    assert empty.num_segments == 0


def test_filter_segments_renumbers():
    labels = np.array([5, 5, 5, 9, -1, 2, 2, 2, 2])
    out = filter_segments(labels, 3, 3)
    assert out.tolist() == [0, 0, 0, -1, -1, -1, -1, -1, -1]
    assert filter_segments(np.full(3, -1), 1, 10).tolist() == [-1, -1, -1]


def test_config_validation_and_nesting(tmp_path):
    with pytest.raises(ConfigError, match='max_points'):
        load_config(ProposalConfig, overrides={'min_points': 50, 'max_points': 10})
    path = tmp_path / 'p.yaml'
    path.write_text('lidar_proposals:\n  proposals: {method: dbscan, dbscan_eps: 0.7}\n'
                    '  ground: {method: ransac}\n  range_image: {width: 1024}\n')
    cfg = load_config(ProposalsConfig, path, section='lidar_proposals')
    assert cfg.proposals.method == 'dbscan' and cfg.proposals.dbscan_eps == 0.7
    assert cfg.ground.method == 'ransac' and cfg.range_image.width == 1024
    path.write_text('lidar_proposals:\n  proposals: {neighbour_angel_deg: 5}\n')
    with pytest.raises(ConfigError, match='neighbour_angel_deg'):
        load_config(ProposalsConfig, path, section='lidar_proposals')
    with pytest.raises(ConfigError, match='ground_mask'):
        segment_proposals(np.zeros((4, 3)), np.zeros(3, bool))


def test_real_semantickitti_cars_are_found(semantickitti_dir):
    from dsseg_core.pseudolabel.proposal_eval import evaluate_proposals
    from dsseg_core.semantickitti import load_labels, load_scan

    xyz, _ = load_scan(semantickitti_dir / 'velodyne' / '000000.bin')
    gt = load_labels(semantickitti_dir / 'labels' / '000000.label', xyz.shape[0])
    res = compute_proposals(xyz)
    assert res.range_image.row_source == 'scan_order'
    scores = evaluate_proposals(res.segments, res.ground, gt.semantic_raw, gt.instance,
                                xyz=xyz, max_range=50.0, min_instance_points=20)
    assert scores.num_instances >= 10
    assert scores.car_recall >= 0.75
    assert scores.ground_precision > 0.9


@pytest.mark.parametrize('ground_method', ['range_angle', 'ransac'])
def test_non_finite_duplicate_and_single_beam_scans(ground_method):
    cfg = ProposalsConfig(ground={'method': ground_method, 'ransac_backend': 'numpy'},
                          range_image=RI)
    xyz, ring, truth = simulate_scan(STREET, num_beams=32, num_azimuth=1024)
    bad = xyz.copy()
    bad[::50] = np.nan
    bad[1::50] = np.inf
    res = compute_proposals(bad, ring, cfg)
    broken = ~np.isfinite(bad).all(axis=1)
    assert not res.ground[broken].any() and (res.segments[broken] == -1).all()
    assert res.num_segments >= 4
    # every point twice: duplicates share pixels and segments
    dup = compute_proposals(np.concatenate([xyz, xyz]), np.concatenate([ring, ring]), cfg)
    n = xyz.shape[0]
    assert np.array_equal(dup.segments[:n], dup.segments[n:])
    # a single beam (2-D scanner): one row, no crash; the cars are still one segment each
    one = ring == 20
    single = compute_proposals(xyz[one], ring[one], cfg)
    assert single.range_image.rows == 1
    seg, t1 = single.segments, truth[one]
    car_a, car_b = np.unique(seg[t1 == 1]), np.unique(seg[t1 == 2])
    assert car_a.size == 1 and car_b.size == 1 and car_a[0] != car_b[0] and car_a[0] >= 0
