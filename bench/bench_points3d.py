"""Benchmarks and real-data experiments of dsseg_core.points3d (issue #6).

    OMP_NUM_THREADS=1 python bench/bench_points3d.py            # timings (default: speed)
    OMP_NUM_THREADS=1 python bench/bench_points3d.py speed --no-student   # without the student
    OMP_NUM_THREADS=1 python bench/bench_points3d.py leak       # boundary leak, SemanticKITTI
    OMP_NUM_THREADS=1 python bench/bench_points3d.py student    # 3D student on SemanticKITTI

``speed``: label transfer + smoothing per ~120k-point scan (KITTI raw frame, label image = 12
bands, geometric smoothing) against the anchor *transfer + scipy cKDTree kNN vote over all
points* measured in the same run; smoothing alone on the SemanticKITTI scan (124,668 points);
3D student inference per scan (CPU; ``--no-student`` skips it). Medians of ``--repeat`` runs,
one thread. ``DSSEG_JIT=0`` times the numpy reference paths instead of the numba kernels.

``leak``: boundary leak of noisy labels, kNN vote and geometric smoothing on the SemanticKITTI
scan (definition in dsseg_core.points3d.smoothing.boundary_leak and docs/results/points3d.md).

``student``: pseudo-labels of the SemanticKITTI scan from the LiDAR-only proposals + geometric
clustering pipeline (k=19), the student trained on them, predictions saved as .npy for
``dsseg eval-points --pred``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault('OMP_NUM_THREADS', '1')

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get('DSSEG_SHARED_DATA', ROOT.parent / 'shared' / 'data'))
KITTI = DATA / 'kitti_raw_2011_09_26'
SK = DATA / 'semantickitti_seq00'


def _median_ms(fn, repeat: int) -> tuple[float, float]:  # noqa: ANN001
    """Median wall-clock and median CPU (process) time in ms. On a shared machine the CPU
    time of this single-threaded process is the better estimate of an idle core's wall time."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
    return statistics.median(wall), statistics.median(cpu)


def _band_image(h: int, w: int) -> np.ndarray:
    u = np.arange(w)[None, :].repeat(h, 0)
    v = np.arange(h)[:, None].repeat(w, 1)
    return ((u * 6) // w + 6 * (v > h // 2)).astype(np.uint8)


def speed(repeat: int, student: bool = True) -> None:
    from dsseg_core.calibration import load_kitti_raw
    from dsseg_core.points3d.label_points import LabelPointsConfig, label_scan
    from dsseg_core.points3d.smoothing import SmoothingConfig, knn_vote, smooth_labels
    from dsseg_core.points3d.transfer import CameraView, transfer_labels
    from dsseg_core.semantickitti import load_scan

    calib = load_kitti_raw(KITTI)
    pts = np.fromfile(KITTI / 'velodyne_points' / 'data' / '0000000000.bin',
                      np.float32).reshape(-1, 4)
    xyz = np.ascontiguousarray(pts[:, :3])
    img = _band_image(calib.camera.height, calib.camera.width)
    conf = np.ones(img.shape, np.float32)
    views = [CameraView(calib, img, conf)]
    print(f'KITTI raw frame 0: {len(xyz)} points, one camera, 12-class label image')

    def anchor() -> None:
        tr = transfer_labels(xyz, views, min_depth=1.0)
        knn_vote(xyz, tr.labels, tr.confidence, k=10, num_classes=12)

    t_anchor = _median_ms(anchor, repeat)
    t_transfer = _median_ms(lambda: transfer_labels(xyz, views, min_depth=1.0), repeat)
    rows = [('anchor: transfer + cKDTree kNN vote (k=10, all points)', t_anchor)]
    rows.append(('transfer only', t_transfer))
    for name, cfg in [
        ('transfer + geometric (defaults, RANSAC ground)',
         LabelPointsConfig(ground_method='ransac')),
        ('transfer + geometric (defaults, no ground)',
         LabelPointsConfig(ground_method='none')),
        ('transfer + geometric (voxel 0.4, k 6, RANSAC ground)',
         LabelPointsConfig(ground_method='ransac', smoothing=SmoothingConfig(
             voxel_size=0.4, k=6))),
        ('transfer + geometric (defaults, segment_ground)',
         LabelPointsConfig(ground_method='segment_ground')),
    ]:
        rows.append((name, _median_ms(lambda c=cfg: label_scan(xyz, views, c, 12), repeat)))
    sk_xyz, _ = load_scan(SK / 'velodyne' / '000000.bin')
    lab = np.random.default_rng(0).integers(-1, 19, len(sk_xyz)).astype(np.int32)
    rows.append((f'SemanticKITTI {len(sk_xyz)} pts: cKDTree kNN vote',
                 _median_ms(lambda: knn_vote(sk_xyz, lab, k=10, num_classes=19), repeat)))
    rows.append((f'SemanticKITTI {len(sk_xyz)} pts: geometric smoothing',
                 _median_ms(lambda: smooth_labels(sk_xyz, lab, num_classes=19), repeat)))

    for width in (8, 32) if student else ():
        import torch

        from dsseg_core.points3d.student import PointPredictor, StudentConfig, build_student

        torch.set_num_threads(1)
        scfg = StudentConfig(num_classes=20, width=width)
        pred = PointPredictor(build_student(scfg), scfg)
        rows.append((f'3D student width {width} inference (64x2048, CPU 1 thread)',
                     _median_ms(lambda p=pred: p.predict(xyz, pts[:, 3]), max(1, repeat // 2))))
    print(f'{"case":62s} {"wall ms":>9s} {"cpu ms":>9s} {"x anchor (cpu)":>15s}')
    for name, (wall, cpu) in rows:
        print(f'{name:62s} {wall:9.1f} {cpu:9.1f} {cpu / t_anchor[1]:15.3f}')


def _noisy_labels(xyz: np.ndarray, gt: np.ndarray, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Simulated transferred labels (see docs/results/points3d.md).

    1. projection bleeding: a point whose range-image neighbour (+-1 row, +-3 columns) is a
       nearer point of another class takes that class with probability 0.7 (what calibration
       / time-offset / blurry mask edges do to labels transferred from an image);
    2. 5% random flips (2D segmentation errors);
    3. 10% unknown (points no camera labels).
    """
    rng = np.random.default_rng(seed)
    n = len(xyz)
    r = np.linalg.norm(xyz, axis=1)
    h, w = 64, 2048
    col = ((np.arctan2(xyz[:, 1], xyz[:, 0]) / np.pi + 1) / 2 * w).astype(int) % w
    el = np.arcsin(xyz[:, 2] / np.maximum(r, 1e-6))
    up, down = np.radians(3.0), np.radians(-25.0)
    row = np.clip(((up - el) / (up - down) * h).astype(int), 0, h - 1)
    img = np.full((h, w), -1)
    order = np.argsort(-r)
    img[row[order], col[order]] = order  # nearest point wins the pixel
    cand = np.full(n, -1)
    for dr in (-1, 0, 1):
        for dc in (-3, -2, -1, 1, 2, 3):
            j = img[np.clip(row + dr, 0, h - 1), (col + dc) % w]
            ok = (cand < 0) & (j >= 0)
            jj = np.where(ok, j, 0)
            ok &= (gt[jj] >= 0) & (gt[jj] != gt) & (r[jj] < r)
            cand[ok] = jj[ok]
    noisy = gt.copy()
    bleed = (cand >= 0) & (rng.random(n) < 0.7)
    noisy[bleed] = gt[cand[bleed]]
    flip = rng.random(n) < 0.05
    noisy[flip] = rng.integers(0, 19, flip.sum())
    drop = rng.random(n) < 0.1
    noisy[drop] = -1
    return noisy, {'bleed': int(bleed.sum()), 'flip': int(flip.sum()), 'drop': int(drop.sum())}


def leak() -> None:
    from dsseg_core.points3d.smoothing import (
        SmoothingConfig,
        boundary_leak,
        knn_vote,
        smooth_labels,
    )
    from dsseg_core.pseudolabel.ground import segment_ground
    from dsseg_core.semantickitti import load_labels, load_scan

    xyz, _ = load_scan(SK / 'velodyne' / '000000.bin')
    gt = load_labels(SK / 'labels' / '000000.label', len(xyz)).train_ids
    noisy, counts = _noisy_labels(xyz, gt)
    print(f'SemanticKITTI seq 00 scan 0: {len(xyz)} points, {int((gt >= 0).sum())} with a GT '
          f'class; noise: {counts}')
    ground_ids = [8, 9, 10, 11, 16]  # road, parking, sidewalk, other-ground, terrain
    gmask = segment_ground(xyz)
    rows = [('noisy input (simulated transfer)', noisy)]
    for k in (6, 10):
        rows.append((f'kNN vote k={k} (all points)', knn_vote(xyz, noisy, k=k,
                                                               num_classes=19)[0]))
    variants = [
        ('geometric (defaults: voxel 0.3, k 8, keep 0.3)', SmoothingConfig(ground='none')),
        ('geometric, keep_margin 0', SmoothingConfig(ground='none', keep_margin=0.0)),
        ('geometric, voxel 0.15', SmoothingConfig(ground='none', voxel_size=0.15)),
        ('geometric, no geometry gate (ablation)', SmoothingConfig(
            ground='none', linear_cos=0.0, planar_cos=1.0)),
        ('geometric + segment_ground (ground classes only)', SmoothingConfig(
            ground='given', ground_classes=ground_ids, ground_default=None)),
    ]
    for name, cfg in variants:
        mask = gmask if cfg.ground == 'given' else None
        rows.append((name, smooth_labels(xyz, noisy, cfg=cfg, ground_mask=mask,
                                         num_classes=19).labels))
    print(f'{"labels":52s} {"leak":>7s} {"obj.lk":>7s} {"induced":>7s} {"repair":>7s} '
          f'{"int.dis":>7s} {"acc":>7s} {"bnd.acc":>7s} {"cov":>6s}')
    from scipy.spatial import cKDTree

    _, nb = cKDTree(xyz).query(xyz, k=9, distance_upper_bound=0.5)
    nb = nb[:, 1:]
    ok = nb < len(xyz)
    nbc = np.where(ok, gt[np.where(ok, nb, 0)], -1)
    # boundary points: points with a kNN edge (<= 0.5 m) to a point of another GT class
    bpts = (gt >= 0) & ((nbc >= 0) & (nbc != gt[:, None])).any(axis=1)
    ei = np.broadcast_to(np.arange(len(xyz))[:, None], nb.shape)[ok]
    ej = nb[ok]
    keep = (ei < ej) & (gt[ei] >= 0) & (gt[ej] >= 0) & (gt[ei] != gt[ej])
    bi, bj = ei[keep], ej[keep]  # boundary edges
    flat = np.isin(gt[bi], ground_ids) & np.isin(gt[bj], ground_ids)  # e.g. road|sidewalk
    before = noisy[bi] == noisy[bj]
    for name, lab in rows:
        s = boundary_leak(xyz, gt, lab)
        bl = bpts & (lab >= 0)
        bacc = float((lab[bl] == gt[bl]).mean())
        both = (noisy[bi] >= 0) & (noisy[bj] >= 0) & (lab[bi] >= 0) & (lab[bj] >= 0)
        after = lab[bi] == lab[bj]
        induced = (~before & after & both).sum() / max((~before & both).sum(), 1)
        repaired = (before & ~after & both).sum() / max((before & both).sum(), 1)
        obj = ~flat & (lab[bi] >= 0) & (lab[bj] >= 0)
        obj_leak = float(after[obj].mean())
        print(f'{name:52s} {s.leak_rate:7.4f} {obj_leak:7.4f} {induced:7.4f} {repaired:7.4f} '
              f'{s.interior_disagreement:7.4f} {s.accuracy:7.4f} {bacc:7.4f} {s.coverage:6.3f}')
    s = boundary_leak(xyz, gt, gt)
    print(f'boundary edges: {s.boundary_edges} ({int((~flat).sum())} object boundaries, '
          f'{int(flat.sum())} between two ground classes), interior edges: {s.interior_edges}, '
          f'boundary points: {int(bpts.sum())}')


def student(steps: int, out: Path) -> None:
    import torch

    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1')))
    import json

    from dsseg_core.points3d.smoothing import SmoothingConfig, smooth_labels
    from dsseg_core.points3d.student import load_student
    from dsseg_core.points3d.train3d import Train3dConfig, train_student
    from dsseg_core.pseudolabel.point_eval import pseudo_label_scan
    from dsseg_core.semantickitti import load_scan

    xyz, inten = load_scan(SK / 'velodyne' / '000000.bin')
    out.mkdir(parents=True, exist_ok=True)
    pseudo = pseudo_label_scan(xyz, inten, None, k=19, seed=0)
    np.save(out / 'pseudo.npy', pseudo)
    sm = smooth_labels(xyz, pseudo, cfg=SmoothingConfig(ground='none', keep_margin=0.3),
                       num_classes=20).labels
    np.save(out / 'pseudo_smoothed.npy', sm)
    print(f'pseudo-labels: {int((pseudo >= 0).sum())} of {len(xyz)} points labelled; after '
          f'smoothing {int((sm >= 0).sum())}')
    ds = out / 'dataset'
    (ds / 'points').mkdir(parents=True, exist_ok=True)
    np.savez(ds / 'points' / '000000.npz', xyz=xyz, intensity=inten, labels=pseudo)
    (ds / 'index.jsonl').write_text(json.dumps({'id': '000000',
                                                'points': 'points/000000.npz'}) + '\n')
    (ds / 'dataset.yaml').write_text('num_classes: 20\n')
    run = out / 'run'
    cfg = Train3dConfig(student={'width': 16}, max_steps=steps, batch_size=2, crop_width=512,
                        lr=5e-3, device='cpu', checkpoint_every=max(steps // 4, 1))
    t = time.perf_counter()
    res = train_student(ds, run, cfg, resume=(run / 'checkpoints').is_dir(), progress=True)
    print(f'trained {res.steps} steps in {time.perf_counter() - t:.0f} s')
    pred = load_student(run)
    labels, _ = pred.predict(xyz, inten)
    np.save(out / 'student.npy', labels.astype(np.int32))
    known = pseudo >= 0
    print(f'student vs its training pseudo-labels: {(labels[known] == pseudo[known]).mean():.4f}'
          f' point accuracy; predictions: {out / "student.npy"}')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('mode', nargs='?', default='speed', choices=['speed', 'leak', 'student'])
    parser.add_argument('--repeat', type=int, default=5)
    parser.add_argument('--steps', type=int, default=300)
    parser.add_argument('--out', type=Path, default=Path('/tmp/dsseg_points3d_student'))
    parser.add_argument('--no-student', action='store_true',
                        help='speed: skip the (slow) 3D student inference rows')
    args = parser.parse_args()
    if not DATA.exists():
        print(f'{DATA} missing: the benchmarks need ../shared/data')
        return 1
    if args.mode == 'speed':
        speed(args.repeat, student=not args.no_student)
    elif args.mode == 'leak':
        leak()
    else:
        student(args.steps, args.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
