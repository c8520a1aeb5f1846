#!/usr/bin/env bash
# Molecule scenarios, named on the command line (default: all of them in turn), with the venv's tools on PATH
# as the Makefile sets it. Each scenario tears its hosts down; the lab.py call after it is the safety net, on
# failure too. Scenarios boot their own labs on their own bridges, so several of these can run side by side.
set -u
declare -A lab_of=([default]=mol [rollout]=rollout)
scenarios=("$@")
[ "${#scenarios[@]}" -gt 0 ] || scenarios=(default rollout)
status=0
current=""
# A stop from outside (make test-matrix's cell limit, CI) still takes the scenario's hosts down.
trap '[ -z "$current" ] || python tests/lab/lab.py down --name "$current"; exit 143' TERM INT
for scenario in "${scenarios[@]}"; do
  if [ -z "${lab_of[$scenario]:-}" ]; then
    echo "molecule_scenarios: no scenario named '$scenario' (known: ${!lab_of[*]})" >&2
    exit 2
  fi
  started=$SECONDS
  current=${lab_of[$scenario]}
  molecule test -s "$scenario" || { status=$?; }
  if [ "$status" -ne 0 ] && [ $((SECONDS - started)) -lt 60 ]; then
    # Failed in its first minute, before its hosts booted: a tool that did not start (molecule's probe
    # `ansible-playbook --version` once exited 1 while two other suites started beside it). Once more.
    echo "molecule_scenarios: $scenario failed after $((SECONDS - started)) s, before its hosts booted; once more" >&2
    python tests/lab/lab.py down --name "${lab_of[$scenario]}"
    status=0
    molecule test -s "$scenario" || { status=$?; }
  fi
  python tests/lab/lab.py down --name "${lab_of[$scenario]}"
  [ "$status" -eq 0 ] || break
done
exit "$status"
