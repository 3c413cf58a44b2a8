#!/usr/bin/env python3
"""Lists every object of a PKCS #11 token with its attributes, as JSON, using python-pkcs11.

A tester's own tool, written against python-pkcs11 and nothing of Custos. Run it through
`custos lockdown exec`, which gives it PKCS11_MODULE, PKCS11_TOKEN_LABEL and PKCS11_PIN (and
SoftHSM's SOFTHSM2_CONF) in its environment for that one process:

    custos lockdown exec --device DIR --participants FILE --rehearsal -- \
        python3 scripts/lockdown-inspect.py

Each object is {"class": "CKO_...", "label": ..., "CKA_<flag>": true | false | null, ...,
"CKA_VALUE": "sensitive" | "absent" | "readable"}; null means the object has no such attribute.
A key value is never printed: only whether the token would reveal it.
"""
import json
import os
import sys

import pkcs11
from pkcs11 import Attribute
from pkcs11.exceptions import AttributeSensitive, AttributeTypeInvalid

FLAGS = [
    "TOKEN", "PRIVATE", "SENSITIVE", "ALWAYS_SENSITIVE", "EXTRACTABLE", "NEVER_EXTRACTABLE", "LOCAL",
    "ENCRYPT", "DECRYPT", "SIGN", "SIGN_RECOVER", "VERIFY", "VERIFY_RECOVER", "WRAP", "UNWRAP",
    "DERIVE", "MODIFIABLE", "COPYABLE", "DESTROYABLE", "TRUSTED", "WRAP_WITH_TRUSTED",
]


def read(obj, attribute):
    try:
        return obj[attribute]
    except AttributeTypeInvalid:
        return None


def value_state(obj):
    try:
        obj[Attribute.VALUE]
        return "readable"
    except AttributeSensitive:
        return "sensitive"
    except AttributeTypeInvalid:
        return "absent"


def main():
    lib = pkcs11.lib(os.environ["PKCS11_MODULE"])
    token = lib.get_token(token_label=os.environ["PKCS11_TOKEN_LABEL"])
    objects = []
    with token.open(user_pin=os.environ["PKCS11_PIN"]) as session:
        for obj in session.get_objects():
            # The class read from the token (python-pkcs11 leaves object_class unset on data objects).
            entry = {"class": "CKO_" + obj[Attribute.CLASS].name, "label": read(obj, Attribute.LABEL)}
            for flag in FLAGS:
                entry["CKA_" + flag] = read(obj, getattr(Attribute, flag))
            entry["CKA_VALUE"] = value_state(obj)
            objects.append(entry)
    json.dump(sorted(objects, key=lambda o: (o["label"] or "", o["class"])), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
