"""``surgery list-passes``: one line per pass, then the presets."""
from __future__ import annotations

import argparse

from surgery.registry import list_passes, list_presets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--presets", action="store_true", help="also list the presets and their pipelines")


def run(args: argparse.Namespace) -> int:
    items = list_passes()
    width = max(len(p.name) for p in items)
    for p in items:
        print(f"{p.name:<{width}}  {p.summary}")
    if args.presets:
        print()
        for name, pipeline in list_presets().items():
            print(f"preset {name}: {pipeline}")
    return 0
