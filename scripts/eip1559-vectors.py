#!/usr/bin/env python3
"""Known-answer vectors for the vault's Ethereum signing, from an independent signer.

Writes Tests/VaultTests/Vectors/eth-account-eip1559.json: EIP-1559 (type 2) transactions and
EIP-191 personal messages signed by eth-account (PyPI), with keys eth-account derives itself
from a public BIP-39 test mnemonic along BIP-44 paths. The vault's tests seal the same seed
(PBKDF2 of the mnemonic, computed here with hashlib) in a real token, derive with their own
BIP-32 code, sign through CustodyVault, and must produce the same bytes.

Run once, and again only to add vectors:

    python3 -m venv /tmp/ethvenv && /tmp/ethvenv/bin/pip install eth-account
    /tmp/ethvenv/bin/python scripts/eip1559-vectors.py

The mnemonic is the all-"abandon" BIP-39 test phrase: every key here is public knowledge.
"""

import hashlib
import json
import pathlib
import sys
from importlib.metadata import version

from eth_account import Account
from eth_account.messages import encode_defunct

MNEMONIC = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
OUTPUT = pathlib.Path(__file__).resolve().parent.parent / "Tests/VaultTests/Vectors/eth-account-eip1559.json"

TRANSACTIONS = [
    # A plain transfer on mainnet.
    ("m/44'/60'/0'/0/0", {
        "chainId": 1, "nonce": 0, "maxPriorityFeePerGas": 2_000_000_000, "maxFeePerGas": 30_000_000_000,
        "gas": 21_000, "to": "0x52908400098527886E0F7030069857D2E4169EE7", "value": 10**18, "data": b"",
        "accessList": [],
    }),
    # An ERC-20 transfer call with an access list, on Sepolia.
    ("m/44'/60'/0'/0/0", {
        "chainId": 11155111, "nonce": 7, "maxPriorityFeePerGas": 1_500_000_000, "maxFeePerGas": 45_250_000_001,
        "gas": 65_000, "to": "0x1c7D4B196Cb0C7B01d743Fbc6116a902379C7238", "value": 0,
        "data": bytes.fromhex(
            "a9059cbb00000000000000000000000052908400098527886e0f7030069857d2e4169ee7"
            "00000000000000000000000000000000000000000000000000000000000f4240"),
        "accessList": [
            {"address": "0x1c7D4B196Cb0C7B01d743Fbc6116a902379C7238", "storageKeys": [
                "0x0000000000000000000000000000000000000000000000000000000000000003",
                "0x6e1540171b6c0c960b71a7020d9f60077f6af931a8bbf590da0223dacf75c7af"]},
            {"address": "0x52908400098527886E0F7030069857D2E4169EE7", "storageKeys": []},
        ],
    }),
    # Large fields, another account of the same seed.
    ("m/44'/60'/0'/0/1", {
        "chainId": 137, "nonce": 2**40 + 5, "maxPriorityFeePerGas": 30_000_000_000, "maxFeePerGas": 2**70 + 1,
        "gas": 30_000_000, "to": "0x000000000000000000000000000000000000dEaD", "value": 2**200 + 12345,
        "data": bytes(range(256)) * 2, "accessList": [],
    }),
]

MESSAGES = [
    ("m/44'/60'/0'/0/0", b"Custos approves: withdraw 1 ETH to 0x5290...9EE7"),
    ("m/44'/60'/0'/0/1", bytes(range(40))),
]


def main() -> int:
    Account.enable_unaudited_hdwallet_features()
    seed = hashlib.pbkdf2_hmac("sha512", MNEMONIC.encode(), b"mnemonic", 2048)
    transactions = []
    for path, fields in TRANSACTIONS:
        account = Account.from_mnemonic(MNEMONIC, account_path=path)
        signed = Account.sign_transaction({"type": 2, **fields}, account.key)
        transactions.append({
            "path": path,
            "address": account.address,
            "chainId": fields["chainId"],
            "nonce": fields["nonce"],
            "maxPriorityFeePerGas": str(fields["maxPriorityFeePerGas"]),
            "maxFeePerGas": str(fields["maxFeePerGas"]),
            "gas": fields["gas"],
            "to": fields["to"],
            "value": str(fields["value"]),
            "data": fields["data"].hex(),
            "accessList": [
                {"address": entry["address"], "storageKeys": [key[2:] for key in entry["storageKeys"]]}
                for entry in fields["accessList"]
            ],
            "hash": signed.hash.hex().removeprefix("0x"),
            "raw": signed.raw_transaction.hex().removeprefix("0x"),
        })
    messages = []
    for path, message in MESSAGES:
        account = Account.from_mnemonic(MNEMONIC, account_path=path)
        signed = Account.sign_message(encode_defunct(primitive=message), account.key)
        messages.append({
            "path": path, "address": account.address, "message": message.hex(),
            "signature": signed.signature.hex().removeprefix("0x"),
        })
    document = {
        "source": f"eth-account {version('eth-account')} (PyPI), run by scripts/eip1559-vectors.py",
        "mnemonic": MNEMONIC,
        "seed": seed.hex(),
        "transactions": transactions,
        "personalMessages": messages,
    }
    OUTPUT.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {len(transactions)} transactions and {len(messages)} messages to {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
