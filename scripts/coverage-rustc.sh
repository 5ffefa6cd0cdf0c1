#!/bin/sh
# rustc for floe's own crates, instrumented for coverage (see coverage.sh).
exec "$@" -C instrument-coverage
