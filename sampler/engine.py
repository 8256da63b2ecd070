"""The engine interface of the sampler: what every generation engine shares.

`CachedWaveNet` holds the hyperparameters read from the model contract, fills
the caches from a primer, and runs the chunked sampling and teacher-forced
loops; an engine (`sampler.cpu`, `sampler.xla`) supplies the per-step state
and kernels. The fast WaveNet generation algorithm: T. L. Paine et al.,
"Fast Wavenet Generation Algorithm", arXiv:1611.09482 (2016).
"""

import math
import os

import numpy as np

from pipelines import contract
from sampler import weights

# Steps whose uniform numbers come from one numpy stream: any chunking gives the same numbers.
RANDOM_BLOCK = 1024


class WeightsMismatchError(ValueError):
    """An export's config.json describes other shapes than its model.keras holds."""


def check_weights(model, wavenet_config):
    """Checks every shape the engines index against the loaded weights, before any kernel runs.

    An export is a shared artifact: its config.json may have been edited, or
    paired with another model.keras. The engines size their caches and loops
    from the config and index the weights with those sizes, so a mismatch
    would read out of bounds (the CPU kernel) or generate wrong audio.

    Args:
      model: the loaded WaveNet.
      wavenet_config: the config's contract.WaveNetConfig.

    Raises:
      WeightsMismatchError: naming the config field, its value and what the weights hold.
    """
    q, c, d, k = (
        wavenet_config.quantization_channels,
        wavenet_config.residual_channels,
        wavenet_config.dilation_channels,
        wavenet_config.skip_channels,
    )
    w = wavenet_config.filter_width
    # (layer, weight index, expected shape, the config field behind each dimension)
    expected = [
        (contract.EMBEDDING_LAYER, 0, (q, c), ("quantization_channels", "residual_channels")),
        (contract.CAUSAL_CONV_LAYER, 0, (w, c, c), ("filter_width", "residual_channels", "residual_channels")),
        (contract.SKIP_OUT_LAYER, 0, (1, k, k), (None, "skip_channels", "skip_channels")),
        (contract.LOGITS_LAYER, 0, (1, k, q), (None, "skip_channels", "quantization_channels")),
        (contract.LOGITS_LAYER, 1, (q,), ("quantization_channels",)),
    ]
    for i in range(len(wavenet_config.dilations)):
        expected += [
            (contract.gate_layer(i), 0, (w, c, 2 * d), ("filter_width", "residual_channels", "2 x dilation_channels")),
            (
                contract.residual_skip_layer(i),
                0,
                (1, d, c + k),
                (None, "dilation_channels", "residual + skip_channels"),
            ),
        ]
        if wavenet_config.condition_values:
            expected.append(
                (contract.condition_layer(i), 0, (wavenet_config.condition_values, 2 * d),
                 ("condition_values", "2 x dilation_channels"))
            )  # fmt: skip
    names = {layer.name for layer in model.layers}
    for name, index, shape, fields in expected:
        if name not in names:
            raise WeightsMismatchError(
                f"config.json describes a layer {name!r} that model.keras does not have "
                f"(dilations: {len(wavenet_config.dilations)} layers; "
                f"condition_values={wavenet_config.condition_values})"
            )
        weights = model.get_layer(name).get_weights()
        have = tuple(weights[index].shape) if index < len(weights) else ()
        if have != shape:
            for field, want, got in zip(fields, shape, have + (None,) * len(shape), strict=False):
                if want != got:
                    raise WeightsMismatchError(
                        f"config.json says {field or 'a 1x1 convolution'}={want} but model.keras's layer {name!r} "
                        f"holds {got} there (weights {have}, expected {shape}): the export's two files disagree"
                    )
    for i, dilation in enumerate(wavenet_config.dilations):
        rate = tuple(getattr(model.get_layer(contract.gate_layer(i)), "dilation_rate", (dilation,)))
        if rate != (dilation,):
            raise WeightsMismatchError(
                f"config.json says dilations[{i}]={dilation} but model.keras's layer {contract.gate_layer(i)!r} "
                f"has dilation {rate[0]}: the export's two files disagree"
            )
    extra = contract.gate_layer(len(wavenet_config.dilations))
    if extra in names:
        raise WeightsMismatchError(
            f"config.json lists {len(wavenet_config.dilations)} dilations but model.keras has more layers ({extra!r})"
        )
    if not wavenet_config.condition_values and contract.condition_layer(0) in names:
        raise WeightsMismatchError("config.json describes an unconditioned model but model.keras is conditioned")


class CachedWaveNet:
    """What both engines share: the hyperparameters, priming, and the chunked loops.

    Engines implement `_initial_state(conditions)`, `_state_from(history, activations,
    conditions)` (caches after the codes `history`, whose layer inputs are `activations`;
    None when history is empty), `_sample(state, codes, t, temperature, uniforms)` ->
    (state, next codes, sampled codes [batch, n]) for float64 [n, batch] `uniforms` (one per
    step and clip, from `uniforms`), and `_forced(state, inputs, t)` -> (state, logits
    [batch, n, quantization_channels]). `conditions` is int32 [batch]: each
    clip's label index (all 0 for an unconditioned model, which ignores them); the state
    holds what they add to each layer's filter and gate (`condition_biases`).

    Attributes:
      model_config: the export's contract.ModelConfig (architecture, receptive
        field, sample rate, quantization channels).
      engine: "cpu" or "xla".
    """

    engine = None

    def __init__(self, model, model_config):
        wavenet_config = model_config.wavenet_config
        check_weights(model, wavenet_config)
        self.model_config = model_config
        self.model = model
        self.weights = weights.step_weights(model, wavenet_config)
        self.quantization_channels = wavenet_config.quantization_channels
        self.filter_width = wavenet_config.filter_width
        self.dilations = list(wavenet_config.dilations)
        self.residual_channels = wavenet_config.residual_channels
        self.condition_values = wavenet_config.condition_values

    def conditions_for(self, batch_size, conditions):
        """Checks and broadcasts the clips' label indices.

        Args:
          batch_size: clips.
          conditions: None, an int, or int [batch_size]: label indices in [0, condition_values).

        Returns:
          int32 [batch_size] (zeros for an unconditioned model).

        Raises:
          ValueError: a conditioned model without conditions, an unconditioned one with them,
            an index out of range or a length other than batch_size.
        """
        self.model_config.check_condition_given(conditions is not None)
        if not self.condition_values:
            return np.zeros(batch_size, np.int32)
        conditions = np.broadcast_to(np.asarray(conditions, np.int32), (batch_size,)).copy()
        if np.any((conditions < 0) | (conditions >= self.condition_values)):
            raise ValueError(f"condition indices must lie in [0, {self.condition_values}), got {conditions.tolist()}")
        return conditions

    def condition_biases(self, conditions):
        """What each clip's label adds to every dilated layer's filter and gate pre-activations.

        Args:
          conditions: int32 [batch] label indices.

        Returns:
          float32 [layers, batch, 2 * dilation_channels]: row conditions[b] of layer i's
          label embedding (`contract.condition_layer`), zeros for an unconditioned model.
        """
        if not self.condition_values:
            width = 2 * self.model_config.wavenet_config.dilation_channels
            return np.zeros((len(self.dilations), len(conditions), width), np.float32)
        return np.ascontiguousarray(self.weights.condition_tables[:, conditions], np.float32)

    def cache_bytes(self, batch_size):
        """Memory of the caches of `batch_size` clips: float32 queues of residual_channels per slot."""
        return sum(self.queue_lengths()) * batch_size * self.residual_channels * 4

    def check_batch(self, batch_size):
        """Refuses a batch whose caches would not fit in this machine's memory, before allocating them.

        Raises:
          ValueError: naming the memory needed and the memory there is.
        """
        if batch_size < 1:
            raise ValueError(f"the batch needs at least one clip, got {batch_size}")
        needed, total = self.cache_bytes(batch_size), _physical_memory_bytes()
        if total and needed > total // 2:
            raise ValueError(
                f"the caches of {batch_size} clip(s) need {needed / 2**30:.1f} GiB (receptive field "
                f"{self.model_config.receptive_field} samples, {self.residual_channels} residual channels), more "
                f"than half of this machine's {total / 2**30:.1f} GiB: generate fewer clips at once"
            )

    def checked_codes(self, codes, what):
        """int32 codes, refused unless every one lies in [0, quantization_channels) (the engines index tables by them).

        Raises:
          ValueError: naming `what` and the offending range.
        """
        codes = np.asarray(codes)
        if codes.size and (codes.min() < 0 or codes.max() >= self.quantization_channels):
            raise ValueError(
                f"{what} must lie in [0, {self.quantization_channels}), got codes from {codes.min()} to {codes.max()}"
            )
        return codes.astype(np.int32)

    def queue_lengths(self):
        """Ring buffer lengths: the causal convolution's, then one per dilated layer."""
        return [self.filter_width - 1] + [(self.filter_width - 1) * d for d in self.dilations]

    def _layer_inputs(self, history, conditions):
        """Inputs of the causal and of every dilated convolution over `history`, in one parallel pass.

        Args:
          history: int32 [batch, time] codes.
          conditions: int32 [batch] label indices (ignored by an unconditioned model).

        Returns:
          list of float32 [time, batch, residual_channels] numpy arrays: the causal
          convolution's input (the embedding), then each dilated layer's input.
        """
        import keras

        model = self.model
        names = [contract.CAUSAL_CONV_LAYER] + [contract.gate_layer(i) for i in range(len(self.dilations))]
        inputs_of = keras.Model(model.input, [model.get_layer(n).input for n in names])
        activations = inputs_of([history, conditions] if self.condition_values else history)
        return [np.transpose(np.asarray(a, np.float32), (1, 0, 2)) for a in activations]

    def prime(self, primer_codes, conditions=None):
        """Fills the queues from a primer in one parallel pass of the full model.

        Args:
          primer_codes: int [batch, time] codes (time >= 1).
          conditions: the clips' label indices (`conditions_for`).

        Returns:
          (state, last codes int32 [batch], t: time index of the last code). The
          last code is not fed yet: the first generation step feeds it.
        """
        primer_codes = self.checked_codes(primer_codes, "primer codes")
        if primer_codes.ndim != 2 or primer_codes.shape[1] < 1:
            raise ValueError(f"primer codes must be [batch, time >= 1], got shape {primer_codes.shape}")
        self.check_batch(primer_codes.shape[0])
        conditions = self.conditions_for(primer_codes.shape[0], conditions)
        # Feed all but the last code: the last one is fed by the first generation step.
        history, time = primer_codes[:, :-1], primer_codes.shape[1] - 1
        activations = self._layer_inputs(history, conditions) if time else None
        return self._state_from(history, activations, conditions), primer_codes[:, -1], time

    @staticmethod
    def ring_from(activations, length):
        """The ring buffer [length, batch, channels] holding the last `length` of activations [time, ...].

        The input at time s sits at slot s mod length, as the stepping loop leaves it.
        """
        time = activations.shape[0]
        ring = np.zeros((length, *activations.shape[1:]), np.float32)
        for s in range(max(0, time - length), time):
            ring[s % length] = activations[s]
        return ring

    def teacher_forced_logits(self, codes, primer_codes=None, conditions=None):
        """Per-step logits of the cached path while reading given codes.

        Args:
          codes: int [batch, time] codes fed one step at a time.
          primer_codes: optional int [batch, primer_time] codes fed first, in one
            parallel pass (`prime`).
          conditions: the clips' label indices for a conditioned model (`conditions_for`).

        Returns:
          float32 [batch, time, quantization_channels]: entry [:, i] is the full
          model's output at position primer_time + i of concat(primer, codes).
        """
        codes = self.checked_codes(codes, "codes")
        if primer_codes is None:
            self.check_batch(codes.shape[0])
            state, t = self._initial_state(self.conditions_for(codes.shape[0], conditions)), 0
        else:
            primer = np.concatenate([np.asarray(primer_codes, np.int32), codes[:, :1]], axis=1)
            state, _, t = self.prime(primer, conditions)
        _, logits = self._forced(state, codes, t)
        return logits

    def generate(self, num_samples, batch_size=1, **options):
        """Samples new codes, all at once: `generate_chunks` concatenated (same arguments and errors).

        Returns:
          int32 [batch, num_samples] codes in [0, quantization_channels).
        """
        pieces = list(self.generate_chunks(num_samples, batch_size, **options))
        return np.concatenate(pieces, axis=1) if pieces else np.zeros((batch_size, 0), np.int32)

    def generate_chunks(
        self,
        num_samples,
        batch_size=1,
        temperature=1.0,
        seed=0,
        primer_codes=None,
        chunk=4000,
        progress=None,
        conditions=None,
        first_clip=0,
    ):
        """Samples new codes one chunk at a time: memory holds one chunk of output, whatever num_samples is.

        Args:
          num_samples: codes to generate per clip.
          batch_size: clips generated together (ignored when primer_codes is given).
          temperature: softmax temperature (finite, > 0); 1 samples the model's distribution.
          seed: int in [0, 2^63); the same seed and engine give the same clips.
          primer_codes: int [batch, time] codes to continue, or None to start
            from silence (the mid code).
          chunk: samples per compiled call; progress is reported between calls.
          progress: callable(samples_done) or None.
          conditions: for a conditioned model, each clip's label index: an int
            for every clip or int [batch] (`contract.ModelConfig.condition_indices`
            turns names into indices); None for an unconditioned one.
          first_clip: int >= 0, the index of the batch's first clip among all the clips of a run:
            clip j of the batch samples with the random numbers of clip first_clip + j (`uniforms`),
            so clip i is the same whatever batch, process or machine generates it.

        Returns:
          an iterator of int32 [batch, n] codes in [0, quantization_channels), n <= chunk,
          num_samples in all.

        Raises (before the first chunk is computed):
          ValueError: a temperature that is not finite and positive, a seed outside
            [0, 2^63), a negative first_clip, caches that would not fit in memory, or conditions
            that do not fit the model.
        """
        if not (math.isfinite(float(temperature)) and temperature > 0):
            raise ValueError(f"temperature must be a finite number above 0, got {temperature}")
        if not 0 <= seed < 2**63:
            raise ValueError(f"seed must be non-negative and below 2^63, got {seed}")
        if first_clip < 0:
            raise ValueError(f"first_clip must be >= 0, got {first_clip}")
        if num_samples < 0 or chunk < 1:
            raise ValueError(f"num_samples must be >= 0 and chunk >= 1, got {num_samples} and {chunk}")
        if primer_codes is None:
            self.check_batch(batch_size)
            state = self._initial_state(self.conditions_for(batch_size, conditions))
            codes = np.full([batch_size], self.quantization_channels // 2, np.int32)
            t = 0
        else:
            state, codes, t = self.prime(primer_codes, conditions)
        clips = range(int(first_clip), int(first_clip) + len(codes))
        return self._chunks(state, codes, t, num_samples, chunk, float(temperature), int(seed), clips, progress)

    def _chunks(self, state, codes, t, num_samples, chunk, temperature, seed, clips, progress):
        done = 0
        while done < num_samples:
            n = min(chunk, num_samples - done)
            state, codes, new = self._sample(state, codes, t + done, temperature, uniforms(seed, clips, t + done, n))
            done += n
            if progress is not None:
                progress(n)
            yield new


def uniforms(seed, clips, t, n):
    """The uniform numbers that sample steps t .. t + n - 1 of the given clips, by inversion.

    Block b of RANDOM_BLOCK steps of clip i comes from numpy's generator seeded
    with (seed, i, b): a clip's numbers depend on neither the chunking nor the
    batch, process or engine that generates it.

    Args:
      seed: int in [0, 2^63).
      clips: the clips' indices among all the clips of a run (a range or list of int >= 0).
      t: int >= 0, the time index of the first step.
      n: int >= 1, steps.

    Returns:
      float64 [n, len(clips)] in [0, 1).
    """
    first, last = t // RANDOM_BLOCK, (t + n - 1) // RANDOM_BLOCK
    start = t - first * RANDOM_BLOCK
    columns = [
        np.concatenate([np.random.default_rng([seed, clip, b]).random(RANDOM_BLOCK) for b in range(first, last + 1)])
        for clip in clips
    ]
    return np.stack(columns, axis=1)[start : start + n] if columns else np.zeros((n, 0))


def _physical_memory_bytes():
    """This machine's memory in bytes, or 0 where the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0
