#!/usr/bin/env bash
# The test suite (what CI runs). Extra arguments go to pytest, e.g. `-m slow`.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
exec python -m pytest -q "$@"
