"""The README's Python example runs as written, and its commands are the ones CI runs."""

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["logits"].shape == (1, 28, namespace["tokenizer"].vocab_size)


def readme_command(marker: str) -> str:
    """The body of the first ```bash block after ``marker``, read here independently of .ci/run."""
    after = README.split(marker, 1)[1]
    return after.split("```bash\n", 1)[1].split("```", 1)[0].strip()


def test_ci_runs_exactly_the_two_marked_readme_commands():
    main, test = readme_command("<!-- ci:main -->"), readme_command("<!-- ci:test -->")
    printed = subprocess.run(["bash", str(REPO / ".ci" / "run"), "--print"], capture_output=True, text=True,
                             check=True).stdout
    assert printed == f"{main}\n{test}\n"
    # a fresh machine installs everything from these commands alone
    assert "pip install -c constraints.txt -e ." in main and "scratchmlm train" in main
    assert 'pip install -c constraints.txt -e ".[dev]"' in test and "pytest" in test
    assert "torch==2.13.0" in (REPO / "constraints.txt").read_text().split()
