#!/bin/sh
# Runs the whole suite, on three processes (pytest-xdist: the servers, browsers and databases
# the tests drive spend much of their time waiting; serial, the suite took 11.5 min on 2
# cores, over CI's 10; on two processes 505-532 s with the cores idle a quarter of the time,
# on three 409 s with them idle 8 %). Exit code 5 (no test collected) is a failure here: a run that tests nothing
# must not pass.
set -u
# Whole files to each worker, in the order tests/conftest.py gives (its longest files first):
# a file's module fixtures (servers, Chromium) start once, on one worker, and the run does
# not end on one worker alone with a long test. (xdist's default sorts files by test count.)
.venv/bin/python -m pytest -n 3 --dist loadfile --no-loadscope-reorder "$@"
rc=$?
if [ "$rc" = "5" ]; then
    echo "pytest collected no tests: failing" >&2
    exit 1
fi
exit $rc
