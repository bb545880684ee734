"""The README's Python example runs as written, and its commands are the ones CI runs."""

import re
import subprocess
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["logits"].shape == (1, 28, namespace["tokenizer"].vocab_size)


def test_ci_runs_the_two_marked_readme_commands():
    for marker in ("<!-- ci:main -->", "<!-- ci:test -->"):
        assert marker in README
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "ci:$name" in ci and "for name in main test" in ci
    assert "scratchmlm train" in README.split("<!-- ci:main -->")[1].split("```")[1]
    assert "pytest" in README.split("<!-- ci:test -->")[1].split("```")[1]
    subprocess.run(["bash", "-n", str(Path(__file__).resolve().parents[1] / ".ci" / "run")], check=True)
