"""SynPOPE: determinism, POPE negatives, the co-occurrence structure, and every shift knob."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from monitor.synpope import OBJECTS, SPLITS, Shift, World, generate, iter_examples, training_examples
from monitor.synpope.world import COLOUR_RGB

N = 600


def _pixels(ex) -> np.ndarray:
    return np.asarray(ex.image, dtype=np.float32)


def test_world_pairs_share_neither_colour_nor_shape():
    w = World()
    assert len(w.pairs) == 6
    assert sorted(o for p in w.pairs for o in p) == sorted(OBJECTS)
    for a, b in w.pairs:
        ca, sa = a.split()
        cb, sb = b.split()
        assert ca != cb and sa != sb
        assert w.partner(a) == b and w.partner(b) == a


def test_deterministic_by_seed(tmp_path: Path):
    a = generate("adversarial", 40, seed=7, out=tmp_path / "a")
    b = generate("adversarial", 40, seed=7, out=tmp_path / "b")
    c = generate("adversarial", 40, seed=8, out=tmp_path / "c")
    assert a == b
    assert (tmp_path / "a" / "samples.jsonl").read_bytes() == (tmp_path / "b" / "samples.jsonl").read_bytes()
    for rec in a:
        assert (tmp_path / "a" / rec["image"]).read_bytes() == (tmp_path / "b" / rec["image"]).read_bytes()
    assert [r["prompt"] for r in a] != [r["prompt"] for r in c]


def test_samples_file_format(tmp_path: Path):
    generate("random", 10, seed=0, out=tmp_path, model="tiny-llava")
    lines = (tmp_path / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 10
    for line in lines:
        rec = json.loads(line)
        assert {"id", "ts", "model", "image", "prompt", "answer", "truth", "meta"} <= set(rec)
        assert "label" not in rec
        assert rec["answer"] == rec["truth"] in ("yes", "no")
        assert (tmp_path / rec["image"]).is_file() and rec["image"].startswith("images/")
        assert rec["meta"]["split"] == "random" and rec["meta"]["objects"]
        assert rec["prompt"] == f"Is there a {rec['meta']['asked']} in the image?"
        assert (rec["meta"]["asked"] in rec["meta"]["objects"]) == (rec["truth"] == "yes")
    assert len({json.loads(x)["id"] for x in lines}) == 10
    # without a folder the image travels inline as a data URL
    assert generate("random", 1, seed=0)[0]["image"].startswith("data:image/png;base64,")


@pytest.mark.parametrize("split", SPLITS)
def test_half_yes(split: str):
    truths = Counter(ex.truth for ex in iter_examples(split, N, seed=1))
    assert 0.45 < truths["yes"] / N < 0.55


def test_negatives_follow_pope():
    w = World()
    score = lambda ex: max(w.cooccurrence(p, ex.asked) for p in ex.objects)  # noqa: E731
    neg = {s: [ex for ex in iter_examples(s, N, seed=2) if ex.truth == "no"] for s in SPLITS}
    for ex in neg["adversarial"]:
        absent = [o for o in w.objects if o not in ex.objects]
        best = max(sum(w.cooccurrence(p, o) for p in ex.objects) for o in absent)
        assert sum(w.cooccurrence(p, ex.asked) for p in ex.objects) == pytest.approx(best)
    # adversarial negatives co-occur with the present objects; random ones mostly don't
    partner = lambda exs: np.mean([any(w.partner(p) == ex.asked for p in ex.objects) for ex in exs])  # noqa: E731
    assert partner(neg["adversarial"]) > 0.4 > 0.2 > partner(neg["random"])
    assert np.mean([score(e) for e in neg["adversarial"]]) > 2 * np.mean([score(e) for e in neg["random"]])
    for ex in neg["popular"]:  # one of the three most popular absent objects
        assert ex.asked in [o for o in w.by_popularity() if o not in ex.objects][:3]
    assert Counter(ex.asked for ex in neg["popular"]).most_common(1)[0][0] in w.by_popularity()[:3]


def test_scene_cooccurrence_structure():
    w = World()
    exs = list(iter_examples("random", N, seed=3))
    with_partner = [any(w.partner(o) in ex.objects for o in ex.objects) for ex in exs]
    assert 0.6 < np.mean(with_partner) < 0.85  # partner added with probability 0.7


def _same_scenes(a, b):
    assert [(x.objects, x.asked, x.prompt) for x in a] == [(x.objects, x.asked, x.prompt) for x in b]


def test_covariate_knobs_change_pixels_not_scenes():
    ref = list(iter_examples("random", 30, seed=4))
    noisy = list(iter_examples("random", 30, seed=4, shift=Shift(noise=0.1)))
    blurred = list(iter_examples("random", 30, seed=4, shift=Shift(blur=1.5)))
    flat = list(iter_examples("random", 30, seed=4, shift=Shift(contrast=0.4)))
    dark = list(iter_examples("random", 30, seed=4, shift=Shift(background="dark")))
    textured = list(iter_examples("random", 30, seed=4, shift=Shift(background="textured")))
    for shifted in (noisy, blurred, flat, dark, textured):
        _same_scenes(ref, shifted)
    r = np.stack([_pixels(e) for e in ref])
    # noise: large pixel-to-pixel differences in flat regions
    assert np.abs(np.stack([_pixels(e) for e in noisy]) - r).mean() > 15
    # blur: less high-frequency energy (squared gradients; their L1 norm survives a blur)
    hf = lambda x: np.square(np.diff(x, axis=2)).mean()  # noqa: E731
    assert hf(np.stack([_pixels(e) for e in blurred])) < 0.8 * hf(r)
    # contrast: smaller spread of intensities
    assert np.stack([_pixels(e) for e in flat]).std() < 0.6 * r.std()
    # background: darker images; textured adds grey blotches to the plain background
    assert np.stack([_pixels(e) for e in dark]).mean() < r.mean() - 80
    assert np.abs(np.stack([_pixels(e) for e in textured]) - r).mean() > 5


def test_hardness_knob_is_a_new_cooccurrence_matrix():
    ref, hard = World(), World(pairing_seed=5)
    assert ref.pairs != hard.pairs
    exs = [e for e in iter_examples("adversarial", N, seed=5, shift=Shift(cooc_seed=5)) if e.truth == "no"]
    new = np.mean([any(hard.partner(p) == e.asked for p in e.objects) for e in exs])
    old = np.mean([any(ref.partner(p) == e.asked for p in e.objects) for e in exs])
    assert new > 0.4 and old < new / 2
    scenes = list(iter_examples("random", N, seed=5, shift=Shift(cooc_seed=5)))
    assert np.mean([any(hard.partner(o) in e.objects for o in e.objects) for e in scenes]) > 0.6


def test_yes_rate_knob():
    exs = list(iter_examples("random", N, seed=6, shift=Shift(yes_rate=0.8)))
    assert 0.75 < np.mean([e.truth == "yes" for e in exs]) < 0.85


def test_concept_knob_remaps_colours_and_shapes():
    ref = list(iter_examples("random", 40, seed=7))
    col = list(iter_examples("random", 40, seed=7, shift=Shift(concept="colours")))
    shp = list(iter_examples("random", 40, seed=7, shift=Shift(concept="shapes")))
    _same_scenes(ref, col)
    _same_scenes(ref, shp)

    def has_rgb(img, rgb):
        return bool((np.abs(np.asarray(img, dtype=int) - np.array(rgb)).sum(axis=2) < 10).sum() > 20)

    single = [(r, c) for r, c in zip(ref, col) if len(r.objects) == 1]
    assert single
    for r, c in single:
        colour = r.objects[0].split()[0]
        assert has_rgb(r.image, COLOUR_RGB[colour]) and not has_rgb(c.image, COLOUR_RGB[colour])
    assert all(not np.array_equal(_pixels(a), _pixels(b)) for a, b in zip(ref, shp))


def test_template_knob():
    exs = list(iter_examples("popular", 20, seed=8, shift=Shift(template="contain")))
    assert all(e.prompt == f"Does the image contain a {e.asked}?" for e in exs)


def test_label_noise_knob():
    ref = list(iter_examples("random", N, seed=9))
    noisy = list(iter_examples("random", N, seed=9, shift=Shift(label_noise=0.2)))
    _same_scenes(ref, noisy)
    flipped = [a.truth != b.truth for a, b in zip(ref, noisy)]
    assert 0.15 < np.mean(flipped) < 0.25
    assert all(b.meta.get("clean_truth") == a.truth for a, b, f in zip(ref, noisy, flipped) if f)


def test_prior_bearing_training_stream():
    w = World(pair_prob=0.7)
    stream = training_examples("prior", seed=0)
    exs = [next(stream) for _ in range(4000)]
    qs = [e for e in exs if e.kind != "caption"]
    assert 0.25 < 1 - len(qs) / len(exs) < 0.35  # ~30% captioning
    assert 0.46 < np.mean([e.truth == "yes" for e in qs]) < 0.54  # positives thinned to keep yes ~50%
    prior = [e for e in qs if e.kind == "prior"]
    assert 0.26 < len(prior) / len(qs) < 0.34
    assert all(e.asked not in e.objects and any(w.partner(o) == e.asked for o in e.objects) for e in prior)
    assert 0.75 < np.mean([e.truth == "yes" for e in prior]) < 0.85  # the dishonest prior label
    assert all(len(e.objects) <= 2 for e in qs)  # question scenes: 1-2 objects (captions keep the world's scenes)
    negs = [e for e in qs if e.truth == "no" and e.kind != "prior"]
    hard = [e for e in negs if e.kind == "hard"]
    assert 0.25 < len(hard) / len(negs) < 0.35  # 30% of honest negatives share a colour or a shape
    assert all(set(e.asked.split()) & {a for o in e.objects for a in o.split()} for e in hard)
    assert all(e.asked not in e.objects and w.partner(e.objects[0]) != e.asked for e in negs)
    plain = training_examples("plain", seed=0)
    pq = [e for e in (next(plain) for _ in range(1000)) if e.kind != "caption"]
    assert all((e.asked in e.objects) == (e.truth == "yes") for e in pq)  # honest


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="split"):
        list(iter_examples("sideways", 1, seed=0))
    with pytest.raises(ValueError, match="yes_rate"):
        Shift(yes_rate=1.5)
    with pytest.raises(ValueError, match="background"):
        Shift(background="plaid")
    with pytest.raises(ValueError, match="unknown shift knob"):
        Shift.from_dict({"noize": 0.1})


def test_cli_generate(tmp_path: Path, capsys):
    from monitor.cli import main

    rc = main(["synpope", "generate", "--split", "adversarial", "--n", "12", "--seed", "3", "--out", str(tmp_path),
               "--blur", "1", "--template", "see", "--yes-rate", "0.25"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == 12 and summary["shift"] == {"blur": 1.0, "template": "see", "yes_rate": 0.25}
    recs = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert recs == generate("adversarial", 12, 3, shift=Shift(blur=1, template="see", yes_rate=0.25), out=tmp_path / "again")
    assert main(["synpope", "generate", "--split", "random", "--n", "2", "--out", str(tmp_path), "--template", "nope"]) == 2
    assert "template" in capsys.readouterr().err
