#!/bin/sh
# Runs the whole suite, on two processes (pytest-xdist: the servers, browsers and databases
# the tests drive spend half their time waiting; serial, the suite took 11.5 min on 2 cores,
# over CI's 10). Exit code 5 (no test collected) is a failure here: a run that tests nothing
# must not pass.
set -u
.venv/bin/python -m pytest -n 2 "$@"
rc=$?
if [ "$rc" = "5" ]; then
    echo "pytest collected no tests: failing" >&2
    exit 1
fi
exit $rc
