"""What every command shows a user: help with defaults, no native log noise, one-line faults, quiet pipes."""

import argparse
import re
import subprocess
import sys

import pytest

from pipelines import compat, contract, scrape, verify
from pipelines.contract import commands
from pipelines.options import PreprocessOptions
from sampler import generate
from trainer import evaluate, options

NATIVE_LOG_LINE = re.compile(r"^(?:[IWE]\d{4} |WARNING: All log messages before absl)", re.MULTILINE)


def _preprocess_parser():
    return compat.options_parser(PreprocessOptions, prog="python -m pipelines.preprocess")


PARSERS = {
    "pipelines.preprocess": _preprocess_parser,
    "pipelines.scrape": scrape.build_parser,
    "pipelines.verify": verify.build_parser,
    "trainer.task": options.build_parser,
    "trainer.evaluate": evaluate.build_parser,
    "sampler.generate": generate.build_parser,
}


@pytest.mark.parametrize("command", list(PARSERS))
def test_every_option_says_its_default_and_what_each_choice_means(command):
    parser = PARSERS[command]()
    formatter = parser._get_formatter()
    lacking = []
    for action in compat.parser_options(parser):
        if action.help == argparse.SUPPRESS:
            continue
        text = formatter._expand_help(action) if action.help else ""
        flag = isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction)
        if not flag and not action.required and "default" not in text.lower():
            lacking.append(f"{action.option_strings[0]}: no default")
        lacking += [
            f"{action.option_strings[0]}: {c!r} not described" for c in action.choices or () if str(c) not in text
        ]
    assert lacking == []


@pytest.mark.parametrize("command", list(PARSERS))
def test_help_is_quick_and_free_of_native_log_lines(command):
    result = subprocess.run([sys.executable, "-m", command, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "usage" in result.stdout.lower() + result.stderr.lower()
    assert not NATIVE_LOG_LINE.search(result.stdout + result.stderr)
    assert "tensorflow" not in result.stderr.lower()


def test_a_closed_pipe_ends_a_command_quietly(tmp_path):
    from tests.helpers import CLIPS

    output = tmp_path / "out"
    subprocess.run([sys.executable, "-m", "pipelines.preprocess", f"--output={output}", f"--input={CLIPS['ogg_48k']}",
                    "--direct_num_workers=1", "--direct_running_mode=in_memory", "--sample_rate=8000",
                    "--window_samples=400", "--validation_fraction=0"], check=True, capture_output=True)  # fmt: skip
    listed = subprocess.run(
        f"{sys.executable} -m pipelines.verify {output} --tracks | head -c 1",
        shell=True,
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0 and listed.stdout == "{" and listed.stderr == ""


@pytest.mark.parametrize(
    "error, line",
    [
        (OSError(28, "No space left on device", "/data/out/x"), "no space left on device: /data/out/x"),
        (PermissionError(13, "Permission denied", "/data/out"), "permission denied: /data/out"),
        (RuntimeError("worker failed:\nTraceback...\nOSError: [Errno 28] No space left on device: '/o/s'"),
         "no space left on device: /o/s"),
        (RecursionError("maximum recursion depth exceeded"), "the input is nested too deeply to read"),
    ],
    ids=["enospc", "permission", "beam-wrapped-enospc", "recursion"],
)  # fmt: skip
def test_expected_faults_are_one_line_and_bugs_keep_their_traceback(error, line, capsys, monkeypatch):
    monkeypatch.delenv(contract.DEBUG_ENV, raising=False)

    def fails():
        raise error

    assert contract.run_command(fails) == 1
    assert capsys.readouterr().err == f"error: {line}\n"
    with pytest.raises(KeyError):  # A bug is not an expected fault.
        contract.run_command(lambda: {}["missing"])
    monkeypatch.setenv(contract.DEBUG_ENV, "1")
    with pytest.raises(type(error)):
        contract.run_command(fails)


def test_progress_off_a_terminal_is_whole_lines(tmp_path):
    import io

    stream = io.StringIO()
    bar = contract.progress_bar(1000, "step", stream=stream)
    assert isinstance(bar, contract.LogProgress)
    bar._interval = 0.0  # Every update a line, as 30 s of a long run would give.
    for _ in range(10):
        bar.update(100)
        bar.set_postfix(loss="3.000")
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 11 and lines[-1].startswith("1,000/1,000 steps (100%)")
    assert all(len(line) < 200 for line in lines)


def test_native_noise_is_told_from_other_lines():
    assert contract.is_native_noise("I0000 00:00:1796297618.235467   25873 port.cc:153] oneDNN custom operations\n")
    assert contract.is_native_noise("W0000 00:00:1796297618.2 1 dataset.cc:1] TFRecordDataset buffer_size\n")
    assert contract.is_native_noise(
        "E0000 00:00:1796295221.908498    2214 cuda_platform.cc:52] failed call to cuInit\n"
    )
    assert not contract.is_native_noise("E0000 00:00:1796295221.908498    2214 op.cc:52] a real error\n")
    assert not contract.is_native_noise("WARNING trainer.task: Resumed from ckpt-40 at step 40\n")
    kept, held = commands._drop_native_noise(b"\r 50%|#####| 10/20\rI0000 00:00:1.0 1 a.cc:1] x\nW0000 00:0")
    assert kept == b"\r 50%|#####| 10/20\r" and held == b"W0000 00:0"


def test_a_terminal_keeps_its_bar_once_stderr_is_piped_through_the_filter(monkeypatch):
    import sys

    monkeypatch.setattr(commands, "_stderr_terminal", [True])  # As filter_native_logs records it on a terminal.
    bar = contract.progress_bar(10, "step", stream=sys.stderr)
    assert not isinstance(bar, contract.LogProgress)
    bar.close()
    monkeypatch.setattr(commands, "_stderr_terminal", [False])
    assert isinstance(contract.progress_bar(10, "step", stream=sys.stderr), contract.LogProgress)
