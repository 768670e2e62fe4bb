"""create/get/update/delete per second, the service beside bare APScheduler, in seconds.

``python -m bench.crud_quick [--ops 500] [--reps 2]``

The same measure as ``bench.run``'s create/get/update/delete rows (sequential calls
through ``scheduler_tool`` on a fresh SQLite file; bare: ``add_job`` + one row, and so
on), without the rest of the full run: for checking a change to the create path.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from bench.run import bare_crud, project_crud, sqlite_url


async def main(ops: int, reps: int) -> None:
    with tempfile.TemporaryDirectory() as work:
        for rep in range(reps):
            mine = await project_crud(sqlite_url(Path(work) / f"crud-{rep}.db"), ops)
            bare = bare_crud(f"sqlite:///{Path(work) / f'bare-{rep}.db'}", ops)
            for op, rate in mine.items():
                print(f"rep {rep + 1} {op:6s} {rate:7.0f}/s   bare {bare[op]:7.0f}/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=500, help="operations of each kind")
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.ops, args.reps))
