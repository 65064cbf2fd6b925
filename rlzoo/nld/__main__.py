"""`python -m rlzoo.nld DIR`: index a directory of ttyrecs with nle.dataset (into DIR/ttyrecs.db),
the dataset that `algo=bc algo.dataset=DIR` and `algo.bc_aux.dataset=DIR` train on.

    python -m rlzoo.nld runs/…/ttyrecs                    # NLE recordings (env.save_ttyrec_every)
    python -m rlzoo.nld /data/nld-nao --layout altorg      # alt.org games (screens only, no actions)
"""
from __future__ import annotations

import argparse
import sys

from rlzoo.nld.dataset import LAYOUTS, build_dataset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rlzoo.nld", description=__doc__.splitlines()[0])
    parser.add_argument("directory", help="the ttyrec directory (layout nle: <subdir>/nle.<pid>.xlogfile + ttyrecs)")
    parser.add_argument("--layout", choices=LAYOUTS, default="nle")
    parser.add_argument("--name", default="rlzoo", help="the dataset's name in the index")
    parser.add_argument("--overwrite", action="store_true", help="rebuild an existing index")
    args = parser.parse_args(argv)
    try:
        dataset = build_dataset(args.directory, name=args.name, layout=args.layout, overwrite=args.overwrite)
    except ValueError as err:
        sys.exit(f"python -m rlzoo.nld: error: {err}")
    print(f"indexed {dataset.num_games} games (ttyrec version {dataset.ttyrec_version}) as dataset "
          f"{dataset.name!r} in {dataset.db_path}")


if __name__ == "__main__":
    main()
