"""``dsseg name-classes GALLERY --vocabulary V --clip MODEL``: name pseudo-classes with CLIP."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ['register', 'run']


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        'name-classes', help='name pseudo-classes from their gallery crops with CLIP',
        description='Scores every pseudo-class crop of GALLERY (dsseg gallery output, or '
                    'crops/<class_id>/*.png) against the text prompts of a vocabulary with an '
                    'open_clip model and writes {class_id: name}. Gallery naming by hand stays '
                    'the alternative: edit the dataset classes.yaml.')
    parser.add_argument('gallery', metavar='GALLERY', help='gallery folder')
    parser.add_argument('--vocabulary', required=True, metavar='FILE',
                        help='YAML class -> prompts (see config/vocabulary.yaml)')
    parser.add_argument('--clip', metavar='MODEL',
                        help='open_clip model name (e.g. ViT-B-16) or a model-config .json')
    parser.add_argument('--pretrained', metavar='TAG|FILE',
                        help="open_clip pretrained tag (must be in the local cache) or a local "
                             "weights file; 'none' = random init (testing only)")
    parser.add_argument('--out', metavar='FILE',
                        help='naming YAML to write (default GALLERY/names.yaml)')
    parser.add_argument('--config', metavar='FILE', help='YAML with a naming: section')
    parser.add_argument('--classes', metavar='FILE',
                        help='existing classes.yaml: names of classes without crops are kept')
    parser.add_argument('--assignment', choices=['argmax', 'hungarian'],
                        help='argmax (names may repeat, default) or one name per class')
    parser.add_argument('--device', help='torch device (default cpu)')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dsseg_core.config import load_config, read_yaml
    from dsseg_core.errors import ConfigError
    from dsseg_core.points3d.naming import (
        NamingConfig,
        load_clip,
        load_vocabulary,
        name_classes,
        write_naming,
    )

    overrides = {'clip_model': args.clip, 'assignment': args.assignment, 'device': args.device}
    cfg = load_config(NamingConfig, args.config, section='naming', overrides=overrides)
    if args.pretrained is not None:
        cfg.pretrained = None if args.pretrained.lower() == 'none' else args.pretrained
    vocab = load_vocabulary(args.vocabulary)
    base = {}
    if args.classes:
        data = read_yaml(args.classes) or {}
        if not isinstance(data, dict):
            raise ConfigError(f'{args.classes}: expected a mapping {{id: name}}')
        base = {int(k): str(v) for k, v in data.items()}
    bundle = load_clip(cfg.clip_model, cfg.pretrained, cfg.device)
    result = name_classes(args.gallery, vocab, bundle, cfg)
    out = Path(args.out) if args.out else Path(args.gallery) / 'names.yaml'
    write_naming(out, result, base)
    for row, cid in enumerate(result.class_ids):
        name = result.names[cid]
        score = float(result.scores[row, result.vocabulary.index(name)])
        print(f'{cid:3d} -> {name} ({score:.3f}, {result.num_crops[cid]} crops)')
    print(f'wrote {out}')
    return 0
