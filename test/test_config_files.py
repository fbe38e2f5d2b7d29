"""Every shipped config file loads with the schema of every stage section it contains.

``load_config`` ignores sections it is not asked for, so a misspelt *section* would be silently
unused: the files are also checked for sections no schema reads. Unknown *keys* inside a
section fail because every ``StageConfig`` forbids extra keys. ``config/pipeline.yaml`` is the
documented reference (docs/pipeline.md): it must also stay at the schema defaults.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dsseg_core.config import StageConfig, load_config, read_yaml, section_from_mapping
from dsseg_core.errors import ConfigError
from dsseg_core.frames import FramesConfig
from dsseg_core.nodes_config import (
    BagPlayerConfig,
    CloudLabellerConfig,
    RecorderConfig,
    RunConfig,
    SegmenterNodeConfig,
)
from dsseg_core.points3d.label_points import LabelPointsConfig
from dsseg_core.points3d.naming import NamingConfig, load_vocabulary
from dsseg_core.points3d.train3d import Train3dConfig
from dsseg_core.pseudolabel.pipeline import PseudoLabelConfig
from dsseg_core.pseudolabel.proposals import ProposalsConfig
from dsseg_core.segmenter.evaluate import EvalConfig
from dsseg_core.segmenter.train import TrainConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / 'config'

# section name -> schema, as the commands and nodes read them
OFFLINE = {
    'frames': FramesConfig,
    'pseudo_label': PseudoLabelConfig,
    'naming': NamingConfig,
    'train': TrainConfig,
    'eval': EvalConfig,
    'label_points': LabelPointsConfig,
    'train3d': Train3dConfig,
    'lidar_proposals': ProposalsConfig,
}
NODES = {
    'segmenter': SegmenterNodeConfig,
    'cloud_labeller': CloudLabellerConfig,
    'bag_player': BagPlayerConfig,
    'recorder': RecorderConfig,
    'run': RunConfig,
}
# every shipped stage-config file -> the schemas its sections may use
SHIPPED = {
    'pipeline.yaml': OFFLINE,
    'demo.yaml': OFFLINE,
    'dsseg.yaml': NODES,
}
NOT_STAGE_CONFIGS = {'vocabulary.yaml'}  # checked by test_vocabulary_loads


def check_config_file(path: Path, schemas: dict[str, type[StageConfig]]
                      ) -> dict[str, StageConfig]:
    """Load every section of ``path`` with its schema; ConfigError on any problem."""
    data = section_from_mapping(read_yaml(path), None, str(path))
    unknown = sorted(set(data) - set(schemas))
    if unknown:
        raise ConfigError(f'{path}: sections {unknown} are read by no stage '
                          f'(known: {sorted(schemas)})')
    return {name: load_config(schemas[name], path, section=name) for name in data}


def test_every_shipped_config_is_covered() -> None:
    shipped = {p.name for p in CONFIG_DIR.glob('*.yaml')}
    assert shipped - NOT_STAGE_CONFIGS == set(SHIPPED), (
        'a config file was added or removed: list it in SHIPPED with its schemas')


@pytest.mark.parametrize('name', sorted(SHIPPED))
def test_shipped_config_loads(name: str) -> None:
    loaded = check_config_file(CONFIG_DIR / name, SHIPPED[name])
    assert loaded, f'{name}: no section found'
    for section, cfg in loaded.items():
        assert isinstance(cfg, SHIPPED[name][section])


def test_pipeline_yaml_has_every_offline_section_at_defaults() -> None:
    loaded = check_config_file(CONFIG_DIR / 'pipeline.yaml', OFFLINE)
    assert set(loaded) == set(OFFLINE)
    for section, cfg in loaded.items():
        default = OFFLINE[section]().model_dump(mode='json')
        assert cfg.model_dump(mode='json') == default, (
            f'config/pipeline.yaml section {section!r} differs from the schema defaults: '
            'update the file (and docs/pipeline.md)')


def test_demo_yaml_overrides_take_effect() -> None:
    loaded = check_config_file(CONFIG_DIR / 'demo.yaml', OFFLINE)
    data = read_yaml(CONFIG_DIR / 'demo.yaml')
    assert loaded['pseudo_label'].clustering.k == data['pseudo_label']['clustering']['k']
    assert loaded['train'].max_steps == data['train']['max_steps']


def test_vocabulary_loads() -> None:
    vocab = load_vocabulary(CONFIG_DIR / 'vocabulary.yaml')
    assert len(vocab) >= 10
    assert all(prompts for prompts in vocab.values())


@pytest.mark.parametrize('text, match', [
    ('train:\n  batch_sise: 4\n', 'batch_sise'),  # unknown key
    ('pseudo_label:\n  clustering: {k: many}\n', 'clustering.k'),  # wrong type
    ('pseudo_lable:\n  every_n: 2\n', 'pseudo_lable'),  # unknown section
])
def test_check_rejects_bad_files(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / 'bad.yaml'
    path.write_text(text, encoding='utf-8')
    with pytest.raises(ConfigError, match=match):
        check_config_file(path, OFFLINE)


def test_check_reads_ros_parameter_files(tmp_path: Path) -> None:
    path = tmp_path / 'params.yaml'
    path.write_text('/**:\n  ros__parameters:\n    run:\n      threads: 3\n'
                    '    segmenterr: {}\n', encoding='utf-8')
    with pytest.raises(ConfigError, match='segmenterr'):
        check_config_file(path, NODES)
    path.write_text('/**:\n  ros__parameters:\n    run:\n      threads: 3\n', encoding='utf-8')
    assert check_config_file(path, NODES)['run'].threads == 3
