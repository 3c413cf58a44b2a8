#!/usr/bin/env bash
# Installs the Debian packages Custos needs when they are missing (as root), or says exactly
# which apt-get line to run (as anyone else). Called by every Makefile target that builds.
set -euo pipefail

# util-linux is essential on Debian (always installed) and listed for completeness: flock(1) for
# the lock tests, setpriv(1) for ProcessSupport (every child Custos starts dies with its parent).
packages=(softhsm2 libsofthsm2-dev libsecp256k1-dev libp11-kit-dev libssl-dev libargon2-dev opensc zlib1g-dev
  util-linux python3 curl)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if ! command -v swift >/dev/null 2>&1; then
  echo "swift is not on PATH: install a Swift 6 toolchain first (https://www.swift.org/install/linux/)" >&2
  exit 1
fi

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "installing missing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "missing Debian packages: ${missing[*]}" >&2
    echo "run this, then try again:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

# python-pkcs11 (PyPI), for testers' own scripts (scripts/lockdown-inspect.py) and the test of
# `custos lockdown exec`. Installed for the python3 on PATH, quietly, when missing.
if ! python3 -c 'import pkcs11' >/dev/null 2>&1; then
  echo "installing python-pkcs11 from PyPI for $(command -v python3)"
  export PIP_ROOT_USER_ACTION=ignore
  pip=(python3 -m pip install --quiet --disable-pip-version-check python-pkcs11)
  if ! "${pip[@]}" 2>/dev/null && ! "${pip[@]}" --break-system-packages; then
    echo "cannot install python-pkcs11: run  python3 -m pip install python-pkcs11  and try again" >&2
    exit 1
  fi
fi

# openapi-spec-validator (PyPI, with openapi-schema-validator and PyYAML), for the tests that
# validate openapi.yaml and check the server's answers against its schemas
# (scripts/check-api-responses.py).
if ! python3 -c 'import openapi_spec_validator, openapi_schema_validator, referencing, yaml' >/dev/null 2>&1; then
  echo "installing openapi-spec-validator from PyPI for $(command -v python3)"
  export PIP_ROOT_USER_ACTION=ignore
  pip=(python3 -m pip install --quiet --disable-pip-version-check openapi-spec-validator)
  if ! "${pip[@]}" 2>/dev/null && ! "${pip[@]}" --break-system-packages; then
    echo "cannot install openapi-spec-validator: run  python3 -m pip install openapi-spec-validator  and try again" >&2
    exit 1
  fi
fi
