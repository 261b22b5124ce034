"""Run by tests/e2e/test_node_loss.py: a Ray cluster of a head (no CPUs: the driver only) and two
worker nodes on this machine; the curation stages run over VIDEOS into OUT, and one worker node is
removed while it holds detection tasks. Prints one JSON line: the videos' statuses and the nodes.

    python tests/support/node_loss.py OUT VIDEO...
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
os.environ["RAY_AUTH_MODE"] = "disabled"


def main() -> None:
    import ray
    from ray.cluster_utils import Cluster

    from curation.run import parse_args, run_stages
    from manifests import read_table
    from manifests.io import ensure_tables
    from tests.support.crash_stages import SlowDetect

    out, videos = Path(sys.argv[1]), sys.argv[2:]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=2) for _ in range(2)]
    ray.init(address=cluster.address, logging_level="ERROR")
    cluster.wait_for_nodes()
    removed = threading.Event()

    def remove_a_node_mid_detection() -> None:
        time.sleep(4.0)  # the first clips (3 s each) are done, the next ones are running on both nodes
        cluster.remove_node(workers[0], allow_graceful=False)
        removed.set()

    config = parse_args(["--input", *videos, "--output", str(out), "--clip-minutes", "0.05", "--within", "video",
                         "--min-relevance", "-10", "--max-in-flight", "4"])  # fmt: skip
    threading.Thread(target=remove_a_node_mid_detection, daemon=True).start()
    run_stages(videos, config, swap={"detect": SlowDetect})
    ensure_tables(out)
    statuses = read_table(out, "videos")["status"].tolist()
    deadline = time.time() + 60  # Ray marks a removed node dead after its health checks fail
    while (alive := sum(1 for n in ray.nodes() if n["Alive"])) > 2 and time.time() < deadline:
        time.sleep(0.5)
    print(json.dumps({"statuses": statuses, "node_removed": removed.is_set(), "alive_nodes": alive}))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
