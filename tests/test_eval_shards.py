"""Sharded evaluation: N processes write exactly the records of one; lost shards are found and completed."""

from __future__ import annotations

import json

import pytest

from dllmrl.evaluation.loop import EvalConfig, evaluate, read_records
from dllmrl.evaluation.shards import plan_batches, shard_path


def _task():
    from dllmrl.tasks.base import get_task

    return get_task("countdown")


def _cfg(out, **kw) -> EvalConfig:
    # countdown's compact prompts differ in length, so buckets and padding really change the batches
    return EvalConfig(task="countdown", gen_lens=(16,), block_len=16, prompt_style="compact", limit=7,
                      batch_size=2, out=str(out), **kw)


def _strip(recs):
    """Records without their timing, the one field that may differ between runs."""
    return [{k: v for k, v in r.items() if k != "gen_seconds"} for r in recs]


def test_plan_batches_sorts_by_length_and_keeps_every_index_once():
    # lengths 5,3,5,1 -> by (length, index): 3, 1, 0, 2
    assert plan_batches([5, 3, 5, 1], 2) == [[3, 1], [0, 2]]
    assert plan_batches([5, 3, 5, 1], 3, bucket=False) == [[0, 1, 2], [3]]
    assert plan_batches([], 4) == []


def test_buckets_change_neither_the_records_nor_their_order(tiny, tmp_path):
    task = _task()
    plain = evaluate(task, tiny, _cfg(tmp_path / "plain", bucket=False))
    bucketed = evaluate(task, tiny, _cfg(tmp_path / "bucket"))
    a, b = read_records(tmp_path / "plain/records.jsonl"), read_records(tmp_path / "bucket/records.jsonl")
    ids = [ex.id for ex in task.load("test", prompt_style="compact")[:7]]
    assert [r["id"] for r in b] == ids  # example order, not bucket order
    assert len({len(r["prompt"]) for r in b}) > 1  # the prompts really have different lengths
    assert _strip(a) == _strip(b)
    assert plain.lengths[0].correct == bucketed.lengths[0].correct
    assert not (tmp_path / "bucket/shards/rank0.jsonl").exists()  # folded in, then deleted


def _two_process_eval(tiny, out):
    """Body of each process under accelerate.debug_launcher (fork: the parent's tiny model is shared)."""
    from accelerate import PartialState

    from dllmrl.evaluation.shards import Ranks

    PartialState(cpu=True)
    assert Ranks.current().world == 2
    evaluate(_task(), tiny, _cfg(out))


@pytest.mark.slow
def test_two_processes_write_exactly_the_records_of_one(tiny, tmp_path):
    from accelerate import debug_launcher

    evaluate(_task(), tiny, _cfg(tmp_path / "one"))
    debug_launcher(lambda: _two_process_eval(tiny, tmp_path / "two"), num_processes=2)
    one, two = read_records(tmp_path / "one/records.jsonl"), read_records(tmp_path / "two/records.jsonl")
    assert len(two) == 7 and len({r["id"] for r in two}) == 7  # each example exactly once
    assert _strip(one) == _strip(two)
    assert json.loads((tmp_path / "two/results.json").read_text())["lengths"][0]["n"] == 7
    assert not list((tmp_path / "two/shards").glob("*.jsonl"))


def test_a_lost_or_partial_shard_is_reported_then_completed_on_rerun(tiny, tmp_path, monkeypatch):
    import dllmrl.evaluation.loop as loop

    task = _task()
    full = evaluate(task, tiny, _cfg(tmp_path / "ref"))
    # A process that dies silently: its batches never reach a shard.
    real = loop._generate
    monkeypatch.setattr(loop, "_generate", lambda run, scfg, settings, batches, *a: real(run, scfg, settings, batches[1:], *a))
    with pytest.raises(loop.DataError, match="examples have no record after this run.*Rerun the same command"):
        evaluate(task, tiny, _cfg(tmp_path / "x"))
    monkeypatch.setattr(loop, "_generate", real)
    assert len(read_records(tmp_path / "x/records.jsonl")) == 5
    # A shard left half-written by a killed process (torn last line) is folded in on the rerun.
    ref = read_records(tmp_path / "ref/records.jsonl")
    got = {r["id"] for r in read_records(tmp_path / "x/records.jsonl")}
    lost = [r for r in ref if r["id"] not in got]
    shard = shard_path(tmp_path / "x", 1)
    shard.parent.mkdir(exist_ok=True)
    shard.write_text(json.dumps(lost[0]) + "\n" + json.dumps(lost[1])[:40])
    res = evaluate(task, tiny, _cfg(tmp_path / "x"))
    assert res.lengths[0].generated == 1  # the torn record is generated again, the whole one is kept
    assert sorted(map(json.dumps, _strip(read_records(tmp_path / "x/records.jsonl")))) == \
        sorted(map(json.dumps, _strip(ref)))
    assert res.lengths[0].correct == full.lengths[0].correct
