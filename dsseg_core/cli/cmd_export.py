"""``dsseg export RUN --format onnx|torchscript|tensorrt``: export the trained segmenter."""

from __future__ import annotations

import argparse

__all__ = ['register', 'run']


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        'export', help='export a trained segmenter (ONNX, TorchScript, TensorRT)',
        description="Exports the network for one input size (default: the run's inference "
                    'window; batch size stays dynamic in ONNX) and checks the exported logits '
                    'against the eager model (max abs diff printed). Classes, mean/std and '
                    'inference settings are embedded, so dsseg_core.segmenter.load_predictor '
                    'and the segmenter node take the file directly. tensorrt builds an engine '
                    'from the ONNX file and needs NVIDIA TensorRT installed.')
    parser.add_argument('run_dir', metavar='RUN', help='run directory (dsseg train --out)')
    parser.add_argument('--format', choices=['onnx', 'torchscript', 'tensorrt'], default='onnx')
    parser.add_argument('--height', type=int, metavar='H', help='input height, px')
    parser.add_argument('--width', type=int, metavar='W', help='input width, px')
    parser.add_argument('--out', metavar='FILE', help='output file (default in RUN)')
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset (default 17)')
    parser.add_argument('--no-check', action='store_true',
                        help='skip the exported-vs-eager comparison')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dsseg_core.segmenter.export import build_tensorrt_engine, export_model

    fmt = 'onnx' if args.format == 'tensorrt' else args.format
    out = args.out
    if args.format == 'tensorrt' and out:
        out = str(Path(out).with_suffix('.onnx'))
    result = export_model(args.run_dir, fmt, out=out, height=args.height, width=args.width,
                          opset=args.opset, check=not args.no_check)
    diff = ('' if result.max_abs_diff is None
            else f'; max |exported - eager| logits = {result.max_abs_diff:.3g}')
    print(f'{result.fmt}: {result.path} (input {result.height}x{result.width}, batch dynamic'
          f'{" in ONNX" if fmt == "onnx" else " not supported"}){diff}')
    if args.format == 'tensorrt':
        engine = build_tensorrt_engine(result.path, Path(args.out) if args.out else None)
        print(f'tensorrt: {engine}')
    return 0
