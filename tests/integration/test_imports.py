"""``import forkserve`` stays light, and an exec'd zygote and its workers never load the master's side.

The master side (its loop, the balancer, the control socket, psutil) costs memory in every process
that loads it, and a zygote that imported it would share nothing useful with its workers. The
package's ``__init__`` is lazy (PEP 562) and the zygote imports only its own side; both are checked
here in real processes.
"""

from __future__ import annotations

import json
import subprocess
import sys

# The master's side: none of it may be loaded by `import forkserve`, a zygote or a worker.
MASTER_SIDE = ("forkserve.master", "forkserve.services", "forkserve.api", "forkserve.cli", "psutil")


def master_side(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == s or m.startswith(s + ".") for s in MASTER_SIDE)]


def test_import_forkserve_loads_no_master_side_module() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import forkserve, sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    modules = json.loads(out)
    assert "forkserve" in modules
    assert master_side(modules) == []
    # The lazy names still resolve, and then load what they name.
    check = "import forkserve, sys; forkserve.run; assert 'forkserve.master.master' in sys.modules"
    subprocess.run([sys.executable, "-c", check], check=True, timeout=30)


def test_an_execd_zygote_and_its_workers_load_no_master_side_module(serve) -> None:
    server = serve("-w", "1", app="modules:app", wait=1)
    loaded = server.get("/").json()
    assert "forkserve.zygote.zygote" in loaded["zygote"]  # the app was imported in a zygote
    assert "forkserve.worker.worker" in loaded["worker"]
    assert master_side(loaded["zygote"]) == [], server.tail()
    assert master_side(loaded["worker"]) == [], server.tail()
