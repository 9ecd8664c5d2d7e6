"""The sentence-embedding answer equivalence: a tiny sentence-transformers folder built here,
loaded offline through monitor.spotcheck.embedding_equivalence, its grouping, its config and its
errors, and the daemon's spot-check run with it on the shipped tiny LLaVA."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from sqlalchemy import delete, select, update

from monitor.config import ConfigError, Settings, load_config
from monitor.spotcheck.answers import content_words, group_stats
from monitor.spotcheck.embedding_equivalence import (EmbeddingEquivalence, EmbeddingModelError, SentenceEmbedder,
                                                     check_layout, load_embedding_equivalence)
from tests.spotcheck.st_folder import CONTENT, HIDDEN, _hadamard, build_st_folder

DIRS = _hadamard(HIDDEN)


def _d(*words: str) -> torch.Tensor:
    return sum(DIRS[CONTENT[w]] for w in words)


@pytest.fixture(scope="module")
def semantic(tmp_path_factory):
    return build_st_folder(tmp_path_factory.mktemp("st") / "semantic", semantic=True)


@pytest.fixture(scope="module")
def semantic_eq(semantic):
    return EmbeddingEquivalence(SentenceEmbedder(semantic), threshold=0.85)


def test_random_weights_load_offline_and_embed_unit_vectors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = ["a red circle", "two dogs and a cat with a small green square", "yes"]
    unit = SentenceEmbedder(build_st_folder(tmp_path / "norm", seed=1))
    x = unit.embed(texts)
    assert x.shape == (3, HIDDEN) and x.dtype == torch.float32
    assert torch.allclose(x.norm(dim=-1), torch.ones(3), atol=1e-5)
    raw = SentenceEmbedder(build_st_folder(tmp_path / "raw", seed=1, normalize=False)).embed(texts)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(3), atol=1e-2)  # no Normalize module: raw means
    assert torch.allclose(torch.nn.functional.normalize(raw, dim=-1), x, atol=1e-5)  # same weights, same direction
    assert (x[0] @ x[1]).abs() < 0.999  # different sentences, different embeddings


def test_pooling_modes_match_their_closed_form(tmp_path):
    # semantic weights: each token's output is its word direction (zero for function words,
    # punctuation, [CLS]/[SEP]); a padded batch so the attention mask matters
    texts = ["a red circle.", "there are two dogs and a cat with a small green square"]
    n_tokens = [6, 14]  # [CLS] a red circle . [SEP] / [CLS] + 12 words + [SEP]
    mean = SentenceEmbedder(build_st_folder(tmp_path / "mean", semantic=True, normalize=False)).embed(texts)
    assert torch.allclose(mean[0], _d("red", "circle") / n_tokens[0], atol=1e-4)
    # "dogs" is not in the vocabulary: [UNK], the zero vector
    assert torch.allclose(mean[1], _d("two", "cat", "small", "green", "square") / n_tokens[1], atol=1e-4)
    maxp = SentenceEmbedder(build_st_folder(tmp_path / "max", pooling="max", semantic=True, normalize=False))
    got = maxp.embed(texts)
    want = torch.stack([DIRS[CONTENT["red"]], DIRS[CONTENT["circle"]], torch.zeros(HIDDEN)]).max(dim=0).values
    assert torch.allclose(got[0], want, atol=1e-4)
    cls = SentenceEmbedder(build_st_folder(tmp_path / "cls", pooling="cls", semantic=True, normalize=False))
    assert torch.allclose(cls.embed(texts), torch.zeros(2, HIDDEN), atol=1e-4)  # [CLS] is the zero vector here
    assert check_layout(tmp_path / "cls").pooling == ("cls",) and check_layout(tmp_path / "mean").normalize is False


def test_identical_and_synonymous_answers_group_unrelated_ones_do_not(semantic_eq):
    answers = ["A red circle.", "a red circle", "A CRIMSON RING!", "a blue star", "a red circle and a blue star",
               "Yes, there is.", "no", "", "a blue star"]
    key = semantic_eq.grouping(answers)
    assert key("A red circle.") == key("a red circle") == key("A CRIMSON RING!") == content_words("a red circle")
    assert key("a blue star") == "blue star" != key("a red circle")  # cosine 0
    assert key("a red circle and a blue star") not in (key("a red circle"), key("a blue star"))  # cosine 1/sqrt(2)
    assert (key("Yes, there is."), key("no"), key("")) == ("yes", "no", "")
    # the default equivalence keeps the synonyms apart; the model joins them
    assert content_words("A CRIMSON RING!") != content_words("a red circle")
    st = group_stats("A red circle.", ["a red circle", "A CRIMSON RING!", "a blue star", "no"], key=key)
    assert st.agreement == pytest.approx(0.5) and st.groups == {"circle red": 2.0, "blue star": 1.0, "no": 1.0}
    by_words = group_stats("A red circle.", ["a red circle", "A CRIMSON RING!", "a blue star", "no"], key=content_words)
    assert by_words.agreement == pytest.approx(0.25)


def test_the_threshold_decides_and_first_members_lead(semantic):
    emb = SentenceEmbedder(semantic)
    both, one = "a red circle and a blue star", "a red circle"
    assert math.isclose(float(emb.embed([both])[0] @ emb.embed([one])[0]), 1 / math.sqrt(2), abs_tol=1e-4)
    loose = EmbeddingEquivalence(emb, threshold=0.7).grouping([both, one, "a blue star"])
    assert loose(one) == loose(both) == loose("a blue star") == content_words(both)  # each 0.707 to the first
    strict = EmbeddingEquivalence(emb, threshold=0.99).grouping(["a red circle", "red red circle", "a red circle."])
    # same content words, cosine 3/sqrt(10) = 0.95 < 0.99: two groups, the second key marked
    assert strict("a red circle") == strict("a red circle.") == "circle red" and strict("red red circle") == "circle red #2"
    with pytest.raises(KeyError):
        strict("an answer not grouped")
    with pytest.raises(ValueError, match="threshold"):
        EmbeddingEquivalence(emb, threshold=1.5)


def test_loading_is_cached_per_folder(semantic):
    a = load_embedding_equivalence(semantic, 0.85)
    assert load_embedding_equivalence(str(semantic), 0.85) is a
    b = load_embedding_equivalence(semantic, 0.5)
    assert b is not a and b.embedder is a.embedder and b.threshold == 0.5


def _break(root, how):
    if how == "modules":
        (root / "modules.json").unlink()
    elif how == "weights":
        (root / "model.safetensors").unlink()
    elif how == "tokenizer":
        (root / "tokenizer.json").unlink()
    elif how == "pooling_dir":
        import shutil

        shutil.rmtree(root / "1_Pooling")
    elif how == "lasttoken":
        (root / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_lasttoken": True}))
    elif how == "no_mode":
        (root / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": False}))
    elif how == "dense":
        mods = json.loads((root / "modules.json").read_text())
        mods.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
        (root / "modules.json").write_text(json.dumps(mods))
    elif how == "order":
        mods = json.loads((root / "modules.json").read_text())
        (root / "modules.json").write_text(json.dumps(mods[1:]))
    elif how == "config":
        (root / "config.json").write_text("{not json")


@pytest.mark.parametrize("how, message", [
    ("modules", "missing modules.json"),
    ("weights", "missing model weights"),
    ("tokenizer", "missing tokenizer files"),
    ("pooling_dir", "Pooling module folder"),
    ("lasttoken", "unsupported pooling mode(s) ['lasttoken']"),
    ("no_mode", "no pooling mode is on"),
    ("dense", "unsupported module(s) ['sentence_transformers.models.Dense']"),
    ("order", "first module in modules.json must be"),
    ("config", "config.json is not readable JSON"),
])  # fmt: skip
def test_bad_folders_are_refused_at_config_load_naming_path_and_part(tmp_path, how, message):
    root = build_st_folder(tmp_path / "m")
    check_layout(root)  # the intact folder passes
    _break(root, how)
    with pytest.raises(EmbeddingModelError) as e:
        check_layout(root)
    assert message in str(e.value) and str(root) in str(e.value)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"spotcheck:\n  equivalence:\n    kind: embedding\n    path: {root}\n")
    with pytest.raises(ConfigError) as ce:
        load_config(cfg)
    assert "spotcheck.equivalence" in str(ce.value) and message in str(ce.value) and str(root) in str(ce.value)


def test_config_choices(tmp_path, semantic):
    assert Settings().spotcheck.equivalence.kind == "content_words"
    s = Settings(spotcheck={"equivalence": {"kind": "embedding", "path": str(semantic), "threshold": 0.9}})
    assert s.spotcheck.equivalence.threshold == 0.9
    for bad, msg in [({"kind": "embedding"}, "needs path"), ({"path": str(semantic)}, "only read with kind: embedding"),
                     ({"kind": "embedding", "path": str(tmp_path / "nowhere")}, "not a folder"),
                     ({"kind": "embedding", "path": str(semantic), "threshold": 1.5}, "less than or equal to 1"),
                     ({"kind": "nli"}, "content_words")]:  # fmt: skip
        with pytest.raises(ValidationError, match=msg):
            Settings(spotcheck={"equivalence": bad})


def test_synpope_samples_keep_their_task_judge():
    from functools import partial

    from monitor.spotcheck.job import equivalence_for
    from monitor.synpope.judges import answer_key

    free = object()
    eq = equivalence_for({"task": "describe", "objects": [{"shape": "circle"}]}, free)
    assert isinstance(eq, partial) and eq.func is answer_key and eq.args == ("describe",)
    assert equivalence_for({"task": "describe"}, free) is free  # an operator's own "task" names no SynPOPE scene
    assert equivalence_for({"task": "caption", "objects": []}, free) is free
    assert equivalence_for(None, free) is free and equivalence_for({}, None) is None


# -- the daemon's spot-check run with the embedding equivalence, on the shipped tiny LLaVA -------------


def _reset(sessions):
    from storage.models import Label, Sample, SpotCheck

    with sessions.begin() as s:
        s.execute(delete(Label))
        s.execute(delete(SpotCheck))
        s.execute(update(Sample).values(spotcheck_status="pending", lease_owner=None, lease_expires_at=None))


def _checks(sessions):
    from storage.models import Label, SpotCheck

    with sessions() as s:
        checks = {c.sample_id: (c.agreement, dict(c.groups), c.majority_answer, c.one_token, c.compute_seconds)
                  for c in s.scalars(select(SpotCheck))}  # fmt: skip
        labels = {lab.sample_id: (lab.correct, lab.value) for lab in s.scalars(select(Label))}
    return checks, labels


def test_the_spot_check_run_groups_by_the_configured_embedding_model(engine, adapter, tmp_path):
    from storage.db import session_factory
    from storage.models import Sample
    from tests.spotcheck.test_job import MODEL, NOW, _seed, _settings

    sessions = session_factory(engine)
    _seed(sessions)
    with sessions.begin() as s:  # one SynPOPE caption: its task's judge groups it whatever is configured
        s.get(Sample, "s3").meta = {"task": "describe", "objects": [{"shape": "circle", "colour": "red"}]}
    answers = {f"s{i}": a for i, a in enumerate(["yes", "a red square", "No.", "two circles", "yes", "there is a cat"])}
    from monitor.spotcheck.job import run_spotcheck

    run_default = run_spotcheck(sessions, _settings(), adapters={MODEL: adapter}, now=NOW, rng=np.random.default_rng(0))
    default, _ = _checks(sessions)
    _reset(sessions)
    folder = build_st_folder(tmp_path / "st", seed=3)  # random weights: threshold -1 puts every free-text answer in one group
    settings = _settings(equivalence={"kind": "embedding", "path": str(folder), "threshold": -1.0})
    run = run_spotcheck(sessions, settings, adapters={MODEL: adapter}, now=NOW, rng=np.random.default_rng(0))
    assert run.processed == run_default.processed == 6
    emb, labels = _checks(sessions)
    free_text = [sid for sid, c in emb.items() if not c[3] and sid != "s3"]
    assert sorted(free_text) == ["s1", "s5"]
    differs = 0
    for sid, (agreement, groups, majority, one_token, seconds) in emb.items():
        d_agreement, d_groups, *_ = default[sid]
        assert labels[sid] == (agreement >= 0.5, pytest.approx(agreement))
        if one_token or sid == "s3":  # exact one-token path, and the SynPOPE judge: unchanged
            assert (agreement, groups) == (d_agreement, d_groups)
            continue
        served = content_words(answers[sid])
        # the same K samples (seeds from the sample id): every answer that is not yes/no/empty
        # joined the served answer's group, so agreement is their share of the default's groups
        assert set(groups) <= {served, "yes", "no", ""} and sum(groups.values()) == 4
        assert agreement == pytest.approx(sum(v for g, v in d_groups.items() if g not in ("yes", "no", "")) / 4)
        differs += groups != d_groups
        assert seconds > 0
    assert differs >= 1  # the tiny LLaVA's samples do not all share the served answer's content words
    # the SynPOPE caption's groups are the describe judge's keys
    from monitor.synpope.judges import answer_key

    assert all(answer_key("describe", g) == g for g in emb["s3"][1])


def test_a_folder_that_does_not_load_fails_the_run_before_any_claim(engine, adapter, tmp_path):
    from storage.db import session_factory
    from storage.models import Sample
    from tests.spotcheck.test_job import MODEL, NOW, _seed, _settings

    from monitor.spotcheck.job import run_spotcheck

    sessions = session_factory(engine)
    _seed(sessions, n=3)
    folder = build_st_folder(tmp_path / "corrupt")
    settings = _settings(equivalence={"kind": "embedding", "path": str(folder)})  # the layout is fine
    (folder / "model.safetensors").write_bytes(b"not safetensors")  # ... the weights are not
    with pytest.raises(EmbeddingModelError, match=re.escape(str(folder)) + ".*cannot load"):
        run_spotcheck(sessions, settings, adapters={MODEL: adapter}, now=NOW)
    with sessions() as s:
        rows = s.execute(select(Sample.spotcheck_status, Sample.lease_owner)).all()
    assert rows == [("pending", None)] * 3  # nothing claimed, nothing skipped


@pytest.fixture(scope="module")
def adapter():
    from monitor.adapter import load_vlm
    from monitor.fixtures.registry import fixture_dir

    return load_vlm(fixture_dir("tiny-llava"), device="cpu")
