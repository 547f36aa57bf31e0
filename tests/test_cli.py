import subprocess
import sys

from avparse.tools import cli


def test_help_lists_subcommands(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: avparse" in out
    for name in cli._available():
        assert name in out


def test_unknown_subcommand_is_one_line(capsys):
    assert cli.main(["no-such-thing"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown subcommand" in err[0]


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "avparse.tools.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "subcommands:" in r.stdout
