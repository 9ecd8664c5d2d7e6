"""Span-level object scores: token spans from decoded text, rows that match the describe judge."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.probe.spans import object_spans, object_support, span_experiment, span_rows
from monitor.synpope import judge


def test_object_spans_cover_each_named_object(llava):
    tok = llava.tokenizer
    ids = tok("red circle and Blue star .", add_special_tokens=False)["input_ids"]
    spans = object_spans(tok, ids)
    assert [s.name for s in spans] == ["red circle", "blue star"]
    for s in spans:
        words = tok.decode([ids[k] for k in s.tokens], skip_special_tokens=True).lower().split()
        assert words[0] == s.name.split()[0] and words[-1].startswith(s.name.split()[1])
    assert object_spans(tok, tok("yes", add_special_tokens=False)["input_ids"]) == []


@pytest.fixture(scope="module")
def captions(llava):
    from monitor.probe.samples import ProbeSample, label_samples
    from monitor.synpope import iter_examples

    def make(seed: int, n: int):
        import io

        out = []
        for i, ex in enumerate(iter_examples("random", n, seed=seed, task="describe")):
            buf = io.BytesIO()
            ex.image.save(buf, format="PNG")
            out.append(ProbeSample(f"c{seed}-{i}", ex.prompt, buf.getvalue(), None, None, ex.truth, f"g{seed}-{i}",
                                   ex.meta))
        return label_samples(llava, out, "auto", progress=False)

    return make(11, 160), make(12, 120)


def test_span_rows_agree_with_the_describe_judge(llava, captions):
    _, test = captions
    rows = span_rows(llava, test, layer=2)
    assert rows.features.shape == (len(rows.present), llava.model.config.get_text_config().hidden_size)
    assert np.isfinite(rows.features).all() and ((rows.token_prob > 0) & (rows.token_prob <= 1)).all()
    for i, s in enumerate(test):
        v = judge("describe", s.answer, s.truth)
        mine = rows.sample == i
        named = [n for n, m in zip(rows.names, mine) if m]
        assert sorted(named) == sorted(set(v.parsed.split(" and ")) - {""}), (s.answer, named)
        absent = sorted(n for n, p, m in zip(rows.names, rows.present, mine) if m and not p)
        assert absent == sorted(v.hallucinated), (s.answer, absent, v)
    assert (~rows.present).sum() >= 10  # the fixture does hallucinate in captions


def test_object_support_is_the_share_of_samples_naming_the_object():
    sampled = ["red circle and blue star", "a blue star", "Red circles.", "green square"]
    assert object_support("red circle", sampled) == 0.5
    assert object_support("blue star", sampled) == 0.5
    assert object_support("yellow cross", sampled) == 0.0
    with pytest.raises(ValueError, match="at least one"):
        object_support("red circle", [])


def test_span_experiment_reports_every_signal(llava, captions):
    train, test = captions
    # served answer twice, then a caption naming nothing: support 2/3 for every named object
    sampled = [[s.answer, s.answer, "nothing"] for s in test]
    res = span_experiment(llava, train, test, layer=2, sample_scores=np.linspace(0, 1, len(test)), sampled=sampled,
                          n_boot=200)
    assert set(res["signals"]) == {"span_probe", "span_token_prob", "sample_probe", "span_support"}
    assert res["signals"]["span_support"]["k"] == 3 and res["signals"]["span_support"]["auroc"] == pytest.approx(0.5)
    assert res["test"]["objects"] > len(test) and 0 < res["test"]["absent"] < res["test"]["objects"]
    # the served tokens of an absent object are less likely than those of a present one
    assert res["signals"]["span_token_prob"]["auroc"] > 0.65, res["signals"]
