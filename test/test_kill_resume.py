"""kill -9 in the middle of a long job, then ``--resume``: the result equals an uninterrupted run.

``dsseg pseudo-label`` on a 6-frame KITTI bag (converted from the shared data in tmp_path) is
SIGKILLed once its first frame cache appears; ``--resume`` must finish and write label PNGs and
an index byte-identical to a run that was never interrupted. ``dsseg train`` on a tiny dataset
with the tiny random-init ViT is SIGKILLed after its first checkpoint; ``--resume`` must end
with the same weights (every safetensors tensor equal) as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent / 'corpus'))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env['OMP_NUM_THREADS'] = '1'
    env['HF_HUB_OFFLINE'] = '1'
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (str(REPO_ROOT), env.get('PYTHONPATH', '')) if p)
    return env


def dsseg(*argv: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, '-m', 'dsseg_core', *map(str, argv)],
                          capture_output=True, text=True, timeout=timeout, env=_env(),
                          check=False)
    assert proc.returncode == 0, f'dsseg {argv}: exit {proc.returncode}\n{proc.stderr}'
    assert 'Traceback (most recent call last)' not in proc.stderr
    return proc


def kill_when(argv: list[str | Path], ready: Callable[[], bool], timeout: float = 120) -> int:
    """Start ``dsseg argv``, SIGKILL it as soon as ``ready()``; returns its exit status."""
    proc = subprocess.Popen([sys.executable, '-m', 'dsseg_core', *map(str, argv)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if ready():
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.002)
        else:
            err = proc.stderr.read().decode() if proc.stderr else ''
            pytest.fail(f'dsseg {argv} ended (exit {proc.returncode}) or timed out before it '
                        f'could be killed mid-run\n{err}')
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def _files(root: Path, pattern: str) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.glob(pattern))}


@pytest.fixture(scope='module')
def kitti_bag(kitti_raw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dsseg_core.convert.kitti_raw import convert_kitti_raw

    out = tmp_path_factory.mktemp('kill') / 'kitti6'
    convert_kitti_raw(kitti_raw_dir, out, max_frames=6)
    return out


PL_ARGS = ['--k', '4', '--seed', '1']


def _stale_tmp(root: Path) -> list[Path]:
    """Temporary files of atomic writes (``.<name>.tmp-<random>``) left by a kill."""
    return [p for p in root.rglob('*') if '.tmp' in p.name]


@pytest.fixture(scope='module')
def pl_reference(kitti_bag: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ref = tmp_path_factory.mktemp('pl_ref') / 'ds'
    dsseg('pseudo-label', kitti_bag, '--out', ref, *PL_ARGS)
    assert len(_files(ref, 'labels/*.png')) == 6
    return ref


def _kill_pseudo_label(bag: Path, out: Path, ready: Callable[[list[Path]], bool]) -> None:
    cache = out / 'work' / 'frames'
    # '*npz*': the finished caches <key>.npz and the temporaries .<key>.npz.tmp-<random>
    status = kill_when(['pseudo-label', bag, '--out', out, *PL_ARGS],
                       lambda: ready(list(cache.glob('*npz*'))))
    assert status == -signal.SIGKILL
    assert not (out / 'dataset.yaml').exists(), 'the run had already finished when killed'
    done = [p for p in cache.glob('*.npz') if not p.name.startswith('.')]
    assert len(done) < 6


def _assert_same_dataset(out: Path, ref: Path) -> None:
    labels = _files(out, 'labels/*.png')
    assert labels.keys() == _files(ref, 'labels/*.png').keys()
    assert labels == _files(ref, 'labels/*.png')
    assert (out / 'index.jsonl').read_bytes() == (ref / 'index.jsonl').read_bytes()
    assert _files(out, 'images/*.png') == _files(ref, 'images/*.png')


@pytest.mark.slow
def test_pseudo_label_kill_9_then_resume(kitti_bag: Path, pl_reference: Path,
                                         tmp_path: Path) -> None:
    """Killed after its first complete frame cache: --resume gives the uninterrupted result."""
    out = tmp_path / 'killed'
    _kill_pseudo_label(kitti_bag, out, lambda npz: any(not p.name.startswith('.') for p in npz))
    # A kill may land while the next frame's cache is being written; its temporary file is
    # removed here (the bug that --resume does not ignore it is shown by the test below).
    for stale in _stale_tmp(out):
        stale.unlink()
    done = dsseg('pseudo-label', kitti_bag, '--out', out, *PL_ARGS, '--resume')
    assert 'reused from the cache' in done.stdout
    _assert_same_dataset(out, pl_reference)
    assert not _stale_tmp(out)


@pytest.mark.slow
def test_pseudo_label_resume_after_kill_during_cache_write(kitti_bag: Path, pl_reference: Path,
                                                           tmp_path: Path) -> None:
    """Killed while the first frame cache is being written (its temporary file exists).

    The stale temporary must be ignored (not read as a frame), also one named like the older
    ``.<key>.<random>.tmp.npz`` temporaries, whether truncated or a complete npz.
    """
    for attempt in range(5):  # a cache write takes a few ms: the kill can land after it
        out = tmp_path / f'killed{attempt}'
        _kill_pseudo_label(kitti_bag, out, lambda npz: any(p.name.startswith('.') for p in npz))
        stale = _stale_tmp(out)
        if stale:
            break
    assert stale, 'the kill did not leave a temporary file (the write finished first)'
    frames = out / 'work' / 'frames'
    done = sorted(p for p in frames.glob('*.npz') if not p.name.startswith('.'))
    if done:  # legacy-named temporaries: a complete copy of a cache and a truncated one
        data = done[0].read_bytes()
        (frames / '.legacy_000099.abcd1234.tmp.npz').write_bytes(data)
        (frames / '.legacy_000098.abcd1234.tmp.npz').write_bytes(data[: len(data) // 2])
    dsseg('pseudo-label', kitti_bag, '--out', out, *PL_ARGS, '--resume')
    _assert_same_dataset(out, pl_reference)


@pytest.mark.slow
def test_train_kill_9_then_resume(tmp_path: Path) -> None:
    pytest.importorskip('torch')
    pytest.importorskip('timm')
    import torch
    import yaml
    from corpus_cases import tiny_model_dict, write_dataset
    from safetensors.torch import load_file

    data = write_dataset(tmp_path / 'ds', num_images=4)
    cfg = tmp_path / 'train.yaml'
    cfg.write_text(yaml.safe_dump({'train': {
        'model': tiny_model_dict(3), 'batch_size': 2, 'seed': 5, 'checkpoint_every': 2,
        'data': {'crop': [32, 64], 'num_workers': 0},
        'optim': {'warmup_steps': 1}, 'ema': {'start_step': 2}}}))
    steps = '10'
    ref = tmp_path / 'ref'
    dsseg('train', data, '--out', ref, '--config', cfg, '--max-steps', steps, '--device', 'cpu')

    run = tmp_path / 'killed'
    latest = run / 'checkpoints' / 'latest.json'
    status = kill_when(['train', data, '--out', run, '--config', cfg, '--max-steps', steps,
                        '--device', 'cpu'], latest.exists)
    assert status == -signal.SIGKILL
    # model.safetensors is refreshed at every checkpoint, so "not finished" = latest step < 10
    killed_at = json.loads(latest.read_text())['step']
    assert 0 < killed_at < int(steps), 'the run had already finished when killed'

    resumed = dsseg('-v', 'train', data, '--out', run, '--resume', '--device', 'cpu')
    assert f'from step {killed_at}' in resumed.stderr   # continued, not restarted from 0
    assert json.loads(latest.read_text())['step'] == int(steps)
    want, got = load_file(ref / 'model.safetensors'), load_file(run / 'model.safetensors')
    assert want.keys() == got.keys() and len(want) > 0
    unequal = [k for k in want if not torch.equal(want[k], got[k])]
    assert not unequal, f'tensors differ after kill -9 + resume: {unequal[:5]}'
    # the killed writer's temporary file (``.model.safetensors.tmp-<random>``) may remain;
    # it never matches ``*.safetensors`` and does not disturb the run
