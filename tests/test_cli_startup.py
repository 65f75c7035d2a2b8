"""`tslrec --version` answers without loading torch, transformers or peft (start-up time is a benchmark's concern;
what it loads is this test's)."""

from __future__ import annotations

import subprocess
import sys


def test_version_loads_no_model_library():
    code = (
        "import sys; from tslrec.pipelines.cli import main; assert main(['--version']) == 0; "
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    version, loaded = out.splitlines()
    assert version.startswith("tslrec ") and loaded == "[]", out
