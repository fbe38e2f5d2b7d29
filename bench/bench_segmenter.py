"""Benchmark of the image segmenter on CPU: inference ms/frame (torch eager vs onnxruntime) at
375x1242 (a KITTI frame) and training images/s on small crops.

Run: ``OMP_NUM_THREADS=1 python bench/bench_segmenter.py [--threads 1] [--frames 3]``.
Random-init ViT-S/16 (``vit_small_patch16_224.dino`` architecture, no download). Every result is
printed with its ratio against an anchor measured in the same run:

* inference anchor: torch eager sliding-window predictor, fp32;
* training anchor: eager forward-only throughput at the training crop size.

Uses a real KITTI frame from ../shared/data when present, else a random image of that size.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if importlib.util.find_spec('torchvision') is None:  # timm imports it; CPU machines lack it
    sys.path.insert(0, str(ROOT / 'test' / 'stubs'))


def _frame() -> tuple[np.ndarray, str]:
    path = ROOT.parent / 'shared' / 'data' / 'kitti_raw_2011_09_26' / 'image_02' / 'data' / \
        '0000000000.png'
    if path.is_file():
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im.convert('RGB')), str(path.relative_to(ROOT.parent))
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(375, 1242, 3), dtype=np.uint8), 'random 375x1242'


def _time(fn, repeat: int) -> tuple[float, float]:  # noqa: ANN001
    """Median (wall, process CPU) seconds. CPU time is the robust number on a shared machine:
    with 1 thread it does not grow when other processes take the cores."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return float(np.median(wall)), float(np.median(cpu))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--threads', type=int, default=int(os.environ.get('OMP_NUM_THREADS', 1)))
    parser.add_argument('--frames', type=int, default=3, help='timed frames (median)')
    parser.add_argument('--window', type=int, nargs=2, default=[375, 512], metavar=('H', 'W'))
    parser.add_argument('--stride', type=int, default=384)
    parser.add_argument('--train-steps', type=int, default=4)
    parser.add_argument('--crop', type=int, default=128)
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--tiny', action='store_true', help='tiny model (plumbing check)')
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from dsseg_core.segmenter import load_predictor
    from dsseg_core.segmenter.checkpoint import save_run
    from dsseg_core.segmenter.export import export_model
    from dsseg_core.segmenter.model import SegmenterConfig, build_segmenter, tiny_config
    from dsseg_core.segmenter.train import TrainConfig

    model_cfg = tiny_config(31) if args.tiny else SegmenterConfig(pretrained=False,
                                                                  num_classes=31)
    cfg = TrainConfig(model=model_cfg, inference={'window': args.window,
                                                  'stride': args.stride, 'batch_size': 1})
    rgb, source = _frame()
    print(f'segmenter bench: {model_cfg.backbone}{" (tiny)" if args.tiny else ""}, 31 classes, '
          f'random init; {args.threads} thread(s); torch {torch.__version__}; CPU only '
          f'(no GPU in this environment); input {source}')
    torch.manual_seed(0)
    model = build_segmenter(cfg.model)
    with tempfile.TemporaryDirectory() as tmp:
        run = save_run(model, cfg, Path(tmp) / 'run')
        eager = load_predictor(run)
        h, w = args.window
        onnx_path = export_model(run, 'onnx', height=h, width=w, check=False).path
        import onnxruntime as ort

        onnx_pred = load_predictor(onnx_path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        onnx_pred.session = ort.InferenceSession(str(onnx_path), sess_options=opts,
                                                 providers=['CPUExecutionProvider'])

        w_eager, c_eager = _time(lambda: eager.predict(rgb), args.frames)
        w_onnx, c_onnx = _time(lambda: onnx_pred.predict(rgb), args.frames)
        a, b = eager.logits(rgb), onnx_pred.logits(rgb)
        print(f'inference {rgb.shape[0]}x{rgb.shape[1]}, windows {h}x{w} stride {args.stride} '
              '(median; wall / process CPU time):')
        print(f'  torch eager fp32   {1000 * w_eager:8.1f} / {1000 * c_eager:8.1f} ms/frame  '
              'ratio 1.00 (anchor)')
        print(f'  onnxruntime fp32   {1000 * w_onnx:8.1f} / {1000 * c_onnx:8.1f} ms/frame  '
              f'ratio {w_onnx / w_eager:.2f} / {c_onnx / c_eager:.2f}  '
              f'(max |logit diff| {np.abs(a - b).max():.2g})')

        # training throughput on small crops vs forward-only throughput at the same size
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x = torch.randn(args.batch, 3, args.crop, args.crop)
        y = torch.randint(0, 31, (args.batch, args.crop, args.crop))
        y[:, ::2] = -1

        def fwd() -> None:
            with torch.inference_mode():
                model.eval()(x)

        def step() -> None:
            model.train()
            loss = torch.nn.functional.cross_entropy(model(x), y, ignore_index=-1)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

        w_fwd, c_fwd = _time(fwd, args.train_steps)
        w_step, c_step = _time(step, args.train_steps)
        print(f'training crops {args.crop}x{args.crop}, batch {args.batch} '
              '(wall / CPU-time based):')
        print(f'  forward only       {args.batch / w_fwd:8.2f} / {args.batch / c_fwd:8.2f} '
              'images/s  ratio 1.00 (anchor)')
        print(f'  train step         {args.batch / w_step:8.2f} / {args.batch / c_step:8.2f} '
              f'images/s  ratio {w_fwd / w_step:.2f} / {c_fwd / c_step:.2f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
