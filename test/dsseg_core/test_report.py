"""The demo report: pictures from the pipeline's artefacts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from dsseg_core.cli import main
from dsseg_core.report import ReportInputs, bev_image, build_report, draw_points, plot_curve


def test_draw_points_paints_only_inside_the_image() -> None:
    img = np.zeros((10, 20, 3), np.uint8)
    uv = np.array([[2.5, 3.5], [19.9, 9.9], [-5.0, 2.0], [25.0, 1.0]], np.float32)
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], np.uint8)
    out = draw_points(img, uv, colors, radius=0)
    assert tuple(out[3, 2]) == (255, 0, 0)
    assert tuple(out[9, 19]) == (0, 255, 0)
    assert int((out.sum(axis=2) > 0).sum()) == 2
    assert img.sum() == 0  # the input is not modified


def test_bev_puts_forward_up_and_left_left() -> None:
    xyz = np.array([[10.0, 0.0, 0.0], [0.0, 10.0, 0.0]], np.float32)
    colors = np.array([[255, 0, 0], [0, 255, 0]], np.uint8)
    img = bev_image(xyz, colors, extent_m=20.0, size_px=40)
    red = np.argwhere((img == [255, 0, 0]).all(axis=2))
    green = np.argwhere((img == [0, 255, 0]).all(axis=2))
    assert red[0].tolist() == [10, 20]  # 10 m ahead: above the centre row
    assert green[0].tolist() == [20, 10]  # 10 m left: left of the centre column


def test_plot_curve_writes_a_png(tmp_path: Path) -> None:
    plot_curve({'loss': [(0, 2.0), (1, 1.0), (2, float('nan')), (3, 0.5)]}, tmp_path / 'c.png')
    assert Image.open(tmp_path / 'c.png').size == (720, 400)


def test_report_from_the_sample_bag_and_a_run(sample_bag: Path, tmp_path: Path) -> None:
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'metrics.csv').write_text('step,loss,loss_sparse,loss_soft\n0,2.0,2.0,0\n1,1.5,1.5,0\n')
    timings = tmp_path / 'timings.json'
    timings.write_text(json.dumps({'pseudo-label': 12.5, 'train': 100.0}))
    index = build_report(ReportInputs(bag=sample_bag, run=run, timings=timings, max_frames=2),
                         tmp_path / 'report')
    page = index.read_text()
    assert 'loss_curve.png' in page and '112.5 s' in page
    cams = sorted((tmp_path / 'report').glob('frame_*_camera.png'))
    assert len(cams) == 2
    assert Image.open(cams[0]).size == (1242, 375)


def test_cli_report_missing_bag_is_one_clear_error(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    code = main(['report', str(tmp_path / 'nope'), '--out', str(tmp_path / 'r')])
    err = capsys.readouterr().err
    assert code == 1
    assert 'dsseg report: error:' in err and 'nope' in err
    assert not (tmp_path / 'r' / 'index.html').exists()
