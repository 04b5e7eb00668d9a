"""Offline tools: dataset readers, augmentation, feature cache, training, conversion, evaluation."""
