"""Fixtures shared by the pseudo-labelling tests."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope='session')
def sample_scans(sample_bag) -> list[np.ndarray]:
    """The 20 scans (N, 3) of the sample drive."""
    from dsseg_core.frames import FramesConfig
    from dsseg_core.pseudolabel.pipeline import iter_bag_frames

    return [fr.xyz for fr in iter_bag_frames(sample_bag, FramesConfig())]


@pytest.fixture(scope='session')
def sample_segmented_frames(sample_bag) -> list[dict]:
    """Frames 0, 5 and 10 of the sample drive run through the pipeline up to the segment maps:
    scan, ground, segments, the camera's visible projected points and the segment map."""
    from dsseg_core.frames import FramesConfig
    from dsseg_core.projection import project_points, zbuffer_visible
    from dsseg_core.pseudolabel.pipeline import PseudoLabelConfig, iter_bag_frames, segment_scan
    from dsseg_core.pseudolabel.segment_masks import segment_mask_image

    cfg = PseudoLabelConfig()
    out = []
    for i, fr in enumerate(iter_bag_frames(sample_bag, FramesConfig(max_frames=12))):
        if i % 5:
            continue
        xyz = np.asarray(fr.xyz, np.float32)
        ground, segment = segment_scan(xyz, fr.ring, cfg)
        cam = fr.cameras[0]
        h, w = cam.image.shape[:2]
        proj = project_points(xyz, cam.calib, min_depth=cfg.min_depth)
        proj = proj.subset(zbuffer_visible(proj, w, h, cfg.visibility_radius_px,
                                           cfg.visibility_depth_tolerance))
        fx = cam.calib.camera.fx
        seg = segment[proj.point_index]
        out.append({'xyz': xyz, 'intensity': fr.intensity, 'ground': ground,
                    'segment': segment, 'image': cam.image, 'width': w, 'height': h,
                    'fx': fx, 'uv': proj.uv, 'depth': proj.depth, 'point_segment': seg,
                    'seg_map': segment_mask_image(proj.uv, proj.depth, seg, w, h, fx,
                                                  cfg.masks),
                    'num_segments': int(segment.max()) + 1})
    assert len(out) == 3
    return out
