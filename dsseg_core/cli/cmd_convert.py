"""``dsseg convert kitti-raw DIR --out BAG``: a KITTI raw drive → rosbag2 (mcap) bag."""

from __future__ import annotations

import argparse
import sys

__all__ = ['register', 'run']


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        'convert', help='convert a dataset into a rosbag2 bag',
        description='Convert recorded datasets into rosbag2 bags that dsseg (and ros2 bag play) '
                    'read.')
    sub = parser.add_subparsers(dest='dataset', metavar='DATASET')
    kitti = sub.add_parser(
        'kitti-raw', help='KITTI raw drive (image_02 + velodyne_points + calibration)',
        description='Writes /kitti/camera_color_left/image_raw[/compressed], '
                    '/kitti/camera_color_left/camera_info, /kitti/velo/pointcloud and /tf_static '
                    '(base_link, velo_link, camera_color_left[_optical_frame]) into a rosbag2 '
                    'bag. Stamps come from timestamps.txt when present, else 10 Hz. The bag '
                    'folder appears only when complete.')
    kitti.add_argument('directory', metavar='DIR',
                       help='drive folder with image_02/data/*.png, velodyne_points/data/*.bin '
                            'and calib_cam_to_cam.txt + calib_velo_to_cam.txt (here or above)')
    kitti.add_argument('--out', required=True, metavar='BAG', help='output bag folder')
    kitti.add_argument('--image-format', choices=['raw', 'jpeg', 'png'], default='jpeg',
                       help='raw: sensor_msgs/Image rgb8; jpeg/png: CompressedImage '
                            '(default jpeg)')
    kitti.add_argument('--jpeg-quality', type=int, default=92, metavar='Q',
                       help='JPEG quality 1-95 (default 92)')
    kitti.add_argument('--max-frames', type=int, metavar='N', help='convert at most N frames')
    kitti.add_argument('--start', type=int, default=0, metavar='N',
                       help='first frame (position in the sorted frame list, default 0)')
    kitti.add_argument('--stride', type=int, default=1, metavar='N',
                       help='take every N-th frame (default 1)')
    kitti.add_argument('--storage', choices=['mcap', 'sqlite3'], default='mcap',
                       help='rosbag2 storage (default mcap)')
    kitti.add_argument('--no-compress', action='store_true',
                       help='no zstd compression (mcap: chunks; sqlite3: per message)')
    kitti.add_argument('--compression-level', type=int, metavar='L',
                       help='zstd level for mcap chunks (default 3; 19 = ~25%% smaller, slower)')
    kitti.set_defaults(func=run)
    parser.set_defaults(func=_need_dataset(parser))


def _need_dataset(parser: argparse.ArgumentParser):
    def _run(args: argparse.Namespace) -> int:
        if getattr(args, 'dataset', None) is None:
            parser.print_help(sys.stderr)
            return 2
        return 0
    return _run


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from dsseg_core.convert.kitti_raw import convert_kitti_raw
    from dsseg_core.errors import ConfigError

    if not 1 <= args.jpeg_quality <= 95:
        raise ConfigError(f'--jpeg-quality must be in 1..95, got {args.jpeg_quality}')
    if args.compression_level is not None and not 1 <= args.compression_level <= 22:
        raise ConfigError(f'--compression-level must be in 1..22, got {args.compression_level}')
    bar = tqdm(desc='convert kitti-raw', unit='frame', file=sys.stderr, disable=None)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        stats = convert_kitti_raw(
            args.directory, args.out, image_format=args.image_format,
            max_frames=args.max_frames, start=args.start, stride=args.stride,
            jpeg_quality=args.jpeg_quality, storage=args.storage,
            compress=not args.no_compress, compression_level=args.compression_level,
            progress=progress)
    finally:
        bar.close()
    print(f'wrote {stats.path}: {stats.frames} frames, {stats.messages} messages, '
          f'{stats.bytes / 1e6:.1f} MB ({args.storage}, images {args.image_format}, stamps '
          f'{stats.timestamps})')
    if stats.skipped:
        print(f'skipped {stats.skipped} frames that had an image or a scan but not both')
    return 0
