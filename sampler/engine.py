"""The engine interface of the sampler: what every generation engine shares.

`CachedWaveNet` holds the hyperparameters read from the model contract, fills
the caches from a primer, and runs the chunked sampling and teacher-forced
loops; an engine (`sampler.cpu`, `sampler.xla`) supplies the per-step state
and kernels. The fast WaveNet generation algorithm: T. L. Paine et al.,
"Fast Wavenet Generation Algorithm", arXiv:1611.09482 (2016).
"""

import numpy as np

from pipelines import contract


class CachedWaveNet:
    """What both engines share: the hyperparameters, priming, and the chunked loops.

    Engines implement `_initial_state(conditions)`, `_state_from(history, activations,
    conditions)` (caches after the codes `history`, whose layer inputs are `activations`;
    None when history is empty), `_sample(state, codes, t, n, temperature, seed)` ->
    (state, next codes, sampled codes [batch, n]) and `_forced(state, inputs, t)` ->
    (state, logits [batch, n, quantization_channels]). `conditions` is int32 [batch]: each
    clip's label index (all 0 for an unconditioned model, which ignores them); the state
    holds what they add to each layer's filter and gate (`condition_biases`).

    Attributes:
      config: the export's contract.ModelConfig (architecture, receptive
        field, sample rate, quantization channels).
      engine: "cpu" or "xla".
    """

    engine = None

    def __init__(self, keras_model, config):
        self.config = config
        self.keras_model = keras_model
        wavenet = config.wavenet
        self.quantization_channels = wavenet.quantization_channels
        self.filter_width = wavenet.filter_width
        self.dilations = list(wavenet.dilations)
        self.residual_channels = wavenet.residual_channels
        self.condition_values = wavenet.condition_values

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
        if not self.condition_values:
            if conditions is not None:
                raise ValueError("the model is not conditioned on a label; generate without conditions")
            return np.zeros(batch_size, np.int32)
        if conditions is None:
            raise ValueError(
                f"the model is conditioned on {self.config.condition_kind}: name one of "
                f"{', '.join(self.config.condition_vocabulary)}"
            )
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
            width = 2 * self.config.wavenet.dilation_channels
            return np.zeros((len(self.dilations), len(conditions), width), np.float32)
        tables = [self.layer_weights(contract.condition_layer(i))[0] for i in range(len(self.dilations))]
        return np.ascontiguousarray(np.stack([table[conditions] for table in tables]), np.float32)

    def layer_weights(self, name):
        """A layer's weights as float32 numpy arrays ([kernel, bias] for convolutions)."""
        return [np.asarray(w, np.float32) for w in self.keras_model.get_layer(name).get_weights()]

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

        model = self.keras_model
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
        primer_codes = np.asarray(primer_codes, np.int32)
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
        codes = np.asarray(codes, np.int32)
        if primer_codes is None:
            state, t = self._initial_state(self.conditions_for(codes.shape[0], conditions)), 0
        else:
            primer = np.concatenate([np.asarray(primer_codes, np.int32), codes[:, :1]], axis=1)
            state, _, t = self.prime(primer, conditions)
        _, logits = self._forced(state, codes, t)
        return logits

    def generate(
        self,
        num_samples,
        batch_size=1,
        temperature=1.0,
        seed=0,
        primer_codes=None,
        chunk=4000,
        progress=None,
        conditions=None,
    ):
        """Samples new codes.

        Args:
          num_samples: codes to generate per clip.
          batch_size: clips generated together (ignored when primer_codes is given).
          temperature: softmax temperature (> 0); 1 samples the model's distribution.
          seed: int; the same seed and engine give the same clips.
          primer_codes: int [batch, time] codes to continue, or None to start
            from silence (the mid code).
          chunk: samples per compiled call; progress is reported between calls.
          progress: callable(samples_done) or None.
          conditions: for a conditioned model, each clip's label index: an int
            for every clip or int [batch] (`contract.ModelConfig.condition_indices`
            turns names into indices); None for an unconditioned one.

        Returns:
          int32 [batch, num_samples] codes in [0, quantization_channels).

        Raises:
          ValueError: temperature <= 0, a negative seed, or conditions that do not fit the model.
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        if primer_codes is None:
            state = self._initial_state(self.conditions_for(batch_size, conditions))
            codes = np.full([batch_size], self.quantization_channels // 2, np.int32)
            t = 0
        else:
            state, codes, t = self.prime(primer_codes, conditions)
        pieces, done = [], 0
        while done < num_samples:
            n = min(chunk, num_samples - done)
            state, codes, new = self._sample(state, codes, t + done, n, float(temperature), int(seed))
            pieces.append(new)
            done += n
            if progress is not None:
                progress(n)
        return np.concatenate(pieces, axis=1)
