"""Spectrogram pictures people can read: time in seconds, frequency in Hz, a colour scale in dB, a title.

Drawn with matplotlib (Agg, no display needed) for the sampler's
`--spectrogram` PNGs and the trainer's TensorBoard images.
"""

import io

import numpy as np

FRAME_SAMPLES = 512
HOP_SAMPLES = 128
DYNAMIC_RANGE_DB = 80.0


def spectrogram_png(audio, sample_rate, title=""):
    """A log-magnitude spectrogram of mono audio as PNG bytes.

    Short-time Fourier transform with a Hann window of FRAME_SAMPLES and a hop
    of HOP_SAMPLES (`matplotlib.mlab.specgram`), magnitudes in dB, the top
    DYNAMIC_RANGE_DB below the loudest bin shown.

    Args:
      audio: float [n_samples] in [-1, 1].
      sample_rate: Hz.
      title: drawn above the picture.

    Returns:
      bytes of a PNG image.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    audio = np.asarray(audio, np.float32)
    if len(audio) < 2 * FRAME_SAMPLES:  # At least two frames, so that there is a picture.
        audio = np.pad(audio, (0, 2 * FRAME_SAMPLES - len(audio)))
    from matplotlib import mlab

    magnitude, _, _ = mlab.specgram(
        audio,
        NFFT=FRAME_SAMPLES,
        Fs=sample_rate,
        noverlap=FRAME_SAMPLES - HOP_SAMPLES,
        window=np.hanning(FRAME_SAMPLES),
        mode="magnitude",
    )
    decibels = 20 * np.log10(np.maximum(magnitude, 1e-10))  # Digital silence: a floor far below the range shown.
    top = float(decibels.max())
    figure = Figure(figsize=(8, 3.2), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(
        decibels,
        origin="lower",
        aspect="auto",
        extent=(0, len(audio) / sample_rate, 0, sample_rate / 2),
        vmin=top - DYNAMIC_RANGE_DB,
        vmax=top,
        cmap="magma",
    )
    axes.set_xlabel("time (s)")
    axes.set_ylabel("frequency (Hz)")
    axes.set_title(title or f"{len(audio) / sample_rate:.2f} s at {sample_rate} Hz")
    figure.colorbar(image, ax=axes, label="magnitude (dB)")
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()
