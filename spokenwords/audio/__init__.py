"""Audio as the models hear it: decoding and shaping (NumPy and torch), spectrogram front ends, augmentation."""
