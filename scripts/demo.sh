#!/usr/bin/env bash
# `make demo`: the main job, end to end, on embedded defaults (a device under .custos/).
# It grows with each capability; every step must do what it says or the demo exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="$(swift build --show-bin-path)"
custos="$bin/custos"
hsm="$bin/custos-hsm"
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

step "the device as a process: custos-hsm takes the lock, starts SEALED, listens on a 0600 socket"
socket="$state/hsm.sock"
"$hsm" --device "$device" --socket "$socket" >"$state/hsm.out" 2>"$state/hsm.log" &
hsm_pid=$!
trap 'kill "$hsm_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do grep -q "listening on" "$state/hsm.out" 2>/dev/null && break; sleep 0.1; done
cat "$state/hsm.out"
ls -l "$socket"
"$custos" operator status --socket "$socket"

step "the second layer of the lockdown audit, from outside with the Crypto User credential (SEALED)"
"$custos" lockdown audit --socket "$socket" --cu-credential "$rehearsal/crypto-user.credential"

step "unseal over the socket: each holder submits a share, the device reports progress, then READY"
"$custos" operator unseal --socket "$socket" --rehearsal --participants "$participants" \
  --rehearsal-dir "$rehearsal" --holder grace --holder heidi
"$custos" operator status --socket "$socket"

step "the second layer again, READY: the root answers, unapproved vault calls are refused"
"$custos" lockdown audit --socket "$socket" --cu-credential "$rehearsal/crypto-user.credential"

step "SIGTERM: new calls refused, calls in flight finished, vault and sessions closed, lock released"
kill -TERM "$hsm_pid"
wait "$hsm_pid"
trap - EXIT
tail -n 3 "$state/hsm.log"
test ! -e "$socket" && echo "socket removed; the next start is SEALED again"

step "doctor: SoftHSM, libsecp256k1, packages, and the device's permissions"
"$custos" doctor --device "$device"

step "summary"
echo "device $(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["name"], m["serial"], "partitions:", ", ".join(p["name"] for p in m["partitions"]))' "$device/device.json")"
echo "transcript $transcript (readable record: ${transcript%.jsonl}.md)"
echo "demo finished: every step succeeded"
