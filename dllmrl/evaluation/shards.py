"""Splitting an evaluation over the processes of ``torchrun`` / ``accelerate launch``.

    torchrun --standalone --nproc_per_node 2 -m dllmrl.cli eval sudoku --model checkpoints/tiny-llada

The examples still to do are cut into batches the same way whatever the number of processes (sorted by
prompt length, so a batch holds prompts of similar length and little padding); batch ``i`` goes to rank
``i % world``. A batch's sampling seed depends only on its examples, so N processes write exactly the
records one process would. Each rank appends to its own ``shards/rank<R>.jsonl``; rank 0 then folds
every shard into ``records.jsonl`` in example order and deletes them. Shards left by a killed run are
folded in at the start of the next one, and the examples they lack are generated again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from dllmrl.evaluation.records import fold_in, read_records

SHARDS = "shards"


@dataclass(frozen=True)
class Ranks:
    """This process's place in a launch (rank 0 of 1 without one) and the collectives the loop needs."""

    rank: int = 0
    world: int = 1

    @staticmethod
    def current() -> "Ranks":
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return Ranks(dist.get_rank(), dist.get_world_size())
        return Ranks()

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def share(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (an error message, so all ranks stop together)."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def run_on_main(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on rank 0; an exception there is raised on every rank (no rank waits forever)."""
        err = None
        if self.main:
            try:
                fn()
            except Exception as e:  # handed to the other ranks, then raised here as it was
                err = e
        shared = self.share(None if err is None else (type(err), str(err)))
        if err is not None:
            raise err
        if shared is not None:
            raise shared[0](shared[1])


def plan_batches(lengths: Sequence[int], batch_size: int, *, bucket: bool = True) -> list[list[int]]:
    """Batches of indices into ``lengths`` (prompt token counts): by length when ``bucket``, else in order."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i)) if bucket else list(range(len(lengths)))
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


def shard_path(out: Path, rank: int) -> Path:
    return out / SHARDS / f"rank{rank}.jsonl"


def fold_shards(out: Path, records: Path, order: Sequence[str]) -> int:
    """Fold every shard under ``out`` into ``records`` (rank 0 only), then delete the shards; returns rows added."""
    shards = sorted((out / SHARDS).glob("rank*.jsonl")) if (out / SHARDS).is_dir() else []
    rows = [r for p in shards for r in read_records(p)]
    added = fold_in(records, rows, order) if rows else 0
    for p in shards:  # only after the records are safely in records.jsonl: a crash before this re-folds them
        p.unlink()
    if shards and not any((out / SHARDS).iterdir()):
        (out / SHARDS).rmdir()
    return added


def join_launch(device: str) -> str:
    """Under ``torchrun`` / ``accelerate launch`` (WORLD_SIZE > 1): join the process group, return this rank's device.

    Without a GPU (or with ``--device cpu``) the group uses gloo on the CPU; a plain launch without
    ``cpu=True`` would start processes that never talk to each other. Outside a launch ``device`` is returned as is.
    """
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=device == "cpu" or not torch.cuda.is_available())
    return str(state.device)
