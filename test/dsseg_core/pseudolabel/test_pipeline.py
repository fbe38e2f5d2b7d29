from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from pl_scene import street_frame

from dsseg_core.errors import DatasetError
from dsseg_core.pseudolabel.dataset import PseudoLabelDataset
from dsseg_core.pseudolabel.pipeline import (
    PseudoLabelConfig,
    parse_shard,
    process_frame,
    run_pseudo_label,
)


def _cfg(k: int = 3) -> PseudoLabelConfig:
    cfg = PseudoLabelConfig(min_segment_pixels=10)
    cfg.range_image.width = 512  # the synthetic LiDAR has 512 azimuth steps
    cfg.clustering.k = k
    cfg.clustering.n_init = 2
    return cfg


def _frames(n: int = 4):
    return [street_frame(i, shift=0.5 * i) for i in range(n)]


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob('*')) if p.is_file() and 'work' not in p.parts
            and p.name != 'config.yaml'}


def test_process_frame_street_scene() -> None:
    frame = street_frame()
    res = process_frame(frame, _cfg())
    seg_map = res.seg_maps['front']
    assert seg_map.shape == (120, 320)
    assert res.num_segments >= 4 and res.clusterable.sum() >= 3
    assert not res.clusterable[0]  # ground is never clustered
    # ground covers the lower image centre, the car ahead the centre just below the horizon
    assert (seg_map[100:, 140:180] == 0).mean() > 0.9
    car = seg_map[62:68, 155:165]
    assert (car > 0).all() and len(np.unique(car)) == 1
    assert np.isfinite(res.descriptors[res.clusterable]).all()
    # every point projected into the image is flagged, with its pixel position
    assert res.uv['front'].shape == (res.in_image['front'].sum(), 2)


def test_run_writes_readable_dataset(tmp_path) -> None:
    out = tmp_path / 'ds'
    summary = run_pseudo_label(_frames(3), out, _cfg(), bags=['synthetic.mcap'])
    assert summary.gathered and summary.frames == 3 and summary.k == 3
    for name in ('dataset.yaml', 'config.yaml', 'centroids.npz', 'classes.yaml', 'index.jsonl'):
        assert (out / name).exists(), name
    ds = PseudoLabelDataset(out)
    assert len(ds) == 3 and ds.num_classes == 4 and ds.ignore_index == 255
    assert ds.class_names[0] == 'ground' and ds.class_names[3] == 'class_03'
    s = ds[1]
    assert s.image.shape == (120, 320, 3) and s.image.dtype == np.uint8
    assert s.labels.dtype == np.uint8 and set(np.unique(s.labels)) <= {0, 1, 2, 3, 255}
    assert s.meta['camera'] == 'front' and s.meta['width'] == 320
    pts = s.points()
    assert pts['xyz'].dtype == np.float32 and pts['labels'].dtype == np.int32
    # point labels agree with the label image where the points are visible
    idx = np.flatnonzero(pts['in_image'])
    uv = pts['uv'].astype(int)
    img_lab = s.labels[uv[:, 1], uv[:, 0]].astype(int)
    ok = (pts['labels'][idx] >= 0) & (img_lab != 255)
    assert ok.sum() > 500
    assert (pts['labels'][idx][ok] == img_lab[ok]).mean() > 0.9
    hist = ds.class_histogram()
    assert hist[0] > 0 and (hist[1:] > 0).sum() >= 2
    meta = (out / 'dataset.yaml').read_text()
    assert 'synthetic.mcap' in meta and 'ground_class: 0' in meta


def _interrupt_after_two_frames(out) -> None:
    """A run into ``out`` stopped by Ctrl-C after its second frame."""

    def boom(count: int, key: str) -> None:
        if count == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_pseudo_label(_frames(), out, _cfg(), on_frame=boom)


def test_interrupted_run_resumes_to_identical_output(tmp_path) -> None:
    ref = tmp_path / 'ref'
    run_pseudo_label(_frames(), ref, _cfg())

    out = tmp_path / 'resumed'
    _interrupt_after_two_frames(out)
    assert len(list((out / 'work' / 'frames').glob('*.npz'))) == 2
    assert not (out / 'index.jsonl').exists()
    with pytest.raises(DatasetError, match='--resume'):
        run_pseudo_label(_frames(), out, _cfg())
    summary = run_pseudo_label(_frames(), out, _cfg(), resume=True)
    assert summary.frames_skipped == 2
    a, b = _files(ref), _files(out)
    assert a.keys() == b.keys()
    assert any(k.startswith('labels/') for k in a)
    for key in a:
        assert a[key] == b[key], key


def test_resume_with_other_config_is_refused(tmp_path) -> None:
    out = tmp_path / 'ds'
    run_pseudo_label(_frames(1), out, _cfg())
    cfg = _cfg()
    cfg.masks.guard_px = 5
    with pytest.raises(DatasetError, match='different pass-1 config'):
        run_pseudo_label(_frames(1), out, cfg, resume=True)


def test_shards_then_gather_equal_single_run(tmp_path) -> None:
    ref = tmp_path / 'ref'
    run_pseudo_label(_frames(), ref, _cfg())
    out = tmp_path / 'sharded'
    s0 = run_pseudo_label(_frames(), out, _cfg(), shard=(0, 2))
    assert not s0.gathered and s0.frames == 2
    with pytest.raises(DatasetError, match='not done'):
        run_pseudo_label([], out, _cfg(), shard=(0, 2), gather=True)
    s1 = run_pseudo_label(_frames(), out, _cfg(), shard=(1, 2))
    assert s1.gathered  # last shard gathers automatically
    a, b = _files(ref), _files(out)
    for key in a:
        assert a[key] == b[key], key
    # an explicit gather again gives the same labels
    run_pseudo_label([], out, _cfg(), shard=(0, 2), gather=True)
    assert _files(out) == b


def test_reusing_centroids_labels_new_drive_with_same_classes(tmp_path) -> None:
    ref = tmp_path / 'ref'
    run_pseudo_label(_frames(), ref, _cfg())
    out = tmp_path / 'new'
    run_pseudo_label(_frames(), out, _cfg(k=7), centroids_path=ref / 'centroids.npz')
    a, b = _files(ref), _files(out)
    assert (ref / 'centroids.npz').read_bytes() == (out / 'centroids.npz').read_bytes()
    for key in a:
        if key.startswith('labels/'):
            assert a[key] == b[key]


def test_bad_inputs_are_handled(tmp_path, caplog) -> None:
    frames = _frames(2)
    # no LiDAR point in view: everything behind the camera
    behind = street_frame(5)
    keep = behind.xyz[:, 0] < -1.0
    behind.xyz, behind.intensity, behind.ring = (behind.xyz[keep], behind.intensity[keep],
                                                 behind.ring[keep])
    # zero segments: only ground; and no ring field
    empty = street_frame(6, boxes=[])
    empty.ring = None
    # a frame with no camera at all
    nocam = street_frame(7, cameras=False)
    frames[1].ring = None
    with caplog.at_level(logging.WARNING):
        summary = run_pseudo_label(frames + [behind, empty, nocam], tmp_path / 'ds',
                                   _cfg(k=50))
    assert summary.gathered and summary.k < 50
    assert 'larger than the number of distinct' in caplog.text
    assert 'no LiDAR point projects into the image' in caplog.text
    assert summary.empty_samples == 1  # the frame looking at nothing
    ds = PseudoLabelDataset(tmp_path / 'ds')
    ids = [e['id'] for e in ds.entries]
    assert len(ids) == 3 and not any(i.endswith('000005_front') for i in ids)
    # the ground-only frame still has its ground labelled
    ground_only = ds[ids.index('synthetic_000006_front')]
    assert set(np.unique(ground_only.labels)) == {0, 255}


def test_no_segment_anywhere_gives_clear_error(tmp_path) -> None:
    frames = [street_frame(i, boxes=[]) for i in range(2)]
    with pytest.raises(DatasetError, match='no segment descriptors'):
        run_pseudo_label(frames, tmp_path / 'ds', _cfg())
    with pytest.raises(DatasetError, match='no frame was processed'):
        run_pseudo_label([], tmp_path / 'ds2', _cfg())


def test_parse_shard() -> None:
    assert parse_shard('1/4') == (1, 4) and parse_shard(None) == (0, 1)
    for bad in ('4/4', 'a/b', '1/0'):
        with pytest.raises(Exception, match='shard'):
            parse_shard(bad)


def test_index_rows_follow_the_contract(tmp_path) -> None:
    run_pseudo_label(_frames(2), tmp_path / 'ds', _cfg())
    rows = [json.loads(x) for x in (tmp_path / 'ds' / 'index.jsonl').read_text().splitlines()]
    for r in rows:
        assert {'id', 'image', 'labels', 'points', 'bag', 'stamp_ns', 'camera', 'width',
                'height'} <= r.keys()
        assert r['labels'] == f'labels/{r["id"]}.png'
        assert (tmp_path / 'ds' / r['image']).exists()


def test_source_names_are_unique(tmp_path) -> None:
    from dsseg_core.pseudolabel.pipeline import source_names

    a, b, c = tmp_path / 'x' / 'drive', tmp_path / 'y' / 'drive', tmp_path / 'other'
    names = source_names([str(a), str(b), str(c)])
    assert names[:2] == ['x_drive', 'y_drive'] and names[2].endswith('_other')
    assert len(set(names)) == 3
    assert source_names([str(c)]) == ['other']


def test_empty_scan_gives_an_empty_frame_result() -> None:
    frame = street_frame()
    frame.xyz = np.zeros((0, 3), np.float32)
    frame.intensity = np.zeros(0, np.float32)
    frame.ring = None
    res = process_frame(frame, _cfg())
    assert res.num_segments == 1 and not res.clusterable.any()
    assert (res.seg_maps['front'] < 0).all() and res.descriptors.shape == (1, 25)


def test_resume_ignores_stale_temporaries_and_recomputes_corrupt_caches(tmp_path) -> None:
    ref = tmp_path / 'ref'
    run_pseudo_label(_frames(), ref, _cfg())
    out = tmp_path / 'resumed'
    _interrupt_after_two_frames(out)
    frames = out / 'work' / 'frames'
    caches = sorted(frames.glob('*.npz'))
    assert len(caches) == 2
    data = caches[0].read_bytes()
    # temporaries a killed writer may leave (old and new naming), complete and truncated
    (frames / '.bag_000099.x1y2z3.tmp.npz').write_bytes(data)
    (frames / '.bag_000098.x1y2z3.tmp.npz').write_bytes(data[: len(data) // 3])
    (frames / f'.{caches[0].name}.tmp-0a1b2c3d').write_bytes(data[:100])
    # a cache that is corrupt on disk is recomputed, not fatal
    caches[1].write_bytes(caches[1].read_bytes()[:200])
    summary = run_pseudo_label(_frames(), out, _cfg(), resume=True)
    assert summary.frames_skipped == 1
    a, b = _files(ref), _files(out)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == b[key], key
    assert len((out / 'index.jsonl').read_text().splitlines()) == 4


def test_gather_on_a_corrupt_cache_names_it(tmp_path) -> None:
    out = tmp_path / 'ds'
    run_pseudo_label(_frames(2), out, _cfg(), gather=False)
    cache = sorted((out / 'work' / 'frames').glob('*.npz'))[0]
    cache.write_bytes(b'PK\x03\x04 not really a zip')
    with pytest.raises(DatasetError, match=f'{cache.name}: unreadable frame cache'):
        run_pseudo_label([], out, _cfg(), gather=True)


def test_gather_detects_a_damaged_point_array(tmp_path) -> None:
    """The point arrays are copied into the points files without decoding, still checked."""
    out = tmp_path / 'ds'
    run_pseudo_label(_frames(2), out, _cfg(), gather=False)
    cache = sorted((out / 'work' / 'frames').glob('*.npz'))[0]
    data = bytearray(cache.read_bytes())
    at = data.index(b'xyz.npy') + 7 + 20 + 128 + 100  # name, zip64 extra, .npy header
    data[at] ^= 0xFF
    cache.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=f'{cache.name}: unreadable frame cache'):
        run_pseudo_label([], out, _cfg(), gather=True)


def test_failed_inputs_leave_no_run_behind(tmp_path) -> None:
    out = tmp_path / 'ds'

    def broken_bag():
        raise DatasetError('bag.mcap: truncated')
        yield  # pragma: no cover

    with pytest.raises(DatasetError, match='truncated'):
        run_pseudo_label(broken_bag(), out, _cfg())
    with pytest.raises(DatasetError, match='centroids file not found'):
        run_pseudo_label(_frames(1), out, _cfg(), centroids_path=tmp_path / 'none.npz')
    assert not out.exists()
    # a run record from a run that cached no frame does not block a fresh run
    (out / 'work').mkdir(parents=True)
    (out / 'work' / 'pass1.json').write_text('{"config_hash": "other"}')
    summary = run_pseudo_label(_frames(2), out, _cfg())
    assert summary.gathered and summary.frames == 2
    # ... but a run with cached frames still needs --resume
    with pytest.raises(DatasetError, match='--resume'):
        run_pseudo_label(_frames(2), tmp_path / 'ds', _cfg())


def test_kernels_and_numpy_path_give_the_same_frames_and_dataset(monkeypatch, tmp_path,
                                                                   sample_bag) -> None:
    """Compiled kernels (DSSEG_JIT=1) against the numpy path (DSSEG_JIT=0) on 3 frames of
    the sample drive: same segment maps, pixel counts, geometric descriptors bit for bit,
    colour descriptors to float32 rounding (bit for bit where numpy's arithmetic is the one
    the kernel reproduces); the written datasets hold the same label pixels."""
    pytest.importorskip('numba')
    from dsseg_core.frames import FramesConfig
    from dsseg_core.pseudolabel.pipeline import iter_bag_frames

    def frames():
        return [f for i, f in enumerate(iter_bag_frames(sample_bag,
                                                        FramesConfig(max_frames=9)))
                if i % 4 == 0]

    cfg = PseudoLabelConfig()
    cfg.clustering.k = 4
    cfg.clustering.n_init = 1
    results, datasets = {}, {}
    for mode in ('1', '0'):
        monkeypatch.setenv('DSSEG_JIT', mode)
        results[mode] = [process_frame(f, cfg) for f in frames()]
        datasets[mode] = tmp_path / f'jit{mode}'
        run_pseudo_label(frames(), datasets[mode], cfg)
    geo = slice(0, 16)
    for a, b in zip(results['1'], results['0'], strict=True):
        np.testing.assert_array_equal(a.segment, b.segment)
        for cam in a.seg_maps:
            np.testing.assert_array_equal(a.seg_maps[cam], b.seg_maps[cam])
            np.testing.assert_array_equal(a.uv[cam], b.uv[cam])
            np.testing.assert_array_equal(a.in_image[cam], b.in_image[cam])
        np.testing.assert_array_equal(a.pixels, b.pixels)
        np.testing.assert_array_equal(a.clusterable, b.clusterable)
        np.testing.assert_array_equal(a.descriptors[:, geo], b.descriptors[:, geo])
        np.testing.assert_allclose(a.descriptors[:, 16:], b.descriptors[:, 16:], rtol=1e-3,
                                   atol=1e-3)
    la, lb = (PseudoLabelDataset(datasets[m]) for m in ('1', '0'))
    assert len(la) == len(lb) == 3
    same = [np.array_equal(la[i].labels, lb[i].labels) for i in range(3)]
    images = [np.array_equal(la[i].image, lb[i].image) for i in range(3)]
    assert all(images)
    identical = all(np.array_equal(a.descriptors, b.descriptors, equal_nan=True)
                    for a, b in zip(results['1'], results['0'], strict=True))
    if identical:  # same descriptors -> same k-means -> same labels
        assert all(same)
