#!/bin/sh
# Runs the whole suite. Exit code 5 (no test collected) is a failure here: a run that tests
# nothing must not pass.
set -u
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" = "5" ]; then
    echo "pytest collected no tests: failing" >&2
    exit 1
fi
exit $rc
