"""Counting instructions with valgrind's callgrind, for a window chosen at run time.

A process started under ``VALGRIND`` runs uninstrumented (``--instr-atstart=no``) until
``switch`` turns instrumentation on; switched off again, the count covers only that
window. The host's load barely moves such a count, where CPU seconds drift by ±20%.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

VALGRIND = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]


def switch(pids: Sequence[int], state: str) -> None:
    """Turn callgrind's instrumentation of these processes ``on`` or ``off``, all at once
    (one ``callgrind_control`` takes ~0.4 s). It exits 0 even when it reached no
    process, so its answer is read."""
    controls = [
        subprocess.Popen(
            ["callgrind_control", "-i", state, str(pid)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for pid in pids
    ]
    for control in controls:
        answer, _ = control.communicate(timeout=60)
        if "OK." not in answer:
            raise RuntimeError(f"callgrind_control -i {state}: {answer.strip()}")
