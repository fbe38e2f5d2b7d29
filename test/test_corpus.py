"""Reliability corpus (issue #7): malformed inputs through the real CLI.

Each case of ``test/corpus/corpus_cases.py`` runs as ``python -m dsseg_core ...`` in a
subprocess with a timeout and must: exit non-zero, print one ``dsseg <command>: error: ...``
line on stderr (the last one) that names the file/topic/field at fault, print no Python
traceback, leave user files alone and leave nothing half-written (no ``*.tmp*`` file; the
output is absent or complete). The image message cases are also fed to the segmenter node's
handler, which must log one warning, drop the message and keep working
(``test_node_message_cases``). Known bugs are strict xfails (docs/reliability.md).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / 'corpus'))
from corpus_cases import CASES, Case, Resources, Spec  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
TRACEBACK = 'Traceback (most recent call last)'


PARALLEL = int(os.environ.get('DSSEG_CORPUS_JOBS', '3'))  # subprocesses at once


@pytest.fixture(scope='module')
def resources(tmp_path_factory: pytest.TempPathFactory) -> Resources:
    return Resources(tmp_path_factory.mktemp('corpus'))


@dataclass
class Outcome:
    spec: Spec | None = None
    proc: subprocess.CompletedProcess[str] | None = None
    timeout: float | None = None
    skip: str | None = None
    seconds: float = 0.0


def _runnable(case: Case) -> str | None:
    for module in case.needs:
        if importlib.util.find_spec(module) is None:
            return f'{module} is not installed'
    return None


@pytest.fixture(scope='module')
def outcomes(resources: Resources, request: pytest.FixtureRequest) -> dict[str, Outcome]:
    """Build the selected cases (in this process), then run their CLIs a few at a time."""
    selected = {item.callspec.params['case'].id for item in request.session.items
                if hasattr(item, 'callspec') and 'case' in item.callspec.params}
    results: dict[str, Outcome] = {}
    for case in CASES:
        if case.id not in selected:
            continue
        reason = _runnable(case)
        results[case.id] = Outcome(skip=reason) if reason else Outcome(case.build(resources))

    def one(case: Case) -> None:
        out = results[case.id]
        work = resources.root / 'cases' / case.id
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        try:
            out.proc = run_cli(out.spec.argv, case.timeout_s, work)
        except subprocess.TimeoutExpired as err:
            out.timeout = err.timeout
        out.seconds = time.monotonic() - t0

    todo = [c for c in CASES if c.id in results and results[c.id].skip is None]
    # the slow (torch) cases first so that they overlap with the many fast ones
    todo.sort(key=lambda c: not c.needs)
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        list(pool.map(one, todo))
    dump = os.environ.get('DSSEG_CORPUS_DUMP')   # write the error lines (docs/reliability.md)
    if dump:
        rows = {cid: {'rc': o.proc.returncode, 'stderr': o.proc.stderr,
                      'root': str(resources.root), 'seconds': round(o.seconds, 2)}
                for cid, o in results.items() if o.proc is not None}
        Path(dump).write_text(json.dumps(rows, indent=1))
    return results


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env['OMP_NUM_THREADS'] = '1'
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (str(REPO_ROOT), env.get('PYTHONPATH', '')) if p)
    env.pop('PYTHONWARNINGS', None)
    env.setdefault('HF_HUB_OFFLINE', '1')   # no download attempts (and retries) offline
    return env


def run_cli(argv: list[str], timeout_s: float, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, '-m', 'dsseg_core', *argv], capture_output=True,
                          text=True, timeout=timeout_s, cwd=cwd, env=_env(), check=False)


def _leftover_tmp(folder: Path) -> list[Path]:
    if not folder.exists():
        return []
    return [p for p in folder.rglob('*') if '.tmp' in p.name]


def _params() -> list:
    params = []
    for c in CASES:
        marks = []
        if c.xfail:
            marks.append(pytest.mark.xfail(strict=True, reason=c.xfail))
        params.append(pytest.param(c, id=c.id, marks=marks))
    return params


def test_corpus_is_big_enough() -> None:
    groups = {c.group for c in CASES}
    assert len(CASES) >= 30
    assert {'bags', 'messages', 'calibration', 'configs', 'datasets', 'checkpoints'} <= groups
    assert len({c.id for c in CASES}) == len(CASES)


def test_reliability_doc_lists_every_case() -> None:
    doc = (REPO_ROOT / 'docs' / 'reliability.md').read_text(encoding='utf-8')
    missing = [c.id for c in CASES if f'`{c.id}`' not in doc]
    assert not missing, f'docs/reliability.md lacks {missing}'


@pytest.mark.parametrize('case', _params())
def test_malformed_input(case: Case, outcomes: dict[str, Outcome],
                         resources: Resources) -> None:
    outcome = outcomes[case.id]
    if outcome.skip:
        pytest.skip(outcome.skip)
    spec = outcome.spec
    work = resources.root / 'cases' / case.id
    if outcome.timeout is not None:
        pytest.fail(f'dsseg {" ".join(spec.argv)} hung for {outcome.timeout} s')
    proc = outcome.proc
    both = proc.stdout + proc.stderr
    report = f'exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}'
    assert TRACEBACK not in both, report
    lost = [str(p) for p in spec.keep if not p.exists()]
    assert not lost, f'the command deleted {lost}\n{report}'
    assert proc.returncode != 0, report
    prefix = f'dsseg {case.command}: error:'
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(prefix)]
    assert len(lines) == 1, report
    line = lines[0]
    # one line: nothing (a pasted multi-line message) may follow the error line
    assert proc.stderr.rstrip().splitlines()[-1] == line, report
    assert len(line) > len(prefix) + 10, report
    for needle in spec.expect:
        assert needle in line, f'{needle!r} not named in the error line\n{report}'
    assert not _leftover_tmp(work), f'half-written files: {_leftover_tmp(work)}\n{report}'
    if spec.out is not None and spec.out.exists():
        if spec.out.is_dir():
            assert not _leftover_tmp(spec.out)
            missing = [f for f in spec.out_complete if not (spec.out / f).exists()]
            assert spec.out_complete and not missing, (
                f'{spec.out} left incomplete (missing {missing or "its contract files"}): '
                f'{sorted(p.name for p in spec.out.iterdir())}\n{report}')
        else:
            pytest.fail(f'{spec.out} was written although the command failed\n{report}')


# ----------------------------------------------------------------------------- node handlers
NODE_IMAGE_CASES = {   # the corpus message cases the segmenter node receives as sensor_msgs/Image
    'msg_unknown_encoding': {'encoding': 'yuv_weird'},
    'msg_step_mismatch': {'data_rows': 40},          # data shorter than step x height
    'msg_step_too_small': {'step': 64},              # step < width x 3
    'msg_corrupt_jpeg': {'compressed': b'\xff\xd8 definitely not a jpeg'},
}


@pytest.mark.parametrize('case_id', sorted(NODE_IMAGE_CASES))
def test_node_message_cases(case_id: str) -> None:
    """The segmenter node's image handler: one warning, message dropped, node keeps working."""
    rclpy = pytest.importorskip('rclpy')
    sys.path.insert(0, str(REPO_ROOT / 'test' / 'dsseg_ros'))
    from rclpy.context import Context
    from ros_helpers import FakePredictor, H, W, camera_info_msg, rgb_image_msg, unique
    from sensor_msgs.msg import CompressedImage, Image

    from dsseg_core.msgs.image import encode_compressed
    from dsseg_ros.segmenter_node import SegmenterNode

    ctx = Context()
    rclpy.init(context=ctx)
    node = None
    try:
        ns = '/' + unique('corpus')
        problem = NODE_IMAGE_CASES[case_id]
        compressed = 'compressed' in problem

        def good(i: int) -> Image | CompressedImage:
            raw = rgb_image_msg(i)
            if not compressed:
                return raw
            msg = CompressedImage(header=raw.header, format='png')
            msg.data = encode_compressed(np.frombuffer(bytes(raw.data), np.uint8).reshape(
                raw.height, raw.width, 3), 'png')
            return msg

        node = SegmenterNode('segmenter', namespace=ns, context=ctx, predictor=FakePredictor(),
                             config={'image_topic': f'{ns}/image', 'warn_throttle_s': 60.0,
                                     'camera_info_topic': f'{ns}/camera_info',
                                     'transport': 'compressed' if compressed else 'raw'})
        node._on_camera_info(camera_info_msg(0, 'cam_optical'))
        for i in range(3):
            bad = good(i + 1)
            if compressed:
                bad.data = problem['compressed']
            else:
                assert (bad.width, bad.height) == (W, H)
            if 'encoding' in problem:
                bad.encoding = problem['encoding']
            if 'step' in problem:
                bad.step = problem['step']
            if 'data_rows' in problem:
                bad.data = bytes(W * 3 * (H - 8))
            node._on_image(bad)
            deadline = time.monotonic() + 10
            while node.worker.stats().errors < i + 1 and time.monotonic() < deadline:
                time.sleep(0.01)
        assert node.warnings.counts.get('bad_image') == 3, node.warnings.counts
        assert node.warnings.emitted.get('bad_image') == 1
        assert node.worker.stats().errors == 3
        published = int(node.diagnostic_values().get('published', '0'))
        node._on_image(good(99))
        deadline = time.monotonic() + 10
        while (int(node.diagnostic_values().get('published', '0')) == published
               and time.monotonic() < deadline):
            time.sleep(0.01)
        assert int(node.diagnostic_values()['published']) == published + 1
        assert node.warnings.counts.get('bad_image') == 3
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=ctx)
