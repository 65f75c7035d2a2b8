"""`tslrec --version` answers without loading torch, and `--help` without transformers, peft or matplotlib (start-up
time is a benchmark's concern; what it loads is this test's)."""

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


def test_help_loads_only_what_the_command_line_needs():
    """Every command's --help (which builds every command's parser) loads no LLM, plotting or clustering library:
    those load in the commands that use them."""
    code = (
        "import sys; from tslrec.pipelines.cli import main\n"
        "for argv in (['--help'], ['train', '--help'], ['stage1', '--help'], ['run', '--help'], ['data', '--help']):\n"
        "    main(argv)\n"
        "print(sorted(m for m in ('transformers', 'peft', 'accelerate', 'matplotlib', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "[]", out[-500:]
