"""Launch files, parameter file, RViz config and Fast DDS profile, checked without `launch`.

`launch`/`launch_ros` are not installable here, so the launch files are parsed with `ast`:
every dsseg executable they start must be a console script of setup.py, every launch argument
they read must be declared (with a description), every shipped file they reference must exist
and parse, and every parameter of config/dsseg.yaml must validate against the node schemas.
"""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from dsseg_core.config import load_config
from dsseg_core.nodes_config import (
    BagPlayerConfig,
    CloudLabellerConfig,
    RecorderConfig,
    RunConfig,
    SegmenterNodeConfig,
)

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / 'launch').glob('*.launch.py'))


def _console_scripts() -> dict[str, str]:
    tree = ast.parse((ROOT / 'setup.py').read_text())
    scripts: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                re.fullmatch(r'\s*[\w-]+\s*=\s*[\w.]+:\w+\s*', node.value):
            name, target = (p.strip() for p in node.value.split('='))
            scripts[name] = target
    return scripts


def _call_name(call: ast.Call) -> str:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ''


def _kw(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


_NAMES: dict[str, str] = {}  # module-level string constants of the file being parsed


def _const(node) -> str | None:
    if isinstance(node, ast.Name):
        return _NAMES.get(node.id)
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


class LaunchInfo:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.tree = ast.parse(path.read_text(), filename=str(path))
        self.declared: dict[str, ast.Call] = {}
        self.used: set[str] = set()
        self.nodes: list[tuple[str | None, str | None]] = []
        self.share_paths: list[list[str]] = []
        self.included_args: dict[str, set[str]] = {}
        _NAMES.clear()
        for stmt in self.tree.body:
            if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant):
                for target in stmt.targets:
                    if isinstance(target, ast.Name) and isinstance(stmt.value.value, str):
                        _NAMES[target.id] = stmt.value.value
        for node in ast.walk(self.tree):
            if not isinstance(node, ast.Call):
                continue
            name = _call_name(node)
            if name == 'DeclareLaunchArgument':
                self.declared[_const(node.args[0])] = node
            elif name == 'LaunchConfiguration':
                self.used.add(_const(node.args[0]))
            elif name == 'Node':
                self.nodes.append((_const(_kw(node, 'package')), _const(_kw(node, 'executable'))))
            elif name == 'PathJoinSubstitution':
                parts = [_const(e) for e in node.args[0].elts[1:]]
                self.share_paths.append(parts)
            elif name == 'IncludeLaunchDescription':
                args = _kw(node, 'launch_arguments')
                dict_node = args.func.value if args is not None else None
                if isinstance(dict_node, ast.Dict):
                    self.included_args[ast.unparse(node.args[0])] = {
                        _const(k) for k in dict_node.keys}


@pytest.mark.parametrize('path', LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_references_exist_and_arguments_are_declared(path: Path) -> None:
    info = LaunchInfo(path)
    assert 'generate_launch_description' in {
        f.name for f in info.tree.body if isinstance(f, ast.FunctionDef)}
    scripts = _console_scripts()
    dsseg_nodes = [exe for pkg, exe in info.nodes if pkg == 'dsseg']
    assert all(pkg for pkg, _exe in info.nodes), 'a Node without a literal package'
    assert dsseg_nodes, 'the launch file starts no dsseg node'
    for exe in dsseg_nodes:
        assert exe in scripts, f'{path.name}: executable {exe!r} is not a console script'
        module, func = scripts[exe].split(':')
        source = ROOT / (module.replace('.', '/') + '.py')
        assert f'def {func}(' in source.read_text(), f'{scripts[exe]} does not exist'
    # Every LaunchConfiguration refers to a declared argument, which has a description.
    assert info.used <= set(info.declared), info.used - set(info.declared)
    for name, call in info.declared.items():
        description = _const(_kw(call, 'description')) or ''
        if not description and isinstance(_kw(call, 'description'), ast.BinOp):
            description = ast.unparse(_kw(call, 'description'))
        assert len(description) > 10, f'{path.name}: argument {name!r} needs a description'
    # Shipped files named through the package share dir exist (config/*, launch/*).
    assert info.share_paths
    for parts in info.share_paths:
        assert None not in parts and (ROOT.joinpath(*parts)).is_file(), parts
    # Included launch files get only arguments they declare.
    for target, args in info.included_args.items():
        included = next(p for p in LAUNCH_FILES if p.name in target)
        assert args <= set(LaunchInfo(included).declared), (target, args)


def test_replay_launch_requires_the_bag_and_uses_sim_time() -> None:
    info = LaunchInfo(ROOT / 'launch' / 'replay.launch.py')
    assert _kw(info.declared['bag'], 'default_value') is None  # required argument
    assert ('dsseg', 'bag_player') in info.nodes
    (args,) = info.included_args.values()
    assert {'use_sim_time', 'tf_static_bag', 'model', 'config'} <= args


def test_dsseg_yaml_is_a_ros_parameter_file_valid_for_every_node() -> None:
    path = ROOT / 'config' / 'dsseg.yaml'
    data = yaml.safe_load(path.read_text())
    assert list(data) == ['/**'] and 'ros__parameters' in data['/**']
    for schema, section in [(SegmenterNodeConfig, 'segmenter'),
                            (CloudLabellerConfig, 'cloud_labeller'),
                            (BagPlayerConfig, 'bag_player'), (RecorderConfig, 'recorder'),
                            (RunConfig, 'run')]:
        assert section in data['/**']['ros__parameters'], section
        cfg = load_config(schema, path, section=section)
        # Every key of the file is a field (extra='forbid' would have raised) and the file
        # lists every field, so the YAML documents all parameters.
        assert set(data['/**']['ros__parameters'][section]) == set(type(cfg).model_fields)


def test_fastdds_profile_has_a_64mb_shm_segment_and_localhost_udp() -> None:
    root = ET.parse(ROOT / 'config' / 'fastdds_shm.xml').getroot()
    ns = {'d': 'http://www.eprosima.com'}
    transports = {t.findtext('d:transport_id', namespaces=ns): t
                  for t in root.iterfind('.//d:transport_descriptor', ns)}
    kinds = {tid: t.findtext('d:type', namespaces=ns) for tid, t in transports.items()}
    assert sorted(kinds.values()) == ['SHM', 'UDPv4']
    shm = next(t for t in transports.values() if t.findtext('d:type', namespaces=ns) == 'SHM')
    assert int(shm.findtext('d:segment_size', namespaces=ns)) == 64 * 1024 * 1024
    udp = next(t for t in transports.values() if t.findtext('d:type', namespaces=ns) == 'UDPv4')
    assert [a.text for a in udp.iterfind('.//d:address', ns)] == ['127.0.0.1']
    participant = root.find('.//d:participant', ns)
    assert participant.get('is_default_profile') == 'true'
    assert participant.findtext('.//d:useBuiltinTransports', namespaces=ns) == 'false'
    used = [e.text for e in participant.iterfind('.//d:userTransports/d:transport_id', ns)]
    assert sorted(used) == sorted(transports)


def test_rviz_config_shows_the_overlay_and_the_cloud_coloured_by_rgb() -> None:
    data = yaml.safe_load((ROOT / 'config' / 'dsseg.rviz').read_text())
    displays = data['Visualization Manager']['Displays']
    by_class = {d['Class']: d for d in displays}
    image = by_class['rviz_default_plugins/Image']
    assert image['Topic']['Value'] == '/segmenter/overlay'
    cloud = by_class['rviz_default_plugins/PointCloud2']
    assert cloud['Topic']['Value'] == '/cloud_labeller/labelled_cloud'
    assert cloud['Color Transformer'] == 'RGB8'
    assert cloud['Topic']['Reliability Policy'] == 'Best Effort'
    assert data['Visualization Manager']['Global Options']['Fixed Frame'] == 'velo_link'


def test_docs_list_every_parameter() -> None:
    text = (ROOT / 'docs' / 'nodes.md').read_text()
    for schema, section in [(SegmenterNodeConfig, 'segmenter'),
                            (CloudLabellerConfig, 'cloud_labeller'),
                            (BagPlayerConfig, 'bag_player'), (RecorderConfig, 'recorder'),
                            (RunConfig, 'run')]:
        data = schema().model_dump()
        names = []
        stack = [(section, data)]
        while stack:
            prefix, node = stack.pop()
            for key, value in node.items():
                if section == 'cloud_labeller' and prefix == 'cloud_labeller.cameras':
                    key = '<name>'
                if isinstance(value, dict) and value:
                    stack.append((f'{prefix}.{key}', value))
                else:
                    names.append(f'{prefix}.{key}')
        for name in names:
            assert f'`{name}`' in text, f'docs/nodes.md does not document {name}'
