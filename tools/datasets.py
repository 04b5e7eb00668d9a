"""Dataset readers and file-name parsers, every corpus mapped onto emostream's 8 labels.

Supported naming schemes (the corpora themselves are not shipped; point the readers at your copy):

- RAVDESS, original layout ``Actor_XX/MM-VV-EE-II-SS-RR-AA.wav`` (48 kHz), our 16 kHz FLAC copy
  (same names, ``.flac``), and the audio-visual ``.mp4`` files. Modality ``01`` (full audio-video)
  and ``02`` (video only) are the *same performances* as the audio-only ``03`` files: the ``01``
  audio track duplicates a ``03`` take, and ``02`` has no sound. Mixing them into one pool makes a
  random file split put the same performance in train and test (the seed's inflated 84.75 %), so
  :func:`ravdess_items` skips them unless ``include_video=True``. Song (vocal channel 02) is skipped
  unless ``include_song=True``.
- TESS ``OAF_back_angry.wav`` / ``YAF_dog_ps.wav`` (two speakers, OAF and YAF).
- CREMA-D ``1001_DFA_ANG_XX.wav`` (actor, sentence, emotion, intensity).
- SAVEE ``DC_a01.wav`` or ``DC/a01.wav`` (speakers DC, JE, JK, KL).
- EmoDB ``03a01Fa.wav`` (speaker, text, German emotion letter, version).

Every mapping is in :data:`LABEL_MAPS`; a source label mapped to ``None`` has no counterpart among
the 8 labels and its files are dropped (EmoDB's boredom; nothing else).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator


__all__ = [
    "LABELS",
    "LABEL_MAPS",
    "Item",
    "parse_ravdess",
    "parse_tess",
    "parse_crema",
    "parse_savee",
    "parse_emodb",
    "parse_any",
    "ravdess_items",
    "scan",
    "corpus_items",
    "corpus_dir",
    "data_root",
    "DataError",
    "DATA_ENV",
]

LABELS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]

#: source label -> one of LABELS, or None (dropped). Keyed by corpus.
LABEL_MAPS: dict[str, dict[str, str | None]] = {
    "ravdess": {
        "01": "neutral", "02": "calm", "03": "happy", "04": "sad",
        "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised",
    },
    "tess": {
        "neutral": "neutral", "happy": "happy", "sad": "sad", "angry": "angry",
        "fear": "fearful", "disgust": "disgust", "ps": "surprised",
        "pleasant_surprise": "surprised", "pleasant_surprised": "surprised", "surprise": "surprised",
    },
    "crema": {
        "NEU": "neutral", "HAP": "happy", "SAD": "sad", "ANG": "angry", "FEA": "fearful", "DIS": "disgust",
    },
    "savee": {
        "n": "neutral", "h": "happy", "sa": "sad", "a": "angry", "f": "fearful", "d": "disgust", "su": "surprised",
    },
    "emodb": {
        # German initials: Wut/Aerger, Langeweile, Ekel, Angst, Freude, Trauer, Neutral
        "W": "angry", "L": None, "E": "disgust", "A": "fearful", "F": "happy", "T": "sad", "N": "neutral",
    },
}

AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".mp4", ".aiff", ".aif")


@dataclass(frozen=True)
class Item:
    """One labelled recording."""

    path: str
    corpus: str
    label: str | None  # one of LABELS, or None when the source label is unmappable
    speaker: str
    source_label: str
    meta: tuple = ()  # corpus-specific extras as (key, value) pairs

    def get(self, key: str, default=None):
        return dict(self.meta).get(key, default)


_RAVDESS_RE = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


def parse_ravdess(path: str | os.PathLike[str]) -> Item | None:
    """``MM-VV-EE-II-SS-RR-AA.(wav|flac|mp4)``: modality (01 AV, 02 video, 03 audio), vocal channel
    (01 speech, 02 song), emotion, intensity (01 normal, 02 strong), statement, repetition, actor."""
    p = Path(path)
    m = _RAVDESS_RE.match(p.stem)
    if not m or p.suffix.lower() not in AUDIO_EXTS:
        return None
    mod, vc, emo, inten, stmt, rep, actor = m.groups()
    if emo not in LABEL_MAPS["ravdess"] or mod not in ("01", "02", "03") or vc not in ("01", "02"):
        return None
    meta = (
        ("modality", {"01": "audio-video", "02": "video", "03": "audio"}[mod]),
        ("channel", {"01": "speech", "02": "song"}[vc]),
        ("intensity", {"01": "normal", "02": "strong"}.get(inten, inten)),
        ("statement", int(stmt)),
        ("repetition", int(rep)),
        ("actor", int(actor)),
        ("sex", "male" if int(actor) % 2 else "female"),
    )
    return Item(str(p), "ravdess", LABEL_MAPS["ravdess"][emo], f"ravdess-{int(actor):02d}", emo, meta)


_TESS_RE = re.compile(r"^(OAF|YAF)_([A-Za-z]+)_([A-Za-z_]+)$", re.IGNORECASE)


def parse_tess(path: str | os.PathLike[str]) -> Item | None:
    """``OAF_back_angry.wav``: speaker (OAF older, YAF younger female), word, emotion."""
    p = Path(path)
    m = _TESS_RE.match(p.stem)
    if not m:
        return None
    spk, word, emo = m.group(1).upper(), m.group(2), m.group(3).lower()
    if emo not in LABEL_MAPS["tess"]:
        return None
    return Item(str(p), "tess", LABEL_MAPS["tess"][emo], f"tess-{spk}", emo, (("word", word),))


_CREMA_RE = re.compile(r"^(1\d\d\d)_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


def parse_crema(path: str | os.PathLike[str]) -> Item | None:
    """``1001_DFA_ANG_XX.wav``: actor 1001-1091, sentence, emotion, intensity (LO MD HI XX)."""
    p = Path(path)
    m = _CREMA_RE.match(p.stem)
    if not m or m.group(3) not in LABEL_MAPS["crema"]:
        return None
    actor, sent, emo, inten = m.groups()
    meta = (("sentence", sent), ("intensity", inten))
    return Item(str(p), "crema", LABEL_MAPS["crema"][emo], f"crema-{actor}", emo, meta)


_SAVEE_SPK = ("DC", "JE", "JK", "KL")
_SAVEE_RE = re.compile(r"^(?:(DC|JE|JK|KL)_)?(sa|su|a|d|f|h|n)(\d\d)$")


def parse_savee(path: str | os.PathLike[str]) -> Item | None:
    """``DC_a01.wav`` (flat layout) or ``DC/a01.wav`` (AudioData layout)."""
    p = Path(path)
    m = _SAVEE_RE.match(p.stem)
    if not m:
        return None
    spk = m.group(1) or (p.parent.name if p.parent.name in _SAVEE_SPK else None)
    if spk is None:
        return None
    emo = m.group(2)
    return Item(str(p), "savee", LABEL_MAPS["savee"][emo], f"savee-{spk}", emo, (("take", int(m.group(3))),))


_EMODB_SPK = {"03", "08", "09", "10", "11", "12", "13", "14", "15", "16"}
_EMODB_RE = re.compile(r"^(\d\d)([ab]\d\d)([WLEAFTN])([a-z])$")


def parse_emodb(path: str | os.PathLike[str]) -> Item | None:
    """``03a01Fa.wav``: speaker, text code, emotion letter (German initial), version."""
    p = Path(path)
    m = _EMODB_RE.match(p.stem)
    if not m or m.group(1) not in _EMODB_SPK:
        return None
    spk, text, emo, ver = m.groups()
    return Item(str(p), "emodb", LABEL_MAPS["emodb"][emo], f"emodb-{spk}", emo, (("text", text), ("version", ver)))


PARSERS = {
    "ravdess": parse_ravdess,
    "crema": parse_crema,
    "emodb": parse_emodb,
    "tess": parse_tess,
    "savee": parse_savee,
}


def parse_any(path: str | os.PathLike[str], corpus: str | None = None) -> Item | None:
    """Parse with one corpus's scheme, or try each in turn (RAVDESS, CREMA-D, EmoDB, TESS, SAVEE)."""
    if corpus:
        return PARSERS[corpus](path)
    for parse in PARSERS.values():
        item = parse(path)
        if item is not None:
            return item
    return None


def _walk(root: str | os.PathLike[str]) -> Iterator[Path]:
    for dirpath, _dirs, files in os.walk(root):
        for f in sorted(files):
            if f.lower().endswith(AUDIO_EXTS):
                yield Path(dirpath) / f


def scan(root: str | os.PathLike[str], corpus: str | None = None, keep_unmapped: bool = False) -> list[Item]:
    """Every parseable recording under ``root``; unmappable labels dropped unless ``keep_unmapped``."""
    out = []
    for p in _walk(root):
        item = parse_any(p, corpus)
        if item is not None and (keep_unmapped or item.label is not None):
            out.append(item)
    return sorted(out, key=lambda it: it.path)


def ravdess_items(
    root: str | os.PathLike[str],
    actors: Iterable[int] | None = None,
    include_video: bool = False,
    include_song: bool = False,
) -> list[Item]:
    """RAVDESS recordings under ``root`` (original layout or our FLAC copy), audio-only speech by default.

    ``include_video`` adds the audio tracks of the audio-video ``.mp4`` files (modality 01), which
    duplicate the audio-only performances; video-only files (02) have no audio and are never returned.
    When both a ``.wav`` and a ``.flac`` of one name exist, the first in sorted order is kept.
    """
    wanted = set(actors) if actors is not None else None
    seen: set[str] = set()
    out = []
    for it in scan(root, "ravdess"):
        mod, ch = it.get("modality"), it.get("channel")
        if mod == "video" or (mod == "audio-video" and not include_video):
            continue
        if ch == "song" and not include_song:
            continue
        if wanted is not None and it.get("actor") not in wanted:
            continue
        key = Path(it.path).stem
        if key in seen:
            continue
        seen.add(key)
        out.append(it)
    return out


#: the environment variable naming the folder that holds the corpora (``--data`` overrides it)
DATA_ENV = "EMOSTREAM_DATA"
#: each corpus's folder name inside that folder
CORPUS_DIRS = {"ravdess": "ravdess-speech-16k", "emodb": "emodb-16k"}


class DataError(ValueError):
    """The training or evaluation data is missing or empty (the message says what to do)."""


def data_root(path: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding the corpora: ``path``, else ``$EMOSTREAM_DATA``; there is no default."""
    path = path or os.environ.get(DATA_ENV)
    if not path:
        raise DataError(f"no data folder: pass --data DIR or set {DATA_ENV} (a folder holding "
                        + " and ".join(f"{v}/" for v in CORPUS_DIRS.values()) + ")")
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    return root


def corpus_dir(root: str | os.PathLike[str], corpus: str) -> Path:
    """A corpus's folder: ``root/<its folder name>``, or ``root`` itself when it holds that corpus."""
    root = Path(root)
    sub = root / CORPUS_DIRS.get(corpus, corpus)
    if sub.is_dir():
        return sub
    here = any(parse_any(p, corpus) is not None for p in _first_files(root, 50))
    if here:
        return root
    raise DataError(f"no {corpus} corpus under {root} (expected {sub}/)")


def _first_files(root: Path, n: int) -> list[Path]:
    out = []
    for p in _walk(root):
        out.append(p)
        if len(out) >= n:
            break
    return out


def corpus_items(root: str | os.PathLike[str], corpus: str) -> list[Item]:
    """A corpus's labelled recordings under the data folder ``root`` (RAVDESS: audio-only speech)."""
    d = corpus_dir(root, corpus)
    items = ravdess_items(d) if corpus == "ravdess" else scan(d, corpus)
    if not items:
        raise DataError(f"no labelled {corpus} recordings under {d}")
    return items
