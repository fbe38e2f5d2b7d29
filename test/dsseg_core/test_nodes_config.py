"""Node schemas: defaults, validation, the shipped YAML, read-only markers."""

from __future__ import annotations

import pytest

from dsseg_core.config import load_config
from dsseg_core.errors import ConfigError
from dsseg_core.nodes_config import (
    UNKNOWN_LABEL,
    BagPlayerConfig,
    CloudLabellerConfig,
    ModelParams,
    SegmenterNodeConfig,
    shipped_config_path,
)


def test_shipped_files_are_found_from_the_source_tree() -> None:
    assert shipped_config_path('fastdds_shm.xml').endswith('config/fastdds_shm.xml')
    assert shipped_config_path('dsseg.yaml').endswith('config/dsseg.yaml')
    assert shipped_config_path('no_such_file') is None


def test_invalid_values_name_the_field(tmp_path) -> None:
    path = tmp_path / 'p.yaml'
    path.write_text('/**:\n  ros__parameters:\n    segmenter:\n      overlay_alpha: 2\n')
    with pytest.raises(ConfigError, match='overlay_alpha'):
        load_config(SegmenterNodeConfig, path, section='segmenter')
    with pytest.raises(ConfigError, match='rate'):
        load_config(BagPlayerConfig, None, overrides={'rate': 0})
    with pytest.raises(ConfigError, match='cameras'):
        load_config(CloudLabellerConfig, None, overrides={'cameras': {}})
    with pytest.raises(ConfigError, match='typo'):
        load_config(SegmenterNodeConfig, None, overrides={'typo': 1})


def test_model_overrides_only_the_set_inference_values() -> None:
    assert ModelParams().predictor_overrides() == {}
    assert ModelParams(window_size=256, short_side=128).predictor_overrides() == {
        'window': 256, 'short_side': 128}


def test_topics_are_read_only_and_tuning_values_are_not() -> None:
    fields = SegmenterNodeConfig.model_fields
    assert fields['image_topic'].json_schema_extra == {'ros_read_only': True}
    assert not fields['overlay_alpha'].json_schema_extra


def test_unknown_label_is_the_uint32_pattern_of_minus_one() -> None:
    import numpy as np

    assert np.array([-1], np.int32).view(np.uint32)[0] == UNKNOWN_LABEL
