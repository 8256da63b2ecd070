"""The Dataflow Flex Template files agree with the pipeline's options."""

import argparse
import json
import os
import re
import subprocess
import sys

from pipelines import contract, preprocess
from pipelines.options import PreprocessOptions

TEMPLATES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "templates")


def _option_names():
    parser = argparse.ArgumentParser()
    PreprocessOptions._add_argparse_args(parser)
    return {a.dest for a in parser._actions if a.option_strings and a.dest != "help"}


def _metadata():
    with open(os.path.join(TEMPLATES, "metadata.json")) as f:
        return json.load(f)


def test_metadata_names_every_option_and_nothing_else():
    names = [p["name"] for p in _metadata()["parameters"]]
    assert len(names) == len(set(names))
    assert set(names) == _option_names()


def test_every_parameter_is_described():
    for param in _metadata()["parameters"]:
        assert param["label"] and len(param["helpText"]) > 20, param["name"]
        assert isinstance(param["isOptional"], bool)
        for regex in param.get("regexes", []):
            re.compile(regex)
    output = next(p for p in _metadata()["parameters"] if p["name"] == "output")
    assert not output["isOptional"] and re.match(output["regexes"][0], "gs://bucket/windows")


def test_committed_metadata_is_what_the_options_generate():
    generated = subprocess.run(
        [sys.executable, os.path.join(TEMPLATES, "make_metadata.py")], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(generated) == _metadata(), "run: python templates/make_metadata.py > templates/metadata.json"


def test_dockerfile_launches_the_preprocess_entry_point():
    with open(os.path.join(TEMPLATES, "Dockerfile")) as f:
        dockerfile = f.read()
    entry = re.search(r"ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/(\S+)", dockerfile).group(1)
    assert os.path.exists(os.path.join(TEMPLATES, entry))
    assert "apache/beam_python3.11_sdk:2.77.0" in dockerfile  # The Beam version setup.py pins.


def test_template_launch_returns_after_submitting(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(preprocess.FLEX_TEMPLATE_ENV, "/template/launch_preprocess.py")
    assert preprocess.run([f"--output={tmp_path}", "--direct_num_workers=1", "--direct_running_mode=in_memory"]) is None
    assert "Tracks:" not in capsys.readouterr().out  # No waiting, no summary...
    assert (tmp_path / contract.DATASET_FILE).exists()  # ...and the job still describes its output.
