"""Tests of `training/train.py`: Mask²DiT training, both stages: pretrain (concatenated single shots)
and SFT (curated combinations)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.support import REPO
from tests.support.training import CONFIG


def test_train_help_answers_fast_without_torch_and_lists_every_key():
    code = ("import sys, contextlib, io, time\nbegan = time.perf_counter()\nsys.argv = ['train.py', '--help']\n"
            "sys.path.insert(0, '.')\nfrom training.train import main\nout = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n    try: main(['--help'])\n    except SystemExit: pass\n"
            "assert 'torch' not in sys.modules and 'deepspeed' not in sys.modules\n"
            "print(time.perf_counter() - began)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.strip().splitlines()[-1]) < 2.0
    listing = subprocess.run([sys.executable, "training/train.py", "--help-config"], cwd=REPO, capture_output=True,
                             text=True, timeout=60).stdout  # fmt: skip
    from training.config import config_keys

    keys = config_keys()
    assert len(keys) > 50 and all(text for _, _, text in keys)  # every key has its help
    for key, default, _ in keys:
        assert key in listing and default in listing


@pytest.mark.parametrize(
    "args,expected",
    [
        (["data.scnes=2"], "data.scnes: unknown key (did you mean data.scenes?)"),
        (["modle.path=x"], "modle: unknown section (did you mean model?)"),
        (
            ["--max-steps", "5"],
            "unknown flag --max-steps: config keys go as section.key=value (did you mean run.max_steps=5?)",
        ),
    ],
)
def test_training_mistakes_get_a_did_you_mean_as_the_last_line(args, expected):
    begun = time.perf_counter()
    done = subprocess.run([sys.executable, "training/train.py", "--config", str(CONFIG), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and expected in lines[-1] and len(lines) <= 2, done.stderr
    assert time.perf_counter() - begun < 10  # found before torch or DeepSpeed load
