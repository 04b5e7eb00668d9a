"""File-name parsing for every supported corpus, and the RAVDESS reader's duplicate handling."""

from __future__ import annotations

import numpy as np
import pytest

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.datasets import (  # noqa: E402
    LABEL_MAPS,
    LABELS,
    parse_any,
    parse_crema,
    parse_emodb,
    parse_ravdess,
    parse_savee,
    parse_tess,
    ravdess_items,
    scan,
)


def test_every_mapping_targets_the_eight_labels():
    for corpus, mapping in LABEL_MAPS.items():
        for src, dst in mapping.items():
            assert dst is None or dst in LABELS, (corpus, src, dst)


@pytest.mark.parametrize(
    "name, label, actor, modality, intensity",
    [
        ("Actor_12/03-01-05-02-01-02-12.wav", "angry", 12, "audio", "strong"),
        ("Actor_01/03-01-01-01-01-01-01.flac", "neutral", 1, "audio", "normal"),
        ("Actor_24/01-01-08-01-02-01-24.mp4", "surprised", 24, "audio-video", "normal"),
        ("02-01-06-02-02-02-07.mp4", "fearful", 7, "video", "strong"),
        ("03-01-02-01-01-01-20.wav", "calm", 20, "audio", "normal"),
        ("03-01-07-01-01-01-03.wav", "disgust", 3, "audio", "normal"),
    ],
)
def test_ravdess_names(name, label, actor, modality, intensity):
    it = parse_ravdess(name)
    assert it is not None
    assert it.label == label and it.corpus == "ravdess"
    assert it.get("actor") == actor and it.speaker == f"ravdess-{actor:02d}"
    assert it.get("modality") == modality and it.get("intensity") == intensity
    assert it.get("sex") == ("male" if actor % 2 else "female")


def test_ravdess_song_and_bad_names():
    assert parse_ravdess("03-02-03-01-01-01-05.wav").get("channel") == "song"
    for bad in ("03-01-09-01-01-01-05.wav", "04-01-01-01-01-01-01.wav", "03-01-01-01-01-01.wav", "notes.txt",
                "03-01-01-01-01-01-01.txt"):
        assert parse_ravdess(bad) is None, bad


@pytest.mark.parametrize(
    "name, label, speaker",
    [
        ("OAF_back_angry.wav", "angry", "tess-OAF"),
        ("YAF_dog_ps.wav", "surprised", "tess-YAF"),
        ("OAF_Fear/OAF_bite_fear.wav", "fearful", "tess-OAF"),
        ("YAF_chair_disgust.wav", "disgust", "tess-YAF"),
        ("OAF_youth_neutral.wav", "neutral", "tess-OAF"),
        ("YAF_lose_happy.wav", "happy", "tess-YAF"),
        ("OAF_lose_sad.wav", "sad", "tess-OAF"),
    ],
)
def test_tess_names(name, label, speaker):
    it = parse_tess(name)
    assert it.label == label and it.speaker == speaker and it.corpus == "tess"


@pytest.mark.parametrize(
    "name, label",
    [
        ("1001_DFA_ANG_XX.wav", "angry"),
        ("1091_IEO_HAP_HI.wav", "happy"),
        ("1002_TIE_NEU_XX.wav", "neutral"),
        ("1050_ITS_SAD_LO.wav", "sad"),
        ("1033_MTI_FEA_MD.wav", "fearful"),
        ("1012_WSI_DIS_XX.wav", "disgust"),
    ],
)
def test_crema_names(name, label):
    it = parse_crema(name)
    assert it.label == label and it.corpus == "crema" and it.speaker == "crema-" + name[:4]
    assert parse_crema("1001_DFA_XYZ_XX.wav") is None


@pytest.mark.parametrize(
    "name, label, speaker",
    [
        ("DC_a01.wav", "angry", "savee-DC"),
        ("JE_sa15.wav", "sad", "savee-JE"),
        ("JK_su03.wav", "surprised", "savee-JK"),
        ("KL_n30.wav", "neutral", "savee-KL"),
        ("AudioData/DC/h07.wav", "happy", "savee-DC"),
        ("AudioData/JE/d02.wav", "disgust", "savee-JE"),
        ("AudioData/KL/f11.wav", "fearful", "savee-KL"),
    ],
)
def test_savee_names(name, label, speaker):
    it = parse_savee(name)
    assert it.label == label and it.speaker == speaker and it.corpus == "savee"
    assert parse_savee("a01.wav") is None  # no speaker anywhere


@pytest.mark.parametrize(
    "name, label, speaker",
    [
        ("03a01Fa.wav", "happy", "emodb-03"),
        ("08a02Wb.wav", "angry", "emodb-08"),
        ("16b10Tc.wav", "sad", "emodb-16"),
        ("11a04Ea.wav", "disgust", "emodb-11"),
        ("12b01Ad.wav", "fearful", "emodb-12"),
        ("13a05Na.wav", "neutral", "emodb-13"),
    ],
)
def test_emodb_names(name, label, speaker):
    it = parse_emodb(name)
    assert it.label == label and it.speaker == speaker and it.corpus == "emodb"


def test_emodb_boredom_is_unmappable_and_dropped(tmp_path):
    it = parse_emodb("03a01La.wav")
    assert it is not None and it.label is None and it.source_label == "L"
    (tmp_path / "03a01La.wav").write_bytes(b"")
    (tmp_path / "03a01Fa.wav").write_bytes(b"")
    assert [i.label for i in scan(tmp_path, "emodb")] == ["happy"]
    assert len(scan(tmp_path, "emodb", keep_unmapped=True)) == 2


def test_parse_any_detects_corpus():
    assert parse_any("03-01-05-02-01-02-12.wav").corpus == "ravdess"
    assert parse_any("1001_DFA_ANG_XX.wav").corpus == "crema"
    assert parse_any("03a01Fa.wav").corpus == "emodb"
    assert parse_any("OAF_back_angry.wav").corpus == "tess"
    assert parse_any("DC_a01.wav").corpus == "savee"
    assert parse_any("readme.wav") is None


def test_ravdess_items_skips_video_duplicates_and_song(tmp_path):
    for actor in (1, 2):
        d = tmp_path / f"Actor_{actor:02d}"
        d.mkdir()
        for name in (f"03-01-05-01-01-01-{actor:02d}.wav", f"01-01-05-01-01-01-{actor:02d}.mp4",
                     f"02-01-05-01-01-01-{actor:02d}.mp4", f"03-02-05-01-01-01-{actor:02d}.wav"):
            (d / name).write_bytes(b"")
    items = ravdess_items(tmp_path)
    assert [i.get("modality") for i in items] == ["audio", "audio"]
    assert {i.get("actor") for i in items} == {1, 2}
    with_video = ravdess_items(tmp_path, include_video=True)
    assert sorted(i.get("modality") for i in with_video) == ["audio", "audio", "audio-video", "audio-video"]
    assert len(ravdess_items(tmp_path, actors=[2], include_song=True)) == 2


def test_load_audio_resamples(tmp_path):
    sf = pytest.importorskip("soundfile")
    from streamer.sources import load_audio  # the one decoder, which the dataset tools use

    y = (0.1 * np.sin(2 * np.pi * 440 * np.arange(48000) / 48000)).astype(np.float32)
    sf.write(tmp_path / "03-01-01-01-01-01-01.wav", np.stack([y, y], 1), 48000)
    out, sr = load_audio(tmp_path / "03-01-01-01-01-01-01.wav", 16000)
    assert sr == 16000
    assert out.dtype == np.float32 and out.ndim == 1 and abs(len(out) - 16000) <= 1
