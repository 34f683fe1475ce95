"""The README's "Use from Python" example runs as written, on a state dict and a training
checkpoint from the fixtures put where it names them."""
import os
import re
import shutil

from conftest import FIXTURES, REPO


def readme_python_example():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("## Use from Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the section has one Python example"
    return blocks[0]


def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    code = readme_python_example()
    shutil.copyfile(os.path.join(FIXTURES, "recipe.pt"), tmp_path / "model.pt")
    shutil.copyfile(os.path.join(FIXTURES, "nested.pt"), tmp_path / "checkpoint.pt")
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(code, "README.md (Use from Python)", "exec"), scope)
    assert scope["lr"] == 0.001
    assert tuple(scope["w"].shape) == (3, 4)
    assert len(scope["state"]) > 0
