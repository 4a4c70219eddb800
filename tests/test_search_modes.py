"""Search options beyond the plain single-task evolution: several tasks, the funnel,
random search and random starts, Pareto selection, a time limit, and the rediscovery
report built from a run's records."""

import dataclasses
import random

import pytest

from evoprog.programs.known import get_known
from evoprog.programs.layer_space import LayerSpace
from evoprog.programs.mutation import mutate
from evoprog.programs.ops import LION_K_OPS, LION_SPACE_OPS
from evoprog.programs.program import ProgramError, format_program, parse_program
from evoprog.programs.space import OptimizerSpace
from evoprog.search.driver import Search, SearchConfig
from evoprog.search.evolution import AgingPopulation, Member, make_random
from evoprog.search.rediscover import TARGETS, analyze_run, population_replay
from evoprog.store import Store


def small(**options):
    return SearchConfig(**{"budget": 6, "population": 4, "tournament": 2, "parallel": 2,
                           **options})


def test_restarts_keep_the_seed_or_the_best_and_replay(tmp_path, ray_local, monkeypatch):
    """Every ``restart_every`` births the population is emptied but for the seed (or the
    best so far): the child made next descends from it. A stopped run resumes to the
    same individuals, and the analysis's replay holds the population the search held."""
    every, budget = 5, 13
    with Store.open(tmp_path / "r.db") as store:
        for kept in ("seed", "best"):
            config = dict(budget=budget, population=6, restart_every=every,
                          restart_from=kept)
            search = Search.start(store, small(**config))
            rows = store.individuals(search.run())
            by_id = {row["id"]: row for row in rows}
            births = [m.birth for m in search.population.members]
            *_, (_, replayed) = population_replay(rows, search.config)
            assert [row["birth"] for row in replayed] == births
            for restart in range(every, budget - 2, every):
                # parallel 2: birth restart + 2 is made as soon as the restart is applied
                parent = by_id[rows[restart + 2]["parent_id"]]
                done = [row for row in rows[:restart + 1] if row["status"] == "ok"]
                want = done[0] if kept == "seed" else max(done, key=lambda r: r["fitness"])
                assert parent["birth"] == want["birth"], (kept, restart)
            replay = dict((ind["birth"], list(pop)) for ind, pop in
                          population_replay(rows, search.config))
            assert len(replay[every + 1]) <= 2  # what was kept, then birth every + 1
    # Stopped half way, then resumed: the same run.
    with Store.open(tmp_path / "stopped.db") as store:
        stopped = Search.start(store, small(**config, max_seconds=3600))
        with monkeypatch.context() as patch:
            patch.setattr(Search, "_out_of_time", lambda self: self.progress.done >= 8)
            stopped.run()
        assert store.run(stopped.run_id)["status"] == "stopped"
        assert len(store.individuals(stopped.run_id)) < budget
        Search.resume(store, stopped.run_id).run()
        assert summary(store.individuals(stopped.run_id)) == summary(rows)


def summary(rows):
    birth_of = {row["id"]: row["birth"] for row in rows}
    return [(row["birth"], row["program_hash"], row["fitness"], birth_of.get(row["parent_id"]),
             row["mutation"]) for row in rows]


def test_config_checks_restarts():
    with pytest.raises(ValueError, match="--restart-every must be 0"):
        small(restart_every=-1).validate()
    with pytest.raises(ValueError, match="--restart-from must be one of"):
        small(restart_every=3, restart_from="worst").validate()
    with pytest.raises(ValueError, match="needs a run that starts from the seed"):
        small(restart_every=3, start="random").validate()
    small(restart_every=3, start="random", restart_from="best").validate()


def test_config_checks_tasks_against_the_family():
    with pytest.raises(ValueError, match="unknown task"):
        small(tasks=["imagenet"]).validate()
    with pytest.raises(ValueError, match="scores layer programs"):
        small(tasks=["digits_layers"]).validate()
    with pytest.raises(ValueError, match="funnel tiers"):
        small(funnel=["A"]).validate()
    with pytest.raises(ValueError, match="after the search's tier B"):
        small(tier="B", funnel=["B", "C"]).validate()
    with pytest.raises(ValueError, match="--tier must be one of"):
        small(tier="D").validate()
    with pytest.raises(ValueError, match=r"cheaper to costlier \(B,C\), got C,B"):
        small(funnel=["C", "B"]).validate()
    small(tier="B", funnel=["C"]).validate()
    layer = small(family="layer")
    layer.validate()
    assert layer.tasks == ["digits_layers"] and layer.selection == "pareto"
    optimizer = small()
    optimizer.validate()
    assert optimizer.tasks == ["digits_mlp"] and optimizer.selection == "fitness"
    old = SearchConfig.from_dict({"task": "char_lm", "budget": 3, "retired_option": 1})
    assert old.tasks == ["char_lm"] and old.budget == 3


def test_op_sets_name_ops_and_keep_the_seed_valid():
    space = OptimizerSpace
    assert space.resolve_ops("all") == space.ops == space.resolve_ops("")
    assert space.resolve_ops("lion") == LION_SPACE_OPS and len(LION_SPACE_OPS) == 45
    assert space.resolve_ops("lion, orthogonalize") == (*LION_SPACE_OPS, "orthogonalize")
    with pytest.raises(ProgramError, match="'foo' is not an op of the optimizer space"):
        space.resolve_ops("sign,foo")
    with pytest.raises(ProgramError, match="seed program uses .*interp"):
        space.restricted(("sign", "mul"))
    assert space.restricted(()) is space and space.restricted(space.ops) is space
    with pytest.raises(ValueError, match="leaves out"):
        small(ops=["sign"]).validate()
    config = small(ops=list(LION_SPACE_OPS))
    config.validate()
    # Stored with the run, so a resumed run mutates within the same ops.
    assert SearchConfig.from_dict(config.__dict__).ops == list(LION_SPACE_OPS)


def test_mutation_and_random_programs_stay_within_the_op_set(tmp_path):
    paper = OptimizerSpace.restricted(LION_SPACE_OPS)
    seed = OptimizerSpace.seed()

    def ops_used(space, make):
        return {ins.op for i in range(300) for ins in make(space, i).instructions}

    def child(space, i):
        return mutate(seed, space, random.Random(i))[0]

    for make in (child, lambda space, i: make_random(space, 0, i)):
        assert ops_used(OptimizerSpace, make) & set(LION_K_OPS)  # the full space has them
        assert not ops_used(paper, make) & set(LION_K_OPS)
    with Store.open(tmp_path / "o.db") as store:
        config = small(strategy="random", ops=list(LION_SPACE_OPS))
        config.validate()
        run_id = store.create_run("optimizer", 0, 6, config.__dict__, "local")
        search = Search(store, run_id, config)
        assert search.space.ops == LION_SPACE_OPS
        assert all(ins.op in LION_SPACE_OPS for b in range(1, 40)
                   for ins in search._make(b).program.instructions)


def test_pareto_tournament_picks_a_front_member():
    population = AgingPopulation(size=10, tournament=10, selection="pareto")
    scores = [{"a": 0.9, "b": 0.1}, {"a": 0.5, "b": 0.5}, {"a": 0.4, "b": 0.4},
              {"a": 0.1, "b": 0.9}, {"a": 0.2, "b": 0.2}]
    for birth, s in enumerate(scores):
        population.add(Member(birth, birth, OptimizerSpace.seed(), sum(s.values()) / 2, s))
    picks = {population.select(random.Random(i)).birth for i in range(60)}
    assert picks == {0, 1, 3}  # the dominated (0.4, 0.4) and (0.2, 0.2) never win


def test_random_programs_are_valid_and_deterministic():
    for space in (OptimizerSpace, LayerSpace):
        programs = [make_random(space, run_seed=1, birth=b) for b in range(30)]
        assert all(space.invalid_reason(p) is None for p in programs)
        assert programs == [make_random(space, run_seed=1, birth=b) for b in range(30)]
        assert len({format_program(p) for p in programs}) > 25
    # Random optimizer programs may keep state, as evolved ones do.
    assert any("m" in p.assigned() or "v" in p.assigned()
               for p in (make_random(OptimizerSpace, 2, b) for b in range(30)))


def test_random_start_and_random_strategy_make_random_children(tmp_path):
    with Store.open(tmp_path / "s.db") as store:
        config = small(start="random", population=3)
        config.validate()
        run_id = store.create_run("optimizer", 0, 6, config.__dict__, "local")
        search = Search(store, run_id, config)
        assert [search._make(b).mutation for b in range(3)] == ["random"] * 3
        assert search._make(0).program != OptimizerSpace.seed()
        baseline = small(strategy="random")
        baseline.validate()
        search = Search(store, run_id, baseline)
        assert search._make(0).program == OptimizerSpace.seed()  # the common reference
        assert search._make(5).mutation == "random" and search._make(5).parent_id is None


def test_search_on_two_tasks_scores_each(tmp_path, ray_local):
    with Store.open(tmp_path / "m.db") as store:
        run_id = Search.start(store, small(tasks=["digits_mlp", "char_lm"])).run()
        individuals = store.individuals(run_id)
        seed = store.individual(individuals[0]["id"])
    assert [e["task"] for e in seed["evaluations"]] == ["digits_mlp", "char_lm"]
    scores = seed["metrics"]["scores"]
    assert set(scores) == {"digits_mlp", "char_lm"}
    assert seed["fitness"] == pytest.approx(sum(scores.values()) / 2)
    assert scores["digits_mlp"] == pytest.approx(1.0)  # the seed is the reference
    ok = [i for i in individuals if i["status"] == "ok" and not i["cache_hit"]]
    assert all(set(i["metrics"]["scores"]) == set(scores) for i in ok)


def test_neutral_children_join_the_population_at_their_parents_score(tmp_path, ray_local):
    with Store.open(tmp_path / "n.db") as store:
        run_id = Search.start(store, small(budget=16, neutral=True)).run()
        individuals = store.individuals(run_id)
        config = store.run(run_id)["config"]
    by_id = {i["id"]: i for i in individuals}
    neutral = [i for i in individuals[1:]
               if i["program_hash"] == by_id[i["parent_id"]]["program_hash"]]
    assert neutral  # this seed's run has some, and none was trained again
    for child in neutral:
        parent = by_id[child["parent_id"]]
        assert child["cache_hit"] and child["discarded_same"] == 0
        assert (child["status"], child["fitness"]) == (parent["status"], parent["fitness"])
        # Recorded with its own text: the parent's program plus its new dead code.
        assert child["text"] != parent["text"]
        assert child["pruned_text"] == parent["pruned_text"]
    # Some neutral child was the parent of a later child: it took part in tournaments.
    assert {i["parent_id"] for i in individuals} & {i["id"] for i in neutral}
    assert SearchConfig.from_dict(config).neutral  # a resumed run makes the same children


def test_funnel_promotes_the_best_distinct_functions_to_tier_b(tmp_path, ray_local):
    config = small(budget=8, funnel=["B"], promote=2)
    with Store.open(tmp_path / "f.db") as store:
        run_id = Search.start(store, config).run()
        best = store.top(run_id, 1)[0]
        ok = store.top(run_id, 100)
        tiers = store.tier_results(run_id, "digits_mlp")
        promoted = store.top_at_tier(run_id, "digits_mlp", "B")
        assert store.run(run_id)["status"] == "finished"
    assert set(tiers[best["id"]]) == {"A", "B"}
    assert best["id"] in {r["id"] for r in promoted}
    assert len(promoted) == min(2, len(ok))
    assert sum("B" in t for t in tiers.values()) == len(promoted)  # only these went on
    space = OptimizerSpace

    def function(row):
        return space.fingerprint(parse_program(row["text"]))

    chosen = {function(r) for r in promoted}
    assert len(chosen) == len(promoted)  # two functions, not two copies of one
    floor = min(r["fitness"] for r in promoted)
    # whatever was left behind scored lower at tier A, or computes a promoted function
    assert all(r["fitness"] <= floor or function(r) in chosen for r in ok
               if r["id"] not in {p["id"] for p in promoted})
    from click.testing import CliRunner

    from evoprog.search.cli import cli

    shown = CliRunner().invoke(cli, ["show", str(best["id"]), "--db", str(tmp_path / "f.db")])
    rows = [line.split()[:3] for line in shown.output.splitlines()]
    assert ["digits_mlp", "A", "ok"] in rows and ["digits_mlp", "B", "ok"] in rows


def test_resources_settled_from_the_cluster():
    from evoprog.search.driver import SearchError, settle_resources

    def settled(cluster, **options):
        config = SearchConfig(parallel=0, **options)
        settle_resources(config, {"address": "local", "cpus": 16, "gpus": 0, **cluster})
        return config.gpus_per_eval, config.parallel

    assert settled({}) == (0.0, 64)  # no GPUs: four in flight per CPU
    assert settled({"gpus": 1}) == (0.0625, 64)  # one GPU shared by 16 slots
    assert settled({"gpus": 2}, cpus_per_eval=4) == (0.5, 16)  # 4 slots on 2 GPUs
    assert settled({"cpus": 12, "gpus": 1}) == (0.0833, 48)  # 1/12, to Ray's precision
    assert settled({"gpus": 1}, gpus_per_eval=0.25) == (0.25, 16)  # 4 fit on the GPU
    assert settled({"gpus": 1}, gpus_per_eval=0.0) == (0.0, 64)  # CPU only, as asked
    # A cluster's autoscaler may add GPU nodes: nothing is assumed, nothing refused.
    assert settled({"address": "10.0.0.1:6379"}) == (0.0, 64)
    assert settled({"address": "10.0.0.1:6379"}, gpus_per_eval=0.5) == (0.5, 64)
    with pytest.raises(SearchError, match="--gpus-per-eval 0.5 but this machine has 0"):
        settled({}, gpus_per_eval=0.5)
    # Ray could never place such an evaluation here: the search would wait forever
    with pytest.raises(SearchError, match="--cpus-per-eval 32 but this machine has 16"):
        settled({}, cpus_per_eval=32)
    assert settled({"address": "10.0.0.1:6379"}, cpus_per_eval=32)[1] == 2  # may grow


def _stopped_run_asking(store, **request) -> Search:
    """A run stopped by its time limit whose stored config asks for ``request`` (as if
    started on another machine)."""
    import json

    search = Search.start(store, small(budget=8, max_seconds=0.01))
    search.run()
    config = {**store.run(search.run_id)["config"], **request}
    store.db.execute("UPDATE runs SET config = ? WHERE id = ?",
                     [json.dumps(config), search.run_id])
    store.db.conn.commit()
    return search


def test_a_run_started_with_gpus_resumes_on_a_machine_without(tmp_path, ray_local):
    with Store.open(tmp_path / "g.db") as store:
        search = _stopped_run_asking(store, gpus_per_eval=0.25)
        resumed = Search.resume(store, search.run_id)
        assert resumed.config.gpus_per_eval == 0.0  # this machine's share: none
        assert resumed.config.parallel == search.config.parallel
        resumed.run()
        assert store.run(search.run_id)["status"] == "finished"
        assert len(store.individuals(search.run_id)) == 8


def test_a_run_started_with_more_cpus_per_eval_resumes_on_a_smaller_machine(tmp_path,
                                                                          ray_local):
    with Store.open(tmp_path / "c.db") as store:
        search = _stopped_run_asking(store, cpus_per_eval=4.0)
        resumed = Search.resume(store, search.run_id)
        # ray_local has 2 CPUs: asking 4 per evaluation would wait forever for a slot
        assert resumed.config.cpus_per_eval == 2.0
        assert resumed.config.parallel == search.config.parallel
        resumed.run()
        assert store.run(search.run_id)["status"] == "finished"
        assert len(store.individuals(search.run_id)) == 8


def test_search_at_tier_b_scores_there_and_caches_only_for_tier_b(tmp_path, ray_local):
    from click.testing import CliRunner

    from evoprog.search.cli import cli

    path = tmp_path / "b.db"
    with Store.open(path) as store:
        run_b = Search.start(store, small(budget=2, parallel=1, tier="B")).run()
        at_b = store.individuals(run_b)
        seed = store.individual(at_b[0]["id"])
        # The seed is the reference at its own tier, and every candidate trained at B.
        assert seed["fitness"] == pytest.approx(1.0) and seed["metrics"]["tier"] == "B"
        assert seed["metrics"]["steps"] == 800  # tier B's digits_mlp, not tier A's 200
        assert all(e["tier"] == "B" for i in at_b if not i["cache_hit"]
                   for e in store.individual(i["id"])["evaluations"])
        # A tier-A run trains the same seed again; a second tier-B run reuses it.
        run_a = Search.start(store, small(budget=1, parallel=1)).run()
        again_b = Search.start(store, small(budget=1, parallel=1, tier="B")).run()
        seed_a = store.individuals(run_a)[0]
        seed_b = store.individuals(again_b)[0]
    assert not seed_a["cache_hit"] and seed_a["metrics"]["steps"] == 200
    assert seed_b["cache_hit"] and seed_b["fitness"] == seed["fitness"]
    table = CliRunner().invoke(cli, ["runs", "--db", str(path)]).output
    assert table.count("tier B") == 2


def test_time_limit_stops_and_resume_finishes(tmp_path, ray_local):
    """... and the pause between the stop and the resume is not counted as searching:
    the rediscovery report's wall time is the drivers' time."""
    import time

    path = tmp_path / "t.db"
    with Store.open(path) as store:
        search = Search.start(store, small(budget=12, max_seconds=1.0))
        search.run()
        run = store.run(search.run_id)
        assert run["status"] == "stopped"
        first = store.individuals(search.run_id)
        assert len(first) < 12
        time.sleep(3.0)  # the pause
        resumed = time.perf_counter()
        Search.resume(store, search.run_id).run()
        resumed = time.perf_counter() - resumed
        assert store.run(search.run_id)["status"] == "finished"
        rows = store.individuals(search.run_id)
        assert [i["birth"] for i in rows] == list(range(12))
        stopped_at = max((i["elapsed"] for i in first), default=0.0)
        later = [i["elapsed"] for i in rows if i["id"] not in {j["id"] for j in first}]
        assert all(stopped_at < t <= stopped_at + resumed for t in later)
        report = analyze_run(store, search.run_id, TARGETS["lion"])
        assert report.seconds == max(later) <= stopped_at + resumed  # not the 3 s pause


def test_time_limit_also_stops_the_funnel_and_resume_finishes_it(tmp_path, ray_local,
                                                                  monkeypatch):
    """A tier-B evaluation can take minutes: the time limit is also kept while the funnel
    waits for one, and the stopped run's funnel is finished by resume."""
    path = tmp_path / "t.db"
    with Store.open(path) as store:
        search = Search.start(store, small(budget=6, funnel=["B"], promote=2,
                                           max_seconds=3600))
        # The time runs out just as promotion starts waiting for its first program.
        monkeypatch.setattr(Search, "_out_of_time", lambda self: self.progress.phase != "search")
        search.run()
        run_id = search.run_id
        assert store.run(run_id)["status"] == "stopped"
        assert len(store.individuals(run_id)) == 6  # the search itself had finished
        assert store.top_at_tier(run_id, "digits_mlp", "B") == []
        monkeypatch.undo()
        Search.resume(store, run_id).run()
        assert store.run(run_id)["status"] == "finished"
        promoted = store.top_at_tier(run_id, "digits_mlp", "B")
        assert len(promoted) == min(2, len(store.top(run_id, 100)))


def _record(store, run_id, birth, program, fitness, parent=None):
    text = format_program(program)
    key = OptimizerSpace.hash(program)
    store.add_program(key, "optimizer", text, format_program(OptimizerSpace.prune(program)))
    return store.add_individual(run_id, birth, key, parent, None if parent is None else
                                "change_op: test", "ok", None, fitness, {}, 0.1)


def test_rediscovery_report_finds_lion_entering_the_top(tmp_path):
    """The analysis side of the report, on records whose answer is known."""
    lion = get_known("lion").program(beta1=0.85, beta2=0.98, lr=3e-4)
    signum = get_known("signum").program()
    with Store.open(tmp_path / "r.db") as store:
        config = small(budget=13, population=12)
        config.validate()
        run_id = store.create_run("optimizer", 0, 13, config.__dict__, "local")
        seed_id = _record(store, run_id, 0, OptimizerSpace.seed(), 1.0)
        for birth in range(1, 11):  # ten better programs fill the top 10
            _record(store, run_id, birth, get_known("adamw_paper").program(
                weight_decay=0.01 * birth), 1.0 + birth / 100, seed_id)
        _record(store, run_id, 11, signum, 0.5, seed_id)  # not the target, and worse
        lion_id = _record(store, run_id, 12, lion, 1.05, seed_id)
        report = analyze_run(store, run_id, TARGETS["lion"])
    assert report.found and report.birth == 12 and report.individual_id == lion_id
    assert "beta1=0.85" in report.found_as
    assert report.generated_by_then == 13 and report.evaluated_by_then == 13
    assert report.lineage == ["(seed)", "change_op: test"]
    assert [fitness for _, fitness in report.curve] == sorted(f for _, f in report.curve)


def test_lion_counts_as_found_only_with_proper_averages():
    """Lion at the ends of its betas is another rule: such a match is not a rediscovery.
    This program (from a reachability run) matches Lion with beta2 = 0 on the
    recognizer's probes: its momentum is the last gradient, clipped."""
    from evoprog.search.rediscover import is_target

    lion, evonorm = TARGETS["lion"], TARGETS["evonorm"]
    one_step = OptimizerSpace.parse("m = interp(g, m, 0.1673)\nsqrt_v = sqrt(v)\n"
                                    "update = m / sqrt_v\nm = clip(g, update)\n"
                                    "wd = lr / 1.274\nupdate = clip(update, wd)")
    match = OptimizerSpace.recognize(one_step)
    assert match.name == "lion" and match.constants["beta2"] == 0.0
    assert not is_target(match, lion)
    proper = get_known("lion").program(beta1=0.85, beta2=0.98, lr=3e-4)
    assert is_target(OptimizerSpace.recognize(proper), lion)
    assert not is_target(OptimizerSpace.recognize(proper), evonorm)
    assert not is_target(OptimizerSpace.recognize(get_known("signum").program()), lion)
    assert is_target(LayerSpace.recognize(get_known("evonorm_s0").program()), evonorm)
    assert not is_target(None, lion)


def test_transfer_says_why_a_program_was_not_scored(tmp_path, monkeypatch):
    """Held-out scores that did not train to the end keep their reason in the report."""
    import evoprog.search.rediscover as rediscover
    from evoprog.evaluators.result import EvalResult

    def fake_suite(program, tasks, tier, **overrides):
        # A held-out training must finish: the tier's time limit is lifted for it.
        assert overrides == {"time_limit": None}
        if program == OptimizerSpace.seed():
            return EvalResult(None, "rejected", "diverged"), []
        return EvalResult(0.97, "ok"), []

    monkeypatch.setattr(rediscover, "evaluate_suite", fake_suite)
    with Store.open(tmp_path / "t.db") as store:
        config = small(budget=2)
        config.validate()
        run_id = store.create_run("optimizer", 0, 2, config.__dict__, "local")
        _record(store, run_id, 0, OptimizerSpace.seed(), 1.0)
        steps: list[str] = []
        report = rediscover.report_runs(store, "lion", [run_id], None, ["A"],
                                        on_step=steps.append)
    evolved, *references = report.transfer
    # a progress display is told each step before it runs, in order
    assert steps == [f"analysing run {run_id}"] + [
        f"held-out training {k} of 4, digits_mlp@A: {row['program']}"
        for k, row in enumerate(report.transfer, 1)]
    assert evolved["digits_mlp@A"] is None  # the best evolved program is the seed here
    assert evolved["not_scored"] == {"digits_mlp@A": "rejected: diverged"}
    assert [row["program"] for row in references] == ["adamw_paper", "adamw", "lion"]
    assert all(row["digits_mlp@A"] == 0.97 and "not_scored" not in row
               for row in references)


def test_a_report_compares_like_with_like(tmp_path):
    """Runs searched with other settings (another space, neutral children) are refused
    together; a budget may differ, and a seed run twice counts as runs, not seeds."""
    from evoprog.search.rediscover import report_runs

    def run(store, **options):
        config = small(**{"budget": 2, **options})
        config.validate()
        run_id = store.create_run("optimizer", config.seed, config.budget,
                                  dataclasses.asdict(config), "local")
        _record(store, run_id, 0, OptimizerSpace.seed(), 1.0)
        return run_id

    with Store.open(tmp_path / "t.db") as store:
        plain, again, longer = run(store), run(store), run(store, budget=5)
        other_ops = run(store, ops=sorted(LION_SPACE_OPS))
        neutral = run(store, neutral=True)
        for odd, field in ((other_ops, "ops"), (neutral, "neutral")):
            with pytest.raises(ValueError, match=f"runs {plain} and {odd} searched with "
                                                 f"different {field}"):
                report_runs(store, "lion", [plain, odd], None, ())
        report = report_runs(store, "lion", [plain, again, longer], None, ())
        assert report.summary()["evolution"].startswith("0 of 3 runs")
        assert report_runs(store, "lion", [plain], None, ()).summary()[
            "evolution"].startswith("0 of 1 seeds")
