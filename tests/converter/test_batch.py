"""surgery batch: inputs, targets, fingerprints and resume, the summary and its comparison, crash and timeout
isolation, and end-to-end runs on sample models with the local pool and with Ray."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from converter.batch.executors import LocalExecutor, gpu_request
from converter.batch.items import (Item, ModelEntry, collect_models, load_record, make_items, resolve_backends,
                                   tool_versions, unique_names)
from converter.batch.summary import build_summary, compare, load_summary
from converter.batch.summary_html import summary_html
from converter.batch.targets import DEFAULT_TARGETS, Target, load_targets
from converter.batch.worker import shapes_for
from converter.cli.batch import _reusable, parse_rate
from converter.cli.main import main
from surgery.errors import UserInputError
from tests.converter.test_reports import data_rows, headings, parse_html

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_models"
PASSING, BLOCKED = "cnn_ts", "hostile_unique"  # builds on TensorRT-RTX in seconds / Unique has no TensorRT layer


def _copy_samples(dst: Path, names=(PASSING, BLOCKED)) -> Path:
    dst.mkdir()
    for name in names:
        for suffix in (".onnx", ".spec.json"):
            (dst / f"{name}{suffix}").write_bytes((SAMPLES / f"{name}{suffix}").read_bytes())
    return dst


def _targets_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "targets.toml"
    path.write_text(text)
    return path


# ---- targets -----------------------------------------------------------------------------------------------

def test_targets_file_parsed_in_order_with_defaults(tmp_path):
    path = _targets_file(tmp_path, """
[targets.half]
precision = "fp16"
profile = "opt"
[targets.plain]
preset = "default"
backend = "static"
profile = { min_shapes = "x:[1,3,8,8]", max_shapes = ["x:[4,3,8,8]"] }
""")
    half, plain = load_targets(path)
    assert half == Target("half", preset="trt", emit="onnx", precision="fp16", backend="auto", profile="opt")
    assert plain.backend == "static" and plain.preset == "default"
    assert plain.profile == {"min_shapes": ["x:[1,3,8,8]"], "max_shapes": ["x:[4,3,8,8]"]}


@pytest.mark.parametrize("text, words", [
    ("[targets.a]\nprecision = 'fp8'\n", "precision: 'fp8' is not one of"),
    ("[targets.a]\nflavour = 'x'\n", "unknown key 'flavour'"),
    ("[targets.a]\npreset = 'nope'\n", "unknown preset 'nope'"),
    ("[targets.a]\nprofile = { input_shapes = 'x:[0,3]' }\n", "dimensions must be positive"),
    ("[targets.a]\nprofile = { input_shapes = 'x:[1]', min_shapes = 'x:[1]' }\n", "not both"),
    ("[targets.'a b']\n", "a target name takes"),
    ("[other]\n", "unknown top-level key 'other'"),
    ("[targets.a\n", "invalid TOML"),
])
def test_bad_targets_file_is_a_one_line_user_error(tmp_path, capsys, text, words):
    path = _targets_file(tmp_path, text)
    with pytest.raises(UserInputError) as err:
        load_targets(path)
    assert words in str(err.value) and "\n" not in str(err.value)
    assert main(["batch", str(SAMPLES / f"{PASSING}.onnx"), "-o", str(tmp_path / "out"), "--targets", str(path)]) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_opt_profile_pins_min_and_max_to_the_opt_point():
    from argparse import Namespace

    from converter.trt.profiles import profiles_for
    from surgery.io import load_model

    path, spec = SAMPLES / "bert_ts.onnx", SAMPLES / "bert_ts.spec.json"  # dynamic batch and sequence
    model = load_model(path).model
    derived = profiles_for(model, path, Namespace(spec=spec)).first
    pinned_args = shapes_for("opt", path, spec)
    pinned_args.spec = spec
    pinned = profiles_for(model, path, pinned_args).first
    assert any(lo != hi for lo, _, hi in derived.values())
    assert all(lo == opt == hi for lo, opt, hi in pinned.values())
    assert {n: v[1] for n, v in pinned.items()} == {n: v[1] for n, v in derived.items()}
    assert vars(shapes_for("derived", path, spec)) == {}


# ---- inputs and items --------------------------------------------------------------------------------------

def test_inputs_from_folder_glob_and_list_file_with_specs(tmp_path):
    zoo = _copy_samples(tmp_path / "zoo")
    (tmp_path / "other").mkdir()
    other = tmp_path / "other" / f"{PASSING}.onnx"  # same stem, another folder
    other.write_bytes((SAMPLES / f"{PASSING}.onnx").read_bytes())
    spec = tmp_path / "my spec.json"
    spec.write_bytes((SAMPLES / f"{PASSING}.spec.json").read_bytes())
    listing = tmp_path / "models.txt"
    listing.write_text(f"# the zoo\nother/{PASSING}.onnx 'my spec.json'\n\n")
    models = collect_models([str(zoo), str(zoo / "*.onnx"), str(listing)], exclude=tmp_path / "out")
    by_path = {m.path: m for m in models}
    assert len(models) == 3  # the folder and the glob name the same two files
    assert by_path[other.resolve()].spec == spec.resolve()
    assert by_path[(zoo / f"{BLOCKED}.onnx").resolve()].spec == (zoo / f"{BLOCKED}.spec.json").resolve()
    assert sorted(m.name for m in models) == [BLOCKED, f"other-{PASSING}", f"zoo-{PASSING}"]


def test_unique_names_take_as_many_parent_folders_as_needed():
    paths = [Path("/a/x/m.onnx"), Path("/b/x/m.onnx"), Path("/c/n.onnx")]
    assert unique_names(paths) == {paths[0]: "a-x-m", paths[1]: "b-x-m", paths[2]: "n"}


@pytest.mark.parametrize("arg, words", [("nowhere", "no such model, folder or list file"),
                                        ("*.nothing", "matches no .onnx file")])
def test_missing_inputs_are_user_errors(tmp_path, capsys, monkeypatch, arg, words):
    monkeypatch.chdir(tmp_path)
    assert main(["batch", arg, "-o", "out"]) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_models_inside_the_output_folder_are_left_out(tmp_path):
    zoo = _copy_samples(tmp_path / "zoo", names=(PASSING,))
    (zoo / "out").mkdir()
    (zoo / "out" / "stale.onnx").write_bytes(b"")
    assert [m.name for m in collect_models([str(zoo), str(zoo / "**/*.onnx")], exclude=zoo / "out")] == [PASSING]


def _items(zoo: Path, out: Path, targets=DEFAULT_TARGETS) -> list[Item]:
    return make_items(collect_models([str(zoo)]), list(targets), out, tool_versions(resolve_backends(targets)))


def test_fingerprint_follows_model_bytes_spec_and_target(tmp_path):
    zoo = _copy_samples(tmp_path / "zoo", names=(PASSING,))
    first = {i.key: i.fingerprint for i in _items(zoo, tmp_path / "out")}
    assert first == {i.key: i.fingerprint for i in _items(zoo, tmp_path / "out")}
    assert len(set(first.values())) == 2  # fp32 and fp16 differ
    spec = zoo / f"{PASSING}.spec.json"
    spec.write_text(spec.read_text() + "\n")
    after_spec = {i.key: i.fingerprint for i in _items(zoo, tmp_path / "out")}
    assert all(after_spec[k] != first[k] for k in first)
    renamed = [Target("fp32", precision="fp32", profile="opt")]
    assert _items(zoo, tmp_path / "out", renamed)[0].fingerprint != after_spec[(PASSING, "fp32")]


def test_a_record_is_reused_only_for_the_same_fingerprint(tmp_path):
    item = _items(_copy_samples(tmp_path / "zoo", names=(PASSING,)), tmp_path / "out")[0]
    assert load_record(item) is None
    item.out_dir.mkdir(parents=True)
    (item.out_dir / "item.json").write_text(json.dumps({"fingerprint": "other", "status": "passed"}))
    assert load_record(item) is None
    (item.out_dir / "item.json").write_text(json.dumps({"fingerprint": item.fingerprint, "status": "passed"}))
    assert load_record(item)["status"] == "passed"


def test_timeouts_are_tried_again_under_a_longer_limit():
    timed_out = {"status": "timeout", "timeout_s": 10}
    assert _reusable(timed_out, 10) and _reusable(timed_out, 5)
    assert not _reusable(timed_out, 20) and not _reusable(timed_out, None)
    assert _reusable({"status": "failed", "timeout_s": None}, 1) and not _reusable(None, None)


def test_min_success_rate_parsing():
    assert parse_rate("0.9") == 0.9 and parse_rate("75%") == 0.75
    for bad in ("1.5", "x", "-10%"):
        with pytest.raises(Exception):
            parse_rate(bad)


def test_gpus_are_requested_only_where_a_cluster_has_them_and_tensorrt_builds():
    entry = ModelEntry("m", Path("/m.onnx"), None)
    trt = Item(entry, Target("fp32"), Path("/o"), "f", "tensorrt")
    static = Item(entry, Target("s", backend="static"), Path("/o"), "f", "static")
    assert gpu_request(trt, 2, 0.5) == 0.5 and gpu_request(trt, 0, 1) == 0
    assert gpu_request(static, 2, 1) == 0


def test_ray_missing_is_a_user_error_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as if not installed
    out = tmp_path / "out"
    assert main(["batch", str(SAMPLES / f"{PASSING}.onnx"), "-o", str(out), "--ray", "local"]) == 2
    assert "pip install 'onnx-surgery[ray]'" in capsys.readouterr().err and not out.exists()


def test_progress_draws_a_bar_on_a_terminal_only(capsys, monkeypatch):
    from converter.cli.batch import BatchProgress

    class Terminal:
        text = ""

        def isatty(self):
            return True

        def write(self, s):
            Terminal.text += s

        def flush(self):
            pass

    plain = BatchProgress(2)
    plain.item(_record("m", "fp32", "crashed"))
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys, "stderr", Terminal())
    shown = BatchProgress(2, done=1)
    shown.item({**_record("m", "fp16", "passed"), "equal": "passed", "builds": True, "validated": "skipped"})
    shown.close()
    assert "[" + "#" * 30 + "] 2/2 items, 0 not passed" in Terminal.text and Terminal.text.endswith("\r\033[K")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[2/2] passed  m fp16") and "engine built, engine run skipped" in lines[0]


# ---- summary -------------------------------------------------------------------------------------------------

def _record(model: str, target: str, status: str, ops=(), seconds=1.0) -> dict:
    blockers = [{"kind": "unsupported-op", "status": "unsupported", "ops": [op], "count": 1, "nodes": [f"/{op}"],
                 "remedies": [f"fix {op}"]} for op in ops]
    return {"model": model, "target": target, "status": status, "ran": status in ("passed", "failed"),
            "blockers": blockers, "seconds": seconds}


TOOLS = {"onnx-surgery": "0.1.0", "backends": {"auto": {"name": "tensorrt-rtx", "version": "1.7"}}}


def test_summary_rates_blockers_and_sorting():
    records = [_record("b", "fp16", "failed", ["Unique"]), _record("a", "fp32", "passed"),
               _record("b", "fp32", "failed", ["Unique", "TopK"]), _record("a", "fp16", "crashed")]
    s = build_summary(records, list(DEFAULT_TARGETS), TOOLS, {"executor": "local"})
    assert [(r["model"], r["target"]) for r in s["items"]] == [("a", "fp16"), ("a", "fp32"), ("b", "fp16"), ("b", "fp32")]
    assert s["targets"]["fp32"]["success_rate"] == 0.5 and s["targets"]["fp16"]["success_rate"] == 0.0
    assert s["totals"]["passed"] == 1 and s["totals"]["crashed"] == 1 and s["ok"] is False
    assert [(b["op"], b["items"], b["targets"]) for b in s["blockers_by_op"]] == [("TopK", 1, ["fp32"]),
                                                                                  ("Unique", 2, ["fp16", "fp32"])]
    assert s["blockers_by_op"][1]["remedies"] == ["fix Unique"]
    assert build_summary(records, list(DEFAULT_TARGETS), TOOLS, {}, min_success=0.25)["ok"] is True
    assert build_summary(list(reversed(records)), list(DEFAULT_TARGETS), TOOLS, {}) == \
        build_summary(records, list(DEFAULT_TARGETS), TOOLS, {})


def test_comparison_names_what_got_better_and_worse():
    old = build_summary([_record("a", "fp32", "failed", ["Unique"]), _record("b", "fp32", "passed"),
                         _record("c", "fp32", "error"), _record("gone", "fp32", "passed")],
                        [DEFAULT_TARGETS[0]], TOOLS, {})
    new_tools = {**TOOLS, "backends": {"auto": {"name": "tensorrt-rtx", "version": "1.8"}}}
    new = build_summary([_record("a", "fp32", "passed"), _record("b", "fp32", "failed", ["TopK"]),
                         _record("c", "fp32", "timeout"), _record("new", "fp32", "passed")],
                        [DEFAULT_TARGETS[0]], new_tools, {}, previous=old)
    c = new["comparison"]
    assert c == compare(old, new)
    assert c["tools_changed"] == {"backend auto": ["tensorrt-rtx 1.7", "tensorrt-rtx 1.8"]}
    assert [(r["model"], r["before"], r["after"]) for r in c["better"]] == [("a", "failed", "passed")]
    assert [(r["model"], r["after"]) for r in c["worse"]] == [("b", "failed")]
    assert [(r["model"], r["after"]) for r in c["changed"]] == [("c", "timeout")]
    assert c["new_items"] == [{"model": "new", "target": "fp32"}] and c["gone_items"] == [{"model": "gone", "target": "fp32"}]
    assert c["blockers_fixed"] == [{"model": "a", "target": "fp32", "op": "Unique"}]
    assert c["blockers_new"] == [{"model": "b", "target": "fp32", "op": "TopK"}]
    assert c["success_rate"]["fp32"] == {"before": 0.5, "after": 0.5}
    doc = parse_html(summary_html(new))
    assert [h.text() for h in headings(doc)][0].startswith("Batch: 2 of 4 items passed")
    worse = doc.find_all("table", "worse")[0]
    assert [[td.text() for td in row.children if td.tag == "td"] for row in data_rows(worse)] == [["b", "fp32", "passed", "failed"]]


def test_load_summary_refuses_other_json(tmp_path):
    path = tmp_path / "s.json"
    path.write_text("{}")
    with pytest.raises(UserInputError, match="not a batch summary"):
        load_summary(path)


# ---- isolation: crash and timeout ----------------------------------------------------------------------------

def _children_of(pid: int) -> set[int]:
    try:
        return {int(c) for t in os.listdir(f"/proc/{pid}/task")
                for c in Path(f"/proc/{pid}/task/{t}/children").read_text().split()}
    except OSError:
        return set()


def _writes_a_batch_log(pid: int) -> bool:
    """An item process (not the fork server's warm-up): its stdout is its item's batch.log."""
    try:
        return os.readlink(f"/proc/{pid}/fd/1").endswith("batch.log")
    except OSError:
        return False


@pytest.mark.trt
def test_a_crashing_item_takes_down_only_itself(tmp_path):
    zoo = _copy_samples(tmp_path / "zoo")
    items = [i for i in _items(zoo, tmp_path / "out") if i.target.name == "fp32"]
    records: dict = {}
    killed: list[int] = []

    def kill_first_item() -> None:  # SIGSEGV the first item process the fork server starts, as a TensorRT crash would
        from multiprocessing import forkserver

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            server = forkserver._forkserver._forkserver_pid
            kids = {k for k in (_children_of(server) if server else set()) if _writes_a_batch_log(k)}
            if kids:
                victim = min(kids)
                os.kill(victim, signal.SIGSEGV)
                killed.append(victim)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_first_item)
    killer.start()
    LocalExecutor(1, None).run(items, lambda item, rec: records.__setitem__(item.model.name, rec))
    killer.join()
    assert killed
    crashed = [r for r in records.values() if r["status"] == "crashed"]
    assert len(crashed) == 1 and "SIGSEGV" in crashed[0]["error"] and crashed[0]["ran"] is False
    other = next(r for r in records.values() if r["status"] != "crashed")
    assert other["ran"] is True and other["status"] in ("passed", "failed")
    assert json.loads((tmp_path / "out" / crashed[0]["model"] / "fp32" / "item.json").read_text())["status"] == "crashed"


@pytest.mark.trt
def test_timeout_kills_the_item_and_is_recorded(tmp_path, capsys):
    zoo = _copy_samples(tmp_path / "zoo", names=(PASSING,))
    out = tmp_path / "out"
    assert main(["batch", str(zoo), "-o", str(out), "--jobs", "2", "--timeout", "0.2"]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert [r["status"] for r in summary["items"]] == ["timeout", "timeout"]
    assert all("timed out after 0.2 s" in r["error"] and r["seconds"] < 30 for r in summary["items"])
    assert "timeout" in capsys.readouterr().out


@pytest.mark.trt
def test_two_stages_give_the_record_one_stage_gives(tmp_path):
    from converter.batch.worker import execute_item

    zoo = _copy_samples(tmp_path / "zoo", names=(PASSING,))
    item = next(i for i in _items(zoo, tmp_path / "out") if i.target.name == "fp16").to_json()
    whole = execute_item(item, None)
    partial = execute_item(item, None, stage="optimize")
    assert partial["partial"] == "optimize" and partial["optimize"]["nodes_after"] == whole["nodes"][1]
    assert not (Path(item["out_dir"]) / "item.json").exists()  # a partial result is no record
    split = execute_item(item, None, stage="build", optimized=partial)
    assert split["optimize_seconds"] == partial["seconds"] and split["seconds"] >= partial["seconds"]
    assert split["cpu_s"] > partial["cpu_s"]
    volatile = {"seconds", "cpu_s", "optimize_seconds"}
    assert {k: v for k, v in split.items() if k not in volatile} == {k: v for k, v in whole.items() if k not in volatile}
    assert json.loads((Path(item["out_dir"]) / "item.json").read_text()) == split
    stopped = execute_item(item, 0.05, stage="optimize")  # a failed first stage is the item's record
    assert stopped["status"] == "timeout" and "partial" not in stopped
    assert execute_item(item, 0.05, stage="build", optimized=stopped) is stopped


# ---- end to end ----------------------------------------------------------------------------------------------

def _statuses(out: Path) -> dict:
    return {(r["model"], r["target"]): r["status"] for r in json.loads((out / "summary.json").read_text())["items"]}


EXPECTED = {(PASSING, "fp16"): "passed", (PASSING, "fp32"): "passed", (BLOCKED, "fp16"): "failed", (BLOCKED, "fp32"): "failed"}


@pytest.mark.trt
def test_batch_two_targets_summary_and_resume(tmp_path, capsys):
    zoo = _copy_samples(tmp_path / "zoo")
    out = tmp_path / "out"
    assert main(["batch", str(zoo), "-o", str(out), "--jobs", "2"]) == 1  # hostile_unique cannot pass
    printed = capsys.readouterr().out
    assert sum(line.startswith("[") for line in printed.splitlines()) == 4  # one line per finished item
    assert _statuses(out) == EXPECTED
    s = json.loads((out / "summary.json").read_text())
    assert s["targets"]["fp32"]["success_rate"] == 0.5 and s["targets"]["fp16"]["success_rate"] == 0.5
    assert s["run"]["ran"] == 4 and s["run"]["executor"] == "local" and s["run"]["jobs"] == 2
    blocker = s["blockers_by_op"][0]
    assert (blocker["op"], blocker["kind"], blocker["items"]) == ("Unique", "unsupported-op", 2) and blocker["remedies"]
    passed = next(r for r in s["items"] if r["status"] == "passed")
    assert passed["equal"] == "passed" and passed["builds"] is True
    # the engine cannot run without a GPU: an expected skip, with TensorRT's reason, not a failure
    assert passed["validated"] in ("passed", "skipped") and (passed["validated"] == "passed" or passed["validated_note"])
    for model, target in EXPECTED:
        folder = out / model / target
        assert (folder / "report.json").is_file() and (folder / "item.json").is_file() and (folder / "batch.log").is_file()
    assert (out / PASSING / "fp16" / "model.engine").is_file()
    doc = parse_html((out / "summary.html").read_text())
    assert headings(doc)[0].text().startswith("Batch: 2 of 4 items passed")
    assert "http" not in (out / "summary.html").read_text().replace("http-equiv", "")  # self-contained

    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("item.json")}
    assert main(["batch", str(zoo), "-o", str(out), "--jobs", "2", "--resume", "--min-success", "50%"]) == 0
    printed = capsys.readouterr().out
    assert "4 reused (--resume), 0 to run" in printed and not any(line.startswith("[") for line in printed.splitlines())
    assert stamps == {p: p.stat().st_mtime_ns for p in out.rglob("item.json")}
    again = json.loads((out / "summary.json").read_text())
    assert again["items"] == s["items"] and again["run"]["ran"] == 0
    assert again["comparison"]["better"] == [] and again["comparison"]["worse"] == []  # compared with the last summary


@pytest.mark.trt
def test_a_killed_batch_resumes_where_it_stopped(tmp_path):
    zoo = _copy_samples(tmp_path / "zoo")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "converter.cli", "batch", str(zoo), "-o", str(out), "--jobs", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(out.rglob("item.json")) and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.parent for p in out.rglob("item.json")}
    assert 1 <= len(finished) < 4 and not (out / "summary.json").exists()
    done = subprocess.run(cmd + ["--resume"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert f"{len(finished)} reused (--resume), {4 - len(finished)} to run" in done.stdout
    assert _statuses(out) == EXPECTED
    assert json.loads((out / "summary.json").read_text())["run"]["ran"] == 4 - len(finished)


@pytest.mark.trt
def test_batch_with_ray_local_gives_the_same_verdicts(tmp_path, capsys):
    pytest.importorskip("ray", reason="ray is not installed (pip install '.[ray]')")
    zoo = _copy_samples(tmp_path / "zoo")
    out = tmp_path / "out"
    assert main(["batch", str(zoo), "-o", str(out), "--ray", "local", "--jobs", "2"]) == 1
    assert _statuses(out) == EXPECTED
    run = json.loads((out / "summary.json").read_text())["run"]
    assert run["executor"] == "ray" and run["address"] == "local" and run["cluster"]["CPU"] == 2 and run["ran"] == 4
    items = json.loads((out / "summary.json").read_text())["items"]
    assert all(r["optimize_seconds"] > 0 for r in items)  # two tasks per item: optimize, then the rest
    capsys.readouterr()
    assert main(["batch", str(zoo), "-o", str(out), "--ray", "local", "--jobs", "2", "--resume"]) == 1
    assert "4 reused (--resume), 0 to run" in capsys.readouterr().out
