"""Fixture VLMs: offline construction with real HF classes, and the shipped checkpoints' accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from monitor.fixtures.build import FAMILIES, LLAVA_CHAT_TEMPLATE, build_untrained
from monitor.fixtures.evaluate import EVAL_SEED, evaluate_model, evaluate_tasks, load_fixture
from monitor.fixtures.registry import FIXTURES, built_fixtures, fixture_dir
from monitor.fixtures.tokenizer import SPECIAL_TOKENS, vocabulary

EVAL_N = 1000  # held-out questions per split (~10 s a model on CPU): binomial noise +-1 point


@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("untrained")
    return {family: build_untrained(family, root / family, seed=0) for family in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_untrained_loads_back_offline_with_auto_classes(untrained, family: str):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = untrained[family]
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder, attn_implementation="eager")
    expected = {"llava": ("LlavaProcessor", "LlavaForConditionalGeneration"),
                "paligemma": ("PaliGemmaProcessor", "PaliGemmaForConditionalGeneration")}[family]
    assert (type(processor).__name__, type(model).__name__) == expected
    assert model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    img = Image.new("RGB", (64, 64), (200, 40, 40))
    if family == "llava":
        text = processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is there a red circle in the image?"}]}],
            add_generation_prompt=True,
        )
        # question before the image, whatever the order of the content items
        assert text.index("red circle") < text.index("<image>") < text.index("ASSISTANT:")
        enc = processor(images=img, text=text, return_tensors="pt")
    else:
        enc = processor(images=img, text="<image>Is there a red circle in the image?", return_tensors="pt")
        enc.pop("labels", None)
    image_id = SPECIAL_TOKENS.index("<image>")
    assert int((enc["input_ids"] == image_id).sum()) == 16  # patch 16 on 64 px
    out = model(**enc, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == model.config.text_config.num_hidden_layers + 1
    assert out.attentions and out.attentions[-1].shape[-1] == enc["input_ids"].shape[1]  # eager attention maps


def test_tokenizer_vocabulary_has_no_holes(untrained):
    from transformers import AutoTokenizer

    vocab = vocabulary()
    tok = AutoTokenizer.from_pretrained(untrained["llava"])
    assert [tok.convert_tokens_to_ids(t) for t in vocab] == list(range(len(vocab)))
    for word in ("yes", "no"):
        assert len(tok(word, add_special_tokens=False)["input_ids"]) == 1
    assert tok.chat_template == LLAVA_CHAT_TEMPLATE
    # PaliGemma's processor appends its 1,152 <loc>/<seg> tokens after ours
    pg = AutoTokenizer.from_pretrained(untrained["paligemma"])
    assert len(pg) == len(vocab) + 1152 and pg.convert_tokens_to_ids("yes") == vocab.index("yes")
    # the tasks' words come after the first vocabulary, whose ids stay as they were
    first = vocabulary(tasks=False)
    assert vocab[: len(first)] == first and len(vocab) > len(first)
    for word in ("2", "none", "shapes"):
        assert word not in first and len(tok(word, add_special_tokens=False)["input_ids"]) == 1
        assert tok.convert_tokens_to_ids(word) != tok.unk_token_id


@pytest.mark.parametrize("family", ["llava", "paligemma"])
def test_grow_vocabulary_keeps_every_trained_row(tmp_path: Path, family: str):
    """Rows are matched by token string (PaliGemma's <loc> tokens move up by the new words), the
    output head stays tied, and the grown model saves and loads back at its new size."""
    from transformers import AutoModelForImageTextToText

    from monitor.fixtures.build import build_model, build_processor, grow_vocabulary

    old, new = build_processor(family, tasks=False).tokenizer, build_processor(family).tokenizer
    model = build_model(family, len(old))
    before = model.get_input_embeddings().weight.detach().clone()
    assert grow_vocabulary(model, old, new, seed=0) == len(new) - len(old)
    after = model.get_input_embeddings().weight
    ov, nv = old.get_vocab(), new.get_vocab()
    assert all(torch.equal(after[nv[t]], before[ov[t]]) for t in ov)
    assert model.get_output_embeddings().weight.data_ptr() == after.data_ptr()
    fresh = torch.stack([after[nv[t]] for t in nv if t not in ov])
    assert fresh.std() > 0 and not torch.equal(fresh[0], fresh[1])
    model.save_pretrained(tmp_path)
    back = AutoModelForImageTextToText.from_pretrained(tmp_path, attn_implementation="eager")
    assert torch.equal(back.get_input_embeddings().weight, after.detach())


def test_unknown_family_is_named(tmp_path: Path):
    with pytest.raises(ValueError, match="qwen.*llava, paligemma"):
        build_untrained("qwen", tmp_path)


def test_training_is_deterministic_by_seed(tmp_path: Path):
    from safetensors.torch import load_file

    from monitor.fixtures.train import Phase, Recipe, train_fixture

    recipe = Recipe(batch_size=8, warmup=2, eval_n=4, phases=(
        Phase("plain", "plain", 3, 1e-3), Phase("prior", "prior", 2, 1e-3), Phase("tasks", "tasks", 2, 1e-3, warmup=1)))
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        train_fixture("llava", tmp_path / name, seed=seed, recipe=recipe)
    a, b, c = (load_file(tmp_path / n / "model.safetensors") for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    info = json.loads((tmp_path / "a" / "build_info.json").read_text())
    assert [p["name"] for p in info["phases"]] == ["plain", "prior", "tasks"] and info["seed"] == 0
    assert a["language_model.model.embed_tokens.weight"].shape[0] == len(vocabulary())  # grown for the tasks


def test_fixture_list_cli(capsys):
    from monitor.cli import main

    assert main(["fixture", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert set(listed) == set(built_fixtures()) == set(FIXTURES)
    for name, row in listed.items():
        assert row["family"] == FIXTURES[name] and Path(row["path"]) == fixture_dir(name)


@pytest.fixture(scope="module")
def shipped_accuracy() -> dict[str, dict]:
    torch.manual_seed(0)
    result = {}
    for name in FIXTURES:
        model, processor, family = load_fixture(fixture_dir(name))
        result[name] = evaluate_model(model, processor, family, n=EVAL_N, seed=EVAL_SEED, splits=("random", "adversarial"))
    return result


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_shipped_checkpoint_accuracy_bands(shipped_accuracy, name: str):
    acc = shipped_accuracy[name]
    # imperfect on purpose: good on random negatives, worse on adversarial ones, biased to "yes" there
    assert 0.75 <= acc["random"] <= 0.92, acc
    assert acc["adversarial"] <= acc["random"] - 0.05, acc
    assert acc["yes_ratio"]["adversarial"] > 0.5, acc
    assert acc["yes_ratio"]["adversarial"] > acc["yes_ratio"]["random"], acc


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_shipped_checkpoint_free_form_task_bands(name: str):
    """The per-task bands RECIPES.md records (issue #12): captions mostly right and wrong where the
    co-occurrence prior names a partner that is not there, almost never otherwise; counts, colours
    and lists trained (an untrained task scores near 0 here)."""
    from monitor.adapter import load_vlm

    adapter = load_vlm(fixture_dir(name), device="cpu", dtype="float32")
    rows = evaluate_tasks(adapter, n=200, seed=EVAL_SEED)
    describe = rows["describe"]
    assert 0.60 <= describe["accuracy"] <= 0.85, describe
    assert 0.10 <= describe["chair_s"] <= 0.35, describe
    assert describe["chair_s_partner_absent"] >= 0.2 and describe["chair_s_partner_present"] <= 0.05, describe
    assert rows["count"]["accuracy"] >= 0.85, rows
    assert rows["attribute"]["accuracy"] >= 0.90, rows
    assert rows["list"]["accuracy"] >= 0.75, rows


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_shipped_checkpoint_records_its_build(name: str):
    info = json.loads((fixture_dir(name) / "build_info.json").read_text())
    assert info["family"] == FIXTURES[name] and info["seed"] == 0
    assert [p["name"] for p in info["phases"]] == ["plain", "prior", "settle", "tasks", "tasks-settle"]
    assert set(info["tasks_eval"]) == {"describe", "count", "attribute", "list"}
    assert (fixture_dir(name) / "model.safetensors").stat().st_size < 3_000_000


def test_fixture_eval_cli_json(capsys):
    from monitor.cli import main

    assert main(["fixture", "eval", "--json", "--n", "40", "--task-n", "40", "--fixture", "tiny-llava"]) == 0
    result = json.loads(capsys.readouterr().out)
    row = result["tiny-llava"]
    assert set(row) == {"random", "popular", "adversarial", "yes_ratio", "tasks"}
    assert set(row["tasks"]) == {"describe", "count", "attribute", "list"}
    assert row["tasks"]["describe"]["n"] == 40 and 0.5 < row["tasks"]["describe"]["accuracy"] <= 1.0
    assert set(row["yes_ratio"]) == {"random", "popular", "adversarial"}
    assert all(0.5 < row[s] <= 1.0 for s in ("random", "popular", "adversarial"))
    assert main(["fixture", "eval", "--n", "0"]) == 2
    assert main(["fixture", "eval", "--tasks", "describe,caption"]) == 2
    assert "unknown task(s) caption" in capsys.readouterr().err
    assert main(["fixture", "eval", "--fixture", "no-such-model"]) == 1
    assert "vlmwatch fixture: 'no-such-model' is neither a fixture name" in capsys.readouterr().err
