"""Pure audio functions: decode, downmix, resample, window, mu-law.

Everything here works on numpy arrays and file objects and knows nothing of
Beam, so the same code runs in a DoFn, in a test and (through
`pipelines.audio.recording`) in the sampler's primer. A `Track` flows through
as a stream of blocks: it pulls blocks from the decoder, downmixes, resamples
with a streaming resampler, cuts windows and encodes each one, so memory is
bounded by a block and a window, not by the length of the track.

Rooms: `config` (AudioConfig and its choices), `decode` (PyAV and pydub),
`resample` (downmix and the streaming resamplers), `levels` (non-finite
samples dropped, samples beyond full scale clipped), `windows` (WindowCutter,
Track), `recording` (a recording to codes, for the sampler's primer). This
package re-exports the public names of the first five.
"""

from pipelines.audio.config import (  # noqa: F401
    DECODERS,
    DEFAULT_BLOCK_SAMPLES,
    DEFAULT_MAX_TRACK_SECS,
    RESAMPLERS,
    TRUNCATION_TOLERANCE,
    AudioConfig,
)
from pipelines.audio.decode import (  # noqa: F401
    DECODE_FUNCTIONS,
    DecodeReport,
    decode_pyav,
    decode_pydub,
)
from pipelines.audio.levels import (  # noqa: F401
    clip_full_scale,
    drop_nonfinite,
)
from pipelines.audio.resample import (  # noqa: F401
    StreamResampler,
    downmix,
    resample,
)
from pipelines.audio.windows import (  # noqa: F401
    Track,
    TrackStats,
    WindowCutter,
)
