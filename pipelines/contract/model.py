"""The model contract: export/config.json (`ModelConfig`) and the architecture it describes (`WaveNetConfig`)."""

import dataclasses
import json
import os

from pipelines.contract import fs
from pipelines.contract.checks import ContractError, check, check_audio_fields, check_count, parsing
from pipelines.contract.limits import (
    DEFAULT_QUANTIZATION_CHANNELS,
    ENCODING,
    MAX_CHANNELS,
    MAX_CONDITION_VALUES,
    MAX_RECEPTIVE_FIELD,
    check_quantization_channels,
)
from pipelines.contract.names import EXPORT_DIR, MODEL_CONFIG_FILE, MODEL_FILE

# 2: the model may be conditioned on a label (config.json names the kind and its vocabulary);
# an unconditioned model is still written as 1, so samplers that predate conditioning read it.
MODEL_FORMAT_VERSION = 2
UNCONDITIONED_MODEL_FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class WaveNetConfig:
    """Hyperparameters of a WaveNet (van den Oord et al., 2016), shared by the trainer and the sampler.

    Attributes:
      quantization_channels: number of mu-law codes (input vocabulary and softmax size).
      residual_channels: channels of the residual stream.
      dilation_channels: channels of each gated unit.
      skip_channels: channels of the skip connections and the output stack.
      filter_width: kernel size of the causal and dilated convolutions.
      dilations: dilation of each layer, in order.
      condition_values: values of the label the model is globally conditioned on (0: unconditioned).
        Each dilated layer then has an embedding of the label added to its filter and gate
        pre-activations: tanh(W_f * x + V_f h) * sigmoid(W_g * x + V_g h) with h the one-hot label
        (van den Oord et al. 2016, section 2.5, global conditioning).
    """

    quantization_channels: int = DEFAULT_QUANTIZATION_CHANNELS
    residual_channels: int = 32
    dilation_channels: int = 32
    skip_channels: int = 128
    filter_width: int = 2
    dilations: tuple = tuple(2**i for i in range(10)) * 2
    condition_values: int = 0

    def __post_init__(self):
        check_quantization_channels(self.quantization_channels, ContractError)
        for name in ("residual_channels", "dilation_channels", "skip_channels"):
            check_count(getattr(self, name), name, 1, MAX_CHANNELS)
        check_count(self.filter_width, "filter_width", 1, 64)
        check(
            isinstance(self.dilations, tuple) and len(self.dilations) >= 1,
            f"dilations must be a non-empty list, got {self.dilations!r}",
        )
        for dilation in self.dilations:
            check_count(dilation, "every dilation", 1, MAX_RECEPTIVE_FIELD)
        check_count(self.condition_values, "condition_values", 0, MAX_CONDITION_VALUES)
        check(
            self.receptive_field <= MAX_RECEPTIVE_FIELD,
            f"the receptive field ({self.receptive_field} samples) is more than {MAX_RECEPTIVE_FIELD}: not a "
            "WaveNet this toolkit trains (a damaged config?)",
        )

    @property
    def receptive_field(self):
        """Samples of input that one output sees, the current sample included.

        The initial causal convolution sees `filter_width` samples; each dilated
        layer adds (filter_width - 1) * dilation.
        """
        return (self.filter_width - 1) * sum(self.dilations) + self.filter_width

    def to_dict(self):
        out = {**dataclasses.asdict(self), "dilations": list(self.dilations)}
        if not self.condition_values:
            del out["condition_values"]  # An unconditioned model's config reads as before conditioning existed.
        return out

    @classmethod
    def from_dict(cls, raw):
        check(isinstance(raw.get("dilations"), list), "the model's dilations must be a list")
        return cls(**{**raw, "dilations": tuple(raw["dilations"])})


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """export/config.json: everything the sampler needs beside the weights.

    Attributes:
      wavenet_config: the architecture (JSON key "model").
      sample_rate: Hz of the audio the model was trained on (and generates).
      step: training steps behind the exported weights.
      condition_kind: the label kind (LABEL_KINDS) the model is conditioned on, or None.
      condition_vocabulary: tuple of that kind's values; value i is the model's condition i
        (`DatasetDescription.vocabulary`).
      encoding: always ENCODING.
      format_version: MODEL_FORMAT_VERSION when conditioned, else UNCONDITIONED_MODEL_FORMAT_VERSION.
    """

    wavenet_config: WaveNetConfig
    sample_rate: int
    step: int = 0
    condition_kind: str = None
    condition_vocabulary: tuple = ()
    encoding: str = ENCODING
    format_version: int = None

    def __post_init__(self):
        conditioned = bool(self.wavenet_config.condition_values)
        if self.format_version is None:
            version = MODEL_FORMAT_VERSION if conditioned else UNCONDITIONED_MODEL_FORMAT_VERSION
            object.__setattr__(self, "format_version", version)
        check(
            self.format_version in (UNCONDITIONED_MODEL_FORMAT_VERSION, MODEL_FORMAT_VERSION),
            f"unknown model format_version {self.format_version!r}",
        )
        check_audio_fields(self, self.format_version, "model ")
        check_count(self.step, "step")
        object.__setattr__(self, "condition_vocabulary", tuple(self.condition_vocabulary))
        if conditioned:
            check(isinstance(self.condition_kind, str), "a conditioned model names its condition_kind")
            vocabulary = self.condition_vocabulary
            check(
                len(vocabulary) == self.wavenet_config.condition_values and len(set(vocabulary)) == len(vocabulary),
                f"condition_vocabulary must hold {self.wavenet_config.condition_values} distinct values",
            )
        else:
            check(not self.condition_kind and not self.condition_vocabulary, "an unconditioned model has no vocabulary")

    @property
    def conditioned(self):
        return bool(self.wavenet_config.condition_values)

    def check_condition_given(self, given):
        """The one check (and message) of a label asked of a model, for every caller.

        Args:
          given: whether a label was given (--condition, or condition indices).

        Raises:
          ValueError: a label for an unconditioned model, or none for a conditioned one (listing its values).
        """
        if given and not self.conditioned:
            raise ValueError(
                "the model was trained without --condition_on (it is not conditioned on a label): generate "
                "without --condition"
            )
        if not given and self.conditioned:
            shown = ", ".join(self.condition_vocabulary[:50]) + (" ..." if len(self.condition_vocabulary) > 50 else "")
            raise ValueError(f"the model is conditioned on {self.condition_kind}: give --condition, one of {shown}")

    def condition_indices(self, values):
        """Label values -> the model's condition indices.

        A value matches exactly, or else case-insensitively when that names one value.

        Args:
          values: sequence of str.

        Returns:
          list of int in [0, len(condition_vocabulary)).

        Raises:
          ValueError: the model is unconditioned, or a value is not in its vocabulary (the message lists them).
        """
        self.check_condition_given(True)
        vocabulary = self.condition_vocabulary
        folded = {}
        for index, name in enumerate(vocabulary):
            folded.setdefault(name.casefold(), []).append(index)
        indices = []
        for value in values:
            if value in vocabulary:
                indices.append(vocabulary.index(value))
            elif len(folded.get(value.casefold(), ())) == 1:
                indices.append(folded[value.casefold()][0])
            else:
                shown = ", ".join(repr(v) for v in vocabulary[:50]) + (" ..." if len(vocabulary) > 50 else "")
                raise ValueError(
                    f"{value!r} is not a {self.condition_kind} this model knows; it was trained on "
                    f"{len(vocabulary)}: {shown}"
                )
        return indices

    @property
    def receptive_field(self):
        return self.wavenet_config.receptive_field

    @property
    def quantization_channels(self):
        return self.wavenet_config.quantization_channels

    def to_dict(self):
        # receptive_field and quantization_channels are derived, written for readers without this code.
        out = {
            "format_version": self.format_version,
            "model": self.wavenet_config.to_dict(),
            "receptive_field": self.receptive_field,
            "sample_rate": self.sample_rate,
            "encoding": self.encoding,
            "quantization_channels": self.quantization_channels,
            "step": self.step,
        }
        if self.conditioned:
            out["condition"] = {"kind": self.condition_kind, "vocabulary": list(self.condition_vocabulary)}
        return out

    @classmethod
    def from_dict(cls, raw):
        """Parses and validates a config.json object.

        Raises:
          ContractError: malformed, unknown format version, or derived fields
            that disagree with the architecture.
        """
        with parsing(MODEL_CONFIG_FILE):
            condition = raw.get("condition") or {}
            model_config = cls(
                wavenet_config=WaveNetConfig.from_dict(raw["model"]),
                sample_rate=raw["sample_rate"],
                step=raw.get("step", 0),
                condition_kind=condition.get("kind"),
                condition_vocabulary=tuple(condition.get("vocabulary", ())),
                encoding=raw.get("encoding", ENCODING),
                format_version=raw.get("format_version", UNCONDITIONED_MODEL_FORMAT_VERSION),
            )
        for key in ("receptive_field", "quantization_channels"):
            check(
                raw.get(key, getattr(model_config, key)) == getattr(model_config, key),
                f"{key} disagrees with the model",
            )
        return model_config


def read_model_config(export_dir):
    """The ModelConfig of an export directory (local, gs://, s3://).

    Raises:
      FileNotFoundError: no config.json there.
      ContractError: malformed.
    """
    path = fs.join(export_dir, MODEL_CONFIG_FILE)
    return fs.read_contract(path, ModelConfig.from_dict)


def write_model_config(export_dir, model_config):
    """Writes config.json into `export_dir` atomically (`write_text`); returns its path."""
    path = fs.join(export_dir, MODEL_CONFIG_FILE)
    fs.write_text(path, json.dumps(model_config.to_dict(), indent=2, sort_keys=True))
    return path


def local_export_dir(path):
    """A local export directory from a job_dir or its export/, local or remote.

    Remote paths (gs://, s3://, any Beam filesystem) are fetched into a
    temporary directory: the export is two small files.

    Raises:
      FileNotFoundError: when neither path nor path/export holds model.keras and config.json.
    """
    if fs.is_remote(path):
        return fetch_export(path)
    for candidate in (path, os.path.join(path, EXPORT_DIR)):
        if os.path.isfile(os.path.join(candidate, MODEL_FILE)) and os.path.isfile(
            os.path.join(candidate, MODEL_CONFIG_FILE)
        ):
            return candidate
    raise FileNotFoundError(
        f"no exported model in {path}: expected {MODEL_FILE} and {MODEL_CONFIG_FILE} there or in {path}/export "
        "(written by python -m trainer.task)"
    )


def fetch_export(uri):
    """Copies the export at a remote job_dir or its export/ into a local temporary directory, both files at once.

    Raises:
      FileNotFoundError: neither holds model.keras and config.json.
    """
    import tempfile

    for candidate in (uri.rstrip("/"), fs.join(uri.rstrip("/"), EXPORT_DIR)):
        names = (MODEL_FILE, MODEL_CONFIG_FILE)
        if all(fs.exists(fs.join(candidate, name)) for name in names):
            local = tempfile.mkdtemp(prefix="wavenet-export-")
            fs.copy_all((fs.join(candidate, name), os.path.join(local, name)) for name in names)
            return local
    raise FileNotFoundError(f"no exported model in {uri} or {uri}/{EXPORT_DIR}")
