"""The analysis commands on a small database filled directly through Store."""

import json

import pytest
from click.testing import CliRunner

from evoprog.programs.known import KNOWN
from evoprog.programs.program import format_program, parse_program
from evoprog.programs.space import OptimizerSpace as S
from evoprog.search.cli import cli
from evoprog.store import Store

PROGRAM_4 = ("m = interp(g, v, 0.899)\nm2 = m * m\nv = interp(g, m, 1.109)\n"
             "abs_m = sqrt(m2)\nupdate = m / abs_m\nwd = w * 0.4602\nupdate = update + wd\n"
             "lr = lr * 0.0002\nm = cosh(update)\nupdate = update * lr\n")


def invoke(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("analysis") / "runs.db"
    with Store.open(path) as store:
        run = store.create_run("optimizer", 0, 40, {"population": 5, "family": "optimizer"},
                               "local")
        programs = [S.seed(), parse_program(KNOWN["signum"].template.replace(
                        "beta", "0.8").replace("lr", "0.01") + "\nt0 = cosh(w)"),
                    parse_program(PROGRAM_4), KNOWN["lion"].program()]
        parent = None
        for birth in range(40):
            program = programs[birth % len(programs)] if birth < 8 else programs[birth % 2]
            h = S.hash(program)
            store.add_program(h, "optimizer", format_program(program),
                              format_program(S.prune(program)))
            rejected = birth % 7 == 3
            parent = store.add_individual(
                run, birth, h, parent, None if birth == 0 else "insert: line 1",
                "rejected" if rejected else "ok", "diverged" if rejected else None,
                None if rejected else 0.5 + 0.01 * birth - 0.2 * (birth % 3), {}, 0.1,
                cache_hit=birth >= 4)
    return path


def test_analyze_recognizes_program_4_from_stdin():
    result = invoke("analyze", "-", "--json", input=PROGRAM_4)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert "cosh" not in data["pruned"]
    assert "sign(0.101*g + 0.899*v_{t-1})" in data["simplified"]
    assert data["recognized"]["family"] == "lion"
    assert data["recognized"]["constants"]["beta2"] == pytest.approx(0.996991)


def test_analyze_text_and_latex(tmp_path):
    path = tmp_path / "seed.txt"
    path.write_text(S.seed_text)
    result = invoke("analyze", path, "--latex")
    assert result.exit_code == 0, result.output
    assert "m_t = 0.1*g + 0.9*m_{t-1}" in result.output
    assert r"\sqrt{0.001 g^{2} + 0.999 v_{t-1}}" in result.output
    assert "AdamWPaper (beta1=0.9, beta2=0.999, weight_decay=0.01, lr=0.001)" in result.output
    assert "cannot train" not in result.output
    unknown = invoke("analyze", "-", "--json", input="update = cosh(g)")
    assert json.loads(unknown.output)["recognized"] is None


def test_analyze_says_when_a_rule_cannot_train():
    blind = "g2 = square(g)\nupdate = g2 * lr\n"
    result = invoke("analyze", "-", input=blind)
    assert result.exit_code == 0, result.output
    assert "cannot train the update ignores the sign of g" in result.output
    data = json.loads(invoke("analyze", "-", "--json", input=blind).output)
    assert data["cannot_train"] == "the update ignores the sign of g"
    seed = json.loads(invoke("analyze", "-", "--json", input=S.seed_text).output)
    assert seed["cannot_train"] is None


def test_long_latex_stays_on_one_line(tmp_path):
    lines = ["a = g * 0.1234"]
    for i in range(12):
        lines += [f"a = a + {0.1111 * (i + 1):.4f}", "a = tanh(a)"]
    path = tmp_path / "long.txt"
    path.write_text("\n".join([*lines, "update = a * g", "update = update * lr"]))
    output = invoke("analyze", str(path), "--latex").output
    latex = output.split("latex\n", 1)[1].splitlines()[0]
    assert len(latex) > 200 and latex.count("tanh") == 12  # not wrapped at the width


def test_analyze_errors_name_the_line(tmp_path):
    result = invoke("analyze", "-", input="update = g * lr\nx = foo(g)\n")
    assert result.exit_code == 1
    assert "line 2" in result.output and "foo" in result.output
    assert "Traceback" not in result.output
    missing = invoke("analyze", tmp_path / "nope.txt")
    assert missing.exit_code == 1 and "Traceback" not in missing.output
    assert f"cannot read {tmp_path / 'nope.txt'}: No such file" in missing.output


def test_analyze_errors_cite_the_file_line_and_say_what_to_write(tmp_path):
    path = tmp_path / "rule.txt"
    path.write_text("def train(w, g, m, v, lr):\n  # momentum\n\n  m = interp(g, m, 0.9)\n"
                    "  update = -m\n  return update, m, v\n")
    result = invoke("analyze", path)
    assert result.exit_code == 1
    assert 'line 5 "update = -m": unary minus is written negative(m)' in result.output


def test_a_program_of_the_other_family_suggests_the_family_flag():
    layer = "t = v1 * x\ns = sigmoid(t)\ny = x * s\n"
    result = invoke("analyze", "-", input=layer)
    assert result.exit_code == 1
    assert ("reads x, v1 and assigns y, like a layer program" in result.output
            and result.output.rstrip().endswith("; pass --family layer"))
    assert invoke("analyze", "-", "--family", "layer", input=layer).exit_code == 0
    result = invoke("analyze", "-", "--family", "layer", input="update = sign(g)\n")
    assert result.exit_code == 1
    assert ("like an optimizer program" in result.output
            and result.output.rstrip().endswith("; pass --family optimizer"))


def test_show_prints_simplified_and_recognized(db):
    result = invoke("show", 3, "--latex", "--db", db)  # birth 2: Program 4
    assert result.exit_code == 0, result.output
    assert "simplified" in result.output and "sign(0.101*g + 0.899*v_{t-1})" in result.output
    assert "Lion (beta1=0.899, beta2=0.997" in result.output
    assert r"\operatorname{sign}" in result.output
    data = json.loads(invoke("show", 1, "--json", "--db", db).output)
    assert data["recognized"]["family"] == "adamw_paper"
    assert data["simplified"].startswith("update = ")
    assert data["cannot_train"] is None and "cannot train" not in result.output


def test_runs_reports_generation_stats(db):
    data = json.loads(invoke("runs", "--json", "--db", db).output)[0]
    assert data["generated"] == 40 and data["cache_hits"] == 36 and data["evaluated"] == 4
    assert data["rejected"] == 6 and data["rejected_by_reason"] == {"diverged": 6}
    programs = [row["program"] for row in _births(db)]
    removed = sum(len(p) - len(S.prune(p)) for p in programs)
    assert removed > 0
    assert data["redundant_fraction"] == pytest.approx(
        removed / sum(len(p) for p in programs))
    table = invoke("runs", "--db", db).output
    assert "redundant" in table and "diverged" in table


def _births(db):
    with Store.open(db, create=False) as store:
        return [{"program": parse_program(r["text"])} for r in store.individuals(1)]


def test_plot_writes_png(db, tmp_path):
    out = tmp_path / "run.png"
    result = invoke("plot", 1, "-o", out, "--db", db)
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    latest = tmp_path / "latest.png"  # no run id: the latest run, as top takes it
    assert invoke("plot", "-o", latest, "--db", db).exit_code == 0
    assert latest.read_bytes() == out.read_bytes()
    missing = invoke("plot", 9, "-o", tmp_path / "none.png", "--db", db)
    assert missing.exit_code == 1 and f"no run 9 in {db}" in missing.output
    assert not (tmp_path / "none.png").exists()


def test_top_finds_distinct_functions_past_many_copies_of_one(tmp_path):
    # 20 structurally different ways to write update = 0.01 * g, all better than two
    # other functions: top --n 3 must still list three different functions.
    path = tmp_path / "copies.db"
    copies = [f"t = g * {0.01 * 2.0 ** k!r}\nu = t * {2.0 ** -k!r}\nupdate = u * lr"
              for k in range(1, 21)]
    others = ["u = g * 0.5\nupdate = u * lr", "s = sign(g)\nupdate = s * lr"]
    with Store.open(path) as store:
        run = store.create_run("optimizer", 0, 22, {"population": 5}, "local")
        for birth, text in enumerate(copies + others):
            program = parse_program(text)
            h = S.hash(program)
            store.add_program(h, "optimizer", format_program(program),
                              format_program(S.prune(program)))
            store.add_individual(run, birth, h, None, None, "ok", None,
                                 1.0 - 0.01 * birth, {}, 0.1)
    result = invoke("top", "--n", 3, "--json", "--db", path)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["birth"] for r in rows] == [0, 20, 21]
    assert [r["recognized"] for r in rows] == [
        {"family": "sgd", "constants": {"lr": pytest.approx(0.01)}},
        {"family": "sgd", "constants": {"lr": pytest.approx(0.5)}},
        {"family": "signsgd", "constants": {"lr": pytest.approx(1.0)}}]


def test_rediscover_report_marks_an_unfinished_run(db, tmp_path):
    """A run stopped before its budget (Ctrl-C, a time limit, a killed driver) is
    reported as unfinished, with the command that finishes it."""
    copy = tmp_path / "copy.db"
    copy.write_bytes(db.read_bytes())
    with Store.open(copy, create=False) as store:
        store.set_run_status(1, "interrupted")
    report = tmp_path / "report.json"
    args = ["rediscover", "lion", "--runs", "1", "--compare-tier", "none",
            "--transfer-tiers", "none", "--db", copy]
    result = invoke(*args, "--report", report)
    assert result.exit_code == 0, result.output
    assert "1 (interrupted)" in result.output
    assert (f"run 1 is unfinished (interrupted, 40 of 200 individuals): its row covers "
            f"what it recorded. evoprog resume 1 --db {copy} finishes it.") in result.output
    assert "evolution: target family in the top 10 in" in result.output
    assert "seeds (1 of the runs unfinished)" in result.output
    assert json.loads(report.read_text())["runs"][0]["status"] == "interrupted"
    with Store.open(copy, create=False) as store:
        store.set_run_status(1, "finished")
    finished = invoke(*args)
    assert finished.exit_code == 0 and "unfinished" not in finished.output
