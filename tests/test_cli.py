"""The `feed` command: composed from entry points, usual exit codes, errors on stderr."""

from __future__ import annotations

import subprocess
import sys


def feed(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "feed.cli", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_packages_commands():
    out = feed("--help")
    assert out.returncode == 0
    for command in ("generate", "train", "serve", "validate"):
        assert command in out.stdout


def test_bad_usage_exits_2_on_stderr():
    out = feed("no-such-command")
    assert out.returncode == 2 and "No such command" in out.stderr
    out = feed("generate", "--out", "x", "--users", "zero")
    assert out.returncode == 2 and "--users" in out.stderr


def test_project_errors_exit_1_with_the_file_named(tmp_path):
    (tmp_path / "events.csv").write_text("ts,user_id,video_id,event\n2026-01-01T00:00:00Z,u1,v1,teleport\n")
    out = feed("validate", str(tmp_path))
    assert out.returncode == 1
    assert "events.csv" in out.stderr and "teleport" in out.stderr and "Traceback" not in out.stderr


def test_bad_config_flag_is_a_clear_error(tmp_path):
    out = feed("train", "--data", str(tmp_path), "--set", "als.factors=-3", "--no-track")
    assert out.returncode == 1 and "als.factors" in out.stderr


def test_serve_refuses_a_corrupted_bundle_before_binding(small_bundle_dir, tmp_path):
    import shutil

    broken = tmp_path / "bundle"
    shutil.copytree(small_bundle_dir, broken)
    with (broken / "seen.npz").open("ab") as handle:
        handle.write(b"x")
    out = feed("serve", "--bundle", str(broken), "--port", "1")
    assert out.returncode == 1 and "seen.npz: sha256 mismatch" in out.stderr and "Traceback" not in out.stderr


def test_serve_explains_a_missing_registered_model(tmp_path):
    out = feed("serve", "--tracking-uri", f"sqlite:///{tmp_path / 'empty.db'}", "--port", "1")
    assert out.returncode == 1 and "models:/selfretail-feed@champion" in out.stderr and "feed train" in out.stderr
