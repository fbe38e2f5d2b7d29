"""Export to ONNX / TorchScript (and a TensorRT engine where TensorRT is installed).

Input size: exports are for **one spatial size** (default: the run's inference window;
``--height/--width`` to change it), batch size is dynamic in ONNX. timm's dynamic
position-embedding resize uses an antialiased bicubic interpolation that the TorchScript-based
ONNX exporter (``dynamo=False``; the dynamo exporter needs onnxscript, not installed) cannot
convert, so the network is first rebuilt for the export size
(:func:`dsseg_core.segmenter.model.fixed_size_copy`), which gives the same outputs as the
dynamic model at that size. The predictors below then run sliding windows of exactly that size
(smaller images are zero-padded after normalisation), with the same pre/post-processing as
the torch :class:`~dsseg_core.segmenter.inference.Predictor`.

Everything the predictor needs (classes, mean/std, inference settings) is embedded: ONNX
``metadata_props['dsseg']`` / TorchScript extra file ``dsseg.json``.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dsseg_core.atomic import atomic_path
from dsseg_core.errors import CheckpointError, DependencyError, ModelError
from dsseg_core.segmenter.inference import InferenceConfig, WindowedPredictor

__all__ = [
    'ExportResult',
    'OnnxPredictor',
    'TorchScriptPredictor',
    'build_tensorrt_engine',
    'export_model',
]

log = logging.getLogger(__name__)

META_KEY = 'dsseg'


@dataclass
class ExportResult:
    path: Path
    fmt: str
    height: int
    width: int
    max_abs_diff: float | None  # exported vs eager logits on a random input
    metadata: dict[str, Any]


def _metadata(model: Any, class_names: list[str], inference: InferenceConfig, height: int,
              width: int) -> dict[str, Any]:
    return {'format': 'dsseg-segmenter-export-1', 'num_classes': int(model.num_classes),
            'class_names': list(class_names), 'mean': list(model.mean), 'std': list(model.std),
            'patch_size': list(model.patch_size), 'input_size': [height, width],
            'inference': inference.model_dump(mode='json'), 'backbone': model.cfg.backbone}


def export_model(run_dir: str | Path, fmt: Literal['onnx', 'torchscript'] = 'onnx',
                 out: str | Path | None = None, height: int | None = None,
                 width: int | None = None, opset: int = 17, check: bool = True,
                 seed: int = 0) -> ExportResult:
    """Export a run's model; ``check`` compares exported and eager logits (max abs diff)."""
    import torch

    from dsseg_core.segmenter.checkpoint import load_class_names, load_model, load_run_config
    from dsseg_core.segmenter.model import fixed_size_copy

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    model = load_model(run_dir)
    win_h, win_w = cfg.inference.window_hw
    height, width = int(height or win_h), int(width or win_w)
    if height < 1 or width < 1:
        raise ModelError(f'export size {height}x{width} must be positive')
    fixed = fixed_size_copy(model, height, width)
    inference = cfg.inference.model_copy(update={'window': (height, width)})
    meta = _metadata(model, load_class_names(run_dir, model.num_classes), inference, height,
                     width)
    suffix = '.onnx' if fmt == 'onnx' else '.pt'
    path = Path(out) if out else run_dir / f'model_{height}x{width}{suffix}'
    gen = torch.Generator().manual_seed(seed)
    example = torch.randn(1, 3, height, width, generator=gen)

    if fmt == 'onnx':
        import onnx

        with atomic_path(path) as tmp, warnings.catch_warnings():
            # Shape arithmetic is constant at a fixed size: the tracer's warnings are expected.
            warnings.simplefilter('ignore', torch.jit.TracerWarning)
            warnings.simplefilter('ignore', DeprecationWarning)
            warnings.simplefilter('ignore', FutureWarning)
            try:
                torch.onnx.export(fixed, (example,), str(tmp), dynamo=False,
                                  input_names=['image'], output_names=['logits'],
                                  dynamic_axes={'image': {0: 'batch'}, 'logits': {0: 'batch'}},
                                  opset_version=opset)
            except Exception as err:
                raise ModelError(f'ONNX export of {run_dir} failed: {type(err).__name__}: '
                                 f'{err}'.replace('\n', ' ')) from err
            proto = onnx.load(str(tmp))
            entry = proto.metadata_props.add()
            entry.key, entry.value = META_KEY, json.dumps(meta)
            onnx.checker.check_model(proto)
            onnx.save(proto, str(tmp))
    elif fmt == 'torchscript':
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter('ignore', torch.jit.TracerWarning)
            traced = torch.jit.trace(fixed, (example,), check_trace=False)
        with atomic_path(path) as tmp:
            torch.jit.save(traced, str(tmp), _extra_files={'dsseg.json': json.dumps(meta)})
    else:
        raise ModelError(f'unknown export format {fmt!r}; use onnx or torchscript')

    diff = None
    if check:
        batch = torch.randn(2, 3, height, width, generator=gen)
        with torch.no_grad():
            eager = model(batch).numpy()
        if fmt == 'onnx':
            got = OnnxPredictor(path)._forward(batch.numpy())
        else:
            got = TorchScriptPredictor(path)._forward(batch.numpy())
        diff = float(np.abs(got - eager).max())
        log.info('%s: max |exported - eager| = %.3g', path, diff)
    return ExportResult(path=path, fmt=fmt, height=height, width=width, max_abs_diff=diff,
                        metadata=meta)


def _predictor_args(meta: dict[str, Any], path: Path, overrides: dict[str, Any]
                    ) -> dict[str, Any]:
    try:
        inference = InferenceConfig.model_validate({**meta['inference'], **overrides})
        return {'num_classes': int(meta['num_classes']), 'class_names': meta['class_names'],
                'mean': tuple(meta['mean']), 'std': tuple(meta['std']), 'config': inference}
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f'{path}: dsseg metadata incomplete ({err}); re-export it with '
                              'dsseg export') from err


class OnnxPredictor(WindowedPredictor):
    """onnxruntime backend with the shared sliding-window pre/post-processing."""

    def __init__(self, path: str | Path, device: str = 'cpu', **overrides: Any) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise DependencyError('OnnxPredictor needs onnxruntime: pip install '
                                  'onnxruntime (or onnxruntime-gpu)') from err
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f'{path}: ONNX model not found')
        providers = ['CPUExecutionProvider']
        if device.startswith('cuda'):
            if 'CUDAExecutionProvider' not in ort.get_available_providers():
                raise ModelError(f'{path}: device cuda requested but onnxruntime has no '
                                 'CUDAExecutionProvider; install onnxruntime-gpu or use cpu')
            providers.insert(0, 'CUDAExecutionProvider')
        try:
            opts = ort.SessionOptions()
            self.session = ort.InferenceSession(str(path), sess_options=opts,
                                                providers=providers)
        except Exception as err:
            raise CheckpointError(f'{path}: onnxruntime cannot load the model ({err})'
                                  .replace('\n', ' ')) from err
        raw = self.session.get_modelmeta().custom_metadata_map.get(META_KEY)
        if raw is None:
            raise CheckpointError(f'{path}: no dsseg metadata; export it with dsseg export')
        meta = json.loads(raw)
        precision = overrides.pop('precision', None)
        if precision not in (None, 'fp32'):
            log.warning('%s: precision %s ignored by the ONNX predictor', path, precision)
        super().__init__(**_predictor_args(meta, path, overrides))
        shape = self.session.get_inputs()[0].shape
        if isinstance(shape[2], int) and isinstance(shape[3], int):
            self.fixed_input = (int(shape[2]), int(shape[3]))
        self.input_name = self.session.get_inputs()[0].name

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch.astype(np.float32)})[0]


class TorchScriptPredictor(WindowedPredictor):
    """TorchScript backend (``torch.jit.load``) with the shared pre/post-processing."""

    def __init__(self, path: str | Path, device: str = 'cpu', **overrides: Any) -> None:
        import torch

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f'{path}: TorchScript model not found')
        extra = {'dsseg.json': ''}
        try:
            self.module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
        except Exception as err:
            raise CheckpointError(f'{path}: cannot load TorchScript model ({err})'
                                  .replace('\n', ' ')) from err
        if not extra['dsseg.json']:
            raise CheckpointError(f'{path}: no dsseg metadata; export it with dsseg export')
        meta = json.loads(extra['dsseg.json'])
        overrides.pop('precision', None)
        super().__init__(**_predictor_args(meta, path, overrides))
        self.fixed_input = (int(meta['input_size'][0]), int(meta['input_size'][1]))
        self.device = torch.device(device)
        self.module.eval()

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.module(torch.from_numpy(batch).to(self.device)).float().cpu().numpy()


def build_tensorrt_engine(onnx_path: str | Path, engine_path: str | Path | None = None,
                          fp16: bool = True, max_batch: int = 4,
                          workspace_gb: float = 2.0) -> Path:
    """Build a serialized TensorRT engine from an exported ONNX model (GPU machines only).

    Needs the ``tensorrt`` Python package (not part of dsseg's requirements); untested on the
    CPU-only development machines.
    """
    try:
        import tensorrt as trt
    except ImportError as err:
        raise DependencyError('building a TensorRT engine needs the tensorrt package (NVIDIA '
                              'TensorRT, GPU machines only); use the .onnx file with '
                              'onnxruntime instead') from err
    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path) if engine_path else onnx_path.with_suffix('.engine')
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, 'EXPLICIT_BATCH'):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f'{onnx_path}: TensorRT cannot parse the ONNX model: {errors}')
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16 and builder.platform_has_fast_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    inp = network.get_input(0)
    _, c, h, w = inp.shape
    profile = builder.create_optimization_profile()
    profile.set_shape(inp.name, (1, c, h, w), (1, c, h, w), (max_batch, c, h, w))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ModelError(f'{onnx_path}: TensorRT engine build failed (see the log above)')
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(engine))
    return engine_path
