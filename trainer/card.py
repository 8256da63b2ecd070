"""The model card written with every export: export/MODEL_CARD.md (Hugging Face's model-card layout).

What the model is (its preset, receptive field, parameters), what it was
trained on (from the dataset's attribution.csv, copied into the export beside
the card: tracks, hours and licences), the terms that data carries (counted),
how training went (steps, train and held-out loss in nats and bits), on what
hardware, and what it is for. It states the terms of the training data and
leaves to the user whether they bind the model and its outputs; it claims no
licence for the outputs. Hugging Face model cards:
https://huggingface.co/docs/hub/model-cards.
"""

import datetime
import math
import platform

from pipelines import contract

MODEL_CARD_FILE = "MODEL_CARD.md"
# The terms a licence may ask, as attribution.csv names them, and how the card says them.
TERMS = {
    "attribution": "attribution (credit the artists: attribution.csv lists them)",
    "share_alike": "share-alike (adaptations under the same licence)",
    "non_commercial": "non-commercial use only",
    "no_derivatives": "no derivative works",
}


def _nats(value):
    if value is None:
        return "n/a"
    return f"{value:.3f} nats ({value / math.log(2):.3f} bits) per sample"


def model_card(model_config, preset, parameters, description, rows, result, hardware, data_dir, command):
    """The card's Markdown text.

    Args:
      model_config: the export's contract.ModelConfig.
      preset: the trainer preset's name (trainer.presets).
      parameters: int, the model's trainable parameters.
      description: the training data's contract.DatasetDescription.
      rows: its contract.AttributionRow list, or None when the dataset has no attribution.csv
        (made before licences were recorded).
      result: the run's loop.TrainResult (step, train and validation loss in nats per sample).
      hardware: str, e.g. "1 replica on CPU".
      data_dir: where the data was read from (--data).
      command: the trainer's command line, as a list of str.
    """
    wavenet_config = model_config.wavenet_config
    name = contract.directory_name(data_dir)
    tags = ("audio", "music", "wavenet", "audio-generation")
    front = ["---", "library_name: keras", "tags:", *(f"- {tag}" for tag in tags)]
    front += ["datasets:", f"- {name}", "---", ""]
    body = [
        f"# WaveNet trained on {name}",
        "",
        f"An autoregressive WaveNet (van den Oord et al., 2016) over {model_config.quantization_channels}-level "
        f"mu-law codes at {model_config.sample_rate} Hz, exported by `python -m trainer.task` after "
        f"{model_config.step} steps. Generate audio with `python -m sampler.generate --model <this directory> "
        "--seconds 10 --output clip.wav`.",
        "",
        "## Model",
        "",
        f"- Preset `{preset}`: {len(wavenet_config.dilations)} dilated layers (dilations "
        f"{', '.join(map(str, wavenet_config.dilations))}), filter width {wavenet_config.filter_width}, residual "
        f"{wavenet_config.residual_channels} / dilation {wavenet_config.dilation_channels} / skip "
        f"{wavenet_config.skip_channels} channels; {parameters:,} parameters.",
        f"- Receptive field: {wavenet_config.receptive_field} samples "
        f"({wavenet_config.receptive_field / model_config.sample_rate:.3f} s).",
        *(
            [f"- Conditioned on {model_config.condition_kind}: {', '.join(model_config.condition_vocabulary)}."]
            if model_config.condition_kind
            else []
        ),
        "",
        "## Training data",
        "",
        f"- `{data_dir}`: {description.tracks} tracks, {description.seconds / 3600:.3f} hours at "
        f"{description.sample_rate} Hz, {description.windows} windows of {description.window_samples} samples; "
        f"train {description.splits[contract.TRAIN].tracks} tracks, held out "
        f"{description.splits[contract.VALIDATION].tracks}.",
    ]
    body += _licences(rows)
    body += [
        "",
        "## Results",
        "",
        f"- Steps: {result.step}.",
        f"- Train loss (last step): {_nats(result.train_loss_nats)}.",
        f"- Held-out loss (the validation split, tracks never trained on): {_nats(result.validation_loss_nats)}.",
        "",
        "## Hardware and software",
        "",
        f"- {hardware}; {platform.system()} {platform.machine()}, Python {platform.python_version()}.",
        f"- {contract.software()}; exported {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}.",
        f"- `python -m trainer.task {' '.join(command)}`" if command else "- (command not recorded)",
        "",
        "## Intended use and limitations",
        "",
        "- For research and music making: generating audio in the style of the training data, studying "
        "autoregressive audio models.",
        "- It imitates its training data and may reproduce recognizable passages of it; check what you "
        "publish. It knows nothing beyond the styles in the data above.",
        "- Mu-law codes at this sample rate limit its fidelity (about 8 bits of resolution).",
        "",
    ]
    return "\n".join(front + body)


def _licences(rows):
    if rows is None:
        return [
            "",
            "## Terms the training data carries",
            "",
            "Unknown: the dataset was made before licences were recorded (no attribution.csv). Run "
            "`python -m pipelines.verify DATA --write_cards` on it, then train again to record them here.",
        ]
    hours = sum(r.duration_secs for r in rows) / 3600
    lines = [
        "",
        "| licence | tracks | hours |",
        "|---|---|---|",
        *(f"| {licence} | {n} | {secs / 3600:.3f} |" for licence, n, secs, _ in contract.licence_totals(rows)),
        "",
        "`attribution.csv`, beside this card, lists every track with its title, artist, licence and source.",
        "",
        "## Terms the training data carries",
        "",
        f"Of the {len(rows)} tracks ({hours:.3f} hours):",
        "",
    ]
    for term, words in TERMS.items():
        asked = [r for r in rows if getattr(r, term) == contract.attribution.YES]
        lines.append(f"- {len(asked)} tracks ({sum(r.duration_secs for r in asked) / 3600:.3f} h) ask for {words}.")
    unknown = [r for r in rows if r.attribution == contract.attribution.UNKNOWN_TERM]
    if unknown:
        lines.append(f"- {len(unknown)} tracks have terms that are not known (their licence is unknown or unread).")
    lines += [
        "",
        "These are the terms of the training data's licences. Whether they bind this model, and the audio it "
        "generates, is for you to judge; this card claims no licence for the model's outputs.",
    ]
    return lines


def write_model_card(export_dir, card, rows):
    """Writes MODEL_CARD.md (and attribution.csv, when the data has one) into an export, atomically each."""
    if rows is not None:
        contract.write_attribution(export_dir, rows)
    contract.write_text(contract.join(export_dir, MODEL_CARD_FILE), card, mime_type="text/markdown")
