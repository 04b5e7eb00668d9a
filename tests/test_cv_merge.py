"""tools/cv_merge.py: reports of disjoint folds add up to the report of the whole CV."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tools.cv_merge import MergeError, main, merge
from tools.training.reports import metrics, pooled_metrics

PROTOCOL = "5-fold speaker-grouped CV on ravdess; trained on the other speakers of ravdess"


def _report(folds: list[int], ys: list[np.ndarray], ps: list[np.ndarray], timeline: list[float]) -> dict:
    clips = pooled_metrics(ys, ps)
    utt = [len(y) for y in ys]
    cont = {"speaker_timeline": float(np.dot(utt, timeline) / sum(utt)), "speaker_utterances": sum(utt),
            "speaker_unlabelled": 0, "mixed_timeline": 0.5, "mixed_utterances": sum(utt), "mixed_unlabelled": 1,
            "fold_speaker_timeline": timeline}
    return {"protocol": f"{PROTOCOL}; only folds {folds}", "test_corpus": "ravdess", "train_corpora": ["ravdess"],
            "folds": [{"fold": f} for f in folds], "clean_16k": clips, "continuous_16k": cont,
            "calibration_clean_16k": {"temperature": 1.0 + folds[0] / 10, "ece": 0.05},
            "command": f"python -m tools.train --cv --folds {','.join(map(str, folds))}", "seeds_cv": 1,
            "recipe": {"name": "default", "straddle": 0.3}, "seconds": 100}


def _fold(rng, n=40):
    y = rng.integers(0, 8, n)
    p = np.where(rng.random(n) < 0.6, y, rng.integers(0, 8, n))
    p[rng.random(n) < 0.05] = -1  # clips without a label count as wrong
    return y, p


def test_merge_equals_one_run_over_all_folds(tmp_path):
    rng = np.random.default_rng(3)
    data = [_fold(rng) for _ in range(5)]
    a = _report([1, 2], [d[0] for d in data[:2]], [d[1] for d in data[:2]], [0.6, 0.7])
    b = _report([3, 4, 5], [d[0] for d in data[2:]], [d[1] for d in data[2:]], [0.5, 0.8, 0.9])
    m = merge([b, a])  # any order
    whole = pooled_metrics([d[0] for d in data], [d[1] for d in data])
    assert m["clean_16k"]["accuracy"] == whole["accuracy"]
    assert m["clean_16k"]["confusion"] == whole["confusion"]
    assert m["clean_16k"]["recall"] == whole["recall"]
    assert m["clean_16k"]["macro_f1"] == whole["macro_f1"]
    assert m["clean_16k"]["predicted"] == whole["predicted"]
    assert m["clean_16k"]["fold_accuracy"] == whole["fold_accuracy"]
    assert m["clean_16k"]["no_label"] == whole["no_label"] > 0
    assert [f["fold"] for f in m["folds"]] == [1, 2, 3, 4, 5]
    assert m["protocol"] == PROTOCOL
    c = m["continuous_16k"]
    assert c["speaker_timeline"] == pytest.approx(np.dot([40] * 5, [0.6, 0.7, 0.5, 0.8, 0.9]) / 200, abs=1e-4)
    assert c["fold_speaker_timeline"] == [0.6, 0.7, 0.5, 0.8, 0.9] and c["mixed_unlabelled"] == 2
    assert m["calibration_clean_16k"]["temperature"] == pytest.approx((1.1 * 80 + 1.3 * 120) / 200, abs=1e-4)
    assert len(m["run_commands"]) == 2


def test_merge_of_some_folds_says_so():
    rng = np.random.default_rng(4)
    d = [_fold(rng) for _ in range(2)]
    m = merge([_report([1], [d[0][0]], [d[0][1]], [0.5]), _report([3], [d[1][0]], [d[1][1]], [0.5])])
    assert m["protocol"].endswith("only folds [1, 3]")
    assert m["clean_16k"]["accuracy"] == metrics(np.concatenate([d[0][0], d[1][0]]),
                                                 np.concatenate([d[0][1], d[1][1]]))["accuracy"]


def test_merge_refuses_what_is_not_one_cv(tmp_path, capsys):
    rng = np.random.default_rng(5)
    y, p = _fold(rng)
    a = _report([1], [y], [p], [0.5])
    with pytest.raises(MergeError, match="fold"):
        merge([a, a])
    other = {**_report([2], [y], [p], [0.5]), "recipe": {"name": "default", "straddle": 0.5}}
    with pytest.raises(MergeError, match="recipe"):
        merge([a, other])
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text("{not json")
    assert main([str(pa), str(pb), "--out", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cv_merge: error:") and "\n" not in err


def test_merge_with_a_timeline_variant():
    rng = np.random.default_rng(6)
    d = [_fold(rng) for _ in range(3)]
    a = _report([1, 2], [d[0][0], d[1][0]], [d[0][1], d[1][1]], [0.5, 0.6])
    b = _report([3], [d[2][0]], [d[2][1]], [0.7])
    for r, v in ((a, 0.65), (b, 0.75)):
        r["continuous_16k"].update({"speaker_timeline[reset0.5]": v, "mixed_timeline[reset0.5]": v - 0.1})
    m = merge([a, b], timeline="reset0.5")
    c = m["continuous_16k"]
    assert c["speaker_timeline"] == pytest.approx((0.65 * 80 + 0.75 * 40) / 120, abs=1e-4)
    assert c["mixed_timeline"] == pytest.approx((0.55 * 80 + 0.65 * 40) / 120, abs=1e-4)
    assert "fold_speaker_timeline" not in c  # folds 1-2 kept only their joint variant figure
    assert m["timeline_variant"] == "reset0.5"
    with pytest.raises(MergeError, match="reset0.7"):
        merge([a, b], timeline="reset0.7")


def test_per_fold_figures_come_in_fold_order():
    """A merged report of folds 1, 2, 4, 5 meeting one of fold 3 lists per-fold figures by fold."""
    rng = np.random.default_rng(5)
    data = [_fold(rng) for _ in range(5)]
    ab = [0, 1, 3, 4]
    a = _report([1, 2, 4, 5], [data[i][0] for i in ab], [data[i][1] for i in ab], [0.1, 0.2, 0.4, 0.5])
    b = _report([3], [data[2][0]], [data[2][1]], [0.3])
    m = merge([a, b])
    whole = pooled_metrics([d[0] for d in data], [d[1] for d in data])
    assert m["clean_16k"]["fold_accuracy"] == whole["fold_accuracy"]
    assert m["continuous_16k"]["fold_speaker_timeline"] == [0.1, 0.2, 0.3, 0.4, 0.5]


def test_a_recipe_field_added_later_merges_at_its_default():
    """A report written before a recipe field existed pools with one that records the field at its default
    (what the older run trained with), and not with one where it differs."""
    rng = np.random.default_rng(6)
    (y1, p1), (y2, p2) = _fold(rng), _fold(rng)
    old = _report([1], [y1], [p1], [0.5])
    new = _report([2], [y2], [p2], [0.5])
    new["recipe"] = {**new["recipe"], "class_weight": "none"}
    assert merge([old, new])["protocol"].endswith("only folds [1, 2]")
    new["recipe"]["class_weight"] = "corpus"
    with pytest.raises(MergeError, match="recipe"):
        merge([old, new])


def test_a_cv_checkpoint_names_its_protocol(monkeypatch):
    """The report a CV writes after each fold carries the protocol and corpora, so it can be merged."""
    from types import SimpleNamespace

    from tools.training import protocols

    def two_folds(data, rcp, folds, opts, log):
        opts.checkpoint({"folds": [{"fold": 1}], "partial": "1 of 2 folds"})
        return {"folds": [{"fold": 1}, {"fold": 2}]}

    monkeypatch.setattr(protocols, "_run_folds", two_folds)
    seen = []
    speakers = np.array([f"ravdess-{a:02d}" for a in range(1, 11) for _ in range(2)])
    data = SimpleNamespace(speaker=speakers, corpus=np.array(["ravdess"] * len(speakers)), where=lambda c: np.arange(20))
    opts = protocols.CVOptions(folds=[1, 2], checkpoint=seen.append)
    res = protocols.run_cv(data, SimpleNamespace(early_stopping=False), opts, log=lambda *_: None)
    assert len(seen) == 1 and seen[0]["partial"] == "1 of 2 folds"
    for k in ("protocol", "test_corpus", "train_corpora"):
        assert seen[0][k] == res[k]
