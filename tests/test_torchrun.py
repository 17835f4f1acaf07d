"""The real ``torchrun`` entry point (``torchrun ... -m medistill.cli run recipe.yaml``, as the
README documents), on one node and on two simulated nodes.

The engine's own 2-process tests (``test_distributed_recipes.py``) start the processes with
:func:`~medistill.engine.distributed.launch`; here ``python -m torch.distributed.run`` (what
``torchrun`` is) starts them from its environment (``RANK``, ``LOCAL_RANK``, ``GROUP_RANK``,
``LOCAL_WORLD_SIZE``, the rendezvous), the CLI joins the group (``init_from_env``), and the
trained runs are compared with a 1-process run in this process, with the same tiny recipes and
tolerance (``ATOL`` = 2e-4; why that value: ``test_distributed_recipes.py``).

Several nodes are simulated on this one machine by two torchrun agents on localhost that meet
at a c10d rendezvous (``--nnodes 2 --rdzv-backend c10d``), each agent a "node":
``node_index()`` (``GROUP_RANK``) gives each node its own disk teacher cache / replay
``<folder>/node<k>/``, filled by the node's local rank 0 while its other ranks wait, then read
by all of them; rank 0 (on node 0) evaluates and reports, the first rank of node 1 is a local
rank 0 that does neither. Two cases: the resolution recipe with ``kd.cache_teacher: disk`` on
2 nodes x 1 process, the graph-relation recipe with a disk ``kd.teacher_replay`` on 2 nodes x
2 processes. The "nodes" share the output folder, as they must on a real cluster (every rank
loads rank 0's checkpoints, e.g. the trained teacher): a node-local one is refused at the
start. 14-30 s per test on a loaded 2-core machine (processes that import torch; the
refusal ~70 s: it waits a minute for a slow network file system), hence ``slow``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from instance_fixtures import write_instance_dataset
from test_distributed_recipes import (
    COMMON,
    GRAPH_RELATION,
    RESOLUTION_DISK_CACHE,
    ROOT,
    assert_same_training,
    recipe_path,
    run_single,
)

from medistill.engine.distributed import _free_port
from medistill.pipelines import demo_data_root

#: seconds an agent (its workers included) may take before it is killed and the test fails
TIMEOUT = 300

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _tail(text: str, chars: int = 4000) -> str:
    return text[-chars:] if len(text) > chars else text


def _stop(agent: subprocess.Popen) -> None:
    """End an agent and its workers (each worker leads a session of its own): SIGTERM,
    which torchrun passes on to its workers, then SIGKILL for whatever is left."""
    try:  # the workers, read before the agent goes (Linux)
        kids = [int(x) for x in Path(f"/proc/{agent.pid}/task/{agent.pid}/children")
                .read_text().split()]
    except OSError:
        kids = []
    agent.send_signal(signal.SIGTERM)
    try:
        agent.wait(15)
    except subprocess.TimeoutExpired:
        pass
    for pid in [agent.pid, *kids]:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    agent.wait()


def torchrun(agents: list[list[str]], recipe: str, overrides: list[str],
             out: Path | list[Path], cwd: Path, check: bool = True
             ) -> list[tuple[int, str, str]]:
    """Start one ``python -m torch.distributed.run <agent args> -m medistill.cli run ... --out
    <out>`` per entry of ``agents`` at once (this worktree's ``src`` first on the path; ``out``
    one folder for all or one per agent), wait for all and return each one's exit status,
    stdout and stderr. A hanging agent fails the test with the stderr tails, and so does a
    failing one with ``check``; the agents still running (and their workers) are then
    stopped, never left behind."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                       os.environ.get("PYTHONPATH")]))}
    outs = out if isinstance(out, list) else [out] * len(agents)
    sets = [x for o in overrides for x in ("--set", o)]
    procs, logs = [], []
    for k, args in enumerate(agents):
        stdout, stderr = cwd / f"agent{k}.out", cwd / f"agent{k}.err"
        cli = ["-m", "medistill.cli", "run", str(recipe_path(recipe)), "--out", str(outs[k]),
               "--no-progress", *sets]
        with stdout.open("w") as o, stderr.open("w") as e:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "torch.distributed.run", *args, *cli], stdout=o,
                stderr=e, env=env, cwd=cwd, start_new_session=True))
        logs.append((stdout, stderr))
    deadline = time.monotonic() + TIMEOUT
    failed: str | None = None
    try:
        while any(p.poll() is None for p in procs) and failed is None:
            for k, p in enumerate(procs):
                if check and p.returncode not in (None, 0):
                    failed = f"agent {k} exited with {p.returncode}"
            if failed is None and time.monotonic() > deadline:
                failed = f"timed out after {TIMEOUT} s"
            time.sleep(0.5)
        for k, p in enumerate(procs):
            if check and failed is None and p.returncode != 0:
                failed = f"agent {k} exited with {p.returncode}"
    finally:
        for p in procs:
            if p.poll() is None:
                _stop(p)
    if failed is not None:
        tails = "\n".join(f"--- agent {k} {agents[k]} stderr:\n{_tail(err.read_text())}"
                          for k, (_, err) in enumerate(logs))
        pytest.fail(f"torchrun: {failed}\n{tails}")
    return [(p.returncode, o.read_text(), e.read_text()) for p, (o, e) in zip(procs, logs,
                                                                              strict=True)]


def _two_nodes(per_node: int) -> list[list[str]]:
    """The arguments of the 2 agents of 2 simulated nodes (c10d rendezvous on localhost)."""
    endpoint = f"127.0.0.1:{_free_port()}"
    return [["--nnodes", "2", "--nproc-per-node", str(per_node), "--rdzv-backend", "c10d",
             "--rdzv-endpoint", endpoint, "--rdzv-id", "medistill-test"]] * 2


@pytest.mark.slow  # ~15 s
def test_torchrun_two_processes_equal_one(tmp_path: Path) -> None:
    """``torchrun --nproc-per-node 2 -m medistill.cli run`` (static rendezvous on a free
    port) on the graph-relation recipe: its trained runs (memory bank included) equal the
    1-process run; rank 0 alone prints the results and the report line."""
    root = write_instance_dataset(tmp_path / "data", {"train": 4, "val": 1, "test": 1})
    recipe = "graph_relation_monuseg.yaml"
    overrides = [*COMMON, f"data.root={root}", *GRAPH_RELATION]
    run_single(recipe, overrides, tmp_path / "one")
    agent = ["--nproc-per-node", "2", "--master-addr", "127.0.0.1",
             "--master-port", str(_free_port())]
    ((_, stdout, _),) = torchrun([agent], recipe, overrides, tmp_path / "two", tmp_path)
    largest = assert_same_training(tmp_path / "one", tmp_path / "two", expect=2)
    print(f"torchrun 2 processes, graph_relation: largest difference {largest:.3g}")
    assert stdout.count("report: ") == 1, stdout


def _disk_cache(tmp_path: Path) -> list[str]:
    return [f"data.root={demo_data_root()}", *RESOLUTION_DISK_CACHE]


def _disk_replay(tmp_path: Path) -> list[str]:
    root = write_instance_dataset(tmp_path / "data", {"train": 4, "val": 1, "test": 1})
    return [f"data.root={root}", *GRAPH_RELATION,
            "kd.teacher_replay={draws: 2, storage: disk, dtype: float32}"]


#: (recipe, its tiny overrides, the per-node folder under ``--out``, processes per node)
NODES = {
    "resolution-disk-cache-2x1": ("demo.yaml", _disk_cache, "teacher_cache", 1),
    "graph_relation-disk-replay-2x2": ("graph_relation_monuseg.yaml", _disk_replay,
                                       "teacher_replay", 2),
}


@pytest.mark.slow  # 20-30 s
@pytest.mark.parametrize("case", list(NODES))
def test_torchrun_two_nodes_equal_one_process(tmp_path: Path, case: str) -> None:
    """Two torchrun agents (2 nodes, c10d rendezvous on localhost): the resolution recipe
    with ``kd.cache_teacher: disk`` on 1 process per node, and the graph-relation recipe
    with a disk ``kd.teacher_replay`` on 2 per node (local rank 1 of each node waits for
    its local rank 0's fill, then reads it; rank 2 is local rank 0 of node 1). Each node
    has one complete cache (``node0/``, ``node1/``: the same teacher on the same inputs,
    bit-identical), none shared or per rank; report and results are written once, by rank 0
    (one agent prints them, the other nothing); the trained runs equal the 1-process run."""
    recipe, tiny, where, per_node = NODES[case]
    overrides = [*COMMON, *tiny(tmp_path)]
    run_single(recipe, overrides, tmp_path / "one")
    two = tmp_path / "two"
    stdouts = [o for _, o, _ in torchrun(_two_nodes(per_node), recipe, overrides, two,
                                         tmp_path)]
    largest = assert_same_training(tmp_path / "one", two, expect=2)
    print(f"torchrun 2 nodes x {per_node}, {case}: largest difference {largest:.3g}")

    cache = two / where
    assert sorted(p.name for p in cache.iterdir()) == ["node0", "node1"]
    keys = [sorted(p.name for p in (cache / node).iterdir()) for node in ("node0", "node1")]
    assert len(keys[0]) == 1 and keys[0] == keys[1], keys  # one fingerprint, on each node
    folders = [cache / node / keys[0][0] for node in ("node0", "node1")]
    for folder in folders:
        assert np.load(folder / "filled.npy").all(), folder  # filled before training
    names = sorted(p.name for p in folders[0].glob("*.npy"))
    assert names == sorted(p.name for p in folders[1].glob("*.npy")) and len(names) > 1
    for name in names:
        assert np.array_equal(np.load(folders[0] / name), np.load(folders[1] / name)), name

    assert sorted(s.count("report: ") for s in stdouts) == [0, 1], stdouts
    assert (two / "run.log").read_text().count("finished in") == 1


@pytest.mark.slow  # ~70 s: node 1 waits SHARED_WAIT (60 s) for the marker it cannot see
def test_torchrun_two_nodes_refuse_an_output_folder_they_do_not_share(tmp_path: Path) -> None:
    """Each node with its own ``--out`` (a node-local folder): every process stops with the
    same one-line error before any training (it failed after the teacher's training, with
    ``checkpoint not found`` on node 1, before
    :func:`medistill.pipelines.base.check_shared_folder`)."""
    root = write_instance_dataset(tmp_path / "data", {"train": 4, "val": 1, "test": 1})
    outs = [tmp_path / "node0", tmp_path / "node1"]
    done = torchrun(_two_nodes(1), "graph_relation_monuseg.yaml",
                    [*COMMON, f"data.root={root}", *GRAPH_RELATION], outs, tmp_path,
                    check=False)
    for rc, _, err in done:
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert rc != 0 and errors, _tail(err)
        assert "1 of 2 processes do not see rank 0's files" in errors[0], errors
        assert "file system every node reaches" in errors[0], errors
    assert not list(outs[0].rglob("*.pt"))  # nothing trained
