"""The command line for layer searches and for rediscovery: real Ray, SQLite, training."""

import importlib.util
import json

import pytest
import torch
from click.testing import CliRunner

from evoprog.programs.known import get_known
from evoprog.programs.ops import LION_SPACE_OPS
from evoprog.programs.program import parse_program
from evoprog.programs.space import OptimizerSpace
from evoprog.search.cli import cli
from evoprog.store import Store


def invoke(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


@pytest.fixture(scope="module")
def layer_run(tmp_path_factory, ray_local):
    db = tmp_path_factory.mktemp("layers") / "layers.db"
    result = invoke("search", "layer", "--budget", "6", "--population", "3",
                    "--tournament", "2", "--parallel", "2", "--db", db)
    assert result.exit_code == 0, result.output
    return db, result


def test_layer_search_records_per_architecture_scores(layer_run):
    db, result = layer_run
    assert result.output.startswith("run 1 (layer, budget 6")
    runs = json.loads(invoke("runs", "--json", "--db", db).output)
    assert runs[0]["family"] == "layer" and runs[0]["individuals"] == 6
    top = json.loads(invoke("top", "1", "--json", "--db", db).output)
    assert top and all(set(row["scores"]) == {"resnet", "mobilenet", "plain"} for row in top)
    assert any(row["pareto_front"] for row in top)
    seed = json.loads(invoke("show", "1", "--json", "--db", db).output)
    assert seed["birth"] == 0 and seed["recognized"]["family"] == "bn_relu"  # as itself
    assert set(seed["metrics"]["scores"]) == {"resnet", "mobilenet", "plain"}
    assert seed["fitness"] == pytest.approx(sum(seed["metrics"]["scores"].values()) / 3)


def test_evaluate_a_layer_as_the_search_did(layer_run, tmp_path):
    db, _ = layer_run
    seed = json.loads(invoke("show", "1", "--json", "--db", db).output)
    layer = tmp_path / "layer.txt"
    layer.write_text(seed["text"])
    result = invoke("evaluate", "1", layer, "--family", "layer", "--json", "--db", db)
    assert result.exit_code == 0, result.output
    by_id, from_file = json.loads(result.stdout)
    assert by_id["family"] == "layer" and by_id["fitness"] == seed["fitness"]
    scores = by_id["per_task"]["digits_layers"]["scores"]
    assert by_id["fitness"] == pytest.approx(sum(scores.values()) / 3)
    assert from_file["fitness"] == seed["fitness"]
    assert "resnet" in invoke("evaluate", "1", "--db", db).output


def test_layer_show_export_and_plot(layer_run, tmp_path):
    db, _ = layer_run
    shown = invoke("show", "1", "--db", db)
    assert shown.exit_code == 0 and "batch_mean(x)" in shown.output
    assert "BN-ReLU" in shown.output
    out = tmp_path / "layer.py"
    assert invoke("export", "1", "-o", out, "--name", "Found", "--db", db).exit_code == 0
    spec = importlib.util.spec_from_file_location("found_layer", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    layer = module.Found(8)
    y = layer(torch.randn(4, 8, 3, 3))
    assert y.shape == (4, 8, 3, 3) and (y >= 0).all()  # BN-ReLU ends in a ReLU
    image = tmp_path / "layers.png"
    assert invoke("plot", "1", "-o", image, "--db", db).exit_code == 0
    assert image.stat().st_size > 10_000


def test_analyze_and_export_layer_text(tmp_path):
    s0 = str(get_known("evonorm_s0").program())
    result = invoke("analyze", "-", "--family", "layer", "--json", input=s0)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["recognized"]["family"] == "evonorm_s0"
    bad = invoke("analyze", "-", "--family", "layer", input="y = batch_mean(q)\n")
    assert bad.exit_code != 0 and "Traceback" not in bad.output
    assert "'q'" in bad.output
    path = tmp_path / "s0.txt"
    path.write_text(s0)
    out = tmp_path / "s0.py"
    result = invoke("export", path, "--family", "layer", "-o", out)
    assert result.exit_code == 0 and "class EvolvedLayer(nn.Module)" in out.read_text()
    known = json.loads(invoke("known", "--json").output)
    assert {"evonorm_s0", "evonorm_b0", "bn_relu", "lion"} <= {k["name"] for k in known}


def test_search_layer_rejects_optimizer_tasks(tmp_path):
    result = invoke("search", "layer", "--tasks", "digits_mlp", "--db", tmp_path / "x.db")
    assert result.exit_code == 2 and "scores optimizer programs" in result.output
    assert not (tmp_path / "x.db").exists()


def _is_lion(text: str) -> bool:
    recognized = OptimizerSpace.recognize(parse_program(text))
    return recognized is not None and recognized.name == "lion"


def test_rediscover_end_to_end_on_a_tiny_budget(tmp_path, ray_local):
    report_path, plot_path = tmp_path / "report.json", tmp_path / "curve.png"
    result = invoke("rediscover", "lion", "--seeds", "1", "--budget", "5", "--population",
                    "3", "--tournament", "2", "--parallel", "2", "--tasks", "digits_mlp",
                    "--ops", "lion", "--neutral", "--compare-tier", "none", "--transfer-tiers",
                    "A", "--report", report_path, "--plot", plot_path, "--quiet", "--db",
                    tmp_path / "r.db")
    assert result.exit_code == 0, result.output
    assert "rediscovering lion" in result.output
    report = json.loads(report_path.read_text())
    assert [(r["strategy"], r["seed"]) for r in report["runs"]] == [("evolution", 0),
                                                                     ("random", 0)]
    with Store.open(tmp_path / "r.db", create=False) as store:
        for run in report["runs"]:
            assert run["individuals"] == 5 and run["generated"] >= 5 and run["curve"]
            # The population (3) is smaller than the report's top 10: the run found Lion
            # if and only if any program it scored is one.
            lions = [row["id"] for row in store.individuals(run["run_id"])
                     if row["status"] == "ok" and _is_lion(row["text"])]
            assert run["found"] == bool(lions)
            assert run["individual_id"] == (lions[0] if lions else None)
    programs = [row["program"] for row in report["transfer"]]
    assert programs[1:] == ["adamw_paper", "adamw", "lion"]
    # The first row names the best program and whether evolution improved on the start.
    kind, candidate = programs[0].removesuffix(")").split(" (individual ")
    shown = json.loads(invoke("show", candidate, "--json", "--db", tmp_path / "r.db").output)
    assert kind == ("evolved" if shown["parent_id"] is not None else "start, unbeaten")
    assert report["transfer"][1]["digits_mlp@A"] is not None  # the references train
    # digits_mlp is the held-out task, but this study searched on it: the report says so
    assert report["config"]["transfer_tasks_searched"] == ["digits_mlp"]
    assert "note: these runs searched on digits_mlp too, so its columns are not held out" \
        in " ".join(result.output.split())
    assert plot_path.stat().st_size > 10_000
    runs = json.loads(invoke("runs", "--json", "--db", tmp_path / "r.db").output)
    assert [r["config"]["strategy"] for r in runs] == ["evolution", "random"]
    assert all(r["config"]["ops"] == list(LION_SPACE_OPS) for r in runs)
    assert [r["config"]["neutral"] for r in runs] == [True, False]  # random has no parents
    assert len(report["config"]["ops"]) == 45 and report["config"]["tier"] == "A"
    assert report["config"]["neutral"] is True
    table = invoke("runs", "--db", tmp_path / "r.db").output
    assert table.count("ops: lion") == 2 and table.count("random search") == 1
    assert table.count("neutral children") == 1
    # The report rebuilds from the recorded runs alone, with no search.
    rebuilt_path = tmp_path / "rebuilt.json"
    rebuilt = invoke("rediscover", "lion", "--runs", "1,2", "--compare-tier", "none",
                     "--transfer-tiers", "none", "--report", rebuilt_path, "--db",
                     tmp_path / "r.db")
    assert rebuilt.exit_code == 0, rebuilt.output
    again = json.loads(rebuilt_path.read_text())
    assert again["config"]["runs"] == [1, 2] and again["transfer"] == []
    for before, after in zip(report["runs"], again["runs"], strict=True):
        for key in ("run_id", "strategy", "found", "generated", "evaluated", "curve"):
            assert after[key] == before[key], key
    unknown = invoke("rediscover", "lion", "--runs", "7", "--db", tmp_path / "r.db")
    assert unknown.exit_code == 1 and "7" in unknown.output
    assert "Traceback" not in unknown.output
    wrong = invoke("rediscover", "evonorm", "--runs", "1", "--db", tmp_path / "r.db")
    assert wrong.exit_code == 1 and "not layer programs" in wrong.output
    bad = invoke("rediscover", "lion", "--runs", "one", "--db", tmp_path / "r.db")
    assert bad.exit_code == 1 and "--runs takes run ids" in bad.output
    no_op = invoke("rediscover", "lion", "--ops", "lion,nope", "--db", tmp_path / "r.db")
    assert no_op.exit_code == 2 and "'nope' is not an op" in no_op.output
