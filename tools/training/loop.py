"""The training loop: one epoch's windows (a random augmented copy and place per clip), masks, mixup, fit."""

from __future__ import annotations

import time

import numpy as np

from streamer.features import window_means
from streamer.normalise import Normaliser
from tools.augment import is_narrowband
from tools.datasets import LABELS
from tools.training.network import (build_model, emotion_model, head_mix_model, merge_split_model, optimizer,
                                    view_channels)
from tools.training.recipe import Recipe
from tools.training.windows import clip_labels, eval_windows, predict_clips, sample_window, to_layout, training_meta

__all__ = ["spec_mask", "mixup", "epoch_set", "corpus_label_mask", "class_weights", "scale_labels",
           "masked_crossentropy", "masked_crossentropy_of", "head_crossentropy", "head_corpora", "split_targets",
           "adversary_targets", "adversary_scale", "fit", "keras_predict"]


def spec_mask(X: np.ndarray, rng, max_t: int = 15, max_c: int = 8, n_mels: int = 0) -> np.ndarray:
    """Time mask (zeroed frames) and a coefficient mask; with ``n_mels`` the second masks mel bands.

    A mel-band mask in the cepstral domain: the window's log-mel projection ``X @ D.T`` loses bands
    ``c0..c0+w`` and is projected back (``D`` the DCT matrix of the features), so the mask is the
    SpecAugment frequency mask whatever the number of coefficients kept.
    """
    B, T, C = X.shape
    D = None
    if n_mels:
        from streamer.features import dct_matrix

        D = dct_matrix(n_mels, C)  # [n_mels, C]
    for b in range(B):
        w = int(rng.integers(0, max_t + 1))
        if w and T > w:
            t0 = int(rng.integers(0, T - w))
            X[b, t0 : t0 + w] = 0.0
        w = int(rng.integers(0, max_c + 1))
        if D is not None and w:
            c0 = int(rng.integers(0, n_mels - w))
            band = D[c0 : c0 + w]  # [w, C]
            X[b] -= (X[b] @ band.T) @ band
        elif D is None and w and C > w:
            c0 = int(rng.integers(0, C - w))
            X[b, :, c0 : c0 + w] = 0.0
    return X


def mixup(X: np.ndarray, y: np.ndarray, alpha: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Mixup of windows and their one-hot labels, the window's own share drawn from Beta(alpha, alpha)."""
    lam = rng.beta(alpha, alpha, size=len(X)).astype(np.float32)
    lam = np.maximum(lam, 1.0 - lam)  # the window keeps the larger share (its own label dominates)
    perm = rng.permutation(len(X))
    lx = lam.reshape((-1,) + (1,) * (X.ndim - 1))
    return lx * X + (1 - lx) * X[perm], lam[:, None] * y + (1 - lam[:, None]) * y[perm]


def corpus_label_mask(data, idx, labels=("all",), weight: float = 0.0) -> np.ndarray:
    """[clips, labels]: 1 where clip ``idx[j]``'s loss sees the label fully, ``weight`` where its corpus lacks it.

    A label of ``labels`` ("all": any) is left out for a clip when the clip's corpus never has it among
    ``idx`` but another corpus there does; labels no corpus has stay in (the network learns that they
    never occur), and so do labels not named. A ``weight`` above 0 keeps the left-out label in that
    clip's loss at that weight (a softer "this voice is not calm": see :func:`masked_crossentropy`).
    """
    n = len(LABELS)
    named = np.array([("all" in labels) or (lab in labels) for lab in LABELS])
    corpora = data.corpus[idx]
    has = {c: np.bincount(data.y[idx][corpora == c], minlength=n) > 0 for c in np.unique(corpora)}
    anywhere = np.any(list(has.values()), axis=0)
    rows = {c: np.where(h | ~anywhere | ~named, 1.0, float(weight)).astype(np.float32) for c, h in has.items()}
    return np.stack([rows[c] for c in corpora])


def class_weights(data, idx, only: str | None = None, power: float = 1.0) -> np.ndarray:
    """[clips, labels]: the loss weight of label k for clip ``idx[j]``, balanced within its corpus.

    Within a corpus every label it has among ``idx`` carries the same total weight (n_c / (K_c n_ck)
    per clip); with ``only`` (a corpus) the other corpora's labels keep their clips' counts (weight
    1). ``power`` < 1 balances part of the way (each weight raised to it, then scaled so the corpus
    keeps its share). The weights are then scaled to average 1 over the clips, so the loss keeps its
    scale.
    """
    n = len(LABELS)
    corpora, y = data.corpus[idx], data.y[idx]
    rows = {}
    for c in np.unique(corpora):
        counts = np.bincount(y[corpora == c], minlength=n).astype(np.float64)
        present = counts > 0
        w = np.zeros(n)
        balanced = only is None or c == only
        w[present] = (counts.sum() / (present.sum() * counts[present])) ** power if balanced else 1.0
        w *= counts.sum() / (counts * w).sum()  # the corpus keeps its clips' share of the loss
        rows[c] = w
    W = np.stack([rows[c] for c in corpora])
    W /= W[np.arange(len(idx)), y].mean()
    return W.astype(np.float32)


def scale_labels(data, idx, W: np.ndarray | None, scale: dict[tuple[str, str], float]) -> np.ndarray | None:
    """Label weights [clips, labels] (``W``, or all ones) with ``scale``'s (corpus, label) entries applied to
    that corpus's clips, rescaled so the clips' own labels still average 1; None when nothing is scaled."""
    if not scale:
        return W
    n = len(LABELS)
    W = np.ones((len(idx), n), np.float32) if W is None else np.array(W, np.float32)
    corpora, y = data.corpus[idx], data.y[idx]
    for (corpus, label), w in scale.items():
        W[corpora == corpus, LABELS.index(label)] *= w
    mean = W[np.arange(len(idx)), y].mean()
    return W / mean if mean > 0 else W


def masked_crossentropy_of(n: int):
    """:func:`masked_crossentropy` over ``n`` classes (``y_true`` is [target | mask], [B, 2 x n])."""
    import tensorflow as tf

    def loss(y_true, y_pred):
        t, m = y_true[:, :n], y_true[:, n:]
        allow = tf.maximum(m, tf.cast(t > 0, y_pred.dtype))
        q = y_pred * allow
        q = q / (tf.reduce_sum(q, axis=-1, keepdims=True) + 1e-7)
        return -tf.reduce_sum(t * tf.math.log(q + 1e-7), axis=-1)

    return loss


def masked_crossentropy(y_true, y_pred):
    """Cross-entropy over the allowed labels: ``y_true`` is [target | mask] ([B, 2 x labels]).

    The probabilities are weighted by the mask (a label the target holds always weighs 1) and
    renormalised: a 0/1 mask is a softmax over the allowed labels' logits; a weight w in (0, 1) is
    that label's logit lowered by log(1/w) in this clip's loss only, so the clip still pushes the label
    down, more weakly. A mask mixed by mixup weighs labels by the mix.
    """
    return masked_crossentropy_of(len(LABELS))(y_true, y_pred)


def head_crossentropy(n_heads: int, label_smoothing: float = 0.0):
    """Cross-entropy on each clip's own head: ``y_true`` is [target | corpus one-hot] ([B, labels + heads]),
    ``y_pred`` the heads side by side ([B, heads x labels]); a clip's other heads get no gradient from it."""
    import tensorflow as tf

    n = len(LABELS)
    ls = float(label_smoothing)

    def loss(y_true, y_pred):
        t, c = y_true[:, :n], y_true[:, n:]
        if ls:
            t = t * (1.0 - ls) + ls / n
        p = tf.reduce_sum(tf.reshape(y_pred, (-1, n_heads, n)) * c[:, :, None], axis=1)
        return -tf.reduce_sum(t * tf.math.log(p + 1e-7), axis=-1)

    return loss


def split_targets(y: np.ndarray, corpora: np.ndarray, splits: list[tuple[str, int]]) -> np.ndarray:
    """Targets [B, labels] as targets of the network with ``splits``' extra outputs [B, labels + extras]:
    a clip of corpus c moves its share of label k to the extra output of (c, k)."""
    out = np.concatenate([y, np.zeros((len(y), len(splits)), y.dtype)], axis=1)
    for e, (corpus, k) in enumerate(splits):
        rows = corpora == corpus
        out[rows, len(LABELS) + e] = out[rows, k]
        out[rows, k] = 0.0
    return out


def head_corpora(data, tr, rcp: Recipe) -> list[str]:
    """The corpora that get a head of their own when training on clips ``tr`` (none: one head for all)."""
    if rcp.heads != "corpus":
        return []
    present = set(data.corpus[tr].tolist())
    out = [c for c in rcp.corpora if c in present]
    return out if len(out) > 1 else []


def adversary_targets(data, tr, rcp: Recipe) -> np.ndarray | None:
    """The adversary's targets for the clips of ``tr``, or None without an adversary or with a single
    class (nothing to tell apart).

    ``speaker_all`` and ``corpus``: each clip's class index among the speakers (corpora) of ``tr``.
    ``speaker``: [one-hot speaker | mask of the speakers of the clip's own corpus] ([clips, 2 x speakers],
    for :func:`masked_crossentropy_of`): the adversary tells apart the speakers within a corpus only,
    so what it reverses is who speaks, not which corpus (German or English, one studio or another).
    With ``rcp.adversary_corpora`` the classes are those corpora's speakers and every other clip's
    target row is zeros (no loss, no reversed gradient); this needs the masked form, so it is ``speaker``'s.
    """
    if rcp.adversary == "none":
        return None
    keys = (data.corpus if rcp.adversary == "corpus" else data.speaker)[tr]
    own = np.ones(len(tr), bool)
    if rcp.adversary_corpora:
        own = np.isin(data.corpus[tr], list(rcp.adversary_corpora))
    names, ids = np.unique(keys[own], return_inverse=True)
    if len(names) < 2:
        return None
    if rcp.adversary != "speaker":  # the recipe allows adversary corpora with ``speaker`` only
        return ids.astype(np.int64)
    corpus_of = {name: c for name, c in zip(keys, data.corpus[tr])}
    n = len(names)
    target = np.zeros((len(tr), n), np.float32)
    target[np.flatnonzero(own), ids] = 1.0
    mask = (data.corpus[tr][:, None] == np.array([corpus_of[k] for k in names])[None, :]).astype(np.float32)
    return np.concatenate([target, mask * own[:, None]], axis=1)


def adversary_scale(rcp: Recipe, epoch: int) -> float:
    """The reversed gradient's scale in ``epoch`` (0-based): DANN's ramp 2 / (1 + exp(-10 p)) - 1 of the
    training's progress p, times ``rcp.adversary_weight`` (0 at the start, the full weight near the end)."""
    p = epoch / max(1, rcp.epochs)
    return float(rcp.adversary_weight) * (2.0 / (1.0 + np.exp(-10.0 * p)) - 1.0)


def _speech_span(speech: np.ndarray) -> tuple[int, int]:
    on = np.flatnonzero(speech)
    return (int(on[0]), int(on[-1]) + 1) if len(on) else (0, len(speech))


def straddle_window(data, i: int, k: int, v: int, cfg, ncfg, rng,
                    narrowband: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A window cut from utterance ``i``, a pause, then utterance ``k`` (one speaker, as in a stream).

    Both utterances are trimmed to their speech; the pause (0.2-2 s) holds silence frames of the
    recording. The window sits anywhere on the pair and its target is the labels of the two
    utterances in proportion to their speech frames inside it (the streamer's pipeline sees such
    windows at every utterance boundary of a continuous stream).
    """
    fa, sa = data.cf.mfcc(i, v), data.speech[i][v]
    fb, sb = data.cf.mfcc(k, v), data.speech[k][v]
    a0, a1 = _speech_span(sa)
    b0, b1 = _speech_span(sb)
    quiet = fa[~sa] if (~sa).any() else fa[np.argsort(data.cf.level(i, v))[:1]]
    n_pause = int(rng.integers(int(0.2 * cfg.frame_rate), int(2.0 * cfg.frame_rate) + 1))
    pause = quiet[rng.integers(0, len(quiet), n_pause)]
    frames = np.concatenate([fa[a0:a1], pause, fb[b0:b1]])
    speech = np.concatenate([sa[a0:a1], np.zeros(n_pause, bool), sb[b0:b1]])
    owner = np.concatenate([np.zeros(a1 - a0, int), np.full(n_pause, -1), np.ones(b1 - b0, int)])
    wf = cfg.window_frames
    if len(frames) < wf:
        pad = wf - len(frames)
        frames = np.concatenate([frames, np.repeat(frames[-1:], pad, 0)])
        speech = np.concatenate([speech, np.zeros(pad, bool)])
        owner = np.concatenate([owner, np.full(pad, -1)])
    s = int(rng.integers(0, len(frames) - wf + 1))
    w = window_means(frames, np.array([s]), cfg)
    norm = Normaliser(ncfg, cfg.n_channels, narrowband)
    st = norm.push(frames, speech)
    m, sd = st.at(np.array([s + wf - 1]))
    own, sp = owner[s : s + wf], speech[s : s + wf]
    na, nb = float(np.sum(sp & (own == 0))), float(np.sum(sp & (own == 1)))
    target = np.zeros(len(LABELS), np.float32)
    if na + nb == 0:
        na = 1.0
    target[data.y[i]] += na / (na + nb)
    target[data.y[k]] += nb / (na + nb)
    return norm.apply(w, m, sd)[0], target


def epoch_set(data, idx, rcp: Recipe, ncfg, rng, view: str = "all"):
    """One epoch: one randomly chosen version and random window placement per clip.

    With ``rcp.straddle`` that share of the windows straddles two utterances of the clip's speaker
    (:func:`straddle_window`) and the targets are label distributions ([clips, labels]); else
    label indices. Masks fall on the channels the member reads, so an ``mfcc`` member of pitch
    features trains exactly as a network of MFCC features alone would.
    """
    cfg = rcp.features
    tv = [data.cf.vindex(v) for v in rcp.train_versions]
    # which training copies start from the narrowband prior (telephone copies, with ``train``)
    nb = {data.cf.vindex(v): rcp.narrowband_prior == "train" and is_narrowband(v) for v in rcp.train_versions}
    X = np.empty((len(idx), cfg.window_steps, cfg.n_channels), np.float32)
    p_ctx = float(rcp.context)
    p_str = float(rcp.straddle)
    Y = np.eye(len(LABELS), dtype=np.float32)[data.y[idx]] if p_str else None
    by_speaker: dict[str, list[int]] = {}
    if p_ctx or p_str:
        for i in idx:
            by_speaker.setdefault(str(data.speaker[i]), []).append(i)
    for j, i in enumerate(idx):
        v = tv[int(rng.integers(len(tv)))]
        if p_str and rng.random() < p_str:
            # the next utterance: half the time one of the same emotion (a run), else any other
            mates = [o for o in by_speaker[str(data.speaker[i])] if o != i]
            same = [o for o in mates if data.y[o] == data.y[i]]
            pool = same if same and rng.random() < 0.5 else mates
            if pool:
                X[j], Y[j] = straddle_window(data, i, int(rng.choice(pool)), v, cfg, ncfg, rng, nb[v])
                continue
        ctx = None
        others = [o for o in by_speaker[str(data.speaker[i])] if o != i] if p_ctx else []
        if others and rng.random() < p_ctx:
            # as if the speaker had been talking before this clip in the same stream (same channel)
            pick = rng.choice(others, size=min(len(others), int(rng.integers(1, 9))), replace=False)
            ctx = (np.concatenate([data.cf.mfcc(o, v) for o in pick]),
                   np.concatenate([data.speech[o][v] for o in pick]))
        X[j] = sample_window(data.cf.mfcc(i, v), data.speech[i][v], cfg, ncfg, rng, ctx, nb[v])
    if rcp.spec_mask:
        spec_mask(X[:, :, : view_channels(cfg, view)], rng, int(rcp.mask_t), int(rcp.mask_c),
                  cfg.n_mels if rcp.mask_domain == "mel" else 0)
    return to_layout(X, rcp.input_layout), (Y if Y is not None else data.y[idx])


def keras_predict(model):
    """A Keras model as a batch -> probabilities function (inference mode)."""
    def f(X):
        return np.asarray(model(X, training=False))

    return f


def fit(data, tr, rcp: Recipe, ncfg, seed: int, val=None, curve_sets=None, log=print, view: str = "all",
        head_models: dict | None = None):
    """Train one model on clips ``tr``; early stopping on clips ``val`` when the recipe says so.

    Returns (model, info) where info has the epochs run, the best epoch, and the curve (clip accuracy
    on ``curve_sets`` every 5 epochs, for choosing the epoch count by CV). With a head per corpus the
    model is the heads' mix (what ships); ``head_models`` (a dict) then receives each corpus's head
    alone as a model of its own, for scoring the heads apart.
    """
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    heads = head_corpora(data, tr, rcp)
    splits = rcp.split_outputs()
    adv = adversary_targets(data, tr, rcp)
    n_adv = 0 if adv is None else (adv.shape[1] // 2 if adv.ndim == 2 else int(adv.max()) + 1)
    net = build_model(rcp, seed, view, max(1, len(heads)), len(splits), n_adv)
    if adv is not None:
        model = emotion_model(net)
    elif heads:
        model = head_mix_model(net, rcp.head_weight_list(heads))
    else:
        model = merge_split_model(net, [k for _, k in splits]) if splits else net
    if heads and head_models is not None:
        for h, c in enumerate(heads):
            head_models[c] = head_mix_model(net, [float(h == k) for k in range(len(heads))])
    steps = int(np.ceil(len(tr) / rcp.batch)) * rcp.epochs
    ls = float(rcp.label_smoothing)
    mix = float(rcp.mixup)
    lab_mask = corpus_label_mask(data, tr, rcp.corpus_labels, rcp.corpus_label_weight) if rcp.corpus_labels else None
    if lab_mask is not None and (lab_mask == 1).all():
        lab_mask = None  # one corpus (or corpora with the same labels): the plain loss, exactly as before
    cls_w = None if rcp.class_weight == "none" else class_weights(
        data, tr, None if rcp.class_weight == "corpus" else rcp.class_weight, rcp.class_weight_power)
    cls_w = scale_labels(data, tr, cls_w, rcp.label_weight_map())
    soft = bool(ls or mix or rcp.straddle or lab_mask is not None or heads
                or splits)  # label distributions as targets
    onehot = (data.corpus[tr][:, None] == np.array(heads)[None, :]).astype(np.float32) if heads else None
    if heads:
        loss = head_crossentropy(len(heads), ls)
    elif lab_mask is not None:
        loss = masked_crossentropy
    else:
        loss = tf.keras.losses.CategoricalCrossentropy(label_smoothing=ls) if soft else "sparse_categorical_crossentropy"
    # weight averaging over the last ``swa`` fraction of the epochs (one snapshot per epoch)
    swa_from = rcp.epochs - int(round(rcp.epochs * float(rcp.swa)))
    avg, n_avg = None, 0
    if adv is not None:
        loss = [loss, masked_crossentropy_of(n_adv) if adv.ndim == 2 else "sparse_categorical_crossentropy"]
    net.compile(optimizer=optimizer(rcp, steps), loss=loss)
    g = rcp.gate.min_fraction
    best, best_ep, best_w, wait = -1.0, 0, None, 0
    curve = []
    meta = training_meta(rcp, ncfg)
    vwins = eval_windows(data, val, "clean", meta) if val is not None and len(val) else None
    t0 = time.time()
    ep = 0
    for ep in range(rcp.epochs):
        X, y = epoch_set(data, tr, rcp, ncfg, rng, view)
        if soft and y.ndim == 1:
            y = np.eye(len(LABELS), dtype=np.float32)[y]
        sw = None
        if cls_w is not None:
            # a straddling window's weight is its target's mix of its labels' weights
            sw = (y * cls_w).sum(1) if y.ndim == 2 else cls_w[np.arange(len(y)), y]
        if splits:
            y = split_targets(y, data.corpus[tr], splits)  # rows follow ``tr``, as the windows do
        if lab_mask is not None:
            y = np.concatenate([y, lab_mask], axis=1)
        if onehot is not None:
            y = np.concatenate([y, onehot], axis=1)  # which head each clip's loss is on
        if mix:
            X, y = mixup(X, y, mix, rng)
        if adv is not None:
            net.get_layer("gradient_reversal").scale.assign(adversary_scale(rcp, ep))
            y = (y, adv)  # rows follow ``tr``, as the windows do
        h = net.fit(X, y, sample_weight=sw, batch_size=rcp.batch, epochs=1, verbose=0, shuffle=True)
        if ep >= swa_from:
            w = net.get_weights()
            n_avg += 1
            avg = w if avg is None else [a + (b - a) / n_avg for a, b in zip(avg, w)]
        if vwins is not None and rcp.early_stopping:
            P = predict_clips(keras_predict(model), vwins, rcp.input_layout, g)
            acc = float(np.mean(clip_labels(P) == data.y[val]))
            if acc > best:
                best, best_ep, best_w, wait = acc, ep + 1, net.get_weights(), 0
            else:
                wait += 1
                if wait >= rcp.patience:
                    break
        if curve_sets and ((ep + 1) % 5 == 0 or ep + 1 == rcp.epochs):
            point = {"epoch": ep + 1, "loss": round(float(h.history["loss"][-1]), 4)}
            for name, (wins, yy) in curve_sets.items():
                P = predict_clips(keras_predict(model), wins, rcp.input_layout, g)
                point[name] = round(float(np.mean(clip_labels(P) == yy)), 4)
            curve.append(point)
            log(f"    epoch {ep + 1}: {point} ({time.time() - t0:.0f} s)")
    if best_w is not None:
        net.set_weights(best_w)
    elif n_avg > 1:
        net.set_weights(avg)
    return model, {"epochs_run": ep + 1, "best_epoch": best_ep or ep + 1, "best_val": best, "curve": curve,
                   "seconds": round(time.time() - t0, 1)}
