#!/usr/bin/env bash
# `make demo`: the main job, end to end, on embedded defaults (everything under .custos/).
# A device from a rehearsed key ceremony, unsealed by a quorum; the custody server in front of
# it; a 2-of-3 wallet (two bots, one passkey); an approved EIP-1559 transfer whose sender
# recovers to the wallet's address; a request one approval short; a tampered request the vault
# refuses. Every step's output is checked: the demo exits non-zero unless each did what it says.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="$(swift build --show-bin-path)"
custos="$bin/custos"
hsm="$bin/custos-hsm"
server="$bin/custos-server"
state=.custos
device="$state/device"
rehearsal="$state/rehearsal"
keys="$state/approvers"
database="$state/server/custos.sqlite"
socket="$state/hsm.sock"
credential="$rehearsal/crypto-user.credential"
participants=Ceremonies/participants.example.yaml
started=$SECONDS

step() { printf '\n== %s\n' "$*"; }
fail() {
  echo "DEMO FAILED: $*" >&2
  exit 1
}
# expect TEXT PATTERN WHAT: fails the demo unless TEXT contains PATTERN (fixed string).
expect() { grep -qF -- "$2" <<<"$1" || fail "$3 (expected to see: $2)"; }
# json FILE-OR-TEXT PYTHON-EXPRESSION over `d`: one value of a JSON answer.
json() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2"; }
# api METHOD PATH [BODY]: the custody API with the operator's key; prints the body, fails on >= 400.
api() {
  local answer status body=()
  [ $# -ge 3 ] && body=(--data "$3")
  answer="$(curl -sS -w '\n%{http_code}' -X "$1" -H "Authorization: Bearer $api_key" \
    -H 'Content-Type: application/json' "${body[@]}" "$url$2")"
  status="${answer##*$'\n'}"
  answer="${answer%$'\n'*}"
  [ "$status" -lt 400 ] || fail "$1 $2 answered $status: $answer"
  printf '%s' "$answer"
}
# show COMMAND...: runs a custos command, prints its output, and keeps it in $out.
show() {
  out="$("$@" 2>&1)" || {
    echo "$out"
    fail "$* exited non-zero"
  }
  echo "$out"
}

hsm_pid=""
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  [ -n "$hsm_pid" ] && kill "$hsm_pid" 2>/dev/null || true
}
trap cleanup EXIT

step "fresh demo state in $state/"
rm -rf "$device" "$rehearsal" "$keys" "$state/server" "$socket"
mkdir -p "$state"
chmod 700 "$state"

step "the init-device key ceremony, rehearsed with the participants of $participants"
# Officer tokens are created under $rehearsal/officers; PINs and passwords come from the file.
# The partition PINs derive from an activation secret nobody sees, split 2-of-3 among the
# unseal key holders; every step is authorised by its quorum's officer tokens.
show "$custos" ceremony run Ceremonies/init-device.yaml --device "$device" --participants "$participants" \
  --rehearsal --name demo | tail -n 4
transcript="$(ls "$device"/transcripts/init-device-*.jsonl)"
show "$custos" ceremony verify "$transcript"
expect "$out" "transcript verifies" "the ceremony's transcript does not verify"

step "lockdown audit: the policy table, every attack of the catalogue run for real, the file system"
# Unsealed by frank and grace; destructive attacks run against a snapshot copy of the device.
# Exits non-zero if any expectation fails (custos lockdown list shows the catalogue).
audit="$("$custos" lockdown audit --device "$device" --participants "$participants" --rehearsal 2>&1)" ||
  fail "the lockdown audit found a failed expectation: $audit"
tail -n 1 <<<"$audit"

step "the device as a process: custos-hsm takes the lock, starts SEALED, listens on a 0600 socket"
"$hsm" --device "$device" --socket "$socket" >"$state/hsm.out" 2>"$state/hsm.log" &
hsm_pid=$!
for _ in $(seq 1 100); do grep -q "listening on" "$state/hsm.out" 2>/dev/null && break; sleep 0.1; done
grep -q "listening on" "$state/hsm.out" || fail "custos-hsm did not start: $(cat "$state/hsm.log")"
show "$custos" operator status --socket "$socket"
expect "$out" "SEALED" "a freshly started device is not SEALED"

step "unseal over the socket: two of the three unseal key holders (grace, heidi) submit their shares"
show "$custos" operator unseal --socket "$socket" --rehearsal --participants "$participants" \
  --rehearsal-dir "$rehearsal" --holder grace --holder heidi
expect "$out" "READY" "the device did not become READY"

step "the second layer of the lockdown audit, from outside with the Crypto User credential (READY)"
wire="$("$custos" lockdown audit --socket "$socket" --cu-credential "$credential" 2>&1)" ||
  fail "the socket audit failed: $wire"
tail -n 1 <<<"$wire"

step "custos-server: SQLite under $state/server, the device through its socket, an API key"
api_key="$("$server" keys create --database "$database" --name demo-operator --scope all)"
[[ "$api_key" == custos-ak1-* ]] || fail "no API key was made: $api_key"
echo "API key made (shown once, stored as its SHA-256 only): ${api_key:0:16}..."
"$server" serve --database "$database" --socket "$socket" --cu-credential "$credential" --port 0 --poll-ms 100 \
  >"$state/server.out" 2>"$state/server.log" &
server_pid=$!
for _ in $(seq 1 100); do grep -q "listening on" "$state/server.out" 2>/dev/null && break; sleep 0.1; done
url="$(grep -o 'http://[0-9.]*:[0-9]*' "$state/server.out" | head -n 1)"
[ -n "$url" ] || fail "custos-server did not start: $(cat "$state/server.log")"
echo "custos-server listening on $url"
for _ in $(seq 1 100); do
  device_status="$(api GET /v1/device)"
  [ "$(json "$device_status" 'd["tree"]["agreement"]')" = agreed ] && break
  sleep 0.1
done
echo "device $(json "$device_status" 'd["state"]'), root epoch $(json "$device_status" 'd["deviceRoot"]["epoch"]'), tree $(json "$device_status" 'd["tree"]["agreement"]')"
[ "$(json "$device_status" 'd["state"]')" = READY ] || fail "the server does not see a READY device"

step "approvers: two bot keys (custos approve keygen) and a software passkey (custos passkey create)"
mkdir -p "$keys"
chmod 700 "$keys"
show "$custos" approve keygen --algorithm p256 --id bot-a --out "$keys/bot-a.key"
bot_a="$(sed -n 's/^enrol as: //p' <<<"$out")"
show "$custos" approve keygen --algorithm ed25519 --id bot-b --out "$keys/bot-b.key"
bot_b="$(sed -n 's/^enrol as: //p' <<<"$out")"
show "$custos" passkey create --id carol --rp-id custody.example --origin https://custody.example \
  --out "$keys/carol.passkey"
carol="$(sed -n 's/^enrol as: //p' <<<"$out")"
[ "$(stat -c %a "$keys/bot-a.key")" = 600 ] || fail "a key file is not 0600"

step "a 2-of-3 custodial secp256k1 wallet: proposed by the customer, approved by every proposed approver"
proposal="$(api POST /v1/wallets "{\"threshold\": 2, \"approvers\": [$bot_a, $bot_b, $carol]}")"
creation="$(json "$proposal" 'd["id"]')"
echo "creation request $creation: $(json "$proposal" 'd["status"]'), awaiting $(json "$proposal" '", ".join(d["awaiting"])')"
show "$custos" approve --server "$url" --key "$keys/bot-a.key" "$creation"
expect "$out" "create a wallet" "bot-a was not shown the wallet it approves"
"$custos" approve --server "$url" --key "$keys/bot-b.key" "$creation" | tail -n 1
"$custos" passkey approve --server "$url" --key "$keys/carol.passkey" "$creation" | tail -n 1
created="$(api GET "/v1/requests/$creation")"
[ "$(json "$created" 'd["status"]')" = completed ] || fail "the wallet was not created: $created"
wallet="$(json "$created" 'd["result"]["walletId"]')"
addresses="$(api GET "/v1/wallets/$wallet/addresses")"
address="$(json "$addresses" 'd["addresses"][0]["address"]')"
wallet_json="$(api GET "/v1/wallets/$wallet")"
echo "wallet $wallet: Ethereum address $address (key m/44'/60'/0'/0/0)"
echo "its Merkle proof matches the device's root: $(json "$wallet_json" 'd["proof"]["deviceRootMatches"]')"
[ "$(json "$wallet_json" 'd["proof"]["deviceRootMatches"]')" = True ] || fail "the wallet's proof is not the device's root"

transfer_body() { # NONCE TO VALUE-WEI
  echo "{\"transaction\": {\"chainId\": 1, \"nonce\": $1, \"maxPriorityFeePerGasWei\": \"2000000000\",
    \"maxFeePerGasWei\": \"30000000000\", \"gasLimit\": 21000, \"to\": \"$2\", \"valueWei\": \"$3\"}}"
}
payee=0x1111111111111111111111111111111111111111
attacker=0x2222222222222222222222222222222222222222

step "an EIP-1559 transfer of 0.001 ETH, approved by bot-a (custos approve) and carol (passkey)"
request="$(api POST "/v1/wallets/$wallet/requests" "$(transfer_body 0 $payee 1000000000000000)")"
transfer="$(json "$request" 'd["id"]')"
echo "request $transfer: $(json "$request" 'd["status"]'), needs $(json "$request" 'd["threshold"]') approvals"
show "$custos" approve --server "$url" --key "$keys/bot-a.key" "$transfer"
expect "$out" "0.001 ETH (1000000000000000 wei)" "bot-a was not shown the amount"
expect "$out" "1 of 2 approvals" "bot-a's approval was not stored"
show "$custos" passkey approve --server "$url" --key "$keys/carol.passkey" "$transfer"
expect "$out" "request completed, 2 of 2 approvals" "the transfer was not signed"
signed="$(sed -n 's/^signed transaction: //p' <<<"$out")"

step "the signed transaction's sender, recovered from its signature, is the wallet's address"
show "$custos" eth sender "$signed" --expect "$address"
tx_hash="$(json "$(api GET "/v1/requests/$transfer")" 'd["result"]["transactionHash"]')"

step "one approval short: bot-a approves a 0.5 ETH transfer alone; it stays pending, nothing is signed"
request="$(api POST "/v1/wallets/$wallet/requests" "$(transfer_body 1 $payee 500000000000000000)")"
short="$(json "$request" 'd["id"]')"
"$custos" approve --server "$url" --key "$keys/bot-a.key" "$short" | tail -n 1
held="$(api GET "/v1/requests/$short")"
echo "request $short: $(json "$held" 'd["status"]'), awaiting $(json "$held" '", ".join(d["awaiting"])'), result: $(json "$held" 'd.get("result", "none")')"
[ "$(json "$held" 'd["status"]')" = awaiting-approvals ] && [ "$(json "$held" '"result" in d')" = False ] ||
  fail "a request one approval short was not held"

step "a tampered request: bot-a approves 0.001 ETH to $payee, then the server's database is altered"
request="$(api POST "/v1/wallets/$wallet/requests" "$(transfer_body 2 $payee 1000000000000000)")"
tampered="$(json "$request" 'd["id"]')"
"$custos" approve --server "$url" --key "$keys/bot-a.key" "$tampered" | tail -n 1
# A compromised server (or anyone who can write its database) sends the funds elsewhere: the
# stored envelope's destination becomes $attacker (its hash updated to match).
python3 - "$database" "$tampered" <<'PY'
import hashlib, sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=10)
(envelope,) = db.execute("SELECT envelope FROM requests WHERE id = ?", (sys.argv[2],)).fetchone()
changed = envelope.replace(b"\x54" + b"\x11" * 20, b"\x54" + b"\x22" * 20, 1)
assert changed != envelope
db.execute("UPDATE requests SET envelope = ?, envelope_hash = ? WHERE id = ?",
           (changed, hashlib.sha256(changed).digest(), sys.argv[2]))
db.commit()
print("database altered: the request now pays 0x2222222222222222222222222222222222222222")
PY
echo "bot-b runs custos approve --auto with a rule (wallet $wallet, chain 1, destination $payee, at most 0.01 ETH):"
cat >"$keys/bot-b.rule.json" <<EOF
{"format": "custos-approval-rule", "version": 1, "wallets": [$wallet], "operations": ["sign-eip1559"],
 "chainIds": [1], "destinations": ["$payee"], "maxValueWei": "10000000000000000"}
EOF
"$server" keys create --database "$database" --name bot-b --scope requests:read >"$keys/bot-b.api-key"
chmod 600 "$keys/bot-b.api-key"
show "$custos" approve --server "$url" --key "$keys/bot-b.key" --auto "$keys/bot-b.rule.json" \
  --api-key-file "$keys/bot-b.api-key" --once
expect "$out" "refused $tampered (wallet $wallet): destination 0x2222222222222222222222222222222222222222 is not on the allowlist" \
  "bot-b's rule did not refuse the tampered request"
expect "$out" "refused $short (wallet $wallet): value 500000000000000000 wei exceeds" "bot-b's rule did not refuse 0.5 ETH"
expect "$out" "stopped: 0 approved, 2 refused" "bot-b approved something"
echo "carol, not reading closely, approves what she is shown; the threshold is met and the vault is asked:"
show "$custos" passkey approve --server "$url" --key "$keys/carol.passkey" "$tampered"
expect "$out" "$attacker" "carol was not shown the altered destination"
expect "$out" "request refused" "the vault did not refuse the tampered request"
expect "$out" "badSignature" "the vault's refusal is not bot-a's signature"
refused="$(api GET "/v1/requests/$tampered")"
echo "request $tampered: $(json "$refused" 'd["status"]'), vault code $(json "$refused" 'd["failure"]["vaultCode"]'), result: $(json "$refused" 'd.get("result", "none")')"
[ "$(json "$refused" '"result" in d')" = False ] || fail "the tampered request has a result"

step "the server's tree and the device's root agree"
device_status="$(api GET /v1/device)"
echo "device root epoch $(json "$device_status" 'd["deviceRoot"]["epoch"]'), $(json "$device_status" 'd["tree"]["wallets"]') wallet, tree $(json "$device_status" 'd["tree"]["agreement"]'), pending intents $(json "$device_status" 'd["tree"]["pendingIntents"]')"
[ "$(json "$device_status" 'd["tree"]["root"] == d["deviceRoot"]["root"]')" = True ] || fail "the roots differ"

step "SIGTERM both: the server finishes and closes its session, the device closes the vault and frees its lock"
kill -TERM "$server_pid"
wait "$server_pid" || fail "custos-server exited with $?"
server_pid=""
echo "custos-server exited 0"
kill -TERM "$hsm_pid"
wait "$hsm_pid" || fail "custos-hsm exited with $?"
hsm_pid=""
echo "custos-hsm exited 0"
[ ! -e "$socket" ] || fail "the device's socket is still there"
echo "socket removed; the next start is SEALED again"
trap - EXIT

step "summary"
echo "device       $(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["name"], m["serial"])' "$device/device.json"), transcript $transcript"
echo "wallet       $wallet, 2 of 3 (bot-a p256, bot-b ed25519, carol passkey ES256), address $address"
echo "signed       $transfer: 0.001 ETH to $payee, tx $tx_hash, sender recovered = wallet address"
echo "held         $short: 0.5 ETH, one approval of two, pending, nothing signed"
echo "refused      $tampered: destination altered in the server's database; bot-b's rule refused it,"
echo "             and the vault refused it (badSignature: bot-a approved the original)"
echo "stopped      custos-server and custos-hsm exited 0 on SIGTERM"
echo "demo finished in $((SECONDS - started)) s: every step did what it should"
