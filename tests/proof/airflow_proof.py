"""examples/airflow on a lab host: deployed, refreshed and upgraded under full-speed keep-alive load.

    make test-airflow
    python tests/proof/airflow_proof.py --inventory INV [--bridge BR] [--wheelhouse build/wheelhouse-airflow]
        (inside tests/lab/lab.py run, which sets LAB_INVENTORY and LAB_BRIDGE)

The example's own playbooks run against the lab hosts (put in the example's group, airflow_api), with the example's
inventory group variables and only what a lab needs on top (tests/proof/airflow_vars.yml: binds on the bridge, a sqlite
database, the wheelhouse; the secrets are made here, in a 0600 file). Steps, each checked:

1. deploy release 3.3.2 (examples/airflow/deploy.yml): `airflow db migrate` ran once, before the first host's turn
   (so before the first start); both instances answer their health paths under base_url's prefix;
2. examples/airflow/refresh.yml under load on both instances: every worker of both replaced, the masters kept, no
   request failed;
3. deploy release 3.3.2-1 (the same packages in a new release directory) under load: the migration ran once,
   before the first host's turn; both masters replaced (SIGUSR2); no request failed; both healthy.

It prints one line per check and exits 1 at the first that fails.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "demo"))
sys.path.insert(0, str(REPO / "tests" / "proof"))
import change_proof  # tests/proof/change_proof.py: the full-speed load client  # noqa: E402
import rollout  # tests/demo/rollout.py: the lab fleet's ad-hoc runner  # noqa: E402

EXAMPLE = REPO / "examples" / "airflow"
LAB_VARS = REPO / "tests" / "proof" / "airflow_vars.yml"
BIN = Path(sys.executable).parent
PREFIX = "/airflow"
INSTANCES = {
    # instance: (port, health path under the prefix)
    "airflow-core": (8080, "/api/v2/monitor/health"),
    "airflow-execution": (8081, "/execution/health"),
}
MIGRATION_DONE = "Database migration done!"


class Proof:
    def __init__(self, fleet: rollout.Fleet, out: Path):
        self.fleet, self.out = fleet, out
        # The example's group, made of the lab's hosts, with the example's group variables beside it.
        self.inventory = out / "inventory"
        self.inventory.mkdir(exist_ok=True)
        (self.inventory / "hosts.yml").write_text("airflow_api:\n  children:\n    gunicorn_hosts:\n")
        group_vars = self.inventory / "group_vars"
        if not group_vars.is_symlink():
            group_vars.symlink_to(EXAMPLE / "inventory" / "group_vars")
        self.secrets = out / "airflow-secrets.json"
        fd = os.open(self.secrets, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(
                {
                    "vault_airflow_jwt_secret": secrets.token_urlsafe(32),
                    "vault_airflow_api_secret_key": secrets.token_urlsafe(32),
                    "vault_airflow_fernet_key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
                },
                handle,
            )

    def playbook(self, name: str, *extra: str) -> str:
        cmd = [
            str(BIN / "ansible-playbook"), "-i", str(self.fleet.inventory), "-i", str(self.inventory),
            str(EXAMPLE / name), "-e", f"@{LAB_VARS}", "-e", f"@{self.secrets}",
            "-e", f"gunicorn_wheelhouse={self.fleet.wheelhouse}", *extra,
        ]  # fmt: skip
        print("$ " + " ".join(cmd), flush=True)
        log = self.out / f"airflow-{name.removesuffix('.yml')}-{int(time.time())}.log"
        with log.open("w") as handle:
            result = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, check=False)
        text = log.read_text()
        if result.returncode != 0:
            print("\n".join(text.splitlines()[-30:]))
            raise rollout.StepFailed(f"{name} exited {result.returncode} (log: {log})")
        return text

    def info(self, instance: str) -> dict:
        return self.fleet.ad_hoc("graceful.gunicorn.gunicorn_info", f"instance={instance}")

    def healthy(self) -> dict:
        """{(host, instance): HTTP status of its health path under the prefix}."""
        statuses = {}
        for host, address in self.fleet.hosts.items():
            for instance, (port, path) in INSTANCES.items():
                try:
                    with urllib.request.urlopen(f"http://{address}:{port}{PREFIX}{path}", timeout=10) as response:
                        statuses[host, instance] = response.status
                except OSError as exc:
                    statuses[host, instance] = str(exc)
        return statuses

    def urls(self) -> list[str]:
        return [
            f"http://{address}:{port}{PREFIX}{path}"
            for address in self.fleet.hosts.values()
            for port, path in INSTANCES.values()
        ]

    def under_load(self, label: str, name: str, *extra: str) -> tuple[str, dict]:
        load = change_proof.FullLoad(self.out, label, self.urls(), self.fleet.bridge, connections=2)
        with load, load.window():
            log = self.playbook(name, *extra)
        return log, load.report()

    def deploy_first(self) -> None:
        rollout.say("deploy examples/airflow, release 3.3.2, to every host")
        started = time.monotonic()
        log = self.playbook("deploy.yml")
        print(f"  deployed in {time.monotonic() - started:.0f} s")
        self.migrated_once_before_the_turns(log)
        rollout.check(set(self.healthy().values()) == {200}, "both instances answer their health paths under /airflow")

    def migrated_once_before_the_turns(self, log: str) -> None:
        rollout.check(log.count(MIGRATION_DONE) == 1, "airflow db migrate ran once")
        first_turn = log.find("TASK [Take this host's turn]")
        rollout.check(0 <= log.find(MIGRATION_DONE) < first_turn, "the migration ran before the first host's turn")

    def refresh(self) -> None:
        rollout.say("refresh both instances under full-speed keep-alive load")
        before = {instance: self.info(instance) for instance in INSTANCES}
        _log, report = self.under_load("airflow-refresh", "refresh.yml")
        after = {instance: self.info(instance) for instance in INSTANCES}
        for instance in INSTANCES:
            for host in self.fleet.hosts:
                old, new = before[instance][host], after[instance][host]
                old_workers = {w["pid"] for w in old["workers"]}
                new_workers = {w["pid"] for w in new["workers"]}
                rollout.check(old["master"]["pid"] == new["master"]["pid"], f"{host} {instance}: the master was kept")
                rollout.check(
                    not old_workers & new_workers and len(new_workers) == len(old_workers),
                    f"{host} {instance}: all {len(old_workers)} workers replaced",
                )
        rollout.check(report["failed"] == 0, f"{report['failed']} of {report['sent']} requests failed")

    def upgrade(self) -> None:
        rollout.say("deploy release 3.3.2-1 (a new release directory) under load, with the migration before the switch")
        before = {instance: self.info(instance) for instance in INSTANCES}
        log, report = self.under_load("airflow-upgrade", "deploy.yml", "-e", "gunicorn_release=3.3.2-1")
        after = {instance: self.info(instance) for instance in INSTANCES}
        self.migrated_once_before_the_turns(log)
        for instance in INSTANCES:
            for host in self.fleet.hosts:
                old, new = before[instance][host]["master"]["pid"], after[instance][host]["master"]["pid"]
                rollout.check(old != new, f"{host} {instance}: a new master ({old} -> {new})")
        rollout.check(report["failed"] == 0, f"{report['failed']} of {report['sent']} requests failed")
        rollout.check(set(self.healthy().values()) == {200}, "both instances answer their health paths under /airflow")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inventory", type=Path, default=os.environ.get("LAB_INVENTORY"))
    parser.add_argument("--bridge", default=os.environ.get("LAB_BRIDGE"))
    parser.add_argument("--out", type=Path, default=REPO / "build" / "test-airflow")
    parser.add_argument("--wheelhouse", type=Path, default=REPO / "build" / "wheelhouse-airflow")
    args = parser.parse_args()
    if not args.inventory:
        parser.error("--inventory (or LAB_INVENTORY) is required")
    args.out.mkdir(parents=True, exist_ok=True)
    fleet = rollout.Fleet(args.inventory, args.out, args.wheelhouse, args.bridge)
    subprocess.run([sys.executable, str(REPO / "tests/lab/lab.py"), "check-route", *fleet.hosts.values()], check=True)
    proof = Proof(fleet, args.out)
    try:
        proof.deploy_first()
        proof.refresh()
        proof.upgrade()
    except rollout.StepFailed as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    print("\nexamples/airflow: deployed, refreshed and upgraded under load with no failed request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
