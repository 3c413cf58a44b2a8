#!/usr/bin/env bash
# `make demo`: the main job, end to end, on embedded defaults (a device under .custos/).
# It grows with each capability; every step must do what it says or the demo exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="$(swift build --show-bin-path)"
custos="$bin/custos"
state=.custos
device="$state/device"

step() { printf '\n== %s\n' "$*"; }

step "fresh demo state in $state/"
rm -rf "$device"
mkdir -p "$state"
chmod 700 "$state"

step "create an emulated HSM device with partitions custody and admin"
# Test PINs for now: the init-device key ceremony derives partition PINs that nobody types.
"$custos" device create "$device" --name demo --partition custody --partition admin \
  --so-pin demo-so-pin --user-pin demo-user-pin

step "the device: partitions, tokens and the mechanisms each partition's allow-list leaves"
"$custos" device info "$device"

step "doctor: SoftHSM, libsecp256k1, packages, and the device's permissions"
"$custos" doctor --device "$device"

step "summary"
echo "device $(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["name"], m["serial"], "partitions:", ", ".join(p["name"] for p in m["partitions"]))' "$device/device.json")"
echo "demo finished: every step succeeded"
