#!/usr/bin/env bash
# `make demo`: the main job, end to end, on embedded defaults (a device under .custos/).
# It grows with each capability; every step must do what it says or the demo exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="$(swift build --show-bin-path)"
custos="$bin/custos"
state=.custos
device="$state/device"
rehearsal="$state/rehearsal"
participants=Ceremonies/participants.example.yaml

step() { printf '\n== %s\n' "$*"; }

step "fresh demo state in $state/"
rm -rf "$device" "$rehearsal"
mkdir -p "$state"
chmod 700 "$state"

step "the init-device key ceremony, rehearsed with the participants of $participants"
# Officer tokens are created under $rehearsal/officers; PINs and passwords come from the file.
# The partition PINs derive from an activation secret nobody sees, split 2-of-3 among the
# unseal key holders; every step is authorised by its quorum's officer tokens.
"$custos" ceremony run Ceremonies/init-device.yaml --device "$device" --participants "$participants" --rehearsal \
  --name demo

step "the device: partitions, tokens and the mechanisms each partition's allow-list leaves"
"$custos" device info "$device"

step "verify the ceremony's transcript: hash chain and every officer's signature"
transcript="$(ls "$device"/transcripts/init-device-*.jsonl)"
"$custos" ceremony verify "$transcript"

step "activation: two of the three unseal key holders (frank and heidi) unseal the device"
"$custos" device activate "$device" --rehearsal --participants "$participants" --holder frank --holder heidi

step "lockdown audit: the policy table, every attack of the catalogue run for real, the file system"
# Unsealed by frank and grace; destructive attacks run against a snapshot copy of the device.
# Exits non-zero if any expectation fails. (custos lockdown list shows the catalogue.)
"$custos" lockdown audit --device "$device" --participants "$participants" --rehearsal

step "doctor: SoftHSM, libsecp256k1, packages, and the device's permissions"
"$custos" doctor --device "$device"

step "summary"
echo "device $(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["name"], m["serial"], "partitions:", ", ".join(p["name"] for p in m["partitions"]))' "$device/device.json")"
echo "transcript $transcript (readable record: ${transcript%.jsonl}.md)"
echo "demo finished: every step succeeded"
