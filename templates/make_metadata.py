"""Writes templates/metadata.json, the Flex Template's parameters, from PreprocessOptions.

    python templates/make_metadata.py > templates/metadata.json

tests/test_templates.py checks that the committed file and the options agree.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipelines import compat  # noqa: E402
from pipelines.options import PreprocessOptions  # noqa: E402

# Parameters whose values Dataflow checks before launch (paths, URLs, label rules).
REGEXES = {
    "input": [r"^(gs://|s3://|https?://|@|/).+"],
    "output": [r"^(gs|s3)://.+"],
    "scrape_url": [r"^https?://.+"],
    "label_from": [r"^(genre|artist)=(parent_dir|tag)$"],
    "labels_file": [r"^(gs://|s3://|/).+"],
}


def parameters():
    parser = compat.options_parser(PreprocessOptions)
    params = []
    for action in compat.parser_options(parser):
        help_text = (action.help or "") % {"default": action.default}
        param = {
            "name": action.dest,
            "label": action.dest.replace("_", " ").capitalize(),
            "helpText": help_text,
            "isOptional": action.dest != "output",
        }
        if action.dest in REGEXES:
            param["regexes"] = REGEXES[action.dest]
        params.append(param)
    return params


def metadata():
    return {
        "name": "wavenet-music-toolkit preprocess",
        "description": "Music files, globs, URLs or scraped listing pages -> mu-law TFRecord windows, "
        "dataset.json, per-run track and failure records (python -m pipelines.preprocess). One input pattern or "
        "@list file per job; a list file names any number of paths and URLs.",
        "parameters": parameters(),
    }


if __name__ == "__main__":
    print(json.dumps(metadata(), indent=2))
