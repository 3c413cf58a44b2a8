#!/usr/bin/env bash
# Regenerates Sources/CustosAPI/Generated/ from openapi.yaml with swift-openapi-generator.
# The generated Swift is committed, so a build never runs the generator (its build plugin would
# cost every CI run minutes). The generator is built once in .build-openapi/ (ignored by git),
# at the version Package.swift resolves for swift-openapi-runtime's generator (1.14.x).
# Set OPENAPI_GENERATOR to use a generator built elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."

generator="${OPENAPI_GENERATOR:-}"
if [ -z "$generator" ]; then
  tools=.build-openapi
  if [ ! -x "$tools/.build/release/swift-openapi-generator" ]; then
    mkdir -p "$tools"
    cat >"$tools/Package.swift" <<'PACKAGE'
// swift-tools-version:6.0
import PackageDescription
let package = Package(
  name: "openapi-tools",
  dependencies: [.package(url: "https://github.com/apple/swift-openapi-generator", "1.14.0"..<"1.15.0")]
)
PACKAGE
    echo "building swift-openapi-generator in $tools (about 5 minutes, once)"
    swift build --package-path "$tools" -c release --product swift-openapi-generator
  fi
  generator="$tools/.build/release/swift-openapi-generator"
fi

output=Sources/CustosAPI/Generated
mkdir -p "$output"
"$generator" generate openapi.yaml --config Sources/CustosAPI/openapi-generator-config.yaml --output-directory "$output"
# The generated files are not ours to format: swift format skips them.
for file in "$output"/*.swift; do
  if ! head -n 1 "$file" | grep -q 'swift-format-ignore-file'; then
    { echo '// swift-format-ignore-file'; cat "$file"; } >"$file.tmp" && mv "$file.tmp" "$file"
  fi
done


# The generator writes `public import` for every file; on compilers before 6.4 (which cannot
# read its `@diagnose` attribute) the files that do not use an import publicly warn about it.
# Build the target, and make exactly those imports internal: the build then has no warnings.
swift build --target CustosAPI 2>&1 | python3 scripts/internalize-unused-imports.py
if swift build --target CustosAPI 2>&1 | grep -q "warning: public import"; then
  echo "CustosAPI still warns about public imports" >&2
  exit 1
fi
echo "regenerated $output from openapi.yaml"
