"""``dsseg gallery DATASET``: an HTML page + PNG contact sheet of every pseudo-class.

Shows image crops (mask tinted and outlined) and LiDAR top/side views per class, and writes an
editable ``classes.yaml`` in the dataset (one name per class) if there is none yet.
"""

from __future__ import annotations

import argparse

__all__ = ['register', 'run']


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        'gallery', help='HTML page + contact sheet of the pseudo-classes of a dataset',
        description='Writes gallery.html, contact_sheet.png and tiles/ with example crops and '
                    'LiDAR views per pseudo-class, so a person can name the classes in '
                    'DATASET/classes.yaml.')
    parser.add_argument('dataset', metavar='DATASET', help='folder made by dsseg pseudo-label')
    parser.add_argument('--out', metavar='DIR', help='output folder (default DATASET/gallery)')
    parser.add_argument('--per-class', type=int, default=6, metavar='N',
                        help='examples per class (default 6)')
    parser.add_argument('--max-samples', type=int, default=200, metavar='N',
                        help='samples scanned for examples (default 200, spread evenly)')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dsseg_core.pseudolabel.gallery import make_gallery

    res = make_gallery(args.dataset, args.out, per_class=args.per_class,
                       max_samples=args.max_samples)
    empty = [c for c, n in res.examples.items() if n == 0]
    print(f'gallery: {res.html}')
    print(f'contact sheet: {res.contact_sheet}')
    print(f'class names: {res.classes_yaml} (edit to name the classes)')
    if empty:
        print(f'classes without any example: {empty}')
    return 0
