"""Validation at scale: shards through the executors (local forked workers, Ray), the resumable shard
store, a parent killed with SIGKILL and resumed, failing workers retried then reported, the
authors' Monte-Carlo passes replayed, and the HTML report checked against the JSON."""
import base64
import glob
import json
import os
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

from neurocompile.cli import main as cli
from neurocompile.execute import LocalExecutor, RayExecutor, ShardError, ShardStore, Task, run_shards

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, "examples", "digits", "ckpt.pt")
PSPIKE_BI = os.path.join(ROOT, "examples", "pspikessm-digits-bi", "ckpt.pt")
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "official")
CLI = [sys.executable, "-m", "neurocompile"]


def comparable(report: dict) -> dict:
    """A report without what may differ between equivalent runs: timings, how it ran, provenance."""
    return {k: v for k, v in report.items() if k not in ("seconds", "execution", "lava_shards_reused", "provenance")}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    out = {}
    for name, ckpt in (("digits", DIGITS), ("bi", PSPIKE_BI)):
        path = tmp_path_factory.mktemp(name) / f"{name}.loihi2"
        assert cli(["export", ckpt, "-o", str(path)]) == 0
        out[name] = str(path)
    return out


def _validate(tmp_path, ckpt, art, tag, *extra) -> dict:
    out = tmp_path / f"{tag}.json"
    code = cli(["validate", ckpt, art, "--data", "digits", "--max-samples", "24", "--batch-size", "8",
                "--lava-samples", "6", "--lava-shard-samples", "2", "--json", str(out), *extra])
    assert code == 0
    return json.loads(out.read_text())


# ------------------------------------------------------------------------------ executors, store
def _dies_once(marker, progress=None):
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(3)
    return {"value": np.arange(3)}


def _always_dies(progress=None):
    os.kill(os.getpid(), signal.SIGKILL)


def _sleeps(progress=None):
    time.sleep(3600)


def _raises(progress=None):
    raise ValueError("broken shard input")


def _square(k, progress=None):
    return {"k": np.array([k * k])}


def test_every_progress_step_of_a_worker_is_reported_even_when_they_arrive_together():
    """Steps that reached the progress pipe in one read were coalesced into the last one: under load
    test_fixed_pt_is_bit_exact_with_the_arith_oracle saw (2, n) without (1, n) and failed now and then."""
    from worker_tasks import steps
    for _ in range(3):
        seen = []
        out = LocalExecutor(1, 120, retries=0).run([Task("s", steps, (50,), 50)], progress=lambda d, t: seen.append(d))
        assert int(out[0]["n"][0]) == 50 and seen == list(range(1, 51)), seen


def test_local_executor_retries_a_dead_worker_and_reports_a_shard_that_keeps_failing(tmp_path):
    marker = str(tmp_path / "died")
    out = LocalExecutor(2, timeout_s=60, retries=1).run([Task("once", _dies_once, (marker,)), Task("sq", _square, (4,))])
    assert out[0]["value"].tolist() == [0, 1, 2] and out[1]["k"].tolist() == [16]
    with pytest.raises(ShardError, match=r"shard killed failed 3 times; last: its worker exited with status -9"):
        LocalExecutor(1, timeout_s=60, retries=2).run([Task("killed", _always_dies)])
    t0 = time.monotonic()
    with pytest.raises(ShardError, match="timeout") as err:
        LocalExecutor(1, timeout_s=2, retries=1).run([Task("hangs", _sleeps)])
    assert err.value.reason == "timeout" and time.monotonic() - t0 < 20
    with pytest.raises(ShardError, match="ValueError: broken shard input"):
        LocalExecutor(1, timeout_s=60, retries=0).run([Task("raises", _raises)])


def test_results_come_back_in_task_order_whatever_finishes_first():
    tasks = [Task(f"k{k}", _square, (k,)) for k in range(7)]
    for workers in (1, 3):
        assert [r["k"][0] for r in LocalExecutor(workers, 60).run(tasks)] == [k * k for k in range(7)]


def test_store_reads_back_only_whole_verified_shards(tmp_path):
    store = ShardStore(str(tmp_path), {"artifact": "a", "options": {"seed": 1}})
    tasks = [Task(f"k{k}", _square, (k,)) for k in range(3)]
    run_shards(tasks, None, store)
    again = ShardStore(str(tmp_path), {"artifact": "a", "options": {"seed": 1}})
    assert [r["k"][0] for r in run_shards(tasks, None, again)] == [0, 1, 4] and again.reused == 3
    other = ShardStore(str(tmp_path), {"artifact": "a", "options": {"seed": 2}})     # other options: nothing reused
    run_shards(tasks, None, other)
    assert other.reused == 0
    files = sorted(glob.glob(os.path.join(again.folder, "*.npz")))
    assert len(files) == 3 and not glob.glob(os.path.join(again.folder, ".tmp-*"))
    blob = bytearray(open(files[0], "rb").read())
    blob[len(blob) // 2] ^= 0xFF                                     # a flipped byte: does not verify
    open(files[0], "wb").write(bytes(blob))
    open(files[1], "wb").write(open(files[1], "rb").read()[:100])   # half a file
    third = ShardStore(str(tmp_path), {"artifact": "a", "options": {"seed": 1}})
    assert [r["k"][0] for r in run_shards(tasks, None, third)] == [0, 1, 4] and third.reused == 1


def test_ray_without_the_extra_is_one_line(monkeypatch):
    import builtins
    real = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(Exception, match=r"optional extra \(ray: pip install 'neurocompile\[ray\]'\)"):
        RayExecutor(workers=1).run([Task("k", _square, (1,))])


# ---------------------------------------------------------------------- validate through executors
@pytest.mark.lava
def test_workers_give_the_serial_report_and_a_rerun_reuses_every_shard(artifacts, tmp_path):
    serial = _validate(tmp_path, DIGITS, artifacts["digits"], "serial")
    work = tmp_path / "work"
    work.mkdir()
    two = _validate(tmp_path, DIGITS, artifacts["digits"], "two", "--workers", "2", "--work-dir", str(work))
    assert serial["lava_bit_exact"] is True and serial["lava_samples"] == 6 and serial["lava_shards"] == 3
    assert comparable(two) == comparable(serial) and two["lava_shards_reused"] == 0
    again = _validate(tmp_path, DIGITS, artifacts["digits"], "again", "--workers", "2", "--work-dir", str(work))
    assert comparable(again) == comparable(serial) and again["lava_shards_reused"] == 3
    assert again["execution"] == {"executor": "local", "workers": 2, "lava_shard_samples": 2}
    prov = again["provenance"]
    assert prov["command_line"].startswith("neurocompile validate ") and "--workers 2" in prov["command_line"]
    assert prov["torch"] == torch.__version__ and prov["lava"] and len(prov["artifact_sha256"]) == 64


@pytest.mark.lava
def test_a_parent_killed_with_sigkill_leaves_nothing_running_and_resumes(artifacts, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    serial = _validate(tmp_path, DIGITS, artifacts["digits"], "serial")
    cmd = CLI + ["validate", DIGITS, artifacts["digits"], "--data", "digits", "--max-samples", "24", "--batch-size", "8",
                 "--lava-samples", "6", "--lava-shard-samples", "2", "--workers", "2", "--work-dir", str(work)]
    shm_before = set(os.listdir("/dev/shm"))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    lava_files = lambda: [f for f in glob.glob(str(work / "shards" / "*" / "*.npz"))]
    deadline = time.monotonic() + 300
    while len(lava_files()) < 4 and proc.poll() is None and time.monotonic() < deadline:   # 3 float shards + 1 Lava
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.kill()                                                    # SIGKILL: no clean-up code runs in the parent
    proc.wait()
    time.sleep(2)
    alive = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert alive == [], "workers or Lava processes outlived their killed parent"
    out = tmp_path / "resumed.json"
    assert cli(["validate", DIGITS, artifacts["digits"], "--data", "digits", "--max-samples", "24", "--batch-size", "8",
                "--lava-samples", "6", "--lava-shard-samples", "2", "--workers", "2", "--work-dir", str(work),
                "--json", str(out)]) == 0
    resumed = json.loads(out.read_text())
    assert comparable(resumed) == comparable(serial) and resumed["lava_shards_reused"] >= 1
    assert not glob.glob(str(work / "scratch" / "shard-*"))       # the killed run's scratch cleaned
    from lava_faults import leaked_lava_segments
    assert leaked_lava_segments(shm_before) == set()


@pytest.mark.lava
def test_pspikessm_report_is_the_same_for_any_workers_and_on_ray(artifacts, tmp_path):
    common = ("--mc-passes", "2", "--seed", "5")
    serial = _validate(tmp_path, PSPIKE_BI, artifacts["bi"], "serial", *common)
    two = _validate(tmp_path, PSPIKE_BI, artifacts["bi"], "two", *common, "--workers", "2")
    assert serial["lava_bit_exact"] is True and comparable(two) == comparable(serial)
    assert len(serial["accuracy"]["float_per_pass"]) == 2 and len(serial["accuracy"]["integer_per_pass"]) == 2
    for row in serial["spike_nodes"]:
        assert 0 <= row["probability_error_mean"] <= row["probability_error_max"] <= 1
    import ray  # noqa: F401  (the 3.10 suite installs the 'ray' extra: this test must run, never skip)
    ray = _validate(tmp_path, PSPIKE_BI, artifacts["bi"], "ray", *common, "--ray", "--workers", "2")
    assert comparable(ray) == comparable(serial) and ray["execution"]["executor"] == "ray"


# --------------------------------------------------------------------- the authors' passes replayed
@pytest.mark.parametrize("fixture", ["pspikessm_bidirectional_postnorm_bn", "pspikessm_unidirectional_prenorm_bn"])
def test_mc_rng_authors_replays_their_pass_exactly(fixture, tmp_path):
    """Their fixture's uniforms were drawn by torch seed 7 in their storage order; our float model
    seeded 7 draws the very same numbers and gives their logits (float32 vs their float64) and
    predictions; validate's --mc-rng authors pass 7 predicts what their code predicted."""
    from neurocompile.artifact import load_program
    from neurocompile.models.checkpoint import build_model, load_checkpoint
    from neurocompile.validate import authors_float_passes
    ckpt = os.path.join(FIXTURES, fixture + ".ckpt")
    kind, cfg, sd, _ = load_checkpoint(ckpt)
    model = build_model(cfg, sd, kind).eval()
    want = np.load(os.path.join(FIXTURES, fixture + ".expected.npz"))
    expected = json.load(open(os.path.join(FIXTURES, "authors_mc_passes.json")))["fixtures"][fixture]
    x = torch.as_tensor(want["x"])
    x = x if x.dtype == torch.int64 else x.float()
    torch.manual_seed(7)
    with torch.no_grad():
        logits, rec = model(x, record=True)
    for i in range(cfg.n_layers):
        for w in (1, 2):
            assert np.array_equal(rec[f"layer{i}.u{w}"].transpose(1, 2).double().numpy(), want[f"u_layer{i}_{w}"])
    assert np.abs(logits.double().numpy() - want["logits"]).max() < 1e-6
    assert cli(["export", ckpt, "-o", str(tmp_path / "m.loihi2")]) == 0
    program = load_program(str(tmp_path / "m.loihi2"))
    out = authors_float_passes(model, program, want["x"], "cpu", seed=7, passes=1)
    assert out["pred_float"][0].tolist() == expected["predictions_seed_7"]
    labels = np.asarray(expected["labels"])
    assert float((out["pred_float"][0] == labels).mean()) == expected["float_accuracy_seed_7"]


# ----------------------------------------------------------------------------------- HTML report
class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.values, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(a.get("src", ""))
        if "data-key" in a and "data-value" in a:
            self.values.append((a["data-key"], a["data-value"]))


def _lookup(report, path):
    node = report
    for part in json.loads(path):
        node = node[part]
    return node


@pytest.mark.lava
def test_html_report_is_self_contained_and_says_what_the_json_says(artifacts, tmp_path):
    html_path, json_path = tmp_path / "r.html", tmp_path / "r.json"
    assert cli(["validate", PSPIKE_BI, artifacts["bi"], "--data", "digits", "--max-samples", "16", "--lava-samples", "2",
                "--mc-passes", "2", "--json", str(json_path), "--html", str(html_path)]) == 0
    text, report = html_path.read_text(), json.loads(json_path.read_text())
    page = _Page()
    page.feed(text)
    assert len(page.images) == 3                                       # passes, per node, raster
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "script" not in page.tags and "link" not in page.tags and "http://" not in text and "https://" not in text
    keys = {tuple(json.loads(k)) for k, _ in page.values}
    for want in (("accuracy", "float"), ("accuracy", "integer"), ("accuracy", "lava"), ("lava_bit_exact",),
                 ("lava_samples",), ("accuracy", "float_ci", 0), ("spike_nodes", 0, "probability_error_max"),
                 ("lava_shards_reused",), ("plan", "cores"), ("energy", "pJ_per_mac")):
        assert want in keys, want
    for key, value in page.values:
        assert value == repr(_lookup(report, key)), key
    assert report["provenance"]["command_line"] in text.replace("&#x27;", "'").replace("&quot;", '"')


def test_seeds_outside_the_range_and_authors_batches_too_big_are_one_line_errors(artifacts, capsys):
    from neurocompile.models.checkpoint import build_model, load_checkpoint
    from neurocompile.validate import check_authors_fits
    with pytest.raises(SystemExit) as exited:          # refused by the argument parser, before any work
        cli(["validate", PSPIKE_BI, artifacts["bi"], "--data", "digits", "--max-samples", "4", "--lava-samples", "0",
             "--seed", str(2 ** 63)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 2 and len(err) == 1
    assert err[0].startswith("neurocompile: error: argument --seed: must be in 0..9223372036854775807, got "
                             "9223372036854775808")
    code = cli(["validate", DIGITS, artifacts["digits"], "--data", "digits", "--mc-rng", "authors"])
    assert code == 2 and "--mc-rng applies to models with sampled spikes" in capsys.readouterr().err
    kind, cfg, sd, _ = load_checkpoint(PSPIKE_BI)
    with pytest.raises(ValueError, match=r"--mc-rng authors runs all 1000000000 samples as one batch: about [0-9.]+ GiB"):
        check_authors_fits(build_model(cfg, sd, kind), 10 ** 9)
    check_authors_fits(build_model(cfg, sd, kind), 360)              # the digits split fits


def test_mc_rng_authors_float_passes_ignore_batching_and_workers(artifacts, tmp_path):
    """--mc-rng authors draws pass k from torch.manual_seed(seed + k) over the whole split at once:
    the float per-pass accuracies do not depend on --batch-size or on the workers."""
    runs = []
    for tag, extra in (("b4", ["--batch-size", "4"]), ("b16w2", ["--batch-size", "16", "--workers", "2"])):
        out = tmp_path / f"{tag}.json"
        assert cli(["validate", PSPIKE_BI, artifacts["bi"], "--data", "digits", "--max-samples", "16", "--lava-samples",
                    "0", "--mc-passes", "2", "--seed", "3", "--mc-rng", "authors", "--activity-samples", "0",
                    "--json", str(out), *extra]) == 0
        runs.append(json.loads(out.read_text()))
    assert runs[0]["mc_rng"] == "authors" and len(runs[0]["accuracy"]["float_per_pass"]) == 2
    assert runs[0]["accuracy"]["float_per_pass"] == runs[1]["accuracy"]["float_per_pass"]
    assert runs[0]["accuracy"]["integer_per_pass"] == runs[1]["accuracy"]["integer_per_pass"]
