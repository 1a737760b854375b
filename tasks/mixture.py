"""A mixture of task packs, named by joining them with '+': ``get_task("sudoku+countdown")``.

    mix = get_task("sudoku+countdown")
    mix.load("train+generated", prompt_style="compact")   # Sudoku's 'train' with Countdown's 'generated'
    mix.load("validation", prompt_style="compact")        # both packs' 'validation'

Weights: ``"sudoku+countdown*3"`` draws Countdown three times as often as Sudoku. A weighted
mixture interleaves the packs in cycles of ``w`` examples from each pack (weights (1, 3): one Sudoku,
three Countdown, one Sudoku, ...) and keeps the proportion exactly in every split: each pack gives
``w * m`` examples, m the largest count every pack can afford (so a shuffled SFT stream also sees
1:3). Without weights the packs take turns one example each and nothing is left out.

Splits: a plain name (``validation``) takes that split of every pack, so it must exist in all of
them; ``a+b`` names one split per pack, in the mixture's order (``train+generated``). The packs'
examples are interleaved: one from each pack in turn while every pack has some left, then
the rest of the longer ones in turn, so ``--limit`` and SFT's shuffled stream see all packs.
``train`` (what ``dllmrl train`` samples its prompts from) is balanced instead: each pack gives
as many examples as the smallest one has (Countdown's 4,925 rows against Sudoku's million), so
the packs are drawn equally often.

Every example remembers its pack (``meta["task"]``, and its id becomes ``"sudoku/<id>"``), and
``verify``, ``sft_target``, ``details`` and the rewards hand it to that pack: each prompt is
scored by its own pack. Rewards are named ``"<pack>.<reward>"`` with the pack's weight (0 on
the other packs' examples), so each example's training reward is exactly its pack's weighted
sum; ``"correct"`` (weight 0: logged, and ``--reward-weight correct=1`` makes it count) is
``verify`` of the example's own pack. A mixture of packs with different prefills, or no prompt
style in common, is refused.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Mapping, Sequence

from dllmrl.errors import ConfigError, DataError
from dllmrl.tasks.base import Example, RewardFn, TaskBase, check_choice
from dllmrl.tasks.common import LazySplit

SEP = "+"
WEIGHT = "*"


def parse_pack(part: str, mixture: str) -> tuple[str, int]:
    """``"countdown*3"`` -> ("countdown", 3); ``"sudoku"`` -> ("sudoku", 1); ConfigError for a bad weight."""
    name, star, weight = part.partition(WEIGHT)
    if not star:
        return name, 1
    if not weight.isdigit() or int(weight) < 1:
        raise ConfigError(f"task '{mixture}': the weight of pack '{name}' must be a whole number >= 1 after "
                          f"'{WEIGHT}' (got '{weight}'), e.g. 'sudoku{SEP}countdown{WEIGHT}3'")
    return name, int(weight)


def interleave_index(i: int, lengths: Sequence[int], weights: Sequence[int] | None = None) -> tuple[int, int]:
    """Position ``i`` of the interleaved sequence -> (part, index within that part).

    Round robin over the parts that still have items: lengths (3, 1) give (0,0) (1,0) (0,1) (0,2).
    Weights take ``w`` items of a part per turn: part k is split into w_k lanes (lane r holds its
    items r, r + w_k, ...) and the lanes take turns, so lengths (2, 4) with weights (1, 3) give
    (0,0) (1,0) (1,1) (1,2) (0,1) (1,3).
    """
    if weights is not None and any(w != 1 for w in weights):
        lanes = [(k, r, w) for k, w in enumerate(weights) for r in range(w)]
        lane, j = interleave_index(i, [max(0, -(-(lengths[k] - r) // w)) for k, r, w in lanes])
        k, r, w = lanes[lane]
        return k, r + j * w
    live = [k for k, n in enumerate(lengths) if n > 0]
    done = 0  # items each live part has already given
    while live:
        shortest = min(lengths[k] for k in live) - done
        if i < shortest * len(live):
            return live[i % len(live)], done + i // len(live)
        i -= shortest * len(live)
        done += shortest
        live = [k for k in live if lengths[k] > done]
    raise IndexError("interleaved position past the end")


class Mixture(TaskBase):
    """Several packs behind the one-pack interface; see the module docstring."""

    headline = "accuracy"

    def __init__(self, tasks: Sequence[TaskBase], weights: Sequence[int] | None = None):
        super().__init__()
        if len(tasks) < 2:
            raise ConfigError("a task mixture needs at least two packs, e.g. 'sudoku+countdown'")
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ConfigError(f"task '{SEP.join(names)}' names a pack twice; name each pack once")
        weights = list(weights) if weights is not None else [1] * len(tasks)
        if len(weights) != len(tasks) or any(not isinstance(w, int) or w < 1 for w in weights):
            raise ConfigError(f"task '{SEP.join(names)}': give one whole-number weight >= 1 per pack (got {weights})")
        self.tasks = {t.name: t for t in tasks}
        self.weights = weights
        self.weighted = any(w != 1 for w in weights)
        self.name = SEP.join(n if w == 1 else f"{n}{WEIGHT}{w}" for n, w in zip(names, weights))
        self.prompt_styles = tuple(s for s in tasks[0].prompt_styles if all(s in t.prompt_styles for t in tasks))
        if not self.prompt_styles:
            raise ConfigError(f"task '{self.name}': its packs have no prompt style in common")
        for style in self.prompt_styles:
            prefills = {t.prefill_for(style) for t in tasks}
            if len(prefills) > 1:
                raise ConfigError(f"task '{self.name}': its packs prefill prompt style '{style}' differently "
                                  f"({sorted(prefills)}); a mixture needs one prefill per style")
        self.prefill = tasks[0].prefill
        shared = [s for s in tasks[0].splits() if all(s in t.splits() for t in tasks)]
        self.eval_split = "test" if "test" in shared else shared[0] if shared else ""

    # ------------------------------------------------------------ splits and prompts
    def splits(self) -> Mapping[str, int]:
        """The split names every pack has, with the interleaved sizes ('a+b' names are accepted by load too)."""
        first = next(iter(self.tasks.values()))
        shared = [s for s in first.splits() if all(s in t.splits() for t in self.tasks.values())]
        return {s: sum(self._lengths(s, [t.splits()[s] for t in self.tasks.values()])) for s in shared}

    def _lengths(self, split: str, lengths: list[int]) -> list[int]:
        """How many examples each pack gives: all of them, except in the balanced 'train' split and in
        every split of a weighted mixture, where pack k gives w_k * m (m: the most every pack affords)."""
        if split != "train" and not self.weighted:
            return lengths
        m = min(n // w for n, w in zip(lengths, self.weights))
        return [w * m for w in self.weights]

    def member_splits(self, split: str) -> list[str]:
        """The split of each pack that ``split`` names, in the mixture's order; ConfigError when one is missing."""
        parts = split.split(SEP) if SEP in split else [split] * len(self.tasks)
        if len(parts) != len(self.tasks):
            raise ConfigError(f"--split '{split}' names {len(parts)} splits for the {len(self.tasks)} packs of "
                              f"'{self.name}'; give one per pack ('a{SEP}b') or one name all of them have")
        for part, task in zip(parts, self.tasks.values()):
            check_choice(part, list(task.splits()), what=f"split of task '{task.name}'", option="--split")
        return parts

    def load(self, split: str, prompt_style: str = "eval") -> Sequence[Example]:
        check_choice(prompt_style, list(self.prompt_styles), what=f"prompt style of task '{self.name}'",
                     option="--prompt-style")
        packs = list(self.tasks.values())
        parts = [t.load(s, prompt_style=prompt_style) for t, s in zip(packs, self.member_splits(split))]
        lengths = self._lengths(split, [len(p) for p in parts])

        def make(i: int) -> Example:
            k, j = interleave_index(i, lengths, self.weights)
            ex = parts[k][j]
            return Example(f"{packs[k].name}/{ex.id}", ex.prompt, ex.target, {**ex.meta, "task": packs[k].name})

        return LazySplit(sum(lengths), make)

    def prefill_for(self, prompt_style: str) -> str:
        return next(iter(self.tasks.values())).prefill_for(prompt_style)

    def pack_of(self, ex: Example) -> TaskBase:
        """The pack an example of this mixture came from."""
        name = ex.meta.get("task")
        if name not in self.tasks:
            raise DataError(f"example '{ex.id}' does not come from a pack of '{self.name}' (meta task={name!r})")
        return self.tasks[name]

    # ------------------------------------------------------------ scoring, each example by its own pack
    def sft_target(self, ex: Example, prompt_style: str) -> str:
        return self.pack_of(ex).sft_target(ex, prompt_style)

    def extract(self, completion: str) -> str | None:
        """Without the example the pack is unknown: the first pack's answer that parses (for records only;
        verify and the rewards always use the example's own pack)."""
        for task in self.tasks.values():
            answer = task.extract(completion)
            if answer is not None:
                return answer
        return None

    def verify(self, ex: Example, completion: str) -> bool:
        return bool(self.pack_of(ex).verify(ex, completion))

    def rewards(self) -> Mapping[str, tuple[RewardFn, float]]:
        out: dict[str, tuple[RewardFn, float]] = {"correct": (self._correct, 0.0)}
        for pname, task in self.tasks.items():
            for rname, (fn, weight) in task.rewards().items():
                out[f"{pname}.{rname}"] = (partial(self._pack_reward, pname, fn), weight)
        return out

    def _correct(self, ex: Example, completion: str) -> float:
        return 1.0 if self.verify(ex, completion) else 0.0

    def _pack_reward(self, pname: str, fn: RewardFn, ex: Example, completion: str) -> float:
        return float(fn(ex, completion)) if self.pack_of(ex).name == pname else 0.0

    # ------------------------------------------------------------ extras, by the example's pack
    def details(self, ex: Example, completion: str) -> dict[str, Any]:
        pack = self.pack_of(ex)
        return {"task": pack.name, **pack.details(ex, completion)}

    def gold_fields(self, ex: Example) -> dict[str, Any]:
        return self.pack_of(ex).gold_fields(ex)

    def summary(self, records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        """Accuracy per pack (``<pack>.accuracy``), from the records' ``task`` field."""
        out: dict[str, float] = {}
        for name in self.tasks:
            mine = [r for r in records if r.get("task") == name]
            if mine:
                out[f"{name}.accuracy"] = sum(bool(r.get("correct")) for r in mine) / len(mine)
        return out
