"""Keras -> TensorFlow Lite: float32 and int8 dynamic-range, agreement check, size and latency.

The default model keeps a dynamic time axis (input ``[batch, None, n_mfcc]``): the runtime calls
``resize_tensor_input(idx, [B, steps, C])`` and ``allocate_tensors()`` before ``invoke()``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

__all__ = ["to_tflite", "Interpreter", "tflite_predict", "agreement", "latency_ms"]


def to_tflite(model, quant: str = "dynamic", time_steps: int | None = None) -> bytes:
    """Convert a Keras model with input ``[None, T or None, C]``; ``quant``: ``none`` or ``dynamic``."""
    import tempfile

    import tensorflow as tf

    # Keras 3 -> SavedModel -> TFLite: converting a concrete function of a Keras 3 model directly
    # leaves its weights behind as unresolved resource variables (NaN outputs); the export path
    # freezes them. The input keeps the Keras model's own shape, time axis dynamic when it is None.
    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        conv = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if quant == "dynamic":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
        elif quant != "none":
            raise ValueError(f"unknown quantisation {quant!r}")
        return conv.convert()


def Interpreter(model_content: bytes | None = None, model_path: str | None = None, num_threads: int = 1):
    """A LiteRT interpreter (ai_edge_litert, else tflite_runtime, else tensorflow.lite)."""
    try:
        from ai_edge_litert.interpreter import Interpreter as I
    except ImportError:  # pragma: no cover
        try:
            from tflite_runtime.interpreter import Interpreter as I
        except ImportError:
            from tensorflow.lite import Interpreter as I
    kw = {"num_threads": num_threads}
    if model_content is not None:
        return I(model_content=model_content, **kw)
    return I(model_path=str(model_path), **kw)


def tflite_predict(interp, x: np.ndarray) -> np.ndarray:
    """Run a batch ``x`` [B, T, C] through the interpreter (resizing its input)."""
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    if list(inp["shape"]) != list(x.shape):
        interp.resize_tensor_input(inp["index"], list(x.shape))
        interp.allocate_tensors()
    interp.set_tensor(inp["index"], np.ascontiguousarray(x, dtype=np.float32))
    interp.invoke()
    return interp.get_tensor(out["index"]).copy()


def agreement(model, content: bytes, x: np.ndarray) -> dict:
    """Max abs difference of probabilities and label agreement between Keras and TFLite on ``x``."""
    pk = np.asarray(model(x, training=False))
    it = Interpreter(model_content=content)
    it.allocate_tensors()
    pt = np.concatenate([tflite_predict(it, x[i : i + 64]) for i in range(0, len(x), 64)])
    return {
        "max_abs_diff": float(np.max(np.abs(pk - pt))),
        "label_agreement": float(np.mean(pk.argmax(1) == pt.argmax(1))),
        "n": int(len(x)),
    }


def latency_ms(content: bytes | None, shape: tuple, n: int = 200, model_path: str | None = None) -> float:
    """Median milliseconds per call for one input of ``shape`` on one thread."""
    it = Interpreter(model_content=content, model_path=model_path, num_threads=1)
    it.allocate_tensors()
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    tflite_predict(it, x)
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        tflite_predict(it, x)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts) * 1000)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Benchmark a .tflite model with its metadata: size, latency per window.")
    ap.add_argument("model", help="path to .tflite (metadata beside it)")
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args(argv)
    from streamer.config import load_meta

    meta = load_meta(args.model)
    f = meta.features
    if meta.input_layout == "coefficients":
        shape = (args.batch, f.n_channels * f.window_steps, 1)
    else:
        shape = (args.batch, f.window_steps, f.n_channels)
    ms = latency_ms(None, shape, model_path=args.model)
    print(json.dumps({"model": args.model, "bytes": Path(args.model).stat().st_size, "input": shape,
                      "ms_per_call": round(ms, 4), "ms_per_window": round(ms / args.batch, 4)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
