"""Bag → frames throughput: ``iter_frames`` vs a plain rosbags loop over the same messages.

Anchors measured in the same run, on the same bag:

* ``plain_deser``: ``AnyReader.messages`` + ``deserialize`` of every image and cloud message
  (no pixel/point decoding) — the floor any reader pays;
* ``plain_decode``: the same loop plus the same decoders iter_frames uses (JPEG/raw image →
  RGB array, PointCloud2 → xyz/intensity arrays): the same output as iter_frames, without
  pairing, calibration or the stamp pre-pass.

``iter_frames`` reads header stamps first (one pass over the raw bytes, which it keeps in a
bounded cache), pairs, then decodes only the selected messages. Ratios > 1 mean iter_frames
is faster than the anchor. Runs are interleaved and the best of ``--repeat`` is kept; CPU
time (process_time) is printed next to wall time because wall time is noisy on a shared
machine.

Usage: ``python bench/bench_frames.py [--bag BAG] [--repeat 5]``. Without ``--bag`` it uses the
shipped sample (JPEG images) and, when ../shared/data is present, a raw-image bag converted
from the KITTI frames into a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault('OMP_NUM_THREADS', '1')
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dsseg_core.frames import FramesConfig, iter_frames  # noqa: E402


def plain_loop(bag: Path, decode: bool) -> int:
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    from dsseg_core.msgs.image import compressed_to_numpy, image_to_rgb
    from dsseg_core.msgs.pointcloud import cloud_to_points

    wanted = {'sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage',
              'sensor_msgs/msg/PointCloud2'}
    n = 0
    with AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
        conns = [c for c in reader.connections if c.msgtype in wanted]
        for conn, _t, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            if decode:
                if conn.msgtype == 'sensor_msgs/msg/PointCloud2':
                    cloud_to_points(msg)
                elif conn.msgtype == 'sensor_msgs/msg/CompressedImage':
                    compressed_to_numpy(msg)
                else:
                    image_to_rgb(msg)
            n += 1
    return n


def frames_loop(bag: Path, cache_mb: float = 256.0) -> int:
    n = 0
    for frame in iter_frames(bag, FramesConfig(read_cache_mb=cache_mb)):
        n += 1 + len(frame.cameras)
    return n


def measure(fns: dict, repeat: int) -> dict[str, tuple[float, float, int]]:
    """Interleaved runs (A B C A B C ...): best wall time and best CPU time of each."""
    best = {k: [float('inf'), float('inf'), 0] for k in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            count = fn()
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            entry = best[name]
            entry[0], entry[1], entry[2] = min(entry[0], wall), min(entry[1], cpu), count
    return {k: (v[0], v[1], v[2]) for k, v in best.items()}


def bench_bag(bag: Path, label: str, repeat: int) -> None:
    size_mb = sum(p.stat().st_size for p in bag.rglob('*') if p.is_file()) / 1e6
    res = measure({
        'A': lambda: plain_loop(bag, decode=False),
        'B': lambda: plain_loop(bag, decode=True),
        'F': lambda: frames_loop(bag),
        'F0': lambda: frames_loop(bag, cache_mb=0.0),
    }, repeat)
    counts = {v[2] for v in res.values()}
    assert len(counts) == 1, res
    n = counts.pop()
    print(f'\n{label}: {bag} ({size_mb:.1f} MB, {n} image+cloud messages), best of {repeat}')
    names = {'A': 'plain rosbags read+deserialize (anchor A)',
             'B': 'plain read+deserialize+decode (anchor B)',
             'F': 'iter_frames (stamps, pair, decode)',
             'F0': 'iter_frames, read_cache_mb=0 (reads twice)'}
    for key, text in names.items():
        wall, cpu, _ = res[key]
        print(f'  {text:44s} {n / wall:7.1f} msg/s wall  {n / cpu:7.1f} msg/s cpu')
    for key in ('B', 'A'):
        for run in ('F', 'F0'):
            print(f'  ratio {names[run].split(" (")[0]:32s} / anchor {key}: '
                  f'wall {res[key][0] / res[run][0]:.2f}x, cpu {res[key][1] / res[run][1]:.2f}x')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--bag', type=Path, help='bag to measure (default: see module doc)')
    parser.add_argument('--repeat', type=int, default=5)
    args = parser.parse_args()
    if args.bag:
        bench_bag(args.bag, 'bag', args.repeat)
        return 0
    bench_bag(REPO / 'data' / 'sample_kitti', 'sample bag (JPEG CompressedImage, zstd mcap)',
              args.repeat)
    kitti = REPO.parent / 'shared' / 'data' / 'kitti_raw_2011_09_26'
    if kitti.exists():
        from dsseg_core.convert.kitti_raw import convert_kitti_raw

        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / 'kitti_raw_images'
            convert_kitti_raw(kitti, out, image_format='raw', max_frames=20)
            bench_bag(out, 'KITTI 20 frames (raw rgb8 Image, zstd mcap)', args.repeat)
    return 0


if __name__ == '__main__':
    sys.exit(main())
