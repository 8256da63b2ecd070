"""The CPU engine: the cached generation loop as one numba kernel per group of clips.

A step of the default model is ~40 small matrix products and ~1,500
transcendental functions per clip: dispatching them one by one (TensorFlow, numpy) costs
more than computing them, and XLA's CPU code runs products this small at a
fraction of BLAS speed. Here a whole chunk of steps runs inside one compiled
function: matrix products go straight to BLAS `sgemm` (numpy's bundled
OpenBLAS where there is one, else SciPy's Cython BLAS, the binding numba's own
`np.dot` uses; `compat.blas_sgemm`), without allocation or checks, and the
activations are loops that LLVM vectorises. The clips of a batch are split
into one group per thread; groups share nothing, so they never wait for each
other within a chunk, and BLAS is held to one thread so that the groups do not
oversubscribe the cores.

Sampling is by inversion: one uniform number per clip and step, drawn by numpy
from a stream keyed by (seed, clip, block of steps) (`engine.uniforms`), so a clip
does not depend on the thread count, the chunk size or the other clips in the batch.
"""

import concurrent.futures
import dataclasses

import numba
import numba.extending
import numpy as np

from pipelines import contract
from sampler import compat
from sampler.engine import CachedWaveNet

# sgemm(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc), every argument by pointer
# (Fortran BLAS interface): numpy's bundled OpenBLAS where there is one, else SciPy's (`compat.blas_sgemm`).
# The kernel takes it as an argument: numba can cache a kernel that receives a function pointer, not one
# that embeds it.
SGEMM, BLAS_INT = compat.blas_sgemm()


@numba.njit(inline="always")
def _matmul(sgemm, a, b, c, dims, no_transpose, alpha_beta):
    """c = a @ b for float32 row-major matrices with unit column stride (a [M, K], b [K, N], c [M, N]).

    BLAS is column-major, where the row-major c is c^T = b^T a^T: sgemm with the operands swapped.
    """
    dims[0] = b.shape[1]
    dims[1] = a.shape[0]
    dims[2] = a.shape[1]
    dims[3] = b.strides[0] // 4
    dims[4] = a.strides[0] // 4
    dims[5] = c.strides[0] // 4
    sgemm(
        no_transpose.ctypes, no_transpose.ctypes, dims[0:].ctypes, dims[1:].ctypes, dims[2:].ctypes,
        alpha_beta[0:].ctypes, b.ctypes, dims[3:].ctypes, a.ctypes, dims[4:].ctypes,
        alpha_beta[1:].ctypes, c.ctypes, dims[5:].ctypes,
    )  # fmt: skip


@numba.njit(inline="always", fastmath=True, error_model="numpy")
def tanh(x):
    """tanh of a float32: Eigen's rational approximation (`ptanh_float` in Eigen/src/Core/MathFunctionsImpl.h,
    which TensorFlow's CPU kernels and XLA's CPU tanh use), without its |x| < 0.0004 identity branch.

    Odd polynomial of degree 13 over even of degree 6, inputs clamped to
    +-7.905311 where the approximation reaches +-1; absolute error below 1e-6
    (tests/test_sampler.py). Written out so that LLVM vectorises it (a libm
    call per element does not).
    """
    clamp = np.float32(7.90531110763549805)
    x = min(max(x, -clamp), clamp)
    x2 = x * x
    p = np.float32(-2.76076847742355e-16)
    p = p * x2 + np.float32(2.00018790482477e-13)
    p = p * x2 + np.float32(-8.60467152213735e-11)
    p = p * x2 + np.float32(5.12229709037114e-08)
    p = p * x2 + np.float32(1.48572235717979e-05)
    p = p * x2 + np.float32(6.37261928875436e-04)
    p = p * x2 + np.float32(4.89352455891786e-03)
    q = np.float32(1.19825839466702e-06)
    q = q * x2 + np.float32(1.18534705686654e-04)
    q = q * x2 + np.float32(2.26843463243900e-03)
    q = q * x2 + np.float32(4.89352518554385e-03)
    return x * p / q


@numba.extending.intrinsic
def _float_from_bits(typingctx, bits):
    """The float32 whose IEEE 754 bits are the int32 `bits`."""
    from llvmlite import ir

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return numba.types.float32(numba.types.int32), codegen


@numba.njit(inline="always", fastmath=True, error_model="numpy")
def exp_nonpositive(x):
    """exp of a float32 x <= 0; results below 1e-37 flush to ~1e-38.

    Cephes' expf (S. L. Moshier, Cephes Math Library): x = n ln 2 + r with
    |r| <= ln 2 / 2, exp(r) by Cephes' polynomial, 2^n from the exponent bits;
    relative error below 1e-7 over [-87, 0] (tests/test_sampler.py checks 5e-7).
    Written out so that LLVM vectorises it (a libm call per element does not).
    """
    x = max(x, np.float32(-87.0))
    n = np.floor(x * np.float32(1.44269504088896341) + np.float32(0.5))
    r = x - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    return (p * r * r + r + np.float32(1.0)) * _float_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))


@numba.njit(nogil=True, fastmath=True, error_model="numpy", cache=True)
def run_steps(
    sgemm, codes, inputs, forced, t0, temperature, uniforms,
    code_taps, causal_bias, code_ring,
    gate_kernels, gate_biases, residual_kernels, residual_biases,
    skip_kernel, skip_bias, hidden_kernel, hidden_bias, logits_kernel, logits_bias,
    dilations, rings, ring_offsets, out_codes, out_logits, dims,
):  # fmt: skip
    """Runs steps t0 .. t0 + n - 1 of one group of B clips; updates the caches in place.

    Args:
      sgemm: BLAS sgemm as a ctypes function (`SGEMM`); dims: int [6] scratch of its integer type (`BLAS_INT`).
      codes: int32 [B], the input of the first step when sampling; on return, the next input.
      inputs: int32 [B, n], the input of every step when `forced` (else unused, may be [B, 0]).
      forced: bool; True reads `inputs` and writes `out_logits`, False samples into `out_codes`.
      t0: int, time index of the first step's input.
      temperature: float > 0.
      uniforms: float64 [n, B] in [0, 1), one per step and clip (sampling).
      code_taps: float32 [w, Q, C]: tap k of the causal convolution applied to every code's
        embedding (`embedding @ kernel[k]`); tap k sees the code w - 1 - k steps back.
      causal_bias: float32 [C].
      code_ring: int32 [max(w - 1, 1), B]: the last w - 1 codes at slot (time mod (w - 1)); -1 is padding.
      gate_kernels: float32 [L, w * C, 2 * D], taps from the oldest; biases [L, B, 2 * D]: each
        layer's bias plus, for a conditioned model, what each clip's label adds (global conditioning).
      residual_kernels: float32 [L, D, C]; biases [L, C].
      skip_kernel: float32 [L * D, S], the layers' skip kernels stacked; skip_bias [S], their biases summed.
      hidden_kernel, hidden_bias: float32 [S, S], [S] (`skip_out`).
      logits_kernel, logits_bias: float32 [S, Q], [Q].
      dilations: int64 [L].
      rings: float32 flat; layer i's ring [(w - 1) * d_i, B, C] starts at ring_offsets[i];
        the layer input at time s sits at slot s mod ((w - 1) * d_i).
      out_codes: int32 [B, n], sampled codes (unused when forced).
      out_logits: float32 [B, n, Q] when forced (else may be [B, 0, Q]).
    """
    n = uniforms.shape[0] if not forced else inputs.shape[1]
    batch = codes.shape[0]
    width = code_taps.shape[0]
    channels = causal_bias.shape[0]
    layers = dilations.shape[0]
    gate_channels = gate_biases.shape[2] // 2
    skip_channels = skip_bias.shape[0]
    quantization_channels = logits_bias.shape[0]
    f32 = np.float32
    x = np.empty((batch, width * channels), f32)
    h = np.empty((batch, channels), f32)
    gated = np.empty((batch, 2 * gate_channels), f32)
    z = np.empty((batch, layers * gate_channels), f32)
    residual = np.empty((batch, channels), f32)
    skip = np.empty((batch, skip_channels), f32)
    hidden = np.empty((batch, skip_channels), f32)
    logits = np.empty((batch, quantization_channels), f32)
    no_transpose = np.full(1, ord("N"), np.uint8)
    alpha_beta = np.array([1.0, 0.0], f32)
    half = f32(0.5)
    current = codes.copy()
    for step in range(n):
        t = t0 + step
        if forced:
            for b in range(batch):
                current[b] = inputs[b, step]
        # Causal convolution of the embedding: one table row per tap.
        for b in range(batch):
            for c in range(channels):
                h[b, c] = causal_bias[c] + code_taps[width - 1, current[b], c]
        if width > 1:
            for k in range(width - 1):
                slot = (t - (width - 1 - k)) % (width - 1)
                for b in range(batch):
                    past = code_ring[slot, b]
                    if past >= 0:
                        for c in range(channels):
                            h[b, c] += code_taps[k, past, c]
            slot = t % (width - 1)
            for b in range(batch):
                code_ring[slot, b] = current[b]
        for i in range(layers):
            dilation = dilations[i]
            length = (width - 1) * dilation
            base = ring_offsets[i]
            # The taps, oldest first, then the current input; then the current input joins the ring.
            for k in range(width - 1):
                slot = (t - (width - 1 - k) * dilation) % length
                for b in range(batch):
                    src = base + (slot * batch + b) * channels
                    for c in range(channels):
                        x[b, k * channels + c] = rings[src + c]
            for b in range(batch):
                for c in range(channels):
                    x[b, (width - 1) * channels + c] = h[b, c]
            if length > 0:
                slot = t % length
                for b in range(batch):
                    dst = base + (slot * batch + b) * channels
                    for c in range(channels):
                        rings[dst + c] = h[b, c]
            _matmul(sgemm, x, gate_kernels[i], gated, dims, no_transpose, alpha_beta)
            # tanh(filter) * sigmoid(gate), with sigmoid(y) = (1 + tanh(y / 2)) / 2.
            for b in range(batch):
                for c in range(gate_channels):
                    filt = tanh(gated[b, c] + gate_biases[i, b, c])
                    gate = half + half * tanh(
                        half * (gated[b, gate_channels + c] + gate_biases[i, b, gate_channels + c])
                    )
                    z[b, i * gate_channels + c] = filt * gate
            if i + 1 < layers:  # The last layer's residual output feeds nothing.
                _matmul(
                    sgemm, z[:, i * gate_channels : (i + 1) * gate_channels], residual_kernels[i], residual, dims,
                    no_transpose, alpha_beta,
                )  # fmt: skip
                for b in range(batch):
                    for c in range(channels):
                        h[b, c] += residual[b, c] + residual_biases[i, c]
        # Output stack: relu(sum of skips) -> 1x1 -> relu -> 1x1.
        _matmul(sgemm, z, skip_kernel, skip, dims, no_transpose, alpha_beta)
        for b in range(batch):
            for c in range(skip_channels):
                skip[b, c] = max(skip[b, c] + skip_bias[c], f32(0))
        _matmul(sgemm, skip, hidden_kernel, hidden, dims, no_transpose, alpha_beta)
        for b in range(batch):
            for c in range(skip_channels):
                hidden[b, c] = max(hidden[b, c] + hidden_bias[c], f32(0))
        _matmul(sgemm, hidden, logits_kernel, logits, dims, no_transpose, alpha_beta)
        if forced:
            for b in range(batch):
                for q in range(quantization_channels):
                    out_logits[b, step, q] = logits[b, q] + logits_bias[q]
            continue
        # Inversion sampling of softmax(logits / temperature).
        for b in range(batch):
            top = -np.inf
            for q in range(quantization_channels):
                value = (logits[b, q] + logits_bias[q]) / temperature
                logits[b, q] = value
                top = max(top, value)
            total = 0.0
            for q in range(quantization_channels):
                weight = exp_nonpositive(logits[b, q] - top)
                logits[b, q] = weight
                total += weight
            threshold = uniforms[step, b] * total
            chosen = quantization_channels - 1
            cumulative = 0.0
            for q in range(quantization_channels):
                cumulative += logits[b, q]
                if cumulative > threshold:
                    chosen = q
                    break
            out_codes[b, step] = chosen
            current[b] = chosen
    for b in range(batch):
        codes[b] = current[b]


@dataclasses.dataclass
class _Group:
    """The caches of one group of clips (rows `clips` of the batch), and its clips' gate biases [L, B, 2 * D]."""

    clips: range
    code_ring: np.ndarray
    rings: np.ndarray
    ring_offsets: np.ndarray
    gate_biases: np.ndarray


class CpuWaveNet(CachedWaveNet):
    """A WaveNet's weights arranged for the numba kernel; the CPU engine.

    State: a list of groups of clips, one per thread, each with its own caches.
    """

    engine = "cpu"

    def __init__(self, model, model_config, threads=None):
        super().__init__(model, model_config)
        self.threads = max(1, threads or contract.usable_cpus())
        w, channels = self.weights, self.residual_channels
        causal_taps = w.causal_kernel.reshape(self.filter_width, channels, channels)
        self._code_taps = np.ascontiguousarray(np.einsum("qi,kio->kqo", w.embedding, causal_taps), np.float32)
        self._causal_bias = w.causal_bias
        self._gate_kernels, self._gate_biases = w.gate_kernels, w.gate_biases
        self._residual_kernels = np.ascontiguousarray(w.residual_skip_kernels[:, :, :channels])
        self._residual_biases = np.ascontiguousarray(w.residual_skip_biases[:, :channels])
        self._skip_kernel = np.ascontiguousarray(np.concatenate(list(w.residual_skip_kernels[:, :, channels:])))
        self._skip_bias = np.sum(w.residual_skip_biases[:, channels:], axis=0, dtype=np.float32)
        self._hidden_kernel, self._hidden_bias = w.hidden_kernel, w.hidden_bias
        self._logits_kernel, self._logits_bias = w.logits_kernel, w.logits_bias
        self._dilations = np.asarray(self.dilations, np.int64)
        self._pool = None
        # Compile the kernel now (~3 s on first use, then read from numba's cache), not inside the progress bar.
        self._forced(self._initial_state(np.zeros(1, np.int32)), np.zeros((1, 1), np.int32), 0)

    def _groups(self, batch_size):
        """Contiguous groups of clips, as equal as possible, one per thread."""
        bounds = np.linspace(0, batch_size, min(self.threads, batch_size) + 1).round().astype(int)
        return [range(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def _empty_group(self, clips, gate_biases):
        lengths = self.queue_lengths()[1:]
        offsets = np.concatenate([[0], np.cumsum([n * len(clips) * self.residual_channels for n in lengths])])
        return _Group(
            clips=clips,
            code_ring=np.full((max(self.filter_width - 1, 1), len(clips)), -1, np.int32),
            rings=np.zeros(offsets[-1], np.float32),
            ring_offsets=offsets.astype(np.int64),
            gate_biases=np.ascontiguousarray(gate_biases[:, clips.start : clips.stop]),
        )

    def _initial_state(self, conditions):
        gate_biases = self._gate_biases[:, None, :] + self.condition_biases(conditions)
        return [self._empty_group(clips, gate_biases) for clips in self._groups(len(conditions))]

    def _state_from(self, history, activations, conditions):
        state = self._initial_state(conditions)
        if activations is None:
            return state
        time, codes_back = history.shape[1], self.filter_width - 1
        for group in state:
            rows = slice(group.clips.start, group.clips.stop)
            for s in range(max(0, time - codes_back), time):
                group.code_ring[s % codes_back] = history[rows, s]
            # activations[0] is the causal convolution's input (the embedding): the code ring replaces it.
            for i, (act, length) in enumerate(zip(activations[1:], self.queue_lengths()[1:], strict=True)):
                ring = self.ring_from(act[:, rows], length)
                group.rings[group.ring_offsets[i] : group.ring_offsets[i + 1]] = ring.ravel()
        return state

    def _run(self, state, codes, t, n, forced, inputs, temperature, uniforms):
        """Runs every group over n steps, in parallel; returns (codes [B, n] or logits [B, n, Q]).

        uniforms: float64 [n, B] (`engine.uniforms`) when sampling, [0, B] when forced.
        """
        from threadpoolctl import threadpool_limits

        batch = codes.shape[0]
        out_codes = np.zeros((batch, n if not forced else 0), np.int32)
        out_logits = np.zeros((batch, n if forced else 0, self.quantization_channels), np.float32)

        def one(group):
            rows = slice(group.clips.start, group.clips.stop)
            group_codes = np.ascontiguousarray(codes[rows])
            group_out_codes, group_out_logits = out_codes[rows].copy(), out_logits[rows].copy()
            run_steps(
                SGEMM, group_codes, np.ascontiguousarray(inputs[rows]), forced, t, temperature,
                np.ascontiguousarray(uniforms[:, rows]), self._code_taps, self._causal_bias, group.code_ring,
                self._gate_kernels, group.gate_biases, self._residual_kernels, self._residual_biases,
                self._skip_kernel, self._skip_bias, self._hidden_kernel, self._hidden_bias, self._logits_kernel,
                self._logits_bias, self._dilations, group.rings, group.ring_offsets, group_out_codes,
                group_out_logits, np.empty(6, BLAS_INT),
            )  # fmt: skip
            codes[rows], out_codes[rows], out_logits[rows] = group_codes, group_out_codes, group_out_logits

        with threadpool_limits(limits=1, user_api="blas"):
            if len(state) == 1:
                one(state[0])
            else:
                if self._pool is None:
                    self._pool = concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix="wavenet")
                list(self._pool.map(one, state))
        return out_logits if forced else out_codes

    def _sample(self, state, codes, t, temperature, uniforms):
        codes = np.array(codes, np.int32)
        inputs = np.zeros((codes.shape[0], 0), np.int32)
        new = self._run(state, codes, t, len(uniforms), False, inputs, temperature, uniforms)
        return state, codes, new

    def _forced(self, state, inputs, t):
        inputs = np.ascontiguousarray(inputs, np.int32)
        no_uniforms = np.zeros((0, inputs.shape[0]))
        logits = self._run(state, inputs[:, 0].copy(), t, inputs.shape[1], True, inputs, 1.0, no_uniforms)
        return state, logits
