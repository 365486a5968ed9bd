"""The repository's promises about itself: CI runs the README's test command."""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _command_after(text: str, heading: str) -> str:
    """The first indented line after the line `heading` (Markdown code block)."""
    lines = text.splitlines()
    start = lines.index(heading)
    return next(line.strip() for line in lines[start + 1:] if line.startswith("    "))


def test_ci_runs_the_readmes_test_command_in_a_fresh_environment():
    readme = (REPO_ROOT / "README.md").read_text()
    command = _command_after(readme, "Run the tests:")
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert command in ci.splitlines()
    assert command.startswith("python3 -m venv .venv && . .venv/bin/activate && ")
    assert command.endswith("python -m pytest -q -rs")


def test_main_job_command_installs_what_it_uses():
    readme = (REPO_ROOT / "README.md").read_text()
    command = _command_after(readme, "Run the main job (export DIC to ONNX with the shipped weights, verified "
                                     "against PyTorch):")
    assert 'pip install torch==2.13.0 -e ".[export]"' in command and "python -m export.build --model dic" in command
