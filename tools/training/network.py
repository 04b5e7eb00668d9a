"""The networks: the seed's Conv1D, the CNN of the default recipes, and ensembles of them."""

from __future__ import annotations

from tools.datasets import LABELS
from tools.training.recipe import Recipe

__all__ = ["build_model", "ensemble", "members_of", "view_channels", "optimizer", "head_mix_model", "merge_split_model",
           "gradient_reversal", "emotion_model"]


def view_channels(cfg, view: str) -> int:
    """Channels a member of ``view`` reads (the first ones of the frame features)."""
    return cfg.n_mfcc if view == "mfcc" else cfg.n_channels


def members_of(rcp: Recipe, n_seeds: int) -> list[tuple[int, str]]:
    """(seed offset, view) of every network: each seed once per view of the recipe."""
    return [(s, v) for s in range(n_seeds) for v in rcp.views]


def gradient_reversal():
    """A Keras layer that passes its input on and multiplies the gradient flowing back by ``-scale``
    (``layer.scale``, a variable the training loop ramps up; 0 at first)."""
    import tensorflow as tf
    from tensorflow import keras

    class GradientReversal(keras.layers.Layer):
        def build(self, input_shape):
            self.scale = self.add_weight(shape=(), initializer="zeros", trainable=False, name="scale")

        def call(self, x):
            s = tf.cast(self.scale, x.dtype)

            @tf.custom_gradient
            def rev(t):
                return tf.identity(t), lambda dy: -s * dy

            return rev(x)

    return GradientReversal(name="gradient_reversal")


def emotion_model(net):
    """The emotion output of a network built with an adversary, as a one-output model (what ships)."""
    from tensorflow import keras

    return keras.Model(net.inputs[0], net.outputs[0], name=net.name)


def build_model(rcp: Recipe, seed: int, view: str = "all", heads: int = 1, extra: int = 0, adversary: int = 0):
    """One network of the recipe; ``view="mfcc"`` reads only the MFCC channels of pitch features.

    ``heads`` > 1: one softmax layer per training corpus on the shared trunk (layers ``head_0``, ...),
    their outputs side by side ([B, heads x labels]); :func:`head_mix_model` makes the one-output
    network that ships. ``extra``: that many more outputs in the softmax (one corpus's own version of
    a label, ``Recipe.split_labels``); :func:`merge_split_model` adds each to its label. ``adversary``:
    that many classes (speakers or corpora) for a second output read from the last hidden layer through
    :func:`gradient_reversal` (outputs [emotions, adversary]; :func:`emotion_model` drops it).
    """
    from tensorflow import keras
    from tensorflow.keras import layers as L

    keras.utils.set_random_seed(seed)
    cfg = rcp.features
    n_out = len(LABELS) + int(extra)
    if rcp.arch == "seed":
        inp = keras.Input((cfg.n_channels * cfg.window_steps, 1))
        x = L.Conv1D(128, 5, padding="same")(inp)
        x = L.Activation("relu")(x)
        x = L.Dropout(0.1)(x)
        x = L.MaxPooling1D(8)(x)
        x = L.Conv1D(128, 5, padding="same")(x)
        x = L.Activation("relu")(x)
        x = L.Dropout(0.1)(x)
        x = L.Flatten()(x)
        out = L.Dense(n_out, activation="softmax")(x)
        return keras.Model(inp, out, name="seed")
    inp = keras.Input((None, cfg.n_channels))
    x = inp
    if view == "mfcc" and cfg.n_channels > cfg.n_mfcc:
        x = L.Lambda(lambda t: t[:, :, : cfg.n_mfcc], name="mfcc_view")(x)
    for f, k in rcp.blocks:
        x = L.Conv1D(f, k, padding="same", use_bias=False)(x)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
        x = L.MaxPooling1D(2, padding="same")(x)
    x = L.Dropout(0.3)(x)
    pools = [L.GlobalAveragePooling1D()(x), L.GlobalMaxPooling1D()(x)]
    if rcp.pool == "attention":
        # a learned weight per time step (softmax over the window), next to the average and maximum
        w = L.Softmax(axis=1)(L.Dense(1)(x))
        pools.append(L.Flatten()(L.Dot(axes=1)([w, x])))
    x = L.Concatenate()(pools)
    x = L.Dense(int(rcp.dense), activation="relu")(x)
    emb = x
    x = L.Dropout(0.3)(x)
    if adversary:
        a = L.Dense(64, activation="relu", name="adversary_hidden")(gradient_reversal()(emb))
        adv = L.Dense(int(adversary), activation="softmax", name="adversary")(a)
        return keras.Model(inp, [L.Dense(n_out, activation="softmax", name="emotion")(x), adv], name="cnn")
    if heads > 1:
        outs = [L.Dense(n_out, activation="softmax", name=f"head_{h}")(x) for h in range(heads)]
        return keras.Model(inp, L.Concatenate(name="heads")(outs), name="cnn")
    out = L.Dense(n_out, activation="softmax")(x)
    return keras.Model(inp, out, name="cnn")


def merge_split_model(model, labels_of_extra: list[int]):
    """A network with extra outputs (:func:`build_model` with ``extra``) as one with the labels' outputs
    only: each extra output's probability added to its label's (a fixed, untrained matrix)."""
    import numpy as np
    from tensorflow import keras
    from tensorflow.keras import layers as L

    n = len(LABELS)
    M = np.zeros((n + len(labels_of_extra), n), np.float32)
    M[np.arange(n), np.arange(n)] = 1.0
    M[n + np.arange(len(labels_of_extra)), labels_of_extra] = 1.0
    merge = L.Dense(n, use_bias=False, trainable=False, kernel_initializer=keras.initializers.Constant(M),
                    name="merge_split")
    return keras.Model(model.inputs[0], merge(model.outputs[0]), name=model.name)


def head_mix_model(model, weights: list[float]):
    """A multi-head network (:func:`build_model` with ``heads``) as one network whose probabilities are
    the heads' mixed with ``weights`` (summing to 1; a weight of 0 drops that head from the graph)."""
    from tensorflow import keras
    from tensorflow.keras import layers as L

    parts = [(w, model.get_layer(f"head_{h}").output) for h, w in enumerate(weights) if w > 0]
    if len(parts) == 1:
        out = parts[0][1]
    else:
        out = L.Add()([L.Rescaling(float(w))(t) for w, t in parts])
    return keras.Model(model.inputs[0], out, name=model.name)


def ensemble(models):
    """One Keras model averaging the members' probabilities (so one .tflite holds the ensemble)."""
    from tensorflow import keras
    from tensorflow.keras import layers as L

    if len(models) == 1:
        return models[0]
    for k, m in enumerate(models):
        m.name = f"{m.name}_{k}"  # member names must be unique inside one model
    inp = keras.Input(models[0].inputs[0].shape[1:])
    outs = [m(inp) for m in models]
    return keras.Model(inp, L.Average()(outs), name="ensemble")


def optimizer(rcp: Recipe, steps_total: int):
    """RMSprop (the seed), or Adam/AdamW with a cosine-decayed learning rate."""
    from tensorflow import keras

    if rcp.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=rcp.lr)
    lr = keras.optimizers.schedules.CosineDecay(rcp.lr, decay_steps=max(1, steps_total), alpha=0.02)
    if rcp.weight_decay:
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=float(rcp.weight_decay))
    return keras.optimizers.Adam(learning_rate=lr)
