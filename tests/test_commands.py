"""What every command shows a user: help with defaults, no native log noise, one-line faults, quiet pipes."""

import argparse
import os
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


def _help_text(command):
    """What `python -m COMMAND --help` prints."""
    if command == "pipelines.preprocess":
        from pipelines.options import help_text

        return help_text()
    return PARSERS[command]().format_help()


def _option_entries(help_text):
    """Each option's entry in a --help text: its first line and the lines of its help, in one line."""
    entries, inside = [], False
    for line in help_text.splitlines():
        if re.match(r"  --?[\w-]+(?: [A-Z_{\[]|  |$)", line):  # An option, not a description naming one.
            entries.append(line)
            inside = True
        elif inside and line.startswith("   "):  # Its help, wrapped; a group's description is indented by 2 only.
            entries[-1] += " " + line
        else:
            inside = False
    return [" ".join(entry.split()) for entry in entries if not entry.split()[0].startswith(("-h", "--help"))]


# The options Beam defines that our help texts name: each must be listed, and explained, where it is named.
BEAM_OPTIONS_NAMED = ("--streaming",)
@pytest.mark.parametrize("command", list(PARSERS))
def test_help_states_each_default_once_in_one_form(command):
    text = _help_text(command)
    entries = _option_entries(text)
    assert len(entries) >= 5
    wrong = []
    for entry in entries:
        stated = len(re.findall(r"Default:|\(default:", entry))  # (The second is ArgumentDefaultsHelpFormatter's.)
        if not (stated == 1 and re.search(r"\bDefault: \S[^.]*", entry)) and not (stated == 0 and "Required" in entry):
            wrong.append(entry[:100])
    listed = {entry.split()[0].rstrip(",") for entry in entries}
    wrong += [f"{name} is named but not listed" for name in BEAM_OPTIONS_NAMED if name in text and name not in listed]
    assert wrong == []


@pytest.mark.parametrize(
    "command, argv, typed, meant",
    [
        ("sampler.generate", ["--second=1"], "--second", "--seconds"),
        ("trainer.task", ["--step", "3"], "--step", "--steps"),
        ("trainer.evaluate", ["--mod=runs/a"], "--mod", "--model"),
        ("pipelines.verify", ["output", "--clea"], "--clea", "--clean"),
        ("pipelines.scrape", ["--ur=https://example.org/"], "--ur", "--url"),
    ],
    ids=["abbreviation", "ambiguous-abbreviation", "evaluate", "verify", "scrape"],
)
def test_an_unknown_or_shortened_option_is_refused_with_a_suggestion(command, argv, typed, meant, capsys):
    # Required options are left out on purpose: the unknown one is what the user needs to hear about first.
    with pytest.raises(SystemExit) as exit:
        PARSERS[command]().parse_args(argv)
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.startswith("usage: ")
    assert err.endswith(f"error: unknown option {typed} (did you mean {meant}?)\n")


def test_unknown_options_are_found_among_values_and_negative_numbers():
    known = ["--steps", "--steps_per_loop", "--seed", "--output"]
    assert commands.unknown_options(["--steps", "-5", "--seed=-1", "--output", "x"], known) == []
    assert commands.unknown_options(["--step", "3", "--ouput=x", "--zzz", "--", "--nope"], known) == [
        "unknown option --step (did you mean --steps?)",
        "unknown option --ouput (did you mean --output?)",
        "unknown option --zzz",
    ]
    assert commands.unknown_options(["--see"], known) == ["unknown option --see (did you mean --seed?)"]


@pytest.mark.parametrize(
    "command, option",
    [("trainer.task", "--job_dir"), ("trainer.task", "--export_dir"), ("trainer.task", "--tensorboard_dir"),
     ("sampler.generate", "--output")],
    ids=["job_dir", "export_dir", "tensorboard_dir", "sampler-output"],
)  # fmt: skip
def test_a_path_through_a_file_is_not_a_directory_naming_the_file(command, option, tmp_path, capsys, monkeypatch):
    from trainer import task

    monkeypatch.delenv(contract.DEBUG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile.txt").write_text("a file")
    inside = "afile.txt/clip.wav" if option == "--output" else "afile.txt/job"
    if command == "trainer.task":
        main, argv = task._main, ["--data=data", "--job_dir=job", f"{option}={inside}", "--steps=1"]
    else:
        main, argv = generate.run, ["--model=model", "--seconds=1", f"--output={inside}"]
    assert contract.run_command(main, argv) == 1
    assert capsys.readouterr().err == "error: not a directory: afile.txt\n"
    if option == "--job_dir":
        argv[-1:] = ["--job_dir=afile.txt", "--steps=1"]  # The job dir itself a file.
        assert contract.run_command(main, argv) == 1
        assert capsys.readouterr().err == "error: not a directory: afile.txt\n"
    assert os.listdir(tmp_path) == ["afile.txt"]


def test_a_directory_the_file_system_will_not_create_is_named_with_the_reason(tmp_path):
    if not os.path.isdir("/proc/self"):
        pytest.skip("needs Linux's /proc")
    with pytest.raises(contract.CommandError, match=r"^cannot create directory: /proc/wavenet-x: the file system "
                       r"of /proc takes no new entries there"):  # fmt: skip
        commands.make_directories("/proc/wavenet-x/clips")
    (tmp_path / "afile.txt").write_text("a file")
    with pytest.raises(NotADirectoryError) as error:
        commands.make_directories(str(tmp_path / "afile.txt" / "a" / "b"))
    assert contract.fault_message(error.value) == f"not a directory: {tmp_path / 'afile.txt'}"


def test_an_empty_split_is_warned_of_only_when_it_came_out_empty_by_chance(tmp_path):
    import dataclasses

    from pipelines import preprocess, summary
    from tests.helpers import CLIPS

    output = tmp_path / "out"
    description = preprocess.run([f"--output={output}", f"--input={CLIPS['mp3_22k_mono']}", "--sample_rate=8000",
                                  "--window_samples=4000", "--validation_fraction=0", "--direct_num_workers=1",
                                  "--direct_running_mode=in_memory"])  # fmt: skip
    assert description.splits[contract.VALIDATION].tracks == 0
    assert "split is empty" not in summary.format_summary(description, str(output), 1.0, 1.0)  # As asked.
    by_chance = dataclasses.replace(description, validation_fraction=0.1)
    assert "the validation split is empty: 1 track(s) at --validation_fraction 0.1" in summary.format_summary(
        by_chance, str(output), 1.0, 1.0
    )
    train, validation = description.splits[contract.TRAIN], description.splits[contract.VALIDATION]
    swapped = {contract.TRAIN: validation, contract.VALIDATION: train}
    all_held_out = dataclasses.replace(description, validation_fraction=1.0, splits=swapped)
    assert "split is empty" not in summary.format_summary(all_held_out, str(output), 1.0, 1.0)  # As asked, too.


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
