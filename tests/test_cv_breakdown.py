"""tools/cv_breakdown.py: a saved CV's recall split by what the corpus says of each clip."""

from __future__ import annotations

import numpy as np
import pytest

from tools.cv_breakdown import breakdown, fold_items, group_of
from tools.datasets import LABELS, Item


def _item(actor: int, label: str, intensity: str) -> Item:
    return Item(path=f"a{actor}-{label}-{intensity}.flac", corpus="ravdess", label=label,
                speaker=f"ravdess-{actor:02d}", source_label="", meta=(("intensity", intensity), ("actor", actor)))


def test_clips_are_found_in_the_cvs_fold_order_and_recall_is_split():
    # actors 1 and 5 sit in folds 1 and 2; an EmoDB clip is never a RAVDESS fold's test clip
    items = [_item(5, "sad", "strong"), _item(1, "sad", "normal"), _item(1, "sad", "strong"),
             Item("x.flac", "emodb", "sad", "emodb-03", "T"), _item(5, "angry", "normal")]
    clips = fold_items(items, "ravdess")
    assert [it.path for it in clips[0]] == ["a1-sad-normal.flac", "a1-sad-strong.flac"]
    assert [it.path for it in clips[1]] == ["a5-sad-strong.flac", "a5-angry-normal.flac"]
    assert group_of(clips[0][0], "intensity") == "normal" and group_of(clips[0][0], "speaker") == "ravdess-01"
    assert group_of(clips[0][0], "statement") == "?"
    sad, angry, happy = LABELS.index("sad"), LABELS.index("angry"), LABELS.index("happy")
    ys = {0: np.array([sad, sad]), 1: np.array([sad, angry])}
    preds = {0: np.array([sad, happy]), 1: np.array([happy, -1])}
    out = breakdown(preds, ys, clips, "intensity")
    assert out["sad"]["normal"] == {"right": 1, "n": 1, "recall": 1.0, "heard_as": {}}
    assert out["sad"]["strong"] == {"right": 0, "n": 2, "recall": 0.0, "heard_as": {"happy": 2}}
    assert out["angry"]["normal"]["heard_as"] == {"no speech": 1}
    assert list(out) == ["sad", "angry"]  # labels in the model's order


def test_saved_labels_that_are_not_the_clips_are_refused():
    items = [_item(1, "sad", "normal"), _item(1, "calm", "normal")]
    clips = fold_items(items, "ravdess")
    sad = LABELS.index("sad")
    with pytest.raises(ValueError, match="fold 1: the saved labels"):
        breakdown({0: np.array([sad, sad])}, {0: np.array([sad, sad])}, clips, "intensity")


def test_a_missing_run_file_is_one_line_and_exit_2(tmp_path, capsys):
    from tools import cv_breakdown

    assert cv_breakdown.main([str(tmp_path / "none.npz"), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cv_breakdown: error:") and "\n" not in err
