"""Benchmark of the dsseg nodes (issue #5). Run: ``python bench/bench_nodes.py [--quick]``.

1. Cloud labelling without DDS: PointCloud2 (120k points) + 1242x375 mono8 mask + 32FC1
   confidence -> labelled PointCloud2, the cloud labeller's worker path (decode, project, vote,
   pack with ``LabelledCloud.to_msg`` into a reused buffer, as the node does; ``pack_generic``
   = the generic ``cloud_msg(fields())`` for comparison). Goal <= 5 ms. Anchor: one copy of
   the cloud's bytes (memcpy) in the same run. On the KITTI frame also the 3D student
   (``fill_unknown`` / ``replace``) with a randomly initialised student of the default size
   (``StudentConfig(num_classes=20)``, 2048-column range image); anchor: cameras only.
2. Image -> mask transport overhead over DDS with the shipped Fast DDS profile, model
   excluded: this process publishes 1242x375 rgb8 images, a segmenter node in *another
   process* with a zero-cost predictor publishes mask + overlay + confidence, this process
   times publish -> mask received. p50/p99, goal p99 <= 15 ms. Anchor: the same node
   in-process (no inter-process transport).
3. End-to-end frames/s on CPU with a tiny random segmenter (the small test model) on the
   shipped sample bag: segmenter processing time at full resolution (model default sliding
   window) and with short_side=128, and the labelled clouds per second of a replay.

Sets ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, its own ROS_DOMAIN_ID and the Fast DDS profile
before rclpy is imported.
"""

from __future__ import annotations

import argparse
import array
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.pop('ROS_STATIC_PEERS', None)
os.environ.setdefault('ROS_DOMAIN_ID', str(40 + os.getpid() % 50))
os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', str(ROOT / 'config' / 'fastdds_shm.xml'))
os.environ.setdefault('OMP_NUM_THREADS', '1')
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

W, H = 1242, 375


def pct(values_ms: list[float]) -> tuple[float, float]:
    v = np.asarray(values_ms)
    return float(np.percentile(v, 50)), float(np.percentile(v, 99))


def kitti_like_scene(n: int = 120_000, seed: int = 0):
    """120k points around the car (~15% in the camera's view, like KITTI) + KITTI camera."""
    from dsseg_core.calibration import CameraCalibration, CameraModel

    rng = np.random.default_rng(seed)
    az = rng.uniform(-np.pi, np.pi, n)
    r = rng.uniform(3.0, 60.0, n)
    xyz = np.stack([r * np.cos(az), r * np.sin(az), rng.uniform(-1.8, 2.0, n)], 1)
    k = np.array([[721.5, 0, 609.6], [0, 721.5, 172.9], [0, 0, 1.0]])
    t_cam_lidar = np.array([[0, -1, 0, 0], [0, 0, -1, -0.08], [1, 0, 0, -0.27], [0, 0, 0, 1.0]])
    calib = CameraCalibration(CameraModel(W, H, k, frame_id='cam', name='cam'), t_cam_lidar)
    mask = rng.integers(0, 20, (H, W), dtype=np.uint8)
    conf = rng.uniform(0, 1, (H, W)).astype(np.float32)
    return xyz.astype(np.float32), rng.uniform(0, 1, n).astype(np.float32), calib, mask, conf


def kitti_scene():
    """KITTI raw frame 0 of ../shared/data (real cloud + calibration), or None."""
    from dsseg_core.calibration import load_kitti_raw

    drive = ROOT.parent / 'shared' / 'data' / 'kitti_raw_2011_09_26'
    if not drive.is_dir():
        return None
    pts = np.fromfile(drive / 'velodyne_points' / 'data' / '0000000000.bin',
                      np.float32).reshape(-1, 4)
    calib = load_kitti_raw(drive)
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 20, (H, W), dtype=np.uint8)
    conf = rng.uniform(0, 1, (H, W)).astype(np.float32)
    return np.ascontiguousarray(pts[:, :3]), pts[:, 3].copy(), calib, mask, conf


def bench_labelling(repeats: int) -> None:
    _bench_labelling(repeats, kitti_like_scene(), '120k synthetic points around the car')
    scene = kitti_scene()
    if scene is not None:
        _bench_labelling(repeats, scene, 'KITTI raw frame 0 (real cloud + calibration)')
        _bench_student(max(3, repeats // 4), scene)


def _bench_student(repeats: int, scene) -> None:
    """fill_unknown with a default-size random student on the KITTI frame (CPU)."""
    import torch

    from dsseg_core.points3d.student import PointPredictor, StudentConfig, build_student
    from dsseg_core.points3d.transfer import CameraView
    from dsseg_ros.cloud_labeller_node import label_cloud

    torch.manual_seed(0)
    torch.set_num_threads(int(os.environ['OMP_NUM_THREADS']))
    cfg = StudentConfig(num_classes=20)
    student = PointPredictor(build_student(cfg), cfg)
    xyz, intensity, calib, mask, conf = scene
    view = CameraView(calib, mask, conf)
    times: dict[str, list[float]] = {'cameras only': [], 'fill_unknown': [], 'replace': []}
    label_cloud(xyz, intensity, [view], student=student)  # warm-up
    for _ in range(repeats):
        for key, kwargs in (('cameras only', {}), ('fill_unknown', {'student': student}),
                            ('replace', {'student': student, 'student_mode': 'replace'})):
            t0 = time.perf_counter()
            label_cloud(xyz, intensity, [view], **kwargs)
            times[key].append((time.perf_counter() - t0) * 1e3)
    anchor = pct(times['cameras only'])[0]
    print(f'[labelling] KITTI frame 0 + random 3D student (width {cfg.width}, depth '
          f'{cfg.depth}, {cfg.range_image.width} columns), CPU, torch threads '
          f'{torch.get_num_threads()}, {repeats} runs; anchor = cameras only')
    for key, values in times.items():
        p50, p99 = pct(values)
        print(f'  {key:14s} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  ({p50 / anchor:6.1f}x anchor)')


def _bench_labelling(repeats: int, scene, label: str) -> None:
    from std_msgs.msg import Header

    from dsseg_core.points3d.transfer import CameraView
    from dsseg_ros.cloud_labeller_node import label_cloud
    from dsseg_ros.conversions import (
        cloud_arrays,
        cloud_msg,
        decode_confidence,
        decode_mask,
        image_msg,
    )

    xyz, intensity, calib, mask, conf = scene
    hdr = Header(frame_id='velo')
    cloud = cloud_msg({'xyz': xyz, 'intensity': intensity}, hdr)
    mask_msg = image_msg(mask, 'mono8', hdr)
    conf_msg = image_msg(conf, '32FC1', hdr)
    raw = bytes(cloud.data)
    out_buffer = array.array('B')  # the node's reused ~/labelled_cloud buffer
    stages: dict[str, list[float]] = {k: [] for k in ('anchor_memcpy', 'decode', 'label',
                                                      'pack', 'total', 'pack_generic')}
    # Warm-up (not timed): the first call of the numba kernels in a process loads them from
    # the on-disk cache (compiles them on a fresh install), ~1 s once per process.
    warm = label_cloud(cloud_arrays(cloud).xyz, intensity, [CameraView(
        calib, decode_mask(mask_msg), decode_confidence(conf_msg))])
    warm.to_msg(hdr, 20, out_buffer)
    for _ in range(repeats):
        t0 = time.perf_counter()
        bytearray(raw)
        t1 = time.perf_counter()
        arrays = cloud_arrays(cloud)
        view = CameraView(calib, decode_mask(mask_msg), decode_confidence(conf_msg))
        t2 = time.perf_counter()
        labelled = label_cloud(arrays.xyz, arrays.intensity, [view])
        t3 = time.perf_counter()
        labelled.to_msg(hdr, 20, out_buffer)
        t4 = time.perf_counter()
        cloud_msg(labelled.fields(20), hdr)
        t5 = time.perf_counter()
        for key, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t1, t5 - t4),
                           strict=True):
            stages[key].append(dt * 1e3)
    anchor = pct(stages['anchor_memcpy'])[0]
    seen = int((labelled.labels >= 0).sum())
    print(f'[labelling] {label}: {len(xyz)} points ({seen} seen by the camera) + 1242x375 '
          f'mask, {repeats} runs, no DDS')
    for key, values in stages.items():
        p50, p99 = pct(values)
        print(f'  {key:14s} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  min {min(values):7.2f} ms  '
              f'({p50 / anchor:6.1f}x anchor)')
    print(f'  goal total <= 5 ms: {"met" if pct(stages["total"])[0] <= 5 else "NOT met"} (p50)')


class NullPredictor:
    """A zero-cost model: the same ready-made outputs for every image of a size."""

    num_classes = 20
    class_names = [f'c{i}' for i in range(20)]

    def __init__(self) -> None:
        self._out: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def predict(self, rgb):
        size = rgb.shape[:2]
        if size not in self._out:
            self._out[size] = (np.zeros(size, np.uint8), np.ones(size, np.float32))
        return self._out[size]


def serve_segmenter(ns: str) -> None:
    """Child process: a segmenter with a zero-cost model under namespace ``ns``."""
    from dsseg_ros.run import spin_nodes
    from dsseg_ros.segmenter_node import SegmenterNode

    def factory(ctx):
        return [SegmenterNode('segmenter', namespace=ns, context=ctx, predictor=NullPredictor(),
                              config={'image_topic': f'{ns}/image',
                                      'require_camera_info': False, 'queue_size': 1})]

    sys.exit(spin_nodes(factory, [], name='bench-segmenter'))


def serve_echo(ns: str) -> None:
    """Child process: the DDS floor. A bare node that answers each image on ``ns/image`` with
    a ready-made serialized mask carrying the image's stamp (same two hops and sizes as the
    segmenter, no decoding, no model, no worker thread)."""
    import struct
    from types import SimpleNamespace

    import rclpy
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    from dsseg_core.msgs.cdr import image_cdr
    from dsseg_ros.node_base import SENSOR_QOS

    rclpy.init()
    node = Node('echo', namespace=ns)
    mask = np.zeros((H, W), np.uint8)
    pub = node.create_publisher(Image, f'{ns}/segmenter/mask', 5)

    def on_image(raw: bytes) -> None:
        sec, nanosec = struct.unpack_from('<iI', raw, 4)
        header = SimpleNamespace(stamp=SimpleNamespace(sec=sec, nanosec=nanosec),
                                 frame_id='cam')
        pub.publish(image_cdr(mask, 'mono8', header))

    node.create_subscription(Image, f'{ns}/image', on_image, SENSOR_QOS, raw=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, Exception):  # noqa: BLE001 - SIGINT from the parent
        pass
    finally:
        rclpy.try_shutdown()


def _time_transport(ctx, ns: str, frames: int, period: float, all_outputs: bool = False
                    ) -> list[float]:
    import rclpy  # noqa: F401
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from dsseg_ros.conversions import image_msg, stamp_ns

    node = Node(f'bench_probe_{os.getpid()}', context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    sent: dict[int, float] = {}
    lat: list[float] = []

    def on_mask(msg):
        t = sent.pop(stamp_ns(msg.header), None)
        if t is not None:
            lat.append((time.perf_counter() - t) * 1e3)

    node.create_subscription(Image, f'{ns}/segmenter/mask', on_mask, 10)
    if all_outputs:  # like RViz showing the overlay and a node using the confidence
        for name in ('overlay', 'confidence'):
            node.create_subscription(Image, f'{ns}/segmenter/{name}', lambda _m: None, 10)
    pub = node.create_publisher(Image, f'{ns}/image', 10)
    rgb = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    deadline = time.monotonic() + 60
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        ex.spin_once(timeout_sec=0.05)
    for _ in range(20):  # let discovery settle
        ex.spin_once(timeout_sec=0.02)
    for i in range(frames + 5):
        msg = image_msg(rgb, 'rgb8', Header(frame_id='cam'))
        msg.header.stamp.sec, msg.header.stamp.nanosec = 1, i
        sent[1_000_000_000 + i] = time.perf_counter()
        pub.publish(msg)
        t_next = time.monotonic() + period
        while time.monotonic() < t_next:
            ex.spin_once(timeout_sec=max(0.0, t_next - time.monotonic()))
    end = time.monotonic() + 2
    while time.monotonic() < end and sent:
        ex.spin_once(timeout_sec=0.05)
    ex.shutdown()
    node.destroy_node()
    return lat[5:]  # the first frames include connection set-up


def bench_transport(frames: int) -> None:
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    from dsseg_ros.segmenter_node import SegmenterNode

    period = 0.1  # 10 Hz camera
    # In-process anchor: the same node in this process.
    ctx = Context()
    rclpy.init(context=ctx)
    ns = f'/bench_in_{os.getpid()}'
    seg = SegmenterNode('segmenter', namespace=ns, context=ctx, predictor=NullPredictor(),
                        config={'image_topic': f'{ns}/image', 'require_camera_info': False})
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(seg)
    import threading

    spin = threading.Thread(target=ex.spin, daemon=True)
    spin.start()
    lat_in = _time_transport(ctx, ns, frames, period)
    ex.shutdown()
    seg.close()
    rclpy.try_shutdown(context=ctx)

    def across(flag: str, tag: str, all_outputs: bool = False) -> list[float]:
        ns = f'/bench_{tag}_{os.getpid()}'
        child = subprocess.Popen([sys.executable, __file__, flag, ns],
                                 stderr=subprocess.DEVNULL)
        ctx = Context()
        rclpy.init(context=ctx)
        try:
            return _time_transport(ctx, ns, frames, period, all_outputs)
        finally:
            rclpy.try_shutdown(context=ctx)
            child.send_signal(2)
            child.wait(20)

    lat_echo = across('--serve-echo', 'echo')
    lat_x = across('--serve-segmenter', 'x')
    lat_all = across('--serve-segmenter', 'all', all_outputs=True)
    a50, a99 = pct(lat_in)
    e50, e99 = pct(lat_echo)
    x50, x99 = pct(lat_x)
    print(f'[transport] 1242x375 rgb8 -> segmenter (zero-cost model) -> mono8 mask, 10 Hz, '
          f'{len(lat_x)} frames, profile {Path(os.environ["FASTDDS_DEFAULT_PROFILES_FILE"]).name}'
          ' (overlay and confidence are computed only when subscribed: not here)')
    print(f'  anchor DDS floor (bare echo node, same two hops)  p50 {e50:6.2f} ms  '
          f'p99 {e99:6.2f} ms')
    print(f'  segmenter node in-process                         p50 {a50:6.2f} ms  '
          f'p99 {a99:6.2f} ms')
    print(f'  segmenter node across processes                   p50 {x50:6.2f} ms  '
          f'p99 {x99:6.2f} ms  ({x50 / e50:.2f}x / {x99 / e99:.2f}x the DDS floor)')
    l50, l99 = pct(lat_all)
    print(f'  ... with overlay + confidence subscribed too       p50 {l50:6.2f} ms  '
          f'p99 {l99:6.2f} ms  (blend and 32FC1 after the mask is out)')
    print(f'  node overhead over the floor: p50 {x50 - e50:+.2f} ms')
    print(f'  goal p99 <= 15 ms: {"met" if x99 <= 15 else "NOT met"}')


def bench_end_to_end(repeats: int) -> None:
    sys.path.insert(0, str(ROOT / 'test' / 'dsseg_ros'))
    from model_fixture import save_tiny_run

    from dsseg_core.bag.reader import open_bag
    from dsseg_core.msgs.image import compressed_to_numpy
    from dsseg_core.segmenter.inference import load_predictor
    from dsseg_ros.run import run_pipeline

    tmp = Path(tempfile.mkdtemp(prefix='bench_nodes_'))
    run = save_tiny_run(tmp / 'run')
    with open_bag(ROOT / 'data' / 'sample_kitti') as bag:
        msg = bag.first_message('/kitti/camera_color_left/image_raw/compressed')
    rgb = compressed_to_numpy(msg)
    print('[end-to-end] tiny random ViT segmenter (2 blocks, width 64), CPU, '
          f'OMP_NUM_THREADS={os.environ["OMP_NUM_THREADS"]}')
    results = {}
    for label, overrides in (('full res, window 512/384', {}),
                             ('short_side 128', {'short_side': 128})):
        predictor = load_predictor(run, **overrides)
        predictor.predict(rgb)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            predictor.predict(rgb)
            times.append((time.perf_counter() - t0) * 1e3)
        p50, _ = pct(times)
        results[label] = p50
        print(f'  model {label:26s} p50 {p50:7.1f} ms/frame -> {1000 / p50:5.2f} frames/s')
    import yaml

    data = yaml.safe_load((ROOT / 'config' / 'dsseg.yaml').read_text())
    params = data['/**']['ros__parameters']
    params['segmenter']['model'].update({'path': str(run), 'short_side': 128})
    config = tmp / 'dsseg.yaml'
    config.write_text(yaml.safe_dump(data))
    t0 = time.monotonic()
    result = run_pipeline(str(config), replay=str(ROOT / 'data' / 'sample_kitti'), rate=1.0,
                          settle_s=1.0)
    wall = time.monotonic() - t0
    seg = result.stats.get('segmenter', {})
    lab = result.stats.get('cloud_labeller', {})
    print(f'  replay of data/sample_kitti (20 frames, 1.9 s, rate 1, short_side 128, one '
          f'process): segmenter processed {seg.get("processed")}/{seg.get("received")} '
          f'(dropped {seg.get("dropped")}), latency p50 {seg.get("latency_p50_ms")} ms; '
          f'labelled clouds published {lab.get("published")} '
          f'({float(lab.get("published", 0)) / 1.9:.2f}/s of bag time), labeller processing '
          f'p50 {lab.get("processing_p50_ms")} ms; wall {wall:.1f} s incl. start-up')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='fewer repetitions')
    parser.add_argument('--serve-segmenter', metavar='NS', help=argparse.SUPPRESS)
    parser.add_argument('--serve-echo', metavar='NS', help=argparse.SUPPRESS)
    parser.add_argument('--only', choices=['labelling', 'transport', 'end-to-end'])
    args = parser.parse_args()
    if args.serve_segmenter:
        serve_segmenter(args.serve_segmenter)
        return 0
    if args.serve_echo:
        serve_echo(args.serve_echo)
        return 0
    print(f'ROS_DOMAIN_ID={os.environ["ROS_DOMAIN_ID"]} '
          f'ROS_AUTOMATIC_DISCOVERY_RANGE={os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"]}')
    if args.only in (None, 'labelling'):
        bench_labelling(10 if args.quick else 40)
    if args.only in (None, 'transport'):
        bench_transport(30 if args.quick else 200)
    if args.only in (None, 'end-to-end'):
        bench_end_to_end(3 if args.quick else 10)
    return 0


if __name__ == '__main__':
    sys.exit(main())
