#!/usr/bin/env bash
# Regenerates Sources/VaultWire/Generated/ from Sources/VaultWire/vault.proto.
#
# The generated Swift is committed, so a normal build never runs this. It builds the two protoc
# plugins (protoc-gen-swift from swift-protobuf, protoc-gen-grpc-swift-2 from
# grpc-swift-protobuf, the versions Package.swift resolves) in a scratch build directory,
# .build-protoc/ (ignored by git; a first build takes a few minutes), then runs Debian's protoc.
#
# PROTOC_PLUGIN_DIR=DIR uses plugins already built in DIR instead of building them.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v protoc >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "installing protoc (Debian package protobuf-compiler)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends protobuf-compiler
  else
    echo "protoc is missing; run: sudo apt-get update && sudo apt-get install -y protobuf-compiler" >&2
    exit 1
  fi
fi

plugins="${PROTOC_PLUGIN_DIR:-}"
if [ -z "$plugins" ]; then
  for product in protoc-gen-swift protoc-gen-grpc-swift-2; do
    swift build -c release --scratch-path .build-protoc --product "$product"
  done
  plugins="$(swift build -c release --scratch-path .build-protoc --show-bin-path)"
fi

out=Sources/VaultWire/Generated
rm -rf "$out"
mkdir -p "$out"
protoc \
  --plugin=protoc-gen-swift="$plugins/protoc-gen-swift" \
  --plugin=protoc-gen-grpc-swift-2="$plugins/protoc-gen-grpc-swift-2" \
  --proto_path=Sources/VaultWire \
  --swift_out="$out" --swift_opt=Visibility=Public \
  --grpc-swift-2_out="$out" --grpc-swift-2_opt=Visibility=Public,Server=true,Client=true \
  vault.proto

# Generated code is not ours to format: swift-format skips files that start with this line.
for file in "$out"/*.swift; do
  { echo "// swift-format-ignore-file"; cat "$file"; } >"$file.tmp" && mv "$file.tmp" "$file"
done
echo "regenerated: $(ls "$out" | tr '\n' ' ')"
