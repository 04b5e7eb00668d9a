"""Telephone-band detection (streamer/bandwidth.py): a call resampled upstream is normalised as a call."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf

from conftest import EXAMPLE
from streamer.analysis import ChannelAnalyzer
from streamer.bandwidth import DETECT_FRAMES, THRESHOLD_DB, BandDetector, band_gap
from streamer.config import NormConfig
from streamer.features import frame_features
from streamer.normalise import Normaliser
from tools import augment


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, int]:
    """The bundled example's first 20 s at 16 kHz (several voices)."""
    y, sr = sf.read(EXAMPLE, dtype="float32", always_2d=True, frames=16000 * 20)
    assert sr == 16000
    return y.mean(axis=1), sr


def _narrow_meta(meta):
    """The model with a narrowband prior far from its wideband one (so a switch shows)."""
    n = meta.features.n_channels
    return replace(meta, normalisation=replace(meta.normalisation, narrowband_mean=[7.0] * n,
                                               narrowband_std=[3.0] * n))


def _decide(y: np.ndarray, meta) -> tuple[bool | None, np.ndarray]:
    an = ChannelAnalyzer(meta)
    feats, level = an.featurizer.push(y)
    det = BandDetector(meta.features)
    det.push(feats, an.speech(feats, level))
    return det.narrowband, band_gap(feats, meta.features)


def test_telephone_audio_at_16_khz_is_told_from_wideband_speech_and_codecs(model, speech):
    meta, _ = model
    y, sr = speech
    wide, gap_wide = _decide(y, meta)
    tel, gap_tel = _decide(augment.telephone(y, sr), meta)
    mp3, _ = _decide(augment.codec(y, sr, "mp3", 24), meta)  # the lowest bitrate training uses: low-passed, not empty
    assert (wide, tel, mp3) == (False, True, False)
    quiet_wide, _ = _decide(0.1 * y, meta)
    quiet_tel, _ = _decide(0.1 * augment.telephone(y, sr), meta)
    assert (quiet_wide, quiet_tel) == (False, True)
    # the gap is wide, not a coin toss at the threshold
    assert np.median(gap_wide) > THRESHOLD_DB + 15 and np.median(gap_tel) < THRESHOLD_DB - 15


def test_quiet_telephone_speech_whose_highs_sit_on_the_floor_is_still_telephone(model):
    """Lows at -70 dB and empty highs on the features' -100 dB floor are only 30 dB apart; the lows'
    reference (LOW_REF_DB) keeps that from passing for wideband speech with a 20 dB roll-off."""
    from streamer.bandwidth import LOW_REF_DB
    from streamer.features import _hz_to_mel, _mel_to_hz, dct_matrix

    cfg = model[0].features
    centres = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(cfg.sample_rate / 2), cfg.n_mels + 2))[1:-1]
    D = dct_matrix(cfg.n_mels, cfg.n_mfcc).astype(np.float64)

    def gap(low_db, high_db):
        logmel = np.where(centres < 3900, low_db, high_db)[None, :]
        return float(band_gap(np.hstack([logmel @ D, np.zeros((1, cfg.n_channels - cfg.n_mfcc))]), cfg)[0])

    assert LOW_REF_DB > -70
    assert gap(-70.0, -100.0) < THRESHOLD_DB < gap(-70.0, -90.0)
    assert gap(-30.0, -90.0) < THRESHOLD_DB < gap(-30.0, -50.0)  # loud: the plain difference


def test_the_switch_falls_at_one_frame_whatever_the_blocks(model, speech):
    """Windows ending before the decision are the wideband analyser's, those after it the telephone
    analyser's, and blocks of any size give the same windows as the clip at once."""
    meta, _ = model
    nb = _narrow_meta(meta).with_window(1.0, 0.5)  # 1 s windows: some end before the first second of speech
    y, sr = speech
    tel = augment.telephone(y, sr)
    feats, level = frame_features(tel, meta.features)
    speech_flags = ChannelAnalyzer(nb).speech(feats, level)
    decide_at = int(np.flatnonzero(speech_flags)[DETECT_FRAMES - 1])

    whole = ChannelAnalyzer(nb)
    ref = whole.push_frames(feats, speech_flags)
    assert whole.narrowband
    known = ChannelAnalyzer(nb, narrowband=True).push_frames(feats, speech_flags)
    wideband = ChannelAnalyzer(nb, narrowband=False).push_frames(feats, speech_flags)
    ends = ref.starts + ref.frames - 1
    assert (ends < decide_at).any() and (ends >= decide_at).any()  # windows on both sides
    late = ends >= decide_at
    np.testing.assert_allclose(ref.feats[late], known.feats[late], atol=1e-5)
    np.testing.assert_array_equal(ref.feats[~late], wideband.feats[~late])
    assert np.abs(ref.feats[late] - wideband.feats[late]).max() > 0.5

    rng = np.random.default_rng(3)
    an = ChannelAnalyzer(nb)
    parts, a = [], 0
    while a < len(feats):
        b = min(len(feats), a + int(rng.integers(1, 120)))
        parts.append(an.push_frames(feats[a:b], speech_flags[a:b]))
        a = b
    np.testing.assert_allclose(np.concatenate([p.feats for p in parts if len(p.starts)]), ref.feats, atol=1e-6)
    # each window says which prior it was normalised from, the same whatever the blocks
    assert whole.bands(ref) == ["telephone" if e else "wideband" for e in late]
    assert [b for p in parts for b in (an.bands(p) if len(p.starts) else [])] == whole.bands(ref)
    assert set(ChannelAnalyzer(nb, narrowband=True).bands(known)) == {"telephone"}
    assert set(ChannelAnalyzer(nb, narrowband=False).bands(wideband)) == {"wideband"}


def test_normaliser_switches_prior_inside_a_block():
    cfg = NormConfig(kind="running", mean=[0.0, 0.0], std=[1.0, 1.0], prior_frames=10,
                     narrowband_mean=[5.0, -5.0], narrowband_std=[2.0, 2.0])
    x = np.full((10, 2), 1.0)
    flags = np.ones(10, bool)
    idx = np.arange(10)
    switched = Normaliser(cfg, 2)
    m, s = switched.push(x, flags, narrow_from=4).at(idx)
    wm, ws = Normaliser(cfg, 2).push(x, flags).at(idx)
    nm, ns = Normaliser(cfg, 2, narrowband=True).push(x, flags).at(idx)
    np.testing.assert_allclose(m[:4], wm[:4])
    np.testing.assert_allclose(s[:4], ws[:4])
    np.testing.assert_allclose(m[4:], nm[4:])
    np.testing.assert_allclose(s[4:], ns[4:])
    assert switched.narrowband
    np.testing.assert_allclose(switched.current()[0], Normaliser(cfg, 2, narrowband=True).push(x, flags).at(idx[-1:])[0])
    # a model without a narrowband prior ignores the switch
    plain = Normaliser(NormConfig(kind="running", mean=[0.0, 0.0], std=[1.0, 1.0], prior_frames=10), 2)
    m2, _ = plain.push(x, flags, narrow_from=4).at(idx)
    np.testing.assert_allclose(m2, wm)
    assert not plain.narrowband


@pytest.mark.parametrize("rate", [16000, 44100])
def test_a_call_resampled_upstream_gets_the_same_windows_as_the_call(model, speech, rate):
    """The 8 kHz mu-law call, and the same call upsampled to 16 / 44.1 kHz before it reaches us:
    the pipeline scores the same windows (the shipped model carries a narrowband prior)."""
    import soxr

    from streamer.pipeline import Pipeline

    meta, clf = model
    assert meta.normalisation.narrowband_mean is not None
    y, sr = speech
    call = augment.mulaw_decode(augment.mulaw_encode(soxr.resample(y, sr, 8000, quality="HQ")))

    def scored(x, in_rate):
        out = []

        def keep(X):
            p = clf(X)
            out.append(p)
            return p

        pipe = Pipeline(meta, keep, in_rate=in_rate, in_channels=1)
        for a in range(0, len(x), 3000):
            pipe.feed(x[a : a + 3000, None])
        pipe.finish()
        return np.concatenate(out), pipe.analyzers[0].narrowband

    ref, narrow = scored(call, 8000)
    up, detected = scored(soxr.resample(call, 8000, rate, quality="HQ").astype(np.float32), rate)
    wide, wideband = scored(y, sr)
    assert narrow and detected and not wideband
    n = min(len(ref), len(up))
    assert n >= 15
    np.testing.assert_allclose(up[:n], ref[:n], atol=0.02)


def test_no_detector_without_a_narrowband_prior_or_without_the_highs(model):
    meta, _ = model
    plain = replace(meta, normalisation=replace(meta.normalisation, narrowband_mean=None, narrowband_std=None))
    assert ChannelAnalyzer(plain).band is None
    assert ChannelAnalyzer(meta).band is not None
    assert ChannelAnalyzer(meta, narrowband=False).band is None and ChannelAnalyzer(meta, narrowband=True).band is None
    low = replace(meta.features, sample_rate=8000, fmax=None)
    assert not BandDetector.usable(low)
    with pytest.raises(ValueError, match="no bands"):
        band_gap(np.zeros((3, low.n_channels)), low)


def test_each_channel_of_a_stereo_call_is_heard_on_its_own(model, speech):
    """Agent on a wideband headset, customer over the phone network, one 16 kHz stereo file: the
    customer's channel switches to the telephone prior, the agent's does not."""
    from streamer.pipeline import Pipeline

    meta, clf = model
    y, sr = speech
    stereo = np.stack([y, augment.telephone(y[::-1].copy(), sr)], axis=1)
    pipe = Pipeline(meta, clf, in_rate=sr, in_channels=2, channels="split")
    events = []
    for a in range(0, len(stereo), 4000):
        events += pipe.feed(stereo[a : a + 4000])
    events += pipe.finish()
    assert [an.narrowband for an in pipe.analyzers] == [False, True]
    # the window events say so: the agent's all wideband, the customer's telephone once heard as such
    bands = {ch: [e.band for e in events if e.type == "window" and e.channel == ch] for ch in (0, 1)}
    assert set(bands[0]) == {"wideband"}
    first = bands[1].index("telephone")
    assert set(bands[1][first:]) == {"telephone"} and bands[1][-1] == "telephone"
    assert all(b == "wideband" for b in bands[1][:first])


def test_window_events_carry_the_band_in_every_output(model, speech):
    """An 8 kHz call is telephone from its first window, in the Python API's timeline, ``label -f
    json`` and jsonl; a model without a narrowband prior leaves the key out."""
    import io
    import json

    import soxr

    import streamer
    from streamer.formats import open_writer

    meta, clf = model
    y, sr = speech
    call = soxr.resample(y[: sr * 8], sr, 8000, quality="HQ").astype(np.float32)
    tl = streamer.label(call, sample_rate=8000)
    assert tl.windows and {w.band for w in tl.windows} == {"telephone"}
    assert {w["band"] for w in tl.to_dict()["windows"]} == {"telephone"}
    buf = io.StringIO()
    writer = open_writer("jsonl", buf)
    writer.header({"source": "call"})
    for ev in tl.events:
        writer.event(ev)
    writer.close(duration=tl.duration)
    rows = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert {r["band"] for r in rows if r["type"] == "window"} == {"telephone"}
    buf = io.StringIO()
    writer = open_writer("csv", buf)
    writer.header({"source": "call", "model": {"labels": list(meta.labels)}})
    for ev in tl.events:
        writer.event(ev)
    writer.close(duration=tl.duration)
    import csv

    assert {r["band"] for r in csv.DictReader(io.StringIO(buf.getvalue()))} == {"telephone"}
    from streamer.summary import Summary

    summ = Summary()
    for ev in tl.events:
        summ.add(ev.to_wire())
    assert summ.result(tl.duration)["channels"][0]["band"] == "telephone"
    wide = streamer.label(y[: sr * 8], sample_rate=sr)
    assert {w.band for w in wide.windows} == {"wideband"}
    plain = replace(meta, normalisation=replace(meta.normalisation, narrowband_mean=None, narrowband_std=None))
    from streamer.pipeline import Pipeline

    pipe = Pipeline(plain, clf, in_rate=8000, in_channels=1)
    evs = pipe.feed(call[:, None]) + pipe.finish()
    wins = [e for e in evs if e.type == "window"]
    assert wins and all(e.band is None and "band" not in e.to_wire() for e in wins)
