"""Aging evolution and the Ray search loop, end to end on real local Ray and SQLite."""

import dataclasses
import random

import pytest

from evoprog.programs.mutation import MutationFailed
from evoprog.programs.space import OptimizerSpace
from evoprog.search.driver import Search, SearchConfig
from evoprog.search.evolution import AgingPopulation, Member, make_child
from evoprog.store import Store


def member(birth, fitness):
    return Member(birth, birth, OptimizerSpace.seed(), fitness)


def test_oldest_member_dies_first():
    population = AgingPopulation(size=3, tournament=2)
    for birth, fitness in enumerate([0.9, 0.1, 0.5, 0.2]):
        population.add(member(birth, fitness))
    assert [m.birth for m in population.members] == [1, 2, 3]  # the best (0.9) aged out


def test_tournament_picks_best_of_sample():
    population = AgingPopulation(size=10, tournament=10)
    for birth, fitness in enumerate([0.3, 0.8, None, 0.5]):
        population.add(member(birth, fitness))
    assert population.select(random.Random(0)).birth == 1
    small = AgingPopulation(size=10, tournament=1)
    for birth in range(5):
        small.add(member(birth, float(birth)))
    picks = {small.select(random.Random(i)).birth for i in range(50)}
    assert len(picks) > 1  # tournament of one is uniform sampling


def test_make_child_is_deterministic_per_seed_and_birth():
    population = AgingPopulation(size=5, tournament=2)
    population.add(member(0, 0.5))
    a = make_child(population, OptimizerSpace, run_seed=3, birth=7)
    b = make_child(population, OptimizerSpace, run_seed=3, birth=7)
    c = make_child(population, OptimizerSpace, run_seed=3, birth=8)
    assert a[1] == b[1] and a[2] == b[2]
    assert OptimizerSpace.invalid_reason(a[1]) is None
    assert (a[1], a[2]) != (c[1], c[2])


def test_make_child_tries_other_parents_then_gives_up():
    # One unary op and one instruction: the seed cannot change, `tanh(g)` can.
    tiny = dataclasses.replace(OptimizerSpace, ops=("sign", "tanh"), max_length=1,
                               seed_text="update = sign(g)")
    stuck = tiny.parse("update = sign(g)")
    frozen = dataclasses.replace(tiny, ops=("sign",))
    population = AgingPopulation(size=5, tournament=1)
    population.add(Member(0, 0, stuck, 0.5))
    with pytest.raises(MutationFailed):
        make_child(population, frozen, run_seed=0, birth=1)
    population.add(Member(1, 1, tiny.parse("update = tanh(g)"), 0.4))
    parent, child, _ = make_child(population, frozen, run_seed=0, birth=1)
    assert parent.birth == 1 and child == stuck


def run_search(tmp_path, name, **options):
    config = SearchConfig(**{"budget": 24, "population": 8, "tournament": 3, "parallel": 3,
                             **options})
    with Store.open(tmp_path / name) as store:
        run_id = Search.start(store, config).run()
        return store.run(run_id), store.individuals(run_id)


def summary(individuals):
    by_id = {row["id"]: row["birth"] for row in individuals}
    return [(row["birth"], row["program_hash"], row["status"], row["fitness"],
             by_id.get(row["parent_id"]), row["mutation"]) for row in individuals]


def test_search_records_budget_and_is_reproducible(tmp_path, ray_local):
    run_a, inds_a = run_search(tmp_path, "a.db", seed=5)
    run_b, inds_b = run_search(tmp_path, "b.db", seed=5)
    assert run_a["status"] == "finished"
    assert [row["birth"] for row in inds_a] == list(range(24))
    assert summary(inds_a) == summary(inds_b)
    assert inds_a[0]["mutation"] is None and inds_a[0]["parent_id"] is None
    assert all(row["parent_id"] is not None for row in inds_a[1:])
    evaluated = [row for row in inds_a if not row["cache_hit"]]
    assert evaluated and all(row["eval_seconds"] > 0 for row in evaluated)
    by_id = {row["id"]: row for row in inds_a}
    hits = [row for row in inds_a if row["cache_hit"]]
    assert hits  # this seed's run has some
    for hit in hits:  # each names the evaluated individual whose score it reused
        source = by_id[hit["metrics"]["cached_from"]]
        assert not source["cache_hit"] and source["birth"] < hit["birth"]
        assert (source["status"], source["fitness"]) == (hit["status"], hit["fitness"])
    _, inds_c = run_search(tmp_path, "c.db", seed=6, budget=8)  # another seed: at once
    assert summary(inds_c)[0] == summary(inds_a)[0]  # the same seed program, then
    assert summary(inds_c)[1:] != summary(inds_a)[1:8]  # other children


def test_rejected_seed_gives_clear_error(tmp_path, ray_local, monkeypatch):
    from evoprog.search.driver import SearchError

    space = dataclasses.replace(OptimizerSpace, seed_text="update = g * 1e6")
    monkeypatch.setattr("evoprog.search.driver.get_space", lambda family: space)
    with Store.open(tmp_path / "r.db") as store:
        search = Search.start(store, SearchConfig(budget=5, parallel=2))
        with pytest.raises(SearchError, match="seed program was rejected"):
            search.run()
        assert store.run(search.run_id)["status"] == "failed"


def test_auto_parallel_queues_several_evaluations_per_cpu(tmp_path, ray_local):
    import torch

    from evoprog.search.driver import AUTO_PARALLEL_PER_SLOT

    threads = torch.get_num_threads()
    with Store.open(tmp_path / "auto.db") as store:
        search = Search.start(store, SearchConfig(budget=2, population=2, tournament=1))
        assert search.config.parallel == AUTO_PARALLEL_PER_SLOT * 2  # ray_local: 2 CPUs
        assert store.run(search.run_id)["config"]["parallel"] == search.config.parallel
        search.run()
        assert store.run(search.run_id)["individuals"] == 2
    assert torch.get_num_threads() == threads  # the driver's one thread is given back


def test_ctrl_c_during_the_search_stops_it_and_restores_the_handler(tmp_path, ray_local):
    import os
    import signal

    handler = signal.getsignal(signal.SIGINT)
    sent = []

    def ctrl_c_after_three(progress):
        if progress.done == 3 and not sent:
            sent.append(progress.done)
            os.kill(os.getpid(), signal.SIGINT)  # handled by the search, not pytest

    with Store.open(tmp_path / "i.db") as store:
        search = Search.start(store, SearchConfig(budget=24, population=8, tournament=3,
                                                  parallel=3),
                              on_progress=ctrl_c_after_three)
        with pytest.raises(KeyboardInterrupt):
            search.run()
        assert store.run(search.run_id)["status"] == "interrupted"
        assert 3 <= len(store.individuals(search.run_id)) < 24
    assert signal.getsignal(signal.SIGINT) is handler


def test_running_out_of_device_memory_is_not_the_programs_failure(tmp_path, ray_local):
    """Evaluations that share a GPU can run one another out of memory: an evaluation
    that raises torch's OutOfMemoryError is run again, and only a program that keeps
    doing so is recorded as failed, as a lost worker, with no evaluation rows that a
    later run's cache could serve."""
    import hashlib

    import ray
    import torch

    from evoprog.evaluators.result import EvalResult
    from evoprog.search.workers import lost_worker

    attempts = tmp_path / "attempts"
    attempts.mkdir()
    always = "update = g * 0.001"  # a program that runs out every time

    @ray.remote
    def runs_out_of_memory_first(program_text, tasks, tier="A"):
        mark = attempts / hashlib.sha256(program_text.encode()).hexdigest()
        if program_text.strip() == always or not mark.exists():
            mark.touch()
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        result = EvalResult(0.5, "ok", None, {}, 0.01)
        return {"result": result.to_dict(), "worker": "test",
                "evaluations": [{"task": tasks[0], "tier": tier, **result.to_dict()}]}

    @ray.remote
    def raises_value_error():
        raise ValueError("the program's own error")

    with pytest.raises(ray.exceptions.RayTaskError) as out_of_memory:
        ray.get(runs_out_of_memory_first.remote(always, ["digits_mlp"]))
    with pytest.raises(ray.exceptions.RayTaskError) as own_error:
        ray.get(raises_value_error.remote())
    assert lost_worker(out_of_memory.value) and not lost_worker(own_error.value)

    with Store.open(tmp_path / "oom.db") as store:
        search = Search.start(store, SearchConfig(budget=4, population=4, tournament=2,
                                                  parallel=2))
        search.evaluate = runs_out_of_memory_first
        search.run()
        rows = store.individuals(search.run_id)
        assert [row["status"] for row in rows] == ["ok"] * 4  # each ran out once, then ran
        assert all(row["fitness"] == 0.5 for row in rows)

        search = Search.start(store, SearchConfig(budget=1, population=1, tournament=1,
                                                  parallel=1))
        search.space = dataclasses.replace(OptimizerSpace, seed_text=always)
        search.evaluate = runs_out_of_memory_first
        with pytest.raises(Exception, match="seed program"):
            search.run()
        (seed,) = store.individuals(search.run_id)
        assert seed["status"] == "failed"
        assert seed["reason"] == "worker lost 4 times: OutOfMemoryError"
        assert store.cached_result("optimizer", seed["program_hash"], ["digits_mlp"],
                                   "A") is None


def test_a_search_run_from_python_leaves_the_sigterm_handler_as_it_was(tmp_path,
                                                                        ray_local):
    """Only the command line turns SIGTERM into Ctrl-C for good; a program that runs a
    search keeps its own handler."""
    import signal

    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with Store.open(tmp_path / "s.db") as store:
            Search.start(store, SearchConfig(budget=2, population=2, tournament=1,
                                             parallel=2)).run()
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_starting_ray_keeps_the_programs_own_sigterm_handler():
    """ray.init installs a SIGTERM handler of its own; start_ray puts back the one the
    program had (the command line's, which stops a command as Ctrl-C does)."""
    import os
    import subprocess
    import sys

    code = ("import signal, ray\n"
            "from evoprog.search.workers import start_ray\n"
            "def mine(signum, frame): pass\n"
            "signal.signal(signal.SIGTERM, mine)\n"
            "start_ray(num_cpus=1)\n"
            "kept = signal.getsignal(signal.SIGTERM) is mine\n"
            "ray.shutdown()\n"
            "print('kept' if kept else 'replaced')\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**env, "RAY_USAGE_STATS_ENABLED": "0"}, timeout=120)
    assert result.stdout.strip().splitlines()[-1:] == ["kept"], result.stderr[-2000:]
