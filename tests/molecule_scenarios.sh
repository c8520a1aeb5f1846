#!/usr/bin/env bash
# The molecule scenarios in turn, with the venv's tools on PATH (as the Makefile sets it). Each scenario
# tears its hosts down; the lab.py calls after them are the safety net, on failure too.
set -u
status=0
molecule test -s default && molecule test -s rollout || status=$?
python tests/lab/lab.py down --name mol
python tests/lab/lab.py down --name rollout
exit "$status"
