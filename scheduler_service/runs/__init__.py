"""The run path: a fire time claimed, executed, recorded, settled and notified.

``runner`` is the entry (read it first); ``claims``, ``execution``, ``outcomes`` and
``notifications`` are its steps in order; ``orchestration`` is the Claude tool-use loop
an orchestrated execution runs; ``recovery`` is what the leader puts right at start;
``slots`` is the FIFO concurrency limit.
"""
