"""Training data: the corpora's clips, labels and speakers with their cached frame features and speech flags."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from streamer.gate import SpeechGate
from streamer.normalise import stats_from_frames
from tools import featcache
from tools.datasets import LABELS, DataError, Item, corpus_items, data_root
from tools.training.recipe import Recipe

__all__ = ["Data", "load_corpora", "CITATIONS"]

CITATIONS = {
    "ravdess": ("Livingstone SR, Russo FA (2018) The Ryerson Audio-Visual Database of Emotional Speech and Song "
                "(RAVDESS). PLoS ONE 13(5): e0196391. https://doi.org/10.1371/journal.pone.0196391"),
    "emodb": ("Burkhardt F, Paeschke A, Rolfes M, Sendlmeier W, Weiss B (2005) A Database of German Emotional "
              "Speech. Proc. Interspeech 2005, 1517-1520"),
}


def load_corpora(data: str | os.PathLike[str] | None, corpora: tuple[str, ...] | list[str]) -> list[Item]:
    """The items of the named corpora under the data folder (``--data`` or ``$EMOSTREAM_DATA``)."""
    root = data_root(data)
    items: list[Item] = []
    for c in corpora:
        items += corpus_items(root, c)
    return items


class Data:
    """Clips, labels, speakers and corpora, with frame features + speech flags of every cached copy.

    Args:
        items: the labelled clips (any corpora).
        rcp: the recipe (features, gate, cached versions).
        seed: the augmentation seed of the cached copies.
        cache_dir: the feature cache (default ``cache/`` or ``$EMOSTREAM_CACHE``).
    """

    def __init__(self, items: list[Item], rcp: Recipe, seed: int = 0,
                 cache_dir: str | os.PathLike[str] | None = None, log=print):
        if not items:
            raise DataError("no clips to train on")
        self.items = items
        self.y = np.array([LABELS.index(it.label) for it in items])
        self.speaker = np.array([it.speaker for it in items])
        self.corpus = np.array([it.corpus for it in items])
        # RAVDESS's CV folds are by actor number; other corpora's clips have actor 0
        self.actor = np.array([int(it.get("actor") or 0) for it in items])
        self.cfg = rcp.features
        self.gate = rcp.gate
        self.versions = list(rcp.versions)
        self.cf = featcache.build(items, self.cfg, self.versions, seed=seed, cache_dir=cache_dir, log=log)
        self.speech = [
            [SpeechGate(self.gate, self.cfg)(self.cf.level(i, v)) for v in range(len(self.versions))]
            for i in range(len(items))
        ]

    @classmethod
    def load(cls, data: str | os.PathLike[str] | None, rcp: Recipe, corpora: tuple[str, ...] | None = None,
             cache_dir: str | os.PathLike[str] | None = None, log=print) -> "Data":
        """The recipe's corpora (or ``corpora``) from the data folder."""
        return cls(load_corpora(data, corpora or rcp.corpora), rcp, cache_dir=cache_dir, log=log)

    def where(self, corpus: str) -> np.ndarray:
        """Indices of one corpus's clips."""
        return np.flatnonzero(self.corpus == corpus)

    def prior(self, idx: np.ndarray, version: str = "clean") -> tuple[np.ndarray, np.ndarray]:
        """Band mean/std over the speech frames of clips ``idx`` in one copy (clean, or ``tel``)."""
        v = self.cf.vindex(version)
        fr = np.concatenate([self.cf.mfcc(i, v) for i in idx])
        sp = np.concatenate([self.speech[i][v] for i in idx])
        m, s, _ = stats_from_frames(fr, sp)
        return m.astype(np.float64), s.astype(np.float64)

    def audio_path(self, i: int) -> Path:
        """The clip's file."""
        return Path(self.items[i].path)
