"""Training emostream's models: recipes, data, networks, the loop, evaluation protocols, export, reports.

    recipe.py     Recipe (a frozen dataclass) and the named PRESETS
    data.py       the corpora's clips with cached frame features and speech flags
    windows.py    training/evaluation windows through the streamer's analysis chain; clip predictions
    network.py    the networks and ensembles
    loop.py       epochs (augmented copies, masks, mixup) and the fit
    protocols.py  speaker-grouped CV, cross-corpus, random split; continuous-speech scoring per fold
    export.py     the final fit, .tflite + emotion.json, the metadata's evaluation block
    reports.py    metrics, prediction histograms, calibration, confusion plots

The command is ``python -m tools.train`` (tools/train.py); nothing here exits the process.
"""
