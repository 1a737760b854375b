"""The tiny native LLaDA builder and the 'sudoku+countdown' task mixture (and its weights, 'sudoku+countdown*3')."""

from __future__ import annotations

import pytest
import torch

from dllmrl.config import ModelConfig
from dllmrl.errors import ConfigError, DataError
from dllmrl.models import load_model
from dllmrl.models.tiny_llada import TinyLladaConfig, build_llada_model, build_llada_tokenizer, build_tiny_llada
from dllmrl.tasks.base import Example, get_task
from dllmrl.tasks.mixture import Mixture, interleave_index

SMALL = TinyLladaConfig(hidden=32, layers=2, heads=2, intermediate=64, max_len=64)


@pytest.fixture(scope="module")
def llada_dir(tmp_path_factory) -> str:
    return str(build_tiny_llada(tmp_path_factory.mktemp("tiny-llada"), SMALL))


@pytest.fixture(scope="module")
def mix() -> Mixture:
    return get_task("sudoku+countdown")


# ---------------------------------------------------------------------------------------------- builder
def test_every_compact_prompt_and_answer_character_is_its_own_token(mix):
    tok = build_llada_tokenizer()
    examples = mix.load("validation", prompt_style="compact")
    for i in range(40):  # 20 of each pack
        ex = examples[i]
        for text in (ex.prompt, mix.sft_target(ex, "compact")):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            assert len(ids) == len(text) and tok.unk_token_id not in ids
            assert tok.decode(ids) == text


def test_tokenizer_uses_llada_special_tokens_and_a_one_token_role_template():
    tok = build_llada_tokenizer()
    assert (tok.mask_token, tok.bos_token, tok.eos_token) == ("<|mdm_mask|>", "<|startoftext|>", "<|endoftext|>")
    text = tok.apply_chat_template([{"role": "user", "content": "44 19 35 -> 98"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text == "<|startoftext|><|user|>\n44 19 35 -> 98<|eot_id|><|assistant|>\n"
    # BOS, role, newline, 14 characters, end of turn, role, newline
    assert len(tok(text, add_special_tokens=False)["input_ids"]) == 20


def test_built_model_loads_as_native_llada_with_its_mask_and_both_stop_tokens(llada_dir):
    adapter = load_model(ModelConfig(model=llada_dir, device="cpu", dtype="float32"))
    tok = adapter.tokenizer
    assert adapter.family == "llada"
    assert adapter.mask_id == tok.mask_token_id == adapter.model.config.mask_token_id
    assert set(adapter.eos_ids) == {tok.eos_token_id, tok.convert_tokens_to_ids("<|eot_id|>")}
    cfg = adapter.model.config
    assert (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.mlp_hidden_size, cfg.vocab_size) == (32, 2, 2, 64, len(tok))
    ids = torch.tensor([[tok.bos_token_id, adapter.mask_id, tok.eos_token_id]])
    assert adapter.logits(ids, torch.ones_like(ids)).shape == (1, 3, len(tok))


def test_builder_is_seeded():
    tok = build_llada_tokenizer()
    a, b = build_llada_model(tok, SMALL).state_dict(), build_llada_model(tok, SMALL).state_dict()
    c = build_llada_model(tok, TinyLladaConfig(**{**SMALL.__dict__, "seed": 1})).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.transformer.wte.weight"], c["model.transformer.wte.weight"])


# ---------------------------------------------------------------------------------------------- mixture
@pytest.mark.parametrize("lengths, order", [
    ((2, 2), [(0, 0), (1, 0), (0, 1), (1, 1)]),
    ((3, 1), [(0, 0), (1, 0), (0, 1), (0, 2)]),
    ((1, 0, 2), [(0, 0), (2, 0), (2, 1)]),
])
def test_interleave_takes_turns_then_finishes_the_longer_parts(lengths, order):
    assert [interleave_index(i, lengths) for i in range(sum(lengths))] == order
    with pytest.raises(IndexError):
        interleave_index(sum(lengths), lengths)


def test_mixture_splits_interleave_both_packs(mix):
    assert mix.name == "sudoku+countdown" and mix.splits()["test"] == 500 + 256
    val = mix.load("validation", prompt_style="compact")
    assert len(val) == 1000
    assert [val[i].meta["task"] for i in range(4)] == ["sudoku", "countdown", "sudoku", "countdown"]
    sudoku_val = get_task("sudoku").load("validation", prompt_style="compact")
    assert val[2].id == f"sudoku/{sudoku_val[1].id}" and val[2].prompt == sudoku_val[1].prompt
    # one split per pack: Sudoku's 'train' with Countdown's 'generated'
    train = mix.load("train+generated", prompt_style="compact")
    cd_gen = get_task("countdown").load("generated", prompt_style="compact")
    assert len(train) == 2_000_000 and train[1].target == cd_gen[0].target
    # 'train' (dllmrl train's prompts) is balanced: as many Sudoku puzzles as Countdown's 4,925 rows
    balanced = mix.load("train", prompt_style="compact")
    assert len(balanced) == mix.splits()["train"] == 2 * 4925
    assert [balanced[i].meta["task"] for i in (9848, 9849)] == ["sudoku", "countdown"]
    # the long test split of Sudoku (500) carries on alone after Countdown's 256
    assert [mix.load("test", prompt_style="compact")[i].meta["task"] for i in (511, 512, 755)] == ["countdown", "sudoku", "sudoku"]


@pytest.mark.parametrize("split, message", [
    ("generated", "split of task 'sudoku'"),
    ("train+generated+test", "names 3 splits for the 2 packs"),
])
def test_mixture_split_errors_name_the_pack(mix, split, message):
    with pytest.raises(ConfigError, match=message):
        mix.load(split, prompt_style="compact")


@pytest.mark.parametrize("lengths, weights, order", [
    # weights (1, 3): one of part 0, three of part 1, in turn
    ((2, 6), (1, 3), [(0, 0), (1, 0), (1, 1), (1, 2), (0, 1), (1, 3), (1, 4), (1, 5)]),
    # part 1 runs short in the second turn: its last item comes in order, then part 0 finishes
    ((3, 4), (1, 3), [(0, 0), (1, 0), (1, 1), (1, 2), (0, 1), (1, 3), (0, 2)]),
    ((4, 2), (2, 1), [(0, 0), (0, 1), (1, 0), (0, 2), (0, 3), (1, 1)]),
    ((2, 2), (1, 1), [(0, 0), (1, 0), (0, 1), (1, 1)]),  # all weights 1: plain turns
])
def test_weighted_interleave_takes_w_items_per_turn(lengths, weights, order):
    assert [interleave_index(i, lengths, weights) for i in range(sum(lengths))] == order
    with pytest.raises(IndexError):
        interleave_index(sum(lengths), lengths, weights)


def test_weighted_mixture_keeps_its_proportion_in_every_split():
    mix3 = get_task("sudoku+countdown*3")
    assert mix3.name == "sudoku+countdown*3" and mix3.weights == [1, 3]
    # validation: 500 of each pack -> m = 500 // 3 = 166 turns: 166 Sudoku, 498 Countdown
    val = mix3.load("validation", prompt_style="compact")
    assert len(val) == mix3.splits()["validation"] == 166 + 498
    assert [val[i].meta["task"] for i in range(5)] == ["sudoku", "countdown", "countdown", "countdown", "sudoku"]
    assert [val[i].id for i in (5, 663)] == ["countdown/validation-3", "countdown/validation-497"]
    # test: Countdown's 256 limit it to 85 turns (85 Sudoku, 255 Countdown)
    assert mix3.splits()["test"] == 85 + 255
    # SFT's split: a million of each -> 333,333 Sudoku and 999,999 Countdown, so a shuffled stream is 1:3 too
    assert len(mix3.load("train+generated", prompt_style="compact")) == 333_333 * 4


@pytest.mark.parametrize("name, message", [
    ("sudoku+countdown*0", r"^task 'sudoku\+countdown\*0': the weight of pack 'countdown' must be a whole number >= 1"),
    ("sudoku+countdown*x", r"\(got 'x'\), e.g. 'sudoku\+countdown\*3'$"),
    ("sudoku*1.5+countdown", r"weight of pack 'sudoku' .* \(got '1.5'\)"),
    ("sudoku+countdown*", r"\(got ''\)"),
    ("countdown*3", r"^task 'countdown\*3': a weight \('\*'\) only makes sense in a mixture"),
])
def test_bad_mixture_weights_are_one_clear_line(name, message):
    with pytest.raises(ConfigError, match=message) as err:
        get_task(name)
    assert "\n" not in str(err.value)


def test_mixture_refuses_weights_that_do_not_match_its_packs():
    with pytest.raises(ConfigError, match=r"one whole-number weight >= 1 per pack \(got \[1\]\)"):
        Mixture([get_task("sudoku"), get_task("countdown")], [1])


def test_each_example_is_scored_by_its_own_pack(mix):
    val = mix.load("validation", prompt_style="compact")
    sudoku_ex, countdown_ex = val[0], val[1]
    sudoku_gold, countdown_gold = mix.sft_target(sudoku_ex, "compact"), mix.sft_target(countdown_ex, "compact")
    assert mix.verify(sudoku_ex, sudoku_gold) and mix.verify(countdown_ex, countdown_gold)
    assert not mix.verify(sudoku_ex, countdown_gold) and not mix.verify(countdown_ex, sudoku_gold)
    rewards = mix.rewards()
    assert {n: w for n, (_f, w) in rewards.items()} == {
        "correct": 0.0, "sudoku.cell_accuracy": 1.0, "sudoku.correct": 0.0,
        "countdown.correct": 0.9, "countdown.format": 0.1}
    on_countdown = {n: f(countdown_ex, countdown_gold) for n, (f, _w) in rewards.items()}
    assert on_countdown == {"correct": 1.0, "sudoku.cell_accuracy": 0.0, "sudoku.correct": 0.0,
                            "countdown.correct": 1.0, "countdown.format": 1.0}
    assert rewards["sudoku.cell_accuracy"][0](sudoku_ex, sudoku_gold) == 1.0
    assert mix.details(countdown_ex, countdown_gold) == {"task": "countdown"}
    assert mix.details(sudoku_ex, sudoku_gold)["cells_correct"] == sudoku_ex.target["puzzle"].count("0")
    assert mix.gold_fields(sudoku_ex) == get_task("sudoku").gold_fields(sudoku_ex)
    records = [{"task": "sudoku", "correct": True}, {"task": "sudoku", "correct": False},
               {"task": "countdown", "correct": True}]
    assert mix.summary(records) == {"sudoku.accuracy": 0.5, "countdown.accuracy": 1.0}


def test_foreign_examples_and_repeated_packs_are_refused(mix):
    with pytest.raises(DataError, match="does not come from a pack"):
        mix.verify(Example("x", "", "1"), "1")
    with pytest.raises(ConfigError, match="names a pack twice"):
        get_task("sudoku+sudoku")
