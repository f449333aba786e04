"""The `feed` command: composed from entry points, usual exit codes, errors on stderr."""

from __future__ import annotations

import os
import subprocess
import sys


def feed(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FEED_SERVE_STORE_URL": ""}  # no event store unless a test asks for one
    return subprocess.run([sys.executable, "-m", "feed.cli", *args], capture_output=True, text=True, timeout=120,
                          env=env)


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


def test_import_writes_a_valid_dataset(tmp_path):
    (tmp_path / "u.data").write_text("1\t10\t5\t881250949\n2\t10\t3\t891717742\n2\t11\t4\t878887116\n")
    out = feed("import", "movielens", str(tmp_path / "u.data"), "--min-rating", "4", "--out", str(tmp_path / "ml"))
    assert out.returncode == 0 and "events 2" in out.stdout, out.stderr
    assert feed("validate", str(tmp_path / "ml")).returncode == 0
    out = feed("import", "adjacency", "--file", "purchase", "--out", str(tmp_path / "x"))
    assert out.returncode == 2 and "EVENT=PATH" in out.stderr
    (tmp_path / "bad.txt").write_text("1 2 x\n")
    out = feed("import", "adjacency", "--file", f"purchase={tmp_path / 'bad.txt'}", "--out", str(tmp_path / "y"))
    assert out.returncode == 1 and "bad.txt" in out.stderr and "'x'" in out.stderr


def test_promote_and_rollback_from_the_shell(small_bundle_dir, tmp_path):
    from feed.bundle import load_bundle
    from training.config import load_config
    from training.pipeline import TrainResult, track_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for value in (0.2, 0.1, 0.3):
        config = load_config(overrides={"mlflow": {"tracking_uri": uri, "promote": "never"}}, environ={})
        track_run(TrainResult(small_bundle_dir, {"video.als.recall@20": value}), load_bundle(small_bundle_dir), config)
    assert feed("promote", "--version", "1", "--tracking-uri", uri).returncode == 0
    out = feed("promote", "--version", "2", "--tracking-uri", uri)
    assert out.returncode == 1 and "not better" in out.stderr
    out = feed("promote", "--tracking-uri", uri)
    assert out.returncode == 0 and "version 3" in out.stdout
    out = feed("promote", "--rollback", "--tracking-uri", uri)
    assert out.returncode == 0 and "version 1" in out.stdout


def test_the_store_loop_db_load_export_and_train_from_the_store(small_world_dir, tmp_path):
    store = f"sqlite:///{tmp_path / 'store.db'}"
    out = feed("db", "upgrade", "--store", store)
    assert out.returncode == 0 and "revision" in out.stdout, out.stderr
    out = feed("db", "load", "--store", store, "--data", str(small_world_dir), "--with-events")
    assert out.returncode == 0 and "events:" in out.stdout, out.stderr
    out = feed("events", "export", "--store", store, "--since", "2026-01-10", "--out", str(tmp_path / "recent"))
    assert out.returncode == 0, out.stderr
    assert feed("validate", str(tmp_path / "recent")).returncode == 0
    out = feed("train", "--store", store, "--out", str(tmp_path / "bundle"), "--no-track", "--quiet",
               "--set", "als.iterations=3")
    assert out.returncode == 0 and (tmp_path / "bundle" / "manifest.json").is_file(), out.stderr
    out = feed("train", "--store", store, "--data", str(small_world_dir), "--no-track")
    assert out.returncode == 2 and "exactly one" in out.stderr


def test_exporting_an_empty_store_says_so(tmp_path):
    store = f"sqlite:///{tmp_path / 'store.db'}"
    feed("db", "upgrade", "--store", store)
    out = feed("events", "export", "--store", store, "--out", str(tmp_path / "x"))
    assert out.returncode == 1 and "no events" in out.stderr


def test_sample_feeds_of_a_server_that_stopped_are_one_line_not_a_traceback(capsys):
    import socket

    from serving.cli import _print_samples

    with socket.socket() as sock:  # a port nothing listens on: the server stopped right after it started
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert _print_samples(f"http://127.0.0.1:{port}", ["u1", "u2"]) is False
    out, err = capsys.readouterr()
    assert out == "" and err.strip() == f"sample feeds not shown: http://127.0.0.1:{port} stopped answering (ConnectError)"
